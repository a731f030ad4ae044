//! The lakehouse metadata registry Astha watches (seeds 000 and 002, docs/SEEDS.md): its schema,
//! versioned migrations, typed rows, the writes the storage path makes, and the Astha
//! settings a lakehouse runs with ([`monitor_registry`]).
//!
//! It lives with the components, not in the core: the core captures any table and knows
//! none by name. It never decides what a component subscribes to: each component's own
//! `subscriptions()` does, unless the configuration overrides it.
//!
//! `updated_at` is set by the statements that change a row, never by a trigger that
//! issues a second UPDATE: such a trigger would log every update twice (the trap the
//! seed's published implementation fell into, docs/SEEDS.md).

use astha_core::config::AsthaConfig;

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

/// The lakehouse's default for an Astha configuration: the registry tables are monitored,
/// unless the configuration already names tables of its own. Pass it to
/// [`AsthaConfig::load_with`] so `ASTHA_MONITORED_TABLES` can still override it.
pub fn monitor_registry(config: &mut AsthaConfig) {
    if config.monitored_tables.is_empty() {
        config.monitored_tables = REGISTRY_TABLES.map(String::from).to_vec();
    }
}

/// SQL expression for "now" in the registry's timestamp format (UTC, milliseconds).
pub const NOW_SQL: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";
