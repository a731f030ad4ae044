//! From a [`PipelineSpec`] to a checked [`Plan`]: sources resolved to their tables, the
//! cascade resolved per table, every sink parsed and validated for every source it takes.
//!
//! This is all of `astha run --check`: it opens each database read-only (it never creates
//! a file, installs a trigger or writes a row), so a check can run against production
//! databases. What a check passes, a start builds the same way; what can still fail at
//! start is what only running shows (a database locked, a server down: the sinks connect
//! lazily and retry).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use astha_components::sinks::{identity, ParsedSink, SinkContext, SinkRegistry};
use astha_core::capture::Capture;
use astha_core::config::AsthaConfig;
use astha_core::format::EventFormat;
use astha_core::schema;
use astha_core::snapshot::SnapshotMode;
use rusqlite::{Connection, OpenFlags};

use crate::error::PipelineError;
use crate::filter::RowFilter;
use crate::select::{self, Patterns};
use crate::shape::{ColumnSelection, TableShape};
use crate::spec::{PipelineSpec, Settings, SinkSpec, SourceSpec};

/// A checked pipeline, ready to start.
#[derive(Debug)]
pub struct Plan {
    pub sources: Vec<SourcePlan>,
}

/// One source database and what flows out of it.
#[derive(Debug)]
pub struct SourcePlan {
    pub name: String,
    pub database: PathBuf,
    /// Selected tables, in name order.
    pub tables: Vec<String>,
    /// Tables whose capture triggers must be created at start.
    pub install: Vec<String>,
    /// The poller's batch size, when the cascade sets one.
    pub batch_size: Option<usize>,
    /// The log's retention (`keep_for`, `keep_rows`), where the cascade sets them.
    pub keep_for: Option<std::time::Duration>,
    pub keep_rows: Option<u64>,
    /// The database's identity if it has one yet (it gets one at first start).
    pub identity: Option<String>,
    /// Selected tables without a primary key (consumers cannot tell identical rows apart).
    pub without_key: Vec<String>,
    pub sinks: Vec<SinkPlan>,
}

/// One sink on one source.
#[derive(Debug)]
pub struct SinkPlan {
    pub context: SinkContext,
    pub sink: Arc<ParsedSink>,
    /// Shaping per table (tables absent here pass unchanged).
    pub shapes: BTreeMap<String, ShapeSpec>,
    /// When the sink first receives a snapshot of its tables.
    pub snapshot: SnapshotMode,
    /// Where its slot starts when it is created (`start_at`).
    pub start_at: Option<astha_core::retention::StartAt>,
    /// The window transform in front of the sink, if any ([`crate::window`]).
    pub window: Option<crate::window::WindowConfig>,
}

/// The resolved shaping of one table: kept columns and the filter's text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShapeSpec {
    pub columns: ColumnSelection,
    pub filter: Option<String>,
    /// The table's live columns when checked (the filter is compiled against them).
    pub live_columns: Vec<String>,
}

impl ShapeSpec {
    /// Compiles the shaping for a running sink.
    pub fn compile(&self) -> Result<TableShape, String> {
        Ok(TableShape {
            columns: self.columns.clone(),
            filter: self
                .filter
                .as_deref()
                .map(|f| RowFilter::new(f, &self.live_columns))
                .transpose()?,
        })
    }
}

