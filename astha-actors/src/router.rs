//! The router: moves messages between the poller and the supervisors, and performs what
//! the routing state machine ([`astha_core::routing`]) decides.
//!
//! The decisions — which changes each component gets next, when a batch leaves the
//! ring, when a component falls behind and reads the log instead, when a position may
//! move — are all in [`Routing`], a plain struct tested without a runtime. This actor
//! only feeds it its inputs (batches from the poller, progress from the supervisors,
//! registrations from the facade, finished reads and slot writes) and carries out its
//! effects: deliveries, catch-up reads on the store's read threads, slot writes, and
//! releases to the poller.
//!
//! Slot writes: one at a time; confirmations that arrive during a write are coalesced
//! into the next one, and a route hears that its position is durable (so it may get
//! more) only once the write that holds its latest position is done. After a crash a
//! component therefore sees again at most the one delivery it had in flight.
//!
//! It never touches a component and never cleans the log (that is the janitor's).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use astha_core::log::BatchLimits;
use astha_core::routing::{Effect, Routing};
use astha_core::slots::{self, SlotStart};

use crate::component::ComponentStatus;
use crate::error::AsthaError;
use crate::messages::*;
use crate::stats::{ComponentStats, Stats};
use crate::store::Store;
use crate::supervisor::{RouterLink, Supervisor, SupervisorSettings};

/// Pause before a failed catch-up read or slot write is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(100);
const SLOT_WRITE_RETRY: Duration = Duration::from_millis(50);

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub limits: BatchLimits,
    pub window: usize,
    pub supervisor: SupervisorSettings,
    /// How long `Shutdown` waits for in-flight deliveries before persisting and stopping.
    pub drain_timeout: Duration,
    /// This engine's name on the leases of non-durable slots, and their length.
    pub lease: LeaseConfig,
}

/// How this engine leases non-durable slots ([`astha_core::lease`]).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The engine's owner name ([`astha_core::lease::owner_id`]).
    pub owner: String,
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
}

/// What the router sends the poller.
pub struct PollerLink {
    pub release: Recipient<Release>,
    pub stop: Recipient<StopReading>,
}

/// What the router sends one supervisor.
struct SupervisorLink {
    deliver: Recipient<Deliver>,
    status: Recipient<SetStatus>,
    stop: Recipient<StopSupervisor>,
}

impl<A> From<Addr<A>> for SupervisorLink
where
    A: Actor + Handler<Deliver> + Handler<SetStatus> + Handler<StopSupervisor>,
    A::Context: actix::dev::ToEnvelope<A, Deliver>
        + actix::dev::ToEnvelope<A, SetStatus>
        + actix::dev::ToEnvelope<A, StopSupervisor>,
{
    fn from(addr: Addr<A>) -> Self {
        Self {
            deliver: addr.clone().recipient(),
            status: addr.clone().recipient(),
            stop: addr.recipient(),
        }
    }
}

