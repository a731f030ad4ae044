//! The router: hands each component the changes of its tables, in commit order, and
//! moves each component's slot only when that component confirmed them.
//!
//! It keeps the batches the poller read in a ring (the window). Each component is fed
//! from the ring at its own pace, one delivery at a time. A component that falls behind
//! the ring (it was slow, paused by its breaker, or registered late) is fed by reads of
//! its own from the log, filtered to its tables, until it reaches the ring again: a slow
//! or broken component never holds the window, so it never delays the others, and its
//! changes wait in the durable log rather than in memory.
//!
//! Slot positions are written as soon as a component confirms, one write at a time:
//! confirmations that arrive during a write are coalesced into the next one, and a
//! component gets its next delivery only once its confirmed position is durable. After a
//! crash a component therefore sees again at most the one delivery it had in flight.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use astha_core::log::BatchLimits;
use astha_core::slots::{self, SlotStart};
use astha_core::Change;

use crate::component::ComponentStatus;
use crate::error::AsthaError;
use crate::messages::*;
use crate::poller::{Poller, StopReading};
use crate::stats::{ComponentStats, Stats};
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorSettings};

/// Pause between two cleanup calls while a backlog of removable rows remains.
const CLEANUP_PAUSE: Duration = Duration::from_millis(50);

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub limits: BatchLimits,
    pub window: usize,
    pub cleanup_interval: Duration,
    pub supervisor: SupervisorSettings,
    /// How long `Shutdown` waits for in-flight deliveries before persisting and stopping.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteState {
    Idle,
    Delivering,
    CatchingUp,
    Paused,
}

struct Route {
    addr: Addr<Supervisor>,
    tables: HashSet<String>,
    table_list: Arc<[String]>,
    /// Last LSN the component confirmed.
    position: i64,
    state: RouteState,
    disabled: bool,
    /// A confirmed position is not yet durable: deliver nothing more until it is, so a
    /// crash re-delivers at most the batch in flight.
    unpersisted: bool,
}

impl Route {
    fn wants(&self, change: &Change) -> bool {
        self.tables.contains(&*change.table)
    }

    /// True if this route still needs batch `upto` from the ring.
    fn holds(&self, upto: i64) -> bool {
        !matches!(self.state, RouteState::Paused | RouteState::CatchingUp)
            && !self.disabled
            && self.position < upto
    }
}

