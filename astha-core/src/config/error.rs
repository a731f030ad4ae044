//! The configuration's one error type: a file that cannot be read, text or a variable
//! that does not parse, or a value out of range. It only describes; it decides nothing.

use std::path::PathBuf;

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