/// The router actor.
pub struct Router {
    store: Store,
    stats: Arc<Stats>,
    config: RouterConfig,
    poller: Option<PollerLink>,
    routing: Routing,
    supervisors: HashMap<String, SupervisorLink>,
    /// Confirmed positions not yet written.
    dirty_slots: HashMap<String, i64>,
    flushing: bool,
    shutting_down: Option<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Router {
    /// A router whose ring starts after `start` (where the poller starts reading).
    pub fn new(store: Store, stats: Arc<Stats>, config: RouterConfig, start: i64) -> Self {
        Self {
            store,
            stats,
            routing: Routing::new(config.window, start),
            config,
            poller: None,
            supervisors: HashMap::new(),
            dirty_slots: HashMap::new(),
            flushing: false,
            shutting_down: None,
        }
    }

    /// Connects the poller (created after the router, since it needs the router's address).
    pub fn set_poller(&mut self, poller: PollerLink) {
        self.poller = Some(poller);
    }

    /// Carries out the state machine's effects, in order.
    fn perform(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Deliver {
                    route,
                    changes,
                    upto,
                } => {
                    if let Some(link) = self.supervisors.get(&route) {
                        link.deliver.do_send(Deliver { changes, upto });
                    }
                }
                Effect::CatchUp {
                    route,
                    after,
                    tables,
                } => self.catch_up(route, after, tables, ctx),
                Effect::Persist { route, position } => {
                    self.stats.update(&route, |s| s.position = position);
                    self.dirty_slots.insert(route, position);
                    self.flush_slots(ctx);
                }
                Effect::Release(batches) => {
                    if let Some(poller) = &self.poller {
                        poller.release.do_send(Release(batches));
                    }
                }
            }
        }
    }

    /// Reads the next changes of a route's tables straight from the log.
    fn catch_up(
        &mut self,
        name: String,
        after: i64,
        tables: Arc<[String]>,
        ctx: &mut Context<Self>,
    ) {
        let store = self.store.clone();
        let limits = self.config.limits;
        self.stats
            .catch_up_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.spawn(
            async move { store.read_tables(after, limits, tables).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        Ok(batch) => {
                            let changes = batch.changes.into_iter().map(Arc::new).collect();
                            let effects = act.routing.catch_up_read(&name, changes, batch.scanned_to);
                            act.perform(effects, ctx);
                        }
                        Err(err) => {
                            tracing::warn!(component = %name, error = %err, "catch-up read failed; retrying");
                            act.routing.catch_up_failed(&name);
                            ctx.run_later(CATCH_UP_RETRY, move |act, ctx| {
                                let effects = act.routing.pump(&name);
                                act.perform(effects, ctx);
                            });
                        }
                    }
                    act.maybe_finish_shutdown(ctx);
                }),
        );
    }

    fn flush_slots(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.dirty_slots.is_empty() {
            return;
        }
        self.flushing = true;
        let positions: Vec<(String, i64)> = self.dirty_slots.drain().collect();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                let job = positions.clone();
                let result = store
                    .write(move |conn| slots::advance_many(conn, &job))
                    .await;
                (result, positions)
            }
            .into_actor(self)
            .map(move |(result, positions), act, ctx| {
                act.flushing = false;
                if let Err(err) = result {
                    tracing::warn!(error = %err, "slot write failed; retrying");
                    for (name, pos) in positions {
                        let entry = act.dirty_slots.entry(name).or_insert(pos);
                        *entry = (*entry).max(pos);
                    }
                    ctx.run_later(SLOT_WRITE_RETRY, |act, ctx| act.flush_slots(ctx));
                    return;
                }
                // Durable, unless a newer position of the same route waits to be written.
                for (name, _) in positions {
                    if !act.dirty_slots.contains_key(&name) {
                        let effects = act.routing.persisted(&name);
                        act.perform(effects, ctx);
                    }
                }
                act.flush_slots(ctx);
                act.maybe_finish_shutdown(ctx);
            }),
        );
    }

    fn maybe_finish_shutdown(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down.is_none()
            || self.routing.busy()
            || self.flushing
            || !self.dirty_slots.is_empty()
        {
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
        for link in self.supervisors.values() {
            link.stop.do_send(StopSupervisor);
        }
        ctx.stop();
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<NewBatch> for Router {
    type Result = ();

    fn handle(&mut self, msg: NewBatch, ctx: &mut Context<Self>) {
        let effects = self.routing.batch(msg.0);
        self.perform(effects, ctx);
    }
}

impl Handler<Progress> for Router {
    type Result = ();

    fn handle(&mut self, msg: Progress, ctx: &mut Context<Self>) {
        let effects =
            self.routing
                .progress(&msg.component, msg.confirmed, msg.finished, msg.paused);
        self.perform(effects, ctx);
        self.maybe_finish_shutdown(ctx);
    }
}

impl Handler<Resume> for Router {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        let effects = self.routing.resume(&msg.component);
        self.perform(effects, ctx);
    }
}

impl Handler<Register> for Router {
    type Result = ResponseActFuture<Self, Result<(), AsthaError>>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let component = msg.component;
        let tables = msg.tables;
        let name = component.name().to_string();
        if self.routing.contains(&name) {
            return Box::pin(actix::fut::ready(Err(AsthaError::DuplicateComponent(name))));
        }
        let store = self.store.clone();
        let slot_name = name.clone();
        let lease = (!component.durable()).then(|| self.config.lease.clone());
        Box::pin(
            async move {
                let log = store.log_table().to_string();
                store
                    .write(move |conn| {
                        let slot = slots::get_or_create(conn, &log, &slot_name, SlotStart::Head)?;
                        if let Some(lease) = lease {
                            astha_core::lease::take(
                                conn,
                                &slot_name,
                                &lease.owner,
                                lease.ttl,
                                astha_core::lease::now_ms(),
                            )?;
                        }
                        Ok(slot)
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                let slot = result?;
                // The route starts paused: the supervisor refreshes the component
                // first, then sends Resume.
                if !act.routing.register(&name, tables.clone(), slot.position) {
                    return Err(AsthaError::DuplicateComponent(name));
                }
                act.stats.components.insert(
                    name.clone(),
                    ComponentStats {
                        position: slot.position,
                        ..ComponentStats::new(&name, component.version(), tables.clone())
                    },
                );
                let router = RouterLink {
                    progress: ctx.address().recipient(),
                    resume: ctx.address().recipient(),
                };
                let supervisor = Supervisor::new(
                    component,
                    router,
                    act.store.clone(),
                    act.stats.clone(),
                    act.config.supervisor.clone(),
                )
                .start();
                tracing::info!(component = %name, position = slot.position, ?tables, "component registered");
                act.supervisors.insert(name, supervisor.into());
                Ok(())
            }),
        )
    }
}

impl Handler<Unregister> for Router {
    type Result = ResponseActFuture<Self, Result<(), AsthaError>>;

    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) -> Self::Result {
        let Some(effects) = self.routing.unregister(&msg.name) else {
            return Box::pin(actix::fut::ready(Err(AsthaError::UnknownComponent(
                msg.name,
            ))));
        };
        if let Some(link) = self.supervisors.remove(&msg.name) {
            link.stop.do_send(StopSupervisor);
        }
        self.dirty_slots.remove(&msg.name);
        self.stats.components.remove(&msg.name);
        self.perform(effects, ctx);
        let store = self.store.clone();
        let name = msg.name;
        Box::pin(
            async move {
                store
                    .write(move |conn| {
                        astha_core::heartbeat::remove(conn, &name)?;
                        astha_core::lease::release(conn, &name)?;
                        slots::drop_slot(conn, &name)
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, _, _| result.map(|_| ()).map_err(AsthaError::from)),
        )
    }
}

impl Handler<SetStatus> for Router {
    type Result = Result<(), AsthaError>;

    fn handle(&mut self, msg: SetStatus, ctx: &mut Context<Self>) -> Self::Result {
        let disabled = msg.status == ComponentStatus::Disabled;
        let effects = self
            .routing
            .set_disabled(&msg.name, disabled)
            .ok_or_else(|| AsthaError::UnknownComponent(msg.name.clone()))?;
        self.stats.update(&msg.name, |s| s.status = msg.status);
        if let Some(link) = self.supervisors.get(&msg.name) {
            link.status.do_send(msg.clone());
        }
        self.perform(effects, ctx);
        Ok(())
    }
}

impl Handler<Shutdown> for Router {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(poller) = self.poller.take() {
            poller.stop.do_send(StopReading);
        }
        self.routing.stop();
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
