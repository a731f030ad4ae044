//! `/ws` against a running Astha with a real WebSocket client (tokio-tungstenite): the
//! token (header or `?token=`), filters, the format, the client cap, the `Origin` check,
//! and a client that stops reading is dropped and its connection closed.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use astha_actors::http::{self, EventHub, HttpConfig, SseComponent};
use astha_actors::Astha;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config(token: Option<&str>) -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bearer_token: token.map(str::to_string),
        ..HttpConfig::default()
    }
}

/// Opens `path` with `headers`; the HTTP status of a refused handshake otherwise.
async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Client, u16> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("{other}"),
    }
}

/// The next `n` events (text messages) as JSON, answering nothing else.
async fn events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(LONG, client.next())
            .await
            .expect("an event within the timeout")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = message {
            out.push(serde_json::from_str(text.as_str()).unwrap());
        }
    }
    out
}

async fn wait_clients(hub: &Arc<EventHub>, n: usize) {
    for _ in 0..2000 {
        if hub.clients() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} clients, not {n}", hub.clients());
}

async fn started(hub: &Arc<EventHub>, db: &TestDb, format: EventFormat) -> Astha {
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let source = SourceInfo {
        name: "app".into(),
        db: "app".into(),
        identity: "id".into(),
    };
    astha
        .register_component(Box::new(
            SseComponent::new(hub.clone(), vec!["a".into(), "b".into()])
                .with_encoder(Encoder::new(format, source)),
        ))
        .await
        .unwrap();
    astha
}

#[actix_rt::test]
async fn websocket_clients_get_trigger_written_changes_with_the_token_and_filters() {
    let db = TestDb::new();
    let hub = Arc::new(EventHub::new(64));
    let astha = started(&hub, &db, EventFormat::Debezium).await;
    let (server, addr) = http::start(
        &config(Some("s3cret")),
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();

    assert_eq!(open(addr, "/ws", &[]).await.err(), Some(401));
    assert_eq!(open(addr, "/ws?token=wrong", &[]).await.err(), Some(401));
    assert_eq!(
        open(addr, "/ws?operations=upsert&token=s3cret", &[])
            .await
            .err(),
        Some(400)
    );
    // A browser's way (`?token=`), filtered; and a program's (the header), unfiltered.
    let mut filtered = open(addr, "/ws?tables=a&operations=insert&token=s3cret", &[])
        .await
        .unwrap();
    let mut all = open(addr, "/ws", &[("authorization", "Bearer s3cret")])
        .await
        .unwrap();
    wait_clients(&hub, 2).await;

    let writer = db.writer();
    writer.execute("INSERT INTO b (v) VALUES (1)", []).unwrap(); // lsn 1: other table
    writer.execute("INSERT INTO a (v) VALUES (2)", []).unwrap(); // lsn 2
    writer.execute("UPDATE a SET v = 3", []).unwrap(); // lsn 3: update
    writer.execute("INSERT INTO a (v) VALUES (4)", []).unwrap(); // lsn 4

    let got = events(&mut filtered, 2).await;
    let lsns: Vec<_> = got.iter().map(|e| e["source"]["lsn"].clone()).collect();
    assert_eq!(lsns, [2, 4]);
    assert!(got
        .iter()
        .all(|e| e["op"] == "c" && e["source"]["table"] == "a"));
    assert_eq!(got[0]["after"]["v"], 2);
    let got = events(&mut all, 4).await;
    let ops: Vec<_> = got.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "u", "c"]);
    assert_eq!(got[2]["before"]["v"], 2);
    assert_eq!(got[2]["after"]["v"], 3);

    // A ping is answered; a close is.
    all.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(LONG, all.next()).await.unwrap() {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"hi");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    all.close(None).await.unwrap();
    drop(all);
    filtered.close(None).await.unwrap();
    drop(filtered);
    wait_clients(&hub, 0).await;
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// WebSocket and SSE clients share the hub's cap; a page of a foreign origin is refused
/// unless it is a configured CORS origin.
#[actix_rt::test]
async fn websocket_clients_are_capped_and_foreign_origins_refused() {
    let db = TestDb::new();
    let hub = Arc::new(EventHub::new(4).with_max_clients(1));
    let astha = started(&hub, &db, EventFormat::Native).await;
    let mut http_config = config(None);
    http_config.cors_origins = vec!["http://ops.example".into()];
    let (server, addr) = http::start(
        &http_config,
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();
    assert_eq!(
        open(addr, "/ws", &[("origin", "http://evil.example")])
            .await
            .err(),
        Some(403)
    );
    let first = open(addr, "/ws", &[("origin", "http://ops.example")])
        .await
        .unwrap();
    wait_clients(&hub, 1).await;
    assert_eq!(open(addr, "/ws", &[]).await.err(), Some(503));
    assert_eq!(hub.refused(), 1);
    drop(first);
    wait_clients(&hub, 0).await;
    assert!(open(addr, "/ws", &[]).await.is_ok());
    server.stop(true).await;
    astha.stop().await.unwrap();
}

/// A WebSocket client that stops reading is dropped when its buffer fills, and its
/// connection is closed: its socket reaches end of stream or a reset soon after.
#[actix_rt::test]
async fn a_websocket_client_that_stops_reading_is_dropped_and_closed() {
    let db = TestDb::new();
    let hub = Arc::new(EventHub::new(4));
    let astha = started(&hub, &db, EventFormat::Native).await;
    let (server, addr) = http::start(
        &config(None),
        astha.stats(),
        astha.store().clone(),
        hub.clone(),
    )
    .unwrap();
    // A blocking client with a small receive buffer, so the server's writes stall soon;
    // it completes the handshake and then reads nothing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    let client = actix_rt::task::spawn_blocking(move || {
        let (client, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        client
    })
    .await
    .unwrap();
    wait_clients(&hub, 1).await;
    let writer = db.writer();
    let big = "x".repeat(64 * 1024);
    for _ in 0..200 {
        writer
            .execute("INSERT INTO a (v) VALUES (?1)", [&big])
            .unwrap();
        if hub.dropped() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..2000 {
        if hub.dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(hub.dropped(), 1, "the stalled client was dropped");
    wait_clients(&hub, 0).await;
    // The connection is gone: reading what was buffered ends in EOF or a reset, not a
    // wait for more.
    let ended = actix_rt::task::spawn_blocking(move || {
        let mut stream = client.into_inner();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = vec![0; 1 << 16];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    })
    .await
    .unwrap();
    assert!(ended, "the server closed the stalled client's connection");
    server.stop(true).await;
    astha.stop().await.unwrap();
}
