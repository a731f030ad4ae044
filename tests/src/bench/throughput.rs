//! End-to-end throughput: a writer inserts flat out (100-row transactions into a
//! 16-column table) while Astha delivers to four components subscribed to the table;
//! the figure is changes per second confirmed by all four, from the first commit to the
//! last confirmation. Baselines in the same run: the raw insert rate with no capture at
//! all, the insert rate with Astha's triggers but nothing reading the log, and (batch 256)
//! the writer beside a bare consumer in each of its protocols instead of Astha
//! ([`super::bare_consumer`], the floor of any durable consumer). Beside the
//! rates, figures that hold on a loaded machine: how often the writer found the write lock
//! held (its busy handler waits as `open_writer`'s does, or as SQLite's busy timeout with
//! `ASTHA_BENCH_WRITER_BUSY=sqlite`, and counts), and the checkpoints run on committing
//! threads while it wrote. `ASTHA_BENCH_WRITER=plain` writes on a connection as an
//! application opens it (SQLite's automatic checkpoints, no wake-up hook: Astha notices
//! its commits by `data_version`). `ASTHA_BENCH_WAL_MAX_BYTES` sets Astha's `wal_max_bytes`
//! (`0`: the WAL is never reset, the baseline of the WAL bound);
//! `ASTHA_BENCH_THROUGHPUT_ROWS` the rows written (200,000; a longer run shows what a
//! writer keeps up while the log is cleaned behind it).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_actors::{Astha, Component, ComponentError};
use astha_core::config::AsthaConfig;
use astha_core::Change;
use async_trait::async_trait;
use rusqlite::{params_from_iter, Connection};

use super::{create_wide_table, wide_insert_sql, wide_row, Mode};

/// Columns of the table written.
const COLUMNS: usize = 16;
/// Components subscribed.
const COMPONENTS: usize = 4;

/// The suite's figures.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub rows: usize,
    /// Rows per second with no capture (best of 3).
    pub raw_rate: f64,
    /// Rows per second with Astha's triggers and nothing reading (best of 3).
    pub capture_rate: f64,
    /// Rows per second the writer achieved while Astha delivered.
    pub writer_rate: f64,
    /// Changes per second confirmed by all four components.
    pub delivered_rate: f64,
    /// From the last commit to the last confirmation.
    pub tail: Duration,
    /// From the last confirmation until every slot was durably at the head.
    pub slots_after: Duration,
    pub batch_size: usize,
    /// Times the writer found the write lock held (calls of its busy handler, which
    /// sleeps as `open_writer`'s does), and the milliseconds it slept.
    pub writer_busy: u64,
    pub writer_busy_ms: u64,
    /// Astha's slot-write and cleanup transactions during the run.
    pub slot_writes: u64,
    pub cleanups: u64,
    /// Checkpoints run on committing threads (the writer's, Astha's bookkeeping
    /// writer's) while the writer wrote, and their milliseconds.
    pub inline_checkpoints: u64,
    pub inline_checkpoint_ms: u64,
    /// Time on CPU of Astha's threads while it delivered.
    pub astha_cpu: Duration,
    /// The bare consumer's floors at the same batch size, one per protocol (batch 256
    /// only).
    pub bare: Vec<BareFloor>,
}

/// The writer beside the bare consumer (the floor of any durable consumer of the log).
#[derive(Debug, Clone, Copy)]
pub struct BareFloor {
    /// How it wrote.
    pub protocol: super::bare_consumer::Protocol,
    /// Rows per second the writer achieved beside it.
    pub writer_rate: f64,
    /// Changes per second it consumed, first commit to its position at the last row.
    pub consumed_rate: f64,
    pub consumer_cpu: Duration,
    /// The writer's busy waits beside it, and the milliseconds they took.
    pub writer_busy: u64,
    pub writer_busy_ms: u64,
}

