//! Counters and gauges shared by the actors and read by the facade, the CLI and the
//! metrics endpoint. Each noteworthy event is one method that both logs it (with
//! `tracing`) and counts it, so the logs and the metrics never disagree. Everything here
//! is updated as events happen, so reading it (a scrape) costs the same whatever the
//! backlog and touches no database.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use astha_core::breaker::BreakerState;
use dashmap::DashMap;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::component::ComponentStatus;

/// Everything Astha counts. Shared as `Arc<Stats>`.
#[derive(Default)]
pub struct Stats {
    /// Changes read from the log, per table.
    pub changes_by_table: DashMap<String, u64>,
    /// Batches read by the poller.
    pub batches_read: AtomicU64,
    /// Batches read again from the log for a component that fell behind the window.
    pub catch_up_reads: AtomicU64,
    /// Log rows that could not be decoded (moved to dead letters).
    pub malformed: AtomicU64,
    /// Changes handed on marked as possibly incomplete ([`astha_core::gaps`]).
    pub incomplete: AtomicU64,
    /// Newest LSN the poller has seen.
    pub head_lsn: AtomicI64,
    /// Log rows removed by cleanup.
    pub cleaned: AtomicU64,
    /// Slot-write transactions (each writes every position confirmed since the last).
    pub slot_writes: AtomicU64,
    /// Their total time from being asked for until durable (queued on the write thread,
    /// waiting for the lock, written), in microseconds, and the longest one: a route
    /// goes at most one batch past its durable position, so this is what delivery waits.
    pub slot_write_micros: AtomicU64,
    pub slot_write_max_micros: AtomicU64,
    /// Cleanup write jobs run (each deletes up to one budget of rows).
    pub cleanups: AtomicU64,
    /// Slot writes that found their slot removed or moved by someone else (each was
    /// restored at its consumer's confirmed position).
    pub slots_lost: AtomicU64,
    /// Findings about what Astha owns being changed under it: slots lost, the log's LSN
    /// sequence restarted, the database file gone.
    pub integrity_errors: AtomicU64,
    /// The latest such finding, for status and health.
    pub integrity_problem: Mutex<Option<String>>,
    /// Why Astha stopped delivering for good, once it has.
    pub fatal: Mutex<Option<String>>,
    /// Non-durable slots dropped because their lease expired (their owner died).
    pub leases_expired: AtomicU64,
    /// Size of the WAL file at the poller's last read, in bytes.
    pub wal_bytes: AtomicU64,
    /// WAL resets (`wal_max_bytes`) that copied every frame: the WAL starts over.
    pub wal_resets: AtomicU64,
    /// WAL resets that gave up: a reader still inside the WAL after `wal_reset_wait`.
    pub wal_resets_incomplete: AtomicU64,
    /// Per component.
    pub components: DashMap<String, ComponentStats>,
}

/// What is known about one component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStats {
    pub name: String,
    pub version: String,
    pub subscriptions: Vec<String>,
    pub status: ComponentStatus,
    pub breaker: BreakerState,
    /// Last LSN the component confirmed (its slot position).
    pub position: i64,
    /// LSNs between the newest one read and `position` (filled in by snapshots).
    pub lag: i64,
    /// Changes handled successfully.
    pub delivered: u64,
    /// Failed attempts (each retry of a change counts once).
    pub failures: u64,
    /// Changes given up on and written to the dead-letter table.
    pub dead_letters: u64,
    pub panics: u64,
    pub timeouts: u64,
    pub refreshes: u64,
    pub last_error: Option<String>,
    /// The snapshot it received or is receiving since it was registered, if any.
    pub snapshot: Option<SnapshotProgress>,
    /// Seconds from a change's log timestamp to the component confirming it. Clones
    /// share the one histogram.
    #[serde(skip)]
    pub latency: Histogram,
}

/// How far a component is through its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotProgress {
    /// The LSN the snapshot's rows correspond to; changes after it follow.
    pub lsn: i64,
    pub tables: Vec<String>,
    /// Rows in the snapshot, and rows handled (confirmed or dead-lettered) so far.
    pub total: u64,
    pub done: u64,
    /// Every row was handled; the component now takes changes.
    pub finished: bool,
}

/// Upper bounds (seconds) of the delivery latency buckets: from the millisecond of a
/// caught-up component (log timestamps have millisecond resolution) to the minutes of a
/// long catch-up.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

