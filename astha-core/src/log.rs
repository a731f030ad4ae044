//! Reading the change log: batches in id (commit) order after a position, bounded by a
//! row count and a byte budget, decoded into [`Change`]s.
//!
//! A batch is read in one read transaction, so `scanned_to` (the position a consumer may
//! advance to once it has handled the batch) is exact even while writers commit: every
//! row at or below it was either in the batch or filtered out by the table filter.
//! Rows that cannot be decoded are returned separately, never dropped; the caller moves
//! them to the dead-letter table. The same transaction gives the schema version of the
//! snapshot (whether the rows were written by current triggers) and the recorded gaps,
//! so a change another connection's schema change may have left incomplete is marked
//! ([`crate::gaps`]) on every read of it, live or catching up.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use crate::change::{julian_to_unix_ms, Change, Operation, Row};
use crate::error::Result;
use crate::gaps::Gap;
use crate::ident::quote_ident;
use crate::log_layout::{log as col, LOG_COLUMNS, WIDE_FIRST_VALUE};

/// Position of the wide table's `id`.
const WIDE_ID: usize = 0;
use crate::schema::{load_schema, TableSchema};
use crate::value::Value;

/// Limits on one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many rows.
    pub max_rows: usize,
    /// Stop adding rows once the images read reach this many bytes (at least one row is
    /// always returned, whatever its size).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_rows: 256,
            max_bytes: 4 << 20,
        }
    }
}

/// A log row as stored, before decoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawChange {
    pub lsn: i64,
    pub julian: f64,
    /// Shared by the rows of a read that name the same table or operation
    /// ([`Names`]).
    pub table: Arc<str>,
    pub op: Arc<str>,
    pub schema_id: i64,
    /// The row's value columns (`v0`, ...; see [`crate::image`]), trailing NULLs left out.
    pub values: Vec<Value>,
    /// Set when a column holds a storage class the triggers never write (a row written
    /// by hand or damaged): the row is malformed, whatever the rest says.
    pub defect: Option<String>,
}

impl RawChange {
    /// Approximate size of the row's values in bytes, for batch byte budgets.
    pub fn bytes(&self) -> usize {
        self.values
            .iter()
            .map(|v| match v {
                Value::Null => 1,
                Value::Integer(_) | Value::Real(_) => 8,
                Value::Text(t) => t.len(),
                Value::TextBytes(b) | Value::Blob(b) => b.len(),
            })
            .sum()
    }
}

/// The values of columns `start..` of `r`, trailing NULLs left out.
pub fn trimmed_values(r: &rusqlite::Row<'_>, start: usize) -> rusqlite::Result<Vec<Value>> {
    let end = r.as_ref().column_count();
    trimmed_range(r, start, end)
}

fn trimmed_range(r: &rusqlite::Row<'_>, start: usize, end: usize) -> rusqlite::Result<Vec<Value>> {
    let mut values = Vec::with_capacity(end.saturating_sub(start));
    for i in start..end {
        values.push(Value::from_ref(r.get_ref(i)?));
    }
    while values.last() == Some(&Value::Null) {
        values.pop();
    }
    Ok(values)
}

/// The values of a change kept in two places: its log row's and its wide row's. A
/// trigger writes each value in one place only, so at each index at most one of the two
/// is not NULL (a NULL in both is a NULL): taking the log's unless it is NULL is exact.
pub fn merge_values(log: Vec<Value>, wide: Vec<Value>) -> Vec<Value> {
    if log.is_empty() {
        return wide;
    }
    let (mut longer, shorter, log_first) = match log.len() >= wide.len() {
        true => (log, wide, true),
        false => (wide, log, false),
    };
    for (i, value) in shorter.into_iter().enumerate() {
        let keep_longer = match log_first {
            true => longer[i] != Value::Null,
            false => value == Value::Null,
        };
        if !keep_longer {
            longer[i] = value;
        }
    }
    longer
}

