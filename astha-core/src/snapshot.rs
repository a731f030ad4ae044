//! Snapshots for one consumer: the rows of its tables as they were after one LSN,
//! handed over as [`Operation::Read`] changes, after which the consumer's stream goes
//! on from exactly that LSN (no change missed, none seen twice).
//!
//! Owns the snapshot modes ([`SnapshotMode`]), the decision whether a consumer needs a
//! snapshot ([`needed`]), taking one ([`take`]), reading it back in bounded chunks
//! ([`Snapshot::read_chunk`]) and the durable record of each consumer's latest snapshot
//! and its progress (`__astha_snapshots`, which `astha status` shows).
//!
//! How it stays consistent without holding the database: [`take`] copies the chosen
//! tables, in one read transaction that also reads the log head, into a snapshot file of
//! its own next to the database (untyped columns, so every value is kept exactly). The
//! read transaction lasts as long as the copy (the tables' size at disk speed), not as
//! long as the consumer takes to accept the rows: a slow sink never pins the WAL. The
//! consumer then reads the copy in chunks of a few hundred rows, so memory stays bounded
//! whatever the tables' size. The price is disk: the copy is as large as the tables'
//! rows, and is deleted when the snapshot is finished ([`finish`]).
//!
//! It never delivers anything and never moves a slot: the caller positions the slot at
//! [`Snapshot::lsn`] and delivers the chunks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::change::{Change, Operation, Row, SnapshotRead};
use crate::error::{CoreError, Result};
use crate::ident::quote_ident;
use crate::schema::{live_columns, TableSchema};
use crate::slots::Slot;
use crate::value::Value;

/// The table that records each consumer's latest snapshot and its progress.
pub const STATE_TABLE: &str = "__astha_snapshots";

/// The signal table: a row `('execute-snapshot', '{"data-collections": ["orders"]}')`
/// asks running consumers (with a snapshot mode other than `never`) to snapshot those of
/// their tables again, without a restart. `"consumers": ["name", ...]` in `data` limits
/// it to those consumers. Debezium's signal, by its name.
pub const SIGNAL_TABLE: &str = "__astha_signals";

/// The signal type that asks for a snapshot.
pub const EXECUTE_SNAPSHOT: &str = "execute-snapshot";

/// Creates the signal table if it is missing.
pub fn ensure_signal_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {SIGNAL_TABLE} (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            data TEXT,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );"
    ))?;
    Ok(())
}

/// The newest signal's id (0 when there is none): a consumer acts on signals after it.
pub fn last_signal(conn: &Connection) -> Result<i64> {
    ensure_signal_table(conn)?;
    Ok(conn.query_row(
        &format!("SELECT coalesce(max(id), 0) FROM {SIGNAL_TABLE}"),
        [],
        |r| r.get(0),
    )?)
}

/// The next snapshot signal after signal `after` for `consumer` (whose tables are
/// `tables`): its id and the tables to snapshot again, `None` for the tables when the
/// signal is not for it. `None` when there is no newer signal.
pub fn next_signal(
    conn: &Connection,
    after: i64,
    consumer: &str,
    tables: &[String],
) -> Result<Option<(i64, Option<Vec<String>>)>> {
    let row: Option<(i64, String, Option<String>)> = conn
        .query_row(
            &format!("SELECT id, type, data FROM {SIGNAL_TABLE} WHERE id > ?1 ORDER BY id LIMIT 1"),
            [after],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, kind, data)) = row else {
        return Ok(None);
    };
    if kind != EXECUTE_SNAPSHOT {
        tracing::warn!(signal = id, kind, "unknown signal type; ignored");
        return Ok(Some((id, None)));
    }
    let data: serde_json::Value = data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let list = |key: &str| -> Option<Vec<String>> {
        data.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    if let Some(consumers) = list("consumers") {
        if !consumers.iter().any(|c| c == consumer) {
            return Ok(Some((id, None)));
        }
    }
    let wanted = list("data-collections").unwrap_or_default();
    let chosen: Vec<String> = tables
        .iter()
        .filter(|t| wanted.iter().any(|w| w == *t))
        .cloned()
        .collect();
    Ok(Some((id, (!chosen.is_empty()).then_some(chosen))))
}