/// The router actor.
pub struct Router {
    store: Store,
    stats: Arc<Stats>,
    config: RouterConfig,
    poller: Option<Addr<Poller>>,
    ring: VecDeque<Arc<SharedBatch>>,
    /// The ring covers the LSN range `(ring_start, ring_end]`.
    ring_start: i64,
    ring_end: i64,
    routes: BTreeMap<String, Route>,
    dirty_slots: HashMap<String, i64>,
    flushing: bool,
    /// A log cleanup is running (see [`Router::clean`]).
    cleaning: bool,
    shutting_down: Option<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Router {
    /// A router whose ring starts after `start` (where the poller starts reading).
    pub fn new(store: Store, stats: Arc<Stats>, config: RouterConfig, start: i64) -> Self {
        Self {
            store,
            stats,
            config,
            poller: None,
            ring: VecDeque::new(),
            ring_start: start,
            ring_end: start,
            routes: BTreeMap::new(),
            dirty_slots: HashMap::new(),
            flushing: false,
            cleaning: false,
            shutting_down: None,
        }
    }

    /// Connects the poller (created after the router, since it needs the router's address).
    pub fn set_poller(&mut self, poller: Addr<Poller>) {
        self.poller = Some(poller);
    }

    /// Gives `name` its next delivery, if it is idle and there is anything for it.
    fn pump(&mut self, name: &str, ctx: &mut Context<Self>) {
        if self.shutting_down.is_some() {
            return;
        }
        let Some(route) = self.routes.get_mut(name) else {
            return;
        };
        if route.state != RouteState::Idle || route.disabled || route.unpersisted {
            return;
        }
        if route.position >= self.ring_end {
            return; // Caught up: the next NewBatch pumps it.
        }
        if route.position < self.ring_start {
            return self.catch_up(name.to_string(), ctx);
        }
        // Collect this route's changes from the first ring batch that has any.
        let mut upto = route.position;
        let mut changes = Vec::new();
        for batch in self.ring.iter().filter(|b| b.upto > route.position) {
            changes.extend(
                batch
                    .changes
                    .iter()
                    .filter(|c| c.lsn > route.position && route.wants(c))
                    .cloned(),
            );
            upto = batch.upto;
            if !changes.is_empty() {
                break;
            }
        }
        if changes.is_empty() {
            // Nothing for this component up to `upto`: move its slot without a delivery.
            route.position = upto;
            self.mark_confirmed(name, upto, ctx);
            return;
        }
        route.state = RouteState::Delivering;
        route.addr.do_send(Deliver {
            changes: Arc::new(changes),
            upto,
        });
    }

    /// Reads the next changes of `name`'s tables straight from the log.
    fn catch_up(&mut self, name: String, ctx: &mut Context<Self>) {
        let Some(route) = self.routes.get_mut(&name) else {
            return;
        };
        route.state = RouteState::CatchingUp;
        let store = self.store.clone();
        let after = route.position;
        let tables = route.table_list.clone();
        let limits = self.config.limits;
        self.stats
            .catch_up_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.spawn(
            async move { store.read_tables(after, limits, tables).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let Some(route) = act.routes.get_mut(&name) else {
                        return;
                    };
                    route.state = RouteState::Idle;
                    match result {
                        Ok(batch) if batch.changes.is_empty() => {
                            // Undecodable rows are the poller's to quarantine; moving past
                            // them here is safe because the poller reads the same range.
                            let upto = batch.scanned_to;
                            if upto > route.position {
                                route.position = upto;
                                act.mark_confirmed(&name, upto, ctx);
                            }
                        }
                        Ok(batch) => {
                            route.state = RouteState::Delivering;
                            route.addr.do_send(Deliver {
                                changes: Arc::new(batch.changes.into_iter().map(Arc::new).collect()),
                                upto: batch.scanned_to,
                            });
                        }
                        Err(err) => {
                            tracing::warn!(component = %name, error = %err, "catch-up read failed; retrying");
                            let name = name.clone();
                            ctx.run_later(Duration::from_millis(100), move |act, ctx| {
                                act.pump(&name, ctx)
                            });
                        }
                    }
                }),
        );
    }

    /// Records a new confirmed position: schedules the slot write, pumps the route again,
    /// and lets the ring shrink.
    fn mark_confirmed(&mut self, name: &str, position: i64, ctx: &mut Context<Self>) {
        self.dirty_slots.insert(name.to_string(), position);
        if let Some(route) = self.routes.get_mut(name) {
            route.unpersisted = true;
        }
        self.stats.update(name, |s| s.position = position);
        self.flush_slots(ctx);
        self.evict(ctx);
        self.pump(name, ctx);
    }

