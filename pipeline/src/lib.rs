//! `astha run`: a whole change-data-capture pipeline declared in one TOML file.
//!
//! A pipeline reads one or more SQLite databases (sources), shapes each table's changes
//! (columns kept, rows filtered: [`shape`], [`filter`]) and hands them to sinks built from
//! the connector registry ([`astha_components::sinks::SinkRegistry`]). Settings cascade
//! defaults → source → table. Every sink is an ordinary supervised component with its own
//! durable slot, breaker, retries and dead letters, exactly like an embedded component.
//!
//! The stages, each a module with one job:
//! [`spec`] (the file as written) → [`plan`] (checked against the databases and sink
//! types: `astha run --check`) → [`runner`] (started and stopped).
//! This crate owns no delivery logic of its own: what it builds runs on the engine.

pub mod error;
pub mod filter;
pub mod plan;
pub mod row_expr;
pub mod runner;
pub mod select;
pub mod shape;
pub mod spec;
pub mod window;

pub use error::PipelineError;
pub use plan::{describe, plan, Plan};
pub use runner::{Running, SinkSummary, SourceDeadLetters};
pub use spec::PipelineSpec;
