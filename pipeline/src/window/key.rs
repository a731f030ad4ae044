//! The key of a change: which window state a change belongs to.
//!
//! `key` is a SQLite expression over the change's image (the after-image, or the
//! before-image of a DELETE) with `_table` and `_op` beside its columns, as row filters
//! are ([`crate::filter`]). A plain column name, `_table` or `_op` is read directly (no
//! SQLite call per change); anything else is evaluated by SQLite on a private in-memory
//! connection. The key is the value as text: TEXT as is, numbers in their SQLite text
//! form, NULL as `null`, other values in their exact JSON form. No key (`None`) puts
//! every change under the key `""`.

use std::collections::HashMap;

use astha_core::change::{Change, Operation, Row};
use astha_core::ident::quote_ident;
use astha_core::Value;
use rusqlite::Connection;

/// A compiled key expression.
pub enum KeyExpr {
    /// One key for every change.
    All,
    /// A column read directly (or `_table`, `_op`).
    Column(String),
    /// Evaluated by SQLite.
    Sql {
        expr: String,
        conn: Box<Connection>,
        sql: HashMap<Vec<String>, String>,
    },
}

impl KeyExpr {
    /// Compiles `expr` (checked for syntax on an empty row).
    pub fn new(expr: Option<&str>) -> Result<KeyExpr, String> {
        let Some(expr) = expr.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(KeyExpr::All);
        };
        if expr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !expr.starts_with(|c: char| c.is_ascii_digit())
        {
            return Ok(KeyExpr::Column(expr.to_string()));
        }
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        conn.prepare(&format!(
            "SELECT ({expr}) FROM (SELECT NULL AS _op, NULL AS _table) WHERE 0"
        ))
        .map_err(|e| format!("window key {expr:?} does not compile: {e}"))
        .map(drop)
        .or_else(|e| {
            if e.contains("no such column") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        Ok(KeyExpr::Sql {
            expr: expr.to_string(),
            conn: Box::new(conn),
            sql: HashMap::new(),
        })
    }

    /// The key of `change`; an error says why it cannot be evaluated.
    pub fn key(&mut self, change: &Change) -> Result<String, String> {
        let image: Option<&Row> = match change.op {
            Operation::Delete => change.before.as_ref(),
            _ => change.after.as_ref().or(change.before.as_ref()),
        };
        match self {
            KeyExpr::All => Ok(String::new()),
            KeyExpr::Column(c) if c == "_table" => Ok(change.table.to_string()),
            KeyExpr::Column(c) if c == "_op" => Ok(change.op.name().to_string()),
            KeyExpr::Column(c) => match image.and_then(|r| r.get(c)) {
                Some(v) => Ok(key_text(v)),
                None => Err(format!(
                    "window key {c:?}: table {} has no column {c:?} (LSN {})",
                    change.table, change.lsn
                )),
            },
            KeyExpr::Sql { expr, conn, sql } => {
                let empty: [String; 0] = [];
                let columns = image.map_or(&empty[..], |r| r.columns());
                if !sql.contains_key(columns) {
                    let mut select: Vec<String> = columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("?{} AS {}", i + 1, quote_ident(c)))
                        .collect();
                    select.push(format!("?{} AS _op", columns.len() + 1));
                    select.push(format!("?{} AS _table", columns.len() + 2));
                    sql.insert(
                        columns.to_vec(),
                        format!("SELECT ({expr}) FROM (SELECT {})", select.join(", ")),
                    );
                }
                let mut stmt = conn
                    .prepare_cached(&sql[columns])
                    .map_err(|e| format!("window key {expr:?} on table {}: {e}", change.table))?;
                let mut params: Vec<&dyn rusqlite::ToSql> = image
                    .map_or(&[][..], |r| r.values())
                    .iter()
                    .map(|v| v as &dyn rusqlite::ToSql)
                    .collect();
                let op = change.op.name();
                let table: &str = &change.table;
                params.push(&op);
                params.push(&table);
                let value: Value = stmt
                    .query_row(params.as_slice(), |r| r.get(0))
                    .map_err(|e| format!("window key {expr:?} on LSN {}: {e}", change.lsn))?;
                Ok(key_text(&value))
            }
        }
    }
}

/// A value as a key.
fn key_text(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Null => "null".into(),
        other => other.to_json().to_string(),
    }
}
