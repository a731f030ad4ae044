//! Astha's lakehouse components, one file each:
//!
//! - [`storage_manager`]: the write path; rows become a Parquet data file recorded in the
//!   registry in one transaction (not a component: the host calls it);
//! - [`schema_manager`]: a schema cache kept right by registry events;
//! - [`iceberg_updater`]: appends new data files to one Iceberg v2 table per registry table;
//! - [`snapshotter`]: records snapshots on time, size and manual triggers, and expires old
//!   ones by retention;
//! - [`compactor`]: merges small data files into target-sized ones with a replace commit.
//!
//! They share [`registry`] (the metadata registry's schema and typed rows, and the tables
//! Astha monitors for the lakehouse), [`lakehouse`] (paths, catalog, registry connections,
//! errors) and the Iceberg writer in [`iceberg`]. The four event-driven ones implement [`astha_actors::Component`]
//! and only coordinate through the registry and the catalog's compare-and-swap, never by
//! calling each other.

pub mod compactor;
pub mod iceberg;
pub mod iceberg_updater;
pub mod lakehouse;
pub mod registry;
pub mod schema_manager;
pub mod sinks;
pub mod snapshotter;
pub mod storage_manager;

pub use compactor::{Compactor, CompactorConfig};
pub use iceberg_updater::{IcebergUpdater, IcebergUpdaterConfig};
pub use lakehouse::{Lakehouse, LakehouseConfig, LakehouseError};
pub use schema_manager::{SchemaManager, SchemaManagerConfig};
pub use snapshotter::{Snapshotter, SnapshotterConfig};
pub use storage_manager::{StorageManager, StorageManagerConfig};
