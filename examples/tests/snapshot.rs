//! `astha watch --snapshot`: the current rows first, then every change after them, with
//! writers busy the whole time: a consumer that applies the output rebuilds the table
//! exactly, having seen no change twice and missed none.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;

fn astha() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_astha"));
    cmd.env_remove("ASTHA_CONFIG").env_remove("ASTHA_LOG");
    cmd
}

/// Inserts, updates and deletes rows of `t`, one autocommit transaction each, until
/// `stop`; the sentinel row `id = -1` is the last write.
fn writer(db: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let conn = Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let sql = match n % 3 {
                0 => "INSERT INTO t (v) VALUES (abs(random()) % 1000)",
                1 => {
                    "UPDATE t SET v = v + 1 WHERE id = (SELECT id FROM t ORDER BY random() LIMIT 1)"
                }
                _ => "DELETE FROM t WHERE id = (SELECT id FROM t ORDER BY random() LIMIT 1)",
            };
            conn.execute(sql, []).unwrap();
            n += 1;
            if n.is_multiple_of(50) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        conn.execute("INSERT INTO t (id, v) VALUES (-1, 0)", [])
            .unwrap();
        n
    })
}

/// Applies one Debezium event to `mirror`, refusing what a gap or a duplicate would
/// produce: a read or create of a row the mirror has, an update or delete of one it
/// lacks, or a change from before the snapshot.
fn apply(mirror: &mut BTreeMap<i64, i64>, event: &Value, snapshot_lsn: &mut Option<i64>) {
    let id = |image: &str| event[image]["id"].as_i64().unwrap();
    let v = |image: &str| event[image]["v"].as_i64().unwrap();
    let lsn = event["source"]["lsn"].as_i64().unwrap();
    match event["op"].as_str().unwrap() {
        "r" => {
            assert_ne!(event["source"]["snapshot"], "false");
            assert!(*snapshot_lsn == Some(lsn) || snapshot_lsn.is_none());
            *snapshot_lsn = Some(lsn);
            assert!(
                mirror.insert(id("after"), v("after")).is_none(),
                "row read twice: {event}"
            );
        }
        op => {
            assert_eq!(event["source"]["snapshot"], "false");
            let from = snapshot_lsn.expect("the snapshot comes first");
            assert!(
                lsn > from,
                "change {lsn} is already in the snapshot at {from}"
            );
            match op {
                "c" => assert!(
                    mirror.insert(id("after"), v("after")).is_none(),
                    "duplicate: {event}"
                ),
                "u" => assert!(
                    mirror.insert(id("after"), v("after")).is_some(),
                    "gap: {event}"
                ),
                "d" => assert!(mirror.remove(&id("before")).is_some(), "gap: {event}"),
                other => panic!("unexpected op {other}"),
            }
        }
    }
}

fn table(db: &Path) -> BTreeMap<i64, i64> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows
}

#[test]
fn watch_snapshot_initial_hands_over_to_the_stream_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO t (id, v) SELECT i, i FROM n;",
    )
    .unwrap();
    drop(conn);
    // Capture is installed before the writers start, so every write is in the log.
    let installed = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "t",
            "--install",
            "--limit",
            "0",
        ])
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(&db, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let mut child = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "t",
            "--snapshot",
            "initial",
            "--format",
            "debezium",
        ])
        .env("ASTHA_BATCH_SIZE", "64")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());

    let mut mirror = BTreeMap::new();
    let mut snapshot_lsn = None;
    let (mut reads, mut changes, mut last_seen) = (0, 0, false);
    let started = Instant::now();
    for line in stdout.lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["op"] == "r" {
            reads += 1;
            last_seen |= event["source"]["snapshot"] == "last";
        } else {
            changes += 1;
        }
        apply(&mut mirror, &event, &mut snapshot_lsn);
        // Keep writing until the stream after the snapshot is well under way.
        if changes == 300 || started.elapsed() > Duration::from_secs(20) {
            stop.store(true, Ordering::Relaxed);
        }
        if event["op"] == "c" && event["after"]["id"] == -1 {
            break;
        }
    }
    let written = writes.join().unwrap();
    // SIGTERM stops `watch` gracefully.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
    let stderr = stderr.join().unwrap();
    assert!(reads >= 4000, "the snapshot has the table's rows ({reads})");
    assert!(last_seen, "the snapshot's last row says so");
    assert!(
        changes >= 300,
        "changes followed the snapshot ({changes}, {written} written)"
    );
    assert_eq!(mirror, table(&db), "the mirror is the table");
    assert!(stderr.contains("snapshot of"), "{stderr}");

    // The watcher left nothing behind: no slot, no snapshot record, no copy.
    let conn = Connection::open(&db).unwrap();
    let slots: i64 = conn
        .query_row("SELECT count(*) FROM __astha_slots", [], |r| r.get(0))
        .unwrap();
    let records: i64 = conn
        .query_row("SELECT count(*) FROM __astha_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!((slots, records), (0, 0));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("snapshot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn watch_snapshot_initial_only_prints_the_rows_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v);
         INSERT INTO t VALUES (1, x'0102'), (2, 9007199254740993), (3, NULL);",
    )
    .unwrap();
    let out = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "t",
            "--install",
            "--snapshot",
            "initial_only",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["op"] == "READ"));
    assert_eq!(lines[0]["after"]["v"], serde_json::json!({"$blob": "0102"}));
    assert_eq!(
        lines[1]["after"]["v"],
        serde_json::json!(9007199254740993i64)
    );
    assert_eq!(lines[2]["after"]["v"], Value::Null);
    // With a durable slot the snapshot is taken once: `status` shows it done, the slot
    // is gone (it holds nothing back), and a second run prints nothing.
    let durable = |args: &[&str]| {
        let mut all = vec!["watch", db.to_str().unwrap(), "--tables", "t"];
        all.extend_from_slice(args);
        astha().args(all).output().unwrap()
    };
    let first = durable(&["--slot", "keep", "--snapshot", "initial_only"]);
    assert!(first.status.success(), "{first:?}");
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 3);
    let again = durable(&["--slot", "keep", "--snapshot", "initial_only"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(String::from_utf8_lossy(&again.stdout).lines().count(), 0);
    let status = astha()
        .args(["status", db.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["slots"], serde_json::json!([]));
    assert_eq!(status["snapshots"][0]["consumer"], "keep");
    assert_eq!(status["snapshots"][0]["state"], "done");
    assert_eq!(status["snapshots"][0]["done"], 3);
    let bad = astha()
        .args(["watch", db.to_str().unwrap(), "--snapshot", "sometimes"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("initial_only"));
}
