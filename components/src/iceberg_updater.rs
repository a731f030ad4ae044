//! Iceberg updater (seed 002, phase 2, docs/SEEDS.md): keeps one Iceberg format-v2 table per registry
//! table and appends the registry's new data files to it.
//!
//! Owns the `pending → processing → completed` (or `failed`) path of
//! `table_files.iceberg_metadata_state`, and the creation (and catalog removal) of Iceberg
//! tables: namespace = registry database, table = registry table, in the SQL catalog of the
//! [`Lakehouse`]; and their schemas: when `table_columns` changes (a column added, dropped,
//! renamed or widened), the table gets a new Iceberg schema with the registry's field ids
//! (`astha-iceberg`'s `update_schema` refuses what would misread old files), before any
//! file written under it is appended. A table whose `table_metadata.partition_by` names
//! partition fields is created with that spec; each file is appended with the partition
//! values its registry `partition_path` spells (a path that does not parse fails the file).
//!
//! Promises:
//! - Work is derived from state, never from the event: a `table_files` event only says
//!   "look at this table"; the updater then reads every `pending`/`processing` file of the
//!   table from the registry, and appends them in one snapshot per batch (at most
//!   `max_files_per_commit`). So where the event slot stands after a crash does not matter.
//! - Exactly once: with the catalog in the registry's file (the default), the files become
//!   `completed` in the same SQLite transaction as the catalog swap that publishes their
//!   snapshot ([`InSwap`]): a file is `completed` if and only if a committed snapshot added
//!   it, whatever instant a crash picks. With a catalog in another file that cannot hold,
//!   so the files are marked after the commit and a restart asks the table which of its
//!   `pending`/`processing` files are live already (marked `completed`, not appended
//!   again). That check also runs in the same-file case, where it finds none. Either way a
//!   replayed event, a restart after a crash at any point of a commit, or a commit whose
//!   outcome was unknown never loses a file and never adds one twice
//!   (`components/tests/lakehouse_components.rs` crashes a commit at every step).
//! - A commit is atomic (the writer publishes by catalog compare-and-swap); losing the swap
//!   to another writer (the compactor, the snapshotter's expiry) reloads the table and
//!   re-applies the batch ([`commit_with_retry`]), up to `conflict_retries` times per
//!   snapshot, then reports a transient error so the supervisor retries later.
//! - A file that can never be appended (missing on disk, another size than recorded, bad
//!   statistics) is marked `failed` and reported as a permanent error; the table's other
//!   files still go in.
//!
//! It never deletes data files and never rewrites the registry rows of files it did not
//! append.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::registry::{self, IcebergState, RegistryEvent, TableFile, TableIdentity};
use astha_actors::{Component, ComponentError};
use astha_core::config::ConfigError;
use astha_core::{Change, Operation};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::iceberg::{
    commit_with_retry, ColumnSpec, CommitFailpoint, CommitRetry, DataFileInfo, IcebergTable, InSwap,
};
use crate::lakehouse::{
    blocking, data_file_info, iceberg_columns, lock, partition_defs, Lakehouse, LakehouseError,
    Result, TableLocks,
};

/// The component's name (and slot name).
pub const ICEBERG_UPDATER: &str = "iceberg_updater";

/// Iceberg updater settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IcebergUpdaterConfig {
    /// Most data files appended in one Iceberg snapshot, at least 1; more pending files
    /// are appended in further snapshots of the same pass. Default `1000`.
    pub max_files_per_commit: usize,
    /// Retries of one snapshot (each after a short backoff and a reload of the table) when
    /// another writer committed first; then the error goes to the supervisor, which
    /// retries with backoff. Default `5`.
    pub conflict_retries: u32,
}

impl Default for IcebergUpdaterConfig {
    fn default() -> Self {
        IcebergUpdaterConfig {
            max_files_per_commit: 1000,
            conflict_retries: 5,
        }
    }
}

impl IcebergUpdaterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_files_per_commit == 0 {
            return Err(ConfigError::invalid(
                "max_files_per_commit",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(())
    }
}

/// What one pass over a table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub table_id: i64,
    /// Registry ids of the files appended by this pass.
    pub appended: Vec<i64>,
    /// Files that were already live in the table (a replay, or a commit that succeeded
    /// before a crash): marked completed, not appended.
    pub already_present: Vec<i64>,
    /// Files marked failed, with the reason.
    pub failed: Vec<(i64, String)>,
    /// Snapshots this pass committed.
    pub snapshot_ids: Vec<i64>,
}

