//! The figures `astha run --http` adds to `/metrics` beside the engines': per sink, the
//! changes its row filters dropped, and per windowed sink, its window counters.
//!
//! Owns only their names and help texts; the counts are the pipeline's own atomics
//! ([`Running::filter_counters`], [`Running::window_counters`]), read at each scrape. Every
//! sample is labelled with its `source` and `sink`. It never counts anything itself.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use astha_actors::http::MetricsExtra;
use astha_pipeline::window::WindowCounters;
use astha_pipeline::Running;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

type Labelled<T> = Vec<(String, String, Arc<T>)>;

/// The collector factory for `running`'s filters and windows.
pub fn extra(running: &Running) -> MetricsExtra {
    let filters = running.filter_counters();
    let windows = running.window_counters();
    Arc::new(move || {
        Box::new(PipelineFigures {
            filters: filters.clone(),
            windows: windows.clone(),
        })
    })
}

#[derive(Debug)]
struct PipelineFigures {
    filters: Labelled<AtomicU64>,
    windows: Labelled<WindowCounters>,
}

type WindowFigure = fn(&WindowCounters) -> &AtomicU64;

/// Window figures: name (counters get `_total` appended), type, help, counter.
const WINDOW_FIGURES: [(&str, MetricType, &str, WindowFigure); 4] = [
    (
        "astha_window_results",
        MetricType::Counter,
        "Window results handed to the sink (re-deliveries included).",
        |w| &w.emitted,
    ),
    (
        "astha_window_late_changes",
        MetricType::Counter,
        "Changes not counted because their window had closed (later than allowed_lateness_ms).",
        |w| &w.late,
    ),
    (
        "astha_window_evicted",
        MetricType::Counter,
        "Windows closed early because max_open_windows were open (their results are marked evicted).",
        |w| &w.evicted,
    ),
    (
        "astha_window_open",
        MetricType::Gauge,
        "Windows open after the last batch.",
        |w| &w.open,
    ),
];

impl Collector for PipelineFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if !self.filters.is_empty() {
            let mut family = encoder.encode_descriptor(
                "astha_sink_filtered",
                "Changes a sink's row filters dropped (confirmed, never delivered).",
                None,
                MetricType::Counter,
            )?;
            for (source, sink, dropped) in &self.filters {
                let labels = [("source", source.as_str()), ("sink", sink.as_str())];
                ConstCounter::new(dropped.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        if self.windows.is_empty() {
            return Ok(());
        }
        for (name, kind, help, figure) in WINDOW_FIGURES {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (source, sink, counters) in &self.windows {
                let labels = [("source", source.as_str()), ("sink", sink.as_str())];
                let value = figure(counters).load(Ordering::Relaxed);
                let sample = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value).encode(sample)?,
                    _ => ConstGauge::new(value as i64).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}
