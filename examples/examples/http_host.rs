//! Mounting Astha's `/metrics`, `/health` and `/events` in a host's own actix-web
//! application, next to its routes, instead of a separate server.
//! Run: `cargo run -p astha-examples --example http_host`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use astha_actors::http::{self, Endpoints, EventHub, HttpConfig, SseComponent};
use astha_actors::Astha;
use astha_core::config::AsthaConfig;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    let writer = astha_core::db::open_writer(&db)?;
    writer.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")?;
    let config = AsthaConfig {
        database: db.clone(),
        monitored_tables: vec!["orders".into()],
        subscriptions: Default::default(),
        ..AsthaConfig::default()
    };
    // Inside an actix system, Astha's actors join it.
    let astha = Astha::new(config)?;
    astha.start()?;
    let hub = Arc::new(EventHub::new(256));
    astha
        .register_component(Box::new(SseComponent::new(
            hub.clone(),
            vec!["orders".into()],
        )))
        .await?;

    // The token and the checks are the same as for `http::start`; `bind` is only checked.
    let endpoints = Endpoints::new(
        &HttpConfig {
            bearer_token: Some("s3cret".into()),
            ..HttpConfig::default()
        },
        astha.stats(),
        astha.store(),
        hub,
    )?;
    let server = HttpServer::new(move || {
        let endpoints = endpoints.clone();
        App::new()
            .route(
                "/hello",
                web::get().to(|| async { "the host's own route\n" }),
            )
            .configure(move |cfg| endpoints.configure(cfg))
    })
    .workers(1)
    // Lets the SSE hub close the connection of a client it drops for being slow.
    .on_connect(http::on_connect)
    .bind("127.0.0.1:0")?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    writer.execute("INSERT INTO orders (total) VALUES (9.5)", [])?;
    // Give the change a moment to be delivered (a real host would not wait).
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let get = move |path: &'static str| {
        move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(addr)?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        }
    };
    let hello = web::block(get("/hello")).await??;
    let metrics = web::block(get("/metrics")).await??;
    println!("{}", hello.lines().last().unwrap_or(""));
    for line in metrics.lines().filter(|l| {
        l.starts_with("astha_component_delivered_total") || l.starts_with("astha_build_info")
    }) {
        println!("{line}");
    }
    handle.stop(true).await;
    astha.stop().await?;
    Ok(())
}
