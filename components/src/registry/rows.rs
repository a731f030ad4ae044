//! Typed rows of the registry tables, for `Event<T>` and for registry reads.
//!
//! Flags are stored as 0/1 integers; [`flag`] reads them (and real booleans) so typed
//! decoding works on rows written by real triggers, not only on hand-written JSON.

use serde::{Deserialize, Deserializer, Serialize};

/// Reads a SQLite flag (0/1 integer) or a JSON boolean as `bool`.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
    })
}

/// A row of `databases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A row of `tables`, with the table-level statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRow {
    pub id: i64,
    pub database_id: i64,
    pub name: String,
    pub row_count: i64,
    pub file_count: i64,
    pub total_size: i64,
    pub last_modified: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A row of `table_columns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableColumn {
    pub id: i64,
    pub table_id: i64,
    pub name: String,
    pub ordinal: i64,
    pub data_type: String,
    #[serde(deserialize_with = "flag")]
    pub nullable: bool,
    /// The Iceberg field id of the column.
    pub field_id: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A row of `table_metadata`: schema version, format, compression, partitioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMetadata {
    pub id: i64,
    pub table_id: i64,
    pub schema_version: i64,
    pub format: String,
    pub compression: String,
    /// JSON array of column names.
    pub partition_by: String,
    /// JSON array of column names.
    pub sort_by: String,
    /// JSON object of string properties.
    pub properties: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Where a data file is in the Iceberg commit path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcebergState {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl IcebergState {
    /// The value stored in `table_files.iceberg_metadata_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            IcebergState::Pending => "pending",
            IcebergState::Processing => "processing",
            IcebergState::Completed => "completed",
            IcebergState::Failed => "failed",
        }
    }
}

/// A row of `table_files`: one data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFile {
    pub id: i64,
    pub table_id: i64,
    pub file_name: String,
    pub file_path: String,
    pub file_size: i64,
    pub row_count: i64,
    pub checksum: String,
    pub file_type: String,
    pub partition_path: String,
    #[serde(deserialize_with = "flag")]
    pub is_compressed: bool,
    pub iceberg_metadata_state: IcebergState,
    pub created_at: String,
    pub updated_at: String,
}

/// A row of `file_statistics`: one column's statistics in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStatistic {
    pub id: i64,
    pub file_id: i64,
    pub column_name: String,
    /// Minimum as JSON text (null when the column has no non-null value).
    pub min_value: Option<String>,
    pub max_value: Option<String>,
    pub null_count: i64,
    pub value_count: i64,
    pub created_at: String,
}

/// A row of `table_snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub id: i64,
    pub table_id: i64,
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub operation: String,
    pub trigger_kind: String,
    pub file_count: i64,
    pub row_count: i64,
    pub total_size: i64,
    pub metadata_location: Option<String>,
    #[serde(deserialize_with = "flag")]
    pub expired: bool,
    pub created_at: String,
    pub updated_at: String,
}
