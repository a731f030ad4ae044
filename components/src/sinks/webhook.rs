//! The webhook sink: POSTs changes as a JSON array to a URL.
//!
//! Each request carries:
//! - body: `[<change>, ...]`, each [`Change::to_json`] (the JSON `astha watch` prints),
//!   in commit order;
//! - `X-Astha-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes under the
//!   configured secret, so the receiver can check the sender and the body;
//! - `X-Astha-Delivery: <database identity>:<log epoch>:<first lsn>-<last lsn>`: the same for every
//!   retry of the same changes, for receivers that de-duplicate.
//!
//! A 2xx answer confirms the changes. A timeout, a refused connection, 408, 429 and 5xx
//! are transient (the supervisor retries with backoff, then dead-letters); any other 4xx
//! means the receiver rejects the payload for good and is permanent. Delivery is at least
//! once: a receiver that stored the body but whose answer was lost sees it again.
//!
//! A batch is what the runtime hands over: one change through [`Component::on_event`],
//! up to [`WebhookSinkConfig::max_batch`] through [`Component::on_batch`].

use std::sync::Arc;
use std::time::Duration;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::config::duration_serde;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use astha_core::Change;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::registry::{SinkConfig, SinkContext};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Astha-Signature";
/// The delivery-id header's name.
pub const DELIVERY_HEADER: &str = "X-Astha-Delivery";

/// Configuration of a [`WebhookSink`].
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Component name; also the name of its slot.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// Tables whose changes are sent (in a pipeline: the sink's `tables`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// HMAC-SHA256 key of the signature header.
    pub secret: String,
    /// Limit on one whole request (connect, send, answer). Keep it under the
    /// supervisor's `event_timeout`, which bounds the whole call.
    #[serde(with = "duration_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Limit on establishing the connection.
    #[serde(with = "duration_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Most changes in one request when the runtime delivers batches.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// With `format = "cloudevents"`: `structured` (default; a batch is one
    /// `application/cloudevents-batch+json` array) or `binary` (one change per request,
    /// its attributes as `ce-*` headers and the native event as the body).
    #[serde(default)]
    pub cloudevents_mode: CloudEventsMode,
}

/// How CloudEvents travel over HTTP (the CloudEvents HTTP binding's two modes).
pub type CloudEventsMode = astha_core::format::cloudevents::Mode;

// The secret stays out of logs.
impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("tables", &self.tables)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_batch", &self.max_batch)
            .field("cloudevents_mode", &self.cloudevents_mode)
            .finish()
    }
}

fn default_name() -> String {
    "webhook_sink".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_max_batch() -> usize {
    100
}

impl WebhookSinkConfig {
    /// A config with default name, timeouts and batch size.
    pub fn new(url: &str, secret: &str, tables: &[&str]) -> Self {
        WebhookSinkConfig {
            name: default_name(),
            url: url.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            secret: secret.into(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            max_batch: default_max_batch(),
            cloudevents_mode: CloudEventsMode::default(),
        }
    }

    /// Checks the config; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("webhook sink: name is empty".into());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "webhook sink {}: url must start with http:// or https://",
                self.name
            ));
        }
        if self.tables.is_empty() {
            return Err(format!("webhook sink {}: no tables", self.name));
        }
        if self.secret.is_empty() {
            return Err(format!("webhook sink {}: secret is empty", self.name));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(format!("webhook sink {}: timeouts must be > 0", self.name));
        }
        if self.max_batch == 0 {
            return Err(format!("webhook sink {}: max_batch must be > 0", self.name));
        }
        Ok(())
    }
}

impl SinkConfig for WebhookSinkConfig {
    const TYPE: &'static str = "webhook";
    const ABOUT: &'static str = "POSTs changes as a signed JSON array to a URL";

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        WebhookSinkConfig::validate(&self.for_context(ctx))
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(
            WebhookSink::new(self.for_context(ctx), &ctx.identity)?.with_encoder(ctx.encoder()?),
        ))
    }
}

