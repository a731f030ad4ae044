//! Transaction boundaries, where they can be known exactly.
//!
//! SQLite tells a trigger nothing about the transaction it runs in: there is no
//! transaction id, and what is per connection (`changes()`, `last_insert_rowid()`, temp
//! tables, which a trigger of the main schema cannot even read) says nothing across
//! connections. What SQLite does guarantee is that one write transaction at a time
//! holds the database's write lock, from its first write to its commit: the log rows of
//! one transaction are contiguous in LSN, and nothing else commits in between.
//!
//! So a writer marks its transaction: it inserts a row into [`MARKER_TABLE`] first and
//! deletes it last, inside the transaction (the [`Writer::transaction`] API does it; the
//! same SQL is the documented convention for any other writer). Triggers on the marker
//! table record, in [`RECORD_TABLE`], the log head at the insert (`after_lsn`) and at the
//! delete (`last_lsn`): the log rows in `(after_lsn, last_lsn]` are exactly that
//! transaction's changes. A marker row left in place would make the boundary a lie, so
//! it references a row that never exists through a deferred foreign key: with
//! `PRAGMA foreign_keys = ON` (which [`Writer`] sets) a transaction that forgot the
//! delete cannot commit. A record without `last_lsn` (a writer that broke the
//! convention with foreign keys off) is ignored: its changes get no transaction.
//!
//! [`annotate`] gives each change read from the log its position in its transaction
//! (Debezium's `transaction` block: `id`, `total_order`, `data_collection_order`, and
//! the transaction's size, which tells a consumer when it has seen all of it) and the
//! transaction's changes per table ([`Summaries`], summed once per reader), from which
//! [`crate::format::markers`] makes the BEGIN and END markers of any consumer. Changes
//! of writers that do not mark their transactions carry none: Astha never invents a
//! boundary. It never writes outside the marker convention (and [`prune`], which the
//! janitor runs after log cleanup) and never moves a slot.

use std::sync::Arc;

use rusqlite::Connection;

use crate::change::{Change, TableInTransaction, TransactionPosition};
use crate::error::Result;
use crate::ident::quote_ident;

/// The table a writer inserts into at the start of a transaction and deletes from at its
/// end.
pub const MARKER_TABLE: &str = "__astha_tx";
/// One row per marked transaction: the log head at its start and at its end.
pub const RECORD_TABLE: &str = "__astha_transactions";

/// Creates the marker and record tables and the marker's triggers (idempotent).
pub fn install(conn: &Connection, log_table: &str) -> Result<()> {
    let log = quote_ident(log_table);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS __astha_tx_never (id INTEGER PRIMARY KEY);
         CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (
             id INTEGER PRIMARY KEY,
             open INTEGER NOT NULL DEFAULT 1
                 REFERENCES __astha_tx_never (id) DEFERRABLE INITIALLY DEFERRED
         );
         CREATE TABLE IF NOT EXISTS {RECORD_TABLE} (
             id INTEGER PRIMARY KEY,
             after_lsn INTEGER NOT NULL,
             last_lsn INTEGER
         );
         CREATE INDEX IF NOT EXISTS __astha_transactions_last ON {RECORD_TABLE} (last_lsn);
         CREATE TRIGGER IF NOT EXISTS __astha_tx_begin AFTER INSERT ON {MARKER_TABLE} BEGIN
             INSERT INTO {RECORD_TABLE} (after_lsn)
             VALUES ((SELECT coalesce(max(id), 0) FROM {log}));
         END;
         CREATE TRIGGER IF NOT EXISTS __astha_tx_end AFTER DELETE ON {MARKER_TABLE} BEGIN
             UPDATE {RECORD_TABLE} SET last_lsn = (SELECT coalesce(max(id), 0) FROM {log})
             WHERE id = (SELECT max(id) FROM {RECORD_TABLE});
         END;"
    ))?;
    Ok(())
}

/// A writer connection whose transactions are marked, so their changes carry exact
/// transaction boundaries.
pub struct Writer {
    conn: Connection,
}

impl Writer {
    /// Wraps `conn` (for example [`crate::db::open_writer`]) writing to a database whose
    /// change log is `log_table`; creates the marker tables if they are missing and turns
    /// foreign keys on, which makes a marked transaction that lost its end marker fail
    /// to commit.
    pub fn new(conn: Connection, log_table: &str) -> Result<Writer> {
        install(&conn, log_table)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(Writer { conn })
    }

    /// The connection, for writes outside marked transactions.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction between the start and end markers;
    /// commits if it succeeds, rolls back otherwise.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let marker: i64 = tx.query_row(
            &format!("INSERT INTO {MARKER_TABLE} DEFAULT VALUES RETURNING id"),
            [],
            |r| r.get(0),
        )?;
        let out = f(&tx)?;
        tx.execute(
            &format!("DELETE FROM {MARKER_TABLE} WHERE id = ?1"),
            [marker],
        )?;
        tx.commit()?;
        Ok(out)
    }
}

/// Forgets the records of transactions whose changes all left the log (cleanup only
/// removes rows every slot is past, so no reader needs them again), and of ended-less
/// ones that started before the oldest row. Returns how many went.
pub fn prune(conn: &Connection, log_table: &str) -> Result<usize> {
    Ok(conn.execute(
        &format!(
            "DELETE FROM {RECORD_TABLE}
             WHERE coalesce(last_lsn, after_lsn) < (SELECT min(id) FROM {})",
            quote_ident(log_table)
        ),
        [],
    )?)
}

