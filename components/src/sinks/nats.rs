//! The NATS JetStream sink: one JetStream message per change.
//!
//! - subject `astha.<database>.<table>.<operation>` (`operation` is `insert`, `update`,
//!   `delete`, or `read` for a snapshot row; tokens are made subject-safe by [`super::subject_token`]);
//! - payload [`Change::to_json`], the JSON `astha watch` prints;
//! - header `Nats-Msg-Id: <database identity>:<log epoch>:<lsn>` (`...:r<seq>` for a
//!   snapshot row, [`astha_core::format::change_id`]), so a change published again after a
//!   crash (Astha confirmed nothing past its slot) is dropped by JetStream as a duplicate
//!   inside the stream's duplicate window;
//! - header [`KEY_HEADER`]: the record key, the primary-key columns as a JSON object
//!   ([`Encoder::key`]; with its Connect schema when `debezium_schemas` is on);
//! - with `format = "cloudevents"` and `cloudevents_mode = "binary"`, the CloudEvents
//!   NATS binding's binary mode: the attributes as `ce-*` headers
//!   ([`cloudevents::binary_headers`]), `content-type: application/json`, and the
//!   native event alone as the payload.
//!
//! With `transaction_events`, each marked transaction's BEGIN and END markers
//! ([`astha_core::format::markers`]) are messages of their own on
//! `astha.<database>.__astha_tx.begin` / `.end` (Debezium's separate `<prefix>.transaction`
//! topic; `__astha_tx` is Astha's marker table, never a captured one, so no table's
//! subject can be it), published right before the transaction's first change and right
//! after its last, with `Nats-Msg-Id: <identity>:<epoch>:tx<id>:begin` (`:end`) and key
//! `{"id": "<id>"}`. The default stream (`astha.<database>.>`) stores them in order with
//! the changes; a stream configured with other subjects must include that subject. A
//! change is confirmed only once its markers were acked too, and a marker published
//! again after a crash is dropped by JetStream as a duplicate, like a change.
//!
//! It confirms a change only after JetStream's publish acknowledgement arrived: the ack
//! means the stream stored the message (or already had it). Anything short of an ack
//! (no connection, no responders while the server restarts, an ack timeout) is a
//! transient error and the supervisor retries it. The client reconnects by itself, and
//! its connection events (a disconnect, each failed reconnect) are logged as warnings.
//!
//! Throughput: [`Component::on_event`] confirms one change at a time, so that path costs
//! one round trip per change. When the runtime hands several changes at once
//! ([`Component::on_batch`], up to [`NatsSinkConfig::max_in_flight`]) the sink publishes
//! them all before awaiting the acks, in order, and confirms the prefix that was acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::Change;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_trait::async_trait;
use serde::Deserialize;

use super::registry::{SinkConfig, SinkContext};
use super::{identity, subject_token};
use astha_core::format::{cloudevents, Encoder, EventFormat, SourceInfo};

/// The header that carries a message's record key.
pub const KEY_HEADER: &str = "Astha-Key";
/// The subject token of transaction markers (Astha's marker table, never captured).
pub const MARKER_TOKEN: &str = astha_core::transaction::MARKER_TABLE;

/// How the sink finds its stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamSetup {
    /// Creates the stream if it does not exist (an existing one is used as it is).
    Create {
        /// Stream name.
        name: String,
        /// Subjects the stream captures; default `astha.<database>.>`.
        #[serde(default)]
        subjects: Vec<String>,
        /// JetStream de-duplicates by `Nats-Msg-Id` within this window: it must cover
        /// the longest outage after which Astha re-publishes (a restart's redelivery).
        #[serde(with = "duration_serde", default = "default_duplicate_window")]
        duplicate_window: Duration,
    },
    /// Uses a stream managed elsewhere; the sink checks that it exists.
    Existing {
        /// Stream name.
        name: String,
    },
}

fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

