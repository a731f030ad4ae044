//! A small, self-contained Iceberg v2 writer for local tables, plus Parquet IO.
//!
//! What it owns: writing Parquet data files with Iceberg field ids and statistics
//! ([`write_parquet`], [`read_parquet_rows`]); the Avro manifests and manifest lists; the table
//! metadata JSON; a SQLite catalog laid out like pyiceberg's `SqlCatalog` ([`SqlCatalog`]); and
//! the table operations Astha needs ([`IcebergTable`]: create/load, fast append, replace for
//! compaction, snapshot expiry, table properties, orphan-file removal), each published by one
//! atomic catalog compare-and-swap; and the one loop that re-applies an operation after
//! losing that swap ([`commit_with_retry`]).
//! Commit timestamps come from the catalog's [`Clock`].
//!
//! What it promises: tables that pyiceberg 0.12 and DuckDB's iceberg extension read (checked by
//! `scripts/interop/check_iceberg.py`, see `tests/iceberg_interop.rs`); a commit that crashes
//! at any point before the swap leaves the previous version current and readable; files are
//! only deleted when no remaining snapshot reaches them; a commit costs what it adds and
//! removes, not what the table's history holds, and the manifests and metadata files a
//! table keeps stay bounded however many commits it sees.
//!
//! Schema evolution (`schema_update`: add, drop, rename, widen, with field ids kept and
//! never reused) is a metadata-only commit; data files keep the schema they were written
//! with and are read by field id.
//!
//! Row-level deletes are merge-on-read position delete files (`row_delta`:
//! [`IcebergTable::row_delta`]); equality deletes are never written and refused on read.
//! Compaction folds them into data files (`fold`: [`IcebergTable::fold_deletes`]).
//!
//! Partitioned tables (`partition`: identity, year, month, day, hour, `bucket[N]`,
//! `truncate[W]`) carry their partition values in every manifest entry and their field
//! summaries in the manifest list, so readers prune by them; [`IcebergTable::replace`] keeps
//! compaction within a partition. Position deletes are refused on partitioned tables.
//!
//! What it never does: partition spec evolution (a table has the one spec it was created
//! with), equality deletes, nested types, or object stores. It refuses such metadata rather
//! than guessing. It knows
//! nothing of Astha either (no change log, registry or actors): `astha-components` builds
//! the lakehouse on it and re-exports it as `astha_components::iceberg`.
//!
//! Layout: the spec side is `schema` (types and columns), `value` (JSON ⇄ typed values,
//! Iceberg bound bytes), `data_file` (a data file and its statistics), `parquet_io`/
//! `parquet_read` (Parquet), `avro_schema`/`avro_value`/`avro_read`/`manifest`/`manifest_list` (Avro
//! files), `metadata` (JSON model), `partition` (specs, partition values, paths), `transform`, `summary`,
//! `properties`; the operations side is
//! `catalog`, `table` (handle), `snapshot_ops` (append, replace), `schema_update`, `manifest_plan` (which
//! manifests a snapshot carries, merges or drops), `live_index` (live files per manifest),
//! `expire`, `orphans`, `commit` (publishing), `retry` (the commit loop); `clock` and
//! `fsutil` serve both.

mod avro_read;
mod avro_schema;
mod avro_value;
mod catalog;
mod clock;
mod commit;
mod data_file;
mod error;
mod expire;
mod fold;
mod fsutil;
mod live_index;
mod manifest;
mod manifest_list;
mod manifest_plan;
mod metadata;
mod orphans;
mod parquet_io;
mod parquet_read;
mod partition;
mod properties;
mod retry;
mod row_delta;
mod schema;
mod schema_update;
mod snapshot_ops;
mod summary;
mod table;
mod transform;
mod value;

pub use catalog::{InSwap, SqlCatalog};
pub use clock::{Clock, FixedClock, SystemClock};
pub use commit::CommitFailpoint;
pub use data_file::{ColumnStats, DataFileInfo};
pub use error::{IcebergError, Result};
pub use expire::ExpireResult;
pub use fold::{Folded, Rewritten};
pub use manifest::{read_manifest, EntryStatus, ManifestEntry};
pub use manifest_list::{read_manifest_list, ManifestFile};
pub use metadata::{Snapshot, TableMetadata};
pub use parquet_io::{merge_parquet, read_parquet_rows, write_parquet};
pub use partition::{
    BoundSpec, FieldSummary, PartitionDef, PartitionField, PartitionSpec, Transform,
};
pub use properties::{
    MANIFEST_MERGE_ENABLED, MANIFEST_MIN_MERGE_COUNT, MANIFEST_TARGET_SIZE_BYTES,
    METADATA_DELETE_AFTER_COMMIT, METADATA_PREVIOUS_VERSIONS_MAX,
};
pub use retry::{commit_with_retry, CommitError, CommitRetry};
pub use row_delta::{PositionDelete, DELETE_FILE_PATH_FIELD_ID, DELETE_POS_FIELD_ID};
pub use schema::{ColumnSpec, IcebergType};
pub use table::{IcebergTable, SnapshotInfo};
pub use value::{lower_bound_bytes, upper_bound_bytes, Datum};
