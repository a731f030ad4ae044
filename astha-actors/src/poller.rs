//! The poller: reads the change log in batches and hands them to the router (any
//! `Recipient<NewBatch>`).
//!
//! Promises:
//! - at most `window` batches are in flight (read but not yet released by the router),
//!   so memory is bounded whatever the backlog; when the window is full the poller simply
//!   stops reading, and the changes wait in the log;
//! - reads run on the store's read threads ([`crate::store`]), never on the actor thread;
//! - it reacts to a commit within microseconds (the `wal_hook` of Astha's writer
//!   connections and the `PRAGMA data_version` watcher both wake it), and re-reads
//!   on a timer backstop in case a wake-up is missed: wake-ups are hints, the log is the
//!   truth. At most one read runs at a time, and a read is asked for only when there may
//!   be news: a wake-up since the last read took its snapshot, or a window that was full
//!   (the data_version watcher, for its part, wakes the poller only for log rows it has
//!   not read or a schema change, [`watcher_news`]);
//! - undecodable rows are moved to the dead-letter table, never skipped silently: a
//!   batch is handed on only once its undecodable rows' dead letters are written;
//! - it never hands on a change it has not proved complete without its mark: every read
//!   takes `PRAGMA schema_version` in its snapshot, and when that is not the version the
//!   triggers were last made under (another connection changed the schema), it hands on
//!   only what lies before the last LSN proved complete, regenerates the triggers at
//!   once (which records what remains ambiguous, [`astha_core::gaps`]), and reads the
//!   rest again, marked. With its window full (no reads), the backstop tick checks the
//!   schema itself;
//! - it keeps the WAL bounded: its reads also measure the WAL file (at most every 10 ms), and past
//!   `wal_max_bytes` the poller has the store's write thread reset it
//!   ([`crate::wal_guard`] decides when, [`astha_core::wal_bound`] does it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use astha_core::log::{Batch, BatchLimits};
use astha_core::wake::Subscription;

use crate::messages::{NewBatch, ReadDone, Release, SharedBatch, StopReading, Wake};
use crate::stats::Stats;
use crate::store::Store;
use crate::wal_guard::{WalGuard, WalLimit};
use crate::witness::PanicWitness;

/// Poller settings.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    pub limits: BatchLimits,
    pub window: usize,
    pub backstop: Duration,
    /// When the WAL is reset.
    pub wal: WalLimit,
}

/// The poller actor.
pub struct Poller {
    store: Store,
    /// Where batches go (the router; a test mailbox in tests).
    router: Recipient<NewBatch>,
    stats: Arc<Stats>,
    config: PollerConfig,
    read_pos: i64,
    in_flight: usize,
    reading: bool,
    /// A wake-up arrived while a read was running: read again when it ends.
    again: bool,
    stopped: bool,
    wake_queued: Arc<AtomicBool>,
    /// The schema version the triggers were last made (or found current) under, and the
    /// newest LSN proved written by such triggers: a read under that version proves
    /// every row it reads complete.
    verified: Option<(i64, i64)>,
    /// Reports this actor's death by panic.
    _witness: PanicWitness,
    /// A schema check is running: no read starts meanwhile.
    checking: bool,
    /// A schema check waits for the running read to end.
    check_wanted: bool,
    wal_guard: WalGuard,
    _wake: Option<Subscription>,
}