/// Reads a log row leniently: a column of an unexpected storage class makes the row
/// malformed (and so a dead letter) instead of failing the whole batch's read.
/// `values_needed` says how many value columns to read for a schema id and operation
/// code (`None`: all of them), so narrow rows in a log widened for a wide table do not
/// pay for the wide table's columns.
fn raw_from_row(
    r: &rusqlite::Row<'_>,
    names: &mut Names,
    values_needed: &mut dyn FnMut(i64, &str) -> Option<usize>,
) -> rusqlite::Result<RawChange> {
    use rusqlite::types::ValueRef;
    let mut defects = Vec::new();
    let mut text = |i: usize, name: &str| -> Option<Arc<str>> {
        match r.get_ref(i) {
            Ok(ValueRef::Text(t)) => Some(names.shared(t, i == col::TBL)),
            Ok(ValueRef::Null) => None,
            Ok(other) => {
                defects.push(format!("{name} is {:?}, not text", other.data_type()));
                None
            }
            Err(e) => {
                defects.push(format!("{name}: {e}"));
                None
            }
        }
    };
    let table = text(col::TBL, LOG_COLUMNS[col::TBL].name).unwrap_or_default();
    let op = text(col::OP, LOG_COLUMNS[col::OP].name).unwrap_or_default();
    let julian = match r.get_ref(col::TS)? {
        ValueRef::Real(f) => f,
        ValueRef::Integer(i) => i as f64,
        other => {
            defects.push(format!(
                "{} is {:?}, not a number",
                LOG_COLUMNS[col::TS].name,
                other.data_type()
            ));
            0.0
        }
    };
    let schema_id = match r.get_ref(col::SCHEMA_ID)? {
        ValueRef::Integer(i) => i,
        other => {
            defects.push(format!(
                "{} is {:?}, not an integer",
                LOG_COLUMNS[col::SCHEMA_ID].name,
                other.data_type()
            ));
            0
        }
    };
    let columns = r.as_ref().column_count();
    let end = match values_needed(schema_id, &op) {
        Some(n) if defects.is_empty() => (col::FIRST_VALUE + n).min(columns),
        _ => columns,
    };
    Ok(RawChange {
        lsn: r.get(col::ID)?,
        julian,
        table,
        op,
        schema_id,
        values: trimmed_range(r, col::FIRST_VALUE, end)?,
        defect: (!defects.is_empty()).then(|| defects.join("; ")),
    })
}

/// The table names and operation codes of the log rows read, each kept once and shared
/// by the rows that name it. A batch's rows come in runs of one table and carry a handful
/// of operation codes, so a row costs a comparison instead of two allocations: allocated
/// by the hundred per read and freed together later, those small strings were what
/// glibc's `malloc_consolidate` walked on the poll thread (a sixth of its samples at
/// flat-out rates, BENCHMARKS.md).
#[derive(Debug, Default)]
struct Names {
    last_table: Option<Arc<str>>,
    ops: Vec<Arc<str>>,
}

impl Names {
    /// Keeps at most this many distinct operation codes (a hand-edited log may hold
    /// any text there: past it, a new one takes the place of the newest).
    const MAX_OPS: usize = 16;

    /// `bytes` (a table name when `table`, else an operation code) as a shared string,
    /// decoded as UTF-8 with invalid bytes replaced (as before).
    fn shared(&mut self, bytes: &[u8], table: bool) -> Arc<str> {
        let text = String::from_utf8_lossy(bytes);
        if table {
            return match &self.last_table {
                Some(last) if **last == *text => last.clone(),
                _ => self.last_table.insert(Arc::from(text.as_ref())).clone(),
            };
        }
        if let Some(op) = self.ops.iter().find(|op| ***op == *text) {
            return op.clone();
        }
        let op: Arc<str> = Arc::from(text.as_ref());
        if self.ops.len() == Self::MAX_OPS {
            self.ops.pop(); // the newest: the ones in use came first
        }
        self.ops.push(op.clone());
        op
    }
}

