//! The connector registry: sink type name (`type = "nats"` in a pipeline file) → its
//! config type, its `validate` and its `build`.
//!
//! A sink type is a [`SinkConfig`]: a serde struct (`deny_unknown_fields`, documented
//! fields, named defaults) with an associated [`SinkConfig::TYPE`] name. Registering it is
//! one line, `registry.register::<MyConfig>()?`; plugin crates do the same on the
//! registry the host passes them. The registry never starts anything itself: it turns a
//! sink's settings into a checked, type-erased [`ParsedSink`], and that into one
//! [`astha_actors::Component`] per source with [`ParsedSink::build`]. The runtime then
//! supervises it like any component: its own durable slot, breaker, retries, dead
//! letters and metrics.
//!
//! Settings reach the registry as a JSON object (a pipeline file's TOML table converts
//! losslessly for the values sinks use: strings, numbers, booleans, arrays, tables);
//! the keys a pipeline reads itself (`type`, `name`, `sources`, `tables`, `format`) are
//! removed before, and arrive through the [`SinkContext`] instead.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use astha_actors::Component;
use astha_core::format::markers::Markers;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use serde::de::DeserializeOwned;

/// What a pipeline knows about one sink on one source, handed to `validate` and `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkContext {
    /// Component name, also the name of its durable slot: unique per database.
    pub name: String,
    /// The source's name in the pipeline (for a single database, its file stem).
    pub source: String,
    /// The source database file.
    pub database: PathBuf,
    /// The database's LSN sequence, `<identity>:<epoch>` ([`super::identity::stream_id`]):
    /// prefix of idempotency keys.
    pub identity: String,
    /// Tables whose changes the component receives, already resolved (no globs).
    pub tables: Vec<String>,
    /// The event format's name (`native`, `debezium`, `cloudevents`).
    pub format: String,
    /// Debezium only: wrap events and keys in `{"schema", "payload"}` (Kafka Connect's
    /// JSON converter with `schemas.enable=true`).
    pub debezium_schemas: bool,
    /// Write BEGIN and END markers around each marked transaction's changes
    /// ([`astha_core::format::markers`]); refused for sink types that cannot place them
    /// ([`SinkConfig::TRANSACTION_EVENTS`]).
    pub transaction_events: bool,
}

impl SinkContext {
    /// The encoder of this context's format, naming this source in events.
    pub fn encoder(&self) -> Result<Encoder, String> {
        let format: EventFormat = self.format.parse()?;
        let db = self
            .database
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.source.clone());
        Ok(Encoder::new(
            format,
            SourceInfo {
                name: self.source.clone(),
                db,
                identity: self.identity.clone(),
            },
        )
        .with_debezium_schemas(self.debezium_schemas)
        .with_transaction_events(
            self.transaction_events
                .then(|| Markers::new(Some(self.tables.clone()))),
        ))
    }
}

impl SinkContext {
    /// A context for tests and embedding: source `db`, format `native`.
    pub fn new(name: &str, database: impl Into<PathBuf>, identity: &str, tables: &[&str]) -> Self {
        SinkContext {
            name: name.into(),
            source: "db".into(),
            database: database.into(),
            identity: identity.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            format: "native".into(),
            debezium_schemas: false,
            transaction_events: false,
        }
    }
}

/// A sink type: its settings as a serde struct, checked by `validate`, turned into a
/// component by `build`.
pub trait SinkConfig: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The name in `type = "..."`.
    const TYPE: &'static str;
    /// One line saying what the sink does, for `astha run --list-sinks` and errors.
    const ABOUT: &'static str;
    /// Whether the sink writes the transaction markers its encoder gives
    /// ([`astha_core::format::Encoder::markers`]); a sink that does not is refused with
    /// `transaction_events = true`, so markers are never asked for and silently missing.
    const TRANSACTION_EVENTS: bool = false;

    /// The event format when neither the sink, its source nor `[defaults]` names one.
    const DEFAULT_FORMAT: &'static str = "native";

    /// Checks the settings as they would run in `ctx`; the message names the field and
    /// the way out. Never does I/O that can block (no connecting).
    fn validate(&self, ctx: &SinkContext) -> Result<(), String>;

    /// The component for `ctx`; called only after [`SinkConfig::validate`] passed. It
    /// connects lazily (in `on_refresh` or its first change), so a system that is down at
    /// start is retried like any transient failure.
    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String>;
}

