//! The live feed's fan-out: one [`EventHub`] hands every change to the SSE (`/events`)
//! and WebSocket (`/ws`) clients connected to it, each through a bounded buffer.
//!
//! [`SseComponent`] is an ordinary supervised component that encodes each change once (in
//! its [`Encoder`]'s format) and offers it to the hub; the hub never waits: a client
//! whose buffer is full is dropped and its connection closed at once (reset, its unsent
//! frames discarded), so a client that stopped reading holds neither a file descriptor
//! nor a connection. The hub admits at most `max_clients` clients of both kinds together
//! and refuses more with 503, so live clients cannot take the descriptors `/metrics`
//! needs.
//!
//! The feed is a live view, not a durable consumer: a client that reconnects gets
//! changes from the moment it reconnects (durable consumers use slots, e.g. the sinks),
//! and its component's slot is leased, not durable ([`Component::durable`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::web::Bytes;
use astha_core::format::Encoder;
use astha_core::{Change, Operation};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::component::{Component, ComponentError};

/// Clients a hub admits by default.
pub const DEFAULT_MAX_CLIENTS: usize = 100;

/// How often an idle stream gets a keep-alive (an SSE comment, a WebSocket ping).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How a client's frames are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `id:`/`event:`/`data:` lines of Server-Sent Events.
    Sse,
    /// One WebSocket text message per change: the encoded event alone.
    WebSocket,
}

/// What a client asked for: its tables and operations (`None`: all).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub tables: Option<HashSet<String>>,
    pub operations: Option<HashSet<Operation>>,
}

impl Filter {
    fn wants(&self, change: &Change) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|t| t.contains(&*change.table))
            && self
                .operations
                .as_ref()
                .is_none_or(|o| o.contains(&change.op))
    }
}

struct Client {
    id: u64,
    filter: Filter,
    framing: Framing,
    tx: mpsc::Sender<Bytes>,
    /// Dropped to end the client's stream with an error.
    _kill: oneshot::Sender<()>,
    /// The client's socket (a duplicate descriptor), to reset it when the client is
    /// dropped: a client that stopped reading never lets actix flush, so ending the
    /// stream alone would not close its connection.
    socket: Option<socket2::Socket>,
}

impl Client {
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

/// Fan-out of changes to connected SSE and WebSocket clients.
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
pub(crate) struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    pub rx: mpsc::Receiver<Bytes>,
    pub kill: oneshot::Receiver<()>,
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

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        filter: Filter,
        framing: Framing,
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
            filter,
            framing,
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

    /// Offers a change, as Astha's native JSON, to every interested client; see
    /// [`EventHub::publish_encoded`].
    pub fn publish(&self, change: &Change) {
        self.publish_with(change, || change.to_json().to_string());
    }

    /// Offers a change, written by `encoder`, to every interested client, never waiting:
    /// a client whose buffer is full is disconnected.
    pub fn publish_encoded(&self, change: &Change, encoder: &Encoder) {
        self.publish_with(change, || encoder.encode(change).to_string());
    }

    fn publish_with(&self, change: &Change, encode: impl FnOnce() -> String) {
        let mut clients = self.lock();
        if !clients.iter().any(|c| c.filter.wants(change)) {
            return;
        }
        // Encoded once, framed at most once per kind, shared by every client.
        let json = encode();
        let sse = Bytes::from(format!(
            "id: {}\nevent: change\ndata: {json}\n\n",
            change.lsn
        ));
        let ws = Bytes::from(json);
        let mut slow = Vec::new();
        let mut i = 0;
        while i < clients.len() {
            let client = &clients[i];
            let frame = match client.framing {
                Framing::Sse => &sse,
                Framing::WebSocket => &ws,
            };
            let keep = !client.filter.wants(change)
                || match client.tx.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(lsn = change.lsn, framing = ?client.framing, "slow live client disconnected");
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

/// The component that feeds a hub; subscribe it to the tables the live feed may show.
pub struct SseComponent {
    name: String,
    hub: Arc<EventHub>,
    tables: Vec<String>,
    encoder: Option<Encoder>,
}

impl SseComponent {
    /// A component named `sse` publishing `tables` to `hub` as native JSON.
    pub fn new(hub: Arc<EventHub>, tables: Vec<String>) -> Self {
        Self {
            name: "sse".into(),
            hub,
            tables,
            encoder: None,
        }
    }

    /// Names the component (and its slot) `name` instead of `sse`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Publishes events written by `encoder` (Debezium, CloudEvents) instead of native
    /// JSON.
    pub fn with_encoder(mut self, encoder: Encoder) -> Self {
        self.encoder = Some(encoder);
        self
    }
}

#[async_trait]
impl Component for SseComponent {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    /// A live view: nothing is owed to a client that was not connected, so the slot
    /// is leased and goes with the engine.
    fn durable(&self) -> bool {
        false
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        match &self.encoder {
            Some(encoder) => self.hub.publish_encoded(change, encoder),
            None => self.hub.publish(change),
        }
        Ok(())
    }
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
            after: Some(Row::new(schema, vec![Value::Integer(lsn)]).unwrap()),
            ..Change::bare(lsn, table, op)
        }
    }

    #[test]
    fn slow_clients_are_dropped_and_filters_apply() {
        let hub = Arc::new(EventHub::new(2));
        let mut slow = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
        let mut filtered = hub
            .subscribe(
                Filter {
                    tables: Some(["a".to_string()].into_iter().collect()),
                    operations: Some([Operation::Insert].into_iter().collect()),
                },
                Framing::Sse,
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
        let first = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
        let _second = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
        assert_eq!(
            hub.subscribe(Filter::default(), Framing::Sse, None).err(),
            Some(HubFull)
        );
        assert_eq!(hub.refused(), 1);
        drop(first);
        assert_eq!(
            hub.clients(),
            1,
            "a closed response frees its place at once"
        );
        assert!(hub.subscribe(Filter::default(), Framing::Sse, None).is_ok());
    }

    #[test]
    fn a_dropped_client_is_told_to_end_its_stream() {
        let hub = Arc::new(EventHub::new(1));
        let mut sub = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
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

    #[test]
    fn websocket_clients_get_the_bare_event_in_the_hubs_format() {
        use astha_core::format::{EventFormat, SourceInfo};
        let hub = Arc::new(EventHub::new(4));
        let mut sse = hub
            .subscribe(Filter::default(), Framing::Sse, None)
            .unwrap();
        let mut ws = hub
            .subscribe(Filter::default(), Framing::WebSocket, None)
            .unwrap();
        let encoder = Encoder::new(
            EventFormat::Debezium,
            SourceInfo {
                name: "app".into(),
                db: "app".into(),
                identity: "id".into(),
            },
        );
        let change = change(7, "a", Operation::Insert);
        hub.publish_encoded(&change, &encoder);
        let event = encoder.encode(&change).to_string();
        assert_eq!(ws.rx.try_recv().unwrap(), Bytes::from(event.clone()));
        assert_eq!(
            sse.rx.try_recv().unwrap(),
            Bytes::from(format!("id: 7\nevent: change\ndata: {event}\n\n"))
        );
        hub.publish(&change);
        assert_eq!(
            ws.rx.try_recv().unwrap(),
            Bytes::from(change.to_json().to_string()),
            "publish writes native JSON"
        );
    }
}
