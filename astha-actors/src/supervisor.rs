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
//! - A panic never escapes: it is caught, counted and treated as a failed attempt.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use astha_core::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use astha_core::retry::{RetryDecision, RetryPolicy, RetryState};
use astha_core::Change;
use futures::FutureExt;

use crate::component::{BatchError, Component, ComponentError, ComponentStatus};
use crate::messages::{Deliver, Progress, Resume, SetStatus};
use crate::router::Router;
use crate::stats::Stats;
use crate::store::Store;

/// Supervision settings (from the config's `retry`, `breaker` and `supervisor` sections).
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    pub event_timeout: Duration,
    pub refresh_after: Duration,
    pub health_interval: Duration,
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

struct PendingDeadLetter {
    lsn: i64,
    reason: String,
    attempts: u32,
    retriable: bool,
}

/// The supervisor actor of one component.
pub struct Supervisor {
    name: String,
    component: Option<Box<dyn Component>>,
    router: Addr<Router>,
    store: Store,
    stats: Arc<Stats>,
    settings: SupervisorSettings,
    breaker: CircuitBreaker,
    batch: Option<ActiveBatch>,
    retry: Option<(i64, RetryState)>,
    dead_letter: Option<PendingDeadLetter>,
    unhealthy_since: Option<Instant>,
    needs_refresh: bool,
    paused: bool,
    waiting: bool,
}

fn now() -> Instant {
    // tokio's clock, so tests on paused time drive the breaker too.
    tokio::time::Instant::now().into_std()
}

impl Supervisor {
    pub fn new(
        component: Box<dyn Component>,
        router: Addr<Router>,
        store: Store,
        stats: Arc<Stats>,
        settings: SupervisorSettings,
    ) -> Self {
        Self {
            name: component.name().to_string(),
            component: Some(component),
            router,
            store,
            stats,
            breaker: CircuitBreaker::new(settings.breaker),
            settings,
            batch: None,
            retry: None,
            dead_letter: None,
            unhealthy_since: None,
            needs_refresh: true,
            paused: true,
            waiting: false,
        }
    }

