//! Memory: peak resident set size while a stalled component holds a backlog, then
//! while it drains. Each backlog size runs in a child process of its own, so its peak
//! (`VmHWM` in /proc/self/status) is its alone.
//!
//! In the child: Astha with two components on a 16-column table, `live` (confirms at
//! once) and `stalled` (its first `on_event` waits on a gate). A writer thread inserts
//! the backlog in 1000-row transactions; once `live` confirmed all of it, the backlog is
//! held by `stalled` alone, and the peak so far is read. Then the gate opens, `stalled`
//! drains the backlog, and the peak is read again; once log cleanup has removed the
//! drained rows (all but the newest), it is read a third time. The baseline, in the
//! same process, is the resident size after start and registration, before any change.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_actors::{Astha, Component, ComponentError};
use astha_core::config::AsthaConfig;
use astha_core::Change;
use async_trait::async_trait;
use rusqlite::params_from_iter;

use super::{create_wide_table, rss_kib, wide_insert_sql, wide_row, Mode};

const COLUMNS: usize = 16;

/// Figures of one backlog size.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub backlog: usize,
    /// Resident KiB after start and registration.
    pub baseline_kib: u64,
    /// Peak KiB up to the moment the stalled component held the whole backlog.
    pub stalled_peak_kib: u64,
    /// Peak KiB at the end of the drain.
    pub drained_peak_kib: u64,
    /// Peak KiB once cleanup removed the drained rows.
    pub cleaned_peak_kib: u64,
    pub drain: Duration,
    /// From the end of the drain to the end of the cleanup.
    pub cleanup: Duration,
    pub db_mib: f64,
    /// Peak of SQLite's own heap (`sqlite3_memory_highwater`), KiB.
    pub sqlite_peak_kib: u64,
}