/// What each transaction a reader met holds per table, so a transaction read in many
/// batches is summed once per reader, not once per batch. Bounded: only the
/// transactions the last batch touched are kept.
#[derive(Debug, Default)]
pub struct Summaries {
    /// `(after_lsn, its tables)`; `None` for a transaction whose first rows already left
    /// the log (nothing exact can be said of it any more). A row moved out of the log as
    /// undecodable (dead-lettered) is not counted once it is gone.
    known: Vec<(i64, Option<Arc<[TableInTransaction]>>)>,
}

impl Summaries {
    /// The tables of the transaction in `(after, end]`, summed from the log if not known.
    fn get(
        &mut self,
        conn: &Connection,
        log_table: &str,
        (after, end): (i64, i64),
    ) -> Result<Option<Arc<[TableInTransaction]>>> {
        if let Some((_, tables)) = self.known.iter().find(|(a, _)| *a == after) {
            return Ok(tables.clone());
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT tbl, count(*), min(id), max(id) FROM {}
             WHERE id > ?1 AND id <= ?2 GROUP BY tbl ORDER BY min(id)",
            quote_ident(log_table)
        ))?;
        let tables = stmt
            .query_map((after, end), |r| {
                Ok(TableInTransaction {
                    table: Arc::from(r.get::<_, String>(0)?),
                    count: r.get::<_, i64>(1)? as u64,
                    first: (r.get::<_, i64>(2)? - after) as u64,
                    last: (r.get::<_, i64>(3)? - after) as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Cleanup removes the oldest rows and keeps a transaction a slot is inside
        // ([`crate::slots::cleanup_upto`]); if its first rows are gone all the same (a
        // log cut by hand, a slot reset past them), its counts can no longer be exact.
        let oldest: Option<i64> = conn
            .prepare_cached(&format!("SELECT min(id) FROM {}", quote_ident(log_table)))?
            .query_row([], |r| r.get(0))?;
        let whole = oldest.is_some_and(|oldest| oldest <= after + 1);
        if !whole {
            tracing::warn!(
                transaction = after + 1,
                "the first changes of a marked transaction left the log before this read: \
                 its changes are delivered without transaction information"
            );
        }
        let tables: Option<Arc<[TableInTransaction]>> = whole.then(|| tables.into());
        self.known.push((after, tables.clone()));
        Ok(tables)
    }

    /// Forgets the transactions that are not among `spans` (those of the batch read).
    fn keep_from(&mut self, spans: &[(i64, i64)]) {
        self.known
            .retain(|(after, _)| spans.iter().any(|(a, _)| a == after));
    }
}

/// Gives each change of `changes` (in LSN order, from the log of `log_table`) its
/// position in its marked transaction, if it has one, with the transaction's changes
/// per table (from `known`, or summed from the log). A transaction whose first rows
/// already left the log gets none. Reads nothing when no writer ever marked a
/// transaction.
///
/// `recorded`: whether the transaction-record table exists (the caller knows it per
/// schema version); nothing is read when it does not.
pub fn annotate(
    recorded: bool,
    conn: &Connection,
    log_table: &str,
    changes: &mut [Change],
    known: &mut Summaries,
) -> Result<()> {
    let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
        return Ok(());
    };
    if !recorded {
        return Ok(());
    }
    let (first, last) = (first.lsn, last.lsn);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT after_lsn, last_lsn FROM {RECORD_TABLE}
         WHERE last_lsn >= ?1 AND after_lsn < ?2 AND last_lsn > after_lsn ORDER BY after_lsn"
    ))?;
    let spans = stmt
        .query_map((first, last), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    known.keep_from(&spans);
    if spans.is_empty() {
        return Ok(());
    }
    let mut count = conn.prepare_cached(&format!(
        "SELECT count(*) FROM {} WHERE id > ?1 AND id <= ?2 AND tbl = ?3",
        quote_ident(log_table)
    ))?;
    // Per (transaction, table): the last change seen and its order, so only the first
    // change of a table in a transaction costs a count.
    let mut seen: Vec<(i64, String, u64)> = Vec::new();
    let mut span = spans.iter().peekable();
    for change in changes.iter_mut() {
        while span.peek().is_some_and(|(_, end)| *end < change.lsn) {
            span.next();
        }
        let Some(&&(after, end)) = span.peek() else {
            break;
        };
        if change.lsn <= after {
            continue;
        }
        let Some(tables) = known.get(conn, log_table, (after, end))? else {
            continue;
        };
        let table = change.table.to_string();
        let order = match seen.iter_mut().find(|(a, t, _)| *a == after && *t == table) {
            Some(entry) => {
                entry.2 += 1;
                entry.2
            }
            None => {
                let n: i64 = count.query_row((after, change.lsn, &table), |r| r.get(0))?;
                seen.push((after, table, n as u64));
                n as u64
            }
        };
        change.transaction = Some(TransactionPosition {
            id: after + 1,
            total_order: (change.lsn - after) as u64,
            data_collection_order: order,
            total: (end - after) as u64,
            tables,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
