//! Manifest files: the Avro lists of data files (with their status) that a snapshot is made of.
//!
//! Owns writing and reading `*-m<N>.avro` manifests for v2 tables, partitioned or not (each
//! entry's partition record as the spec in the manifest's context says, `partition.rs`). It keeps the
//! sequence-number rules readers rely on: ADDED entries leave `sequence_number` and
//! `file_sequence_number` null so they inherit the snapshot's number from the manifest list,
//! while EXISTING and DELETED entries keep their original numbers. Reading resolves that
//! inheritance, so every [`ManifestEntry`] in memory has concrete numbers.
//!
//! A manifest holds one kind of file, as its list entry's `content` says: data files
//! ([`CONTENT_DATA`]) or position delete files ([`CONTENT_POSITION_DELETES`]); every entry's
//! `data_file.content` must match it. Equality delete manifests are refused on read
//! (pyiceberg 0.12 cannot read them either, docs/ICEBERG.md).

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::types::Value;
use apache_avro::Writer;

use super::avro_read::read_values;
use super::avro_schema::manifest_entry_schema;
use super::avro_value::{
    as_bytes, as_i32, as_i64, as_str, field, int_map, opt, read_int_map, record,
};
use super::data_file::{ColumnStats, DataFileInfo};
use super::error::{IcebergError, Result};
use super::fsutil;
use super::manifest_list::ManifestFile;
use super::partition::{partition_from_avro, BoundSpec};
use super::schema::IcebergSchema;

/// Status of a data file in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// Carried over from an earlier snapshot, still live.
    Existing = 0,
    /// Added by the snapshot that wrote this manifest.
    Added = 1,
    /// Removed by the snapshot that wrote this manifest.
    Deleted = 2,
}

impl EntryStatus {
    fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(EntryStatus::Existing),
            1 => Some(EntryStatus::Added),
            2 => Some(EntryStatus::Deleted),
            _ => None,
        }
    }

    /// ADDED and EXISTING entries are part of the snapshot; DELETED ones are not.
    pub fn is_live(self) -> bool {
        self != EntryStatus::Deleted
    }
}

/// One data file in a manifest, with inherited values already resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestEntry {
    pub status: EntryStatus,
    /// Snapshot that added (or, for DELETED, removed) the file.
    pub snapshot_id: i64,
    /// Data sequence number of the file.
    pub sequence_number: i64,
    /// Sequence number of the snapshot that added the file.
    pub file_sequence_number: i64,
    pub file: DataFileInfo,
}

impl ManifestEntry {
    /// This entry carried into a manifest of snapshot `snapshot_id` that rewrites its own:
    /// DELETED by that snapshot when `removed`, else EXISTING.
    pub(crate) fn carried(self, removed: bool, snapshot_id: i64) -> ManifestEntry {
        if removed {
            ManifestEntry {
                status: EntryStatus::Deleted,
                snapshot_id,
                ..self
            }
        } else {
            ManifestEntry {
                status: EntryStatus::Existing,
                ..self
            }
        }
    }
}

/// `content` of a data manifest and of its data files.
pub const CONTENT_DATA: i32 = 0;
/// `content` of a position delete manifest and of its delete files.
pub const CONTENT_POSITION_DELETES: i32 = 1;
/// `content` of equality delete files (never written, refused on read).
const CONTENT_EQUALITY_DELETES: i32 = 2;

/// What a new manifest belongs to: the snapshot being committed.
#[derive(Debug, Clone, Copy)]
pub struct ManifestContext<'a> {
    pub schema: &'a IcebergSchema,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    /// [`CONTENT_DATA`] or [`CONTENT_POSITION_DELETES`]: what every entry is.
    pub content: i32,
    /// The table's partition spec: every entry's partition must fit it.
    pub partition: &'a BoundSpec,
}

