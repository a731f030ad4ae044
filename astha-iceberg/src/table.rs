//! An Iceberg table handle: create or load through the catalog, inspect snapshots and files.
//!
//! Owns the in-memory view of one table (its current metadata and where it lives). The
//! write operations live next door: `snapshot_ops.rs` (append, replace), `expire.rs` (expire
//! snapshots) and `commit.rs` (how a new metadata version is published). Every operation
//! starts from this handle's metadata; if another writer committed in between, the catalog
//! compare-and-swap fails with `CommitConflict` and the handle stays as it was (call
//! [`IcebergTable::refresh`] and retry).
//!
//! Layout under the warehouse: `<warehouse>/<namespace>/<table>/data/` for data files (the
//! caller writes them, see [`IcebergTable::data_dir`]; a partitioned table's go under
//! `data/<name=value/...>/`, [`IcebergTable::partition_data_dir`]) and `.../metadata/` for metadata JSON,
//! manifest lists (`snap-*.avro`), manifests (`*-m<N>.avro`) and `version-hint.text`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::catalog::{validate_name, InSwap, SqlCatalog};
use super::data_file::DataFileInfo;
use super::error::{IcebergError, Result};
use super::fsutil;
use super::manifest::{read_manifest, ManifestEntry, CONTENT_DATA};
use super::manifest_list::{read_manifest_list, ManifestFile};
use super::metadata::{metadata_file_name, Snapshot, TableMetadata};
use super::partition::{BoundSpec, PartitionDef, PartitionSpec};
use super::schema::{validate_columns, ColumnSpec, IcebergSchema};

pub use super::commit::CommitFailpoint;

/// A snapshot as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    /// `append`, `replace`, ...
    pub operation: String,
    /// Iceberg snapshot summary (`added-data-files`, `total-records`, ...), `operation` included.
    pub summary: BTreeMap<String, String>,
    /// Local path of the snapshot's manifest list.
    pub manifest_list: PathBuf,
}

impl SnapshotInfo {
    pub(super) fn from_snapshot(s: &Snapshot) -> Self {
        SnapshotInfo {
            snapshot_id: s.snapshot_id,
            parent_snapshot_id: s.parent_snapshot_id,
            sequence_number: s.sequence_number,
            timestamp_ms: s.timestamp_ms,
            operation: s.operation().to_string(),
            summary: s.summary.clone(),
            manifest_list: fsutil::from_location(&s.manifest_list).unwrap_or_default(),
        }
    }

    /// A summary counter parsed as a number (0 when absent).
    pub fn summary_u64(&self, key: &str) -> u64 {
        self.summary
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// One Iceberg table, bound to the catalog that tracks it.
#[derive(Debug)]
pub struct IcebergTable {
    pub(super) catalog: SqlCatalog,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) metadata_location: String,
    pub(super) metadata: TableMetadata,
    pub(super) columns: Vec<ColumnSpec>,
    pub(super) failpoint: Option<CommitFailpoint>,
    /// The failpoint aborts the process instead of returning an error.
    pub(super) failpoint_aborts: bool,
    /// Work for the next commit's swap transaction (set and cleared by `append_with`).
    pub(super) in_swap: Option<InSwap>,
}

impl IcebergTable {
    /// Creates the unpartitioned table at `<warehouse>/<namespace>/<name>` and registers it
    /// (creating the namespace too). If the catalog already has the table, loads it instead,
    /// provided its columns equal `columns` and it is unpartitioned.
    pub fn create(
        catalog: &SqlCatalog,
        warehouse_dir: &Path,
        namespace: &str,
        name: &str,
        columns: &[ColumnSpec],
    ) -> Result<IcebergTable> {
        Self::create_partitioned(catalog, warehouse_dir, namespace, name, columns, &[])
    }

