//! What Astha knows about a captured table's columns, and the live schema it reads them from.
//!
//! Each time triggers are (re)generated for a table, its column list is stored as a new
//! row of `__astha_schemas`, and the triggers stamp that row's id on every change they log.
//! Log rows written before an `ALTER TABLE` therefore still decode with the columns they
//! were written with. Schema rows are never changed, only added.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{CoreError, Result};
use crate::ident::quote_ident;

/// The columns of one captured table, as they were when a set of triggers was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Row id in `__astha_schemas`; every log row carries it.
    pub id: i64,
    /// The table's name.
    pub table: String,
    /// Column names in table order.
    pub columns: Vec<String>,
    /// Primary-key columns in key order (empty for a rowid table without a declared key).
    pub primary_key: Vec<String>,
    /// Per column, whether its type affinity makes equal values identical, which decides
    /// how its triggers write an UPDATE's old value ([`crate::image`]). Empty when not
    /// recorded: every column counts as not exact.
    pub exact: Vec<bool>,
}

impl TableSchema {
    /// Whether column `i` compares exactly (see [`TableSchema::exact`]).
    pub fn is_exact(&self, i: usize) -> bool {
        self.exact.get(i).copied().unwrap_or(false)
    }

    /// Index of a column by name.
    pub fn position(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }
}

/// Creates the schema registry table if it is missing.
pub fn ensure_schema_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS __astha_schemas (
            id INTEGER PRIMARY KEY,
            tbl TEXT NOT NULL,
            columns TEXT NOT NULL,
            primary_key TEXT NOT NULL,
            created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
        );",
    )?;
    let has_exact: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('__astha_schemas') WHERE name = 'exact'",
        [],
        |r| r.get(0),
    )?;
    if !has_exact {
        conn.execute_batch("ALTER TABLE __astha_schemas ADD COLUMN exact TEXT")?;
    }
    Ok(())
}

/// The live column list of `table` (`PRAGMA table_info`), and its primary key in key order.
pub fn live_columns(conn: &Connection, table: &str) -> Result<(Vec<String>, Vec<String>)> {
    let sql = format!("PRAGMA table_info({})", quote_ident(table));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Err(CoreError::NoSuchTable(table.to_string()));
    }
    let columns = rows.iter().map(|(name, _)| name.clone()).collect();
    let mut keyed: Vec<&(String, i64)> = rows.iter().filter(|(_, pk)| *pk > 0).collect();
    keyed.sort_by_key(|(_, pk)| *pk);
    let primary_key = keyed.into_iter().map(|(name, _)| name.clone()).collect();
    Ok((columns, primary_key))
}

/// A column's type affinity: what SQLite converts values stored in it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Declared type contains `INT`.
    Integer,
    /// Contains `CHAR`, `CLOB` or `TEXT`.
    Text,
    /// Contains `BLOB`, or no type at all: values are stored as given.
    Blob,
    /// Contains `REAL`, `FLOA` or `DOUB`.
    Real,
    /// Anything else (`NUMERIC`, `DECIMAL`, `BOOLEAN`, `DATE`, ...).
    Numeric,
}

