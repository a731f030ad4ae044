//! Sinks: components that deliver every change they receive to a system outside the
//! database, at least once, and confirm a change only once that system acknowledged it
//! (the live sinks excepted: they show whoever is connected what happens meanwhile).
//!
//! - [`stdout`]: prints each change as a JSON line;
//! - [`file`]: appends JSON lines to a file, fsynced per batch, rotated by size and age;
//! - [`live`] (`sse`, `websocket`): serves changes live over HTTP, to whoever is connected;
//! - `nats` (feature `nats`): publishes to NATS JetStream, one message per change, de-duplicated by
//!   JetStream through a `Nats-Msg-Id` built from the [`identity`] and the LSN;
//! - `webhook` (feature `webhook`): POSTs changes as a JSON array to a URL, signed with HMAC-SHA256;
//! - `postgres` (feature `postgres`): mirrors tables into PostgreSQL by primary key, exactly
//!   once (a marker per table, in the same transaction as the rows);
//! - `rabbitmq` (feature `rabbitmq`): publishes to a RabbitMQ exchange, persistent, with
//!   publisher confirms;
//! - `iceberg` (feature `lakehouse`): mirrors tables into Iceberg v2 tables in a warehouse
//!   directory (position deletes for updates and deletes), exactly once (markers and a row
//!   index in the catalog's SQLite file, in the same transaction as the catalog swap);
//! - `kafka` (feature `kafka`): produces to a topic per table, keyed by primary key, with an
//!   idempotent producer.
//!
//! Every sink type is registered in the [`registry`] (type name → config type, validate,
//! build), which `astha run` builds its `[[sinks]]` from; a new sink is one module here
//! plus one line in the registry's built-in list (behind its cargo feature, if it has one). All are ordinary supervised components: retries with backoff, the circuit breaker and
//! dead letters come from the supervisor. A sink classifies its errors (a refused
//! connection or a timeout is transient, a payload the receiver rejects for good is
//! permanent) and never confirms a change it could not hand over. The payload is
//! [`astha_core::Change::to_json`], the line `astha watch` prints.

pub mod file;
#[cfg(feature = "lakehouse")]
pub mod iceberg;
pub mod identity;
#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
mod in_order;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod live;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod registry;
pub mod stdout;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use file::{FileSink, FileSinkConfig, Fsync};
#[cfg(feature = "lakehouse")]
pub use iceberg::{IcebergSink, IcebergSinkConfig};
pub use live::{LiveSinkConfig, SseSinkConfig, WebSocketSinkConfig};
#[cfg(feature = "nats")]
pub use nats::{NatsSink, NatsSinkConfig, StreamSetup};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresSink, PostgresSinkConfig};
pub use registry::{ParsedSink, RegistryError, SinkConfig, SinkContext, SinkRegistry};
pub use stdout::{StdoutSink, StdoutSinkConfig};
#[cfg(feature = "webhook")]
pub use webhook::{CloudEventsMode, WebhookSink, WebhookSinkConfig};

/// Makes `text` usable as one token of a NATS subject: `.`, `*`, `>` and whitespace
/// would split or widen the subject, so they become `_`; an empty token becomes `_`.
pub fn subject_token(text: &str) -> String {
    let token: String = text
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect();
    if token.is_empty() {
        "_".into()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::subject_token;

    #[test]
    fn subject_tokens_cannot_split_or_widen_a_subject() {
        assert_eq!(subject_token("orders"), "orders");
        assert_eq!(subject_token("app.db"), "app_db");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "_");
    }
}
