//! Schema manager (seed 001, docs/SEEDS.md): a cache of table schemas kept right by registry events.
//!
//! Owns a `DashMap` of table id to [`CachedSchema`] (columns and `table_metadata`), with a
//! name index, and the cache counters. Promises: a `tables` INSERT caches the new table at
//! once (proactively); any `table_columns` or `table_metadata` change invalidates the table
//! and reloads it from the registry; a `tables` DELETE removes it; a lookup that misses reads
//! the registry and caches the answer; [`Component::on_refresh`] rebuilds the whole cache
//! from the registry. Every reload reads the registry as it is now, never the event's image,
//! so replayed or reordered deliveries converge on the registry's state.
//!
//! A miss racing with an invalidation cannot cache a stale answer: every invalidation bumps
//! an epoch, and a miss only stores what it read if the epoch did not move meanwhile.
//!
//! It never writes to the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::registry::{self, RegistryEvent, TableColumn, TableIdentity, TableMetadata};
use astha_actors::{Component, ComponentError};
use astha_core::config::ConfigError;
use astha_core::{Change, Operation};
use async_trait::async_trait;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::iceberg::ColumnSpec;
use crate::lakehouse::{blocking, iceberg_columns, Lakehouse, LakehouseError, Result};

/// The component's name (and slot name).
pub const SCHEMA_MANAGER: &str = "schema_manager";

/// Schema manager settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaManagerConfig {
    /// Most tables kept in the cache, at least 1; caching one more evicts an arbitrary
    /// entry (a later lookup of it misses and reloads). Default `10000`.
    pub max_entries: usize,
}

impl Default for SchemaManagerConfig {
    fn default() -> Self {
        SchemaManagerConfig {
            max_entries: 10_000,
        }
    }
}

impl SchemaManagerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "max_entries",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(())
    }
}

/// One table's schema as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSchema {
    pub table_id: i64,
    pub database: String,
    pub table: String,
    /// Columns in ordinal order.
    pub columns: Vec<TableColumn>,
    pub metadata: Option<TableMetadata>,
    /// Iceberg columns, or why the table cannot have them (an unknown type).
    pub iceberg: std::result::Result<Vec<ColumnSpec>, String>,
}

impl CachedSchema {
    /// The Iceberg columns of the table.
    pub fn iceberg_columns(&self) -> Result<&[ColumnSpec]> {
        self.iceberg
            .as_deref()
            .map_err(|e| LakehouseError::Invalid(e.clone()))
    }

    /// The registry identity of the table.
    pub fn identity(&self) -> TableIdentity {
        TableIdentity {
            table_id: self.table_id,
            database: self.database.clone(),
            table: self.table.clone(),
        }
    }

    /// Rough heap and inline size of the entry, for the memory statistic.
    fn approx_bytes(&self) -> usize {
        let column_bytes: usize = self
            .columns
            .iter()
            .map(|c| {
                std::mem::size_of::<TableColumn>()
                    + c.name.len()
                    + c.data_type.len()
                    + c.created_at.len()
                    + c.updated_at.len()
            })
            .sum();
        let meta_bytes = self.metadata.as_ref().map_or(0, |m| {
            std::mem::size_of::<TableMetadata>()
                + m.format.len()
                + m.compression.len()
                + m.partition_by.len()
                + m.sort_by.len()
                + m.properties.len()
                + m.created_at.len()
                + m.updated_at.len()
        });
        let iceberg_bytes = match &self.iceberg {
            Ok(cols) => cols
                .iter()
                .map(|c| std::mem::size_of::<ColumnSpec>() + c.name.len())
                .sum(),
            Err(e) => e.len(),
        };
        std::mem::size_of::<Self>()
            + self.database.len()
            + self.table.len()
            + column_bytes
            + meta_bytes
            + iceberg_bytes
    }
}

/// Cache counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before any lookup.
    pub hit_ratio: f64,
    pub entries: usize,
    /// Approximate bytes held by the cached entries.
    pub approx_memory_bytes: usize,
    /// Entries (re)loaded from the registry, by events, misses and refreshes.
    pub loads: u64,
    /// Entries dropped by events (invalidation or table deletion).
    pub invalidations: u64,
    /// Entries dropped to respect `max_entries`.
    pub evictions: u64,
}

/// The schema manager: a cloneable handle on one shared cache. Register one clone with
/// Astha and keep another for lookups.
#[derive(Clone)]
pub struct SchemaManager {
    inner: Arc<Inner>,
}

