//! The example pipelines under `examples/pipelines/`, through the `astha` binary: every
//! file passes `astha run --check`, the file-sink ones run end to end on rows written by
//! real triggers and stop cleanly on SIGTERM, the live one serves SSE and WebSocket
//! clients, and `astha watch` stopped by SIGTERM leaves no slot behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;
use support::{sigterm_and_wait, start_cmd};

mod support;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, card_number TEXT, amount REAL, status TEXT);
    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, password_hash TEXT);";

/// The token `live.toml` takes from the environment.
const LIVE_TOKEN: &str = "live-s3cret";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
}

/// A copy of the examples with fresh databases beside them.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    for db in ["shop.db", "east.db", "west.db"] {
        Connection::open(dir.path().join(db))
            .unwrap()
            .execute_batch(SCHEMA)
            .unwrap();
    }
    dir
}

fn astha() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_astha"));
    cmd.env_remove("ASTHA_CONFIG")
        .env("ASTHA_NATS_URL", "nats://127.0.0.1:4222")
        .env("BILLING_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .env("BILLING_WEBHOOK_SECRET", "not-a-secret")
        .env("ASTHA_LIVE_TOKEN", LIVE_TOKEN)
        .env(
            "ASTHA_POSTGRES_URL",
            "postgresql://astha@127.0.0.1:5432/warehouse",
        )
        .env("ASTHA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("ASTHA_KAFKA_BROKERS", "127.0.0.1:9092");
    cmd
}

#[test]
fn every_example_pipeline_passes_check() {
    let dir = workspace();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = astha()
            .arg("run")
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok"), "{stdout}");
        checked += 1;
    }
    assert_eq!(checked, 10);
    // --check is read-only: no trigger exists although every file says install = true.
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
}

/// Starts `astha <args>` and waits until its stderr has a line containing `ready`.
fn start(args: &[&str], dir: &Path, ready: &str) -> (Child, mpsc::Receiver<String>) {
    start_cmd(astha(), args, dir, ready)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read_lines(path);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_filter_example_runs_end_to_end_and_stops_on_sigterm() {
    let dir = workspace();
    let bind = format!("127.0.0.1:{}", free_port());
    let args = ["run", "filters.toml", "--http", &bind];
    let (child, _stderr) = start(&args, dir.path(), "running");
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO orders VALUES (1, 'ann', '4111-1111', 250, 'paid');
         INSERT INTO orders VALUES (2, 'bob', '4222-2222', 20, 'paid');     -- too small
         INSERT INTO orders VALUES (3, 'cy', '4333-3333', 900, 'open');     -- not paid
         INSERT INTO customers VALUES (1, 'ann', 'ann@example.org', 'hash');",
    )
    .unwrap();
    let out = dir.path().join("out/filtered.jsonl");
    let got = wait_lines(&out, 2);
    // The two orders the row filter dropped are counted on /metrics.
    wait_metrics(
        &bind,
        &["astha_sink_filtered_total{source=\"shop\",sink=\"big-paid-orders\"} 2".into()],
    );
    sigterm_and_wait(child);
    let got_after = read_lines(&out);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got_after.len(), 2, "{got_after:#?}");
    assert_eq!(got[0]["table"], "orders");
    assert_eq!(got[0]["after"]["id"], 1);
    assert!(got[0]["after"].get("card_number").is_none());
    assert_eq!(got[1]["table"], "customers");
    let customer = got[1]["after"].as_object().unwrap();
    assert_eq!(customer.keys().collect::<Vec<_>>(), ["id", "name"]);
    // The sink's slot survives the stop, at the last change it wrote.
    let position: i64 = conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'big-paid-orders'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(position >= got[1]["lsn"].as_i64().unwrap());
}

