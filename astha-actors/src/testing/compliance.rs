//! The compliance harness every component and sink must pass, in one call (the model:
//! vector's shared component test utilities): [`check`] runs a component, built by the
//! caller's factory, in real engines on a fresh database with a captured table written
//! by triggers, and fails (panics, naming the broken promise) unless:
//!
//! 1. every change is confirmed at least once and in commit order (and, when the caller
//!    can read its system back, [`Harness::read_back`], is there in commit order);
//! 2. after a crash of the engine mid-stream (dropped without a graceful stop, as a
//!    kill -9 leaves it), a fresh instance from the factory gets everything that was
//!    not confirmed durably, and what it sees again is at most one batch;
//! 3. a change that keeps failing transiently is retried `max_attempts` times, then
//!    dead-lettered, and the changes after it still flow;
//! 4. a change that fails permanently is dead-lettered at once;
//! 5. consecutive failures open the breaker, and once the failures stop it closes
//!    again and the waiting change is delivered;
//! 6. the component's metrics (delivered, dead letters) and its status (a heartbeat
//!    row, as `astha status` reads it) are present.
//!
//! Failures are injected in front of the component (a wrapper fails a change before the
//! component sees it), so what is checked is that the component composes with the
//! engine's guarantees: it confirms only what it handed over, takes re-deliveries, and
//! answers health probes. A sink's own error classification needs its own test against
//! its system. Call it from a plain `#[test]` (not inside an actix or tokio runtime):
//! it runs the engines on their own actor threads and blocks until done.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use astha_core::breaker::BreakerState;
use astha_core::config::AsthaConfig;
use astha_core::Change;
use async_trait::async_trait;

use crate::component::{BatchError, Component, ComponentError};
use crate::Astha;

/// What the factory gets: where the component's engine runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The database (created by the harness).
    pub database: PathBuf,
    /// A scratch directory for the component's own files (removed at the end).
    pub dir: PathBuf,
    /// The captured table whose changes the component receives (its subscriptions are
    /// replaced by this table through the configuration).
    pub table: String,
}

/// Reads the caller's system back: the LSNs it holds, in the order they arrived.
pub type ReadBack = Box<dyn FnMut(&Setup) -> Vec<i64> + Send>;

/// Settings of one run; [`Harness::default`] suits every shipped component.
pub struct Harness {
    /// Rows written per delivery phase.
    pub rows: i64,
    /// The engine's batch size: the bound on what a crash may re-deliver.
    pub batch_size: usize,
    /// How long any one expectation may take.
    pub timeout: Duration,
    /// When set, checked after the delivery and crash phases.
    pub read_back: Option<ReadBack>,
}

impl Default for Harness {
    fn default() -> Self {
        Self {
            rows: 100,
            batch_size: 16,
            timeout: Duration::from_secs(60),
            read_back: None,
        }
    }
}

impl Harness {
    /// The default harness, checking the system read back by `read_back` too.
    pub fn reading_back(read_back: impl FnMut(&Setup) -> Vec<i64> + Send + 'static) -> Self {
        Self {
            read_back: Some(Box::new(read_back)),
            ..Self::default()
        }
    }
}

/// What a passing run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The component's name.
    pub component: String,
    /// Changes written by triggers.
    pub changes: i64,
    /// Changes confirmed again after the crash.
    pub redelivered: usize,
    /// Changes dead-lettered (the two injected failures).
    pub dead_letters: usize,
}

/// Runs every check on components from `factory` with [`Harness::default`]; panics on
/// the first broken promise.
pub fn check<F>(factory: F) -> Report
where
    F: FnMut(&Setup) -> Box<dyn Component> + Send,
{
    check_with(Harness::default(), factory)
}

