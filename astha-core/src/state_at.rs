//! A table's rows as of an earlier LSN, rebuilt from its current rows and the retained
//! change log (seed 003's `rebuild_state`, without a stored snapshot).
//!
//! In one read transaction: every change of the table after LSN `L` is read from the log
//! and undone with its exact images (an INSERT's row goes, a DELETE's before-image comes
//! back, an UPDATE's after-image is replaced by its before-image). Undoing is kept as a
//! count per distinct row (the bytes of its values, so `0.0` and `-0.0`, `1` and `1.0`
//! stay apart): `+1` for each before-image, `-1` for each after-image. The table's rows
//! are then streamed once: a row whose count is negative is dropped (and its count
//! raised), the others pass, and the rows left with a positive count are added. Memory is
//! one entry per distinct row the changes after `L` touched, not the table's size; a
//! table without a key (duplicate rows) is handled by the same counts.
//!
//! It promises an exact result or a result that says it is not exact: changes marked
//! incomplete ([`crate::gaps`]), log rows of the table that cannot be decoded, and
//! undos that find no matching row are counted in [`StateAt`]. It refuses a point the
//! log no longer holds back to ([`crate::retention`]), a point before the table's
//! capture began, and a range in which the table's columns changed.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{CoreError, Result};
use crate::ident::quote_ident;
use crate::log::{BatchLimits, LogReader};
use crate::value::Value;

/// What [`state_at`] found, besides the rows it emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateAt {
    pub table: String,
    /// The state is the one right after this LSN committed.
    pub lsn: i64,
    /// The table's columns (the order of each emitted row's values).
    pub columns: Vec<String>,
    /// Rows emitted.
    pub rows: u64,
    /// Changes of the table after `lsn` that were undone.
    pub undone: u64,
    /// Undone changes marked as possibly incomplete.
    pub incomplete: u64,
    /// Log rows of the table after `lsn` that could not be decoded (not undone).
    pub malformed: u64,
    /// Rows a change after `lsn` wrote that the table does not hold now (written with
    /// capture bypassed, or lost): each is one undo that could not be applied.
    pub unmatched: u64,
}

impl StateAt {
    /// True when nothing above makes the rows uncertain.
    pub fn exact(&self) -> bool {
        self.incomplete == 0 && self.malformed == 0 && self.unmatched == 0
    }
}

/// Rebuilds `table` as of `lsn` and hands each row (values in [`StateAt::columns`]
/// order) to `emit`: first the current rows still valid then, in table order, then the
/// rows that changed since, in no particular order.
pub fn state_at(
    conn: &Connection,
    log_table: &str,
    table: &str,
    lsn: i64,
    emit: &mut dyn FnMut(&[Value]) -> Result<()>,
) -> Result<StateAt> {
    let tx = conn.unchecked_transaction()?;
    // The first read fixes the snapshot everything below is read from.
    let head = crate::log::head_lsn(&tx, log_table)?;
    if lsn > head {
        return Err(CoreError::Invalid(format!(
            "LSN {lsn} is past the log's head ({head}): there is no state there yet"
        )));
    }
    crate::retention::check_from_lsn(&tx, log_table, lsn + 1)?;
    let (columns, _) = crate::schema::live_columns(&tx, table)?;
    check_captured_by(&tx, log_table, table, lsn)?;
    let mut found = StateAt {
        table: table.to_string(),
        lsn,
        columns: columns.clone(),
        ..StateAt::default()
    };
    let mut pending: HashMap<Vec<u8>, (i64, Vec<Value>)> = HashMap::new();
    let mut reader = LogReader::new(log_table);
    let tables = [table.to_string()];
    let mut after = lsn;
    loop {
        let batch = reader.read_in(&tx, after, BatchLimits::default(), Some(&tables))?;
        found.malformed += batch.malformed.len() as u64;
        for change in &batch.changes {
            if let Some(row) = change.row() {
                if row.columns() != columns.as_slice() {
                    return Err(CoreError::Invalid(format!(
                        "the columns of {table} changed after LSN {lsn} (change {} has {:?}, \
                         the table has {:?}); a state across a schema change is not rebuilt",
                        change.lsn,
                        row.columns(),
                        columns
                    )));
                }
            }
            found.undone += 1;
            found.incomplete += u64::from(change.incomplete.is_some());
            for (image, delta) in [(&change.before, 1), (&change.after, -1)] {
                if let Some(row) = image {
                    let entry = pending
                        .entry(row_key(row.values()))
                        .or_insert_with(|| (0, row.values().to_vec()));
                    entry.0 += delta;
                }
            }
        }
        if batch.scanned_to <= after {
            break;
        }
        after = batch.scanned_to;
    }
    pending.retain(|_, (count, _)| *count != 0);
    let list = columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = tx.prepare(&format!("SELECT {list} FROM {}", quote_ident(table)))?;
    let mut rows = stmt.query([])?;
    let mut values = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next()? {
        values.clear();
        for i in 0..columns.len() {
            values.push(Value::from_ref(row.get_ref(i)?));
        }
        if let Some((count, _)) = pending.get_mut(&row_key(&values)) {
            if *count < 0 {
                *count += 1;
                continue;
            }
        }
        emit(&values)?;
        found.rows += 1;
    }
    for (count, values) in pending.values() {
        if *count < 0 {
            found.unmatched += count.unsigned_abs();
        }
        for _ in 0..(*count).max(0) {
            emit(values)?;
            found.rows += 1;
        }
    }
    drop(rows);
    drop(stmt);
    tx.finish()?;
    Ok(found)
}

