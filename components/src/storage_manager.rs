//! Storage manager (seed 002, phase 1, docs/SEEDS.md): the write path. `insert(table, rows)` turns rows
//! into one Parquet data file and records it in the registry; for a partitioned table
//! (`table_metadata.partition_by`), `insert_files` splits the rows by partition into one
//! file per partition, recorded together.
//!
//! Owns data file creation under `<warehouse>/<database>/<table>/data/` (a partitioned
//! table's under `data/<partition_path>/`, the `name=value/...` path `table_files.partition_path`
//! records). Promises, for each
//! insert: the file is complete on disk (written under a temporary name, fsynced, renamed)
//! before the registry hears of it; then one `BEGIN IMMEDIATE` transaction records the
//! `table_files` row (size, row count, `sha256:` checksum, file type, partition path,
//! `iceberg_metadata_state = pending`), one `file_statistics` row per column (exact min/max,
//! null and value counts) and the table's `row_count`/`file_count`/`total_size`/
//! `last_modified`. If anything fails the transaction rolls back and the file is removed, so
//! the registry never names a missing file and no orphan is left behind. Counters move by
//! increments inside the write transaction, so concurrent inserts into one table add up
//! exactly.
//!
//! It never touches Iceberg metadata: the registry change it commits is what the Iceberg
//! updater reacts to.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::registry::{self, IcebergState, TableIdentity};
use astha_core::config::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::iceberg::{write_parquet, ColumnSpec};
use crate::lakehouse::{
    blocking, iceberg_columns, new_partitioned_data_file, partition_spec, Lakehouse,
    LakehouseError, Result,
};
use crate::schema_manager::SchemaManager;

/// Storage manager settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageManagerConfig {
    /// Most rows one insert accepts (one insert is one data file, held in memory while it
    /// is written), at least 1. Default `1000000`.
    pub max_rows_per_insert: usize,
}

impl Default for StorageManagerConfig {
    fn default() -> Self {
        StorageManagerConfig {
            max_rows_per_insert: 1_000_000,
        }
    }
}

impl StorageManagerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_rows_per_insert == 0 {
            return Err(ConfigError::invalid(
                "max_rows_per_insert",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(())
    }
}

/// A data file an insert created and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertedFile {
    pub table_id: i64,
    /// `table_files.id`.
    pub file_id: i64,
    pub path: PathBuf,
    pub row_count: i64,
    pub file_size: i64,
    pub checksum: String,
    /// `name=value/...` below `data/` (empty when the table is unpartitioned).
    pub partition_path: String,
}

/// Insert counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    pub inserts: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Inserts that failed (their files, if any, were removed).
    pub failures: u64,
}

/// The storage manager. Cheap to clone; safe to use from many threads at once.
#[derive(Clone)]
pub struct StorageManager {
    inner: Arc<Inner>,
}

struct Inner {
    lakehouse: Lakehouse,
    config: StorageManagerConfig,
    schemas: Option<SchemaManager>,
    inserts: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
}

impl StorageManager {
    /// A storage manager that reads table schemas from the registry.
    pub fn new(lakehouse: Lakehouse, config: StorageManagerConfig) -> Result<Self> {
        Self::build(lakehouse, config, None)
    }

    /// A storage manager that looks schemas up through the schema manager's cache (which
    /// falls back to the registry on a miss).
    pub fn with_schema_manager(
        lakehouse: Lakehouse,
        config: StorageManagerConfig,
        schemas: SchemaManager,
    ) -> Result<Self> {
        Self::build(lakehouse, config, Some(schemas))
    }

