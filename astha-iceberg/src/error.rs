//! The one error type of the Iceberg writer.
//!
//! Every variant names the thing it is about (row and column, file path, table), so a message
//! read in a log is enough to act on. [`IcebergError::is_retriable`] separates transient failures
//! (a lost compare-and-swap, an I/O hiccup, a busy catalog) from ones that will fail again;
//! [`IcebergError::is_definitely_not_committed`] separates a commit that certainly did not
//! happen (its files may be removed, its work redone) from one whose outcome is unknown.

use std::path::PathBuf;

use super::table::CommitFailpoint;

/// Result alias for the Iceberg module.
pub type Result<T, E = IcebergError> = std::result::Result<T, E>;

/// Everything that can go wrong while writing or reading an Iceberg table.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// A SQL type name that has no Iceberg counterpart here.
    #[error("unknown SQL type {0:?}: expected one of int64/bigint/integer, int32/int, string/text/varchar, double/float64/real, float32/float, bool/boolean, binary/blob, date, timestamp")]
    UnknownSqlType(String),

    /// A column list that cannot be a table schema (duplicate ids or names, empty, ...).
    #[error("invalid schema: {0}")]
    InvalidSchema(String),

    /// A row value that does not fit its column; `row` is 0-based.
    #[error("row {row}, column {column:?}: {reason}")]
    BadValue {
        row: usize,
        column: String,
        reason: String,
    },

    /// A caller-supplied argument that makes no sense (empty commit, relative path, bad name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A file system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The Parquet library rejected a read or write.
    #[error("parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Building Arrow arrays or batches failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// The Avro library rejected a manifest or manifest list.
    #[error("avro error on {path}: {source}")]
    Avro {
        path: PathBuf,
        #[source]
        source: apache_avro::Error,
    },

    /// A manifest, manifest list or Parquet file whose content is not what Iceberg promises.
    #[error("corrupt file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// Table metadata JSON that cannot be parsed or written.
    #[error("table metadata {path}: {source}")]
    MetadataJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Table metadata that parses but uses something this writer does not support.
    #[error("unsupported table metadata {location}: {reason}")]
    Unsupported { location: String, reason: String },

    /// The SQL catalog failed.
    #[error("catalog error: {0}")]
    Catalog(#[from] rusqlite::Error),

    /// `namespace.table` is not in the catalog.
    #[error("table {0} does not exist in the catalog")]
    NoSuchTable(String),

    /// `namespace.table` is already in the catalog.
    #[error("table {0} already exists in the catalog")]
    TableAlreadyExists(String),

    /// The catalog moved on since this table was loaded: reload and retry.
    #[error(
        "commit conflict on {table}: expected current metadata {expected}, catalog has {actual:?}"
    )]
    CommitConflict {
        table: String,
        expected: String,
        actual: Option<String>,
    },

    /// The catalog swap itself failed, so the new version may or may not be current. Reload
    /// before deciding anything, and never delete the commit's files: they may be live.
    #[error("commit outcome unknown on {table} (new metadata {metadata_location}): {source}")]
    CommitStateUnknown {
        table: String,
        metadata_location: String,
        #[source]
        source: Box<IcebergError>,
    },

    /// The work a caller asked to run in the swap's transaction ([`super::InSwap`]) failed,
    /// so the transaction, the swap included, was rolled back: nothing was committed.
    #[error("commit of {table} rolled back: the work in its swap transaction failed: {source}")]
    SwapAborted {
        table: String,
        #[source]
        source: rusqlite::Error,
    },

    /// `create` found an existing table with different columns.
    #[error("table {table} exists with a different schema: {reason}")]
    SchemaMismatch { table: String, reason: String },

    /// An appended or added data file is already live in the table.
    #[error("data file {0} is already live in the table")]
    DuplicateDataFile(String),

    /// A file to remove is not live in the current snapshot.
    #[error("data file {0} is not live in the current snapshot")]
    UnknownDataFile(String),

    /// A snapshot id that the table does not have (any more).
    #[error("snapshot {0} does not exist")]
    NoSuchSnapshot(i64),

    /// A test failpoint fired: the process "crashed" at this step of a commit.
    #[error("injected failure at commit step {0:?}")]
    InjectedFailure(CommitFailpoint),
}

/// True for SQLite's "someone else holds the lock" errors, which pass with time.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(e, _) if matches!(
        e.code,
        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
    ))
}

impl IcebergError {
    /// True when the same operation may succeed if tried again (after a reload for conflicts).
    pub fn is_retriable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            // A simulated crash: the same operation succeeds after a reload, like after a
            // real restart.
            IcebergError::CommitConflict { .. } | IcebergError::InjectedFailure(_) => true,
            // A missing file or a permission problem will not fix itself.
            IcebergError::Io { source, .. } => !matches!(
                source.kind(),
                ErrorKind::NotFound
                    | ErrorKind::PermissionDenied
                    | ErrorKind::InvalidInput
                    | ErrorKind::InvalidData
                    | ErrorKind::Unsupported
            ),
            // Whether to try again later is the swap error's call; the retry reloads first.
            IcebergError::CommitStateUnknown { source, .. } => source.is_retriable(),
            IcebergError::Catalog(e) | IcebergError::SwapAborted { source: e, .. } => is_busy(e),
            _ => false,
        }
    }

    /// True for a lost compare-and-swap: nothing was published, and the same change may be
    /// re-applied on the reloaded table. The only error [`super::commit_with_retry`] retries.
    pub fn is_commit_conflict(&self) -> bool {
        matches!(self, IcebergError::CommitConflict { .. })
    }

    /// True when a commit that returned this error certainly did not publish anything, so the
    /// files written for it may be deleted. False for an unknown swap outcome, and for a test
    /// failpoint: it stands for a crash, after which nobody is left to clean up.
    pub fn is_definitely_not_committed(&self) -> bool {
        !matches!(
            self,
            IcebergError::CommitStateUnknown { .. } | IcebergError::InjectedFailure(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IcebergError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IcebergError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
