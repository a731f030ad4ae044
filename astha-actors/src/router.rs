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
//! Slot writes: one at a time. A write takes the confirmed positions once it holds the
//! write lock ([`crate::pending_slots`]), so those that arrive while it waits for the lock
//! go in it; those that arrive after are coalesced into the next one. A route hears which
//! of its positions each write made durable.
//! Deliveries do not wait for a write when there is room: the state machine gives a
//! route at most one batch (`limits.max_rows` changes) past its durable position, so a
//! component whose confirmation is being written gets its next changes at once, within
//! that bound. After a crash a component therefore sees again at most one batch.
//!
//! It never touches a component and never cleans the log (that is the janitor's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use astha_core::log::BatchLimits;
use astha_core::routing::{Effect, Routing};
use astha_core::slots::{self, SlotStart};
use astha_core::snapshot::{self, Snapshot, SnapshotMode};

use crate::component::ComponentStatus;
use crate::error::AsthaError;
use crate::messages::*;
use crate::pending_slots::PendingSlots;
use crate::stats::{ComponentStats, SnapshotProgress, Stats};
use crate::store::Store;
use crate::supervisor::{RouterLink, SnapshotPlan, Supervisor, SupervisorSettings};
use crate::witness::PanicWitness;

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
    /// The slots of non-durable consumers: leased, also when restored.
    leased: HashSet<String>,
    /// Confirmed positions not yet written, taken by the slot write once it holds the
    /// write lock.
    pending: PendingSlots,
    flushing: bool,
    shutting_down: Option<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Reports this actor's death by panic.
    _witness: PanicWitness,
}

