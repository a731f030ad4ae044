//! The optional HTTP endpoint: `/metrics` (Prometheus text), `/health` (per component),
//! and the live feed of changes (seed 003, docs/SEEDS.md) as Server-Sent Events
//! (`/events`) and over WebSocket (`/ws`).
//!
//! Promises: it binds to loopback unless told otherwise, and refuses a non-loopback
//! address without a bearer token unless [`HttpConfig::allow_anonymous`] says so. It only
//! reads Astha's counters and the log's two ends, on a read-only connection and a thread
//! of its own, and paces its answers, so no number of scrapers slows delivery. A slow
//! live client has a bounded buffer and is disconnected (its connection reset) when it
//! fills, and the number of live clients is capped.
//! [`start`] runs its own server; [`Endpoints::configure`] mounts the same endpoints in
//! a host's actix-web application; [`serve_live`] serves the live feed alone (the `sse`
//! and `websocket` sinks of `astha run`); [`start_metrics`] serves `/metrics` and
//! `/health` of several engines at once, each figure labelled with its `source` (`astha
//! run --http`).

mod auth;
mod events;
mod hub;
mod log_gauge;
mod metrics;
mod ws;

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use actix_web::middleware::Condition;
use actix_web::{web, App, HttpServer};

pub use events::RETRY_MS;
pub use hub::{EventHub, HubFull, SseComponent, DEFAULT_MAX_CLIENTS, KEEP_ALIVE};

use crate::stats::Stats;
use crate::store::Store;

/// HTTP endpoint settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to listen on (default 127.0.0.1:9187: loopback only).
    pub bind: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>` (`/events` and
    /// `/ws` also take `?token=`, for browsers).
    pub bearer_token: Option<String>,
    /// Serve a non-loopback address without a token. Off by default: the endpoint shows
    /// every captured change.
    pub allow_anonymous: bool,
    /// Origins whose pages may read the endpoints (CORS), e.g. `https://ops.example`;
    /// `*` allows any. None by default: browsers allow same-origin pages only.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9187)),
            bearer_token: None,
            allow_anonymous: false,
            cors_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// Refuses settings that would expose the endpoint unprotected by mistake.
    pub fn validate(&self) -> std::io::Result<()> {
        if self.bearer_token.as_deref() == Some("") {
            return Err(invalid("the HTTP bearer token is empty"));
        }
        for origin in self.cors_origins.iter().filter(|o| *o != "*") {
            let uri: actix_web::http::Uri = origin
                .parse()
                .map_err(|e| invalid(&format!("CORS origin {origin:?}: {e}")))?;
            if uri.scheme().is_none() || uri.host().is_none() || uri.path() != "/" {
                return Err(invalid(&format!(
                    "CORS origin {origin:?} is not scheme://host[:port]"
                )));
            }
        }
        if !self.bind.ip().is_loopback() && self.bearer_token.is_none() && !self.allow_anonymous {
            return Err(invalid(&format!(
                "refusing to serve {} without a bearer token: set one, or allow anonymous \
                 access explicitly",
                self.bind
            )));
        }
        Ok(())
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// One engine whose figures `/metrics` and `/health` report.
pub(crate) struct Watched {
    /// Its `source` label; `None` when the endpoint reports a single engine (`watch`, an
    /// embedding host), whose figures then carry no such label.
    pub label: Option<String>,
    pub stats: Arc<Stats>,
    pub log: log_gauge::LogGauge,
}

/// More figures for `/metrics`, from outside the engines (e.g. a pipeline's windows and
/// row filters): called once per scrape, its collector's families follow Astha's.
pub type MetricsExtra =
    Arc<dyn Fn() -> Box<dyn prometheus_client::collector::Collector> + Send + Sync>;

/// What the metrics handlers read.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub sources: Arc<[Watched]>,
    pub extra: Option<MetricsExtra>,
    pub hub: Arc<EventHub>,
    pub token: Option<auth::Token>,
    pub pacer: Arc<Pacer>,
}

/// What the live handlers (`/events`, `/ws`) read.
#[derive(Clone)]
pub(crate) struct LiveState {
    pub hub: Arc<EventHub>,
    pub token: Option<auth::Token>,
    /// The configured CORS origins, which `/ws` checks itself (browsers do not apply
    /// CORS to WebSockets).
    pub cors_origins: Arc<[String]>,
}

