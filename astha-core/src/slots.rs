//! Durable slots: each consumer's position in the change log, kept in the same database.
//!
//! A slot's `position` is the LSN of the last change its consumer confirmed; everything
//! after it will be delivered again after a crash. Positions only move forward.
//! [`cleanup`] deletes the log rows every slot is past, and never the newest row: SQLite
//! numbers a new row `max(id) + 1`, so keeping the newest row is what guarantees an LSN is
//! never handed out twice, without `AUTOINCREMENT`'s per-insert cost. It deletes in
//! chunks of at most [`CleanupBudget::chunk_rows`] rows, each its own transaction that
//! reads the slots again: the write lock is held for one chunk at a time (users' writes
//! interleave), SQLite's page cache and the WAL stay the size of a chunk however large
//! the backlog was, and a slot created between two chunks is respected.

use std::time::{Duration, Instant};

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
/// confirmations gathered since its last flush), and raises the LSN high-water mark
/// ([`crate::log_state`]) to the furthest of them.
///
/// A write that touches no row is an error, and nothing is written: the slot's row or
/// table is gone ([`CoreError::SlotLost`]), or its stored position is past the one given
/// ([`CoreError::SlotMoved`]: someone moved it forward). Taken as success, either would
/// make the consumer skip changes after a restart. [`restore`] is the way back.
pub fn advance_many(conn: &Connection, positions: &[(String, i64)]) -> Result<()> {
    // Thousands a second under load: cached BEGIN/COMMIT.
    let tx = crate::db::CachedTransaction::begin(conn)?;
    advance_in(&tx, positions)?;
    tx.commit()?;
    Ok(())
}

/// [`advance_many`] with the positions asked for once the write lock is held: `take`
/// runs after `BEGIN IMMEDIATE` returned, so positions confirmed while this write waited
/// for the lock are written by it too, rather than by another write after it. Returns
/// what `take` gave (empty when the lock was never had and `take` did not run) beside the
/// outcome, so that a caller can keep positions a failed write did not make durable.
pub fn advance_taking(
    conn: &Connection,
    take: impl FnOnce() -> Vec<(String, i64)>,
) -> (Vec<(String, i64)>, Result<()>) {
    let tx = match crate::db::CachedTransaction::begin_immediate(conn) {
        Ok(tx) => tx,
        Err(err) => return (Vec::new(), Err(err)),
    };
    let positions = take();
    let outcome = advance_in(&tx, &positions).and_then(|()| tx.commit());
    (positions, outcome)
}

/// The writes of [`advance_many`], inside the transaction `tx`.
fn advance_in(tx: &Connection, positions: &[(String, i64)]) -> Result<()> {
    // The time formatted once here rather than by SQLite's strftime for each slot (the
    // same text).
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (name, lsn) in positions {
        let changed = tx
            .prepare_cached(
                "UPDATE __astha_slots SET position = ?2, updated_at = ?3
                 WHERE name = ?1 AND position < ?2",
            )
            .and_then(|mut stmt| stmt.execute((name, lsn, &now)));
        let missing_table =
            || -> Result<bool> { Ok(!crate::schema::is_plain_table(tx, "__astha_slots")?) };
        let changed = match changed {
            Ok(n) => n,
            Err(_) if missing_table()? => 0,
            Err(err) => return Err(err.into()),
        };
        if changed > 0 {
            continue;
        }
        let stored = if missing_table()? {
            None
        } else {
            get(tx, name)?.map(|s| s.position)
        };
        match stored {
            None => {
                return Err(CoreError::SlotLost {
                    name: name.clone(),
                    position: *lsn,
                })
            }
            Some(stored) if stored > *lsn => {
                return Err(CoreError::SlotMoved {
                    name: name.clone(),
                    stored,
                    position: *lsn,
                })
            }
            Some(_) => {}
        }
    }
    if let Some(furthest) = positions.iter().map(|(_, lsn)| *lsn).max() {
        crate::log_state::raise_mark(tx, furthest)?;
    }
    Ok(())
}

