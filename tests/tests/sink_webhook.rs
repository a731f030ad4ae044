//! The webhook sink against a local HTTP receiver (a plain `std::net` server in the
//! test): every change arrives with a valid HMAC-SHA256 signature, through answers of
//! 500/503, a receiver that is down (connections refused) and comes back on the same
//! port; a 4xx rejection dead-letters exactly the rejected change.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use astha_actors::Astha;
use astha_components::sinks::{identity, WebhookSink, WebhookSinkConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;

const SECRET: &str = "s3cret-key";

/// How the receiver answers request number `n` (1-based) carrying `lsns`.
type Plan = Arc<dyn Fn(u64, &[i64]) -> u16 + Send + Sync>;

#[derive(Default)]
struct Seen {
    requests: u64,
    /// Times each LSN was in a request answered 2xx.
    accepted: BTreeMap<i64, u32>,
    bad_signatures: u64,
    errors_answered: u64,
    deliveries: Vec<String>,
    bodies: Vec<serde_json::Value>,
}

struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    plan: Plan,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Receiver {
    fn start(plan: Plan) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = Receiver {
            port: listener.local_addr().unwrap().port(),
            seen: Arc::default(),
            plan,
            running: None,
        };
        r.serve(listener);
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, plan, flag) = (self.seen.clone(), self.plan.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => handle(stream, &seen, &plan),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        self.running = Some((stop, thread));
    }

    /// Stops listening: connections are refused until [`Receiver::restart`].
    fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            thread.join().unwrap();
        }
    }

    fn restart(&mut self) {
        self.serve(TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(stream: TcpStream, seen: &Mutex<Seen>, plan: &Plan) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    assert!(line.starts_with("POST /hook "), "request line {line:?}");
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();

    // Checked independently of the sink's own code: HMAC-SHA256 of the raw body.
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let valid = headers.get("x-astha-signature") == Some(&expected);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let lsns: Vec<i64> = json
        .as_array()
        .expect("body is a JSON array")
        .iter()
        .map(|c| c["lsn"].as_i64().unwrap())
        .collect();

    let status = {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        let status = if valid {
            plan(s.requests, &lsns)
        } else {
            s.bad_signatures += 1;
            401
        };
        if (200..300).contains(&status) {
            for lsn in &lsns {
                *s.accepted.entry(*lsn).or_insert(0) += 1;
            }
            s.deliveries
                .push(headers.get("x-astha-delivery").cloned().unwrap_or_default());
            s.bodies.push(json);
        } else {
            s.errors_answered += 1;
        }
        status
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn database_id(path: &std::path::Path) -> String {
    identity::stream_id(&astha_core::db::open(path).unwrap(), "__cdc_log").unwrap()
}

#[actix_rt::test]
async fn every_change_arrives_signed_through_receiver_errors_and_restarts() {
    // Every 7th request and requests 30..=33 fail with 5xx.
    let mut receiver = Receiver::start(Arc::new(|n, _| {
        if n % 7 == 0 {
            500
        } else if (30..=33).contains(&n) {
            503
        } else {
            200
        }
    }));
    let db = TestDb::new();
    let id = database_id(&db.path);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let mut config = WebhookSinkConfig::new(&receiver.url(), SECRET, &["a", "b"]);
    config.timeout = Duration::from_secs(2);
    config.max_batch = 8;
    astha
        .register_component(Box::new(WebhookSink::new(config, &id).unwrap()))
        .await
        .unwrap();

    let w = db.writer();
    insert(&w, "a", 0, 100);
    insert(&w, "b", 500, 50);
    let seen_handle = receiver.seen.clone();
    let received = |n: usize| {
        let seen = seen_handle.clone();
        async move {
            let deadline = tokio::time::Instant::now() + LONG;
            while seen.lock().unwrap().accepted.len() < n {
                assert!(tokio::time::Instant::now() < deadline, "not all received");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    received(150).await;

    // The receiver goes away while changes keep coming, then comes back.
    receiver.stop();
    insert(&w, "a", 1000, 60);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during_outage = receiver.seen.lock().unwrap().accepted.len();
    assert_eq!(
        during_outage, 150,
        "nothing delivered while the receiver is down"
    );
    assert!(astha.component_info("webhook_sink").unwrap().position < 210);
    receiver.restart();
    received(210).await;

    {
        let seen = receiver.seen.lock().unwrap();
        // 210 commits of one row each: LSNs 1..=210 (the log itself is cleaned up by now).
        assert_eq!(
            seen.accepted.keys().copied().collect::<Vec<_>>(),
            (1..=210).collect::<Vec<_>>()
        );
        assert_eq!(
            seen.bad_signatures, 0,
            "every request carried a valid signature"
        );
        assert!(seen.errors_answered >= 5, "errors were answered");
        assert!(seen
            .deliveries
            .iter()
            .all(|d| d.starts_with(&format!("{id}:"))));
        // Bodies are the `astha watch` JSON, in commit order within a request.
        for body in &seen.bodies {
            let lsns: Vec<i64> = body
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["lsn"].as_i64().unwrap())
                .collect();
            assert!(lsns.windows(2).all(|w| w[0] < w[1]));
            for c in body.as_array().unwrap() {
                assert_eq!(c["op"], "INSERT");
                assert!(c["after"]["v"].is_i64() && c["before"].is_null());
            }
        }
    }
    let info = astha.component_info("webhook_sink").unwrap();
    assert_eq!(info.dead_letters, 0);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_4xx_rejection_dead_letters_exactly_the_rejected_change() {
    let receiver = Receiver::start(Arc::new(
        |_, lsns| {
            if lsns.contains(&7) {
                422
            } else {
                200
            }
        },
    ));
    let db = TestDb::new();
    let id = database_id(&db.path);
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let config = WebhookSinkConfig::new(&receiver.url(), SECRET, &["a"]);
    astha
        .register_component(Box::new(WebhookSink::new(config, &id).unwrap()))
        .await
        .unwrap();
    insert(&db.writer(), "a", 0, 20);
    let deadline = tokio::time::Instant::now() + LONG;
    while astha.component_info("webhook_sink").unwrap().position < 20 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepted: Vec<i64> = receiver
        .seen
        .lock()
        .unwrap()
        .accepted
        .keys()
        .copied()
        .collect();
    let expected: Vec<i64> = (1..=20).filter(|&l| l != 7).collect();
    assert_eq!(accepted, expected);
    assert_eq!(
        astha.component_info("webhook_sink").unwrap().dead_letters,
        1
    );
    astha.stop().await.unwrap();
}
