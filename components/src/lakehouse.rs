//! The environment the lakehouse components share: where the registry, the warehouse and
//! the Iceberg catalog live, pooled registry connections, the mapping from registry columns
//! to Iceberg columns and of `table_metadata.partition_by` to a partition spec, exact column
//! statistics, and the one error type with its
//! retriable/permanent split.
//!
//! It promises one layout, used by every component and by the Iceberg writer:
//! `<warehouse>/<database>/<table>/data/*.parquet` for data files (a partitioned table's
//! under `data/<partition_path>/`, the path the registry's `table_files.partition_path`
//! holds: `name=value/...` as `astha_iceberg` spells it) and `.../metadata/` for
//! Iceberg metadata; Iceberg namespace = registry database name, table = registry table name,
//! in the SQL catalog named [`LakehouseConfig::catalog_name`]. It never decides anything about
//! a table: components do; this only gives them the means.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::registry::{
    self, FileStatistic, IcebergState, NewColumnStatistic, NewDataFile, TableFile, TableIdentity,
};
use astha_actors::ComponentError;
use astha_core::config::ConfigError;
use astha_core::CoreError;
use dashmap::DashMap;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;

use crate::iceberg::{
    lower_bound_bytes, upper_bound_bytes, BoundSpec, ColumnSpec, ColumnStats, CommitError,
    DataFileInfo, Datum, IcebergError, IcebergTable, IcebergType, PartitionDef, PartitionSpec,
    SqlCatalog,
};

/// Catalog name readers use unless configured otherwise (`SqlCatalog("astha", ...)`).
pub const DEFAULT_CATALOG_NAME: &str = "astha";

/// Where the lakehouse lives. Shared by every component of one Astha instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakehouseConfig {
    /// The registry SQLite database, the same file Astha watches. Required; it is migrated
    /// to the current registry schema when the lakehouse opens.
    pub registry: PathBuf,
    /// Directory of table data and Iceberg metadata. Required; created if missing.
    pub warehouse: PathBuf,
    /// SQLite file holding the Iceberg SQL catalog tables (`iceberg_tables`,
    /// `iceberg_namespace_properties`). Default: the registry database itself, so
    /// `SqlCatalog(name, uri="sqlite:///<registry>")` opens the tables by name.
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Catalog name written into the catalog tables; readers must pass the same name.
    /// Default `"astha"`.
    #[serde(default = "default_catalog_name")]
    pub catalog_name: String,
}

fn default_catalog_name() -> String {
    DEFAULT_CATALOG_NAME.to_string()
}

impl LakehouseConfig {
    /// A config with the default catalog (inside the registry) and catalog name.
    pub fn new(registry: impl Into<PathBuf>, warehouse: impl Into<PathBuf>) -> Self {
        LakehouseConfig {
            registry: registry.into(),
            warehouse: warehouse.into(),
            catalog: None,
            catalog_name: default_catalog_name(),
        }
    }

    /// Checks the paths and names are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.as_os_str().is_empty() {
            return Err(ConfigError::invalid("registry", "must name a file"));
        }
        if self.warehouse.as_os_str().is_empty() {
            return Err(ConfigError::invalid("warehouse", "must name a directory"));
        }
        if self
            .catalog
            .as_ref()
            .is_some_and(|c| c.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "catalog",
                "must name a file when given",
            ));
        }
        if self.catalog_name.trim().is_empty() {
            return Err(ConfigError::invalid("catalog_name", "must not be empty"));
        }
        Ok(())
    }

    /// The catalog database file in force.
    pub fn catalog_path(&self) -> &Path {
        self.catalog.as_deref().unwrap_or(&self.registry)
    }
}

