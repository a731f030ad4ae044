//! Opening SQLite connections the way Astha needs them.
//!
//! Every connection Astha opens is in WAL mode with `synchronous=NORMAL`, waits on a
//! busy database instead of failing at once, and fires delete triggers on `REPLACE`
//! (`recursive_triggers`), so a replaced row is captured as a DELETE then an INSERT.
//! Writer connections also get the commit hook of [`crate::wake`], which tells the poller
//! within microseconds that something was committed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;

/// How long a statement waits for a lock held by another connection before it fails
/// with `SQLITE_BUSY`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) a read-write connection configured for Astha.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens an existing database; fails if the file does not exist.
pub fn open_existing(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens an existing database for reading only: it never creates the file (a path that
/// is gone stays gone), never changes its journal mode and can never write (what `astha
/// status`, the inspection commands and the metrics reader use on a database an
/// application owns).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Opens a connection whose commits wake this process's pollers at once and take turns
/// at the write lock with Astha's slot writes ([`crate::write_turns`]), and whose busy
/// handler is [`writer_retry`].
pub fn open_writer(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    crate::wake::install_commit_hook(&conn);
    conn.busy_handler(Some(writer_retry))?;
    Ok(conn)
}

/// The busy handler of [`open_writer`]'s connections: waits as [`writer_busy_delay`] says
/// for the time waited so far, or less when Astha's writer commits first (its writes are
/// what mostly holds the lock beside the application's:
/// [`crate::write_turns::app_wait`]); false once 5 s are spent.
///
/// The wait is counted in time, not in tries: Astha's commits wake a waiting writer
/// early, so under Astha's writes back to back (a cleanup, a burst of dead letters) a
/// writer may be woken hundreds of times a second, and a budget counted in tries was spent
/// in milliseconds, failing the application's write with `SQLITE_BUSY` (test
/// `write_turns::a_writer_kept_from_the_lock_by_back_to_back_astha_commits_waits_instead_of_failing`).
pub fn writer_retry(count: i32) -> bool {
    match writer_busy_delay(waited_for_lock(count)) {
        Some(delay) => {
            crate::write_turns::app_wait(delay);
            true
        }
        None => false,
    }
}

/// How long this thread has waited for the write lock, given the busy handler's `count`
/// of tries (0 on the first: a new wait starts then). One wait at a time per thread: a
/// busy handler is called within one statement's step, on its thread.
fn waited_for_lock(count: i32) -> Duration {
    thread_local! {
        /// When this thread's current wait for the lock began.
        static WAIT_STARTED: std::cell::Cell<Option<std::time::Instant>> =
            const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let started = WAIT_STARTED.with(|s| match s.get() {
        Some(started) if count > 0 => started,
        _ => {
            s.set(Some(now));
            now
        }
    });
    now - started
}

/// How long a writer ([`open_writer`]) sleeps before its next try for a write lock
/// someone holds, having waited `waited` so far; `None` once 5 s (the busy timeout) are
/// spent.
///
/// What holds the lock beside a user's writer is mostly Astha's own short writes (a slot
/// position: well under a millisecond). SQLite's busy timeout sleeps 1, 2, 5, 10 ... ms,
/// so each such collision cost the writer 1–3 ms for a lock free after a fraction of one:
/// 275–316 ms of a 1.3 s run of 200,000 rows (BENCHMARKS.md). So the first 2 ms are
/// slept in 100 µs steps, then SQLite's schedule, each step chosen by the time waited. It
/// sleeps, never spins: a writer that yielded and retried instead (as Astha's own
/// connection does, [`use_fast_busy_handler`]) took CPU from Astha's threads on a 2-core
/// machine and doubled same-process delivery latency at 10k commits/s.
pub fn writer_busy_delay(waited: Duration) -> Option<Duration> {
    const SHORT_PHASE: Duration = Duration::from_millis(2);
    const SHORT: Duration = Duration::from_micros(100);
    // SQLite's own schedule (sqliteDefaultBusyCallback with usleep), in ms; 100 after it.
    const DELAYS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    let left = DEFAULT_BUSY_TIMEOUT.saturating_sub(waited);
    if left.is_zero() {
        return None;
    }
    if waited < SHORT_PHASE {
        return Some(SHORT.min(left));
    }
    // The step of SQLite's schedule reached after this long in it.
    let mut in_schedule = (waited - SHORT_PHASE).as_millis() as u64;
    let mut delay = 100;
    for step in DELAYS {
        if in_schedule < step {
            delay = step;
            break;
        }
        in_schedule -= step;
    }
    Some(Duration::from_millis(delay).min(left))
}

/// Configures a connection that makes Astha's own short writes (slot positions, dead
/// letters, cleanup).
///
/// SQLite's busy timeout sleeps 1, 2, 5, 10 ... ms between tries. A writer committing
/// flat out holds the write lock nearly all the time and frees it for a few microseconds
/// between transactions, so a sleeping waiter wakes up on the wrong side of that gap again
/// and again (and Linux stretches a 25 µs sleep to about 80 µs). A slot write (run with
/// [`crate::write_turns::taking_turns`]) asks an active application writer of this
/// process for the next turn and sleeps until its commit hands the lock over
/// ([`crate::write_turns::astha_wait`]). Otherwise (other writes, or a writer in another
/// process, whose commits are not seen here) the handler yields the CPU and tries again
/// for 5 ms (enough to catch the gap after one of the writer's transactions), then sleeps
/// 250 µs between tries; it gives up after the same 5 s as the busy timeout, counted in
/// time (a turn asked for may sleep up to 2 ms a try). A connection whose writes take
/// turns also needs [`crate::wake::install_checkpoint_hook`]: its commits end the turn
/// it was given.
pub fn use_fast_busy_handler(conn: &Connection) -> Result<()> {
    const YIELD_FOR: Duration = Duration::from_millis(5);
    const PAUSE: Duration = Duration::from_micros(250);
    fn retry(count: i32) -> bool {
        let waited = waited_for_lock(count);
        if waited >= DEFAULT_BUSY_TIMEOUT {
            return false;
        }
        if crate::write_turns::astha_wait() {
            return true;
        }
        match waited < YIELD_FOR {
            true => std::thread::yield_now(),
            false => std::thread::sleep(PAUSE),
        }
        true
    }
    conn.busy_handler(Some(retry))?;
    Ok(())
}

/// Keeps the query plans of `conn`'s statements from depending on the values bound to
/// them (SQLite's query planner stability guarantee), for Astha's own connections.
///
/// Without it, the bundled SQLite (built with `SQLITE_ENABLE_STAT4`) reads a bound
/// `LIMIT ?` while preparing, and any later binding of that parameter expires the
/// statement: the log read (`... ORDER BY id LIMIT ?2`) was parsed and planned again on
/// every read, a cached statement notwithstanding (a fifth of the poll thread's time in
/// the latency bench went to `sqlite3RunParser` and the planner, called from
/// `sqlite3_step` through `sqlite3Reprepare`). Astha's statements gain nothing from
/// value-dependent plans. Not set on `open_writer`'s connections: they are the
/// application's, and so are their plans.
pub fn use_stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Prepared statements each of Astha's own connections keeps (rusqlite's default is 16).
pub const STATEMENT_CACHE: usize = 128;

/// Lets `conn` keep [`STATEMENT_CACHE`] prepared statements, for Astha's own connections.
///
/// rusqlite's cache keeps the 16 used last. Astha's write connection cycles through more
/// than that (slot writes, the log's mark, cleanup, dead letters, leases, the WAL bound,
/// trigger checks), so under load each job found its statements evicted and prepared
/// them again: in the latency bench at 10,000 commits/s a fifth of the write thread's
/// time went to the cache's evictions (`StatementCache::cache_stmt`, finalizing) and a
/// tenth to SQLite's parser. A statement costs a few KiB; 128 of them bound the cache.
pub fn keep_prepared_statements(conn: &Connection) {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
}

/// A deferred transaction begun and committed with cached statements: rusqlite's
/// `Transaction` runs `BEGIN` and `COMMIT` through `execute_batch`, which parses them
/// again each time (measured: SQLite's parser was the largest entry of the poll
/// thread's reads and of the write thread's slot writes, thousands of each a second).
/// Dropped before [`CachedTransaction::commit`] succeeded, it rolls back.
pub struct CachedTransaction<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> CachedTransaction<'c> {
    /// `BEGIN` on `conn`, which must not be in a transaction already.
    pub fn begin(conn: &'c Connection) -> Result<Self> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(Self { conn, open: true })
    }

    /// `BEGIN IMMEDIATE` on `conn`: the write lock is taken now (the connection's busy
    /// handler waits for it), not at the first write.
    pub fn begin_immediate(conn: &'c Connection) -> Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self { conn, open: true })
    }

    /// `COMMIT`; on failure the transaction is rolled back.
    pub fn commit(mut self) -> Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for CachedTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for CachedTransaction<'_> {
    fn drop(&mut self) {
        // Rare (an error or a panic in the transaction): parsed, as rusqlite does.
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)?;
    // journal_mode returns a row; pragma_update would reject that.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL; PRAGMA recursive_triggers=ON; PRAGMA foreign_keys=ON;",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_waits_in_short_sleeps_first_then_as_sqlite_for_five_seconds_in_all() {
        let ms = Duration::from_millis;
        assert_eq!(writer_busy_delay(ms(0)), Some(Duration::from_micros(100)));
        assert_eq!(
            writer_busy_delay(Duration::from_micros(1_950)),
            Some(Duration::from_micros(100))
        );
        assert_eq!(writer_busy_delay(ms(2)), Some(ms(1)));
        assert_eq!(writer_busy_delay(ms(3)), Some(ms(2)));
        assert_eq!(
            writer_busy_delay(ms(4)),
            Some(ms(2)),
            "chosen by time waited"
        );
        assert_eq!(writer_busy_delay(ms(500)), Some(ms(100)));
        assert_eq!(writer_busy_delay(ms(4_950)), Some(ms(50)), "never past 5 s");
        assert_eq!(writer_busy_delay(DEFAULT_BUSY_TIMEOUT), None);
        // Slept in full, the waits add up to the busy timeout.
        let mut waited = Duration::ZERO;
        while let Some(delay) = writer_busy_delay(waited) {
            waited += delay;
        }
        assert_eq!(waited, DEFAULT_BUSY_TIMEOUT);
    }

    #[test]
    fn a_cached_transaction_commits_or_rolls_back_when_dropped() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        for _ in 0..3 {
            let tx = CachedTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
            assert!(!conn.is_autocommit());
            tx.commit().unwrap();
            assert!(conn.is_autocommit());
        }
        assert_eq!(count(&conn), 3);
        {
            let tx = CachedTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        }
        assert!(conn.is_autocommit(), "dropped uncommitted: rolled back");
        assert_eq!(count(&conn), 3);
        // A COMMIT that fails leaves nothing open either.
        conn.execute_batch("CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED); PRAGMA foreign_keys=ON;")
            .unwrap();
        let tx = CachedTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO c VALUES (7)", []).unwrap();
        assert!(
            tx.commit().is_err(),
            "a deferred foreign key fails the COMMIT"
        );
        assert!(conn.is_autocommit());
        let children: i64 = conn
            .query_row("SELECT count(*) FROM c", [], |r| r.get(0))
            .unwrap();
        assert_eq!(children, 0);
    }
}
