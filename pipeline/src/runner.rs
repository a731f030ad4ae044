//! Starting and stopping a checked [`Plan`]: one Astha engine per source database, each
//! sink a supervised component with its own durable slot in that database.
//!
//! It promises that a start either brings up every source and sink or stops what it had
//! started and returns the error, and that [`Running::stop`] stops every source even when
//! one fails to stop (the first error is returned). Stopping is graceful: deliveries in
//! flight finish, confirmed positions are written, the engines stop. It never installs
//! signal handlers: the command line maps SIGINT, SIGTERM and SIGHUP to
//! [`Running::stop`].
//!
//! Engines join the caller's actix system, so call [`Plan::start`] from inside one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use astha_actors::{Astha, Component};
use astha_components::sinks::identity;
use astha_core::config::AsthaConfig;

use crate::error::PipelineError;
use crate::plan::{compile_shapes, Plan, SinkPlan, SourcePlan};
use crate::shape::Shaped;
use crate::window::{WindowCounters, Windowed};

/// A started pipeline.
pub struct Running {
    sources: Vec<RunningSource>,
}

struct RunningSource {
    name: String,
    astha: Astha,
    /// Per sink: changes its row filters dropped.
    dropped: Vec<(String, Arc<AtomicU64>)>,
    /// Per windowed sink: its window's counters.
    windows: Vec<(String, Arc<WindowCounters>)>,
}

/// What one sink did on one source, for the summary printed at stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSummary {
    pub source: String,
    pub sink: String,
    /// Changes the sink confirmed (including those its filters dropped).
    pub delivered: u64,
    /// Changes its row filters dropped.
    pub filtered: u64,
    /// Changes moved to the dead-letter table.
    pub dead_lettered: u64,
}

/// Log rows of one source that no sink could read, moved to its dead-letter table.
#[derive(Debug, Clone)]
pub struct SourceDeadLetters {
    pub source: String,
    /// The source's database, where `astha dead-letters list` finds them.
    pub database: std::path::PathBuf,
    pub rows: u64,
}

impl Plan {
    /// Starts every source with `engine` as its base configuration (its `database`,
    /// `monitored_tables` and `batch_size` are set per source).
    pub async fn start(self, engine: &AsthaConfig) -> Result<Running, PipelineError> {
        let mut running = Running {
            sources: Vec::new(),
        };
        for source in self.sources {
            match start_source(source, engine).await {
                Ok(started) => running.sources.push(started),
                Err(err) => {
                    if let Err(stop_err) = running.stop().await {
                        tracing::warn!(error = %stop_err, "stopping after a failed start");
                    }
                    return Err(err);
                }
            }
        }
        Ok(running)
    }
}

async fn start_source(
    source: SourcePlan,
    engine: &AsthaConfig,
) -> Result<RunningSource, PipelineError> {
    let name = source.name.clone();
    let engine_err = |error| PipelineError::Engine {
        source_name: name.clone(),
        error,
    };
    let mut config = engine.clone();
    config.database = source.database.clone();
    config.monitored_tables = source.install.clone();
    if let Some(batch_size) = source.batch_size {
        config.batch_size = batch_size;
    }
    if let Some(keep_for) = source.keep_for {
        config.retention.keep_for = keep_for;
    }
    if let Some(keep_rows) = source.keep_rows {
        config.retention.keep_rows = keep_rows;
    }
    let config_log_table = config.log_table.clone();
    let astha = Astha::new(config).map_err(engine_err)?;
    let identity = astha
        .store()
        .write_blocking(|conn| identity::stream_id(conn, &config_log_table))
        .map_err(|e| engine_err(e.into()))?;
    astha.start().map_err(engine_err)?;
    let mut started = RunningSource {
        name: name.clone(),
        astha,
        dropped: Vec::new(),
        windows: Vec::new(),
    };
    for sink in source.sinks {
        if let Err(error) = start_sink(&mut started, sink, &identity, &config_log_table).await {
            // Whatever step failed, the engine started above stops with it: no slot
            // lease, poller or connection outlives a start that returned an error.
            if let Err(stop_err) = started.astha.stop().await {
                tracing::warn!(source = %name, error = %stop_err, "stopping after a failed sink start");
            }
            return Err(error);
        }
    }
    Ok(started)
}

