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
//! errors) and the Iceberg writer, the `astha-iceberg` crate re-exported as [`iceberg`].
//! The four event-driven ones implement [`astha_actors::Component`]
//! and only coordinate through the registry and the catalog's compare-and-swap, never by
//! calling each other.
//!
//! And the [`sinks`], which deliver changes outside the database.
//!
//! Cargo features (all on by default): `lakehouse` (everything above but the sinks; Parquet,
//! Arrow, Avro), `nats` (the NATS sink), `webhook` (the webhook sink). The stdout and file
//! sinks are always built.

#[cfg(feature = "lakehouse")]
pub mod compactor;
/// The Iceberg writer (the `astha-iceberg` crate), under the name the components use.
#[cfg(feature = "lakehouse")]
pub use astha_iceberg as iceberg;
#[cfg(feature = "lakehouse")]
pub mod iceberg_updater;
#[cfg(feature = "lakehouse")]
pub mod lakehouse;
#[cfg(feature = "lakehouse")]
pub mod registry;
#[cfg(feature = "lakehouse")]
pub mod schema_manager;
pub mod sinks;
#[cfg(feature = "lakehouse")]
pub mod snapshotter;
#[cfg(feature = "lakehouse")]
pub mod storage_manager;

#[cfg(feature = "lakehouse")]
pub use compactor::{Compactor, CompactorConfig};
#[cfg(feature = "lakehouse")]
pub use iceberg_updater::{IcebergUpdater, IcebergUpdaterConfig};
#[cfg(feature = "lakehouse")]
pub use lakehouse::{Lakehouse, LakehouseConfig, LakehouseError};
#[cfg(feature = "lakehouse")]
pub use schema_manager::{SchemaManager, SchemaManagerConfig};
#[cfg(feature = "lakehouse")]
pub use snapshotter::{Snapshotter, SnapshotterConfig};
#[cfg(feature = "lakehouse")]
pub use storage_manager::{StorageManager, StorageManagerConfig};
