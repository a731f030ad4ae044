//! Blocking SQLite work, kept off the async executor and on a fixed set of threads.
//!
//! Every read of the change log and every write of Astha's own bookkeeping (slots, dead
//! letters, cleanup, trigger regeneration) goes through [`Store`], which runs it on
//! threads the store owns (see [`crate::pool`]), never on an executor thread and never on
//! the host runtime's blocking pool. The poller's reads run on a thread of their own,
//! other reads on [`READ_THREADS`] threads, each with its own connection and schema
//! cache; writes run on one thread with the one writer
//! connection, so Astha never competes with itself for SQLite's single write lock and
//! its writes run in the order they were asked for. Threads, connections and queued jobs
//! are all bounded, so SQLite's memory is too. When the last clone of a store is
//! dropped, its threads finish the jobs already queued and exit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use astha_core::capture::Capture;
use astha_core::log::{Batch, BatchLimits, LogReader};
use astha_core::write_turns::Database;
use astha_core::{CoreError, Result};
use rusqlite::Connection;

use crate::pool::{Pool, PoolError};

/// Threads (and connections) serving the reads of components catching up from the log
/// and other queries; further reads wait their turn. The poller's reads have a thread of
/// their own: never queued behind a catch-up, and always on the same connection (with
/// its prepared statements and schema cache warm).
pub const READ_THREADS: usize = 3;

/// Page cache of each read connection, in KiB (SQLite's default is 2,000). Reads scan
/// the log in id order, so a cached page is rarely read twice, and in WAL mode a read
/// that starts after any commit (every slot write is one) begins with an empty cache
/// (`pagerBeginReadTransaction` resets it when the WAL changed). The bundled SQLite
/// is built with `SQLITE_ENABLE_MEMORY_MANAGEMENT`, so the connections of a process share
/// one cache whose limit is the sum of theirs: this also lowers what any one connection
/// (the writer during cleanup, say) may fill.
pub const READER_CACHE_KIB: i64 = 256;

/// Jobs each of the read and write queues holds; callers beyond it wait (asynchronously)
/// for a place.
pub const QUEUE_JOBS: usize = 64;

/// Handle to the database Astha watches. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The file opened (device and inode), to notice it deleted or replaced; slot writes
    /// also take turns at its lock by it.
    file: Option<Database>,
    capture: Capture,
    /// Shared by the write thread and [`Store::write_blocking`].
    writer: Arc<Mutex<Connection>>,
    writes: Pool<Arc<Mutex<Connection>>>,
    /// The poller's reads.
    live: Pool<ReaderSlot>,
    reads: Pool<ReaderSlot>,
}

/// A read thread's connection, opened on its first read (and again after a panic).
struct ReaderSlot {
    path: PathBuf,
    log_table: String,
    reader: Option<Reader>,
}

struct Reader {
    conn: Connection,
    log: LogReader,
    /// When the WAL file was last measured, and its size then.
    wal_measured: Option<(Instant, u64)>,
}

/// How often the poll thread measures the WAL file at most: a `stat` walks the path,
/// which at one per read took about 3% of the poll thread's time in the latency bench.
const WAL_MEASURE_EVERY: Duration = Duration::from_millis(10);

impl Reader {
    /// The size of the WAL of the database at `db`, measured at most every
    /// [`WAL_MEASURE_EVERY`].
    fn wal_bytes(&mut self, db: &Path) -> u64 {
        let now = Instant::now();
        match self.wal_measured {
            Some((at, bytes)) if now.duration_since(at) < WAL_MEASURE_EVERY => bytes,
            _ => {
                let bytes = astha_core::wal_bound::wal_bytes(db);
                self.wal_measured = Some((now, bytes));
                bytes
            }
        }
    }
}

impl Store {
    /// Opens the database at `path` (creating it if needed) and the change log in it, and
    /// starts the store's threads.
    pub fn open(path: &Path, log_table: &str) -> Result<Store> {
        Store::open_with(path, Capture::new(log_table))
    }

