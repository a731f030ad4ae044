//! Leases: how a non-durable slot (a `watch` without `--slot`, a live feed) goes away
//! when its owner dies without cleaning up (kill -9, power loss), so it cannot hold log
//! cleanup back forever.
//!
//! A leased slot has a row in `__astha_leases`: its owner (one running engine,
//! [`owner_id`]) and when the lease expires. The owner's janitor renews every lease it
//! holds on each tick ([`renew`]); any engine's janitor drops the slots whose lease
//! expired ([`drop_expired`]), slot and lease in one transaction. A slot without a lease
//! row is durable and is never dropped here. Times are Unix milliseconds passed in by
//! the caller, so tests choose the clock.
//!
//! It never touches a durable slot, and never moves a position: it only creates, renews
//! and removes leases, and removes the slots of expired ones.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::error::Result;

/// The lease table.
pub const TABLE: &str = "__astha_leases";

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The slot it keeps alive.
    pub slot: String,
    /// The engine that renews it.
    pub owner: String,
    /// When it expires unless renewed, Unix milliseconds.
    pub expires_ms: i64,
}

/// Creates the lease table if it is missing.
pub fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS __astha_leases (
            slot TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_ms INTEGER NOT NULL
        );",
    )?;
    Ok(())
}

/// An owner name unique to this engine: the process id (to find it with `ps`) and a
/// random part (two engines in one process, or a reused pid, never share leases).
pub fn owner_id() -> String {
    format!("pid-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

fn expiry(now_ms: i64, ttl: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Gives slot `slot` to `owner` until `now_ms + ttl` (taking it over from a previous
/// owner, e.g. a `watch --http` restarted under the same slot name).
pub fn take(conn: &Connection, slot: &str, owner: &str, ttl: Duration, now_ms: i64) -> Result<()> {
    ensure_table(conn)?;
    conn.execute(
        "INSERT INTO __astha_leases (slot, owner, expires_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (slot) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms",
        (slot, owner, expiry(now_ms, ttl)),
    )?;
    Ok(())
}

/// Extends every lease of `owner` to `now_ms + ttl`; returns how many it holds.
pub fn renew(conn: &Connection, owner: &str, ttl: Duration, now_ms: i64) -> Result<usize> {
    ensure_table(conn)?;
    Ok(conn.execute(
        "UPDATE __astha_leases SET expires_ms = ?2 WHERE owner = ?1",
        (owner, expiry(now_ms, ttl)),
    )?)
}

/// Removes the lease of `slot` (its slot is dropped by the caller, or kept durable).
pub fn release(conn: &Connection, slot: &str) -> Result<()> {
    ensure_table(conn)?;
    conn.execute("DELETE FROM __astha_leases WHERE slot = ?1", [slot])?;
    Ok(())
}

/// Drops every slot whose lease expired before `now_ms`, with its lease, in one
/// transaction; returns the expired leases.
pub fn drop_expired(conn: &Connection, now_ms: i64) -> Result<Vec<Lease>> {
    ensure_table(conn)?;
    let tx = conn.unchecked_transaction()?;
    let expired = {
        let mut stmt = tx.prepare_cached(
            "SELECT slot, owner, expires_ms FROM __astha_leases WHERE expires_ms < ?1 ORDER BY slot",
        )?;
        let rows = stmt.query_map([now_ms], lease_from_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    for lease in &expired {
        tx.execute("DELETE FROM __astha_slots WHERE name = ?1", [&lease.slot])?;
        tx.execute("DELETE FROM __astha_leases WHERE slot = ?1", [&lease.slot])?;
    }
    tx.commit()?;
    Ok(expired)
}

/// Drops every slot leased by `owner`, with its lease: a graceful stop's cleanup.
/// Returns the slots dropped.
pub fn drop_owned(conn: &Connection, owner: &str) -> Result<Vec<String>> {
    ensure_table(conn)?;
    let tx = conn.unchecked_transaction()?;
    let slots = {
        let mut stmt = tx.prepare_cached("SELECT slot FROM __astha_leases WHERE owner = ?1")?;
        let rows = stmt.query_map([owner], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    for slot in &slots {
        tx.execute("DELETE FROM __astha_slots WHERE name = ?1", [slot])?;
    }
    tx.execute("DELETE FROM __astha_leases WHERE owner = ?1", [owner])?;
    tx.commit()?;
    Ok(slots)
}

/// The lease of `slot`, if it has one; a database without the table has none.
pub fn get(conn: &Connection, slot: &str) -> Result<Option<Lease>> {
    if !table_exists(conn)? {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT slot, owner, expires_ms FROM __astha_leases WHERE slot = ?1",
            [slot],
            lease_from_row,
        )
        .optional()?)
}

/// Every lease, by slot; empty for a database without the table (read-only callers).
pub fn list(conn: &Connection) -> Result<Vec<Lease>> {
    if !table_exists(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt =
        conn.prepare("SELECT slot, owner, expires_ms FROM __astha_leases ORDER BY slot")?;
    let leases = stmt
        .query_map([], lease_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(leases)
}

fn table_exists(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [TABLE],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn lease_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        slot: r.get(0)?,
        owner: r.get(1)?,
        expires_ms: r.get(2)?,
    })
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{self, SlotStart};

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE log (id INTEGER PRIMARY KEY);")
            .unwrap();
        slots::ensure_tables(&conn).unwrap();
        for name in ["durable", "mine", "theirs"] {
            slots::create(&conn, "log", name, SlotStart::Head).unwrap();
        }
        conn
    }

    fn names(conn: &Connection) -> Vec<String> {
        slots::list(conn)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn expired_leases_drop_their_slots_and_durable_slots_stay() {
        let conn = db();
        let ttl = Duration::from_secs(10);
        take(&conn, "mine", "me", ttl, 1_000).unwrap();
        take(&conn, "theirs", "dead", ttl, 1_000).unwrap();
        assert!(drop_expired(&conn, 5_000).unwrap().is_empty());
        // Only the living owner renews.
        assert_eq!(renew(&conn, "me", ttl, 9_000).unwrap(), 1);
        let expired = drop_expired(&conn, 12_000).unwrap();
        assert_eq!(
            expired,
            [Lease {
                slot: "theirs".into(),
                owner: "dead".into(),
                expires_ms: 11_000
            }]
        );
        assert_eq!(names(&conn), ["durable", "mine"]);
        assert_eq!(get(&conn, "mine").unwrap().unwrap().expires_ms, 19_000);
        // Long after every lease: only the durable slot is left.
        drop_expired(&conn, i64::MAX).unwrap();
        assert_eq!(names(&conn), ["durable"]);
        assert!(list(&conn).unwrap().is_empty());
    }

    #[test]
    fn a_graceful_stop_drops_its_own_slots_and_a_new_owner_takes_over() {
        let conn = db();
        let ttl = Duration::from_secs(10);
        take(&conn, "mine", "me", ttl, 0).unwrap();
        take(&conn, "theirs", "old", ttl, 0).unwrap();
        take(&conn, "theirs", "me", ttl, 0).unwrap();
        assert_eq!(get(&conn, "theirs").unwrap().unwrap().owner, "me");
        let mut dropped = drop_owned(&conn, "me").unwrap();
        dropped.sort();
        assert_eq!(dropped, ["mine", "theirs"]);
        assert_eq!(names(&conn), ["durable"]);
        release(&conn, "nothing").unwrap();
    }

    #[test]
    fn a_database_without_leases_lists_none() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(list(&conn).unwrap().is_empty());
        assert_eq!(get(&conn, "x").unwrap(), None);
        assert_ne!(owner_id(), owner_id());
    }
}
