//! The janitor: on a timer, reports each component's state to `__astha_components`
//! (heartbeats, for `astha status` in another process), renews this engine's leases,
//! drops the non-durable slots whose lease expired (their owner died without cleaning
//! up: each is logged and counted in `astha_leases_expired_total`), and deletes the log
//! rows every slot is past. At a graceful stop it drops this engine's leased slots.
//!
//! It decides nothing about routing and reads no router state: which rows may go is
//! read from the slots in the same statement that deletes them
//! ([`astha_core::slots::cleanup_some`]), so a row is removed only once every durable
//! position is past it, whatever the router is doing. One cleanup runs at a time, a
//! budget per write job, so Astha's slot writes queued meanwhile go between two budgets;
//! while removable rows remain it goes on after a short pause rather than one budget
//! per tick.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use astha_core::heartbeat::Heartbeat;
use astha_core::{lease, log_state, slots};

use crate::messages::StopJanitor;
use crate::router::LeaseConfig;
use crate::stats::Stats;
use crate::store::Store;
use crate::witness::PanicWitness;

/// Pause between two cleanup budgets while a backlog of removable rows remains.
const CLEANUP_PAUSE: Duration = Duration::from_millis(50);

/// The janitor actor.
pub struct Janitor {
    store: Store,
    stats: Arc<Stats>,
    interval: Duration,
    lease: LeaseConfig,
    /// How long rows every slot is past are kept.
    retention: astha_core::retention::Retention,
    /// A cleanup is running.
    cleaning: bool,
    /// Of the current cleanup budget ([`slots::CleanupBudget::default`]), what the jobs
    /// that gave way to other writes have spent: the next job gets the rest at once, and
    /// only a spent budget pauses for [`CLEANUP_PAUSE`].
    spent: Spent,
    stopping: bool,
    /// Reports this actor's death by panic.
    _witness: PanicWitness,
}

impl Janitor {
    /// A janitor that writes heartbeats and cleans the log every `interval`.
    pub fn new(store: Store, stats: Arc<Stats>, interval: Duration, lease: LeaseConfig) -> Self {
        Self {
            _witness: PanicWitness::new(stats.clone(), "janitor"),
            store,
            stats,
            interval,
            lease,
            retention: Default::default(),
            cleaning: false,
            spent: Spent::default(),
            stopping: false,
        }
    }

