//! Compactor (seed 002, docs/SEEDS.md): merges a table's small data files into target-sized ones.
//!
//! Owns replace commits and the registry swap that goes with them. When a table has at
//! least `min_files` completed data files smaller than `target_file_size`, it picks a fixed
//! set of them (oldest first, in groups of about `target_file_size`, each group within one
//! partition: files of different `partition_path`s are never merged, and the merged file
//! goes into its partition's directory with its partition values; at most
//! `max_input_bytes` per run), streams each group into one new Parquet file, commits one
//! Iceberg `replace` snapshot (the groups' files DELETED, the merged files ADDED), and then,
//! in one registry transaction, deletes exactly the picked `table_files` rows (their
//! `file_statistics` go with them) and inserts the merged files, already `completed`, with
//! statistics merged from the inputs; the table's `row_count` is unchanged, `file_count` and
//! `total_size` move by the difference.
//!
//! Promises:
//! - Rows are preserved: the replace commit refuses a rewrite whose record counts differ, and
//!   the merge checks each input holds the rows it claims.
//! - Inserts that race with a compaction are not lost: only `completed` files that are live
//!   in the table are ever picked (new files are `pending`), the registry swap touches only
//!   the picked rows, and a lost compare-and-swap (the Iceberg updater appended meanwhile)
//!   reloads the table, checks the picked files are still live, and retries on top of the
//!   new state ([`crate::iceberg::commit_with_retry`]). The merged files are deleted only
//!   when the commit definitely did not happen.
//! - A crash between the replace commit and the registry swap is repaired by
//!   [`Compactor::reconcile`] (run on refresh and before every compaction): `completed` rows
//!   whose file is no longer live are deleted, and live files the registry does not know (the
//!   merged ones) are recorded. It reads the registry before the table, so a file the updater
//!   completes meanwhile is never mistaken for a removed one.
//!
//! It never deletes data files: the replaced files stay readable by older snapshots until
//! the snapshotter expires them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::registry::{
    self, FileStatistic, IcebergState, NewColumnStatistic, NewDataFile, RegistryEvent, TableFile,
    TableIdentity,
};
use astha_actors::{Component, ComponentError};
use astha_core::config::ConfigError;
use astha_core::Change;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::iceberg::{
    commit_with_retry, merge_parquet, read_parquet_rows, ColumnSpec, CommitRetry, DataFileInfo,
    Datum,
};
use crate::lakehouse::{
    blocking, file_checksum, lock, new_partitioned_data_file, Lakehouse, LakehouseError, Result,
    TableLocks,
};

/// The component's name (and slot name).
pub const COMPACTOR: &str = "compactor";

/// Compactor settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactorConfig {
    /// Files smaller than this many bytes are compaction candidates, and merged files aim at
    /// this size, at least 1. Default `67108864` (64 MiB).
    pub target_file_size: u64,
    /// K: a table is compacted once it has at least this many candidate files, at least 2.
    /// Default `5`.
    pub min_files: usize,
    /// Most input bytes one compaction run reads (it streams, so this bounds time, not
    /// memory), at least 1. Default `268435456` (256 MiB).
    pub max_input_bytes: u64,
    /// Retries of the replace commit (each after a short backoff and a reload of the
    /// table) when another writer committed first; then the error goes to the supervisor.
    /// Default `5`.
    pub conflict_retries: u32,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            target_file_size: 64 << 20,
            min_files: 5,
            max_input_bytes: 256 << 20,
            conflict_retries: 5,
        }
    }
}

impl CompactorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.target_file_size == 0 {
            return Err(ConfigError::invalid(
                "target_file_size",
                "must be at least 1 (got 0)",
            ));
        }
        if self.min_files < 2 {
            return Err(ConfigError::invalid(
                "min_files",
                format!("must be at least 2 (got {})", self.min_files),
            ));
        }
        if self.max_input_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_input_bytes",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(())
    }
}