/// Checks `spec` against the databases and the sink types of `registry`.
/// `engine` is the engine configuration the sources will run with (its log table name).
pub fn plan(
    spec: &PipelineSpec,
    registry: &SinkRegistry,
    engine: &AsthaConfig,
) -> Result<Plan, PipelineError> {
    if let Some(name) = engine.subscriptions.keys().next() {
        return Err(PipelineError::Invalid(format!(
            "the engine configuration sets subscriptions.{name}, which `astha run` cannot apply: \
             a sink's tables come from its `tables` in the pipeline file; remove the entry"
        )));
    }
    if spec.sources.is_empty() {
        return Err(PipelineError::Invalid(
            "the pipeline has no [[sources]]; add one with `database = \"app.db\"`".into(),
        ));
    }
    if spec.sinks.is_empty() {
        return Err(PipelineError::Invalid(
            "the pipeline has no [[sinks]]; add one, e.g. `type = \"stdout\"` (astha run --list-sinks)".into(),
        ));
    }
    let mut sources = Vec::new();
    let mut names = HashSet::new();
    let mut databases = HashSet::new();
    for source in &spec.sources {
        let planned = plan_source(spec, source, &engine.log_table)?;
        if !names.insert(planned.name.clone()) {
            return Err(PipelineError::Invalid(format!(
                "two sources are named {:?}; give one a different `name`",
                planned.name
            )));
        }
        let canonical = planned
            .database
            .canonicalize()
            .unwrap_or_else(|_| planned.database.clone());
        if !databases.insert(canonical) {
            return Err(PipelineError::Invalid(format!(
                "database {} is named by two sources; one source per database",
                planned.database.display()
            )));
        }
        sources.push(planned);
    }
    let mut sink_names = HashSet::new();
    for sink in &spec.sinks {
        if !sink_names.insert(sink.name.as_str()) {
            return Err(PipelineError::Invalid(format!(
                "two sinks are named {:?}; a sink's name is its durable slot, so it must be unique",
                sink.name
            )));
        }
        plan_sink(spec, sink, registry, &mut sources)?;
    }
    Ok(Plan { sources })
}

fn source_name(source: &SourceSpec) -> String {
    source.name.clone().unwrap_or_else(|| {
        source
            .database
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "db".into())
    })
}

fn plan_source(
    spec: &PipelineSpec,
    source: &SourceSpec,
    log_table: &str,
) -> Result<SourcePlan, PipelineError> {
    let name = source_name(source);
    let fail = |reason: String| PipelineError::Source {
        source_name: name.clone(),
        database: source.database.clone(),
        reason,
    };
    let conn = open_read_only(&source.database).map_err(&fail)?;
    let capture = Capture::new(log_table);
    let available = user_tables(&conn, log_table).map_err(|e| fail(e.to_string()))?;
    for pattern in &source.tables {
        if select::is_literal(pattern) && !available.contains(pattern) {
            return Err(fail(
                schema::not_capturable_reason(&conn, pattern).map_err(|e| fail(e.to_string()))?,
            ));
        }
    }
    let tables =
        select::select(&available, &source.tables, &source.exclude_tables).map_err(&fail)?;
    if tables.is_empty() {
        return Err(fail(
            "no table is selected; check `tables` and `exclude_tables`".into(),
        ));
    }
    for (table, settings) in &source.table {
        if !tables.contains(table) {
            return Err(fail(format!(
                "[sources.table.{table}] names a table this source does not select"
            )));
        }
        for (key, set) in [
            ("snapshot", settings.snapshot.is_some()),
            ("format", settings.format.is_some()),
            ("debezium_schemas", settings.debezium_schemas.is_some()),
            ("transaction_events", settings.transaction_events.is_some()),
        ] {
            if set {
                return Err(fail(format!(
                    "[sources.table.{table}] sets `{key}`, which is a sink's: set it on the sink, the source or [defaults]"
                )));
            }
        }
    }
    let install = cascade(spec, source, None, |s| s.install).unwrap_or(false);
    let captured = capture
        .captured_tables(&conn)
        .map_err(|e| fail(e.to_string()))?;
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !captured.contains(t))
        .cloned()
        .collect();
    if !install && !missing.is_empty() {
        return Err(fail(format!(
            "table(s) {} have no capture triggers; set `install = true` on the source (or in [defaults]) to create them",
            missing.join(", ")
        )));
    }
    let batch_size = cascade(spec, source, None, |s| s.batch_size);
    if batch_size == Some(0) {
        return Err(fail("batch_size must be > 0".into()));
    }
    for (table, settings) in &source.table {
        if settings.keep_for.is_some() || settings.keep_rows.is_some() {
            return Err(fail(format!(
                "[sources.table.{table}] sets `keep_for` or `keep_rows`, which is the source's \
                 log's retention: set it on the source or in [defaults]"
            )));
        }
    }
    let keep_for = cascade(spec, source, None, |s| s.keep_for.clone())
        .map(|text| astha_core::config::parse_duration(&text))
        .transpose()
        .map_err(|e| fail(format!("keep_for: invalid duration: {e}")))?;
    let keep_rows = cascade(spec, source, None, |s| s.keep_rows);
    let identity = identity::read(&conn).ok().flatten();
    let mut without_key = Vec::new();
    for table in &tables {
        let (_, key) = schema::live_columns(&conn, table).map_err(|e| fail(e.to_string()))?;
        if key.is_empty() {
            without_key.push(table.clone());
        }
    }
    Ok(SourcePlan {
        name: name.clone(),
        database: source.database.clone(),
        tables,
        install: if install { missing } else { Vec::new() },
        batch_size,
        keep_for,
        keep_rows,
        identity,
        without_key,
        sinks: Vec::new(),
    })
}