    /// Keeps rows every slot is past as `retention` says (default: none kept).
    pub fn with_retention(mut self, retention: astha_core::retention::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// A tick while a cleanup still runs does nothing: one cleanup at a time.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.cleaning || self.stopping {
            return;
        }
        let beats = heartbeats(&self.stats);
        self.clean(beats, Some(self.lease.clone()), ctx);
    }

    /// One budget's worth of cleanup (after writing `beats`, if any, and renewing and
    /// expiring leases, on a tick), then, after a pause, the next while rows remain.
    /// Each budget first checks that the database file is still the one Astha opened
    /// and that the log's LSN sequence is unbroken ([`integrity`]).
    fn clean(
        &mut self,
        beats: Vec<Heartbeat>,
        lease: Option<LeaseConfig>,
        ctx: &mut Context<Self>,
    ) {
        if self.stats.failure().is_some() {
            return;
        }
        self.cleaning = true;
        let store = self.store.clone();
        let stats = self.stats.clone();
        let retention = self.retention;
        let budget = self.spent.left();
        ctx.spawn(
            async move {
                let log = store.log_table().to_string();
                let this = store.clone();
                store
                    .write(move |conn| {
                        if let Err(gone) = this.check_file() {
                            stats.failed(gone);
                            return Ok((Vec::new(), slots::Cleanup::default(), Duration::ZERO));
                        }
                        if !integrity(conn, &log, &stats)? {
                            return Ok((Vec::new(), slots::Cleanup::default(), Duration::ZERO));
                        }
                        if !beats.is_empty() {
                            astha_core::heartbeat::write(conn, &beats)?;
                        }
                        // Renew before expiring, so a late tick never expires our own.
                        let expired = match lease {
                            Some(lease) => {
                                let now = lease::now_ms();
                                lease::renew(conn, &lease.owner, lease.ttl, now)?;
                                lease::drop_expired(conn, now)?
                            }
                            None => Vec::new(),
                        };
                        // What this process's consumers confirmed bounds cleanup too,
                        // should their slot rows be gone (removed by someone else).
                        let upto = stats
                            .components
                            .iter()
                            .map(|c| c.position)
                            .min()
                            .unwrap_or(i64::MAX);
                        let started = std::time::Instant::now();
                        // Rows every slot is past that the retention policy still keeps.
                        let upto = if retention.is_off() {
                            upto
                        } else {
                            upto.min(retention.bound_within(
                                conn,
                                &log,
                                astha_core::change::unix_now_ms(),
                                upto.min(slots::slowest(conn)?.unwrap_or(i64::MAX)),
                                budget.max_rows as u64,
                            )?)
                        };
                        // Slot writes queued behind it hold back delivery (a route goes
                        // at most one batch past its durable position): they go first.
                        let done =
                            slots::cleanup_upto_giving_way(conn, &log, &budget, upto, &|| {
                                this.writes_waiting()
                            })?;
                        if done.deleted > 0 {
                            astha_core::transaction::prune(conn, &log)?;
                        }
                        Ok((expired, done, started.elapsed()))
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.cleaning = false;
                match result {
                    Ok((expired, done, took)) => {
                        for lease in &expired {
                            tracing::warn!(
                                slot = %lease.slot,
                                owner = %lease.owner,
                                expired_ms = lease.expires_ms,
                                "dropped a non-durable slot whose owner stopped renewing its lease"
                            );
                        }
                        act.stats
                            .leases_expired
                            .fetch_add(expired.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        act.stats
                            .cleanups
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        act.stats
                            .cleaned
                            .fetch_add(done.deleted as u64, std::sync::atomic::Ordering::Relaxed);
                        if !done.finished && !act.stopping {
                            // More to remove: go on soon, leaving the write lock to
                            // writers in between; right after the writes it gave way to.
                            let pause = match act.spent.add(done, took) {
                                true => Duration::ZERO,
                                false => CLEANUP_PAUSE,
                            };
                            ctx.run_later(pause, |act, ctx| {
                                if !act.cleaning && !act.stopping {
                                    act.clean(Vec::new(), None, ctx);
                                }
                            });
                        } else {
                            act.spent = Spent::default();
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "log cleanup failed"),
                }
            }),
        );
    }
}

/// What the cleanup jobs of one budget spent so far.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    rows: usize,
    time: Duration,
}

impl Spent {
    /// The budget left for the next job.
    fn left(&self) -> slots::CleanupBudget {
        let whole = slots::CleanupBudget::default();
        slots::CleanupBudget {
            max_rows: whole.max_rows.saturating_sub(self.rows),
            max_time: whole.max_time.saturating_sub(self.time),
            ..whole
        }
    }

    /// Counts a job that left rows to remove; true when the next job may start at once
    /// (the job gave way to other writes with budget left), false when the budget is
    /// spent (and starts again whole after the pause).
    fn add(&mut self, done: slots::Cleanup, took: Duration) -> bool {
        self.rows += done.deleted;
        self.time += took;
        let left = self.left();
        let go_on = done.gave_way && left.max_rows > 0 && !left.max_time.is_zero();
        if !go_on {
            *self = Spent::default();
        }
        go_on
    }
}

/// Checks the log's LSN sequence against its mark and what the poller read
/// ([`log_state::check`]; slots are the router's to put back), on the write thread, so no slot write runs between the check
/// and what follows. Unbroken: the mark is raised to the head, and true is returned. A
/// sequence that restarted under the running Astha (emptied with the guard removed,
/// rolled back, replaced) is re-based — slots past the head go back before the oldest
/// row, under a new epoch — and Astha stops delivering (`failed`), since routes and
/// poller hold positions past the head; the next start resumes from the re-based slots.
pub(crate) fn integrity(
    conn: &rusqlite::Connection,
    log: &str,
    stats: &Stats,
) -> astha_core::Result<bool> {
    let seen = stats.head_lsn.load(std::sync::atomic::Ordering::Relaxed);
    match log_state::check(conn, log, seen, false)? {
        None => {
            log_state::raise_mark(conn, astha_core::log::head_lsn(conn, log)?)?;
            Ok(true)
        }
        Some(found) => {
            let moved = log_state::rebase(conn, log)?;
            stats.failed(format!(
                "{found}. Re-based: slots moved back to re-deliver what the log holds \
                 (name, from, to): {moved:?}; restart Astha to resume"
            ));
            Ok(false)
        }
    }
}

/// Each component's state as `astha status` shows it.
fn heartbeats(stats: &Stats) -> Vec<Heartbeat> {
    stats
        .snapshot()
        .components
        .into_iter()
        .map(|c| Heartbeat {
            status: serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            breaker: c.breaker.to_string(),
            position: c.position,
            delivered: c.delivered as i64,
            failures: c.failures as i64,
            dead_letters: c.dead_letters as i64,
            last_error: c.last_error,
            version: c.version,
            name: c.name,
            updated_at: String::new(),
        })
        .collect()
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<StopJanitor> for Janitor {
    type Result = ResponseActFuture<Self, ()>;

    /// Drops this engine's leased slots (the router has stopped: nothing moves them any
    /// more), then stops.
    fn handle(&mut self, _: StopJanitor, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let store = self.store.clone();
        let owner = self.lease.owner.clone();
        Box::pin(
            async move {
                store
                    .write(move |conn| lease::drop_owned(conn, &owner))
                    .await
            }
            .into_actor(self)
            .map(|result, _, ctx| {
                match result {
                    Ok(dropped) if !dropped.is_empty() => {
                        tracing::info!(slots = ?dropped, "dropped this engine's non-durable slots");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "could not drop non-durable slots"),
                }
                ctx.stop();
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The janitor's cleanup job stops after one chunk when a write job (a slot write,
    /// which delivery waits for) is queued behind it: the job queued behind it finds
    /// every row but one chunk's still there.
    #[actix_rt::test]
    async fn the_janitors_cleanup_gives_way_to_a_write_queued_behind_it() {
        const ROWS: usize = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let store = Store::open(&path, "__cdc_log").unwrap();
        store
            .write_blocking(|conn| {
                conn.execute_batch("CREATE TABLE a (id INTEGER PRIMARY KEY, v INTEGER)")?;
                store.capture().install(conn, "a")?;
                conn.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO a (v) SELECT i FROM n",
                    [ROWS as i64],
                )?;
                // One slot, past every row: all of them may go.
                slots::create(conn, "__cdc_log", "c", slots::SlotStart::Head)?;
                Ok(())
            })
            .unwrap();
        let log_rows = |conn: &rusqlite::Connection| -> astha_core::Result<i64> {
            Ok(conn.query_row("SELECT count(*) FROM __cdc_log", [], |r| r.get(0))?)
        };
        assert_eq!(store.write_blocking(log_rows).unwrap(), ROWS as i64);

        // Hold the write thread, so the janitor's job queues behind it.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (held, holds) = std::sync::mpsc::channel::<()>();
        let holding = actix_rt::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_| {
                        held.send(()).unwrap();
                        Ok(gate.recv().ok())
                    })
                    .await
            }
        });
        let holds = actix_rt::task::spawn_blocking(move || holds.recv().is_ok());
        assert!(holds.await.unwrap(), "the write thread is held");
        let lease = LeaseConfig {
            owner: "test".into(),
            ttl: Duration::from_secs(60),
        };
        let janitor = Janitor::new(
            store.clone(),
            Arc::new(Stats::default()),
            Duration::from_millis(5),
            lease,
        )
        .start();
        let queued = || async {
            for _ in 0..2_000 {
                if store.writes_waiting() {
                    return true;
                }
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
            false
        };
        // Only the janitor's job can be queued now.
        assert!(queued().await, "the janitor's cleanup job queued");
        // A write queued behind the cleanup, as a slot write would be.
        let behind = actix_rt::spawn({
            let store = store.clone();
            async move { store.write(log_rows).await }
        });
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        let left = behind.await.unwrap().unwrap();
        let chunk = slots::CleanupBudget::default().chunk_rows as i64;
        assert_eq!(
            left,
            ROWS as i64 - chunk,
            "the cleanup stopped after one chunk for the write behind it"
        );
        // And it goes on afterwards: every row goes but the newest (which keeps the
        // LSN sequence going).
        let mut left = left;
        for _ in 0..500 {
            left = store.write(log_rows).await.unwrap();
            if left == 1 {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(left, 1);
        janitor.do_send(StopJanitor);
    }

    fn job(deleted: usize, gave_way: bool) -> slots::Cleanup {
        slots::Cleanup {
            deleted,
            finished: false,
            gave_way,
        }
    }

    #[test]
    fn a_cleanup_that_gave_way_goes_on_at_once_with_what_is_left_of_its_budget() {
        let whole = slots::CleanupBudget::default();
        let mut spent = Spent::default();
        assert_eq!(spent.left(), whole);
        let ms = Duration::from_millis;
        // Gave way to slot writes: the next job at once, with the rest of the budget.
        assert!(spent.add(job(2_000, true), ms(2)));
        assert_eq!(spent.left().max_rows, whole.max_rows - 2_000);
        assert_eq!(spent.left().max_time, whole.max_time - ms(2));
        assert_eq!(spent.left().chunk_rows, whole.chunk_rows);
        // Ran out of budget (it did not give way): the pause, then a whole budget again.
        assert!(!spent.add(job(20_000, false), ms(18)));
        assert_eq!(spent.left(), whole);
        // Gave way, but the time was all spent meanwhile: the pause all the same.
        assert!(!spent.add(job(2_000, true), whole.max_time));
        assert_eq!(spent.left(), whole);
    }
}
