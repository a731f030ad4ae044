//! `/events`: live changes as Server-Sent Events, filtered by `tables=` and
//! `operations=` (seed 003, docs/SEEDS.md).
//!
//! [`SseComponent`] is an ordinary supervised component that hands each change to the
//! [`EventHub`]; the hub gives every client a bounded buffer and never waits: a client
//! whose buffer is full is dropped and its connection closed at once (reset, its
//! unsent frames discarded), so a client that stopped reading holds neither a file
//! descriptor nor a connection. The hub admits at most `max_clients` clients and
//! refuses more with 503, so SSE cannot take the descriptors `/metrics` needs.
//!
//! SSE is a live view, not a durable consumer: a client that reconnects gets changes
//! from the moment it reconnects (durable consumers use slots, e.g. the sinks). The
//! stream opens with a `retry:` hint for reconnecting clients and sends a comment line
//! every [`KEEP_ALIVE`] so proxies keep an idle stream open and a vanished client is
//! noticed.

use std::collections::HashSet;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use astha_core::{Change, Operation};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{auth, ConnFd, HttpState};
use crate::component::{Component, ComponentError};

/// Clients a hub admits by default.
pub const DEFAULT_MAX_CLIENTS: usize = 100;

/// How often an idle stream gets a comment line.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The reconnection delay suggested to clients (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 3000;

struct Client {
    id: u64,
    tables: Option<HashSet<String>>,
    operations: Option<HashSet<Operation>>,
    tx: mpsc::Sender<Bytes>,
    /// Dropped to end the client's stream with an error.
    _kill: oneshot::Sender<()>,
    /// The client's socket (a duplicate descriptor), to reset it when the client is
    /// dropped: a client that stopped reading never lets actix flush, so ending the
    /// stream alone would not close its connection.
    socket: Option<socket2::Socket>,
}

impl Client {
    fn wants(&self, change: &Change) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|t| t.contains(&*change.table))
            && self
                .operations
                .as_ref()
                .is_none_or(|o| o.contains(&change.op))
    }

    /// Resets the connection: linger 0 makes the close send RST and free the socket at
    /// once instead of waiting to deliver what is queued; shutdown wakes actix, whose
    /// next write fails, so it drops the connection and closes its descriptor.
    fn disconnect(self) {
        if let Some(socket) = &self.socket {
            let _ = socket.set_linger(Some(Duration::ZERO));
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Fan-out of changes to connected SSE clients.
pub struct EventHub {
    clients: Mutex<Vec<Client>>,
    buffer: usize,
    max_clients: usize,
    next_id: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
}

/// The hub admits no more clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubFull;

/// A client's end: its frames, the kill signal, and its place in the hub (left when
/// this is dropped, i.e. when actix drops the response).
struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    rx: mpsc::Receiver<Bytes>,
    kill: oneshot::Receiver<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().retain(|c| c.id != self.id);
    }
}

