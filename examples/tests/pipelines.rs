//! The example pipelines under `examples/pipelines/`, through the `astha` binary: every
//! file passes `astha run --check`, the file-sink ones run end to end on rows written by
//! real triggers and stop cleanly on SIGTERM, and `astha watch` stopped by SIGTERM
//! leaves no slot behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, card_number TEXT, amount REAL, status TEXT);
    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT, password_hash TEXT);";

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
        .env("BILLING_WEBHOOK_SECRET", "not-a-secret");
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
    assert_eq!(checked, 4);
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
    let mut child = astha()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => return (child, rx),
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("astha {args:?} did not print {ready:?}: {seen:#?}");
            }
        }
    }
}

fn sigterm_and_wait(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit after SIGTERM: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let (child, _stderr) = start(&["run", "filters.toml"], dir.path(), "running");
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

#[test]
fn the_two_database_example_writes_one_file_per_source() {
    let dir = workspace();
    let (child, _stderr) = start(&["run", "two-databases.toml"], dir.path(), "running");
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
    sigterm_and_wait(child);
    assert_eq!(east.len(), 2);
    assert_eq!(west.len(), 3);
    assert!(west.iter().all(|c| c["after"]["customer"] == "west.db"));
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
