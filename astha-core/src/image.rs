//! Row images: where a trigger puts each value of a changed row in the change log, and
//! how Astha reads the values back.
//!
//! A log row keeps values in untyped columns `v0`, `v1`, ... Declared without a type,
//! such a column stores whatever the table held, as it held it: every storage class, a
//! REAL bit for bit (`-0.0`, subnormals, ±infinity), TEXT with NUL characters, any BLOB.
//! A trigger copies `NEW.x`/`OLD.x` straight in, calling no function that could fail, so
//! capture never makes a user's write fail and nothing is lost in translation
//! (docs/FLOORS.md: SQLite's JSON functions lose some REALs; docs/DESIGN.md: so did `quote()`).
//!
//! For a table of `n` columns (in [`TableSchema`] order):
//! - INSERT: `v0..v(n-1)` hold the new row;
//! - DELETE: `v0..v(n-1)` hold the old row;
//! - UPDATE: `v0..v(n-1)` hold the new row and `v(n)..v(2n-1)` the old values, NULL for
//!   each column that did not change; then change masks for the columns that do not
//!   compare exactly (below). So an UPDATE writes the row once plus what changed.
//!
//! "Did not change" must be exact, or a before-image would be wrong. In a column whose
//! type affinity is INTEGER, REAL or TEXT
//! ([`compares_exactly`](crate::schema::compares_exactly)), two values SQLite calls
//! equal are the same value, so `OLD.x IS NOT NEW.x COLLATE BINARY` is exact (bytes, not
//! the column's collation: a `NOCASE` column changing `a` to `A` changed). Its old slot
//! holds `coalesce(OLD.x, NEW.x)` when it changed: a slot equal to the new value can only
//! mean the old value was NULL. A column without affinity (declared BLOB, no type, or
//! anything falling to NUMERIC, such as a STRICT table's ANY) can hold `1` and `1.0`, or
//! `0.0` and `-0.0`, which compare equal, and no SQLite built-in tells `0.0` from `-0.0`:
//! its old value is kept whenever the storage classes differ or the value is zero, and one
//! INTEGER mask per 64 such columns (bit `k % 64` of mask `k / 64` for the `k`-th of them)
//! says which old values were NULL.
//!
//! A row copy costs a writer about as much as writing the row again; that is the floor
//! for a full image (docs/FLOORS.md). Reading images from the table later instead is not
//! exact once the row changes again, or its table is dropped, before Astha reads it.

use rusqlite::Connection;

use crate::change::Operation;
use crate::error::{CoreError, Result};
use crate::ident::quote_ident;
use crate::log_layout::MAX_FIXED_COLUMNS;
use crate::schema::TableSchema;
use crate::value::Value;

/// The most value columns a narrow table's images need: a table whose images need more
/// is wide ([`is_wide`]). 64 keeps every table of up to 32 columns narrow (the 16-column
/// tables of the benchmarks write one log row per change).
pub const NARROW_WIDTH: usize = 64;

/// Columns per change mask.
const MASK_BITS: usize = 64;

/// SQLite's default `SQLITE_MAX_COLUMN` (the bundled build keeps it).
const SQLITE_MAX_COLUMN: usize = 2000;

/// Name of the `i`-th value column.
pub fn value_column(i: usize) -> String {
    format!("v{i}")
}

/// `v0, v1, ..., v(count-1)`.
pub fn value_list(count: usize) -> String {
    (0..count).map(value_column).collect::<Vec<_>>().join(", ")
}

fn masks(loose: usize) -> usize {
    loose.div_ceil(MASK_BITS)
}

fn loose_count(schema: &TableSchema) -> usize {
    (0..schema.columns.len())
        .filter(|&i| !schema.is_exact(i))
        .count()
}

/// Value columns the images of a table need, at most: for `columns` columns of which
/// `loose` do not compare exactly.
pub fn columns_needed(columns: usize, loose: usize) -> usize {
    2 * columns + masks(loose)
}

/// Value columns the images of `schema`'s table need.
pub fn columns_needed_by(schema: &TableSchema) -> usize {
    columns_needed(schema.columns.len(), loose_count(schema))
}

/// True if `schema`'s table is wide: its triggers write a log row without values and
/// all the values in the log's wide table ([`crate::log_layout::wide_table`]), so the log
/// itself never widens past [`NARROW_WIDTH`] value columns and a wide table does not tax
/// the narrow tables' writes (docs/DESIGN.md, "Wide tables").
pub fn is_wide(schema: &TableSchema) -> bool {
    columns_needed_by(schema) > NARROW_WIDTH
}

/// The widest table Astha can capture: its images must fit in SQLite's column limit.
pub fn max_table_columns() -> usize {
    let room = SQLITE_MAX_COLUMN - MAX_FIXED_COLUMNS;
    (0..=room)
        .rev()
        .find(|&n| columns_needed(n, n) <= room)
        .unwrap_or(0)
}