impl WebhookSinkConfig {
    /// This config with the name and tables of `ctx`.
    fn for_context(&self, ctx: &SinkContext) -> WebhookSinkConfig {
        let mut config = self.clone();
        config.name = ctx.name.clone();
        config.tables = ctx.tables.clone();
        config
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`: the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a [`SIGNATURE_HEADER`] value in constant time (for receivers and tests).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// POSTs changes to a webhook; see the module docs.
pub struct WebhookSink {
    config: WebhookSinkConfig,
    encoder: Encoder,
    identity: String,
    client: reqwest::Client,
}

impl WebhookSink {
    /// A sink with this config; `database_identity` prefixes the delivery id (pass
    /// [`super::identity::stream_id`] of the database).
    pub fn new(config: WebhookSinkConfig, database_identity: &str) -> Result<Self, String> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| format!("webhook sink {}: http client: {e}", config.name))?;
        let encoder = Encoder::new(
            EventFormat::Native,
            SourceInfo {
                name: config.name.clone(),
                db: config.name.clone(),
                identity: database_identity.to_string(),
            },
        );
        Ok(WebhookSink {
            config,
            encoder,
            identity: database_identity.to_string(),
            client,
        })
    }

    /// Sends in `encoder`'s format (native by default): a JSON array of its events.
    pub fn with_encoder(mut self, encoder: Encoder) -> Self {
        self.encoder = encoder;
        self
    }

    /// A batch of CloudEvents is sent in the specification's batched mode.
    fn content_type(&self) -> &'static str {
        match self.encoder.format() {
            EventFormat::CloudEvents => "application/cloudevents-batch+json",
            _ => "application/json",
        }
    }

    /// Sends one request with `changes`; Ok confirms all of them.
    /// Whether each change goes alone, as a binary-mode CloudEvent.
    fn binary_cloudevents(&self) -> bool {
        self.encoder.format() == EventFormat::CloudEvents
            && self.config.cloudevents_mode == CloudEventsMode::Binary
    }

    async fn post(&self, changes: &[&Change]) -> Result<(), ComponentError> {
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return Ok(());
        };
        let mut request = self.client.post(&self.config.url);
        let body = if self.binary_cloudevents() {
            debug_assert_eq!(changes.len(), 1, "binary mode sends one change per request");
            for (name, value) in
                astha_core::format::cloudevents::binary_headers(first, self.encoder.source())
            {
                request = request.header(name, value);
            }
            request = request.header(
                reqwest::header::CONTENT_TYPE,
                astha_core::format::cloudevents::DATA_CONTENT_TYPE,
            );
            serde_json::to_vec(&first.to_json())
        } else {
            request = request.header(reqwest::header::CONTENT_TYPE, self.content_type());
            let body: Vec<serde_json::Value> =
                changes.iter().map(|c| self.encoder.encode(c)).collect();
            serde_json::to_vec(&body)
        }
        .map_err(|e| ComponentError::permanent(format!("encode: {e}")))?;
        let response = request
            .header(
                SIGNATURE_HEADER,
                signature(self.config.secret.as_bytes(), &body),
            )
            .header(
                DELIVERY_HEADER,
                format!("{}:{}-{}", self.identity, first.lsn, last.lsn),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| ComponentError::transient(format!("webhook post: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!(
            "webhook answered {status} for lsn {}..={}",
            first.lsn, last.lsn
        );
        tracing::warn!(sink = %self.config.name, %status, "webhook rejected a delivery");
        if status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(ComponentError::transient(message))
        } else {
            Err(ComponentError::permanent(message))
        }
    }
}

#[async_trait]
impl Component for WebhookSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.config.tables.clone()
    }

    fn max_batch(&self) -> usize {
        if self.binary_cloudevents() {
            1
        } else {
            self.config.max_batch
        }
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.post(&[change]).await
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        let refs: Vec<&Change> = changes.iter().map(|c| &**c).collect();
        match self.post(&refs).await {
            Ok(()) => Ok(()),
            // A permanent rejection of a batch would dead-letter only its first change
            // and retry the rest, so fall back to one change per request to find
            // exactly which ones the receiver refuses.
            Err(ComponentError::Permanent(_)) if changes.len() > 1 => {
                for (handled, change) in changes.iter().enumerate() {
                    self.post(&[change])
                        .await
                        .map_err(|error| BatchError { handled, error })?;
                }
                Ok(())
            }
            Err(error) => Err(BatchError { handled: 0, error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector_and_verifies() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify(b"Jefe", b"x", "md5=00"));
    }

    #[test]
    fn config_is_validated_and_parsed_with_defaults() {
        let c: WebhookSinkConfig = serde_json::from_str(
            r#"{"url": "http://127.0.0.1:9/hook", "tables": ["a"], "secret": "s",
                "timeout": "2s"}"#,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.max_batch, 100);
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("\"s\""), "secret not logged");
        let mut bad = c.clone();
        bad.url = "ftp://x".into();
        assert!(bad.validate().unwrap_err().contains("url"));
        assert!(serde_json::from_str::<WebhookSinkConfig>(
            r#"{"url": "http://x", "tables": ["a"], "secret": "s", "retries": 3}"#
        )
        .is_err());
    }
}