/// Runs every backlog size, each in a child process.
pub fn run(mode: Mode) -> Vec<Memory> {
    let sizes: &[usize] = if mode.is_quick() {
        &[2_000, 10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    sizes
        .iter()
        .map(|&backlog| {
            let exe = std::env::current_exe().expect("own path");
            let output = Command::new(exe)
                .args(["memory-child", "--backlog", &backlog.to_string()])
                .output()
                .expect("spawn child");
            assert!(
                output.status.success(),
                "memory child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let m = parse(&String::from_utf8_lossy(&output.stdout), backlog);
            eprintln!(
                "memory backlog {backlog}: baseline {} MiB, stalled peak {} MiB, drained peak {} MiB, cleaned peak {} MiB, drain {:.1} s, cleanup {:.1} s",
                m.baseline_kib / 1024,
                m.stalled_peak_kib / 1024,
                m.drained_peak_kib / 1024,
                m.cleaned_peak_kib / 1024,
                m.drain.as_secs_f64(),
                m.cleanup.as_secs_f64()
            );
            m
        })
        .collect()
}

fn parse(stdout: &str, backlog: usize) -> Memory {
    let mut m = Memory {
        backlog,
        ..Memory::default()
    };
    for pair in stdout.split_whitespace() {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        match k {
            "baseline_kib" => m.baseline_kib = v.parse().unwrap_or(0),
            "stalled_peak_kib" => m.stalled_peak_kib = v.parse().unwrap_or(0),
            "drained_peak_kib" => m.drained_peak_kib = v.parse().unwrap_or(0),
            "cleaned_peak_kib" => m.cleaned_peak_kib = v.parse().unwrap_or(0),
            "cleanup_ms" => m.cleanup = Duration::from_millis(v.parse().unwrap_or(0)),
            "drain_ms" => m.drain = Duration::from_millis(v.parse().unwrap_or(0)),
            "db_mib" => m.db_mib = v.parse().unwrap_or(0.0),
            "sqlite_peak_kib" => m.sqlite_peak_kib = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    m
}

/// The child process: builds the backlog, measures, drains, measures, prints one line.
pub fn child(backlog: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("memory.db");
    {
        let conn = astha_core::db::open(&path).expect("open");
        create_wide_table(&conn, "m", COLUMNS).expect("table");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let astha = Astha::new(config(&path)).expect("astha");
    astha.start().expect("start");
    let live = Arc::new(AtomicUsize::new(0));
    let stalled = Arc::new(AtomicUsize::new(0));
    let (open_gate, gate) = tokio::sync::watch::channel(false);
    rt.block_on(astha.register_component(Box::new(Counting {
        name: "live",
        seen: live.clone(),
        gate: None,
    })))
    .expect("register live");
    rt.block_on(astha.register_component(Box::new(Counting {
        name: "stalled",
        seen: stalled.clone(),
        gate: Some(gate),
    })))
    .expect("register stalled");
    std::thread::sleep(Duration::from_millis(300));
    let (_, baseline) = rss_kib();
    write_backlog(&path, backlog);
    assert!(
        super::wait_for(Duration::from_secs(600), || live.load(Ordering::Relaxed)
            >= backlog),
        "live component did not catch up"
    );
    let (stalled_peak, _) = rss_kib();
    assert!(
        stalled.load(Ordering::Relaxed) == 0,
        "the stalled component confirmed something"
    );
    let start = Instant::now();
    open_gate.send(true).expect("gate");
    assert!(
        super::wait_for(Duration::from_secs(600), || stalled.load(Ordering::Relaxed)
            >= backlog),
        "stalled component did not drain"
    );
    let drain = start.elapsed();
    let (drained_peak, _) = rss_kib();
    let start = Instant::now();
    // Counted from Astha's own statistics: polling the log would add a connection (and
    // its page cache) to the figure. Every row but the newest goes.
    let stats = astha.stats();
    assert!(
        super::wait_for(Duration::from_secs(600), || {
            stats.cleaned.load(Ordering::Relaxed) + 1 >= backlog as u64
        }),
        "cleanup did not remove the drained rows"
    );
    let cleanup = start.elapsed();
    let (cleaned_peak, _) = rss_kib();
    // SQLite's own heap (page caches, statements), to tell it from Astha's.
    // SAFETY: sqlite3_memory_highwater only reads SQLite's global memory statistics; it
    // is thread-safe and takes no pointer.
    let sqlite_kib = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) } / 1024;
    let _ = rt.block_on(astha.stop());
    println!(
        "sqlite_peak_kib={sqlite_kib} baseline_kib={baseline} stalled_peak_kib={stalled_peak} drained_peak_kib={drained_peak} cleaned_peak_kib={cleaned_peak} drain_ms={} cleanup_ms={} db_mib={:.0}",
        drain.as_millis(),
        cleanup.as_millis(),
        super::db_bytes(&path) as f64 / (1 << 20) as f64
    );
}

fn write_backlog(path: &Path, backlog: usize) {
    let conn = astha_core::db::open_writer(path).expect("writer");
    let mut stmt = conn
        .prepare(&wide_insert_sql("m", COLUMNS))
        .expect("prepare");
    let mut i = 0i64;
    while (i as usize) < backlog {
        conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..1000 {
            if i as usize >= backlog {
                break;
            }
            i += 1;
            let mut row = vec![rusqlite::types::Value::Integer(i)];
            row.extend(wide_row(i, COLUMNS));
            stmt.execute(params_from_iter(row.iter())).expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
}

fn config(path: &Path) -> AsthaConfig {
    let mut c = AsthaConfig {
        database: path.to_path_buf(),
        ..AsthaConfig::default()
    };
    c.monitored_tables = vec!["m".into()];
    // The stall is the test: the supervisor must not time the handler out.
    c.supervisor.event_timeout = Duration::from_secs(3600);
    c.supervisor.refresh_after = Duration::from_secs(3600);
    // For the diagnosis in BENCHMARKS.md: how much of the peak is log cleanup.
    if let Some(ms) = std::env::var("ASTHA_BENCH_CLEANUP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.cleanup_interval = Duration::from_millis(ms);
    }
    c
}

struct Counting {
    name: &'static str,
    seen: Arc<AtomicUsize>,
    gate: Option<tokio::sync::watch::Receiver<bool>>,
}

#[async_trait]
impl Component for Counting {
    fn name(&self) -> &str {
        self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        vec!["m".into()]
    }

    async fn on_event(&mut self, _: &Change) -> Result<(), ComponentError> {
        if let Some(gate) = &mut self.gate {
            while !*gate.borrow() {
                gate.changed()
                    .await
                    .map_err(|_| ComponentError::transient("gate dropped"))?;
            }
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The suite's section of the report.
pub fn report(runs: &[Memory]) -> String {
    let mut out = String::from(
        "### Memory with a stalled component\n\n\
         Peak resident set (`VmHWM`) of a process running Astha, a writer thread and two \
         components (`live`, `stalled`) on a 16-column table; one child process per \
         backlog size. Baseline: resident size after start and registration. Peak after \
         cleanup: once log cleanup removed the drained rows; cleanup time: from the end of \
         the drain to then.\n\n\
         | backlog | database on disk | baseline RSS | peak while stalled | peak after drain | peak after cleanup | over baseline | of which SQLite heap (peak) | drain time | drain rate | cleanup time |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in runs {
        out.push_str(&format!(
            "| {} | {:.0} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | **{:.1} MiB** | +{:.1} MiB | {:.1} MiB | {:.1} s | {:.0}/s | {:.1} s |\n",
            m.backlog,
            m.db_mib,
            m.baseline_kib as f64 / 1024.0,
            m.stalled_peak_kib as f64 / 1024.0,
            m.drained_peak_kib as f64 / 1024.0,
            m.cleaned_peak_kib as f64 / 1024.0,
            (m.cleaned_peak_kib.saturating_sub(m.baseline_kib)) as f64 / 1024.0,
            m.sqlite_peak_kib as f64 / 1024.0,
            m.drain.as_secs_f64(),
            m.backlog as f64 / m.drain.as_secs_f64().max(1e-9),
            m.cleanup.as_secs_f64(),
        ));
    }
    out.push('\n');
    out
}
