//! Changes the log holds that may be incomplete, and why: what Astha writes when
//! another connection changed a captured table's schema before Astha could regenerate
//! its triggers.
//!
//! SQLite has no DDL triggers. When another connection adds a column, the table's
//! triggers keep writing the columns they were made for until Astha notices (it reads
//! the schema cookie, `PRAGMA schema_version`, on every wake-up) and regenerates them;
//! a change committed in between lacks the new column's value. When another connection
//! drops and re-creates a table, SQLite drops its triggers with it: writes in between
//! are not logged at all, and Astha logs the rows the table holds when it re-installs
//! capture, as INSERTs.
//!
//! Which log rows are affected cannot be known exactly (a per-row stamp of the schema
//! cookie would tell, at about twice the trigger's cost: BENCHMARKS.md), so each case
//! is recorded as a range of LSNs of one table and schema in `__astha_gaps`, written in
//! the transaction that regenerates the triggers. The range starts at the last LSN Astha
//! had proved complete (read under the schema version its triggers were made for), so
//! it holds only rows that may really be affected. The log reader marks every change in
//! a range ([`Incomplete`]), and every format carries the mark. Rows are only added.

use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The table of recorded gaps.
pub const TABLE: &str = "__astha_gaps";

/// Why a change may be incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Columns were added by another connection; the change may lack their values
    /// (the image has the columns the triggers were made for, and not those).
    ColumnsAdded,
    /// The table was dropped and created again by another connection; its writes until
    /// capture resumed were not logged, and this INSERT is a row the table held then.
    Recreated,
}

impl Reason {
    /// The name in the formats (`columns_added`, `recreated`).
    pub fn name(self) -> &'static str {
        match self {
            Reason::ColumnsAdded => "columns_added",
            Reason::Recreated => "recreated",
        }
    }

    fn parse(text: &str) -> Option<Reason> {
        [Reason::ColumnsAdded, Reason::Recreated]
            .into_iter()
            .find(|r| r.name() == text)
    }
}

/// The mark on a change that may be incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    pub reason: Reason,
    /// The columns whose values the change may lack (empty for [`Reason::Recreated`]).
    pub columns: Vec<String>,
}

impl Incomplete {
    /// `{"reason": "columns_added", "columns": ["c"]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "reason": self.reason.name(), "columns": self.columns })
    }
}

/// One recorded gap: log rows of `table` written with schema `schema_id`, with an LSN in
/// `after_lsn + 1 ..= upto_lsn`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub table: String,
    pub schema_id: i64,
    pub after_lsn: i64,
    pub upto_lsn: i64,
    pub mark: Arc<Incomplete>,
}

impl Gap {
    /// True if the log row `lsn` of `table` written with `schema_id` is in this gap.
    pub fn covers(&self, table: &str, schema_id: i64, lsn: i64) -> bool {
        self.schema_id == schema_id
            && self.after_lsn < lsn
            && lsn <= self.upto_lsn
            && self.table == table
    }
}

/// Creates the gap table if it is missing.
pub fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            id INTEGER PRIMARY KEY,
            tbl TEXT NOT NULL,
            schema_id INTEGER NOT NULL,
            after_lsn INTEGER NOT NULL,
            upto_lsn INTEGER NOT NULL,
            reason TEXT NOT NULL,
            columns TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );"
    ))?;
    Ok(())
}

/// Records a gap (nothing when the range is empty) and logs it.
pub fn record(conn: &Connection, gap: &Gap) -> Result<()> {
    if gap.upto_lsn <= gap.after_lsn {
        return Ok(());
    }
    ensure_table(conn)?;
    let columns = serde_json::to_string(&gap.mark.columns).expect("strings serialize");
    conn.execute(
        &format!(
            "INSERT INTO {TABLE} (tbl, schema_id, after_lsn, upto_lsn, reason, columns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        (
            &gap.table,
            gap.schema_id,
            gap.after_lsn,
            gap.upto_lsn,
            gap.mark.reason.name(),
            columns,
        ),
    )?;
    tracing::warn!(
        table = gap.table,
        reason = gap.mark.reason.name(),
        columns = ?gap.mark.columns,
        after_lsn = gap.after_lsn,
        upto_lsn = gap.upto_lsn,
        "another connection changed a captured table's schema before capture caught up: \
         changes in this LSN range are marked as possibly incomplete (use Capture::alter \
         or `astha alter` for schema changes)"
    );
    Ok(())
}

/// The gaps that end after `after_lsn` (none if the table does not exist).
pub fn after(conn: &Connection, after_lsn: i64) -> Result<Vec<Gap>> {
    if !crate::schema::is_plain_table(conn, TABLE)? {
        return Ok(Vec::new());
    }
    after_in_table(conn, after_lsn)
}

/// [`after`], for a caller that knows the gaps table exists.
pub fn after_in_table(conn: &Connection, after_lsn: i64) -> Result<Vec<Gap>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT tbl, schema_id, after_lsn, upto_lsn, reason, columns FROM {TABLE}
         WHERE upto_lsn > ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([after_lsn], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(table, schema_id, after_lsn, upto_lsn, reason, columns)| {
            Some(Gap {
                table,
                schema_id,
                after_lsn,
                upto_lsn,
                mark: Arc::new(Incomplete {
                    reason: Reason::parse(&reason)?,
                    columns: serde_json::from_str(&columns).ok()?,
                }),
            })
        })
        .collect())
}
