//! The Iceberg mirror (`type = "iceberg"`): each captured SQLite table mirrored as an
//! Iceberg v2 table in a warehouse directory, exactly once, readable by pyiceberg and DuckDB.
//!
//! - **Catalog.** `<warehouse>/catalog.db` is a SQLite file holding pyiceberg's `SqlCatalog`
//!   tables (catalog `catalog_name`, default `astha`), so
//!   `SqlCatalog("astha", uri="sqlite:///<warehouse>/catalog.db", warehouse="file://<warehouse>")`
//!   loads `<namespace>.<table>`; the namespace defaults to the source's name. The same file
//!   holds the sink's bookkeeping: `astha_mirror_markers` (per source identity and table,
//!   the LSN of the last change applied) and `astha_mirror_rows` (per table and primary key,
//!   the data file and 0-based position of the row's live copy).
//! - **Changes.** Per delivery (at most `batch_size` changes) and table, one Iceberg commit
//!   (`row_delta`): an INSERT (or snapshot READ) is a new row in the commit's Parquet data
//!   file; an UPDATE is a position delete of the row's live copy plus the new image; a
//!   DELETE is a position delete. A key changed twice in one delivery is written once (its
//!   last image); a row inserted and deleted in one delivery is never written.
//! - **Exactly once.** The commit's catalog swap, the row index changes and the table's
//!   marker are one SQLite transaction (`row_delta_with` + `InSwap`); a change at or below
//!   its table's marker is confirmed without being applied. A crash anywhere leaves either
//!   the old snapshot with the old index and marker, or the new ones: never rows twice. A
//!   crash before the swap leaves the commit's data file unreferenced: an orphan, removed
//!   when the sink next opens the catalog (`remove_orphan_files`, files older than `orphan_age`,
//!   default 1 h, so another writer's commit in flight is never touched).
//! - **Fewer, larger commits** (`commit_interval`, `stage.rs`). With it, a delivery's
//!   converted changes are staged in the catalog file with the tables' markers in one
//!   SQLite transaction, and confirmed; a table is committed to Iceberg (its staged
//!   changes folded as one delivery's, unstaged in the swap's transaction) once its oldest
//!   staged change is `commit_interval` old (checked by a flusher task every half
//!   interval and after each delivery) or `commit_rows` are staged. So the slot never
//!   passes a change that is neither in Iceberg nor staged, and readers see changes up to
//!   about `commit_interval` late; changes staged when Astha stops are committed at the
//!   next start.
//! - **Types** (created once per table from the SQLite declared types, or `column_types`):
//!   INTEGER affinity → `long` (INTEGER values), REAL → `double` (REAL values), TEXT →
//!   `string` (UTF-8 TEXT), BLOB or no type → `binary` (BLOB), NUMERIC (`NUMERIC`,
//!   `BOOLEAN`, `DATE`...) → `long` (INTEGER values). `column_types` may name `long`,
//!   `double` (also takes INTEGERs that a double holds exactly), `string` or `binary` per
//!   `"table.column"`. NULL fits every column. Any other value (a REAL in a `long` column,
//!   TEXT that is not UTF-8, ±infinity) is refused: a permanent error naming table, column
//!   and LSN, so the supervisor dead-letters that change after committing those before it.
//!   Nothing is converted into something else.
//! - **Compaction.** Once a table has `compact_after_delete_files` live delete files, the
//!   commit is followed by `fold_deletes` (the files with deletes rewritten into one, the
//!   delete files removed), the row index moved in that swap's transaction.
//! - **Schema changes.** When a change arrives under other captured columns (`ALTER TABLE`),
//!   the changes before it are committed, then the Iceberg schema follows in a metadata-only
//!   commit (`update_schema`): ADD gets a new field id, RENAME (a name replaced at the same
//!   position, the column count unchanged) keeps the id, DROP removes it for good; old data
//!   files are read by field id. As in the PostgreSQL sink, a DROP of the last column and
//!   an ADD with no change captured in between look exactly like a RENAME.
//! - **Expiry.** After each compaction and when a table is loaded: with a positive
//!   `keep_snapshots`, all but that many snapshots; with `keep_for`, the snapshots older than that,
//!   except the last `keep_snapshots` (at least one). The files only expired snapshots
//!   reached are deleted (never a file of the current snapshot, so never one the row index
//!   names).
//! - Tables without a primary key are refused.
//!
//! All SQLite and Parquet work runs on tokio's blocking pool, never on an executor thread.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::change::Row;
use astha_core::schema::{affinity, Affinity};
use astha_core::{Change, Operation, Value};
use astha_iceberg::{
    write_parquet, ColumnSpec, IcebergTable, IcebergType, InSwap, PositionDelete, SqlCatalog,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::Value as Json;

use super::registry::{SinkConfig, SinkContext};

mod stage;

/// Configuration of an [`IcebergSink`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// The warehouse directory (created if missing; relative to the working directory).
    pub warehouse: PathBuf,
    /// The Iceberg namespace of the mirrored tables. Default: the source's name.
    #[serde(default)]
    pub namespace: String,
    /// The catalog name pyiceberg's `SqlCatalog` is opened with.
    #[serde(default = "default_catalog")]
    pub catalog_name: String,
    /// Tables to mirror (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Most changes in one delivery, so in one Iceberg commit per table.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Fold the position deletes of a table into its data files (`fold_deletes`) once it
    /// has this many live delete files; 0 never compacts.
    #[serde(default = "default_compact_after")]
    pub compact_after_delete_files: u64,
    /// After each compaction, expire all but the last `keep_snapshots` snapshots of the
    /// table and delete the files only they reached (`expire_snapshots`); 0 (the default)
    /// never expires. Time travel reaches only kept snapshots, and a reader still scanning
    /// an expired one may find its files gone: keep enough for the longest query.
    #[serde(default)]
    pub keep_snapshots: usize,
    /// Expire snapshots older than this (`"7d"`, `"12h"`, `"30m"`; Iceberg's
    /// `history.expire.max-snapshot-age-ms`), keeping at least `keep_snapshots` (at least
    /// one) whatever their age. Expiry runs when a table is loaded and after each compaction.
    #[serde(default)]
    pub keep_for: Option<String>,
    /// Commit to Iceberg at most this often per table (`"1s"`, `"500ms"`); until then the
    /// converted changes wait in the catalog file's staging table, so the slot moves on
    /// and nothing is lost across a crash. Absent or `"0s"` (the default): one commit per
    /// delivery and table, no staging.
    #[serde(default)]
    pub commit_interval: Option<String>,
    /// With `commit_interval`: commit a table as soon as this many of its changes are
    /// staged (so also the most staged changes one commit reads into memory, plus one
    /// delivery).
    #[serde(default = "default_commit_rows")]
    pub commit_rows: usize,
    /// When a table is loaded, delete files under its directory that no metadata reaches
    /// and that are older than this (what a crash before a catalog swap leaves). Another
    /// writer's commit in flight has files not yet reached: keep this longer than any
    /// commit. `"0s"` sweeps everything unreached (only when nothing else writes the table).
    #[serde(default = "default_orphan_age")]
    pub orphan_age: String,
    /// Iceberg type of a created column, overriding the mapping by affinity:
    /// `"table.column" = "double"` (`long`, `double`, `string` or `binary`).
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,
}

