//! The `ASTHA_*` environment overrides, and [`AsthaConfig::load`], which reads them.
//!
//! It promises that an override goes through exactly the same deserialization and
//! validation as the file: each value is set in the TOML form of the configuration and
//! the whole is deserialized again. It never knows a setting by name: the settings are
//! whatever [`AsthaConfig`] serializes.

use std::path::Path;

use super::error::ConfigError;
use super::settings::AsthaConfig;

/// Prefix of the environment variables that override configuration values.
pub const ENV_PREFIX: &str = "ASTHA_";

/// `ASTHA_` variables that are not configuration values (the config file path, the log
/// filter and the HTTP token, read by the binary), so [`AsthaConfig::apply_env`] skips
/// them instead of rejecting them as unknown settings.
pub const NON_CONFIG_ENV_VARS: &[&str] = &["ASTHA_CONFIG", "ASTHA_LOG", "ASTHA_HTTP_TOKEN"];

/// The variable of `known` that `name` misspells (within two typing mistakes, but not
/// equal), if any. A misspelt security setting must be an error: ignored,
/// `ASTHA_HTTP_TOKN=secret` would leave the endpoints open without a token.
pub fn misspelling_of<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .copied()
        .find(|k| *k != name && edit_distance(k, name) <= 2)
}

impl AsthaConfig {
    /// The configuration a process runs with: the file at `path` (or the defaults), then
    /// the `ASTHA_` environment variables, then [`validate`](Self::validate).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, |_| {})
    }

    /// [`load`](Self::load) for an embedding with defaults of its own (tables it always
    /// monitors): `defaults` runs on the file's configuration, or the
    /// built-in one, before the environment is applied, so environment variables still
    /// override what it sets, and validation sees the result.
    pub fn load_with(
        path: Option<&Path>,
        defaults: impl FnOnce(&mut Self),
    ) -> Result<Self, ConfigError> {
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
        Self::load_from_with(path, defaults, vars)
    }

    /// [`load`](Self::load) with the environment passed in, for tests and embedding.
    pub fn load_from<I, K, V>(path: Option<&Path>, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::load_from_with(path, |_| {}, vars)
    }

    /// [`load_with`](Self::load_with) with the environment passed in, for tests and
    /// embedding.
    pub fn load_from_with<I, K, V>(
        path: Option<&Path>,
        defaults: impl FnOnce(&mut Self),
        vars: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        defaults(&mut config);
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
    use std::path::PathBuf;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Result<AsthaConfig, ConfigError> {
        let mut config = AsthaConfig::default();
        config.apply_env(pairs.iter().copied())?;
        Ok(config)
    }

    #[test]
    fn env_overrides_top_level_nested_and_lists() {
        let mut c = AsthaConfig::default();
        for component in ["indexer", "mailer"] {
            c.subscriptions
                .insert(component.into(), vec!["files".into()]);
        }
        c.apply_env([
            ("ASTHA_BATCH_SIZE", "512"),
            ("ASTHA_RETENTION__KEEP_FOR", "30m"),
            ("ASTHA_RETRY__MAX_ATTEMPTS", "5"),
            ("ASTHA_RETRY__MULTIPLIER", "3"),
            ("ASTHA_RETRY__JITTER", "0.5"),
            ("ASTHA_MONITORED_TABLES", "a, b,"),
            ("ASTHA_BACKSTOP_INTERVAL", "250"),
            ("ASTHA_CLEANUP_INTERVAL", "2s"),
            ("ASTHA_BREAKER__COOL_DOWN", "1m"),
            ("ASTHA_LOG_TABLE", "123"),
            ("ASTHA_DATABASE", "/var/lib/astha/main.db"),
            ("ASTHA_SUBSCRIPTIONS__INDEXER", "tables"),
            ("ASTHA_SUBSCRIPTIONS__AUDIT", "databases,tables"),
            ("PATH", "/usr/bin"),
            ("ASTHA_CONFIG", "/etc/astha.toml"),
        ])
        .unwrap();
        assert_eq!(c.batch_size, 512);
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.retention.keep_for, Duration::from_secs(1800));
        assert_eq!(c.retry.multiplier, 3.0);
        assert_eq!(c.retry.jitter, 0.5);
        assert_eq!(c.monitored_tables, ["a", "b"]);
        assert_eq!(c.backstop_interval, Duration::from_millis(250));
        assert_eq!(c.cleanup_interval, Duration::from_secs(2));
        assert_eq!(c.breaker.cool_down, Duration::from_secs(60));
        assert_eq!(c.log_table, "123");
        assert_eq!(c.database, PathBuf::from("/var/lib/astha/main.db"));
        assert_eq!(c.subscriptions["indexer"], ["tables"]);
        assert_eq!(c.subscriptions["audit"], ["databases", "tables"]);
        assert_eq!(
            c.subscriptions["mailer"],
            ["files"],
            "other subscriptions are kept"
        );
        assert_eq!(c.subscriptions.len(), 3);
    }

    #[test]
    fn an_embeddings_defaults_come_before_the_environment() {
        let monitor = |c: &mut AsthaConfig| c.monitored_tables = vec!["a".into(), "b".into()];
        let c =
            AsthaConfig::load_from_with(None, monitor, [("ASTHA_SUBSCRIPTIONS__X", "b")]).unwrap();
        assert_eq!(c.monitored_tables, ["a", "b"]);
        assert_eq!(
            c.subscriptions["x"],
            ["b"],
            "validated against the defaults"
        );
        let c =
            AsthaConfig::load_from_with(None, monitor, [("ASTHA_MONITORED_TABLES", "c")]).unwrap();
        assert_eq!(c.monitored_tables, ["c"]);
    }

    #[test]
    fn env_empty_list() {
        let c = env(&[("ASTHA_SUBSCRIPTIONS__INDEXER", "")]).unwrap();
        assert!(c.subscriptions["indexer"].is_empty());
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
    fn misspellings_of_binary_variables_are_found_and_exact_names_are_not() {
        let known = NON_CONFIG_ENV_VARS;
        assert_eq!(
            misspelling_of("ASTHA_HTTP_TOKN", known),
            Some("ASTHA_HTTP_TOKEN")
        );
        assert_eq!(misspelling_of("ASTHA_HTTP_TOKEN", known), None);
        assert_eq!(misspelling_of("ASTHA_CONFG", known), Some("ASTHA_CONFIG"));
        for tooling in [
            "ASTHA_NATS_URL",
            "ASTHA_INTEROP_PYTHON",
            "ASTHA_FORMATS_PYTHON",
        ] {
            assert_eq!(misspelling_of(tooling, known), None, "{tooling}");
        }
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
