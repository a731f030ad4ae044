//! The NATS JetStream sink against a real `nats-server -js` (Debian package), started by
//! each test on a free loopback port with its own store, so a test can restart it.
//!
//! - every change arrives once, with its subject, payload and `Nats-Msg-Id`;
//! - `kill -9` of the Astha process mid-stream (several times) still gives exactly one
//!   message per LSN: re-publishes are de-duplicated by JetStream;
//! - the NATS server killed and restarted mid-stream loses nothing;
//! - transaction markers go to `astha.<database>.__astha_tx.begin|end`, in order around
//!   their changes;
//! - `nats_sink_throughput` (ignored; run with `--ignored --nocapture`) prints events/s.
//!
//! The server binary is `$ASTHA_NATS_SERVER` or `nats-server` on the PATH
//! (`scripts/start_nats.sh` installs it). Without one the tests are skipped locally and
//! FAIL when `CI` is set.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use astha_actors::testing::RecordingComponent;
use astha_actors::Astha;
use astha_components::sinks::{identity, NatsSink, NatsSinkConfig};
use support::*;

const WORKER: &str = env!("CARGO_BIN_EXE_astha-nats-worker");

/// A private `nats-server -js` on loopback.
struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ASTHA_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    /// Starts a server, or returns None (skip) when there is no binary outside CI.
    fn start() -> Option<NatsServer> {
        let Some(binary) = server_binary() else {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but no nats-server was found: run scripts/start_nats.sh");
            }
            eprintln!("SKIPPED: no nats-server (set ASTHA_NATS_SERVER or install it)");
            return None;
        };
        let mut server = NatsServer {
            binary,
            port: free_port(),
            monitor: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor.to_string())
            .arg("-sd")
            .arg(self.dir.path().join("js"))
            .arg("-l")
            .arg(self.dir.path().join("nats.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            assert!(Instant::now() < deadline, "nats-server not ready in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// JetStream's health endpoint answers 200.
    fn healthy(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return false;
        };
        let _ =
            s.write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// `kill -9`, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message read back from the stream.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: String,
    /// The `Astha-Key` header, parsed.
    key: serde_json::Value,
    payload: serde_json::Value,
}

/// Every message of `stream`, in stream order.
async fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push(Stored {
            subject: m.subject.to_string(),
            msg_id: m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default(),
            key: m
                .headers
                .get(astha_components::sinks::nats::KEY_HEADER)
                .map(|v| serde_json::from_str(v.as_str()).unwrap())
                .unwrap_or_default(),
            payload: serde_json::from_slice(&m.payload).unwrap(),
        });
    }
    out
}

async fn stream_count(url: &str, stream: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for_count(url: &str, stream: &str, n: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let count = stream_count(url, stream).await;
        if count >= n || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// LSN → how many messages carry it; also checks each Msg-Id against its LSN.
fn lsn_counts(stored: &[Stored], id: &str) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for m in stored {
        let lsn = m.payload["lsn"].as_i64().expect("payload has an lsn");
        assert_eq!(m.msg_id, format!("{id}:{lsn}"), "Nats-Msg-Id of lsn {lsn}");
        *counts.entry(lsn).or_insert(0) += 1;
    }
    counts
}

fn database_id(path: &Path) -> String {
    identity::stream_id(&astha_core::db::open(path).unwrap(), "__cdc_log").unwrap()
}

#[actix_rt::test]
async fn every_change_is_published_with_subject_payload_and_msg_id() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let db = TestDb::new();
    let id = database_id(&db.path);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let sink = NatsSink::new(
        NatsSinkConfig::new(&server.url(), "app.db", "ASTHA_T1", &["a", "b"]),
        &id,
    )
    .unwrap();
    let stats = sink.stats();
    let (recorder, seen) = RecordingComponent::new("recorder", &["a", "b"]);
    astha.register_component(Box::new(sink)).await.unwrap();
    astha.register_component(Box::new(recorder)).await.unwrap();

    let w = db.writer();
    insert(&w, "a", 0, 40);
    insert(&w, "b", 100, 10);
    w.execute("UPDATE a SET v = v + 1000 WHERE id <= 5", [])
        .unwrap();
    w.execute("DELETE FROM b WHERE id <= 3", []).unwrap();
    let total = 40 + 10 + 5 + 3;
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == total).await);
    let count = wait_for_count(&server.url(), "ASTHA_T1", total as u64, LONG).await;
    assert_eq!(count, total as u64);

    let stored = read_stream(&server.url(), "ASTHA_T1").await;
    let expected = seen.state().confirmed.clone();
    assert_eq!(stored.len(), expected.len());
    for (m, change) in stored.iter().zip(&expected) {
        let subject = format!(
            "astha.app_db.{}.{}",
            change.table,
            change.op.name().to_ascii_lowercase()
        );
        assert_eq!(m.subject, subject);
        assert_eq!(
            m.payload,
            change.to_json(),
            "payload is the `astha watch` JSON"
        );
        assert_eq!(m.msg_id, format!("{id}:{}", change.lsn));
        assert_eq!(
            m.key,
            astha_core::format::debezium::key(change),
            "the record key header"
        );
    }
    let subjects: std::collections::BTreeSet<_> = stored.iter().map(|m| &m.subject).collect();
    assert_eq!(
        subjects.len(),
        4,
        "insert/update/delete subjects: {subjects:?}"
    );
    assert_eq!(stats.stored.load(Ordering::Relaxed), total as u64);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0);
    astha.stop().await.unwrap();
}

