//! The latency, throughput and capture suites of `astha-bench` (`tests/src/bench/latency.rs`,
//! `throughput.rs`, `capture.rs` with its `shapes.rs`, included as they are), built
//! against astha-actors alone: the same measurements and the same Markdown, without the
//! sinks, brokers and lakehouse the full bench links (a release build in minutes instead
//! of most of an hour on two cores).
//!
//! ```sh
//! cargo run --release -p astha-actors --example delivery_bench -- latency
//! cargo run --release -p astha-actors --example delivery_bench -- throughput [--quick]
//! cargo run --release -p astha-actors --example delivery_bench -- capture [--quick]
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "../../tests/src/bench/bare_consumer.rs"]
mod bare_consumer;
#[path = "../../tests/src/bench/capture.rs"]
#[allow(dead_code)]
mod capture;
#[path = "../../tests/src/bench/latency.rs"]
#[allow(dead_code)]
mod latency;
#[path = "../../tests/src/bench/shapes.rs"]
#[allow(dead_code)]
mod shapes;
#[path = "../../tests/src/bench/table.rs"]
mod table;
#[path = "../../tests/src/bench/throughput.rs"]
#[allow(dead_code)]
mod throughput;

use table::{create_wide_table, wide_insert_sql, wide_row};

/// What `shapes.rs` reaches as `crate::bench`.
mod bench {
    pub(crate) use super::create_wide_table;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if args.iter().any(|a| a == "--quick") {
        Mode::Quick
    } else {
        Mode::Full
    };
    match args.first().map(String::as_str) {
        // The other-process writer of the latency suite (the suite runs this binary).
        Some("latency-writer") => {
            let arg = |name: &str| -> String {
                let at = args.iter().position(|a| a == name).expect(name);
                args[at + 1].clone()
            };
            let commits = latency::write_plain(
                Path::new(&arg("--db")),
                arg("--rate").parse().expect("rate"),
                arg("--count").parse().expect("count"),
                arg("--start-ns").parse().expect("start"),
            );
            let out: Vec<String> = commits.iter().map(i64::to_string).collect();
            println!("{}", out.join("\n"));
        }
        Some("latency") => print!("{}", latency::report(&latency::run(mode))),
        Some("throughput") => print!("{}", throughput::report(&throughput::run(mode))),
        Some("capture") => {
            let options = capture::CaptureOptions::for_mode(mode);
            print!("{}", capture::report(&capture::run(&options), &options));
        }
        _ => eprintln!("usage: delivery_bench latency|throughput|capture [--quick]"),
    }
}

/// How much work a suite does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A smoke run for CI: every code path, small sizes, figures not meaningful.
    Quick,
    /// The sizes BENCHMARKS.md reports.
    Full,
}

impl Mode {
    fn is_quick(self) -> bool {
        self == Mode::Quick
    }
}

/// Nanoseconds since the Unix epoch. The one clock both processes of a cross-process
/// measurement can read.
fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Microseconds in `d`, as a float.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Percentile `p` (0..=1) of sorted samples, nearest rank.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A nanosecond figure printed in the unit that reads best (µs below 10 ms, else ms).
fn fmt_ns(ns: i64) -> String {
    if ns < 10_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Waits until `done` holds, polling every millisecond; false after `limit`.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}
