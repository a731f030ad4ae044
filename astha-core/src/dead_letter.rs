//! Dead letters: changes a consumer could not handle, kept with the reason, the number
//! of attempts and a full copy of the log row, so they survive log cleanup and can be
//! replayed. Rows that no consumer can decode are kept here under the consumer `*`.
//! Nothing is ever dropped silently: a change leaves the log for a consumer only by being
//! delivered or by landing here.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::error::Result;
use crate::ident::quote_ident;
use crate::image;
use crate::log::{trimmed_values, RawChange};
use crate::log_layout::{self, dead_letter as col, DEAD_LETTER_COLUMNS};

/// The dead-letter table.
pub const TABLE: &str = "__astha_dead_letters";

/// The consumer name under which undecodable log rows are kept.
pub const ANY_CONSUMER: &str = "*";

/// A dead-letter row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub lsn: i64,
    pub table: String,
    pub op: String,
    pub reason: String,
    pub attempts: i64,
    pub retriable: bool,
    pub created_at: String,
    pub replayed_at: Option<String>,
    #[serde(skip)]
    pub raw: RawChange,
}

/// Creates the dead-letter table if it is missing. Its value columns (`v0`, ...) are
/// added alongside the log's, so a dead letter is a full copy of its log row.
pub fn ensure_table(conn: &Connection) -> Result<()> {
    let columns = log_layout::definitions(&DEAD_LETTER_COLUMNS);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} ({columns}, UNIQUE (consumer, lsn));"
    ))?;
    Ok(())
}

/// What went wrong for one consumer and one change.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub consumer: &'a str,
    pub reason: &'a str,
    pub attempts: u32,
    pub retriable: bool,
}

