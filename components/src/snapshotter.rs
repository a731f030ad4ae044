//! Snapshotter (seed 002, docs/SEEDS.md): decides which Iceberg snapshots are kept, records them in
//! `table_snapshots`, and expires the rest.
//!
//! The Iceberg updater and the compactor commit a snapshot per batch of work; most of those
//! are intermediate states. The snapshotter turns some of them into recorded snapshots (rows
//! of `table_snapshots` with `trigger_kind` `time`, `size` or `manual`), which are the
//! table's retained time-travel points:
//! - time: the table changed and at least `interval` passed since its last record (or, for
//!   the first one, since its first commit);
//! - size: at least `max_files` files or `max_bytes` bytes were appended since the last
//!   record (counted from the `append` snapshots' summaries);
//! - manual: [`Snapshotter::snapshot_now`], or a `requested` row inserted with
//!   [`crate::registry::request_snapshot`] (another process can ask); the request row
//!   becomes the record.
//!
//! Each trigger and retention setting may differ per table (`[tables."db.table"]`, or a
//! bare table name): a table's entry replaces only the settings it names.
//!
//! Retention: the newest `retain_last` records are always kept, older ones only while
//! younger than `max_age`; the others are marked `expired`. The Iceberg table then keeps
//! its current snapshot, the snapshots of kept records, and the not yet recorded snapshots
//! newer than the newest record; every other snapshot is expired, and only files no
//! remaining snapshot references are deleted (the Iceberg writer's promise).
//!
//! Triggers are evaluated when a data file becomes `completed`, when a request row
//! appears, and on a timer of period `tick` (started by `on_refresh`, stopped when the
//! registered component is dropped). Decisions are taken from the registry and the table as
//! they are, so replays and restarts are harmless. It never appends or rewrites data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::registry::{self, IcebergState, NewSnapshotRecord, RegistryEvent, TableIdentity};
use astha_actors::{Component, ComponentError};
use astha_core::config::{duration_serde, ConfigError};
use astha_core::{Change, Operation};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::iceberg::{commit_with_retry, CommitRetry, IcebergTable};
use crate::lakehouse::{blocking, lock, Lakehouse, Result, TableLocks};

/// The component's name (and slot name).
pub const SNAPSHOTTER: &str = "snapshotter";

/// Snapshotter settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotterConfig {
    /// Time trigger: record a snapshot when the table changed and this long passed since
    /// its last record. Default `"5m"`.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// Size trigger: data files appended since the last record; `0` disables. Default
    /// `100`.
    pub max_files: u64,
    /// Size trigger: bytes appended since the last record; `0` disables. Default
    /// `536870912` (512 MiB).
    pub max_bytes: u64,
    /// Retention: the newest this many records are always kept, at least 1. Default `10`.
    pub retain_last: usize,
    /// Retention: older records are kept only while younger than this. Default `"7d"`.
    #[serde(with = "duration_serde")]
    pub max_age: Duration,
    /// Period of the timer that evaluates the time trigger and retention for every table.
    /// Default `"10s"`.
    #[serde(with = "duration_serde")]
    pub tick: Duration,
    /// Retries of an expiry that lost the catalog compare-and-swap (each after a short
    /// backoff and a reload of the table, see [`crate::iceberg::commit_with_retry`]).
    /// Default `5`.
    pub conflict_retries: u32,
    /// Per-table triggers and retention (seed 002: "configurable per table"), by
    /// `"database.table"` (or a bare `"table"`, for that name in any database). A table's
    /// entry sets only what differs; everything else comes from the settings above.
    pub tables: BTreeMap<String, TableSnapshotSettings>,
}

/// One table's own snapshot settings: each field, when set, replaces the snapshotter's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableSnapshotSettings {
    #[serde(with = "optional_duration", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain_last: Option<usize>,
    #[serde(with = "optional_duration", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// The triggers and retention in force for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    interval: Duration,
    max_files: u64,
    max_bytes: u64,
    retain_last: usize,
    max_age: Duration,
}

/// `Option<Duration>` through [`duration_serde`] (`"5m"`, or milliseconds).
mod optional_duration {
    use std::time::Duration;