/// Runs the suite: once with the default batch size, once with 1024-row batches.
pub fn run(mode: Mode) -> Vec<Throughput> {
    let rows = match std::env::var("ASTHA_BENCH_THROUGHPUT_ROWS") {
        Ok(rows) => rows
            .parse()
            .expect("ASTHA_BENCH_THROUGHPUT_ROWS: a number of rows"),
        Err(_) if mode.is_quick() => 5_000,
        Err(_) => 200_000,
    };
    let data = rows_of(rows);
    let raw_rate = (0..3).map(|_| write_only(&data, false)).fold(0.0, f64::max);
    let capture_rate = (0..3).map(|_| write_only(&data, true)).fold(0.0, f64::max);
    let mut out = Vec::new();
    for batch_size in [256usize, 1024] {
        // The floors at the default batch size, where the targets are.
        let bare: Vec<BareFloor> = match batch_size {
            256 => super::bare_consumer::Protocol::ALL
                .iter()
                .map(|&protocol| with_bare_consumer(&data, batch_size, protocol))
                .collect(),
            _ => Vec::new(),
        };
        let mut t = with_astha(&data, batch_size, raw_rate, capture_rate);
        t.bare = bare;
        eprintln!(
            "throughput batch {batch_size}: raw {:.0}/s, capture-only {:.0}/s, writer {:.0}/s, delivered to all {COMPONENTS} {:.0}/s ({:.0}% of raw); writer busy waits {} ({} ms slept); Astha slot writes {}, cleanups {}",
            t.raw_rate,
            t.capture_rate,
            t.writer_rate,
            t.delivered_rate,
            t.delivered_rate / t.raw_rate * 100.0,
            t.writer_busy,
            t.writer_busy_ms,
            t.slot_writes,
            t.cleanups,
        );
        out.push(t);
    }
    out
}

fn rows_of(n: usize) -> Vec<Vec<rusqlite::types::Value>> {
    (0..n as i64)
        .map(|i| {
            let mut row = vec![rusqlite::types::Value::Integer(i + 1)];
            row.extend(wide_row(i + 1, COLUMNS));
            row
        })
        .collect()
}

fn insert_all(conn: &Connection, data: &[Vec<rusqlite::types::Value>]) {
    let mut stmt = conn
        .prepare(&wide_insert_sql("t", COLUMNS))
        .expect("prepare");
    for chunk in data.chunks(100) {
        conn.execute_batch("BEGIN").expect("begin");
        for row in chunk {
            stmt.execute(params_from_iter(row.iter())).expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
}

/// Rows per second of a writer alone, with or without Astha's triggers.
fn write_only(data: &[Vec<rusqlite::types::Value>], capture: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.db");
    let conn = astha_core::db::open(&path).expect("open");
    create_wide_table(&conn, "t", COLUMNS).expect("table");
    if capture {
        astha_core::capture::Capture::new("__cdc_log")
            .install(&conn, "t")
            .expect("capture");
    }
    let start = Instant::now();
    let before = thread_sched("thread-self");
    insert_all(&conn, data);
    let after = thread_sched("thread-self");
    eprintln!(
        "writer alone ({}): {} ms, of it on CPU {} ms, runnable but waiting {} ms",
        if capture { "capture only" } else { "raw" },
        start.elapsed().as_millis(),
        (after.0 - before.0).as_millis(),
        (after.1 - before.1).as_millis(),
    );
    data.len() as f64 / start.elapsed().as_secs_f64()
}

fn config(path: &Path, batch_size: usize) -> AsthaConfig {
    let mut c = AsthaConfig {
        database: path.to_path_buf(),
        ..AsthaConfig::default()
    };
    c.monitored_tables = vec!["t".into()];
    c.batch_size = batch_size;
    if let Ok(secs) = std::env::var("ASTHA_BENCH_CLEANUP_SECS") {
        c.cleanup_interval = Duration::from_secs(secs.parse().expect("seconds"));
        c.lease_ttl = c.cleanup_interval * 3;
    }
    if let Ok(bytes) = std::env::var("ASTHA_BENCH_WAL_MAX_BYTES") {
        c.wal_max_bytes = bytes.parse().expect("ASTHA_BENCH_WAL_MAX_BYTES: bytes");
    }
    c
}

/// The suite's writer: a thread that inserts `data` in 100-row transactions on an
/// `open_writer` connection (`ASTHA_BENCH_WRITER=plain`: as an application opens one) with
/// the busy handler chosen by `ASTHA_BENCH_WRITER_BUSY`, counted; it returns when its last
/// commit returned, with its time on CPU and runnable but waiting for a CPU. `data` is
/// the caller's copy, made before its clock starts (copying 200,000 rows takes tens of
/// milliseconds, which the writer alone is not charged).
fn spawn_writer(
    path: &Path,
    data: Vec<Vec<rusqlite::types::Value>>,
) -> std::thread::JoinHandle<(Instant, (Duration, Duration))> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // `ASTHA_BENCH_WRITER=plain`: an application's own connection (SQLite's
        // automatic checkpoints, no wake-up hook) instead of `open_writer`.
        let plain = std::env::var("ASTHA_BENCH_WRITER").is_ok_and(|v| v == "plain");
        let conn = match plain {
            true => astha_core::db::open(&path).expect("writer"),
            false => astha_core::db::open_writer(&path).expect("writer"),
        };
        // Astha's writer schedule, counted; `ASTHA_BENCH_WRITER_BUSY=sqlite`: SQLite's.
        let sqlite = std::env::var("ASTHA_BENCH_WRITER_BUSY").is_ok_and(|v| v == "sqlite");
        conn.busy_handler(Some(if sqlite {
            sleeping_like_sqlite
        } else {
            sleeping_like_open_writer
        }))
        .expect("busy handler");
        let before = thread_sched("thread-self");
        insert_all(&conn, &data);
        let after = thread_sched("thread-self");
        (Instant::now(), (after.0 - before.0, after.1 - before.1))
    })
}