impl ComponentStats {
    /// A freshly registered component.
    pub fn new(name: &str, version: &str, subscriptions: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            subscriptions,
            status: ComponentStatus::Active,
            breaker: BreakerState::Closed,
            position: 0,
            lag: 0,
            delivered: 0,
            failures: 0,
            dead_letters: 0,
            panics: 0,
            timeouts: 0,
            refreshes: 0,
            last_error: None,
            snapshot: None,
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// A snapshot of the scheduler, as `scheduler_stats` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStats {
    pub active_components: usize,
    pub event_counts: BTreeMap<String, u64>,
    /// Changes confirmed, summed over components.
    pub processed_events: u64,
    pub head_lsn: i64,
    pub batches_read: u64,
    pub catch_up_reads: u64,
    pub malformed: u64,
    /// Changes handed on marked as possibly incomplete.
    pub incomplete: u64,
    pub cleaned: u64,
    pub slots_lost: u64,
    pub integrity_errors: u64,
    /// The latest finding about the log or the slots changed under Astha.
    pub integrity_problem: Option<String>,
    /// Set when Astha stopped delivering for good: why.
    pub fatal: Option<String>,
    pub leases_expired: u64,
    /// Size of the WAL file at the poller's last read, in bytes.
    pub wal_bytes: u64,
    /// WAL resets that made the WAL start over, and those that gave up.
    pub wal_resets: u64,
    pub wal_resets_incomplete: u64,
    /// Slot-write transactions, their total time from asked to durable and the longest
    /// one, in microseconds (what delivery waits for: [`Stats::slot_write_micros`]).
    pub slot_writes: u64,
    pub slot_write_micros: u64,
    pub slot_write_max_micros: u64,
    /// Cleanup write jobs run.
    pub cleanups: u64,
    /// Per component, by name.
    pub components: Vec<ComponentStats>,
}

impl Stats {
    /// Updates one component's entry, if it exists.
    pub fn update(&self, component: &str, f: impl FnOnce(&mut ComponentStats)) {
        if let Some(mut entry) = self.components.get_mut(component) {
            f(&mut entry);
        }
    }

    /// `changes` were handled by `component`, now: each counts, and its latency from
    /// its log timestamp (taken by its trigger, in the writer's transaction) is observed.
    /// One clock read and one lookup of the component for them all: per change, they
    /// were a quarter of the actor thread's samples at flat-out rates.
    pub fn delivered(&self, component: &str, changes: &[Arc<astha_core::Change>]) {
        if changes.is_empty() {
            return;
        }
        let now_ms = astha_core::change::unix_now_ms();
        self.update(component, |s| {
            for change in changes {
                tracing::trace!(component, lsn = change.lsn, "change delivered");
                let latency_ms = (now_ms - change.timestamp_ms).max(0);
                s.delivered += 1;
                s.latency.observe(latency_ms as f64 / 1000.0);
            }
        });
    }

    /// An attempt to deliver `lsn` to `component` failed.
    pub fn attempt_failed(&self, component: &str, lsn: i64, attempt: u32, error: &str) {
        tracing::warn!(component, lsn, attempt, error, "delivery attempt failed");
        self.update(component, |s| {
            s.failures += 1;
            s.last_error = Some(error.to_string());
        });
    }

    /// A handler panicked (the supervisor recovered).
    pub fn panicked(&self, component: &str, lsn: i64, message: &str) {
        tracing::error!(
            component,
            lsn,
            panic = message,
            "component handler panicked"
        );
        self.update(component, |s| s.panics += 1);
    }

    /// A handler did not finish within the event timeout.
    pub fn timed_out(&self, component: &str, lsn: i64) {
        tracing::error!(component, lsn, "component handler timed out");
        self.update(component, |s| s.timeouts += 1);
    }

    /// `component` gave up on `lsn`; it is in the dead-letter table.
    pub fn dead_lettered(&self, component: &str, lsn: i64, attempts: u32, error: &str) {
        tracing::error!(
            component,
            lsn,
            attempts,
            error,
            "change moved to dead letters"
        );
        self.update(component, |s| s.dead_letters += 1);
    }

    /// `component`'s breaker changed state.
    pub fn breaker_changed(&self, component: &str, state: BreakerState) {
        tracing::warn!(component, state = %state, "circuit breaker changed state");
        self.update(component, |s| {
            s.breaker = state;
            s.status = match state {
                BreakerState::Closed if s.status == ComponentStatus::Unhealthy => {
                    ComponentStatus::Active
                }
                BreakerState::Closed => s.status,
                _ => ComponentStatus::Unhealthy,
            };
        });
    }

    /// `component` was asked to rebuild its state from the registry.
    pub fn refreshed(&self, component: &str, reason: &str, result: &Result<(), String>) {
        match result {
            Ok(()) => tracing::info!(component, reason, "component refreshed"),
            Err(error) => tracing::error!(component, reason, error, "component refresh failed"),
        }
        self.update(component, |s| s.refreshes += 1);
    }

    /// Log rows that cannot be decoded were quarantined.
    /// Changes (by LSN) handed on marked as possibly incomplete: another connection
    /// changed their table's schema before capture caught up.
    pub fn incomplete_changes(&self, lsns: &[i64]) {
        tracing::warn!(
            count = lsns.len(),
            first_lsn = lsns.first(),
            last_lsn = lsns.last(),
            "changes delivered marked incomplete: another connection changed their table's \
             schema before capture caught up (use `astha alter` or Capture::alter for DDL)"
        );
        self.incomplete
            .fetch_add(lsns.len() as u64, Ordering::Relaxed);
    }