/// Puts slot `name` back at `lsn` (the position its running consumer confirmed), creating
/// the slot table and the row if they are gone: the recovery from
/// [`CoreError::SlotLost`] and [`CoreError::SlotMoved`].
pub fn restore(conn: &Connection, name: &str, lsn: i64) -> Result<Slot> {
    ensure_tables(conn)?;
    conn.execute(
        "INSERT INTO __astha_slots (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
        (name, lsn),
    )?;
    get(conn, name)?.ok_or_else(|| CoreError::NoSuchSlot(name.to_string()))
}

/// Sets slot `name` to `lsn`, backward or forward: the operator's `astha slots reset`.
/// Moving back re-delivers what is still in the log after `lsn` (rows already cleaned
/// away are gone); moving forward skips changes. Never called by the engine itself.
pub fn reset(conn: &Connection, name: &str, lsn: i64) -> Result<Slot> {
    let changed = conn.execute(
        "UPDATE __astha_slots SET position = ?2,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE name = ?1",
        (name, lsn),
    )?;
    if changed == 0 {
        return Err(CoreError::NoSuchSlot(name.to_string()));
    }
    get(conn, name)?.ok_or_else(|| CoreError::NoSuchSlot(name.to_string()))
}

/// The lowest position of all slots (`None` without slots): the newest LSN cleanup may
/// remove at most.
pub fn slowest(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT min(position) FROM __astha_slots", [], |r| r.get(0))?)
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

/// How much one [`cleanup_some`] call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupBudget {
    /// Rows deleted per transaction at most.
    pub chunk_rows: usize,
    /// Start no new chunk once this many rows were deleted.
    pub max_rows: usize,
    /// Start no new chunk once this much time has passed.
    pub max_time: Duration,
}

impl Default for CleanupBudget {
    /// 2,000 rows a chunk (under 2 ms of write lock: deleting costs SQLite 0.8–0.9 µs a
    /// row whatever the chunk, `scripts/log_delete_cost.py`), up to 100,000 rows or 20 ms
    /// a call. Astha's slot writes queued behind a cleanup go after the chunk running
    /// ([`cleanup_upto_giving_way`]); with 10,000-row chunks they waited up to one 8–10 ms
    /// chunk, and delivery with them (BENCHMARKS.md).
    fn default() -> Self {
        Self {
            chunk_rows: 2_000,
            max_rows: 100_000,
            max_time: Duration::from_millis(20),
        }
    }
}

/// What one [`cleanup_some`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cleanup {
    /// Rows deleted (all of them committed).
    pub deleted: usize,
    /// True when nothing more is eligible; false when the budget ran out first, or the
    /// caller's `give_way` asked to stop ([`cleanup_upto_giving_way`]).
    pub finished: bool,
    /// True when it stopped early because `give_way` asked it to.
    pub gave_way: bool,
}

/// Deletes every log row that all slots are past, keeping the newest row, in chunks of
/// [`CleanupBudget::default`]'s size until nothing more is eligible. With no slot at all
/// nothing is deleted: a consumer added later may still want the rows.
/// Returns the number of rows deleted.
pub fn cleanup(conn: &Connection, log_table: &str) -> Result<usize> {
    let budget = CleanupBudget {
        max_rows: usize::MAX,
        max_time: Duration::MAX,
        ..CleanupBudget::default()
    };
    Ok(cleanup_some(conn, log_table, &budget)?.deleted)
}

/// Like [`cleanup`], but stops starting chunks once `budget` is spent, so a caller that
/// shares the connection can let other writes in before calling again. Rows deleted by
/// chunks before an error stay deleted.
pub fn cleanup_some(conn: &Connection, log_table: &str, budget: &CleanupBudget) -> Result<Cleanup> {
    cleanup_upto(conn, log_table, budget, i64::MAX)
}

