//! Consistent bootstrap: a new slot receives the current rows of its tables, and the
//! position from which the log takes over, with no change missed or seen twice.
//!
//! The slot is created first (at the log head), so cleanup cannot remove anything the
//! snapshot will hand over to. Then one read transaction reads the log head and every
//! table: the rows are exactly the state after that LSN, and the slot is advanced to it.

use std::sync::Arc;

use rusqlite::Connection;

use crate::change::Row;
use crate::error::Result;
use crate::ident::quote_ident;
use crate::schema::{live_columns, TableSchema};
use crate::slots::{self, SlotStart};
use crate::value::Value;

/// Creates slot `slot` and streams the current rows of `tables` to `on_row`. Returns the
/// LSN the snapshot corresponds to; the slot is positioned there. If `on_row` fails the
/// slot is dropped again and the error returned.
pub fn bootstrap_slot(
    conn: &Connection,
    log_table: &str,
    slot: &str,
    tables: &[String],
    mut on_row: impl FnMut(&str, Row) -> Result<()>,
) -> Result<i64> {
    slots::create(conn, log_table, slot, SlotStart::Head)?;
    let mut snapshot = || -> Result<i64> {
        let tx = conn.unchecked_transaction()?;
        // The first read starts the transaction's snapshot; everything below sees it.
        let lsn = crate::log::head_lsn(&tx, log_table)?;
        for table in tables {
            let (columns, primary_key) = live_columns(&tx, table)?;
            let schema = Arc::new(TableSchema {
                id: 0,
                table: table.clone(),
                columns,
                primary_key,
                exact: Vec::new(),
            });
            let select = format!(
                "SELECT {} FROM {}",
                schema
                    .columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(","),
                quote_ident(table)
            );
            let mut stmt = tx.prepare(&select)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let values = (0..schema.columns.len())
                    .map(|i| r.get_ref(i).map(Value::from_ref))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                on_row(table, Row::new(schema.clone(), values)?)?;
            }
        }
        tx.finish()?;
        Ok(lsn)
    };
    match snapshot() {
        Ok(lsn) => {
            slots::advance(conn, slot, lsn)?;
            Ok(lsn)
        }
        Err(err) => {
            let _ = slots::drop_slot(conn, slot);
            Err(err)
        }
    }
}
