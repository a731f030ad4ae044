//! Event formats: how one [`Change`] is written for the world outside the process.
//!
//! - [`EventFormat::Native`]: Astha's own JSON (`{lsn, timestamp_ms, table, op, before,
//!   after}`, [`Change::to_json`]); values in the tagged form of [`crate::Value::to_json`].
//! - [`EventFormat::Debezium`]: the Debezium change-event envelope ([`debezium`]), which
//!   Flink's and SeaTunnel's `debezium-json`, RisingWave, Paimon and Kafka Connect read.
//! - [`EventFormat::CloudEvents`]: a CloudEvents 1.0 structured event ([`cloudevents`])
//!   whose `data` is the native event.
//!
//! With [`Encoder::with_transaction_events`], BEGIN and END markers ([`markers`])
//! stand around each marked transaction's changes, in the encoder's format.
//!
//! It promises that every value SQLite can store comes out exact in every format (each
//! submodule says how, and its tests decode it back), and that a value's JSON type
//! depends only on its storage class, never on the value (a large integer stays a
//! number, it does not turn into a string), except where JSON cannot hold the value:
//! an infinite REAL, and TEXT that is not UTF-8, are tagged (docs/FORMATS.md). It never
//! writes: callers own the bytes.

pub mod cloudevents;
pub mod debezium;
pub mod markers;

use std::fmt;
use std::str::FromStr;

use crate::change::Change;
use crate::value::Value;
use markers::{Marker, Markers};

/// The formats a sink or `astha watch` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventFormat {
    /// Astha's own JSON.
    #[default]
    Native,
    /// The Debezium envelope.
    Debezium,
    /// A CloudEvents 1.0 structured event.
    CloudEvents,
}

impl EventFormat {
    /// Every format, by its name in configuration.
    pub const ALL: [EventFormat; 3] = [
        EventFormat::Native,
        EventFormat::Debezium,
        EventFormat::CloudEvents,
    ];

    /// The name in configuration (`format = "debezium"`).
    pub fn name(self) -> &'static str {
        match self {
            EventFormat::Native => "native",
            EventFormat::Debezium => "debezium",
            EventFormat::CloudEvents => "cloudevents",
        }
    }

    /// The media type of one encoded event.
    pub fn content_type(self) -> &'static str {
        match self {
            EventFormat::Native | EventFormat::Debezium => "application/json",
            EventFormat::CloudEvents => cloudevents::STRUCTURED_CONTENT_TYPE,
        }
    }

    /// The names of every format, comma separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(|f| f.name()).join(", ")
    }
}

impl fmt::Display for EventFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown format {text:?}; the formats are: {}",
                    Self::names()
                )
            })
    }
}

/// Where changes come from, as the formats name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The source's logical name (a pipeline's source name; Debezium's `name`, the topic
    /// prefix).
    pub name: String,
    /// The database's name (its file stem; Debezium's `db`).
    pub db: String,
    /// The identity of the LSN sequence: the database's stable identity and the log's
    /// epoch (`<identity>:<epoch>`, see `astha_components::sinks::identity::stream_id`),
    /// which makes event ids unique across databases and across restarted sequences.
    pub identity: String,
}

/// Encodes changes in one format for one source.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: EventFormat,
    source: SourceInfo,
    /// Debezium only: wrap envelopes and keys in `{"schema", "payload"}`.
    schemas: bool,
    /// BEGIN and END markers, when on.
    markers: Option<Markers>,
}

/// The markers around one change, encoded: `begin` goes before the change's event,
/// `end` after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedMarkers {
    /// BEGIN, when the change opens its transaction for this consumer.
    pub begin: Option<serde_json::Value>,
    /// END, when the change closes it.
    pub end: Option<serde_json::Value>,
}

impl Encoder {
    /// An encoder writing `format` for changes of `source`.
    pub fn new(format: EventFormat, source: SourceInfo) -> Encoder {
        Encoder {
            format,
            source,
            schemas: false,
            markers: None,
        }
    }

    /// With `Some`, [`Encoder::markers`] gives the BEGIN and END markers of a consumer
    /// that receives what `markers` says ([`Markers::new`]), and
    /// [`Encoder::json_lines`] writes them around the changes; off with `None` (the
    /// default).
    pub fn with_transaction_events(mut self, markers: Option<Markers>) -> Encoder {
        self.markers = markers;
        self
    }

    /// Whether transaction markers are on.
    pub fn transaction_events(&self) -> bool {
        self.markers.is_some()
    }

    /// The markers around `change`, in this encoder's format (none when markers are off,
    /// or the change's transaction is not known).
    pub fn markers(&self, change: &Change) -> EncodedMarkers {
        let Some(markers) = &self.markers else {
            return EncodedMarkers::default();
        };
        let around = markers.around(change);
        EncodedMarkers {
            begin: around.begin.map(|m| self.encode_marker(&m)),
            end: around.end.map(|m| self.encode_marker(&m)),
        }
    }

    /// One marker in this encoder's format: Debezium's transaction metadata value for
    /// native and Debezium (wrapped with its Connect schema when
    /// [`Encoder::with_debezium_schemas`] is on), a CloudEvent for CloudEvents.
    pub fn encode_marker(&self, marker: &Marker) -> serde_json::Value {
        let value = marker.to_json(&self.source.db);
        match self.format {
            EventFormat::Native => value,
            EventFormat::Debezium if self.schemas => {
                serde_json::json!({"schema": markers::connect_schema(), "payload": value})
            }
            EventFormat::Debezium => value,
            EventFormat::CloudEvents => cloudevents::marker(marker, value, &self.source),
        }
    }

