//! Commit-to-delivery latency at a fixed commit rate, one row per commit, with the writer
//! on a thread of the same process or in another process.
//!
//! A commit's time is read just before the `execute` that inserts and commits the row
//! (so a figure includes the commit itself, a few µs, and is never negative); its delivery
//! time when the component's `on_event` starts. Both are read from the system clock (nanoseconds since
//! the Unix epoch), the one clock two processes share. The writer follows an open-loop
//! schedule (commit i is due at start + i/rate; a late writer does not skip, it catches
//! up), so a stall shows up as latency rather than as a lower rate.
//!
//! Baselines, in the same run: the floors of docs/FLOORS.md. In one process, a `wal_hook` on
//! the writer's connection signalling a condvar to a reader thread that reads up to 256
//! log rows after its position; across processes, a reader polling `PRAGMA data_version`
//! every millisecond. Both read the log Astha's own triggers fill.
//!
//! `ASTHA_BENCH_LATENCY_ONLY=same-10000` (writer `same` or `other`, then the rate) runs
//! that case alone, floor and Astha, for a profiler.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use astha_actors::{Astha, Component, ComponentError};
use astha_core::config::AsthaConfig;
use astha_core::{Change, Value};
use async_trait::async_trait;
use rusqlite::Connection;

use super::{fmt_ns, percentile, unix_ns, Mode};

/// Where the writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    SameProcess,
    OtherProcess,
}

impl Writer {
    pub fn name(self) -> &'static str {
        match self {
            Writer::SameProcess => "same process",
            Writer::OtherProcess => "other process",
        }
    }
}

/// What receives the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    /// The floor of docs/FLOORS.md: wal_hook + condvar (same process) or a 1 ms
    /// `data_version` poll (other process), reading raw log rows.
    Floor,
    /// Astha with one component, default settings.
    Astha,
}

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct Run {
    pub writer: Writer,
    pub receiver: Receiver,
    pub rate: u32,
    pub samples: usize,
    /// Rate the writer achieved, commits per second.
    pub achieved: f64,
    pub p50: i64,
    pub p99: i64,
    pub p999: i64,
    pub max: i64,
}

/// Runs the suite.
pub fn run(mode: Mode) -> Vec<Run> {
    let seconds = |rate: u32| -> f64 {
        match (mode, rate) {
            (Mode::Quick, _) => 0.3,
            (Mode::Full, 1000) => 10.0,
            (Mode::Full, _) => 5.0,
        }
    };
    let only = std::env::var("ASTHA_BENCH_LATENCY_ONLY").ok();
    let mut runs = Vec::new();
    for writer in [Writer::SameProcess, Writer::OtherProcess] {
        for rate in [1000u32, 10_000] {
            let case = format!("{}-{rate}", writer.name().split(' ').next().unwrap_or(""));
            if only.as_ref().is_some_and(|only| *only != case) {
                continue;
            }
            for receiver in [Receiver::Floor, Receiver::Astha] {
                let count = (rate as f64 * seconds(rate)) as usize;
                let run = measure(writer, receiver, rate, count);
                eprintln!(
                    "latency {:<13} {:>5}/s {:<5} p50 {} p99 {} p99.9 {} max {} ({} samples, {:.0}/s achieved)",
                    writer.name(),
                    rate,
                    if receiver == Receiver::Floor { "floor" } else { "astha" },
                    fmt_ns(run.p50),
                    fmt_ns(run.p99),
                    fmt_ns(run.p999),
                    fmt_ns(run.max),
                    run.samples,
                    run.achieved
                );
                runs.push(run);
            }
        }
    }
    runs
}

/// Warm-up commits before the measured ones (not counted).
const WARMUP: usize = 200;

