//! Astha's configuration: one TOML file, overridable by `ASTHA_`-prefixed environment
//! variables, checked once by [`AsthaConfig::validate`].
//!
//! Owns [`AsthaConfig`], [`SupervisorConfig`], [`ConfigError`] and the duration format
//! shared by every config struct ([`duration_serde`]). It promises that unknown keys are
//! errors that name the key, that environment overrides go through exactly the same
//! deserialization and validation as the file, and that errors read well to a person. It
//! never reads anything except in [`AsthaConfig::from_file`] and [`AsthaConfig::load`].
//!
//! Precedence: built-in defaults, then the file (absent keys keep their defaults), then
//! the environment. `ASTHA_BATCH_SIZE=512` sets `batch_size`; a double underscore
//! descends into a section, as in `ASTHA_RETRY__MAX_ATTEMPTS=5`; lists are comma
//! separated, as in `ASTHA_MONITORED_TABLES=tables,table_files`. A variable whose first
//! segment is not a setting nor within two typing mistakes of one (`ASTHA_NATS_URL`,
//! used by tooling) is left alone; a near miss (`ASTHA_BATCH_SIZ`) is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

/// Prefix of the environment variables that override configuration values.
pub const ENV_PREFIX: &str = "ASTHA_";

/// `ASTHA_` variables that are not configuration values (the config file path and the
/// log filter, read by the binary), so [`AsthaConfig::apply_env`] skips them instead of
/// rejecting them as unknown settings.
pub const NON_CONFIG_ENV_VARS: &[&str] = &["ASTHA_CONFIG", "ASTHA_LOG"];

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file or an environment variable is not valid configuration (bad TOML, unknown
    /// key, wrong type).
    #[error("cannot parse config from {origin}: {message}")]
    Parse {
        /// A file name, or `environment variable ASTHA_...`.
        origin: String,
        /// What is wrong, naming the key where possible.
        message: String,
    },
    /// The configuration parsed but a value is out of range or inconsistent.
    #[error("invalid config: {field} {reason}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `retry.jitter`.
        field: String,
        /// Completes the sentence "`field` ...", e.g. "must be at least 1 (got 0)".
        reason: String,
    },
}

impl ConfigError {
    /// An [`Invalid`](Self::Invalid) error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Qualifies the field of an `Invalid` error with the section it lives in, so a
    /// sub-config can validate itself without knowing where it is mounted.
    pub fn within(self, section: &str) -> Self {
        match self {
            Self::Invalid { field, reason } => Self::Invalid {
                field: format!("{section}.{field}"),
                reason,
            },
            other => other,
        }
    }
}

/// The whole configuration of an Astha process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsthaConfig {
    /// SQLite database holding the registry tables and the change log. Default
    /// `"astha.db"`.
    pub database: PathBuf,
    /// Table the capture triggers append every change to. It must not itself be
    /// monitored. Default `"__cdc_log"`.
    pub log_table: String,
    /// Most change-log rows delivered to a component in one batch, 1 to 65536. Default
    /// `256`.
    pub batch_size: usize,
    /// Most payload bytes in one batch; a batch ends at whichever limit it reaches first
    /// (a single larger row still goes alone). Default `4194304` (4 MiB).
    pub batch_max_bytes: usize,
    /// Batches a component may have in flight, delivered but not yet acknowledged, at
    /// least 1. Default `8`.
    pub window_batches: usize,
    /// Period of the timer that polls the log even when no commit was noticed, a
    /// backstop against missed wake-ups. Default `"100ms"`.
    #[serde(with = "duration_serde")]
    pub backstop_interval: Duration,
    /// How often a dedicated connection polls `PRAGMA data_version` to notice commits
    /// made by other processes. Default `"1ms"`.
    #[serde(with = "duration_serde")]
    pub data_version_poll: Duration,
    /// How often change-log rows acknowledged by every slot are deleted. Default `"1s"`.
    #[serde(with = "duration_serde")]
    pub cleanup_interval: Duration,
    /// Registry tables that get capture triggers. Default: `databases`, `tables`,
    /// `table_columns`, `table_metadata`, `table_files`, `file_statistics`,
    /// `table_snapshots`.
    pub monitored_tables: Vec<String>,
    /// Default subscriptions: component name to the monitored tables whose changes it
    /// receives. A `[subscriptions]` table in the file replaces this whole map; an
    /// environment variable such as `ASTHA_SUBSCRIPTIONS__COMPACTOR` replaces one entry.
    /// Default: `iceberg_updater`, `compactor`, `snapshotter` and `schema_manager` with
    /// the tables each of them reads.
    pub subscriptions: BTreeMap<String, Vec<String>>,
    /// Backoff and attempt limit for failed deliveries. Defaults: see [`RetryPolicy`].
    pub retry: RetryPolicy,
    /// Circuit breaker around each component. Defaults: see [`BreakerConfig`].
    pub breaker: BreakerConfig,
    /// Timeouts and health checking of components. Defaults: see [`SupervisorConfig`].
    pub supervisor: SupervisorConfig,
}