    /// [`Store::open`] with the capture settings of `capture` (its log table, and how
    /// its triggers capture REPLACE).
    pub fn open_with(path: &Path, capture: Capture) -> Result<Store> {
        let log_table = capture.log_table().to_string();
        let log_table = log_table.as_str();
        let writer = astha_core::db::open(path)?;
        astha_core::db::use_stable_plans(&writer)?;
        astha_core::db::keep_prepared_statements(&writer);
        // Slot writes sit between a component's deliveries: wait for the lock in µs.
        astha_core::db::use_fast_busy_handler(&writer)?;
        astha_core::wake::install_checkpoint_hook(&writer);
        capture.ensure_log(&writer)?;
        astha_core::transaction::install(&writer, log_table)?;
        astha_core::snapshot::ensure_signal_table(&writer)?;
        let writer = Arc::new(Mutex::new(writer));
        let shared = writer.clone();
        let writes = Pool::start("astha-write", 1, QUEUE_JOBS, move || shared.clone())
            .map_err(|e| CoreError::Invalid(format!("cannot start SQLite write thread: {e}")))?;
        let readers = |name: &str, threads: usize| {
            let (reader_path, reader_log) = (path.to_path_buf(), log_table.to_string());
            Pool::start(name, threads, QUEUE_JOBS, move || ReaderSlot {
                path: reader_path.clone(),
                log_table: reader_log.clone(),
                reader: None,
            })
            .map_err(|e| CoreError::Invalid(format!("cannot start SQLite read threads: {e}")))
        };
        let live = readers("astha-poll", 1)?;
        let reads = readers("astha-read", READ_THREADS)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                file: Database::of(path),
                capture,
                writer,
                writes,
                live,
                reads,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Fails when the database file at the path is no longer the one opened: deleted,
    /// renamed, or replaced. Astha's connections would go on reading and writing the
    /// unlinked file while the application writes a new one, so every change after that
    /// would be lost; and nothing may create an empty database at the path.
    pub fn check_file(&self) -> std::result::Result<(), String> {
        let Some(opened) = self.inner.file else {
            return Ok(());
        };
        let path = self.inner.path.display();
        match Database::of(&self.inner.path) {
            Some(now) if now == opened => Ok(()),
            Some(_) => Err(format!(
                "the database file {path} was replaced by another file (renamed or copied \
                 over) while Astha had it open; stopped: restart Astha on the database it \
                 should follow"
            )),
            None => Err(format!(
                "the database file {path} was deleted or renamed while Astha had it open; \
                 stopped: restart Astha on the database it should follow"
            )),
        }
    }

    /// The capture (log table name and trigger management).
    pub fn capture(&self) -> &Capture {
        &self.inner.capture
    }

    /// The change log's table name.
    pub fn log_table(&self) -> &str {
        self.inner.capture.log_table()
    }

    /// Reads the next batch after `after`, on the poller's own read thread, and the size
    /// of the WAL file in bytes, at most 10 ms old (for the WAL bound, `crate::wal_guard`).
    /// Only the poller reads on that thread, one read at a time, so its queue is never
    /// full; a read asked for while it is fails at once. The poller itself uses
    /// [`Store::read_detached`]; this awaitable form serves the store's tests.
    #[cfg(test)]
    async fn read(&self, after: i64, limits: BatchLimits) -> Result<(Batch, u64)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.read_detached(
            after,
            limits,
            || {},
            move |result| {
                let _ = tx.send(result);
            },
        );
        rx.await.map_err(|_| failed(PoolError::Panicked))?
    }

