//! The SQL catalog: which metadata file is current for each table, in SQLite.
//!
//! Owns the two tables pyiceberg's `SqlCatalog` (and iceberg-rust's) use, with their exact
//! column names, so `SqlCatalog(name, uri="sqlite:///<db>")` opens our tables by name when the
//! catalog name matches. The one promise that matters: [`SqlCatalog::commit`] is a
//! compare-and-swap on `metadata_location`; a writer whose base is stale gets
//! [`IcebergError::CommitConflict`] and nothing changes.
//!
//! The handle is cheap to clone; clones share one connection behind a mutex (a rusqlite
//! connection is `Send` but not `Sync`). Other processes may use the same file: the busy
//! timeout makes them wait for each other instead of failing at once. A commit may carry
//! [`InSwap`] work: SQL run on the catalog's connection inside the swap's own transaction, so
//! a caller whose bookkeeping lives in the same SQLite file (Astha's registry) moves it with
//! the table, atomically: both happen or neither does. The catalog also
//! carries the [`Clock`] its tables stamp their commits with, and the live-file indexes their
//! commits share (`live_index.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::clock::{Clock, SystemClock};
use super::commit::CommitFailpoint;
use super::error::{IcebergError, Result};
use super::live_index::LiveIndexes;

/// pyiceberg writes this into `iceberg_type` for tables (views use another value).
const TABLE_TYPE: &str = "TABLE";

/// Creates the catalog tables if absent; the DDL matches pyiceberg's SQLAlchemy models.
const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name VARCHAR(255) NOT NULL,
    table_namespace VARCHAR(255) NOT NULL,
    table_name VARCHAR(255) NOT NULL,
    metadata_location VARCHAR(1000),
    previous_metadata_location VARCHAR(1000),
    iceberg_type VARCHAR(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name VARCHAR(255) NOT NULL,
    namespace VARCHAR(255) NOT NULL,
    property_key VARCHAR(255) NOT NULL,
    property_value VARCHAR(1000) NOT NULL,
    PRIMARY KEY (catalog_name, namespace, property_key)
);";

/// Work to do in the same SQLite transaction as a commit's catalog swap, on the catalog's
/// connection (so on the catalog's database file). It runs only once the swap has matched;
/// if it fails, the transaction (swap included) is rolled back and the commit fails with
/// [`IcebergError::SwapAborted`]. It must not begin or commit a transaction itself.
pub struct InSwap(Box<SwapWork>);

/// What an [`InSwap`] runs.
type SwapWork = dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send;

impl InSwap {
    pub fn new(work: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static) -> Self {
        InSwap(Box::new(work))
    }
}

impl std::fmt::Debug for InSwap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InSwap(..)")
    }
}

/// A test's crash inside the swap transaction (`CommitFailpoint::InSwapTransaction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwapCrash {
    No,
    Return,
    Abort,
}

/// A handle on one named catalog inside a SQLite database.
#[derive(Clone)]
pub struct SqlCatalog {
    conn: Arc<Mutex<Connection>>,
    name: Arc<str>,
    clock: Arc<dyn Clock>,
    /// What the tables loaded through this catalog know of their live files.
    live_indexes: LiveIndexes,
}

impl std::fmt::Debug for SqlCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCatalog")
            .field("name", &self.name)
            .field("clock", &self.clock)
            .finish()
    }
}

impl SqlCatalog {
    /// Opens (creating if needed) the SQLite database at `path` as catalog `catalog_name`.
    pub fn open(path: impl AsRef<Path>, catalog_name: &str) -> Result<Self> {
        let conn = Connection::open(path.as_ref())?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL: a swap costs one sync instead of a rollback journal's several, and readers
        // (pyiceberg included) do not block the writer. Persistent in the file; Astha's
        // registry, which may hold the catalog, is in WAL mode already.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        Self::from_connection(conn, catalog_name)
    }

    /// Uses an existing connection as catalog `catalog_name`, creating the tables if absent.
    pub fn from_connection(conn: Connection, catalog_name: &str) -> Result<Self> {
        if catalog_name.is_empty() {
            return Err(IcebergError::InvalidArgument("empty catalog name".into()));
        }
        conn.execute_batch(SCHEMA_SQL)?;
        Ok(SqlCatalog {
            conn: Arc::new(Mutex::new(conn)),
            name: catalog_name.into(),
            clock: Arc::new(SystemClock),
            live_indexes: LiveIndexes::default(),
        })
    }

    /// This catalog (same connection) with `clock` for the tables loaded through it.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock tables loaded through this catalog stamp their commits with.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub(crate) fn live_indexes(&self) -> &LiveIndexes {
        &self.live_indexes
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-updated (statements are
        // atomic), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `namespace` the way pyiceberg does (an `exists=true` property). Idempotent.
    pub fn create_namespace(&self, namespace: &str) -> Result<()> {
        validate_name("namespace", namespace)?;
        self.conn().execute(
            "INSERT OR IGNORE INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value) VALUES (?1, ?2, 'exists', 'true')",
            params![&*self.name, namespace],
        )?;
        Ok(())
    }

    /// True if the namespace was created or holds a table.
    pub fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        let found: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM iceberg_namespace_properties WHERE catalog_name = ?1 AND namespace = ?2
                 UNION ALL
                 SELECT 1 FROM iceberg_tables WHERE catalog_name = ?1 AND table_namespace = ?2
                 LIMIT 1",
                params![&*self.name, namespace],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Names of the tables in `namespace`, sorted.
    pub fn list_tables(&self, namespace: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT table_name FROM iceberg_tables WHERE catalog_name = ?1 AND table_namespace = ?2
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) ORDER BY table_name",
        )?;
        let names = stmt
            .query_map(params![&*self.name, namespace], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// Current metadata location of a table, or `None` if the catalog does not have it.
    pub fn load_metadata_location(&self, namespace: &str, table: &str) -> Result<Option<String>> {
        let loc: Option<Option<String>> = self
            .conn()
            .query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                 AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
                params![&*self.name, namespace, table],
                |r| r.get(0),
            )
            .optional()?;
        Ok(loc.flatten())
    }