/// A log row that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub raw: RawChange,
    pub reason: String,
}

/// One batch read from the log.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Decoded changes in LSN order.
    pub changes: Vec<Change>,
    /// Rows that could not be decoded.
    pub malformed: Vec<Malformed>,
    /// Every log row with an id at or below this was considered by this read.
    pub scanned_to: i64,
    /// Bytes of images read.
    pub bytes: usize,
    /// `PRAGMA schema_version` in the read's snapshot: when it is the version the
    /// triggers were last made under, every row read was written by current triggers.
    pub schema_version: i64,
}

impl Batch {
    /// True if the read found nothing new at all.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.malformed.is_empty()
    }
}

/// Reads and decodes the change log. Keeps a cache of schemas, which never change once
/// written, so decoding costs no extra query after the first row of each schema.
#[derive(Debug)]
pub struct LogReader {
    log_table: String,
    select_all: String,
    /// The log's wide table, the query that reads it after a position (an unfiltered
    /// read merges it by id) and the one that reads one row (a filtered read looks up
    /// only its own wide rows, never stepping over other tables').
    wide_table: String,
    select_wide: String,
    select_wide_one: String,
    /// Whether the wide table exists, and the `PRAGMA schema_version` that answer was
    /// read under: asked again only when the schema moves, so a log without one (made
    /// by an earlier build) pays no failed prepare and lookup per read.
    wide_exists: Option<(i64, bool)>,
    /// Whether the gaps table and the transaction-record table exist, under the
    /// `PRAGMA schema_version` that answer was read under (asked again only when the
    /// schema moves, as for `wide_exists`).
    side_tables: Option<(i64, bool, bool)>,
    schemas: Schemas,
    /// The recorded gaps that end after the last read's start ([`crate::gaps`]).
    gaps: Vec<Gap>,
    /// The tables of the marked transactions the last read touched.
    transactions: crate::transaction::Summaries,
    /// The table names and operation codes read, shared by the rows that name them: one
    /// allocation per run of a table instead of two per row, and the router's table
    /// test compares pointers for them.
    names: Names,
}

impl LogReader {
    /// A reader of the log table `log_table`.
    pub fn new(log_table: &str) -> Self {
        let log = quote_ident(log_table);
        Self {
            log_table: log_table.to_string(),
            // `*`: the value columns grow when a wider table is captured, and SQLite
            // expands `*` again when it re-prepares the statement after that change.
            select_all: format!("SELECT * FROM {log} WHERE id > ?1 ORDER BY id LIMIT ?2"),
            wide_table: crate::log_layout::wide_table(log_table),
            select_wide: format!(
                "SELECT * FROM {} WHERE id > ?1 ORDER BY id",
                quote_ident(&crate::log_layout::wide_table(log_table))
            ),
            select_wide_one: format!(
                "SELECT * FROM {} WHERE id = ?1",
                quote_ident(&crate::log_layout::wide_table(log_table))
            ),
            wide_exists: None,
            side_tables: None,
            schemas: Schemas::default(),
            gaps: Vec::new(),
            transactions: Default::default(),
            names: Names::default(),
        }
    }

    /// Reads the next batch after `after_lsn`. With `tables`, only rows of those tables
    /// are returned (the others still count as scanned).
    pub fn read(
        &mut self,
        conn: &Connection,
        after_lsn: i64,
        limits: BatchLimits,
        tables: Option<&[String]>,
    ) -> Result<Batch> {
        let read = crate::db::CachedTransaction::begin(conn)?;
        let batch = self.read_in(&read, after_lsn, limits, tables)?;
        read.commit()?;
        Ok(batch)
    }