impl LiveState {
    fn new(config: &HttpConfig, hub: Arc<EventHub>) -> Self {
        Self {
            hub,
            token: config.bearer_token.as_deref().map(auth::Token::new),
            cors_origins: config.cors_origins.clone().into(),
        }
    }

    /// Mounts the endpoints of `protocols` (`/events`, `/ws`), each with CORS when
    /// origins are configured.
    fn configure(&self, cfg: &mut web::ServiceConfig, protocols: &[LiveProtocol]) {
        let resource = |path: &str| {
            web::resource(path)
                .app_data(web::Data::new(self.clone()))
                .wrap(Condition::new(
                    !self.cors_origins.is_empty(),
                    cors(&self.cors_origins),
                ))
        };
        for protocol in protocols {
            cfg.service(match protocol {
                LiveProtocol::Sse => resource("/events").route(web::get().to(events::events)),
                LiveProtocol::WebSocket => resource("/ws").route(web::get().to(ws::ws)),
            });
        }
    }
}

/// The protocols of the live feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveProtocol {
    /// Server-Sent Events, at `/events`.
    Sse,
    /// WebSocket, at `/ws`.
    WebSocket,
}

impl LiveProtocol {
    /// Both protocols.
    pub const ALL: [LiveProtocol; 2] = [LiveProtocol::Sse, LiveProtocol::WebSocket];

    /// The path it is served at.
    pub fn path(self) -> &'static str {
        match self {
            LiveProtocol::Sse => "/events",
            LiveProtocol::WebSocket => "/ws",
        }
    }
}

/// Most `/metrics` and `/health` answers per second, all clients together. The figures
/// change little within a second (the log's are at most a second old anyway), and
/// answering a flood of scrapers flat out took CPU from delivery on a 2-core machine
/// (BENCHMARKS.md).
pub const MAX_SCRAPES_PER_SECOND: u32 = 100;

/// Longest a request waits for its turn before it is answered 503 instead.
const MAX_SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// Spaces answers at least `1 / MAX_SCRAPES_PER_SECOND` apart: a request beyond the
/// rate waits (asleep, costing nothing) for its turn, so clients scraping back to back
/// get slower answers, not more CPU.
pub(crate) struct Pacer {
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new() -> Self {
        Self {
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's turn; false if that is more than [`MAX_SCRAPE_WAIT`]
    /// away (too many waiting).
    pub(crate) async fn turn(&self) -> bool {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = (*next).max(now);
            if slot - now > MAX_SCRAPE_WAIT {
                return false;
            }
            *next = slot + Duration::from_secs(1) / MAX_SCRAPES_PER_SECOND;
            slot
        };
        if slot > now {
            actix_rt::time::sleep_until(slot.into()).await;
        }
        true
    }
}

/// The endpoints, ready to mount in any actix-web application (clone it into the
/// `HttpServer` factory).
#[derive(Clone)]
pub struct Endpoints {
    state: HttpState,
    live: LiveState,
}

impl Endpoints {
    /// Validates `config` (its `bind` is only checked, not bound) and starts the metrics'
    /// read thread.
    pub fn new(
        config: &HttpConfig,
        stats: Arc<Stats>,
        store: &Store,
        hub: Arc<EventHub>,
    ) -> std::io::Result<Self> {
        Self::watching(config, vec![(None, stats, store)], hub)
    }

    /// Like [`Endpoints::new`], for several engines (one per source database, as `astha
    /// run` has): every figure of `/metrics` carries a `source` label with its engine's
    /// name, and `/health` lists each source and is healthy only when all of them are.
    pub fn for_sources(
        config: &HttpConfig,
        sources: Vec<(String, Arc<Stats>, &Store)>,
        hub: Arc<EventHub>,
    ) -> std::io::Result<Self> {
        let sources = sources
            .into_iter()
            .map(|(name, stats, store)| (Some(name), stats, store))
            .collect();
        Self::watching(config, sources, hub)
    }

