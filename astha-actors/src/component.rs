//! The component contract: the Rust form of seed 000's `Subscriber[T]` (docs/SEEDS.md).
//!
//! A component declares its name, version and the tables it subscribes to, and handles
//! changes one at a time, in commit order. It is owned by its supervisor, which calls it
//! from one task at a time (hence `&mut self`), retries what fails, and never lets one
//! component hold up another. Decode rows with [`astha_core::Change::typed`] (the
//! lakehouse's `astha_components::registry::RegistryEvent::decode` builds on it for
//! several tables).
//!
//! Handlers run on the actor system's thread: a component that does blocking work
//! (SQLite, files) must move it off that thread, e.g. with `tokio::task::spawn_blocking`.

use std::sync::Arc;

use astha_core::Change;
use async_trait::async_trait;
use serde::Serialize;

/// Why a component could not handle a change (or a health check, or a refresh).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    /// May succeed if tried again (a lock, a timeout, a full queue downstream). Counts
    /// toward the retry limit and the circuit breaker.
    #[error("transient: {0}")]
    Transient(String),
    /// Will fail the same way every time (a row the component cannot accept). The change
    /// goes straight to the dead-letter table; the breaker is not affected.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ComponentError {
    /// A retriable error.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        ComponentError::Transient(message.to_string())
    }

    /// A non-retriable error.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        ComponentError::Permanent(message.to_string())
    }

    /// True for [`ComponentError::Transient`].
    pub fn is_retriable(&self) -> bool {
        matches!(self, ComponentError::Transient(_))
    }
}

impl From<astha_core::CoreError> for ComponentError {
    fn from(err: astha_core::CoreError) -> Self {
        if err.is_retriable() {
            ComponentError::Transient(err.to_string())
        } else {
            ComponentError::Permanent(err.to_string())
        }
    }
}

/// Why [`Component::on_batch`] stopped: the first `handled` changes were confirmed, the
/// next one failed with `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub handled: usize,
    pub error: ComponentError,
}

/// A consumer of changes, supervised by Astha.
#[async_trait]
pub trait Component: Send + 'static {
    /// Unique name; also the name of the component's durable slot.
    fn name(&self) -> &str;

    /// Whether the component's slot outlives the engine. A durable slot (the default)
    /// keeps the position across restarts and holds log rows until the component has
    /// them. A non-durable one (a live view, a throwaway watcher) is leased
    /// ([`astha_core::lease`]): it is dropped at a graceful stop, and by any engine's
    /// janitor once the lease expires after a crash, so it never holds cleanup back.
    fn durable(&self) -> bool {
        true
    }

    /// Version, shown in component info.
    fn version(&self) -> &str {
        "0.1.0"
    }

    /// Tables whose changes this component receives, unless the configuration's
    /// `subscriptions` names the component: then it receives the tables listed there.
    fn subscriptions(&self) -> Vec<String>;

    /// Handles one change. Returning `Ok` confirms it: the component's slot may move past it.
    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError>;

    /// How many changes one [`Component::on_batch`] call may receive. 1 (the default)
    /// means the supervisor calls `on_event` once per change; more lets a component
    /// pipeline (publish several, then await their acknowledgements).
    fn max_batch(&self) -> usize {
        1
    }

    /// Handles consecutive changes of one delivery, in order. Returning `Ok` confirms all
    /// of them; a [`BatchError`] confirms the first `handled` and fails the next one (the
    /// rest are delivered again). A panic or timeout confirms none of the batch. The
    /// default calls `on_event` for each change.
    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        for (handled, change) in changes.iter().enumerate() {
            if let Err(error) = self.on_event(change).await {
                return Err(BatchError { handled, error });
            }
        }
        Ok(())
    }

    /// Reports whether the component can take changes. Probed while its breaker is half-open.
    async fn on_health(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Rebuilds the component's state from the registry: called when it is registered,
    /// after a handler timed out or panicked, and when it stayed unhealthy too long.
    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Called once when the component stops gracefully (Astha stopping — `astha run` and
    /// `watch` on SIGTERM, SIGINT or SIGHUP — or the component unregistered), after its
    /// last delivery was confirmed and its position written: the place to finish work
    /// kept between deliveries (the Iceberg mirror commits its staged changes here).
    /// Never called after a crash, nor while a delivery is still in the component's hands
    /// (its stop drain timed out), so nothing may depend on it for correctness: what it
    /// would finish must be durable for the next start. Bounded by the event timeout; an
    /// error, panic or timeout is logged and changes no position.
    async fn on_stop(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// What a component reports about itself, as shown by `component_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Taking changes.
    Active,
    /// Its breaker is open or half-open: changes wait in the log.
    Unhealthy,
    /// Marked unavailable by the host with `update_component_health`.
    Disabled,
    /// Unregistered or stopped.
    Stopped,
}

impl ComponentStatus {
    /// Parses a status name, as the host passes it to `update_component_health`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "unhealthy" | "error" => Some(Self::Unhealthy),
            "disabled" | "inactive" => Some(Self::Disabled),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}
