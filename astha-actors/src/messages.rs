//! Every typed message the actors exchange, and nothing else.
//!
//! Actors hold `Recipient`s of the messages they send rather than the `Addr` of their
//! neighbour, so no actor module imports another and a test can stand in for any
//! neighbour with a mailbox of its own.
//!
//! Every mailbox is bounded by protocol, not by a capacity setting (actix's `do_send`
//! ignores capacities): the poller has at most `window_batches` batches in flight to the
//! router; the router has at most one delivery outstanding per component; a component
//! answers each delivery with one `Progress`; wake-ups are coalesced into at most one
//! queued `Wake`; the poller has at most one read running, so at most one `ReadDone`.

use std::sync::Arc;

use actix::prelude::*;
use astha_core::Change;

use crate::component::{Component, ComponentStatus};
use crate::error::AsthaError;

pub use astha_core::routing::SharedBatch;

/// Poller → router: a new batch was read.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NewBatch(pub Arc<SharedBatch>);

/// Router → poller: `0` batches left the window; the poller may read that many more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub usize);

/// Anyone → poller: the log may have grown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Poll thread → poller: a read of the log ended, with the batch and the WAL file's
/// size, or why it failed. The poller asks for at most one read at a time.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadDone(pub astha_core::Result<(astha_core::log::Batch, u64)>);

/// Router → supervisor: handle these changes, in order; the batch ends at `upto`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub changes: Arc<Vec<Arc<Change>>>,
    pub upto: i64,
}

/// Supervisor → router: the component confirmed everything up to `confirmed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Progress {
    pub component: String,
    pub confirmed: i64,
    /// The delivery is over (completely handled, or abandoned because the breaker opened).
    pub finished: bool,
    /// The breaker opened: deliver nothing until `Resume`.
    pub paused: bool,
}

/// Supervisor → router: the component is healthy again; deliver from its position.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume {
    pub component: String,
}

/// Facade → router: add a component.
#[derive(Message)]
#[rtype(result = "Result<(), AsthaError>")]
pub struct Register {
    pub component: Box<dyn Component>,
    /// The tables routed to it: its own subscriptions, or the configured defaults.
    pub tables: Vec<String>,
    /// Whether it first receives a snapshot of those tables.
    pub snapshot: astha_core::snapshot::SnapshotMode,
}

/// Facade → router: remove a component and drop its slot.
#[derive(Message)]
#[rtype(result = "Result<(), AsthaError>")]
pub struct Unregister {
    pub name: String,
}

/// Facade → router → supervisor: the host marks a component active or disabled.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), AsthaError>")]
pub struct SetStatus {
    pub name: String,
    pub status: ComponentStatus,
}

/// Facade → router: finish in-flight deliveries, persist positions, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Router → poller: stop reading (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReading;

/// Router → supervisor: stop (component unregistered or Astha stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

/// Facade → janitor: stop writing heartbeats and cleaning the log (Astha stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopJanitor;