/// What can go wrong between a pipeline's `[[sinks]]` entry and a component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No sink type of that name is registered.
    #[error("unknown sink type {name:?}; the registered types are: {known}")]
    UnknownType {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// Two registrations of one name.
    #[error("sink type {0:?} is registered twice")]
    Duplicate(String),
    /// The settings do not parse or do not validate.
    #[error("sink {sink:?} (type {kind}): {message}")]
    Config {
        /// The sink's name.
        sink: String,
        /// Its type.
        kind: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

type Parse = fn(serde_json::Value) -> Result<Box<dyn ErasedSink>, String>;

struct Entry {
    about: &'static str,
    default_format: &'static str,
    parse: Parse,
}

/// Sink type names → config types; see the module docs.
pub struct SinkRegistry {
    types: BTreeMap<&'static str, Entry>,
}

impl fmt::Debug for SinkRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl Default for SinkRegistry {
    /// The shipped sinks: see [`SinkRegistry::builtin`].
    fn default() -> Self {
        Self::builtin()
    }
}

impl SinkRegistry {
    /// A registry with no types (for hosts that want only their own).
    pub fn empty() -> Self {
        SinkRegistry {
            types: BTreeMap::new(),
        }
    }

    /// The sinks this crate ships: `stdout`, `file`, `sse`, `websocket`, `nats`,
    /// `webhook`, `postgres`, `rabbitmq`, `kafka`, `iceberg`.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        for register in BUILTIN {
            register(&mut registry).expect("built-in sink types have distinct names");
        }
        registry
    }

    /// Registers the sink type `T` under [`SinkConfig::TYPE`]; a name can be taken once.
    pub fn register<T: SinkConfig>(&mut self) -> Result<(), RegistryError> {
        if self.types.contains_key(T::TYPE) {
            return Err(RegistryError::Duplicate(T::TYPE.into()));
        }
        self.types.insert(
            T::TYPE,
            Entry {
                about: T::ABOUT,
                default_format: T::DEFAULT_FORMAT,
                parse: parse_as::<T>,
            },
        );
        Ok(())
    }

    /// The registered types with their one-line descriptions, by name.
    pub fn types(&self) -> Vec<(&'static str, &'static str)> {
        self.types.iter().map(|(n, e)| (*n, e.about)).collect()
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.types.contains_key(kind)
    }

    /// Parses the settings of sink `sink` of type `kind` (unknown fields are errors).
    pub fn parse(
        &self,
        sink: &str,
        kind: &str,
        settings: serde_json::Value,
    ) -> Result<ParsedSink, RegistryError> {
        let entry = self
            .types
            .get(kind)
            .ok_or_else(|| RegistryError::UnknownType {
                name: kind.into(),
                known: self.types.keys().copied().collect::<Vec<_>>().join(", "),
            })?;
        let config = (entry.parse)(settings).map_err(|message| RegistryError::Config {
            sink: sink.into(),
            kind: kind.into(),
            message,
        })?;
        Ok(ParsedSink {
            sink: sink.into(),
            kind: kind.into(),
            default_format: entry.default_format,
            config,
        })
    }
}

/// One sink's parsed settings, ready to validate and build for each source.
pub struct ParsedSink {
    sink: String,
    kind: String,
    default_format: &'static str,
    config: Box<dyn ErasedSink>,
}

impl fmt::Debug for ParsedSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedSink")
            .field("sink", &self.sink)
            .field("kind", &self.kind)
            .field("config", &self.config.debug())
            .finish()
    }
}

impl ParsedSink {
    /// The sink type's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The type's format when none is configured ([`SinkConfig::DEFAULT_FORMAT`]).
    pub fn default_format(&self) -> &'static str {
        self.default_format
    }

    /// Checks the settings for `ctx` (what `astha run --check` does).
    pub fn validate(&self, ctx: &SinkContext) -> Result<(), RegistryError> {
        ctx.encoder().map_err(|m| self.error(m))?;
        if ctx.transaction_events && !self.config.transaction_events() {
            return Err(self.error(format!(
                "sink type {:?} does not write transaction markers; remove \
                 `transaction_events` (docs/FORMATS.md, \"Transactions\", lists the sinks \
                 that do)",
                self.kind
            )));
        }
        self.config.validate(ctx).map_err(|m| self.error(m))
    }

    /// Validates, then builds the component for `ctx`.
    pub fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, RegistryError> {
        self.validate(ctx)?;
        self.config.build(ctx).map_err(|m| self.error(m))
    }

    fn error(&self, message: String) -> RegistryError {
        RegistryError::Config {
            sink: self.sink.clone(),
            kind: self.kind.clone(),
            message,
        }
    }
}

/// [`SinkConfig`] without its associated items, so configs of different types can share
/// a map.
trait ErasedSink: Send + Sync {
    fn validate(&self, ctx: &SinkContext) -> Result<(), String>;
    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String>;
    fn debug(&self) -> String;
    fn transaction_events(&self) -> bool;
}