/// Configuration of a [`NatsSink`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// Server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Tables whose changes are published (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The `<database>` token of every subject; in a pipeline it defaults to the
    /// source's name.
    #[serde(default)]
    pub database: String,
    /// Idempotency prefix of `Nats-Msg-Id`; default: the database's stored identity
    /// (see [`identity`]), passed to [`NatsSink::new`].
    #[serde(default)]
    pub identity: Option<String>,
    /// The stream, created or existing.
    pub stream: StreamSetup,
    /// How long to wait for one acknowledgement before calling it a transient failure.
    /// Keep it well under the supervisor's `event_timeout`, which bounds a whole batch.
    #[serde(with = "duration_serde", default = "default_ack_timeout")]
    pub ack_timeout: Duration,
    /// Most publishes awaiting an ack at once when the runtime delivers batches.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// With `format = "cloudevents"`: `structured` (default; the event is the message)
    /// or `binary` (the CloudEvents NATS binding's binary mode: attributes as `ce-*`
    /// headers, the native event as the body, `content-type: application/json`).
    #[serde(default)]
    pub cloudevents_mode: astha_core::format::cloudevents::Mode,
}

fn default_name() -> String {
    "nats_sink".into()
}
fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_in_flight() -> usize {
    256
}

impl NatsSinkConfig {
    /// A config with defaults for everything but the essentials; the stream is created
    /// if missing and captures `astha.<database>.>`.
    pub fn new(url: &str, database: &str, stream: &str, tables: &[&str]) -> Self {
        NatsSinkConfig {
            name: default_name(),
            url: url.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            database: database.into(),
            identity: None,
            stream: StreamSetup::Create {
                name: stream.into(),
                subjects: Vec::new(),
                duplicate_window: default_duplicate_window(),
            },
            ack_timeout: default_ack_timeout(),
            max_in_flight: default_max_in_flight(),
            cloudevents_mode: Default::default(),
        }
    }

    /// Checks the config; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("nats sink: name is empty".into());
        }
        if self.url.is_empty() {
            return Err("nats sink: url is empty".into());
        }
        if self.tables.is_empty() {
            return Err(format!("nats sink {}: no tables", self.name));
        }
        if self.database.is_empty() {
            return Err(format!("nats sink {}: database is empty", self.name));
        }
        if self.max_in_flight == 0 {
            return Err(format!(
                "nats sink {}: max_in_flight must be > 0",
                self.name
            ));
        }
        if self.ack_timeout.is_zero() {
            return Err(format!("nats sink {}: ack_timeout must be > 0", self.name));
        }
        match &self.stream {
            StreamSetup::Create {
                name,
                duplicate_window,
                ..
            } => {
                if name.is_empty() {
                    return Err(format!("nats sink {}: stream name is empty", self.name));
                }
                if duplicate_window.is_zero() {
                    return Err(format!(
                        "nats sink {}: a zero duplicate_window disables de-duplication",
                        self.name
                    ));
                }
            }
            StreamSetup::Existing { name } if name.is_empty() => {
                return Err(format!("nats sink {}: stream name is empty", self.name));
            }
            StreamSetup::Existing { .. } => {}
        }
        Ok(())
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        match &self.stream {
            StreamSetup::Create { name, .. } | StreamSetup::Existing { name } => name,
        }
    }
}

impl SinkConfig for NatsSinkConfig {
    const TYPE: &'static str = "nats";
    const ABOUT: &'static str =
        "publishes each change to NATS JetStream, de-duplicated by Nats-Msg-Id";
    // Markers go to a subject of their own (module docs).
    const TRANSACTION_EVENTS: bool = true;

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        NatsSinkConfig::validate(&self.for_context(ctx))
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(
            NatsSink::new(self.for_context(ctx), &ctx.identity)?.with_encoder(ctx.encoder()?),
        ))
    }
}