/// [`check`] with settings.
pub fn check_with<F>(harness: Harness, factory: F) -> Report
where
    F: FnMut(&Setup) -> Box<dyn Component> + Send,
{
    // Its own thread: the engines must not join a system the caller's thread runs.
    std::thread::scope(|scope| {
        scope
            .spawn(move || Run::new(harness, factory).all())
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A failure to inject in front of the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Every change and every health probe fails transiently.
    Down,
    /// This change fails transiently, every time.
    TransientAt(i64),
    /// This change fails permanently.
    PermanentAt(i64),
}

#[derive(Debug, Default)]
struct Seen {
    /// Confirmed LSNs, in confirmation order, across engines.
    confirmed: Vec<i64>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The component under test, wrapped: records what it confirmed and injects faults.
struct Probe {
    inner: Box<dyn Component>,
    seen: Shared<Seen>,
    fault: Shared<Fault>,
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn version(&self) -> &str {
        self.inner.version()
    }
    fn durable(&self) -> bool {
        self.inner.durable()
    }
    fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions()
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.on_batch(&[Arc::new(change.clone())])
            .await
            .map_err(|e| e.error)
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        let fault = *lock(&self.fault);
        let (upto, injected) = match fault {
            Fault::None => (changes.len(), None),
            Fault::Down => (0, Some(ComponentError::transient("injected: system down"))),
            Fault::TransientAt(lsn) | Fault::PermanentAt(lsn) => {
                match changes.iter().position(|c| c.lsn == lsn) {
                    None => (changes.len(), None),
                    Some(i) if matches!(fault, Fault::TransientAt(_)) => {
                        (i, Some(ComponentError::transient("injected: transient")))
                    }
                    Some(i) => (i, Some(ComponentError::permanent("injected: permanent"))),
                }
            }
        };
        let handled = if upto == 0 {
            Ok(())
        } else {
            self.inner.on_batch(&changes[..upto]).await
        };
        let confirmed = match &handled {
            Ok(()) => upto,
            Err(e) => e.handled,
        };
        lock(&self.seen)
            .confirmed
            .extend(changes[..confirmed].iter().map(|c| c.lsn));
        handled?;
        match injected {
            None => Ok(()),
            Some(error) => Err(BatchError {
                handled: upto,
                error,
            }),
        }
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        if *lock(&self.fault) == Fault::Down {
            return Err(ComponentError::transient("injected: system down"));
        }
        self.inner.on_health().await
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.inner.on_refresh().await
    }
}

struct Run<F> {
    harness: Harness,
    factory: F,
    setup: Setup,
    seen: Shared<Seen>,
    fault: Shared<Fault>,
    name: String,
    /// LSNs written so far (1..=written).
    written: i64,
}

const TABLE: &str = "compliance_items";

impl<F> Run<F>
where
    F: FnMut(&Setup) -> Box<dyn Component> + Send,
{
    fn new(harness: Harness, factory: F) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "astha-compliance-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let database = dir.join("compliance.db");
        let conn = astha_core::db::open(&database).expect("harness database");
        conn.execute_batch(&format!(
            "CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        ))
        .expect("harness table");
        Self {
            harness,
            factory,
            setup: Setup {
                database,
                dir,
                table: TABLE.into(),
            },
            seen: Shared::default(),
            fault: Arc::new(Mutex::new(Fault::None)),
            name: String::new(),
            written: 0,
        }
    }

    fn config(&self) -> AsthaConfig {
        let mut c = AsthaConfig {
            database: self.setup.database.clone(),
            monitored_tables: vec![TABLE.into()],
            batch_size: self.harness.batch_size,
            window_batches: 2,
            backstop_interval: Duration::from_millis(20),
            cleanup_interval: Duration::from_millis(50),
            ..AsthaConfig::default()
        };
        c.subscriptions
            .insert(self.name.clone(), vec![TABLE.into()]);
        c.retry.initial_backoff = Duration::from_millis(1);
        c.retry.max_backoff = Duration::from_millis(5);
        c.breaker.failure_threshold = 3;
        c.breaker.cool_down = Duration::from_millis(100);
        c.supervisor.event_timeout = Duration::from_secs(10);
        c
    }

    /// A started engine with a fresh component from the factory.
    fn engine(&mut self) -> Astha {
        let component = (self.factory)(&self.setup);
        self.name = component.name().to_string();
        let astha = Astha::new(self.config()).expect("engine");
        astha.start().expect("engine start");
        let probe = Probe {
            inner: component,
            seen: self.seen.clone(),
            fault: self.fault.clone(),
        };
        futures::executor::block_on(astha.register_component(Box::new(probe)))
            .expect("register the component");
        astha
    }

    fn write(&mut self, n: i64) {
        let conn = astha_core::db::open_writer(&self.setup.database).expect("writer");
        for _ in 0..n {
            self.written += 1;
            conn.execute(
                &format!("INSERT INTO {TABLE} (body) VALUES (?1)"),
                [format!("row {}", self.written)],
            )
            .expect("insert");
        }
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + self.harness.timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "compliance ({}): timed out waiting until {what}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn confirmed(&self) -> Vec<i64> {
        lock(&self.seen).confirmed.clone()
    }

    fn wait_confirmed(&self, lsn: i64) {
        self.wait(&format!("LSN {lsn} is confirmed"), || {
            self.confirmed().contains(&lsn)
        });
    }

    fn fail(&self, promise: &str) -> ! {
        panic!("compliance ({}): {promise}", self.name)
    }

    fn all(mut self) -> Report {
        let engine = self.engine();
        let n = self.harness.rows;

        // 1. Every change once, in commit order.
        self.write(n);
        self.wait_confirmed(n);
        if self.confirmed() != (1..=n).collect::<Vec<_>>() {
            self.fail(&format!(
                "changes 1..={n} not confirmed exactly once in commit order: {:?}",
                self.confirmed()
            ));
        }
        self.check_read_back("after the first delivery");

        // 2. A crash mid-stream, then a fresh instance.
        let before_crash = {
            let database = self.setup.database.clone();
            let writer = std::thread::spawn(move || {
                let conn = astha_core::db::open_writer(&database).expect("writer");
                for i in 0..n {
                    conn.execute(
                        &format!("INSERT INTO {TABLE} (body) VALUES (?1)"),
                        [format!("crash {i}")],
                    )
                    .expect("insert");
                    std::thread::sleep(Duration::from_micros(300));
                }
            });
            self.wait("a quarter of the second phase is confirmed", || {
                self.confirmed().len() as i64 >= n + n / 4
            });
            drop(engine); // no graceful stop: in-flight positions are lost
            writer.join().expect("writer thread");
            self.written += n;
            self.confirmed().len()
        };
        let last_before = *self.confirmed().last().expect("confirmed before the crash");
        let engine = self.engine();
        let head = self.written;
        self.wait_confirmed(head);
        let all = self.confirmed();
        let after = &all[before_crash..];
        let first_after = *after.first().expect("confirmed after the restart");
        let redelivered = (last_before - first_after + 1).max(0) as usize;
        if redelivered > self.harness.batch_size {
            self.fail(&format!(
                "re-delivered {redelivered} changes after the crash (from {first_after}, \
                 last confirmed {last_before}): more than one batch ({})",
                self.harness.batch_size
            ));
        }
        if first_after > last_before + 1 {
            self.fail(&format!(
                "a gap after the crash: last confirmed {last_before}, then {first_after}"
            ));
        }
        if after.windows(2).any(|w| w[1] != w[0] + 1) || *after.last().unwrap() != head {
            self.fail(&format!(
                "after the restart, changes out of commit order: {after:?}"
            ));
        }
        self.check_read_back("after the crash and restart");

        // 3. A change that always fails transiently: max_attempts, then a dead letter.
        let transient = self.written + 1;
        *lock(&self.fault) = Fault::TransientAt(transient);
        self.write(2);
        self.wait_confirmed(transient + 1);
        // 4. A permanent failure: a dead letter at once.
        let permanent = self.written + 1;
        *lock(&self.fault) = Fault::PermanentAt(permanent);
        self.write(2);
        self.wait_confirmed(permanent + 1);
        *lock(&self.fault) = Fault::None;
        let dead = self.dead_letters();
        let attempts = self.config().retry.max_attempts;
        let expected = [(transient, attempts, true), (permanent, 1, false)];
        if dead != expected {
            self.fail(&format!(
                "dead letters (lsn, attempts, retriable) {dead:?}, expected {expected:?}"
            ));
        }
        if self.confirmed().contains(&transient) || self.confirmed().contains(&permanent) {
            self.fail("a failed change was confirmed");
        }

        // 5. The breaker opens while the system is down and closes after.
        *lock(&self.fault) = Fault::Down;
        let waiting = self.written + 1;
        self.write(1);
        self.wait("the breaker opens", || {
            engine
                .component_info(&self.name)
                .is_some_and(|c| c.breaker == BreakerState::Open)
        });
        *lock(&self.fault) = Fault::None;
        self.wait_confirmed(waiting);
        self.wait("the breaker closes", || {
            engine
                .component_info(&self.name)
                .is_some_and(|c| c.breaker == BreakerState::Closed)
        });

        // 6. Metrics and status.
        let info = engine
            .component_info(&self.name)
            .unwrap_or_else(|| self.fail("no component info"));
        if info.delivered == 0 || info.dead_letters != 2 || info.failures == 0 {
            self.fail(&format!(
                "metrics: delivered {}, dead letters {}, failures {}",
                info.delivered, info.dead_letters, info.failures
            ));
        }
        let stats = engine.stats().snapshot();
        if !stats.components.iter().any(|c| c.name == self.name) {
            self.fail("the component is missing from the engine's stats");
        }
        self.wait("a heartbeat shows the component's status", || {
            let conn = astha_core::db::open(&self.setup.database).expect("reader");
            astha_core::heartbeat::list(&conn)
                .unwrap_or_default()
                .iter()
                .any(|h| h.name == self.name && h.status == "active" && h.position >= waiting)
        });
        futures::executor::block_on(engine.stop()).expect("graceful stop");
        let report = Report {
            component: self.name.clone(),
            changes: self.written,
            redelivered,
            dead_letters: dead.len(),
        };
        let _ = std::fs::remove_dir_all(&self.setup.dir);
        report
    }

    fn dead_letters(&self) -> Vec<(i64, u32, bool)> {
        let conn = astha_core::db::open(&self.setup.database).expect("reader");
        astha_core::dead_letter::list(&conn, Some(&self.name), false)
            .expect("dead letters")
            .into_iter()
            .map(|d| (d.lsn, d.attempts as u32, d.retriable))
            .collect()
    }

    /// The caller's system holds every confirmed change, first arrivals in commit order.
    fn check_read_back(&mut self, when: &str) {
        let Some(read_back) = self.harness.read_back.as_mut() else {
            return;
        };
        let setup = self.setup.clone();
        let written = self.written;
        let deadline = Instant::now() + self.harness.timeout;
        let mut got;
        loop {
            got = read_back(&setup);
            let mut firsts = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for lsn in &got {
                if seen.insert(*lsn) {
                    firsts.push(*lsn);
                }
            }
            if firsts == (1..=written).collect::<Vec<_>>() {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.fail(&format!(
            "{when}: the system read back does not hold 1..={written} in commit order: {got:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Confirms every change but keeps only those `keep` accepts, in `kept`.
    struct Lossy {
        kept: Shared<Vec<i64>>,
        keep: fn(i64) -> bool,
    }

    #[async_trait]
    impl Component for Lossy {
        fn name(&self) -> &str {
            "lossy"
        }
        fn subscriptions(&self) -> Vec<String> {
            Vec::new()
        }
        async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
            if (self.keep)(change.lsn) {
                lock(&self.kept).push(change.lsn);
            }
            Ok(())
        }
    }

    fn run(keep: fn(i64) -> bool) -> Report {
        let kept = Shared::<Vec<i64>>::default();
        let read = kept.clone();
        let harness = Harness {
            rows: 40,
            timeout: Duration::from_secs(8),
            ..Harness::reading_back(move |_| lock(&read).clone())
        };
        check_with(harness, move |_| {
            Box::new(Lossy {
                kept: kept.clone(),
                keep,
            })
        })
    }

    #[test]
    fn a_component_that_keeps_what_it_confirms_passes() {
        let report = run(|_| true);
        assert_eq!(report.component, "lossy");
        assert_eq!(report.dead_letters, 2);
        assert!(report.redelivered <= Harness::default().batch_size);
    }

    #[test]
    #[should_panic(expected = "does not hold")]
    fn a_component_that_confirms_what_it_lost_fails() {
        run(|lsn| lsn != 7);
    }
}
