//! The Debezium change-event envelope, as Debezium's JSON converter writes it without a
//! schema (`"schemas.enable": false`):
//!
//! ```json
//! {"before": {...} | null, "after": {...} | null, "op": "c" | "u" | "d" | "r",
//!  "ts_ms": 1733500000000,
//!  "source": {"version": "0.1.0", "connector": "sqlite", "name": "shop", "ts_ms": ...,
//!             "snapshot": "false", "db": "shop", "table": "orders", "lsn": 42,
//!             "types": {"after": {"photo": "blob"}}},
//!  "transaction": null}
//! ```
//!
//! Values: INTEGER → JSON integer (exact to 2^63: Java and Python consumers read it
//! exactly; a JavaScript consumer needs a big-integer JSON parser beyond 2^53), REAL →
//! JSON number with a fraction or exponent (shortest form that reads back bit for bit,
//! `-0.0` kept), TEXT → string, BLOB → base64 string (what Debezium's consumers expect
//! for bytes), ±infinity → `"Infinity"` / `"-Infinity"` (Jackson's convention, which
//! Flink parses as DOUBLE), NULL → null. SQLite has no NaN (it stores NULL).
//!
//! Two storage classes share the JSON string with TEXT: BLOB and infinite REAL. So
//! the envelope stays exact without a schema, `source.types` names, per image, the
//! columns whose value is one of them (absent when there is none). Consumers that do
//! not know it ignore it; [`decode_row`] uses it to give back exactly what was stored.
//!
//! TEXT that is not valid UTF-8 (SQLite does not check) cannot be a JSON string. Its
//! value in the image is what a consumer can read, the text with each invalid byte
//! sequence replaced by U+FFFD, and `source.text_bytes` carries the exact bytes, per
//! image, in base64 (`{"after": {"name": "//5B"}}`; absent when there is none), so
//! [`decode_row`] gives back the bytes as stored. A key ([`key`]) holds the readable
//! form only.
//!
//! A change that may be incomplete ([`crate::gaps`]) has `source.incomplete`
//! (`{"reason": "columns_added", "columns": ["c"]}`); it is absent otherwise.
//!
//! `ts_ms` is the change's capture time, like `source.ts_ms`: a change delivered again
//! after a restart is byte-identical to its first delivery, so consumers can compare.
//! A snapshot row ([`Operation::Read`]) is an `r` event with `source.snapshot` `"true"`,
//! `"last"` on the snapshot's last row, and `source.lsn` the snapshot's LSN.
//! `transaction` is Debezium's block (`id`, `total_order`, `data_collection_order`, plus
//! `total`, the transaction's size) for changes of a marked transaction
//! ([`crate::transaction`]), and null where the boundary is not known.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value as Json};

use super::SourceInfo;
use crate::change::{Change, Operation, Row};
use crate::value::Value;

/// The connector name in `source.connector`.
pub const CONNECTOR: &str = "sqlite";

/// The `op` code of an operation.
pub fn op_code(op: Operation) -> &'static str {
    match op {
        Operation::Insert => "c",
        Operation::Update => "u",
        Operation::Delete => "d",
        Operation::Read => "r",
    }
}

/// One value in the envelope's encoding, and its storage class when JSON alone cannot
/// tell it from TEXT.
pub fn encode_value(value: &Value) -> (Json, Option<&'static str>) {
    match value {
        Value::Null => (Json::Null, None),
        Value::Integer(i) => (json!(i), None),
        Value::Real(r) if r.is_finite() => (json!(r), None),
        Value::Real(r) if r.is_nan() => (json!("NaN"), Some("real")),
        Value::Real(r) if *r > 0.0 => (json!("Infinity"), Some("real")),
        Value::Real(_) => (json!("-Infinity"), Some("real")),
        Value::Text(s) => (json!(s), None),
        // The readable form; the exact bytes go to `source.text_bytes` (module docs).
        Value::TextBytes(b) => (json!(String::from_utf8_lossy(b)), None),
        Value::Blob(b) => (json!(STANDARD.encode(b)), Some("blob")),
    }
}

/// An image's values, and its `source.types` and `source.text_bytes` entries.
struct EncodedRow {
    values: Json,
    types: Map<String, Json>,
    text_bytes: Map<String, Json>,
}

