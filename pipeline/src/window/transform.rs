//! [`Windowed`]: a component that turns the changes it is given into window results and
//! hands those to the sink it wraps.
//!
//! Per delivered batch it (1) loads the state if it has none (first batch, or after a
//! failure), (2) skips changes at or below the state's `applied_lsn` (a re-delivery after
//! a crash: they are in the state already), (3) applies the others in order
//! ([`super::state`]), (4) hands the results to the inner sink and awaits it, (5) writes
//! the state and `applied_lsn` in one transaction ([`super::durable`]) on the store's
//! write thread, and only then confirms the batch. A crash before (5) leaves the stored
//! state of the previous batch: the batch is delivered again and gives the same results
//! with the same numbers, so a sink sees at most a duplicate (same id), never a gap or a
//! double count. Any failure drops the in-memory state, which is reloaded.
//!
//! A result is a [`Change`] of the table `window.table` (default: the sink's name), an
//! INSERT for a window's first result and an UPDATE for later ones, whose after-image
//! holds [`super::config::WindowConfig::result_columns`]; a session merged away (its id
//! gone) has its last result retracted by a DELETE with that result as before-image. Its LSN is the result's number
//! (1, 2, ...), and the runner gives the sink its own identity, so message ids
//! (`<identity>:<number>`) are unique and the same on a re-delivery.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use astha_actors::store::Store;
use astha_actors::{BatchError, Component, ComponentError};
use astha_core::change::{Change, Operation, Row};
use astha_core::schema::TableSchema;
use async_trait::async_trait;

use super::config::{Image, WindowConfig};
use super::durable;
use super::key::KeyExpr;
use super::state::{Contribution, Emission, Input, Windows};

/// What a running window transform counts (also stored with its state).
#[derive(Debug, Default)]
pub struct WindowCounters {
    /// Results handed to the sink (re-deliveries included).
    pub emitted: AtomicU64,
    /// Window assignments refused because the window had closed (late changes).
    pub late: AtomicU64,
    /// Windows closed early by `max_open_windows`.
    pub evicted: AtomicU64,
    /// Open windows after the last batch.
    pub open: AtomicU64,
}

/// A window transform in front of a sink; see the module docs.
pub struct Windowed {
    inner: Box<dyn Component>,
    store: Store,
    /// The state's name in the store: the sink's name.
    name: String,
    config: WindowConfig,
    /// Fingerprint of the settings the state is built with.
    settings: String,
    key: KeyExpr,
    /// Per aggregate: the operations it takes (empty: all).
    ops: Vec<Vec<Operation>>,
    schema: Arc<TableSchema>,
    table: Arc<str>,
    windows: Option<Windows>,
    counters: Arc<WindowCounters>,
    /// Test hook: fail the next batch after the sink took its results, before the
    /// state is written (a crash at the worst moment).
    fail_before_commit: bool,
}

impl Windowed {
    /// Wraps `inner`; the state is kept in `store` under `name`.
    pub fn new(
        inner: Box<dyn Component>,
        store: Store,
        name: &str,
        config: WindowConfig,
    ) -> Result<Windowed, String> {
        config.validate()?;
        let key = KeyExpr::new(config.key.as_deref())?;
        let table: Arc<str> = Arc::from(config.table.clone().unwrap_or_else(|| name.to_string()));
        let schema = Arc::new(TableSchema {
            id: 0,
            table: table.to_string(),
            columns: config.result_columns(),
            primary_key: vec!["window_key".into(), "window_start".into()],
            exact: Vec::new(),
        });
        let ops = config
            .aggregates
            .iter()
            .map(|a| a.ops.iter().filter_map(|o| Operation::parse(o)).collect())
            .collect();
        Ok(Windowed {
            inner,
            store,
            name: name.to_string(),
            settings: fingerprint(&config),
            config,
            key,
            ops,
            schema,
            table,
            windows: None,
            counters: Arc::new(WindowCounters::default()),
            fail_before_commit: false,
        })
    }