    /// [`LogReader::read`] inside the caller's open transaction (for a caller that reads
    /// more than the log in the same snapshot, such as [`crate::state_at`]).
    pub fn read_in(
        &mut self,
        tx: &Connection,
        after_lsn: i64,
        limits: BatchLimits,
        tables: Option<&[String]>,
    ) -> Result<Batch> {
        // First, so the snapshot is the one the rows are read from.
        let schema_version = crate::schema::schema_version(tx)?;
        let (gaps_exist, records_exist) = match self.side_tables {
            Some((version, gaps, records)) if version == schema_version => (gaps, records),
            _ => {
                let gaps = crate::schema::is_plain_table(tx, crate::gaps::TABLE)?;
                let records = crate::schema::is_plain_table(tx, crate::transaction::RECORD_TABLE)?;
                self.side_tables = Some((schema_version, gaps, records));
                (gaps, records)
            }
        };
        self.gaps = match gaps_exist {
            true => crate::gaps::after_in_table(tx, after_lsn)?,
            false => Vec::new(),
        };
        let (raws, bytes) = self.read_raw(tx, after_lsn, limits, tables, schema_version)?;
        let full = raws.len() >= limits.max_rows;
        let mut batch = Batch {
            scanned_to: after_lsn,
            bytes,
            schema_version,
            ..Batch::default()
        };
        for raw in raws {
            batch.scanned_to = raw.lsn;
            if crate::log_state::is_placeholder(&self.log_table, &raw.table, &raw.op) {
                continue;
            }
            match self.decode(tx, raw) {
                Ok(change) => batch.changes.push(change),
                Err(malformed) => batch.malformed.push(*malformed),
            }
        }
        crate::transaction::annotate(
            records_exist,
            tx,
            &self.log_table,
            &mut batch.changes,
            &mut self.transactions,
        )?;
        let stopped_early = full || batch.bytes >= limits.max_bytes;
        if !stopped_early {
            // Nothing else up to the head matched the filter: the whole log was scanned.
            batch.scanned_to = batch.scanned_to.max(head_lsn(tx, &self.log_table)?);
        }
        Ok(batch)
    }