/// Records that `consumer` acted on signals up to `signal`.
pub fn record_signal(conn: &Connection, consumer: &str, signal: i64) -> Result<()> {
    conn.execute(
        &format!("UPDATE {STATE_TABLE} SET signal_id = max(signal_id, ?2) WHERE consumer = ?1"),
        (consumer, signal),
    )?;
    Ok(())
}

/// When a consumer receives a snapshot of its tables (Debezium's `snapshot.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SnapshotMode {
    /// Only changes: a new consumer starts at the log head.
    #[default]
    Never,
    /// A new consumer first receives the current rows (`r` events), then every change
    /// after them. A snapshot cut short (a crash) is taken again at the next start.
    Initial,
    /// Like `initial`, then nothing more: the consumer streams no changes and keeps no
    /// position that would hold log cleanup back.
    InitialOnly,
    /// Like `initial`, and again whenever the consumer's position was cleaned away (it
    /// points before the oldest row still in the log, so changes after it are gone).
    WhenNeeded,
}

impl SnapshotMode {
    /// Every mode, by its name in configuration.
    pub const ALL: [SnapshotMode; 4] = [
        SnapshotMode::Never,
        SnapshotMode::Initial,
        SnapshotMode::InitialOnly,
        SnapshotMode::WhenNeeded,
    ];

    /// The name in configuration (`snapshot = "initial"`).
    pub fn name(self) -> &'static str {
        match self {
            SnapshotMode::Never => "never",
            SnapshotMode::Initial => "initial",
            SnapshotMode::InitialOnly => "initial_only",
            SnapshotMode::WhenNeeded => "when_needed",
        }
    }

    /// The names of every mode, comma separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(|m| m.name()).join(", ")
    }
}

impl fmt::Display for SnapshotMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SnapshotMode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let wanted = text.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| {
                format!(
                    "unknown snapshot mode {text:?}; the modes are: {}",
                    Self::names()
                )
            })
    }
}

/// One consumer's latest snapshot, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotState {
    pub consumer: String,
    pub tables: Vec<String>,
    /// The LSN the rows correspond to (0 while copying).
    pub lsn: i64,
    /// Rows in the snapshot, and rows the consumer has confirmed so far.
    pub total: i64,
    pub done: i64,
    /// `copying`, `running` (being delivered) or `done`.
    pub state: String,
    /// Why it was taken: `initial`, `position lost`, `unfinished`, `signal`.
    pub reason: String,
    /// The newest signal the consumer acted on.
    pub signal_id: i64,
    pub started_at: String,
    pub updated_at: String,
}

/// Creates the snapshot state table if it is missing.
pub fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
            id INTEGER PRIMARY KEY,
            consumer TEXT NOT NULL UNIQUE,
            tables TEXT NOT NULL,
            lsn INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            signal_id INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );"
    ))?;
    Ok(())
}

/// The recorded snapshot of `consumer`, if it ever had one. Reads nothing when the
/// state table does not exist (a database opened read-only by `astha status`).
pub fn state(conn: &Connection, consumer: &str) -> Result<Option<SnapshotState>> {
    Ok(list_where(conn, Some(consumer))?.into_iter().next())
}

/// Every consumer's latest snapshot, by consumer.
pub fn list(conn: &Connection) -> Result<Vec<SnapshotState>> {
    list_where(conn, None)
}