/// `format = "cloudevents"` with `cloudevents_mode = "binary"`: every message carries
/// the CloudEvents attributes as `ce-*` headers (the same as the structured event's) and
/// the native event alone as its body.
#[actix_rt::test]
async fn binary_cloudevents_carry_their_attributes_in_ce_headers() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let db = TestDb::new();
    let id = database_id(&db.path);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let mut config = NatsSinkConfig::new(&server.url(), "app.db", "ASTHA_CE", &["a"]);
    config.cloudevents_mode = astha_core::format::cloudevents::Mode::Binary;
    let source = astha_core::format::SourceInfo {
        name: "app".into(),
        db: "app".into(),
        identity: id.clone(),
    };
    let structured =
        astha_core::format::Encoder::new(astha_core::format::EventFormat::CloudEvents, source);
    let sink = NatsSink::new(config, &id)
        .unwrap()
        .with_encoder(structured.clone());
    let (recorder, seen) = RecordingComponent::new("recorder", &["a"]);
    astha.register_component(Box::new(sink)).await.unwrap();
    astha.register_component(Box::new(recorder)).await.unwrap();
    let w = db.writer();
    insert(&w, "a", 0, 5);
    w.execute("DELETE FROM a WHERE id = 2", []).unwrap();
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 6).await);
    assert_eq!(wait_for_count(&server.url(), "ASTHA_CE", 6, LONG).await, 6);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("ASTHA_CE").await.unwrap();
    let expected = seen.state().confirmed.clone();
    for (seq, change) in (1..=6u64).zip(&expected) {
        let m = stream.get_raw_message(seq).await.unwrap();
        let header = |name: &str| m.headers.get(name).map(|v| v.to_string());
        let event = structured.encode(change);
        for attribute in ["specversion", "id", "source", "type", "time", "subject"] {
            assert_eq!(
                header(&format!("ce-{attribute}")).as_deref(),
                event[attribute].as_str(),
                "ce-{attribute} of lsn {}",
                change.lsn
            );
        }
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body, event["data"], "the body is the event's data");
    }
    assert_eq!(
        m_type(&stream, 6).await,
        "io.astha.change.delete",
        "the last is the delete"
    );
    astha.stop().await.unwrap();
}

async fn m_type(stream: &async_nats::jetstream::stream::Stream, seq: u64) -> String {
    let m = stream.get_raw_message(seq).await.unwrap();
    m.headers.get("ce-type").unwrap().to_string()
}