impl NatsSinkConfig {
    /// This config with the name, tables and (unless set) database of `ctx`.
    fn for_context(&self, ctx: &SinkContext) -> NatsSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        if config.database.is_empty() {
            config.database = ctx.source.clone();
        }
        config
    }
}

/// Counters of a [`NatsSink`], shared with whoever holds a clone.
#[derive(Debug, Default)]
pub struct NatsSinkStats {
    /// Messages (changes, and transaction markers when on) acknowledged as newly stored.
    pub stored: AtomicU64,
    /// Messages acknowledged as duplicates (published before a crash or retry).
    pub duplicates: AtomicU64,
    /// Publishes that failed (and were reported as transient).
    pub failures: AtomicU64,
}

/// Publishes changes to JetStream; see the module docs.
pub struct NatsSink {
    config: NatsSinkConfig,
    encoder: Encoder,
    identity: String,
    database: String,
    js: Option<jetstream::Context>,
    stats: Arc<NatsSinkStats>,
}

impl NatsSink {
    /// A sink with this config. `database_identity` is the `Nats-Msg-Id` prefix unless
    /// the config names one: pass [`identity::stream_id`] of the database. Connects lazily
    /// (at refresh or the first change), so a server that is down at start is retried
    /// like any other transient failure.
    pub fn new(config: NatsSinkConfig, database_identity: &str) -> Result<Self, String> {
        config.validate()?;
        let identity = config
            .identity
            .clone()
            .unwrap_or_else(|| database_identity.to_string());
        if identity.is_empty() {
            return Err(format!("nats sink {}: empty identity", config.name));
        }
        let encoder = Encoder::new(
            EventFormat::Native,
            SourceInfo {
                name: config.database.clone(),
                db: config.database.clone(),
                identity: identity.clone(),
            },
        );
        Ok(NatsSink {
            encoder,
            database: subject_token(&config.database),
            config,
            identity,
            js: None,
            stats: Arc::default(),
        })
    }

    /// Whether each change goes as a binary-mode CloudEvent (`ce-*` headers).
    fn binary_cloudevents(&self) -> bool {
        self.encoder.format() == EventFormat::CloudEvents
            && self.config.cloudevents_mode == cloudevents::Mode::Binary
    }

