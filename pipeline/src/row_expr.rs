//! A SQLite expression over one row image, evaluated by SQLite itself: the engine of row
//! filters ([`crate::filter`]) and window keys ([`crate::window`]).
//!
//! The expression runs as `SELECT <projection> FROM (SELECT ?1 AS "col", ..., ?n+1 AS
//! _op, ?n+2 AS _table)` on a private in-memory connection, the image's values bound
//! exactly as captured. So it has SQLite's own semantics and Astha hand-writes no
//! expression language. The SQL is built once per column list (a table's columns can
//! change while Astha runs) and its statement cached.
//!
//! It promises: an evaluation never reads or writes a database (the connection is private
//! and in memory) and never runs unbounded (a progress handler interrupts it after
//! [`MAX_STEPS`] virtual-machine steps). Errors name what failed (`what`), the expression
//! and the table or LSN.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use astha_core::change::{Change, Row};
use astha_core::ident::quote_ident;
use rusqlite::types::FromSql;
use rusqlite::Connection;

/// Virtual-machine steps one evaluation may take before it is interrupted.
pub const MAX_STEPS: u64 = 10_000_000;
/// The progress handler runs every this many steps.
const STEPS_PER_CALL: u64 = 1_000;

/// A compiled expression; see the module docs.
pub struct RowExpr {
    /// What it is, for messages: `"filter"`, `"window key"`.
    what: &'static str,
    expr: String,
    /// What the outer `SELECT` returns, built around the expression.
    projection: String,
    conn: Connection,
    steps: Arc<AtomicU64>,
    /// SQL per column list.
    sql: HashMap<Vec<String>, String>,
}

impl std::fmt::Debug for RowExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowExpr")
            .field("what", &self.what)
            .field("expr", &self.expr)
            .finish()
    }
}

impl RowExpr {
    /// `expr`, evaluated as `projection` (which contains it, e.g. `CAST((expr) AS
    /// NUMERIC)`). Nothing is compiled yet: see [`RowExpr::check`].
    pub fn new(what: &'static str, expr: &str, projection: String) -> Result<RowExpr, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        let steps = Arc::new(AtomicU64::new(0));
        let counter = steps.clone();
        conn.progress_handler(
            STEPS_PER_CALL as i32,
            Some(move || counter.fetch_add(STEPS_PER_CALL, Ordering::Relaxed) >= MAX_STEPS),
        );
        Ok(RowExpr {
            what,
            expr: expr.to_string(),
            projection,
            conn,
            steps,
            sql: HashMap::new(),
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Compiles the expression over a row of `columns`; the error says it does not
    /// compile, and why.
    pub fn check(&mut self, columns: &[String]) -> Result<(), String> {
        self.sql_for(columns);
        self.conn
            .prepare(&self.sql[columns])
            .map(drop)
            .map_err(|e| format!("{} {:?} does not compile: {e}", self.what, self.expr))
    }

    /// The value of the expression on `row` (no columns when `None`) of `change`.
    pub fn eval<T: FromSql>(&mut self, change: &Change, row: Option<&Row>) -> Result<T, String> {
        let columns = row.map_or(&[][..], |r| r.columns());
        self.sql_for(columns);
        let (what, expr) = (self.what, &self.expr);
        let mut stmt = self
            .conn
            .prepare_cached(&self.sql[columns])
            .map_err(|e| format!("{what} {expr:?} on table {}: {e}", change.table))?;
        let mut params: Vec<&dyn rusqlite::ToSql> = row
            .map_or(&[][..], |r| r.values())
            .iter()
            .map(|v| v as &dyn rusqlite::ToSql)
            .collect();
        let op = change.op.name();
        let table: &str = &change.table;
        params.push(&op);
        params.push(&table);
        self.steps.store(0, Ordering::Relaxed);
        stmt.query_row(params.as_slice(), |r| r.get(0))
            .map_err(|e| format!("{what} {expr:?} on LSN {}: {e}", change.lsn))
    }

    /// The SQL over a row of `columns`, built once per column list.
    fn sql_for(&mut self, columns: &[String]) {
        if !self.sql.contains_key(columns) {
            let mut select: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("?{} AS {}", i + 1, quote_ident(c)))
                .collect();
            select.push(format!("?{} AS _op", columns.len() + 1));
            select.push(format!("?{} AS _table", columns.len() + 2));
            let sql = format!(
                "SELECT {} FROM (SELECT {})",
                self.projection,
                select.join(", ")
            );
            self.sql.insert(columns.to_vec(), sql);
        }
    }
}
