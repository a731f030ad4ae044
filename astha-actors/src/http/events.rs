//! `/events`: live changes as Server-Sent Events, filtered by `tables=` and
//! `operations=` (seed 003).
//!
//! [`SseComponent`] is an ordinary supervised component that hands each change to the
//! [`EventHub`]; the hub gives every client a bounded buffer and disconnects a client
//! whose buffer is full, so publishing never waits. SSE is a live view, not a durable
//! consumer: a client that reconnects gets changes from the moment it reconnects
//! (durable consumers use slots, e.g. the sinks).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use astha_core::{Change, Operation};
use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{auth, HttpState};
use crate::component::{Component, ComponentError};

struct Client {
    tables: Option<HashSet<String>>,
    operations: Option<HashSet<Operation>>,
    tx: mpsc::Sender<Bytes>,
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
}

/// Fan-out of changes to connected SSE clients.
pub struct EventHub {
    clients: Mutex<Vec<Client>>,
    buffer: usize,
    dropped: AtomicU64,
}

impl EventHub {
    /// A hub giving each client a buffer of `buffer` events.
    pub fn new(buffer: usize) -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            buffer: buffer.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Clients disconnected because their buffer filled.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn subscribe(
        &self,
        tables: Option<HashSet<String>>,
        operations: Option<HashSet<Operation>>,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(self.buffer);
        if let Ok(mut clients) = self.clients.lock() {
            clients.push(Client {
                tables,
                operations,
                tx,
            });
        }
        rx
    }

    /// Offers a change to every interested client, never waiting: a client whose buffer
    /// is full is disconnected.
    pub fn publish(&self, change: &Change) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        if clients.is_empty() {
            return;
        }
        let frame = Bytes::from(format!(
            "id: {}\nevent: change\ndata: {}\n\n",
            change.lsn,
            change.to_json()
        ));
        let before = clients.len();
        clients.retain(|client| {
            if !client.wants(change) {
                return !client.tx.is_closed();
            }
            match client.tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(lsn = change.lsn, "slow SSE client disconnected");
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if clients.len() != before {
            tracing::debug!(clients = clients.len(), "SSE clients changed");
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

pub(crate) async fn events(
    req: HttpRequest,
    query: web::Query<EventsQuery>,
    state: web::Data<HttpState>,
) -> HttpResponse {
    if let Some(denied) = auth::denied(&req, state.token.as_deref()) {
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
    let rx = state.hub.subscribe(tables, operations);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, actix_web::Error>(frame), rx))
    });
    HttpResponse::Ok()
        .insert_header(("Content-Type", "text/event-stream"))
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
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
        }
    }

    #[test]
    fn slow_clients_are_dropped_and_filters_apply() {
        let hub = EventHub::new(2);
        let mut slow = hub.subscribe(None, None);
        let mut filtered = hub.subscribe(
            Some(["a".to_string()].into_iter().collect()),
            Some([Operation::Insert].into_iter().collect()),
        );
        hub.publish(&change(1, "a", Operation::Insert));
        hub.publish(&change(2, "b", Operation::Insert));
        assert_eq!(hub.clients(), 2);
        // The unfiltered client's buffer (2) is full now: the next change drops it.
        hub.publish(&change(3, "a", Operation::Update));
        assert_eq!(hub.clients(), 1);
        assert_eq!(hub.dropped(), 1);
        let first = filtered.try_recv().unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .starts_with("id: 1\nevent: change\n"));
        assert!(
            filtered.try_recv().is_err(),
            "b and updates are filtered out"
        );
        assert!(slow.try_recv().is_ok() && slow.try_recv().is_ok());
        assert!(
            slow.try_recv().is_err(),
            "disconnected after its buffer filled"
        );
    }
}