    /// The transform's counters.
    pub fn counters(&self) -> Arc<WindowCounters> {
        self.counters.clone()
    }

    /// Test hook: the next batch fails after its results were handed to the sink and
    /// before the state is written.
    #[doc(hidden)]
    pub fn fail_next_commit(&mut self) {
        self.fail_before_commit = true;
    }

    /// Loads the stored state now (off the executor), so a start refuses a state stored
    /// under other settings instead of failing every delivery.
    pub async fn load_state(&mut self) -> Result<(), String> {
        self.load().await.map_err(|e| match e {
            ComponentError::Transient(m) | ComponentError::Permanent(m) => m,
        })
    }

    async fn load(&mut self) -> Result<(), ComponentError> {
        if self.windows.is_some() {
            return Ok(());
        }
        let (name, settings, config) = (
            self.name.clone(),
            self.settings.clone(),
            self.config.clone(),
        );
        let windows = self
            .store
            .write(move |conn| {
                let mut windows = Windows::new(config);
                durable::load(conn, &name, &settings, &mut windows)?;
                Ok(windows)
            })
            .await?;
        self.counters
            .late
            .store(windows.progress.late, Ordering::Relaxed);
        self.counters
            .evicted
            .store(windows.progress.evicted, Ordering::Relaxed);
        self.windows = Some(windows);
        Ok(())
    }

    /// The input of the state machine for one change.
    fn input(&mut self, change: &Change) -> Result<Input, ComponentError> {
        let key = self.key.key(change).map_err(ComponentError::permanent)?;
        let values = self
            .config
            .aggregates
            .iter()
            .zip(&self.ops)
            .map(|(agg, ops)| -> Contribution {
                if !ops.is_empty() && !ops.contains(&change.op) {
                    return None;
                }
                let Some(column) = &agg.column else {
                    return Some(None);
                };
                let image = match agg.image {
                    Image::After => change.after.as_ref(),
                    Image::Before => change.before.as_ref(),
                }?;
                Some(Some(
                    image
                        .get(column)
                        .cloned()
                        .unwrap_or(astha_core::Value::Null),
                ))
            })
            .collect();
        Ok(Input {
            lsn: change.lsn,
            time_ms: change.timestamp_ms,
            key,
            values,
        })
    }

    fn result(&self, e: Emission) -> Arc<Change> {
        let row = Row::new(self.schema.clone(), e.values).expect("one value per result column");
        let (op, before, after) = match (e.retract, e.first) {
            (true, _) => (Operation::Delete, Some(row), None),
            (false, true) => (Operation::Insert, None, Some(row)),
            (false, false) => (Operation::Update, None, Some(row)),
        };
        Arc::new(Change {
            timestamp_ms: e.time_ms,
            before,
            after,
            ..Change::bare(e.seq as i64, &self.table, op)
        })
    }

