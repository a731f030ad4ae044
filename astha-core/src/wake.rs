//! Wake-ups: hints that the change log may have grown. The log is the truth; a missed
//! or spurious wake-up costs latency, never data, because the poller also has a timer
//! backstop.
//!
//! Two sources feed the same process-wide list of listeners:
//! - a `wal_hook` on Astha's own writer connections, which SQLite calls after a commit,
//!   with the write lock released (a commit hook would fire before the commit is durable);
//! - a [`DataVersionWatcher`] thread polling `PRAGMA data_version` on a connection of its
//!   own, which changes whenever any *other* connection, in any process, commits. It may
//!   be given a test of what is news ([`DataVersionWatcher::start_filtered`]): then a
//!   commit that is not (Astha's own slot writes, a same-process commit whose hook
//!   already woke the poller and whose rows it has read) wakes nobody.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Result;

type Listener = Arc<dyn Fn() + Send + Sync>;

static LISTENERS: RwLock<Vec<(u64, Listener)>> = RwLock::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// WAL growth, in pages, after which a hooked connection runs a passive checkpoint.
/// Registering a `wal_hook` replaces SQLite's own auto-checkpoint, which uses the same
/// threshold.
const CHECKPOINT_PAGES: i32 = 1000;

thread_local! {
    /// WAL size at this thread's last checkpoint attempt.
    static LAST_CHECKPOINT: Cell<i32> = const { Cell::new(0) };
}

/// Whether a commit that left `pages` frames in the WAL should checkpoint, given the WAL
/// size at the last attempt; returns the new "last attempt" size.
///
/// SQLite's own rule checkpoints on every commit while the WAL holds 1000 frames or more.
/// The WAL only starts over once a checkpoint completed with no reader inside it, and
/// Astha's readers are inside it most of the time under load, so the WAL stays long and
/// that rule checkpoints (and syncs) on every commit. Checkpointing once per 1000 new
/// frames copies the same pages at a fraction of the cost.
fn checkpoint_due(last: i32, pages: i32) -> (bool, i32) {
    let last = if pages < last { 0 } else { last }; // the WAL started over
    if pages >= CHECKPOINT_PAGES && pages - last >= CHECKPOINT_PAGES {
        (true, pages)
    } else {
        (false, last)
    }
}

fn checkpoint_if_due(wal: &rusqlite::hooks::Wal, pages: i32) {
    let due = LAST_CHECKPOINT.with(|last| {
        let (due, next) = checkpoint_due(last.get(), pages);
        last.set(next);
        due
    });
    if due {
        // A passive checkpoint never blocks; what readers hold back is copied next time.
        let started = std::time::Instant::now();
        let _ = wal.checkpoint();
        CHECKPOINTS.fetch_add(1, Ordering::Relaxed);
        CHECKPOINT_US.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINT_US: AtomicU64 = AtomicU64::new(0);

/// Checkpoints the hooks of this process ran on committing threads so far, and their
/// total time in microseconds (for benchmarks and diagnostics: each one is time a
/// committing thread spent copying the WAL instead of writing).
pub fn checkpoint_counts() -> (u64, u64) {
    (
        CHECKPOINTS.load(Ordering::Relaxed),
        CHECKPOINT_US.load(Ordering::Relaxed),
    )
}

/// Keeps a listener registered; dropping it unregisters the listener.
pub struct Subscription(u64);

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut list) = LISTENERS.write() {
            list.retain(|(id, _)| *id != self.0);
        }
    }
}

/// Calls `listener` after every commit seen by a hook or a watcher in this process.
pub fn subscribe(listener: impl Fn() + Send + Sync + 'static) -> Subscription {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    LISTENERS
        .write()
        .expect("wake listener list poisoned")
        .push((id, Arc::new(listener)));
    Subscription(id)
}

/// Wakes every listener.
pub fn notify_all() {
    let listeners: Vec<Listener> = match LISTENERS.read() {
        Ok(list) => list.iter().map(|(_, l)| l.clone()).collect(),
        Err(_) => return,
    };
    for listener in listeners {
        listener();
    }
}