fn encode_row(row: &Row) -> EncodedRow {
    let mut values = Map::new();
    let mut types = Map::new();
    let mut text_bytes = Map::new();
    for (column, value) in row.columns().iter().zip(row.values()) {
        let (encoded, class) = encode_value(value);
        values.insert(column.clone(), encoded);
        if let Some(class) = class {
            types.insert(column.clone(), json!(class));
        }
        if let Value::TextBytes(b) = value {
            text_bytes.insert(column.clone(), json!(STANDARD.encode(b)));
        }
    }
    EncodedRow {
        values: Json::Object(values),
        types,
        text_bytes,
    }
}

/// `{"before": {...}, "after": {...}}` of the non-empty maps `pick` takes from each
/// image, or `None` when both are empty.
fn per_image(
    images: [(&str, &Option<EncodedRow>); 2],
    pick: impl Fn(&EncodedRow) -> &Map<String, Json>,
) -> Option<Json> {
    let mut out = Map::new();
    for (image, row) in images {
        if let Some(map) = row.as_ref().map(&pick).filter(|m| !m.is_empty()) {
            out.insert(image.into(), Json::Object(map.clone()));
        }
    }
    (!out.is_empty()).then_some(Json::Object(out))
}

/// The envelope of `change`; see the module docs.
pub fn envelope(change: &Change, source: &SourceInfo) -> Json {
    let before = change.before.as_ref().map(encode_row);
    let after = change.after.as_ref().map(encode_row);
    let mut meta = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": CONNECTOR,
        "name": source.name,
        "ts_ms": change.timestamp_ms,
        "snapshot": match change.snapshot {
            None => "false",
            Some(read) if read.last => "last",
            Some(_) => "true",
        },
        "db": source.db,
        "table": &*change.table,
        "lsn": change.lsn,
    });
    let images = [("before", &before), ("after", &after)];
    if let Some(types) = per_image(images, |r| &r.types) {
        meta["types"] = types;
    }
    if let Some(bytes) = per_image(images, |r| &r.text_bytes) {
        meta["text_bytes"] = bytes;
    }
    if let Some(mark) = &change.incomplete {
        meta["incomplete"] = mark.to_json();
    }
    let values = |row: Option<EncodedRow>| row.map_or(Json::Null, |r| r.values);
    json!({
        "before": values(before),
        "after": values(after),
        "op": op_code(change.op),
        "ts_ms": change.timestamp_ms,
        "source": meta,
        "transaction": change.transaction.as_ref().map_or(Json::Null, |t| t.to_json()),
    })
}

/// The record key: the primary-key columns of the newest image (every column for a
/// table without a declared key), for transports that have keys (Kafka, NATS headers).
pub fn key(change: &Change) -> Json {
    let Some(row) = change.row() else {
        return Json::Null;
    };
    let key = &row.schema().primary_key;
    let mut out = Map::new();
    for (column, value) in row.columns().iter().zip(row.values()) {
        if key.is_empty() || key.contains(column) {
            out.insert(column.clone(), encode_value(value).0);
        }
    }
    Json::Object(out)
}

/// The Kafka Connect type of a value. SQLite columns have no fixed type, and Astha keeps
/// no declared types, so a field's type is that of the value in this event (a NULL
/// counts as `string`): a consumer that needs one type per column must declare the
/// column's type itself, as Flink's `debezium-json` does.
fn connect_type(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "int64",
        Value::Real(_) => "double",
        Value::Blob(_) => "bytes",
        Value::Null | Value::Text(_) | Value::TextBytes(_) => "string",
    }
}

fn connect_field(kind: &str, optional: bool, field: &str) -> Json {
    json!({"type": kind, "optional": optional, "field": field})
}

/// The Connect schema of a row struct named `name`: one optional field per column.
fn row_schema(row: Option<&Row>, columns: &[String], name: &str, field: &str) -> Json {
    let fields: Vec<Json> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let kind = row.map_or("string", |r| connect_type(&r.values()[i]));
            connect_field(kind, true, column)
        })
        .collect();
    json!({"type": "struct", "fields": fields, "optional": true, "name": name, "field": field})
}