    fn build(
        lakehouse: Lakehouse,
        config: StorageManagerConfig,
        schemas: Option<SchemaManager>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(StorageManager {
            inner: Arc::new(Inner {
                lakehouse,
                config,
                schemas,
                inserts: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }

    pub fn lakehouse(&self) -> &Lakehouse {
        &self.inner.lakehouse
    }

    /// Writes `rows` (one JSON value per column, in column order; shapes as in
    /// [`crate::iceberg::write_parquet`]) as one data file of `database.table` and records
    /// it. Blocking: call it from a thread or use [`insert_async`](Self::insert_async).
    /// Rows of a partitioned table must all fall in one partition here; see
    /// [`insert_files`](Self::insert_files).
    pub fn insert(&self, database: &str, table: &str, rows: &[Vec<Value>]) -> Result<InsertedFile> {
        let mut files = self.insert_files_checked(database, table, rows, true)?;
        Ok(files.remove(0))
    }

    /// Writes `rows` as one data file per partition they fall in (one file for an
    /// unpartitioned table), in the order partitions first appear, and records them all in
    /// one registry transaction: all or none. Blocking.
    pub fn insert_files(
        &self,
        database: &str,
        table: &str,
        rows: &[Vec<Value>],
    ) -> Result<Vec<InsertedFile>> {
        self.insert_files_checked(database, table, rows, false)
    }

    fn insert_files_checked(
        &self,
        database: &str,
        table: &str,
        rows: &[Vec<Value>],
        one_file: bool,
    ) -> Result<Vec<InsertedFile>> {
        let result = self.try_insert(database, table, rows, one_file);
        match &result {
            Ok(files) => {
                self.inner.inserts.fetch_add(1, Ordering::Relaxed);
                for f in files {
                    self.inner
                        .rows
                        .fetch_add(f.row_count as u64, Ordering::Relaxed);
                    self.inner
                        .bytes
                        .fetch_add(f.file_size as u64, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(database, table, error = %e, "insert failed");
            }
        }
        result
    }

    /// [`insert`](Self::insert) on tokio's blocking pool.
    pub async fn insert_async(
        &self,
        database: &str,
        table: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<InsertedFile> {
        let (this, database, table) = (self.clone(), database.to_string(), table.to_string());
        blocking(move || this.insert(&database, &table, &rows)).await
    }

    /// [`insert_files`](Self::insert_files) on tokio's blocking pool.
    pub async fn insert_files_async(
        &self,
        database: &str,
        table: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<Vec<InsertedFile>> {
        let (this, database, table) = (self.clone(), database.to_string(), table.to_string());
        blocking(move || this.insert_files(&database, &table, &rows)).await
    }

    /// Insert counters.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            inserts: self.inner.inserts.load(Ordering::Relaxed),
            rows: self.inner.rows.load(Ordering::Relaxed),
            bytes: self.inner.bytes.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
        }
    }

    fn try_insert(
        &self,
        database: &str,
        table: &str,
        rows: &[Vec<Value>],
        one_file: bool,
    ) -> Result<Vec<InsertedFile>> {
        if rows.is_empty() {
            return Err(LakehouseError::Invalid(
                "an insert needs at least one row".into(),
            ));
        }
        if rows.len() > self.inner.config.max_rows_per_insert {
            return Err(LakehouseError::Invalid(format!(
                "{} rows exceed max_rows_per_insert ({})",
                rows.len(),
                self.inner.config.max_rows_per_insert
            )));
        }
        let (ident, columns) = self.resolve(database, table)?;
        let lakehouse = &self.inner.lakehouse;
        let spec =
            lakehouse.with_registry(|conn| partition_spec(conn, ident.table_id, &columns))?;
        let data_dir = lakehouse.table_dir(&ident).join("data");
        let name = || {
            format!(
                "{}-{}.parquet",
                astha_core::change::unix_now_ms(),
                uuid::Uuid::new_v4()
            )
        };
        // Unpartitioned: the rows as they are, no copy.
        let groups: Vec<(String, std::borrow::Cow<'_, [Vec<Value>]>)> = if spec.is_unpartitioned() {
            vec![(String::new(), rows.into())]
        } else {
            let split = spec.split(rows)?;
            if one_file && split.len() > 1 {
                return Err(LakehouseError::Invalid(format!(
                        "the rows fall in {} partitions of {database}.{table}; insert_files writes one file per partition",
                        split.len()
                    )));
            }
            split
                .into_iter()
                .map(|(p, rows)| {
                    let path = spec.path(&p).map_err(LakehouseError::Invalid)?;
                    Ok((path, rows.into()))
                })
                .collect::<Result<_>>()?
        };
        // Validates every value before recording anything; a bad row leaves no file.
        let mut written = Vec::with_capacity(groups.len());
        let mut files = Vec::with_capacity(groups.len());
        let mut outcome: Result<()> = Ok(());
        for (partition_path, rows) in &groups {
            let dir = if partition_path.is_empty() {
                data_dir.clone()
            } else {
                data_dir.join(partition_path)
            };
            let step = write_parquet(&dir.join(name()), &columns, rows)
                .map_err(LakehouseError::from)
                .and_then(|info| {
                    written.push(info.path.clone());
                    let file = new_partitioned_data_file(
                        &info,
                        &columns,
                        rows,
                        IcebergState::Pending,
                        partition_path,
                    )?;
                    files.push((info, file));
                    Ok(())
                });
            if let Err(e) = step {
                outcome = Err(e);
                break;
            }
        }
        let recorded = outcome.and_then(|()| {
            lakehouse.with_registry(|conn| {
                Ok(registry::immediate(conn, |tx| {
                    files
                        .iter()
                        .map(|(_, f)| registry::record_data_file(tx, ident.table_id, f))
                        .collect::<std::result::Result<Vec<i64>, _>>()
                })?)
            })
        });
        let ids = match recorded {
            Ok(ids) => ids,
            Err(e) => {
                for path in &written {
                    if let Err(e) = std::fs::remove_file(path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove the data file of a failed insert");
                    }
                }
                return Err(e);
            }
        };
        let inserted: Vec<InsertedFile> = files
            .into_iter()
            .zip(ids)
            .map(|((info, file), file_id)| InsertedFile {
                table_id: ident.table_id,
                file_id,
                path: info.path,
                row_count: file.row_count,
                file_size: file.file_size,
                checksum: file.checksum,
                partition_path: file.partition_path,
            })
            .collect();
        for f in &inserted {
            tracing::debug!(
                database,
                table,
                file_id = f.file_id,
                rows = f.row_count,
                partition = %f.partition_path,
                "data file recorded"
            );
        }
        Ok(inserted)
    }

    fn resolve(&self, database: &str, table: &str) -> Result<(TableIdentity, Vec<ColumnSpec>)> {
        let missing = || LakehouseError::NoSuchTable(format!("{database}.{table}"));
        if let Some(schemas) = &self.inner.schemas {
            let schema = schemas.get_by_name(database, table)?.ok_or_else(missing)?;
            return Ok((schema.identity(), schema.iceberg_columns()?.to_vec()));
        }
        self.inner.lakehouse.with_registry(|conn| {
            let row = registry::find_table(conn, database, table)?.ok_or_else(missing)?;
            let columns = iceberg_columns(conn, row.id)?;
            Ok((
                TableIdentity {
                    table_id: row.id,
                    database: database.to_string(),
                    table: table.to_string(),
                },
                columns,
            ))
        })
    }
}