impl Poller {
    /// A poller that starts reading after `read_pos`.
    pub fn new(
        store: Store,
        router: Recipient<NewBatch>,
        stats: Arc<Stats>,
        config: PollerConfig,
        read_pos: i64,
    ) -> Self {
        Self {
            _witness: PanicWitness::new(stats.clone(), "poller"),
            store,
            router,
            stats,
            config,
            read_pos,
            in_flight: 0,
            reading: false,
            again: false,
            stopped: false,
            wake_queued: Arc::new(AtomicBool::new(false)),
            verified: None,
            checking: false,
            check_wanted: false,
            wal_guard: WalGuard::new(config.wal),
            _wake: None,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || self.stats.failure().is_some() {
            return;
        }
        if self.reading || self.checking {
            self.again = true;
            return;
        }
        if self.check_wanted {
            self.again = true;
            return self.check_schema(ctx);
        }
        if self.in_flight >= self.config.window {
            return;
        }
        self.reading = true;
        self.again = false;
        let addr = ctx.address();
        self.store.read_detached(
            self.read_pos,
            self.config.limits,
            clear_before_reading(self.wake_queued.clone()),
            move |result| addr.do_send(ReadDone(result)),
        );
    }

    /// A read ended.
    fn read_done(&mut self, result: astha_core::Result<(Batch, u64)>, ctx: &mut Context<Self>) {
        self.reading = false;
        match result {
            Ok((batch, wal_bytes)) => {
                self.guard_wal(wal_bytes, ctx);
                self.handle_batch(batch, ctx)
            }
            Err(err) => {
                // Retried on the next wake-up or backstop tick, after a schema
                // check: the log itself may have been dropped or altered.
                tracing::warn!(error = %err, retriable = err.is_retriable(), "change log read failed");
                self.check_wanted = true;
            }
        }
        if self.check_wanted && !self.reading {
            self.check_schema(ctx);
        }
    }

    /// Starts a WAL reset on the write thread when the WAL of `bytes` is past the limit
    /// (and none is running or pausing after one that gave up).
    fn guard_wal(&mut self, bytes: u64, ctx: &mut Context<Self>) {
        self.stats.wal_bytes.store(bytes, Ordering::Relaxed);
        let Some(mode) = self.wal_guard.start(bytes, Instant::now()) else {
            return;
        };
        let store = self.store.clone();
        let wait = self.wal_guard.limit().wait;
        ctx.spawn(
            async move {
                let started = Instant::now();
                let path = store.path().to_path_buf();
                let outcome = store
                    .write(move |conn| {
                        let done = astha_core::wal_bound::reset(conn, mode, wait)?;
                        Ok((done, astha_core::wal_bound::wal_bytes(&path)))
                    })
                    .await;
                (outcome, started.elapsed())
            }
            .into_actor(self)
            .map(move |(outcome, took), act, _| {
                let now = Instant::now();
                let (complete, file_after) = match &outcome {
                    Ok((complete, after)) => (*complete, *after),
                    Err(_) => (false, 0),
                };
                act.wal_guard.finished(complete, file_after, now);
                let pause = act.wal_guard.paused_for(now);
                act.stats
                    .wal_reset(&outcome.map(|(complete, _)| complete), bytes, took, pause);
            }),
        );
    }

    fn handle_batch(&mut self, mut batch: Batch, ctx: &mut Context<Self>) {
        match self.verified {
            Some((version, head)) if version == batch.schema_version => {
                self.verified = Some((version, head.max(batch.scanned_to)));
            }
            verified => {
                // Rows past the last LSN proved complete may have been written by
                // triggers older than the schema: hand on what lies before it, and
                // read the rest again once the schema check has marked what it must.
                let proved = verified.map_or(self.read_pos, |(_, head)| head);
                batch.changes.retain(|c| c.lsn <= proved);
                batch.malformed.retain(|m| m.raw.lsn <= proved);
                batch.scanned_to = batch.scanned_to.min(proved);
                self.again = true;
                self.check_wanted = true;
            }
        }
        if batch.scanned_to <= self.read_pos {
            if self.again {
                self.poll(ctx);
            }
            return;
        }
        if batch.malformed.is_empty() {
            return self.publish(batch, ctx);
        }
        // Publish past malformed rows only once their dead letters are written: until
        // then nothing routes past them, so no slot moves past them and cleanup cannot
        // delete a row that was neither delivered nor dead-lettered.
        self.reading = true;
        let rows: Vec<(i64, String)> = batch
            .malformed
            .iter()
            .map(|m| (m.raw.lsn, m.reason.clone()))
            .collect();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let log = store.log_table().to_string();
                let result = store
                    .write(move |conn| astha_core::dead_letter::quarantine(conn, &log, &rows))
                    .await;
                (result, batch)
            }
            .into_actor(self)
            .map(|(result, batch), act, ctx| {
                act.reading = false;
                match result {
                    Ok(_) => {
                        let first = &batch.malformed[0].reason;
                        act.stats.malformed_rows(batch.malformed.len(), first);
                        act.publish(batch, ctx);
                    }
                    Err(err) => {
                        // The rows stay in the log. What comes before the first of them
                        // flows; the rest is read again on the next wake-up or backstop
                        // tick, and the write tried again.
                        tracing::error!(
                            error = %err,
                            "could not move malformed rows to dead letters; holding delivery behind them"
                        );
                        let first = batch.malformed.iter().map(|m| m.raw.lsn).min();
                        let before = first.map_or(act.read_pos, |lsn| lsn - 1);
                        if before > act.read_pos {
                            let mut prefix = batch;
                            prefix.changes.retain(|c| c.lsn <= before);
                            prefix.malformed.clear();
                            prefix.scanned_to = before;
                            prefix.bytes = 0;
                            act.publish(prefix, ctx);
                        }
                    }
                }
            }),
        );
    }

    /// Hands a batch to the router and moves the read position past it.
    fn publish(&mut self, batch: Batch, ctx: &mut Context<Self>) {
        let full = batch.changes.len() + batch.malformed.len() >= self.config.limits.max_rows
            || batch.bytes >= self.config.limits.max_bytes;
        let incomplete: Vec<i64> = batch
            .changes
            .iter()
            .filter(|c| c.incomplete.is_some())
            .map(|c| c.lsn)
            .collect();
        if !incomplete.is_empty() {
            self.stats.incomplete_changes(&incomplete);
        }
        count_by_table(&self.stats, &batch.changes);
        self.stats.batches_read.fetch_add(1, Ordering::Relaxed);
        self.stats
            .head_lsn
            .fetch_max(batch.scanned_to, Ordering::Relaxed);
        let shared = SharedBatch {
            after: self.read_pos,
            upto: batch.scanned_to,
            changes: batch.changes.into_iter().map(Arc::new).collect(),
        };
        self.read_pos = batch.scanned_to;
        self.in_flight += 1;
        self.router.do_send(NewBatch(Arc::new(shared)));
        if full || self.again {
            self.poll(ctx);
        }
    }

    /// Regenerates the triggers of captured tables whose schema changed (marking what
    /// another connection's change left ambiguous) and records the version and LSN up
    /// to which rows are proved complete. Runs with no read in flight.
    fn check_schema(&mut self, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        if self.reading {
            self.check_wanted = true;
            return;
        }
        self.check_wanted = false;
        self.checking = true;
        let store = self.store.clone();
        let verified = self.verified;
        ctx.spawn(
            async move {
                let capture = store.capture().clone();
                let log = store.log_table().to_string();
                store
                    .write(move |conn| {
                        // Version and head from one snapshot: a foreign ALTER committed
                        // between two separate reads would otherwise pass as proved.
                        let read = conn.unchecked_transaction()?;
                        let version = astha_core::schema::schema_version(&read)?;
                        // A log that cannot be read (dropped by another connection) is
                        // created again whole by the refresh below.
                        let head = astha_core::log::head_lsn(&read, &log);
                        read.finish()?;
                        if let Ok(head) = head {
                            if verified.map(|(v, _)| v) == Some(version) {
                                return Ok((version, head));
                            }
                        }
                        // Under the write lock nothing commits meanwhile: after the
                        // regeneration every row up to the head is proved complete (or
                        // marked). Regenerating changes the version: read it again.
                        astha_core::capture::in_savepoint(conn, |conn| {
                            for change in capture.refresh_since(conn, verified.map(|(_, h)| h))? {
                                tracing::info!(?change, "capture refreshed after a schema change");
                            }
                            Ok((
                                astha_core::schema::schema_version(conn)?,
                                astha_core::log::head_lsn(conn, &log)?,
                            ))
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.checking = false;
                match result {
                    Ok(verified) => act.verified = Some(verified),
                    Err(err) => tracing::warn!(error = %err, "schema check failed"),
                }
                if act.again {
                    act.poll(ctx);
                }
            }),
        );
    }
}

/// Adds `changes` to the per-table counters: one map update per run of changes of the
/// same table, and a table name copied only the first time it is seen (per change, the
/// copy and the hashing were among the actor thread's top entries at flat-out rates).
fn count_by_table(stats: &Stats, changes: &[astha_core::Change]) {
    for run in changes.chunk_by(|a, b| a.table == b.table) {
        let (table, n): (&str, u64) = (&run[0].table, run.len() as u64);
        match stats.changes_by_table.get_mut(table) {
            Some(mut count) => *count += n,
            None => *stats.changes_by_table.entry(table.to_string()).or_insert(0) += n,
        }
    }
}

/// Clears the poller's wake-up flag on the poll thread just before a read takes its
/// snapshot: a commit after that point queues a [`Wake`] (so the poller reads again once
/// this read is done); one before it is in this read. Cleared earlier (when the read was
/// asked for), the commits of the gap until the poll thread ran the read each cost a
/// second read that found nothing.
fn clear_before_reading(wake_queued: Arc<AtomicBool>) -> impl FnOnce() + Send + 'static {
    move || wake_queued.store(false, Ordering::Release)
}

/// The data_version watcher's test of news for the poller of `log_table`
/// ([`astha_core::wake::DataVersionWatcher::start_filtered`]): log rows past what the
/// poller has read (`stats.head_lsn`), a schema change (which the poller checks at once,
/// so triggers another connection's ALTER left stale are made again within a poll), or
/// anything that cannot be read. Not news: the commits of Astha's own slot writes and
/// cleanup, and a same-process commit whose `wal_hook` already woke the poller and whose
/// rows it has read: without this test each of those cost the poll thread a read that
/// found nothing, one per slot write or commit (measured: about one empty read per
/// commit at 1,000 commits/s).
pub fn watcher_news(
    log_table: &str,
    stats: Arc<Stats>,
) -> impl FnMut(&rusqlite::Connection) -> bool {
    let log = log_table.to_string();
    let mut schema: Option<i64> = None;
    move |conn| {
        let version = astha_core::schema::schema_version(conn).ok();
        let schema_moved = version.is_none() || std::mem::replace(&mut schema, version) != version;
        let unread = match astha_core::log::head_lsn(conn, &log) {
            Ok(head) => head > stats.head_lsn.load(Ordering::Relaxed),
            Err(_) => true,
        };
        schema_moved || unread
    }
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let addr = ctx.address();
        let queued = self.wake_queued.clone();
        self._wake = Some(astha_core::wake::subscribe(move || {
            // Coalesce: at most one Wake waits in the mailbox, whatever the commit rate.
            if !queued.swap(true, Ordering::AcqRel) {
                addr.do_send(Wake);
            }
        }));
        ctx.run_interval(self.config.backstop, |act, ctx| {
            // A read compares the schema version itself; with the window full there is
            // no read, and a table re-created meanwhile would stay without triggers.
            if act.in_flight >= act.config.window {
                act.check_schema(ctx);
                // Nor is the WAL measured by a read: a slow component must not let it
                // grow without bound. One `stat` of a local file per tick.
                let bytes = astha_core::wal_bound::wal_bytes(act.store.path());
                act.guard_wal(bytes, ctx);
            }
            act.poll(ctx);
        });
        self.check_schema(ctx);
        self.poll(ctx);
    }
}

