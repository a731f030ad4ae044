//! The test harness every component test uses: a component that records what it saw
//! and behaves as a script tells it (succeed, fail, panic, hang), and a shared
//! [`Recording`] to assert on; and a [`test_mailbox`] that stands in for an actor's
//! neighbour, so one actor is tested alone; and the [`compliance`] harness every
//! component and sink must pass.

pub mod compliance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use astha_core::Change;
use async_trait::async_trait;

use crate::component::{Component, ComponentError};

/// What the scripted component does with one attempt.
#[derive(Debug, Clone)]
pub enum Behavior {
    Succeed,
    Fail(ComponentError),
    Panic,
    /// Never returns (until the supervisor's timeout cancels it).
    Hang,
    /// Takes this long, then succeeds.
    Sleep(Duration),
}

/// A script: given a change and the attempt number (1-based), what to do.
pub type Script = Arc<dyn Fn(&Change, u32) -> Behavior + Send + Sync>;

/// What a recording component saw, shared with the test.
#[derive(Default)]
pub struct RecordingState {
    /// Every change confirmed (handled successfully), in the order handled.
    pub confirmed: Vec<Arc<Change>>,
    /// Attempts per LSN, successful or not.
    pub attempts: HashMap<i64, u32>,
    pub health_calls: u32,
    pub refresh_calls: u32,
    /// Sizes of the `on_batch` calls received (batching components only).
    pub batch_sizes: Vec<usize>,
    /// Health answers to give, front first; healthy when empty.
    pub health_script: Vec<Result<(), ComponentError>>,
    /// How many changes were confirmed at each `on_stop` call.
    pub stops: Vec<usize>,
    /// What `on_stop` does (succeeds when `None`).
    pub stop_behavior: Option<Behavior>,
}

/// A cloneable handle on a [`RecordingState`].
#[derive(Clone, Default)]
pub struct Recording(pub Arc<Mutex<RecordingState>>);

impl Recording {
    /// Locks the state for inspection.
    pub fn state(&self) -> std::sync::MutexGuard<'_, RecordingState> {
        self.0.lock().expect("recording poisoned")
    }

    /// LSNs confirmed, in order.
    pub fn confirmed_lsns(&self) -> Vec<i64> {
        self.state().confirmed.iter().map(|c| c.lsn).collect()
    }

    /// Attempts made for `lsn`.
    pub fn attempts(&self, lsn: i64) -> u32 {
        self.state().attempts.get(&lsn).copied().unwrap_or(0)
    }

    /// Waits (polling every millisecond of the runtime's clock) until `done` holds;
    /// false if `limit` passes first.
    pub async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&RecordingState) -> bool,
    ) -> bool {
        poll_until(limit, || done(&self.state())).await
    }
}

/// A component that records and follows a script.
pub struct RecordingComponent {
    max_batch: usize,
    durable: bool,
    name: String,
    tables: Vec<String>,
    script: Script,
    recording: Recording,
}

impl RecordingComponent {
    /// A component that accepts everything.
    pub fn new(name: &str, tables: &[&str]) -> (Self, Recording) {
        Self::scripted(name, tables, Arc::new(|_, _| Behavior::Succeed))
    }

    /// A component that follows `script`.
    pub fn scripted(name: &str, tables: &[&str], script: Script) -> (Self, Recording) {
        let recording = Recording::default();
        (
            Self {
                max_batch: 1,
                durable: true,
                name: name.to_string(),
                tables: tables.iter().map(|t| t.to_string()).collect(),
                script,
                recording: recording.clone(),
            },
            recording,
        )
    }
}

impl RecordingComponent {
    /// Receives up to `n` changes per `on_batch` call instead of one `on_event` each.
    pub fn batching(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// A non-durable consumer: its slot is leased, as a live feed's is.
    pub fn non_durable(mut self) -> Self {
        self.durable = false;
        self
    }
}

#[async_trait]
impl Component for RecordingComponent {
    fn name(&self) -> &str {
        &self.name
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn on_batch(
        &mut self,
        changes: &[Arc<Change>],
    ) -> Result<(), crate::component::BatchError> {
        self.recording.state().batch_sizes.push(changes.len());
        for (handled, change) in changes.iter().enumerate() {
            if let Err(error) = self.on_event(change).await {
                return Err(crate::component::BatchError { handled, error });
            }
        }
        Ok(())
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        let attempt = {
            let mut state = self.recording.state();
            let n = state.attempts.entry(change.lsn).or_insert(0);
            *n += 1;
            *n
        };
        perform((self.script)(change, attempt), change.lsn).await?;
        self.recording
            .state()
            .confirmed
            .push(Arc::new(change.clone()));
        Ok(())
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        let mut state = self.recording.state();
        state.health_calls += 1;
        if state.health_script.is_empty() {
            Ok(())
        } else {
            state.health_script.remove(0)
        }
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.recording.state().refresh_calls += 1;
        Ok(())
    }

    async fn on_stop(&mut self) -> Result<(), ComponentError> {
        let behavior = {
            let mut state = self.recording.state();
            let confirmed = state.confirmed.len();
            state.stops.push(confirmed);
            state.stop_behavior.take()
        };
        perform(behavior.unwrap_or(Behavior::Succeed), 0).await
    }
}

/// Does what `behavior` says (`lsn` names the change in a scripted panic).
async fn perform(behavior: Behavior, lsn: i64) -> Result<(), ComponentError> {
    match behavior {
        Behavior::Succeed => {}
        Behavior::Fail(err) => return Err(err),
        Behavior::Panic => panic!("scripted panic at lsn {lsn}"),
        Behavior::Hang => std::future::pending::<()>().await,
        Behavior::Sleep(d) => tokio::time::sleep(d).await,
    }
    Ok(())
}

/// A recipient that keeps every message it receives, for a test to inspect: it stands
/// in for the neighbour of the actor under test (quickwit's `create_test_mailbox`).
/// Call it inside an actix system.
pub fn test_mailbox<M>() -> (Recipient<M>, Inbox<M>)
where
    M: Message<Result = ()> + Send + 'static,
{
    let inbox = Inbox(Arc::new(Mutex::new(Vec::new())));
    let actor = TestMailbox(inbox.clone()).start();
    (actor.recipient(), inbox)
}

/// What a [`test_mailbox`] received, in order.
pub struct Inbox<M>(Arc<Mutex<Vec<M>>>);

impl<M> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M> Inbox<M> {
    /// Locks the received messages for inspection.
    pub fn messages(&self) -> std::sync::MutexGuard<'_, Vec<M>> {
        self.0.lock().expect("inbox poisoned")
    }

    /// Waits (polling every millisecond of the runtime's clock) until `done` holds;
    /// false if `limit` passes first.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&[M]) -> bool) -> bool {
        poll_until(limit, || done(&self.messages())).await
    }
}

/// Polls `done` every millisecond of the runtime's clock until it holds (true) or
/// `limit` passes (false).
async fn poll_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct TestMailbox<M>(Inbox<M>);

impl<M: 'static> Actor for TestMailbox<M> {
    type Context = Context<Self>;
}

impl<M> Handler<M> for TestMailbox<M>
where
    M: Message<Result = ()> + Send + 'static,
{
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        self.0.messages().push(msg);
    }
}