fn list_where(conn: &Connection, consumer: Option<&str>) -> Result<Vec<SnapshotState>> {
    if !crate::schema::is_plain_table(conn, STATE_TABLE)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT consumer, tables, lsn, total, done, state, reason, signal_id, started_at, updated_at
         FROM {STATE_TABLE} WHERE ?1 IS NULL OR consumer = ?1 ORDER BY consumer"
    ))?;
    let rows = stmt.query_map([consumer], |r| {
        let tables: String = r.get(1)?;
        Ok(SnapshotState {
            consumer: r.get(0)?,
            tables: serde_json::from_str(&tables).unwrap_or_default(),
            lsn: r.get(2)?,
            total: r.get(3)?,
            done: r.get(4)?,
            state: r.get(5)?,
            reason: r.get(6)?,
            signal_id: r.get(7)?,
            started_at: r.get(8)?,
            updated_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Why `consumer` needs a snapshot under `mode` before it streams, or `None`. `slot` is
/// its slot as it is now (`None` for a consumer never seen).
pub fn needed(
    conn: &Connection,
    log_table: &str,
    consumer: &str,
    mode: SnapshotMode,
    slot: Option<&Slot>,
) -> Result<Option<&'static str>> {
    if mode == SnapshotMode::Never {
        return Ok(None);
    }
    let recorded = state(conn, consumer)?;
    if recorded.as_ref().is_some_and(|s| s.state != "done") {
        return Ok(Some("unfinished"));
    }
    let Some(slot) = slot else {
        // A consumer that only ever takes a snapshot has none once it is done.
        if mode == SnapshotMode::InitialOnly && recorded.is_some() {
            return Ok(None);
        }
        return Ok(Some("initial"));
    };
    if mode == SnapshotMode::WhenNeeded && position_lost(conn, log_table, slot.position)? {
        return Ok(Some("position lost"));
    }
    Ok(None)
}

/// True when changes after `position` were cleaned away: the oldest row still in the
/// log is further on than the one right after it.
pub fn position_lost(conn: &Connection, log_table: &str, position: i64) -> Result<bool> {
    let oldest: Option<i64> = conn.query_row(
        &format!("SELECT min(id) FROM {}", quote_ident(log_table)),
        [],
        |r| r.get(0),
    )?;
    Ok(oldest.is_some_and(|oldest| oldest > position + 1))
}

/// A snapshot taken and copied, ready to be read in chunks.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub consumer: String,
    /// The rows are the tables' state after this LSN.
    pub lsn: i64,
    /// When it was taken (the `ts_ms` of its events), milliseconds since the epoch.
    pub taken_ms: i64,
    /// The copy.
    pub file: PathBuf,
    pub tables: Vec<SnapshotTable>,
}

/// One table of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    pub name: String,
    /// Its live columns when the snapshot was taken (schema id 0: not a captured schema).
    pub schema: Arc<TableSchema>,
    pub rows: u64,
}

/// Where a reader of a snapshot is: the table, and the last row read of it (by the
/// copy's rowid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub table: usize,
    pub after: i64,
    /// Rows read so far over all tables.
    pub read: u64,
}

impl Snapshot {
    /// Rows in the snapshot, over all its tables.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// The table names, in snapshot order.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Up to `limit` rows after `cursor`, as [`Operation::Read`] changes, and the cursor
    /// after them. An empty result means the snapshot is read to its end. Opens the copy
    /// read-only for the call: no transaction spans two chunks.
    pub fn read_chunk(&self, cursor: Cursor, limit: usize) -> Result<(Vec<Change>, Cursor)> {
        let conn = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let total = self.total();
        let mut out = Vec::new();
        let mut at = cursor;
        while out.len() < limit && at.table < self.tables.len() {
            let table = &self.tables[at.table];
            let width = table.schema.columns.len();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT rowid, * FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                copy_name(at.table)
            ))?;
            let mut rows = stmt.query((at.after, (limit - out.len()) as i64))?;
            let mut any = false;
            while let Some(r) = rows.next()? {
                any = true;
                at.after = r.get(0)?;
                at.read += 1;
                let values = (1..=width)
                    .map(|i| r.get_ref(i).map(Value::from_ref))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(Change {
                    lsn: self.lsn,
                    timestamp_ms: self.taken_ms,
                    table: Arc::from(table.name.as_str()),
                    op: Operation::Read,
                    before: None,
                    after: Some(Row::new(table.schema.clone(), values)?),
                    incomplete: None,
                    snapshot: Some(SnapshotRead {
                        seq: at.read,
                        last: at.read == total,
                    }),
                    transaction: None,
                });
            }
            if !any {
                at = Cursor {
                    table: at.table + 1,
                    after: 0,
                    read: at.read,
                };
            }
        }
        Ok((out, at))
    }
}

