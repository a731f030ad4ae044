//! `/metrics` in the Prometheus text format (0.0.4) and `/health` as JSON.
//!
//! Every figure comes from the counters the logs are written from ([`crate::stats`]),
//! the SSE hub's, and the log's two ends ([`super::log_gauge`]); so a scrape costs the
//! same whatever the backlog and never takes a thread delivery uses. Answers are paced
//! ([`super::MAX_SCRAPES_PER_SECOND`] in all), so a flood of scrapers cannot take the
//! CPU either. The exposition
//! (names, `_total` suffixes, escaping, histogram buckets) is `prometheus-client`'s; this
//! module only says which figures there are and what each one counts.

use std::fmt;

use actix_web::{web, HttpRequest, HttpResponse};
use astha_core::breaker::BreakerState;
use astha_core::log::LogEnds;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{auth, HttpState};
use crate::component::ComponentStatus;
use crate::stats::{ComponentStats, SchedulerStats};

fn breaker_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

type Getter = fn(&ComponentStats) -> i64;

/// Per-component figures: name (counters get `_total` appended), type, help, value.
const PER_COMPONENT: [(&str, MetricType, &str, Getter); 12] = [
    (
        "astha_component_delivered",
        MetricType::Counter,
        "Changes a component confirmed.",
        |c| c.delivered as i64,
    ),
    (
        "astha_component_failures",
        MetricType::Counter,
        "Failed delivery attempts (retries).",
        |c| c.failures as i64,
    ),
    (
        "astha_component_dead_letters",
        MetricType::Counter,
        "Changes given up on and dead-lettered.",
        |c| c.dead_letters as i64,
    ),
    (
        "astha_component_panics",
        MetricType::Counter,
        "Handler panics recovered.",
        |c| c.panics as i64,
    ),
    (
        "astha_component_timeouts",
        MetricType::Counter,
        "Handler timeouts.",
        |c| c.timeouts as i64,
    ),
    (
        "astha_component_refreshes",
        MetricType::Counter,
        "Refreshes from the registry.",
        |c| c.refreshes as i64,
    ),
    (
        "astha_component_snapshot_rows",
        MetricType::Gauge,
        "Rows of the component's current or last snapshot (0: none).",
        |c| c.snapshot.as_ref().map_or(0, |s| s.total as i64),
    ),
    (
        "astha_component_snapshot_rows_done",
        MetricType::Gauge,
        "Rows of that snapshot handled so far.",
        |c| c.snapshot.as_ref().map_or(0, |s| s.done as i64),
    ),
    (
        "astha_component_position",
        MetricType::Gauge,
        "Last confirmed LSN (slot position).",
        |c| c.position,
    ),
    (
        "astha_component_breaker_state",
        MetricType::Gauge,
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        |c| breaker_value(c.breaker),
    ),
    (
        "astha_component_up",
        MetricType::Gauge,
        "1 if the component is active.",
        |c| (c.status == ComponentStatus::Active) as i64,
    ),
    (
        "astha_component_lag",
        MetricType::Gauge,
        "LSNs between the newest one read and the component's position.",
        |c| c.lag,
    ),
];

/// One engine's figures in a scrape.
#[derive(Debug)]
struct SourceScrape {
    /// Its `source` label (none when the endpoint reports one engine).
    label: Option<String>,
    snap: SchedulerStats,
    log: Option<LogEnds>,
}

impl SourceScrape {
    /// `labels` with this engine's `source` label first, when it has one.
    fn labels<'a>(&'a self, labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        self.label
            .as_deref()
            .map(|source| ("source", source))
            .into_iter()
            .chain(labels.iter().copied())
            .collect()
    }
}

/// One scrape's figures, read before encoding (the log's ends asynchronously).
#[derive(Debug)]
struct Scrape {
    sources: Vec<SourceScrape>,
    sse_clients: usize,
    sse_dropped: u64,
    sse_refused: u64,
}