/// The writer beside the bare consumer of [`super::bare_consumer`] instead of Astha: the
/// floor of what any durable consumer of the log costs the writer, in the same run.
fn with_bare_consumer(
    data: &[Vec<rusqlite::types::Value>],
    batch_size: usize,
    protocol: super::bare_consumer::Protocol,
) -> BareFloor {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bare.db");
    {
        let conn = astha_core::db::open(&path).expect("open");
        create_wide_table(&conn, "t", COLUMNS).expect("table");
        astha_core::capture::Capture::new("__cdc_log")
            .install(&conn, "t")
            .expect("capture");
    }
    let writer_done = Arc::new(AtomicBool::new(false));
    let writes = data.to_vec();
    let start = Instant::now();
    let consumer = super::bare_consumer::spawn(
        &path,
        "__cdc_log",
        batch_size,
        data.len() as i64,
        protocol,
        writer_done.clone(),
    );
    let (written, (writer_cpu, writer_queued)) =
        spawn_writer(&path, writes).join().expect("writer thread");
    writer_done.store(true, Ordering::Relaxed);
    let run = consumer.join().expect("bare consumer");
    let (busy, busy_us) = (
        BUSY_CALLS.swap(0, Ordering::Relaxed),
        BUSY_SLEPT_US.swap(0, Ordering::Relaxed),
    );
    let n = data.len() as f64;
    let floor = BareFloor {
        protocol,
        writer_rate: n / (written - start).as_secs_f64(),
        consumed_rate: n / (run.done - start).as_secs_f64(),
        consumer_cpu: run.cpu,
        writer_busy: busy,
        writer_busy_ms: busy_us / 1000,
    };
    eprintln!(
        "bare consumer (batch {batch_size}, {}): writer {:.0}/s, consumed {:.0}/s, {} writes; \
         its CPU {} ms ({:.1} µs per change); the writer {} ms on CPU of its {} ms (runnable but waiting {} ms), \
         busy waits {busy} ({} ms)",
        protocol.name(),
        floor.writer_rate,
        floor.consumed_rate,
        run.writes,
        run.cpu.as_millis(),
        run.cpu.as_secs_f64() * 1e6 / n,
        writer_cpu.as_millis(),
        (written - start).as_millis(),
        writer_queued.as_millis(),
        busy_us / 1000,
    );
    floor
}

