//! `/metrics` in Prometheus text format and `/health` as JSON. Every figure comes from
//! the same counters the logs are written from (see [`crate::stats`]).

use std::fmt::Write;

use actix_web::{web, HttpRequest, HttpResponse};
use astha_core::breaker::BreakerState;

use super::{auth, HttpState};
use crate::component::ComponentStatus;

fn breaker_value(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// Escapes a label value per the exposition format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its samples as `(labels, value)`.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, String)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn single(
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        value: impl ToString,
    ) -> Self {
        let mut f = Self::new(name, kind, help);
        f.samples.push((String::new(), value.to_string()));
        f
    }
}

fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for (labels, value) in &f.samples {
            let _ = writeln!(out, "{}{labels} {value}", f.name);
        }
    }
    out
}

type Getter = fn(&crate::stats::ComponentStats) -> i64;

const PER_COMPONENT: [(&str, &str, &str, Getter); 9] = [
    (
        "astha_component_delivered_total",
        "counter",
        "Changes a component confirmed.",
        |c| c.delivered as i64,
    ),
    (
        "astha_component_failures_total",
        "counter",
        "Failed delivery attempts (retries).",
        |c| c.failures as i64,
    ),
    (
        "astha_component_dead_letters_total",
        "counter",
        "Changes given up on and dead-lettered.",
        |c| c.dead_letters as i64,
    ),
    (
        "astha_component_panics_total",
        "counter",
        "Handler panics recovered.",
        |c| c.panics as i64,
    ),
    (
        "astha_component_timeouts_total",
        "counter",
        "Handler timeouts.",
        |c| c.timeouts as i64,
    ),
    (
        "astha_component_refreshes_total",
        "counter",
        "Refreshes from the registry.",
        |c| c.refreshes as i64,
    ),
    (
        "astha_component_position",
        "gauge",
        "Last confirmed LSN (slot position).",
        |c| c.position,
    ),
    (
        "astha_component_breaker_state",
        "gauge",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        |c| breaker_value(c.breaker) as i64,
    ),
    (
        "astha_component_up",
        "gauge",
        "1 if the component is active.",
        |c| (c.status == ComponentStatus::Active) as i64,
    ),
];

pub(crate) async fn metrics(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_deref()) {
        return denied;
    }
    let log_table = state.store.log_table().to_string();
    let now_ms = astha_core::change::unix_now_ms();
    let log = state
        .store
        .query(move |conn| astha_core::log::log_stats(conn, &log_table, now_ms))
        .await;
    let snap = state.stats.snapshot();
    let mut families = Vec::new();
    let mut by_table = Family::new(
        "astha_changes_read_total",
        "counter",
        "Changes read from the log, per table.",
    );
    for (table, count) in &snap.event_counts {
        by_table
            .samples
            .push((format!("{{table=\"{}\"}}", label(table)), count.to_string()));
    }
    families.push(by_table);
    families.push(Family::single(
        "astha_batches_read_total",
        "counter",
        "Batches read by the poller.",
        snap.batches_read,
    ));
    families.push(Family::single(
        "astha_catch_up_reads_total",
        "counter",
        "Log reads for components behind the window.",
        snap.catch_up_reads,
    ));
    families.push(Family::single(
        "astha_malformed_rows_total",
        "counter",
        "Undecodable log rows moved to dead letters.",
        snap.malformed,
    ));
    families.push(Family::single(
        "astha_log_cleaned_total",
        "counter",
        "Log rows removed by cleanup.",
        snap.cleaned,
    ));
    families.push(Family::single(
        "astha_head_lsn",
        "gauge",
        "Newest LSN read.",
        snap.head_lsn,
    ));
    families.push(Family::single(
        "astha_sse_clients",
        "gauge",
        "Connected SSE clients.",
        state.hub.clients(),
    ));
    families.push(Family::single(
        "astha_sse_dropped_clients_total",
        "counter",
        "SSE clients disconnected for being too slow.",
        state.hub.dropped(),
    ));
    match &log {
        Ok(log) => {
            families.push(Family::single(
                "astha_log_rows",
                "gauge",
                "Rows in the change log.",
                log.rows,
            ));
            families.push(Family::single(
                "astha_log_oldest_age_seconds",
                "gauge",
                "Age of the oldest log row.",
                log.oldest_age_ms as f64 / 1000.0,
            ));
        }
        Err(err) => tracing::warn!(error = %err, "metrics: cannot read log depth"),
    }
    for (name, kind, help, get) in PER_COMPONENT {
        let mut f = Family::new(name, kind, help);
        for c in &snap.components {
            f.samples.push((
                format!("{{component=\"{}\"}}", label(&c.name)),
                get(c).to_string(),
            ));
        }
        families.push(f);
    }
    let mut lag = Family::new(
        "astha_component_lag",
        "gauge",
        "LSNs between the head and the component's position.",
    );
    for c in &snap.components {
        lag.samples.push((
            format!("{{component=\"{}\"}}", label(&c.name)),
            c.lag.to_string(),
        ));
    }
    families.push(lag);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render(&families))
}

pub(crate) async fn health(req: HttpRequest, state: web::Data<HttpState>) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_deref()) {
        return denied;
    }
    let snap = state.stats.snapshot();
    let healthy = snap.components.iter().all(|c| {
        matches!(
            c.status,
            ComponentStatus::Active | ComponentStatus::Disabled
        )
    });
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
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
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
