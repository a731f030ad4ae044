//! The Kafka sink: one record per change, produced with librdkafka (the `rdkafka` crate).
//!
//! - topic: a template, `astha.{db}.{table}` by default, with `{db}` and `{table}`; a
//!   name Kafka refuses (other than `[A-Za-z0-9._-]`, over 249 bytes) is a permanent
//!   error for that change (dead letter), never a silent rename;
//! - key: the primary-key columns of the row as JSON ([`Encoder::key`]; with its Connect
//!   schema when `debezium_schemas` is on), so one row's changes go to one partition, in
//!   order;
//! - value: the change in the sink's format (debezium by default);
//! - headers: `astha-lsn` (decimal), `astha-table`, `astha-operation` (`insert`, `update`,
//!   `delete`, `read`), `astha-id` (`<identity>:<epoch>:<lsn>`, `:r<n>` for a snapshot
//!   row: a consumer de-duplicates by it);
//! - the producer is idempotent (`enable.idempotence`, `acks=all`): the broker drops the
//!   duplicates of librdkafka's own retries and keeps each partition in produce order;
//!   compression `none`, `gzip`, `snappy`, `lz4` or `zstd`.
//!
//! A delivery's changes are all handed to librdkafka (its queue batches them, `linger`),
//! then their acknowledgements are awaited in order: the slot advances only past the
//! acknowledged prefix. After any failure the producer is dropped (off the async thread:
//! librdkafka's destructor blocks) and the next attempt makes a new one, under the
//! supervisor's retries and breaker. At least once: records produced but not acknowledged
//! before a crash or a failure are produced again, by a new producer whose idempotence
//! does not cover the old one's.
//!
//! With `create_topics = true` a missing topic is created (`partitions`,
//! `replication_factor`) before its first record; otherwise the broker's auto-creation or
//! an operator does it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::format::Encoder;
use astha_core::Change;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Deserialize;

use super::identity;
use super::in_order::{confirm_in_order, Stage};
use super::registry::{SinkConfig, SinkContext};

/// Record batch compression (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Configuration of a [`KafkaSink`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// Bootstrap servers, comma separated (`host:port`; plaintext, no SASL).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Tables whose changes are produced (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Topic template: `{db}`, `{table}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The `{db}` of the template; in a pipeline it defaults to the source's name.
    #[serde(default)]
    pub database: String,
    /// Record batch compression.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// How long librdkafka may wait to fill a batch (`linger.ms`).
    #[serde(with = "duration_serde", default = "default_linger")]
    pub linger: Duration,
    /// How long one record may take to be acknowledged, retries included
    /// (`message.timeout.ms`), before it counts as a transient failure.
    #[serde(with = "duration_serde", default = "default_delivery_timeout")]
    pub delivery_timeout: Duration,
    /// Most changes handed to librdkafka before their acknowledgements are awaited.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Create a missing topic before its first record.
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of a topic the sink creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of a topic the sink creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
}

fn default_name() -> String {
    "kafka_sink".into()
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_topic() -> String {
    "astha.{db}.{table}".into()
}
fn default_compression() -> Compression {
    Compression::None
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_in_flight() -> usize {
    1000
}
fn default_partitions() -> i32 {
    1
}
fn default_replication_factor() -> i32 {
    1
}

impl KafkaSinkConfig {
    /// Checks the settings (no I/O); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("kafka sink: name is empty".into());
        }
        if self.brokers.trim().is_empty() {
            return Err(format!("kafka sink {name}: brokers is empty"));
        }
        if self.tables.is_empty() {
            return Err(format!("kafka sink {name}: no tables"));
        }
        let mut rest = self.topic.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("kafka sink {name}: topic has an unclosed {{"))?;
            let field = &rest[open + 1..open + close];
            if !["db", "table"].contains(&field) {
                return Err(format!(
                    "kafka sink {name}: topic names {{{field}}}; use {{db}}, {{table}}"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        if self.max_in_flight == 0 {
            return Err(format!("kafka sink {name}: max_in_flight must be > 0"));
        }
        if self.delivery_timeout.as_millis() < 1 {
            return Err(format!(
                "kafka sink {name}: delivery_timeout must be >= 1ms"
            ));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(format!(
                "kafka sink {name}: partitions and replication_factor must be >= 1"
            ));
        }
        Ok(())
    }

    fn for_context(&self, ctx: &SinkContext) -> KafkaSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        if config.database.is_empty() {
            config.database = ctx.source.clone();
        }
        config
    }

    /// The librdkafka settings of the producer.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("astha:{}", self.name))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.name())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        config
    }
}

