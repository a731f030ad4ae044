//! The optional HTTP endpoint: `/metrics` (Prometheus text), `/health` (per component)
//! and `/events` (Server-Sent Events of live changes, seed 003).
//!
//! It binds to localhost unless told otherwise and can require a bearer token. It only
//! reads Astha's counters and the database; a slow SSE client has a bounded buffer and
//! is disconnected when it fills, so no client can slow delivery to components.

mod auth;
mod events;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

pub use events::{EventHub, SseComponent};

use crate::stats::Stats;
use crate::store::Store;

/// HTTP endpoint settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to listen on (default 127.0.0.1:9187: loopback only).
    pub bind: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9187)),
            bearer_token: None,
        }
    }
}

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub stats: Arc<Stats>,
    pub store: Store,
    pub hub: Arc<EventHub>,
    pub token: Option<Arc<str>>,
}

/// Starts the server on the current actix system; returns its handle (stop it with
/// `handle.stop(true)`) and the address it bound (useful with port 0).
pub fn start(
    config: &HttpConfig,
    stats: Arc<Stats>,
    store: Store,
    hub: Arc<EventHub>,
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let state = HttpState {
        stats,
        store,
        hub,
        token: config.bearer_token.as_deref().map(Arc::from),
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/health", web::get().to(metrics::health))
            .route("/events", web::get().to(events::events))
    })
    .workers(1)
    .disable_signals()
    // SSE streams never end on their own; do not let them hold a shutdown for long.
    .shutdown_timeout(1)
    .bind(config.bind)?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%addr, auth = config.bearer_token.is_some(), "http endpoint listening");
    Ok((handle, addr))
}