fn default_name() -> String {
    "iceberg_mirror".into()
}
fn default_catalog() -> String {
    "astha".into()
}
fn default_batch_size() -> usize {
    1000
}
fn default_compact_after() -> u64 {
    32
}
fn default_commit_rows() -> usize {
    100_000
}
fn default_orphan_age() -> String {
    "1h".into()
}

/// A duration in the pipeline's syntax (`"250ms"`, `"1s"`, `"2h"`, `"7d"`).
fn parse_age(text: &str) -> Result<Duration, String> {
    astha_core::config::parse_duration(text)
}

/// The parsed durations of an [`IcebergSinkConfig`].
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Zero: no staging.
    commit_interval: Duration,
    keep_for: Option<Duration>,
    orphan_age: Duration,
}

/// The catalog file inside the warehouse.
pub const CATALOG_FILE: &str = "catalog.db";

impl IcebergSinkConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(warehouse: impl Into<PathBuf>, namespace: &str, tables: &[&str]) -> Self {
        IcebergSinkConfig {
            name: default_name(),
            warehouse: warehouse.into(),
            namespace: namespace.into(),
            catalog_name: default_catalog(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            batch_size: default_batch_size(),
            compact_after_delete_files: default_compact_after(),
            keep_snapshots: 0,
            keep_for: None,
            commit_interval: None,
            commit_rows: default_commit_rows(),
            orphan_age: default_orphan_age(),
            column_types: BTreeMap::new(),
        }
    }

    fn timing(&self) -> Result<Timing, String> {
        let field = |what: &str, text: &str| {
            parse_age(text).map_err(|e| format!("iceberg sink {}: {what}: {e}", self.name))
        };
        Ok(Timing {
            commit_interval: match &self.commit_interval {
                Some(t) => field("commit_interval", t)?,
                None => Duration::ZERO,
            },
            keep_for: self
                .keep_for
                .as_deref()
                .map(|t| field("keep_for", t))
                .transpose()?,
            orphan_age: field("orphan_age", &self.orphan_age)?,
        })
    }

    fn parsed_column_types(&self) -> Result<HashMap<(String, String), IcebergType>, String> {
        self.column_types
            .iter()
            .map(|(at, ty)| {
                let (table, column) = at.split_once('.').ok_or_else(|| {
                    format!("iceberg sink {}: column_types key {at:?} is not \"table.column\"", self.name)
                })?;
                let ty = match ty.as_str() {
                    "long" => IcebergType::Long,
                    "double" => IcebergType::Double,
                    "string" => IcebergType::String,
                    "binary" => IcebergType::Binary,
                    _ => {
                        return Err(format!(
                            "iceberg sink {}: column_types {at:?} = {ty:?}: use long, double, string or binary",
                            self.name
                        ))
                    }
                };
                Ok(((table.to_string(), column.to_string()), ty))
            })
            .collect()
    }

    /// Checks the settings (no I/O); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("iceberg sink: name is empty".into());
        }
        if self.warehouse.as_os_str().is_empty() {
            return Err(format!("iceberg sink {name}: warehouse is empty"));
        }
        if self.tables.is_empty() {
            return Err(format!("iceberg sink {name}: no tables"));
        }
        if self.catalog_name.is_empty() {
            return Err(format!("iceberg sink {name}: catalog_name is empty"));
        }
        if self.batch_size == 0 {
            return Err(format!("iceberg sink {name}: batch_size must be > 0"));
        }
        if self.commit_rows == 0 {
            return Err(format!("iceberg sink {name}: commit_rows must be > 0"));
        }
        self.timing()?;
        self.parsed_column_types().map(|_| ())
    }

    fn for_context(&self, ctx: &SinkContext) -> IcebergSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        if config.namespace.is_empty() {
            config.namespace = ctx.source.clone();
        }
        config
    }
}

