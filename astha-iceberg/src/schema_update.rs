//! Schema evolution: a new column list becomes a new Iceberg schema, in one metadata-only
//! commit.
//!
//! Owns the rules that keep old data files readable under the new schema, because readers
//! (pyiceberg, DuckDB, ours in `parquet_io.rs`) match Parquet columns to the schema by field
//! id, never by name or position:
//! - a column keeps its field id for life: a rename is the same id under a new name;
//! - a new column gets an id above the table's `last-column-id`, so an id once dropped is
//!   never given to another column (old files still hold data under it); it must be
//!   optional (old files have no value for it, they read as null);
//! - a type may only widen as the Iceberg spec allows: `int` → `long`, `float` → `double`;
//! - a column may become optional, never required (old files may hold nulls for it).
//!
//! Promises: what it refuses, it refuses before writing anything, with the column named.
//! A list equal to the current schema commits nothing; one equal to an older schema makes
//! that schema current again instead of adding a copy (as Java does). It never rewrites data
//! files and never changes snapshots: files keep the schema they were written with, and
//! each snapshot records the schema id current when it was committed.

use std::collections::BTreeMap;

use super::commit::CommitFiles;
use super::error::{IcebergError, Result};
use super::schema::{validate_columns, ColumnSpec, IcebergSchema, IcebergType};
use super::table::IcebergTable;

impl IcebergTable {
    /// Makes `columns` the table's schema (see the module doc for what may change). Returns
    /// the id of the schema now current, or `None` when `columns` already was.
    pub fn update_schema(&mut self, columns: &[ColumnSpec]) -> Result<Option<i32>> {
        validate_columns(columns)?;
        if columns == self.columns.as_slice() {
            return Ok(None);
        }
        check_evolution(
            &self.identifier(),
            &self.columns,
            columns,
            self.metadata.last_column_id,
        )?;
        // A partition source column must stay, with its type: the partition values of the
        // files already written were computed from it.
        let spec = self.metadata.partition_spec()?;
        let (old, new) = (
            spec.bind(&self.columns)?,
            spec.bind(columns)
                .map_err(|e| IcebergError::SchemaMismatch {
                    table: self.identifier(),
                    reason: format!("a partition source column cannot be dropped: {e}"),
                })?,
        );
        if let Some((a, _)) = old
            .fields
            .iter()
            .zip(&new.fields)
            .find(|(a, b)| a.source_type != b.source_type)
        {
            return Err(IcebergError::SchemaMismatch {
                table: self.identifier(),
                reason: format!(
                    "partition field {:?}: its source column's type cannot change",
                    a.field.name
                ),
            });
        }
        let now = self
            .catalog
            .clock()
            .now_ms()
            .max(self.metadata.last_updated_ms);
        let mut next = self.metadata.successor(&self.metadata_location, now);
        let existing = next
            .schemas
            .iter()
            .find(|s| s.columns().ok().as_deref() == Some(columns))
            .map(|s| s.schema_id);
        let schema_id = match existing {
            Some(id) => id,
            None => {
                let id = next.schemas.iter().map(|s| s.schema_id).max().unwrap_or(-1) + 1;
                next.schemas.push(IcebergSchema::from_columns(id, columns));
                id
            }
        };
        next.current_schema_id = schema_id;
        next.last_column_id = next
            .last_column_id
            .max(columns.iter().map(|c| c.field_id).max().unwrap_or(0));
        self.publish(next, CommitFiles::new())?;
        self.columns = columns.to_vec();
        tracing::info!(table = %self.identifier(), schema_id, "iceberg schema updated");
        Ok(Some(schema_id))
    }
}

/// Refuses a change from `old` to `new` that would misread data files written under `old`.
pub(super) fn check_evolution(
    table: &str,
    old: &[ColumnSpec],
    new: &[ColumnSpec],
    last_column_id: i32,
) -> Result<()> {
    let refuse = |reason: String| {
        Err(IcebergError::SchemaMismatch {
            table: table.to_string(),
            reason,
        })
    };
    let old_by_id: BTreeMap<i32, &ColumnSpec> = old.iter().map(|c| (c.field_id, c)).collect();
    for c in new {
        match old_by_id.get(&c.field_id) {
            Some(before) => {
                if !may_widen(before.ty, c.ty) {
                    return refuse(format!(
                        "column {:?} (field id {}) cannot change type from {} to {} (only int -> long and float -> double)",
                        c.name, c.field_id, before.ty, c.ty
                    ));
                }
                if c.required && !before.required {
                    return refuse(format!(
                        "column {:?} (field id {}) cannot become required: existing files may hold nulls",
                        c.name, c.field_id
                    ));
                }
            }
            None if c.field_id <= last_column_id => {
                return refuse(format!(
                    "new column {:?} has field id {} but ids up to {last_column_id} are taken (a dropped column's id is never reused)",
                    c.name, c.field_id
                ));
            }
            None if c.required => {
                return refuse(format!(
                    "new column {:?} (field id {}) must be optional: existing files have no value for it",
                    c.name, c.field_id
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// The type promotions the Iceberg spec allows for primitive types we write.
fn may_widen(from: IcebergType, to: IcebergType) -> bool {
    from == to
        || matches!(
            (from, to),
            (IcebergType::Int, IcebergType::Long) | (IcebergType::Float, IcebergType::Double)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(id: i32, name: &str, ty: IcebergType, required: bool) -> ColumnSpec {
        ColumnSpec::new(id, name, ty, required)
    }

    #[test]
    fn allowed_and_refused_changes() {
        let old = vec![
            col(1, "id", IcebergType::Long, true),
            col(2, "qty", IcebergType::Int, false),
            col(3, "price", IcebergType::Float, true),
        ];
        let ok = |new: Vec<ColumnSpec>| check_evolution("t", &old, &new, 4).is_ok();
        // Rename, widen, relax, drop, add above last-column-id.
        assert!(ok(vec![
            col(1, "key", IcebergType::Long, true),
            col(2, "qty", IcebergType::Long, false),
            col(3, "price", IcebergType::Double, false),
            col(5, "note", IcebergType::String, false),
        ]));
        assert!(ok(vec![col(1, "id", IcebergType::Long, true)]));
        // Narrowing, other type changes, tightening, reuse of an id, required new column.
        assert!(!ok(vec![col(1, "id", IcebergType::Int, true)]));
        assert!(!ok(vec![col(2, "qty", IcebergType::String, false)]));
        assert!(!ok(vec![col(2, "qty", IcebergType::Int, true)]));
        assert!(!ok(vec![col(4, "again", IcebergType::Int, false)]));
        let err = check_evolution("t", &old, &[col(6, "n", IcebergType::Int, true)], 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"n\"") && err.contains("optional"), "{err}");
    }
}
