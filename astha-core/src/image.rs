//! Row images: where a trigger puts each value of a changed row in the change log, and
//! how Astha reads the values back.
//!
//! A log row keeps values in untyped columns `v0`, `v1`, ... Declared without a type,
//! such a column stores whatever the table held, as it held it: every storage class, a
//! REAL bit for bit (`-0.0`, subnormals, ±infinity), TEXT with NUL characters, any BLOB.
//! A trigger copies `NEW.x`/`OLD.x` straight in, calling no function that could fail, so
//! capture never makes a user's write fail and nothing is lost in translation
//! (MEASURED.md: SQLite's JSON functions and `quote()` both lose some REALs).
//!
//! For a table of `n` columns (in [`TableSchema`](crate::schema::TableSchema) order):
//! - INSERT: `v0..v(n-1)` hold the new row;
//! - DELETE: `v0..v(n-1)` hold the old row;
//! - UPDATE: `v0..v(n-1)` hold the new row, `v(n)..v(2n-1)` the old value of each
//!   column that may have changed and NULL for the others, then one INTEGER mask per 64
//!   columns with bit `i % 64` of mask `i / 64` set when the old value of column `i` was
//!   NULL. Reading back: an old value that is not NULL is the old value; else the mask
//!   says whether the old value was NULL or equal to the new one. So an UPDATE writes the
//!   row once plus what changed, not twice.
//!
//! "May have changed" must never miss a change, or the before-image would be wrong.
//! `OLD.x IS NOT NEW.x COLLATE BINARY` is exact (bytes, not the column's collation: a
//! `NOCASE` column changing `a` to `A` changed) whenever two equal values are the same
//! value, which SQLite's type affinity guarantees for INTEGER, REAL and TEXT columns.
//! A column without affinity (declared BLOB, no type, or anything falling to NUMERIC,
//! such as a STRICT table's ANY) can hold `1` and `1.0`, or `0.0` and `-0.0`, which
//! compare equal: there the old value is also kept when the storage class differs or
//! the value is zero.
//!
//! A row copy costs a writer about as much as writing the row again; that is the floor
//! for a full image (MEASURED.md). Reading images from the table later instead is not
//! exact once the row changes again, or its table is dropped, before Astha reads it.

use rusqlite::Connection;

use crate::change::Operation;
use crate::error::{CoreError, Result};
use crate::ident::quote_ident;
use crate::value::Value;

/// Columns per change mask.
const MASK_BITS: usize = 64;

/// SQLite's default `SQLITE_MAX_COLUMN` (the bundled build keeps it).
const SQLITE_MAX_COLUMN: usize = 2000;

/// Columns of the widest Astha table that holds images besides its values (the
/// dead-letter table: id, consumer, lsn, ts, tbl, op, schema_id, reason, attempts,
/// retriable, created_at, replayed_at).
const MAX_FIXED_COLUMNS: usize = 12;

/// Name of the `i`-th value column.
pub fn value_column(i: usize) -> String {
    format!("v{i}")
}

/// `v0, v1, ..., v(count-1)`.
pub fn value_list(count: usize) -> String {
    (0..count).map(value_column).collect::<Vec<_>>().join(", ")
}

fn masks(columns: usize) -> usize {
    columns.div_ceil(MASK_BITS)
}

/// Value columns the images of a table of `columns` columns need.
pub fn columns_needed(columns: usize) -> usize {
    2 * columns + masks(columns)
}

/// The widest table Astha can capture: its images must fit in SQLite's column limit.
pub fn max_table_columns() -> usize {
    let room = SQLITE_MAX_COLUMN - MAX_FIXED_COLUMNS;
    (0..=room)
        .rev()
        .find(|&n| columns_needed(n) <= room)
        .unwrap_or(0)
}

/// True if SQLite gives a column declared `declared_type` INTEGER, REAL or TEXT
/// affinity (SQLite's rules, in their order), so equal values in it are identical.
pub fn compares_exactly(declared_type: &str) -> bool {
    let t = declared_type.to_ascii_uppercase();
    t.contains("INT")
        || ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k))
        || (!t.contains("BLOB") && ["REAL", "FLOA", "DOUB"].iter().any(|k| t.contains(k)))
}

/// One column of a table, as a trigger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerColumn {
    pub name: String,
    /// See [`compares_exactly`].
    pub exact: bool,
}

