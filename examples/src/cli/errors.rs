//! Errors a person can act on: each says what went wrong and what to do about it.

use std::path::{Path, PathBuf};

use astha_actors::AsthaError;
use astha_core::CoreError;

/// An error for the command line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Message(String),
    #[error("no such file: {} (point astha at an existing SQLite database)", .0.display())]
    MissingFile(PathBuf),
    #[error("{} is not a SQLite database", .0.display())]
    NotADatabase(PathBuf),
    #[error("{} is locked by another connection; wait for it to finish, or stop it, and retry", .0.display())]
    Locked(PathBuf),
    #[error("{0}")]
    Config(#[from] astha_core::config::ConfigError),
    #[error("{0}")]
    Astha(AsthaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// Turns a core error on `path` into one that names the file and the way out.
    pub fn on(path: &Path, err: CoreError) -> CliError {
        use rusqlite::ErrorCode;
        if let CoreError::Sqlite(sqlite) = &err {
            match sqlite.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) => return CliError::NotADatabase(path.into()),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    return CliError::Locked(path.into())
                }
                Some(ErrorCode::CannotOpen) => {
                    return CliError::Message(format!("cannot open {}: {sqlite}", path.display()))
                }
                _ => {}
            }
        }
        CliError::Message(format!("{}: {err}", path.display()))
    }

    /// Same for errors from the runtime.
    pub fn astha(path: &Path, err: AsthaError) -> CliError {
        match err {
            AsthaError::Core(core) => CliError::on(path, core),
            other => CliError::Astha(other),
        }
    }
}

/// Opens an existing database, with errors that name the file.
pub fn open_existing(path: &Path) -> Result<rusqlite::Connection, CliError> {
    if !path.exists() {
        return Err(CliError::MissingFile(path.into()));
    }
    let conn = astha_core::db::open_existing(path).map_err(|e| CliError::on(path, e))?;
    // Opening is lazy: read the schema now so "not a database" surfaces here.
    astha_core::schema::schema_version(&conn).map_err(|e| CliError::on(path, e))?;
    Ok(conn)
}

/// Opens an existing database read-only (creates nothing, changes nothing), with errors
/// that name the file.
pub fn open_read_only(path: &Path) -> Result<rusqlite::Connection, CliError> {
    if !path.exists() {
        return Err(CliError::MissingFile(path.into()));
    }
    let conn = astha_core::db::open_read_only(path).map_err(|e| CliError::on(path, e))?;
    astha_core::schema::schema_version(&conn).map_err(|e| CliError::on(path, e))?;
    Ok(conn)
}

/// The change-log table: the flag when given, else the configuration's (`--config`,
/// `ASTHA_LOG_TABLE`), so every command reads the log `run` and `watch` write.
pub fn log_table(config: Option<&Path>, flag: Option<String>) -> Result<String, CliError> {
    match flag {
        Some(name) => Ok(name),
        None => Ok(astha_core::config::AsthaConfig::load(config)?.log_table),
    }
}