/// Like [`cleanup_some`], and never past `upto` either: the lowest position the caller's
/// own consumers confirmed. A slot row removed by someone else holds nothing back in the
/// table until its consumer's next write restores it; this bound holds it meanwhile.
pub fn cleanup_upto(
    conn: &Connection,
    log_table: &str,
    budget: &CleanupBudget,
    upto: i64,
) -> Result<Cleanup> {
    cleanup_upto_giving_way(conn, log_table, budget, upto, &|| false)
}

/// Like [`cleanup_upto`], and after each chunk (at least one is always deleted when
/// any row is eligible) stops early when `give_way` says so: a caller that shares the
/// connection with short writes others wait for (Astha's slot writes, which hold back
/// delivery while they wait) lets them go before the rest.
pub fn cleanup_upto_giving_way(
    conn: &Connection,
    log_table: &str,
    budget: &CleanupBudget,
    upto: i64,
    give_way: &dyn Fn() -> bool,
) -> Result<Cleanup> {
    let log = quote_ident(log_table);
    // One statement per chunk, so one implicit transaction: the bounds on the slots and
    // on the newest row are read in the same transaction that deletes. The chunk is an
    // id range starting at the oldest row; ids are unique, so it holds at most
    // `chunk_rows` rows (fewer where earlier deletes left gaps).
    // A log whose head is below the LSN high-water mark restarted its sequence: its rows
    // may be new changes that the slots only seem to be past, so nothing is deleted.
    let trusted = if crate::schema::is_plain_table(conn, crate::log_state::TABLE)? {
        format!(
            "AND (SELECT max(id) FROM {log}) >= \
             coalesce((SELECT high_water FROM {} WHERE id = 1), 0)",
            crate::log_state::TABLE
        )
    } else {
        String::new()
    };
    // A slot can stop inside a marked transaction (batches end anywhere); the rows of
    // that transaction before it stay until every slot is past the transaction's end, so
    // a reader that comes back still finds the whole transaction and its changes keep
    // their exact `transaction` block ([`crate::transaction`]). The record that could
    // contain the bound is the first ending after it (transactions do not overlap).
    let bound = "min((SELECT min(position) FROM __astha_slots), ?2)";
    let limit = if crate::schema::is_plain_table(conn, crate::transaction::RECORD_TABLE)? {
        format!(
            "coalesce((SELECT CASE WHEN after_lsn < {bound} THEN after_lsn END FROM
                          (SELECT after_lsn FROM {} WHERE last_lsn > {bound}
                           ORDER BY last_lsn LIMIT 1)),
                      {bound})",
            crate::transaction::RECORD_TABLE
        )
    } else {
        bound.to_string()
    };
    let mut stmt = conn.prepare_cached(&format!(
        "DELETE FROM {log}
         WHERE id < (SELECT min(id) FROM {log}) + ?1
           AND id <= {limit}
           AND id < (SELECT max(id) FROM {log}) {trusted}"
    ))?;
    let chunk = budget.chunk_rows.max(1);
    let started = Instant::now();
    let mut done = Cleanup::default();
    loop {
        let deleted = stmt.execute([chunk as i64, upto])?;
        done.deleted += deleted;
        if deleted == 0 {
            done.finished = true;
            break;
        }
        if done.deleted >= budget.max_rows || started.elapsed() >= budget.max_time {
            break;
        }
        if give_way() {
            done.gave_way = true;
            break;
        }
    }
    if done.deleted > 0 {
        cleanup_wide(conn, log_table)?;
    }
    Ok(done)
}