/// One sample per engine under one descriptor: labelled with its source, or unlabelled
/// when the endpoint reports a single engine. An engine for which `value` has nothing
/// (its log's ends could not be read) is left out.
fn per_source<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    sources: &[SourceScrape],
    value: impl Fn(&SourceScrape) -> Option<M>,
) -> fmt::Result {
    if sources.iter().all(|s| value(s).is_none()) {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    match sources {
        [only] if only.label.is_none() => value(only).map_or(Ok(()), |m| m.encode(family)),
        _ => {
            for source in sources {
                if let Some(metric) = value(source) {
                    metric.encode(family.encode_family(&source.labels(&[]))?)?;
                }
            }
            Ok(())
        }
    }
}

/// A sample with no labels under its own descriptor.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let sources = &self.sources;
        {
            let mut family = encoder.encode_descriptor(
                "astha_changes_read",
                "Changes read from the log, per table.",
                None,
                MetricType::Counter,
            )?;
            for source in sources {
                for (table, count) in &source.snap.event_counts {
                    ConstCounter::new(*count).encode(
                        family.encode_family(&source.labels(&[("table", table.as_str())]))?,
                    )?;
                }
            }
        }
        type Count = fn(&SchedulerStats) -> u64;
        let counters: [(&str, &str, Count); 12] = [
            ("astha_batches_read", "Batches read by the poller.", |s| {
                s.batches_read
            }),
            (
                "astha_catch_up_reads",
                "Log reads for components behind the window.",
                |s| s.catch_up_reads,
            ),
            (
                "astha_malformed_rows",
                "Undecodable log rows moved to dead letters.",
                |s| s.malformed,
            ),
            (
                "astha_incomplete_changes",
                "Changes delivered marked as possibly incomplete: another connection changed \
                 their table's schema before capture caught up.",
                |s| s.incomplete,
            ),
            ("astha_log_cleaned", "Log rows removed by cleanup.", |s| {
                s.cleaned
            }),
            (
                "astha_slots_lost",
                "Slot writes that found the slot removed or moved under Astha (each restored \
                 at its consumer's confirmed position).",
                |s| s.slots_lost,
            ),
            (
                "astha_integrity_errors",
                "What Astha owns changed under it: slots lost or moved, the log's LSN sequence \
                 restarted, the database file gone.",
                |s| s.integrity_errors,
            ),
            (
                "astha_leases_expired",
                "Non-durable slots dropped because their owner stopped renewing its lease.",
                |s| s.leases_expired,
            ),
            (
                "astha_wal_resets",
                "WAL resets past wal_max_bytes: the WAL started over.",
                |s| s.wal_resets,
            ),
            (
                "astha_wal_resets_incomplete",
                "WAL resets that gave up: another connection's read transaction stayed \
                 inside the WAL for wal_reset_wait (each is retried after a pause).",
                |s| s.wal_resets_incomplete,
            ),
            (
                "astha_slot_writes",
                "Slot-write transactions (each makes every position confirmed since the last \
                 durable).",
                |s| s.slot_writes,
            ),
            ("astha_cleanups", "Cleanup write jobs run.", |s| s.cleanups),
        ];
        for (name, help, count) in counters {
            per_source(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                sources,
                |s| Some(ConstCounter::new(count(&s.snap))),
            )?;
        }
        // A route goes at most one batch past its durable position: under a writer that
        // never pauses, delivery runs at the pace of slot writes, so their time is the
        // figure to watch (rate of this over rate of astha_slot_writes_total: the mean).
        per_source(
            &mut encoder,
            "astha_slot_write_seconds",
            "Time slot writes took from asked to durable (queued, waiting for the write \
             lock, written), in seconds.",
            MetricType::Counter,
            sources,
            |s| Some(ConstCounter::new(s.snap.slot_write_micros as f64 / 1e6)),
        )?;
        per_source(
            &mut encoder,
            "astha_slot_write_longest_seconds",
            "The longest slot write since start, from asked to durable, in seconds.",
            MetricType::Gauge,
            sources,
            |s| Some(ConstGauge::new(s.snap.slot_write_max_micros as f64 / 1e6)),
        )?;
        single(
            &mut encoder,
            "astha_write_turns_given",
            "Turns at the write lock this process's application writers (open_writer) gave \
             Astha's slot writes.",
            &ConstCounter::new(astha_core::write_turns::turns_given()),
        )?;
        let hub_counters = [
            (
                "astha_sse_dropped_clients",
                "SSE clients disconnected (connection closed) for being too slow.",
                self.sse_dropped,
            ),
            (
                "astha_sse_refused_clients",
                "SSE clients refused because the client limit was reached.",
                self.sse_refused,
            ),
        ];
        for (name, help, value) in hub_counters {
            single(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        per_source(
            &mut encoder,
            "astha_head_lsn",
            "Newest LSN read by the poller.",
            MetricType::Gauge,
            sources,
            |s| Some(ConstGauge::new(s.snap.head_lsn)),
        )?;
        per_source(
            &mut encoder,
            "astha_wal_bytes",
            "Size of the WAL file at the poller's last read, in bytes.",
            MetricType::Gauge,
            sources,
            |s| Some(ConstGauge::new(s.snap.wal_bytes as i64)),
        )?;
        single(
            &mut encoder,
            "astha_sse_clients",
            "Connected SSE clients.",
            &ConstGauge::new(self.sse_clients as i64),
        )?;
        per_source(
            &mut encoder,
            "astha_log_rows",
            "Rows in the change log, as the newest LSN in it minus the oldest plus one \
             (read from the two ends of the index, at most 1 s old): exact unless \
             malformed rows were moved out from between the ends, then an upper bound.",
            MetricType::Gauge,
            sources,
            |s| s.log.as_ref().map(|log| ConstGauge::new(log.span())),
        )?;
        per_source(
            &mut encoder,
            "astha_log_oldest_lsn",
            "Oldest LSN still in the change log (0 when empty).",
            MetricType::Gauge,
            sources,
            |s| s.log.as_ref().map(|log| ConstGauge::new(log.first_lsn)),
        )?;
        per_source(
            &mut encoder,
            "astha_log_oldest_age_seconds",
            "Age of the oldest row in the change log (0 when empty).",
            MetricType::Gauge,
            sources,
            |s| {
                s.log
                    .as_ref()
                    .map(|log| ConstGauge::new(log.oldest_age_ms as f64 / 1000.0))
            },
        )?;
        for (name, kind, help, get) in PER_COMPONENT {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for source in sources {
                for c in &source.snap.components {
                    let labels = source.labels(&[("component", c.name.as_str())]);
                    let sample = family.encode_family(&labels)?;
                    match kind {
                        MetricType::Counter => ConstCounter::new(get(c) as u64).encode(sample)?,
                        _ => ConstGauge::new(get(c)).encode(sample)?,
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "astha_delivery_latency_seconds",
            "Seconds from a change's log timestamp (taken by its trigger, inside the \
             writer's transaction) to the component confirming it.",
            None,
            MetricType::Histogram,
        )?;
        for source in sources {
            for c in &source.snap.components {
                c.latency.encode(
                    family.encode_family(&source.labels(&[("component", c.name.as_str())]))?,
                )?;
            }
        }
        Ok(())
    }
}

/// The build, as the `astha_build_info` gauge (always 1) with its labels.
fn build_info() -> Info<[(&'static str, &'static str); 1]> {
    Info::new([("version", env!("CARGO_PKG_VERSION"))])
}

pub(crate) async fn metrics(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_ref(), None) {
        return denied;
    }
    if !state.pacer.turn().await {
        return busy();
    }
    let mut sources = Vec::with_capacity(state.sources.len());
    for source in state.sources.iter() {
        let log = match source.log.read().await {
            Ok(ends) => Some(ends),
            Err(error) => {
                tracing::warn!(source = ?source.label, %error, "metrics: cannot read the log's ends");
                None
            }
        };
        sources.push(SourceScrape {
            label: source.label.clone(),
            snap: source.stats.snapshot(),
            log,
        });
    }
    let scrape = Scrape {
        sources,
        sse_clients: state.hub.clients(),
        sse_dropped: state.hub.dropped(),
        sse_refused: state.hub.refused(),
    };
    let mut registry = Registry::default();
    registry.register("astha_build", "Astha's version (always 1).", build_info());
    registry.register_collector(Box::new(scrape));
    if let Some(extra) = &state.extra {
        registry.register_collector(extra());
    }
    let mut body = String::new();
    if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
        tracing::error!(error = %err, "metrics: encoding failed");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
        .body(body)
}

/// The answer when too many requests wait for their turn.
fn busy() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .body("too many requests for metrics; retry later\n")
}

pub(crate) async fn health(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_ref(), None) {
        return denied;
    }
    if !state.pacer.turn().await {
        return busy();
    }
    let sources: Vec<(Option<&str>, SchedulerStats)> = state
        .sources
        .iter()
        .map(|s| (s.label.as_deref(), s.stats.snapshot()))
        .collect();
    let (healthy, body) = match sources.as_slice() {
        [(None, snap)] => source_health(snap),
        _ => {
            let each: Vec<_> = sources
                .iter()
                .map(|(label, snap)| {
                    let (healthy, mut body) = source_health(snap);
                    body["source"] = serde_json::json!(label);
                    (healthy, body)
                })
                .collect();
            let failed = sources.iter().any(|(_, s)| s.fatal.is_some());
            let healthy = each.iter().all(|(healthy, _)| *healthy);
            let body = serde_json::json!({
                "status": status(failed, healthy),
                "sources": each.into_iter().map(|(_, body)| body).collect::<Vec<_>>(),
            });
            (healthy, body)
        }
    };
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// One engine's health: whether it is healthy, and its `/health` body.
fn source_health(snap: &SchedulerStats) -> (bool, serde_json::Value) {
    let healthy = snap.fatal.is_none()
        && snap.components.iter().all(|c| {
            matches!(
                c.status,
                ComponentStatus::Active | ComponentStatus::Disabled
            )
        });
    let body = serde_json::json!({
        "status": status(snap.fatal.is_some(), healthy),
        "failure": snap.fatal,
        "integrity_problem": snap.integrity_problem,
        "head_lsn": snap.head_lsn,
        "components": snap.components.iter().map(|c| serde_json::json!({
            "name": c.name,
            "status": c.status,
            "breaker": c.breaker.to_string(),
            "position": c.position,
            "lag": c.lag,
            "last_error": c.last_error,
        })).collect::<Vec<_>>(),
    });
    (healthy, body)
}

/// `/health`'s status word: a failed engine is `failed`, an unhealthy component
/// `degraded`.
fn status(failed: bool, healthy: bool) -> &'static str {
    match (failed, healthy) {
        (true, _) => "failed",
        (false, true) => "ok",
        (false, false) => "degraded",
    }
}
