//! The HTTP endpoint against a running Astha: metrics, health, bearer token, SSE filters.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use astha_actors::http::{self, EventHub, HttpConfig, SseComponent};
use astha_actors::Astha;
use support::*;

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

#[actix_rt::test]
async fn metrics_health_auth_and_sse() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(64));
    astha
        .register_component(Box::new(SseComponent::new(
            hub.clone(),
            vec!["a".into(), "b".into()],
        )))
        .await
        .unwrap();
    let config = HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bearer_token: Some("s3cret".into()),
        ..HttpConfig::default()
    };
    let (server, addr) =
        http::start(&config, astha.stats(), astha.store().clone(), hub.clone()).unwrap();

    // An SSE client filtered to inserts into `a`, reading on its own thread.
    let sse = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /events?tables=a&operations=insert HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut ids = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("id: ") {
                ids.push(id.parse::<i64>().unwrap());
                if ids.len() == 2 {
                    break;
                }
            }
        }
        ids
    });
    let hub_ready = hub.clone();
    let ready = actix_rt::task::spawn_blocking(move || {
        for _ in 0..3000 {
            if hub_ready.clients() == 1 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    });
    assert!(ready.await.unwrap(), "SSE client connected");
    let writer = db.writer();
    writer.execute("INSERT INTO b (v) VALUES (1)", []).unwrap(); // lsn 1: other table
    writer.execute("INSERT INTO a (v) VALUES (2)", []).unwrap(); // lsn 2
    writer.execute("UPDATE a SET v = 3", []).unwrap(); // lsn 3: update
    writer.execute("INSERT INTO a (v) VALUES (4)", []).unwrap(); // lsn 4
    let ids = actix_rt::task::spawn_blocking(move || sse.join().unwrap())
        .await
        .unwrap();
    assert_eq!(ids, vec![2, 4]);

    let (status, _) = actix_rt::task::spawn_blocking(move || get(addr, "/metrics", None))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, body) =
        actix_rt::task::spawn_blocking(move || get(addr, "/metrics", Some("s3cret")))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("astha_component_delivered_total{component=\"sse\"} 4"),
        "{body}"
    );
    assert!(
        body.contains("astha_changes_read_total{table=\"a\"} 3"),
        "{body}"
    );
    assert!(body.contains("# TYPE astha_component_lag gauge"));
    assert!(
        body.contains("astha_delivery_latency_seconds_count{component=\"sse\"} 4"),
        "{body}"
    );
    assert!(
        body.contains("astha_delivery_latency_seconds_bucket{"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "astha_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert!(body.contains("\nastha_log_rows "), "{body}");
    assert!(
        body.contains("# TYPE astha_write_turns_given_total counter"),
        "{body}"
    );
    assert!(body.contains("\nastha_cleanups_total "), "{body}");
    // The four changes were confirmed, so their positions are written (just after the
    // confirmation): a slot write shows, with its time.
    let sample = |body: &str, name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .parse()
            .unwrap()
    };
    let mut body = body;
    for _ in 0..100 {
        if sample(&body, "astha_slot_write_seconds_total") > 0.0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        body = actix_rt::task::spawn_blocking(move || get(addr, "/metrics", Some("s3cret")))
            .await
            .unwrap()
            .1;
    }
    assert!(sample(&body, "astha_slot_writes_total") >= 1.0, "{body}");
    assert!(
        sample(&body, "astha_slot_write_seconds_total") > 0.0,
        "{body}"
    );
    assert!(
        sample(&body, "astha_slot_write_longest_seconds") > 0.0,
        "{body}"
    );
    let (status, body) =
        actix_rt::task::spawn_blocking(move || get(addr, "/health", Some("s3cret")))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// A GET with `headers` (each ending in CRLF), answered within `timeout` or `None`.
fn get_within(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    Some((status, response))
}

fn http_config(token: Option<&str>) -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bearer_token: token.map(str::to_string),
        ..HttpConfig::default()
    }
}

