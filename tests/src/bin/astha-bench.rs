//! Astha's benchmarks. Each suite measures Astha side by side with its baseline in the
//! same run and prints a Markdown section (progress goes to stderr).
//!
//! ```sh
//! cargo run --release -p astha-tests --bin astha-bench -- all           # figures
//! cargo run --release -p astha-tests --bin astha-bench -- all --quick   # CI smoke
//! cargo run --release -p astha-tests --bin astha-bench -- capture       # one suite
//! cargo run --release -p astha-tests --bin astha-bench -- http          # catch-up under /metrics load
//! cargo run --release -p astha-tests --bin astha-bench -- sinks         # commit to file sink, per format
//! cargo run --release -p astha-tests --bin astha-bench -- iceberg       # commit cost vs history, with pyiceberg
//! ```

use astha_tests::bench::{self, capture, http, iceberg, latency, memory, sinks, throughput, Mode};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Astha benchmarks: capture overhead, latency, throughput, memory")]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
    /// Small sizes for a smoke run; the figures are not meaningful.
    #[arg(long, global = true)]
    quick: bool,
}

#[derive(Subcommand)]
enum Suite {
    /// Every suite, then the targets.
    All,
    /// Capture write overhead of each trigger shape.
    Capture,
    /// Commit-to-delivery latency at fixed rates.
    Latency,
    /// End-to-end throughput with four components.
    Throughput,
    /// Peak memory with a stalled component's backlog.
    Memory,
    /// Catch-up time alone and while many clients scrape /metrics.
    Http,
    /// Commit to the file sink, embedded and through `astha run`, in each format.
    Sinks,
    /// Iceberg commit cost against history, side by side with pyiceberg.
    Iceberg,
    /// (internal) the other-process writer of the latency suite.
    #[command(hide = true)]
    LatencyWriter {
        #[arg(long)]
        db: std::path::PathBuf,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        start_ns: i64,
    },
    /// (internal) one backlog size of the memory suite.
    #[command(hide = true)]
    MemoryChild {
        #[arg(long)]
        backlog: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let mode = if cli.quick { Mode::Quick } else { Mode::Full };
    let (capture, latency, throughput, memory, http, sinks, iceberg) = match cli.suite {
        Suite::LatencyWriter {
            db,
            rate,
            count,
            start_ns,
        } => {
            let commits = latency::write_plain(&db, rate, count, start_ns);
            let out: Vec<String> = commits.iter().map(i64::to_string).collect();
            println!("{}", out.join("\n"));
            return;
        }
        Suite::MemoryChild { backlog } => {
            memory::child(backlog);
            return;
        }
        Suite::All => (true, true, true, true, true, true, true),
        Suite::Capture => (true, false, false, false, false, false, false),
        Suite::Latency => (false, true, false, false, false, false, false),
        Suite::Throughput => (false, false, true, false, false, false, false),
        Suite::Memory => (false, false, false, true, false, false, false),
        Suite::Http => (false, false, false, false, true, false, false),
        Suite::Sinks => (false, false, false, false, false, true, false),
        Suite::Iceberg => (false, false, false, false, false, false, true),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("## Run of `astha-bench {}`\n", args.join(" "));
    println!("- machine: {}", bench::machine_summary());
    println!("- started: {}", date());
    println!(
        "- mode: {}\n",
        if mode.is_quick() {
            "quick (smoke run, figures not meaningful)"
        } else {
            "full"
        }
    );
    let started = std::time::Instant::now();
    let mut targets = bench::targets::Targets::default();
    if capture {
        let options = capture::CaptureOptions::for_mode(mode);
        let cells = capture::run(&options);
        println!("{}", capture::report(&cells, &options));
        targets.capture = Some(cells);
    }
    if latency {
        let runs = latency::run(mode);
        println!("{}", latency::report(&runs));
        targets.latency = Some(runs);
    }
    if throughput {
        let runs = throughput::run(mode);
        println!("{}", throughput::report(&runs));
        targets.throughput = Some(runs);
    }
    if memory {
        let runs = memory::run(mode);
        println!("{}", memory::report(&runs));
        targets.memory = Some(runs);
    }
    if http {
        let load = http::run(mode);
        println!("{}", http::report(&load));
        targets.http = Some(load);
    }
    if sinks {
        println!("{}", sinks::report(&sinks::run(mode)));
    }
    if iceberg {
        println!("{}", iceberg::report(&iceberg::run(mode)));
    }
    println!("{}", targets.report());
    println!(
        "Total run time: {:.0} s (finished {}).",
        started.elapsed().as_secs_f64(),
        date()
    );
}

fn date() -> String {
    std::process::Command::new("date")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
