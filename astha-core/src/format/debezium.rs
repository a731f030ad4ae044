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
//! Astha does not yet emit `transaction` blocks (always null) or `r` (snapshot) events.

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
        "snapshot": "false",
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
        "transaction": Json::Null,
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