/// Writes `entries` as a manifest at `path` and returns its manifest list entry.
pub fn write_manifest(
    path: &Path,
    entries: &[ManifestEntry],
    ctx: ManifestContext<'_>,
) -> Result<ManifestFile> {
    let avro_err = |source| IcebergError::Avro {
        path: path.to_path_buf(),
        source,
    };
    let schema = manifest_entry_schema(&ctx.partition.avro_fields());
    let bad_partition = |e: &ManifestEntry, reason: String| {
        IcebergError::InvalidArgument(format!("data file {}: {reason}", e.file.path.display()))
    };
    let partitions = ctx
        .partition
        .summaries(entries.iter().map(|e| e.file.partition.as_slice()))
        .map_err(|reason| {
            IcebergError::InvalidArgument(format!("manifest {}: {reason}", path.display()))
        })?;
    let mut writer = Writer::new(&schema, Vec::new());
    let schema_json =
        serde_json::to_string(ctx.schema).map_err(|source| IcebergError::MetadataJson {
            path: path.to_path_buf(),
            source,
        })?;
    for (k, v) in [
        ("schema", schema_json),
        ("schema-id", ctx.schema.schema_id.to_string()),
        (
            "partition-spec",
            ctx.partition.spec.fields_json().to_string(),
        ),
        ("partition-spec-id", ctx.partition.spec.spec_id.to_string()),
        ("format-version", "2".to_string()),
        (
            "content",
            if ctx.content == CONTENT_POSITION_DELETES {
                "deletes"
            } else {
                "data"
            }
            .to_string(),
        ),
    ] {
        writer
            .add_user_metadata(k.to_string(), v)
            .map_err(avro_err)?;
    }
    for e in entries {
        let partition = ctx
            .partition
            .avro_value(&e.file.partition)
            .map_err(|reason| bad_partition(e, reason))?;
        writer
            .append(entry_value(e, ctx.content, partition))
            .map_err(avro_err)?;
    }
    let bytes = writer.into_inner().map_err(avro_err)?;
    fsutil::write_new_synced(path, &bytes)?;

    let count = |s: EntryStatus| entries.iter().filter(|e| e.status == s).count() as i32;
    let rows = |s: EntryStatus| {
        entries
            .iter()
            .filter(|e| e.status == s)
            .map(|e| e.file.record_count as i64)
            .sum()
    };
    let min_sequence_number = entries
        .iter()
        .map(|e| match e.status {
            EntryStatus::Added => ctx.sequence_number,
            _ => e.sequence_number,
        })
        .min()
        .unwrap_or(ctx.sequence_number);
    Ok(ManifestFile {
        manifest_path: path.to_path_buf(),
        manifest_length: bytes.len() as i64,
        partition_spec_id: ctx.partition.spec.spec_id,
        content: ctx.content,
        sequence_number: ctx.sequence_number,
        min_sequence_number,
        added_snapshot_id: ctx.snapshot_id,
        added_files_count: count(EntryStatus::Added),
        existing_files_count: count(EntryStatus::Existing),
        deleted_files_count: count(EntryStatus::Deleted),
        added_rows_count: rows(EntryStatus::Added),
        existing_rows_count: rows(EntryStatus::Existing),
        deleted_rows_count: rows(EntryStatus::Deleted),
        partitions,
    })
}