impl SinkConfig for KafkaSinkConfig {
    const TYPE: &'static str = "kafka";
    const ABOUT: &'static str =
        "produces each change to a Kafka topic per table, keyed by primary key, idempotent producer";
    const DEFAULT_FORMAT: &'static str = "debezium";

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        self.for_context(ctx).validate()
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(KafkaSink::new(
            self.for_context(ctx),
            &ctx.identity,
            ctx.encoder()?,
        )?))
    }
}

/// A topic name Kafka accepts: 1..=249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

struct Client {
    producer: FutureProducer,
    admin: Option<AdminClient<DefaultClientContext>>,
}

/// Produces changes to Kafka; see the module docs.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    identity: String,
    encoder: Encoder,
    client: Option<Client>,
    /// Topics known to exist (created or checked by this sink).
    topics: HashSet<String>,
}

impl KafkaSink {
    /// A sink with this config; `database_identity` prefixes `astha-id`. Connects lazily.
    pub fn new(
        config: KafkaSinkConfig,
        database_identity: &str,
        encoder: Encoder,
    ) -> Result<Self, String> {
        config.validate()?;
        Ok(KafkaSink {
            config,
            identity: database_identity.into(),
            encoder,
            client: None,
            topics: HashSet::new(),
        })
    }

    /// The topic of `change`.
    pub fn topic(&self, change: &Change) -> String {
        self.config
            .topic
            .replace("{db}", &self.config.database)
            .replace("{table}", &change.table)
    }

    fn client(&mut self) -> Result<&Client, ComponentError> {
        if self.client.is_none() {
            let config = self.config.client_config();
            let producer: FutureProducer = config
                .create()
                .map_err(|e| ComponentError::transient(format!("kafka producer: {e}")))?;
            let admin = if self.config.create_topics {
                Some(
                    config
                        .create()
                        .map_err(|e| ComponentError::transient(format!("kafka admin: {e}")))?,
                )
            } else {
                None
            };
            self.client = Some(Client { producer, admin });
        }
        Ok(self.client.as_ref().expect("just set"))
    }

    /// Drops the producer off the async thread (librdkafka's destructor purges and
    /// flushes, blocking up to half a second).
    fn reset(&mut self) {
        if let Some(client) = self.client.take() {
            tokio::task::spawn_blocking(move || drop(client));
        }
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), ComponentError> {
        if !self.config.create_topics || self.topics.contains(topic) {
            return Ok(());
        }
        let (partitions, replication) = (self.config.partitions, self.config.replication_factor);
        let admin = self.client()?.admin.as_ref().expect("create_topics");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        let results = admin
            .create_topics([&new], &AdminOptions::new())
            .await
            .map_err(|e| ComponentError::transient(format!("kafka create topic {topic}: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(ComponentError::transient(format!(
                        "kafka create topic {name}: {code}"
                    )))
                }
            }
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }

    /// Hands one change to librdkafka; the future resolves on its acknowledgement.
    fn produce(&self, change: &Change, topic: &str) -> Result<DeliveryFuture, ComponentError> {
        let value = serde_json::to_vec(&self.encoder.encode(change))
            .map_err(|e| ComponentError::permanent(format!("encode lsn {}: {e}", change.lsn)))?;
        let key = serde_json::to_vec(&self.encoder.key(change))
            .map_err(|e| ComponentError::permanent(format!("encode key {}: {e}", change.lsn)))?;
        let lsn = change.lsn.to_string();
        let operation = change.op.name().to_ascii_lowercase();
        let id = identity::message_id(&self.identity, change);
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "astha-lsn",
                value: Some(lsn.as_str()),
            })
            .insert(Header {
                key: "astha-table",
                value: Some(&*change.table),
            })
            .insert(Header {
                key: "astha-operation",
                value: Some(operation.as_str()),
            })
            .insert(Header {
                key: "astha-id",
                value: Some(id.as_str()),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let client = self.client.as_ref().expect("client made before produce");
        client
            .producer
            .send_result(record)
            .map_err(|(e, _)| classify(change.lsn, &e))
    }

    async fn acknowledged(&self, delivery: DeliveryFuture, lsn: i64) -> Result<(), ComponentError> {
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(classify(lsn, &e)),
            Err(_) => Err(ComponentError::transient(format!(
                "kafka: the producer went away before lsn {lsn} was acknowledged"
            ))),
        }
    }
}

