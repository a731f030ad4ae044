//! The table metadata JSON (`NNNNN-<uuid>.metadata.json`), format version 2.
//!
//! Owns the serde model (the one partition spec is parsed on demand, `partition.rs`; a
//! table with more than one spec is refused) and the pure transitions a commit applies to it: adding a snapshot
//! (moving `main`, the sequence number, both logs) and dropping expired ones. Fields this
//! writer does not model are kept in `extra` maps and written back unchanged, so loading and
//! committing a table written by another engine does not lose its properties. Nothing here
//! touches the disk; see `table.rs` for publishing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{IcebergError, Result};
use super::partition::{BoundSpec, PartitionSpec};
use super::properties::{created_table_properties, CommitSettings};
use super::schema::IcebergSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableMetadata {
    pub format_version: i32,
    pub table_uuid: String,
    /// `file://` location of the table directory.
    pub location: String,
    pub last_sequence_number: i64,
    pub last_updated_ms: i64,
    pub last_column_id: i32,
    pub current_schema_id: i32,
    pub schemas: Vec<IcebergSchema>,
    pub default_spec_id: i32,
    pub partition_specs: Vec<Value>,
    pub last_partition_id: i32,
    pub default_sort_order_id: i32,
    pub sort_orders: Vec<Value>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// `-1` on disk when there is no snapshot, as the Java implementation writes it.
    #[serde(default, with = "snapshot_id_or_minus_one")]
    pub current_snapshot_id: Option<i64>,
    #[serde(default)]
    pub refs: BTreeMap<String, SnapshotRef>,
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    #[serde(default)]
    pub statistics: Vec<Value>,
    #[serde(default)]
    pub snapshot_log: Vec<SnapshotLogEntry>,
    #[serde(default)]
    pub metadata_log: Vec<MetadataLogEntry>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub snapshot_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    /// `file://` location of the manifest list.
    pub manifest_list: String,
    /// Always holds `operation`, plus the counters Iceberg writers report.
    pub summary: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<i32>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Snapshot {
    pub fn operation(&self) -> &str {
        self.summary.get("operation").map_or("", String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotRef {
    pub snapshot_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotLogEntry {
    pub timestamp_ms: i64,
    pub snapshot_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataLogEntry {
    pub timestamp_ms: i64,
    pub metadata_file: String,
}

mod snapshot_id_or_minus_one {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(v.unwrap_or(-1))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.filter(|id| *id != -1))
    }
}

impl TableMetadata {
    /// Metadata of a new, empty, unpartitioned table, with the properties of
    /// [`created_table_properties`].
    pub fn new(location: String, schema: IcebergSchema, now_ms: i64) -> Self {
        Self::new_partitioned(location, schema, &PartitionSpec::unpartitioned(), now_ms)
    }

    /// Metadata of a new, empty table partitioned by `spec` (its only spec, id 0).
    pub fn new_partitioned(
        location: String,
        schema: IcebergSchema,
        spec: &PartitionSpec,
        now_ms: i64,
    ) -> Self {
        TableMetadata {
            format_version: 2,
            table_uuid: uuid::Uuid::new_v4().to_string(),
            location,
            last_sequence_number: 0,
            last_updated_ms: now_ms,
            last_column_id: schema.max_field_id(),
            current_schema_id: schema.schema_id,
            schemas: vec![schema],
            default_spec_id: spec.spec_id,
            partition_specs: vec![spec.to_json()],
            // Partition field ids start at 1000; 999 means "none assigned yet".
            last_partition_id: spec.last_field_id(),
            default_sort_order_id: 0,
            sort_orders: vec![serde_json::json!({"order-id": 0, "fields": []})],
            properties: created_table_properties(),
            current_snapshot_id: None,
            refs: BTreeMap::new(),
            snapshots: Vec::new(),
            statistics: Vec::new(),
            snapshot_log: Vec::new(),
            metadata_log: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Reads and checks a metadata file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| IcebergError::io(path, e))?;
        let meta: TableMetadata =
            serde_json::from_slice(&bytes).map_err(|source| IcebergError::MetadataJson {
                path: path.to_path_buf(),
                source,
            })?;
        meta.check_supported()?;
        Ok(meta)
    }

    /// Pretty JSON, as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("table metadata always serialises")
    }

    fn check_supported(&self) -> Result<()> {
        let unsupported = |reason: String| {
            Err(IcebergError::Unsupported {
                location: self.location.clone(),
                reason,
            })
        };
        if self.format_version != 2 {
            return unsupported(format!(
                "format version {} (only 2 is supported)",
                self.format_version
            ));
        }
        if self.partition_specs.len() > 1 {
            return unsupported(format!(
                "{} partition specs (partition spec evolution is not supported)",
                self.partition_specs.len()
            ));
        }
        let columns = self.current_schema()?.columns()?;
        if let Err(e) = self.partition_spec()?.bind(&columns) {
            return unsupported(e.to_string());
        }
        Ok(())
    }

    /// The default (and only) partition spec.
    pub fn partition_spec(&self) -> Result<PartitionSpec> {
        let spec = self
            .partition_specs
            .iter()
            .find(|s| s.get("spec-id").and_then(Value::as_i64) == Some(self.default_spec_id.into()))
            .ok_or_else(|| IcebergError::Unsupported {
                location: self.location.clone(),
                reason: format!("default partition spec {} is missing", self.default_spec_id),
            })?;
        PartitionSpec::from_json(spec)
    }

    /// The partition spec bound to the current schema.
    pub fn bound_partition_spec(&self) -> Result<BoundSpec> {
        self.partition_spec()?
            .bind(&self.current_schema()?.columns()?)
    }

    pub fn current_schema(&self) -> Result<&IcebergSchema> {
        self.schemas
            .iter()
            .find(|s| s.schema_id == self.current_schema_id)
            .ok_or_else(|| IcebergError::Unsupported {
                location: self.location.clone(),
                reason: format!(
                    "current schema {} is not in schemas",
                    self.current_schema_id
                ),
            })
    }

    pub fn snapshot(&self, id: i64) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        self.current_snapshot_id.and_then(|id| self.snapshot(id))
    }

    /// The current snapshot and its ancestors still in the table, newest first.
    pub fn ancestry(&self) -> Vec<&Snapshot> {
        let mut out = Vec::new();
        let mut next = self.current_snapshot();
        while let Some(s) = next {
            out.push(s);
            next = s.parent_snapshot_id.and_then(|p| self.snapshot(p));
        }
        out
    }

    /// Local path of the table directory.
    pub fn location_path(&self) -> Result<PathBuf> {
        super::fsutil::from_location(&self.location)
    }

    /// The next metadata, remembering `previous_location` in the metadata log (which keeps
    /// the newest `write.metadata.previous-versions-max` entries).
    pub fn successor(&self, previous_location: &str, now_ms: i64) -> TableMetadata {
        let mut next = self.clone();
        next.last_updated_ms = now_ms.max(self.last_updated_ms);
        next.metadata_log.push(MetadataLogEntry {
            timestamp_ms: self.last_updated_ms,
            metadata_file: previous_location.to_string(),
        });
        let max = CommitSettings::from_properties(&self.properties).previous_versions_max;
        let excess = next.metadata_log.len().saturating_sub(max);
        next.metadata_log.drain(..excess);
        next
    }

    /// Makes `snapshot` current on `main` and advances the sequence number with it.
    pub fn add_snapshot(&mut self, snapshot: Snapshot) {
        self.last_sequence_number = snapshot.sequence_number;
        self.last_updated_ms = self.last_updated_ms.max(snapshot.timestamp_ms);
        self.current_snapshot_id = Some(snapshot.snapshot_id);
        self.refs.insert(
            "main".into(),
            SnapshotRef {
                snapshot_id: snapshot.snapshot_id,
                kind: "branch".into(),
                extra: BTreeMap::new(),
            },
        );
        self.snapshot_log.push(SnapshotLogEntry {
            timestamp_ms: snapshot.timestamp_ms,
            snapshot_id: snapshot.snapshot_id,
        });
        self.snapshots.push(snapshot);
    }

    /// Drops the given snapshots from `snapshots` and `snapshot-log`. Callers never pass a
    /// snapshot a ref points to, so `refs` stay valid.
    pub fn remove_snapshots(&mut self, ids: &[i64]) {
        self.snapshots.retain(|s| !ids.contains(&s.snapshot_id));
        self.snapshot_log.retain(|l| !ids.contains(&l.snapshot_id));
    }
}

/// Version number of a `NNNNN-<uuid>.metadata.json` file name (0 if it has none).
pub fn metadata_version(location: &str) -> u64 {
    let name = location.rsplit('/').next().unwrap_or("");
    name.split('-')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// File name for metadata version `version`.
pub fn metadata_file_name(version: u64) -> String {
    format!("{version:05}-{}.metadata.json", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSpec, IcebergType};

    fn meta() -> TableMetadata {
        let schema =
            IcebergSchema::from_columns(0, &[ColumnSpec::new(1, "id", IcebergType::Long, true)]);
        TableMetadata::new("file:///wh/ns/t".into(), schema, 1000)
    }

    fn snap(id: i64, parent: Option<i64>, seq: i64) -> Snapshot {
        Snapshot {
            snapshot_id: id,
            parent_snapshot_id: parent,
            sequence_number: seq,
            timestamp_ms: 1000 + seq,
            manifest_list: format!("file:///wh/ns/t/metadata/snap-{id}.avro"),
            summary: [("operation".to_string(), "append".to_string())].into(),
            schema_id: Some(0),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn new_table_json_has_the_fields_readers_need() {
        let m = meta();
        let json: Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(json["format-version"], 2);
        assert_eq!(json["current-snapshot-id"], -1);
        assert_eq!(json["last-partition-id"], 999);
        assert_eq!(
            json["partition-specs"],
            serde_json::json!([{"spec-id": 0, "fields": []}])
        );
        assert_eq!(json["last-column-id"], 1);
        let back: TableMetadata = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn snapshots_move_main_and_logs_and_expire_cleanly() {
        let mut m = meta();
        m.add_snapshot(snap(1, None, 1));
        let mut m = m.successor("file:///wh/ns/t/metadata/00001-a.metadata.json", 2000);
        m.add_snapshot(snap(2, Some(1), 2));
        assert_eq!(m.current_snapshot_id, Some(2));
        assert_eq!(m.last_sequence_number, 2);
        assert_eq!(m.refs["main"].snapshot_id, 2);
        assert_eq!(
            m.ancestry()
                .iter()
                .map(|s| s.snapshot_id)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        assert_eq!(m.metadata_log.len(), 1);
        m.remove_snapshots(&[1]);
        assert_eq!(m.snapshots.len(), 1);
        assert_eq!(m.snapshot_log.len(), 1);
        assert_eq!(m.ancestry().len(), 1);
    }

    #[test]
    fn keeps_unknown_fields_and_parses_versions() {
        let mut json: Value = serde_json::from_slice(&meta().to_json()).unwrap();
        json["partition-statistics"] = serde_json::json!([]);
        json["properties"] = serde_json::json!({"owner": "someone"});
        let m: TableMetadata = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), json);
        assert_eq!(
            metadata_version("file:///x/metadata/00012-abc.metadata.json"),
            12
        );
        assert!(metadata_file_name(3).starts_with("00003-"));
    }
}