/// A log row no sink can read (its operation edited by hand) goes to the dead letters
/// before any sink sees it; its neighbours are delivered, and the run's summary names it
/// with the command that lists it (no sink's own count includes it).
#[test]
fn a_log_row_no_sink_can_read_is_named_in_the_summary() {
    let dir = workspace();
    // A first run installs the triggers; the changes are written while it is stopped.
    let (child, _stderr) = start(&["run", "to-file.toml"], dir.path(), "running");
    sigterm_and_wait(child);
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO orders VALUES (1, 'ann', NULL, 250, 'paid');
         INSERT INTO orders VALUES (2, 'bob', NULL, 20, 'paid');
         INSERT INTO orders VALUES (3, 'cy', NULL, 900, 'open');
         UPDATE __cdc_log SET op = 'Q' WHERE id = (SELECT id FROM __cdc_log ORDER BY id LIMIT 1 OFFSET 1);",
    )
    .unwrap();
    let (child, stderr) = start(&["run", "to-file.toml"], dir.path(), "running");
    let got = wait_lines(&dir.path().join("out/shop.jsonl"), 2);
    sigterm_and_wait(child);
    let said: Vec<String> = stderr.iter().collect();
    let ids: Vec<i64> = got
        .iter()
        .map(|l| l["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3], "{got:#?}");
    let summary = said.join("\n");
    assert!(
        summary.contains("-> shop-file: 2 delivered, 0 filtered out, 0 dead-lettered"),
        "{summary}"
    );
    // The database as the pipeline file names it, relative to where it runs.
    let named = "shop: 1 log row(s) that no sink could read moved to dead letters \
                 (`astha dead-letters list shop.db`)";
    assert!(summary.contains(named), "{summary}");
    let listed = astha()
        .args(["dead-letters", "list", "shop.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("unknown operation"), "{listed}");
}

/// The windows example's results per (customer, window start): the last `orders` seen.
fn orders_per_window(lines: &[Value]) -> std::collections::BTreeMap<(String, i64), i64> {
    lines
        .iter()
        .map(|l| {
            let after = &l["after"];
            let key = after["window_key"].as_str().unwrap().to_string();
            let start = after["window_start"].as_i64().unwrap();
            ((key, start), after["orders"].as_i64().unwrap())
        })
        .collect()
}

#[test]
fn the_window_example_counts_orders_per_customer_across_a_restart() {
    let dir = workspace();
    let out = dir.path().join("out/orders-per-minute.jsonl");
    let bind = format!("127.0.0.1:{}", free_port());
    let args = ["run", "windows.toml", "--http", &bind];
    let (child, _stderr) = start(&args, dir.path(), "running");
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO orders VALUES (1, 'ann', NULL, 250, 'paid');
         INSERT INTO orders VALUES (2, 'ann', NULL, 20, 'open');
         INSERT INTO orders VALUES (3, 'bob', NULL, 900, 'paid');
         UPDATE orders SET status = 'paid' WHERE id = 2;",
    )
    .unwrap();
    // emit = "change": one result per change (the UPDATE too, counted by `largest`).
    let first = wait_lines(&out, 4);
    let expected: Vec<String> = [
        ("astha_window_results_total", 4),
        ("astha_window_late_changes_total", 0),
        ("astha_window_evicted_total", 0),
        ("astha_window_open", 2),
    ]
    .iter()
    .map(|(figure, value)| {
        format!("{figure}{{source=\"shop\",sink=\"orders-per-minute\"}} {value}")
    })
    .collect();
    wait_metrics(&bind, &expected);
    sigterm_and_wait(child);
    assert_eq!(first.len(), 4, "{first:#?}");
    for (i, line) in first.iter().enumerate() {
        assert_eq!(line["table"], "orders_per_minute");
        assert_eq!(line["lsn"], i as i64 + 1, "results are numbered");
        assert_eq!(line["after"]["state"], "open");
    }
    let per_customer = |lines: &[Value], who: &str| -> i64 {
        orders_per_window(lines)
            .iter()
            .filter(|((k, _), _)| k == who)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(per_customer(&first, "ann"), 2);
    assert_eq!(per_customer(&first, "bob"), 1);
    // A restart resumes the open windows: the next order of ann adds to them.
    let (child, _stderr) = start(&["run", "windows.toml"], dir.path(), "running");
    conn.execute("INSERT INTO orders VALUES (4, 'ann', NULL, 5, 'paid')", [])
        .unwrap();
    let all = wait_lines(&out, 5);
    sigterm_and_wait(child);
    // (A window whose end passed by more than the lateness meanwhile adds its final
    // "closed" result after ann's new one.)
    assert!(all.len() >= 5, "{all:#?}");
    for (i, line) in all.iter().enumerate() {
        assert_eq!(
            line["lsn"],
            i as i64 + 1,
            "results are numbered across the restart"
        );
    }
    assert_eq!(per_customer(&all, "ann"), 3, "{all:#?}");
    let open: i64 = conn
        .query_row(
            "SELECT count(*) FROM __astha_windows WHERE transform = 'orders-per-minute'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(open >= 2, "ann's and bob's windows are open and stored");
}

#[test]
fn the_two_database_example_writes_one_file_per_source() {
    let dir = workspace();
    let port = free_port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let args = ["run", "two-databases.toml", "--http", &bind];
    let (child, _stderr) = start(&args, dir.path(), "running");
    for (db, n) in [("east.db", 2), ("west.db", 3)] {
        let conn = Connection::open(dir.path().join(db)).unwrap();
        for i in 0..n {
            conn.execute(
                "INSERT INTO orders (id, customer) VALUES (?1, ?2)",
                rusqlite::params![i, db],
            )
            .unwrap();
        }
    }
    let east = wait_lines(&dir.path().join("out/east.jsonl"), 2);
    let west = wait_lines(&dir.path().join("out/west.jsonl"), 3);
    // `--http`: one endpoint for both sources, every figure labelled with its source.
    let expected: Vec<String> = [("east", 2), ("west", 3)]
        .iter()
        .flat_map(|(source, n)| {
            [
                format!("astha_component_delivered_total{{source=\"{source}\",component=\"all-orders\"}} {n}"),
                format!("astha_head_lsn{{source=\"{source}\"}} {n}"),
            ]
        })
        .collect();
    wait_metrics(&bind, &expected);
    let (status, health) = http_get(&bind, "/health");
    assert_eq!(status, 200, "{health}");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    let sources: Vec<&str> = health["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["east", "west"]);
    sigterm_and_wait(child);
    assert_eq!(east.len(), 2);
    assert_eq!(west.len(), 3);
    assert!(west.iter().all(|c| c["after"]["customer"] == "west.db"));
    assert!(
        std::net::TcpStream::connect(&bind).is_err(),
        "the endpoint stops with the process"
    );
}

/// Scrapes `/metrics` until it has every line of `expected` (a sink's counters move just
/// after its output is written); panics with the last scrape after 20 s.
fn wait_metrics(addr: &str, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, metrics) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{metrics}");
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !metrics.lines().any(|l| l == line.as_str()))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{missing:?} not in\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.0 GET: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[test]
fn watch_stopped_by_sigterm_or_sighup_leaves_no_slot() {
    let dir = workspace();
    let db = dir.path().join("shop.db");
    for signal in ["-TERM", "-HUP"] {
        let (child, _stderr) = start(
            &[
                "watch",
                db.to_str().unwrap(),
                "--tables",
                "orders",
                "--install",
            ],
            dir.path(),
            "watching",
        );
        let pid = child.id();
        if signal == "-TERM" {
            sigterm_and_wait(child);
        } else {
            let mut child = child;
            Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "exit after SIGHUP: {status}");
        }
        let conn = Connection::open(&db).unwrap();
        let leaked: Vec<String> = conn
            .prepare("SELECT name FROM __astha_slots")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !leaked.contains(&format!("watch-{pid}")),
            "{signal} left slot watch-{pid}: {leaked:?}"
        );
    }
}

/// `astha run` killed with SIGKILL again and again while a writer commits: after a last
/// clean run, the file holds every change at least once; read in file order, LSNs only go
/// back at a restart, and never further back than the one batch in flight at the kill.
/// The bound is the engine's `batch_size` (a component may hold that many changes past
/// its durable position, in deliveries as small as it likes), so the source sets it to
/// the sink's `max_batch`.
#[test]
fn kill_9_of_run_mid_stream_loses_nothing() {
    const KILLS: usize = 20;
    const MAX_BATCH: i64 = 50;
    let dir = workspace();
    std::fs::write(
        dir.path().join("kill.toml"),
        format!(
            "[[sources]]\ndatabase = \"shop.db\"\ntables = [\"orders\"]\ninstall = true\n\
             batch_size = {MAX_BATCH}\n[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"out/kill.jsonl\"\nmax_batch = {MAX_BATCH}\n"
        ),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let db = dir.path().join("shop.db");
    // Capture must exist before the writer starts, or its first rows are not captured.
    let (child, stderr) = start(&["run", "kill.toml"], dir.path(), "running");
    // Keep every run's stderr reader alive: a closed pipe would fail the run's writes.
    let mut stderrs = vec![stderr];
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO orders (customer, amount) VALUES ('w', ?1)",
                    [n],
                )
                .unwrap();
                n += 1;
                if n % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            n
        })
    };
    let mut child = child;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (next, stderr) = start(&["run", "kill.toml"], dir.path(), "running");
        child = next;
        stderrs.push(stderr);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let out = dir.path().join("out/kill.jsonl");
    // Let the last run catch up, then stop it cleanly.
    let deadline = Instant::now() + Duration::from_secs(60);
    let head: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    while Instant::now() < deadline {
        let last = read_lines(&out).last().and_then(|l| l["lsn"].as_i64());
        if last == Some(head) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm_and_wait(child);
    let lsns: Vec<i64> = read_lines(&out)
        .iter()
        .map(|l| l["lsn"].as_i64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<i64> = lsns.iter().copied().collect();
    assert_eq!(
        distinct.len() as i64,
        written,
        "every change is in the file"
    );
    assert_eq!(*distinct.first().unwrap(), 1);
    assert_eq!(*distinct.last().unwrap(), head);
    let mut restarts = 0;
    for pair in lsns.windows(2) {
        if pair[1] <= pair[0] {
            restarts += 1;
            assert!(
                pair[0] - pair[1] < MAX_BATCH,
                "went back from {} to {}: more than one batch",
                pair[0],
                pair[1]
            );
        } else {
            assert_eq!(pair[1], pair[0] + 1, "a gap after {}", pair[0]);
        }
    }
    assert!(restarts <= KILLS, "{restarts} restarts for {KILLS} kills");
    println!(
        "{written} changes, {} lines, {restarts} re-deliveries after {KILLS} kills",
        lsns.len()
    );
}

/// A sink that cannot deliver shows in `astha status` (from another process) with its
/// breaker and the last error it reported.
#[test]
fn status_shows_each_sinks_slot_breaker_and_last_error() {
    let dir = workspace();
    std::fs::write(
        dir.path().join("down.toml"),
        "[[sources]]\ndatabase = \"shop.db\"\ntables = [\"orders\"]\ninstall = true\n\
         [[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"s\"\n\
         [[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"out/ok.jsonl\"\n",
    )
    .unwrap();
    // Heartbeats are written every cleanup tick.
    let mut cmd = astha();
    cmd.env("ASTHA_CLEANUP_INTERVAL", "100ms");
    let (child, _stderr) = start_cmd(cmd, &["run", "down.toml"], dir.path(), "running");
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute("INSERT INTO orders (id, customer) VALUES (1, 'x')", [])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = astha()
            .args(["status", "shop.db", "--format", "json"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        let hook = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "hook")
            .cloned();
        if hook.as_ref().is_some_and(|h| h["last_error"].is_string()) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    sigterm_and_wait(child);
    let components = status["components"].as_array().unwrap();
    let hook = components.iter().find(|c| c["name"] == "hook").unwrap();
    assert!(
        hook["last_error"].as_str().unwrap().contains("webhook"),
        "{hook}"
    );
    assert!(hook["failures"].as_i64().unwrap() >= 1);
    let file = components.iter().find(|c| c["name"] == "file").unwrap();
    assert!(file["last_error"].is_null(), "{file}");
    let slots: Vec<&str> = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slot"]["name"].as_str().unwrap())
        .collect();
    assert!(
        slots.contains(&"hook") && slots.contains(&"file"),
        "{slots:?}"
    );
}

/// The database file deleted under `astha run`: it stops and exits non-zero naming the
/// source and the cause, instead of running on with an unlinked file.
#[test]
fn run_exits_non_zero_when_its_database_file_is_deleted() {
    let dir = workspace();
    let (mut child, rx) = start(&["run", "filters.toml"], dir.path(), "running");
    std::fs::remove_file(dir.path().join("shop.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("astha run went on with its database file deleted");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr: Vec<String> = rx.iter().collect();
    assert!(!status.success(), "{stderr:#?}");
    assert!(
        stderr.iter().any(|l| l.contains("deleted or renamed")),
        "{stderr:#?}"
    );
    assert!(!dir.path().join("shop.db").exists(), "created again");
}

/// A free local port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `live.toml` as shipped (on free ports): a WebSocket client (`?token=`, as a browser
/// sends it) and an SSE client (the header) get the rows triggers wrote, as Debezium
/// envelopes with the excluded columns cut; a client without the token is refused.
#[test]
fn the_live_example_serves_websocket_and_sse_clients() {
    use std::io::Write;
    let dir = workspace();
    let (sse_port, ws_port) = (free_port(), free_port());
    let file = dir.path().join("live.toml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("127.0.0.1:9188", &format!("127.0.0.1:{sse_port}"))
        .replace("127.0.0.1:9189", &format!("127.0.0.1:{ws_port}"));
    std::fs::write(&file, text).unwrap();
    let (child, _stderr) = start(&["run", "live.toml"], dir.path(), "running");

    let refused = tokio_tungstenite::tungstenite::connect(format!("ws://127.0.0.1:{ws_port}/ws"));
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("connected without the token: {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = tokio_tungstenite::tungstenite::connect(format!(
        "ws://127.0.0.1:{ws_port}/ws?token={LIVE_TOKEN}&tables=orders"
    ))
    .unwrap();
    let mut sse = std::net::TcpStream::connect(("127.0.0.1", sse_port)).unwrap();
    write!(
        sse,
        "GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LIVE_TOKEN}\r\n\r\n"
    )
    .unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sse = BufReader::new(sse);
    // The stream's first line comes after the client took its place in the hub.
    let mut line = String::new();
    while !line.starts_with("retry:") {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "SSE stream ended");
    }

    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO customers VALUES (1, 'ann', 'ann@example.org', 'hash');
         INSERT INTO orders VALUES (1, 'ann', '4111-1111', 250, 'paid');
         UPDATE orders SET status = 'shipped' WHERE id = 1;",
    )
    .unwrap();

    let mut got = Vec::new();
    while got.len() < 2 {
        let message = ws.read().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            got.push(serde_json::from_str::<Value>(text.as_str()).unwrap());
        }
    }
    assert_eq!(got[0]["op"], "c");
    assert_eq!(got[0]["source"]["table"], "orders");
    assert_eq!(got[0]["after"]["amount"], 250.0);
    assert!(got[0]["after"].get("card_number").is_none(), "{}", got[0]);
    assert_eq!(got[1]["op"], "u");
    assert_eq!(got[1]["after"]["status"], "shipped");

    let mut data = Vec::new();
    while data.len() < 3 {
        line.clear();
        assert!(sse.read_line(&mut line).unwrap() > 0, "SSE stream ended");
        if let Some(json) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(json.trim_end()).unwrap());
        }
    }
    let tables: Vec<_> = data.iter().map(|e| e["source"]["table"].clone()).collect();
    assert_eq!(tables, ["customers", "orders", "orders"]);
    assert!(data[0]["after"].get("password_hash").is_none());
    let _ = ws.close(None);
    drop(sse);
    sigterm_and_wait(child);
    // Live feeds are not durable: their slots go with the process.
    let slots = slot_names(&dir.path().join("shop.db"));
    assert!(slots.is_empty(), "{slots:?}");
}

