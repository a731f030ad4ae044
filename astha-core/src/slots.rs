//! Durable slots: each consumer's position in the change log, kept in the same database.
//!
//! A slot's `position` is the LSN of the last change its consumer confirmed; everything
//! after it will be delivered again after a crash. Positions only move forward.
//! [`cleanup`] deletes the log rows every slot is past, in one statement, and never the
//! newest row: SQLite numbers a new row `max(id) + 1`, so keeping the newest row is what
//! guarantees an LSN is never handed out twice, without `AUTOINCREMENT`'s per-insert cost.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::change::julian_to_unix_ms;
use crate::error::{CoreError, Result};
use crate::ident::quote_ident;

/// Where a new slot starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStart {
    /// After the newest change now in the log: only future changes are delivered.
    Head,
    /// Before the oldest change still in the log.
    Beginning,
    /// After this LSN.
    At(i64),
}

/// A slot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub name: String,
    pub position: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// How far a slot is behind the log head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Lag {
    pub position: i64,
    pub head: i64,
    /// Log rows after the position.
    pub events: i64,
    /// Age of the oldest unconsumed row in milliseconds (0 when caught up).
    pub oldest_age_ms: i64,
}

/// Creates the slot table if it is missing.
pub fn ensure_tables(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS __astha_slots (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );",
    )?;
    Ok(())
}

/// Creates slot `name`; fails with [`CoreError::SlotExists`] if it exists.
pub fn create(conn: &Connection, log_table: &str, name: &str, start: SlotStart) -> Result<Slot> {
    let position = match start {
        SlotStart::Head => crate::log::head_lsn(conn, log_table)?,
        SlotStart::Beginning => {
            let sql = format!("SELECT min(id) - 1 FROM {}", quote_ident(log_table));
            conn.query_row(&sql, [], |r| r.get::<_, Option<i64>>(0))?
                .unwrap_or(0)
                .max(0)
        }
        SlotStart::At(lsn) => lsn,
    };
    let inserted = conn.execute(
        "INSERT INTO __astha_slots (name, position) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        (name, position),
    )?;
    if inserted == 0 {
        return Err(CoreError::SlotExists(name.to_string()));
    }
    get(conn, name)?.ok_or_else(|| CoreError::NoSuchSlot(name.to_string()))
}

/// Returns slot `name`, creating it at `start` if it does not exist.
pub fn get_or_create(
    conn: &Connection,
    log_table: &str,
    name: &str,
    start: SlotStart,
) -> Result<Slot> {
    match get(conn, name)? {
        Some(slot) => Ok(slot),
        None => create(conn, log_table, name, start),
    }
}

/// Reads slot `name`.
pub fn get(conn: &Connection, name: &str) -> Result<Option<Slot>> {
    Ok(conn
        .query_row(
            "SELECT name, position, created_at, updated_at FROM __astha_slots WHERE name = ?1",
            [name],
            slot_from_row,
        )
        .optional()?)
}

/// All slots, by name.
pub fn list(conn: &Connection) -> Result<Vec<Slot>> {
    let mut stmt = conn.prepare(
        "SELECT name, position, created_at, updated_at FROM __astha_slots ORDER BY name",
    )?;
    let slots = stmt
        .query_map([], slot_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(slots)
}

fn slot_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Slot> {
    Ok(Slot {
        name: r.get(0)?,
        position: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

/// Moves slot `name` forward to `lsn` (never backward). Returns the position now stored.
pub fn advance(conn: &Connection, name: &str, lsn: i64) -> Result<i64> {
    conn.execute(
        "UPDATE __astha_slots SET position = ?2,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE name = ?1 AND position < ?2",
        (name, lsn),
    )?;
    get(conn, name)?
        .map(|s| s.position)
        .ok_or_else(|| CoreError::NoSuchSlot(name.to_string()))
}

/// Advances several slots in one transaction (what the slot writer does with the
/// confirmations gathered since its last flush).
pub fn advance_many(conn: &Connection, positions: &[(String, i64)]) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE __astha_slots SET position = ?2,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE name = ?1 AND position < ?2",
        )?;
        for (name, lsn) in positions {
            stmt.execute((name, lsn))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Drops slot `name`; returns false if there was none. Rows it held back become
/// eligible for cleanup.
pub fn drop_slot(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.execute("DELETE FROM __astha_slots WHERE name = ?1", [name])? > 0)
}

/// How far slot `name` is behind, measured against `now_ms`.
pub fn lag(conn: &Connection, log_table: &str, name: &str, now_ms: i64) -> Result<Lag> {
    let position = get(conn, name)?
        .ok_or_else(|| CoreError::NoSuchSlot(name.to_string()))?
        .position;
    let log = quote_ident(log_table);
    let (events, head, oldest): (i64, Option<i64>, Option<f64>) = conn.query_row(
        &format!(
            "SELECT (SELECT count(*) FROM {log} WHERE id > ?1), (SELECT max(id) FROM {log}),
                    (SELECT ts FROM {log} WHERE id > ?1 ORDER BY id LIMIT 1)"
        ),
        [position],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(Lag {
        position,
        head: head.unwrap_or(0).max(position),
        events,
        oldest_age_ms: oldest.map_or(0, |ts| (now_ms - julian_to_unix_ms(ts)).max(0)),
    })
}

/// Deletes every log row that all slots are past, keeping the newest row. With no slot
/// at all nothing is deleted: a consumer added later may still want the rows.
/// Returns the number of rows deleted.
pub fn cleanup(conn: &Connection, log_table: &str) -> Result<usize> {
    let log = quote_ident(log_table);
    let deleted = conn.execute(
        &format!(
            "DELETE FROM {log} WHERE id <= (SELECT min(position) FROM __astha_slots)
               AND id < (SELECT max(id) FROM {log})"
        ),
        [],
    )?;
    Ok(deleted)
}
