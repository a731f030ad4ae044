//! The `sse` and `websocket` sinks: the live feed of `astha run`, served over HTTP
//! (`/events` as Server-Sent Events, `/ws` as WebSocket) by [`astha_actors::http`].
//!
//! One server per sink, whatever the number of sources it takes: the first source's
//! `build` starts it on the pipeline's actix system and every source's component
//! publishes to its hub, each in the sink's format naming its own source. The server
//! keeps the HTTP endpoint's promises (token, CORS, client cap, slow clients reset,
//! keep-alives); it serves no metrics. Like `watch --http`, it is a live view, not a
//! durable consumer: a client gets the changes committed while it is connected, and the
//! sink's slot is not durable. It never reads the token from anywhere but its settings
//! (`token = "${VAR}"` keeps it out of the file) or `token_file`.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use astha_actors::http::{self, EventHub, HttpConfig, LiveProtocol, SseComponent};
use astha_actors::Component;
use serde::Deserialize;

use super::registry::{SinkConfig, SinkContext};

/// Which endpoint a live sink type serves.
pub trait Protocol: fmt::Debug + Send + Sync + 'static {
    /// The type's name in `type = "..."`.
    const TYPE: &'static str;
    /// One line for `astha run --list-sinks`.
    const ABOUT: &'static str;
    /// What is served.
    const PROTOCOL: LiveProtocol;
}

/// `type = "sse"`: Server-Sent Events at `/events`.
#[derive(Debug)]
pub struct Sse;

impl Protocol for Sse {
    const TYPE: &'static str = "sse";
    const ABOUT: &'static str = "serves changes live as Server-Sent Events at /events";
    const PROTOCOL: LiveProtocol = LiveProtocol::Sse;
}

/// `type = "websocket"`: one WebSocket text message per change at `/ws`.
#[derive(Debug)]
pub struct WebSocket;

impl Protocol for WebSocket {
    const TYPE: &'static str = "websocket";
    const ABOUT: &'static str = "serves changes live over WebSocket at /ws";
    const PROTOCOL: LiveProtocol = LiveProtocol::WebSocket;
}

/// Settings of the `sse` sink.
pub type SseSinkConfig = LiveSinkConfig<Sse>;
/// Settings of the `websocket` sink.
pub type WebSocketSinkConfig = LiveSinkConfig<WebSocket>;

/// Settings of a live sink (`sse`, `websocket`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct LiveSinkConfig<P: Protocol> {
    /// Address to serve on, e.g. `127.0.0.1:9188` (port 0 picks one; the address is
    /// logged).
    pub bind: SocketAddr,
    /// Every client must send this token (`Authorization: Bearer`, or `?token=` from a
    /// browser). Use `token = "${VAR}"` to keep it out of the file.
    #[serde(default)]
    pub token: Option<String>,
    /// Read the token from this file (its first line) instead.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Serve a non-loopback address without a token (refused otherwise).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Origins whose pages may read the feed (CORS; `*` for any). None by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Most clients at once; more are refused with 503.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Changes buffered per client; a client that falls this far behind is disconnected.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// The server, once the first source built it; every source publishes to its hub.
    #[serde(skip)]
    hub: Mutex<Option<Arc<EventHub>>>,
    #[serde(skip)]
    protocol: PhantomData<P>,
}

fn default_max_clients() -> usize {
    http::DEFAULT_MAX_CLIENTS
}

fn default_buffer() -> usize {
    1024
}

impl<P: Protocol> fmt::Debug for LiveSinkConfig<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(P::TYPE)
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_file", &self.token_file)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("cors_origins", &self.cors_origins)
            .field("max_clients", &self.max_clients)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl<P: Protocol> LiveSinkConfig<P> {
    /// The HTTP settings, reading `token_file` when set.
    fn http_config(&self) -> Result<HttpConfig, String> {
        let token = match &self.token_file {
            None => self.token.clone(),
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("token_file {}: {e}", file.display()))?;
                let token = text.lines().next().unwrap_or("").trim();
                if token.is_empty() {
                    return Err(format!("token_file {} holds no token", file.display()));
                }
                Some(token.to_string())
            }
        };
        Ok(HttpConfig {
            bind: self.bind,
            bearer_token: token,
            allow_anonymous: self.allow_anonymous,
            cors_origins: self.cors_origins.clone(),
        })
    }
}

impl<P: Protocol> SinkConfig for LiveSinkConfig<P> {
    const TYPE: &'static str = P::TYPE;
    const ABOUT: &'static str = P::ABOUT;

    fn validate(&self, ctx: &SinkContext) -> Result<(), String> {
        if self.token.is_some() && self.token_file.is_some() {
            return Err("set token or token_file, not both".into());
        }
        if self.max_clients == 0 || self.buffer == 0 {
            return Err("max_clients and buffer must be > 0".into());
        }
        if ctx.tables.is_empty() {
            return Err("no tables".into());
        }
        self.http_config()?.validate().map_err(|e| e.to_string())
    }

    fn build(&self, ctx: &SinkContext) -> Result<Box<dyn Component>, String> {
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        let hub = match &*hub {
            Some(hub) => hub.clone(),
            None => {
                let config = self.http_config()?;
                let new = Arc::new(EventHub::new(self.buffer).with_max_clients(self.max_clients));
                let (_server, addr) = http::serve_live(&config, new.clone(), &[P::PROTOCOL])
                    .map_err(|e| format!("cannot serve {}: {e}", self.bind))?;
                tracing::info!(
                    sink = %ctx.name,
                    url = %format!("http://{addr}{}", P::PROTOCOL.path()),
                    "live sink serving"
                );
                hub.insert(new).clone()
            }
        };
        Ok(Box::new(
            SseComponent::new(hub, ctx.tables.clone())
                .named(ctx.name.clone())
                .with_encoder(ctx.encoder()?),
        ))
    }
}