#[actix_rt::test]
async fn an_existing_stream_is_used_and_a_missing_one_is_never_confirmed() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let db = TestDb::new();
    let id = database_id(&db.path);
    let mut config = NatsSinkConfig::new(&server.url(), "db", "ASTHA_EXISTING", &["a"]);
    config.stream = astha_components::sinks::StreamSetup::Existing {
        name: "ASTHA_EXISTING".into(),
    };
    config.ack_timeout = Duration::from_millis(300);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    astha
        .register_component(Box::new(NatsSink::new(config, &id).unwrap()))
        .await
        .unwrap();
    insert(&db.writer(), "a", 0, 5);
    // No stream yet: nothing may be confirmed.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(astha.component_info("nats_sink").unwrap().position, 0);

    let client = async_nats::connect(server.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ASTHA_EXISTING".into(),
            subjects: vec!["astha.db.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        wait_for_count(&server.url(), "ASTHA_EXISTING", 5, LONG).await,
        5
    );
    let counts = lsn_counts(&read_stream(&server.url(), "ASTHA_EXISTING").await, &id);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn kill_9_of_astha_mid_stream_gives_each_lsn_exactly_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    const ROWS: i64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    {
        let conn = astha_core::db::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
            .unwrap();
        astha_core::capture::Capture::new("__cdc_log")
            .install(&conn, "t")
            .unwrap();
        astha_core::slots::create(
            &conn,
            "__cdc_log",
            "nats_sink",
            astha_core::slots::SlotStart::Beginning,
        )
        .unwrap();
    }
    let id = database_id(&db);
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = astha_core::db::open_writer(&db).unwrap();
            for v in 0..ROWS {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
                // About 3 s of writing, so most kills land mid-stream.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let worker = |extra: &[&str]| {
        Command::new(WORKER)
            .arg("--db")
            .arg(&db)
            .args(["--nats-url", &server.url(), "--stream", "ASTHA_KILL"])
            .args(extra)
            .spawn()
            .expect("start worker")
    };
    let mut kills_mid_stream = 0;
    let mut published_before_kill = Vec::new();
    for round in 0..6u64 {
        let mut child = worker(&[]);
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        published_before_kill.push(stream_count(&server.url(), "ASTHA_KILL").await);
        if !writer.is_finished() {
            kills_mid_stream += 1;
        }
    }
    writer.join().unwrap();
    let status = worker(&["--exit-when-caught-up"]).wait().unwrap();
    assert!(status.success(), "last worker run: {status:?}");
    assert!(
        kills_mid_stream >= 3,
        "kills happened while changes flowed: {kills_mid_stream}"
    );
    assert!(
        published_before_kill.iter().any(|&n| n > 0),
        "the sink published before some kill: {published_before_kill:?}"
    );

    let logged = astha_core::db::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(logged, ROWS);
    let stored = read_stream(&server.url(), "ASTHA_KILL").await;
    let counts = lsn_counts(&stored, &id);
    let dupes: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dupes.is_empty(), "duplicated lsns: {dupes:?}");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=ROWS).collect::<Vec<_>>(),
        "every lsn exactly once"
    );
    println!("kill test: stream sizes at kills {published_before_kill:?}");
}

#[actix_rt::test]
async fn nats_server_killed_and_restarted_mid_stream_loses_nothing() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    const ROWS: i64 = 1500;
    let db = TestDb::new();
    let id = database_id(&db.path);
    let mut config = db.config();
    config.monitored_tables = vec!["a".into()];
    let astha = Astha::new(config).unwrap();
    astha.start().unwrap();
    let mut sink_config = NatsSinkConfig::new(&server.url(), "db", "ASTHA_RESTART", &["a"]);
    sink_config.ack_timeout = Duration::from_millis(500);
    // One change per call: this test covers `on_event`; the kill test covers batches.
    sink_config.max_in_flight = 1;
    let sink = NatsSink::new(sink_config, &id).unwrap();
    let stats = sink.stats();
    astha.register_component(Box::new(sink)).await.unwrap();

    let path = db.path.clone();
    let writer = std::thread::spawn(move || {
        let conn = astha_core::db::open_writer(&path).unwrap();
        for v in 0..ROWS {
            conn.execute("INSERT INTO a (v) VALUES (?1)", [v]).unwrap();
            std::thread::sleep(Duration::from_micros(1500));
        }
    });
    // Let some through, then crash the server while changes keep coming.
    assert!(wait_for_count(&server.url(), "ASTHA_RESTART", 100, LONG).await >= 100);
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!writer.is_finished(), "the outage is mid-stream");
    server.spawn();
    let url = server.url();
    let writer_done = tokio::task::spawn_blocking(move || writer.join().unwrap());
    writer_done.await.unwrap();
    assert_eq!(
        wait_for_count(&url, "ASTHA_RESTART", ROWS as u64, LONG).await,
        ROWS as u64
    );
    let counts = lsn_counts(&read_stream(&url, "ASTHA_RESTART").await, &id);
    assert!(counts.values().all(|&n| n == 1));
    // One commit per row: LSNs 1..=ROWS (the log itself is cleaned up by now).
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=ROWS).collect::<Vec<_>>()
    );
    assert!(
        stats.failures.load(Ordering::Relaxed) > 0,
        "the outage was seen by the sink"
    );
    astha.stop().await.unwrap();
}