impl SinkConfig for IcebergSinkConfig {
    const TYPE: &'static str = "iceberg";
    const ABOUT: &'static str = "mirrors tables into Iceberg v2 tables (Parquet, position deletes, SQL catalog in the warehouse), exactly once";

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        let config = self.for_context(ctx);
        config.validate()?;
        if let Ok(conn) = astha_core::db::open_read_only(&ctx.database) {
            for table in &config.tables {
                if let Ok((_, key)) = astha_core::schema::live_columns(&conn, table) {
                    if key.is_empty() {
                        return Err(format!("iceberg sink {}: {}", config.name, no_key(table)));
                    }
                }
            }
        }
        Ok(())
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(IcebergSink::new(
            self.for_context(ctx),
            ctx.database.clone(),
            &ctx.identity,
        )?))
    }
}

fn no_key(table: &str) -> String {
    format!(
        "table {table} has no primary key: the iceberg mirror applies updates and deletes by \
         key; declare one, or leave the table out of this sink"
    )
}

/// What the sink keeps open between deliveries (rebuilt after any failure).
struct State {
    catalog: SqlCatalog,
    /// A second connection to the catalog file: index reads, staging and marker-only writes.
    conn: Connection,
    tables: HashMap<String, IcebergTable>,
    markers: HashMap<String, i64>,
    /// With `commit_interval`: per table, how many changes are staged and since when.
    staged: HashMap<String, (usize, Instant)>,
    /// A staged commit failed: read everything again before the next use.
    stale: bool,
}

/// The state, shared by deliveries and the staging flusher; `None` until opened or after
/// a failure (then everything is read again from the catalog file).
type Shared = Arc<Mutex<Option<Box<State>>>>;

fn lock(shared: &Mutex<Option<Box<State>>>) -> MutexGuard<'_, Option<Box<State>>> {
    // A panic mid-work left the state unknown: drop it.
    shared.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = None;
        guard
    })
}

/// Mirrors tables into Iceberg; see the module docs.
pub struct IcebergSink {
    job: Job,
    shared: Shared,
    /// With `commit_interval`: commits staged changes that no delivery comes to push.
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for IcebergSink {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.abort();
        }
    }
}

impl IcebergSink {
    /// A sink for the SQLite database at `database` (read for declared column types),
    /// whose markers are keyed by `identity`. Opens the catalog lazily.
    pub fn new(
        config: IcebergSinkConfig,
        database: PathBuf,
        identity: &str,
    ) -> Result<Self, String> {
        config.validate()?;
        if identity.is_empty() {
            return Err(format!("iceberg sink {}: empty identity", config.name));
        }
        let mut config = config;
        config.warehouse = std::path::absolute(&config.warehouse)
            .map_err(|e| format!("iceberg sink {}: warehouse: {e}", config.name))?;
        Ok(IcebergSink {
            job: Job {
                column_types: Arc::new(config.parsed_column_types()?),
                timing: config.timing()?,
                config: Arc::new(config),
                database,
                identity: identity.into(),
            },
            shared: Arc::new(Mutex::new(None)),
            flusher: None,
        })
    }

    /// The catalog file of this sink's warehouse.
    pub fn catalog_path(&self) -> PathBuf {
        self.job.config.warehouse.join(CATALOG_FILE)
    }

    /// Starts the flusher once (it needs the runtime, so not in `new`).
    fn start_flusher(&mut self) {
        let interval = self.job.timing.commit_interval;
        if interval.is_zero() || self.flusher.is_some() {
            return;
        }
        let period = (interval / 2).max(Duration::from_millis(10));
        let (job, shared) = (self.job.clone(), Arc::downgrade(&self.shared));
        self.flusher = Some(tokio::spawn(flush_staged(job, shared, period)));
    }

    async fn run(&mut self, changes: Vec<Arc<Change>>) -> Result<(), BatchError> {
        self.start_flusher();
        let (job, shared) = (self.job.clone(), self.shared.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&shared);
            let mut state = match guard.take() {
                Some(s) => s,
                None => match job.open() {
                    Ok(s) => Box::new(s),
                    Err(error) => return Err(BatchError { handled: 0, error }),
                },
            };
            let result = job.apply(&mut state, &changes);
            // After a failure, everything is read again from the catalog file.
            let keep = !state.stale
                && (result.is_ok() || result.as_ref().is_err_and(|e| !e.error.is_retriable()));
            if keep {
                *guard = Some(state);
            }
            result
        })
        .await;
        joined.unwrap_or_else(|e| {
            Err(BatchError {
                handled: 0,
                error: ComponentError::transient(format!("iceberg sink task: {e}")),
            })
        })
    }
}

/// The flusher: every `period`, commits the tables whose staged changes are due, until
/// the sink is dropped. A failure is logged and the state dropped (read again next time);
/// the staged changes stay in the catalog file.
async fn flush_staged(job: Job, shared: Weak<Mutex<Option<Box<State>>>>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let work = job.clone();
        let done = tokio::task::spawn_blocking(move || {
            let job = work;
            let mut guard = lock(&shared);
            let mut state = match guard.take() {
                Some(s) => s,
                None => Box::new(job.open()?),
            };
            job.flush_due(&mut state, false)?;
            *guard = Some(state);
            Ok::<_, ComponentError>(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(sink = %job.config.name, error = %e, "iceberg mirror: staged commit failed; retried")
            }
            Err(e) => {
                tracing::warn!(sink = %job.config.name, error = %e, "iceberg mirror: flusher task failed")
            }
        }
    }
}