    fn watching(
        config: &HttpConfig,
        sources: Vec<(Option<String>, Arc<Stats>, &Store)>,
        hub: Arc<EventHub>,
    ) -> std::io::Result<Self> {
        config.validate()?;
        let sources = sources
            .into_iter()
            .map(|(label, stats, store)| {
                let log = log_gauge::LogGauge::start(
                    store.path().to_path_buf(),
                    store.log_table().to_string(),
                )?;
                Ok(Watched { label, stats, log })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let live = LiveState::new(config, hub);
        Ok(Self {
            state: HttpState {
                sources: sources.into(),
                extra: None,
                hub: live.hub.clone(),
                token: live.token.clone(),
                pacer: Arc::new(Pacer::new()),
            },
            live,
        })
    }

    /// Adds `/metrics` and `/health` alone (no live feed) to an application.
    pub fn configure_metrics(&self, cfg: &mut web::ServiceConfig) {
        let origins = &self.live.cors_origins;
        let resource = |path: &str| {
            web::resource(path)
                .app_data(web::Data::new(self.state.clone()))
                .wrap(Condition::new(!origins.is_empty(), cors(origins)))
        };
        cfg.service(resource("/metrics").route(web::get().to(metrics::metrics)))
            .service(resource("/health").route(web::get().to(metrics::health)));
    }

    /// Adds `/metrics`, `/health`, `/events` and `/ws` to an application:
    /// `App::new().configure(|cfg| endpoints.configure(cfg))`. Install [`on_connect`] on
    /// the `HttpServer` too, or a live client that stops reading keeps its connection
    /// until the host closes it.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        // Middleware per resource, not a scope around them: a scope would shadow the
        // host's own routes.
        self.configure_metrics(cfg);
        self.live.configure(cfg, &LiveProtocol::ALL);
    }
}

/// Lets pages of the configured origins `GET` the endpoints with a bearer token;
/// `actix-cors` answers the preflight and sets `Vary: Origin`.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let cors = actix_cors::Cors::default()
        .allowed_methods(["GET"])
        .allowed_header(actix_web::http::header::AUTHORIZATION)
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
}

/// A connection's socket descriptor, recorded by [`on_connect`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnFd(i32);

/// For `HttpServer::on_connect`: records each connection's socket, so the SSE hub can
/// close the connection of a client it drops even when the client stopped reading.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnFd(tcp.as_raw_fd()));
    }
}

/// Starts the server on the current actix system; returns its handle (stop it with
/// `handle.stop(true)`) and the address it bound (useful with port 0).
pub fn start(
    config: &HttpConfig,
    stats: Arc<Stats>,
    store: Store,
    hub: Arc<EventHub>,
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let endpoints = Endpoints::new(config, stats, &store, hub)?;
    serve(config, move |cfg| endpoints.configure(cfg))
}

/// Starts a server of `/metrics` and `/health` alone for several engines (see
/// [`Endpoints::for_sources`]), with `extra`'s figures after Astha's, on the current actix
/// system; returns like [`start`].
pub fn start_metrics(
    config: &HttpConfig,
    sources: Vec<(String, Arc<Stats>, &Store)>,
    extra: Option<MetricsExtra>,
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let mut endpoints = Endpoints::for_sources(config, sources, Arc::new(EventHub::new(1)))?;
    endpoints.state.extra = extra;
    serve(config, move |cfg| endpoints.configure_metrics(cfg))
}

/// Starts a server of the live feed alone (the endpoints of `protocols`, fed by `hub`;
/// no metrics) on the current actix system, with `config`'s checks, token and CORS
/// origins; returns like [`start`].
pub fn serve_live(
    config: &HttpConfig,
    hub: Arc<EventHub>,
    protocols: &[LiveProtocol],
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    config.validate()?;
    let live = LiveState::new(config, hub);
    let protocols = protocols.to_vec();
    serve(config, move |cfg| live.configure(cfg, &protocols))
}

fn serve(
    config: &HttpConfig,
    configure: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .on_connect(on_connect)
        .disable_signals()
        // Live streams never end on their own; do not let them hold a shutdown for long.
        .shutdown_timeout(1)
        .bind(config.bind)?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%addr, auth = config.bearer_token.is_some(), "http endpoint listening");
    Ok((handle, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_pacer_spaces_answers_and_refuses_a_long_wait() {
        let pacer = Pacer::new();
        let start = Instant::now();
        for _ in 0..=10 {
            assert!(pacer.turn().await);
        }
        assert!(start.elapsed() >= Duration::from_secs(1) / MAX_SCRAPES_PER_SECOND * 10);
        *pacer.next.lock().unwrap() = Instant::now() + MAX_SCRAPE_WAIT * 2;
        let refused = Instant::now();
        assert!(!pacer.turn().await);
        assert!(
            refused.elapsed() < MAX_SCRAPE_WAIT,
            "a refusal does not wait"
        );
    }
}