    fn read_raw(
        &mut self,
        conn: &Connection,
        after_lsn: i64,
        limits: BatchLimits,
        tables: Option<&[String]>,
        schema_version: i64,
    ) -> Result<(Vec<RawChange>, usize)> {
        let wide_exists = match self.wide_exists {
            Some((version, exists)) if version == schema_version => exists,
            _ => {
                let exists = crate::schema::is_plain_table(conn, &self.wide_table)?;
                self.wide_exists = Some((schema_version, exists));
                exists
            }
        };
        let limit = limits.max_rows as i64;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let filtered;
        let (sql, params): (&str, Vec<&dyn rusqlite::ToSql>) = match tables {
            None => (&self.select_all, vec![&after_lsn, &limit]),
            Some(tables) => {
                let placeholders = vec!["?"; tables.len()].join(",");
                filtered = format!(
                    "SELECT * FROM {} WHERE id > ? AND tbl IN ({placeholders}) \
                     ORDER BY id LIMIT ?",
                    quote_ident(&self.log_table)
                );
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&after_lsn];
                params.extend(tables.iter().map(|t| t as &dyn rusqlite::ToSql));
                params.push(&limit);
                (&filtered, params)
            }
        };
        let (schemas, names) = (&mut self.schemas, &mut self.names);
        // Whether the row `values_needed` was last asked about is a wide table's.
        let row_is_wide = std::cell::Cell::new(false);
        let mut values_needed = |schema_id: i64, op: &str| -> Option<usize> {
            row_is_wide.set(false);
            let schema = cached_schema(schemas, conn, schema_id).ok()?;
            row_is_wide.set(crate::image::is_wide(&schema));
            let n = schema.columns.len();
            match Operation::parse(op)? {
                Operation::Update => Some(crate::image::columns_needed_by(&schema)),
                Operation::Insert | Operation::Delete => Some(n),
                Operation::Read => None,
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params.as_slice())?;
        // Unfiltered: the wide rows after the position, merged by id as the log rows
        // come; both are in id order, so each is stepped once. Filtered: the rows of
        // the wide tables read are looked up one by one, so the wide rows of tables the
        // filter leaves out are never stepped over.
        let (mut wide_scan, mut wide_one) = match (wide_exists, tables) {
            (false, _) => (None, None),
            (true, None) => (Some(conn.prepare_cached(&self.select_wide)?), None),
            (true, Some(_)) => (None, Some(conn.prepare_cached(&self.select_wide_one)?)),
        };
        let mut wide_rows = match wide_scan.as_mut() {
            Some(stmt) => Some(stmt.query([after_lsn])?),
            None => None,
        };
        let mut wide: Option<(i64, Vec<Value>)> = None;
        while let Some(row) = rows.next()? {
            let mut raw = raw_from_row(row, names, &mut values_needed)?;
            let mut found_wide = false;
            if let Some(stepping) = wide_rows.as_mut() {
                // Wide rows below this log row belong to rows moved to the dead letters:
                // skipped.
                while wide.as_ref().is_none_or(|(id, _)| *id < raw.lsn) {
                    match stepping.next()? {
                        Some(w) => {
                            let id: i64 = w.get(WIDE_ID)?;
                            wide = Some((id, trimmed_values(w, WIDE_FIRST_VALUE)?));
                        }
                        None => {
                            wide_rows = None;
                            break;
                        }
                    }
                }
                if let Some((_, values)) = wide.take_if(|(id, _)| *id == raw.lsn) {
                    raw.values = merge_values(std::mem::take(&mut raw.values), values);
                    found_wide = true;
                }
            } else if let Some(lookup) = wide_one.as_mut().filter(|_| row_is_wide.get()) {
                // Only a wide table's change has a wide row (its schema says so).
                let values = lookup
                    .query_row([raw.lsn], |w| trimmed_values(w, WIDE_FIRST_VALUE))
                    .optional()?;
                if let Some(values) = values {
                    raw.values = merge_values(std::mem::take(&mut raw.values), values);
                    found_wide = true;
                }
            }
            if !found_wide && raw.values.is_empty() && raw.defect.is_none() {
                // A wide table's change keeps its values in its wide row: without one
                // (the wide table was dropped or emptied under Astha) its images are
                // unknown, not NULL. (A log row of an earlier build, which kept a wide
                // table's values in the log, has values, unless every one was NULL.)
                if row_is_wide.get() {
                    raw.defect = Some(format!(
                        "the values of this change of a wide table are missing: no row \
                         {} in {}",
                        raw.lsn, self.wide_table
                    ));
                }
            }
            bytes += raw.bytes();
            out.push(raw);
            if bytes >= limits.max_bytes {
                break;
            }
        }
        Ok((out, bytes))
    }

    /// Decodes one stored row; on failure gives it back with a reason fit for a
    /// dead-letter row.
    pub fn decode(&mut self, conn: &Connection, raw: RawChange) -> Result<Change, Box<Malformed>> {
        match self.check(conn, &raw) {
            Ok((schema, op)) => {
                let RawChange {
                    lsn,
                    julian,
                    table,
                    values,
                    ..
                } = raw;
                let incomplete = self
                    .gaps
                    .iter()
                    .find(|g| g.covers(&table, schema.id, lsn))
                    .map(|g| g.mark.clone());
                let (before, after) = crate::image::decode(op, &schema, values);
                let row = |values: Option<Vec<Value>>| {
                    values.map(|v| Row::new(schema.clone(), v).expect("decode gives n values"))
                };
                Ok(Change {
                    lsn,
                    timestamp_ms: julian_to_unix_ms(julian),
                    table,
                    op,
                    before: row(before),
                    after: row(after),
                    snapshot: None,
                    transaction: None,
                    incomplete,
                })
            }
            Err(reason) => Err(Box::new(Malformed { raw, reason })),
        }
    }