fn copy_name(index: usize) -> String {
    format!("t{index}")
}

/// Takes a snapshot of `tables` for `consumer`: in one read transaction of the database
/// at `db_path`, reads the log head (the snapshot's LSN) and copies every table into a
/// snapshot file beside the database; records it in [`STATE_TABLE`] as `running`.
/// Opens connections of its own, so it can run on any thread but the caller's writer.
pub fn take(
    db_path: &Path,
    log_table: &str,
    consumer: &str,
    tables: &[String],
    reason: &str,
) -> Result<Snapshot> {
    let conn = crate::db::open_existing(db_path)?;
    // Its writes (the record) are short and must get the lock between a busy writer's
    // transactions, like Astha's own writer's (crate::db::use_fast_busy_handler).
    crate::db::use_fast_busy_handler(&conn)?;
    ensure_table(&conn)?;
    let tables_json = serde_json::to_string(tables).expect("strings serialize");
    let id: i64 = conn.query_row(
        &format!(
            "INSERT INTO {STATE_TABLE} (consumer, tables, state, reason) VALUES (?1, ?2, 'copying', ?3)
             ON CONFLICT (consumer) DO UPDATE SET tables = ?2, lsn = 0, total = 0, done = 0,
                 state = 'copying', reason = ?3,
                 started_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'),
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             RETURNING id"
        ),
        (consumer, &tables_json, reason),
        |r| r.get(0),
    )?;
    let file = copy_path(db_path, id);
    remove_copy(&file);
    // Created here: an attached database inherits the main connection's open flags,
    // which do not include creating a file.
    Connection::open(&file)?;
    conn.execute("ATTACH ?1 AS astha_snapshot", [file.to_string_lossy()])?;
    let copied = copy_tables(&conn, log_table, tables);
    let _ = conn.execute("DETACH astha_snapshot", []);
    let (lsn, copied) = match copied {
        Ok(done) => done,
        Err(err) => {
            remove_copy(&file);
            return Err(err);
        }
    };
    let total: u64 = copied.iter().map(|t| t.rows).sum();
    conn.execute(
        &format!(
            "UPDATE {STATE_TABLE} SET lsn = ?2, total = ?3, state = 'running',
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE consumer = ?1"
        ),
        (consumer, lsn, total as i64),
    )?;
    Ok(Snapshot {
        consumer: consumer.to_string(),
        lsn,
        taken_ms: crate::change::unix_now_ms(),
        file,
        tables: copied,
    })
}

/// The copy: one transaction that reads the main database (its snapshot starts at the
/// first read, the log head) and writes only the attached snapshot file.
fn copy_tables(
    conn: &Connection,
    log_table: &str,
    tables: &[String],
) -> Result<(i64, Vec<SnapshotTable>)> {
    // The copy is rebuilt from scratch after a crash: it needs no journal or sync.
    conn.execute_batch(
        "PRAGMA astha_snapshot.journal_mode = OFF; PRAGMA astha_snapshot.synchronous = OFF;",
    )?;
    let tx = conn.unchecked_transaction()?;
    let lsn = crate::log::head_lsn(&tx, log_table)?;
    let mut out = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let (columns, primary_key) = live_columns(&tx, table)?;
        if columns.is_empty() {
            return Err(CoreError::Invalid(format!(
                "cannot snapshot {table:?}: no such table"
            )));
        }
        // Untyped columns: no affinity, so every value is stored as read.
        let copy_columns = (0..columns.len())
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        tx.execute_batch(&format!(
            "CREATE TABLE astha_snapshot.{} ({copy_columns})",
            copy_name(index)
        ))?;
        let rows = tx.execute(
            &format!(
                "INSERT INTO astha_snapshot.{} SELECT {} FROM main.{}",
                copy_name(index),
                columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                quote_ident(table)
            ),
            [],
        )?;
        out.push(SnapshotTable {
            name: table.clone(),
            schema: Arc::new(TableSchema {
                id: 0,
                table: table.clone(),
                columns,
                primary_key,
                exact: Vec::new(),
            }),
            rows: rows as u64,
        });
    }
    tx.commit()?;
    Ok((lsn, out))
}

