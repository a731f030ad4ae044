//! The settings: [`AsthaConfig`] and [`SupervisorConfig`], each field with its named
//! default and a doc comment, reading and writing TOML, and [`AsthaConfig::validate`].
//!
//! It promises that unknown keys are errors that name the key and that a configuration
//! that validates can be run; it reads no environment (see [`super::env`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{duration_serde, format_duration};
use super::error::ConfigError;
use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

/// The whole configuration of an Astha process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsthaConfig {
    /// SQLite database holding the captured tables and the change log. Default
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
    /// Size of the WAL file (`<database>-wal`) past which Astha resets it: a checkpoint
    /// that copies every frame into the database so the WAL starts over. Under a writer
    /// that never pauses, SQLite's own checkpoints cannot start the WAL over while Astha
    /// reads, and it grows without bound. The file is kept and written over (truncated
    /// once past twice this), so it stays under about twice this size. A reset makes
    /// writers wait for Astha's reads in flight and the last frames' copy (as for any of
    /// Astha's writes), for at most `wal_reset_wait`. `0` turns it off. Default
    /// `67108864` (64 MiB).
    pub wal_max_bytes: u64,
    /// How long a WAL reset waits for readers still inside the WAL (another
    /// connection's long read transaction) before it gives up, leaving the WAL as it was,
    /// and backs off. Writers wait that long at most. Default `"100ms"`.
    #[serde(with = "duration_serde")]
    pub wal_reset_wait: Duration,
    /// How long the change log keeps rows every slot is past (`[retention]`, with
    /// `keep_for` and `keep_rows`), for replay and `state-at`; retained rows cost disk.
    /// Default: none kept (a row goes once the slowest slot passed it). See
    /// [`crate::retention::Retention`].
    pub retention: crate::retention::Retention,
    /// Capture the rows an `INSERT OR REPLACE` removes as DELETEs even when the writing
    /// connection has `recursive_triggers` off (SQLite's default, and that of Python's
    /// `sqlite3` and most drivers), where SQLite fires no delete trigger for them (and
    /// the rows an `UPDATE OR REPLACE` removes). Costs every captured INSERT and UPDATE
    /// a lookup per unique key (BENCHMARKS.md). It shapes the
    /// triggers: a process started with the other setting installs its own. Default
    /// `false`.
    pub exact_replace: bool,
    /// How long a non-durable slot (`watch` without `--slot`, a live feed) outlives its
    /// engine's last renewal: the engine renews its leases every `cleanup_interval`, and
    /// an engine that died without cleaning up (kill -9) loses its slots this long
    /// after. Must be more than twice `cleanup_interval`. Default `"30s"`.
    #[serde(with = "duration_serde")]
    pub lease_ttl: Duration,
    /// Tables that get capture triggers when Astha starts. Default: none (the core knows
    /// no table; an embedding names its own, see `AsthaConfig::load_with`).
    pub monitored_tables: Vec<String>,
    /// Subscription overrides: component name to the monitored tables whose changes it
    /// receives, in place of the tables the component asks for itself. A component
    /// registered under a name listed here gets exactly these tables; a name that no
    /// registered component has is an error (`Astha::check_subscriptions`), so a
    /// setting never silently fails to apply. A `[subscriptions]` table in the file
    /// replaces this whole map; an environment variable such as
    /// `ASTHA_SUBSCRIPTIONS__INDEXER` sets one entry. Default: empty (every component
    /// gets the tables it asks for).
    pub subscriptions: BTreeMap<String, Vec<String>>,
    /// Backoff and attempt limit for failed deliveries. Defaults: see [`RetryPolicy`].
    pub retry: RetryPolicy,
    /// Circuit breaker around each component. Defaults: see [`BreakerConfig`].
    pub breaker: BreakerConfig,
    /// Timeouts and health checking of components. Defaults: see [`SupervisorConfig`].
    pub supervisor: SupervisorConfig,
}

const MAX_BATCH_SIZE: usize = 65_536;
/// A batch is held in memory several times over (window, retries); beyond this a typo
/// is more likely than intent.
const MAX_BATCH_BYTES: usize = 1 << 30;

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
            wal_max_bytes: 64 << 20,
            wal_reset_wait: Duration::from_millis(100),
            retention: crate::retention::Retention::default(),
            exact_replace: false,
            lease_ttl: Duration::from_secs(30),
            monitored_tables: Vec::new(),
            subscriptions: BTreeMap::new(),
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
        check_positive("wal_reset_wait", self.wal_reset_wait)?;
        // A lease renewed once per cleanup tick must survive a late tick.
        if self.lease_ttl <= self.cleanup_interval * 2 {
            return Err(ConfigError::invalid(
                "lease_ttl",
                format!(
                    "must be more than twice cleanup_interval ({:?}), or live slots expire \
                     while their engine runs",
                    self.cleanup_interval
                ),
            ));
        }
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
        assert!(c.monitored_tables.is_empty(), "the core knows no table");
        assert!(
            c.subscriptions.is_empty(),
            "every component gets the tables it asks for"
        );
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
    fn retention_is_a_section_of_caps_off_by_default() {
        assert!(AsthaConfig::default().retention.is_off());
        let c = AsthaConfig::from_toml_str("[retention]\nkeep_for = \"2h\"\nkeep_rows = 1000\n")
            .unwrap();
        assert_eq!(c.retention.keep_for, Duration::from_secs(7200));
        assert_eq!(c.retention.keep_rows, 1000);
        c.validate().unwrap();
        let back = AsthaConfig::from_toml_str(&c.to_toml_string().unwrap()).unwrap();
        assert_eq!(back.retention, c.retention);
        assert!(parse_err("[retention]\nkeep_fr = \"1h\"\n").contains("keep_fr"));
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
        let monitoring = || AsthaConfig {
            monitored_tables: vec!["tables".into(), "files".into()],
            ..AsthaConfig::default()
        };
        monitoring().validate().unwrap();

        let mut c = monitoring();
        c.monitored_tables.push("tables".into());
        assert_eq!(invalid_field(&c), "monitored_tables");

        let mut c = monitoring();
        c.monitored_tables.push("__cdc_log".into());
        assert_eq!(invalid_field(&c), "monitored_tables");

        let mut c = monitoring();
        c.subscriptions
            .insert("indexer".into(), vec!["nope".into()]);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid config: subscriptions.indexer subscribes to `nope`, which is not in \
             monitored_tables"
        );

        let mut c = monitoring();
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
}
