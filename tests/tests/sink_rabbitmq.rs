//! The RabbitMQ sink through a pipeline, against a real RabbitMQ (`ASTHA_AMQP_URL`, which
//! `scripts/start_rabbitmq.sh` exports), read back by RabbitMQ's standard Python client,
//! pika (`scripts/brokers/amqp_read.py`, run by `ASTHA_BROKERS_PYTHON`, which
//! `scripts/brokers_venv.sh` installs). Queues and exchanges are declared with lapin.
//!
//! - every change arrives, in commit order, persistent, with its routing key, message id,
//!   content type and headers; a change no queue would take is not confirmed until a
//!   queue is bound;
//! - fanout, headers and direct exchanges route as declared (`mandatory = false` lets an
//!   exchange drop what no binding wants);
//! - `kill -9` of the Astha process mid-stream, several times, and a restart of the
//!   broker mid-stream: every change arrives, first copies in commit order, repeats only
//!   of what was published and not yet confirmed.
//!
//! Skipped with a printed reason when no broker is configured, unless `CI` or
//! `ASTHA_REQUIRE_RABBITMQ` is set (`.ci/run` sets both): then a missing broker fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use rusqlite::Connection as Sqlite;

const WORKER: &str = env!("CARGO_BIN_EXE_astha-pipeline-worker");
const READER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/brokers/amqp_read.py"
);
const LONG: Duration = Duration::from_secs(120);

/// The tests share one broker and one restarts it: they run one at a time.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker's URL and the Python with pika, or `None` (printed) when absent and allowed.
fn broker() -> Option<(String, String)> {
    let required = std::env::var_os("CI").is_some()
        || std::env::var_os("ASTHA_REQUIRE_RABBITMQ").is_some_and(|v| v != "0");
    let url = std::env::var("ASTHA_AMQP_URL").ok();
    let python = std::env::var("ASTHA_BROKERS_PYTHON").ok();
    match (url, python) {
        (Some(url), Some(python)) => Some((url, python)),
        _ if required => panic!(
            "RabbitMQ required: source scripts/start_rabbitmq.sh (ASTHA_AMQP_URL) and set \
             ASTHA_BROKERS_PYTHON=$(bash scripts/brokers_venv.sh | tail -n 1)"
        ),
        _ => {
            eprintln!(
                "SKIPPED: ASTHA_AMQP_URL or ASTHA_BROKERS_PYTHON not set \
                 (scripts/start_rabbitmq.sh, scripts/brokers_venv.sh)"
            );
            None
        }
    }
}

/// One message as pika read it.
#[derive(Debug)]
struct Message {
    routing_key: String,
    lsn: i64,
    operation: String,
    message_id: String,
    persistent: bool,
    content_type: String,
    body: serde_json::Value,
}

/// Drains `queue` with pika; messages in queue order.
fn read_queue(python: &str, url: &str, queue: &str) -> Vec<Message> {
    let out = Command::new(python)
        .args([READER, url, queue])
        .output()
        .expect("run the pika reader");
    assert!(
        out.status.success(),
        "pika reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let m: serde_json::Value = serde_json::from_str(line).unwrap();
            Message {
                routing_key: m["routing_key"].as_str().unwrap().into(),
                lsn: m["lsn"].as_i64().expect("astha-lsn header"),
                operation: m["operation"].as_str().unwrap_or_default().into(),
                message_id: m["message_id"].as_str().unwrap_or_default().into(),
                persistent: m["delivery_mode"] == 2,
                content_type: m["content_type"].as_str().unwrap_or_default().into(),
                body: m["body"].clone(),
            }
        })
        .collect()
}

/// Declares a durable exchange of `kind` and a durable queue bound to it.
async fn declare(
    url: &str,
    exchange: &str,
    kind: ExchangeKind,
    queue: &str,
    key: &str,
    args: FieldTable,
) {
    let amqp = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    channel
        .exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // A queue left by an earlier run of the same process id would hold old messages.
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        )
        .await
        .unwrap();
    amqp.close(200, "declared".into()).await.unwrap();
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

fn pipeline(db: &Path, sinks: &str) -> String {
    format!(
        "[[sources]]\nname = \"shop\"\ndatabase = \"{}\"\ntables = [\"t\"]\ninstall = true\n\n{sinks}",
        db.display()
    )
}

fn table(dir: &Path) -> (std::path::PathBuf, Sqlite) {
    let db = dir.join("shop.db");
    let conn = astha_core::db::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    (db, conn)
}

