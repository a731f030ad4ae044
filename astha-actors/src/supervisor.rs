//! One supervisor per component: delivers changes in order and keeps a failing
//! component from losing data or hurting anyone else.
//!
//! - A change that fails with a retriable error (or whose handler panics or times out)
//!   is retried with exponential backoff and jitter, up to the retry policy's limit (30
//!   attempts by default); then it is written to the dead-letter table with the error and
//!   the attempt count, and the component moves on. A non-retriable error goes to the
//!   dead-letter table at once. The slot only moves past a change once it was handled or
//!   its dead letter is durably written: nothing is dropped silently.
//! - Consecutive failures (of changes or of periodic health checks) open the circuit
//!   breaker: the supervisor gives its delivery back to the router and its changes wait in
//!   the log, not in memory. After the cool-down it probes `on_health` (half-open) and
//!   resumes when the probe succeeds.
//! - A handler that panics or times out is followed by `on_refresh` before the next
//!   attempt; a component that stays unhealthy for `refresh_after` is refreshed and
//!   resumed from its slot position.
//! - A handler's panic never escapes: it is caught, counted and treated as a failed
//!   attempt. A panic anywhere else (`max_batch`, or a bug in this actor) ends the actor;
//!   its [`PanicWitness`] then marks Astha failed, naming it, so it is never silent.
//!
//! - A component registered with a snapshot receives it first, before any change from
//!   the router: the snapshot's rows are read in chunks of `batch_size` from its copy
//!   and handled exactly like a delivery (same retries, breaker and dead letters; a
//!   snapshot row that is given up on is kept in `__astha_snapshot_dead_letters`). Only
//!   then does the supervisor ask the router to deliver from the snapshot's LSN, where
//!   its slot stands. A component that takes only the snapshot (`initial_only`) never
//!   asks, and drops its slot so it holds no log back.
//!
//! What it is doing is one explicit state (idle, checking health, handling, backing
//! off, dead-lettering, refreshing, cooling down, probing, stopped); `run` alone decides
//! what an idle supervisor does next, and every call that lends the component out
//! names the state it runs in. It talks to the router only through `Recipient`s of
//! `Progress` and `Resume`, so a test mailbox can stand in for the router.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::witness::PanicWitness;
use actix::prelude::*;
use astha_core::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use astha_core::retry::{RetryDecision, RetryPolicy, RetryState};
use astha_core::snapshot::{self, Cursor, Snapshot};
use astha_core::Change;
use futures::FutureExt;

use crate::component::{BatchError, Component, ComponentError, ComponentStatus};
use crate::messages::{Deliver, Progress, Resume, SetStatus, StopSupervisor};
use crate::stats::{SnapshotProgress, Stats};
use crate::store::Store;

/// How often a component with a snapshot mode looks for snapshot signals.
const SIGNAL_POLL: Duration = Duration::from_millis(200);

/// Supervision settings (from the config's `retry`, `breaker` and `supervisor` sections).
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub event_timeout: Duration,
    pub refresh_after: Duration,
    pub health_interval: Duration,
}

/// What a supervisor sends the router (a test mailbox in tests).
pub struct RouterLink {
    pub progress: Recipient<Progress>,
    pub resume: Recipient<Resume>,
}

/// Why one attempt failed.
#[derive(Debug, Clone)]
enum Failure {
    Error(ComponentError),
    Panic(String),
    Timeout,
}

impl Failure {
    fn retriable(&self) -> bool {
        match self {
            Failure::Error(e) => e.is_retriable(),
            Failure::Panic(_) | Failure::Timeout => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Failure::Error(e) => e.to_string(),
            Failure::Panic(msg) => format!("handler panicked: {msg}"),
            Failure::Timeout => "handler timed out".to_string(),
        }
    }
}

struct ActiveBatch {
    changes: Arc<Vec<Arc<Change>>>,
    upto: i64,
    next: usize,
}

#[derive(Debug)]
struct PendingDeadLetter {
    lsn: i64,
    /// Set for a snapshot row, which has no log row of its own to copy.
    snapshot_row: Option<Arc<Change>>,
    reason: String,
    attempts: u32,
    retriable: bool,
}

/// What the supervisor is doing: exactly one thing at a time. While the component is
/// paused the router delivers nothing; while active it may hold one delivery
/// (`Supervisor::batch`).
#[derive(Debug)]
enum State {
    /// Active and free: [`Supervisor::run`] decides what is next.
    Idle,
    /// The periodic health check (`on_health`) has the component.
    Checking,
    /// Handler calls for the delivery have the component.
    Handling,
    /// Waiting out a retry backoff.
    BackingOff,
    /// Writing the dead letter of the delivery's next change (again after a pause if
    /// the write failed); the delivery moves past it only once it is written.
    DeadLettering(PendingDeadLetter),
    /// `on_refresh` has the component; `paused`: the router delivers nothing until the
    /// refresh succeeds and the supervisor resumes.
    Refreshing {
        paused: bool,
    },
    /// Paused: the breaker is open; a half-open probe is scheduled.
    CoolingDown,
    /// Paused: a half-open probe (`on_health`) has the component.
    Probing,
    Stopped,
}

