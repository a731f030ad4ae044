//! Windows and aggregations: a transform in front of a sink that turns changes into
//! per-key window results (`window = { ... }` on a `[[sinks]]` entry).
//!
//! The modules, each with one job: [`config`] (the TOML and its checks), [`key`] (a
//! change's key), [`aggregate`] (accumulators), [`state`] (the pure state machine: which
//! window, when it closes, what it emits), [`durable`] (the state in the source
//! database), [`transform`] (the component that runs them per batch). Semantics
//! (event time, watermark, late changes, the memory bound) are in `docs/DESIGN.md`,
//! "Windows and aggregations".

pub mod aggregate;
pub mod config;
pub mod durable;
pub mod key;
pub mod state;
pub mod transform;

pub use config::WindowConfig;
pub use transform::{WindowCounters, Windowed};