fn measure(writer: Writer, receiver: Receiver, rate: u32, count: usize) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latency.db");
    setup_db(&path);
    let total = WARMUP + count;
    let received: Arc<Mutex<Vec<(i64, i64)>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let seen = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let astha = match receiver {
        Receiver::Astha => {
            let astha = Astha::new(config(&path)).expect("astha");
            astha.start().expect("start");
            let probe = Probe {
                received: received.clone(),
                seen: seen.clone(),
            };
            rt.block_on(astha.register_component(Box::new(probe)))
                .expect("register");
            Some(astha)
        }
        Receiver::Floor => None,
    };
    let floor = match receiver {
        Receiver::Floor => Some(FloorReader::start(
            &path,
            writer == Writer::OtherProcess,
            received.clone(),
            seen.clone(),
        )),
        Receiver::Astha => None,
    };
    // Let registration (and the component's first refresh) settle.
    std::thread::sleep(Duration::from_millis(100));
    let cpu_before = super::throughput::astha_threads_cpu();
    let start_ns = unix_ns() + 50_000_000;
    let commits = match writer {
        Writer::SameProcess => {
            let path = path.clone();
            let hook = receiver == Receiver::Floor;
            std::thread::spawn(move || write_at_rate(&path, hook, rate, total, start_ns))
                .join()
                .expect("writer thread")
        }
        Writer::OtherProcess => write_in_child(&path, rate, total, start_ns),
    };
    let all = super::wait_for(Duration::from_secs(60), || {
        seen.load(Ordering::Relaxed) >= total
    });
    if receiver == Receiver::Astha {
        let cpu = super::throughput::astha_threads_cpu().saturating_sub(cpu_before);
        eprintln!(
            "CPU of Astha's threads: {} ms, {:.1} µs per commit",
            cpu.as_millis(),
            cpu.as_secs_f64() * 1e6 / total as f64
        );
    }
    if let Some(floor) = floor {
        floor.stop();
    }
    if let Some(astha) = astha {
        let _ = rt.block_on(astha.stop());
    }
    assert!(
        all,
        "only {} of {total} changes delivered",
        seen.load(Ordering::Relaxed)
    );
    let received = received.lock().expect("received").clone();
    let mut at = vec![0i64; total];
    for (seq, ns) in received {
        let slot = &mut at[seq as usize];
        if *slot == 0 {
            *slot = ns;
        }
    }
    let mut latencies: Vec<i64> = (WARMUP..total).map(|i| at[i] - commits[i]).collect();
    latencies.sort_unstable();
    let span = (commits[total - 1] - commits[WARMUP]) as f64 / 1e9;
    Run {
        writer,
        receiver,
        rate,
        samples: count,
        achieved: if span > 0.0 {
            (count - 1) as f64 / span
        } else {
            0.0
        },
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        max: *latencies.last().unwrap_or(&0),
    }
}

fn setup_db(path: &Path) {
    let conn = astha_core::db::open(path).expect("open");
    conn.execute_batch("CREATE TABLE lat (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)")
        .expect("create");
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "lat")
        .expect("capture");
}

fn config(path: &Path) -> AsthaConfig {
    let mut c = AsthaConfig {
        database: path.to_path_buf(),
        ..AsthaConfig::default()
    };
    c.monitored_tables = vec!["lat".into()];
    c
}

/// Commits `count` rows at `rate` per second from `start_ns`; returns each commit's time.
/// With `hook`, the connection signals the floor reader's condvar on every commit;
/// without it (Astha, same process) it is Astha's writer connection, whose commits wake
/// the poller.
pub fn write_at_rate(path: &Path, hook: bool, rate: u32, count: usize, start_ns: i64) -> Vec<i64> {
    let conn = if hook {
        let conn = astha_core::db::open(path).expect("open");
        conn.wal_hook(Some(floor_hook));
        conn
    } else {
        astha_core::db::open_writer(path).expect("open writer")
    };
    write_loop(&conn, rate, count, start_ns)
}

/// The other-process writer: a plain connection, as any application would open.
pub fn write_plain(path: &Path, rate: u32, count: usize, start_ns: i64) -> Vec<i64> {
    let conn = astha_core::db::open(path).expect("open");
    write_loop(&conn, rate, count, start_ns)
}

fn write_loop(conn: &Connection, rate: u32, count: usize, start_ns: i64) -> Vec<i64> {
    let period = 1e9 / rate as f64;
    let mut stmt = conn
        .prepare("INSERT INTO lat (seq) VALUES (?1)")
        .expect("prepare");
    let mut commits = Vec::with_capacity(count);
    for i in 0..count {
        let due = start_ns + (i as f64 * period) as i64;
        let wait = due - unix_ns();
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait as u64));
        }
        commits.push(unix_ns());
        stmt.execute([i as i64]).expect("insert");
    }
    commits
}

