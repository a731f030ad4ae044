//! Per-table shaping between the log and a sink: which columns leave the process, and
//! which changes pass the row filter.
//!
//! [`Shaped`] wraps any component. A change of a table with a [`TableShape`] has its
//! images cut to the kept columns (an excluded column's value is dropped here, before the
//! sink sees the change, so it never leaves the process in any format) and is passed on
//! only if its filter holds. A change the filter drops is confirmed: its slot moves past
//! it, and the count is kept in [`Shaped::dropped`]. A change whose filter cannot be
//! evaluated fails permanently, so the supervisor dead-letters it with the reason:
//! dropping it would be a silent loss.
//!
//! It never changes a value, and never reorders: the kept changes reach the sink in the
//! order they came, in one call when they came in one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use astha_actors::{BatchError, Component, ComponentError};
use astha_core::change::{Change, Row};
use astha_core::schema::TableSchema;
use async_trait::async_trait;

use crate::filter::RowFilter;

/// Which columns of a table are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnSelection {
    /// Only these (when set).
    pub include: Option<Vec<String>>,
    /// Never these.
    pub exclude: Vec<String>,
}

impl ColumnSelection {
    /// Whether `column` is kept.
    pub fn keeps(&self, column: &str) -> bool {
        let included = match &self.include {
            Some(list) => list.iter().any(|c| c == column),
            None => true,
        };
        included && !self.exclude.iter().any(|c| c == column)
    }

    /// Whether every column is kept whatever the table has.
    pub fn keeps_all(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty()
    }
}

/// The shaping of one table.
#[derive(Debug, Default)]
pub struct TableShape {
    pub columns: ColumnSelection,
    pub filter: Option<RowFilter>,
}

impl TableShape {
    fn is_identity(&self) -> bool {
        self.columns.keeps_all() && self.filter.is_none()
    }
}

/// A component whose changes are shaped per table before it sees them.
pub struct Shaped {
    inner: Box<dyn Component>,
    tables: HashMap<String, TableShape>,
    /// Projected schemas, by the captured schema's id.
    projected: HashMap<i64, Arc<TableSchema>>,
    dropped: Arc<AtomicU64>,
}