const DEFAULT_MONITORED_TABLES: &[&str] = &[
    "databases",
    "tables",
    "table_columns",
    "table_metadata",
    "table_files",
    "file_statistics",
    "table_snapshots",
];

const DEFAULT_SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    (
        "iceberg_updater",
        &["tables", "table_files", "table_metadata"],
    ),
    ("compactor", &["tables", "table_files", "file_statistics"]),
    (
        "snapshotter",
        &[
            "tables",
            "table_files",
            "file_statistics",
            "table_metadata",
            "table_snapshots",
        ],
    ),
    (
        "schema_manager",
        &["tables", "table_columns", "table_metadata"],
    ),
];

const MAX_BATCH_SIZE: usize = 65_536;
/// A batch is held in memory several times over (window, retries); beyond this a typo
/// is more likely than intent.
const MAX_BATCH_BYTES: usize = 1 << 30;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for AsthaConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("astha.db"),
            log_table: "__cdc_log".to_owned(),
            batch_size: 256,
            batch_max_bytes: 4 << 20,
            window_batches: 8,
            backstop_interval: Duration::from_millis(100),
            data_version_poll: Duration::from_millis(1),
            cleanup_interval: Duration::from_secs(1),
            monitored_tables: strings(DEFAULT_MONITORED_TABLES),
            subscriptions: DEFAULT_SUBSCRIPTIONS
                .iter()
                .map(|(component, tables)| ((*component).to_owned(), strings(tables)))
                .collect(),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            supervisor: SupervisorConfig::default(),
        }
    }
}