    /// Adds a table pointing at its first metadata file; fails if the name is taken.
    pub fn register(&self, namespace: &str, table: &str, metadata_location: &str) -> Result<()> {
        validate_name("namespace", namespace)?;
        validate_name("table", table)?;
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
            params![&*self.name, namespace, table, metadata_location, TABLE_TYPE],
        )?;
        if inserted == 0 {
            return Err(IcebergError::TableAlreadyExists(format!(
                "{namespace}.{table}"
            )));
        }
        Ok(())
    }

    /// Removes a table from the catalog (its files stay, as pyiceberg's `drop_table` without
    /// purge leaves them). Returns whether the catalog had it.
    pub fn drop_table(&self, namespace: &str, table: &str) -> Result<bool> {
        let removed = self.conn().execute(
            "DELETE FROM iceberg_tables WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
            params![&*self.name, namespace, table],
        )?;
        Ok(removed > 0)
    }

    /// Compare-and-swap: points the table at `new` only if it still points at `expected`.
    pub fn commit(&self, namespace: &str, table: &str, expected: &str, new: &str) -> Result<()> {
        self.commit_with(namespace, table, expected, new, None, SwapCrash::No)
    }

    /// [`commit`](Self::commit) with `in_swap` run in the swap's transaction. With `crash`
    /// (a test failpoint) the transaction is abandoned after the work, before `COMMIT`: rolled
    /// back and reported ([`SwapCrash::Return`]), or left open while the process aborts
    /// ([`SwapCrash::Abort`]), for SQLite's recovery to roll back as after a kill -9.
    pub(crate) fn commit_with(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new: &str,
        in_swap: Option<InSwap>,
        crash: SwapCrash,
    ) -> Result<()> {
        {
            let mut conn = self.conn();
            // IMMEDIATE: the write lock is taken at BEGIN, so the work after the swap
            // cannot fail for want of it.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE iceberg_tables SET metadata_location = ?4, previous_metadata_location = ?5
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                 AND metadata_location = ?5",
                params![&*self.name, namespace, table, new, expected],
            )?;
            if changed == 1 {
                if let Some(InSwap(work)) = in_swap {
                    // Dropping `tx` on the error path rolls the swap back.
                    work(&tx).map_err(|source| IcebergError::SwapAborted {
                        table: format!("{namespace}.{table}"),
                        source,
                    })?;
                }
                match crash {
                    SwapCrash::No => {}
                    SwapCrash::Return => {
                        return Err(IcebergError::InjectedFailure(
                            CommitFailpoint::InSwapTransaction,
                        ))
                    }
                    SwapCrash::Abort => std::process::abort(),
                }
                tx.commit()?;
                return Ok(());
            }
        }
        let actual = self.load_metadata_location(namespace, table)?;
        if actual.is_none() {
            return Err(IcebergError::NoSuchTable(format!("{namespace}.{table}")));
        }
        Err(IcebergError::CommitConflict {
            table: format!("{namespace}.{table}"),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Names become directory names and SQL keys: refuse the ones that would escape or confuse.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.starts_with('.')
        || name.ends_with('.');
    if bad {
        return Err(IcebergError::InvalidArgument(format!(
            "invalid {what} name {name:?}: must be non-empty, without '/', '\\', NUL, or leading/trailing '.'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_and_compare_and_swap() {
        let cat =
            SqlCatalog::from_connection(Connection::open_in_memory().unwrap(), "astha").unwrap();
        cat.create_namespace("cdc").unwrap();
        cat.create_namespace("cdc").unwrap();
        assert!(cat.namespace_exists("cdc").unwrap());
        assert!(!cat.namespace_exists("other").unwrap());

        assert_eq!(cat.load_metadata_location("cdc", "t").unwrap(), None);
        cat.register("cdc", "t", "file:///m0").unwrap();
        assert!(matches!(
            cat.register("cdc", "t", "file:///x"),
            Err(IcebergError::TableAlreadyExists(_))
        ));
        cat.commit("cdc", "t", "file:///m0", "file:///m1").unwrap();
        let err = cat
            .commit("cdc", "t", "file:///m0", "file:///m2")
            .unwrap_err();
        assert!(err.is_retriable());
        match err {
            IcebergError::CommitConflict { actual, .. } => {
                assert_eq!(actual.as_deref(), Some("file:///m1"))
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            cat.load_metadata_location("cdc", "t").unwrap().as_deref(),
            Some("file:///m1")
        );
        assert!(matches!(
            cat.commit("cdc", "nope", "a", "b"),
            Err(IcebergError::NoSuchTable(_))
        ));
        assert_eq!(cat.list_tables("cdc").unwrap(), vec!["t".to_string()]);
    }

    #[test]
    fn catalogs_with_other_names_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cat.db");
        let a = SqlCatalog::open(&db, "a").unwrap();
        let b = SqlCatalog::open(&db, "b").unwrap();
        a.register("ns", "t", "file:///a").unwrap();
        assert_eq!(b.load_metadata_location("ns", "t").unwrap(), None);
        assert!(validate_name("table", "../x").is_err());
        assert!(validate_name("table", "").is_err());
        assert!(validate_name("table", "orders_2024").is_ok());
    }
}
