//! The RabbitMQ sink: one AMQP 0-9-1 message per change, published to an exchange.
//!
//! - exchange: declared durable with the configured type (direct, topic, fanout or
//!   headers) unless `declare = false`;
//! - routing key: a template, `cdc.{table}.{operation}` by default (seed 003), with
//!   `{db}`, `{table}` and `{operation}` (`insert`, `update`, `delete`);
//! - message: the change in the sink's format (debezium unless one is configured), persistent (`delivery_mode` 2),
//!   `message_id` = database identity + LSN (a consumer de-duplicates by it), headers
//!   `astha-lsn`, `astha-table`, `astha-operation` (what a headers exchange routes on);
//! - publisher confirms: a change is confirmed only once the broker acknowledged its
//!   message; published `mandatory` (the default), so a message no queue takes comes back
//!   and counts as a transient failure (it waits until a queue is bound) rather than
//!   vanishing; `mandatory = false` lets the broker drop what no binding routes, for an
//!   exchange whose consumers want only some routing keys.
//!
//! Several changes of a delivery are published before their confirms are awaited, in
//! order; a failure confirms the acknowledged prefix. After any failure the connection is
//! dropped and the next attempt reconnects, under the supervisor's retries and breaker.
//! At least once: messages published but not confirmed before a crash are published again.

use std::sync::Arc;
use std::time::Duration;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::format::Encoder;
use astha_core::Change;
use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
};
use serde::Deserialize;

use super::identity;
use super::in_order::confirm_in_order;
use super::registry::{SinkConfig, SinkContext};

/// The exchange types of AMQP 0-9-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    Direct,
    Topic,
    Fanout,
    Headers,
}

/// Configuration of a [`RabbitMqSink`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// Broker URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (no TLS).
    #[serde(default = "default_url")]
    pub url: String,
    /// Tables whose changes are published (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// The exchange messages are published to.
    pub exchange: String,
    /// Its type, when the sink declares it.
    #[serde(default = "default_exchange_type")]
    pub exchange_type: ExchangeType,
    /// Declare the exchange (durable) if missing; `false` uses one managed elsewhere.
    #[serde(default = "default_declare")]
    pub declare: bool,
    /// Routing key template: `{db}`, `{table}`, `{operation}`.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// The `{db}` of the template; in a pipeline it defaults to the source's name.
    #[serde(default)]
    pub database: String,
    /// How long to wait for one publisher confirm before calling it a transient failure.
    #[serde(with = "duration_serde", default = "default_confirm_timeout")]
    pub confirm_timeout: Duration,
    /// Publish `mandatory`: a message no queue takes is a failure, retried until one is
    /// bound. `false`: the broker drops it and the change counts as delivered.
    #[serde(default = "default_mandatory")]
    pub mandatory: bool,
    /// Most messages awaiting a confirm at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_name() -> String {
    "rabbitmq_sink".into()
}
fn default_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_exchange_type() -> ExchangeType {
    ExchangeType::Topic
}
fn default_declare() -> bool {
    true
}
fn default_mandatory() -> bool {
    true
}
fn default_routing_key() -> String {
    "cdc.{table}.{operation}".into()
}
fn default_confirm_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_in_flight() -> usize {
    256
}

impl RabbitMqSinkConfig {
    /// Checks the settings (no I/O); the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("rabbitmq sink: name is empty".into());
        }
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(format!("rabbitmq sink {name}: url must start with amqp://"));
        }
        if self.tables.is_empty() {
            return Err(format!("rabbitmq sink {name}: no tables"));
        }
        if self.exchange.is_empty() {
            return Err(format!(
                "rabbitmq sink {name}: exchange is empty (the default exchange cannot be declared or typed)"
            ));
        }
        let mut rest = self.routing_key.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("rabbitmq sink {name}: routing_key has an unclosed {{"))?;
            let field = &rest[open + 1..open + close];
            if !["db", "table", "operation"].contains(&field) {
                return Err(format!(
                    "rabbitmq sink {name}: routing_key names {{{field}}}; use {{db}}, {{table}}, {{operation}}"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        if self.max_in_flight == 0 {
            return Err(format!("rabbitmq sink {name}: max_in_flight must be > 0"));
        }
        if self.confirm_timeout.is_zero() {
            return Err(format!("rabbitmq sink {name}: confirm_timeout must be > 0"));
        }
        Ok(())
    }

    fn for_context(&self, ctx: &SinkContext) -> RabbitMqSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        if config.database.is_empty() {
            config.database = ctx.source.clone();
        }
        config
    }
}

impl SinkConfig for RabbitMqSinkConfig {
    const TYPE: &'static str = "rabbitmq";
    const ABOUT: &'static str =
        "publishes each change to a RabbitMQ exchange (AMQP 0-9-1), persistent, with publisher confirms";
    const DEFAULT_FORMAT: &'static str = "debezium";

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        self.for_context(ctx).validate()
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(RabbitMqSink::new(
            self.for_context(ctx),
            &ctx.identity,
            ctx.encoder()?,
        )?))
    }
}

/// Publishes changes to RabbitMQ; see the module docs.
pub struct RabbitMqSink {
    config: RabbitMqSinkConfig,
    identity: String,
    encoder: Encoder,
    connection: Option<(Connection, Channel)>,
}

impl RabbitMqSink {
    /// A sink with this config; `database_identity` prefixes message ids. Connects lazily.
    pub fn new(
        config: RabbitMqSinkConfig,
        database_identity: &str,
        encoder: Encoder,
    ) -> Result<Self, String> {
        config.validate()?;
        Ok(RabbitMqSink {
            config,
            identity: database_identity.into(),
            encoder,
            connection: None,
        })
    }