    /// [`create`](Self::create) with a partition spec made of `partition` (field ids from
    /// 1000, Java's default field names: `region`, `at_day`, `id_bucket`, `name_trunc`, ...).
    /// An existing table must have the same columns and the same spec.
    pub fn create_partitioned(
        catalog: &SqlCatalog,
        warehouse_dir: &Path,
        namespace: &str,
        name: &str,
        columns: &[ColumnSpec],
        partition: &[PartitionDef],
    ) -> Result<IcebergTable> {
        validate_name("namespace", namespace)?;
        validate_name("table", name)?;
        validate_columns(columns)?;
        let spec = PartitionSpec::from_definitions(columns, partition)?;
        if catalog.load_metadata_location(namespace, name)?.is_some() {
            return Self::load_expecting(catalog, namespace, name, columns, &spec);
        }
        catalog.create_namespace(namespace)?;
        let location = fsutil::absolute(warehouse_dir)?.join(namespace).join(name);
        let metadata_dir = location.join("metadata");
        fsutil::create_dir_all(&metadata_dir)?;
        fsutil::create_dir_all(&location.join("data"))?;

        let schema = IcebergSchema::from_columns(0, columns);
        let metadata = TableMetadata::new_partitioned(
            fsutil::to_location(&location),
            schema,
            &spec,
            catalog.clock().now_ms(),
        );
        let file = metadata_dir.join(metadata_file_name(0));
        fsutil::write_atomic(&file, &metadata.to_json())?;
        let metadata_location = fsutil::to_location(&file);
        match catalog.register(namespace, name, &metadata_location) {
            Ok(()) => {}
            // Lost a creation race: the other writer's table is the table.
            Err(IcebergError::TableAlreadyExists(_)) => {
                let _ = fsutil::remove_if_exists(&file);
                return Self::load_expecting(catalog, namespace, name, columns, &spec);
            }
            Err(e) => {
                let _ = fsutil::remove_if_exists(&file);
                return Err(e);
            }
        }
        if let Err(e) = super::commit::write_version_hint(&metadata_dir, &metadata_location) {
            tracing::warn!(table = %format!("{namespace}.{name}"), error = %e, "could not write version-hint.text");
        }
        Ok(IcebergTable {
            catalog: catalog.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata_location,
            metadata,
            columns: columns.to_vec(),
            failpoint: None,
            failpoint_aborts: false,
            in_swap: None,
        })
    }

    /// Loads the table's current metadata through the catalog.
    pub fn load(catalog: &SqlCatalog, namespace: &str, name: &str) -> Result<IcebergTable> {
        let metadata_location = catalog
            .load_metadata_location(namespace, name)?
            .ok_or_else(|| IcebergError::NoSuchTable(format!("{namespace}.{name}")))?;
        let metadata = TableMetadata::read(&fsutil::from_location(&metadata_location)?)?;
        let columns = metadata.current_schema()?.columns()?;
        Ok(IcebergTable {
            catalog: catalog.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata_location,
            metadata,
            columns,
            failpoint: None,
            failpoint_aborts: false,
            in_swap: None,
        })
    }

    fn load_expecting(
        catalog: &SqlCatalog,
        namespace: &str,
        name: &str,
        columns: &[ColumnSpec],
        spec: &PartitionSpec,
    ) -> Result<IcebergTable> {
        let table = Self::load(catalog, namespace, name)?;
        if table.columns != columns {
            return Err(IcebergError::SchemaMismatch {
                table: table.identifier(),
                reason: format!(
                    "existing columns {:?}, requested {:?}",
                    table.columns, columns
                ),
            });
        }
        let existing = table.metadata.partition_spec()?;
        if existing.fields != spec.fields {
            return Err(IcebergError::SchemaMismatch {
                table: table.identifier(),
                reason: format!(
                    "existing partition spec {}, requested {}",
                    existing.fields_json(),
                    spec.fields_json()
                ),
            });
        }
        Ok(table)
    }

    /// Re-reads the current metadata from the catalog (after a `CommitConflict`, say).
    pub fn refresh(&mut self) -> Result<()> {
        let (failpoint, aborts) = (self.failpoint, self.failpoint_aborts);
        *self = Self::load(&self.catalog, &self.namespace, &self.name)?;
        (self.failpoint, self.failpoint_aborts) = (failpoint, aborts);
        Ok(())
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The catalog this table commits through.
    pub fn catalog(&self) -> &SqlCatalog {
        &self.catalog
    }

    /// `namespace.name`.
    pub fn identifier(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }

    /// The `file://` location of the current metadata file.
    pub fn metadata_location(&self) -> &str {
        &self.metadata_location
    }

    /// The current table metadata.
    pub fn metadata(&self) -> &TableMetadata {
        &self.metadata
    }

    /// Local path of the table directory.
    pub fn location(&self) -> Result<PathBuf> {
        self.metadata.location_path()
    }

    /// Directory where callers write this table's data files.
    pub fn data_dir(&self) -> Result<PathBuf> {
        Ok(self.location()?.join("data"))
    }

    /// The table's partition spec, bound to its current columns (no fields when
    /// unpartitioned).
    pub fn partition_spec(&self) -> Result<BoundSpec> {
        self.metadata.bound_partition_spec()
    }

    /// Directory for data files of partition `values`: `data/<name=value/...>`.
    pub fn partition_data_dir(&self, values: &[Value]) -> Result<PathBuf> {
        let path = self
            .partition_spec()?
            .path(values)
            .map_err(IcebergError::InvalidArgument)?;
        Ok(self.data_dir()?.join(path))
    }

    /// Writes `rows` (as [`write_parquet`](super::write_parquet) takes them) as one data
    /// file per partition, `<partition dir>/<stem>.parquet`, each carrying its partition
    /// values, in the order partitions first appear. Nothing is committed.
    pub fn write_data_files(&self, stem: &str, rows: &[Vec<Value>]) -> Result<Vec<DataFileInfo>> {
        let spec = self.partition_spec()?;
        let mut out = Vec::new();
        for (partition, rows) in spec.split(rows)? {
            let dir = self.data_dir()?.join(
                spec.path(&partition)
                    .map_err(IcebergError::InvalidArgument)?,
            );
            let mut info = super::parquet_io::write_parquet(
                &dir.join(format!("{stem}.parquet")),
                &self.columns,
                &rows,
            )?;
            info.partition = partition;
            out.push(info);
        }
        Ok(out)
    }

    pub(super) fn metadata_dir(&self) -> Result<PathBuf> {
        Ok(self.location()?.join("metadata"))
    }

    pub fn current_snapshot(&self) -> Option<SnapshotInfo> {
        self.metadata
            .current_snapshot()
            .map(SnapshotInfo::from_snapshot)
    }

    /// All snapshots still in the metadata, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.metadata
            .snapshots
            .iter()
            .map(SnapshotInfo::from_snapshot)
            .collect()
    }

