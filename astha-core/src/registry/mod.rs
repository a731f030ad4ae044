//! The lakehouse metadata registry Astha watches (seeds 000 and 002): its schema,
//! versioned migrations, typed rows and the writes the storage path makes.
//!
//! `updated_at` is set by the statements that change a row, never by a trigger that
//! issues a second UPDATE: such a trigger would log every update twice (the trap the
//! seed's implementation fell into).

mod events;
mod lakehouse;
mod migrations;
mod rows;
mod writes;

pub use events::RegistryEvent;
pub use lakehouse::*;
pub use migrations::{migrate, SCHEMA_VERSION};
pub use rows::*;
pub use writes::*;

/// The registry tables, in dependency order.
pub const REGISTRY_TABLES: [&str; 7] = [
    "databases",
    "tables",
    "table_columns",
    "table_metadata",
    "table_files",
    "file_statistics",
    "table_snapshots",
];

/// SQL expression for "now" in the registry's timestamp format (UTC, milliseconds).
pub const NOW_SQL: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";
