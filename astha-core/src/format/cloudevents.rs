//! CloudEvents 1.0 for changes: a structured JSON event, and the attributes of binary
//! mode (`ce-*` headers) for transports that carry headers.
//!
//! ```json
//! {"specversion": "1.0", "id": "<identity>:<epoch>:<lsn>", "source": "/astha/<source name>",
//!  "type": "io.astha.change.insert", "time": "2026-12-06T18:00:00.123Z",
//!  "subject": "<table>", "datacontenttype": "application/json",
//!  "asthalsn": "42", "data": <the native event>}
//! ```
//!
//! `id` is the database's identity, the log's epoch and the LSN ([`SourceInfo::identity`]
//! holds the first two; a snapshot row adds its place in the snapshot: [`super::change_id`]):
//! unique per change across databases and restarted LSN sequences, and the same on every
//! delivery of that change, so consumers de-duplicate by
//! (`source`, `id`) as the specification intends. `time` is the capture time in RFC 3339
//! with milliseconds. `asthalsn` (an extension attribute; names are lower-case letters
//! and digits only) is a string because CloudEvents integers are 32-bit. `data` is the
//! native event ([`crate::Change::to_json`]), exact for every value. A change that may
//! be incomplete ([`crate::gaps`]) also has `asthaincomplete`: the reason
//! (`columns_added`, `recreated`), the columns after a colon when there are some
//! (`columns_added:c1,c2`); `data.incomplete` has the same as JSON.
//!
//! A change of a marked transaction ([`crate::transaction`]) also has `asthatxid` (the
//! transaction's id), `asthatxorder` (its `total_order`) and `asthatxtotal` (the
//! transaction's size), strings like `asthalsn`; `data.transaction` has the whole
//! block. They are absent where the transaction is not known. With transaction events
//! on, the BEGIN and END markers ([`super::markers`]) are CloudEvents of type
//! `io.astha.transaction.begin` / `.end` ([`marker`]).

use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value as Json};

use super::markers::Marker;
use super::SourceInfo;
use crate::change::{Change, Operation};

/// The media type of a structured event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The media type of `data`.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// How CloudEvents travel over a transport that has headers (the CloudEvents HTTP and
/// NATS bindings' two modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The event, attributes and data, is the message body.
    #[default]
    Structured,
    /// Attributes in `ce-*` headers ([`binary_headers`]), the data alone in the body.
    Binary,
}

/// The event type of an operation.
pub fn event_type(op: Operation) -> &'static str {
    match op {
        Operation::Insert => "io.astha.change.insert",
        Operation::Update => "io.astha.change.update",
        Operation::Delete => "io.astha.change.delete",
        Operation::Read => "io.astha.change.read",
    }
}

/// The context attributes of `change` (everything but `data`), in specification order.
pub fn attributes(change: &Change, source: &SourceInfo) -> Vec<(&'static str, String)> {
    let time = DateTime::from_timestamp_millis(change.timestamp_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut attributes = vec![
        ("specversion", "1.0".into()),
        ("id", super::change_id(&source.identity, change)),
        ("source", format!("/astha/{}", source.name)),
        ("type", event_type(change.op).into()),
        ("time", time),
        ("subject", change.table.to_string()),
        ("datacontenttype", DATA_CONTENT_TYPE.into()),
        ("asthalsn", change.lsn.to_string()),
    ];
    if let Some(mark) = &change.incomplete {
        let value = match mark.columns.is_empty() {
            true => mark.reason.name().to_string(),
            false => format!("{}:{}", mark.reason.name(), mark.columns.join(",")),
        };
        attributes.push(("asthaincomplete", value));
    }
    if let Some(position) = &change.transaction {
        attributes.push(("asthatxid", position.id.to_string()));
        attributes.push(("asthatxorder", position.total_order.to_string()));
        attributes.push(("asthatxtotal", position.total.to_string()));
    }
    attributes
}

/// A transaction marker as a structured event: type `io.astha.transaction.begin` or
/// `.end`, id `<identity>:tx<id>:begin` (or `:end`: unique, and the same on every
/// delivery), `asthatxid` the transaction's id, and `data` the marker's Debezium value
/// (`value`, [`super::markers::Marker::to_json`]).
pub fn marker(marker: &Marker, value: Json, source: &SourceInfo) -> Json {
    let status = marker.status.name().to_ascii_lowercase();
    let time = DateTime::from_timestamp_millis(marker.ts_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!({
        "specversion": "1.0",
        "id": format!("{}:tx{}:{status}", source.identity, marker.id),
        "source": format!("/astha/{}", source.name),
        "type": format!("io.astha.transaction.{status}"),
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "asthatxid": marker.id.to_string(),
        "data": value,
    })
}

/// The structured-mode event of `change`.
pub fn structured(change: &Change, source: &SourceInfo) -> Json {
    let mut event = serde_json::Map::new();
    for (name, value) in attributes(change, source) {
        event.insert(name.into(), json!(value));
    }
    event.insert("data".into(), change.to_json());
    Json::Object(event)
}

/// Binary mode: the `ce-*` headers; the body is the native event with content type
/// [`DATA_CONTENT_TYPE`] (sent as `content-type`, not as `ce-datacontenttype`).
pub fn binary_headers(change: &Change, source: &SourceInfo) -> Vec<(String, String)> {
    attributes(change, source)
        .into_iter()
        .filter(|(name, _)| *name != "datacontenttype")
        .map(|(name, value)| (format!("ce-{name}"), value))
        .collect()
}