#[actix_rt::test]
async fn every_change_arrives_in_order_persistent_and_confirmed() {
    let Some((url, python)) = broker() else {
        return;
    };
    let _one = BROKER.lock().await;
    let exchange = format!("astha_test_{}", std::process::id());
    let queue = format!("{exchange}_q");
    // The exchange exists, no queue is bound yet.
    declare(
        &url,
        &exchange,
        ExchangeKind::Topic,
        "astha_unbound",
        "none.#",
        FieldTable::default(),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = table(dir.path());
    let text = pipeline(
        &db,
        &format!(
            "[[sinks]]\nname = \"bus\"\ntype = \"rabbitmq\"\nurl = \"{url}\"\n\
             exchange = \"{exchange}\"\nformat = \"debezium\"\n"
        ),
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();

    // No queue bound: the first change comes back unroutable and is not confirmed.
    conn.execute("INSERT INTO t VALUES (0, 'first')", [])
        .unwrap();
    let astha = running.engine("shop").unwrap();
    assert!(
        wait_until(|| astha.component_info("bus").is_some_and(|c| c.failures >= 2)).await,
        "the unroutable message failed"
    );
    let info = astha.component_info("bus").unwrap();
    assert!(
        info.last_error
            .as_deref()
            .unwrap_or("")
            .contains("routed to no queue"),
        "{info:?}"
    );
    let first = head(&conn);
    assert!(
        slot_position(&conn, "bus") < first,
        "confirmed an unroutable message"
    );

    declare(
        &url,
        &exchange,
        ExchangeKind::Topic,
        &queue,
        "cdc.#",
        FieldTable::default(),
    )
    .await;
    for i in 1..=300 {
        conn.execute("INSERT INTO t VALUES (?1, 'v')", [i]).unwrap();
    }
    conn.execute("UPDATE t SET v = 'u' WHERE id <= 50", [])
        .unwrap();
    conn.execute("DELETE FROM t WHERE id > 250", []).unwrap();
    let last = head(&conn);
    assert!(
        wait_until(|| slot_position(&conn, "bus") >= last).await,
        "caught up"
    );
    running.stop().await.unwrap();
    let got = read_queue(&python, &url, &queue);

    // Inserts of ids 0..=300, updates of ids 0..=50, deletes of ids 251..=300.
    let expected = 301 + 51 + 50;
    // At least once: the first change may arrive again after its unroutable attempts
    // (a retry that was routed once a queue was bound); its copies are the only repeats.
    let lsns: Vec<i64> = got.iter().map(|m| m.lsn).collect();
    let mut distinct = lsns.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), expected, "every change: {lsns:?}");
    assert_eq!(distinct, (first..=last).collect::<Vec<_>>(), "commit order");
    assert!(got.iter().all(|m| m.persistent), "delivery_mode 2");
    assert!(got.iter().all(|m| m.content_type == "application/json"));
    assert!(got
        .iter()
        .all(|m| m.message_id.ends_with(&format!(":{}", m.lsn))));
    assert_eq!(got[0].routing_key, "cdc.t.insert");
    assert_eq!(got[0].body["after"]["v"], "first");
    assert_eq!(got[0].body["op"], "c");
    for m in &got {
        assert_eq!(m.routing_key, format!("cdc.t.{}", m.operation));
        let op = m.body["op"].as_str().unwrap();
        let expected_op = match m.operation.as_str() {
            "insert" => "c",
            "update" => "u",
            "delete" => "d",
            other => panic!("operation header {other}"),
        };
        assert_eq!(op, expected_op, "{m:?}");
    }
}