fn with_astha(
    data: &[Vec<rusqlite::types::Value>],
    batch_size: usize,
    raw_rate: f64,
    capture_rate: f64,
) -> Throughput {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("throughput.db");
    {
        let conn = astha_core::db::open(&path).expect("open");
        create_wide_table(&conn, "t", COLUMNS).expect("table");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let astha = Astha::new(config(&path, batch_size)).expect("astha");
    astha.start().expect("start");
    let counters: Vec<Arc<Counter>> = (0..COMPONENTS).map(|_| Arc::default()).collect();
    for (i, counter) in counters.iter().enumerate() {
        let component = Counting {
            name: format!("c{i}"),
            counter: counter.clone(),
        };
        rt.block_on(astha.register_component(Box::new(component)))
            .expect("register");
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = astha_threads_cpu();
    let ckpt_before = astha_core::wake::checkpoint_counts();
    let writes = data.to_vec();
    let start = Instant::now();
    let writer = spawn_writer(&path, writes);
    let (written, (writer_cpu, writer_queued)) = writer.join().expect("writer thread");
    let wal = astha_core::wal_bound::wal_bytes(&path);
    let ckpt = astha_core::wake::checkpoint_counts();
    let (inline, inline_ms) = (ckpt.0 - ckpt_before.0, (ckpt.1 - ckpt_before.1) / 1000);
    let snap = astha.stats().snapshot();
    eprintln!(
        "checkpoints on committing threads while writing: {inline} ({inline_ms} ms); \
         WAL at the last commit {} MB; WAL resets {} ({} gave up)",
        wal >> 20,
        snap.wal_resets,
        snap.wal_resets_incomplete
    );
    let (writer_busy, writer_busy_ms) = (
        BUSY_CALLS.swap(0, Ordering::Relaxed),
        BUSY_SLEPT_US.swap(0, Ordering::Relaxed) / 1000,
    );
    let stats = astha.stats();
    let (slot_writes, cleanups) = (
        stats.slot_writes.load(Ordering::Relaxed),
        stats.cleanups.load(Ordering::Relaxed),
    );
    let n = data.len();
    let slot_micros = stats.slot_write_micros.load(Ordering::Relaxed);
    eprintln!(
        "slot writes while writing: {slot_writes}, {:.0} µs each on average from asked to durable, longest {} µs",
        slot_micros as f64 / slot_writes.max(1) as f64,
        stats.slot_write_max_micros.load(Ordering::Relaxed),
    );
    let all = super::wait_for(Duration::from_secs(300), || {
        counters.iter().all(|c| c.seen.load(Ordering::Relaxed) >= n)
    });
    let done = Instant::now();
    let astha_cpu = astha_threads_cpu().saturating_sub(cpu_before);
    eprintln!(
        "CPU while delivering: Astha's threads {} ms ({:.1} µs per change), the writer {} ms \
         of its {} ms (runnable but waiting for a CPU {} ms)",
        astha_cpu.as_millis(),
        astha_cpu.as_secs_f64() * 1e6 / data.len() as f64,
        writer_cpu.as_millis(),
        (written - start).as_millis(),
        writer_queued.as_millis(),
    );
    assert!(all, "not every component confirmed every change");
    for c in &counters {
        assert!(!c.out_of_order.load(Ordering::Relaxed), "order broken");
    }
    let conn = astha_core::db::open(&path).expect("open");
    let head = astha_core::log::head_lsn(&conn, "__cdc_log").expect("head");
    super::wait_for(Duration::from_secs(30), || {
        conn.query_row("SELECT min(position) FROM __astha_slots", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|p| p >= head)
        .unwrap_or(false)
    });
    let slots_after = done.elapsed();
    let _ = rt.block_on(astha.stop());
    Throughput {
        rows: n,
        raw_rate,
        capture_rate,
        writer_rate: n as f64 / (written - start).as_secs_f64(),
        delivered_rate: n as f64 / (done - start).as_secs_f64(),
        tail: done - written,
        slots_after,
        batch_size,
        writer_busy,
        writer_busy_ms,
        slot_writes,
        cleanups,
        inline_checkpoints: inline,
        inline_checkpoint_ms: inline_ms,
        astha_cpu,
        bare: Vec::new(),
    }
}

/// Time on CPU of the thread at `/proc/<task>` (`thread-self`, or `self/task/<tid>`),
/// from its `schedstat` (nanoseconds; zero off Linux): a figure a busy machine moves far
/// less than a rate.
fn thread_cpu(task: &str) -> Duration {
    thread_sched(task).0
}

/// Time on CPU and time runnable but waiting for a CPU (the run queue) of the thread at
/// `/proc/<task>`, from its `schedstat` (zero off Linux).
pub fn thread_sched(task: &str) -> (Duration, Duration) {
    let text = std::fs::read_to_string(format!("/proc/{task}/schedstat")).unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| Duration::from_nanos(f.parse().unwrap_or(0)));
    (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    )
}

/// Time on CPU so far of this process's threads named `astha-*` (Astha's actor, read,
/// write and watcher threads).
pub fn astha_threads_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("astha-"))
        })
        .map(|task| thread_cpu(&format!("self/task/{}", task.file_name().to_string_lossy())))
        .sum()
}

