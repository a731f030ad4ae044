//! The core's typed errors. Every error says whether retrying can help, so callers
//! (the poller, the supervisors) decide between "retry from the position" and
//! "record and move on" without string matching.

use thiserror::Error;

/// Everything that can go wrong in `astha-core` outside configuration loading.
#[derive(Debug, Error)]
pub enum CoreError {
    /// SQLite reported an error. Busy and locked databases are retriable.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A change-log row cannot be decoded; it belongs in the dead-letter table.
    #[error("malformed change-log row {lsn}: {reason}")]
    Malformed { lsn: i64, reason: String },
    /// The named table does not exist in the database.
    #[error("no such table: {0}")]
    NoSuchTable(String),
    /// The named slot does not exist.
    #[error("no such slot: {0}")]
    NoSuchSlot(String),
    /// A slot write touched no row: the slot's row (or the slot table) was removed by
    /// someone else while its consumer ran. `position` is the consumer's confirmed one.
    #[error("slot {name:?} is gone (its row or the slot table was removed under Astha); its consumer had confirmed LSN {position}")]
    SlotLost { name: String, position: i64 },
    /// A slot write touched no row because the stored position is past the consumer's:
    /// someone else moved the slot forward, which would skip changes after a restart.
    #[error("slot {name:?} was moved to LSN {stored} under Astha, past its consumer's confirmed LSN {position}")]
    SlotMoved {
        name: String,
        stored: i64,
        position: i64,
    },
    /// A slot with that name exists already.
    #[error("slot already exists: {0}")]
    SlotExists(String),
    /// The caller asked for something the data does not allow.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A range asked for starts before the oldest row the log still holds: the changes
    /// in between were cleaned away ([`crate::retention`]).
    #[error("the change log no longer holds {asked}: its oldest retained change is LSN {oldest_lsn} (written {oldest_time}); start at LSN {oldest_lsn} or later (a time after {oldest_time}), or keep more with the retention settings (keep_for, keep_rows)")]
    NotRetained {
        asked: String,
        oldest_lsn: i64,
        oldest_time: String,
    },
    /// A row could not be turned into the requested typed struct.
    #[error("cannot decode {table} row: {reason}")]
    Decode { table: String, reason: String },
}

impl CoreError {
    /// True when the same operation may succeed later without anyone changing the data:
    /// the database was busy or locked, or an I/O error happened.
    pub fn is_retriable(&self) -> bool {
        match self {
            CoreError::Sqlite(err) => sqlite_is_retriable(err),
            _ => false,
        }
    }
}

/// Busy, locked, I/O and full-disk errors are transient from a reader's point of view.
pub fn sqlite_is_retriable(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        err.sqlite_error_code(),
        Some(DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | OperationInterrupted)
    )
}

/// Result alias for the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