/// Makes commits on `conn` wake the listeners, give Astha's slot write the turn it asked
/// for ([`crate::write_turns::app_committed`]), and keep checkpointing the WAL.
///
/// Its commit hook (which says which database the commit is to) is Astha's: an
/// application that sets its own on the connection keeps the wake-ups and checkpoints,
/// and its commits then take no turns.
pub fn install_commit_hook(conn: &Connection) {
    if let Some(db) = conn
        .path()
        .and_then(|p| crate::write_turns::Database::of(std::path::Path::new(p)))
    {
        conn.commit_hook(Some(move || {
            crate::write_turns::app_committing(db);
            false // commit
        }));
    }
    fn on_commit(wal: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
        notify_all();
        crate::write_turns::app_committed();
        checkpoint_if_due(wal, pages);
        Ok(())
    }
    conn.wal_hook(Some(on_commit));
}

/// Replaces SQLite's auto-checkpoint on `conn` with the rule of `checkpoint_due` (below), for
/// connections whose commits need not wake the pollers (Astha's own bookkeeping writes);
/// their commits end the turn an application writer gave them
/// ([`crate::write_turns::astha_committed`]).
pub fn install_checkpoint_hook(conn: &Connection) {
    fn on_commit(wal: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
        crate::write_turns::astha_committed();
        checkpoint_if_due(wal, pages);
        Ok(())
    }
    conn.wal_hook(Some(on_commit));
}

/// A thread that polls `PRAGMA data_version` and wakes the listeners when it changes.
pub struct DataVersionWatcher {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl DataVersionWatcher {
    /// Starts watching the database of `conn`, polling every `interval`. The connection
    /// must be the watcher's own: it is moved to the watcher's thread (open it with
    /// [`crate::db::open`]).
    pub fn start(conn: Connection, interval: Duration) -> Result<Self> {
        Self::start_filtered(conn, interval, |_| true)
    }

    /// Like [`DataVersionWatcher::start`], but once `data_version` moved the watcher
    /// wakes the listeners only when `news` (asked on the watcher's connection and
    /// thread) says so. A filter that cannot tell should answer true: a wake-up too many
    /// costs a read, one too few costs latency up to the poller's backstop.
    pub fn start_filtered(
        conn: Connection,
        interval: Duration,
        news: impl FnMut(&Connection) -> bool + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("astha-data-version".into())
            .spawn(move || watch(conn, interval, &stop_flag, news))
            .map_err(|e| crate::error::CoreError::Invalid(format!("cannot spawn watcher: {e}")))?;
        Ok(Self {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = handle.join();
        }
    }
}

impl Drop for DataVersionWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(
    conn: Connection,
    interval: Duration,
    stop: &AtomicBool,
    mut news: impl FnMut(&Connection) -> bool,
) {
    // Cached: a thousand times a second, and parsing it (sqlite3RunParser,
    // sqlite3Prepare, sqlite3Pragma) took about a sixth of this thread's samples (perf,
    // latency bench at 1,000 commits/s).
    let read = |c: &Connection| {
        c.prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get::<_, i64>(0))
    };
    let mut last = read(&conn).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        match read(&conn) {
            Ok(version) if version != last => {
                last = version;
                if news(&conn) {
                    notify_all();
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "data_version poll failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checkpoint_due;

    #[test]
    fn checkpoints_once_per_thousand_new_frames_while_the_wal_cannot_start_over() {
        let mut last = 0;
        let mut attempts = Vec::new();
        // A WAL that keeps growing by 10 frames a commit (readers keep it from restarting).
        for pages in (10..=3500).step_by(10) {
            let (due, next) = checkpoint_due(last, pages);
            last = next;
            if due {
                attempts.push(pages);
            }
        }
        assert_eq!(attempts, [1000, 2000, 3000]);
        // The WAL started over: the count starts again from zero.
        assert_eq!(checkpoint_due(last, 20), (false, 0));
        assert_eq!(checkpoint_due(0, 1000), (true, 1000));
    }
}