impl AsthaConfig {
    /// Parses TOML text; absent keys keep their defaults. Does not validate.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text, "config text")
    }

    /// Reads and parses a TOML file; errors name the file. Does not validate.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        parse_toml(&text, &path.display().to_string())
    }

    /// The configuration a process runs with: the file at `path` (or the defaults), then
    /// the `ASTHA_` environment variables, then [`validate`](Self::validate).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            // A name that is not UTF-8 cannot be one of ours.
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Parse {
                origin: format!("environment variable {name}"),
                message: "the value is not valid UTF-8".to_owned(),
            })?;
            vars.push((name.to_owned(), value));
        }
        Self::load_from(path, vars)
    }

    /// [`load`](Self::load) with the environment passed in, for tests and embedding.
    pub fn load_from<I, K, V>(path: Option<&Path>, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `ASTHA_<FIELD>` and `ASTHA_<SECTION>__<FIELD>` overrides; other variables
    /// and [`NON_CONFIG_ENV_VARS`] are ignored. Does not validate.
    ///
    /// Each value is set in the TOML form of the configuration and the result is
    /// deserialized again, so types and unknown keys are checked exactly as in a file.
    /// A value is tried as a TOML integer, float or boolean, then as a string, and for
    /// lists as comma-separated items. All or nothing: on error `self` is unchanged, and
    /// the error names the variable.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let known: Vec<String> = toml::Table::try_from(&*self)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let mut overrides: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| {
                let name = name.as_ref();
                name.starts_with(ENV_PREFIX)
                    && !NON_CONFIG_ENV_VARS.contains(&name)
                    && addresses_config(&name[ENV_PREFIX.len()..], &known)
            })
            .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()))
            .collect();
        // The environment has no order; sorting makes the first error reported stable.
        overrides.sort();
        let mut config = self.clone();
        for (name, value) in &overrides {
            config = config
                .with_env_var(name, value)
                .map_err(|message| ConfigError::Parse {
                    origin: format!("environment variable {name}"),
                    message,
                })?;
        }
        *self = config;
        Ok(())
    }

    fn with_env_var(&self, name: &str, value: &str) -> Result<Self, String> {
        debug_assert!(name.starts_with(ENV_PREFIX));
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "`{name}` does not name a setting; use {ENV_PREFIX}<FIELD> or \
                 {ENV_PREFIX}<SECTION>__<FIELD>"
            ));
        }
        let root = toml::Table::try_from(self)
            .map_err(|e| format!("the current configuration is not representable as TOML: {e}"))?;
        let existing = lookup(&root, &path)?;
        let mut first_error = None;
        for candidate in env_candidates(existing, value) {
            let mut attempt = root.clone();
            insert(&mut attempt, &path, candidate);
            match attempt.try_into::<AsthaConfig>() {
                Ok(config) => return Ok(config),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.message().trim_end().to_owned());
                }
            }
        }
        let dotted = path.join(".");
        Err(format!(
            "cannot set `{dotted}` to {value:?}: {}",
            first_error.unwrap_or_default()
        ))
    }

    /// The configuration as TOML, as printed by `astha config print`; parsing it back
    /// gives the same configuration.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self)
            .map_err(|e| ConfigError::invalid("config", format!("cannot be written as TOML: {e}")))
    }

    /// Checks ranges and cross-field consistency; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database.as_os_str().is_empty() {
            return Err(ConfigError::invalid("database", "must not be empty"));
        }
        check_name("log_table", &self.log_table)?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(ConfigError::invalid(
                "batch_size",
                format!(
                    "must be between 1 and {MAX_BATCH_SIZE} (got {})",
                    self.batch_size
                ),
            ));
        }
        if !(1..=MAX_BATCH_BYTES).contains(&self.batch_max_bytes) {
            return Err(ConfigError::invalid(
                "batch_max_bytes",
                format!(
                    "must be between 1 and {MAX_BATCH_BYTES} (got {})",
                    self.batch_max_bytes
                ),
            ));
        }
        if self.window_batches == 0 {
            return Err(ConfigError::invalid(
                "window_batches",
                "must be at least 1 (got 0)",
            ));
        }
        // A zero period would make the poller spin.
        check_positive("backstop_interval", self.backstop_interval)?;
        check_positive("data_version_poll", self.data_version_poll)?;
        check_positive("cleanup_interval", self.cleanup_interval)?;
        for (i, table) in self.monitored_tables.iter().enumerate() {
            check_name(&format!("monitored_tables[{i}]"), table)?;
            if self.monitored_tables[..i].contains(table) {
                return Err(ConfigError::invalid(
                    "monitored_tables",
                    format!("lists `{table}` twice"),
                ));
            }
        }
        // Triggers on the log table would log their own writes, forever.
        if self.monitored_tables.contains(&self.log_table) {
            return Err(ConfigError::invalid(
                "monitored_tables",
                format!("must not contain the log table `{}`", self.log_table),
            ));
        }
        for (component, tables) in &self.subscriptions {
            if component.is_empty() {
                return Err(ConfigError::invalid(
                    "subscriptions",
                    "has a component with an empty name",
                ));
            }
            let field = format!("subscriptions.{component}");
            for (i, table) in tables.iter().enumerate() {
                // A subscription to an unmonitored table would silently never fire.
                if !self.monitored_tables.contains(table) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("subscribes to `{table}`, which is not in monitored_tables"),
                    ));
                }
                if tables[..i].contains(table) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("lists `{table}` twice"),
                    ));
                }
            }
        }
        self.retry.validate().map_err(|e| e.within("retry"))?;
        self.breaker.validate().map_err(|e| e.within("breaker"))?;
        self.supervisor
            .validate()
            .map_err(|e| e.within("supervisor"))?;
        Ok(())
    }
}

