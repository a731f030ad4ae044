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
    let (status, body) =
        actix_rt::task::spawn_blocking(move || get(addr, "/health", Some("s3cret")))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    server.stop(true).await;
    astha.stop().await.unwrap();
}