impl Handler<Wake> for Poller {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

impl Handler<ReadDone> for Poller {
    type Result = ();

    fn handle(&mut self, msg: ReadDone, ctx: &mut Context<Self>) {
        self.read_done(msg.0, ctx);
    }
}

impl Handler<Release> for Poller {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        let was_full = self.in_flight >= self.config.window;
        self.in_flight = self.in_flight.saturating_sub(msg.0);
        // With its window full the poller read nothing, whatever woke it: it reads now.
        // Otherwise a Release is no news of the log: the poller has read everything
        // there was when its last read took its snapshot, and a commit since then sent a
        // Wake (a running read or check is followed by another). A read here would find
        // nothing, and hold the poll thread just when that commit's read wants it.
        if was_full {
            self.poll(ctx);
        }
    }
}

impl Handler<StopReading> for Poller {
    type Result = ();

    fn handle(&mut self, _: StopReading, ctx: &mut Context<Self>) {
        self.stopped = true;
        self._wake = None;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    //! The poller alone: a test mailbox stands in for the router.

    use super::*;
    use crate::testing::test_mailbox;

    const LONG: Duration = Duration::from_secs(30);

    /// A store over a new database in `dir` with table `a (id, v)` captured.
    fn captured_store(dir: &std::path::Path) -> (std::path::PathBuf, Store) {
        let path = dir.join("p.db");
        let store = Store::open(&path, "__cdc_log").unwrap();
        store
            .write_blocking(|conn| {
                conn.execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY, v INTEGER)")?;
                store.capture().install(conn, "a")
            })
            .unwrap();
        (path, store)
    }