/// How the supervisor watches components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Longest a component may take to handle one batch before the attempt counts as
    /// failed. Default `"30s"`.
    #[serde(with = "duration_serde")]
    pub event_timeout: Duration,
    /// How long a component may stay unhealthy, or make no progress while it has work,
    /// before the supervisor refreshes it (`on_refresh`). Default `"60s"`.
    #[serde(with = "duration_serde")]
    pub refresh_after: Duration,
    /// How often the supervisor checks health and progress. Default `"10s"`.
    #[serde(with = "duration_serde")]
    pub health_interval: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            event_timeout: Duration::from_secs(30),
            refresh_after: Duration::from_secs(60),
            health_interval: Duration::from_secs(10),
        }
    }
}

impl SupervisorConfig {
    /// Checks the configuration; field names in the error are relative to it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive("event_timeout", self.event_timeout)?;
        check_positive("refresh_after", self.refresh_after)?;
        check_positive("health_interval", self.health_interval)?;
        // Staleness is only noticed at a health check, so a shorter limit could not be
        // honoured and would suggest a precision the supervisor does not have.
        if self.refresh_after < self.health_interval {
            return Err(ConfigError::invalid(
                "refresh_after",
                format!(
                    "must be at least health_interval ({}) (got {})",
                    format_duration(self.health_interval),
                    format_duration(self.refresh_after)
                ),
            ));
        }
        Ok(())
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<AsthaConfig, ConfigError> {
    // The toml error's Display shows the line and a caret under the offending key.
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid(field, "must not be empty"));
    }
    if name.contains('\0') {
        return Err(ConfigError::invalid(
            field,
            "must not contain a NUL character",
        ));
    }
    Ok(())
}

fn check_positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(
            field,
            "must be greater than 0 (got 0ms)",
        ));
    }
    Ok(())
}

/// The value at `path` in `root`, `None` if the last key is absent; an error if a
/// section on the way is missing or is not a section.
fn lookup<'a>(root: &'a toml::Table, path: &[String]) -> Result<Option<&'a toml::Value>, String> {
    let (last, sections) = path.split_last().expect("path is never empty");
    let mut table = root;
    for (depth, key) in sections.iter().enumerate() {
        let here = path[..=depth].join(".");
        table = match table.get(key) {
            Some(toml::Value::Table(inner)) => inner,
            Some(_) => {
                return Err(format!(
                    "`{here}` is a setting, not a section, so `{}` does not exist",
                    path.join(".")
                ))
            }
            None => return Err(format!("unknown config section `{here}`")),
        };
    }
    Ok(table.get(last))
}

/// Sets `path` in `root`; [`lookup`] has already checked that the sections exist.
fn insert(root: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, sections) = path.split_last().expect("path is never empty");
    let mut table = root;
    for key in sections {
        table = match table.get_mut(key) {
            Some(toml::Value::Table(inner)) => inner,
            _ => unreachable!("lookup checked the sections"),
        };
    }
    table.insert(last.clone(), value);
}

/// Readings of an environment value, most specific first. The current value's type
/// guides the choice: a list is only read as a list, and a string setting still accepts
/// digits (`ASTHA_LOG_TABLE=123`) because the string reading follows the numeric one.
fn env_candidates(existing: Option<&toml::Value>, raw: &str) -> Vec<toml::Value> {
    let items = || {
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
    };
    let typed_list = || {
        toml::Value::Array(
            items()
                .map(|item| {
                    parse_scalar(item).unwrap_or_else(|| toml::Value::String(item.to_owned()))
                })
                .collect(),
        )
    };
    let string_list = || {
        toml::Value::Array(
            items()
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )
    };
    let string = toml::Value::String(raw.to_owned());
    match existing {
        Some(toml::Value::Array(_)) => vec![typed_list(), string_list()],
        Some(_) => parse_scalar(raw).into_iter().chain([string]).collect(),
        // A new key: only maps (subscriptions) accept those, or it is a typo and every
        // reading fails with "unknown field".
        None => parse_scalar(raw)
            .into_iter()
            .chain([string, typed_list(), string_list()])
            .collect(),
    }
}