    /// Publishes in `encoder`'s format (native by default).
    pub fn with_encoder(mut self, encoder: Encoder) -> Self {
        self.encoder = encoder;
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<NatsSinkStats> {
        self.stats.clone()
    }

    /// `astha.<database>.<table>.<operation>`.
    pub fn subject(&self, change: &Change) -> String {
        format!(
            "astha.{}.{}.{}",
            self.database,
            subject_token(&change.table),
            change.op.name().to_ascii_lowercase()
        )
    }

    /// The `Nats-Msg-Id` of `change`.
    pub fn message_id(&self, change: &Change) -> String {
        identity::message_id(&self.identity, change)
    }

    /// The subject of the transaction markers: `astha.<database>.__astha_tx.<status>`.
    pub fn marker_subject(&self, status: &str) -> String {
        format!("astha.{}.{MARKER_TOKEN}.{status}", self.database)
    }

    async fn context(&mut self) -> Result<jetstream::Context, ComponentError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        let sink = self.config.name.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("astha:{}", self.config.name))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move { log_connection_event(&sink, &event) }
            })
            .connect(self.config.url.as_str())
            .await
            .map_err(|e| transient("connect", e))?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.config.ack_timeout);
        self.ensure_stream(&js).await?;
        self.js = Some(js.clone());
        Ok(js)
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), ComponentError> {
        match &self.config.stream {
            StreamSetup::Create {
                name,
                subjects,
                duplicate_window,
            } => {
                let subjects = if subjects.is_empty() {
                    vec![format!("astha.{}.>", self.database)]
                } else {
                    subjects.clone()
                };
                js.get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects,
                    duplicate_window: *duplicate_window,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| transient("create stream", e))?;
            }
            StreamSetup::Existing { name } => {
                js.get_stream(name)
                    .await
                    .map_err(|e| transient(&format!("stream {name}"), e))?;
            }
        }
        Ok(())
    }

    /// Sends one change, with its transaction markers around it when those are on; the
    /// returned futures resolve to the acks of its messages, in order.
    async fn send(
        &self,
        js: &jetstream::Context,
        change: &Change,
    ) -> Result<Vec<PublishAckFuture>, ComponentError> {
        let binary = self.binary_cloudevents();
        let body = if binary {
            change.to_json()
        } else {
            self.encoder.encode(change)
        };
        let payload = serde_json::to_vec(&body)
            .map_err(|e| ComponentError::permanent(format!("encode lsn {}: {e}", change.lsn)))?;
        let markers = self.encoder.markers(change);
        let mut acks = Vec::with_capacity(1);
        if let Some(begin) = &markers.begin {
            acks.push(self.send_marker(js, change, "begin", begin).await?);
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", self.message_id(change).as_str());
        // The record key (primary-key columns), for consumers that partition or
        // compact by key.
        headers.insert(KEY_HEADER, self.encoder.key(change).to_string().as_str());
        if binary {
            for (name, value) in cloudevents::binary_headers(change, self.encoder.source()) {
                headers.insert(name.as_str(), value.as_str());
            }
            headers.insert("content-type", cloudevents::DATA_CONTENT_TYPE);
        }
        acks.push(
            js.publish_with_headers(self.subject(change), headers, payload.into())
                .await
                .map_err(|e| transient("publish", e))?,
        );
        if let Some(end) = &markers.end {
            acks.push(self.send_marker(js, change, "end", end).await?);
        }
        Ok(acks)
    }

    /// Sends the BEGIN or END marker `json` of `change`'s transaction.
    async fn send_marker(
        &self,
        js: &jetstream::Context,
        change: &Change,
        status: &str,
        json: &serde_json::Value,
    ) -> Result<PublishAckFuture, ComponentError> {
        let id = change.transaction.as_ref().map_or(0, |t| t.id);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}:tx{id}:{status}", self.identity).as_str(),
        );
        headers.insert(
            KEY_HEADER,
            serde_json::json!({"id": id.to_string()})
                .to_string()
                .as_str(),
        );
        let payload = serde_json::to_vec(json).expect("a JSON value serializes");
        js.publish_with_headers(self.marker_subject(status), headers, payload.into())
            .await
            .map_err(|e| transient("publish", e))
    }

    fn acked(&self, ack: &jetstream::publish::PublishAck) {
        let counter = if ack.duplicate {
            &self.stats.duplicates
        } else {
            &self.stats.stored
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&mut self, err: &ComponentError) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = %self.config.name, error = %err, "jetstream publish failed");
    }
}

fn transient(what: &str, err: impl std::fmt::Display) -> ComponentError {
    ComponentError::transient(format!("jetstream {what}: {err}"))
}