/// Updater counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UpdaterStats {
    pub commits: u64,
    pub files_appended: u64,
    pub files_already_present: u64,
    pub files_failed: u64,
    /// Compare-and-swap conflicts absorbed by reloading and retrying.
    pub conflicts: u64,
    pub tables_created: u64,
    /// New Iceberg schemas committed to follow the registry's columns.
    pub schema_updates: u64,
}

/// The Iceberg updater. Cheap to clone: register one clone, keep another to call
/// [`sync_table`](Self::sync_table) or read [`stats`](Self::stats).
#[derive(Clone)]
pub struct IcebergUpdater {
    inner: Arc<Inner>,
}

struct Inner {
    lakehouse: Lakehouse,
    config: IcebergUpdaterConfig,
    locks: TableLocks,
    commits: AtomicU64,
    appended: AtomicU64,
    already_present: AtomicU64,
    failed: AtomicU64,
    conflicts: AtomicU64,
    created: AtomicU64,
    schema_updates: AtomicU64,
    /// A test's simulated crash for the next commit
    /// ([`IcebergUpdater::crash_next_commit_at`]).
    failpoint: Mutex<Option<(CommitFailpoint, bool)>>,
}

impl IcebergUpdater {
    pub fn new(lakehouse: Lakehouse, config: IcebergUpdaterConfig) -> Result<Self> {
        config.validate()?;
        Ok(IcebergUpdater {
            inner: Arc::new(Inner {
                lakehouse,
                config,
                locks: TableLocks::default(),
                commits: AtomicU64::new(0),
                appended: AtomicU64::new(0),
                already_present: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                created: AtomicU64::new(0),
                schema_updates: AtomicU64::new(0),
                failpoint: Mutex::new(None),
            }),
        })
    }

    pub fn stats(&self) -> UpdaterStats {
        let i = &self.inner;
        UpdaterStats {
            commits: i.commits.load(Ordering::Relaxed),
            files_appended: i.appended.load(Ordering::Relaxed),
            files_already_present: i.already_present.load(Ordering::Relaxed),
            files_failed: i.failed.load(Ordering::Relaxed),
            conflicts: i.conflicts.load(Ordering::Relaxed),
            tables_created: i.created.load(Ordering::Relaxed),
            schema_updates: i.schema_updates.load(Ordering::Relaxed),
        }
    }

    /// For crash tests: the next commit stops at `failpoint` as if the process died there
    /// (the commit's files stay on disk; see [`CommitFailpoint`]), and the pass fails.
    pub fn crash_next_commit_at(&self, failpoint: CommitFailpoint) {
        *lock(&self.inner.failpoint) = Some((failpoint, false));
    }

    /// For kill tests: the next commit aborts the whole process at `failpoint` (see
    /// `IcebergTable::set_commit_failpoint_abort`). Only for a process a test started.
    pub fn abort_next_commit_at(&self, failpoint: CommitFailpoint) {
        *lock(&self.inner.failpoint) = Some((failpoint, true));
    }

    /// Appends the pending files of `table_id` (see the module doc). Blocking.
    pub fn sync_table_blocking(&self, table_id: i64) -> Result<SyncReport> {
        self.inner.sync_table(table_id)
    }

    /// [`sync_table_blocking`](Self::sync_table_blocking) off the async executor.
    pub async fn sync_table(&self, table_id: i64) -> Result<SyncReport> {
        let inner = self.inner.clone();
        blocking(move || inner.sync_table(table_id)).await
    }

    /// Creates the Iceberg table of every registry table that lacks one, then syncs every
    /// table with pending or processing files (what a restart needs). Blocking.
    pub fn sync_all_blocking(&self) -> Result<Vec<SyncReport>> {
        let inner = &self.inner;
        let tables = inner
            .lakehouse
            .with_registry(|conn| Ok(registry::all_tables(conn)?))?;
        for ident in &tables {
            match inner.ensure_table(ident) {
                Ok(_) => {}
                // One table the writer cannot represent must not stop the others.
                Err(e) if !e.is_retriable() => {
                    tracing::warn!(table = %format!("{}.{}", ident.database, ident.table), error = %e, "no Iceberg table for this registry table");
                }
                Err(e) => return Err(e),
            }
        }
        let ids = inner.lakehouse.with_registry(|conn| {
            Ok(registry::tables_with_files_in(
                conn,
                &[IcebergState::Pending, IcebergState::Processing],
            )?)
        })?;
        ids.into_iter().map(|id| inner.sync_table(id)).collect()
    }

