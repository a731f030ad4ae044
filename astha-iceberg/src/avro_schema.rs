//! The Avro schemas of Iceberg v2 manifests and manifest lists, with their field ids.
//!
//! Owns the exact shape real readers check: every field carries the `field-id` the Iceberg
//! spec assigns (manifest list 500–519; manifest entry 0–4; data file 100–140), maps are arrays
//! of key/value records marked `"logicalType": "map"`, and lists carry an `element-id`.
//! pyiceberg errors and DuckDB fails on files missing any of these. The partition record
//! (`r102`) holds one optional field per partition field (field ids from 1000, the
//! transform's result type); it is empty for an unpartitioned table. Record names follow the Java implementation.
//!
//! Parsed schemas are built once per process (per partition record for manifest entries)
//! and shared: parsing one cost more instructions than the rest of an append's Avro work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use apache_avro::Schema;
use serde_json::{json, Value};

/// Parsed manifest entry schemas kept at most: one per distinct partition record in use;
/// past this many the cache starts over (it only saves parsing).
const ENTRY_SCHEMAS_KEPT: usize = 64;

fn optional(name: &str, ty: Value, field_id: i32) -> Value {
    json!({"name": name, "type": ["null", ty], "default": null, "field-id": field_id})
}

fn required(name: &str, ty: Value, field_id: i32) -> Value {
    json!({"name": name, "type": ty, "field-id": field_id})
}

/// An Iceberg `map<key, value>` as Avro: an array of `{key, value}` records.
fn map(key_id: i32, key: &str, value_id: i32, value: &str) -> Value {
    json!({
        "type": "array",
        "logicalType": "map",
        "items": {
            "type": "record",
            "name": format!("k{key_id}_v{value_id}"),
            "fields": [
                {"name": "key", "type": key, "field-id": key_id},
                {"name": "value", "type": value, "field-id": value_id}
            ]
        }
    })
}

fn list(element_id: i32, element: &str) -> Value {
    json!({"type": "array", "items": element, "element-id": element_id})
}

fn data_file_record(partition_fields: &[Value]) -> Value {
    json!({
        "type": "record",
        "name": "r2",
        "fields": [
            required("content", json!("int"), 134),
            required("file_path", json!("string"), 100),
            required("file_format", json!("string"), 101),
            required("partition", json!({"type": "record", "name": "r102", "fields": partition_fields}), 102),
            required("record_count", json!("long"), 103),
            required("file_size_in_bytes", json!("long"), 104),
            optional("column_sizes", map(117, "int", 118, "long"), 108),
            optional("value_counts", map(119, "int", 120, "long"), 109),
            optional("null_value_counts", map(121, "int", 122, "long"), 110),
            optional("nan_value_counts", map(138, "int", 139, "long"), 137),
            optional("lower_bounds", map(126, "int", 127, "bytes"), 125),
            optional("upper_bounds", map(129, "int", 130, "bytes"), 128),
            optional("key_metadata", json!("bytes"), 131),
            optional("split_offsets", list(133, "long"), 132),
            optional("equality_ids", list(136, "int"), 135),
            optional("sort_order_id", json!("int"), 140),
        ]
    })
}

/// JSON of the manifest entry schema (v2), with the partition record's fields (none for an
/// unpartitioned table; see `partition.rs`).
pub fn manifest_entry_json(partition_fields: &[Value]) -> Value {
    json!({
        "type": "record",
        "name": "manifest_entry",
        "fields": [
            required("status", json!("int"), 0),
            optional("snapshot_id", json!("long"), 1),
            optional("sequence_number", json!("long"), 3),
            optional("file_sequence_number", json!("long"), 4),
            required("data_file", data_file_record(partition_fields), 2),
        ]
    })
}

/// JSON of the manifest list schema (v2).
pub fn manifest_list_json() -> Value {
    let field_summary = json!({
        "type": "record",
        "name": "r508",
        "fields": [
            required("contains_null", json!("boolean"), 509),
            optional("contains_nan", json!("boolean"), 518),
            optional("lower_bound", json!("bytes"), 510),
            optional("upper_bound", json!("bytes"), 511),
        ]
    });
    json!({
        "type": "record",
        "name": "manifest_file",
        "fields": [
            required("manifest_path", json!("string"), 500),
            required("manifest_length", json!("long"), 501),
            required("partition_spec_id", json!("int"), 502),
            required("content", json!("int"), 517),
            required("sequence_number", json!("long"), 515),
            required("min_sequence_number", json!("long"), 516),
            required("added_snapshot_id", json!("long"), 503),
            required("added_files_count", json!("int"), 504),
            required("existing_files_count", json!("int"), 505),
            required("deleted_files_count", json!("int"), 506),
            required("added_rows_count", json!("long"), 512),
            required("existing_rows_count", json!("long"), 513),
            required("deleted_rows_count", json!("long"), 514),
            optional("partitions", json!({"type": "array", "items": field_summary, "element-id": 508}), 507),
            optional("key_metadata", json!("bytes"), 519),
        ]
    })
}

/// Parsed manifest entry schema, shared (see the module doc). The partition fields are
/// checked Avro names (`PartitionSpec::bind`), so parsing cannot fail.
pub fn manifest_entry_schema(partition_fields: &[Value]) -> Arc<Schema> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Schema>>>> = OnceLock::new();
    let key = Value::Array(partition_fields.to_vec()).to_string();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned cache is still a map of valid schemas.
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(schema) = cache.get(&key) {
        return schema.clone();
    }
    let schema = Arc::new(
        Schema::parse(&manifest_entry_json(partition_fields))
            .expect("the manifest entry schema is valid Avro"),
    );
    if cache.len() >= ENTRY_SCHEMAS_KEPT {
        cache.clear();
    }
    cache.insert(key, schema.clone());
    schema
}

/// Parsed manifest list schema, shared.
pub fn manifest_list_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse(&manifest_list_json()).expect("the manifest list schema is valid Avro")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header a writer embeds must keep the Iceberg annotations (avro-rs 0.22 dropped
    /// `logicalType` from arrays, which is why the crate is pinned).
    #[test]
    fn serialised_schema_keeps_field_ids_and_map_annotations() {
        let text = serde_json::to_string(&*manifest_entry_schema(&[])).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let data_file = &v["fields"][4];
        assert_eq!(data_file["field-id"], 2);
        let value_counts = data_file["type"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "value_counts")
            .unwrap();
        assert_eq!(value_counts["field-id"], 109);
        let arr = &value_counts["type"][1];
        assert_eq!(arr["logicalType"], "map");
        assert_eq!(arr["items"]["fields"][0]["field-id"], 119);

        let list: Value =
            serde_json::from_str(&serde_json::to_string(&manifest_list_schema()).unwrap()).unwrap();
        assert_eq!(list["fields"][13]["type"][1]["element-id"], 508);
        assert_eq!(list["fields"][0]["field-id"], 500);
    }
}
