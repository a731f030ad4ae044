//! The change log's LSN sequence: its high-water mark and its epoch, kept in
//! `__astha_log_state`, and the guard that keeps SQLite from numbering a row twice.
//!
//! SQLite numbers a new log row `max(id) + 1`, so an LSN could be handed out again only
//! if the newest row went away. Three things keep that from happening or make it loud:
//! - **the guard**: a `BEFORE DELETE` trigger on the log ignores the deletion of its
//!   newest row, whoever deletes (`DELETE FROM __cdc_log` by hand leaves that one row).
//!   It costs a captured write nothing (it fires on deletes only); cleanup pays one index
//!   probe per row it deletes;
//! - **the mark**: the highest LSN Astha knows was handed out, raised when slots advance
//!   and when the janitor cleans, so it survives the log being dropped. A log created
//!   again starts with a placeholder row at the mark ([`is_placeholder`]: never
//!   delivered, removed by cleanup), so numbering goes on after it;
//! - **the check** ([`check`]): a log whose newest row is below the mark, a slot, or what
//!   this process already read, has restarted its sequence (a rollback, a restore, an edit
//!   with the guard removed). Astha then refuses: cleanup deletes nothing, the epoch
//!   changes, and the caller reports it.
//!
//! The **epoch** names one unbroken LSN sequence. It is created with the log's state,
//! and changed whenever the check finds the sequence restarted, so `<identity>:<epoch>:
//! <lsn>` (every message id, docs/FORMATS.md) never names two different changes.
//!
//! It never renumbers rows and never moves a slot: what to re-deliver after a restart is
//! the operator's decision (`astha slots reset`).

use rusqlite::{Connection, OptionalExtension};

use crate::error::{CoreError, Result};
use crate::ident::quote_ident;

/// The table holding the mark and the epoch (one row).
pub const TABLE: &str = "__astha_log_state";

/// `op` of the placeholder row a re-created log starts with.
pub const PLACEHOLDER_OP: &str = "-";

/// The state of the log's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// Names the current unbroken LSN sequence.
    pub epoch: String,
    /// The highest LSN known to have been handed out.
    pub high_water: i64,
}

/// Why the log's sequence is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the change log's newest LSN is {head}, below {expected} ({reason}): its sequence \
     restarted (emptied, dropped, rolled back or restored), so new changes would reuse \
     LSNs every slot is already past. Cleanup is stopped and the epoch changed to \
     {new_epoch}; check what happened, then reset the slots (`astha slots reset`)"
)]
pub struct SequenceRestarted {
    pub head: i64,
    pub expected: i64,
    pub reason: &'static str,
    pub new_epoch: String,
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Name of the trigger that keeps the log's newest row.
pub fn guard_name(log_table: &str) -> String {
    format!("__astha_keep_newest_{log_table}")
}

/// Creates the state (with a new epoch, the mark at the log's head) if missing, and the
/// guard if the log exists.
pub fn ensure(conn: &Connection, log_table: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            epoch TEXT NOT NULL,
            high_water INTEGER NOT NULL
        );"
    ))?;
    let mut head = 0;
    if crate::schema::is_plain_table(conn, log_table)? {
        let log = quote_ident(log_table);
        conn.execute_batch(&format!(
            "CREATE TRIGGER IF NOT EXISTS {guard} BEFORE DELETE ON {log}
            WHEN NOT EXISTS (SELECT 1 FROM {log} WHERE id > OLD.id)
            BEGIN SELECT RAISE(IGNORE); END;",
            guard = quote_ident(&guard_name(log_table)),
        ))?;
        head = crate::log::head_lsn(conn, log_table)?;
    }
    conn.execute(
        &format!("INSERT OR IGNORE INTO {TABLE} (id, epoch, high_water) VALUES (1, ?1, ?2)"),
        (new_epoch(), head),
    )?;
    Ok(())
}