/// For a trigger on `op` of `schema`'s table: the value columns it writes and the SQL
/// expressions it writes into them, each comma separated.
pub fn trigger_values(op: Operation, schema: &TableSchema) -> (String, String) {
    let quoted: Vec<(String, bool)> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (quote_ident(c), schema.is_exact(i)))
        .collect();
    let row =
        |side: &str| -> Vec<String> { quoted.iter().map(|(c, _)| format!("{side}.{c}")).collect() };
    let values = match op {
        // A snapshot row is never logged; it would be the new row, like an insert's.
        Operation::Insert | Operation::Read => row("NEW"),
        Operation::Delete => row("OLD"),
        Operation::Update => {
            let mut values = row("NEW");
            values.extend(quoted.iter().map(|(c, exact)| {
                if *exact {
                    format!(
                        "CASE WHEN OLD.{c} IS NOT NEW.{c} COLLATE BINARY \
                         THEN coalesce(OLD.{c}, NEW.{c}) END"
                    )
                } else {
                    format!(
                        "CASE WHEN OLD.{c} IS NOT NEW.{c} COLLATE BINARY \
                         OR typeof(OLD.{c}) <> typeof(NEW.{c}) OR OLD.{c} = 0 THEN OLD.{c} END"
                    )
                }
            }));
            let loose: Vec<&String> = quoted.iter().filter(|(_, e)| !e).map(|(c, _)| c).collect();
            values.extend(loose.chunks(MASK_BITS).map(|chunk| {
                let bits: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(bit, c)| match bit {
                        0 => format!("(OLD.{c} IS NULL)"),
                        _ => format!("((OLD.{c} IS NULL) << {bit})"),
                    })
                    .collect();
                format!("({})", bits.join(" | "))
            }));
            values
        }
    };
    (value_list(values.len()), values.join(", "))
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A change's before- and after-image, as values in column order.
pub type Images = (Option<Vec<Value>>, Option<Vec<Value>>);

/// Checks that the values of a log row of `op` on `schema`'s table can be decoded: every
/// change mask an UPDATE needs is an INTEGER.
pub fn check(
    op: Operation,
    schema: &TableSchema,
    values: &[Value],
) -> std::result::Result<(), ImageError> {
    if op != Operation::Update {
        return Ok(());
    }
    let columns = schema.columns.len();
    for m in 0..masks(loose_count(schema)) {
        match values.get(2 * columns + m).unwrap_or(&Value::Null) {
            Value::Integer(_) => {}
            other => {
                return Err(ImageError(format!(
                    "change mask {m} is {}, not an integer",
                    other.type_name()
                )))
            }
        }
    }
    Ok(())
}

/// The before- and after-image of a change of `op` on `schema`'s table, from the values
/// of its log row (`v0...`; values past the end count as NULL), which must have passed
/// [`check`]. The values are moved into the images, not copied.
pub fn decode(op: Operation, schema: &TableSchema, mut values: Vec<Value>) -> Images {
    let columns = schema.columns.len();
    values.resize(columns.max(values.len()), Value::Null);
    let mut rest = values.split_off(columns);
    let after = values;
    match op {
        Operation::Insert | Operation::Read => (None, Some(after)),
        Operation::Delete => (Some(after), None),
        Operation::Update => {
            rest.resize(columns + masks(loose_count(schema)), Value::Null);
            let masks_at = rest.split_off(columns);
            let mut before = after.clone();
            let mut loose_seen = 0;
            for (column, old) in rest.into_iter().enumerate() {
                if schema.is_exact(column) {
                    if old.same_as(&after[column]) {
                        before[column] = Value::Null;
                    } else if old != Value::Null {
                        before[column] = old;
                    }
                    continue;
                }
                let k = loose_seen;
                loose_seen += 1;
                if old != Value::Null {
                    before[column] = old;
                    continue;
                }
                let was_null = match masks_at[k / MASK_BITS] {
                    Value::Integer(mask) => (mask as u64) & (1 << (k % MASK_BITS)) != 0,
                    _ => unreachable!("checked: every mask is an integer"),
                };
                if was_null {
                    before[column] = Value::Null;
                }
            }
            (Some(before), Some(after))
        }
    }
}

/// Number of value columns (`v0`, `v1`, ... in order) `table` has.
pub fn value_columns(conn: &Connection, table: &str) -> Result<usize> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(table)))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((0..)
        .take_while(|&i| names.iter().any(|n| *n == value_column(i)))
        .count())
}