impl Router {
    /// A router whose ring starts after `start` (where the poller starts reading).
    pub fn new(store: Store, stats: Arc<Stats>, config: RouterConfig, start: i64) -> Self {
        Self {
            _witness: PanicWitness::new(stats.clone(), "router"),
            store,
            stats,
            routing: Routing::new(config.window, start, config.limits.max_rows),
            config,
            poller: None,
            supervisors: HashMap::new(),
            leased: HashSet::new(),
            pending: PendingSlots::default(),
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
                    self.pending.confirm(&route, position);
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
                        Ok(batch) => act.caught_up(name, batch, ctx),
                        Err(err) => act.catch_up_failed(name, &err, ctx),
                    }
                    act.maybe_finish_shutdown(ctx);
                }),
        );
    }

    /// A catch-up read is back. Undecodable rows in it at or before what the poller has
    /// published are rows the poller never read (they lie before its start: the route's
    /// slot was created behind it), so nobody else will move them to dead letters: the
    /// router does, before the route may pass them. If that write fails, the read counts
    /// as failed and is tried again.
    fn caught_up(&mut self, name: String, batch: astha_core::log::Batch, ctx: &mut Context<Self>) {
        let upto = batch.scanned_to.min(self.routing.ring_end());
        let unread: Vec<(i64, String)> = batch
            .malformed
            .iter()
            .filter(|m| m.raw.lsn <= upto)
            .map(|m| (m.raw.lsn, m.reason.clone()))
            .collect();
        if unread.is_empty() {
            return self.deliver_caught_up(&name, batch, ctx);
        }
        let store = self.store.clone();
        let log = store.log_table().to_string();
        let (count, first) = (unread.len(), unread[0].1.clone());
        ctx.spawn(
            async move {
                store
                    .write(move |conn| astha_core::dead_letter::quarantine(conn, &log, &unread))
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                match result {
                    Ok(_) => {
                        act.stats.malformed_rows(count, &first);
                        act.deliver_caught_up(&name, batch, ctx);
                    }
                    Err(err) => act.catch_up_failed(name, &err, ctx),
                }
                act.maybe_finish_shutdown(ctx);
            }),
        );
    }

    fn deliver_caught_up(
        &mut self,
        name: &str,
        batch: astha_core::log::Batch,
        ctx: &mut Context<Self>,
    ) {
        let changes = batch.changes.into_iter().map(Arc::new).collect();
        let effects = self.routing.catch_up_read(name, changes, batch.scanned_to);
        self.perform(effects, ctx);
    }

    fn catch_up_failed(
        &mut self,
        name: String,
        err: &astha_core::CoreError,
        ctx: &mut Context<Self>,
    ) {
        tracing::warn!(component = %name, error = %err, "catch-up read failed; retrying");
        self.routing.catch_up_failed(&name);
        ctx.run_later(CATCH_UP_RETRY, move |act, ctx| {
            let effects = act.routing.pump(&name);
            act.perform(effects, ctx);
        });
    }

    fn flush_slots(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        self.flushing = true;
        let pending = self.pending.clone();
        let store = self.store.clone();
        let stats = self.stats.clone();
        // Every route's confirmed position: if the slot table was dropped, all of them
        // go back at once, so cleanup is never bounded by some slots alone.
        let known: Vec<(String, i64)> = self
            .stats
            .components
            .iter()
            .map(|c| (c.name.clone(), c.position))
            .collect();
        let relet = Relet {
            slots: self.leased.clone(),
            lease: self.config.lease.clone(),
        };
        let asked = std::time::Instant::now();
        let database = self.store.database();
        ctx.spawn(
            async move {
                store
                    .write(move |conn| {
                        // After a failure (a re-based log, a replaced file) positions held
                        // in memory are no longer the truth: write none.
                        if stats.failure().is_some() {
                            pending.take();
                            return Ok(Vec::new());
                        }
                        stats
                            .slot_writes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // Delivery waits for this write: it asks this process's
                        // application writers for a turn at the lock, and takes the
                        // positions pending once it holds the lock.
                        astha_core::write_turns::taking_turns(database, || {
                            write_slots(conn, &pending, &known, &relet)
                        })
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.flushing = false;
                let took = asked.elapsed().as_micros() as u64;
                act.stats
                    .slot_write_micros
                    .fetch_add(took, std::sync::atomic::Ordering::Relaxed);
                act.stats
                    .slot_write_max_micros
                    .fetch_max(took, std::sync::atomic::Ordering::Relaxed);
                // What the write took is in flight: durable now, or pending again (also
                // when the job failed as a whole, its thread panicking).
                let positions = act.pending.settle(result.is_ok());
                match result {
                    Ok(restored) => {
                        for (name, err) in restored {
                            act.stats.slot_restored(&name, &err);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "slot write failed; retrying");
                        ctx.run_later(SLOT_WRITE_RETRY, |act, ctx| act.flush_slots(ctx));
                        return;
                    }
                }
                // Durable; a newer position of the same route may wait to be written.
                for (name, position) in positions {
                    let effects = act.routing.persisted(&name, position);
                    act.perform(effects, ctx);
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
            || !self.pending.is_empty()
        {
            return;
        }
        self.finish_shutdown(ctx);
    }

    /// Stops every supervisor (each lets its component finish, see `Component::on_stop`),
    /// then answers the `Shutdown` callers and stops.
    fn finish_shutdown(&mut self, ctx: &mut Context<Self>) {
        let waiters = self.shutting_down.take().unwrap_or_default();
        let stopped: Vec<_> = self
            .supervisors
            .values()
            .map(|link| link.stop.send(StopSupervisor))
            .collect();
        ctx.wait(
            futures::future::join_all(stopped)
                .into_actor(self)
                .map(|_, _, ctx| {
                    for waiter in waiters {
                        let _ = waiter.send(());
                    }
                    ctx.stop();
                }),
        );
    }
}

/// Writes the confirmed positions of `pending`, taken once the write lock is held (they
/// stay in flight there until the router settles the write). A slot that was removed, or
/// moved forward, by someone else
/// is put back at the position its consumer confirmed (which this process holds), and
/// the write done again: its consumer then resumes exactly after what it confirmed, and
/// the caller reports each restored slot with the error found. A restored slot of a
/// non-durable consumer is leased again ([`Relet`]), so it still goes when its owner dies.
fn write_slots(
    conn: &rusqlite::Connection,
    pending: &PendingSlots,
    known: &[(String, i64)],
    relet: &Relet,
) -> astha_core::Result<Restored> {
    let (positions, first) = slots::advance_taking(conn, || pending.take());
    restore_and_write_again(conn, &positions, first, known, relet)
}

/// After a first write of `positions` ended with `outcome`: restores what was lost or
/// moved and writes again (see [`write_slots`]), returning the slots restored.
fn restore_and_write_again(
    conn: &rusqlite::Connection,
    positions: &[(String, i64)],
    mut outcome: astha_core::Result<()>,
    known: &[(String, i64)],
    relet: &Relet,
) -> astha_core::Result<Restored> {
    use astha_core::CoreError;
    let mut restored = Vec::new();
    loop {
        match outcome {
            Ok(()) => return Ok(restored),
            Err(err @ (CoreError::SlotLost { .. } | CoreError::SlotMoved { .. }))
                if restored.len() < positions.len() + known.len() =>
            {
                let (CoreError::SlotLost { name, position }
                | CoreError::SlotMoved { name, position, .. }) = &err
                else {
                    unreachable!("matched above")
                };
                let name = name.clone();
                slots::restore(conn, &name, *position)?;
                relet.lease(conn, &name)?;
                restored.push((name.clone(), err));
                for (other, confirmed) in known {
                    if *other != name && slots::get(conn, other).ok().flatten().is_none() {
                        slots::restore(conn, other, *confirmed)?;
                        relet.lease(conn, other)?;
                        let lost = CoreError::SlotLost {
                            name: other.clone(),
                            position: *confirmed,
                        };
                        restored.push((other.clone(), lost));
                    }
                }
                outcome = slots::advance_many(conn, positions);
            }
            Err(err) => return Err(err),
        }
    }
}

/// The slots a slot write put back, each with the error that showed it lost or moved.
type Restored = Vec<(String, astha_core::CoreError)>;

/// Which slots are leased, and how: what a restored slot needs besides its position.
struct Relet {
    slots: HashSet<String>,
    lease: LeaseConfig,
}

impl Relet {
    /// Takes the lease of `slot` again if it belongs to a non-durable consumer.
    fn lease(&self, conn: &rusqlite::Connection, slot: &str) -> astha_core::Result<()> {
        if !self.slots.contains(slot) {
            return Ok(());
        }
        let now = astha_core::lease::now_ms();
        astha_core::lease::take(conn, slot, &self.lease.owner, self.lease.ttl, now)
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
        let mode = msg.snapshot;
        let name = component.name().to_string();
        if self.routing.contains(&name) {
            return Box::pin(actix::fut::ready(Err(AsthaError::DuplicateComponent(name))));
        }
        let store = self.store.clone();
        let (slot_name, snapshot_tables) = (name.clone(), tables.clone());
        let lease = (!component.durable()).then(|| self.config.lease.clone());
        let leased = lease.is_some();
        Box::pin(
            async move { prepare_slot(store, slot_name, snapshot_tables, mode, lease).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let Prepared {
                        position,
                        snapshot,
                        signals_after,
                        skip,
                    } = result?;
                    // The route starts paused: the supervisor refreshes the component
                    // (and hands over its snapshot) first, then sends Resume.
                    if !act.routing.register(&name, tables.clone(), position) {
                        return Err(AsthaError::DuplicateComponent(name));
                    }
                    if leased {
                        act.leased.insert(name.clone());
                    }
                    act.stats.components.insert(
                        name.clone(),
                        ComponentStats {
                            position,
                            snapshot: snapshot.as_ref().map(|s| SnapshotProgress {
                                lsn: s.lsn,
                                tables: s.table_names(),
                                total: s.total(),
                                done: 0,
                                finished: false,
                            }),
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
                    .with_snapshot(SnapshotPlan {
                        snapshot,
                        chunk: act.config.limits.max_rows,
                        only: mode == SnapshotMode::InitialOnly,
                        signals_after,
                        skip,
                    })
                    .with_tables(tables.clone())
                    .start();
                    tracing::info!(component = %name, position, ?tables, "component registered");
                    act.supervisors.insert(name, supervisor.into());
                    Ok(())
                }),
        )
    }
}

/// Where a registered route starts, and what its supervisor hands over first.
struct Prepared {
    position: i64,
    snapshot: Option<Snapshot>,
    /// Snapshot signals after this one apply (`None` for mode `never`).
    signals_after: Option<i64>,
    /// A signalled snapshot delivered before a restart, not yet passed.
    skip: Option<(Vec<String>, i64)>,
}

/// Finds or creates `name`'s slot and, if `mode` asks for one now, takes a snapshot of
/// `tables` and moves the slot to its LSN (a new slot is created at the log head first,
/// so cleanup keeps everything after it meanwhile). Returns where the route starts.
async fn prepare_slot(
    store: Store,
    name: String,
    tables: Vec<String>,
    mode: SnapshotMode,
    lease: Option<LeaseConfig>,
) -> Result<Prepared, AsthaError> {
    let log = store.log_table().to_string();
    let (slot_name, slot_log) = (name.clone(), log.clone());
    let (slot, need, signals_after, skip) = store
        .write(move |conn| {
            snapshot::ensure_table(conn)?;
            let slot = slots::get(conn, &slot_name)?;
            let need = snapshot::needed(conn, &slot_log, &slot_name, mode, slot.as_ref())?;
            let recorded = snapshot::state(conn, &slot_name)?;
            let signals_after = match (&recorded, mode) {
                (_, SnapshotMode::Never | SnapshotMode::InitialOnly) => None,
                (Some(r), _) if r.signal_id > 0 => Some(r.signal_id),
                _ => Some(snapshot::last_signal(conn)?),
            };
            let skip = recorded.filter(|r| {
                need.is_none()
                    && r.reason == "signal"
                    && r.state == "done"
                    && slot.as_ref().is_some_and(|s| s.position < r.lsn)
            });
            let slot = match slot {
                Some(slot) => slot,
                // Its snapshot was delivered: it takes nothing more, so it gets no slot
                // that would hold the log back.
                None if mode == SnapshotMode::InitialOnly && need.is_none() => slots::Slot {
                    name: slot_name.clone(),
                    position: astha_core::log::head_lsn(conn, &slot_log)?,
                    created_at: String::new(),
                    updated_at: String::new(),
                },
                None => slots::create(conn, &slot_log, &slot_name, SlotStart::Head)?,
            };
            // A non-durable consumer's slot is leased: it goes when its owner stops
            // renewing (kill -9), never held forever.
            if let Some(lease) = lease.filter(|_| !slot.created_at.is_empty()) {
                astha_core::lease::take(
                    conn,
                    &slot_name,
                    &lease.owner,
                    lease.ttl,
                    astha_core::lease::now_ms(),
                )?;
            }
            Ok((slot, need, signals_after, skip.map(|r| (r.tables, r.lsn))))
        })
        .await?;
    let Some(reason) = need else {
        return Ok(Prepared {
            position: slot.position,
            snapshot: None,
            signals_after,
            skip,
        });
    };
    let path = store.path().to_path_buf();
    let consumer = name.clone();
    // On a read thread with a connection of its own: the copy may take a while and must
    // not hold up Astha's writes.
    let taken = store
        .query(move |_| snapshot::take(&path, &log, &consumer, &tables, reason))
        .await?;
    tracing::info!(component = %name, lsn = taken.lsn, rows = taken.total(), reason, "snapshot taken");
    let lsn = taken.lsn;
    let position = store
        .write(move |conn| {
            if let Some(signal) = signals_after {
                snapshot::record_signal(conn, &name, signal)?;
            }
            slots::advance(conn, &name, lsn)
        })
        .await?;
    Ok(Prepared {
        position,
        snapshot: Some(taken),
        signals_after,
        skip: None,
    })
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
        // Its confirmed position not yet durable (pending, or in a write under way that
        // may fail and must not put it back): its slot goes, but the LSN was handed out,
        // so the log's mark still learns it (what a slot write would have raised it to;
        // see `astha_core::log_state`).
        let confirmed = self.pending.forget(&msg.name);
        self.leased.remove(&msg.name);
        self.stats.components.remove(&msg.name);
        self.perform(effects, ctx);
        let store = self.store.clone();
        let name = msg.name;
        Box::pin(
            async move {
                let path = store.path().to_path_buf();
                store
                    .write(move |conn| {
                        if let Some(lsn) = confirmed {
                            astha_core::log_state::raise_mark(conn, lsn)?;
                        }
                        astha_core::heartbeat::remove(conn, &name)?;
                        snapshot::forget(conn, &path, &name)?;
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