    /// [`sync_all_blocking`](Self::sync_all_blocking) off the async executor.
    pub async fn sync_all(&self) -> Result<Vec<SyncReport>> {
        let this = self.clone();
        blocking(move || this.sync_all_blocking()).await
    }
}

impl Inner {
    /// The Iceberg table of `ident`, created from the registry columns if missing.
    fn ensure_table(&self, ident: &TableIdentity) -> Result<IcebergTable> {
        let (columns, partition) = self.lakehouse.with_registry(|conn| {
            Ok((
                iceberg_columns(conn, ident.table_id)?,
                partition_defs(conn, ident.table_id)?,
            ))
        })?;
        if let Some(mut t) = self.lakehouse.load_table(ident)? {
            self.follow_schema(&mut t, &columns)?;
            return Ok(t);
        }
        let table = self
            .lakehouse
            .ensure_partitioned_table(ident, &columns, &partition)?;
        self.created.fetch_add(1, Ordering::Relaxed);
        tracing::info!(table = %table.identifier(), "iceberg table created");
        Ok(table)
    }

    /// Gives the Iceberg table the registry's columns as a new schema when they differ
    /// (added, dropped, renamed or widened columns; field ids are the registry's). A change
    /// Iceberg cannot represent without misreading old files (a narrowed type, a reused
    /// field id) is a permanent error and changes nothing.
    fn follow_schema(&self, table: &mut IcebergTable, columns: &[ColumnSpec]) -> Result<()> {
        if table.columns() == columns {
            return Ok(());
        }
        let retry = CommitRetry::new(self.config.conflict_retries);
        let updated = commit_with_retry(table, &retry, |table, _| {
            Ok::<_, LakehouseError>(table.update_schema(columns)?)
        })?;
        if let Some(schema_id) = updated {
            self.schema_updates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(table = %table.identifier(), schema_id, "iceberg schema follows the registry's columns");
        }
        Ok(())
    }