/// Events/s from the log to JetStream acks, for BENCHMARKS.md:
/// `cargo test --release -p astha-tests --test sink_nats -- --ignored --nocapture nats_sink_throughput`
/// (`ASTHA_NATS_BENCH_IN_FLIGHT=1` for one change per call, `ASTHA_NATS_BENCH_ROWS=<n>`).
#[actix_rt::test]
#[ignore]
async fn nats_sink_throughput() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let n: i64 = std::env::var("ASTHA_NATS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let db = TestDb::new();
    let id = database_id(&db.path);
    {
        // Rows first, in one transaction: the figure is the sink's, not the writer's.
        let mut conn = db.writer();
        astha_core::capture::Capture::new("__cdc_log")
            .install(&conn, "a")
            .unwrap();
        astha_core::slots::create(
            &conn,
            "__cdc_log",
            "nats_sink",
            astha_core::slots::SlotStart::Beginning,
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        for v in 0..n {
            tx.execute("INSERT INTO a (v) VALUES (?1)", [v]).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut config = db.config();
    config.monitored_tables = vec!["a".into()];
    config.batch_size = 512;
    config.window_batches = 4;
    let astha = Astha::new(config).unwrap();
    astha.start().unwrap();
    let mut sink_config = NatsSinkConfig::new(&server.url(), "bench", "ASTHA_BENCH", &["a"]);
    // 1 = one change per call (one round trip each); more = pipelined batches.
    if let Some(window) = std::env::var("ASTHA_NATS_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        sink_config.max_in_flight = window;
    }
    let in_flight = sink_config.max_in_flight;
    let sink = NatsSink::new(sink_config, &id).unwrap();
    let stats = sink.stats();
    let started = Instant::now();
    astha.register_component(Box::new(sink)).await.unwrap();
    let deadline = started + Duration::from_secs(600);
    while stats.stored.load(Ordering::Relaxed) < n as u64 {
        assert!(Instant::now() < deadline, "bench did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "nats_sink_throughput: {n} events, max_in_flight {in_flight}: {:.3} s = {:.0} events/s (acked by JetStream)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stream_count(&server.url(), "ASTHA_BENCH").await, n as u64);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn transaction_markers_go_to_their_own_subject_around_their_changes() {
    use astha_core::format::markers::Markers;
    use astha_core::format::{Encoder, EventFormat, SourceInfo};
    let Some(server) = NatsServer::start() else {
        return;
    };
    let db = TestDb::new();
    let id = database_id(&db.path);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let encoder = Encoder::new(
        EventFormat::Native,
        SourceInfo {
            name: "app".into(),
            db: "app".into(),
            identity: id.clone(),
        },
    )
    .with_transaction_events(Some(Markers::new(Some(vec!["a".into(), "b".into()]))));
    let sink = NatsSink::new(
        NatsSinkConfig::new(&server.url(), "app.db", "ASTHA_TX", &["a", "b"]),
        &id,
    )
    .unwrap()
    .with_encoder(encoder);
    astha.register_component(Box::new(sink)).await.unwrap();
    let mut writer = astha_core::transaction::Writer::new(db.writer(), "__cdc_log").unwrap();
    writer
        .transaction(|conn| {
            conn.execute_batch(
                "INSERT INTO a (v) VALUES (1); INSERT INTO b (v) VALUES (2);
                 INSERT INTO a (v) VALUES (3);",
            )?;
            Ok(())
        })
        .unwrap();
    insert(writer.conn(), "a", 4, 1);
    let count = wait_for_count(&server.url(), "ASTHA_TX", 6, LONG).await;
    assert_eq!(count, 6, "4 changes and 2 markers");
    let stored = read_stream(&server.url(), "ASTHA_TX").await;
    let subjects: Vec<&str> = stored.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "astha.app_db.__astha_tx.begin",
            "astha.app_db.a.insert",
            "astha.app_db.b.insert",
            "astha.app_db.a.insert",
            "astha.app_db.__astha_tx.end",
            "astha.app_db.a.insert",
        ]
    );
    let tx = stored[1].payload["transaction"]["id"].as_str().unwrap();
    assert_eq!(stored[0].msg_id, format!("{id}:tx{tx}:begin"));
    assert_eq!(stored[4].msg_id, format!("{id}:tx{tx}:end"));
    assert_eq!(stored[0].key, serde_json::json!({ "id": tx }));
    assert_eq!(stored[0].payload["status"], "BEGIN");
    assert_eq!(stored[0].payload["id"], tx);
    assert_eq!(stored[4].payload["event_count"], 3);
    assert_eq!(
        stored[4].payload["data_collections"],
        serde_json::json!([{"data_collection": "app.a", "event_count": 2},
                           {"data_collection": "app.b", "event_count": 1}])
    );
    assert_eq!(stored[1].payload["transaction"]["id"], "1");
    assert!(stored[5].payload.get("transaction").is_none());
    astha.stop().await.unwrap();
}
