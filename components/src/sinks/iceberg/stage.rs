//! The mirror's staging queue (`commit_interval`): converted changes kept durably in the
//! catalog file until they are committed to Iceberg in fewer, larger commits.
//!
//! Owns the table `astha_mirror_staged` (per namespace, table and sequence number, one
//! converted change: the key it removes, the key it writes and the row, or a delete) and
//! two promises. Staging a delivery's changes and moving its tables' markers is one SQLite
//! transaction, so once the sink confirms a delivery its changes are either staged or in
//! Iceberg, whatever a kill -9 picks; the marker then skips them when the slot (which may
//! lag) delivers them again. Unstaging is done by the commit that publishes them, inside its
//! catalog swap's transaction (`unstage`), so a staged change is committed exactly once.
//! Never touches Iceberg files; never reads more than one table's staged changes at a time.

use rusqlite::{params, Connection};
use serde_json::Value as Json;

use super::RowOp;

/// Creates the staging table if missing.
pub(super) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS astha_mirror_staged (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             namespace TEXT NOT NULL, table_name TEXT NOT NULL, lsn INTEGER NOT NULL,
             old_key TEXT, row_key TEXT NOT NULL, row_json TEXT);
         CREATE INDEX IF NOT EXISTS astha_mirror_staged_by_table
             ON astha_mirror_staged (namespace, table_name, seq);",
    )
}

/// Per table of `namespace`, how many changes are staged.
pub(super) fn counts(conn: &Connection, namespace: &str) -> rusqlite::Result<Vec<(String, usize)>> {
    conn.prepare(
        "SELECT table_name, count(*) FROM astha_mirror_staged WHERE namespace = ?1
         GROUP BY table_name",
    )?
    .query_map([namespace], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as usize))
    })?
    .collect()
}

/// Stages `ops` of each table and moves its marker, all in one transaction.
pub(super) fn stage(
    conn: &Connection,
    source: &str,
    namespace: &str,
    tables: &[(String, i64, Vec<RowOp>)],
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO astha_mirror_staged (namespace, table_name, lsn, old_key, row_key, row_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (table, lsn, ops) in tables {
            for op in ops {
                match op {
                    RowOp::Upsert { old_key, key, row } => put.execute(params![
                        namespace,
                        table,
                        lsn,
                        old_key,
                        key,
                        Json::Array(row.clone()).to_string()
                    ])?,
                    RowOp::Delete { key } => put.execute(params![
                        namespace,
                        table,
                        lsn,
                        None::<String>,
                        key,
                        None::<String>
                    ])?,
                };
            }
            super::write_marker(&tx, source, namespace, table, *lsn)?;
        }
    }
    tx.commit()
}

/// The staged changes of one table in order, with the last sequence number (for
/// [`unstage`]); `None` when nothing is staged.
pub(super) fn load(
    conn: &Connection,
    namespace: &str,
    table: &str,
) -> rusqlite::Result<Option<(i64, Vec<RowOp>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, old_key, row_key, row_json FROM astha_mirror_staged
         WHERE namespace = ?1 AND table_name = ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![namespace, table])?;
    let mut last = None;
    let mut ops = Vec::new();
    while let Some(r) = rows.next()? {
        last = Some(r.get::<_, i64>(0)?);
        let key: String = r.get(2)?;
        ops.push(match r.get::<_, Option<String>>(3)? {
            None => RowOp::Delete { key },
            Some(text) => {
                let row = match serde_json::from_str(&text) {
                    Ok(Json::Array(values)) => values,
                    _ => {
                        return Err(rusqlite::Error::InvalidColumnType(
                            3,
                            "row_json".into(),
                            rusqlite::types::Type::Text,
                        ))
                    }
                };
                RowOp::Upsert {
                    old_key: r.get(1)?,
                    key,
                    row,
                }
            }
        });
    }
    Ok(last.map(|seq| (seq, ops)))
}

/// Removes the staged changes of one table up to `seq` (in the commit's swap transaction).
pub(super) fn unstage(
    conn: &Connection,
    namespace: &str,
    table: &str,
    seq: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM astha_mirror_staged WHERE namespace = ?1 AND table_name = ?2 AND seq <= ?3",
    )?
    .execute(params![namespace, table, seq])?;
    Ok(())
}