fn parse_scalar(raw: &str) -> Option<toml::Value> {
    let raw = raw.trim();
    if let Ok(i) = raw.parse::<i64>() {
        return Some(toml::Value::Integer(i));
    }
    if let Ok(b) = raw.parse::<bool>() {
        return Some(toml::Value::Boolean(b));
    }
    // Only things that look like numbers: `str::parse::<f64>` also takes "inf" and "nan",
    // which as setting values are far more likely meant as words.
    let numeric = raw.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
    match raw.parse::<f64>() {
        Ok(f) if numeric && f.is_finite() => Some(toml::Value::Float(f)),
        _ => None,
    }
}

const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `"250ms"`, `"2s"`, `"1m"`, `"1h"` (also `"us"` and `"ns"`): a non-negative
/// integer and a unit, optionally separated by spaces. The error completes the sentence
/// "invalid duration: ...".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let unit = unit.trim();
    let hint = "expected an integer and a unit (ns, us, ms, s, m, h), e.g. \"250ms\"";
    if number.is_empty() {
        return Err(format!("{text:?}: {hint}"));
    }
    if unit.is_empty() {
        return Err(format!(
            "{text:?} has no unit; write e.g. \"{number}ms\", or a bare integer for milliseconds"
        ));
    }
    let Some(&(_, nanos_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("unknown unit `{unit}` in {text:?}; {hint}"));
    };
    let too_large = || format!("{text:?} is too large");
    let count: u128 = number.parse().map_err(|_| too_large())?;
    let nanos = count.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration in the largest unit that represents it exactly, e.g. `"250ms"`,
/// `"30s"`, `"1m"`; the inverse of [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0ms".to_owned();
    }
    let (unit, per) = UNITS
        .iter()
        // Not `is_multiple_of`: that needs Rust 1.87 and the workspace supports 1.85.
        .find(|(_, per)| nanos / per * per == nanos)
        .expect("every duration is a whole number of nanoseconds");
    format!("{}{unit}", nanos / per)
}

/// Serde for `Duration` fields: reads `"250ms"`-style strings or integer milliseconds,
/// writes strings. Use with `#[serde(with = "crate::config::duration_serde")]`.
pub mod duration_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{format_duration, parse_duration};

    /// Writes the duration as a string such as `"250ms"`.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    /// Reads a duration string or an integer number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration such as \"250ms\", \"2s\", \"1m\" or \"1h\", \
                 or an integer number of milliseconds",
            )
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("invalid duration: {millis} is negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(|e| E::custom(format!("invalid duration: {e}")))
        }
    }
}

/// True if the variable (without the prefix) is meant as a setting: its first segment is
/// a top-level key, or within two typing mistakes of one (so `ASTHA_BATCH_SIZ` is an error
/// that names it, not silently ignored). Other `ASTHA_*` variables belong to tooling (test
/// and CI settings such as `ASTHA_NATS_URL`) and are left alone.
fn addresses_config(rest: &str, known: &[String]) -> bool {
    let first = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
    known.iter().any(|k| edit_distance(k, &first) <= 2)
}