/// What the blocking side needs of the sink.
#[derive(Clone)]
struct Job {
    config: Arc<IcebergSinkConfig>,
    timing: Timing,
    database: PathBuf,
    identity: Arc<str>,
    column_types: Arc<HashMap<(String, String), IcebergType>>,
}

/// Writes `table`'s marker (the LSN of its last change applied or staged).
fn write_marker(
    conn: &Connection,
    source: &str,
    namespace: &str,
    table: &str,
    lsn: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO astha_mirror_markers (source, namespace, table_name, lsn)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (source, namespace, table_name) DO UPDATE SET lsn = excluded.lsn",
        params![source, namespace, table, lsn],
    )?;
    Ok(())
}

/// What a commit of a table's changes records in its swap transaction besides the index.
enum Finish {
    /// A delivery's changes: the table's marker moves to this LSN.
    Marker(i64),
    /// Staged changes: those up to this sequence number leave the staging table.
    Unstage(i64),
}

/// One table's share of a delivery, being folded: the rows its commit will write (None
/// once removed again in the same delivery) and the committed copies it deletes.
#[derive(Default)]
struct Batch {
    pending: Vec<Option<(String, Vec<Json>)>>,
    pending_at: HashMap<String, usize>,
    removed: HashSet<String>,
    deletes: Vec<PositionDelete>,
}

type Find<'a> = dyn FnMut(&str) -> Result<Option<(String, i64)>, ComponentError> + 'a;

impl Batch {
    /// Removes `key`'s current copy: a pending row is dropped, a committed one deleted by
    /// position (once).
    fn remove(&mut self, key: &str, find: &mut Find<'_>) -> Result<(), ComponentError> {
        if let Some(i) = self.pending_at.remove(key) {
            self.pending[i] = None;
            return Ok(());
        }
        if self.removed.contains(key) {
            return Ok(());
        }
        if let Some((file, pos)) = find(key)? {
            self.deletes.push(PositionDelete {
                data_file: PathBuf::from(file),
                pos: pos as u64,
            });
            self.removed.insert(key.to_string());
        }
        Ok(())
    }
}

/// One change, checked and converted.
enum RowOp {
    /// Remove `old_key`'s live copy (if any), then write `row` under `key`.
    Upsert {
        old_key: Option<String>,
        key: String,
        row: Vec<Json>,
    },
    Delete {
        key: String,
    },
}

fn transient(what: &str, e: impl std::fmt::Display) -> ComponentError {
    ComponentError::transient(format!("iceberg sink: {what}: {e}"))
}

impl Job {
    fn open(&self) -> Result<State, ComponentError> {
        let warehouse = &self.config.warehouse;
        std::fs::create_dir_all(warehouse).map_err(|e| transient("create warehouse", e))?;
        let path = warehouse.join(CATALOG_FILE);
        let catalog = SqlCatalog::open(&path, &self.config.catalog_name)
            .map_err(|e| transient("open catalog", e))?;
        let conn = Connection::open(&path).map_err(|e| transient("open catalog", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| transient("open catalog", e))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS astha_mirror_markers (
                 source TEXT NOT NULL, namespace TEXT NOT NULL, table_name TEXT NOT NULL,
                 lsn INTEGER NOT NULL, PRIMARY KEY (source, namespace, table_name));
             CREATE TABLE IF NOT EXISTS astha_mirror_rows (
                 namespace TEXT NOT NULL, table_name TEXT NOT NULL, row_key TEXT NOT NULL,
                 data_file TEXT NOT NULL, pos INTEGER NOT NULL,
                 PRIMARY KEY (namespace, table_name, row_key)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS astha_mirror_rows_at
                 ON astha_mirror_rows (namespace, table_name, data_file, pos);",
        )
        .map_err(|e| transient("create bookkeeping tables", e))?;
        stage::create(&conn).map_err(|e| transient("create staging table", e))?;
        // Changes staged before a restart (committed below).
        let staged = stage::counts(&conn, &self.config.namespace)
            .map_err(|e| transient("read staging table", e))?
            .into_iter()
            .map(|(table, n)| (table, (n, Instant::now())))
            .collect();
        let markers = conn
            .prepare(
                "SELECT table_name, lsn FROM astha_mirror_markers WHERE source = ?1 AND namespace = ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![&*self.identity, &self.config.namespace], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<HashMap<_, _>>>()
            })
            .map_err(|e| transient("read markers", e))?;
        let mut state = State {
            catalog,
            conn,
            tables: HashMap::new(),
            markers,
            staged,
            stale: false,
        };
        // Loading sweeps orphans and expires: on start for every table mirrored before.
        for table in &self.config.tables {
            self.load_table(&mut state, table)?;
        }
        // Changes staged before a stop or a crash are committed before anything else, also
        // when `commit_interval` has since been removed.
        self.flush_due(&mut state, true)?;
        Ok(state)
    }

    /// True when changes wait in the staging table instead of being committed per delivery.
    fn staging(&self) -> bool {
        !self.timing.commit_interval.is_zero()
    }

    /// Takes a table's share of a delivery: committed at once, or staged.
    fn take(
        &self,
        state: &mut State,
        table: &str,
        lsn: i64,
        ops: Vec<RowOp>,
    ) -> Result<(), ComponentError> {
        if !self.staging() {
            self.commit_table(state, table, Finish::Marker(lsn), ops)?;
            state.markers.insert(table.to_string(), lsn);
            return Ok(());
        }
        let n = ops.len();
        let batch = [(table.to_string(), lsn, ops)];
        stage::stage(&state.conn, &self.identity, &self.config.namespace, &batch)
            .map_err(|e| transient("stage changes", e))?;
        state.markers.insert(table.to_string(), lsn);
        state
            .staged
            .entry(table.to_string())
            .or_insert((0, Instant::now()))
            .0 += n;
        Ok(())
    }