/// The nearest level of the cascade (table, then source, then defaults) that sets `get`.
fn cascade<T>(
    spec: &PipelineSpec,
    source: &SourceSpec,
    table: Option<&str>,
    get: impl Fn(&Settings) -> Option<T>,
) -> Option<T> {
    table
        .and_then(|t| source.table.get(t))
        .and_then(&get)
        .or_else(|| get(&source.settings))
        .or_else(|| get(&spec.defaults))
}

fn plan_sink(
    spec: &PipelineSpec,
    sink: &SinkSpec,
    registry: &SinkRegistry,
    sources: &mut [SourcePlan],
) -> Result<(), PipelineError> {
    let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    for name in &sink.sources {
        if !known.contains(&name.as_str()) {
            return Err(PipelineError::Invalid(format!(
                "sink {:?} takes source {name:?}, which is not defined; the sources are: {}",
                sink.name,
                known.join(", ")
            )));
        }
    }
    let settings = serde_json::to_value(&sink.settings)
        .map_err(|e| PipelineError::Invalid(format!("sink {:?}: {e}", sink.name)))?;
    let parsed = Arc::new(registry.parse(&sink.name, &sink.kind, settings)?);
    let patterns = Patterns::new(&sink.tables)
        .map_err(|e| PipelineError::Invalid(format!("sink {:?}: {e}", sink.name)))?;
    let mut matched_anywhere: Vec<String> = Vec::new();
    for (index, source) in sources.iter_mut().enumerate() {
        if !sink.sources.is_empty() && !sink.sources.contains(&source.name) {
            continue;
        }
        let tables: Vec<String> = source
            .tables
            .iter()
            .filter(|t| patterns.is_empty() || patterns.matches(t))
            .cloned()
            .collect();
        matched_anywhere.extend(tables.iter().cloned());
        if tables.is_empty() {
            continue;
        }
        let source_spec = &spec.sources[index];
        let format = sink
            .format
            .clone()
            .or_else(|| cascade(spec, source_spec, None, |s| s.format.clone()))
            .unwrap_or_else(|| parsed.default_format().into());
        if let Err(reason) = format.parse::<EventFormat>() {
            return Err(PipelineError::Invalid(format!(
                "sink {:?}: {reason}",
                sink.name
            )));
        }
        let snapshot = sink
            .snapshot
            .clone()
            .or_else(|| cascade(spec, source_spec, None, |s| s.snapshot.clone()))
            .map_or(Ok(SnapshotMode::Never), |m| m.parse::<SnapshotMode>())
            .map_err(|reason| PipelineError::Invalid(format!("sink {:?}: {reason}", sink.name)))?;
        let start_at = sink
            .start_at
            .as_deref()
            .map(str::parse::<astha_core::retention::StartAt>)
            .transpose()
            .map_err(|reason| PipelineError::Invalid(format!("sink {:?}: {reason}", sink.name)))?;
        if start_at.is_some() && snapshot != SnapshotMode::Never {
            return Err(PipelineError::Invalid(format!(
                "sink {:?}: `start_at` with `snapshot = \"{snapshot}\"`: a snapshot starts \
                 at the head; choose one",
                sink.name
            )));
        }
        let context = SinkContext {
            name: sink.name.clone(),
            source: source.name.clone(),
            database: source.database.clone(),
            identity: source
                .identity
                .clone()
                .unwrap_or_else(|| "(assigned at first start)".into()),
            tables: tables.clone(),
            format,
            debezium_schemas: sink
                .debezium_schemas
                .or_else(|| cascade(spec, source_spec, None, |s| s.debezium_schemas))
                .unwrap_or(false),
            transaction_events: sink
                .transaction_events
                .or_else(|| cascade(spec, source_spec, None, |s| s.transaction_events))
                .unwrap_or(false),
        };
        parsed.validate(&context)?;
        let shapes = resolve_shapes(spec, source_spec, source, &tables)?;
        if context.transaction_events {
            // The END marker counts the transaction's changes of each table from the
            // log; a row filter would drop some of them after the count.
            if let Some(table) = shapes
                .iter()
                .find(|(_, s)| s.filter.is_some())
                .map(|(t, _)| t)
            {
                return Err(PipelineError::Invalid(format!(
                    "sink {:?}: `transaction_events` with a `filter` on table {table:?}: the \
                     markers' counts would include the changes the filter drops; remove one",
                    sink.name
                )));
            }
        }
        if let Some(window) = &sink.window {
            check_window(&sink.name, window, &context, snapshot)?;
        }
        source.sinks.push(SinkPlan {
            context,
            sink: parsed.clone(),
            shapes,
            snapshot,
            start_at,
            window: sink.window.clone(),
        });
    }
    if let Some(p) = patterns.unmatched(&matched_anywhere) {
        return Err(PipelineError::Invalid(format!(
            "sink {:?}: table pattern {p:?} matches no table of its sources",
            sink.name
        )));
    }
    if matched_anywhere.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "sink {:?} takes no table from any source",
            sink.name
        )));
    }
    Ok(())
}

