//! Transaction markers: the BEGIN and END events around a marked transaction's changes,
//! as Debezium writes them with `provide.transaction.metadata` (its transaction
//! metadata events), for one consumer.
//!
//! ```json
//! {"status": "BEGIN", "id": "3", "ts_ms": 1733500000000, "event_count": null, "data_collections": null}
//! {"status": "END", "id": "3", "ts_ms": 1733500000002, "event_count": 3,
//!  "data_collections": [{"data_collection": "shop.orders", "event_count": 2},
//!                       {"data_collection": "shop.items", "event_count": 1}]}
//! ```
//!
//! A consumer receives the changes of some tables ([`Markers::new`]). It gets BEGIN just
//! before the first change of a transaction among those tables, and END just after the
//! last; `event_count` and `data_collections` (`<db>.<table>`, in the order the tables
//! first appear) count the transaction's changes of those tables only: exactly the
//! change events it receives between the two markers. `id` is the `transaction.id` of
//! those changes; `ts_ms` the capture time of the change the marker stands next to (so
//! a marker delivered again is byte-identical). Where the counts come from:
//! [`crate::transaction`] reads them from the log, which holds every change of a
//! transaction from its commit on.
//!
//! It promises markers only where the boundary is exact: a change without a
//! `transaction` block (a writer that did not mark its transaction, a snapshot row, a
//! transaction whose first rows left the log) has none around it. It never writes:
//! the encoder places the markers ([`super::Encoder::markers`]).

use serde_json::{json, Value as Json};

use crate::change::{Change, TableInTransaction, TransactionPosition};

/// BEGIN or END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Before the transaction's first change (for this consumer).
    Begin,
    /// After its last change (for this consumer).
    End,
}

impl Status {
    /// `BEGIN` or `END`, as Debezium writes it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Begin => "BEGIN",
            Status::End => "END",
        }
    }
}

/// One marker, ready for any format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// BEGIN or END.
    pub status: Status,
    /// The transaction's id ([`TransactionPosition::id`]).
    pub id: i64,
    /// The capture time of the change next to it.
    pub ts_ms: i64,
    /// END only: the transaction's changes this consumer receives, per table.
    pub tables: Vec<(String, u64)>,
}

impl Marker {
    /// Debezium's transaction metadata value; `db` prefixes the tables
    /// (`data_collection` is `<db>.<table>`).
    pub fn to_json(&self, db: &str) -> Json {
        match self.status {
            Status::Begin => json!({
                "status": "BEGIN",
                "id": self.id.to_string(),
                "ts_ms": self.ts_ms,
                "event_count": null,
                "data_collections": null,
            }),
            Status::End => json!({
                "status": "END",
                "id": self.id.to_string(),
                "ts_ms": self.ts_ms,
                "event_count": self.tables.iter().map(|(_, n)| n).sum::<u64>(),
                "data_collections": self.tables.iter().map(|(table, n)| json!({
                    "data_collection": format!("{db}.{table}"),
                    "event_count": n,
                })).collect::<Vec<_>>(),
            }),
        }
    }
}

/// The markers around one change: `begin` goes before it, `end` after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Around {
    /// BEGIN, when the change opens its transaction for this consumer.
    pub begin: Option<Marker>,
    /// END, when the change closes it.
    pub end: Option<Marker>,
}

/// Which markers a consumer gets: it receives the changes of `tables` (every table when
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    tables: Option<Vec<String>>,
}

impl Markers {
    /// Markers for a consumer of the changes of `tables` (`None`: of every table).
    pub fn new(tables: Option<Vec<String>>) -> Markers {
        Markers { tables }
    }

