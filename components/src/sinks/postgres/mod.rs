//! The PostgreSQL destination (seed 004's destination connector): mirrors captured
//! SQLite tables into PostgreSQL tables, exactly once.
//!
//! - **Tables.** Each captured table `t` becomes `<schema>.t` (schema: the `schema`
//!   setting, by default the source's name), created with its schema if missing, with the
//!   same primary key and the column types of [`mapping`]'s table (or of
//!   `column_types`, per column). A table without a
//!   primary key is refused (`validate`, and each of its changes is dead-lettered): a
//!   mirror applies updates and deletes by key.
//! - **Changes.** An INSERT or UPDATE is an upsert of the full after-image (`INSERT ...
//!   ON CONFLICT (key) DO UPDATE`), a DELETE a delete by key; an UPDATE that changes the
//!   key deletes the old key first. Consecutive changes of one table and kind become one
//!   multi-row statement (the last image of a key wins, as it would row by row).
//! - **Exactly once.** The marker table `<schema>.astha_markers` holds, per source
//!   database identity and table, the LSN of the last change applied (seed 004's
//!   `update_marker`/`get_marker`). A delivery's rows and its markers are written in one
//!   PostgreSQL transaction, and a change at or below its table's marker is confirmed
//!   without being applied. A crash anywhere (before, during or after the commit, before
//!   the slot moved) therefore re-delivers only changes the markers already cover, or
//!   changes whose transaction never committed. After any error the connection is
//!   dropped and the markers are read again, so a commit whose outcome was lost is never
//!   guessed at.
//! - **Values.** Each value goes in bit for bit or not at all ([`mapping`]): one that
//!   does not fit its column is a permanent error naming table, column and reason, and
//!   the supervisor dead-letters that change; the changes before it are committed first.
//!   A data error the server raises in a multi-change delivery (a constraint someone
//!   added to the mirror) is narrowed down by applying the changes one transaction each.
//! - **Schema changes.** When a change arrives with a new captured schema, the mirror's
//!   columns are brought in line in the same transaction: new columns are added (typed
//!   from SQLite's declared type), missing ones dropped, and a column whose name alone
//!   changed at the same position is renamed. A DROP of the last column followed by an
//!   ADD with no change captured in between looks exactly like a RENAME of it, and is
//!   applied as one. A changed primary key is refused.
//!
//! It never deletes a mirrored table, never changes a value's type, and never writes
//! outside its schema.

pub mod mapping;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::schema::TableSchema;
use astha_core::{Change, Operation, Value};
use async_trait::async_trait;
use serde::Deserialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::registry::{SinkConfig, SinkContext};
pub use mapping::{ident, Param, PgType};

/// Configuration of a [`PostgresSink`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// Connection string, as libpq takes it: `postgresql://user@host:port/db` or
    /// `host=... user=...`. No TLS: keep the server on loopback or a private network.
    pub url: String,
    /// Tables to mirror (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The PostgreSQL schema of the mirrored tables and the marker table; created if
    /// missing. Default: the source's name.
    #[serde(default)]
    pub schema: String,
    /// Most changes applied in one transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long connecting may take before it counts as a transient failure.
    #[serde(with = "duration_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// The PostgreSQL type of a created column, overriding the mapping by affinity:
    /// `"table.column" = "text"` (one of `bigint`, `double precision`, `text`, `bytea`,
    /// `numeric`). For instance a `DATETIME` column (NUMERIC affinity) that holds
    /// ISO-8601 text. Applies when the column is created; an existing one keeps its type.
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,
}

/// The marker table's name inside the sink's schema (a mirrored table may not have it).
pub const MARKER_TABLE: &str = "astha_markers";