/// Records that `failure.consumer` gave up on the log row `lsn`, copying the row.
/// Recording the same consumer and LSN twice keeps the first record.
/// The values of a change of a wide table are in the log's wide table
/// ([`crate::log_layout::wide_table`]): the copy takes each value from whichever of the
/// two holds it ([`crate::log::merge_values`]).
pub fn record(conn: &Connection, log_table: &str, lsn: i64, failure: &Failure<'_>) -> Result<bool> {
    let narrow = image::value_columns(conn, log_table)?;
    let wide_table = log_layout::wide_table(log_table);
    let wide = match crate::schema::is_plain_table(conn, &wide_table)? {
        true => image::value_columns(conn, &wide_table)?,
        false => 0,
    };
    let width = narrow.max(wide);
    image::widen(conn, TABLE, width)?;
    let values = image::value_list(width);
    let sources = (0..width)
        .map(|i| {
            let v = image::value_column(i);
            match (i < narrow, i < wide) {
                (true, true) => format!("coalesce(l.{v}, w.{v})"),
                (true, false) => format!("l.{v}"),
                _ => format!("w.{v}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let join = match wide > 0 {
        true => format!(
            " LEFT JOIN {} AS w ON w.id = l.id",
            quote_ident(&wide_table)
        ),
        false => String::new(),
    };
    let sql = format!(
        "INSERT INTO {TABLE}
            (consumer, lsn, ts, tbl, op, schema_id, reason, attempts, retriable{comma}{values})
         SELECT ?1, l.id, l.ts, l.tbl, l.op, l.schema_id, ?3, ?4, ?5{comma}{sources}
         FROM {} AS l{join}
         WHERE l.id = ?2
         ON CONFLICT (consumer, lsn) DO NOTHING",
        quote_ident(log_table),
        comma = if width > 0 { ", " } else { "" },
    );
    let n = conn.execute(
        &sql,
        (
            failure.consumer,
            lsn,
            failure.reason,
            failure.attempts,
            failure.retriable,
        ),
    )?;
    Ok(n > 0)
}

/// Moves undecodable log rows out of the log into dead letters (consumer `*`), in one
/// transaction. They cannot block or be delivered to anyone, and are not lost. The
/// newest row of the log is copied but stays (cleanup removes it later, like any row
/// every slot is past): SQLite numbers a new row `max(id) + 1`, so deleting the newest
/// would give its LSN to the next change, which readers already past it would miss.
/// Returns the number of rows removed from the log.
pub fn quarantine(conn: &Connection, log_table: &str, rows: &[(i64, String)]) -> Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let log = quote_ident(log_table);
    let delete = format!("DELETE FROM {log} WHERE id = ?1 AND id < (SELECT max(id) FROM {log})");
    let wide_table = log_layout::wide_table(log_table);
    let delete_wide = crate::schema::is_plain_table(&tx, &wide_table)?.then(|| {
        format!(
            "DELETE FROM {} WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM {log} WHERE id = ?1)",
            quote_ident(&wide_table)
        )
    });
    let mut moved = 0;
    for (lsn, reason) in rows {
        let failure = Failure {
            consumer: ANY_CONSUMER,
            reason,
            attempts: 0,
            retriable: false,
        };
        record(&tx, log_table, *lsn, &failure)?;
        moved += tx.execute(&delete, [lsn])?;
        if let Some(delete_wide) = &delete_wide {
            tx.execute(delete_wide, [lsn])?;
        }
    }
    tx.commit()?;
    Ok(moved)
}

/// Dead letters of `consumer` (all consumers when `None`), oldest first.
pub fn list(
    conn: &Connection,
    consumer: Option<&str>,
    include_replayed: bool,
) -> Result<Vec<DeadLetter>> {
    let width = image::value_columns(conn, TABLE)?;
    let sql = format!(
        "SELECT {}{}{}
         FROM {TABLE}
         WHERE (?1 IS NULL OR consumer = ?1) AND (?2 OR replayed_at IS NULL)
         ORDER BY consumer, lsn",
        log_layout::names(&DEAD_LETTER_COLUMNS),
        if width > 0 { ", " } else { "" },
        image::value_list(width),
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map((consumer, include_replayed), |r| {
            // Quarantined rows may hold any storage class: read them leniently.
            let raw = RawChange {
                lsn: r.get(col::LSN)?,
                julian: lenient_f64(r.get_ref(col::TS)?),
                table: lenient_text(r.get_ref(col::TBL)?)
                    .unwrap_or_default()
                    .into(),
                op: lenient_text(r.get_ref(col::OP)?).unwrap_or_default().into(),
                schema_id: match r.get_ref(col::SCHEMA_ID)? {
                    rusqlite::types::ValueRef::Integer(i) => i,
                    _ => 0,
                },
                values: trimmed_values(r, col::FIRST_VALUE)?,
                defect: None,
            };
            Ok(DeadLetter {
                id: r.get(col::ID)?,
                consumer: r.get(col::CONSUMER)?,
                lsn: raw.lsn,
                table: raw.table.to_string(),
                op: raw.op.to_string(),
                reason: r.get(col::REASON)?,
                attempts: r.get(col::ATTEMPTS)?,
                retriable: r.get(col::RETRIABLE)?,
                created_at: r.get(col::CREATED_AT)?,
                replayed_at: r.get(col::REPLAYED_AT)?,
                raw,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn lenient_text(v: rusqlite::types::ValueRef<'_>) -> Option<String> {
    match crate::Value::from_ref(v) {
        crate::Value::Null => None,
        crate::Value::Text(t) => Some(t),
        crate::Value::TextBytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        crate::Value::Integer(i) => Some(i.to_string()),
        crate::Value::Real(f) => Some(f.to_string()),
        crate::Value::Blob(b) => Some(format!("X'{}'", crate::value::hex_upper(&b))),
    }
}

fn lenient_f64(v: rusqlite::types::ValueRef<'_>) -> f64 {
    match v {
        rusqlite::types::ValueRef::Real(f) => f,
        rusqlite::types::ValueRef::Integer(i) => i as f64,
        _ => 0.0,
    }
}

/// Marks a dead letter replayed (it stays in the table as a record).
pub fn mark_replayed(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE __astha_dead_letters SET replayed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE id = ?1 AND replayed_at IS NULL",
        [id],
    )? > 0)
}

/// Number of dead letters not yet replayed, per consumer.
pub fn pending_counts(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE name = '__astha_dead_letters'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT consumer, count(*) FROM __astha_dead_letters WHERE replayed_at IS NULL
         GROUP BY consumer ORDER BY consumer",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Puts a dead letter back into the change log as a new change (a new LSN) and marks it
/// replayed, in one transaction. The change is then delivered again to every component
/// subscribed to its table: delivery is at-least-once, so components already accept a
/// change twice. Undecodable rows (consumer `*`) are refused: they would fail again.
/// Returns the new LSN.
pub fn replay(conn: &Connection, log_table: &str, id: i64) -> Result<i64> {
    let tx = conn.unchecked_transaction()?;
    let consumer: Option<String> = tx
        .query_row(
            "SELECT consumer FROM __astha_dead_letters WHERE id = ?1 AND replayed_at IS NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match consumer.as_deref() {
        None => {
            return Err(crate::error::CoreError::Invalid(format!(
                "no dead letter {id} waiting for replay"
            )))
        }
        Some(ANY_CONSUMER) => {
            return Err(crate::error::CoreError::Invalid(format!(
                "dead letter {id} is a log row no consumer can decode; fix or delete it, replay would fail again"
            )))
        }
        Some(_) => {}
    }
    // The values the log has columns for go into the log row, the rest into a wide row
    // under the same id ([`crate::log::merge_values`] reads them back), so a replay
    // never widens the log (docs/DESIGN.md, "Wide tables").
    let width = image::value_columns(&tx, TABLE)?;
    let narrow = image::value_columns(&tx, log_table)?.min(width);
    let values = image::value_list(narrow);
    let comma = if narrow > 0 { ", " } else { "" };
    tx.execute(
        &format!(
            "INSERT INTO {} (ts, tbl, op, schema_id{comma}{values})
             SELECT julianday('now'), tbl, op, schema_id{comma}{values}
             FROM {TABLE} WHERE id = ?1",
            quote_ident(log_table)
        ),
        [id],
    )?;
    let lsn = tx.last_insert_rowid();
    if width > narrow {
        let wide_table = log_layout::wide_table(log_table);
        let wide_columns = log_layout::definitions(&log_layout::WIDE_COLUMNS);
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({wide_columns})",
            quote_ident(&wide_table)
        ))?;
        image::widen(&tx, &wide_table, width)?;
        let rest = (narrow..width)
            .map(image::value_column)
            .collect::<Vec<_>>()
            .join(", ");
        tx.execute(
            &format!(
                "INSERT INTO {} (id, {rest}) SELECT ?2, {rest} FROM {TABLE} WHERE id = ?1",
                quote_ident(&wide_table)
            ),
            (id, lsn),
        )?;
    }
    mark_replayed(&tx, id)?;
    tx.commit()?;
    Ok(lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_columns_are_the_tables_columns_before_its_values() {
        let conn = Connection::open_in_memory().unwrap();
        ensure_table(&conn).unwrap();
        image::widen(&conn, TABLE, 2).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([TABLE], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut expected: Vec<String> = DEAD_LETTER_COLUMNS
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        expected.extend(["v0".to_string(), "v1".to_string()]);
        assert_eq!(names, expected);
    }

    /// A quarantined row that is the newest in the log stays there, so the next change
    /// gets a new LSN rather than the quarantined row's.
    #[test]
    fn quarantine_keeps_the_newest_row_so_its_lsn_is_never_reused() {
        let conn = Connection::open_in_memory().unwrap();
        crate::capture::Capture::new("log")
            .ensure_log(&conn)
            .unwrap();
        let bad_row = "INSERT INTO log (ts, tbl, op, schema_id) VALUES (0, 'x', 'I', 999)";
        conn.execute_batch(&format!("{bad_row}; {bad_row};"))
            .unwrap();
        let rows = vec![(1, "bad".to_string()), (2, "bad".to_string())];
        assert_eq!(quarantine(&conn, "log", &rows).unwrap(), 1);
        assert_eq!(list(&conn, Some(ANY_CONSUMER), false).unwrap().len(), 2);
        conn.execute(bad_row, []).unwrap();
        assert_eq!(conn.last_insert_rowid(), 3, "LSN 2 was not given again");
        // Quarantined again (a poller that restarted before it): nothing doubles.
        assert_eq!(quarantine(&conn, "log", &rows[1..]).unwrap(), 1);
        assert_eq!(list(&conn, Some(ANY_CONSUMER), false).unwrap().len(), 2);
    }
}