/// The state, if it was created.
pub fn read(conn: &Connection) -> Result<Option<LogState>> {
    if !crate::schema::is_plain_table(conn, TABLE)? {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            &format!("SELECT epoch, high_water FROM {TABLE} WHERE id = 1"),
            [],
            |r| {
                Ok(LogState {
                    epoch: r.get(0)?,
                    high_water: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The current epoch, creating the state if needed.
pub fn epoch(conn: &Connection, log_table: &str) -> Result<String> {
    ensure(conn, log_table)?;
    read(conn)?
        .map(|s| s.epoch)
        .ok_or_else(|| CoreError::Invalid(format!("{TABLE} has no row")))
}

/// Raises the mark to `lsn` (never lowers it). Writes nothing when it is already there,
/// or when there is no state yet (a database Astha's log was never created in).
pub fn raise_mark(conn: &Connection, lsn: i64) -> Result<()> {
    let raised = conn
        .prepare_cached(&format!(
            "UPDATE {TABLE} SET high_water = ?1 WHERE id = 1 AND high_water < ?1"
        ))
        .and_then(|mut stmt| stmt.execute([lsn]));
    match raised {
        Ok(_) => Ok(()),
        Err(_) if !crate::schema::is_plain_table(conn, TABLE)? => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Where numbering must go on in a log created again: the mark, or a slot past it.
pub fn floor(conn: &Connection) -> Result<i64> {
    let mark = read(conn)?.map_or(0, |s| s.high_water);
    let slots = if crate::schema::is_plain_table(conn, "__astha_slots")? {
        conn.query_row("SELECT max(position) FROM __astha_slots", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0)
    } else {
        0
    };
    Ok(mark.max(slots))
}

/// Writes the placeholder row at `lsn` into an empty, just created log, so SQLite numbers
/// the next row `lsn + 1`.
pub fn write_placeholder(conn: &Connection, log_table: &str, lsn: i64) -> Result<()> {
    if lsn <= 0 {
        return Ok(());
    }
    conn.execute(
        &format!(
            "INSERT INTO {} (id, ts, tbl, op, schema_id) VALUES (?1, julianday('now'), ?2, ?3, 0)",
            quote_ident(log_table)
        ),
        (lsn, log_table, PLACEHOLDER_OP),
    )?;
    Ok(())
}

/// Re-bases after [`check`] found the sequence restarted: every slot past the log's head
/// moves back to just before the oldest row still in the log, and the mark comes down to
/// the head. Those slots' consumers get every retained change again, under the new epoch
/// (so with new message ids): duplicates, never a skipped change. Returns the slots moved,
/// with their old and new positions.
pub fn rebase(conn: &Connection, log_table: &str) -> Result<Vec<(String, i64, i64)>> {
    crate::capture::in_savepoint(conn, |conn| {
        let head = crate::log::head_lsn(conn, log_table)?;
        let oldest: Option<i64> = conn.query_row(
            &format!("SELECT min(id) FROM {}", quote_ident(log_table)),
            [],
            |r| r.get(0),
        )?;
        let to = oldest.map_or(head, |o| o - 1).max(0);
        let moved = crate::slots::list(conn)?
            .into_iter()
            .filter(|s| s.position > head)
            .map(|s| (s.name, s.position, to))
            .collect::<Vec<_>>();
        for (name, _, to) in &moved {
            crate::slots::reset(conn, name, *to)?;
        }
        conn.execute(
            &format!("UPDATE {TABLE} SET high_water = ?1 WHERE id = 1"),
            [head],
        )?;
        Ok(moved)
    })
}

/// Slots behind the oldest row still in the log, with a gap between: `(name, position,
/// oldest)`. Cleanup never removes a row a slot is not past, so such a slot was moved
/// back (or created) behind rows already removed: changes `position + 1 .. oldest - 1`
/// are gone for its consumer. The placeholder row of a re-created log counts as a row.
pub fn slots_behind_log(conn: &Connection, log_table: &str) -> Result<Vec<(String, i64, i64)>> {
    let oldest: Option<i64> = conn.query_row(
        &format!("SELECT min(id) FROM {}", quote_ident(log_table)),
        [],
        |r| r.get(0),
    )?;
    let Some(oldest) = oldest else {
        return Ok(Vec::new());
    };
    Ok(crate::slots::list(conn)?
        .into_iter()
        .filter(|s| s.position + 1 < oldest)
        .map(|s| (s.name, s.position, oldest))
        .collect())
}

/// True for the placeholder row of a re-created log (it names the log itself, which is
/// never a captured table).
pub fn is_placeholder(log_table: &str, table: &str, op: &str) -> bool {
    table == log_table && op == PLACEHOLDER_OP
}

/// Checks the log's head against the mark, `seen` (the newest LSN this process read, 0
/// if none) and, with `slots_too`, every slot. When the head is below any of them the
/// sequence restarted: a new epoch is written and the finding returned, for the caller
/// to report. Cleanup refuses by itself in that state ([`crate::slots::cleanup_some`]).
///
/// A running Astha passes `slots_too = false`: its routes hold the true positions and
/// put back a slot someone moved ([`crate::slots::advance_many`]), so a slot past the
/// head then is an edit to undo, not a restarted sequence. At start nothing else knows.
pub fn check(
    conn: &Connection,
    log_table: &str,
    seen: i64,
    slots_too: bool,
) -> Result<Option<SequenceRestarted>> {
    let Some(state) = read(conn)? else {
        return Ok(None);
    };
    let head = crate::log::head_lsn(conn, log_table)?;
    let slots = if slots_too {
        conn.query_row("SELECT max(position) FROM __astha_slots", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .unwrap_or(None)
        .flatten()
        .unwrap_or(0)
    } else {
        0
    };
    let (expected, reason) = [
        (state.high_water, "the high-water mark"),
        (slots, "a slot's position"),
        (seen, "what Astha already read"),
    ]
    .into_iter()
    .max_by_key(|(lsn, _)| *lsn)
    .expect("three candidates");
    if head >= expected {
        return Ok(None);
    }
    let epoch = new_epoch();
    conn.execute(
        &format!("UPDATE {TABLE} SET epoch = ?1 WHERE id = 1"),
        [&epoch],
    )?;
    Ok(Some(SequenceRestarted {
        head,
        expected,
        reason,
        new_epoch: epoch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;

    fn db() -> (Connection, Capture) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
            .unwrap();
        let capture = Capture::new("__cdc_log");
        capture.install(&conn, "t").unwrap();
        (conn, capture)
    }

    fn head(conn: &Connection) -> i64 {
        crate::log::head_lsn(conn, "__cdc_log").unwrap()
    }

    #[test]
    fn deleting_every_log_row_keeps_the_newest_so_no_lsn_is_reused() {
        let (conn, _) = db();
        for v in 0..5 {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
        }
        conn.execute_batch("DELETE FROM __cdc_log").unwrap();
        assert_eq!(head(&conn), 5, "the newest row stays");
        conn.execute_batch("DELETE FROM __cdc_log WHERE id = 5")
            .unwrap();
        assert_eq!(head(&conn), 5);
        conn.execute("INSERT INTO t (v) VALUES (9)", []).unwrap();
        assert_eq!(head(&conn), 6);
        assert_eq!(check(&conn, "__cdc_log", 6, true).unwrap(), None);
    }

    #[test]
    fn a_head_below_the_mark_a_slot_or_what_was_read_is_a_restart_and_changes_the_epoch() {
        let (conn, _) = db();
        let before = read(&conn).unwrap().unwrap();
        assert_eq!(check(&conn, "__cdc_log", 0, true).unwrap(), None);
        let found = check(&conn, "__cdc_log", 7, true).unwrap().unwrap();
        assert_eq!((found.head, found.expected), (0, 7));
        assert_ne!(read(&conn).unwrap().unwrap().epoch, before.epoch);
        raise_mark(&conn, 9).unwrap();
        raise_mark(&conn, 3).unwrap();
        assert_eq!(read(&conn).unwrap().unwrap().high_water, 9);
        let found = check(&conn, "__cdc_log", 0, true).unwrap().unwrap();
        assert_eq!(found.reason, "the high-water mark");
        assert_eq!(floor(&conn).unwrap(), 9);
        crate::slots::create(&conn, "__cdc_log", "s", crate::slots::SlotStart::At(12)).unwrap();
        conn.execute("INSERT INTO t (v) VALUES (1)", []).unwrap();
        let moved = rebase(&conn, "__cdc_log").unwrap();
        assert_eq!(moved, vec![("s".to_string(), 12, 0)]);
        assert_eq!(read(&conn).unwrap().unwrap().high_water, 1);
        assert_eq!(check(&conn, "__cdc_log", 0, true).unwrap(), None);
    }
}