/// A fixed choice of files to merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPlan {
    pub table: TableIdentity,
    /// Each group becomes one new file.
    pub groups: Vec<Vec<TableFile>>,
}

impl CompactionPlan {
    /// Ids of every picked file.
    pub fn file_ids(&self) -> Vec<i64> {
        self.groups.iter().flatten().map(|f| f.id).collect()
    }
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub table_id: i64,
    /// The replace snapshot.
    pub snapshot_id: i64,
    /// Registry ids of the files replaced.
    pub removed_files: Vec<i64>,
    /// Registry ids of the merged files.
    pub added_files: Vec<i64>,
    pub rows: i64,
    pub bytes_before: i64,
    pub bytes_after: i64,
}

/// What a reconciliation repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub table_id: i64,
    /// `completed` rows deleted because their file is no longer live.
    pub removed_rows: Vec<i64>,
    /// Rows inserted for live files the registry did not know.
    pub added_rows: Vec<i64>,
}

/// Compactor counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompactorStats {
    pub compactions: u64,
    pub files_removed: u64,
    pub files_added: u64,
    pub bytes_removed: u64,
    pub bytes_added: u64,
    pub conflicts: u64,
    /// Registry rows fixed by reconciliation.
    pub reconciled_rows: u64,
    /// Compactions given up because their files changed under them.
    pub abandoned: u64,
}

/// The compactor. Cheap to clone: register one clone, keep another to compact on demand or
/// read [`stats`](Self::stats).
#[derive(Clone)]
pub struct Compactor {
    inner: Arc<Inner>,
}

struct Inner {
    lakehouse: Lakehouse,
    config: CompactorConfig,
    locks: TableLocks,
    compactions: AtomicU64,
    files_removed: AtomicU64,
    files_added: AtomicU64,
    bytes_removed: AtomicU64,
    bytes_added: AtomicU64,
    conflicts: AtomicU64,
    reconciled: AtomicU64,
    abandoned: AtomicU64,
}

impl Compactor {
    pub fn new(lakehouse: Lakehouse, config: CompactorConfig) -> Result<Self> {
        config.validate()?;
        Ok(Compactor {
            inner: Arc::new(Inner {
                lakehouse,
                config,
                locks: TableLocks::default(),
                compactions: AtomicU64::new(0),
                files_removed: AtomicU64::new(0),
                files_added: AtomicU64::new(0),
                bytes_removed: AtomicU64::new(0),
                bytes_added: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                reconciled: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
            }),
        })
    }

