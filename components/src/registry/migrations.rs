//! Versioned registry migrations, tracked with `PRAGMA user_version`. Each migration runs
//! in its own transaction together with the version bump, so a crash leaves the registry
//! at one version or the next, never between.

use rusqlite::Connection;

use astha_core::error::{CoreError, Result};

/// The registry schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE databases (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE tables (
    id INTEGER PRIMARY KEY,
    database_id INTEGER NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    row_count INTEGER NOT NULL DEFAULT 0,
    file_count INTEGER NOT NULL DEFAULT 0,
    total_size INTEGER NOT NULL DEFAULT 0,
    last_modified TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (database_id, name)
);
CREATE TABLE table_columns (
    id INTEGER PRIMARY KEY,
    table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    data_type TEXT NOT NULL,
    nullable INTEGER NOT NULL DEFAULT 1,
    field_id INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (table_id, name)
);
CREATE TABLE table_metadata (
    id INTEGER PRIMARY KEY,
    table_id INTEGER NOT NULL UNIQUE REFERENCES tables(id) ON DELETE CASCADE,
    schema_version INTEGER NOT NULL DEFAULT 1,
    format TEXT NOT NULL DEFAULT 'parquet',
    compression TEXT NOT NULL DEFAULT 'zstd',
    partition_by TEXT NOT NULL DEFAULT '[]',
    sort_by TEXT NOT NULL DEFAULT '[]',
    properties TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE table_files (
    id INTEGER PRIMARY KEY,
    table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    file_path TEXT NOT NULL UNIQUE,
    file_size INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    file_type TEXT NOT NULL DEFAULT 'parquet',
    partition_path TEXT NOT NULL DEFAULT '',
    is_compressed INTEGER NOT NULL DEFAULT 1,
    iceberg_metadata_state TEXT NOT NULL DEFAULT 'pending'
        CHECK (iceberg_metadata_state IN ('pending', 'processing', 'completed', 'failed')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX table_files_by_state ON table_files (table_id, iceberg_metadata_state);
CREATE TABLE file_statistics (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES table_files(id) ON DELETE CASCADE,
    column_name TEXT NOT NULL,
    min_value TEXT,
    max_value TEXT,
    null_count INTEGER NOT NULL DEFAULT 0,
    value_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (file_id, column_name)
);
CREATE TABLE table_snapshots (
    id INTEGER PRIMARY KEY,
    table_id INTEGER NOT NULL REFERENCES tables(id) ON DELETE CASCADE,
    snapshot_id INTEGER NOT NULL,
    parent_snapshot_id INTEGER,
    operation TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    file_count INTEGER NOT NULL DEFAULT 0,
    row_count INTEGER NOT NULL DEFAULT 0,
    total_size INTEGER NOT NULL DEFAULT 0,
    metadata_location TEXT,
    expired INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (table_id, snapshot_id)
);
";

const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1];

/// Brings the registry in `conn` up to [`SCHEMA_VERSION`]. Returns the version it found.
/// A registry written by a newer Astha is refused rather than misread.
pub fn migrate(conn: &Connection) -> Result<i64> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(CoreError::Invalid(format!(
            "registry schema version {found} is newer than this build supports ({SCHEMA_VERSION})"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        tx.commit()?;
        tracing::info!(version, "registry migrated");
    }
    Ok(found)
}