    fn receives(&self, table: &str) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|list| list.iter().any(|t| t == table))
    }

    /// The transaction's tables this consumer receives.
    fn scope<'a>(
        &'a self,
        position: &'a TransactionPosition,
    ) -> impl Iterator<Item = &'a TableInTransaction> + 'a {
        position.tables.iter().filter(|t| self.receives(&t.table))
    }

    /// The markers around `change`; none for a change without a transaction position.
    pub fn around(&self, change: &Change) -> Around {
        let Some(position) = &change.transaction else {
            return Around::default();
        };
        if !self.receives(&change.table) {
            return Around::default();
        }
        let first = self.scope(position).map(|t| t.first).min();
        let last = self.scope(position).map(|t| t.last).max();
        let marker = |status, tables| Marker {
            status,
            id: position.id,
            ts_ms: change.timestamp_ms,
            tables,
        };
        Around {
            begin: (first == Some(position.total_order)).then(|| marker(Status::Begin, vec![])),
            end: (last == Some(position.total_order)).then(|| {
                let tables = self
                    .scope(position)
                    .map(|t| (t.table.to_string(), t.count))
                    .collect();
                marker(Status::End, tables)
            }),
        }
    }
}

/// The Kafka Connect schema of a marker, as Debezium names it
/// (`io.debezium.connector.common.TransactionMetadataValue`), for
/// `debezium_schemas`.
pub fn connect_schema() -> Json {
    json!({
        "type": "struct",
        "fields": [
            {"type": "string", "optional": false, "field": "status"},
            {"type": "string", "optional": false, "field": "id"},
            {"type": "int64", "optional": false, "field": "ts_ms"},
            {"type": "int64", "optional": true, "field": "event_count"},
            {"type": "array", "items": {"type": "struct", "fields": [
                {"type": "string", "optional": false, "field": "data_collection"},
                {"type": "int64", "optional": false, "field": "event_count"},
             ], "optional": false}, "optional": true, "field": "data_collections"},
        ],
        "optional": false,
        "name": "io.debezium.connector.common.TransactionMetadataValue",
        "version": 1,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::change::Operation;

    fn change(lsn: i64, table: &str, tables: &Arc<[TableInTransaction]>) -> Change {
        Change {
            lsn,
            timestamp_ms: 1000 + lsn,
            table: Arc::from(table),
            op: Operation::Insert,
            before: None,
            after: None,
            incomplete: None,
            snapshot: None,
            transaction: Some(TransactionPosition {
                id: 11,
                total_order: (lsn - 10) as u64,
                data_collection_order: 1,
                total: 3,
                tables: tables.clone(),
            }),
        }
    }

    #[test]
    fn a_consumer_of_some_tables_gets_markers_around_its_part() {
        // a, b, a at LSNs 11..=13.
        let tables: Arc<[TableInTransaction]> = vec![
            TableInTransaction {
                table: "a".into(),
                count: 2,
                first: 1,
                last: 3,
            },
            TableInTransaction {
                table: "b".into(),
                count: 1,
                first: 2,
                last: 2,
            },
        ]
        .into();
        let changes: Vec<Change> = [(11, "a"), (12, "b"), (13, "a")]
            .iter()
            .map(|(l, t)| change(*l, t, &tables))
            .collect();
        let all = Markers::new(None);
        let marks: Vec<(bool, bool)> = changes
            .iter()
            .map(|c| all.around(c))
            .map(|a| (a.begin.is_some(), a.end.is_some()))
            .collect();
        assert_eq!(marks, [(true, false), (false, false), (false, true)]);
        let end = all.around(&changes[2]).end.unwrap().to_json("shop");
        assert_eq!(
            end,
            json!({"status": "END", "id": "11", "ts_ms": 1013, "event_count": 3,
                   "data_collections": [{"data_collection": "shop.a", "event_count": 2},
                                        {"data_collection": "shop.b", "event_count": 1}]})
        );
        let only_b = Markers::new(Some(vec!["b".into()]));
        let around = only_b.around(&changes[1]);
        assert!(around.begin.is_some());
        assert_eq!(around.end.unwrap().tables, vec![("b".to_string(), 1)]);
        assert_eq!(only_b.around(&changes[0]), Around::default());
        let mut unmarked = changes[0].clone();
        unmarked.transaction = None;
        assert_eq!(all.around(&unmarked), Around::default());
    }
}
