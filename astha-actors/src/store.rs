//! Blocking SQLite work, kept off the async executor.
//!
//! Every read of the change log and every write of Astha's own bookkeeping (slots, dead
//! letters, cleanup, trigger regeneration) goes through [`Store`], which runs it on
//! tokio's blocking pool. Reads use a small pool of connections (one per concurrent
//! read, each with its own schema cache); writes share one connection behind a mutex, so
//! Astha never competes with itself for SQLite's single write lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use astha_core::capture::Capture;
use astha_core::log::{Batch, BatchLimits, LogReader};
use astha_core::{CoreError, Result};
use rusqlite::Connection;

/// Handle to the database Astha watches. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    capture: Capture,
    readers: Mutex<Vec<Reader>>,
    writer: Mutex<Connection>,
}

struct Reader {
    conn: Connection,
    log: LogReader,
}

impl Store {
    /// Opens the database at `path` (creating it if needed) and the change log in it.
    pub fn open(path: &Path, log_table: &str) -> Result<Store> {
        let writer = astha_core::db::open(path)?;
        // Slot writes sit between a component's deliveries: wait for the lock in µs.
        astha_core::db::use_fast_busy_handler(&writer)?;
        astha_core::wake::install_checkpoint_hook(&writer);
        let capture = Capture::new(log_table);
        capture.ensure_log(&writer)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                capture,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(writer),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The capture (log table name and trigger management).
    pub fn capture(&self) -> &Capture {
        &self.inner.capture
    }

    /// The change log's table name.
    pub fn log_table(&self) -> &str {
        self.inner.capture.log_table()
    }

    /// Reads the next batch after `after`, optionally only rows of `tables`.
    pub async fn read(
        &self,
        after: i64,
        limits: BatchLimits,
        tables: Option<Arc<[String]>>,
    ) -> Result<Batch> {
        self.with_reader(move |reader| {
            reader
                .log
                .read(&reader.conn, after, limits, tables.as_deref())
        })
        .await
    }

    /// Runs a read-only `f` on a pooled reader connection, off the executor.
    pub async fn query<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.with_reader(move |reader| f(&reader.conn)).await
    }

    /// Lends a pooled reader (connection and schema cache) to `f` on the blocking pool.
    async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Reader) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || {
            let mut reader = inner.take_reader()?;
            let result = f(&mut reader);
            inner
                .readers
                .lock()
                .expect("reader pool poisoned")
                .push(reader);
            result
        })
        .await
    }

    /// Runs `f` on the writer connection, off the executor.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || {
            let conn = inner
                .writer
                .lock()
                .map_err(|_| CoreError::Invalid("writer connection poisoned".into()))?;
            f(&conn)
        })
        .await
    }

    /// Runs `f` on the writer connection on the calling thread. For callers that are not
    /// on an async executor (setup before start, the CLI).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .inner
            .writer
            .lock()
            .map_err(|_| CoreError::Invalid("writer connection poisoned".into()))?;
        f(&conn)
    }
}

impl Inner {
    fn take_reader(&self) -> Result<Reader> {
        if let Some(reader) = self.readers.lock().expect("reader pool poisoned").pop() {
            return Ok(reader);
        }
        Ok(Reader {
            conn: astha_core::db::open(&self.path)?,
            log: LogReader::new(self.capture.log_table()),
        })
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(err) => Err(CoreError::Invalid(format!(
            "blocking SQLite task failed: {err}"
        ))),
    }
}