impl<T: SinkConfig> ErasedSink for T {
    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        SinkConfig::validate(self, ctx)
    }
    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        SinkConfig::build(self, ctx)
    }
    fn debug(&self) -> String {
        format!("{self:?}")
    }
    fn transaction_events(&self) -> bool {
        T::TRANSACTION_EVENTS
    }
}

fn parse_as<T: SinkConfig>(settings: serde_json::Value) -> Result<Box<dyn ErasedSink>, String> {
    let config: T = serde_json::from_value(settings).map_err(|e| e.to_string())?;
    Ok(Box::new(config))
}

/// Registers one sink type (the shape of [`SinkRegistry::register`]).
type Register = fn(&mut SinkRegistry) -> Result<(), RegistryError>;

/// The shipped sink types: one line per type; a type behind a cargo feature is there only
/// when its feature is on.
const BUILTIN: &[Register] = &[
    SinkRegistry::register::<super::stdout::StdoutSinkConfig>,
    SinkRegistry::register::<super::file::FileSinkConfig>,
    SinkRegistry::register::<super::live::SseSinkConfig>,
    SinkRegistry::register::<super::live::WebSocketSinkConfig>,
    #[cfg(feature = "nats")]
    SinkRegistry::register::<super::nats::NatsSinkConfig>,
    #[cfg(feature = "webhook")]
    SinkRegistry::register::<super::webhook::WebhookSinkConfig>,
    #[cfg(feature = "postgres")]
    SinkRegistry::register::<super::postgres::PostgresSinkConfig>,
    #[cfg(feature = "rabbitmq")]
    SinkRegistry::register::<super::rabbitmq::RabbitMqSinkConfig>,
    #[cfg(feature = "lakehouse")]
    SinkRegistry::register::<super::iceberg::IcebergSinkConfig>,
    #[cfg(feature = "kafka")]
    SinkRegistry::register::<super::kafka::KafkaSinkConfig>,
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    #[cfg(all(
        feature = "nats",
        feature = "webhook",
        feature = "postgres",
        feature = "rabbitmq",
        feature = "kafka",
        feature = "lakehouse"
    ))]
    fn builtin_types_are_registered_once() {
        let mut registry = SinkRegistry::builtin();
        let names: Vec<_> = registry.types().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "file",
                "iceberg",
                "kafka",
                "nats",
                "postgres",
                "rabbitmq",
                "sse",
                "stdout",
                "webhook",
                "websocket"
            ]
        );
        assert_eq!(
            registry.register::<super::super::file::FileSinkConfig>(),
            Err(RegistryError::Duplicate("file".into()))
        );
    }

    #[test]
    #[cfg(all(
        feature = "nats",
        feature = "webhook",
        feature = "postgres",
        feature = "rabbitmq",
        feature = "kafka",
        feature = "lakehouse"
    ))]
    fn unknown_types_and_fields_are_named() {
        let registry = SinkRegistry::builtin();
        let err = registry.parse("out", "kafak", json!({})).unwrap_err();
        assert!(err.to_string().contains("\"kafak\""), "{err}");
        assert!(
            err.to_string().contains(
                "file, iceberg, kafka, nats, postgres, rabbitmq, sse, stdout, webhook, websocket"
            ),
            "{err}"
        );
        let err = registry
            .parse("out", "file", json!({"path": "x.jsonl", "max_byte": 3}))
            .unwrap_err();
        assert!(err.to_string().contains("max_byte"), "{err}");
        assert!(
            err.to_string().contains("sink \"out\" (type file)"),
            "{err}"
        );
    }

    #[test]
    #[cfg(all(feature = "nats", feature = "webhook"))]
    fn validate_runs_against_the_context() {
        let registry = SinkRegistry::builtin();
        let hook = registry
            .parse("hook", "webhook", json!({"url": "ftp://x", "secret": "s"}))
            .unwrap();
        let ctx = SinkContext::new("hook", "db.sqlite", "id", &["a"]);
        let err = hook.validate(&ctx).unwrap_err().to_string();
        assert!(err.contains("url must start with http"), "{err}");
        let nats = registry
            .parse("bus", "nats", json!({"stream": {"create": {"name": "S"}}}))
            .unwrap();
        let component = nats
            .build(&SinkContext::new("bus", "db.sqlite", "id", &["a"]))
            .unwrap();
        assert_eq!(component.name(), "bus");
        assert_eq!(component.subscriptions(), ["a"]);
        let err = nats
            .validate(&SinkContext::new("bus", "db.sqlite", "id", &[]))
            .unwrap_err();
        assert!(err.to_string().contains("no tables"), "{err}");
    }
}
