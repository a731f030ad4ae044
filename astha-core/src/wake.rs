//! Wake-ups: hints that the change log may have grown. The log is the truth; a missed
//! or spurious wake-up costs latency, never data, because the poller also has a timer
//! backstop.
//!
//! Two sources feed the same process-wide list of listeners:
//! - a `wal_hook` on Astha's own writer connections, which SQLite calls after a commit,
//!   with the write lock released (a commit hook would fire before the commit is durable);
//! - a [`DataVersionWatcher`] thread polling `PRAGMA data_version` on a connection of its
//!   own, which changes whenever any *other* connection, in any process, commits.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::Result;

type Listener = Arc<dyn Fn() + Send + Sync>;

static LISTENERS: RwLock<Vec<(u64, Listener)>> = RwLock::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// WAL size, in pages, at which the commit hook runs a passive checkpoint. Registering a
/// `wal_hook` replaces SQLite's own auto-checkpoint, which uses the same threshold.
const CHECKPOINT_PAGES: i32 = 1000;

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

/// Makes commits on `conn` wake the listeners, and keeps checkpointing the WAL.
pub fn install_commit_hook(conn: &Connection) {
    fn on_commit(wal: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
        notify_all();
        if pages >= CHECKPOINT_PAGES {
            // A passive checkpoint never blocks; if readers hold it back it resumes next time.
            let _ = wal.checkpoint();
        }
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
    /// Starts watching the database at `path`, polling every `interval`.
    pub fn start(path: &Path, interval: Duration) -> Result<Self> {
        let conn = crate::db::open(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("astha-data-version".into())
            .spawn(move || watch(conn, interval, &stop_flag))
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

fn watch(conn: Connection, interval: Duration, stop: &AtomicBool) {
    let read = |c: &Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
    let mut last = read(&conn).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        match read(&conn) {
            Ok(version) if version != last => {
                last = version;
                notify_all();
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "data_version poll failed"),
        }
    }
}