    /// Commits the staged changes of every table that is due (`commit_rows` staged, or
    /// the oldest staged `commit_interval` ago), or of every table with `all`.
    fn flush_due(&self, state: &mut State, all: bool) -> Result<(), ComponentError> {
        let due: Vec<String> = state
            .staged
            .iter()
            .filter(|(_, (n, since))| {
                all || *n >= self.config.commit_rows
                    || since.elapsed() >= self.timing.commit_interval
            })
            .map(|(t, _)| t.clone())
            .collect();
        for table in due {
            self.flush_table(state, &table)?;
        }
        Ok(())
    }

    /// Commits the staged changes of one table (if any) in one Iceberg commit.
    fn flush_table(&self, state: &mut State, table: &str) -> Result<(), ComponentError> {
        let staged = stage::load(&state.conn, &self.config.namespace, table)
            .map_err(|e| transient("read staging table", e))?;
        if let Some((seq, ops)) = staged {
            self.load_table(state, table)?;
            self.commit_table(state, table, Finish::Unstage(seq), ops)?;
        }
        state.staged.remove(table);
        Ok(())
    }

    /// Applies `changes`: converts them in order (stopping at the first that cannot be
    /// mirrored), then commits each table's share.
    fn apply(&self, state: &mut State, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        let mut by_table: BTreeMap<String, (i64, Vec<RowOp>)> = BTreeMap::new();
        let mut refused = None;
        for (i, change) in changes.iter().enumerate() {
            let table = change.table.to_string();
            // Rows of a snapshot (READ) all carry its LSN: one must never hide the next, so
            // they are skipped only below the marker (a later change of the table was
            // applied, which follows them all); at the marker they are applied again, an
            // idempotent upsert of the row as of that LSN.
            let covered = |m: &i64| match change.op {
                Operation::Read => change.lsn < *m,
                _ => change.lsn <= *m,
            };
            if state.markers.get(&table).is_some_and(covered) {
                continue;
            }
            if let Err(error) = self.table(state, change) {
                refused = Some((i, error));
                break;
            }
            if let Some(row) = change.row() {
                let names: Vec<&str> = state.tables[&table]
                    .columns()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                if row.columns() != names.as_slice() {
                    // The changes before, under the old columns, are committed first
                    // (staged ones too).
                    if let Some((lsn, ops)) = by_table.remove(&table) {
                        self.take(state, &table, lsn, ops)
                            .map_err(|error| BatchError { handled: 0, error })?;
                    }
                    if self.staging() {
                        self.flush_table(state, &table)
                            .map_err(|error| BatchError { handled: 0, error })?;
                    }
                    if let Err(error) = self.evolve(state, &table, row.columns()) {
                        refused = Some((i, error));
                        break;
                    }
                }
            }
            match convert(&state.tables[&table], change) {
                Ok(op) => {
                    let entry = by_table.entry(table).or_default();
                    entry.0 = change.lsn;
                    entry.1.push(op);
                }
                Err(why) => {
                    refused = Some((i, ComponentError::permanent(why)));
                    break;
                }
            }
        }
        for (table, (lsn, ops)) in by_table {
            self.take(state, &table, lsn, ops)
                .map_err(|error| BatchError { handled: 0, error })?;
        }
        if self.staging() {
            // Staged is confirmed: a failed commit here is retried by the flusher or the
            // next delivery, never by delivering these changes again.
            if let Err(e) = self.flush_due(state, false) {
                tracing::warn!(sink = %self.config.name, error = %e, "iceberg mirror: staged commit failed; retried");
                state.stale = true;
            }
        }
        match refused {
            None => Ok(()),
            Some((handled, error)) => Err(BatchError { handled, error }),
        }
    }