    pub fn stats(&self) -> CompactorStats {
        let i = &self.inner;
        CompactorStats {
            compactions: i.compactions.load(Ordering::Relaxed),
            files_removed: i.files_removed.load(Ordering::Relaxed),
            files_added: i.files_added.load(Ordering::Relaxed),
            bytes_removed: i.bytes_removed.load(Ordering::Relaxed),
            bytes_added: i.bytes_added.load(Ordering::Relaxed),
            conflicts: i.conflicts.load(Ordering::Relaxed),
            reconciled_rows: i.reconciled.load(Ordering::Relaxed),
            abandoned: i.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Picks the files a compaction of `table_id` would merge, if the table qualifies.
    /// Blocking.
    pub fn plan_blocking(&self, table_id: i64) -> Result<Option<CompactionPlan>> {
        self.inner.plan(table_id)
    }

    /// Merges and commits `plan` (files of the plan that stopped being completed and live
    /// are left out; a group left with one file is dropped). Blocking.
    pub fn execute_blocking(&self, plan: &CompactionPlan) -> Result<Option<CompactionReport>> {
        self.inner.execute(plan)
    }

    /// Plans and executes a compaction of `table_id` if it qualifies. Blocking.
    pub fn compact_table_blocking(&self, table_id: i64) -> Result<Option<CompactionReport>> {
        match self.inner.plan(table_id)? {
            Some(plan) => self.inner.execute(&plan),
            None => Ok(None),
        }
    }

    /// [`compact_table_blocking`](Self::compact_table_blocking) off the async executor.
    pub async fn compact_table(&self, table_id: i64) -> Result<Option<CompactionReport>> {
        let this = self.clone();
        blocking(move || this.compact_table_blocking(table_id)).await
    }

    /// Repairs the registry after a crash between a replace commit and its registry swap
    /// (see the module doc). Blocking.
    pub fn reconcile_blocking(&self, table_id: i64) -> Result<ReconcileReport> {
        let inner = &self.inner;
        let table_lock = inner.locks.get(table_id);
        let _guard = lock(&table_lock);
        let Some(ident) = inner
            .lakehouse
            .with_registry(|conn| Ok(registry::table_identity(conn, table_id)?))?
        else {
            return Ok(ReconcileReport {
                table_id,
                ..ReconcileReport::default()
            });
        };
        inner.reconcile_locked(&ident)
    }

    /// Reconciles every table. Blocking.
    pub fn reconcile_all_blocking(&self) -> Result<Vec<ReconcileReport>> {
        let tables = self
            .inner
            .lakehouse
            .with_registry(|conn| Ok(registry::all_tables(conn)?))?;
        tables
            .into_iter()
            .map(|t| self.reconcile_blocking(t.table_id))
            .collect()
    }
}

impl Inner {
    fn plan(&self, table_id: i64) -> Result<Option<CompactionPlan>> {
        let found = self.lakehouse.with_registry(|conn| {
            let Some(ident) = registry::table_identity(conn, table_id)? else {
                return Ok(None);
            };
            let files = registry::files_in_states(conn, table_id, &[IcebergState::Completed])?;
            Ok(Some((ident, files)))
        })?;
        let Some((ident, files)) = found else {
            return Ok(None);
        };
        let target = self.config.target_file_size as i64;
        let small: Vec<TableFile> = files.into_iter().filter(|f| f.file_size < target).collect();
        if small.len() < self.config.min_files {
            return Ok(None);
        }
        let Some(table) = self.lakehouse.load_table(&ident)? else {
            return Ok(None);
        };
        let live: BTreeSet<PathBuf> = table.data_files()?.into_iter().collect();
        let candidates: Vec<TableFile> = small
            .into_iter()
            .filter(|f| live.contains(&PathBuf::from(&f.file_path)))
            .collect();
        if candidates.len() < self.config.min_files {
            return Ok(None);
        }
        // Compaction stays within a partition: candidates are packed per partition path
        // (oldest first within each; one partition for an unpartitioned table).
        let mut by_partition: BTreeMap<String, Vec<TableFile>> = BTreeMap::new();
        for f in candidates {
            by_partition
                .entry(f.partition_path.clone())
                .or_default()
                .push(f);
        }
        let mut groups: Vec<Vec<TableFile>> = Vec::new();
        let mut budget = self.config.max_input_bytes as i64;
        'partitions: for files in by_partition.into_values() {
            let mut current: Vec<TableFile> = Vec::new();
            let mut current_bytes = 0i64;
            for f in files {
                if f.file_size > budget {
                    groups.push(current);
                    break 'partitions;
                }
                if !current.is_empty() && current_bytes + f.file_size > target {
                    groups.push(std::mem::take(&mut current));
                    current_bytes = 0;
                }
                budget -= f.file_size;
                current_bytes += f.file_size;
                current.push(f);
            }
            groups.push(current);
        }
        groups.retain(|g| g.len() >= 2);
        if groups.is_empty() {
            return Ok(None);
        }
        Ok(Some(CompactionPlan {
            table: ident,
            groups,
        }))
    }

    fn execute(&self, plan: &CompactionPlan) -> Result<Option<CompactionReport>> {
        let table_id = plan.table.table_id;
        let table_lock = self.locks.get(table_id);
        let _guard = lock(&table_lock);
        self.reconcile_locked(&plan.table)?;

        // Registry first, then the table (see the module doc on ordering).
        let (completed, stats) = self.lakehouse.with_registry(|conn| {
            let completed: HashMap<i64, TableFile> =
                registry::files_in_states(conn, table_id, &[IcebergState::Completed])?
                    .into_iter()
                    .map(|f| (f.id, f))
                    .collect();
            let stats = registry::file_statistics(conn, &plan.file_ids())?;
            Ok((completed, stats))
        })?;
        let Some(mut table) = self.lakehouse.load_table(&plan.table)? else {
            return Ok(None);
        };
        let live: HashMap<PathBuf, DataFileInfo> = table
            .live_data_files()?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let groups: Vec<Vec<(TableFile, DataFileInfo)>> = plan
            .groups
            .iter()
            .map(|g| {
                g.iter()
                    .filter(|f| {
                        completed
                            .get(&f.id)
                            .is_some_and(|c| c.file_path == f.file_path)
                    })
                    .filter_map(|f| {
                        live.get(&PathBuf::from(&f.file_path))
                            .map(|info| (f.clone(), info.clone()))
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|g| g.len() >= 2)
            .collect();
        if groups.is_empty() {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }

        let columns = table.columns().to_vec();
        let data_dir = table.data_dir()?;
        let mut merged: Vec<(DataFileInfo, NewDataFile)> = Vec::new();
        let cleanup = |merged: &[(DataFileInfo, NewDataFile)]| {
            for (info, _) in merged {
                let _ = std::fs::remove_file(&info.path);
            }
        };
        for group in &groups {
            let inputs: Vec<DataFileInfo> = group.iter().map(|(_, i)| i.clone()).collect();
            // One partition per group (planned so): the merged file goes beside its inputs,
            // and keeps their partition values (`merge_parquet` carries them over).
            let partition_path = group[0].0.partition_path.clone();
            if group
                .iter()
                .any(|(f, _)| f.partition_path != partition_path)
            {
                cleanup(&merged);
                return Err(LakehouseError::Invalid(format!(
                    "a compaction group of table id {table_id} spans partitions"
                )));
            }
            let dir = if partition_path.is_empty() {
                data_dir.clone()
            } else {
                data_dir.join(&partition_path)
            };
            let path = dir.join(format!(
                "compacted-{}-{}.parquet",
                astha_core::change::unix_now_ms(),
                uuid::Uuid::new_v4()
            ));
            let written = merge_parquet(&path, &columns, &inputs)
                .map_err(LakehouseError::from)
                .and_then(|info| {
                    let group_stats: Vec<&[FileStatistic]> = group
                        .iter()
                        .map(|(f, _)| stats.get(&f.id).map(Vec::as_slice).unwrap_or(&[]))
                        .collect();
                    let file =
                        merged_registry_file(&info, &columns, &group_stats, &partition_path)?;
                    Ok((info, file))
                });
            match written {
                Ok(m) => merged.push(m),
                Err(e) => {
                    cleanup(&merged);
                    return Err(e);
                }
            }
        }

        let removed_paths: Vec<PathBuf> = groups
            .iter()
            .flatten()
            .map(|(_, i)| i.path.clone())
            .collect();
        let added: Vec<DataFileInfo> = merged.iter().map(|(i, _)| i.clone()).collect();
        let retry = CommitRetry::new(self.config.conflict_retries);
        let committed = commit_with_retry(&mut table, &retry, |table, conflicts| {
            if conflicts > 0 {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                // Re-applied on the reloaded table: the picked files must still be live.
                let live: BTreeSet<PathBuf> = table.data_files()?.into_iter().collect();
                if !removed_paths.iter().all(|p| live.contains(p)) {
                    return Ok(None);
                }
            }
            table.replace(&removed_paths, &added).map(Some)
        });
        let snapshot = match committed {
            Ok(Some(s)) => s,
            Ok(None) => {
                // Someone else rewrote these files: nothing of ours was committed.
                cleanup(&merged);
                self.abandoned.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => {
                // Only a definite "not committed" allows deleting the merged files; after
                // an unknown outcome they may be live, and reconciliation records them.
                if e.is_definitely_not_committed() {
                    cleanup(&merged);
                }
                return Err(e.into());
            }
        };

        let removed_ids: Vec<i64> = groups.iter().flatten().map(|(f, _)| f.id).collect();
        let new_files: Vec<NewDataFile> = merged.iter().map(|(_, f)| f.clone()).collect();
        let swap = self.lakehouse.with_registry(|conn| {
            Ok(registry::immediate(conn, |tx| {
                registry::swap_data_files(tx, table_id, &removed_ids, &new_files)
            })?)
        })?;
        let bytes_before: i64 = groups.iter().flatten().map(|(f, _)| f.file_size).sum();
        let bytes_after: i64 = new_files.iter().map(|f| f.file_size).sum();
        let rows: i64 = new_files.iter().map(|f| f.row_count).sum();
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.files_removed
            .fetch_add(swap.removed.len() as u64, Ordering::Relaxed);
        self.files_added
            .fetch_add(swap.added.len() as u64, Ordering::Relaxed);
        self.bytes_removed
            .fetch_add(bytes_before as u64, Ordering::Relaxed);
        self.bytes_added
            .fetch_add(bytes_after as u64, Ordering::Relaxed);
        tracing::info!(
            table = %table.identifier(),
            snapshot_id = snapshot.snapshot_id,
            removed = removed_ids.len(),
            added = new_files.len(),
            rows,
            bytes_before,
            bytes_after,
            "table compacted"
        );
        Ok(Some(CompactionReport {
            table_id,
            snapshot_id: snapshot.snapshot_id,
            removed_files: swap.removed,
            added_files: swap.added,
            rows,
            bytes_before,
            bytes_after,
        }))
    }

    /// See [`Compactor::reconcile_blocking`]; the caller holds the table lock.
    fn reconcile_locked(&self, ident: &TableIdentity) -> Result<ReconcileReport> {
        let table_id = ident.table_id;
        let mut report = ReconcileReport {
            table_id,
            ..ReconcileReport::default()
        };
        // Registry first: a file completed after this read is not in `rows` as completed,
        // so the table read below (which then already has it) cannot make it look removed.
        let rows = self
            .lakehouse
            .with_registry(|conn| Ok(registry::data_files(conn, table_id)?))?;
        let Some(table) = self.lakehouse.load_table(ident)? else {
            return Ok(report);
        };
        let live: BTreeMap<PathBuf, DataFileInfo> = table
            .live_data_files()?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        let known: BTreeSet<PathBuf> = rows.iter().map(|f| PathBuf::from(&f.file_path)).collect();
        let stale: Vec<i64> = rows
            .iter()
            .filter(|f| {
                f.iceberg_metadata_state == IcebergState::Completed
                    && !live.contains_key(&PathBuf::from(&f.file_path))
            })
            .map(|f| f.id)
            .collect();
        let unknown: Vec<&DataFileInfo> = live
            .iter()
            .filter(|(p, _)| !known.contains(*p))
            .map(|(_, i)| i)
            .collect();
        if stale.is_empty() && unknown.is_empty() {
            return Ok(report);
        }
        let columns = table.columns().to_vec();
        let spec = table.partition_spec()?;
        let mut new_files = Vec::with_capacity(unknown.len());
        for info in unknown {
            let data = read_parquet_rows(&info.path, &columns)?;
            let partition_path = spec
                .path(&info.partition)
                .map_err(LakehouseError::Invalid)?;
            new_files.push(new_partitioned_data_file(
                info,
                &columns,
                &data,
                IcebergState::Completed,
                &partition_path,
            )?);
        }
        let swap = self.lakehouse.with_registry(|conn| {
            Ok(registry::immediate(conn, |tx| {
                registry::swap_data_files(tx, table_id, &stale, &new_files)
            })?)
        })?;
        self.reconciled.fetch_add(
            (swap.removed.len() + swap.added.len()) as u64,
            Ordering::Relaxed,
        );
        tracing::warn!(
            table = %table.identifier(),
            removed_rows = swap.removed.len(),
            added_rows = swap.added.len(),
            "registry reconciled with the Iceberg table (an interrupted compaction)"
        );
        report.removed_rows = swap.removed;
        report.added_rows = swap.added;
        Ok(report)
    }
}

/// The registry row of a merged file, with statistics merged from its inputs' (exact:
/// smallest minimum, largest maximum, counts added up).
fn merged_registry_file(
    info: &DataFileInfo,
    columns: &[ColumnSpec],
    inputs: &[&[FileStatistic]],
    partition_path: &str,
) -> Result<NewDataFile> {
    let mut statistics = Vec::with_capacity(columns.len());
    for col in columns {
        let mut stat = NewColumnStatistic {
            column_name: col.name.clone(),
            min_value: None,
            max_value: None,
            null_count: 0,
            value_count: 0,
        };
        let mut min: Option<Datum> = None;
        let mut max: Option<Datum> = None;
        for file_stats in inputs {
            let Some(s) = file_stats.iter().find(|s| s.column_name == col.name) else {
                continue;
            };
            stat.null_count += s.null_count;
            stat.value_count += s.value_count;
            let parse = |text: &Option<String>| -> Option<Datum> {
                let v: Value = serde_json::from_str(text.as_deref()?).ok()?;
                Datum::from_json(col.ty, &v).ok()
            };
            if let Some(d) = parse(&s.min_value) {
                if min
                    .as_ref()
                    .is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Less))
                {
                    min = Some(d);
                }
            }
            if let Some(d) = parse(&s.max_value) {
                if max
                    .as_ref()
                    .is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Greater))
                {
                    max = Some(d);
                }
            }
        }
        stat.min_value = min.map(|d| d.to_json().to_string());
        stat.max_value = max.map(|d| d.to_json().to_string());
        statistics.push(stat);
    }
    Ok(NewDataFile {
        file_name: info
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file_path: info.path.to_string_lossy().into_owned(),
        file_size: info.file_size_in_bytes as i64,
        row_count: info.record_count as i64,
        checksum: file_checksum(&info.path)?,
        file_type: "parquet".into(),
        partition_path: partition_path.to_string(),
        is_compressed: true,
        state: IcebergState::Completed,
        statistics,
    })
}

#[async_trait]
impl Component for Compactor {
    fn name(&self) -> &str {
        COMPACTOR
    }

