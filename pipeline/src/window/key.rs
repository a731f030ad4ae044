//! The key of a change: which window state a change belongs to.
//!
//! `key` is a SQLite expression over the change's image (the after-image, or the
//! before-image of a DELETE) with `_table` and `_op` beside its columns, as row filters
//! are ([`crate::filter`]). A plain column name, `_table` or `_op` is read directly (no
//! SQLite call per change); anything else is evaluated by SQLite on a private in-memory
//! connection, bounded in steps ([`crate::row_expr`]). The key is the value as text: TEXT as is, numbers in their SQLite text
//! form, NULL as `null`, other values in their exact JSON form. No key (`None`) puts
//! every change under the key `""`.

use astha_core::change::{Change, Operation, Row};
use astha_core::Value;

use crate::row_expr::RowExpr;

/// A compiled key expression.
#[derive(Debug)]
pub enum KeyExpr {
    /// One key for every change.
    All,
    /// A column read directly (or `_table`, `_op`).
    Column(String),
    /// Evaluated by SQLite.
    Sql(Box<RowExpr>),
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
        // Checked for syntax on a row without columns: a column name is checked by the
        // first change (the table is not known here).
        let mut compiled = RowExpr::new("window key", expr, format!("({expr})"))?;
        match compiled.check(&[]) {
            Err(e) if !e.contains("no such column") => Err(e),
            _ => Ok(KeyExpr::Sql(Box::new(compiled))),
        }
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
            KeyExpr::Sql(expr) => Ok(key_text(&expr.eval::<Value>(change, image)?)),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use astha_core::schema::TableSchema;

    fn insert(values: Vec<Value>) -> Change {
        let schema = TableSchema {
            id: 1,
            table: "orders".into(),
            columns: vec!["id".into(), "customer".into()],
            primary_key: vec!["id".into()],
            exact: vec![],
        };
        Change {
            after: Some(Row::new(Arc::new(schema), values).unwrap()),
            ..Change::bare(7, "orders", Operation::Insert)
        }
    }

    #[test]
    fn keys_come_from_columns_or_from_sqlite() {
        let change = insert(vec![Value::Integer(1), Value::Text("ann".into())]);
        let mut column = KeyExpr::new(Some("customer")).unwrap();
        assert_eq!(column.key(&change).unwrap(), "ann");
        let mut sql = KeyExpr::new(Some("upper(customer) || '-' || _op")).unwrap();
        assert_eq!(sql.key(&change).unwrap(), "ANN-INSERT");
        let mut missing = KeyExpr::new(Some("region || ''")).unwrap();
        let err = missing.key(&change).unwrap_err();
        assert!(err.contains("no such column: region"), "{err}");
        assert!(KeyExpr::new(Some("customer ||"))
            .unwrap_err()
            .contains("does not compile"));
    }

    #[test]
    fn a_runaway_key_expression_is_interrupted() {
        let expr = "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                    SELECT count(*) FROM n)";
        let mut key = KeyExpr::new(Some(expr)).unwrap();
        let change = insert(vec![Value::Integer(1), Value::Text("ann".into())]);
        let err = key.key(&change).unwrap_err();
        assert!(err.contains("interrupt"), "{err}");
    }
}