/// What a windowed sink cannot combine with: its changes become window results.
fn check_window(
    sink: &str,
    window: &crate::window::WindowConfig,
    context: &SinkContext,
    snapshot: SnapshotMode,
) -> Result<(), PipelineError> {
    let fail = |reason: String| PipelineError::Invalid(format!("sink {sink:?}: {reason}"));
    window.validate().map_err(fail)?;
    crate::window::key::KeyExpr::new(window.key.as_deref()).map_err(fail)?;
    if snapshot != SnapshotMode::Never {
        return Err(fail(
            "a window takes captured changes only (snapshot rows share one LSN and carry no commit time); remove `snapshot`".into(),
        ));
    }
    if context.transaction_events {
        return Err(fail(
            "`transaction_events` with a `window`: the sink receives window results, not the transaction's changes; remove one".into(),
        ));
    }
    Ok(())
}

fn resolve_shapes(
    spec: &PipelineSpec,
    source_spec: &SourceSpec,
    source: &SourcePlan,
    tables: &[String],
) -> Result<BTreeMap<String, ShapeSpec>, PipelineError> {
    let fail = |reason: String| PipelineError::Source {
        source_name: source.name.clone(),
        database: source.database.clone(),
        reason,
    };
    let conn = open_read_only(&source.database).map_err(&fail)?;
    let mut shapes = BTreeMap::new();
    for table in tables {
        let include = cascade(spec, source_spec, Some(table), |s| {
            s.include_columns.clone()
        });
        let exclude = cascade(spec, source_spec, Some(table), |s| {
            s.exclude_columns.clone()
        });
        let filter = cascade(spec, source_spec, Some(table), |s| s.filter.clone());
        if include.is_none() && exclude.is_none() && filter.is_none() {
            continue;
        }
        let (live, key) = schema::live_columns(&conn, table).map_err(|e| fail(e.to_string()))?;
        // Names set on the table itself must exist; inherited ones apply where they do.
        let own = source_spec.table.get(table);
        for (level, list) in [
            (
                "include_columns",
                own.and_then(|s| s.include_columns.as_ref()),
            ),
            (
                "exclude_columns",
                own.and_then(|s| s.exclude_columns.as_ref()),
            ),
        ] {
            for column in list.into_iter().flatten() {
                if !live.contains(column) {
                    return Err(fail(format!(
                        "[sources.table.{table}] {level} names {column:?}, which {table} does not have; its columns are: {}",
                        live.join(", ")
                    )));
                }
            }
        }
        let columns = ColumnSelection {
            include,
            exclude: exclude.unwrap_or_default(),
        };
        if let Some(column) = key.iter().find(|c| !columns.keeps(c)) {
            return Err(fail(format!(
                "table {table}: column {column:?} is part of the primary key and cannot be left out (changes of different rows would become indistinguishable)"
            )));
        }
        if !live.iter().any(|c| columns.keeps(c)) {
            return Err(fail(format!(
                "table {table}: the column settings leave no column"
            )));
        }
        let shape = ShapeSpec {
            columns,
            filter,
            live_columns: live,
        };
        shape
            .compile()
            .map_err(|e| fail(format!("table {table}: {e}")))?;
        shapes.insert(table.clone(), shape);
    }
    Ok(shapes)
}