#[cfg(test)]
thread_local! {
    /// Manifests this thread read (the history-cost test counts them per commit).
    pub(crate) static MANIFEST_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Reads the entries of a manifest, resolving inherited snapshot ids and sequence numbers.
pub fn read_manifest(manifest: &ManifestFile) -> Result<Vec<ManifestEntry>> {
    #[cfg(test)]
    MANIFEST_READS.with(|n| n.set(n.get() + 1));
    let path = &manifest.manifest_path;
    let avro_err = |source| IcebergError::Avro {
        path: path.clone(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| IcebergError::io(path, e))?;
    let values = read_values(&bytes).map_err(avro_err)?;
    let mut out = Vec::with_capacity(values.len());
    for value in &values {
        let entry = parse_entry(value, manifest).map_err(|reason| {
            IcebergError::corrupt(path, format!("entry {}: {reason}", out.len()))
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn entry_value(e: &ManifestEntry, content: i32, partition: Value) -> Value {
    // ADDED entries inherit both sequence numbers from the manifest list (see module doc).
    let seq = |n: i64| (e.status != EntryStatus::Added).then_some(Value::Long(n));
    record(vec![
        ("status", Value::Int(e.status as i32)),
        ("snapshot_id", opt(Some(Value::Long(e.snapshot_id)))),
        ("sequence_number", opt(seq(e.sequence_number))),
        ("file_sequence_number", opt(seq(e.file_sequence_number))),
        ("data_file", data_file_value(&e.file, content, partition)),
    ])
}

fn data_file_value(f: &DataFileInfo, content: i32, partition: Value) -> Value {
    let stats = &f.column_stats;
    let longs = |get: fn(&ColumnStats) -> Option<u64>| {
        let m: Vec<(i32, u64)> = stats
            .iter()
            .filter_map(|(id, s)| Some((*id, get(s)?)))
            .collect();
        (!m.is_empty()).then(|| int_map(m, |v| Value::Long(v as i64)))
    };
    let bytes = |get: fn(&ColumnStats) -> Option<&Vec<u8>>| {
        let m: Vec<(i32, Vec<u8>)> = stats
            .iter()
            .filter_map(|(id, s)| Some((*id, get(s)?.clone())))
            .collect();
        (!m.is_empty()).then(|| int_map(m, Value::Bytes))
    };
    // value_counts and null_value_counts are always written (even empty): readers use them to
    // prune, and docs/ICEBERG.md lists them as required in practice. So is column_sizes:
    // pyiceberg's `inspect.entries()` fails on a file without it.
    let always = |m: Option<Value>| Some(m.unwrap_or(Value::Array(vec![])));
    record(vec![
        ("content", Value::Int(content)),
        ("file_path", Value::String(f.location())),
        ("file_format", Value::String("PARQUET".into())),
        ("partition", partition),
        ("record_count", Value::Long(f.record_count as i64)),
        (
            "file_size_in_bytes",
            Value::Long(f.file_size_in_bytes as i64),
        ),
        ("column_sizes", opt(always(longs(|s| s.column_size)))),
        ("value_counts", opt(always(longs(|s| Some(s.value_count))))),
        (
            "null_value_counts",
            opt(always(longs(|s| Some(s.null_count)))),
        ),
        ("nan_value_counts", opt(longs(|s| s.nan_count))),
        ("lower_bounds", opt(bytes(|s| s.lower_bound.as_ref()))),
        ("upper_bounds", opt(bytes(|s| s.upper_bound.as_ref()))),
        ("key_metadata", opt(None)),
        ("split_offsets", opt(None)),
        ("equality_ids", opt(None)),
        ("sort_order_id", opt(None)),
    ])
}

fn parse_entry(v: &Value, manifest: &ManifestFile) -> Result<ManifestEntry, String> {
    let status = field(v, "status")
        .and_then(as_i32)
        .and_then(EntryStatus::from_i32)
        .ok_or("missing or invalid status")?;
    // Inheritance per the spec: null snapshot id -> the manifest's snapshot; null sequence
    // numbers on ADDED entries -> the manifest's sequence number (v1 files: 0).
    let inherit = |name: &str| {
        field(v, name).and_then(as_i64).unwrap_or(match status {
            EntryStatus::Added => manifest.sequence_number,
            _ => 0,
        })
    };
    let snapshot_id = field(v, "snapshot_id")
        .and_then(as_i64)
        .unwrap_or(manifest.added_snapshot_id);
    let df = field(v, "data_file").ok_or("missing data_file")?;
    let content = field(df, "content").and_then(as_i32).unwrap_or(0);
    if content == CONTENT_EQUALITY_DELETES {
        return Err("equality delete files (content 2) are not supported".into());
    }
    if content != manifest.content || !matches!(content, CONTENT_DATA | CONTENT_POSITION_DELETES) {
        return Err(format!(
            "file content {content} in a manifest of content {}",
            manifest.content
        ));
    }
    let location = field(df, "file_path")
        .and_then(as_str)
        .ok_or("missing file_path")?;
    let path = fsutil::from_location(location).map_err(|e| e.to_string())?;
    let long = |name: &str| {
        field(df, name)
            .and_then(as_i64)
            .ok_or(format!("missing {name}"))
    };
    let record_count = long("record_count")?;
    let partition = match field(df, "partition") {
        Some(p) => partition_from_avro(p)?,
        None => Vec::new(),
    };
    let file_size_in_bytes = long("file_size_in_bytes")?;

    let mut column_stats: BTreeMap<i32, ColumnStats> = BTreeMap::new();
    let mut merge_longs = |name: &str, set: fn(&mut ColumnStats, u64)| {
        if let Some(m) = field(df, name).and_then(|m| read_int_map(m, as_i64)) {
            for (id, n) in m {
                set(column_stats.entry(id).or_default(), n.max(0) as u64);
            }
        }
    };
    merge_longs("value_counts", |s, n| s.value_count = n);
    merge_longs("null_value_counts", |s, n| s.null_count = n);
    merge_longs("nan_value_counts", |s, n| s.nan_count = Some(n));
    merge_longs("column_sizes", |s, n| s.column_size = Some(n));
    let mut merge_bytes = |name: &str, set: fn(&mut ColumnStats, Vec<u8>)| {
        if let Some(m) = field(df, name).and_then(|m| read_int_map(m, as_bytes)) {
            for (id, b) in m {
                set(column_stats.entry(id).or_default(), b);
            }
        }
    };
    merge_bytes("lower_bounds", |s, b| s.lower_bound = Some(b));
    merge_bytes("upper_bounds", |s, b| s.upper_bound = Some(b));

    Ok(ManifestEntry {
        status,
        snapshot_id,
        sequence_number: inherit("sequence_number"),
        file_sequence_number: inherit("file_sequence_number"),
        file: DataFileInfo {
            path,
            file_size_in_bytes: file_size_in_bytes.max(0) as u64,
            record_count: record_count.max(0) as u64,
            column_stats,
            partition,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PartitionSpec;
    use crate::schema::{ColumnSpec, IcebergType};
    use apache_avro::Reader;

    fn file(name: &str, rows: u64) -> DataFileInfo {
        let mut stats = BTreeMap::new();
        stats.insert(
            1,
            ColumnStats {
                value_count: rows,
                null_count: 0,
                nan_count: None,
                column_size: Some(10),
                lower_bound: Some(1i64.to_le_bytes().to_vec()),
                upper_bound: Some(9i64.to_le_bytes().to_vec()),
            },
        );
        DataFileInfo {
            path: format!("/wh/ns/t/data/{name}").into(),
            file_size_in_bytes: 100,
            record_count: rows,
            column_stats: stats,
            partition: Vec::new(),
        }
    }

    #[test]
    fn round_trip_resolves_inherited_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let schema =
            IcebergSchema::from_columns(0, &[ColumnSpec::new(1, "id", IcebergType::Long, true)]);
        let ctx = ManifestContext {
            schema: &schema,
            snapshot_id: 77,
            sequence_number: 5,
            content: CONTENT_DATA,
            partition: &PartitionSpec::unpartitioned().bind(&[]).unwrap(),
        };
        let entries = vec![
            ManifestEntry {
                status: EntryStatus::Added,
                snapshot_id: 77,
                sequence_number: 5,
                file_sequence_number: 5,
                file: file("a", 3),
            },
            ManifestEntry {
                status: EntryStatus::Existing,
                snapshot_id: 10,
                sequence_number: 2,
                file_sequence_number: 2,
                file: file("b", 4),
            },
            ManifestEntry {
                status: EntryStatus::Deleted,
                snapshot_id: 77,
                sequence_number: 1,
                file_sequence_number: 1,
                file: file("c", 6),
            },
        ];
        let path = dir.path().join("x-m0.avro");
        let mf = write_manifest(&path, &entries, ctx).unwrap();
        assert_eq!(
            mf.manifest_length as u64,
            std::fs::metadata(&path).unwrap().len()
        );
        assert_eq!(
            (
                mf.added_files_count,
                mf.existing_files_count,
                mf.deleted_files_count
            ),
            (1, 1, 1)
        );
        assert_eq!(
            (
                mf.added_rows_count,
                mf.existing_rows_count,
                mf.deleted_rows_count
            ),
            (3, 4, 6)
        );
        assert_eq!(mf.min_sequence_number, 1);

        assert_eq!(read_manifest(&mf).unwrap(), entries);

        // On disk, the ADDED entry's sequence numbers really are null (inherited).
        let bytes = std::fs::read(&path).unwrap();
        let reader = Reader::new(&bytes[..]).unwrap();
        assert_eq!(reader.user_metadata()["format-version"], b"2");
        let first = reader.into_iter().next().unwrap().unwrap();
        assert_eq!(field(&first, "sequence_number"), None);
        assert_eq!(field(&first, "snapshot_id"), Some(&Value::Long(77)));
    }
}
