//! A decoded change: what a consumer receives for one row of the change log.
//!
//! [`Change`] is the untyped form (column names and exact [`Value`]s);
//! [`Change::typed`] turns it into an [`Event<T>`] for a serde row struct, the Rust form
//! of seed 000's `Event[T]` (docs/SEEDS.md).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::gaps::Incomplete;
use crate::schema::TableSchema;
use crate::value::Value;

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    /// A row read by a snapshot ([`crate::snapshot`]): the row as it was at the
    /// snapshot's LSN, never written to the log.
    Read,
}

impl Operation {
    /// The one-letter code the triggers write into the log.
    pub fn code(self) -> &'static str {
        match self {
            Operation::Insert => "I",
            Operation::Update => "U",
            Operation::Delete => "D",
            Operation::Read => "R",
        }
    }

    /// Parses a log code (`I`, `U`, `D`) or a name (`insert`, `UPDATE`, ...).
    pub fn parse(text: &str) -> Option<Operation> {
        match text.to_ascii_uppercase().as_str() {
            "I" | "INSERT" => Some(Operation::Insert),
            "U" | "UPDATE" => Some(Operation::Update),
            "D" | "DELETE" => Some(Operation::Delete),
            "R" | "READ" => Some(Operation::Read),
            _ => None,
        }
    }

    /// `INSERT`, `UPDATE` or `DELETE`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Read => "READ",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row image: a value per column of the schema it was captured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    schema: Arc<TableSchema>,
    values: Vec<Value>,
}

impl Row {
    /// Pairs values with the schema they were captured under; lengths must match.
    pub fn new(schema: Arc<TableSchema>, values: Vec<Value>) -> Result<Row> {
        if schema.columns.len() != values.len() {
            return Err(CoreError::Invalid(format!(
                "image of {} has {} values for {} columns",
                schema.table,
                values.len(),
                schema.columns.len()
            )));
        }
        Ok(Row { schema, values })
    }

    /// The value of `column`, if the row has that column.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.schema.position(column).map(|i| &self.values[i])
    }

    /// Column names, in table order.
    pub fn columns(&self) -> &[String] {
        &self.schema.columns
    }

    /// Values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The schema this row was captured with.
    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// The row's primary-key values (or all values for a table without a declared key).
    pub fn key(&self) -> Vec<&Value> {
        if self.schema.primary_key.is_empty() {
            return self.values.iter().collect();
        }
        self.schema
            .primary_key
            .iter()
            .filter_map(|c| self.get(c))
            .collect()
    }

    /// `{column: value}` in the lossless JSON form of [`Value::to_json`].
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.columns()
            .iter()
            .zip(&self.values)
            .map(|(c, v)| (c.clone(), v.to_json()))
            .collect()
    }

    /// Decodes the row into a serde struct. BLOBs become byte arrays, so a `Vec<u8>`
    /// field receives the bytes; non-finite REALs become null. TEXT that is not valid
    /// UTF-8 becomes a byte array too: a `Vec<u8>` field receives it exactly, and a
    /// `String` field fails to decode rather than receive altered text.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .columns()
            .iter()
            .zip(&self.values)
            .map(|(c, v)| {
                let plain = match v {
                    Value::Blob(b) | Value::TextBytes(b) => serde_json::Value::from(b.clone()),
                    Value::Real(r) if !r.is_finite() => serde_json::Value::Null,
                    other => other.to_json(),
                };
                (c.clone(), plain)
            })
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| CoreError::Decode {
            table: self.schema.table.clone(),
            reason: e.to_string(),
        })
    }
}

/// One captured change, decoded from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Log sequence number: the log row's id, strictly increasing in commit order.
    pub lsn: i64,
    /// When the change was made, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The table that changed.
    pub table: Arc<str>,
    /// What happened.
    pub op: Operation,
    /// The row before the change (UPDATE, DELETE).
    pub before: Option<Row>,
    /// The row after the change (INSERT, UPDATE, READ).
    pub after: Option<Row>,
    /// Set when the change may be incomplete because another connection changed the
    /// table's schema before capture caught up ([`crate::gaps`]); `None` for a change
    /// proved complete.
    pub incomplete: Option<Arc<Incomplete>>,
    /// Set on the rows of a snapshot (op READ): where the row stands in it.
    pub snapshot: Option<SnapshotRead>,
    /// Set on changes of a marked transaction ([`crate::transaction`]): where the change
    /// stands in it. `None` means not known, never "alone in its transaction".
    pub transaction: Option<TransactionPosition>,
}