    fn flush_slots(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.dirty_slots.is_empty() {
            return;
        }
        self.flushing = true;
        let positions: Vec<(String, i64)> = self.dirty_slots.drain().collect();
        let positions_written: Vec<String> = positions.iter().map(|(n, _)| n.clone()).collect();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let retry = positions.clone();
                store
                    .write(move |conn| slots::advance_many(conn, &positions))
                    .await
                    .map_err(|err| (err, retry))
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.flushing = false;
                if let Err((err, positions)) = result {
                    tracing::warn!(error = %err, "slot write failed; retrying");
                    for (name, pos) in positions {
                        let entry = act.dirty_slots.entry(name).or_insert(pos);
                        *entry = (*entry).max(pos);
                    }
                    ctx.run_later(Duration::from_millis(50), |act, ctx| act.flush_slots(ctx));
                    return;
                }
                // These positions are durable: their components may get more.
                let written: Vec<String> = positions_written;
                for name in written {
                    if act.dirty_slots.contains_key(&name) {
                        continue;
                    }
                    if let Some(route) = act.routes.get_mut(&name) {
                        route.unpersisted = false;
                    }
                    act.pump(&name, ctx);
                }
                act.flush_slots(ctx);
                act.maybe_finish_shutdown(ctx);
            }),
        );
    }

    /// Drops ring batches nobody needs any more, and, when the ring is full while some
    /// component waits for newer changes, the oldest batch even if a slow component still
    /// needs it (that component will read it from the log).
    fn evict(&mut self, ctx: &mut Context<Self>) {
        let mut released = 0;
        while let Some(oldest) = self.ring.front() {
            let upto = oldest.upto;
            let needed = self.routes.values().any(|r| r.holds(upto));
            let someone_waits = self
                .routes
                .values()
                .any(|r| !r.disabled && r.state == RouteState::Idle && r.position >= self.ring_end);
            if needed && !(self.ring.len() >= self.config.window && someone_waits) {
                break;
            }
            self.ring.pop_front();
            self.ring_start = upto;
            released += 1;
        }
        if released > 0 {
            if let Some(poller) = &self.poller {
                poller.do_send(Release(released));
            }
            // Components the ring left behind now catch up from the log.
            let names: Vec<String> = self.routes.keys().cloned().collect();
            for name in names {
                self.pump(&name, ctx);
            }
        }
    }

    /// Reports each component's state to `__astha_components` for `astha status`, and
    /// deletes the log rows every slot is past. A tick while a cleanup still runs does
    /// nothing: one cleanup at a time.
    fn cleanup(&mut self, ctx: &mut Context<Self>) {
        if self.cleaning {
            return;
        }
        let beats: Vec<astha_core::heartbeat::Heartbeat> = self
            .stats
            .snapshot()
            .components
            .into_iter()
            .map(|c| astha_core::heartbeat::Heartbeat {
                status: serde_json::to_value(c.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                breaker: c.breaker.to_string(),
                position: c.position,
                delivered: c.delivered as i64,
                failures: c.failures as i64,
                dead_letters: c.dead_letters as i64,
                version: c.version,
                name: c.name,
                updated_at: String::new(),
            })
            .collect();
        self.clean(beats, ctx);
    }

    /// One budget's worth of cleanup (after writing `beats`, if any), then at once the
    /// next while rows remain: a budget is one short write-connection job, so slot writes
    /// queued meanwhile go between two of them, and a large backlog is still removed
    /// right after it drains rather than one budget per tick.
    fn clean(&mut self, beats: Vec<astha_core::heartbeat::Heartbeat>, ctx: &mut Context<Self>) {
        self.cleaning = true;
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let log = store.log_table().to_string();
                store
                    .write(move |conn| {
                        if !beats.is_empty() {
                            astha_core::heartbeat::write(conn, &beats)?;
                        }
                        slots::cleanup_some(conn, &log, &slots::CleanupBudget::default())
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
                        if !done.finished && act.shutting_down.is_none() {
                            // More to remove: go on soon, leaving the write lock to
                            // writers in between.
                            ctx.run_later(CLEANUP_PAUSE, |act, ctx| {
                                if !act.cleaning && act.shutting_down.is_none() {
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

    fn maybe_finish_shutdown(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down.is_none() {
            return;
        }
        let delivering = self
            .routes
            .values()
            .any(|r| matches!(r.state, RouteState::Delivering | RouteState::CatchingUp));
        if delivering || self.flushing || !self.dirty_slots.is_empty() {
            return;
        }
        self.finish_shutdown(ctx);
    }

    fn finish_shutdown(&mut self, ctx: &mut Context<Self>) {
        if let Some(waiters) = self.shutting_down.take() {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
        for route in self.routes.values() {
            route.addr.do_send(crate::supervisor::StopSupervisor);
        }
        ctx.stop();
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let interval = self.config.cleanup_interval;
        ctx.run_interval(interval, |act, ctx| act.cleanup(ctx));
    }
}

impl Handler<NewBatch> for Router {
    type Result = ();

    fn handle(&mut self, msg: NewBatch, ctx: &mut Context<Self>) {
        let batch = msg.0;
        debug_assert_eq!(batch.after, self.ring_end, "batches are contiguous");
        self.ring_end = batch.upto;
        self.ring.push_back(batch);
        let names: Vec<String> = self.routes.keys().cloned().collect();
        for name in names {
            self.pump(&name, ctx);
        }
        self.evict(ctx);
    }
}

impl Handler<Progress> for Router {
    type Result = ();

    fn handle(&mut self, msg: Progress, ctx: &mut Context<Self>) {
        let Some(route) = self.routes.get_mut(&msg.component) else {
            return;
        };
        if msg.finished {
            route.state = if msg.paused {
                RouteState::Paused
            } else {
                RouteState::Idle
            };
        }
        if msg.confirmed > route.position {
            route.position = msg.confirmed;
            self.mark_confirmed(&msg.component, msg.confirmed, ctx);
        } else {
            self.evict(ctx);
            self.pump(&msg.component, ctx);
        }
        self.maybe_finish_shutdown(ctx);
    }
}

impl Handler<Resume> for Router {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        if let Some(route) = self.routes.get_mut(&msg.component) {
            if route.state == RouteState::Paused {
                route.state = RouteState::Idle;
            }
        }
        self.pump(&msg.component, ctx);
    }
}

impl Handler<Register> for Router {
    type Result = ResponseActFuture<Self, Result<(), AsthaError>>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let component = msg.component;
        let tables = msg.tables;
        let name = component.name().to_string();
        if self.routes.contains_key(&name) {
            return Box::pin(actix::fut::ready(Err(AsthaError::DuplicateComponent(name))));
        }
        let store = self.store.clone();
        let slot_name = name.clone();
        Box::pin(
            async move {
                let log = store.log_table().to_string();
                store
                    .write(move |conn| slots::get_or_create(conn, &log, &slot_name, SlotStart::Head))
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                let slot = result?;
                if act.routes.contains_key(&name) {
                    return Err(AsthaError::DuplicateComponent(name));
                }
                act.stats.components.insert(
                    name.clone(),
                    ComponentStats {
                        position: slot.position,
                        ..ComponentStats::new(&name, component.version(), tables.clone())
                    },
                );
                let supervisor = Supervisor::new(
                    component,
                    ctx.address(),
                    act.store.clone(),
                    act.stats.clone(),
                    act.config.supervisor.clone(),
                )
                .start();
                tracing::info!(component = %name, position = slot.position, ?tables, "component registered");
                act.routes.insert(
                    name.clone(),
                    Route {
                        addr: supervisor,
                        table_list: tables.clone().into(),
                        tables: tables.into_iter().collect(),
                        position: slot.position,
                        // The supervisor refreshes the component first, then sends Resume.
                        state: RouteState::Paused,
                        disabled: false,
                        unpersisted: false,
                    },
                );
                Ok(())
            }),
        )
    }
}

impl Handler<Unregister> for Router {
    type Result = ResponseActFuture<Self, Result<(), AsthaError>>;

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) -> Self::Result {
        let Some(route) = self.routes.remove(&msg.name) else {
            return Box::pin(actix::fut::ready(Err(AsthaError::UnknownComponent(
                msg.name,
            ))));
        };
        route.addr.do_send(crate::supervisor::StopSupervisor);
        self.dirty_slots.remove(&msg.name);
        self.stats.components.remove(&msg.name);
        let store = self.store.clone();
        let name = msg.name;
        Box::pin(
            async move {
                store
                    .write(move |conn| {
                        astha_core::heartbeat::remove(conn, &name)?;
                        slots::drop_slot(conn, &name)
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.evict(ctx);
                result.map(|_| ()).map_err(AsthaError::from)
            }),
        )
    }
}

impl Handler<SetStatus> for Router {
    type Result = Result<(), AsthaError>;

    fn handle(&mut self, msg: SetStatus, ctx: &mut Context<Self>) -> Self::Result {
        let route = self
            .routes
            .get_mut(&msg.name)
            .ok_or_else(|| AsthaError::UnknownComponent(msg.name.clone()))?;
        route.disabled = msg.status == ComponentStatus::Disabled;
        self.stats.update(&msg.name, |s| s.status = msg.status);
        route.addr.do_send(msg.clone());
        self.evict(ctx);
        self.pump(&msg.name, ctx);
        Ok(())
    }
}

impl Handler<Shutdown> for Router {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(poller) = self.poller.take() {
            poller.do_send(StopReading);
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutting_down.get_or_insert_with(Vec::new).push(tx);
        ctx.run_later(self.config.drain_timeout, |act, ctx| {
            if act.shutting_down.is_some() {
                tracing::warn!(
                    "shutdown drain timed out; unconfirmed changes will be delivered again"
                );
                act.finish_shutdown(ctx);
            }
        });
        self.maybe_finish_shutdown(ctx);
        Box::pin(
            async move {
                let _ = rx.await;
            }
            .into_actor(self),
        )
    }
}
