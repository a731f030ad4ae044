//! Row filters: a SQLite expression evaluated on a change, by SQLite itself.
//!
//! `filter = "status = 'paid' AND amount > 100"` is evaluated as
//! `SELECT (<expr>) FROM (SELECT ?1 AS "status", ?2 AS "amount", ...)` on a private
//! in-memory connection, with the row image's values bound exactly as captured, plus
//! `_op` (`'INSERT'`, `'UPDATE'`, `'DELETE'`) and `_table`. So a filter has SQLite's own
//! semantics (type affinity, NULL, `LIKE`, `json_extract`, every built-in) and Astha
//! hand-writes no expression language. A result that is true in SQLite's sense (a
//! non-zero number) passes; false and NULL drop the change.
//!
//! Which image: the after-image of an INSERT, the before-image of a DELETE, and both of
//! an UPDATE, which passes when either image matches, so a row that moves out of the
//! filter still reaches the sink (a mirror learns it left) instead of going stale.
//!
//! It promises: a filter never reads or writes a database and never runs unbounded (both
//! kept by [`crate::row_expr`]). It never drops a change it could not evaluate:
//! an expression naming a column the row does not have (after an `ALTER TABLE`) is an
//! error for that change, which the supervisor dead-letters with the reason.

use astha_core::change::{Change, Operation, Row};

use crate::row_expr::RowExpr;
pub use crate::row_expr::MAX_STEPS;

/// A compiled filter for one table; see the module docs.
#[derive(Debug)]
pub struct RowFilter {
    expr: RowExpr,
}

impl RowFilter {
    /// Compiles `expr` and checks it against `columns` (the table's live columns), so a
    /// typo fails `astha run --check`, not the first change.
    pub fn new(expr: &str, columns: &[String]) -> Result<RowFilter, String> {
        // The numeric cast makes any SQLite truth value (integer, real, text such as
        // '1') compare the way WHERE would.
        let mut expr = RowExpr::new("filter", expr, format!("CAST(({expr}) AS NUMERIC)"))?;
        expr.check(columns)?;
        Ok(RowFilter { expr })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        self.expr.expr()
    }

    /// Whether `change` passes; an error says why it could not be evaluated.
    pub fn passes(&mut self, change: &Change) -> Result<bool, String> {
        let images: Vec<&Row> = match change.op {
            Operation::Insert | Operation::Read => change.after.iter().collect(),
            Operation::Delete => change.before.iter().collect(),
            Operation::Update => change.before.iter().chain(change.after.iter()).collect(),
        };
        for row in images {
            if self.row_passes(change, row)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn row_passes(&mut self, change: &Change, row: &Row) -> Result<bool, String> {
        let result: Option<f64> = self.expr.eval(change, Some(row))?;
        Ok(result.is_some_and(|x| x != 0.0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use astha_core::schema::TableSchema;
    use astha_core::Value;

    fn row(values: Vec<Value>) -> Row {
        let schema = TableSchema {
            id: 1,
            table: "orders".into(),
            columns: vec!["id".into(), "status".into(), "amount".into()],
            primary_key: vec!["id".into()],
            exact: vec![],
        };
        Row::new(Arc::new(schema), values).unwrap()
    }

    fn change(op: Operation, before: Option<Row>, after: Option<Row>) -> Change {
        Change {
            before,
            after,
            ..Change::bare(7, "orders", op)
        }
    }

    fn cols() -> Vec<String> {
        vec!["id".into(), "status".into(), "amount".into()]
    }

    #[test]
    fn sqlite_semantics_decide() {
        let mut f = RowFilter::new("status = 'paid' AND amount > 100", &cols()).unwrap();
        let paid = row(vec![
            Value::Integer(1),
            Value::Text("paid".into()),
            Value::Real(150.5),
        ]);
        let cheap = row(vec![
            Value::Integer(2),
            Value::Text("paid".into()),
            Value::Integer(3),
        ]);
        let null = row(vec![Value::Integer(3), Value::Null, Value::Null]);
        assert!(f
            .passes(&change(Operation::Insert, None, Some(paid)))
            .unwrap());
        assert!(!f
            .passes(&change(Operation::Insert, None, Some(cheap)))
            .unwrap());
        assert!(!f
            .passes(&change(Operation::Insert, None, Some(null)))
            .unwrap());
    }

    #[test]
    fn op_and_table_are_columns_too() {
        let mut f = RowFilter::new("_op <> 'DELETE' AND _table = 'orders'", &cols()).unwrap();
        let r = row(vec![Value::Integer(1), Value::Null, Value::Null]);
        assert!(f
            .passes(&change(Operation::Insert, None, Some(r.clone())))
            .unwrap());
        assert!(!f.passes(&change(Operation::Delete, Some(r), None)).unwrap());
    }

    #[test]
    fn an_update_passes_when_either_image_matches() {
        let mut f = RowFilter::new("status = 'open'", &cols()).unwrap();
        let open = row(vec![
            Value::Integer(1),
            Value::Text("open".into()),
            Value::Null,
        ]);
        let done = row(vec![
            Value::Integer(1),
            Value::Text("done".into()),
            Value::Null,
        ]);
        let leaving = change(Operation::Update, Some(open.clone()), Some(done.clone()));
        assert!(
            f.passes(&leaving).unwrap(),
            "a row leaving the filter is passed on"
        );
        let outside = change(Operation::Update, Some(done.clone()), Some(done));
        assert!(!f.passes(&outside).unwrap());
    }

    #[test]
    fn typos_fail_at_check_time_and_missing_columns_at_evaluation() {
        let err = RowFilter::new("stauts = 1", &cols()).unwrap_err();
        assert!(err.contains("no such column: stauts"), "{err}");
        assert!(RowFilter::new("status = ", &cols()).is_err());
        // Compiled against a schema with `note`, evaluated on a row without it.
        let mut more = cols();
        more.push("note".into());
        let mut f = RowFilter::new("note IS NULL", &more).unwrap();
        let r = row(vec![Value::Integer(1), Value::Null, Value::Null]);
        let err = f
            .passes(&change(Operation::Insert, None, Some(r)))
            .unwrap_err();
        assert!(err.contains("no such column: note"), "{err}");
    }

    #[test]
    fn a_runaway_expression_is_interrupted() {
        let expr = "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                    SELECT count(*) FROM n) > 0";
        let mut f = RowFilter::new(expr, &cols()).unwrap();
        let r = row(vec![Value::Integer(1), Value::Null, Value::Null]);
        let err = f
            .passes(&change(Operation::Insert, None, Some(r)))
            .unwrap_err();
        assert!(err.contains("interrupt"), "{err}");
    }
}