/// `envelope` (of `change`) wrapped as Kafka Connect's JSON converter writes it with
/// `schemas.enable=true`: `{"schema": <Connect struct schema>, "payload": envelope}`,
/// as Debezium names it (`<name>.<db>.<table>.Envelope`, `...Value` for the images).
/// Field types: see [`connect_type`].
pub fn with_schema(change: &Change, envelope: Json, source: &SourceInfo) -> Json {
    let prefix = format!("{}.{}.{}", source.name, source.db, change.table);
    let columns: &[String] = change.row().map_or(&[], |r| r.columns());
    let value = format!("{prefix}.Value");
    let mut source_fields = vec![
        connect_field("string", false, "version"),
        connect_field("string", false, "connector"),
        connect_field("string", false, "name"),
        connect_field("int64", false, "ts_ms"),
        connect_field("string", true, "snapshot"),
        connect_field("string", false, "db"),
        connect_field("string", false, "table"),
        connect_field("int64", false, "lsn"),
    ];
    if envelope["source"].get("types").is_some() {
        // A map of image name to a map of column to class.
        source_fields.push(
            json!({"type": "map", "keys": {"type": "string", "optional": false},
            "values": {"type": "map", "keys": {"type": "string", "optional": false},
                       "values": {"type": "string", "optional": false}, "optional": false},
            "optional": true, "field": "types"}),
        );
    }
    let schema = json!({
        "type": "struct",
        "fields": [
            row_schema(change.before.as_ref(), columns, &value, "before"),
            row_schema(change.after.as_ref(), columns, &value, "after"),
            {"type": "struct", "fields": source_fields, "optional": false,
             "name": "io.astha.connector.sqlite.Source", "field": "source"},
            connect_field("string", false, "op"),
            connect_field("int64", true, "ts_ms"),
            {"type": "struct", "fields": [
                connect_field("string", false, "id"),
                connect_field("int64", false, "total_order"),
                connect_field("int64", false, "data_collection_order"),
             ], "optional": true, "name": "event.block", "version": 1, "field": "transaction"},
        ],
        "optional": false,
        "name": format!("{prefix}.Envelope"),
        "version": 1,
    });
    json!({"schema": schema, "payload": envelope})
}

/// `key` (of `change`, from [`key`]) with its Connect schema (`<name>.<db>.<table>.Key`).
pub fn key_with_schema(change: &Change, key: Json, source: &SourceInfo) -> Json {
    let fields: Vec<Json> = key
        .as_object()
        .map(|k| {
            let row = change.row();
            k.keys()
                .map(|column| {
                    let kind = row
                        .and_then(|r| r.get(column))
                        .map_or("string", connect_type);
                    connect_field(kind, false, column)
                })
                .collect()
        })
        .unwrap_or_default();
    let name = format!("{}.{}.{}.Key", source.name, source.db, change.table);
    json!({"schema": {"type": "struct", "fields": fields, "optional": false, "name": name},
           "payload": key})
}

/// Decodes one image (`"before"` or `"after"`) of an envelope back into `(column,
/// value)` pairs, exactly as stored; `None` when the envelope is malformed.
pub fn decode_row(envelope: &Json, image: &str) -> Option<Vec<(String, Value)>> {
    let row = envelope.get(image)?.as_object()?;
    let types = envelope
        .pointer(&format!("/source/types/{image}"))
        .and_then(Json::as_object);
    let text_bytes = envelope
        .pointer(&format!("/source/text_bytes/{image}"))
        .and_then(Json::as_object);
    row.iter()
        .map(|(column, json)| {
            if let Some(bytes) = text_bytes.and_then(|t| t.get(column)) {
                let bytes = STANDARD.decode(bytes.as_str()?).ok()?;
                return Some((column.clone(), Value::text_from_bytes(bytes)));
            }
            let class = types.and_then(|t| t.get(column)).and_then(Json::as_str);
            Some((column.clone(), decode_value(json, class)?))
        })
        .collect()
}

/// Decodes one value given its `source.types` entry.
pub fn decode_value(json: &Json, class: Option<&str>) -> Option<Value> {
    Some(match (json, class) {
        (Json::Null, _) => Value::Null,
        (Json::String(s), Some("blob")) => Value::Blob(STANDARD.decode(s).ok()?),
        (Json::String(s), Some("real")) => Value::Real(match s.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            _ => return None,
        }),
        (Json::String(s), None) => Value::Text(s.clone()),
        (Json::Number(n), None) if n.is_i64() => Value::Integer(n.as_i64()?),
        (Json::Number(n), None) => Value::Real(n.as_f64()?),
        _ => return None,
    })
}