    /// Live data file paths of the current snapshot, sorted.
    pub fn data_files(&self) -> Result<Vec<PathBuf>> {
        match self.metadata.current_snapshot_id {
            Some(id) => self.data_files_at(id),
            None => Ok(Vec::new()),
        }
    }

    /// Live data file paths of snapshot `snapshot_id` (time travel), sorted.
    pub fn data_files_at(&self, snapshot_id: i64) -> Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = self
            .live_files_at(snapshot_id)?
            .into_iter()
            .map(|f| f.path)
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Live data files (with their statistics) of the current snapshot, e.g. to pick small
    /// files for compaction.
    pub fn live_data_files(&self) -> Result<Vec<DataFileInfo>> {
        match self.metadata.current_snapshot_id {
            Some(id) => self.live_files_at(id),
            None => Ok(Vec::new()),
        }
    }

    /// All rows of snapshot `snapshot_id` (current when `None`), in file order, with its
    /// position deletes applied. Meant for verification and small tables: it reads every live
    /// file into memory.
    pub fn read_rows(&self, snapshot_id: Option<i64>) -> Result<Vec<Vec<Value>>> {
        match snapshot_id.or(self.metadata.current_snapshot_id) {
            Some(id) => self.live_rows(id),
            None => Ok(Vec::new()),
        }
    }

    /// Sets table properties (`commit.manifest.*`, `write.metadata.*`, or any other) in one
    /// metadata-only commit. Values take effect from the next commit on.
    pub fn set_properties(&mut self, set: &[(&str, &str)]) -> Result<()> {
        let now = self.catalog.clock().now_ms();
        let mut next = self.metadata.successor(&self.metadata_location, now);
        for (k, v) in set {
            next.properties.insert(k.to_string(), v.to_string());
        }
        self.publish(next, super::commit::CommitFiles::new())
    }

    /// Installs a one-shot failpoint: the next commit stops at that step as if the process
    /// had crashed there (files written so far stay on disk, the catalog is untouched).
    pub fn set_commit_failpoint(&mut self, failpoint: Option<CommitFailpoint>) {
        self.failpoint = failpoint;
        self.failpoint_aborts = false;
    }

    /// Like [`set_commit_failpoint`](Self::set_commit_failpoint), but the process aborts at
    /// that step (no destructor runs, no transaction is rolled back, nothing is flushed:
    /// what a kill -9 leaves), for tests that run the commit in a child process.
    pub fn set_commit_failpoint_abort(&mut self, failpoint: CommitFailpoint) {
        self.failpoint = Some(failpoint);
        self.failpoint_aborts = true;
    }

    fn live_files_at(&self, snapshot_id: i64) -> Result<Vec<DataFileInfo>> {
        Ok(self
            .entries_at(snapshot_id)?
            .into_iter()
            .filter(|(m, _)| m.content == CONTENT_DATA)
            .flat_map(|(_, entries)| entries)
            .filter(|e| e.status.is_live())
            .map(|e| e.file)
            .collect())
    }

    /// Manifests of a snapshot with their entries.
    pub(super) fn entries_at(
        &self,
        snapshot_id: i64,
    ) -> Result<Vec<(ManifestFile, Vec<ManifestEntry>)>> {
        let snapshot = self
            .metadata
            .snapshot(snapshot_id)
            .ok_or(IcebergError::NoSuchSnapshot(snapshot_id))?;
        let list = read_manifest_list(&fsutil::from_location(&snapshot.manifest_list)?)?;
        list.into_iter()
            .map(|m| {
                let entries = read_manifest(&m)?;
                Ok((m, entries))
            })
            .collect()
    }
}
