//! `/ws`: the live feed over WebSocket (seed 003's stream, docs/SEEDS.md), beside
//! `/events`: the same token (header or `?token=`, since a browser's `WebSocket` cannot
//! set headers either), filters, client cap, slow-client policy and format, one text
//! message per change holding the encoded event alone.
//!
//! Promises: a client the hub drops for being slow gets a close frame (1008, "too
//! slow") when its connection can still take one, and its connection is reset either
//! way; a client that pings gets a pong; an idle connection is pinged every
//! [`KEEP_ALIVE`]. Browsers do not apply CORS to WebSockets, so the `Origin` a browser
//! sends is checked here: a page of another origin than the server's own is refused
//! (403) unless it is one of the configured CORS origins. Messages from the client are
//! read (for pings and close) and otherwise ignored.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use bytestring::ByteString;

use super::events::{admit, LiveQuery};
use super::hub::{Framing, Subscription, KEEP_ALIVE};
use super::LiveState;

/// How long a close frame may take to leave before the connection is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) async fn ws(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<LiveQuery>,
    state: web::Data<LiveState>,
) -> HttpResponse {
    if !origin_allowed(&req, &state.cors_origins) {
        return HttpResponse::Forbidden().body("origin not allowed\n");
    }
    let subscription = match admit(&req, &query, &state, Framing::WebSocket) {
        Ok(subscription) => subscription,
        Err(response) => return *response,
    };
    match actix_ws::handle(&req, body) {
        Ok((response, session, messages)) => {
            actix_web::rt::spawn(forward(subscription, session, messages));
            response
        }
        // Not a WebSocket handshake: the subscription is dropped with this branch.
        Err(err) => err.as_response_error().error_response(),
    }
}

/// A request without `Origin` is not from a browser page; one with it must come from
/// the server's own origin or a configured one.
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == "*" || a == origin) {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    host.is_some() && authority == host
}

/// Moves the hub's frames to the socket until either side ends.
async fn forward(mut sub: Subscription, mut session: Session, mut messages: MessageStream) {
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let too_slow = || CloseReason {
        code: CloseCode::Policy,
        description: Some("too slow".into()),
    };
    let reason = loop {
        tokio::select! {
            biased;
            _ = &mut sub.kill => break Some(too_slow()),
            frame = sub.rx.recv() => {
                let Some(frame) = frame else { break None };
                // The hub's WebSocket frames are JSON documents, hence UTF-8.
                let Ok(text) = ByteString::try_from(frame) else { break None };
                // A client that stopped reading blocks this send; the hub then drops it
                // (kill) and resets the socket, which ends the send too.
                tokio::select! {
                    sent = session.text(text) => if sent.is_err() { return },
                    _ = &mut sub.kill => break Some(too_slow()),
                }
            }
            message = messages.recv() => match message {
                Some(Ok(Message::Ping(payload))) => {
                    if session.pong(&payload).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
            _ = keep_alive.tick() => {
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
        }
    };
    drop(sub);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(reason)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn browser_origins_are_checked() {
        let req = |origin: Option<&str>| {
            let mut req = TestRequest::default().insert_header((header::HOST, "127.0.0.1:9187"));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            req.to_http_request()
        };
        let allowed = ["https://ops.example".to_string()];
        assert!(origin_allowed(&req(None), &[]), "not a browser");
        assert!(origin_allowed(&req(Some("http://127.0.0.1:9187")), &[]));
        assert!(!origin_allowed(&req(Some("http://evil.example")), &[]));
        assert!(origin_allowed(&req(Some("https://ops.example")), &allowed));
        assert!(!origin_allowed(
            &req(Some("https://ops.example.evil")),
            &allowed
        ));
        assert!(origin_allowed(
            &req(Some("http://evil.example")),
            &["*".into()]
        ));
    }
}
