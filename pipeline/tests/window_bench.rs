//! Quick benchmarks of the window transform (ignored by default; BENCHMARKS.md has the
//! command and the figures):
//! - changes/s through `astha run`'s machinery catching up a backlog of trigger-written
//!   orders into a file sink, with a keyed tumbling window in front and without;
//! - memory per thousand open keys: process RSS growth while the window state holds
//!   that many open windows, and the bytes their stored rows take in the database.

use std::path::Path;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::window::state::{Input, Windows};
use astha_pipeline::window::WindowConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection;

const ROWS: i64 = 100_000;
const CUSTOMERS: i64 = 1_000;

fn engine() -> AsthaConfig {
    AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap()
}

fn create(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, status TEXT);",
    )
    .unwrap();
    let store = astha_actors::store::Store::open(path, "__cdc_log").unwrap();
    store
        .write_blocking(|c| store.capture().install(c, "orders").map(drop))
        .unwrap();
}

fn backlog(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..ROWS {
        tx.execute(
            "INSERT INTO orders (customer, amount, status) VALUES (?1, ?2, 'paid')",
            rusqlite::params![format!("c{}", i % CUSTOMERS), (i % 500) as f64 + 0.5],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

const WINDOW: &str = r#"
[sinks.window]
kind = "tumbling"
size_ms = 60000
key = "customer"
aggregates = [
  { name = "orders", fn = "count" },
  { name = "total", fn = "sum", column = "amount" },
  { name = "largest", fn = "max", column = "amount" },
]
"#;

/// Seconds for one pipeline to confirm the whole backlog.
async fn catch_up(windowed: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    create(&db);
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"orders\"]\nbatch_size = 1024\n[[sinks]]\nname = \"out\"\ntype = \"file\"\npath = \"{}\"\n{}",
        db.display(),
        dir.path().join("out.jsonl").display(),
        if windowed { WINDOW } else { "" }
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    // A new slot starts at the log's head: create it first, then write the backlog.
    let first = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    first.start(&engine()).await.unwrap().stop().await.unwrap();
    backlog(&db);
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    let conn = Connection::open(&db).unwrap();
    let head: i64 = conn
        .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    let started = Instant::now();
    let running = checked.start(&engine()).await.unwrap();
    loop {
        let delivered: u64 = running.summary().iter().map(|s| s.delivered).sum();
        if delivered >= ROWS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    if windowed {
        let counters = running.window_counters();
        assert_eq!(counters.len(), 1);
        let c = &counters[0].2;
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(c.late.load(Relaxed), 0);
        assert!(c.open.load(Relaxed) >= CUSTOMERS as u64);
    }
    running.stop().await.unwrap();
    let position: i64 = conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'out'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(position, head);
    secs
}

#[actix_rt::test]
#[ignore]
async fn bench_changes_per_second_with_and_without_a_window() {
    for round in 0..5 {
        let plain = catch_up(false).await;
        let windowed = catch_up(true).await;
        println!(
            "round {round}: {ROWS} changes, {CUSTOMERS} keys: file sink {:.0} changes/s; keyed tumbling window + file sink {:.0} changes/s",
            ROWS as f64 / plain,
            ROWS as f64 / windowed
        );
    }
}

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[ignore]
fn bench_memory_per_thousand_open_keys() {
    let config: WindowConfig = toml::from_str(
        r#"kind = "tumbling"
        size_ms = 3600000
        key = "customer"
        aggregates = [
          { name = "orders", fn = "count" },
          { name = "total", fn = "sum", column = "amount" },
          { name = "largest", fn = "max", column = "amount" },
        ]"#,
    )
    .unwrap();
    const KEYS: i64 = 100_000;
    let before = rss_kib();
    let mut windows = Windows::new(config.clone());
    let mut out = Vec::new();
    for i in 0..KEYS {
        let amount = astha_core::Value::Real(i as f64 + 0.5);
        windows.apply(
            Input {
                lsn: i + 1,
                time_ms: 1_700_000_000_000 + i,
                key: format!("customer-{i:08}"),
                values: vec![Some(None), Some(Some(amount.clone())), Some(Some(amount))],
            },
            &mut out,
        );
        // As the transform does after each batch (its writes keep only the ids).
        if i % 256 == 255 {
            windows.take_dirty();
        }
    }
    assert!(out.is_empty());
    assert_eq!(windows.open_windows(), KEYS as usize);
    let grown = rss_kib() - before;
    let all: std::collections::BTreeSet<(String, i64)> = (0..KEYS)
        .map(|i| {
            let t = 1_700_000_000_000 + i;
            (format!("customer-{i:08}"), t - t.rem_euclid(3_600_000))
        })
        .collect();
    assert!(all.iter().all(|id| windows.get(id).is_some()));
    // The same windows stored, as the transform stores them.
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("w.db")).unwrap();
    astha_pipeline::window::durable::ensure(&conn).unwrap();
    let size = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let empty = size(&conn);
    astha_pipeline::window::durable::save(&conn, "bench", "s", &windows, &all).unwrap();
    let stored = size(&conn) - empty;
    println!(
        "{KEYS} open keys (tumbling, 3 aggregates): RSS +{} KiB = {:.0} KiB per 1000 keys; stored {:.0} KiB per 1000 keys",
        grown,
        grown as f64 / (KEYS as f64 / 1000.0),
        stored as f64 / 1024.0 / (KEYS as f64 / 1000.0)
    );
}