/// `astha watch --http` serves `/ws` too, in `--http-format` (here CloudEvents while
/// stdout stays native JSON).
#[test]
fn watch_http_serves_websocket_in_its_format() {
    let dir = workspace();
    let db = dir.path().join("shop.db");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let (child, _stderr) = start(
        &[
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "orders",
            "--install",
            "--http",
            &bind,
            "--http-format",
            "cloudevents",
        ],
        dir.path(),
        "watching",
    );
    let (mut ws, _) = tokio_tungstenite::tungstenite::connect(format!("ws://{bind}/ws")).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute("INSERT INTO orders (id, customer) VALUES (7, 'ann')", [])
        .unwrap();
    let event = loop {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = ws.read().unwrap() {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(event["specversion"], "1.0", "{event}");
    assert_eq!(event["data"]["after"]["customer"], "ann", "{event}");
    let _ = ws.close(None);
    sigterm_and_wait(child);
}

/// The names of the slots in `db`.
fn slot_names(db: &Path) -> Vec<String> {
    Connection::open(db)
        .unwrap()
        .prepare("SELECT name FROM __astha_slots ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `astha watch` killed with -9 leaves its non-durable slot behind, but leased: once the
/// lease expires (1 s here), the janitor of any engine on the database drops it, logs it
/// and counts it. Durable slots (`--slot`, a pipeline's sinks) are never dropped.
#[test]
fn a_killed_watchers_slot_goes_when_its_lease_expires_and_durable_slots_stay() {
    let dir = workspace();
    let db = dir.path().join("shop.db");
    let d = db.to_str().unwrap();
    let short_lease = || {
        let mut cmd = astha();
        cmd.env("ASTHA_LEASE_TTL", "1s")
            .env("ASTHA_CLEANUP_INTERVAL", "100ms");
        cmd
    };
    // A durable slot, kept by a watcher that stopped.
    let out = short_lease()
        .args([
            "watch",
            d,
            "--tables",
            "orders",
            "--install",
            "--slot",
            "keep",
            "--limit",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut killed, _stderr) = start_cmd(
        short_lease(),
        &["watch", d, "--tables", "orders"],
        dir.path(),
        "watching",
    );
    let leaked = format!("watch-{}", killed.id());
    killed.kill().unwrap(); // SIGKILL: no cleanup
    killed.wait().unwrap();
    assert_eq!(slot_names(&db), ["keep", leaked.as_str()]);

    // Another engine on the database (a live feed, itself leased) expires the lease.
    let (survivor, stderr) = start_cmd(
        short_lease(),
        &["watch", d, "--tables", "orders", "--http", "127.0.0.1:0"],
        dir.path(),
        "watching",
    );
    let survivor_slot = format!("watch-{}", survivor.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while slot_names(&db).contains(&leaked) {
        assert!(
            Instant::now() < deadline,
            "the leaked slot was never dropped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Well past the lease: the living engine's leases are renewed, the durable one stays.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(slot_names(&db), ["keep", "sse", survivor_slot.as_str()]);
    let listing = astha().args(["slots", "list", d]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
            .to_string()
    };
    assert!(line("keep").ends_with("durable"), "{listing}");
    assert!(line(&survivor_slot).contains("leased by pid-"), "{listing}");
    assert!(line("sse").contains("leased by pid-"), "{listing}");
    sigterm_and_wait(survivor);
    let logged: Vec<String> = stderr.try_iter().collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("dropped a non-durable slot") && l.contains(&leaked)),
        "{logged:#?}"
    );
    // A graceful stop drops the engine's leased slots at once.
    assert_eq!(slot_names(&db), ["keep"]);
}