    /// Everything that can make a row undecodable, checked before its values are moved.
    fn check(
        &mut self,
        conn: &Connection,
        raw: &RawChange,
    ) -> Result<(Arc<TableSchema>, Operation), String> {
        if let Some(defect) = &raw.defect {
            return Err(defect.clone());
        }
        let schema = self.schema(conn, raw.schema_id)?;
        if *schema.table != *raw.table {
            return Err(format!(
                "schema {} belongs to table {:?}, row names {:?}",
                raw.schema_id, schema.table, raw.table
            ));
        }
        let op = Operation::parse(&raw.op)
            .filter(|op| *op != Operation::Read)
            .ok_or_else(|| format!("unknown operation {:?}", raw.op))?;
        crate::image::check(op, &schema, &raw.values).map_err(|e| e.to_string())?;
        Ok((schema, op))
    }

    fn schema(&mut self, conn: &Connection, id: i64) -> Result<Arc<TableSchema>, String> {
        cached_schema(&mut self.schemas, conn, id)
    }
}

/// The schemas read so far, by id (a schema never changes once written), and the last
/// one asked for: rows come in runs of one table, and each row asks twice (for the
/// columns to read, then to decode).
#[derive(Debug, Default)]
struct Schemas {
    by_id: HashMap<i64, Arc<TableSchema>>,
    last: Option<Arc<TableSchema>>,
}

/// A schema from `cache`, loaded into it on first use.
fn cached_schema(
    cache: &mut Schemas,
    conn: &Connection,
    id: i64,
) -> Result<Arc<TableSchema>, String> {
    if let Some(last) = cache.last.as_ref().filter(|s| s.id == id) {
        return Ok(last.clone());
    }
    let schema = match cache.by_id.get(&id) {
        Some(schema) => schema.clone(),
        None => {
            let schema = load_schema(conn, id)
                .map_err(|e| format!("cannot load schema {id}: {e}"))?
                .ok_or_else(|| format!("unknown schema id {id}"))?;
            cache.by_id.insert(id, schema.clone());
            schema
        }
    };
    cache.last = Some(schema.clone());
    Ok(schema)
}

/// The newest LSN in the log (0 if the log is empty).
pub fn head_lsn(conn: &Connection, log_table: &str) -> Result<i64> {
    let sql = format!("SELECT max(id) FROM {}", quote_ident(log_table));
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .unwrap_or(0))
}

/// Depth and age of the log as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct LogStats {
    /// Rows in the log.
    pub rows: i64,
    /// Oldest and newest LSN present (0 when empty).
    pub first_lsn: i64,
    pub head_lsn: i64,
    /// Age of the oldest row, in milliseconds, measured against `now_ms`.
    pub oldest_age_ms: i64,
}

/// Reads [`LogStats`]. Counting the rows reads the whole log: for a figure read often
/// (a metrics scrape) use [`log_ends`].
pub fn log_stats(conn: &Connection, log_table: &str, now_ms: i64) -> Result<LogStats> {
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", quote_ident(log_table)),
        [],
        |r| r.get(0),
    )?;
    let ends = log_ends(conn, log_table, now_ms)?;
    Ok(LogStats {
        rows,
        first_lsn: ends.first_lsn,
        head_lsn: ends.head_lsn,
        oldest_age_ms: ends.oldest_age_ms,
    })
}

/// The two ends of the log, read in index lookups whatever its depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogEnds {
    /// Oldest and newest LSN present (0 when empty).
    pub first_lsn: i64,
    pub head_lsn: i64,
    /// Age of the oldest row, in milliseconds, measured against `now_ms`.
    pub oldest_age_ms: i64,
}

impl LogEnds {
    /// `head - first + 1` (0 when empty): the rows in the log when none between the two
    /// ends was removed. Cleanup only removes the oldest rows, so only a row moved out
    /// to the dead letters (malformed) makes it more than the count.
    pub fn span(&self) -> i64 {
        if self.head_lsn == 0 {
            0
        } else {
            self.head_lsn - self.first_lsn + 1
        }
    }
}