    /// Starts the poller's read of the next batch after `after` (and of the WAL file's
    /// size, at most 10 ms old, for the WAL bound) without waiting for anything, from
    /// any thread, and hands its result to `done` on the poll thread (the poller sends it to
    /// itself as a message: no future per read). `starting` runs on the poll thread
    /// just before the read takes its snapshot (the poller clears its wake-up flag there:
    /// a commit after that point is news to it, one before is in the read). `done` is
    /// called exactly once: with an error when the read cannot be queued or panicked.
    pub fn read_detached<F>(
        &self,
        after: i64,
        limits: BatchLimits,
        starting: impl FnOnce() + Send + 'static,
        done: F,
    ) where
        F: FnOnce(Result<(Batch, u64)>) + Send + 'static,
    {
        let path = self.inner.path.clone();
        self.inner.live.submit(move |slot| {
            let slot = match slot {
                Ok(slot) => slot,
                Err(err) => return done(Err(failed(err))),
            };
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let reader = slot.reader()?;
                starting();
                let batch = reader.log.read(&reader.conn, after, limits, None)?;
                Ok((batch, reader.wal_bytes(&path)))
            }));
            match read {
                Ok(result) => done(result),
                Err(panic) => {
                    done(Err(failed(PoolError::Panicked)));
                    // The pool starts the thread again with a fresh connection.
                    std::panic::resume_unwind(panic)
                }
            }
        });
    }

    /// Reads the next batch of rows of `tables` after `after`, for a component catching
    /// up from the log.
    pub async fn read_tables(
        &self,
        after: i64,
        limits: BatchLimits,
        tables: Arc<[String]>,
    ) -> Result<Batch> {
        with_reader(&self.inner.reads, move |reader| {
            reader.log.read(&reader.conn, after, limits, Some(&tables))
        })
        .await
    }

    /// Runs a read-only `f` on a pooled reader connection, off the executor.
    pub async fn query<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        with_reader(&self.inner.reads, move |reader| f(&reader.conn)).await
    }

    /// Runs `f` on the writer connection, on the write thread.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let result = self
            .inner
            .writes
            .run(move |writer| f(&*lock(writer)?))
            .await;
        result.map_err(failed)?
    }

    /// The database file, as write turns know it ([`astha_core::write_turns`]): slot
    /// writes take turns with this process's writers of it.
    pub fn database(&self) -> Option<Database> {
        self.inner.file
    }

    /// Whether write jobs are queued behind the one running: a long write job (a
    /// cleanup) asks between its chunks and lets them go first.
    pub fn writes_waiting(&self) -> bool {
        self.inner.writes.queued() > 0
    }

    /// Runs `f` on the writer connection on the calling thread. For callers that are not
    /// on an async executor (setup before start, the CLI).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&*lock(&self.inner.writer)?)
    }

    /// The store's threads still running.
    #[cfg(test)]
    fn live_threads(&self) -> usize {
        self.inner.live.live_threads()
            + self.inner.reads.live_threads()
            + self.inner.writes.live_threads()
    }
}

impl ReaderSlot {
    fn reader(&mut self) -> Result<&mut Reader> {
        if self.reader.is_none() {
            // Never create the file: the writer made it at open, and a path that is
            // gone since must not come back as an empty database.
            let conn = astha_core::db::open_existing(&self.path)?;
            conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
            // Or every read parses and plans its statement again.
            astha_core::db::use_stable_plans(&conn)?;
            astha_core::db::keep_prepared_statements(&conn);
            self.reader = Some(Reader {
                conn,
                log: LogReader::new(&self.log_table),
                wal_measured: None,
            });
        }
        Ok(self.reader.as_mut().expect("opened above"))
    }
}