/// Refuses a table that is not captured now (writes since its capture was removed are
/// not logged) and a point before the table's capture began: its changes then were
/// never logged.
/// The first recorded schema of the table is the install; a point whose last log row was
/// written before it is before capture.
fn check_captured_by(conn: &Connection, log_table: &str, table: &str, lsn: i64) -> Result<()> {
    let since: Option<f64> = conn.query_row(
        "SELECT julianday(min(created_at)) FROM __astha_schemas WHERE tbl = ?1",
        [table],
        |r| r.get(0),
    )?;
    let captured = crate::capture::Capture::new(log_table).captured_tables(conn)?;
    let (Some(since), true) = (since, captured.iter().any(|t| t == table)) else {
        return Err(CoreError::Invalid(format!(
            "{table} is not captured (or its capture was removed, so its writes since are \
             not logged): there is no history to rebuild it from"
        )));
    };
    let at: Option<f64> = conn
        .query_row(
            &format!(
                "SELECT ts FROM {} WHERE id <= ?1 ORDER BY id DESC LIMIT 1",
                quote_ident(log_table)
            ),
            [lsn],
            |r| r.get(0),
        )
        .optional()?;
    // A rebuilt log starts with the state at its first row; before any row, nothing is
    // known about the time, and the retained check above already covers LSN 0.
    match at {
        Some(at) if at < since => Err(CoreError::Invalid(format!(
            "capture of {table} began after LSN {lsn} (at {}): its changes before were never \
             logged, so its state there cannot be rebuilt",
            crate::retention::format_time(crate::change::julian_to_unix_ms(since))
        ))),
        _ => Ok(()),
    }
}

/// The exact identity of a row: each value's storage class and bytes (a REAL by its bits).
fn row_key(values: &[Value]) -> Vec<u8> {
    let mut key = Vec::with_capacity(values.len() * 9);
    for value in values {
        match value {
            Value::Null => key.push(0),
            Value::Integer(i) => {
                key.push(1);
                key.extend_from_slice(&i.to_le_bytes());
            }
            Value::Real(r) => {
                key.push(2);
                key.extend_from_slice(&r.to_bits().to_le_bytes());
            }
            Value::Text(s) => bytes(&mut key, 3, s.as_bytes()),
            Value::TextBytes(b) => bytes(&mut key, 3, b),
            Value::Blob(b) => bytes(&mut key, 4, b),
        }
    }
    key
}

fn bytes(key: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    key.push(tag);
    key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    key.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_tell_every_storage_class_and_signed_zero_apart() {
        let keys: Vec<Vec<u8>> = [
            vec![Value::Null],
            vec![Value::Integer(0)],
            vec![Value::Real(0.0)],
            vec![Value::Real(-0.0)],
            vec![Value::Text(String::new())],
            vec![Value::Blob(Vec::new())],
            vec![Value::Text("a".into()), Value::Text("b".into())],
            vec![Value::Text("ab".into()), Value::Text(String::new())],
        ]
        .iter()
        .map(|v| row_key(v))
        .collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
