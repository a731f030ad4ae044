//! A bound on the WAL file: how big it is, and resetting it to empty when it is too big.
//!
//! SQLite's WAL starts over only when a checkpoint has copied every frame into the
//! database and no reader still reads from the WAL at the moment the next write begins.
//! Passive checkpoints (SQLite's automatic ones, and those of [`crate::wake`]'s hook) copy
//! only what no reader needs and never wait. Under a writer that never pauses, Astha's
//! reads are nearly always inside the WAL at those moments, so it never starts over and
//! grows without bound (150–200 MB per 200,000 captured rows in BENCHMARKS.md, "Where
//! the writer's time went"), and every checkpoint gets slower with it.
//!
//! [`reset`] runs a `RESTART` (or `TRUNCATE`) checkpoint: it takes the write lock, waits
//! (a bounded time) for the readers already inside the WAL to finish (readers that start
//! meanwhile do not hold it up) and copies every frame, so the next write starts the WAL
//! over from its first byte; `TRUNCATE` also empties the file. Writers wait meanwhile, as
//! they do for any other write of Astha's, so the wait is bounded, and most frames are
//! copied first by passive checkpoints, with no lock held. `RESTART` leaves the file at
//! its size, to be written over; truncating costs writers more (30 ms for a 100 MB file
//! here, against 3 ms), so it is for a file that got too big. It promises nothing is
//! lost: a checkpoint copies frames, never drops one, and one that could not finish
//! leaves the WAL as it was. It never decides when to run: the poller does
//! (`wal_max_bytes`, `astha_actors::wal_guard`).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::Result;

/// The WAL file of the database at `db` (SQLite names it after the database file).
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Size of the database's WAL file in bytes; 0 when there is none.
pub fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(wal_path(db)).map_or(0, |m| m.len())
}

/// How a [`reset`] leaves the WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// At its size, written over from the start by the next writes.
    Restart,
    /// Empty.
    Truncate,
}

impl ResetMode {
    fn pragma(self) -> &'static str {
        match self {
            ResetMode::Restart => "PRAGMA wal_checkpoint(RESTART)",
            ResetMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        }
    }
}

/// Copies every WAL frame into the database so that the next write starts the WAL over
/// (and with [`ResetMode::Truncate`] empties the file), waiting at most `wait` for the
/// write lock and for readers that still need frames; true when it did. False when a
/// reader still needed frames when `wait` ran out (or another checkpoint kept running):
/// the frames it could copy were copied and the WAL is otherwise as it was. Must not run
/// inside a transaction. Leaves `conn` with the busy handler of
/// [`crate::db::use_fast_busy_handler`], the one of Astha's bookkeeping writer.
///
/// While it waits it yields the CPU and tries again rather than sleeping: a writer that
/// commits back to back frees the write lock for microseconds between transactions, and a
/// sleeping waiter (SQLite's `busy_timeout`) wakes on the wrong side of that gap again
/// and again (docs/DESIGN.md, the writer's busy handler).
pub fn reset(conn: &Connection, mode: ResetMode, wait: Duration) -> Result<bool> {
    let outcome = copy_without_the_lock(conn).and_then(|()| {
        DEADLINE.with(|d| d.set(Some(Instant::now() + wait)));
        conn.busy_handler(Some(until_deadline))?;
        loop {
            // The row is (busy, frames in the WAL, frames copied): only `busy` matters.
            let busy: i64 = conn.query_row(mode.pragma(), [], |r| r.get(0))?;
            // Another connection's checkpoint (a writer's automatic one) makes it busy at
            // once, without waiting: try again while the wait lasts.
            if busy == 0 || !until_deadline(YIELDS) {
                break Ok(busy == 0);
            }
        }
    });
    DEADLINE.with(|d| d.set(None));
    crate::db::use_fast_busy_handler(conn)?;
    Ok(outcome?)
}

/// Passive checkpoints (they wait for nothing and block no one) while writers keep
/// appending, until few frames are left to copy with the write lock held; while another
/// connection's checkpoint runs, lets it finish first.
fn copy_without_the_lock(conn: &Connection) -> rusqlite::Result<()> {
    for _ in 0..PASSIVE_ROUNDS {
        let (busy, frames, copied): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy != 0 {
            std::thread::sleep(Duration::from_millis(1));
        } else if frames - copied <= LEFT_FOR_THE_LOCK {
            break;
        }
    }
    Ok(())
}

/// Passive checkpoints at most (or 1 ms pauses while another checkpoint runs) before
/// the one that takes the write lock.
const PASSIVE_ROUNDS: usize = 20;
/// Frames (4 KiB pages by default) few enough to copy with writers waiting.
const LEFT_FOR_THE_LOCK: i64 = 256;

/// Yields between tries for the first few milliseconds, then sleeps 250 µs.
const YIELDS: i32 = 4_000;

thread_local! {
    /// When the running [`reset`] on this thread stops waiting.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn until_deadline(tries: i32) -> bool {
    match DEADLINE.with(Cell::get) {
        Some(deadline) if Instant::now() < deadline => {
            if tries < YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(250));
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grow(conn: &Connection, rows: i64) {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (v BLOB)")
            .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..rows {
            tx.execute("INSERT INTO t VALUES (randomblob(1000))", [])
                .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_truncation_empties_the_wal_file_and_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = crate::db::open(&path).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        grow(&conn, 500);
        assert!(wal_bytes(&path) > 500_000, "{}", wal_bytes(&path));
        assert!(reset(&conn, ResetMode::Truncate, Duration::from_millis(100)).unwrap());
        assert_eq!(wal_bytes(&path), 0);
        let other = crate::db::open(&path).unwrap();
        let rows: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 500);
    }

    #[test]
    fn a_restart_keeps_the_file_and_the_next_writes_go_over_it_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = crate::db::open(&path).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        grow(&conn, 500);
        let size = wal_bytes(&path);
        assert!(reset(&conn, ResetMode::Restart, Duration::from_millis(100)).unwrap());
        assert_eq!(wal_bytes(&path), size, "the file is kept");
        // Without the restart these writes would append past `size`.
        grow(&conn, 300);
        assert_eq!(wal_bytes(&path), size, "written over from the start");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 800);
    }

    #[test]
    fn a_reader_inside_the_wal_makes_it_incomplete_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = crate::db::open(&path).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        grow(&conn, 100);
        let reader = crate::db::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        grow(&conn, 100);
        let before = wal_bytes(&path);
        let started = Instant::now();
        assert!(!reset(&conn, ResetMode::Truncate, Duration::from_millis(50)).unwrap());
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "it waited for the reader"
        );
        assert_eq!(wal_bytes(&path), before, "the file is left as it was");
        // The reader still sees its snapshot; once it ends, a truncation completes.
        let still: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!((seen, still), (100, 100));
        reader.execute_batch("COMMIT").unwrap();
        assert!(reset(&conn, ResetMode::Truncate, Duration::from_millis(50)).unwrap());
        assert_eq!(wal_bytes(&path), 0);
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 200);
    }
}
