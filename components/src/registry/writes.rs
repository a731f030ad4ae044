//! Registry reads and writes shared by the storage path and the components.
//! Every UPDATE here sets `updated_at` itself, in the same statement.

use rusqlite::{Connection, OptionalExtension};

use astha_core::change::Row;
use astha_core::error::{CoreError, Result};
use astha_core::Value;

use super::rows::{IcebergState, TableColumn, TableFile, TableRow};

/// A column to create in a registry table definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

impl ColumnDef {
    /// A nullable column.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
        }
    }
}

/// Creates database `name` if missing; returns its id.
pub fn ensure_database(conn: &Connection, name: &str) -> Result<i64> {
    conn.execute(
        "INSERT INTO databases (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
        [name],
    )?;
    Ok(
        conn.query_row("SELECT id FROM databases WHERE name = ?1", [name], |r| {
            r.get(0)
        })?,
    )
}

/// Creates a table with its columns and metadata in one transaction; returns its id.
/// Column field ids are assigned 1, 2, ... in order, as Iceberg expects.
pub fn create_table(
    conn: &Connection,
    database: &str,
    name: &str,
    columns: &[ColumnDef],
) -> Result<i64> {
    if columns.is_empty() {
        return Err(CoreError::Invalid(format!(
            "table {database}.{name} needs columns"
        )));
    }
    let tx = conn.unchecked_transaction()?;
    let database_id = ensure_database(&tx, database)?;
    tx.execute(
        "INSERT INTO tables (database_id, name) VALUES (?1, ?2)",
        (database_id, name),
    )?;
    let table_id = tx.last_insert_rowid();
    for (i, column) in columns.iter().enumerate() {
        tx.execute(
            "INSERT INTO table_columns (table_id, name, ordinal, data_type, nullable, field_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?3)",
            (
                table_id,
                &column.name,
                i as i64 + 1,
                &column.data_type,
                column.nullable,
            ),
        )?;
    }
    tx.execute(
        "INSERT INTO table_metadata (table_id) VALUES (?1)",
        [table_id],
    )?;
    tx.commit()?;
    Ok(table_id)
}

/// Finds a table by database and name.
pub fn find_table(conn: &Connection, database: &str, name: &str) -> Result<Option<TableRow>> {
    let id: Option<i64> = conn
        .query_row(
            "SELECT t.id FROM tables t JOIN databases d ON d.id = t.database_id
             WHERE d.name = ?1 AND t.name = ?2",
            (database, name),
            |r| r.get(0),
        )
        .optional()?;
    match id {
        Some(id) => table_by_id(conn, id),
        None => Ok(None),
    }
}

/// Reads a row of any registry table by id and decodes it into `T`.
pub fn read_row<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    id: i64,
) -> Result<Option<T>> {
    let rows = read_rows::<T>(conn, table, "id = ?1", &[&id])?;
    Ok(rows.into_iter().next())
}

/// Reads the rows of a registry table matching `filter` (an SQL condition) into `T`.
pub fn read_rows<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<T>> {
    let (columns, primary_key) = astha_core::schema::live_columns(conn, table)?;
    let schema = std::sync::Arc::new(astha_core::schema::TableSchema {
        id: 0,
        table: table.to_string(),
        columns,
        primary_key,
        exact: Vec::new(),
    });
    let sql = format!(
        "SELECT * FROM {} WHERE {filter} ORDER BY id",
        astha_core::ident::quote_ident(table)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let values = (0..schema.columns.len())
            .map(|i| r.get_ref(i).map(Value::from_ref))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.push(Row::new(schema.clone(), values)?.decode()?);
    }
    Ok(out)
}

/// A table by id.
pub fn table_by_id(conn: &Connection, id: i64) -> Result<Option<TableRow>> {
    read_row(conn, "tables", id)
}

/// The columns of a table, in order.
pub fn table_columns(conn: &Connection, table_id: i64) -> Result<Vec<TableColumn>> {
    let mut cols: Vec<TableColumn> =
        read_rows(conn, "table_columns", "table_id = ?1", &[&table_id])?;
    cols.sort_by_key(|c| c.ordinal);
    Ok(cols)
}

/// Data files of a table in a given Iceberg state.
pub fn files_in_state(
    conn: &Connection,
    table_id: i64,
    state: IcebergState,
) -> Result<Vec<TableFile>> {
    read_rows(
        conn,
        "table_files",
        "table_id = ?1 AND iceberg_metadata_state = ?2",
        &[&table_id, &state.as_str()],
    )
}

/// Moves files to a new Iceberg state.
pub fn set_file_state(conn: &Connection, file_ids: &[i64], state: IcebergState) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    set_file_state_in(&tx, file_ids, state)?;
    tx.commit()?;
    Ok(())
}

/// [`set_file_state`] inside the caller's transaction (the Iceberg updater runs it in the
/// catalog swap's transaction, so a file is `completed` exactly when its snapshot is current).
pub fn set_file_state_in(
    conn: &Connection,
    file_ids: &[i64],
    state: IcebergState,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE table_files SET iceberg_metadata_state = ?2,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE id = ?1 AND iceberg_metadata_state <> ?2",
    )?;
    for id in file_ids {
        stmt.execute((id, state.as_str()))?;
    }
    Ok(())
}