    use astha_core::config::duration_serde;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "duration_serde")] Duration);
        Option::<Wrapped>::deserialize(d).map(|w| w.map(|Wrapped(d)| d))
    }
}

impl Default for SnapshotterConfig {
    fn default() -> Self {
        SnapshotterConfig {
            interval: Duration::from_secs(300),
            max_files: 100,
            max_bytes: 512 << 20,
            retain_last: 10,
            max_age: Duration::from_secs(7 * 24 * 3600),
            tick: Duration::from_secs(10),
            conflict_retries: 5,
            tables: BTreeMap::new(),
        }
    }
}

impl SnapshotterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retain_last == 0 {
            return Err(ConfigError::invalid(
                "retain_last",
                "must be at least 1 (got 0)",
            ));
        }
        for (table, own) in &self.tables {
            if own.retain_last == Some(0) {
                return Err(ConfigError::invalid(
                    format!("tables.\"{table}\".retain_last"),
                    "must be at least 1 (got 0)",
                ));
            }
            if own.interval.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::invalid(
                    format!("tables.\"{table}\".interval"),
                    "must be positive",
                ));
            }
        }
        if self.tick.is_zero() {
            return Err(ConfigError::invalid("tick", "must be positive"));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::invalid("interval", "must be positive"));
        }
        Ok(())
    }

    /// The settings in force for `database.table`: its own entry (`"database.table"`,
    /// else `"table"`) over the snapshotter's.
    fn policy(&self, database: &str, table: &str) -> Policy {
        let own = self
            .tables
            .get(&format!("{database}.{table}"))
            .or_else(|| self.tables.get(table))
            .cloned()
            .unwrap_or_default();
        Policy {
            interval: own.interval.unwrap_or(self.interval),
            max_files: own.max_files.unwrap_or(self.max_files),
            max_bytes: own.max_bytes.unwrap_or(self.max_bytes),
            retain_last: own.retain_last.unwrap_or(self.retain_last),
            max_age: own.max_age.unwrap_or(self.max_age),
        }
    }
}

/// What caused a recorded snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Time,
    Size,
    Manual,
}

impl Trigger {
    /// The `table_snapshots.trigger_kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Time => "time",
            Trigger::Size => "size",
            Trigger::Manual => "manual",
        }
    }
}

/// A snapshot recorded by one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `table_snapshots.id`.
    pub row_id: i64,
    pub snapshot_id: i64,
    pub trigger: Trigger,
}

/// What one pass over a table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotOutcome {
    pub table_id: i64,
    pub recorded: Option<Recorded>,
    /// `table_snapshots` rows marked expired.
    pub expired_records: Vec<i64>,
    /// Iceberg snapshots expired.
    pub expired_snapshots: Vec<i64>,
    /// Files deleted because no remaining snapshot referenced them.
    pub deleted_files: Vec<PathBuf>,
}

/// Snapshotter counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotterStats {
    pub recorded_time: u64,
    pub recorded_size: u64,
    pub recorded_manual: u64,
    pub expired_records: u64,
    pub expired_snapshots: u64,
    pub deleted_files: u64,
    pub ticks: u64,
    pub tick_errors: u64,
}

