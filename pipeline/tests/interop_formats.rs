//! Formats read by consumers we did not write, on rows written by real triggers:
//! Apache Flink (PyFlink, `debezium-json` through its filesystem connector) rebuilds the
//! table from a pipeline's Debezium output and gets exactly the SQLite table (also when
//! the output starts with an initial snapshot of rows written before capture); the
//! CloudEvents SDK parses every event of a `cloudevents` sink.
//!
//! They run when `ASTHA_FORMATS_PYTHON` names a Python with `apache-flink` and
//! `cloudevents` (`bash scripts/formats_venv.sh` prints one); CI always sets it, and
//! fails if it does not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection;
use serde_json::Value as Json;

fn formats_python() -> Option<PathBuf> {
    let python = std::env::var_os("ASTHA_FORMATS_PYTHON").map(PathBuf::from);
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if python.is_none() && in_ci {
        panic!("CI must run the Flink/CloudEvents checks: set ASTHA_FORMATS_PYTHON (bash scripts/formats_venv.sh prints it)");
    }
    python
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/interop")
        .join(name)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Runs a pipeline with one file sink in `format` over `writes`, and returns the file.
async fn run_to_file(dir: &Path, format: &str, writes: &str, expected: usize) -> PathBuf {
    run_sink_to_file(dir, format, "never", writes, expected).await
}

/// Like [`run_to_file`], with the sink's snapshot mode.
async fn run_sink_to_file(
    dir: &Path,
    format: &str,
    snapshot: &str,
    writes: &str,
    expected: usize,
) -> PathBuf {
    let db = dir.join("shop.db");
    let out = dir.join(format!("{format}/items.jsonl"));
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"items\"]\ninstall = true\n\
         [[sinks]]\nname = \"{format}\"\ntype = \"file\"\nformat = \"{format}\"\n\
         snapshot = \"{snapshot}\"\npath = \"{}\"\n",
        db.display(),
        out.display()
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();
    Connection::open(&db)
        .unwrap()
        .execute_batch(writes)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_lines(&out) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(count_lines(&out), expected);
    out
}

const SCHEMA: &str =
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, amount REAL, big INTEGER, photo BLOB)";

const WRITES: &str = "
    INSERT INTO items VALUES (1, 'pen', 1.5, 9007199254740993, x'00ff');
    INSERT INTO items VALUES (2, NULL, 0.30000000000000004, -9223372036854775808, NULL);
    INSERT INTO items VALUES (3, 'née ✓', 1e300, 42, x'');
    INSERT INTO items VALUES (4, 'gone', -2.5e-308, 0, x'01');
    INSERT INTO items VALUES (5, 'inf', 9e999, 1, NULL);
    UPDATE items SET name = 'pencil', amount = -0.0 WHERE id = 1;
    UPDATE items SET photo = x'deadbeef', big = 9223372036854775807 WHERE id = 2;
    DELETE FROM items WHERE id = 4;
    INSERT INTO items VALUES (6, 'late', 2.0, 6, x'06');";
/// Changes the writes above make.
const CHANGES: usize = 9;

/// The table as SQLite holds it, in the shape the Flink script prints.
fn sqlite_rows(db: &Path) -> Vec<Json> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, name, amount, big, photo FROM items ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(serde_json::json!([
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<f64>>(2)?.map(|f| if f.is_finite() {
                serde_json::json!(f)
            } else {
                serde_json::json!(f.to_string())
            }),
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
        ]))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[actix_rt::test]