static BUSY_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BUSY_SLEPT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// SQLite's own busy timeout (5 s), as the bundled build (`HAVE_USLEEP`) sleeps it:
/// 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, then 100 ms; counted.
fn sleeping_like_sqlite(count: i32) -> bool {
    const DELAYS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    let count = count.max(0) as usize;
    let waited: u64 =
        DELAYS.iter().take(count).sum::<u64>() + count.saturating_sub(DELAYS.len()) as u64 * 100;
    let delay = DELAYS
        .get(count)
        .copied()
        .unwrap_or(100)
        .min(5_000u64.saturating_sub(waited));
    if delay == 0 {
        return false;
    }
    BUSY_CALLS.fetch_add(1, Ordering::Relaxed);
    BUSY_SLEPT_US.fetch_add(delay * 1000, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(delay));
    true
}

/// The busy handler of `astha_core::db::open_writer`, counted with the time it waited.
fn sleeping_like_open_writer(count: i32) -> bool {
    let started = Instant::now();
    let retry = astha_core::db::writer_retry(count);
    if retry {
        BUSY_CALLS.fetch_add(1, Ordering::Relaxed);
        BUSY_SLEPT_US.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    retry
}

#[derive(Default)]
struct Counter {
    seen: AtomicUsize,
    last: AtomicI64,
    out_of_order: AtomicBool,
}

/// Counts what it confirms and checks LSNs only grow.
struct Counting {
    name: String,
    counter: Arc<Counter>,
}

#[async_trait]
impl Component for Counting {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        vec!["t".into()]
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        if self.counter.last.swap(change.lsn, Ordering::Relaxed) >= change.lsn {
            self.counter.out_of_order.store(true, Ordering::Relaxed);
        }
        self.counter.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The suite's section of the report.
pub fn report(runs: &[Throughput]) -> String {
    let mut out = String::from(
        "### End-to-end throughput (four components, writer flat out)\n\n\
         16-column table, 100-row transactions, writer thread in the same process \
         (`open_writer`). `raw`: the same inserts with no capture; `capture only`: with \
         Astha's triggers, nothing reading (both best of 3, same run).\n\n\
         | rows | batch size | raw insert rate | capture only | writer rate under Astha | confirmed by all 4 | share of raw | last commit → last confirmation | → slots durable | writer's busy waits (ms slept) | checkpoints on committing threads (ms) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in runs {
        out.push_str(&format!(
            "| {} | {} | {:.0}/s | {:.0}/s | {:.0}/s | **{:.0}/s** | {:.0}% | {:.0} ms | +{:.0} ms | {} ({} ms) | {} ({} ms) |\n",
            t.rows,
            t.batch_size,
            t.raw_rate,
            t.capture_rate,
            t.writer_rate,
            t.delivered_rate,
            t.delivered_rate / t.raw_rate * 100.0,
            t.tail.as_secs_f64() * 1e3,
            t.slots_after.as_secs_f64() * 1e3,
            t.writer_busy,
            t.writer_busy_ms,
            t.inline_checkpoints,
            t.inline_checkpoint_ms,
        ));
    }
    out.push_str(
        "\nThe floor of any durable consumer, same run: the writer beside a bare consumer \
         (`tests/src/bench/bare_consumer.rs`: one thread, one connection; reads each batch \
         with every value copied out, then one write transaction moving four positions and, \
         deleting, removing the rows read) instead of Astha. Shares of capture only.\n\n\
         | consumer | batch size | writer rate | consumed (confirmed by all 4) | consumer's CPU per change | writer's busy waits (ms) |\n\
         |---|---|---|---|---|---|\n",
    );
    for t in runs {
        let share = |rate: f64| format!("{rate:.0}/s ({:.0}%)", rate / t.capture_rate * 100.0);
        for b in &t.bare {
            out.push_str(&format!(
                "| bare, {} | {} | {} | {} | {:.1} µs | {} ({} ms) |\n",
                b.protocol.name(),
                t.batch_size,
                share(b.writer_rate),
                share(b.consumed_rate),
                b.consumer_cpu.as_secs_f64() * 1e6 / t.rows as f64,
                b.writer_busy,
                b.writer_busy_ms,
            ));
        }
        out.push_str(&format!(
            "| Astha | {} | {} | {} | {:.1} µs | {} ({} ms) |\n",
            t.batch_size,
            share(t.writer_rate),
            share(t.delivered_rate),
            t.astha_cpu.as_secs_f64() * 1e6 / t.rows as f64,
            t.writer_busy,
            t.writer_busy_ms,
        ));
    }
    out.push('\n');
    out
}