/// A record the broker can never take (too large, invalid) is permanent; the rest
/// (timeouts, a broker down, a full queue, a missing topic) transient.
fn classify(lsn: i64, err: &KafkaError) -> ComponentError {
    let message = format!("kafka: lsn {lsn}: {err}");
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord,
        ) => ComponentError::permanent(message),
        _ => ComponentError::transient(message),
    }
}

#[async_trait]
impl Component for KafkaSink {
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
        self.on_batch(&[Arc::new(change.clone())])
            .await
            .map_err(|e| e.error)
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        // Hand every change over, then await the acknowledgements in order: a failure
        // confirms the acknowledged prefix.
        let mut pending = Vec::with_capacity(changes.len());
        let mut send_error = None;
        for change in changes {
            let topic = self.topic(change);
            if !valid_topic(&topic) {
                send_error = Some(ComponentError::permanent(format!(
                    "kafka: lsn {}: topic {topic:?} is not a valid Kafka topic name",
                    change.lsn
                )));
                break;
            }
            let sent = match self.client().map(|_| ()) {
                Ok(()) => match self.ensure_topic(&topic).await {
                    Ok(()) => self.produce(change, &topic),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match sent {
                Ok(delivery) => pending.push((delivery, change.lsn)),
                Err(error) => {
                    send_error = Some(error);
                    break;
                }
            }
        }
        let confirmed = confirm_in_order(pending, send_error, |delivery, lsn| {
            self.acknowledged(delivery, lsn)
        })
        .await;
        confirmed.map_err(|unconfirmed| {
            // A failed acknowledgement, or a send that may succeed later: start afresh.
            if unconfirmed.at == Stage::Acknowledging || unconfirmed.error.error.is_retriable() {
                self.reset();
            }
            unconfirmed.error
        })
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        let client = self.client()?;
        let producer = client.producer.clone();
        // A metadata request proves a broker answers; it blocks, so off the async thread.
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
        })
        .await
        .map_err(|e| ComponentError::transient(format!("kafka health: {e}")))?
        .map_err(|e| ComponentError::transient(format!("kafka health: {e}")))
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.reset();
        self.client().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use astha_core::Operation;

    #[test]
    fn config_parses_with_defaults_and_checks_the_template() {
        let c: KafkaSinkConfig =
            serde_json::from_str(r#"{"tables": ["t"], "database": "shop"}"#).unwrap();
        assert_eq!(c.topic, "astha.{db}.{table}");
        assert_eq!(c.compression, Compression::None);
        assert!(c.validate().is_ok());
        let c2: KafkaSinkConfig = serde_json::from_str(
            r#"{"tables": ["t"], "compression": "zstd", "linger": "20ms", "create_topics": true, "partitions": 3}"#,
        )
        .unwrap();
        assert_eq!(c2.compression, Compression::Zstd);
        assert_eq!(c2.linger, Duration::from_millis(20));
        assert!(serde_json::from_str::<KafkaSinkConfig>(
            r#"{"tables": ["t"], "compresion": "lz4"}"#
        )
        .is_err());
        let mut bad = c.clone();
        bad.topic = "astha.{tabel}".into();
        assert!(bad.validate().unwrap_err().contains("{tabel}"));
        let sink = KafkaSink::new(
            c,
            "id",
            Encoder::new(
                astha_core::format::EventFormat::Debezium,
                astha_core::format::SourceInfo {
                    name: "shop".into(),
                    db: "shop".into(),
                    identity: "id".into(),
                },
            ),
        )
        .unwrap();
        let change = astha_core::Change::bare(1, "orders", Operation::Update);
        assert_eq!(sink.topic(&change), "astha.shop.orders");
    }

    #[test]
    fn topic_names_kafka_refuses_are_recognised() {
        assert!(valid_topic("astha.shop.orders"));
        assert!(valid_topic("a-b_c.9"));
        assert!(!valid_topic("astha.shop.order lines"));
        assert!(!valid_topic("astha.shop.ordrés"));
        assert!(!valid_topic(".."));
        assert!(!valid_topic(""));
        assert!(!valid_topic(&"x".repeat(250)));
    }
}