#[async_trait]
impl Component for NatsSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.config.tables.clone()
    }

    fn max_batch(&self) -> usize {
        self.config.max_in_flight
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        let js = self.context().await?;
        let acks = match self.send(&js, change).await {
            Ok(acks) => acks,
            Err(err) => {
                self.failed(&err);
                return Err(err);
            }
        };
        for ack in acks {
            match ack.await {
                Ok(ack) => self.acked(&ack),
                Err(e) => {
                    let err = transient("ack", e);
                    self.failed(&err);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        let js = self
            .context()
            .await
            .map_err(|error| BatchError { handled: 0, error })?;
        // Publish all, then await the acks in order: one round trip for the window. A
        // failure confirms only the acked prefix; later messages that were stored anyway
        // come back as duplicates on the retry.
        // Each ack is tagged with its change's index: a change is handled once all its
        // messages (its markers too) were acked.
        let mut pending = Vec::with_capacity(changes.len());
        let mut sent = 0;
        let mut send_error = None;
        for (index, change) in changes.iter().enumerate() {
            match self.send(&js, change).await {
                Ok(acks) => {
                    pending.extend(acks.into_iter().map(|ack| (index, ack)));
                    sent += 1;
                }
                Err(err) => {
                    send_error = Some(err);
                    break;
                }
            }
        }
        for (handled, ack) in pending {
            match ack.await {
                Ok(ack) => self.acked(&ack),
                Err(e) => {
                    let error = transient("ack", e);
                    self.failed(&error);
                    return Err(BatchError { handled, error });
                }
            }
        }
        match send_error {
            None => Ok(()),
            // Every message sent before the one that failed to send was acked above.
            Some(error) => {
                self.failed(&error);
                Err(BatchError {
                    handled: sent,
                    error,
                })
            }
        }
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        let js = self.context().await?;
        self.ensure_stream(&js).await
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        // A fresh connection: a refresh follows a timeout or a long unhealthy spell.
        self.js = None;
        self.context().await.map(|_| ())
    }
}

/// The client's connection events, in the log. The client reconnects by itself and
/// buffers what is published meanwhile, so a server that went away and came back within
/// `ack_timeout` fails no publish: these lines are then the only trace of the outage.
fn log_connection_event(sink: &str, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!(sink, "nats: connected"),
        async_nats::Event::Draining | async_nats::Event::Closed => {
            tracing::debug!(sink, %event, "nats connection")
        }
        _ => tracing::warn!(sink, %event, "nats connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use astha_core::Operation;

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let c: NatsSinkConfig = serde_json::from_str(
            r#"{"tables": ["orders"], "database": "shop",
                "stream": {"create": {"name": "SHOP", "duplicate_window": "10m"}}}"#,
        )
        .unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.ack_timeout, Duration::from_secs(5));
        assert_eq!(
            c.stream,
            StreamSetup::Create {
                name: "SHOP".into(),
                subjects: vec![],
                duplicate_window: Duration::from_secs(600),
            }
        );
        assert!(c.validate().is_ok());
        let existing: NatsSinkConfig = serde_json::from_str(
            r#"{"tables": ["t"], "database": "d", "stream": {"existing": {"name": "S"}}}"#,
        )
        .unwrap();
        assert_eq!(existing.stream_name(), "S");
        assert!(serde_json::from_str::<NatsSinkConfig>(
            r#"{"tables": ["t"], "database": "d", "stream": {"existing": {"name": "S"}},
                "acks": 1}"#
        )
        .is_err());
    }

    #[test]
    fn validate_names_the_wrong_field() {
        let mut c = NatsSinkConfig::new("nats://x", "d", "S", &["t"]);
        c.max_in_flight = 0;
        assert!(c.validate().unwrap_err().contains("max_in_flight"));
        let mut c = NatsSinkConfig::new("nats://x", "d", "S", &["t"]);
        c.stream = StreamSetup::Create {
            name: "S".into(),
            subjects: vec![],
            duplicate_window: Duration::ZERO,
        };
        assert!(c.validate().unwrap_err().contains("duplicate_window"));
        assert!(NatsSinkConfig::new("nats://x", "d", "S", &[])
            .validate()
            .is_err());
    }

    #[test]
    fn subject_and_message_id_come_from_database_table_operation_and_lsn() {
        let sink = NatsSink::new(
            NatsSinkConfig::new("nats://x", "app.db", "S", &["t"]),
            "id-1",
        )
        .unwrap();
        let change = Change::bare(42, "order items", Operation::Delete);
        assert_eq!(sink.subject(&change), "astha.app_db.order_items.delete");
        assert_eq!(sink.message_id(&change), "id-1:42");
        let mut named = NatsSinkConfig::new("nats://x", "d", "S", &["t"]);
        named.identity = Some("fixed".into());
        let sink = NatsSink::new(named, "ignored").unwrap();
        assert_eq!(sink.message_id(&change), "fixed:42");
    }
}
