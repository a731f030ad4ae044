//! `/events`: live changes as Server-Sent Events, filtered by `tables=` and
//! `operations=` (seed 003, docs/SEEDS.md); and the admission every live endpoint
//! (`/events`, `/ws`) shares: the token check, the filters, a place in the hub.
//!
//! The stream opens with a `retry:` hint for reconnecting clients and sends a comment
//! line every [`KEEP_ALIVE`] so proxies keep an idle stream open and a vanished client
//! is noticed. Fan-out, buffers and the slow-client policy are the hub's ([`super::hub`]).

use std::collections::HashSet;
use std::os::fd::{BorrowedFd, RawFd};

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use astha_core::Operation;
use futures::StreamExt;
use serde::Deserialize;

use super::hub::{Filter, Framing, Subscription, KEEP_ALIVE};
use super::{auth, ConnFd, LiveState};

/// The reconnection delay suggested to clients (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 3000;

#[derive(Deserialize)]
pub(crate) struct LiveQuery {
    tables: Option<String>,
    operations: Option<String>,
    /// The bearer token, for browsers' `EventSource` and `WebSocket`, which cannot set
    /// headers.
    token: Option<String>,
}

fn split(list: &Option<String>) -> Option<Vec<String>> {
    list.as_ref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// A duplicate of the request's socket descriptor, when the server recorded it
/// ([`super::on_connect`]).
fn socket_of(req: &HttpRequest) -> Option<socket2::Socket> {
    let ConnFd(fd) = *req.conn_data::<ConnFd>()?;
    // SAFETY: the descriptor is the connection's, open while its request is handled
    // (here); it is only borrowed to duplicate it.
    let fd: BorrowedFd<'_> = unsafe { BorrowedFd::borrow_raw(fd as RawFd) };
    socket2::SockRef::from(&fd).try_clone().ok()
}

/// Checks the token and the filters and takes a place in the hub for a client of
/// `framing`; the error is the response to send instead (401, 400 or 503).
pub(crate) fn admit(
    req: &HttpRequest,
    query: &LiveQuery,
    state: &LiveState,
    framing: Framing,
) -> Result<Subscription, Box<HttpResponse>> {
    if let Some(denied) = auth::denied(req, state.token.as_ref(), query.token.as_deref()) {
        return Err(Box::new(denied));
    }
    let tables = split(&query.tables).map(|t| t.into_iter().collect());
    let operations = match split(&query.operations) {
        None => None,
        Some(names) => {
            let mut ops = HashSet::new();
            for name in names {
                let Some(op) = Operation::parse(&name) else {
                    return Err(Box::new(HttpResponse::BadRequest().body(format!(
                        "unknown operation {name:?}: use insert, update or delete\n"
                    ))));
                };
                ops.insert(op);
            }
            Some(ops)
        }
    };
    let filter = Filter { tables, operations };
    state
        .hub
        .subscribe(filter, framing, socket_of(req))
        .map_err(|_| {
            Box::new(
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", (RETRY_MS / 1000).to_string()))
                    .force_close()
                    .body("too many live clients\n"),
            )
        })
}

pub(crate) async fn events(
    req: HttpRequest,
    query: web::Query<LiveQuery>,
    state: web::Data<LiveState>,
) -> HttpResponse {
    match admit(&req, &query, &state, Framing::Sse) {
        Ok(subscription) => HttpResponse::Ok()
            .insert_header(("Content-Type", "text/event-stream"))
            .insert_header(("Cache-Control", "no-cache"))
            .streaming(stream(subscription)),
        Err(response) => *response,
    }
}

/// The response body: the `retry:` hint, then frames and keep-alive comments, until the
/// hub drops the client (an error, so actix closes the connection rather than keeping
/// it alive for another request).
fn stream(
    subscription: Subscription,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> {
    let hello = Bytes::from(format!("retry: {RETRY_MS}\n: connected\n\n"));
    let keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    futures::stream::once(async move { Ok(hello) }).chain(futures::stream::unfold(
        Some((subscription, keep_alive)),
        |state| async move {
            let (mut sub, mut keep_alive) = state?;
            tokio::select! {
                biased;
                _ = &mut sub.kill => Some((
                    Err(actix_web::error::ErrorServiceUnavailable("SSE client too slow")),
                    None,
                )),
                frame = sub.rx.recv() => frame.map(|f| (Ok(f), Some((sub, keep_alive)))),
                _ = keep_alive.tick() => {
                    Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some((sub, keep_alive))))
                }
            }
        },
    ))
}