/// Levenshtein distance between two short ASCII strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        AsthaConfig::from_toml_str(text).unwrap_err().to_string()
    }

    fn invalid_field(config: &AsthaConfig) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Result<AsthaConfig, ConfigError> {
        let mut config = AsthaConfig::default();
        config.apply_env(pairs.iter().copied())?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = AsthaConfig::default();
        c.validate().unwrap();
        assert_eq!(c.database, PathBuf::from("astha.db"));
        assert_eq!(c.log_table, "__cdc_log");
        assert_eq!(
            (c.batch_size, c.batch_max_bytes, c.window_batches),
            (256, 4 * 1024 * 1024, 8)
        );
        assert_eq!(c.data_version_poll, Duration::from_millis(1));
        assert_eq!(c.monitored_tables.len(), 7);
        assert_eq!(
            c.subscriptions["snapshotter"],
            [
                "tables",
                "table_files",
                "file_statistics",
                "table_metadata",
                "table_snapshots"
            ]
        );
        assert_eq!(c.subscriptions.len(), 4);
        assert_eq!(c.supervisor.refresh_after, Duration::from_secs(60));
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = AsthaConfig::default().to_toml_string().unwrap();
        assert!(text.contains("backstop_interval = \"100ms\""), "{text}");
        assert!(text.contains("data_version_poll = \"1ms\""), "{text}");
        assert!(text.contains("[retry]"), "{text}");
        assert!(text.contains("event_timeout = \"30s\""), "{text}");
        assert_eq!(
            AsthaConfig::from_toml_str(&text).unwrap(),
            AsthaConfig::default()
        );
    }

    #[test]
    fn changed_config_round_trips() {
        let mut c = AsthaConfig {
            cleanup_interval: Duration::from_micros(1500),
            retry: RetryPolicy {
                multiplier: 1.5,
                ..RetryPolicy::default()
            },
            ..AsthaConfig::default()
        };
        c.subscriptions
            .insert("audit".into(), vec!["databases".into()]);
        let back = AsthaConfig::from_toml_str(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn absent_keys_keep_defaults() {
        assert_eq!(
            AsthaConfig::from_toml_str("").unwrap(),
            AsthaConfig::default()
        );
        let c = AsthaConfig::from_toml_str("batch_size = 10\n[retry]\nmax_attempts = 3\n").unwrap();
        assert_eq!(c.batch_size, 10);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(c.breaker, BreakerConfig::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let top = parse_err("bach_size = 3");
        assert!(top.contains("unknown field `bach_size`"), "{top}");
        let nested = parse_err("[retry]\nmax_atempts = 3");
        assert!(nested.contains("unknown field `max_atempts`"), "{nested}");
        let section = parse_err("[retries]\nmax_attempts = 3");
        assert!(section.contains("`retries`"), "{section}");
    }

    #[test]
    fn wrong_types_are_reported() {
        let e = parse_err("batch_size = \"lots\"");
        assert!(e.contains("batch_size") && e.contains("lots"), "{e}");
        assert!(parse_err("monitored_tables = \"tables\"").contains("monitored_tables"));
        assert!(parse_err("batch_size = ").starts_with("cannot parse config from config text"));
    }

    #[test]
    fn durations_accept_strings_and_milliseconds() {
        let c = AsthaConfig::from_toml_str(
            "backstop_interval = 250\ncleanup_interval = \"2s\"\n\
             data_version_poll = \"500us\"\n[supervisor]\nevent_timeout = \"1m\"\nrefresh_after = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(c.backstop_interval, Duration::from_millis(250));
        assert_eq!(c.cleanup_interval, Duration::from_secs(2));
        assert_eq!(c.supervisor.event_timeout, Duration::from_secs(60));
        assert_eq!(c.data_version_poll, Duration::from_micros(500));
        assert_eq!(c.supervisor.refresh_after, Duration::from_secs(3600));
    }

    #[test]
    fn bad_durations_say_why() {
        let e = parse_err("backstop_interval = \"5 fortnights\"");
        assert!(e.contains("unknown unit `fortnights`"), "{e}");
        let e = parse_err("backstop_interval = -5");
        assert!(e.contains("negative"), "{e}");
        let e = parse_err("backstop_interval = \"250\"");
        assert!(e.contains("no unit"), "{e}");
        let e = parse_err("backstop_interval = 1.5");
        assert!(e.contains("a duration such as"), "{e}");
    }

    #[test]
    fn duration_text_format() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("2s", Duration::from_secs(2)),
            (" 1 m ", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("7us", Duration::from_micros(7)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "ms",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for (duration, text) in [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_nanos(3), "3ns"),
        ] {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn invalid_values_are_explained() {
        let c = AsthaConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: batch_size must be between 1 and 65536 (got 0)"
        );
        let c = AsthaConfig {
            log_table: "a\0b".into(),
            ..Default::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: log_table must not contain a NUL character"
        );
        let cases: Vec<(AsthaConfig, &str)> = vec![
            (
                AsthaConfig {
                    log_table: String::new(),
                    ..Default::default()
                },
                "log_table",
            ),
            (
                AsthaConfig {
                    database: PathBuf::new(),
                    ..Default::default()
                },
                "database",
            ),
            (
                AsthaConfig {
                    batch_size: 65_537,
                    ..Default::default()
                },
                "batch_size",
            ),
            (
                AsthaConfig {
                    batch_max_bytes: 0,
                    ..Default::default()
                },
                "batch_max_bytes",
            ),
            (
                AsthaConfig {
                    window_batches: 0,
                    ..Default::default()
                },
                "window_batches",
            ),
            (
                AsthaConfig {
                    backstop_interval: Duration::ZERO,
                    ..Default::default()
                },
                "backstop_interval",
            ),
            (
                AsthaConfig {
                    data_version_poll: Duration::ZERO,
                    ..Default::default()
                },
                "data_version_poll",
            ),
            (
                AsthaConfig {
                    monitored_tables: vec!["a".into(), "".into()],
                    ..Default::default()
                },
                "monitored_tables[1]",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(invalid_field(&config), field);
        }
    }

    #[test]
    fn cross_field_checks() {
        let mut c = AsthaConfig::default();
        c.monitored_tables.push("tables".into());
        assert_eq!(invalid_field(&c), "monitored_tables");

        let mut c = AsthaConfig::default();
        c.monitored_tables.push("__cdc_log".into());
        assert_eq!(invalid_field(&c), "monitored_tables");

        let mut c = AsthaConfig::default();
        c.subscriptions
            .insert("compactor".into(), vec!["nope".into()]);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: subscriptions.compactor subscribes to `nope`, which is not in \
             monitored_tables"
        );

        let mut c = AsthaConfig::default();
        c.subscriptions
            .insert("x".into(), vec!["tables".into(), "tables".into()]);
        assert_eq!(invalid_field(&c), "subscriptions.x");
    }

    #[test]
    fn sections_are_validated_with_qualified_names() {
        let mut c = AsthaConfig::default();
        c.retry.jitter = 2.0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: retry.jitter must be between 0.0 and 1.0 (got 2)"
        );
        let mut c = AsthaConfig::default();
        c.breaker.failure_threshold = 0;
        assert_eq!(invalid_field(&c), "breaker.failure_threshold");
        let mut c = AsthaConfig::default();
        c.supervisor.refresh_after = Duration::from_secs(5);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: supervisor.refresh_after must be at least health_interval (10s) \
             (got 5s)"
        );
        let mut c = AsthaConfig::default();
        c.supervisor.event_timeout = Duration::ZERO;
        assert_eq!(invalid_field(&c), "supervisor.event_timeout");
    }

    #[test]
    fn env_overrides_top_level_nested_and_lists() {
        let c = env(&[
            ("ASTHA_BATCH_SIZE", "512"),
            ("ASTHA_RETRY__MAX_ATTEMPTS", "5"),
            ("ASTHA_RETRY__MULTIPLIER", "3"),
            ("ASTHA_RETRY__JITTER", "0.5"),
            ("ASTHA_MONITORED_TABLES", "a, b,"),
            ("ASTHA_BACKSTOP_INTERVAL", "250"),
            ("ASTHA_CLEANUP_INTERVAL", "2s"),
            ("ASTHA_BREAKER__COOL_DOWN", "1m"),
            ("ASTHA_LOG_TABLE", "123"),
            ("ASTHA_DATABASE", "/var/lib/astha/main.db"),
            ("ASTHA_SUBSCRIPTIONS__COMPACTOR", "tables"),
            ("ASTHA_SUBSCRIPTIONS__AUDIT", "databases,tables"),
            ("PATH", "/usr/bin"),
            ("ASTHA_CONFIG", "/etc/astha.toml"),
        ])
        .unwrap();
        assert_eq!(c.batch_size, 512);
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.retry.multiplier, 3.0);
        assert_eq!(c.retry.jitter, 0.5);
        assert_eq!(c.monitored_tables, ["a", "b"]);
        assert_eq!(c.backstop_interval, Duration::from_millis(250));
        assert_eq!(c.cleanup_interval, Duration::from_secs(2));
        assert_eq!(c.breaker.cool_down, Duration::from_secs(60));
        assert_eq!(c.log_table, "123");
        assert_eq!(c.database, PathBuf::from("/var/lib/astha/main.db"));
        assert_eq!(c.subscriptions["compactor"], ["tables"]);
        assert_eq!(c.subscriptions["audit"], ["databases", "tables"]);
        assert_eq!(c.subscriptions.len(), 5, "other subscriptions are kept");
    }

    #[test]
    fn env_empty_list() {
        let c = env(&[("ASTHA_SUBSCRIPTIONS__COMPACTOR", "")]).unwrap();
        assert!(c.subscriptions["compactor"].is_empty());
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let mut c = AsthaConfig::default();
        let err = c
            .apply_env([
                ("ASTHA_CLEANUP_INTERVAL", "1s"),
                ("ASTHA_RETRY__MAX_ATTEMPTS", "many"),
            ])
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "cannot parse config from environment variable ASTHA_RETRY__MAX_ATTEMPTS"
            ),
            "{text}"
        );
        assert!(
            text.contains("retry.max_attempts") && text.contains("many"),
            "{text}"
        );
        assert_eq!(c, AsthaConfig::default(), "nothing applied on error");

        let text = env(&[("ASTHA_BATCH_SIZE", "-1")]).unwrap_err().to_string();
        assert!(text.contains("ASTHA_BATCH_SIZE"), "{text}");
        let text = env(&[("ASTHA_BACKSTOP_INTERVAL", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("ASTHA_BACKSTOP_INTERVAL") && text.contains("soon"),
            "{text}"
        );
    }

    #[test]
    fn unknown_env_keys_name_the_variable() {
        for (name, needle) in [
            ("ASTHA_BATCH_SIZ", "unknown field `batch_siz`"),
            ("ASTHA_RETRY__MAX", "unknown field `max`"),
            (
                "ASTHA_RETRI__MAX_ATTEMPTS",
                "unknown config section `retri`",
            ),
            (
                "ASTHA_BATCH_SIZE__X",
                "`batch_size` is a setting, not a section",
            ),
            ("ASTHA_RETRY____X", "does not name a setting"),
        ] {
            let text = env(&[(name, "1")]).unwrap_err().to_string();
            assert!(
                text.contains(&format!("environment variable {name}:")),
                "{text}"
            );
            assert!(text.contains(needle), "{name}: {text}");
        }
    }

    #[test]
    fn tooling_variables_that_name_no_setting_are_left_alone() {
        // Far from every setting name: test and CI tooling, not configuration.
        let config = env(&[
            ("ASTHA_INTEROP_PYTHON", "/venv/bin/python"),
            ("ASTHA_NATS_URL", "nats://127.0.0.1:4222"),
            ("ASTHA_", "x"),
        ])
        .unwrap();
        assert_eq!(config, AsthaConfig::default());
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = AsthaConfig::from_file(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().contains("missing.toml"), "{err}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "batch_size = 1\nwindow = 3\n").unwrap();
        let text = AsthaConfig::from_file(&bad).unwrap_err().to_string();
        assert!(
            text.contains("bad.toml") && text.contains("`window`"),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn load_applies_file_then_env_then_validates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("astha.toml");
        std::fs::write(
            &path,
            "batch_size = 100\nwindow_batches = 2\n[retry]\nmax_attempts = 7\n",
        )
        .unwrap();
        let c = AsthaConfig::load_from(Some(&path), [("ASTHA_WINDOW_BATCHES", "4")]).unwrap();
        assert_eq!(
            (c.batch_size, c.window_batches, c.retry.max_attempts),
            (100, 4, 7)
        );

        let err = AsthaConfig::load_from(Some(&path), [("ASTHA_BATCH_SIZE", "0")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: batch_size must be between 1 and 65536 (got 0)"
        );
        let c = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
        assert_eq!(c, AsthaConfig::default());
    }
}
