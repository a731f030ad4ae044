//! Data files as Iceberg sees them: a file's path, size, record count and per-column
//! statistics ([`DataFileInfo`], [`ColumnStats`]).
//!
//! Owns the shape every other part of the writer exchanges: the Parquet writer produces it,
//! the manifests store it, the snapshot operations and summaries count with it, and callers
//! build it from their own records. Also owns how the statistics of several files combine
//! into those of their concatenation (compaction). It never touches a file: no Parquet or
//! Avro here, so the spec modules import it without importing a file format.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fsutil;
use super::schema::{ColumnSpec, IcebergType};
use super::value::Datum;

/// Statistics of one column in one data file, as an Iceberg manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Values including nulls (Iceberg's `value_counts`).
    pub value_count: u64,
    /// Iceberg's `null_value_counts`.
    pub null_count: u64,
    /// Iceberg's `nan_value_counts`; only for float/double columns.
    pub nan_count: Option<u64>,
    /// Compressed bytes of the column in the file (`column_sizes`), when known.
    pub column_size: Option<u64>,
    /// Lower bound in Iceberg single-value serialisation (strings/binary truncated).
    pub lower_bound: Option<Vec<u8>>,
    /// Upper bound in Iceberg single-value serialisation (strings/binary truncated upwards).
    pub upper_bound: Option<Vec<u8>>,
}

impl ColumnStats {
    /// The lower bound decoded as canonical JSON for a column of type `ty` (strings and
    /// binary may be truncated prefixes).
    pub fn lower_json(&self, ty: IcebergType) -> Option<Value> {
        Datum::from_bytes(ty, self.lower_bound.as_deref()?).map(|d| d.to_json())
    }

    /// The upper bound decoded as canonical JSON (strings and binary may be rounded up).
    pub fn upper_json(&self, ty: IcebergType) -> Option<Value> {
        Datum::from_bytes(ty, self.upper_bound.as_deref()?).map(|d| d.to_json())
    }
}

/// A written data file: everything an Iceberg manifest entry needs about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileInfo {
    /// Absolute local path (manifests store it as a `file://` location).
    pub path: PathBuf,
    /// Exact size on disk; readers use it to find the Parquet footer.
    pub file_size_in_bytes: u64,
    pub record_count: u64,
    /// Keyed by Iceberg field id.
    pub column_stats: BTreeMap<i32, ColumnStats>,
    /// The file's partition: one canonical JSON value (`value.rs`) of each partition
    /// field's result type, in spec order, `null` for a null; empty for an unpartitioned
    /// table. Every row of the file belongs to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<Value>,
}

impl DataFileInfo {
    /// The `file://` location stored in manifests.
    pub fn location(&self) -> String {
        fsutil::to_location(&self.path)
    }
}

/// Statistics of the concatenation of files with statistics `inputs`.
pub(super) fn merge_stats(
    columns: &[ColumnSpec],
    inputs: &[DataFileInfo],
) -> BTreeMap<i32, ColumnStats> {
    let mut out = BTreeMap::new();
    for col in columns {
        let mut merged = ColumnStats {
            nan_count: Some(0),
            ..ColumnStats::default()
        };
        let mut lower: Option<Option<Datum>> = Some(None);
        let mut upper: Option<Option<Datum>> = Some(None);
        let mut nan_known = true;
        let mut any = false;
        for input in inputs {
            let Some(s) = input.column_stats.get(&col.field_id) else {
                // No statistics for the column in this file: the merge knows nothing either.
                lower = None;
                upper = None;
                nan_known = false;
                merged.value_count += input.record_count;
                merged.null_count += input.record_count;
                continue;
            };
            any = true;
            merged.value_count += s.value_count;
            merged.null_count += s.null_count;
            match s.nan_count {
                Some(n) => merged.nan_count = merged.nan_count.map(|m| m + n),
                None => nan_known = false,
            }
            let holds_values = s.value_count > s.null_count;
            let pick = |acc: &mut Option<Option<Datum>>, bound: &Option<Vec<u8>>, want| {
                if !holds_values {
                    return;
                }
                let Some(d) = bound.as_deref().and_then(|b| Datum::from_bytes(col.ty, b)) else {
                    *acc = None;
                    return;
                };
                if let Some(cur) = acc {
                    if cur.as_ref().is_none_or(|c| d.compare(c) == Some(want)) {
                        *cur = Some(d);
                    }
                }
            };
            pick(&mut lower, &s.lower_bound, std::cmp::Ordering::Less);
            pick(&mut upper, &s.upper_bound, std::cmp::Ordering::Greater);
        }
        if !any {
            continue;
        }
        // The inputs' bounds are already truncated bounds, so they are written back as they
        // are (a lower bound stays below, an upper bound above, every value).
        merged.lower_bound = lower.flatten().map(|d| d.to_bytes());
        merged.upper_bound = upper.flatten().map(|d| d.to_bytes());
        if !nan_known || !matches!(col.ty, IcebergType::Float | IcebergType::Double) {
            merged.nan_count = None;
        }
        out.insert(col.field_id, merged);
    }
    out
}