    fn sync_table(&self, table_id: i64) -> Result<SyncReport> {
        let table_lock = self.locks.get(table_id);
        let _guard = lock(&table_lock);
        let mut report = SyncReport {
            table_id,
            ..SyncReport::default()
        };
        let found = self.lakehouse.with_registry(|conn| {
            let Some(ident) = registry::table_identity(conn, table_id)? else {
                return Ok(None);
            };
            let files = registry::files_in_states(
                conn,
                table_id,
                &[IcebergState::Pending, IcebergState::Processing],
            )?;
            Ok(Some((ident, files)))
        })?;
        let Some((ident, files)) = found else {
            return Ok(report); // The table was dropped; its files went with it.
        };
        if files.is_empty() {
            return Ok(report);
        }
        let mut table = self.ensure_table(&ident)?;
        let columns = table.columns().to_vec();
        let spec = table.partition_spec()?;
        let stats = self.lakehouse.with_registry(|conn| {
            Ok(registry::file_statistics(
                conn,
                &files.iter().map(|f| f.id).collect::<Vec<_>>(),
            )?)
        })?;

        // Files that can never be appended are set aside, not allowed to block the rest.
        let mut candidates: Vec<(TableFile, DataFileInfo)> = Vec::new();
        for f in files {
            match check_file(
                &f,
                stats.get(&f.id).map(Vec::as_slice).unwrap_or(&[]),
                &columns,
                &spec,
            ) {
                Ok(info) => candidates.push((f, info)),
                Err(reason) => report.failed.push((f.id, reason)),
            }
        }

        let retry = CommitRetry::new(self.config.conflict_retries);
        let mut remaining = candidates;
        loop {
            // One commit per chunk. Each attempt starts from the table as it is (reloaded
            // after a lost swap): files that became live meanwhile are completed, not
            // appended again.
            let committed = commit_with_retry(&mut table, &retry, |table, conflicts| {
                if conflicts > 0 {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                // Asks only about this pass's files (the writer's live index), so a pass
                // costs what it appends, not what the table holds.
                let ours: Vec<&Path> = remaining.iter().map(|(_, i)| i.path.as_path()).collect();
                let live: BTreeSet<PathBuf> = table.live_among(&ours)?;
                let (present, todo): (Vec<_>, Vec<_>) = std::mem::take(&mut remaining)
                    .into_iter()
                    .partition(|(_, info)| live.contains(&info.path));
                remaining = todo;
                let present_ids: Vec<i64> = present.iter().map(|(f, _)| f.id).collect();
                self.mark(&present_ids, IcebergState::Completed)?;
                report.already_present.extend(present_ids);
                if remaining.is_empty() {
                    return Ok::<_, LakehouseError>(None);
                }
                let n = remaining.len().min(self.config.max_files_per_commit);
                let chunk_ids: Vec<i64> = remaining[..n].iter().map(|(f, _)| f.id).collect();
                let infos: Vec<DataFileInfo> =
                    remaining[..n].iter().map(|(_, i)| i.clone()).collect();
                self.mark(&chunk_ids, IcebergState::Processing)?;
                match lock(&self.failpoint).take() {
                    Some((failpoint, false)) => table.set_commit_failpoint(Some(failpoint)),
                    Some((failpoint, true)) => table.set_commit_failpoint_abort(failpoint),
                    None => {}
                }
                // On an error the files stay `processing`; the next pass appends them (or,
                // with a separate catalog file and an unknown outcome, finds them live).
                let snapshot = if self.lakehouse.catalog_in_registry() {
                    // `completed` commits with the snapshot, in the swap's transaction.
                    let ids = chunk_ids.clone();
                    table.append_with(
                        &infos,
                        InSwap::new(move |conn| {
                            registry::set_file_state_in(conn, &ids, IcebergState::Completed)
                        }),
                    )?
                } else {
                    table.append(&infos)?
                };
                Ok(Some((chunk_ids, snapshot)))
            })?;
            let Some((chunk_ids, snapshot)) = committed else {
                break;
            };
            self.commits.fetch_add(1, Ordering::Relaxed);
            if !self.lakehouse.catalog_in_registry() {
                self.mark(&chunk_ids, IcebergState::Completed)?;
            }
            report.snapshot_ids.push(snapshot.snapshot_id);
            remaining.drain(..chunk_ids.len());
            report.appended.extend(chunk_ids);
        }

        self.appended
            .fetch_add(report.appended.len() as u64, Ordering::Relaxed);
        self.already_present
            .fetch_add(report.already_present.len() as u64, Ordering::Relaxed);
        if !report.failed.is_empty() {
            let ids: Vec<i64> = report.failed.iter().map(|(id, _)| *id).collect();
            self.mark(&ids, IcebergState::Failed)?;
            self.failed.fetch_add(ids.len() as u64, Ordering::Relaxed);
            for (id, reason) in &report.failed {
                tracing::error!(table = %table.identifier(), file_id = id, reason, "data file cannot be added to Iceberg; marked failed");
            }
        }
        if !report.appended.is_empty() || !report.already_present.is_empty() {
            tracing::info!(
                table = %table.identifier(),
                appended = report.appended.len(),
                already_present = report.already_present.len(),
                snapshots = report.snapshot_ids.len(),
                "iceberg table synced"
            );
        }
        Ok(report)
    }

    fn mark(&self, ids: &[i64], state: IcebergState) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.lakehouse
            .with_registry(|conn| Ok(registry::set_file_state(conn, ids, state)?))
    }

