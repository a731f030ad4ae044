//! The table every benchmark writes: `id` and `columns` data columns alternating TEXT and
//! INTEGER, and its rows. Depends on rusqlite alone, so the benchmarks built outside this
//! crate (`astha-actors/examples/delivery_bench.rs`, `astha-core/examples/*.rs`) include
//! this file by path instead of keeping copies.

use rusqlite::Connection;

/// Creates `name(id INTEGER PRIMARY KEY, c0 TEXT, c1 INTEGER, ...)` with `columns`
/// data columns, alternating TEXT and INTEGER (the table docs/FLOORS.md's figures used).
pub fn create_wide_table(conn: &Connection, name: &str, columns: usize) -> rusqlite::Result<()> {
    let cols: Vec<String> = (0..columns)
        .map(|j| format!("c{j} {}", if j % 2 == 0 { "TEXT" } else { "INTEGER" }))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE {name} (id INTEGER PRIMARY KEY, {})",
        cols.join(", ")
    ))
}

/// The values of row `i` of a wide table (without the id).
pub fn wide_row(i: i64, columns: usize) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    (0..columns)
        .map(|j| {
            if j % 2 == 0 {
                Value::Text(format!("value-{i}-{j}-abcdef"))
            } else {
                Value::Integer(i * 131 + j as i64)
            }
        })
        .collect()
}

/// `INSERT INTO name (id, c0, ...) VALUES (?, ?, ...)`.
pub fn wide_insert_sql(name: &str, columns: usize) -> String {
    let names: Vec<String> = (0..columns).map(|j| format!("c{j}")).collect();
    format!(
        "INSERT INTO {name} (id, {}) VALUES (?{})",
        names.join(", "),
        ", ?".repeat(columns)
    )
}
