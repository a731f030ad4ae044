//! Astha's actor runtime (actix): a CDC poller actor, a router actor and one supervised
//! actor per component, passing typed messages.
//!
//! ```text
//! poller ──NewBatch──► router ──Deliver──► supervisor ──on_event──► component
//!    ▲                   │  ▲                  │
//!    └──────Release──────┘  └──Progress/Resume─┘
//!
//! janitor (timer): heartbeats, and deletes log rows every slot is past
//! ```
//!
//! The router's decisions live in [`astha_core::routing`]; each actor holds
//! `Recipient`s of the messages it sends (all in [`messages`]), so each can be tested
//! alone. The [`Astha`] facade starts them, registers components and reports statistics.

pub mod astha;
pub mod component;
pub mod error;
pub mod http;
pub mod janitor;
pub mod messages;
pub mod pending_slots;
pub mod poller;
pub mod pool;
pub mod router;
pub mod stats;
pub mod store;
pub mod supervisor;
pub mod testing;
pub mod wal_guard;
pub mod witness;

pub use astha::Astha;
pub use component::{BatchError, Component, ComponentError, ComponentStatus};
pub use error::AsthaError;
pub use stats::{ComponentStats, SchedulerStats};