impl EventHub {
    /// A hub giving each client a buffer of `buffer` events, admitting
    /// [`DEFAULT_MAX_CLIENTS`].
    pub fn new(buffer: usize) -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            buffer: buffer.max(1),
            max_clients: DEFAULT_MAX_CLIENTS,
            next_id: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Admits at most `max` clients at once (each holds a connection and two file
    /// descriptors); more are refused with 503.
    pub fn with_max_clients(mut self, max: usize) -> Self {
        self.max_clients = max;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Client>> {
        // Nothing panics while holding the lock.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }

    /// Clients disconnected because their buffer filled.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Clients refused because `max_clients` were connected.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn subscribe(
        self: &Arc<Self>,
        tables: Option<HashSet<String>>,
        operations: Option<HashSet<Operation>>,
        socket: Option<socket2::Socket>,
    ) -> Result<Subscription, HubFull> {
        let mut clients = self.lock();
        if clients.len() >= self.max_clients {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(HubFull);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let (kill_tx, kill) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        clients.push(Client {
            id,
            tables,
            operations,
            tx,
            _kill: kill_tx,
            socket,
        });
        Ok(Subscription {
            hub: self.clone(),
            id,
            rx,
            kill,
        })
    }

    /// Offers a change to every interested client, never waiting: a client whose buffer
    /// is full is disconnected.
    pub fn publish(&self, change: &Change) {
        let mut clients = self.lock();
        if clients.is_empty() {
            return;
        }
        let frame = Bytes::from(format!(
            "id: {}\nevent: change\ndata: {}\n\n",
            change.lsn,
            change.to_json()
        ));
        let mut slow = Vec::new();
        let mut i = 0;
        while i < clients.len() {
            let client = &clients[i];
            let keep = !client.wants(change)
                || match client.tx.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(lsn = change.lsn, "slow SSE client disconnected");
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                };
            if keep {
                i += 1;
            } else {
                slow.push(clients.swap_remove(i));
            }
        }
        drop(clients);
        for client in slow {
            client.disconnect();
        }
    }
}

/// The component that feeds the hub; subscribe it to the tables SSE may show.
pub struct SseComponent {
    hub: Arc<EventHub>,
    tables: Vec<String>,
}

impl SseComponent {
    /// A component named `sse` publishing `tables` to `hub`.
    pub fn new(hub: Arc<EventHub>, tables: Vec<String>) -> Self {
        Self { hub, tables }
    }
}

#[async_trait]
impl Component for SseComponent {
    fn name(&self) -> &str {
        "sse"
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        self.hub.publish(change);
        Ok(())
    }
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    tables: Option<String>,
    operations: Option<String>,
    /// The bearer token, for browsers' `EventSource`, which cannot set headers.
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

pub(crate) async fn events(
    req: HttpRequest,
    query: web::Query<EventsQuery>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_ref(), query.token.as_deref()) {
        return denied;
    }
    let tables = split(&query.tables).map(|t| t.into_iter().collect());
    let operations = match split(&query.operations) {
        None => None,
        Some(names) => {
            let mut ops = HashSet::new();
            for name in names {
                match Operation::parse(&name) {
                    Some(op) => {
                        ops.insert(op);
                    }
                    None => {
                        return HttpResponse::BadRequest().body(format!(
                            "unknown operation {name:?}: use insert, update or delete\n"
                        ))
                    }
                }
            }
            Some(ops)
        }
    };
    let Ok(subscription) = state.hub.subscribe(tables, operations, socket_of(&req)) else {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", (RETRY_MS / 1000).to_string()))
            .force_close()
            .body("too many SSE clients\n");
    };
    HttpResponse::Ok()
        .insert_header(("Content-Type", "text/event-stream"))
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream(subscription))
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

#[cfg(test)]
mod tests {
    use super::*;
    use astha_core::schema::TableSchema;
    use astha_core::{Row, Value};

    fn change(lsn: i64, table: &str, op: Operation) -> Change {
        let schema = Arc::new(TableSchema {
            id: 1,
            table: table.into(),
            columns: vec!["id".into()],
            primary_key: vec!["id".into()],
            exact: Vec::new(),
        });
        Change {
            lsn,
            timestamp_ms: 0,
            table: Arc::from(table),
            op,
            before: None,
            after: Some(Row::new(schema, vec![Value::Integer(lsn)]).unwrap()),
            snapshot: None,
            transaction: None,
            incomplete: None,
        }
    }

    #[test]
    fn slow_clients_are_dropped_and_filters_apply() {
        let hub = Arc::new(EventHub::new(2));
        let mut slow = hub.subscribe(None, None, None).unwrap();
        let mut filtered = hub
            .subscribe(
                Some(["a".to_string()].into_iter().collect()),
                Some([Operation::Insert].into_iter().collect()),
                None,
            )
            .unwrap();
        hub.publish(&change(1, "a", Operation::Insert));
        hub.publish(&change(2, "b", Operation::Insert));
        assert_eq!(hub.clients(), 2);
        // The unfiltered client's buffer (2) is full now: the next change drops it.
        hub.publish(&change(3, "a", Operation::Update));
        assert_eq!(hub.clients(), 1);
        assert_eq!(hub.dropped(), 1);
        let first = filtered.rx.try_recv().unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .starts_with("id: 1\nevent: change\n"));
        assert!(
            filtered.rx.try_recv().is_err(),
            "b and updates are filtered out"
        );
        assert!(slow.rx.try_recv().is_ok() && slow.rx.try_recv().is_ok());
        assert!(
            slow.rx.try_recv().is_err(),
            "disconnected after its buffer filled"
        );
    }

    #[test]
    fn the_hub_caps_its_clients_and_a_client_leaves_when_its_response_ends() {
        let hub = Arc::new(EventHub::new(4).with_max_clients(2));
        let first = hub.subscribe(None, None, None).unwrap();
        let _second = hub.subscribe(None, None, None).unwrap();
        assert_eq!(hub.subscribe(None, None, None).err(), Some(HubFull));
        assert_eq!(hub.refused(), 1);
        drop(first);
        assert_eq!(
            hub.clients(),
            1,
            "a closed response frees its place at once"
        );
        assert!(hub.subscribe(None, None, None).is_ok());
    }

    #[test]
    fn a_dropped_client_is_told_to_end_its_stream() {
        let hub = Arc::new(EventHub::new(1));
        let mut sub = hub.subscribe(None, None, None).unwrap();
        hub.publish(&change(1, "a", Operation::Insert));
        assert!(sub.kill.try_recv().is_err(), "not yet dropped");
        hub.publish(&change(2, "a", Operation::Insert));
        assert_eq!(hub.dropped(), 1);
        assert_eq!(
            sub.kill.try_recv(),
            Err(oneshot::error::TryRecvError::Closed),
            "the stream ends with an error, not after its buffered frames"
        );
    }
}