    fn subscriptions(&self) -> Vec<String> {
        vec!["table_files".to_string()]
    }

    /// A file that just became `completed` (the updater appended it) may make its table
    /// qualify; the decision is taken from the registry and the table, not from the event.
    async fn on_event(&mut self, change: &Change) -> std::result::Result<(), ComponentError> {
        let event = RegistryEvent::decode(change).map_err(ComponentError::permanent)?;
        let RegistryEvent::TableFiles(ev) = event else {
            return Ok(());
        };
        let became_completed = ev
            .after
            .as_ref()
            .is_some_and(|a| a.iceberg_metadata_state == IcebergState::Completed)
            && ev
                .before
                .as_ref()
                .is_some_and(|b| b.iceberg_metadata_state != IcebergState::Completed);
        if let (true, Some(f)) = (became_completed, ev.after.as_ref()) {
            self.compact_table(f.table_id).await?;
        }
        Ok(())
    }

    /// Repairs every table's registry rows after a crash mid-compaction.
    async fn on_refresh(&mut self) -> std::result::Result<(), ComponentError> {
        let this = self.clone();
        let reports = blocking(move || this.reconcile_all_blocking()).await?;
        let fixed: usize = reports
            .iter()
            .map(|r| r.removed_rows.len() + r.added_rows.len())
            .sum();
        tracing::info!(
            component = COMPACTOR,
            tables = reports.len(),
            fixed_rows = fixed,
            "refreshed from the registry"
        );
        Ok(())
    }
}