struct Inner {
    lakehouse: Lakehouse,
    config: SchemaManagerConfig,
    by_id: DashMap<i64, Arc<CachedSchema>>,
    by_name: DashMap<(String, String), i64>,
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    invalidations: AtomicU64,
    evictions: AtomicU64,
}

impl SchemaManager {
    /// A schema manager with an empty cache (filled by `on_refresh`, events and misses).
    pub fn new(lakehouse: Lakehouse, config: SchemaManagerConfig) -> Result<Self> {
        config.validate()?;
        Ok(SchemaManager {
            inner: Arc::new(Inner {
                lakehouse,
                config,
                by_id: DashMap::new(),
                by_name: DashMap::new(),
                epoch: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                invalidations: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            }),
        })
    }

    /// The schema of table `table_id`; a miss reads the registry (blocking).
    pub fn get(&self, table_id: i64) -> Result<Option<Arc<CachedSchema>>> {
        if let Some(hit) = self.inner.by_id.get(&table_id) {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit.clone()));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        self.inner.load_on_miss(table_id)
    }

    /// The schema of `database.table`; a miss reads the registry (blocking).
    pub fn get_by_name(&self, database: &str, table: &str) -> Result<Option<Arc<CachedSchema>>> {
        let key = (database.to_string(), table.to_string());
        let id = self.inner.by_name.get(&key).map(|e| *e);
        if let Some(hit) = id.and_then(|id| self.inner.by_id.get(&id).map(|e| e.clone())) {
            if hit.database == database && hit.table == table {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(hit));
            }
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let found = self
            .inner
            .lakehouse
            .with_registry(|conn| Ok(registry::find_table(conn, database, table)?.map(|t| t.id)))?;
        match found {
            Some(id) => self.inner.load_on_miss(id),
            None => Ok(None),
        }
    }

    /// [`get`](Self::get) off the async executor.
    pub async fn schema(&self, table_id: i64) -> Result<Option<Arc<CachedSchema>>> {
        let this = self.clone();
        blocking(move || this.get(table_id)).await
    }

    /// [`get_by_name`](Self::get_by_name) off the async executor.
    pub async fn schema_by_name(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<Arc<CachedSchema>>> {
        let (this, database, table) = (self.clone(), database.to_string(), table.to_string());
        blocking(move || this.get_by_name(&database, &table)).await
    }

    /// The cached entry, without falling back to the registry or counting a lookup.
    pub fn cached(&self, table_id: i64) -> Option<Arc<CachedSchema>> {
        self.inner.by_id.get(&table_id).map(|e| e.clone())
    }

    /// Cache counters.
    pub fn stats(&self) -> CacheStats {
        let hits = self.inner.hits.load(Ordering::Relaxed);
        let misses = self.inner.misses.load(Ordering::Relaxed);
        let lookups = hits + misses;
        CacheStats {
            hits,
            misses,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
            entries: self.inner.by_id.len(),
            approx_memory_bytes: self
                .inner
                .by_id
                .iter()
                .map(|e| e.value().approx_bytes() + std::mem::size_of::<i64>())
                .sum(),
            loads: self.inner.loads.load(Ordering::Relaxed),
            invalidations: self.inner.invalidations.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
        }
    }

    /// Drops the whole cache and loads every table from the registry; returns the count.
    pub fn rebuild(&self) -> Result<usize> {
        let inner = &self.inner;
        inner.epoch.fetch_add(1, Ordering::SeqCst);
        let schemas = inner.lakehouse.with_registry(|conn| {
            registry::all_tables(conn)?
                .into_iter()
                .map(|ident| read_schema(conn, ident.table_id))
                .collect::<Result<Vec<_>>>()
        })?;
        inner.by_id.clear();
        inner.by_name.clear();
        let mut n = 0;
        for schema in schemas.into_iter().flatten() {
            inner.store(Arc::new(schema));
            n += 1;
        }
        Ok(n)
    }

    /// Reloads one table from the registry (or removes it if it is gone).
    fn reload(&self, table_id: i64) -> Result<()> {
        let inner = &self.inner;
        inner.epoch.fetch_add(1, Ordering::SeqCst);
        inner.invalidations.fetch_add(1, Ordering::Relaxed);
        inner.remove(table_id);
        let schema = inner
            .lakehouse
            .with_registry(|conn| read_schema(conn, table_id))?;
        if let Some(schema) = schema {
            inner.store(Arc::new(schema));
        }
        Ok(())
    }

    fn forget(&self, table_id: i64) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        if self.inner.remove(table_id) {
            self.inner.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Inner {
    fn load_on_miss(&self, table_id: i64) -> Result<Option<Arc<CachedSchema>>> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let schema = self
            .lakehouse
            .with_registry(|conn| read_schema(conn, table_id))?
            .map(Arc::new);
        if let Some(schema) = &schema {
            // An invalidation happened while we read: our answer may predate it, so it is
            // returned but not cached.
            if self.epoch.load(Ordering::SeqCst) == epoch {
                self.store(schema.clone());
            }
        }
        Ok(schema)
    }

    fn store(&self, schema: Arc<CachedSchema>) {
        if !self.by_id.contains_key(&schema.table_id) && self.by_id.len() >= self.config.max_entries
        {
            let victim = self.by_id.iter().next().map(|e| *e.key());
            if let Some(victim) = victim {
                self.remove(victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.by_name.insert(
            (schema.database.clone(), schema.table.clone()),
            schema.table_id,
        );
        if let Some(old) = self.by_id.insert(schema.table_id, schema.clone()) {
            if (old.database.as_str(), old.table.as_str())
                != (schema.database.as_str(), schema.table.as_str())
            {
                self.by_name
                    .remove_if(&(old.database.clone(), old.table.clone()), |_, id| {
                        *id == old.table_id
                    });
            }
        }
    }

    fn remove(&self, table_id: i64) -> bool {
        match self.by_id.remove(&table_id) {
            Some((_, old)) => {
                self.by_name
                    .remove_if(&(old.database.clone(), old.table.clone()), |_, id| {
                        *id == table_id
                    });
                true
            }
            None => false,
        }
    }
}

/// Reads one table's schema from the registry.
fn read_schema(conn: &rusqlite::Connection, table_id: i64) -> Result<Option<CachedSchema>> {
    let Some(ident) = registry::table_identity(conn, table_id)? else {
        return Ok(None);
    };
    let columns = registry::table_columns(conn, table_id)?;
    let metadata = registry::table_metadata(conn, table_id)?;
    let iceberg = match iceberg_columns(conn, table_id) {
        Ok(cols) => Ok(cols),
        Err(e) if e.is_retriable() => return Err(e),
        Err(e) => Err(e.to_string()),
    };
    Ok(Some(CachedSchema {
        table_id,
        database: ident.database,
        table: ident.table,
        columns,
        metadata,
        iceberg,
    }))
}

/// What an event asks the cache to do.
enum Action {
    Reload(i64),
    Forget(i64),
    Nothing,
}

fn action_for(change: &Change) -> std::result::Result<Action, ComponentError> {
    let event = RegistryEvent::decode(change).map_err(ComponentError::permanent)?;
    Ok(match event {
        RegistryEvent::Tables(ev) => match (ev.op, ev.before.as_ref(), ev.after.as_ref()) {
            (Operation::Insert, _, Some(t)) => Action::Reload(t.id),
            (Operation::Delete, Some(t), _) => Action::Forget(t.id),
            // Statistics updates are frequent and do not touch the schema; a rename or a
            // move to another database does.
            (Operation::Update, Some(b), Some(a))
                if b.name != a.name || b.database_id != a.database_id =>
            {
                Action::Reload(a.id)
            }
            _ => Action::Nothing,
        },
        RegistryEvent::TableColumns(ev) => match ev.data() {
            Some(c) => Action::Reload(c.table_id),
            None => Action::Nothing,
        },
        RegistryEvent::TableMetadata(ev) => match ev.data() {
            Some(m) => Action::Reload(m.table_id),
            None => Action::Nothing,
        },
        _ => Action::Nothing,
    })
}

#[async_trait]
impl Component for SchemaManager {
    fn name(&self) -> &str {
        SCHEMA_MANAGER
    }

    fn subscriptions(&self) -> Vec<String> {
        ["tables", "table_columns", "table_metadata"]
            .map(String::from)
            .to_vec()
    }

    async fn on_event(&mut self, change: &Change) -> std::result::Result<(), ComponentError> {
        match action_for(change)? {
            Action::Reload(id) => {
                let this = self.clone();
                blocking(move || this.reload(id)).await?;
            }
            Action::Forget(id) => self.forget(id),
            Action::Nothing => {}
        }
        Ok(())
    }

    async fn on_refresh(&mut self) -> std::result::Result<(), ComponentError> {
        let this = self.clone();
        let n = blocking(move || this.rebuild()).await?;
        tracing::info!(
            component = SCHEMA_MANAGER,
            tables = n,
            "schema cache rebuilt"
        );
        Ok(())
    }
}
