//! The log's depth and age for `/metrics`, read on a connection and a thread of their own.
//!
//! Owns the metrics' read-only connection. Promises: a scrape never queues behind (or
//! ahead of) the reads that delivery depends on — it uses none of the [`Store`]'s
//! threads; it costs two index lookups whatever the log's depth
//! ([`astha_core::log::log_ends`]); scrapes that arrive together share one read, and the
//! log is read at most once per [`MAX_AGE`], however many clients scrape. Never creates
//! the database file and never writes ([`astha_core::db::open_read_only`]).
//!
//! [`Store`]: crate::store::Store

use std::path::PathBuf;
use std::time::{Duration, Instant};

use astha_core::log::LogEnds;
use rusqlite::Connection;
use tokio::sync::Mutex;

use crate::pool::Pool;

/// How old a figure may be before a scrape reads the log again. Prometheus scrapes every
/// 10 s or more; a second is fresh enough and bounds the reads under any load.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

pub(crate) struct LogGauge {
    /// One thread; its connection is opened at the first scrape (and after an error).
    pool: Pool<Option<Connection>>,
    path: PathBuf,
    log_table: String,
    last: Mutex<Option<(Instant, LogEnds)>>,
}

impl LogGauge {
    pub(crate) fn start(path: PathBuf, log_table: String) -> std::io::Result<Self> {
        Ok(Self {
            pool: Pool::start("astha-metrics", 1, 1, || None)?,
            path,
            log_table,
            last: Mutex::new(None),
        })
    }

    /// The log's ends, at most [`MAX_AGE`] old.
    pub(crate) async fn read(&self) -> Result<LogEnds, String> {
        // Held across the read: scrapers that arrive meanwhile wait for its result
        // instead of queueing reads of their own.
        let mut last = self.last.lock().await;
        if let Some((at, ends)) = *last {
            if at.elapsed() < MAX_AGE {
                return Ok(ends);
            }
        }
        let (path, log_table) = (self.path.clone(), self.log_table.clone());
        let now_ms = astha_core::change::unix_now_ms();
        let ends = self
            .pool
            .run(move |conn| {
                if conn.is_none() {
                    *conn = Some(astha_core::db::open_read_only(&path)?);
                }
                let read =
                    astha_core::log::log_ends(conn.as_ref().expect("opened"), &log_table, now_ms);
                if read.is_err() {
                    *conn = None;
                }
                read
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        *last = Some((Instant::now(), ends));
        Ok(ends)
    }
}