    /// Steps (3) to (5) of the module docs for `changes`; on error the state is dropped.
    async fn run(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        let fail = |this: &mut Windowed, handled: usize, error: ComponentError| {
            this.windows = None;
            BatchError { handled, error }
        };
        if let Err(error) = self.load().await {
            // Never permanent: the changes are fine, our state is not (yet) readable.
            let error = ComponentError::transient(error);
            return Err(fail(self, 0, error));
        }
        let mut emissions = Vec::new();
        let mut failed = None;
        let (late0, evicted0) = {
            let w = self.windows.as_ref().expect("loaded");
            (w.progress.late, w.progress.evicted)
        };
        for (i, change) in changes.iter().enumerate() {
            if change.lsn <= self.windows.as_ref().expect("loaded").progress.applied_lsn {
                continue;
            }
            match self.input(change) {
                Ok(input) => self
                    .windows
                    .as_mut()
                    .expect("loaded")
                    .apply(input, &mut emissions),
                Err(error) => {
                    // The changes before it are applied: emit and store them, then fail
                    // this one (the supervisor dead-letters it with the reason).
                    failed = Some(BatchError { handled: i, error });
                    break;
                }
            }
        }
        let results: Vec<Arc<Change>> = emissions.into_iter().map(|e| self.result(e)).collect();
        let chunk = self.inner.max_batch().max(1);
        for part in results.chunks(chunk) {
            if let Err(err) = self.inner.on_batch(part).await {
                return Err(fail(self, 0, err.error));
            }
            self.counters
                .emitted
                .fetch_add(part.len() as u64, Ordering::Relaxed);
        }
        if std::mem::take(&mut self.fail_before_commit) {
            return Err(fail(
                self,
                0,
                ComponentError::transient("test: crash before the window state is written"),
            ));
        }
        let windows = self.windows.as_mut().expect("loaded");
        let dirty: BTreeSet<_> = windows.take_dirty();
        let (late, evicted, open) = (
            windows.progress.late,
            windows.progress.evicted,
            windows.open_windows(),
        );
        // The write needs the state on the write thread: send a copy of what changed.
        let snapshot = Snapshot::of(windows, &dirty);
        let (name, settings) = (self.name.clone(), self.settings.clone());
        let saved = self
            .store
            .write(move |conn| snapshot.save(conn, &name, &settings))
            .await;
        if let Err(error) = saved {
            return Err(fail(self, 0, ComponentError::transient(error)));
        }
        if late > late0 {
            tracing::warn!(sink = %self.name, late = late - late0, total = late, "window: late changes missed their closed window(s)");
        }
        if evicted > evicted0 {
            tracing::warn!(sink = %self.name, evicted = evicted - evicted0, total = evicted, open, "window: max_open_windows reached; windows closed early");
        }
        self.counters.late.store(late, Ordering::Relaxed);
        self.counters.evicted.store(evicted, Ordering::Relaxed);
        self.counters.open.store(open as u64, Ordering::Relaxed);
        match failed {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// What the stored windows mean: the settings that decide which window a change falls in
/// and what each accumulator holds. Lateness, emission, the result table and the limits
/// may change between runs; these may not.
fn fingerprint(config: &WindowConfig) -> String {
    let aggregates: Vec<String> = config
        .aggregates
        .iter()
        .map(|a| {
            format!(
                "{}={:?}({:?},{:?},{:?})",
                a.name, a.function, a.column, a.image, a.ops
            )
        })
        .collect();
    format!(
        "{:?} size={:?} slide={:?} gap={:?} count={:?} key={:?} [{}]",
        config.kind,
        config.size_ms,
        config.slide_ms,
        config.gap_ms,
        config.count,
        config.key,
        aggregates.join(", ")
    )
}

/// The changed part of the state, moved to the write thread.
struct Snapshot {
    windows: Windows,
    dirty: BTreeSet<super::state::WindowId>,
}

impl Snapshot {
    fn of(windows: &Windows, dirty: &BTreeSet<super::state::WindowId>) -> Snapshot {
        Snapshot {
            windows: windows.subset(dirty),
            dirty: dirty.clone(),
        }
    }

    fn save(
        self,
        conn: &rusqlite::Connection,
        name: &str,
        settings: &str,
    ) -> astha_core::Result<()> {
        durable::ensure(conn)?;
        durable::save(conn, name, settings, &self.windows, &self.dirty)
    }
}

#[async_trait]
impl Component for Windowed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn durable(&self) -> bool {
        self.inner.durable()
    }

    fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions()
    }

    fn max_batch(&self) -> usize {
        // Results are fewer than changes; a larger batch means fewer state writes.
        self.inner.max_batch().max(256)
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.run(&[Arc::new(change.clone())])
            .await
            .map_err(|e| e.error)
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        self.run(changes).await
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        self.inner.on_health().await
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.windows = None;
        self.inner.on_refresh().await
    }

    async fn on_stop(&mut self) -> Result<(), ComponentError> {
        // The windows' state is written with every delivery; only the sink has work left.
        self.inner.on_stop().await
    }
}