fn default_name() -> String {
    "postgres_sink".into()
}
fn default_batch_size() -> usize {
    1000
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl PostgresSinkConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(url: &str, schema: &str, tables: &[&str]) -> Self {
        PostgresSinkConfig {
            name: default_name(),
            url: url.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            schema: schema.into(),
            batch_size: default_batch_size(),
            connect_timeout: default_connect_timeout(),
            column_types: BTreeMap::new(),
        }
    }

    /// [`PostgresSinkConfig::column_types`], parsed: `(table, column)` → type.
    pub fn parsed_column_types(&self) -> Result<HashMap<(String, String), PgType>, String> {
        self.column_types
            .iter()
            .map(|(at, name)| {
                let (table, column) = at.split_once('.').ok_or_else(|| {
                    format!(
                        "postgres sink {}: column_types key {at:?} is not \"table.column\"",
                        self.name
                    )
                })?;
                let pg = PgType::from_sql(name).ok_or_else(|| {
                    format!(
                        "postgres sink {}: column_types {at:?} = {name:?}: use one of bigint, \
                         double precision, text, bytea, numeric",
                        self.name
                    )
                })?;
                Ok(((table.to_string(), column.to_string()), pg))
            })
            .collect()
    }

    /// Checks the settings (no I/O); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("postgres sink: name is empty".into());
        }
        self.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("postgres sink {name}: url: {e}"))?;
        if self.tables.is_empty() {
            return Err(format!("postgres sink {name}: no tables"));
        }
        if self.schema.is_empty() {
            return Err(format!("postgres sink {name}: schema is empty"));
        }
        if self.tables.iter().any(|t| t == MARKER_TABLE) {
            return Err(format!(
                "postgres sink {name}: a table named {MARKER_TABLE} would collide with the \
                 marker table in schema {}; mirror it into another schema",
                self.schema
            ));
        }
        if self.batch_size == 0 {
            return Err(format!("postgres sink {name}: batch_size must be > 0"));
        }
        if self.connect_timeout.is_zero() {
            return Err(format!("postgres sink {name}: connect_timeout must be > 0"));
        }
        self.parsed_column_types().map(|_| ())
    }

    /// This config with the name and tables of `ctx`, and its source as the default schema.
    fn for_context(&self, ctx: &SinkContext) -> PostgresSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        if config.schema.is_empty() {
            config.schema = ctx.source.clone();
        }
        config
    }
}

/// The first of `tables` of the SQLite database at `database` that has no primary key,
/// as an error saying what to do. A database that cannot be opened read-only is not
/// checked here (the sink refuses such a table's changes when they come).
fn refuse_tables_without_key(database: &std::path::Path, tables: &[String]) -> Result<(), String> {
    let Ok(conn) = astha_core::db::open_read_only(database) else {
        return Ok(());
    };
    for table in tables {
        if let Ok((_, key)) = astha_core::schema::live_columns(&conn, table) {
            if key.is_empty() {
                return Err(no_key(table));
            }
        }
    }
    Ok(())
}

fn no_key(table: &str) -> String {
    format!(
        "table {table} has no primary key: the postgres sink applies updates and deletes by \
         key; declare one, or leave the table out of this sink"
    )
}

impl SinkConfig for PostgresSinkConfig {
    const TYPE: &'static str = "postgres";
    const ABOUT: &'static str =
        "mirrors tables into PostgreSQL by primary key, exactly once (markers in the same transaction)";

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        let config = self.for_context(ctx);
        config.validate()?;
        refuse_tables_without_key(&ctx.database, &config.tables)
            .map_err(|e| format!("postgres sink {}: {e}", config.name))
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(PostgresSink::new(
            self.for_context(ctx),
            ctx.database.clone(),
            &ctx.identity,
        )?))
    }
}

/// Counters of a [`PostgresSink`], shared with whoever holds a clone.
#[derive(Debug, Default)]
pub struct PostgresSinkStats {
    /// Changes applied (committed with their markers).
    pub applied: AtomicU64,
    /// Changes confirmed without applying: their table's marker already covered them.
    pub already_applied: AtomicU64,
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Row statements executed (each a multi-row upsert or delete).
    pub statements: AtomicU64,
    /// Deliveries that failed transiently (and were rolled back).
    pub failures: AtomicU64,
}

/// The mirrored table as this sink last committed it.
#[derive(Debug, Clone)]
struct Mirror {
    /// The captured schema the columns match.
    schema_id: i64,
    /// Column types, in the captured schema's column order.
    types: Vec<PgType>,
}

/// Mirrors tables into PostgreSQL; see the module docs.
pub struct PostgresSink {
    config: PostgresSinkConfig,
    database: PathBuf,
    identity: String,
    /// Parsed [`PostgresSinkConfig::column_types`].
    column_types: HashMap<(String, String), PgType>,
    client: Option<Client>,
    /// Committed markers of this source, by table.
    markers: HashMap<String, i64>,
    /// Committed column layouts, by table.
    mirrors: HashMap<String, Mirror>,
    stats: Arc<PostgresSinkStats>,
}