async fn flink_rebuilds_the_table_from_debezium_output() {
    let Some(python) = formats_python() else {
        println!("ASTHA_FORMATS_PYTHON not set: the Flink check is skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(SCHEMA)
        .unwrap();
    let out = run_to_file(dir.path(), "debezium", WRITES, CHANGES).await;
    let report = flink_matches_sqlite(&python, &out, &db);
    // Flink saw the update pairs and the delete, not only inserts.
    assert_eq!(report["kinds"]["-D"], 1, "{report}");
    assert_eq!(report["kinds"]["+U"], 2, "{report}");
}

/// Rows written before capture existed reach Flink through the sink's initial snapshot
/// (`r` events), and the changes after it apply on top.
#[actix_rt::test]
async fn flink_rebuilds_the_table_from_an_initial_snapshot_and_the_changes_after_it() {
    let Some(python) = formats_python() else {
        println!("ASTHA_FORMATS_PYTHON not set: the Flink check is skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let (before, after) = WRITES.split_at(WRITES.find("UPDATE items SET photo").unwrap());
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!("{SCHEMA}; {before}"))
        .unwrap();
    // Five rows in the snapshot (one already updated), then an update, a delete and an
    // insert.
    let out = run_sink_to_file(dir.path(), "debezium", "initial", after, 5 + 3).await;
    let events: Vec<Json> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "r", "r", "r", "u", "d", "c"]);
    assert_eq!(events[4]["source"]["snapshot"], "last");
    let report = flink_matches_sqlite(&python, &out, &db);
    assert_eq!(report["kinds"]["+I"], 6, "five read, one created: {report}");
    assert_eq!(report["kinds"]["-D"], 1, "{report}");
    assert_eq!(report["kinds"]["+U"], 1, "{report}");
}

/// Runs the Flink script over the directory of `out` and checks its rows against the
/// SQLite table `db`, value for value; returns its report.
fn flink_matches_sqlite(python: &Path, out: &Path, db: &Path) -> Json {
    let output = Command::new(python)
        .arg(script("flink_debezium.py"))
        .arg(out.parent().unwrap())
        .arg("id BIGINT, name STRING, amount DOUBLE, big BIGINT, photo BYTES")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "flink failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let flink: Vec<Json> = report["rows"].as_array().unwrap().clone();
    let expected = sqlite_rows(db);
    assert_eq!(flink.len(), expected.len(), "{report}");
    for (got, want) in flink.iter().zip(&expected) {
        assert_eq!(got[0], want[0]);
        assert_eq!(got[1], want[1], "name of {}", want[0]);
        assert_eq!(got[3], want[3], "big of {}", want[0]);
        assert_eq!(got[4], want[4], "photo of {}", want[0]);
        match (got[2].as_f64(), want[2].as_f64()) {
            (Some(a), Some(b)) => assert_eq!(a.to_bits(), b.to_bits(), "amount of {}", want[0]),
            _ => assert_eq!(got[2], want[2], "amount of {}", want[0]),
        }
    }
    report
}

#[actix_rt::test]
async fn the_cloudevents_sdk_parses_every_event() {
    let Some(python) = formats_python() else {
        println!("ASTHA_FORMATS_PYTHON not set: the CloudEvents check is skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(SCHEMA)
        .unwrap();
    let out = run_to_file(dir.path(), "cloudevents", WRITES, CHANGES).await;
    let output = Command::new(&python)
        .arg(script("check_cloudevents.py"))
        .arg("structured")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK refused an event: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["parsed"], CHANGES);
    let ids: Vec<&str> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), CHANGES, "ids are unique per change: {ids:?}");
}

/// A webhook receiver that answers 200 and appends each request as one JSON line
/// `{"headers": {...}, "body": "<text>"}` to `out` (what check_cloudevents.py binary reads).
fn recording_receiver(out: PathBuf) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut headers = serde_json::Map::new();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end().to_string();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap();
                }
                headers.insert(k, Json::String(v));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let record = serde_json::json!({
                "headers": headers,
                "body": String::from_utf8(body).unwrap(),
            });
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap();
            writeln!(file, "{record}").unwrap();
            let mut answer = stream;
            let _ = write!(
                answer,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

#[actix_rt::test]
async fn the_cloudevents_sdk_parses_binary_mode_from_the_webhook_sink() {
    let Some(python) = formats_python() else {
        println!("ASTHA_FORMATS_PYTHON not set: the CloudEvents check is skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(SCHEMA)
        .unwrap();
    let requests = dir.path().join("requests.jsonl");
    let url = recording_receiver(requests.clone());
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"items\"]\ninstall = true\n\
         [[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nformat = \"cloudevents\"\n\
         cloudevents_mode = \"binary\"\nurl = \"{url}\"\nsecret = \"s\"\n",
        db.display()
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine)
        .unwrap()
        .start(&engine)
        .await
        .unwrap();
    Connection::open(&db)
        .unwrap()
        .execute_batch(WRITES)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_lines(&requests) < CHANGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(count_lines(&requests), CHANGES, "one request per change");
    let output = Command::new(&python)
        .arg(script("check_cloudevents.py"))
        .arg("binary")
        .arg(&requests)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK refused an event: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["parsed"], CHANGES);
    assert_eq!(report["types"][0], "io.astha.change.insert");
}