impl State {
    /// True while the router is to deliver nothing.
    fn paused(&self) -> bool {
        matches!(
            self,
            State::Refreshing { paused: true } | State::CoolingDown | State::Probing
        )
    }
}

/// The supervisor actor of one component.
pub struct Supervisor {
    name: String,
    /// The component, unless a call (handler, health check, refresh) has it.
    component: Option<Box<dyn Component>>,
    router: RouterLink,
    store: Store,
    stats: Arc<Stats>,
    settings: SupervisorSettings,
    breaker: CircuitBreaker,
    state: State,
    /// The delivery being handled.
    batch: Option<ActiveBatch>,
    /// Failures of one change so far; kept across pauses, so a change that always
    /// fails gets exactly the policy's attempts.
    retry: Option<(i64, RetryState)>,
    unhealthy_since: Option<Instant>,
    /// A handler panicked or timed out: refresh before the next attempt.
    needs_refresh: bool,
    /// Rows read per snapshot chunk.
    chunk: usize,
    /// The snapshot being handed over, before any change from the router.
    snapshot: Option<SnapshotRun>,
    /// The component takes only its snapshot: never ask the router for changes.
    snapshot_only: bool,
    /// Signals (`__astha_signals`) it acts on: the newest one handled, and its tables.
    signals: Option<(i64, Vec<String>)>,
    /// A signalled snapshot waiting for the end of the current delivery.
    pending_signal: Option<(i64, Vec<String>)>,
    /// A signal is being read or its snapshot taken.
    signal_busy: bool,
    /// A signalled snapshot is being taken: deliveries wait for it.
    taking_signal: bool,
    /// A delivery that arrived during a signalled snapshot, handled after it.
    held: Option<ActiveBatch>,
    /// After a signalled snapshot: changes of these tables up to this LSN are in it, so
    /// they are confirmed without being handed to the component.
    skip: Option<(HashSet<String>, i64)>,
    /// Reports this actor's death by panic.
    _witness: PanicWitness,
}

/// A snapshot being handed over to the component.
struct SnapshotRun {
    snapshot: Arc<Snapshot>,
    /// Where the next chunk is read from.
    cursor: Cursor,
    /// Rows read per chunk.
    chunk: usize,
    /// A chunk read (or the final bookkeeping) is running.
    busy: bool,
    /// Taken on signal `n` while the router delivers: no `Resume` at the end.
    signal: Option<i64>,
}

/// What a component registered with a snapshot gets before its first change.
pub struct SnapshotPlan {
    /// The snapshot to hand over first, if one was taken.
    pub snapshot: Option<Snapshot>,
    /// Rows read per chunk (the engine's `batch_size`).
    pub chunk: usize,
    /// Hand over the snapshot and nothing else (`initial_only`).
    pub only: bool,
    /// Act on snapshot signals newer than this one (`None`: the mode is `never`).
    pub signals_after: Option<i64>,
    /// A signalled snapshot finished before a restart: changes of these tables up to
    /// this LSN are already in it.
    pub skip: Option<(Vec<String>, i64)>,
}

fn now() -> Instant {
    // tokio's clock, so tests on paused time drive the breaker too.
    tokio::time::Instant::now().into_std()
}

impl Supervisor {
    /// A supervisor that refreshes `component` when started, then sends `Resume`.
    pub fn new(
        component: Box<dyn Component>,
        router: RouterLink,
        store: Store,
        stats: Arc<Stats>,
        settings: SupervisorSettings,
    ) -> Self {
        let name = component.name().to_string();
        Self {
            _witness: PanicWitness::new(stats.clone(), format!("supervisor of component {name:?}")),
            name,
            component: Some(component),
            router,
            store,
            stats,
            breaker: CircuitBreaker::new(settings.breaker),
            settings,
            state: State::Refreshing { paused: true },
            batch: None,
            retry: None,
            unhealthy_since: None,
            needs_refresh: false,
            chunk: 256,
            snapshot: None,
            snapshot_only: false,
            signals: None,
            pending_signal: None,
            signal_busy: false,
            taking_signal: false,
            held: None,
            skip: None,
        }
    }

    /// Hands over `plan`'s snapshot before asking the router for changes.
    pub fn with_snapshot(mut self, plan: SnapshotPlan) -> Self {
        self.snapshot_only = plan.only;
        self.snapshot = plan.snapshot.map(|snapshot| SnapshotRun {
            snapshot: Arc::new(snapshot),
            cursor: Cursor::default(),
            chunk: plan.chunk.max(1),
            busy: false,
            signal: None,
        });
        self.chunk = plan.chunk.max(1);
        self.signals = plan.signals_after.map(|after| (after, Vec::new()));
        self.skip = plan
            .skip
            .map(|(tables, lsn)| (tables.into_iter().collect(), lsn));
        self
    }