/// Reads [`LogEnds`]: two lookups at either end of the LSN index (O(log n)). SQLite
/// answers `min` and `max` from the index only when each is alone in its `SELECT`.
pub fn log_ends(conn: &Connection, log_table: &str, now_ms: i64) -> Result<LogEnds> {
    let oldest: Option<(i64, f64)> = conn
        .query_row(
            &format!(
                "SELECT id, ts FROM {} ORDER BY id LIMIT 1",
                quote_ident(log_table)
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((first_lsn, oldest_ts)) = oldest else {
        return Ok(LogEnds::default());
    };
    Ok(LogEnds {
        first_lsn,
        head_lsn: head_lsn(conn, log_table)?,
        oldest_age_ms: (now_ms - julian_to_unix_ms(oldest_ts)).max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_share_their_table_name_and_operation_code_and_keep_their_text() {
        let conn = Connection::open_in_memory().unwrap();
        let capture = crate::capture::Capture::new("__cdc_log");
        capture.ensure_log(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        capture.install(&conn, "a").unwrap();
        capture.install(&conn, "b").unwrap();
        conn.execute_batch(
            "INSERT INTO a (v) VALUES ('1'), ('2');
             UPDATE a SET v = '3';
             INSERT INTO b (v) VALUES ('4');
             DELETE FROM a;",
        )
        .unwrap();
        let mut reader = LogReader::new("__cdc_log");
        let batch = reader.read(&conn, 0, BatchLimits::default(), None).unwrap();
        let ops: Vec<_> = batch.changes.iter().map(|c| (&*c.table, c.op)).collect();
        use Operation::*;
        assert_eq!(
            ops,
            [
                ("a", Insert),
                ("a", Insert),
                ("a", Update),
                ("a", Update),
                ("b", Insert),
                ("a", Delete),
                ("a", Delete)
            ]
        );
        let c = &batch.changes;
        assert!(Arc::ptr_eq(&c[0].table, &c[3].table), "one run of a table");
        // Names are shared across reads too.
        conn.execute("INSERT INTO b (v) VALUES ('5')", []).unwrap();
        let next = reader
            .read(&conn, batch.scanned_to, BatchLimits::default(), None)
            .unwrap();
        assert_eq!(&*next.changes[0].table, "b");

        // Hand-edited rows keep their text, whatever it is: a malformed row reports
        // the operation it holds, and invalid UTF-8 is replaced, not lost.
        let mut names = Names::default();
        for i in 0..(Names::MAX_OPS + 4) {
            let op = format!("op{i}");
            assert_eq!(&*names.shared(op.as_bytes(), false), op);
        }
        assert_eq!(&*names.shared(b"op3", false), "op3");
        assert_eq!(&*names.shared(b"t\xff", true), "t\u{fffd}");
        let (x, y) = (names.shared(b"I", false), names.shared(b"I", false));
        assert!(Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn a_read_steps_its_cached_statement_without_preparing_it_again() {
        use rusqlite::StatementStatus::RePrepare;
        let reprepares = |stable: bool| -> i32 {
            let conn = Connection::open_in_memory().unwrap();
            if stable {
                crate::db::use_stable_plans(&conn).unwrap();
            }
            let capture = crate::capture::Capture::new("__cdc_log");
            capture.ensure_log(&conn).unwrap();
            conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .unwrap();
            capture.install(&conn, "t").unwrap();
            let mut reader = LogReader::new("__cdc_log");
            let mut after = 0;
            // The poller's reads: the same limit every time, one new row each.
            for i in 0..4 {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("v{i}")])
                    .unwrap();
                let limits = BatchLimits::default();
                after = reader.read(&conn, after, limits, None).unwrap().scanned_to;
            }
            assert!(after >= 4, "{after}");
            let stmt = conn.prepare_cached(&reader.select_all).unwrap();
            stmt.get_status(RePrepare)
        };
        // Without the guarantee every binding of `LIMIT ?`, even to the same value,
        // re-prepares the statement.
        assert!(reprepares(false) > 0);
        assert_eq!(reprepares(true), 0);
    }
}