    /// Continues the current work: a pending dead letter, a needed refresh, or the batch.
    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.component.is_none() || self.waiting {
            return; // Busy; the running step calls run() again when done.
        }
        if self.dead_letter.is_some() {
            return self.write_dead_letter(ctx);
        }
        if self.needs_refresh {
            return self.refresh(ctx, "restart after failure");
        }
        if self.paused {
            return;
        }
        let Some(batch) = &self.batch else {
            return;
        };
        if batch.next >= batch.changes.len() {
            let upto = batch.upto;
            self.batch = None;
            self.router.do_send(Progress {
                component: self.name.clone(),
                confirmed: upto,
                finished: true,
                paused: false,
            });
            return;
        }
        let changes = batch.changes.clone();
        let start = batch.next;
        let timeout = self.settings.event_timeout;
        let mut component = self.component.take().expect("checked above");
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
                act.after_step(start, reached, failure, ctx);
            }),
        );
    }

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
        for change in &batch.changes[start..reached] {
            self.stats
                .delivered(&self.name, change.lsn, change.timestamp_ms);
        }
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
        if !failure.retriable() {
            let attempts = self.attempts_for(lsn) + 1;
            self.stats
                .attempt_failed(&self.name, lsn, attempts, &failure.describe());
            self.dead_letter = Some(PendingDeadLetter {
                lsn,
                reason: failure.describe(),
                attempts,
                retriable: false,
            });
            return self.run(ctx);
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
            RetryDecision::GiveUp { attempts } => {
                self.dead_letter = Some(PendingDeadLetter {
                    lsn,
                    reason: failure.describe(),
                    attempts,
                    retriable: true,
                });
                self.run(ctx);
            }
            RetryDecision::RetryAfter(delay) => {
                let before = self.breaker.state();
                self.breaker.on_failure(now());
                if self.breaker.state() == BreakerState::Open {
                    if before != BreakerState::Open {
                        self.stats.breaker_changed(&self.name, BreakerState::Open);
                    }
                    return self.pause(ctx);
                }
                self.waiting = true;
                ctx.run_later(delay, |act, ctx| {
                    act.waiting = false;
                    act.run(ctx);
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
        let confirmed = self
            .batch
            .take()
            .and_then(|b| b.next.checked_sub(1).map(|i| b.changes[i].lsn))
            .unwrap_or(0);
        self.paused = true;
        self.unhealthy_since.get_or_insert_with(now);
        self.router.do_send(Progress {
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
        if self.component.is_none() {
            return self.schedule_probe(ctx);
        }
        if !self.breaker.allow(now()) {
            return self.schedule_probe(ctx);
        }
        if self.breaker.state() == BreakerState::HalfOpen {
            self.stats
                .breaker_changed(&self.name, BreakerState::HalfOpen);
        }
        self.call_component(ctx, Lifecycle::Health, |act, result, ctx| {
                match result {
                    Ok(()) => {
                        act.breaker.on_success(now());
                        if act.breaker.state() == BreakerState::Closed {
                            act.resume(ctx);
                        } else {
                            ctx.run_later(act.settings.health_interval.min(act.settings.breaker.cool_down), |act, ctx| act.probe(ctx));
                        }
                    }
                    Err(failure) => {
                        tracing::warn!(component = %act.name, error = %failure.describe(), "health probe failed");
                        act.breaker.on_failure(now());
                        act.stats.breaker_changed(&act.name, act.breaker.state());
                        let since = *act.unhealthy_since.get_or_insert_with(now);
                        if now().saturating_duration_since(since) >= act.settings.refresh_after {
                            act.refresh(ctx, "unhealthy past refresh_after");
                        } else {
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
        self.paused = false;
        self.router.do_send(Resume {
            component: self.name.clone(),
        });
        self.run(ctx);
    }

    /// Calls `on_refresh`; on success the component is resumed from its slot position.
    fn refresh(&mut self, ctx: &mut Context<Self>, reason: &'static str) {
        self.call_component(ctx, Lifecycle::Refresh, move |act, result, ctx| {
            let outcome = result.as_ref().map(|_| ()).map_err(Failure::describe);
            act.stats.refreshed(&act.name, reason, &outcome);
            match result {
                Ok(()) => {
                    act.needs_refresh = false;
                    if act.paused {
                        act.breaker.reset();
                        act.resume(ctx);
                    } else {
                        act.run(ctx);
                    }
                }
                Err(_) => {
                    // Stay paused; the breaker's probe will try again.
                    act.breaker.force_open(now());
                    act.stats.breaker_changed(&act.name, BreakerState::Open);
                    if act.paused {
                        act.schedule_probe(ctx);
                    } else {
                        act.pause(ctx);
                    }
                }
            }
        });
    }

    fn write_dead_letter(&mut self, ctx: &mut Context<Self>) {
        let Some(pending) = &self.dead_letter else {
            return;
        };
        let (lsn, reason, attempts, retriable) = (
            pending.lsn,
            pending.reason.clone(),
            pending.attempts,
            pending.retriable,
        );
        let store = self.store.clone();
        let consumer = self.name.clone();
        self.waiting = true;
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
                        astha_core::dead_letter::record(conn, &log, lsn, &failure)
                    })
                    .await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.waiting = false;
                match result {
                    Ok(_) => {
                        let reason = act.dead_letter.take().map(|d| d.reason).unwrap_or_default();
                        act.stats.dead_lettered(&act.name, lsn, attempts, &reason);
                        act.retry = None;
                        if let Some(batch) = &mut act.batch {
                            batch.next += 1;
                        }
                        act.run(ctx);
                    }
                    Err(err) => {
                        tracing::warn!(component = %act.name, lsn, error = %err, "dead-letter write failed; retrying");
                        act.waiting = true;
                        ctx.run_later(Duration::from_millis(100), |act, ctx| {
                            act.waiting = false;
                            act.run(ctx);
                        });
                    }
                }
            }),
        );
    }

    fn health_check(&mut self, ctx: &mut Context<Self>) {
        if self.paused || self.component.is_none() || self.waiting {
            return;
        }
        self.call_component(ctx, Lifecycle::Health, |act, result, ctx| {
                match result {
                    Ok(()) => act.run(ctx),
                    Err(failure) => {
                        tracing::warn!(component = %act.name, error = %failure.describe(), "health check failed");
                        act.breaker.on_failure(now());
                        if act.breaker.state() == BreakerState::Open && !act.paused {
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
    /// and panic catching), then gives it back and hands the result to `then`.
    fn call_component(
        &mut self,
        ctx: &mut Context<Self>,
        call: Lifecycle,
        then: impl FnOnce(&mut Self, Result<(), Failure>, &mut Context<Self>) + 'static,
    ) {
        let Some(mut component) = self.component.take() else {
            return;
        };
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
                then(act, result, ctx);
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
        self.refresh(ctx, "registered");
        let interval = self.settings.health_interval;
        ctx.run_interval(interval, |act, ctx| act.health_check(ctx));
    }
}

impl Handler<Deliver> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        debug_assert!(self.batch.is_none(), "one delivery at a time");
        self.batch = Some(ActiveBatch {
            changes: msg.changes,
            upto: msg.upto,
            next: 0,
        });
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

/// Router → supervisor: stop (component unregistered or Astha stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

impl Handler<StopSupervisor> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, ctx: &mut Context<Self>) {
        self.stats
            .update(&self.name, |s| s.status = ComponentStatus::Stopped);
        ctx.stop();
    }
}