    /// The Iceberg table of `change`'s table, loaded or created from its captured columns.
    fn table<'s>(
        &self,
        state: &'s mut State,
        change: &Change,
    ) -> Result<&'s IcebergTable, ComponentError> {
        let name = change.table.to_string();
        if !self.load_table(state, &name)? {
            let row = change.row().ok_or_else(|| {
                ComponentError::permanent(format!(
                    "lsn {}: a change without a row image",
                    change.lsn
                ))
            })?;
            let columns = self.columns_for(&name, row.columns())?;
            let ns = &self.config.namespace;
            let table =
                IcebergTable::create(&state.catalog, &self.config.warehouse, ns, &name, &columns)
                    .map_err(|e| transient("create table", e))?;
            state.tables.insert(name.clone(), table);
        }
        Ok(&state.tables[&name])
    }

    /// Loads the Iceberg table `name` into the state if the catalog has it (false if not).
    /// On load, sweeps its orphan files (older than `orphan_age`) and expires its snapshots
    /// as `keep_snapshots`/`keep_for` say.
    fn load_table(&self, state: &mut State, name: &str) -> Result<bool, ComponentError> {
        if state.tables.contains_key(name) {
            return Ok(true);
        }
        let ns = &self.config.namespace;
        let exists = state
            .catalog
            .load_metadata_location(ns, name)
            .map_err(|e| transient("read catalog", e))?
            .is_some();
        if !exists {
            return Ok(false);
        }
        let mut table =
            IcebergTable::load(&state.catalog, ns, name).map_err(|e| transient("load table", e))?;
        let older_than = state.catalog.clock().now_ms()
            - i64::try_from(self.timing.orphan_age.as_millis()).unwrap_or(i64::MAX / 2);
        // The sweep is housekeeping: a failure is reported, never a reason to stop mirroring.
        match table.remove_orphan_files(older_than, &BTreeSet::new()) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(table = %name, removed = removed.len(), "iceberg mirror removed orphan files");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(table = %name, error = %e, "iceberg mirror: orphan sweep failed")
            }
        }
        self.expire(&mut table, name)?;
        state.tables.insert(name.to_string(), table);
        Ok(true)
    }

    /// Expires snapshots as `keep_snapshots` and `keep_for` say (nothing if neither is set).
    fn expire(&self, iceberg: &mut IcebergTable, table: &str) -> Result<(), ComponentError> {
        let keep_last = self.config.keep_snapshots;
        let older_than = self.timing.keep_for.map(|age| {
            iceberg.catalog().clock().now_ms()
                - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2)
        });
        if keep_last == 0 && older_than.is_none() {
            return Ok(());
        }
        let expired = match older_than {
            // Iceberg's rule: older than the age and not among the last `keep_last`.
            Some(cutoff) => iceberg.expire_snapshots(keep_last.max(1), Some(cutoff)),
            None => iceberg.expire_snapshots(keep_last, None),
        }
        .map_err(|e| transient("expire snapshots", e))?;
        if !expired.expired_snapshot_ids.is_empty() {
            tracing::debug!(table = %table, ?expired, "iceberg mirror expired snapshots");
        }
        Ok(())
    }

    /// Brings the Iceberg table's schema in line with captured `columns` (a metadata-only
    /// commit): a known name keeps its field id and type; a name that replaced another at
    /// the same position, with the column count unchanged, is a RENAME (same id); any other
    /// new name is an ADD (a new id above every id the table used, typed from its declared
    /// type); a name no longer captured is dropped (its id never reused).
    fn evolve(
        &self,
        state: &mut State,
        table: &str,
        columns: &[String],
    ) -> Result<(), ComponentError> {
        let iceberg = state.tables.get_mut(table).expect("loaded before");
        let old = iceberg.columns().to_vec();
        let mut next_id = iceberg.metadata().last_column_id + 1;
        let declared = self.declared_types(table)?;
        let next: Vec<ColumnSpec> = columns
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if let Some(c) = old.iter().find(|c| &c.name == name) {
                    return c.clone();
                }
                if let Some(o) = old
                    .get(i)
                    .filter(|o| columns.len() == old.len() && !columns.contains(&o.name))
                {
                    return ColumnSpec::new(o.field_id, name.clone(), o.ty, o.required);
                }
                next_id += 1;
                ColumnSpec::new(
                    next_id - 1,
                    name.clone(),
                    self.type_of(table, name, &declared),
                    false,
                )
            })
            .collect();
        iceberg.update_schema(&next).map_err(|e| {
            let message = format!("table {table}: schema change to {columns:?}: {e}");
            if e.is_retriable() {
                ComponentError::transient(message)
            } else {
                ComponentError::permanent(message)
            }
        })?;
        Ok(())
    }

    /// Declared types of the source table's columns, as SQLite reports them now.
    fn declared_types(&self, table: &str) -> Result<HashMap<String, String>, ComponentError> {
        let conn = astha_core::db::open_read_only(&self.database)
            .map_err(|e| transient("open source database", e))?;
        conn.prepare(&format!("PRAGMA table_info({})", quote(table)))
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                    .collect()
            })
            .map_err(|e| transient("read declared types", e))
    }

    /// The Iceberg type of a created column (see the module doc).
    fn type_of(
        &self,
        table: &str,
        column: &str,
        declared: &HashMap<String, String>,
    ) -> IcebergType {
        self.column_types
            .get(&(table.to_string(), column.to_string()))
            .copied()
            .unwrap_or_else(|| {
                match affinity(declared.get(column).map(String::as_str).unwrap_or("")) {
                    Affinity::Integer | Affinity::Numeric => IcebergType::Long,
                    Affinity::Real => IcebergType::Double,
                    Affinity::Text => IcebergType::String,
                    Affinity::Blob => IcebergType::Binary,
                }
            })
    }

    /// Iceberg columns for a SQLite table's captured `columns` (ids 1.., all optional).
    fn columns_for(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<Vec<ColumnSpec>, ComponentError> {
        let declared = self.declared_types(table)?;
        Ok(columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                ColumnSpec::new(
                    i as i32 + 1,
                    c.clone(),
                    self.type_of(table, c, &declared),
                    false,
                )
            })
            .collect())
    }

    /// Commits one table's share of a delivery with its index changes and marker.
    fn commit_table(
        &self,
        state: &mut State,
        table: &str,
        finish: Finish,
        ops: Vec<RowOp>,
    ) -> Result<(), ComponentError> {
        let ns = self.config.namespace.clone();
        let mut batch = Batch::default();
        {
            let mut lookup = state
                .conn
                .prepare_cached(
                    "SELECT data_file, pos FROM astha_mirror_rows
                     WHERE namespace = ?1 AND table_name = ?2 AND row_key = ?3",
                )
                .map_err(|e| transient("read row index", e))?;
            let mut find = |key: &str| -> Result<Option<(String, i64)>, ComponentError> {
                lookup
                    .query_row(params![&ns, table, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(|e| transient("read row index", e))
            };
            for op in ops {
                match op {
                    RowOp::Upsert { old_key, key, row } => {
                        if let Some(old) = old_key {
                            batch.remove(&old, &mut find)?;
                        }
                        batch.remove(&key, &mut find)?;
                        batch.pending_at.insert(key.clone(), batch.pending.len());
                        batch.pending.push(Some((key, row)));
                    }
                    RowOp::Delete { key } => batch.remove(&key, &mut find)?,
                }
            }
        }
        let Batch {
            pending,
            removed,
            deletes,
            ..
        } = batch;
        let rows: Vec<(String, Vec<Json>)> = pending.into_iter().flatten().collect();
        let source = self.identity.to_string();
        let (ns2, table_name) = (ns.clone(), table.to_string());
        let finish = move |conn: &Connection| -> rusqlite::Result<()> {
            match finish {
                Finish::Marker(lsn) => write_marker(conn, &source, &ns2, &table_name, lsn),
                Finish::Unstage(seq) => stage::unstage(conn, &ns2, &table_name, seq),
            }
        };
        if rows.is_empty() && deletes.is_empty() {
            // Nothing changes in the table (say, a row inserted and deleted): the marker
            // (or the staging table) alone.
            return finish(&state.conn).map_err(|e| transient("write marker", e));
        }
        let iceberg = state
            .tables
            .get_mut(table)
            .expect("converted changes have a table");
        let mut added = Vec::new();
        let mut location = String::new();
        if !rows.is_empty() {
            let path = iceberg
                .data_dir()
                .map_err(|e| transient("table location", e))?
                .join(format!("{}.parquet", uuid::Uuid::new_v4()));
            let values: Vec<Vec<Json>> = rows.iter().map(|(_, r)| r.clone()).collect();
            let file = write_parquet(&path, iceberg.columns(), &values)
                .map_err(|e| transient("write data file", e))?;
            location = file.path.to_string_lossy().into_owned();
            added.push(file);
        }
        let keys: Vec<String> = rows.into_iter().map(|(k, _)| k).collect();
        let (ns3, table3) = (ns.clone(), table.to_string());
        let in_swap = InSwap::new(move |conn| {
            {
                let mut del = conn.prepare_cached(
                    "DELETE FROM astha_mirror_rows
                     WHERE namespace = ?1 AND table_name = ?2 AND row_key = ?3",
                )?;
                for key in &removed {
                    del.execute(params![ns3, table3, key])?;
                }
                let mut put = conn.prepare_cached(
                    "INSERT INTO astha_mirror_rows (namespace, table_name, row_key, data_file, pos)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (pos, key) in keys.iter().enumerate() {
                    put.execute(params![ns3, table3, key, location, pos as i64])?;
                }
            }
            finish(conn)
        });
        let done = iceberg
            .row_delta_with(&added, &deletes, in_swap)
            .map_err(|e| transient("commit", e))?;
        let threshold = self.config.compact_after_delete_files;
        if threshold > 0 && done.summary_u64("total-delete-files") >= threshold {
            self.compact(iceberg, table)?;
        }
        Ok(())
    }

    /// Folds the table's position deletes into its data files, moving the row index's
    /// entries in the swap's transaction.
    fn compact(&self, iceberg: &mut IcebergTable, table: &str) -> Result<(), ComponentError> {
        let path = iceberg
            .data_dir()
            .map_err(|e| transient("table location", e))?
            .join(format!("{}-folded.parquet", uuid::Uuid::new_v4()));
        let (ns, table_name) = (self.config.namespace.clone(), table.to_string());
        let folded = iceberg
            .fold_deletes(&path, |folded| {
                let new_file = folded
                    .new_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let rewritten = folded.rewritten.clone();
                Some(InSwap::new(move |conn| {
                    move_row_index(conn, &ns, &table_name, &new_file, &rewritten)
                }))
            })
            .map_err(|e| transient("compact", e))?;
        if let Some((snapshot, folded)) = folded {
            self.expire(iceberg, table)?;
            tracing::info!(
                table = %table,
                snapshot_id = snapshot.snapshot_id,
                rows = folded.surviving_rows(),
                data_files = folded.removed_files.len(),
                delete_files = folded.removed_delete_files.len(),
                "iceberg mirror compacted"
            );
        }
        Ok(())
    }
}

/// Points the row index's entries of each rewritten data file at their rows' places in
/// the folded file, a page of entries at a time (memory stays at one page whatever the
/// table's size; a moved entry leaves the old file's range, so the next page starts after
/// the last position moved).
fn move_row_index(
    conn: &rusqlite::Connection,
    ns: &str,
    table: &str,
    new_file: &str,
    rewritten: &[astha_iceberg::Rewritten],
) -> rusqlite::Result<()> {
    const PAGE: i64 = 4096;
    let mut page = conn.prepare_cached(
        "SELECT pos FROM astha_mirror_rows
         WHERE namespace = ?1 AND table_name = ?2 AND data_file = ?3 AND pos > ?4
         ORDER BY pos LIMIT ?5",
    )?;
    let mut set = conn.prepare_cached(
        "UPDATE astha_mirror_rows SET data_file = ?1, pos = ?2
         WHERE namespace = ?3 AND table_name = ?4 AND data_file = ?5 AND pos = ?6",
    )?;
    for r in rewritten {
        let old = r.old_file.to_string_lossy();
        let mut after = -1i64;
        loop {
            let positions: Vec<i64> = page
                .query_map(params![ns, table, old, after, PAGE], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for &at in &positions {
                // An entry at a deleted position cannot be: a deleted row leaves the index
                // in the commit that deletes it. Left in place if it ever were.
                if let Some(to) = u64::try_from(at).ok().and_then(|at| r.new_position(at)) {
                    set.execute(params![new_file, to as i64, ns, table, old, at])?;
                }
            }
            match positions.last() {
                Some(&last) if positions.len() as i64 == PAGE => after = last,
                _ => break,
            }
        }
    }
    Ok(())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The index key of a row: its primary-key values in lossless JSON.
fn key_of(row: &Row, lsn: i64) -> Result<String, String> {
    if row.schema().primary_key.is_empty() {
        return Err(format!("lsn {lsn}: {}", no_key(&row.schema().table)));
    }
    let key = row.key();
    if key.len() != row.schema().primary_key.len() {
        return Err(format!("lsn {lsn}: the row image lacks key columns"));
    }
    Ok(Json::Array(key.iter().map(|v| v.to_json()).collect()).to_string())
}

/// Checks `change` against the table's columns and converts it.
fn convert(table: &IcebergTable, change: &Change) -> Result<RowOp, String> {
    let lsn = change.lsn;
    let name = &change.table;
    fn image<'r>(
        row: Option<&'r Row>,
        what: &str,
        name: &str,
        lsn: i64,
    ) -> Result<&'r Row, String> {
        row.ok_or_else(|| format!("table {name}, lsn {lsn}: no {what} image"))
    }
    let values = |row: &Row| -> Result<Vec<Json>, String> {
        let columns = table.columns();
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        if row.columns() != names.as_slice() {
            return Err(format!(
                "table {name}, lsn {lsn}: captured columns {:?} differ from the Iceberg table's {names:?}",
                row.columns()
            ));
        }
        columns
            .iter()
            .zip(row.values())
            .map(|(c, v)| {
                fit(c.ty, v)
                    .map_err(|why| format!("table {name}, column {}, lsn {lsn}: {why}", c.name))
            })
            .collect()
    };
    Ok(match change.op {
        Operation::Insert | Operation::Read => {
            let row = image(change.after.as_ref(), "after", name, lsn)?;
            RowOp::Upsert {
                old_key: None,
                key: key_of(row, lsn)?,
                row: values(row)?,
            }
        }
        Operation::Update => {
            let before = image(change.before.as_ref(), "before", name, lsn)?;
            let after = image(change.after.as_ref(), "after", name, lsn)?;
            RowOp::Upsert {
                old_key: Some(key_of(before, lsn)?),
                key: key_of(after, lsn)?,
                row: values(after)?,
            }
        }
        Operation::Delete => RowOp::Delete {
            key: key_of(image(change.before.as_ref(), "before", name, lsn)?, lsn)?,
        },
    })
}

/// A SQLite value as the JSON `write_parquet` takes for a column of type `ty`, or why it
/// does not fit.
fn fit(ty: IcebergType, v: &Value) -> Result<Json, String> {
    let refuse = || {
        Err(format!(
            "a {} value does not fit Iceberg type {ty}",
            v.type_name()
        ))
    };
    match (ty, v) {
        (_, Value::Null) => Ok(Json::Null),
        (IcebergType::Long, Value::Integer(i)) => Ok(Json::from(*i)),
        (IcebergType::Double, Value::Real(f)) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} cannot be stored as an Iceberg double by this writer")),
        (IcebergType::Double, Value::Integer(i))
            if (*i as f64) as i64 == *i && i.unsigned_abs() <= 1 << 53 =>
        {
            Ok(Json::from(*i as f64))
        }
        (IcebergType::String, Value::Text(s)) => Ok(Json::String(s.clone())),
        (IcebergType::String, Value::TextBytes(_)) => {
            Err("TEXT that is not UTF-8 does not fit Iceberg type string".into())
        }
        (IcebergType::Binary, Value::Blob(b)) => {
            Ok(Json::Array(b.iter().map(|x| Json::from(*x)).collect()))
        }
        _ => refuse(),
    }
}