    /// With `on`, Debezium envelopes and keys are written as Kafka Connect's JSON
    /// converter writes them with `schemas.enable=true`: `{"schema": ..., "payload": ...}`
    /// ([`debezium::with_schema`]). Other formats ignore it.
    pub fn with_debezium_schemas(mut self, on: bool) -> Encoder {
        self.schemas = on;
        self
    }

    /// The record key of `change` for transports that carry one (NATS headers, Kafka):
    /// its primary-key columns in the Debezium value encoding ([`debezium::key`]),
    /// wrapped with its schema when [`Encoder::with_debezium_schemas`] is on.
    pub fn key(&self, change: &Change) -> serde_json::Value {
        let key = debezium::key(change);
        if self.schemas && self.format == EventFormat::Debezium {
            debezium::key_with_schema(change, key, &self.source)
        } else {
            key
        }
    }

    /// The format written.
    pub fn format(&self) -> EventFormat {
        self.format
    }

    /// The source named in events.
    pub fn source(&self) -> &SourceInfo {
        &self.source
    }

    /// One change as a JSON document.
    pub fn encode(&self, change: &Change) -> serde_json::Value {
        match self.format {
            EventFormat::Native => change.to_json(),
            EventFormat::Debezium if self.schemas => debezium::with_schema(
                change,
                debezium::envelope(change, &self.source),
                &self.source,
            ),
            EventFormat::Debezium => debezium::envelope(change, &self.source),
            EventFormat::CloudEvents => cloudevents::structured(change, &self.source),
        }
    }

    /// Changes as JSON lines (one document per line, each ending in `\n`), with their
    /// transaction markers around them when those are on.
    pub fn json_lines<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |json: &serde_json::Value| {
            serde_json::to_writer(&mut out, json).expect("a JSON value serializes");
            out.push(b'\n');
        };
        for change in changes {
            let around = self.markers(change);
            if let Some(begin) = &around.begin {
                line(begin);
            }
            line(&self.encode(change));
            if let Some(end) = &around.end {
                line(end);
            }
        }
        out
    }
}

/// The id of one change, unique across databases and the same on every delivery:
/// `<identity>:<lsn>`, and for a snapshot row, which shares its snapshot's LSN with
/// every other row of it, `<identity>:<lsn>:r<seq>` ([`crate::SnapshotRead::seq`]).
/// CloudEvent ids and the NATS sink's `Nats-Msg-Id` are this.
pub fn change_id(identity: &str, change: &Change) -> String {
    match change.snapshot {
        Some(read) => format!("{identity}:{}:r{}", change.lsn, read.seq),
        None => format!("{identity}:{}", change.lsn),
    }
}

/// Decodes one value of the native form ([`crate::Value::to_json`]) exactly.
pub fn decode_native_value(json: &serde_json::Value) -> Option<Value> {
    use serde_json::Value as Json;
    Some(match json {
        Json::Null => Value::Null,
        Json::Number(n) if n.is_i64() => Value::Integer(n.as_i64()?),
        Json::Number(n) => Value::Real(n.as_f64()?),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(tagged) if tagged.len() == 1 => {
            let (tag, inner) = tagged.iter().next()?;
            match (tag.as_str(), inner.as_str()?) {
                ("$blob", hex) => Value::Blob(crate::value::parse_hex(hex)?),
                ("$text", hex) => Value::text_from_bytes(crate::value::parse_hex(hex)?),
                ("$real", "inf") => Value::Real(f64::INFINITY),
                ("$real", "-inf") => Value::Real(f64::NEG_INFINITY),
                _ => return None,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for f in EventFormat::ALL {
            assert_eq!(f.name().parse::<EventFormat>().unwrap(), f);
        }
        let err = "avro".parse::<EventFormat>().unwrap_err();
        assert!(err.contains("native, debezium, cloudevents"), "{err}");
    }

    #[test]
    fn each_format_writes_markers_its_own_way() {
        let source = SourceInfo {
            name: "shop".into(),
            db: "shop".into(),
            identity: "db1:e1".into(),
        };
        let marker = Marker {
            status: markers::Status::End,
            id: 7,
            ts_ms: 0,
            tables: vec![("t".into(), 2)],
        };
        let encoder = |format| Encoder::new(format, source.clone());
        let plain = encoder(EventFormat::Native).encode_marker(&marker);
        assert_eq!(plain["status"], "END");
        assert_eq!(encoder(EventFormat::Debezium).encode_marker(&marker), plain);
        let wrapped = encoder(EventFormat::Debezium)
            .with_debezium_schemas(true)
            .encode_marker(&marker);
        assert_eq!(wrapped["payload"], plain);
        assert_eq!(
            wrapped["schema"]["name"],
            "io.debezium.connector.common.TransactionMetadataValue"
        );
        let ce = encoder(EventFormat::CloudEvents).encode_marker(&marker);
        assert_eq!(ce["type"], "io.astha.transaction.end");
        assert_eq!(ce["id"], "db1:e1:tx7:end");
        assert_eq!(ce["asthatxid"], "7");
        assert_eq!(ce["data"], plain);
        // Off by default: no markers, and json_lines writes the changes alone.
        assert!(!encoder(EventFormat::Native).transaction_events());
    }
}
