//! The janitor: on a timer, reports each component's state to `__astha_components`
//! (heartbeats, for `astha status` in another process) and deletes the log rows every
//! slot is past.
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
use astha_core::{log_state, slots};

use crate::messages::StopJanitor;
use crate::stats::Stats;
use crate::store::Store;

/// Pause between two cleanup budgets while a backlog of removable rows remains.
const CLEANUP_PAUSE: Duration = Duration::from_millis(50);

/// The janitor actor.
pub struct Janitor {
    store: Store,
    stats: Arc<Stats>,
    interval: Duration,
    /// A cleanup is running.
    cleaning: bool,
    stopping: bool,
}

impl Janitor {
    /// A janitor that writes heartbeats and cleans the log every `interval`.
    pub fn new(store: Store, stats: Arc<Stats>, interval: Duration) -> Self {
        Self {
            store,
            stats,
            interval,
            cleaning: false,
            stopping: false,
        }
    }

    /// A tick while a cleanup still runs does nothing: one cleanup at a time.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.cleaning || self.stopping {
            return;
        }
        let beats = heartbeats(&self.stats);
        self.clean(beats, ctx);
    }

    /// One budget's worth of cleanup (after writing `beats`, if any), then, after a
    /// pause, the next while rows remain. Each budget first checks that the database
    /// file is still the one Astha opened and that the log's LSN sequence is unbroken
    /// ([`integrity`]).
    fn clean(&mut self, beats: Vec<Heartbeat>, ctx: &mut Context<Self>) {
        if self.stats.failure().is_some() {
            return;
        }
        self.cleaning = true;
        let store = self.store.clone();
        let stats = self.stats.clone();
        ctx.spawn(
            async move {
                let log = store.log_table().to_string();
                let path_check = store.clone();
                store
                    .write(move |conn| {
                        if let Err(gone) = path_check.check_file() {
                            stats.failed(gone);
                            return Ok(slots::Cleanup::default());
                        }
                        if !integrity(conn, &log, &stats)? {
                            return Ok(slots::Cleanup::default());
                        }
                        if !beats.is_empty() {
                            astha_core::heartbeat::write(conn, &beats)?;
                        }
                        // What this process's consumers confirmed bounds cleanup too,
                        // should their slot rows be gone (removed by someone else).
                        let upto = stats
                            .components
                            .iter()
                            .map(|c| c.position)
                            .min()
                            .unwrap_or(i64::MAX);
                        let done = slots::cleanup_upto(
                            conn,
                            &log,
                            &slots::CleanupBudget::default(),
                            upto,
                        )?;
                        if done.deleted > 0 {
                            astha_core::transaction::prune(conn, &log)?;
                        }
                        Ok(done)
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.cleaning = false;
                match result {
                    Ok(done) => {
                        act.stats
                            .cleaned
                            .fetch_add(done.deleted as u64, std::sync::atomic::Ordering::Relaxed);
                        if !done.finished && !act.stopping {
                            // More to remove: go on soon, leaving the write lock to
                            // writers in between.
                            ctx.run_later(CLEANUP_PAUSE, |act, ctx| {
                                if !act.cleaning && !act.stopping {
                                    act.clean(Vec::new(), ctx);
                                }
                            });
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "log cleanup failed"),
                }
            }),
        );
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
    type Result = ();

    fn handle(&mut self, _: StopJanitor, ctx: &mut Context<Self>) {
        self.stopping = true;
        ctx.stop();
    }
}