    /// The tables this component takes, for matching signals.
    pub fn with_tables(mut self, tables: Vec<String>) -> Self {
        if let Some((_, list)) = &mut self.signals {
            *list = tables;
        }
        self
    }

    /// Looks for a snapshot signal newer than the last one handled.
    fn poll_signals(&mut self, ctx: &mut Context<Self>) {
        let Some((after, tables)) = self.signals.clone() else {
            return;
        };
        if self.signal_busy || self.pending_signal.is_some() || self.snapshot.is_some() {
            return;
        }
        self.signal_busy = true;
        let name = self.name.clone();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                store
                    .query(move |conn| snapshot::next_signal(conn, after, &name, &tables))
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.signal_busy = false;
                match result {
                    Ok(Some((id, None))) => {
                        if let Some((after, _)) = &mut act.signals {
                            *after = id;
                        }
                        act.poll_signals(ctx);
                    }
                    Ok(Some((id, Some(tables)))) => {
                        tracing::info!(component = %act.name, signal = id, ?tables, "snapshot signalled");
                        act.pending_signal = Some((id, tables));
                        act.run(ctx);
                    }
                    Ok(None) => {}
                    Err(err) => tracing::debug!(component = %act.name, error = %err, "signal read failed"),
                }
            }),
        );
    }

    /// Takes the snapshot signal `id` asked for, then hands it over before the next
    /// delivery (one that arrives meanwhile is held).
    fn start_signal_snapshot(&mut self, id: i64, tables: Vec<String>, ctx: &mut Context<Self>) {
        self.signal_busy = true;
        self.taking_signal = true;
        let retry = tables.clone();
        let (store, name) = (self.store.clone(), self.name.clone());
        let path = store.path().to_path_buf();
        let log = store.log_table().to_string();
        ctx.spawn(
            async move {
                store
                    .query(move |_| snapshot::take(&path, &log, &name, &tables, "signal"))
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.signal_busy = false;
                act.taking_signal = false;
                match result {
                    Ok(taken) => {
                        tracing::info!(component = %act.name, lsn = taken.lsn, rows = taken.total(), "signalled snapshot taken");
                        act.stats.update(&act.name, |s| {
                            s.snapshot = Some(SnapshotProgress {
                                lsn: taken.lsn,
                                tables: taken.table_names(),
                                total: taken.total(),
                                done: 0,
                                finished: false,
                            })
                        });
                        act.snapshot = Some(SnapshotRun {
                            snapshot: Arc::new(taken),
                            cursor: Cursor::default(),
                            chunk: act.chunk,
                            busy: false,
                            signal: Some(id),
                        });
                    }
                    Err(err) => {
                        tracing::warn!(component = %act.name, signal = id, error = %err, "signalled snapshot failed; it is tried again");
                        if let Some(held) = act.held.take() {
                            act.batch = Some(act.skip_snapshotted(held));
                        }
                        ctx.run_later(Duration::from_secs(1), move |act, ctx| {
                            act.pending_signal.get_or_insert((id, retry));
                            act.run(ctx);
                        });
                    }
                }
                act.run(ctx);
            }),
        );
    }

    /// Drops from `batch` what a signalled snapshot already holds.
    fn skip_snapshotted(&mut self, batch: ActiveBatch) -> ActiveBatch {
        let Some((tables, lsn)) = &self.skip else {
            return batch;
        };
        let kept: Vec<Arc<Change>> = batch.changes[batch.next..]
            .iter()
            .filter(|c| !(c.lsn <= *lsn && tables.contains(&*c.table)))
            .cloned()
            .collect();
        if batch.upto >= *lsn {
            self.skip = None;
        }
        ActiveBatch {
            changes: Arc::new(kept),
            upto: batch.upto,
            next: 0,
        }
    }

    /// The one place that decides what an idle, active supervisor does next: a refresh
    /// owed after a failure, the end of the delivery, or its next handler calls.
    fn run(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Idle) {
            return; // The running step calls run() again when done.
        }
        if self.needs_refresh {
            return self.refresh(ctx, false, "restart after failure");
        }
        let Some(batch) = &self.batch else {
            if self.snapshot.is_none() && !self.signal_busy {
                if let Some((id, tables)) = self.pending_signal.take() {
                    return self.start_signal_snapshot(id, tables, ctx);
                }
            }
            return self.next_snapshot_chunk(ctx);
        };
        if batch.next >= batch.changes.len() && self.snapshot.is_some() {
            self.batch = None;
            return self.snapshot_chunk_done(ctx);
        }
        if batch.next >= batch.changes.len() {
            let upto = batch.upto;
            self.batch = None;
            self.router.progress.do_send(Progress {
                component: self.name.clone(),
                confirmed: upto,
                finished: true,
                paused: false,
            });
            // A signalled snapshot waits for the end of a delivery.
            return self.run(ctx);
        }
        let changes = batch.changes.clone();
        let start = batch.next;
        let timeout = self.settings.event_timeout;
        let Some(mut component) = self.component.take() else {
            return;
        };
        self.state = State::Handling;
        ctx.spawn(
            async move {
                let max_batch = component.max_batch().max(1);
                let mut index = start;
                while index < changes.len() {
                    let end = (index + max_batch).min(changes.len());
                    let outcome = if max_batch == 1 {
                        attempt(component.on_event(&changes[index]), timeout).await
                    } else {
                        attempt_batch(component.on_batch(&changes[index..end]), timeout)
                            .await
                            .map_err(|(handled, failure)| {
                                index += handled;
                                failure
                            })
                    };
                    match outcome {
                        Ok(()) => index = end,
                        Err(failure) => return (component, index, Some(failure)),
                    }
                }
                (component, changes.len(), None)
            }
            .into_actor(self)
            .map(move |(component, reached, failure), act, ctx| {
                act.component = Some(component);
                if matches!(act.state, State::Handling) {
                    act.state = State::Idle;
                    act.after_step(start, reached, failure, ctx);
                }
            }),
        );
    }

    /// The handler calls from `start` handled the delivery up to `reached`, then
    /// `failure`, if any: retry, dead-letter, or pause.
    fn after_step(
        &mut self,
        start: usize,
        reached: usize,
        failure: Option<Failure>,
        ctx: &mut Context<Self>,
    ) {
        let Some(batch) = &mut self.batch else {
            return;
        };
        self.stats
            .delivered(&self.name, &batch.changes[start..reached]);
        batch.next = reached;
        if reached > start {
            self.breaker.on_success(now());
            self.retry = None;
        }
        let Some(failure) = failure else {
            return self.run(ctx);
        };
        let lsn = batch.changes[reached].lsn;
        if matches!(failure, Failure::Panic(_)) {
            self.stats.panicked(&self.name, lsn, &failure.describe());
            self.needs_refresh = true;
        }
        if matches!(failure, Failure::Timeout) {
            self.stats.timed_out(&self.name, lsn);
            self.needs_refresh = true;
        }
        let snapshot_row = batch.changes[reached]
            .snapshot
            .map(|_| batch.changes[reached].clone());
        if !failure.retriable() {
            let attempts = self.attempts_for(lsn) + 1;
            self.stats
                .attempt_failed(&self.name, lsn, attempts, &failure.describe());
            return self.write_dead_letter(
                PendingDeadLetter {
                    lsn,
                    snapshot_row,
                    reason: failure.describe(),
                    attempts,
                    retriable: false,
                },
                ctx,
            );
        }
        let policy = self.settings.retry;
        let state = match &mut self.retry {
            Some((l, state)) if *l == lsn => state,
            other => {
                *other = Some((lsn, RetryState::new(policy)));
                &mut other.as_mut().expect("just set").1
            }
        };
        let decision = state.record_failure(rand::random::<f64>());
        let attempt_no = state.failures();
        self.stats
            .attempt_failed(&self.name, lsn, attempt_no, &failure.describe());
        match decision {
            RetryDecision::GiveUp { attempts } => self.write_dead_letter(
                PendingDeadLetter {
                    lsn,
                    snapshot_row,
                    reason: failure.describe(),
                    attempts,
                    retriable: true,
                },
                ctx,
            ),
            RetryDecision::RetryAfter(delay) => {
                let before = self.breaker.state();
                self.breaker.on_failure(now());
                if self.breaker.state() == BreakerState::Open {
                    if before != BreakerState::Open {
                        self.stats.breaker_changed(&self.name, BreakerState::Open);
                    }
                    return self.pause(ctx);
                }
                self.state = State::BackingOff;
                ctx.run_later(delay, |act, ctx| {
                    if matches!(act.state, State::BackingOff) {
                        act.state = State::Idle;
                        act.run(ctx);
                    }
                });
            }
        }
    }

    fn attempts_for(&self, lsn: i64) -> u32 {
        match &self.retry {
            Some((l, state)) if *l == lsn => state.failures(),
            _ => 0,
        }
    }

    /// Gives the delivery back to the router (the changes wait in the log) and schedules
    /// the half-open probe.
    fn pause(&mut self, ctx: &mut Context<Self>) {
        if self.snapshot.is_some() {
            // The router delivers nothing yet: keep the chunk and carry on with it
            // once resumed.
            self.state = State::CoolingDown;
            self.unhealthy_since.get_or_insert_with(now);
            return self.schedule_probe(ctx);
        }
        let confirmed = self
            .batch
            .take()
            .and_then(|b| b.next.checked_sub(1).map(|i| b.changes[i].lsn))
            .unwrap_or(0);
        self.state = State::CoolingDown;
        self.unhealthy_since.get_or_insert_with(now);
        self.router.progress.do_send(Progress {
            component: self.name.clone(),
            confirmed,
            finished: true,
            paused: true,
        });
        self.schedule_probe(ctx);
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>) {
        let delay = self
            .breaker
            .retry_at()
            .map(|at| at.saturating_duration_since(now()))
            .unwrap_or(self.settings.breaker.cool_down);
        ctx.run_later(delay, |act, ctx| act.probe(ctx));
    }

    /// Half-open probe: asks the component whether it is healthy.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::CoolingDown) {
            return; // Resumed, stopped, or refreshing (which schedules its own probe).
        }
        if !self.breaker.allow(now()) {
            return self.schedule_probe(ctx);
        }
        if self.breaker.state() == BreakerState::HalfOpen {
            self.stats
                .breaker_changed(&self.name, BreakerState::HalfOpen);
        }
        self.call_component(ctx, State::Probing, Lifecycle::Health, |act, result, ctx| {
            match result {
                Ok(()) => {
                    act.breaker.on_success(now());
                    if act.breaker.state() == BreakerState::Closed {
                        act.resume(ctx);
                    } else {
                        act.state = State::CoolingDown;
                        let next = act.settings.health_interval.min(act.settings.breaker.cool_down);
                        ctx.run_later(next, |act, ctx| act.probe(ctx));
                    }
                }
                Err(failure) => {
                    tracing::warn!(component = %act.name, error = %failure.describe(), "health probe failed");
                    act.breaker.on_failure(now());
                    act.stats.breaker_changed(&act.name, act.breaker.state());
                    let since = *act.unhealthy_since.get_or_insert_with(now);
                    if now().saturating_duration_since(since) >= act.settings.refresh_after {
                        act.refresh(ctx, true, "unhealthy past refresh_after");
                    } else {
                        act.state = State::CoolingDown;
                        act.schedule_probe(ctx);
                    }
                }
            }
        });
    }

    fn resume(&mut self, ctx: &mut Context<Self>) {
        if self.unhealthy_since.is_some() {
            self.stats.breaker_changed(&self.name, BreakerState::Closed);
        }
        self.unhealthy_since = None;
        self.state = State::Idle;
        if self.snapshot.is_none() && !self.snapshot_only {
            self.router.resume.do_send(Resume {
                component: self.name.clone(),
            });
        }
        self.run(ctx);
    }

    /// Reads the snapshot's next chunk into the delivery; at its end, finishes it.
    fn next_snapshot_chunk(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &mut self.snapshot else {
            return;
        };
        if run.busy {
            return;
        }
        run.busy = true;
        let (snapshot, cursor, chunk) = (run.snapshot.clone(), run.cursor, run.chunk);
        let store = self.store.clone();
        ctx.spawn(
            async move { store.query(move |_| snapshot.read_chunk(cursor, chunk)).await }
                .into_actor(self)
            .map(move |result, act, ctx| {
                let Some(run) = &mut act.snapshot else {
                    return;
                };
                run.busy = false;
                match result {
                    Ok((rows, _)) if rows.is_empty() => act.finish_snapshot(ctx),
                    Ok((rows, next)) => {
                        run.cursor = next;
                        let lsn = run.snapshot.lsn;
                        act.batch = Some(ActiveBatch {
                            changes: Arc::new(rows.into_iter().map(Arc::new).collect()),
                            upto: lsn,
                            next: 0,
                        });
                        act.run(ctx);
                    }
                    Err(err) => {
                        tracing::warn!(component = %act.name, error = %err, "snapshot read failed; retrying");
                        ctx.run_later(Duration::from_millis(100), |act, ctx| act.run(ctx));
                    }
                }
            }),
        );
    }

    /// A chunk of the snapshot was handled: record the progress, read the next.
    fn snapshot_chunk_done(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &self.snapshot else {
            return;
        };
        let done = run.cursor.read;
        self.stats.update(&self.name, |s| {
            if let Some(progress) = &mut s.snapshot {
                progress.done = done;
            }
        });
        let (store, name) = (self.store.clone(), self.name.clone());
        // Progress is for people (`astha status`); losing one update loses nothing.
        ctx.spawn(
            async move {
                if let Err(err) = store
                    .write(move |conn| snapshot::record_progress(conn, &name, done))
                    .await
                {
                    tracing::debug!(error = %err, "snapshot progress not recorded");
                }
            }
            .into_actor(self),
        );
        self.run(ctx);
    }

    /// Every row of the snapshot was handled: record it done, then take changes from
    /// the snapshot's LSN on (or, taking only the snapshot, drop the slot).
    fn finish_snapshot(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = &mut self.snapshot else {
            return;
        };
        run.busy = true;
        let snapshot = run.snapshot.clone();
        let (store, only) = (self.store.clone(), self.snapshot_only);
        let signal = run.signal;
        ctx.spawn(
            async move {
                store
                    .write(move |conn| {
                        snapshot::finish(conn, &snapshot)?;
                        if let Some(id) = signal {
                            snapshot::record_signal(conn, &snapshot.consumer, id)?;
                        }
                        if only {
                            astha_core::slots::drop_slot(conn, &snapshot.consumer)?;
                        }
                        Ok(())
                    })
                    .await
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                if let Err(err) = result {
                    tracing::warn!(component = %act.name, error = %err, "recording the snapshot's end failed; retrying");
                    if let Some(run) = &mut act.snapshot {
                        run.busy = false;
                    }
                    ctx.run_later(Duration::from_millis(100), |act, ctx| act.finish_snapshot(ctx));
                    return;
                }
                let Some(run) = act.snapshot.take() else {
                    return;
                };
                let total = run.snapshot.total();
                tracing::info!(component = %act.name, rows = total, "snapshot delivered");
                act.stats.update(&act.name, |s| {
                    if let Some(progress) = &mut s.snapshot {
                        progress.done = total;
                        progress.finished = true;
                    }
                });
                if let Some(id) = run.signal {
                    // The router kept delivering: carry on with what it sent meanwhile,
                    // without the snapshotted tables' changes the snapshot holds.
                    if let Some((after, _)) = &mut act.signals {
                        *after = id;
                    }
                    act.skip = Some((run.snapshot.table_names().into_iter().collect(), run.snapshot.lsn));
                    if let Some(held) = act.held.take() {
                        act.batch = Some(act.skip_snapshotted(held));
                    }
                } else if !act.snapshot_only {
                    act.router.resume.do_send(Resume {
                        component: act.name.clone(),
                    });
                }
                act.run(ctx);
            }),
        );
    }

    /// Calls `on_refresh`; on success a paused component resumes from its slot position
    /// and an active one carries on with its delivery.
    fn refresh(&mut self, ctx: &mut Context<Self>, paused: bool, reason: &'static str) {
        self.call_component(
            ctx,
            State::Refreshing { paused },
            Lifecycle::Refresh,
            move |act, result, ctx| {
                let outcome = result.as_ref().map(|_| ()).map_err(Failure::describe);
                act.stats.refreshed(&act.name, reason, &outcome);
                match result {
                    Ok(()) => {
                        act.needs_refresh = false;
                        if paused {
                            act.breaker.reset();
                            act.resume(ctx);
                        } else {
                            act.state = State::Idle;
                            act.run(ctx);
                        }
                    }
                    Err(_) => {
                        // Paused until the breaker's probe succeeds; the refresh is
                        // still owed before the next change.
                        act.needs_refresh = true;
                        act.breaker.force_open(now());
                        act.stats.breaker_changed(&act.name, BreakerState::Open);
                        if paused {
                            act.state = State::CoolingDown;
                            act.schedule_probe(ctx);
                        } else {
                            act.pause(ctx);
                        }
                    }
                }
            },
        );
    }

    /// Writes `pending` to the dead-letter table; once it is durable the delivery moves
    /// past its change. A failed write is tried again after a pause.
    fn write_dead_letter(&mut self, pending: PendingDeadLetter, ctx: &mut Context<Self>) {
        let (lsn, reason, attempts, retriable) = (
            pending.lsn,
            pending.reason.clone(),
            pending.attempts,
            pending.retriable,
        );
        let snapshot_row = pending.snapshot_row.clone();
        self.state = State::DeadLettering(pending);
        let store = self.store.clone();
        let consumer = self.name.clone();
        ctx.spawn(
            async move {
                let log = store.log_table().to_string();
                store
                    .write(move |conn| {
                        let failure = astha_core::dead_letter::Failure {
                            consumer: &consumer,
                            reason: &reason,
                            attempts,
                            retriable,
                        };
                        match &snapshot_row {
                            Some(row) => snapshot::record_dead_letter(conn, row, &failure),
                            None => astha_core::dead_letter::record(conn, &log, lsn, &failure),
                        }
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                if !matches!(act.state, State::DeadLettering(_)) {
                    return; // Stopped meanwhile.
                }
                let State::DeadLettering(pending) = std::mem::replace(&mut act.state, State::Idle)
                else {
                    unreachable!("checked above");
                };
                match result {
                    Ok(_) => {
                        act.stats
                            .dead_lettered(&act.name, lsn, attempts, &pending.reason);
                        act.retry = None;
                        if let Some(batch) = &mut act.batch {
                            batch.next += 1;
                        }
                        act.run(ctx);
                    }
                    Err(err) => {
                        tracing::warn!(component = %act.name, lsn, error = %err, "dead-letter write failed; retrying");
                        act.state = State::BackingOff;
                        ctx.run_later(Duration::from_millis(100), move |act, ctx| {
                            if matches!(act.state, State::BackingOff) {
                                act.write_dead_letter(pending, ctx);
                            }
                        });
                    }
                }
            }),
        );
    }

    /// The periodic health check, while idle: failures count toward the breaker.
    fn health_check(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.state, State::Idle) {
            return;
        }
        self.call_component(ctx, State::Checking, Lifecycle::Health, |act, result, ctx| {
            act.state = State::Idle;
            match result {
                Ok(()) => act.run(ctx),
                Err(failure) => {
                    tracing::warn!(component = %act.name, error = %failure.describe(), "health check failed");
                    act.breaker.on_failure(now());
                    if act.breaker.state() == BreakerState::Open {
                        act.stats.breaker_changed(&act.name, BreakerState::Open);
                        act.pause(ctx);
                    } else {
                        act.run(ctx);
                    }
                }
            }
        });
    }
}