/// Waits (off the actix thread) until `cond` holds, for up to 10 s.
async fn eventually(cond: impl Fn() -> bool + Send + 'static) -> bool {
    actix_rt::task::spawn_blocking(move || {
        for _ in 0..2000 {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    })
    .await
    .unwrap()
}

/// `/metrics` uses none of the read threads delivery depends on: with every one of them
/// busy (a long catch-up), a scrape still answers, log figures included.
#[actix_rt::test]
async fn metrics_answer_while_every_read_thread_is_busy() {
    use astha_actors::store::READ_THREADS;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    insert(&db.writer(), "a", 1, 5);
    let hub = Arc::new(EventHub::new(4));
    let (server, addr) = http::start(
        &http_config(None),
        astha.stats(),
        astha.store().clone(),
        hub,
    )
    .unwrap();
    let release = Arc::new(std::sync::Barrier::new(READ_THREADS + 1));
    let started = Arc::new(AtomicUsize::new(0));
    let busy: Vec<_> = (0..READ_THREADS)
        .map(|_| {
            let (release, started) = (release.clone(), started.clone());
            let store = astha.store().clone();
            actix_rt::spawn(async move {
                store
                    .query(move |_| {
                        started.fetch_add(1, Ordering::SeqCst);
                        release.wait();
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    let all_busy = started.clone();
    assert!(eventually(move || all_busy.load(Ordering::SeqCst) == READ_THREADS).await);
    let scrape = actix_rt::task::spawn_blocking(move || {
        get_within(addr, "/metrics", "", Duration::from_secs(5))
    })
    .await
    .unwrap();
    actix_rt::task::spawn_blocking(move || release.wait())
        .await
        .unwrap();
    for job in busy {
        job.await.unwrap().unwrap();
    }
    let (status, body) = scrape.expect("/metrics waited for the store's read threads");
    assert_eq!(status, 200);
    assert!(body.contains("\nastha_log_rows 5\n"), "{body}");
    assert!(body.contains("\nastha_log_oldest_lsn 1\n"), "{body}");
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// A scrape never creates the database: with the file gone, `/metrics` still answers
/// (without the log figures) and the path stays empty.
#[actix_rt::test]
async fn metrics_never_create_the_database_file() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(4));
    let (server, addr) = http::start(
        &http_config(None),
        astha.stats(),
        astha.store().clone(),
        hub,
    )
    .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = db.path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(&file);
    }
    let (status, body) = actix_rt::task::spawn_blocking(move || {
        get_within(addr, "/metrics", "", Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("astha_log_rows"), "{body}");
    assert!(!db.path.exists(), "the metrics reader created the database");
    server.stop(true).await;
    let _ = astha.stop().await;
}

/// RFC 7235: the scheme is case-insensitive. Browsers' `EventSource` sends the token as
/// `?token=`; it works on `/events` only.
#[actix_rt::test]
async fn the_bearer_scheme_matches_in_any_case_and_events_take_a_query_token() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(4));
    let (server, addr) = http::start(
        &http_config(Some("s3cret")),
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();
    let answers = actix_rt::task::spawn_blocking(move || {
        let status = |path: &str, headers: &str| {
            get_within(addr, path, headers, Duration::from_secs(10))
                .unwrap()
                .0
        };
        let sse = |path: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut head = String::new();
            let mut reader = BufReader::new(stream);
            while reader.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
            let mut first = String::new();
            if head.starts_with("HTTP/1.1 200") {
                // The chunk size line, then the first event: the reconnection hint.
                reader.read_line(&mut first).unwrap();
                first.clear();
                reader.read_line(&mut first).unwrap();
            }
            (head[9..12].to_string(), first)
        };
        (
            status("/health", "Authorization: bearer s3cret\r\n"),
            status("/metrics", "authorization: BEARER s3cret\r\n"),
            status("/metrics", "Authorization: Bearer s3cre\r\n"),
            status("/metrics?token=s3cret", ""),
            sse("/events?token=s3cret"),
            sse("/events?token=wrong").0,
        )
    })
    .await
    .unwrap();
    assert_eq!(answers.0, 200);
    assert_eq!(answers.1, 200);
    assert_eq!(answers.2, 401);
    assert_eq!(answers.3, 401, "a query token is for /events only");
    assert_eq!(answers.4 .0, "200");
    assert_eq!(answers.4 .1, format!("retry: {}\n", http::RETRY_MS));
    assert_eq!(answers.5, "401");
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// A non-loopback address needs a token, or an explicit choice to serve without one.
#[actix_rt::test]
async fn a_public_address_without_a_token_is_refused() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    let hub = Arc::new(EventHub::new(4));
    let start = |config: HttpConfig| {
        http::start(&config, astha.stats(), astha.store().clone(), hub.clone())
    };
    let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = start(HttpConfig {
        bind: public,
        ..HttpConfig::default()
    });
    let Err(err) = refused else {
        panic!("served a public address without a token");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("without a bearer token"), "{err}");
    for config in [
        HttpConfig {
            bind: public,
            bearer_token: Some("t".into()),
            ..HttpConfig::default()
        },
        HttpConfig {
            bind: public,
            allow_anonymous: true,
            ..HttpConfig::default()
        },
    ] {
        let (server, _) = start(config).unwrap();
        server.stop(true).await;
    }
}

/// SSE clients are capped: the one past the limit gets 503 and `/metrics` still answers.
#[actix_rt::test]
async fn sse_clients_past_the_limit_are_refused() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(4).with_max_clients(2));
    let (server, addr) = http::start(
        &http_config(None),
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();
    let open = |addr| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stream
    };
    let held = [open(addr), open(addr)];
    let counted = hub.clone();
    assert!(eventually(move || counted.clients() == 2).await);
    let (third, metrics) = actix_rt::task::spawn_blocking(move || {
        (
            get_within(addr, "/events", "", Duration::from_secs(10)).unwrap(),
            get_within(addr, "/metrics", "", Duration::from_secs(10)).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(third.0, 503, "{}", third.1);
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("astha_sse_refused_clients_total 1"),
        "{}",
        metrics.1
    );
    assert_eq!(hub.clients(), 2);
    drop(held);
    let counted = hub.clone();
    assert!(
        eventually(move || counted.clients() == 0).await,
        "closed clients leave the hub"
    );
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// The server side of the TCP connection between `server` and `client` (local ports),
/// from /proc/net/tcp: is it still there?
fn server_side_open(server: u16, client: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 2
            && fields[1].ends_with(&format!(":{server:04X}"))
            && fields[2].ends_with(&format!(":{client:04X}"))
    })
}

/// A client that stops reading is dropped by the hub, and its connection is closed at
/// once: the server holds neither the connection nor its descriptor.
#[actix_rt::test]
async fn a_dropped_slow_sse_client_loses_its_connection() {
    let db = TestDb::new();
    let conn = db.writer();
    conn.execute_batch("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let mut config = db.config();
    config.monitored_tables.push("big".into());
    let astha = Astha::new(config).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(2));
    astha
        .register_component(Box::new(SseComponent::new(hub.clone(), vec!["big".into()])))
        .await
        .unwrap();
    let (server, addr) = http::start(
        &http_config(None),
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();
    // A client with a small receive buffer that never reads.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut client: TcpStream = socket.into();
    write!(client, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let client_port = client.local_addr().unwrap().port();
    let counted = hub.clone();
    assert!(eventually(move || counted.clients() == 1).await);
    assert!(server_side_open(addr.port(), client_port));
    let big = "x".repeat(64 * 1024);
    let mut rows = 0;
    while hub.dropped() == 0 && rows < 2000 {
        conn.execute("INSERT INTO big (v) VALUES (?1)", [&big])
            .unwrap();
        rows += 1;
        if rows % 20 == 0 {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let dropped = hub.clone();
    assert!(
        eventually(move || dropped.dropped() == 1).await,
        "the client was never dropped"
    );
    let port = addr.port();
    assert!(
        eventually(move || !server_side_open(port, client_port)).await,
        "the dropped client's connection is still open"
    );
    assert_eq!(hub.clients(), 0);
    drop(client);
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// CORS is off unless origins are configured; then those origins (only) may read.
#[actix_rt::test]
async fn cors_allows_the_configured_origins_only() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let hub = Arc::new(EventHub::new(4));
    let start = |cors_origins: Vec<String>| {
        http::start(
            &HttpConfig {
                cors_origins,
                ..http_config(None)
            },
            astha.stats(),
            astha.store().clone(),
            hub.clone(),
        )
        .unwrap()
    };
    let (plain, plain_addr) = start(Vec::new());
    let (cors, cors_addr) = start(vec!["https://ops.example".into()]);
    let answers = actix_rt::task::spawn_blocking(move || {
        let health = |addr, origin: &str| {
            get_within(
                addr,
                "/health",
                &format!("Origin: {origin}\r\n"),
                Duration::from_secs(10),
            )
            .unwrap()
        };
        (
            health(plain_addr, "https://ops.example"),
            health(cors_addr, "https://ops.example"),
            health(cors_addr, "https://evil.example"),
        )
    })
    .await
    .unwrap();
    let allow = "access-control-allow-origin: https://ops.example";
    assert_eq!(answers.0 .0, 200);
    assert!(
        !answers.0 .1.to_lowercase().contains("access-control"),
        "{}",
        answers.0 .1
    );
    assert_eq!(answers.1 .0, 200);
    assert!(
        answers.1 .1.to_lowercase().contains(allow),
        "{}",
        answers.1 .1
    );
    assert!(!answers
        .2
         .1
        .to_lowercase()
        .contains("access-control-allow-origin"));
    let bad = HttpConfig {
        cors_origins: vec!["ops.example/path".into()],
        ..http_config(None)
    };
    assert!(bad.validate().is_err());
    plain.stop(true).await;
    cors.stop(true).await;
    astha.stop().await.unwrap();
}