#[async_trait]
impl Component for IcebergSink {
    fn name(&self) -> &str {
        &self.job.config.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.job.config.tables.clone()
    }

    fn max_batch(&self) -> usize {
        self.job.config.batch_size
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.run(vec![Arc::new(change.clone())])
            .await
            .map_err(|e| e.error)
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        self.run(changes.to_vec()).await
    }

    /// Commits every table's staged changes, so a graceful stop leaves Iceberg up to date
    /// (a failure leaves them staged for the next start).
    async fn on_stop(&mut self) -> Result<(), ComponentError> {
        if let Some(flusher) = self.flusher.take() {
            flusher.abort();
        }
        if !self.job.staging() {
            return Ok(());
        }
        let (job, shared) = (self.job.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&shared);
            let mut state = match guard.take() {
                Some(s) => s,
                None => Box::new(job.open()?),
            };
            job.flush_due(&mut state, true)?;
            *guard = Some(state);
            Ok(())
        })
        .await
        .map_err(|e| ComponentError::transient(format!("iceberg sink task: {e}")))?
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        // Read everything again from the catalog file (once the work in flight, if any,
        // has let go of the state).
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || *lock(&shared) = None)
            .await
            .map_err(|e| ComponentError::transient(format!("iceberg sink task: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_the_pipeline_units_and_days() {
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        assert!(parse_age("7x").unwrap_err().contains("d)"));
        assert!(parse_age("d").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn a_bad_duration_or_zero_commit_rows_is_refused_naming_the_field() {
        let mut config = IcebergSinkConfig::new("lake", "ns", &["t"]);
        config.keep_for = Some("soon".into());
        assert!(config.validate().unwrap_err().contains("keep_for"));
        config.keep_for = None;
        config.commit_interval = Some("1s".into());
        config.commit_rows = 0;
        assert!(config.validate().unwrap_err().contains("commit_rows"));
        config.commit_rows = 10;
        config.orphan_age = "1 fortnight".into();
        assert!(config.validate().unwrap_err().contains("orphan_age"));
    }
}