/// A lifecycle call the supervisor makes outside delivery.
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Health,
    Refresh,
}

impl Supervisor {
    /// Lends the component to one `on_health` or `on_refresh` call (with the event timeout
    /// and panic catching) in state `during`, then gives it back and hands the result to
    /// `then`, unless the supervisor stopped meanwhile.
    fn call_component(
        &mut self,
        ctx: &mut Context<Self>,
        during: State,
        call: Lifecycle,
        then: impl FnOnce(&mut Self, Result<(), Failure>, &mut Context<Self>) + 'static,
    ) {
        let Some(mut component) = self.component.take() else {
            return;
        };
        self.state = during;
        let timeout = self.settings.event_timeout;
        ctx.spawn(
            async move {
                let result = match call {
                    Lifecycle::Health => attempt(component.on_health(), timeout).await,
                    Lifecycle::Refresh => attempt(component.on_refresh(), timeout).await,
                };
                (component, result)
            }
            .into_actor(self)
            .map(move |(component, result), act, ctx| {
                act.component = Some(component);
                if !matches!(act.state, State::Stopped) {
                    then(act, result, ctx);
                }
            }),
        );
    }
}

/// Runs one handler call with a timeout, turning a panic into a failure.
async fn attempt<F>(call: F, timeout: Duration) -> Result<(), Failure>
where
    F: std::future::Future<Output = Result<(), ComponentError>>,
{
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(Failure::Error(err)),
        Ok(Err(panic)) => Err(Failure::Panic(panic_message(&panic))),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Runs one `on_batch` call with a timeout; on failure, how many changes were handled.
async fn attempt_batch<F>(call: F, timeout: Duration) -> Result<(), (usize, Failure)>
where
    F: std::future::Future<Output = Result<(), BatchError>>,
{
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err((e.handled, Failure::Error(e.error))),
        Ok(Err(panic)) => Err((0, Failure::Panic(panic_message(&panic)))),
        Err(_) => Err((0, Failure::Timeout)),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A new component rebuilds its state from the registry before its first change.
        self.refresh(ctx, true, "registered");
        let interval = self.settings.health_interval;
        ctx.run_interval(interval, |act, ctx| act.health_check(ctx));
        if self.signals.is_some() {
            ctx.run_interval(SIGNAL_POLL, |act, ctx| act.poll_signals(ctx));
        }
    }
}