/// The snapshotter. Cloning gives another handle on the same state; only the instance
/// whose `on_refresh` ran owns the timer, which stops when that instance is dropped.
pub struct Snapshotter {
    inner: Arc<Inner>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Clone for Snapshotter {
    fn clone(&self) -> Self {
        Snapshotter {
            inner: self.inner.clone(),
            ticker: None,
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

struct Inner {
    lakehouse: Lakehouse,
    config: SnapshotterConfig,
    locks: TableLocks,
    recorded: [AtomicU64; 3],
    expired_records: AtomicU64,
    expired_snapshots: AtomicU64,
    deleted_files: AtomicU64,
    ticks: AtomicU64,
    tick_errors: AtomicU64,
}

impl Snapshotter {
    pub fn new(lakehouse: Lakehouse, config: SnapshotterConfig) -> Result<Self> {
        config.validate()?;
        Ok(Snapshotter {
            inner: Arc::new(Inner {
                lakehouse,
                config,
                locks: TableLocks::default(),
                recorded: Default::default(),
                expired_records: AtomicU64::new(0),
                expired_snapshots: AtomicU64::new(0),
                deleted_files: AtomicU64::new(0),
                ticks: AtomicU64::new(0),
                tick_errors: AtomicU64::new(0),
            }),
            ticker: None,
        })
    }

    pub fn stats(&self) -> SnapshotterStats {
        let i = &self.inner;
        SnapshotterStats {
            recorded_time: i.recorded[0].load(Ordering::Relaxed),
            recorded_size: i.recorded[1].load(Ordering::Relaxed),
            recorded_manual: i.recorded[2].load(Ordering::Relaxed),
            expired_records: i.expired_records.load(Ordering::Relaxed),
            expired_snapshots: i.expired_snapshots.load(Ordering::Relaxed),
            deleted_files: i.deleted_files.load(Ordering::Relaxed),
            ticks: i.ticks.load(Ordering::Relaxed),
            tick_errors: i.tick_errors.load(Ordering::Relaxed),
        }
    }

    /// Manual trigger: records the table's current snapshot now (unless it is recorded
    /// already), then applies retention. Blocking.
    pub fn snapshot_now_blocking(&self, table_id: i64) -> Result<SnapshotOutcome> {
        self.inner.maintain(table_id, true)
    }

    /// [`snapshot_now_blocking`](Self::snapshot_now_blocking) off the async executor.
    pub async fn snapshot_now(&self, table_id: i64) -> Result<SnapshotOutcome> {
        let inner = self.inner.clone();
        blocking(move || inner.maintain(table_id, true)).await
    }

    /// Evaluates the triggers and retention of one table. Blocking.
    pub fn maintain_blocking(&self, table_id: i64) -> Result<SnapshotOutcome> {
        self.inner.maintain(table_id, false)
    }

    /// Evaluates every table (what the timer does). Blocking.
    pub fn tick_blocking(&self) -> Result<Vec<SnapshotOutcome>> {
        self.inner.tick()
    }

    /// Starts the timer if it is not running (on the current tokio runtime).
    fn ensure_ticker(&mut self) {
        if self.ticker.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let period = self.inner.config.tick;
        self.ticker = Some(tokio::spawn(async move {
            let mut timer = tokio::time::interval(period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await; // The first tick is immediate; refresh just ran.
            loop {
                timer.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let result = blocking(move || inner.tick()).await;
                if let Err(e) = result {
                    tracing::warn!(component = SNAPSHOTTER, error = %e, "snapshot tick failed; next tick retries");
                }
            }
        }));
    }
}

impl Inner {
    fn tick(&self) -> Result<Vec<SnapshotOutcome>> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let tables = self
            .lakehouse
            .with_registry(|conn| Ok(registry::all_tables(conn)?))?;
        let mut out = Vec::new();
        let mut first_error = None;
        for t in tables {
            match self.maintain(t.table_id, false) {
                Ok(o) => out.push(o),
                Err(e) => {
                    self.tick_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table_id = t.table_id, error = %e, "snapshot maintenance failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn maintain(&self, table_id: i64, manual: bool) -> Result<SnapshotOutcome> {
        let table_lock = self.locks.get(table_id);
        let _guard = lock(&table_lock);
        let mut out = SnapshotOutcome {
            table_id,
            ..SnapshotOutcome::default()
        };
        let found = self.lakehouse.with_registry(|conn| {
            let Some(ident) = registry::table_identity(conn, table_id)? else {
                return Ok(None);
            };
            let records = registry::live_snapshot_records(conn, table_id)?;
            let requests = registry::snapshot_requests(conn, table_id)?;
            Ok(Some((ident, records, requests)))
        })?;
        let Some((ident, records, requests)) = found else {
            return Ok(out);
        };
        let request_ids: Vec<i64> = requests.iter().map(|r| r.id).collect();
        let table = self.lakehouse.load_table(&ident)?;
        let Some(mut table) = table.filter(|t| t.current_snapshot().is_some()) else {
            if !request_ids.is_empty() {
                tracing::info!(
                    table_id,
                    "snapshot requested of a table without data; request dropped"
                );
                self.lakehouse.with_registry(|conn| {
                    Ok(registry::drop_snapshot_requests(conn, &request_ids)?)
                })?;
            }
            return Ok(out);
        };

        let policy = self.config.policy(&ident.database, &ident.table);
        let manual = manual || !request_ids.is_empty();
        let trigger = self.trigger(&table, &records, &policy, manual);
        if let Some(trigger) = trigger {
            out.recorded = Some(self.record(&ident, &table, trigger, &request_ids)?);
        }
        self.retain(&ident, &policy, &mut table, &mut out)?;
        Ok(out)
    }

    /// Which trigger fires for the table's current snapshot, if any.
    fn trigger(
        &self,
        table: &IcebergTable,
        records: &[registry::RecordedSnapshot],
        c: &Policy,
        manual: bool,
    ) -> Option<Trigger> {
        let current = table.current_snapshot()?;
        if manual {
            return Some(Trigger::Manual);
        }
        if records
            .iter()
            .any(|r| r.row.snapshot_id == current.snapshot_id)
        {
            return None;
        }
        let newest = records.last();
        let tail: Vec<_> = table
            .metadata()
            .ancestry()
            .into_iter()
            .take_while(|s| newest.is_none_or(|r| r.row.snapshot_id != s.snapshot_id))
            .collect();
        let (mut files, mut bytes) = (0u64, 0u64);
        for s in tail.iter().filter(|s| s.operation() == "append") {
            let n = |k: &str| {
                s.summary
                    .get(k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            files += n("added-data-files");
            bytes += n("added-files-size");
        }
        if (c.max_files > 0 && files >= c.max_files) || (c.max_bytes > 0 && bytes >= c.max_bytes) {
            return Some(Trigger::Size);
        }
        let since = match newest {
            Some(r) => r.created_ms,
            None => tail.last().map_or(current.timestamp_ms, |s| s.timestamp_ms),
        };
        (astha_core::change::unix_now_ms() - since >= c.interval.as_millis() as i64)
            .then_some(Trigger::Time)
    }

    fn record(
        &self,
        ident: &TableIdentity,
        table: &IcebergTable,
        trigger: Trigger,
        request_ids: &[i64],
    ) -> Result<Recorded> {
        let current = table
            .current_snapshot()
            .expect("checked by the caller: the table has a snapshot");
        let rec = NewSnapshotRecord {
            snapshot_id: current.snapshot_id,
            parent_snapshot_id: current.parent_snapshot_id,
            operation: current.operation.clone(),
            trigger_kind: trigger.as_str().to_string(),
            file_count: current.summary_u64("total-data-files") as i64,
            row_count: current.summary_u64("total-records") as i64,
            total_size: current.summary_u64("total-files-size") as i64,
            metadata_location: Some(table.metadata_location().to_string()),
        };
        let table_id = ident.table_id;
        let (row_id, new) = self.lakehouse.with_registry(|conn| {
            Ok(registry::immediate(conn, |tx| {
                if request_ids.is_empty() {
                    return registry::record_snapshot(tx, table_id, &rec);
                }
                // Every pending request is answered by this one record.
                let mut row = None;
                for id in request_ids {
                    let r = registry::fulfil_snapshot_request(tx, table_id, *id, &rec)?;
                    row.get_or_insert(r);
                }
                Ok((row.expect("at least one request"), true))
            })?)
        })?;
        if new {
            let slot = match trigger {
                Trigger::Time => 0,
                Trigger::Size => 1,
                Trigger::Manual => 2,
            };
            self.recorded[slot].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                table = %format!("{}.{}", ident.database, ident.table),
                snapshot_id = rec.snapshot_id,
                trigger = trigger.as_str(),
                rows = rec.row_count,
                files = rec.file_count,
                "snapshot recorded"
            );
        }
        Ok(Recorded {
            row_id,
            snapshot_id: rec.snapshot_id,
            trigger,
        })
    }

    /// Applies retention to the records, then expires the Iceberg snapshots nothing keeps.
    fn retain(
        &self,
        ident: &TableIdentity,
        policy: &Policy,
        table: &mut IcebergTable,
        out: &mut SnapshotOutcome,
    ) -> Result<()> {
        let table_id = ident.table_id;
        let records = self
            .lakehouse
            .with_registry(|conn| Ok(registry::live_snapshot_records(conn, table_id)?))?;
        let Some(newest) = records.last().map(|r| r.row.snapshot_id) else {
            return Ok(()); // Nothing recorded yet: nothing may be expired.
        };
        let now = astha_core::change::unix_now_ms();
        let max_age = policy.max_age.as_millis() as i64;
        let in_table: BTreeSet<i64> = table.snapshots().iter().map(|s| s.snapshot_id).collect();
        let keep_from = records.len().saturating_sub(policy.retain_last);
        let mut kept = BTreeSet::new();
        let mut expired_rows = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let young = now - r.created_ms < max_age;
            if (i >= keep_from || young) && in_table.contains(&r.row.snapshot_id) {
                kept.insert(r.row.snapshot_id);
            } else {
                expired_rows.push(r.row.id);
            }
        }
        if !expired_rows.is_empty() {
            self.lakehouse
                .with_registry(|conn| Ok(registry::mark_snapshots_expired(conn, &expired_rows)?))?;
            self.expired_records
                .fetch_add(expired_rows.len() as u64, Ordering::Relaxed);
            out.expired_records = expired_rows;
        }

        let retry = CommitRetry::new(self.config.conflict_retries);
        let expired = commit_with_retry(table, &retry, |table, _| {
            // The unrecorded tail (newer than the newest record) stays: it is what the size
            // trigger counts, and the next record will cover it.
            let mut protect = kept.clone();
            for s in table.metadata().ancestry() {
                protect.insert(s.snapshot_id);
                if s.snapshot_id == newest {
                    break;
                }
            }
            if table
                .snapshots()
                .iter()
                .all(|s| protect.contains(&s.snapshot_id))
            {
                return Ok(None);
            }
            table.expire_snapshots_retaining(&protect).map(Some)
        })?;
        if let Some(result) = expired {
            self.expired_snapshots
                .fetch_add(result.expired_snapshot_ids.len() as u64, Ordering::Relaxed);
            self.deleted_files
                .fetch_add(result.deleted_files.len() as u64, Ordering::Relaxed);
            tracing::info!(
                table = %table.identifier(),
                expired = result.expired_snapshot_ids.len(),
                deleted_files = result.deleted_files.len(),
                "snapshots expired"
            );
            out.expired_snapshots.extend(result.expired_snapshot_ids);
            out.deleted_files.extend(result.deleted_files);
        }
        Ok(())
    }
}

#[async_trait]
impl Component for Snapshotter {
    fn name(&self) -> &str {
        SNAPSHOTTER
    }

    fn subscriptions(&self) -> Vec<String> {
        ["table_files", "table_snapshots"]
            .map(String::from)
            .to_vec()
    }

    async fn on_event(&mut self, change: &Change) -> std::result::Result<(), ComponentError> {
        let event = RegistryEvent::decode(change).map_err(ComponentError::permanent)?;
        let table_id = match event {
            // A file became part of the table: the size (or time) trigger may fire.
            RegistryEvent::TableFiles(ev) => match (ev.op, ev.before.as_ref(), ev.after.as_ref()) {
                (Operation::Update, Some(b), Some(a))
                    if a.iceberg_metadata_state == IcebergState::Completed
                        && b.iceberg_metadata_state != IcebergState::Completed =>
                {
                    Some(a.table_id)
                }
                _ => None,
            },
            // A manual request from another process (our own record writes come back here
            // too; they are not requests and need nothing).
            RegistryEvent::TableSnapshots(ev) => match (ev.op, ev.after.as_ref()) {
                (Operation::Insert, Some(s)) if s.operation == registry::SNAPSHOT_REQUESTED => {
                    Some(s.table_id)
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(table_id) = table_id {
            let inner = self.inner.clone();
            blocking(move || inner.maintain(table_id, false)).await?;
        }
        Ok(())
    }

    /// Evaluates every table (requests left by a previous run are answered) and starts the
    /// timer.
    async fn on_refresh(&mut self) -> std::result::Result<(), ComponentError> {
        let inner = self.inner.clone();
        // Nothing in memory depends on this pass; a table that fails it is retried by the
        // timer, and must not keep the other tables (or the timer) from running.
        if let Err(e) = blocking(move || inner.tick()).await {
            tracing::warn!(component = SNAPSHOTTER, error = %e, "snapshot pass at refresh failed");
        }
        self.ensure_ticker();
        Ok(())
    }
}