/// Adds value columns to `table` until it has at least `needed`. Adding a column is a
/// schema change only: existing rows are not rewritten.
pub fn widen(conn: &Connection, table: &str, needed: usize) -> Result<()> {
    let room = SQLITE_MAX_COLUMN - MAX_FIXED_COLUMNS;
    if needed > room {
        return Err(CoreError::Invalid(format!(
            "images need {needed} value columns; at most {room} fit in a table"
        )));
    }
    let have = value_columns(conn, table)?;
    for i in have..needed {
        conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {}",
            quote_ident(table),
            value_column(i)
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(exact: &[bool]) -> TableSchema {
        TableSchema {
            id: 1,
            table: "t".into(),
            columns: (0..exact.len()).map(|i| format!("c{i}")).collect(),
            primary_key: Vec::new(),
            exact: exact.to_vec(),
        }
    }

    /// `check`, then `decode`, as the log reader does.
    fn decode_checked(
        op: Operation,
        schema: &TableSchema,
        values: &[Value],
    ) -> std::result::Result<Images, ImageError> {
        check(op, schema, values)?;
        Ok(decode(op, schema, values.to_vec()))
    }

    #[test]
    fn update_writes_new_row_old_values_and_masks_of_loose_columns() {
        let (cols, values) = trigger_values(Operation::Update, &schema(&[true, false]));
        assert_eq!(cols, "v0, v1, v2, v3, v4");
        assert_eq!(
            values,
            "NEW.\"c0\", NEW.\"c1\", \
             CASE WHEN OLD.\"c0\" IS NOT NEW.\"c0\" COLLATE BINARY \
             THEN coalesce(OLD.\"c0\", NEW.\"c0\") END, \
             CASE WHEN OLD.\"c1\" IS NOT NEW.\"c1\" COLLATE BINARY \
             OR typeof(OLD.\"c1\") <> typeof(NEW.\"c1\") OR OLD.\"c1\" = 0 THEN OLD.\"c1\" END, \
             ((OLD.\"c1\" IS NULL))"
        );
        let (cols, _) = trigger_values(Operation::Update, &schema(&[true, true]));
        assert_eq!(cols, "v0, v1, v2, v3", "no mask without loose columns");
    }

    #[test]
    fn decode_exact_columns() {
        // c0 unchanged 'a'; c1 NULL -> 5 (slot holds the new value); c2 7 -> NULL.
        let values = [
            Value::Text("a".into()),
            Value::Integer(5),
            Value::Null,
            Value::Null,
            Value::Integer(5),
            Value::Integer(7),
        ];
        let (before, after) =
            decode_checked(Operation::Update, &schema(&[true; 3]), &values).unwrap();
        assert_eq!(
            after.unwrap(),
            vec![Value::Text("a".into()), Value::Integer(5), Value::Null]
        );
        assert_eq!(
            before.unwrap(),
            vec![Value::Text("a".into()), Value::Null, Value::Integer(7)]
        );
    }

    #[test]
    fn decode_loose_columns_reads_every_mask_bit() {
        // 130 loose columns set to their index, all changed from NULL except column 5
        // (old value -5): three masks, the top bit of the first being the sign bit.
        let n = 130;
        let mut values: Vec<Value> = (0..n as i64).map(Value::Integer).collect();
        values.extend((0..n).map(|_| Value::Null));
        values[n + 5] = Value::Integer(-5);
        values.push(Value::Integer(!(1 << 5)));
        values.push(Value::Integer(-1));
        values.push(Value::Integer(0b11));
        let (before, _) =
            decode_checked(Operation::Update, &schema(&vec![false; n]), &values).unwrap();
        for (i, v) in before.unwrap().iter().enumerate() {
            let expected = if i == 5 {
                Value::Integer(-5)
            } else {
                Value::Null
            };
            assert_eq!(*v, expected, "column {i}");
        }
        // An unchanged loose column: slot NULL, mask bit clear.
        let values = [Value::Real(-0.0), Value::Null, Value::Integer(0)];
        let (before, _) = decode_checked(Operation::Update, &schema(&[false]), &values).unwrap();
        assert!(before.unwrap()[0].same_as(&Value::Real(-0.0)));
    }

    #[test]
    fn decode_rejects_a_mask_that_is_not_an_integer() {
        let values = [Value::Integer(1), Value::Null, Value::Text("x".into())];
        let err = decode_checked(Operation::Update, &schema(&[false]), &values).unwrap_err();
        assert!(err.0.contains("mask"), "{err}");
    }

    #[test]
    fn the_widest_capturable_table_fits_the_column_limit() {
        let n = max_table_columns();
        assert!(columns_needed(n, n) + MAX_FIXED_COLUMNS <= SQLITE_MAX_COLUMN);
        assert!(columns_needed(n + 1, n + 1) + MAX_FIXED_COLUMNS > SQLITE_MAX_COLUMN);
        assert_eq!(n, 986, "DESIGN.md names this limit");
    }
}