fn open_read_only(path: &std::path::Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err("the database file does not exist".into());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| format!("not a readable SQLite database: {e}"))?;
    Ok(conn)
}

/// Ordinary tables that are not SQLite's or Astha's own, in name order.
fn user_tables(conn: &Connection, log_table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
           AND name NOT LIKE '\\_\\_astha\\_%' ESCAPE '\\' AND name <> ?1
           AND upper(ltrim(sql)) NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )?;
    let names = stmt
        .query_map([log_table], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// The plan as `astha run --check` prints it.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    for source in &plan.sources {
        out.push_str(&format!(
            "source {} ({}): {} table(s): {}\n",
            source.name,
            source.database.display(),
            source.tables.len(),
            source.tables.join(", ")
        ));
        for table in &source.without_key {
            out.push_str(&format!(
                "  warning: {table} has no primary key: consumers cannot tell identical rows apart (a change's key is the whole row)\n"
            ));
        }
        if !source.install.is_empty() {
            out.push_str(&format!(
                "  installs capture on: {}\n",
                source.install.join(", ")
            ));
        }
        for sink in &source.sinks {
            out.push_str(&format!(
                "  sink {} (type {}, format {}, snapshot {}): {}\n",
                sink.context.name,
                sink.sink.kind(),
                sink.context.format,
                sink.snapshot,
                sink.context.tables.join(", ")
            ));
            if let Some(w) = &sink.window {
                let aggregates: Vec<String> = w
                    .aggregates
                    .iter()
                    .map(|a| {
                        format!(
                            "{} = {:?}({})",
                            a.name,
                            a.function,
                            a.column.as_deref().unwrap_or("*")
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "    window {:?} keyed by {}: {}\n",
                    w.kind,
                    w.key.as_deref().unwrap_or("(one key)"),
                    aggregates.join(", ")
                ));
            }
            for (table, shape) in &sink.shapes {
                let mut parts = Vec::new();
                if let Some(list) = &shape.columns.include {
                    parts.push(format!("columns {}", list.join(", ")));
                }
                if !shape.columns.exclude.is_empty() {
                    parts.push(format!("without {}", shape.columns.exclude.join(", ")));
                }
                if let Some(f) = &shape.filter {
                    parts.push(format!("where {f}"));
                }
                out.push_str(&format!("    {table}: {}\n", parts.join("; ")));
            }
        }
    }
    out
}

/// Shaping compiled for one running sink.
pub fn compile_shapes(
    shapes: &BTreeMap<String, ShapeSpec>,
) -> Result<HashMap<String, TableShape>, String> {
    shapes
        .iter()
        .map(|(t, s)| Ok((t.clone(), s.compile()?)))
        .collect()
}