/// Builds one sink (window, shapes, start position) and registers it with the source's
/// engine. On error it returns without stopping anything: [`start_source`] stops the
/// engine, whichever step failed.
async fn start_sink(
    started: &mut RunningSource,
    sink: SinkPlan,
    identity: &str,
    log_table: &str,
) -> Result<(), PipelineError> {
    let name = started.name.clone();
    let engine_err = |error| PipelineError::Engine {
        source_name: name.clone(),
        error,
    };
    let mut context = sink.context.clone();
    context.identity = identity.to_string();
    if sink.window.is_some() {
        // Window results are numbered from 1: their own id space, per sink.
        context.identity = format!("{identity}:w:{}", context.name);
    }
    let mut component = sink.sink.build(&context)?;
    if let Some(window) = sink.window.clone() {
        let store = started.astha.store().clone();
        let mut windowed = Windowed::new(component, store, &context.name, window)
            .map_err(|e| PipelineError::Invalid(format!("sink {:?}: {e}", context.name)))?;
        windowed
            .load_state()
            .await
            .map_err(|e| PipelineError::Invalid(format!("sink {:?}: {e}", context.name)))?;
        started
            .windows
            .push((context.name.clone(), windowed.counters()));
        component = Box::new(windowed);
    }
    let shapes = compile_shapes(&sink.shapes).map_err(|e| {
        PipelineError::Invalid(format!("sink {:?} on source {name:?}: {e}", context.name))
    })?;
    let shaped = Shaped::new(component, shapes);
    let component: Box<dyn Component> = if shaped.shapes_anything() {
        started
            .dropped
            .push((context.name.clone(), shaped.dropped()));
        Box::new(shaped)
    } else {
        shaped.into_inner()
    };
    if let Some(start_at) = sink.start_at.clone() {
        let slot = context.name.clone();
        let log_table = log_table.to_string();
        started
            .astha
            .store()
            .write_blocking(move |conn| start_at.create_slot(conn, &log_table, &slot))
            .map_err(|error| engine_err(error.into()))?;
    }
    started
        .astha
        .register_component_with(component, sink.snapshot)
        .await
        .map_err(engine_err)?;
    tracing::info!(source = %name, sink = %context.name, tables = ?context.tables, "sink started");
    Ok(())
}

impl Running {
    /// The sources' names, in start order.
    pub fn sources(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name.as_str()).collect()
    }

    /// The engine of source `name` (for status and HTTP endpoints).
    pub fn engine(&self, name: &str) -> Option<&Astha> {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.astha)
    }

    /// Per sink and source: what it delivered, filtered and dead-lettered so far.
    pub fn summary(&self) -> Vec<SinkSummary> {
        let mut out = Vec::new();
        for source in &self.sources {
            for component in source.astha.all_components() {
                let filtered = source
                    .dropped
                    .iter()
                    .find(|(n, _)| *n == component.name)
                    .map_or(0, |(_, d)| d.load(Ordering::Relaxed));
                out.push(SinkSummary {
                    source: source.name.clone(),
                    sink: component.name.clone(),
                    delivered: component.delivered,
                    filtered,
                    dead_lettered: component.dead_letters,
                });
            }
        }
        out
    }

    /// Per source: log rows that could not be read as changes (a row edited by hand, an
    /// unknown operation) and were moved to the dead-letter table before any sink saw
    /// them, so far. No sink's count includes them.
    pub fn source_dead_letters(&self) -> Vec<SourceDeadLetters> {
        self.sources
            .iter()
            .map(|s| SourceDeadLetters {
                source: s.name.clone(),
                database: s.astha.config().database.clone(),
                rows: s.astha.stats().malformed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Per sink and source with row filters: (source, sink, changes its filters
    /// dropped so far).
    pub fn filter_counters(&self) -> Vec<(String, String, Arc<AtomicU64>)> {
        self.sources
            .iter()
            .flat_map(|s| {
                s.dropped
                    .iter()
                    .map(|(sink, c)| (s.name.clone(), sink.clone(), c.clone()))
            })
            .collect()
    }

    /// Per windowed sink and source: `(source, sink, counters)` (results emitted, late
    /// changes, windows evicted, windows open).
    pub fn window_counters(&self) -> Vec<(String, String, Arc<WindowCounters>)> {
        self.sources
            .iter()
            .flat_map(|s| {
                s.windows
                    .iter()
                    .map(|(sink, c)| (s.name.clone(), sink.clone(), c.clone()))
            })
            .collect()
    }

    /// Waits until a source stops delivering for good (`Astha::failed`: its database
    /// file was deleted or replaced, or its log's LSN sequence restarted under it) and
    /// returns its name and why.
    pub async fn failed(&self) -> (String, String) {
        loop {
            for source in &self.sources {
                if let Some(reason) = source.astha.failure() {
                    return (source.name.clone(), reason);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops every source gracefully; see the module docs.
    pub async fn stop(self) -> Result<(), PipelineError> {
        let mut first = None;
        for source in self.sources {
            if let Err(error) = source.astha.stop().await {
                tracing::warn!(source = %source.name, %error, "source did not stop cleanly");
                first.get_or_insert(PipelineError::Engine {
                    source_name: source.name,
                    error,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}
