//! The fault harness's Astha process: runs Astha on the database the writer process
//! changes, with the components of `astha_tests::fault::COMPONENTS`, each appending
//! every change it confirms to its own sink file before it returns `Ok`. The harness
//! kills it with `kill -9` at random points and starts it again.
//!
//! With `--exit-when-caught-up` (the last run, after the writer stopped) it stops
//! gracefully once every component's position reached the log head, and exits 0.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use astha_actors::{Astha, Component, ComponentError};
use astha_core::config::AsthaConfig;
use astha_core::Change;
use astha_tests::fault::{change_id, COMPONENTS};
use async_trait::async_trait;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    db: PathBuf,
    /// Directory of the sink files, one per component: `<name>.log`.
    #[arg(long)]
    sinks: PathBuf,
    #[arg(long)]
    exit_when_caught_up: bool,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

fn main() {
    let args = Args::parse();
    let conn = astha_core::db::open(&args.db).expect("open database");
    let mut sinks = Vec::new();
    for (name, tables, slow) in COMPONENTS {
        let position = astha_core::slots::get(&conn, name)
            .expect("read slot")
            .map_or(0, |s| s.position);
        let file = open_sink(&args.sinks.join(format!("{name}.log")), position);
        sinks.push(Sink {
            name,
            tables,
            slow: *slow,
            file,
            handled: 0,
        });
    }
    let astha = Astha::new(config(&args)).expect("astha");
    astha.start().expect("start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for sink in sinks {
        rt.block_on(astha.register_component(Box::new(sink)))
            .expect("register");
    }
    if !args.exit_when_caught_up {
        // Until killed; or until the harness's directory is gone (a failed test must not
        // leave this process behind).
        while args.db.exists() {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::process::exit(3);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let head = astha_core::log::head_lsn(&conn, "__cdc_log").expect("head");
        let caught_up = COMPONENTS.iter().all(|(name, _, _)| {
            astha
                .component_info(name)
                .is_some_and(|c| c.position >= head)
        });
        if caught_up {
            break;
        }
        if Instant::now() > deadline || !args.db.exists() {
            eprintln!("worker: not caught up: {:?}", astha.scheduler_stats());
            std::process::exit(2);
        }
    }
    rt.block_on(astha.stop()).expect("stop");
}

/// Opens a sink for appending, ends a line cut short by a kill, and marks this start.
fn open_sink(path: &Path, position: i64) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .expect("open sink");
    let len = file.metadata().expect("sink metadata").len();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1)).expect("seek");
        file.read_exact(&mut last).expect("read");
        if last[0] != b'\n' {
            file.write_all(b"\n").expect("sink");
        }
    }
    file.write_all(format!("# start {position}\n").as_bytes())
        .expect("sink");
    file
}

fn config(args: &Args) -> AsthaConfig {
    let mut c = AsthaConfig {
        database: args.db.clone(),
        ..AsthaConfig::default()
    };
    c.monitored_tables = vec!["t".into(), "u".into()];
    c.batch_size = args.batch_size;
    c.window_batches = 4;
    c.backstop_interval = Duration::from_millis(20);
    c.cleanup_interval = Duration::from_millis(100);
    c
}

/// A component that makes each confirmed change durable in its sink before confirming.
struct Sink {
    name: &'static str,
    tables: &'static [&'static str],
    slow: bool,
    file: File,
    handled: u64,
}

#[async_trait]
impl Component for Sink {
    fn name(&self) -> &str {
        self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.to_string()).collect()
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        let id = change_id(change)
            .ok_or_else(|| ComponentError::permanent(format!("no n in {change:?}")))?;
        let line = format!("{}\t{}\t{id}\n", change.lsn, change.table);
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| ComponentError::transient(format!("sink write: {e}")))?;
        self.handled += 1;
        if self.slow && self.handled.is_multiple_of(8) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }
}