/// Records that `consumer` has confirmed `done` rows of its snapshot.
pub fn record_progress(conn: &Connection, consumer: &str, done: u64) -> Result<()> {
    conn.execute(
        &format!(
            "UPDATE {STATE_TABLE} SET done = ?2, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE consumer = ?1"
        ),
        (consumer, done as i64),
    )?;
    Ok(())
}

/// Marks `snapshot` delivered and deletes its copy.
pub fn finish(conn: &Connection, snapshot: &Snapshot) -> Result<()> {
    conn.execute(
        &format!(
            "UPDATE {STATE_TABLE} SET done = total, state = 'done',
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE consumer = ?1"
        ),
        [&snapshot.consumer],
    )?;
    remove_copy(&snapshot.file);
    Ok(())
}

/// Forgets `consumer`'s snapshot record and deletes a copy left behind (a consumer
/// unregistered for good).
pub fn forget(conn: &Connection, db_path: &Path, consumer: &str) -> Result<()> {
    ensure_table(conn)?;
    let id: Option<i64> = conn
        .query_row(
            &format!("DELETE FROM {STATE_TABLE} WHERE consumer = ?1 RETURNING id"),
            [consumer],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = id {
        remove_copy(&copy_path(db_path, id));
    }
    Ok(())
}

/// The table of snapshot rows a consumer gave up on. A snapshot row has no log row to
/// copy into the dead letters (and shares its LSN with every row of its snapshot), so
/// it is kept here as its native JSON, which is exact ([`crate::Value::to_json`]); the
/// table can be read again to replay it.
pub const DEAD_LETTER_TABLE: &str = "__astha_snapshot_dead_letters";

/// Records that `failure.consumer` gave up on the snapshot row `change`.
pub fn record_dead_letter(
    conn: &Connection,
    change: &Change,
    failure: &crate::dead_letter::Failure<'_>,
) -> Result<bool> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {DEAD_LETTER_TABLE} (
            id INTEGER PRIMARY KEY,
            consumer TEXT NOT NULL,
            lsn INTEGER NOT NULL,
            tbl TEXT NOT NULL,
            row TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            retriable INTEGER NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );"
    ))?;
    let row = change.to_json()["after"].to_string();
    let n = conn.execute(
        &format!(
            "INSERT INTO {DEAD_LETTER_TABLE} (consumer, lsn, tbl, row, reason, attempts, retriable)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        (
            failure.consumer,
            change.lsn,
            &*change.table,
            row,
            failure.reason,
            failure.attempts,
            failure.retriable,
        ),
    )?;
    Ok(n > 0)
}

/// Snapshot rows given up on, per consumer (none when the table does not exist).
pub fn dead_letter_counts(conn: &Connection) -> Result<Vec<(String, i64)>> {
    if !crate::schema::is_plain_table(conn, DEAD_LETTER_TABLE)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT consumer, count(*) FROM {DEAD_LETTER_TABLE} GROUP BY consumer ORDER BY consumer"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The copy of snapshot record `id`: `<database>-snapshot-<id>` beside the database.
fn copy_path(db_path: &Path, id: i64) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-snapshot-{id}"));
    db_path.with_file_name(name)
}

fn remove_copy(file: &Path) {
    let _ = std::fs::remove_file(file);
}

#[cfg(test)]
mod tests;