/// Everything that can go wrong in a lakehouse component.
#[derive(Debug, thiserror::Error)]
pub enum LakehouseError {
    #[error("registry: {0}")]
    Registry(#[from] CoreError),
    #[error("iceberg: {0}")]
    Iceberg(#[from] IcebergError),
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry has no such table (it may have been dropped).
    #[error("no such table: {0}")]
    NoSuchTable(String),
    /// A request or a registry row that can never be processed as it is.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl LakehouseError {
    /// True when the same work may succeed later (a busy database, an I/O hiccup, a lost
    /// catalog compare-and-swap, an interrupted task).
    pub fn is_retriable(&self) -> bool {
        match self {
            LakehouseError::Registry(e) => e.is_retriable(),
            LakehouseError::Iceberg(e) => e.is_retriable(),
            LakehouseError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
            ),
            LakehouseError::Task(_) => true,
            LakehouseError::Config(_)
            | LakehouseError::NoSuchTable(_)
            | LakehouseError::Invalid(_) => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LakehouseError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<LakehouseError> for ComponentError {
    fn from(err: LakehouseError) -> Self {
        if err.is_retriable() {
            ComponentError::transient(err)
        } else {
            ComponentError::permanent(err)
        }
    }
}

/// Lets a component's action (which also writes the registry) run in the Iceberg commit loop.
impl CommitError for LakehouseError {
    fn as_iceberg(&self) -> Option<&IcebergError> {
        match self {
            LakehouseError::Iceberg(e) => Some(e),
            _ => None,
        }
    }
}

/// Result alias of the components.
pub type Result<T, E = LakehouseError> = std::result::Result<T, E>;

/// Runs blocking work (SQLite, files) on tokio's blocking pool: component handlers run on
/// the actor system's thread and must not block it.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(err) => Err(LakehouseError::Task(err.to_string())),
    }
}

/// The shared lakehouse handle: configuration, the Iceberg catalog and a pool of registry
/// connections. Cheap to clone.
#[derive(Clone)]
pub struct Lakehouse {
    inner: Arc<Inner>,
}

struct Inner {
    config: LakehouseConfig,
    warehouse: PathBuf,
    catalog: SqlCatalog,
    /// The catalog tables live in the registry's file (the default): registry writes can
    /// ride in a catalog swap's transaction.
    catalog_in_registry: bool,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Lakehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lakehouse")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Connections kept for reuse; more are opened when needed, extras are closed.
const POOL_SIZE: usize = 4;

impl Lakehouse {
    /// Validates `config`, migrates the registry, creates the warehouse directory and
    /// opens the catalog (creating its tables if absent). Blocking.
    pub fn open(config: LakehouseConfig) -> Result<Lakehouse> {
        config.validate()?;
        let conn = astha_core::db::open(&config.registry)?;
        registry::migrate(&conn)?;
        std::fs::create_dir_all(&config.warehouse)
            .map_err(|e| LakehouseError::io(&config.warehouse, e))?;
        let warehouse = std::fs::canonicalize(&config.warehouse)
            .map_err(|e| LakehouseError::io(&config.warehouse, e))?;
        let catalog = SqlCatalog::open(config.catalog_path(), &config.catalog_name)?;
        let catalog_in_registry = match (
            std::fs::canonicalize(&config.registry),
            std::fs::canonicalize(config.catalog_path()),
        ) {
            (Ok(registry), Ok(catalog)) => registry == catalog,
            _ => false,
        };
        Ok(Lakehouse {
            inner: Arc::new(Inner {
                config,
                warehouse,
                catalog,
                catalog_in_registry,
                pool: Mutex::new(vec![conn]),
            }),
        })
    }

    pub fn config(&self) -> &LakehouseConfig {
        &self.inner.config
    }

    /// The warehouse directory, absolute.
    pub fn warehouse(&self) -> &Path {
        &self.inner.warehouse
    }

    /// The Iceberg catalog.
    pub fn catalog(&self) -> &SqlCatalog {
        &self.inner.catalog
    }

    /// True when the catalog is the registry's own SQLite file, so a commit's registry
    /// bookkeeping can be in the catalog swap's transaction
    /// ([`InSwap`](crate::iceberg::InSwap)).
    pub fn catalog_in_registry(&self) -> bool {
        self.inner.catalog_in_registry
    }

    /// `<warehouse>/<database>/<table>`: where a table's data and metadata live.
    pub fn table_dir(&self, ident: &TableIdentity) -> PathBuf {
        self.inner
            .warehouse
            .join(&ident.database)
            .join(&ident.table)
    }

    /// Runs `f` on a registry connection (blocking; call from a blocking context).
    pub fn with_registry<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self
            .inner
            .pool
            .lock()
            .expect("registry pool poisoned")
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => astha_core::db::open_existing(&self.inner.config.registry)?,
        };
        let result = f(&conn);
        // A connection left inside a transaction (an error between BEGIN and COMMIT that
        // skipped the rollback) must not be reused.
        if conn.is_autocommit() {
            let mut pool = self.inner.pool.lock().expect("registry pool poisoned");
            if pool.len() < POOL_SIZE {
                pool.push(conn);
            }
        }
        result
    }

    /// The Iceberg table of a registry table, if the catalog has it.
    pub fn load_table(&self, ident: &TableIdentity) -> Result<Option<IcebergTable>> {
        match IcebergTable::load(self.catalog(), &ident.database, &ident.table) {
            Ok(t) => Ok(Some(t)),
            Err(IcebergError::NoSuchTable(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The Iceberg table of a registry table, created (with `columns`, unpartitioned) if
    /// missing.
    pub fn ensure_table(
        &self,
        ident: &TableIdentity,
        columns: &[ColumnSpec],
    ) -> Result<IcebergTable> {
        self.ensure_partitioned_table(ident, columns, &[])
    }

    /// [`ensure_table`](Self::ensure_table) for a table partitioned by `partition` (an
    /// existing table must have that spec: specs never evolve).
    pub fn ensure_partitioned_table(
        &self,
        ident: &TableIdentity,
        columns: &[ColumnSpec],
        partition: &[PartitionDef],
    ) -> Result<IcebergTable> {
        Ok(IcebergTable::create_partitioned(
            self.catalog(),
            &self.inner.warehouse,
            &ident.database,
            &ident.table,
            columns,
            partition,
        )?)
    }
}

/// The partition definitions of registry table `table_id`: `table_metadata.partition_by`,
/// a JSON array of `col`, `identity(col)`, `year(col)`, `month(col)`, `day(col)`,
/// `hour(col)`, `bucket(N, col)`, `truncate(W, col)` (empty: unpartitioned).
pub fn partition_defs(conn: &Connection, table_id: i64) -> Result<Vec<PartitionDef>> {
    let Some(meta) = registry::table_metadata(conn, table_id)? else {
        return Ok(Vec::new());
    };
    let texts: Vec<String> = serde_json::from_str(&meta.partition_by).map_err(|e| {
        LakehouseError::Invalid(format!(
            "table id {table_id}: partition_by {:?} is not a JSON array of strings: {e}",
            meta.partition_by
        ))
    })?;
    texts
        .iter()
        .map(|t| {
            PartitionDef::parse(t)
                .map_err(|e| LakehouseError::Invalid(format!("table id {table_id}: {e}")))
        })
        .collect()
}

/// The partition spec of registry table `table_id` bound to its Iceberg `columns`.
pub fn partition_spec(
    conn: &Connection,
    table_id: i64,
    columns: &[ColumnSpec],
) -> Result<BoundSpec> {
    let defs = partition_defs(conn, table_id)?;
    let spec = PartitionSpec::from_definitions(columns, &defs)
        .and_then(|s| s.bind(columns))
        .map_err(|e| LakehouseError::Invalid(format!("table id {table_id}: {e}")))?;
    Ok(spec)
}

/// The Iceberg columns of registry table `table_id`, from `table_columns` (type names
/// mapped with [`IcebergType::from_sql`], field ids as recorded).
pub fn iceberg_columns(conn: &Connection, table_id: i64) -> Result<Vec<ColumnSpec>> {
    let columns = registry::table_columns(conn, table_id)?;
    if columns.is_empty() {
        return Err(LakehouseError::NoSuchTable(format!(
            "table id {table_id} has no columns"
        )));
    }
    columns
        .iter()
        .map(|c| {
            let ty = IcebergType::from_sql(&c.data_type).map_err(|e| {
                LakehouseError::Invalid(format!("column {:?} of table id {table_id}: {e}", c.name))
            })?;
            let field_id = i32::try_from(c.field_id).map_err(|_| {
                LakehouseError::Invalid(format!("field id {} out of range", c.field_id))
            })?;
            Ok(ColumnSpec::new(field_id, &c.name, ty, !c.nullable))
        })
        .collect()
}

/// Exact per-column statistics of `rows` (min/max as canonical JSON text, not truncated).
pub fn column_statistics(
    columns: &[ColumnSpec],
    rows: &[Vec<Value>],
) -> Result<Vec<NewColumnStatistic>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let mut min: Option<Datum> = None;
            let mut max: Option<Datum> = None;
            let mut nulls = 0i64;
            for (r, row) in rows.iter().enumerate() {
                let v = row.get(i).unwrap_or(&Value::Null);
                if v.is_null() {
                    nulls += 1;
                    continue;
                }
                let d = Datum::from_json(col.ty, v).map_err(|reason| {
                    LakehouseError::Invalid(format!("row {r}, column {:?}: {reason}", col.name))
                })?;
                if min
                    .as_ref()
                    .is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Less))
                {
                    min = Some(d.clone());
                }
                if max
                    .as_ref()
                    .is_none_or(|m| d.compare(m) == Some(std::cmp::Ordering::Greater))
                {
                    max = Some(d);
                }
            }
            Ok(NewColumnStatistic {
                column_name: col.name.clone(),
                min_value: min.map(|d| d.to_json().to_string()),
                max_value: max.map(|d| d.to_json().to_string()),
                null_count: nulls,
                value_count: rows.len() as i64,
            })
        })
        .collect()
}

