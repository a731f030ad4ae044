//! Astha's configuration: one TOML file, overridable by `ASTHA_`-prefixed environment
//! variables, checked once by [`AsthaConfig::validate`].
//!
//! Split by concern, all re-exported here so callers name `astha_core::config::X`:
//! - [`settings`]: [`AsthaConfig`] and [`SupervisorConfig`], each setting with its
//!   default, TOML reading and writing, and validation;
//! - [`env`](mod@env): the `ASTHA_*` override engine and [`AsthaConfig::load`];
//! - [`duration`]: the duration format shared by every config struct ([`duration_serde`]);
//! - [`error`]: the error type, [`ConfigError`].
//!
//! It promises that unknown keys are errors that name the key, that environment overrides
//! go through exactly the same deserialization and validation as the file, and that errors
//! read well to a person. It never reads anything except in [`AsthaConfig::from_file`] and
//! [`AsthaConfig::load`].
//!
//! Precedence: built-in defaults, then the file (absent keys keep their defaults), then
//! the environment. `ASTHA_BATCH_SIZE=512` sets `batch_size`; a double underscore
//! descends into a section, as in `ASTHA_RETRY__MAX_ATTEMPTS=5`; lists are comma
//! separated, as in `ASTHA_MONITORED_TABLES=users,orders`. A variable whose first
//! segment is not a setting nor within two typing mistakes of one (`ASTHA_NATS_URL`,
//! used by tooling) is left alone; a near miss (`ASTHA_BATCH_SIZ`) is an error.

pub mod duration;
pub mod env;
pub mod error;
pub mod settings;

pub use duration::{duration_serde, format_duration, parse_duration};
pub use env::{misspelling_of, ENV_PREFIX, NON_CONFIG_ENV_VARS};
pub use error::ConfigError;
pub use settings::{AsthaConfig, SupervisorConfig};
