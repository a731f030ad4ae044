//! The stdout sink: each change as one JSON line ([`Change::to_json`], the line
//! `astha watch` prints) on standard output, in commit order.
//!
//! A batch is written and flushed before it is confirmed, so a durable slot never moves
//! past a line that did not reach the pipe. A closed stdout (the reader exited) is a
//! transient error: the changes stay in the log. The write runs on the blocking pool, as
//! a slow reader can block it.

use std::io::Write;
use std::sync::Arc;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::format::Encoder;
use astha_core::Change;
use async_trait::async_trait;
use serde::Deserialize;

use super::registry::{SinkConfig, SinkContext};

/// Settings of the `stdout` sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Most changes written per call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
}

fn default_max_batch() -> usize {
    500
}

impl Default for StdoutSinkConfig {
    fn default() -> Self {
        StdoutSinkConfig {
            max_batch: default_max_batch(),
        }
    }
}

impl SinkConfig for StdoutSinkConfig {
    const TYPE: &'static str = "stdout";
    const ABOUT: &'static str = "prints each change as one JSON line on standard output";
    // BEGIN and END markers are lines of the stream, around their changes.
    const TRANSACTION_EVENTS: bool = true;

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("max_batch must be > 0".into());
        }
        if ctx.tables.is_empty() {
            return Err("no tables".into());
        }
        Ok(())
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        Ok(Box::new(StdoutSink {
            name: ctx.name.clone(),
            tables: ctx.tables.clone(),
            max_batch: self.max_batch,
            encoder: ctx.encoder()?,
        }))
    }
}

/// Prints changes; see the module docs.
pub struct StdoutSink {
    name: String,
    tables: Vec<String>,
    max_batch: usize,
    encoder: Encoder,
}

async fn print(lines: Vec<u8>) -> Result<(), ComponentError> {
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        out.write_all(&lines).and_then(|_| out.flush())
    })
    .await
    .map_err(|e| ComponentError::transient(format!("stdout writer: {e}")))?
    .map_err(|e| ComponentError::transient(format!("stdout: {e}")))
}

#[async_trait]
impl Component for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        print(self.encoder.json_lines([change])).await
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        print(self.encoder.json_lines(changes.iter().map(|c| &**c)))
            .await
            .map_err(|error| BatchError { handled: 0, error })
    }
}