#[actix_rt::test]
async fn fanout_headers_and_direct_exchanges_route_as_declared() {
    let Some((url, python)) = broker() else {
        return;
    };
    let _one = BROKER.lock().await;
    let prefix = format!("astha_kinds_{}", std::process::id());
    let (fan, heads, direct) = (
        format!("{prefix}_fanout"),
        format!("{prefix}_headers"),
        format!("{prefix}_direct"),
    );
    declare(
        &url,
        &fan,
        ExchangeKind::Fanout,
        &format!("{fan}_q"),
        "",
        FieldTable::default(),
    )
    .await;
    let mut deletes = FieldTable::default();
    deletes.insert("x-match".into(), AMQPValue::LongString("all".into()));
    deletes.insert(
        "astha-operation".into(),
        AMQPValue::LongString("delete".into()),
    );
    declare(
        &url,
        &heads,
        ExchangeKind::Headers,
        &format!("{heads}_q"),
        "",
        deletes,
    )
    .await;
    declare(
        &url,
        &direct,
        ExchangeKind::Direct,
        &format!("{direct}_q"),
        "shop.t",
        FieldTable::default(),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = table(dir.path());
    let sink = |name: &str, exchange: &str, kind: &str, extra: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"rabbitmq\"\nurl = \"{url}\"\n\
             exchange = \"{exchange}\"\nexchange_type = \"{kind}\"\n{extra}\n"
        )
    };
    let text = pipeline(
        &db,
        &[
            sink("fan", &fan, "fanout", ""),
            sink(
                "dels",
                &heads,
                "headers",
                "mandatory = false\nformat = \"native\"",
            ),
            sink(
                "direct",
                &direct,
                "direct",
                "routing_key = \"{db}.{table}\"",
            ),
        ]
        .concat(),
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();
    for i in 1..=20 {
        conn.execute("INSERT INTO t VALUES (?1, 'v')", [i]).unwrap();
    }
    conn.execute("DELETE FROM t WHERE id > 15", []).unwrap();
    let last = head(&conn);
    assert!(
        wait_until(|| ["fan", "dels", "direct"]
            .iter()
            .all(|s| slot_position(&conn, s) >= last))
        .await,
        "caught up"
    );
    running.stop().await.unwrap();

    let lsns = |queue: &str| -> Vec<i64> {
        read_queue(&python, &url, queue)
            .iter()
            .map(|m| m.lsn)
            .collect()
    };
    let all: Vec<i64> = (1..=25).collect();
    assert_eq!(lsns(&format!("{fan}_q")), all, "fanout: everything");
    assert_eq!(
        lsns(&format!("{direct}_q")),
        all,
        "direct on {{db}}.{{table}}"
    );
    let deleted = read_queue(&python, &url, &format!("{heads}_q"));
    assert_eq!(
        deleted.iter().map(|m| m.lsn).collect::<Vec<_>>(),
        (21..=25).collect::<Vec<_>>(),
        "headers: the deletes only; the inserts were dropped, not retried"
    );
    assert!(
        deleted
            .iter()
            .all(|m| m.operation == "delete" && m.body["op"] == "DELETE"),
        "{deleted:?}"
    );
}

/// `kill -9` of the Astha process several times while rows are written, then a restart of
/// RabbitMQ (its application, on the same node) while a fresh process publishes.
#[actix_rt::test]
async fn kill_9_of_astha_and_a_broker_restart_mid_stream_lose_nothing() {
    let Some((url, python)) = broker() else {
        return;
    };
    let _one = BROKER.lock().await;
    const ROWS: i64 = 4000;
    let exchange = format!("astha_kill_{}", std::process::id());
    let queue = format!("{exchange}_q");
    declare(
        &url,
        &exchange,
        ExchangeKind::Topic,
        &queue,
        "cdc.#",
        FieldTable::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (db, conn) = table(dir.path());
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        pipeline(
            &db,
            &format!(
                "[[sinks]]\nname = \"bus\"\ntype = \"rabbitmq\"\nurl = \"{url}\"\n\
                 exchange = \"{exchange}\"\nconfirm_timeout = \"2s\"\n"
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
            for v in 0..ROWS {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
                // About 4 s of writing, so the kills and the restart land mid-stream.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut kills_mid_stream = 0;
    for round in 0..4u64 {
        let mut child = worker(&[]);
        std::thread::sleep(Duration::from_millis(200 + 80 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !writer.is_finished() {
            kills_mid_stream += 1;
        }
    }
    let mut child = worker(&[]);
    let before_restart = slot_position(&conn, "bus");
    assert!(
        wait_until(|| slot_position(&conn, "bus") > before_restart).await,
        "the fifth process publishes"
    );
    let restarted_mid_stream = !writer.is_finished();
    let rabbitmqctl = |what: &str| {
        let status = Command::new("rabbitmqctl").arg(what).output().unwrap();
        assert!(status.status.success(), "rabbitmqctl {what}: {status:?}");
    };
    rabbitmqctl("stop_app");
    rabbitmqctl("start_app");
    writer.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let status = worker(&["--exit-when-caught-up"]).wait().unwrap();
    assert!(status.success(), "last worker run: {status:?}");
    assert!(
        kills_mid_stream >= 3,
        "kills while rows were written: {kills_mid_stream}"
    );
    assert!(
        restarted_mid_stream,
        "the broker restarted while rows were written"
    );

    let got = read_queue(&python, &url, &queue);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    let mut first_copies = Vec::new();
    for m in &got {
        let n = counts.entry(m.lsn).or_default();
        if *n == 0 {
            first_copies.push(m.lsn);
        }
        *n += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=ROWS).collect::<Vec<_>>(),
        "every change at least once"
    );
    assert_eq!(
        first_copies,
        (1..=ROWS).collect::<Vec<_>>(),
        "first copies in commit order"
    );
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    // Repeats come only from unconfirmed windows: at most one window (256) per crash or
    // restart (4 kills, the restart, the last kill).
    assert!(repeats <= 6 * 256, "{repeats} repeats");
    println!(
        "kill test: {} messages for {ROWS} changes, {repeats} repeats",
        got.len()
    );
}
