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
                Some(code @ (ErrorCode::DiskFull | ErrorCode::SystemIoFailure)) => {
                    if let Some(full) = disk_full(path, code == ErrorCode::DiskFull) {
                        return CliError::Message(full);
                    }
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

/// Below this many free bytes an I/O error is taken for a full disk: SQLite reports
/// `disk I/O error` rather than `disk is full` when, with a few pages left, it could
/// create its `-wal` and `-shm` files but not grow them.
const NEARLY_FULL: u64 = 1 << 20;

/// "The disk is full" for an error on `path`, when the file system holding it is (or
/// SQLite said so, `said_full`).
fn disk_full(path: &Path, said_full: bool) -> Option<String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let free = free_bytes(dir);
    if !said_full && free.is_none_or(|f| f >= NEARLY_FULL) {
        return None;
    }
    let free = free.map_or(String::new(), |f| format!(" ({f} bytes free)"));
    Some(format!(
        "the disk holding {} is full{free}: free some space and start again",
        path.display()
    ))
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
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