    #[test]
    fn changes_are_counted_per_table_run_by_run() {
        use astha_core::change::Operation;
        use astha_core::Change;
        let stats = Stats::default();
        let of = |lsn, table| Change::bare(lsn, table, Operation::Insert);
        count_by_table(&stats, &[of(1, "a"), of(2, "a"), of(3, "b"), of(4, "a")]);
        count_by_table(&stats, &[of(5, "b"), of(6, "c")]);
        count_by_table(&stats, &[]);
        let count = |t: &str| stats.changes_by_table.get(t).map(|n| *n);
        assert_eq!(
            (count("a"), count("b"), count("c")),
            (Some(3), Some(2), Some(1))
        );
        assert_eq!(stats.changes_by_table.len(), 3);
    }

    /// What the data_version watcher wakes the poller for: log rows it has not read and
    /// schema changes; not Astha's own slot writes, nor rows it has read.
    #[test]
    fn the_watcher_wakes_the_poller_only_for_unread_rows_or_a_schema_change() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = captured_store(dir.path());
        let stats = Arc::new(Stats::default());
        let mut news = watcher_news("__cdc_log", stats.clone());
        let watcher = astha_core::db::open_existing(&path).unwrap();
        assert!(news(&watcher), "a first look cannot tell: news");
        assert!(!news(&watcher), "nothing happened since");
        let writer = astha_core::db::open_writer(&path).unwrap();
        writer.execute("INSERT INTO a (v) VALUES (1)", []).unwrap();
        assert!(news(&watcher), "a row the poller has not read");
        stats.head_lsn.store(1, Ordering::Relaxed);
        assert!(!news(&watcher), "the poller read it");
        store
            .write_blocking(|conn| {
                astha_core::slots::create(
                    conn,
                    "__cdc_log",
                    "c",
                    astha_core::slots::SlotStart::Beginning,
                )?;
                astha_core::slots::advance_many(conn, &[("c".to_string(), 1)])
            })
            .unwrap();
        assert!(!news(&watcher), "a slot write adds no row");
        writer
            .execute_batch("ALTER TABLE a ADD COLUMN w INTEGER")
            .unwrap();
        assert!(news(&watcher), "a schema change, checked at once");
        assert!(!news(&watcher));
        writer.execute("INSERT INTO a (v) VALUES (2)", []).unwrap();
        assert!(news(&watcher));
    }

    #[actix_rt::test]
    async fn sends_contiguous_batches_and_never_more_than_its_window_unreleased() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = captured_store(dir.path());
        let writer = astha_core::db::open_writer(&path).unwrap();
        for v in 0..7 {
            writer
                .execute("INSERT INTO a (v) VALUES (?1)", [v])
                .unwrap();
        }
        let (batches, inbox) = test_mailbox::<NewBatch>();
        let config = PollerConfig {
            limits: BatchLimits {
                max_rows: 2,
                max_bytes: 1 << 20,
            },
            window: 2,
            backstop: Duration::from_millis(10),
            wal: WalLimit::default(),
        };
        let poller = Poller::new(store, batches, Arc::new(Stats::default()), config, 0).start();
        assert!(inbox.wait_until(LONG, |m| m.len() == 2).await);
        // Backstop ticks go by: the window is full, so nothing more is read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(inbox.messages().len(), 2);
        poller.send(Release(2)).await.unwrap();
        assert!(inbox.wait_until(LONG, |m| m.len() == 4).await);
        let ranges: Vec<(i64, i64, Vec<i64>)> = inbox
            .messages()
            .iter()
            .map(|NewBatch(b)| (b.after, b.upto, b.changes.iter().map(|c| c.lsn).collect()))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0, 2, vec![1, 2]),
                (2, 4, vec![3, 4]),
                (4, 6, vec![5, 6]),
                (6, 7, vec![7]),
            ]
        );
        poller.send(StopReading).await.ok();
    }
}
