//! A small, self-contained Iceberg v2 writer for local tables, plus Parquet IO.
//!
//! What it owns: writing Parquet data files with Iceberg field ids and statistics
//! ([`write_parquet`], [`read_parquet_rows`]); the Avro manifests and manifest lists; the table
//! metadata JSON; a SQLite catalog laid out like pyiceberg's `SqlCatalog` ([`SqlCatalog`]); and
//! the table operations Astha needs ([`IcebergTable`]: create/load, fast append, replace for
//! compaction, snapshot expiry), each published by one atomic catalog compare-and-swap.
//!
//! What it promises: tables that pyiceberg 0.12 and DuckDB's iceberg extension read (checked by
//! `scripts/interop/check_iceberg.py`, see `tests/iceberg_interop.rs`); a commit that crashes
//! at any point before the swap leaves the previous version current and readable; files are
//! only deleted when no remaining snapshot reaches them.
//!
//! What it never does: partitioned tables, delete files (merge-on-read), schema evolution,
//! nested types, or object stores. It refuses such metadata rather than guessing.
//!
//! Layout: `schema` (types and columns), `value` (JSON ⇄ typed values, Iceberg bound bytes),
//! `parquet_io`/`parquet_read` (data files), `avro_schema`/`avro_value`/`manifest`/
//! `manifest_list` (Avro files), `metadata` (JSON model), `catalog`, `table` (handle),
//! `snapshot_ops` (append, replace), `summary`, `expire`, `commit` (publishing), `fsutil`.

mod avro_schema;
mod avro_value;
mod catalog;
mod commit;
mod error;
mod expire;
mod fsutil;
mod manifest;
mod manifest_list;
mod metadata;
mod parquet_io;
mod parquet_read;
mod schema;
mod snapshot_ops;
mod summary;
mod table;
mod value;

pub use catalog::SqlCatalog;
pub use commit::CommitFailpoint;
pub use error::{IcebergError, Result};
pub use expire::ExpireResult;
pub use manifest::{read_manifest, EntryStatus, ManifestEntry};
pub use manifest_list::{read_manifest_list, ManifestFile};
pub use metadata::{Snapshot, TableMetadata};
pub use parquet_io::{merge_parquet, read_parquet_rows, write_parquet, ColumnStats, DataFileInfo};
pub use schema::{ColumnSpec, IcebergType};
pub use table::{IcebergTable, SnapshotInfo};
pub use value::{lower_bound_bytes, upper_bound_bytes, Datum};