    /// A WAL reset ended: `outcome` from [`astha_core::wal_bound::reset`] (whether it
    /// copied every frame), for a WAL file of `bytes` when it started; `pause` before
    /// the next try when it did not.
    pub fn wal_reset(
        &self,
        outcome: &astha_core::Result<bool>,
        bytes: u64,
        took: std::time::Duration,
        pause: std::time::Duration,
    ) {
        let took_ms = took.as_millis() as u64;
        match outcome {
            Ok(true) => {
                tracing::debug!(bytes, took_ms, "WAL reset");
                self.wal_resets.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                tracing::warn!(
                    bytes,
                    took_ms,
                    retry_in_s = pause.as_secs(),
                    "the WAL is past wal_max_bytes and could not be reset within wal_reset_wait: \
                     a read transaction of another connection was still inside it, or another \
                     checkpoint kept running (end long read transactions, or raise \
                     wal_reset_wait); nothing is lost, the WAL only grows meanwhile"
                );
                self.wal_resets_incomplete.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(bytes, error = %err, retry_in_s = pause.as_secs(), "WAL reset failed");
                self.wal_resets_incomplete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn malformed_rows(&self, count: usize, first_reason: &str) {
        tracing::error!(
            count,
            reason = first_reason,
            "malformed log rows moved to dead letters"
        );
        self.malformed.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// `component`'s slot write touched no row (its row or table removed, or its
    /// position moved forward, by someone else); it was restored at the confirmed
    /// position.
    pub fn slot_restored(&self, component: &str, error: &astha_core::CoreError) {
        tracing::error!(
            component,
            error = %error,
            "slot changed under Astha; restored at the position its consumer confirmed"
        );
        self.slots_lost.fetch_add(1, Ordering::Relaxed);
        let message = format!("{error}; restored at the confirmed position");
        self.update(component, |s| s.last_error = Some(message.clone()));
        self.integrity(message, false);
    }

    /// Something Astha owns was changed under it (`message` says what and what was done).
    pub fn integrity_finding(&self, message: String) {
        tracing::error!(problem = %message, "change log integrity");
        self.integrity(message, true);
    }

    fn integrity(&self, message: String, every_component: bool) {
        self.integrity_errors.fetch_add(1, Ordering::Relaxed);
        if every_component {
            for mut c in self.components.iter_mut() {
                c.last_error = Some(message.clone());
            }
        }
        *self
            .integrity_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    /// Astha cannot go on delivering (the first reason is kept).
    pub fn failed(&self, reason: String) {
        tracing::error!(reason = %reason, "Astha stopped delivering");
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            *fatal = Some(reason.clone());
            drop(fatal);
            self.integrity(reason, true);
        }
    }

    /// Why Astha stopped delivering for good, if it has.
    pub fn failure(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A consistent snapshot of everything.
    pub fn snapshot(&self) -> SchedulerStats {
        let head = self.head_lsn.load(Ordering::Relaxed);
        let mut components: Vec<ComponentStats> = self
            .components
            .iter()
            .map(|e| {
                let mut c = e.value().clone();
                c.lag = (head - c.position).max(0);
                c
            })
            .collect();
        components.sort_by(|a, b| a.name.cmp(&b.name));
        SchedulerStats {
            active_components: components
                .iter()
                .filter(|c| c.status == ComponentStatus::Active)
                .count(),
            event_counts: self
                .changes_by_table
                .iter()
                .map(|e| (e.key().clone(), *e.value()))
                .collect(),
            processed_events: components.iter().map(|c| c.delivered).sum(),
            head_lsn: head,
            batches_read: self.batches_read.load(Ordering::Relaxed),
            catch_up_reads: self.catch_up_reads.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            incomplete: self.incomplete.load(Ordering::Relaxed),
            cleaned: self.cleaned.load(Ordering::Relaxed),
            slots_lost: self.slots_lost.load(Ordering::Relaxed),
            integrity_errors: self.integrity_errors.load(Ordering::Relaxed),
            integrity_problem: self
                .integrity_problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            fatal: self.failure(),
            leases_expired: self.leases_expired.load(Ordering::Relaxed),
            wal_bytes: self.wal_bytes.load(Ordering::Relaxed),
            wal_resets: self.wal_resets.load(Ordering::Relaxed),
            wal_resets_incomplete: self.wal_resets_incomplete.load(Ordering::Relaxed),
            slot_writes: self.slot_writes.load(Ordering::Relaxed),
            slot_write_micros: self.slot_write_micros.load(Ordering::Relaxed),
            slot_write_max_micros: self.slot_write_max_micros.load(Ordering::Relaxed),
            cleanups: self.cleanups.load(Ordering::Relaxed),
            components,
        }
    }
}