/// Deletes the wide rows ([`crate::log_layout::wide_table`]) of the log rows cleanup
/// removed: every one below the oldest log row. (A wide row whose log row is gone is
/// never read: the reader takes a wide row only with the log row of its id.)
fn cleanup_wide(conn: &Connection, log_table: &str) -> Result<()> {
    let wide = crate::log_layout::wide_table(log_table);
    if !crate::schema::is_plain_table(conn, &wide)? {
        return Ok(());
    }
    conn.prepare_cached(&format!(
        "DELETE FROM {} WHERE id < (SELECT min(id) FROM {})",
        quote_ident(&wide),
        quote_ident(log_table)
    ))?
    .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "log";

    /// A database with slots and a log of rows `1..=rows` (cleanup reads nothing but ids).
    fn db(rows: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        ensure_tables(&conn).unwrap();
        conn.execute_batch("CREATE TABLE log (id INTEGER PRIMARY KEY, v INTEGER)")
            .unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO log (id, v) SELECT i, i FROM n WHERE i <= ?1",
            [rows],
        )
        .unwrap();
        conn
    }

    fn ids(conn: &Connection) -> (i64, i64, i64) {
        conn.query_row("SELECT count(*), min(id), max(id) FROM log", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
    }

    fn budget(chunk_rows: usize, max_rows: usize) -> CleanupBudget {
        CleanupBudget {
            chunk_rows,
            max_rows,
            max_time: Duration::MAX,
        }
    }

    #[test]
    fn cleanup_removes_rows_beyond_one_chunk_and_keeps_the_newest() {
        let conn = db(25_000);
        create(&conn, LOG, "a", SlotStart::At(25_000)).unwrap();
        assert!(25_000 > CleanupBudget::default().chunk_rows as i64 * 2);
        assert_eq!(cleanup(&conn, LOG).unwrap(), 24_999);
        assert_eq!(ids(&conn), (1, 25_000, 25_000), "the newest row stays");
        assert_eq!(cleanup(&conn, LOG).unwrap(), 0);
    }

    #[test]
    fn cleanup_never_passes_the_slowest_slot() {
        let conn = db(3_000);
        assert_eq!(cleanup(&conn, LOG).unwrap(), 0, "no slot, no cleanup");
        create(&conn, LOG, "fast", SlotStart::At(3_000)).unwrap();
        create(&conn, LOG, "slow", SlotStart::At(2_345)).unwrap();
        let done = cleanup_some(&conn, LOG, &budget(100, usize::MAX)).unwrap();
        assert_eq!(
            done,
            Cleanup {
                deleted: 2_345,
                finished: true,
                gave_way: false,
            }
        );
        assert_eq!(ids(&conn), (655, 2_346, 3_000));
    }

    #[test]
    fn cleanup_never_cuts_a_marked_transaction_a_slot_is_inside() {
        let conn = db(300);
        crate::transaction::install(&conn, LOG).unwrap();
        conn.execute_batch(
            "INSERT INTO __astha_transactions (after_lsn, last_lsn)
             VALUES (50, 60), (100, 110), (200, NULL), (250, 280);",
        )
        .unwrap();
        create(&conn, LOG, "a", SlotStart::At(105)).unwrap();
        assert_eq!(cleanup(&conn, LOG).unwrap(), 100, "rows 101..=105 stay");
        assert_eq!(ids(&conn).1, 101);
        // At the transaction's end, or in a record without one (ignored by readers):
        // up to the slot.
        advance(&conn, "a", 110).unwrap();
        assert_eq!(cleanup(&conn, LOG).unwrap(), 10);
        advance(&conn, "a", 205).unwrap();
        assert_eq!(cleanup(&conn, LOG).unwrap(), 95);
        advance(&conn, "a", 279).unwrap();
        assert_eq!(cleanup(&conn, LOG).unwrap(), 45, "up to 250");
        assert_eq!(ids(&conn).1, 251);
    }

    #[test]
    fn a_cleanup_asked_to_give_way_stops_after_one_chunk() {
        let conn = db(1_000);
        create(&conn, LOG, "a", SlotStart::At(1_000)).unwrap();
        let asked = std::cell::Cell::new(0);
        let give_way = || {
            asked.set(asked.get() + 1);
            true
        };
        let done =
            cleanup_upto_giving_way(&conn, LOG, &budget(100, usize::MAX), i64::MAX, &give_way)
                .unwrap();
        assert_eq!(
            done,
            Cleanup {
                deleted: 100,
                finished: false,
                gave_way: true,
            }
        );
        assert_eq!(asked.get(), 1, "asked once, after the first chunk");
        // Nobody waiting: it goes on to the end.
        let done =
            cleanup_upto_giving_way(&conn, LOG, &budget(100, usize::MAX), i64::MAX, &|| false)
                .unwrap();
        assert_eq!(
            (done.deleted, done.finished, done.gave_way),
            (899, true, false)
        );
        assert_eq!(ids(&conn), (1, 1_000, 1_000));
    }

    #[test]
    fn each_chunk_is_bounded_and_the_budget_stops_a_call() {
        let conn = db(1_000);
        create(&conn, LOG, "a", SlotStart::At(1_000)).unwrap();
        // One chunk per call once max_rows is reached.
        let done = cleanup_some(&conn, LOG, &budget(100, 1)).unwrap();
        assert_eq!((done.deleted, done.finished), (100, false));
        let done = cleanup_some(&conn, LOG, &budget(100, 250)).unwrap();
        assert_eq!((done.deleted, done.finished), (300, false));
        let time_spent = CleanupBudget {
            max_time: Duration::ZERO,
            ..budget(100, usize::MAX)
        };
        assert_eq!(cleanup_some(&conn, LOG, &time_spent).unwrap().deleted, 100);
        // A slot created between two calls, behind what was already deleted, holds the
        // rest.
        create(&conn, LOG, "late", SlotStart::At(600)).unwrap();
        let done = cleanup_some(&conn, LOG, &budget(100, usize::MAX)).unwrap();
        assert_eq!((done.deleted, done.finished), (100, true));
        assert_eq!(ids(&conn).1, 601);
    }

    #[test]
    fn gaps_in_the_ids_do_not_stall_cleanup() {
        let conn = db(0);
        for id in [1, 10, 1_000_000, 2_000_000, 2_000_001] {
            conn.execute("INSERT INTO log (id, v) VALUES (?1, 0)", [id])
                .unwrap();
        }
        create(&conn, LOG, "a", SlotStart::At(i64::MAX / 2)).unwrap();
        let done = cleanup_some(&conn, LOG, &budget(10, usize::MAX)).unwrap();
        assert_eq!(
            done,
            Cleanup {
                deleted: 4,
                finished: true,
                gave_way: false,
            }
        );
        assert_eq!(ids(&conn), (1, 2_000_001, 2_000_001));
    }

    /// A slot write that waits for the lock writes the positions confirmed while it
    /// waited, taken once it holds the lock, and says which it wrote.
    #[test]
    fn a_write_that_waited_for_the_lock_takes_the_positions_confirmed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = crate::db::open(&path).unwrap();
        ensure_tables(&conn).unwrap();
        conn.execute_batch("CREATE TABLE log (id INTEGER PRIMARY KEY, v INTEGER)")
            .unwrap();
        for name in ["a", "b"] {
            create(&conn, "log", name, SlotStart::At(0)).unwrap();
        }
        let pending = std::sync::Arc::new(std::sync::Mutex::new(vec![("a".to_string(), 5)]));
        // Another connection holds the write lock.
        let holder = crate::db::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let write = {
            let (path, pending) = (path.clone(), pending.clone());
            std::thread::spawn(move || {
                let conn = crate::db::open(&path).unwrap();
                started_tx.send(()).unwrap();
                advance_taking(&conn, || std::mem::take(&mut *pending.lock().unwrap()))
            })
        };
        started.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        // "b" confirms while the write waits; "a" confirms further.
        pending
            .lock()
            .unwrap()
            .extend([("b".to_string(), 7), ("a".to_string(), 9)]);
        holder.execute_batch("COMMIT").unwrap();
        let (mut written, outcome) = write.join().unwrap();
        outcome.unwrap();
        written.sort();
        assert_eq!(
            written,
            vec![
                ("a".to_string(), 5),
                ("a".to_string(), 9),
                ("b".to_string(), 7)
            ]
        );
        assert_eq!(get(&conn, "a").unwrap().unwrap().position, 9);
        assert_eq!(get(&conn, "b").unwrap().unwrap().position, 7);
        assert!(pending.lock().unwrap().is_empty());
    }
}
