//! Astha core: everything that does not need an actor runtime.
//!
//! - [`capture`]: triggers generated from the live schema write every change into one
//!   durable change log whose id is the log sequence number (LSN);
//! - [`log`], [`slots`], [`bootstrap`], [`snapshot`], [`dead_letter`]: reading that log
//!   in order, durable consumer positions, consistent snapshots (in one pass, or copied
//!   and handed over in chunks), and a place for what cannot be
//!   delivered; [`log_layout`] owns the fixed columns of the log row (and of its copy in
//!   a dead letter), [`image`] the value columns after them; [`gaps`] marks changes that
//!   another connection's schema change may have left incomplete;
//! - [`retention`]: how long the log keeps rows every slot is past, and where a time
//!   falls in it; [`replay`]: a range of it again; [`state_at`]: a table's rows as of an earlier LSN, from the retained log;
//! - [`wake`] and [`wal_bound`]: noticing commits, and keeping the WAL from growing
//!   without bound under a writer that never pauses; [`write_turns`]: this process's
//!   writers and Astha's slot writes taking turns at the write lock instead of racing;
//! - pure policies and state machines: [`retry`], [`breaker`], [`routing`], [`config`].

pub mod bootstrap;
pub mod breaker;
pub mod capture;
pub mod change;
pub mod config;
pub mod db;
pub mod dead_letter;
pub mod error;
pub mod format;
pub mod gaps;
pub mod heartbeat;
pub mod ident;
pub mod image;
pub mod lease;
pub mod log;
pub mod log_layout;
pub mod log_state;
pub mod replay;
pub mod retention;
pub mod retry;
pub mod routing;
pub mod schema;
pub mod slots;
pub mod snapshot;
pub mod state_at;
pub mod transaction;
pub mod value;
pub mod wake;
pub mod wal_bound;
pub mod write_turns;

pub use change::{
    Change, Event, Operation, Row, SnapshotRead, TableInTransaction, TransactionPosition,
};
pub use error::{CoreError, Result};
pub use value::Value;