/// A run of consecutive changes of one table and kind, not yet sent.
struct Run {
    table: String,
    delete: bool,
    /// Column names of the statement (all columns for upserts, the key for deletes).
    columns: Vec<String>,
    types: Vec<PgType>,
    key: Vec<String>,
    rows: Vec<Vec<Param>>,
    /// Row index by key, so a key's later image replaces its earlier one.
    by_key: HashMap<String, usize>,
}

/// What one committed transaction covered.
struct Committed {
    /// Leading changes of the delivery it covers (applied, or already applied before).
    covered: usize,
    /// Layouts it created or changed.
    mirrors: HashMap<String, Mirror>,
    /// Markers it wrote.
    markers: BTreeMap<String, i64>,
    /// Changes it applied.
    applied: usize,
    /// Why it stopped before change `covered`, if it did: that change can never apply.
    refused: Option<ComponentError>,
}

/// How a transaction ended short of committing everything.
struct Failed {
    /// Changes committed before the failure (0 if the transaction rolled back).
    handled: usize,
    error: ComponentError,
    /// The server rejected the data (SQLSTATE class 22 or 23), not the connection.
    data: bool,
}

impl PostgresSink {
    /// A sink for the SQLite database at `database` (read for declared column types),
    /// whose markers are keyed by `identity` (the database's stored identity, see
    /// [`super::identity`]). Connects lazily.
    pub fn new(
        config: PostgresSinkConfig,
        database: PathBuf,
        identity: &str,
    ) -> Result<Self, String> {
        config.validate()?;
        if identity.is_empty() {
            return Err(format!("postgres sink {}: empty identity", config.name));
        }
        Ok(PostgresSink {
            column_types: config.parsed_column_types()?,
            config,
            database,
            identity: identity.into(),
            client: None,
            markers: HashMap::new(),
            mirrors: HashMap::new(),
            stats: Arc::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<PostgresSinkStats> {
        self.stats.clone()
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", ident(&self.config.schema), ident(table))
    }

    /// Forgets the connection and everything read through it: the next delivery
    /// reconnects and reads the committed markers and layouts again.
    fn reset(&mut self) {
        self.client = None;
        self.markers.clear();
        self.mirrors.clear();
    }

    async fn connect(&mut self) -> Result<(), ComponentError> {
        if self.client.is_some() {
            return Ok(());
        }
        let mut pg: tokio_postgres::Config = self
            .config
            .url
            .parse()
            .map_err(|e| ComponentError::permanent(format!("postgres url: {e}")))?;
        pg.connect_timeout(self.config.connect_timeout)
            .application_name(format!("astha:{}", self.config.name));
        let (client, connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| transient("connect", &e))?;
        let sink = self.config.name.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(sink = %sink, error = %error, "postgres connection ended");
            }
        });
        let schema = ident(&self.config.schema);
        let markers = self.qualified(MARKER_TABLE);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {markers} (
                     source text NOT NULL,
                     table_name text NOT NULL,
                     lsn bigint NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (source, table_name))"
            ))
            .await
            .map_err(|e| transient("create schema and marker table", &e))?;
        let rows = client
            .query(
                &format!("SELECT table_name, lsn FROM {markers} WHERE source = $1"),
                &[&self.identity],
            )
            .await
            .map_err(|e| transient("read markers", &e))?;
        self.markers = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        self.mirrors.clear();
        self.client = Some(client);
        Ok(())
    }

    /// The last LSN applied to `table` from this source (seed 004's `get_marker`), as
    /// committed; connects if needed.
    pub async fn marker(&mut self, table: &str) -> Result<Option<i64>, ComponentError> {
        self.connect().await?;
        Ok(self.markers.get(table).copied())
    }

    /// Applies `changes` in one transaction with their markers.
    async fn apply(&mut self, changes: &[Arc<Change>]) -> Result<(), Failed> {
        let rolled_back = |error: ComponentError, data: bool| Failed {
            handled: 0,
            error,
            data,
        };
        self.connect().await.map_err(|e| rolled_back(e, false))?;
        let client = self.client.take().expect("connected");
        let result = self.apply_on(&client, changes).await;
        self.client = Some(client);
        match result {
            Ok(done) => {
                self.mirrors.extend(done.mirrors);
                self.markers.extend(done.markers);
                self.stats
                    .applied
                    .fetch_add(done.applied as u64, Ordering::Relaxed);
                self.stats
                    .already_applied
                    .fetch_add((done.covered - done.applied) as u64, Ordering::Relaxed);
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                match done.refused {
                    None => Ok(()),
                    Some(error) => Err(Failed {
                        handled: done.covered,
                        error,
                        data: false,
                    }),
                }
            }
            Err((error, data)) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %self.config.name, error = %error, "postgres delivery rolled back");
                self.reset();
                Err(rolled_back(error, data))
            }
        }
    }

    /// The transaction of [`PostgresSink::apply`]; on error, whether the server refused
    /// the data (see [`is_data_error`]).
    async fn apply_on(
        &self,
        client: &Client,
        changes: &[Arc<Change>],
    ) -> Result<Committed, (ComponentError, bool)> {
        let pg = |what: &str, e: tokio_postgres::Error| (transient(what, &e), is_data_error(&e));
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| pg("begin", e))?;
        let mut mirrors: HashMap<String, Mirror> = HashMap::new();
        let mut markers: BTreeMap<String, i64> = BTreeMap::new();
        let mut run: Option<Run> = None;
        let mut applied = 0;
        let mut refused = None;
        let mut covered = changes.len();
        for (i, change) in changes.iter().enumerate() {
            let table = &*change.table;
            let marker = markers
                .get(table)
                .or_else(|| self.markers.get(table))
                .copied();
            // Rows of a snapshot all carry its LSN: one must never hide the next, so they
            // are skipped only below the marker (a later change of the table was applied,
            // which follows them all: re-applying one would put back an older row); at the
            // marker they are applied again, an idempotent upsert of the row as of it.
            let applied_past = |m: i64| match change.snapshot {
                Some(_) => change.lsn < m,
                None => change.lsn <= m,
            };
            if marker.is_some_and(applied_past) {
                continue;
            }
            let Some(row) = change.row() else {
                refused = Some(ComponentError::permanent(format!(
                    "lsn {} of {table}: a change without an image",
                    change.lsn
                )));
                covered = i;
                break;
            };
            let schema = row.schema().clone();
            if schema.primary_key.is_empty() {
                refused = Some(ComponentError::permanent(no_key(table)));
                covered = i;
                break;
            }
            let known = mirrors
                .get(table)
                .or_else(|| self.mirrors.get(table))
                .filter(|m| m.schema_id == schema.id)
                .cloned();
            let mirror = match known {
                Some(m) => m,
                None => {
                    self.flush(client, &mut run)
                        .await
                        .map_err(|e| pg("write", e))?;
                    match self.align(client, &schema).await {
                        Ok(m) => {
                            mirrors.insert(table.to_string(), m.clone());
                            m
                        }
                        Err(Align::Refused(error)) => {
                            refused = Some(error);
                            covered = i;
                            break;
                        }
                        Err(Align::Failed(error)) => return Err((error, false)),
                    }
                }
            };
            match self.stage(&mut run, change, &schema, &mirror, client).await {
                Ok(()) => {}
                Err(Stage::Refused(reason)) => {
                    refused = Some(ComponentError::permanent(format!(
                        "lsn {} of {table}: {reason}",
                        change.lsn
                    )));
                    covered = i;
                    break;
                }
                Err(Stage::Failed(e)) => return Err(pg("write", e)),
            }
            let lsn = marker.map_or(change.lsn, |m| m.max(change.lsn));
            markers.insert(table.to_string(), lsn);
            applied += 1;
        }
        self.flush(client, &mut run)
            .await
            .map_err(|e| pg("write", e))?;
        if !markers.is_empty() {
            let (sql, params) = self.marker_statement(&markers);
            let refs: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .map(|(p, t)| (p as &(dyn ToSql + Sync), t.clone()))
                .collect();
            client
                .execute_typed(&sql, &refs)
                .await
                .map_err(|e| pg("write markers", e))?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg("commit", e))?;
        Ok(Committed {
            covered,
            mirrors,
            markers,
            applied,
            refused,
        })
    }

    /// Queues `change` into the current run, flushing it first when the change belongs to
    /// another table or kind.
    async fn stage(
        &self,
        run: &mut Option<Run>,
        change: &Change,
        schema: &TableSchema,
        mirror: &Mirror,
        client: &Client,
    ) -> Result<(), Stage> {
        let key_positions: Vec<usize> = schema
            .primary_key
            .iter()
            .filter_map(|k| schema.position(k))
            .collect();
        let convert = |values: &[Value], positions: &[usize]| -> Result<Vec<Param>, String> {
            positions
                .iter()
                .map(|&i| {
                    mirror.types[i]
                        .param(&values[i])
                        .map_err(|e| format!("column {}: {e}", schema.columns[i]))
                })
                .collect()
        };
        let all: Vec<usize> = (0..schema.columns.len()).collect();
        let mut steps: Vec<(bool, Vec<Param>)> = Vec::new();
        match change.op {
            // A snapshot row (READ) is the row as it stands: an upsert, like an insert.
            Operation::Insert | Operation::Update | Operation::Read => {
                let after = change.after.as_ref().ok_or_else(|| {
                    Stage::Refused("an insert or update without its new row".into())
                })?;
                if let Some(before) = &change.before {
                    let moved = key_positions
                        .iter()
                        .any(|&i| !before.values()[i].same_as(&after.values()[i]));
                    if moved {
                        steps.push((
                            true,
                            convert(before.values(), &key_positions).map_err(Stage::Refused)?,
                        ));
                    }
                }
                steps.push((
                    false,
                    convert(after.values(), &all).map_err(Stage::Refused)?,
                ));
            }
            Operation::Delete => {
                let before = change
                    .before
                    .as_ref()
                    .ok_or_else(|| Stage::Refused("a delete without its old row".into()))?;
                steps.push((
                    true,
                    convert(before.values(), &key_positions).map_err(Stage::Refused)?,
                ));
            }
        }
        for (delete, params) in steps {
            let same = run.as_ref().is_some_and(|r| {
                r.table == *change.table
                    && r.delete == delete
                    && r.columns.len()
                        == if delete {
                            key_positions.len()
                        } else {
                            all.len()
                        }
            });
            if !same {
                self.flush(client, run).await.map_err(Stage::Failed)?;
                let positions = if delete { &key_positions } else { &all };
                *run = Some(Run {
                    table: change.table.to_string(),
                    delete,
                    columns: positions
                        .iter()
                        .map(|&i| schema.columns[i].clone())
                        .collect(),
                    types: positions.iter().map(|&i| mirror.types[i]).collect(),
                    key: schema.primary_key.clone(),
                    rows: Vec::new(),
                    by_key: HashMap::new(),
                });
            }
            let r = run.as_mut().expect("a run was just started");
            let key_of = |params: &[Param]| -> String {
                if delete {
                    format!("{params:?}")
                } else {
                    let keys: Vec<&Param> = key_positions.iter().map(|&i| &params[i]).collect();
                    format!("{keys:?}")
                }
            };
            let key = key_of(&params);
            match r.by_key.get(&key) {
                // A key deleted twice is deleted once; a key's later image wins.
                Some(&at) => r.rows[at] = params,
                None => {
                    r.by_key.insert(key, r.rows.len());
                    r.rows.push(params);
                }
            }
        }
        Ok(())
    }

    /// Sends the pending run as multi-row statements (at most 65,535 parameters each,
    /// PostgreSQL's limit).
    async fn flush(
        &self,
        client: &Client,
        run: &mut Option<Run>,
    ) -> Result<(), tokio_postgres::Error> {
        let Some(run) = run.take() else {
            return Ok(());
        };
        let per_statement = (u16::MAX as usize / run.columns.len().max(1)).max(1);
        for rows in run.rows.chunks(per_statement) {
            let sql = if run.delete {
                delete_sql(
                    &self.qualified(&run.table),
                    &run.columns,
                    &run.types,
                    rows.len(),
                )
            } else {
                upsert_sql(
                    &self.qualified(&run.table),
                    &run.columns,
                    &run.types,
                    &run.key,
                    rows.len(),
                )
            };
            let params: Vec<(&(dyn ToSql + Sync), Type)> = rows
                .iter()
                .flat_map(|row| {
                    row.iter()
                        .zip(&run.types)
                        .map(|(p, t)| (p as &(dyn ToSql + Sync), t.param_type()))
                })
                .collect();
            client.execute_typed(&sql, &params).await?;
            self.stats.statements.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn marker_statement(&self, markers: &BTreeMap<String, i64>) -> (String, Vec<(Param, Type)>) {
        let mut values = Vec::new();
        let mut params = Vec::new();
        for (table, lsn) in markers {
            let n = params.len();
            values.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            params.push((Param::Text(self.identity.clone()), Type::TEXT));
            params.push((Param::Text(table.clone()), Type::TEXT));
            params.push((Param::Int(*lsn), Type::INT8));
        }
        let sql = format!(
            "INSERT INTO {} (source, table_name, lsn) VALUES {} \
             ON CONFLICT (source, table_name) DO UPDATE SET lsn = EXCLUDED.lsn, applied_at = now()",
            self.qualified(MARKER_TABLE),
            values.join(", ")
        );
        (sql, params)
    }

    /// Makes the mirror of `schema.table` match `schema` inside the open transaction:
    /// creates it, or adds, drops and renames columns (see the module docs).
    async fn align(&self, client: &Client, schema: &TableSchema) -> Result<Mirror, Align> {
        let table = &schema.table;
        let qualified = self.qualified(table);
        let failed = |what: &str, e: tokio_postgres::Error| Align::Failed(transient(what, &e));
        let existing: Vec<(String, String)> = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&self.config.schema, table],
            )
            .await
            .map_err(|e| failed("read columns", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let declared = self.declared_types(table).await?;
        let type_of = |column: &str| {
            self.column_types
                .get(&(table.to_string(), column.to_string()))
                .or_else(|| declared.get(column))
                .copied()
                // A column SQLite no longer has (dropped or renamed since): no declared
                // type, so BLOB affinity, as SQLite itself would give it.
                .unwrap_or(PgType::Bytea)
        };
        let mut ddl = Vec::new();
        // New name -> the mirror's current name, for columns renamed here.
        let mut renamed: HashMap<String, String> = HashMap::new();
        if existing.is_empty() {
            let columns: Vec<String> = schema
                .columns
                .iter()
                .map(|c| format!("{} {}", ident(c), type_of(c).sql()))
                .collect();
            let key: Vec<String> = schema.primary_key.iter().map(|k| ident(k)).collect();
            ddl.push(format!(
                "CREATE TABLE {qualified} ({}, PRIMARY KEY ({}))",
                columns.join(", "),
                key.join(", ")
            ));
        } else {
            let old: Vec<&str> = existing.iter().map(|(c, _)| c.as_str()).collect();
            let new: Vec<&str> = schema.columns.iter().map(String::as_str).collect();
            let differing: Vec<usize> = (0..old.len().min(new.len()))
                .filter(|&i| old[i] != new[i])
                .collect();
            let renames = old.len() == new.len()
                && differing
                    .iter()
                    .all(|&i| !new.contains(&old[i]) && !old.contains(&new[i]));
            if renames {
                for &i in &differing {
                    ddl.push(format!(
                        "ALTER TABLE {qualified} RENAME COLUMN {} TO {}",
                        ident(old[i]),
                        ident(new[i])
                    ));
                    renamed.insert(new[i].to_string(), old[i].to_string());
                }
            } else {
                for c in old.iter().filter(|c| !new.contains(c)) {
                    ddl.push(format!("ALTER TABLE {qualified} DROP COLUMN {}", ident(c)));
                }
                for c in new.iter().filter(|c| !old.contains(c)) {
                    ddl.push(format!(
                        "ALTER TABLE {qualified} ADD COLUMN {} {}",
                        ident(c),
                        type_of(c).sql()
                    ));
                }
            }
            // The key, read before the renames, under the names it will have after them.
            let mut have: Vec<String> = self
                .primary_key(client, table)
                .await?
                .into_iter()
                .map(|k| {
                    renamed
                        .iter()
                        .find(|(_, old)| **old == k)
                        .map(|(new, _)| new.clone())
                        .unwrap_or(k)
                })
                .collect();
            let mut want = schema.primary_key.clone();
            have.sort();
            want.sort();
            if have != want {
                return Err(Align::Refused(ComponentError::permanent(format!(
                    "table {table}: the PostgreSQL table {qualified} has primary key ({}) but \
                     SQLite's is ({}); a mirror cannot change its key",
                    have.join(", "),
                    want.join(", ")
                ))));
            }
        }
        for statement in &ddl {
            tracing::info!(sink = %self.config.name, %statement, "postgres schema change");
            client
                .batch_execute(statement)
                .await
                .map_err(|e| failed("schema change", e))?;
        }
        let existing: HashMap<&str, &str> = existing
            .iter()
            .map(|(c, t)| (c.as_str(), t.as_str()))
            .collect();
        let mut types = Vec::with_capacity(schema.columns.len());
        for column in &schema.columns {
            let was = renamed.get(column).unwrap_or(column);
            let pg_type = match existing.get(was.as_str()) {
                // A column the mirror had keeps its type.
                Some(t) => PgType::from_sql(t).ok_or_else(|| {
                    Align::Refused(ComponentError::permanent(format!(
                        "table {table}: column {was} of {qualified} is {t}, not one of the \
                         types the sink maps to (bigint, double precision, text, bytea, numeric)"
                    )))
                })?,
                None => type_of(column),
            };
            types.push(pg_type);
        }
        Ok(Mirror {
            schema_id: schema.id,
            types,
        })
    }

    async fn primary_key(&self, client: &Client, table: &str) -> Result<Vec<String>, Align> {
        let rows = client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
                &[&self.qualified(table)],
            )
            .await
            .map_err(|e| Align::Failed(transient("read primary key", &e)))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Declared types of `table`'s columns in the SQLite database, mapped.
    async fn declared_types(&self, table: &str) -> Result<HashMap<String, PgType>, Align> {
        let database = self.database.clone();
        let table = table.to_string();
        let read = tokio::task::spawn_blocking(move || {
            let conn = astha_core::db::open_read_only(&database)?;
            astha_core::schema::declared_types(&conn, &table)
        })
        .await
        .map_err(|e| Align::Failed(ComponentError::transient(format!("read sqlite types: {e}"))))?
        .map_err(|e| Align::Failed(ComponentError::transient(format!("read sqlite types: {e}"))))?;
        Ok(read
            .into_iter()
            .map(|(c, t)| (c, PgType::for_declared(&t)))
            .collect())
    }
}

enum Stage {
    Refused(String),
    Failed(tokio_postgres::Error),
}

enum Align {
    Refused(ComponentError),
    Failed(ComponentError),
}

fn upsert_sql(
    table: &str,
    columns: &[String],
    types: &[PgType],
    key: &[String],
    rows: usize,
) -> String {
    let names: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let values = values_sql(types, rows);
    let keys: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", ident(c)))
        .collect();
    let action = if set.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", set.join(", "))
    };
    format!(
        "INSERT INTO {table} ({}) VALUES {values} ON CONFLICT ({}) DO {action}",
        names.join(", "),
        keys.join(", ")
    )
}

