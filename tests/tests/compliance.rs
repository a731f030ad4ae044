//! Every registered sink and a lakehouse component pass the shared compliance harness
//! (`astha_actors::testing::compliance`), built through the sink registry as `astha run`
//! builds them. The file and webhook sinks are also read back from their system. The
//! NATS sink needs the server `scripts/start_nats.sh` starts on 127.0.0.1:4222: without
//! it the NATS case is skipped locally and fails in CI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use astha_actors::testing::compliance::{self, Harness, Setup};
use astha_actors::Component;
use astha_components::sinks::{SinkContext, SinkRegistry};
use serde_json::{json, Value};

/// A sink of type `kind` with `settings`, built for the harness's database and table.
fn sink(kind: &str, settings: Value, setup: &Setup) -> Box<dyn Component> {
    let ctx = SinkContext::new(kind, &setup.database, "compliance", &[&setup.table]);
    SinkRegistry::builtin()
        .parse(kind, kind, settings)
        .and_then(|parsed| parsed.build(&ctx))
        .unwrap()
}

fn lsns_of_lines(text: &str) -> Vec<i64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["lsn"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[test]
fn the_stdout_sink_complies() {
    let report = compliance::check(|setup| sink("stdout", json!({}), setup));
    assert_eq!(report.dead_letters, 2);
}

#[test]
fn the_file_sink_complies() {
    let harness = Harness::reading_back(|setup| {
        lsns_of_lines(&std::fs::read_to_string(setup.dir.join("out.jsonl")).unwrap_or_default())
    });
    compliance::check_with(harness, |setup| {
        sink(
            "file",
            json!({"path": setup.dir.join("out.jsonl"), "max_batch": 7}),
            setup,
        )
    });
}

/// A webhook receiver that answers 200 to every POST and keeps the LSNs it was sent.
fn receiver() -> (String, Arc<Mutex<Vec<i64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
                    seen.lock()
                        .unwrap()
                        .extend(events.iter().map(|e| e["lsn"].as_i64().unwrap()));
                    let _ = reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (url, got)
}

#[test]
fn the_webhook_sink_complies() {
    let (url, got) = receiver();
    let harness = Harness::reading_back(move |_| got.lock().unwrap().clone());
    compliance::check_with(harness, move |setup| {
        sink("webhook", json!({"url": url, "secret": "s"}), setup)
    });
}

#[test]
fn the_nats_sink_complies() {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but no NATS server listens on 4222: run scripts/start_nats.sh");
        }
        eprintln!("SKIPPED: no NATS server on 127.0.0.1:4222 (. scripts/start_nats.sh)");
        return;
    }
    let stream = format!("COMPLIANCE_{:08X}", rand::random::<u32>());
    compliance::check(move |setup| {
        sink(
            "nats",
            json!({
                "url": "nats://127.0.0.1:4222",
                "database": stream.to_lowercase(),
                "stream": {"create": {"name": stream}},
            }),
            setup,
        )
    });
}

#[test]
fn a_lakehouse_component_complies() {
    use astha_components::lakehouse::{Lakehouse, LakehouseConfig};
    use astha_components::schema_manager::{SchemaManager, SchemaManagerConfig};
    compliance::check(|setup| {
        let lakehouse = Lakehouse::open(LakehouseConfig::new(
            &setup.database,
            setup.dir.join("warehouse"),
        ))
        .unwrap();
        Box::new(SchemaManager::new(lakehouse, SchemaManagerConfig::default()).unwrap())
    });
}