impl Handler<Deliver> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let delivery = ActiveBatch {
            changes: msg.changes,
            upto: msg.upto,
            next: 0,
        };
        if self.taking_signal || self.snapshot.as_ref().is_some_and(|s| s.signal.is_some()) {
            // Handled once the signalled snapshot is delivered (it was taken at the end
            // of the previous delivery, so this is the router's next one).
            self.held = Some(delivery);
            return;
        }
        if self.state.paused() {
            // Sent before the router heard of the pause: give it back at once, so the
            // router never has two deliveries out to this component.
            self.router.progress.do_send(Progress {
                component: self.name.clone(),
                confirmed: 0,
                finished: true,
                paused: true,
            });
            return;
        }
        debug_assert!(self.batch.is_none(), "one delivery at a time");
        self.batch = Some(self.skip_snapshotted(delivery));
        self.run(ctx);
    }
}

impl Handler<SetStatus> for Supervisor {
    type Result = Result<(), crate::error::AsthaError>;

    fn handle(&mut self, msg: SetStatus, _: &mut Context<Self>) -> Self::Result {
        tracing::info!(component = %self.name, status = ?msg.status, "component status set by host");
        if msg.status == ComponentStatus::Active && self.breaker.state() != BreakerState::Closed {
            self.stats
                .update(&self.name, |s| s.status = ComponentStatus::Unhealthy);
        }
        Ok(())
    }
}

