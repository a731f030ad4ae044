//! Manifest lists (`snap-*.avro`): the set of manifests that makes up one snapshot.
//!
//! Owns writing and reading the v2 manifest list. A manifest carried into a later snapshot is
//! listed with its original counts and sequence number, so only the manifests a commit wrote
//! are new in its list.

use std::path::{Path, PathBuf};

use apache_avro::types::Value;
use apache_avro::Writer;

use super::avro_read::read_values;
use super::avro_schema::manifest_list_schema;
use super::avro_value::{as_bytes, as_i32, as_i64, as_str, field, opt, record};
use super::error::{IcebergError, Result};
use super::fsutil;
use super::partition::FieldSummary;

/// One manifest as listed in a manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Absolute local path of the manifest.
    pub manifest_path: PathBuf,
    /// Exact byte length of the manifest file.
    pub manifest_length: i64,
    pub partition_spec_id: i32,
    /// 0 = data manifest (the only kind written here).
    pub content: i32,
    /// Sequence number of the snapshot that added the manifest.
    pub sequence_number: i64,
    pub min_sequence_number: i64,
    pub added_snapshot_id: i64,
    pub added_files_count: i32,
    pub existing_files_count: i32,
    pub deleted_files_count: i32,
    pub added_rows_count: i64,
    pub existing_rows_count: i64,
    pub deleted_rows_count: i64,
    /// One summary per partition field of the manifest's spec (none when unpartitioned):
    /// what readers prune manifests by.
    pub partitions: Vec<FieldSummary>,
}

/// The snapshot a manifest list belongs to (written into its header).
#[derive(Debug, Clone, Copy)]
pub struct ListContext {
    pub snapshot_id: i64,
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
}

/// Writes a manifest list at `path`.
pub fn write_manifest_list(
    path: &Path,
    manifests: &[ManifestFile],
    ctx: ListContext,
) -> Result<()> {
    let avro_err = |source| IcebergError::Avro {
        path: path.to_path_buf(),
        source,
    };
    let schema = manifest_list_schema();
    let mut writer = Writer::new(schema, Vec::new());
    let parent = ctx
        .parent_snapshot_id
        .map_or_else(|| "null".to_string(), |p| p.to_string());
    for (k, v) in [
        ("snapshot-id", ctx.snapshot_id.to_string()),
        ("parent-snapshot-id", parent),
        ("sequence-number", ctx.sequence_number.to_string()),
        ("format-version", "2".to_string()),
    ] {
        writer
            .add_user_metadata(k.to_string(), v)
            .map_err(avro_err)?;
    }
    for m in manifests {
        writer
            .append(record(vec![
                (
                    "manifest_path",
                    Value::String(fsutil::to_location(&m.manifest_path)),
                ),
                ("manifest_length", Value::Long(m.manifest_length)),
                ("partition_spec_id", Value::Int(m.partition_spec_id)),
                ("content", Value::Int(m.content)),
                ("sequence_number", Value::Long(m.sequence_number)),
                ("min_sequence_number", Value::Long(m.min_sequence_number)),
                ("added_snapshot_id", Value::Long(m.added_snapshot_id)),
                ("added_files_count", Value::Int(m.added_files_count)),
                ("existing_files_count", Value::Int(m.existing_files_count)),
                ("deleted_files_count", Value::Int(m.deleted_files_count)),
                ("added_rows_count", Value::Long(m.added_rows_count)),
                ("existing_rows_count", Value::Long(m.existing_rows_count)),
                ("deleted_rows_count", Value::Long(m.deleted_rows_count)),
                // One summary per partition field (none when unpartitioned).
                (
                    "partitions",
                    opt(Some(Value::Array(
                        m.partitions.iter().map(summary_value).collect(),
                    ))),
                ),
                ("key_metadata", opt(None)),
            ]))
            .map_err(avro_err)?;
    }
    let bytes = writer.into_inner().map_err(avro_err)?;
    fsutil::write_new_synced(path, &bytes)
}

fn summary_value(s: &FieldSummary) -> Value {
    record(vec![
        ("contains_null", Value::Boolean(s.contains_null)),
        ("contains_nan", opt(s.contains_nan.map(Value::Boolean))),
        ("lower_bound", opt(s.lower_bound.clone().map(Value::Bytes))),
        ("upper_bound", opt(s.upper_bound.clone().map(Value::Bytes))),
    ])
}