/// For a trigger on `op` of a table with `columns`: the value columns it writes and the
/// SQL expressions it writes into them, each comma separated.
pub fn trigger_values(op: Operation, columns: &[TriggerColumn]) -> (String, String) {
    let quoted: Vec<(String, bool)> = columns
        .iter()
        .map(|c| (quote_ident(&c.name), c.exact))
        .collect();
    let row = |side: &str| -> Vec<String> {
        quoted.iter().map(|(c, _)| format!("{side}.{c}")).collect()
    };
    let values = match op {
        Operation::Insert => row("NEW"),
        Operation::Delete => row("OLD"),
        Operation::Update => {
            let mut values = row("NEW");
            values.extend(quoted.iter().map(|(c, exact)| {
                let differs = if *exact {
                    format!("OLD.{c} IS NOT NEW.{c} COLLATE BINARY")
                } else {
                    format!(
                        "OLD.{c} IS NOT NEW.{c} COLLATE BINARY \
                         OR typeof(OLD.{c}) <> typeof(NEW.{c}) OR OLD.{c} = 0"
                    )
                };
                format!("CASE WHEN {differs} THEN OLD.{c} END")
            }));
            values.extend(quoted.chunks(MASK_BITS).map(|chunk| {
                let bits: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(bit, (c, _))| match bit {
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

/// The before- and after-image of a change of `op` on a table of `columns` columns,
/// from the values of its log row (`v0...`; values past the end count as NULL).
pub fn decode(
    op: Operation,
    columns: usize,
    values: &[Value],
) -> std::result::Result<(Option<Vec<Value>>, Option<Vec<Value>>), ImageError> {
    let value = |i: usize| values.get(i).cloned().unwrap_or(Value::Null);
    let row = || (0..columns).map(value).collect::<Vec<_>>();
    match op {
        Operation::Insert => Ok((None, Some(row()))),
        Operation::Delete => Ok((Some(row()), None)),
        Operation::Update => {
            let after = row();
            let mut before = after.clone();
            for m in 0..masks(columns) {
                let was_null = match value(2 * columns + m) {
                    Value::Integer(mask) => mask as u64,
                    other => {
                        return Err(ImageError(format!(
                            "change mask {m} is {}, not an integer",
                            other.type_name()
                        )))
                    }
                };
                for bit in 0..MASK_BITS {
                    let column = m * MASK_BITS + bit;
                    if column >= columns {
                        break;
                    }
                    match value(columns + column) {
                        Value::Null if was_null & (1 << bit) != 0 => before[column] = Value::Null,
                        Value::Null => {}
                        old => before[column] = old,
                    }
                }
            }
            Ok((Some(before), Some(after)))
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

    fn columns(n: usize, exact: bool) -> Vec<TriggerColumn> {
        (0..n)
            .map(|i| TriggerColumn {
                name: format!("c{i}"),
                exact,
            })
            .collect()
    }

    #[test]
    fn update_writes_new_row_old_values_and_null_masks() {
        let (cols, values) = trigger_values(Operation::Update, &columns(2, true));
        assert_eq!(cols, "v0, v1, v2, v3, v4");
        assert_eq!(
            values,
            "NEW.\"c0\", NEW.\"c1\", \
             CASE WHEN OLD.\"c0\" IS NOT NEW.\"c0\" COLLATE BINARY THEN OLD.\"c0\" END, \
             CASE WHEN OLD.\"c1\" IS NOT NEW.\"c1\" COLLATE BINARY THEN OLD.\"c1\" END, \
             ((OLD.\"c0\" IS NULL) | ((OLD.\"c1\" IS NULL) << 1))"
        );
        let (_, loose) = trigger_values(Operation::Update, &columns(1, false));
        assert!(loose.contains("typeof(OLD.\"c0\") <> typeof(NEW.\"c0\")"), "{loose}");
    }

    #[test]
    fn affinity_rules() {
        for exact in ["INTEGER", "int", "VARCHAR(10)", "TEXT", "CLOB", "REAL", "DOUBLE", "FLOAT"] {
            assert!(compares_exactly(exact), "{exact}");
        }
        for loose in ["", "BLOB", "ANY", "NUMERIC", "DECIMAL(10,2)", "BOOLEAN", "FLOATBLOB"] {
            assert!(!compares_exactly(loose), "{loose}");
        }
    }

    #[test]
    fn decode_puts_old_values_back() {
        // Column 0 unchanged ('a'), column 1 changed from NULL to 5, column 2 from 7 to NULL.
        let values = [
            Value::Text("a".into()),
            Value::Integer(5),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Integer(7),
            Value::Integer(0b010),
        ];
        let (before, after) = decode(Operation::Update, 3, &values).unwrap();
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
    fn decode_reads_every_mask_bit_of_wide_tables() {
        // 130 columns set to their index, all changed from NULL except 5: three masks,
        // the highest bit of the first one being the sign bit.
        let n = 130;
        let mut values: Vec<Value> = (0..n as i64).map(Value::Integer).collect();
        values.extend((0..n).map(|_| Value::Null));
        values[n + 5] = Value::Integer(-5);
        values.push(Value::Integer(!(1 << 5))); // columns 0-63
        values.push(Value::Integer(-1)); // columns 64-127
        values.push(Value::Integer(0b11)); // columns 128-129
        let (before, _) = decode(Operation::Update, n, &values).unwrap();
        let before = before.unwrap();
        for (i, v) in before.iter().enumerate() {
            let expected = if i == 5 { Value::Integer(-5) } else { Value::Null };
            assert_eq!(*v, expected, "column {i}");
        }
    }

    #[test]
    fn decode_rejects_a_mask_that_is_not_an_integer() {
        let values = [Value::Integer(1), Value::Null, Value::Text("x".into())];
        let err = decode(Operation::Update, 1, &values).unwrap_err();
        assert!(err.0.contains("mask"), "{err}");
    }

    #[test]
    fn the_widest_capturable_table_fits_the_column_limit() {
        let n = max_table_columns();
        assert!(columns_needed(n) + MAX_FIXED_COLUMNS <= SQLITE_MAX_COLUMN);
        assert!(columns_needed(n + 1) + MAX_FIXED_COLUMNS > SQLITE_MAX_COLUMN);
        assert!(n > 900, "{n}");
    }
}