/// The affinity of a column declared `declared_type`: SQLite's five rules
/// (<https://sqlite.org/datatype3.html#determination_of_column_affinity>), in their order.
pub fn affinity(declared_type: &str) -> Affinity {
    let t = declared_type.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k)) {
        Affinity::Text
    } else if t.contains("BLOB") || t.trim().is_empty() {
        Affinity::Blob
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|k| t.contains(k)) {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// True if SQLite gives a column declared `declared_type` INTEGER, REAL or TEXT
/// affinity, so equal values in it are identical. This decides how triggers write an
/// UPDATE's old value ([`crate::image`]).
pub fn compares_exactly(declared_type: &str) -> bool {
    matches!(
        affinity(declared_type),
        Affinity::Integer | Affinity::Text | Affinity::Real
    )
}

/// `(column, declared type)` of every column of `table`, in table order (`PRAGMA
/// table_info`); empty if there is no such table.
pub fn declared_types(conn: &Connection, table: &str) -> Result<Vec<(String, String)>> {
    let sql = format!("PRAGMA table_info({})", quote_ident(table));
    let mut stmt = conn.prepare(&sql)?;
    let types = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(types)
}

/// For each of `columns` of `table`, whether its declared type gives it an affinity under
/// which equal values are identical ([`compares_exactly`]).
pub fn live_exactness(conn: &Connection, table: &str, columns: &[String]) -> Result<Vec<bool>> {
    let types = declared_types(conn, table)?;
    Ok(columns
        .iter()
        .map(|c| {
            types
                .iter()
                .find(|(name, _)| name == c)
                .is_some_and(|(_, t)| compares_exactly(t))
        })
        .collect())
}

/// Records a new schema version for `table` and returns it.
pub fn record_schema(
    conn: &Connection,
    table: &str,
    columns: Vec<String>,
    primary_key: Vec<String>,
    exact: Vec<bool>,
) -> Result<TableSchema> {
    let cols = serde_json::to_string(&columns).expect("strings serialize");
    let pk = serde_json::to_string(&primary_key).expect("strings serialize");
    let ex = serde_json::to_string(&exact).expect("bools serialize");
    conn.execute(
        "INSERT INTO __astha_schemas (tbl, columns, primary_key, exact) VALUES (?1, ?2, ?3, ?4)",
        (table, cols, pk, ex),
    )?;
    Ok(TableSchema {
        id: conn.last_insert_rowid(),
        table: table.to_string(),
        columns,
        primary_key,
        exact,
    })
}

/// Loads a recorded schema by id; `None` if no such schema was ever recorded.
pub fn load_schema(conn: &Connection, id: i64) -> Result<Option<Arc<TableSchema>>> {
    let row = conn
        .query_row(
            "SELECT tbl, columns, primary_key, exact FROM __astha_schemas WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((table, columns, pk, exact)) = row else {
        return Ok(None);
    };
    let parse = |text: &str| -> Result<Vec<String>> {
        serde_json::from_str(text)
            .map_err(|e| CoreError::Invalid(format!("schema {id} of {table} is corrupt: {e}")))
    };
    Ok(Some(Arc::new(TableSchema {
        id,
        columns: parse(&columns)?,
        primary_key: parse(&pk)?,
        exact: match exact {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                CoreError::Invalid(format!("schema {id} of {table} is corrupt: {e}"))
            })?,
            None => Vec::new(),
        },
        table,
    })))
}

/// `PRAGMA schema_version`: changes whenever any connection changes the schema.
pub fn schema_version(conn: &Connection) -> Result<i64> {
    // Cached: every log read asks, thousands of times a second under load.
    Ok(conn
        .prepare_cached("PRAGMA schema_version")?
        .query_row([], |r| r.get(0))?)
}

/// Why `name` cannot be captured, in words a user can act on: a view, a virtual table,
/// one of SQLite's or Astha's own tables, or no such table at all. For a name that is an
/// ordinary table this says so (callers ask only after [`is_plain_table`] said no).
pub fn not_capturable_reason(conn: &Connection, name: &str) -> Result<String> {
    let found: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT type, sql FROM sqlite_master WHERE name = ?1 AND type IN ('table', 'view')",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match found {
        Some((kind, _)) if kind == "view" => format!(
            "{name:?} is a view: a view has no rows of its own to capture; capture the tables it reads"
        ),
        Some((_, Some(sql)))
            if sql
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("CREATE VIRTUAL") =>
        {
            format!("{name:?} is a virtual table: SQLite cannot put triggers on it")
        }
        Some(_) if name.starts_with("__astha_") || name.to_ascii_lowercase().starts_with("sqlite_") => {
            format!("{name:?} is one of SQLite's or Astha's own tables and cannot be captured")
        }
        Some(_) => format!("{name:?} is an ordinary table"),
        None => format!("the database has no table named {name:?}"),
    })
}

/// True if `name` is an ordinary table (not a view, virtual table or missing).
pub fn is_plain_table(conn: &Connection, name: &str) -> Result<bool> {
    let sql: Option<String> = conn
        .prepare_cached("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(sql.is_some_and(|s| {
        !s.trim_start()
            .to_ascii_uppercase()
            .starts_with("CREATE VIRTUAL")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_rules() {
        for exact in [
            "INTEGER",
            "int",
            "VARCHAR(10)",
            "TEXT",
            "CLOB",
            "REAL",
            "DOUBLE",
            "FLOAT",
        ] {
            assert!(compares_exactly(exact), "{exact}");
        }
        for loose in [
            "",
            "BLOB",
            "ANY",
            "NUMERIC",
            "DECIMAL(10,2)",
            "BOOLEAN",
            "FLOATBLOB",
        ] {
            assert!(!compares_exactly(loose), "{loose}");
        }
    }
}