/// Where a change stands in its transaction: Debezium's `transaction` block, plus the
/// transaction's size and what it holds per table (shared by all its changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPosition {
    /// The transaction's id: the LSN of its first change.
    pub id: i64,
    /// 1-based position among the transaction's changes.
    pub total_order: u64,
    /// 1-based position among the transaction's changes of the same table.
    pub data_collection_order: u64,
    /// The transaction's changes in all: the change with `total_order == total` is its
    /// last (the END marker).
    pub total: u64,
    /// The transaction's changes per table, in the order each table first appears; read
    /// from the log, which holds all of them from the commit on. What the BEGIN and END
    /// markers of a consumer of some of the tables are made of
    /// ([`crate::format::markers`]).
    pub tables: Arc<[TableInTransaction]>,
}

/// One table's changes in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInTransaction {
    /// The table.
    pub table: Arc<str>,
    /// How many of the transaction's changes are of this table.
    pub count: u64,
    /// The `total_order` of its first change in the transaction.
    pub first: u64,
    /// The `total_order` of its last change in the transaction.
    pub last: u64,
}

impl TransactionPosition {
    /// The position as JSON, the same object in every format: `{"id": "<id>",
    /// "total_order", "data_collection_order", "total"}` (the id a string, as Debezium
    /// writes it and as the BEGIN and END markers carry it).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_string(),
            "total_order": self.total_order,
            "data_collection_order": self.data_collection_order,
            "total": self.total,
        })
    }
}

/// Where a snapshot row ([`Operation::Read`]) stands in its snapshot. Every row of a
/// snapshot carries the snapshot's LSN (the state it shows is the one after that LSN),
/// so `seq` is what tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRead {
    /// 1-based position of the row in the snapshot, over all its tables.
    pub seq: u64,
    /// The snapshot's last row (Debezium's `source.snapshot = "last"`).
    pub last: bool,
}

impl Change {
    /// A change with no images and no marks: what routing, naming and subject tests
    /// need, built in one place so a new field is added here only.
    pub fn bare(lsn: i64, table: &str, op: Operation) -> Change {
        Change {
            lsn,
            timestamp_ms: 0,
            table: Arc::from(table),
            op,
            before: None,
            after: None,
            incomplete: None,
            snapshot: None,
            transaction: None,
        }
    }

    /// The newest image: `after` for inserts and updates, `before` for deletes.
    pub fn row(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// The JSON line `astha watch` prints and sinks publish; `incomplete` is there only
    /// on a change that may be incomplete, `transaction` only on a change of a marked
    /// transaction ([`TransactionPosition::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "lsn": self.lsn,
            "timestamp_ms": self.timestamp_ms,
            "table": &*self.table,
            "op": self.op.name(),
            "before": self.before.as_ref().map(Row::to_json),
            "after": self.after.as_ref().map(Row::to_json),
        });
        if let Some(mark) = &self.incomplete {
            json["incomplete"] = mark.to_json();
        }
        if let Some(position) = &self.transaction {
            json["transaction"] = position.to_json();
        }
        json
    }

    /// Decodes both images into `T`.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<Event<T>> {
        Ok(Event {
            lsn: self.lsn,
            timestamp_ms: self.timestamp_ms,
            table: self.table.clone(),
            op: self.op,
            before: self.before.as_ref().map(Row::decode).transpose()?,
            after: self.after.as_ref().map(Row::decode).transpose()?,
        })
    }
}

/// A change with typed row images: seed 000's `Event[T]` (docs/SEEDS.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event<T> {
    pub lsn: i64,
    pub timestamp_ms: i64,
    pub table: Arc<str>,
    pub op: Operation,
    pub before: Option<T>,
    pub after: Option<T>,
}

impl<T> Event<T> {
    /// The newest image: `after` for inserts and updates, `before` for deletes.
    pub fn data(&self) -> Option<&T> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970): the
/// "now" that log ages and timestamps in Astha are measured against.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Converts SQLite's `julianday('now')` (what triggers store) to Unix milliseconds.
/// SQLite keeps time as whole milliseconds, so rounding recovers it exactly.
pub fn julian_to_unix_ms(julian: f64) -> i64 {
    ((julian - 2_440_587.5) * 86_400_000.0).round() as i64
}