impl Handler<StopSupervisor> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    /// Stops delivering, lets the component finish (`on_stop`, unless a delivery still
    /// holds it), then stops; answers once the component is done.
    fn handle(&mut self, _: StopSupervisor, _: &mut Context<Self>) -> Self::Result {
        self.state = State::Stopped;
        self.stats
            .update(&self.name, |s| s.status = ComponentStatus::Stopped);
        let component = self.component.take();
        let (name, timeout) = (self.name.clone(), self.settings.event_timeout);
        Box::pin(
            async move {
                let mut component = component?;
                if let Err(failure) = attempt(component.on_stop(), timeout).await {
                    tracing::warn!(
                        component = %name,
                        error = %failure.describe(),
                        "the component's on_stop failed; what it would have finished waits for the next start"
                    );
                }
                Some(component)
            }
            .into_actor(self)
            .map(|component, act, ctx| {
                act.component = component;
                ctx.stop();
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    //! One supervisor alone: a test mailbox stands in for the router.

    use super::*;
    use crate::component::ComponentError;
    use crate::stats::ComponentStats;
    use crate::testing::{test_mailbox, Behavior, Inbox, Recording, RecordingComponent};
    use astha_core::Operation;

    const LONG: Duration = Duration::from_secs(30);

    fn change(lsn: i64) -> Arc<Change> {
        Arc::new(Change::bare(lsn, "a", Operation::Insert))
    }

    fn deliver(lsns: &[i64], upto: i64) -> Deliver {
        Deliver {
            changes: Arc::new(lsns.iter().map(|l| change(*l)).collect()),
            upto,
        }
    }

    struct Alone {
        supervisor: Addr<Supervisor>,
        progress: Inbox<Progress>,
        resume: Inbox<Resume>,
        _dir: tempfile::TempDir,
    }

    /// A supervisor of `component`, whose breaker opens after 2 failures, reporting to
    /// test mailboxes.
    fn alone(component: RecordingComponent) -> Alone {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), "__cdc_log").unwrap();
        let stats = Arc::new(Stats::default());
        stats
            .components
            .insert("c".into(), ComponentStats::new("c", "1", vec!["a".into()]));
        let (progress, progress_inbox) = test_mailbox::<Progress>();
        let (resume, resume_inbox) = test_mailbox::<Resume>();
        let settings = SupervisorSettings {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            breaker: BreakerConfig {
                failure_threshold: 2,
                cool_down: Duration::from_millis(100),
                half_open_successes: 1,
            },
            event_timeout: Duration::from_secs(1),
            refresh_after: Duration::from_secs(30),
            health_interval: Duration::from_secs(60),
        };
        let supervisor = Supervisor::new(
            Box::new(component),
            RouterLink { progress, resume },
            store,
            stats,
            settings,
        )
        .start();
        Alone {
            supervisor,
            progress: progress_inbox,
            resume: resume_inbox,
            _dir: dir,
        }
    }

    fn flaky_at(lsn: i64) -> (RecordingComponent, Recording) {
        RecordingComponent::scripted(
            "c",
            &["a"],
            Arc::new(move |change, attempt| {
                if change.lsn == lsn && attempt <= 2 {
                    Behavior::Fail(ComponentError::transient("down"))
                } else {
                    Behavior::Succeed
                }
            }),
        )
    }

    #[actix_rt::test]
    async fn refreshes_then_resumes_then_confirms_a_delivery_up_to_its_end() {
        tokio::time::pause();
        let (component, seen) = RecordingComponent::new("c", &["a"]);
        let s = alone(component);
        assert!(s.resume.wait_until(LONG, |m| m.len() == 1).await);
        assert_eq!(
            seen.state().refresh_calls,
            1,
            "refreshed before the first change"
        );
        s.supervisor.send(deliver(&[1, 3], 7)).await.unwrap();
        assert!(s.progress.wait_until(LONG, |m| m.len() == 1).await);
        let p = &s.progress.messages()[0];
        assert_eq!(
            (&*p.component, p.confirmed, p.finished, p.paused),
            ("c", 7, true, false)
        );
        assert_eq!(seen.confirmed_lsns(), vec![1, 3]);
    }

    /// A delivery the router sent before it heard of a pause comes straight back, so
    /// the router never has two deliveries out to one component.
    #[actix_rt::test]
    async fn a_delivery_that_arrives_while_paused_is_given_back_untouched() {
        tokio::time::pause();
        let (component, seen) = flaky_at(1);
        let s = alone(component);
        assert!(s.resume.wait_until(LONG, |m| m.len() == 1).await);
        s.supervisor.send(deliver(&[1], 1)).await.unwrap();
        assert!(s.progress.wait_until(LONG, |m| m.len() == 1).await);
        assert!(s.progress.messages()[0].paused);
        s.supervisor.send(deliver(&[1], 1)).await.unwrap();
        assert!(s.progress.wait_until(LONG, |m| m.len() == 2).await);
        {
            let p = &s.progress.messages()[1];
            assert_eq!((p.confirmed, p.finished, p.paused), (0, true, true));
        }
        assert_eq!(seen.attempts(1), 2, "no attempt while paused");
        assert_eq!(s.resume.messages().len(), 1);
    }

    #[actix_rt::test]
    async fn an_open_breaker_gives_the_delivery_back_with_what_was_handled() {
        tokio::time::pause();
        let (component, seen) = flaky_at(2);
        let s = alone(component);
        assert!(s.resume.wait_until(LONG, |m| m.len() == 1).await);
        s.supervisor.send(deliver(&[1, 2, 3], 3)).await.unwrap();
        assert!(s.progress.wait_until(LONG, |m| m.len() == 1).await);
        {
            let p = &s.progress.messages()[0];
            assert_eq!((p.confirmed, p.finished, p.paused), (1, true, true));
        }
        // After the cool-down the probe succeeds and the supervisor asks for more.
        assert!(s.resume.wait_until(LONG, |m| m.len() == 2).await);
        assert_eq!(seen.state().health_calls, 1);
        s.supervisor.send(deliver(&[2, 3], 3)).await.unwrap();
        assert!(s.progress.wait_until(LONG, |m| m.len() == 2).await);
        let p = &s.progress.messages()[1];
        assert_eq!((p.confirmed, p.finished, p.paused), (3, true, false));
        assert_eq!(seen.confirmed_lsns(), vec![1, 2, 3]);
        assert_eq!(seen.attempts(2), 3);
    }
}