fn write_in_child(path: &Path, rate: u32, count: usize, start_ns: i64) -> Vec<i64> {
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe)
        .args([
            "latency-writer",
            "--db",
            &path.display().to_string(),
            "--rate",
            &rate.to_string(),
            "--count",
            &count.to_string(),
            "--start-ns",
            &start_ns.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn writer process");
    assert!(output.status.success(), "writer process failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().parse::<i64>().expect("commit time"))
        .collect()
}

/// The probe component: notes when each change arrives.
struct Probe {
    received: Arc<Mutex<Vec<(i64, i64)>>>,
    seen: Arc<AtomicUsize>,
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        "probe"
    }

    fn subscriptions(&self) -> Vec<String> {
        vec!["lat".into()]
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        let now = unix_ns();
        let seq = match change.after.as_ref().and_then(|r| r.get("seq")) {
            Some(Value::Integer(s)) => *s,
            other => return Err(ComponentError::permanent(format!("bad seq {other:?}"))),
        };
        self.received.lock().expect("probe").push((seq, now));
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

static FLOOR_SIGNAL: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

fn floor_hook(_: &rusqlite::hooks::Wal, _: std::os::raw::c_int) -> rusqlite::Result<()> {
    let (lock, cvar) = &FLOOR_SIGNAL;
    *lock.lock().expect("floor signal") += 1;
    cvar.notify_one();
    Ok(())
}

/// The floor reader: a thread that reads raw log rows as soon as it learns of a commit.
struct FloorReader {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl FloorReader {
    fn start(
        path: &Path,
        poll: bool,
        received: Arc<Mutex<Vec<(i64, i64)>>>,
        seen: Arc<AtomicUsize>,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let conn = astha_core::db::open(&path).expect("open");
            let mut stmt = conn
                .prepare("SELECT id, v1 FROM __cdc_log WHERE id > ?1 ORDER BY id LIMIT 256")
                .expect("prepare");
            let mut position = 0i64;
            let mut version: i64 = -1;
            let mut signals = *FLOOR_SIGNAL.0.lock().expect("floor signal");
            while !flag.load(Ordering::Relaxed) {
                if poll {
                    std::thread::sleep(Duration::from_millis(1));
                    let v: i64 = conn
                        .query_row("PRAGMA data_version", [], |r| r.get(0))
                        .expect("data_version");
                    if v == version {
                        continue;
                    }
                    version = v;
                } else {
                    let (lock, cvar) = &FLOOR_SIGNAL;
                    let guard = lock.lock().expect("floor signal");
                    let (guard, _) = cvar
                        .wait_timeout_while(guard, Duration::from_millis(100), |n| *n == signals)
                        .expect("floor signal");
                    signals = *guard;
                }
                loop {
                    let rows: Vec<(i64, i64)> = stmt
                        .query_map([position], |r| Ok((r.get(0)?, r.get(1)?)))
                        .expect("read log")
                        .collect::<rusqlite::Result<_>>()
                        .expect("read log");
                    let now = unix_ns();
                    let n = rows.len();
                    let mut got = received.lock().expect("received");
                    for (id, seq) in rows {
                        position = id;
                        // The image's values are `id, seq`.
                        got.push((seq, now));
                    }
                    drop(got);
                    seen.fetch_add(n, Ordering::Relaxed);
                    if n < 256 {
                        break;
                    }
                }
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        floor_hook_wake();
        let _ = self.thread.join();
    }
}

fn floor_hook_wake() {
    let (lock, cvar) = &FLOOR_SIGNAL;
    *lock.lock().expect("floor signal") += 1;
    cvar.notify_all();
}

/// The suite's section of the report.
pub fn report(runs: &[Run]) -> String {
    let mut out = String::from(
        "### Commit-to-delivery latency\n\n\
         One row per commit at a fixed rate. `floor`: the floor of docs/FLOORS.md reproduced in this \
         run (same process: `wal_hook` + condvar, reader thread; other process: 1 ms \
         `PRAGMA data_version` poll); `astha`: Astha with one component, default settings \
         (writer connection from `astha_core::db::open_writer` in the same process, a plain \
         connection in the other).\n\n\
         | writer | rate | receiver | samples | achieved rate | p50 | p99 | p99.9 | max | p50 / floor | p99 / floor |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let floor = runs
            .iter()
            .find(|f| f.receiver == Receiver::Floor && f.writer == r.writer && f.rate == r.rate);
        let ratio = |a: i64, b: Option<i64>| match b {
            Some(b) if b > 0 && r.receiver == Receiver::Astha => {
                format!("{:.1}×", a as f64 / b as f64)
            }
            _ => "–".into(),
        };
        out.push_str(&format!(
            "| {} | {}/s | {} | {} | {:.0}/s | {} | {} | {} | {} | {} | {} |\n",
            r.writer.name(),
            r.rate,
            if r.receiver == Receiver::Floor {
                "floor"
            } else {
                "astha"
            },
            r.samples,
            r.achieved,
            fmt_ns(r.p50),
            fmt_ns(r.p99),
            fmt_ns(r.p999),
            fmt_ns(r.max),
            ratio(r.p50, floor.map(|f| f.p50)),
            ratio(r.p99, floor.map(|f| f.p99)),
        ));
    }
    out.push('\n');
    out
}