fn parse_summary(v: &Value) -> FieldSummary {
    let boolean = |n: &str| match field(v, n) {
        Some(Value::Boolean(b)) => Some(*b),
        _ => None,
    };
    FieldSummary {
        contains_null: boolean("contains_null").unwrap_or(true),
        contains_nan: boolean("contains_nan"),
        lower_bound: field(v, "lower_bound").and_then(as_bytes),
        upper_bound: field(v, "upper_bound").and_then(as_bytes),
    }
}

#[cfg(test)]
thread_local! {
    /// Manifest lists this thread read (the history-cost test counts them per commit).
    pub(crate) static LIST_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Reads the manifests listed at `path`.
pub fn read_manifest_list(path: &Path) -> Result<Vec<ManifestFile>> {
    #[cfg(test)]
    LIST_READS.with(|n| n.set(n.get() + 1));
    let avro_err = |source| IcebergError::Avro {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| IcebergError::io(path, e))?;
    let values = read_values(&bytes).map_err(avro_err)?;
    let mut out = Vec::with_capacity(values.len());
    for v in &values {
        let m = parse(v).map_err(|reason| {
            IcebergError::corrupt(path, format!("manifest {}: {reason}", out.len()))
        })?;
        out.push(m);
    }
    Ok(out)
}

fn parse(v: &Value) -> Result<ManifestFile, String> {
    let long = |n: &str| field(v, n).and_then(as_i64).ok_or(format!("missing {n}"));
    // v1 lists lack some fields; default them the way the spec says readers must.
    let int_or = |n: &str, d: i32| field(v, n).and_then(as_i32).unwrap_or(d);
    let long_or = |n: &str, d: i64| field(v, n).and_then(as_i64).unwrap_or(d);
    let location = field(v, "manifest_path")
        .and_then(as_str)
        .ok_or("missing manifest_path")?;
    Ok(ManifestFile {
        manifest_path: fsutil::from_location(location).map_err(|e| e.to_string())?,
        manifest_length: long("manifest_length")?,
        partition_spec_id: int_or("partition_spec_id", 0),
        content: int_or("content", 0),
        sequence_number: long_or("sequence_number", 0),
        min_sequence_number: long_or("min_sequence_number", 0),
        added_snapshot_id: long("added_snapshot_id")?,
        added_files_count: int_or("added_files_count", int_or("added_data_files_count", 0)),
        existing_files_count: int_or(
            "existing_files_count",
            int_or("existing_data_files_count", 0),
        ),
        deleted_files_count: int_or("deleted_files_count", int_or("deleted_data_files_count", 0)),
        added_rows_count: long_or("added_rows_count", 0),
        existing_rows_count: long_or("existing_rows_count", 0),
        deleted_rows_count: long_or("deleted_rows_count", 0),
        partitions: match field(v, "partitions") {
            Some(Value::Array(items)) => items.iter().map(parse_summary).collect(),
            _ => Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Reader;

    #[test]
    fn round_trip_with_header() {
        let dir = tempfile::tempdir().unwrap();
        let m = ManifestFile {
            manifest_path: "/wh/t/metadata/a-m0.avro".into(),
            manifest_length: 1234,
            partition_spec_id: 0,
            content: 0,
            sequence_number: 3,
            min_sequence_number: 1,
            added_snapshot_id: 42,
            added_files_count: 1,
            existing_files_count: 2,
            deleted_files_count: 3,
            added_rows_count: 10,
            existing_rows_count: 20,
            deleted_rows_count: 30,
            partitions: vec![FieldSummary {
                contains_null: true,
                contains_nan: Some(false),
                lower_bound: Some(vec![1, 0, 0, 0]),
                upper_bound: None,
            }],
        };
        let path = dir.path().join("snap-42-1-x.avro");
        let ctx = ListContext {
            snapshot_id: 42,
            parent_snapshot_id: None,
            sequence_number: 3,
        };
        write_manifest_list(&path, std::slice::from_ref(&m), ctx).unwrap();
        assert_eq!(read_manifest_list(&path).unwrap(), vec![m]);
        let bytes = std::fs::read(&path).unwrap();
        let reader = Reader::new(&bytes[..]).unwrap();
        assert_eq!(reader.user_metadata()["parent-snapshot-id"], b"null");
    }
}