/// The writer connection. A job that panicked while holding it poisons the mutex; the
/// connection itself is still good once the transaction the job may have left open is
/// rolled back, so the next job recovers it rather than every later write failing.
fn lock(writer: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>> {
    match writer.lock() {
        Ok(conn) => Ok(conn),
        Err(poisoned) => {
            writer.clear_poison();
            let conn = poisoned.into_inner();
            if !conn.is_autocommit() {
                tracing::warn!("rolling back a transaction left open by a panicked write");
                conn.execute_batch("ROLLBACK")?;
            }
            Ok(conn)
        }
    }
}

/// Lends a reader (connection and schema cache) of one of `pool`'s threads to `f`.
async fn with_reader<T, F>(pool: &Pool<ReaderSlot>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Reader) -> Result<T> + Send + 'static,
{
    let result = pool.run(move |slot| f(slot.reader()?)).await;
    result.map_err(failed)?
}

fn failed(err: PoolError) -> CoreError {
    CoreError::Invalid(format!("blocking SQLite task failed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    #[test]
    fn sqlite_work_runs_on_the_store_threads_which_exit_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), "__cdc_log").unwrap();
        assert_eq!(store.live_threads(), READ_THREADS + 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let thread_name = || std::thread::current().name().unwrap_or("").to_string();
        let (wrote_on, read_on) = rt.block_on(async {
            let wrote_on = store
                .write(move |conn| {
                    conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)")?;
                    Ok(thread_name())
                })
                .await
                .unwrap();
            let reads = (0..4 * READ_THREADS).map(|_| {
                store.query(move |conn| {
                    let v: i64 = conn.query_row("SELECT v FROM t", [], |r| r.get(0))?;
                    assert_eq!(v, 1);
                    Ok(thread_name())
                })
            });
            let read_on = futures::future::try_join_all(reads).await.unwrap();
            (wrote_on, read_on)
        });
        assert_eq!(wrote_on, "astha-write-0");
        assert!(
            read_on.iter().all(|n| n.starts_with("astha-read-")),
            "{read_on:?}"
        );
        let one = store
            .write_blocking(|conn| {
                Ok(conn.query_row("SELECT v FROM t", [], |r| r.get::<_, i64>(0))?)
            })
            .unwrap();
        assert_eq!(one, 1);
        let counters = [
            store.inner.live.live(),
            store.inner.reads.live(),
            store.inner.writes.live(),
        ];
        let live = || {
            counters
                .iter()
                .map(|c| c.load(Ordering::Acquire))
                .sum::<usize>()
        };
        drop(store);
        let deadline = Instant::now() + Duration::from_secs(10);
        while live() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(live(), 0, "threads outlived the store");
    }

    #[test]
    fn a_panicking_write_leaves_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db"), "__cdc_log").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            store
                .write(|conn| Ok(conn.execute_batch("CREATE TABLE t (v INTEGER)")?))
                .await
                .unwrap();
            let panicked = store
                .write(|conn| -> Result<()> {
                    conn.execute_batch("BEGIN; INSERT INTO t VALUES (1);")?;
                    panic!("a bug in a write job");
                })
                .await;
            assert!(panicked.is_err());
            let rows = store
                .write(|conn| {
                    conn.execute("INSERT INTO t VALUES (2)", [])?;
                    Ok(conn.query_row("SELECT group_concat(v) FROM t", [], |r| {
                        r.get::<_, String>(0)
                    })?)
                })
                .await
                .unwrap();
            assert_eq!(rows, "2", "the panicked job's transaction was rolled back");
        });
    }

    /// The poller's reads never queue behind catch-ups: with every other read thread
    /// busy, a poller read still completes.
    #[test]
    fn the_pollers_reads_have_a_thread_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db"), "__cdc_log").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let release = Arc::new(std::sync::Barrier::new(READ_THREADS + 1));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let busy: Vec<_> = (0..READ_THREADS)
            .map(|_| {
                let (release, started) = (release.clone(), started.clone());
                let store = store.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(store.query(move |_| {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        release.wait();
                        Ok(())
                    }))
                    .unwrap();
                })
            })
            .collect();
        while started.load(std::sync::atomic::Ordering::SeqCst) < READ_THREADS {
            std::thread::yield_now();
        }
        let read = rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(3),
                store.read(0, BatchLimits::default()),
            )
            .await
        });
        release.wait();
        for t in busy {
            t.join().unwrap();
        }
        assert!(read
            .expect("the poller's read waited for catch-up threads")
            .is_ok());
    }
}