/// `sha256:<hex>` of a file's bytes.
pub fn file_checksum(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| LakehouseError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| LakehouseError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

/// The registry row of a data file just written: checksum, exact statistics of `rows`, and
/// its partition path (`spec.path` of the file's partition; empty when unpartitioned).
pub fn new_data_file(
    info: &DataFileInfo,
    columns: &[ColumnSpec],
    rows: &[Vec<Value>],
    state: IcebergState,
) -> Result<NewDataFile> {
    new_partitioned_data_file(info, columns, rows, state, "")
}

/// [`new_data_file`] with the registry's `partition_path`.
pub fn new_partitioned_data_file(
    info: &DataFileInfo,
    columns: &[ColumnSpec],
    rows: &[Vec<Value>],
    state: IcebergState,
    partition_path: &str,
) -> Result<NewDataFile> {
    let file_name = info
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(NewDataFile {
        file_name,
        file_path: info.path.to_string_lossy().into_owned(),
        file_size: info.file_size_in_bytes as i64,
        row_count: info.record_count as i64,
        checksum: file_checksum(&info.path)?,
        file_type: "parquet".into(),
        partition_path: partition_path.to_string(),
        is_compressed: true,
        state,
        statistics: column_statistics(columns, rows)?,
    })
}

/// The Iceberg view of a registry data file: size and row count from `table_files`,
/// value/null counts and bounds from `file_statistics` (bounds truncated as Iceberg's
/// default metrics mode does).
pub fn data_file_info(
    file: &TableFile,
    stats: &[FileStatistic],
    columns: &[ColumnSpec],
) -> Result<DataFileInfo> {
    let by_name: HashMap<&str, &FileStatistic> =
        stats.iter().map(|s| (s.column_name.as_str(), s)).collect();
    let mut column_stats = std::collections::BTreeMap::new();
    for col in columns {
        let Some(s) = by_name.get(col.name.as_str()) else {
            continue;
        };
        let bound = |text: &Option<String>| -> Result<Option<Datum>> {
            let Some(text) = text else { return Ok(None) };
            let v: Value = serde_json::from_str(text).map_err(|e| {
                LakehouseError::Invalid(format!(
                    "file {} column {:?}: bad statistic {text:?}: {e}",
                    file.file_path, col.name
                ))
            })?;
            Datum::from_json(col.ty, &v).map(Some).map_err(|reason| {
                LakehouseError::Invalid(format!(
                    "file {} column {:?}: statistic {text:?}: {reason}",
                    file.file_path, col.name
                ))
            })
        };
        let lower = bound(&s.min_value)?;
        let upper = bound(&s.max_value)?;
        column_stats.insert(
            col.field_id,
            ColumnStats {
                value_count: s.value_count.max(0) as u64,
                null_count: s.null_count.max(0) as u64,
                // Rows arrive as JSON, which cannot carry NaN.
                nan_count: matches!(col.ty, IcebergType::Float | IcebergType::Double).then_some(0),
                column_size: None,
                lower_bound: lower.as_ref().map(lower_bound_bytes),
                upper_bound: upper.as_ref().and_then(upper_bound_bytes),
            },
        );
    }
    Ok(DataFileInfo {
        path: PathBuf::from(&file.file_path),
        file_size_in_bytes: file.file_size.max(0) as u64,
        record_count: file.row_count.max(0) as u64,
        column_stats,
        partition: Vec::new(),
    })
}

/// One lock per table, so a component never runs two pieces of work on the same table at
/// once (a handler that timed out leaves its blocking task running; the retry waits for it).
#[derive(Default, Clone)]
pub struct TableLocks {
    locks: Arc<DashMap<i64, Arc<Mutex<()>>>>,
}

impl TableLocks {
    /// The lock of `table_id`; hold `lock()` of the returned mutex for the work.
    pub fn get(&self, table_id: i64) -> Arc<Mutex<()>> {
        self.locks.entry(table_id).or_default().clone()
    }
}

/// Locks a table mutex, ignoring poisoning (the guarded work keeps its state on disk).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
