//! The suites of `astha-bench`, each measuring Astha side by side with its baseline in
//! the same run, and the helpers they share.
//!
//! Timing targets are checked here, never as timed assertions in tests: these machines
//! are noisy, and a figure belongs in BENCHMARKS.md with the command that produced it.

pub mod bare_consumer;
pub mod brokers;
pub mod capture;
pub mod http;
pub mod iceberg;
pub mod latency;
pub mod memory;
pub mod shapes;
pub mod sinks;
mod table;
pub mod targets;
pub mod throughput;

pub use table::{create_wide_table, wide_insert_sql, wide_row};

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much work a suite does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A smoke run for CI: every code path, small sizes, figures not meaningful.
    Quick,
    /// The sizes BENCHMARKS.md reports.
    Full,
}

impl Mode {
    pub fn is_quick(self) -> bool {
        self == Mode::Quick
    }
}

/// Nanoseconds since the Unix epoch. The one clock both processes of a cross-process
/// measurement can read.
pub fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Percentile `p` (0..=1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A duration in microseconds, for tables.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A nanosecond figure printed in the unit that reads best (µs below 10 ms, else ms).
pub fn fmt_ns(ns: i64) -> String {
    if ns < 10_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Peak and current resident set size of this process, in KiB, from /proc/self/status.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// What the report header says about the machine.
pub fn machine_summary() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let sqlite = rusqlite::version();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}, SQLite {sqlite} (bundled)",
        kernel.trim()
    )
}

/// Waits until `done` holds, polling every millisecond; false after `limit`.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}

/// Size in bytes of a database with its WAL.
pub fn db_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