    /// Removes a deleted registry table's Iceberg table from the catalog (files are kept),
    /// unless a table of that name is registered again.
    fn drop_if_unregistered(&self, database_id: i64, name: &str) -> Result<()> {
        let database = self.lakehouse.with_registry(|conn| {
            let db: Option<String> = conn
                .query_row(
                    "SELECT name FROM databases WHERE id = ?1",
                    [database_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(astha_core::CoreError::from)?;
            let Some(db) = db else { return Ok(None) };
            Ok(match registry::find_table(conn, &db, name)? {
                Some(_) => None,
                None => Some(db),
            })
        })?;
        let Some(database) = database else {
            return Ok(());
        };
        if self.lakehouse.catalog().drop_table(&database, name)? {
            tracing::info!(table = %format!("{database}.{name}"), "iceberg table removed from the catalog (files kept)");
        }
        Ok(())
    }
}

/// The Iceberg description of a registry file (its partition parsed from the registry's
/// `partition_path`), or why it can never be appended.
fn check_file(
    file: &TableFile,
    stats: &[registry::FileStatistic],
    columns: &[crate::iceberg::ColumnSpec],
    spec: &crate::iceberg::BoundSpec,
) -> std::result::Result<DataFileInfo, String> {
    let mut info = data_file_info(file, stats, columns).map_err(|e| e.to_string())?;
    info.partition = spec
        .parse_path(&file.partition_path)
        .map_err(|e| format!("{}: {e}", file.file_path))?;
    match std::fs::metadata(&info.path) {
        Ok(m) if m.len() == info.file_size_in_bytes => Ok(info),
        Ok(m) => Err(format!(
            "{} is {} bytes on disk but the registry records {}",
            file.file_path,
            m.len(),
            info.file_size_in_bytes
        )),
        Err(e) => Err(format!("{}: {e}", file.file_path)),
    }
}

/// What an event asks the updater to do.
enum Action {
    Sync(i64),
    Create(i64),
    Drop { database_id: i64, name: String },
    Nothing,
}

fn action_for(change: &Change) -> std::result::Result<Action, ComponentError> {
    let event = RegistryEvent::decode(change).map_err(ComponentError::permanent)?;
    Ok(match event {
        RegistryEvent::TableFiles(ev) => match (ev.op, ev.after.as_ref()) {
            // A new file, or one put back to pending by an operator. The updater's own
            // `processing`/`completed` updates need nothing.
            (Operation::Insert | Operation::Update, Some(f))
                if f.iceberg_metadata_state == IcebergState::Pending =>
            {
                Action::Sync(f.table_id)
            }
            _ => Action::Nothing,
        },
        RegistryEvent::Tables(ev) => match (ev.op, ev.data()) {
            (Operation::Insert, Some(t)) => Action::Create(t.id),
            (Operation::Delete, Some(t)) => Action::Drop {
                database_id: t.database_id,
                name: t.name.clone(),
            },
            _ => Action::Nothing,
        },
        RegistryEvent::TableMetadata(ev) => match (ev.op, ev.data()) {
            (Operation::Insert, Some(m)) => Action::Create(m.table_id),
            _ => Action::Nothing,
        },
        // A column added, dropped, renamed or retyped: the table's schema follows (the
        // same path as creation: `ensure_table` compares and evolves).
        RegistryEvent::TableColumns(ev) => match ev.data() {
            Some(c) => Action::Create(c.table_id),
            None => Action::Nothing,
        },
        _ => Action::Nothing,
    })
}

#[async_trait]
impl Component for IcebergUpdater {
    fn name(&self) -> &str {
        ICEBERG_UPDATER
    }

    fn subscriptions(&self) -> Vec<String> {
        ["tables", "table_columns", "table_files", "table_metadata"]
            .map(String::from)
            .to_vec()
    }

    async fn on_event(&mut self, change: &Change) -> std::result::Result<(), ComponentError> {
        let inner = self.inner.clone();
        match action_for(change)? {
            Action::Sync(table_id) => {
                let report = blocking(move || inner.sync_table(table_id)).await?;
                if let Some((id, reason)) = report.failed.first() {
                    return Err(ComponentError::permanent(format!(
                        "data file {id} of table {table_id} marked failed: {reason}"
                    )));
                }
            }
            Action::Create(table_id) => {
                blocking(move || {
                    let ident = inner
                        .lakehouse
                        .with_registry(|conn| Ok(registry::table_identity(conn, table_id)?))?;
                    match ident {
                        // A table created and dropped before we got here needs nothing.
                        None => Ok(()),
                        Some(ident) => inner.ensure_table(&ident).map(|_| ()),
                    }
                })
                .await?;
            }
            Action::Drop { database_id, name } => {
                blocking(move || inner.drop_if_unregistered(database_id, &name)).await?;
            }
            Action::Nothing => {}
        }
        Ok(())
    }

    /// Rebuilds from the registry: creates missing Iceberg tables and appends every file a
    /// previous run left pending or processing.
    async fn on_refresh(&mut self) -> std::result::Result<(), ComponentError> {
        let reports = self.sync_all().await?;
        let appended: usize = reports.iter().map(|r| r.appended.len()).sum();
        let present: usize = reports.iter().map(|r| r.already_present.len()).sum();
        tracing::info!(
            component = ICEBERG_UPDATER,
            tables = reports.len(),
            appended,
            already_present = present,
            "refreshed from the registry"
        );
        Ok(())
    }
}
