//! Astha core: everything that does not need an actor runtime.
//!
//! - capture: triggers generated from the live schema write every change into one
//!   durable change log whose id is the log sequence number (LSN);
//! - log, slots, bootstrap, dead letters: reading that log in order, durable consumer
//!   positions, consistent snapshots, and a place for rows that cannot be delivered;
//! - registry: the lakehouse metadata registry schema and its typed rows;
//! - pure policies: retry with backoff, the circuit breaker, configuration.

pub mod breaker;
pub mod config;
pub mod retry;