impl Shaped {
    /// Wraps `inner`; tables without an entry (or with an identity shape) pass unchanged.
    pub fn new(inner: Box<dyn Component>, tables: HashMap<String, TableShape>) -> Shaped {
        let tables = tables
            .into_iter()
            .filter(|(_, s)| !s.is_identity())
            .collect();
        Shaped {
            inner,
            tables,
            projected: HashMap::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether any table is shaped (else wrapping is pointless).
    pub fn shapes_anything(&self) -> bool {
        !self.tables.is_empty()
    }

    /// The wrapped component (for a caller that found nothing to shape).
    pub fn into_inner(self) -> Box<dyn Component> {
        self.inner
    }

    /// Changes the filters dropped so far (confirmed without reaching the sink).
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// The change as the sink should see it, or `None` when the filter drops it.
    fn shape(&mut self, change: &Arc<Change>) -> Result<Option<Arc<Change>>, ComponentError> {
        let Some(shape) = self.tables.get_mut(&*change.table) else {
            return Ok(Some(change.clone()));
        };
        if let Some(filter) = &mut shape.filter {
            if !filter.passes(change).map_err(ComponentError::permanent)? {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        if shape.columns.keeps_all() {
            return Ok(Some(change.clone()));
        }
        let columns = &shape.columns;
        let projected = &mut self.projected;
        let mut project = |row: &Row| -> Result<Row, ComponentError> {
            let schema = projected
                .entry(row.schema().id)
                .or_insert_with(|| Arc::new(project_schema(row.schema(), columns)))
                .clone();
            let values = row
                .columns()
                .iter()
                .zip(row.values())
                .filter(|(c, _)| columns.keeps(c))
                .map(|(_, v)| v.clone())
                .collect();
            Row::new(schema, values).map_err(ComponentError::from)
        };
        Ok(Some(Arc::new(Change {
            lsn: change.lsn,
            timestamp_ms: change.timestamp_ms,
            table: change.table.clone(),
            op: change.op,
            before: change.before.as_ref().map(&mut project).transpose()?,
            after: change.after.as_ref().map(&mut project).transpose()?,
            snapshot: change.snapshot,
            transaction: change.transaction.clone(),
            incomplete: change.incomplete.clone(),
        })))
    }
}

/// The schema of the kept columns; the id stays the captured schema's.
fn project_schema(schema: &TableSchema, columns: &ColumnSelection) -> TableSchema {
    let kept: Vec<usize> = (0..schema.columns.len())
        .filter(|&i| columns.keeps(&schema.columns[i]))
        .collect();
    TableSchema {
        id: schema.id,
        table: schema.table.clone(),
        columns: kept.iter().map(|&i| schema.columns[i].clone()).collect(),
        primary_key: schema
            .primary_key
            .iter()
            .filter(|c| columns.keeps(c))
            .cloned()
            .collect(),
        exact: if schema.exact.is_empty() {
            Vec::new()
        } else {
            kept.iter().map(|&i| schema.is_exact(i)).collect()
        },
    }
}

#[async_trait]
impl Component for Shaped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn durable(&self) -> bool {
        self.inner.durable()
    }

    fn subscriptions(&self) -> Vec<String> {
        self.inner.subscriptions()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        match self.shape(&Arc::new(change.clone()))? {
            Some(shaped) => self.inner.on_event(&shaped).await,
            None => Ok(()),
        }
    }

    async fn on_batch(&mut self, changes: &[Arc<Change>]) -> Result<(), BatchError> {
        // `origin[k]` is the index in `changes` of the k-th change passed on, so an error
        // of the sink confirms exactly the changes before the one it failed on.
        let mut passed = Vec::with_capacity(changes.len());
        let mut origin = Vec::with_capacity(changes.len());
        let mut failed = None;
        for (i, change) in changes.iter().enumerate() {
            match self.shape(change) {
                Ok(Some(shaped)) => {
                    passed.push(shaped);
                    origin.push(i);
                }
                Ok(None) => {}
                Err(error) => {
                    failed = Some(BatchError { handled: i, error });
                    break;
                }
            }
        }
        if !passed.is_empty() {
            if let Err(err) = self.inner.on_batch(&passed).await {
                return Err(BatchError {
                    handled: origin[err.handled],
                    error: err.error,
                });
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn on_health(&mut self) -> Result<(), ComponentError> {
        self.inner.on_health().await
    }

    async fn on_refresh(&mut self) -> Result<(), ComponentError> {
        self.inner.on_refresh().await
    }

    async fn on_stop(&mut self) -> Result<(), ComponentError> {
        self.inner.on_stop().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use astha_core::{Operation, Value};
    use std::sync::Mutex;

    /// Records what it is given; fails the change with LSN `fail_at`.
    struct Seen {
        got: Arc<Mutex<Vec<Change>>>,
        fail_at: Option<i64>,
    }

    #[async_trait]
    impl Component for Seen {
        fn name(&self) -> &str {
            "seen"
        }
        fn subscriptions(&self) -> Vec<String> {
            vec!["t".into()]
        }
        async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
            if Some(change.lsn) == self.fail_at {
                return Err(ComponentError::transient("down"));
            }
            self.got.lock().unwrap().push(change.clone());
            Ok(())
        }
    }

    fn change(lsn: i64, secret: &str, amount: i64) -> Arc<Change> {
        let schema = Arc::new(TableSchema {
            id: 4,
            table: "t".into(),
            columns: vec!["id".into(), "secret".into(), "amount".into()],
            primary_key: vec!["id".into()],
            exact: vec![true, true, true],
        });
        let row = Row::new(
            schema,
            vec![
                Value::Integer(lsn),
                Value::Text(secret.into()),
                Value::Integer(amount),
            ],
        )
        .unwrap();
        Arc::new(Change {
            after: Some(row),
            ..Change::bare(lsn, "t", Operation::Insert)
        })
    }

    fn shaped(fail_at: Option<i64>) -> (Shaped, Arc<Mutex<Vec<Change>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let columns = vec!["id".to_string(), "secret".into(), "amount".into()];
        let shape = TableShape {
            columns: ColumnSelection {
                include: None,
                exclude: vec!["secret".into()],
            },
            filter: Some(RowFilter::new("amount >= 10", &columns).unwrap()),
        };
        let inner = Seen {
            got: got.clone(),
            fail_at,
        };
        let tables = HashMap::from([("t".to_string(), shape)]);
        (Shaped::new(Box::new(inner), tables), got)
    }

    #[tokio::test]
    async fn excluded_columns_never_reach_the_sink_and_filtered_changes_are_confirmed() {
        let (mut s, got) = shaped(None);
        let batch = vec![change(1, "a", 5), change(2, "b", 50), change(3, "c", 10)];
        s.on_batch(&batch).await.unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.iter().map(|c| c.lsn).collect::<Vec<_>>(), [2, 3]);
        for c in got.iter() {
            let row = c.after.as_ref().unwrap();
            assert_eq!(row.columns(), ["id", "amount"]);
            assert!(row.get("secret").is_none());
            assert_eq!(row.schema().primary_key, ["id"]);
        }
        assert_eq!(s.dropped().load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_sink_failure_confirms_exactly_the_changes_before_it() {
        let (mut s, _) = shaped(Some(4));
        // 1 and 3 are dropped by the filter; the sink fails on 4 (index 3 of the batch).
        let batch = vec![
            change(1, "a", 1),
            change(2, "b", 20),
            change(3, "c", 2),
            change(4, "d", 40),
        ];
        let err = s.on_batch(&batch).await.unwrap_err();
        assert_eq!(err.handled, 3);
        assert!(err.error.is_retriable());
    }
}