    /// The routing key of `change`.
    pub fn routing_key(&self, change: &Change) -> String {
        self.config
            .routing_key
            .replace("{db}", &self.config.database)
            .replace("{table}", &change.table)
            .replace("{operation}", &change.op.name().to_ascii_lowercase())
    }

    async fn channel(&mut self) -> Result<Channel, ComponentError> {
        if let Some((_, channel)) = &self.connection {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        self.connection = None;
        let connection = Connection::connect(
            &self.config.url,
            ConnectionProperties::default()
                .with_connection_name(format!("astha:{}", self.config.name).into()),
        )
        .await
        .map_err(|e| transient("connect", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| transient("open channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| transient("enable publisher confirms", e))?;
        if self.config.declare {
            let kind = match self.config.exchange_type {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Headers => ExchangeKind::Headers,
            };
            channel
                .exchange_declare(
                    self.config.exchange.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| transient("declare exchange", e))?;
        }
        self.connection = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn publish(
        &self,
        channel: &Channel,
        change: &Change,
    ) -> Result<PublisherConfirm, ComponentError> {
        let payload = serde_json::to_vec(&self.encoder.encode(change))
            .map_err(|e| ComponentError::permanent(format!("encode lsn {}: {e}", change.lsn)))?;
        let mut headers = FieldTable::default();
        headers.insert("astha-lsn".into(), AMQPValue::LongLongInt(change.lsn));
        headers.insert(
            "astha-table".into(),
            AMQPValue::LongString(LongString::from(change.table.to_string())),
        );
        headers.insert(
            "astha-operation".into(),
            AMQPValue::LongString(LongString::from(change.op.name().to_ascii_lowercase())),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(self.encoder.format().content_type()))
            .with_message_id(ShortString::from(identity::message_id(
                &self.identity,
                change,
            )))
            .with_headers(headers);
        channel
            .basic_publish(
                self.config.exchange.as_str().into(),
                self.routing_key(change).as_str().into(),
                BasicPublishOptions {
                    mandatory: self.config.mandatory,
                    ..BasicPublishOptions::default()
                },
                &payload,
                properties,
            )
            .await
            .map_err(|e| transient("publish", e))
    }

    async fn confirmed(&self, confirm: PublisherConfirm, lsn: i64) -> Result<(), ComponentError> {
        match tokio::time::timeout(self.config.confirm_timeout, confirm).await {
            Err(_) => Err(ComponentError::transient(format!(
                "rabbitmq: no confirm for lsn {lsn} within {:?}",
                self.config.confirm_timeout
            ))),
            Ok(Err(e)) => Err(transient("confirm", e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(ComponentError::transient(format!(
                "rabbitmq: lsn {lsn} routed to no queue ({} {}); bind a queue to exchange {}",
                returned.reply_code, returned.reply_text, self.config.exchange
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(ComponentError::transient(format!(
                "rabbitmq: the broker refused lsn {lsn} (nack)"
            ))),
            Ok(Ok(Confirmation::NotRequested)) => Err(ComponentError::transient(
                "rabbitmq: publisher confirms are off on this channel",
            )),
        }
    }
}

fn transient(what: &str, err: impl std::fmt::Display) -> ComponentError {
    ComponentError::transient(format!("rabbitmq {what}: {err}"))
}

#[async_trait]
impl Component for RabbitMqSink {
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
        let channel = self
            .channel()
            .await
            .map_err(|error| BatchError { handled: 0, error })?;
        // Publish all, then await the confirms in order: a failure confirms the prefix.
        let mut pending = Vec::with_capacity(changes.len());
        let mut send_error = None;
        for change in changes {
            match self.publish(&channel, change).await {
                Ok(confirm) => pending.push((confirm, change.lsn)),
                Err(error) => {
                    send_error = Some(error);
                    break;
                }
            }
        }
        let confirmed = confirm_in_order(pending, send_error, |confirm, lsn| {
            self.confirmed(confirm, lsn)
        })
        .await;
        confirmed.map_err(|unconfirmed| {
            // Any failure: the next attempt opens a new connection.
            self.connection = None;
            unconfirmed.error
        })
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        self.channel().await.map(|_| ())
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.connection = None;
        self.channel().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use astha_core::Operation;

    #[test]
    fn config_parses_with_defaults_and_checks_the_template() {
        let c: RabbitMqSinkConfig =
            serde_json::from_str(r#"{"exchange": "cdc", "tables": ["t"], "database": "shop"}"#)
                .unwrap();
        assert_eq!(c.exchange_type, ExchangeType::Topic);
        assert_eq!(c.routing_key, "cdc.{table}.{operation}");
        assert!(c.mandatory);
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.routing_key = "cdc.{tabel}".into();
        assert!(bad.validate().unwrap_err().contains("{tabel}"));
        let mut bad = c.clone();
        bad.exchange = String::new();
        assert!(bad.validate().unwrap_err().contains("exchange"));
        let sink = RabbitMqSink::new(
            c,
            "id",
            Encoder::new(
                astha_core::format::EventFormat::Native,
                astha_core::format::SourceInfo {
                    name: "shop".into(),
                    db: "shop".into(),
                    identity: "id".into(),
                },
            ),
        )
        .unwrap();
        let change = astha_core::Change::bare(1, "orders", Operation::Update);
        assert_eq!(sink.routing_key(&change), "cdc.orders.update");
    }
}
