//! Component heartbeats: a running Astha writes each component's state (status, breaker,
//! position, counters) into `__astha_components` every cleanup tick, so `astha status`
//! can show breaker states and progress from another process, with the time they were
//! last reported (a stale `updated_at` means the process is gone).

use rusqlite::Connection;
use serde::Serialize;

use crate::error::Result;

/// One component's last reported state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    pub name: String,
    pub version: String,
    pub status: String,
    pub breaker: String,
    pub position: i64,
    pub delivered: i64,
    pub failures: i64,
    pub dead_letters: i64,
    /// The last failure the component reported, if any (kept after it recovers, so an
    /// operator sees what went wrong last).
    pub last_error: Option<String>,
    pub updated_at: String,
}

/// Creates the heartbeat table if it is missing.
pub fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS __astha_components (
            name TEXT PRIMARY KEY,
            version TEXT NOT NULL,
            status TEXT NOT NULL,
            breaker TEXT NOT NULL,
            position INTEGER NOT NULL,
            delivered INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            dead_letters INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );",
    )?;
    // Databases from builds before `last_error` was reported get the column.
    let has_last_error: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('__astha_components') WHERE name = 'last_error'",
        [],
        |r| r.get(0),
    )?;
    if !has_last_error {
        conn.execute_batch("ALTER TABLE __astha_components ADD COLUMN last_error TEXT")?;
    }
    Ok(())
}

/// Writes the given heartbeats in one transaction.
pub fn write(conn: &Connection, beats: &[Heartbeat]) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO __astha_components
                (name, version, status, breaker, position, delivered, failures, dead_letters,
                 last_error, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, status = excluded.status,
                breaker = excluded.breaker, position = excluded.position,
                delivered = excluded.delivered, failures = excluded.failures,
                dead_letters = excluded.dead_letters, last_error = excluded.last_error,
                updated_at = excluded.updated_at",
        )?;
        for b in beats {
            stmt.execute((
                &b.name,
                &b.version,
                &b.status,
                &b.breaker,
                b.position,
                b.delivered,
                b.failures,
                b.dead_letters,
                &b.last_error,
            ))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Removes a component's heartbeat (it was unregistered).
pub fn remove(conn: &Connection, name: &str) -> Result<()> {
    conn.execute("DELETE FROM __astha_components WHERE name = ?1", [name])?;
    Ok(())
}

/// All heartbeats, by name (empty if no Astha ever ran on this database).
pub fn list(conn: &Connection) -> Result<Vec<Heartbeat>> {
    if !crate::schema::is_plain_table(conn, "__astha_components")? {
        return Ok(Vec::new());
    }
    // A database last written by a build without `last_error` reads as having none (this
    // function only reads: it never adds the column).
    let has_last_error: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('__astha_components') WHERE name = 'last_error'",
        [],
        |r| r.get(0),
    )?;
    let last_error = if has_last_error { "last_error" } else { "NULL" };
    let mut stmt = conn.prepare(&format!(
        "SELECT name, version, status, breaker, position, delivered, failures, dead_letters,
                updated_at, {last_error} FROM __astha_components ORDER BY name"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Heartbeat {
                name: r.get(0)?,
                version: r.get(1)?,
                status: r.get(2)?,
                breaker: r.get(3)?,
                position: r.get(4)?,
                delivered: r.get(5)?,
                failures: r.get(6)?,
                dead_letters: r.get(7)?,
                updated_at: r.get(8)?,
                last_error: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