fn delete_sql(table: &str, key: &[String], types: &[PgType], rows: usize) -> String {
    let names: Vec<String> = key.iter().map(|c| ident(c)).collect();
    format!(
        "DELETE FROM {table} WHERE ({}) IN ({})",
        names.join(", "),
        values_sql(types, rows)
    )
}

/// `($1, $2), ($3, $4), ...` for `rows` rows of `types`.
fn values_sql(types: &[PgType], rows: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for (i, t) in types.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            n += 1;
            out.push_str(&t.placeholder(n));
        }
        out.push(')');
    }
    out
}

fn transient(what: &str, err: &tokio_postgres::Error) -> ComponentError {
    // The server's own message says most (`err`'s Display is only "db error").
    let detail = match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    };
    ComponentError::transient(format!("postgres {what}: {detail}"))
}

/// The text of `err` without its kind.
fn message(err: &ComponentError) -> &str {
    match err {
        ComponentError::Transient(m) | ComponentError::Permanent(m) => m,
    }
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation): the
/// server refused the rows, not the connection.
fn is_data_error(err: &tokio_postgres::Error) -> bool {
    err.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

#[async_trait]
impl Component for PostgresSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.config.tables.clone()
    }

    fn max_batch(&self) -> usize {
        self.config.batch_size
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.on_batch(&[Arc::new(change.clone())])
            .await
            .map_err(|e| e.error)
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        match self.apply(changes).await {
            Ok(()) => Ok(()),
            Err(Failed { data: true, .. }) if changes.len() > 1 => {
                // Which change did the server refuse? One transaction each finds it; the
                // ones before it are committed, as they would have been alone.
                for (handled, change) in changes.iter().enumerate() {
                    if let Err(failed) = self.apply(std::slice::from_ref(change)).await {
                        let error = if failed.data {
                            ComponentError::permanent(format!(
                                "lsn {}: the server refused the row: {}",
                                change.lsn,
                                message(&failed.error)
                            ))
                        } else {
                            failed.error
                        };
                        return Err(BatchError {
                            handled: handled + failed.handled,
                            error,
                        });
                    }
                }
                Ok(())
            }
            Err(failed) => {
                let error = if failed.data {
                    ComponentError::permanent(format!(
                        "lsn {}: the server refused the row: {}",
                        changes[0].lsn,
                        message(&failed.error)
                    ))
                } else {
                    failed.error
                };
                Err(BatchError {
                    handled: failed.handled,
                    error,
                })
            }
        }
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        self.connect().await?;
        let client = self.client.as_ref().expect("connected");
        if let Err(e) = client.batch_execute("SELECT 1").await {
            let error = transient("health check", &e);
            self.reset();
            return Err(error);
        }
        Ok(())
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        // A fresh connection: a refresh follows a timeout or a long unhealthy spell.
        self.reset();
        self.connect().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_names_wrong_fields() {
        let c: PostgresSinkConfig = serde_json::from_str(
            r#"{"url": "postgresql://u@127.0.0.1:5432/db", "tables": ["t"], "schema": "s"}"#,
        )
        .unwrap();
        assert_eq!(c.batch_size, 1000);
        assert!(c.validate().is_ok());
        assert!(
            serde_json::from_str::<PostgresSinkConfig>(r#"{"url": "x", "batchsize": 1}"#)
                .unwrap_err()
                .to_string()
                .contains("batchsize")
        );
        let mut bad = c.clone();
        bad.url = "postgresql://h:notaport/db".into();
        assert!(bad.validate().unwrap_err().contains("url"), "{bad:?}");
        let mut bad = c.clone();
        bad.tables = vec![MARKER_TABLE.into()];
        assert!(bad.validate().unwrap_err().contains("collide"));
        let mut bad = c.clone();
        bad.batch_size = 0;
        assert!(bad.validate().unwrap_err().contains("batch_size"));
        let mut typed = c;
        typed.column_types.insert("t.created".into(), "text".into());
        assert_eq!(
            typed.parsed_column_types().unwrap()[&("t".into(), "created".into())],
            PgType::Text
        );
        typed.column_types.insert("t.x".into(), "int".into());
        assert!(typed.validate().unwrap_err().contains("use one of"));
        typed.column_types.clear();
        typed.column_types.insert("nodot".into(), "text".into());
        assert!(typed.validate().unwrap_err().contains("table.column"));
    }

    #[test]
    fn statements_name_every_column_and_cast_numeric() {
        let cols = vec!["id".to_string(), "n".to_string()];
        let types = [PgType::Bigint, PgType::Numeric];
        assert_eq!(
            upsert_sql("\"s\".\"t\"", &cols, &types, &cols[..1], 2),
            "INSERT INTO \"s\".\"t\" (\"id\", \"n\") VALUES ($1, $2::numeric), ($3, $4::numeric) \
             ON CONFLICT (\"id\") DO UPDATE SET \"n\" = EXCLUDED.\"n\""
        );
        assert!(upsert_sql("t", &cols[..1], &types[..1], &cols[..1], 1).ends_with("DO NOTHING"));
        assert_eq!(
            delete_sql("t", &cols[..1], &types[..1], 2),
            "DELETE FROM t WHERE (\"id\") IN (($1), ($2))"
        );
    }

    #[test]
    fn tables_without_a_key_are_refused_at_validate() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE keyed (id INTEGER PRIMARY KEY); CREATE TABLE loose (a, b);",
            )
            .unwrap();
        let config = PostgresSinkConfig::new("postgresql://u@h/db", "", &[]);
        let ctx = SinkContext::new("pg", &db, "id", &["keyed"]);
        assert!(SinkConfig::validate(&config, &ctx).is_ok());
        let ctx = SinkContext::new("pg", &db, "id", &["keyed", "loose"]);
        let err = SinkConfig::validate(&config, &ctx).unwrap_err();
        assert!(err.contains("table loose has no primary key"), "{err}");
    }
}
