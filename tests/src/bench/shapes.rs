//! The capture trigger shapes the capture benchmark compares.
//!
//! - `none`: no trigger; the denominator of every ratio;
//! - `key-only`: the floor of docs/FLOORS.md, one log row of (table, op, rowid) per change;
//! - `copy`: the floor of any trigger that writes full row images (docs/FLOORS.md's
//!   row-copy line): the key-only log row plus every value copied untouched into untyped
//!   columns, the new row's and (UPDATE, DELETE) the old row's, nothing else;
//! - `astha`: Astha's own triggers, installed by `astha_core::capture::Capture`;
//! - `astha-wide`: the same, in a database that also captures a 64-column table, so
//!   the log is as wide as that table's UPDATE images (what one wide table costs the
//!   others);
//! - `seed`: seed 002's shape (docs/SEEDS.md) (`json_object` images, `AUTOINCREMENT`, four indexes on
//!   the log, two `datetime` calls per row);
//! - `history`: the SQL shape of PyPI `sqlite-history` (a typed history table per source
//!   table with an index on `_rowid`, `!=`-masked UPDATE rows, a `MAX(_version)` lookup);
//!   written here from its published trigger shape, not copied;
//! - `astha-replace`: Astha's triggers with `exact_replace` (a BEFORE INSERT trigger that
//!   looks up the rows an INSERT would replace; what it costs a plain INSERT);
//! - `astha-stamp`: Astha's triggers also stamping each log row with
//!   `pragma_schema_version` (the per-row stamp that would tell exactly which rows a
//!   foreign `ALTER TABLE` left incomplete; measured, not used);
//! - `debezium`: the trigger shape of the Debezium SQLite connector
//!   (github.com/debezium/debezium-connector-sqlite: `CdcLog` for the log table,
//!   `TriggerGenerator` for the triggers; at its newest commit, 2026-07-07, that generator
//!   lives in its test tree, standing in for the connector's `preupdate_hook` extension,
//!   which the connector's design chose for v1, with triggers as a planned option): log
//!   `_debezium_cdc_log` with an `AUTOINCREMENT` key, images as one `json_object` over
//!   every column, op codes `c`/`u`/`d`, commit time as epoch milliseconds from
//!   `unixepoch('now', 'subsec')`; written here from that published shape, not copied;
//! - `sqlite-cdc`: the triggers of github.com/michaelmedellin/sqlite-cdc (`triggers.go`,
//!   with its `WithBlobSupport` option on): log `__cdc_log` (rowid key, no index),
//!   images as `json_object` over at most 63 columns per call, calls merged with nested
//!   `json_patch`, columns declared `BLOB` as `hex()`, `datetime('now', 'subsec')`;
//!   written here from that published shape, not copied;
//! - `text`: Astha's previous shape (up to commit 1d47864), kept as the baseline of the
//!   change: both images of an UPDATE as `quote()` of every column joined by `printf`
//!   into TEXT columns `before`/`after`.

use astha_core::capture::Capture;
use astha_core::ident::{quote_ident, quote_literal};
use rusqlite::Connection;

/// One way of capturing a table's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    None,
    KeyOnly,
    Copy,
    Astha,
    AsthaWide,
    AsthaReplace,
    AsthaStamp,
    Seed,
    History,
    Debezium,
    SqliteCdc,
    Text,
}

impl Shape {
    /// Every shape, in report order.
    pub const ALL: [Shape; 12] = [
        Shape::None,
        Shape::KeyOnly,
        Shape::Copy,
        Shape::Astha,
        Shape::AsthaWide,
        Shape::AsthaReplace,
        Shape::AsthaStamp,
        Shape::Seed,
        Shape::History,
        Shape::Debezium,
        Shape::SqliteCdc,
        Shape::Text,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::None => "none",
            Shape::KeyOnly => "key-only",
            Shape::Copy => "copy",
            Shape::Astha => "astha",
            Shape::AsthaWide => "astha-wide",
            Shape::AsthaReplace => "astha-replace",
            Shape::AsthaStamp => "astha-stamp",
            Shape::Seed => "seed",
            Shape::History => "history",
            Shape::Debezium => "debezium",
            Shape::SqliteCdc => "sqlite-cdc",
            Shape::Text => "text",
        }
    }

    /// Installs this shape's capture on `table`.
    pub fn install(self, conn: &Connection, table: &str) -> Result<(), Box<dyn std::error::Error>> {
        let columns = table_info(conn, table)?;
        match self {
            Shape::None => {}
            Shape::KeyOnly => conn.execute_batch(&key_only_sql(table))?,
            Shape::Copy => conn.execute_batch(&copy_sql(table, &columns))?,
            Shape::Astha => {
                install_astha(conn, table)?;
            }
            Shape::AsthaWide => {
                crate::bench::create_wide_table(conn, "wide_neighbour", 64)?;
                install_astha(conn, "wide_neighbour")?;
                install_astha(conn, table)?;
            }
            Shape::AsthaReplace => {
                Capture::new("__cdc_log")
                    .with_exact_replace(true)
                    .install(conn, table)?;
            }
            Shape::AsthaStamp => {
                install_astha(conn, table)?;
                stamp_schema_version(conn, table)?;
            }
            Shape::Seed => conn.execute_batch(&seed_sql(table, &columns))?,
            Shape::History => conn.execute_batch(&history_sql(table, &columns))?,
            Shape::Debezium => conn.execute_batch(&debezium_sql(table, &columns))?,
            Shape::SqliteCdc => conn.execute_batch(&sqlite_cdc_sql(table, &columns))?,
            Shape::Text => {
                let names: Vec<String> = columns.iter().map(|(n, _, _)| n.clone()).collect();
                conn.execute_batch(&text_sql(table, &names))?
            }
        }
        Ok(())
    }
}

/// (name, declared type, is primary key) of each column.
fn table_info(conn: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String, bool)>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(table)))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get::<_, i64>(5)? > 0)))?
        .collect();
    rows
}

fn install_astha(conn: &Connection, table: &str) -> astha_core::Result<i64> {
    let capture = Capture::new("__cdc_log");
    capture.install(conn, table)?;
    Ok(capture
        .captured_schema(conn, table)?
        .map(|s| s.id)
        .unwrap_or_default())
}

/// Rewrites Astha's three triggers on `table` to also write `pragma_schema_version`
/// into a column `sv` of the log.
fn stamp_schema_version(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE __cdc_log ADD COLUMN sv")?;
    for name in astha_core::capture::trigger_names(table) {
        let sql: String = conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [&name],
            |r| r.get(0),
        )?;
        let stamped = sql.replacen("(ts, tbl,", "(sv, ts, tbl,", 1).replacen(
            "VALUES (julianday('now'),",
            "VALUES ((SELECT schema_version FROM pragma_schema_version), julianday('now'),",
            1,
        );
        assert_ne!(sql, stamped, "Astha's trigger shape changed");
        conn.execute_batch(&format!("DROP TRIGGER {}; {stamped}", quote_ident(&name)))?;
    }
    Ok(())
}

fn key_only_sql(table: &str) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    let trigger = |op: &str, event: &str, row: &str| {
        format!(
            "CREATE TRIGGER key_only_{op} AFTER {event} ON {t} BEGIN \
             INSERT INTO key_log (tbl, op, rid) VALUES ({name}, '{op}', {row}.rowid); END;"
        )
    };
    format!(
        "CREATE TABLE key_log (lsn INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER);
         {} {} {}",
        trigger("I", "INSERT", "NEW"),
        trigger("U", "UPDATE", "NEW"),
        trigger("D", "DELETE", "OLD"),
    )
}

/// The row-copy floor: [`key_only_sql`]'s log row plus the values, new row first, then
/// the old row (UPDATE); a DELETE's old row in the first columns.
fn copy_sql(table: &str, columns: &[(String, String, bool)]) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    let n = columns.len();
    let values: Vec<String> = (0..2 * n).map(|i| format!("v{i}")).collect();
    let row = |side: &str| -> Vec<String> {
        columns
            .iter()
            .map(|(c, _, _)| format!("{side}.{}", quote_ident(c)))
            .collect()
    };
    let trigger = |op: &str, event: &str, key: &str, images: Vec<String>| {
        format!(
            "CREATE TRIGGER copy_{op} AFTER {event} ON {t} BEGIN \
             INSERT INTO copy_log (tbl, op, rid, {}) VALUES ({name}, '{op}', {key}.rowid, {}); END;",
            values[..images.len()].join(", "),
            images.join(", "),
        )
    };
    format!(
        "CREATE TABLE copy_log (lsn INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER, {});
         {} {} {}",
        values.join(", "),
        trigger("I", "INSERT", "NEW", row("NEW")),
        trigger("U", "UPDATE", "NEW", [row("NEW"), row("OLD")].concat()),
        trigger("D", "DELETE", "OLD", row("OLD")),
    )
}

/// Seed 002's change log and triggers, with its column names and indexes.
fn seed_sql(table: &str, columns: &[(String, String, bool)]) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    let object = |row: &str| {
        let pairs: Vec<String> = columns
            .iter()
            .map(|(c, _, _)| format!("{}, {row}.{}", quote_literal(c), quote_ident(c)))
            .collect();
        format!("json_object({})", pairs.join(", "))
    };
    let trigger = |suffix: &str, event: &str, op: &str, before: &str, after: &str| {
        format!(
            "CREATE TRIGGER seed_{suffix} AFTER {event} ON {t} BEGIN \
             INSERT INTO __cdc_log (timestamp, tablename, operation, before, after, created_at) \
             VALUES (datetime('now', 'subsec'), {name}, '{op}', {before}, {after}, datetime('now')); END;"
        )
    };
    format!(
        "CREATE TABLE __cdc_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            timestamp TEXT NOT NULL,
            tablename TEXT NOT NULL,
            operation TEXT NOT NULL,
            before TEXT,
            after TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX idx_cdc_log_timestamp ON __cdc_log(timestamp);
        CREATE INDEX idx_cdc_log_tablename ON __cdc_log(tablename);
        CREATE INDEX idx_cdc_log_operation ON __cdc_log(operation);
        CREATE INDEX idx_cdc_log_created ON __cdc_log(created_at);
        {} {} {}",
        trigger("insert", "INSERT", "INSERT", "NULL", &object("NEW")),
        trigger("update", "UPDATE", "UPDATE", &object("OLD"), &object("NEW")),
        trigger("delete", "DELETE", "DELETE", &object("OLD"), "NULL"),
    )
}

/// The SQL shape of sqlite-history's history table and triggers.
fn history_sql(table: &str, columns: &[(String, String, bool)]) -> String {
    let t = quote_ident(table);
    let h = quote_ident(&format!("_{table}_history"));
    let defs: Vec<String> = columns
        .iter()
        .map(|(c, ty, _)| format!("    {} {ty}", quote_ident(c)))
        .collect();
    let names: Vec<String> = columns.iter().map(|(c, _, _)| quote_ident(c)).collect();
    let list = names.join(", ");
    let values = |row: &str| {
        names
            .iter()
            .map(|c| format!("{row}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let now = "cast((julianday('now') - 2440587.5) * 86400.0 * 1000 as integer)";
    // sqlite-history computes `2 ** len(columns) - 1`; past 63 bits SQLite reads the
    // literal as a REAL, as it does with theirs.
    let all_mask = if columns.len() < 63 {
        ((1u64 << columns.len()) - 1).to_string()
    } else {
        format!("{}", 2f64.powi(columns.len() as i32) - 1.0)
    };
    let changed_values: Vec<String> = names
        .iter()
        .map(|c| format!("CASE WHEN old.{c} != new.{c} THEN new.{c} ELSE NULL END"))
        .collect();
    let mask: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let bit = if i < 63 {
                (1u64 << i).to_string()
            } else {
                format!("{}", 2f64.powi(i as i32))
            };
            format!("(CASE WHEN old.{c} != new.{c} THEN {bit} ELSE 0 END)")
        })
        .collect();
    let any_changed: Vec<String> = names
        .iter()
        .map(|c| format!("old.{c} != new.{c}"))
        .collect();
    format!(
        "CREATE TABLE {h} (
            _rowid INTEGER,
        {},
            _version INTEGER,
            _updated INTEGER,
            _mask INTEGER
        );
        CREATE INDEX {} ON {h} (_rowid);
        CREATE TRIGGER history_insert AFTER INSERT ON {t} BEGIN
            INSERT INTO {h} (_rowid, {list}, _version, _updated, _mask)
            VALUES (new.rowid, {}, 1, {now}, {all_mask});
        END;
        CREATE TRIGGER history_update AFTER UPDATE ON {t} FOR EACH ROW BEGIN
            INSERT INTO {h} (_rowid, {list}, _version, _updated, _mask)
            SELECT old.rowid, {},
                (SELECT MAX(_version) FROM {h} WHERE _rowid = old.rowid) + 1,
                {now}, {}
            WHERE {};
        END;
        CREATE TRIGGER history_delete AFTER DELETE ON {t} BEGIN
            INSERT INTO {h} (_rowid, {list}, _version, _updated, _mask)
            VALUES (old.rowid, {},
                (SELECT COALESCE(MAX(_version), 0) FROM {h} WHERE _rowid = old.rowid) + 1,
                {now}, -1);
        END;",
        defs.join(",\n"),
        quote_ident(&format!("idx_{table}_history_rowid")),
        values("new"),
        changed_values.join(", "),
        mask.join(" + "),
        any_changed.join(" OR "),
        values("old"),
    )
}

/// The Debezium SQLite connector's log table and triggers.
fn debezium_sql(table: &str, columns: &[(String, String, bool)]) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    let image = |row: &str| {
        let pairs: Vec<String> = columns
            .iter()
            .map(|(c, _, _)| format!("{}, {row}.{}", quote_literal(c), quote_ident(c)))
            .collect();
        format!("json_object({})", pairs.join(", "))
    };
    let trigger = |event: &str, op: &str, old: &str, new: &str| {
        format!(
            "CREATE TRIGGER {} AFTER {event} ON {t} BEGIN \
             INSERT INTO _debezium_cdc_log (table_name, operation, old_row_data, new_row_data, committed_at) \
             VALUES ({name}, '{op}', {old}, {new}, CAST(unixepoch('now', 'subsec') * 1000 AS INTEGER)); END;",
            quote_ident(&format!("_debezium_cdc_{table}_{}", event.to_lowercase())),
        )
    };
    format!(
        "CREATE TABLE _debezium_cdc_log (
            change_id INTEGER PRIMARY KEY AUTOINCREMENT,
            table_name TEXT NOT NULL,
            operation TEXT NOT NULL,
            old_row_data TEXT,
            new_row_data TEXT,
            committed_at INTEGER NOT NULL
        );
        {} {} {}",
        trigger("INSERT", "c", "NULL", &image("NEW")),
        trigger("UPDATE", "u", &image("OLD"), &image("NEW")),
        trigger("DELETE", "d", &image("OLD"), "NULL"),
    )
}

/// sqlite-cdc's log table and triggers, BLOB support on.
fn sqlite_cdc_sql(table: &str, columns: &[(String, String, bool)]) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    // One `json_object` per 63 columns; several are merged right to left with `json_patch`.
    let image = |row: &str| {
        let objects: Vec<String> = columns
            .chunks(63)
            .map(|chunk| {
                let pairs: Vec<String> = chunk
                    .iter()
                    .map(|(c, ty, _)| {
                        let value = format!("{row}.{}", quote_ident(c));
                        let value = if ty.eq_ignore_ascii_case("BLOB") {
                            format!("hex({value})")
                        } else {
                            value
                        };
                        format!("{}, {value}", quote_literal(c))
                    })
                    .collect();
                format!("json_object({})", pairs.join(", "))
            })
            .collect();
        let (last, rest) = objects.split_last().expect("a table has columns");
        rest.iter()
            .rev()
            .fold(last.clone(), |inner, o| format!("json_patch({o}, {inner})"))
    };
    let trigger = |event: &str, before: &str, after: &str| {
        format!(
            "CREATE TRIGGER {} AFTER {event} ON {t} BEGIN \
             INSERT INTO __cdc_log (timestamp, tablename, operation, before, after) \
             VALUES (datetime('now', 'subsec'), {name}, '{event}', {before}, {after}); END;",
            quote_ident(&format!("{table}__cdc_{}", event.to_lowercase())),
        )
    };
    format!(
        "CREATE TABLE __cdc_log (
            id INTEGER PRIMARY KEY,
            timestamp TEXT NOT NULL,
            tablename TEXT NOT NULL,
            operation TEXT NOT NULL,
            before TEXT,
            after TEXT
        );
        {} {} {}",
        trigger("INSERT", "NULL", &image("NEW")),
        trigger("UPDATE", &image("OLD"), &image("NEW")),
        trigger("DELETE", &image("OLD"), "NULL"),
    )
}

/// Astha's previous shape: a log with TEXT images made of `quote()` per column joined by
/// `printf` (at most 100 arguments per call, so wide tables take several calls).
fn text_sql(table: &str, columns: &[String]) -> String {
    let t = quote_ident(table);
    let name = quote_literal(table);
    let image = |row: &str| {
        columns
            .chunks(100)
            .map(|chunk| {
                let args: Vec<String> = chunk
                    .iter()
                    .map(|c| format!("quote({row}.{})", quote_ident(c)))
                    .collect();
                format!(
                    "printf('{}',{})",
                    vec!["%s"; chunk.len()].join(","),
                    args.join(",")
                )
            })
            .collect::<Vec<_>>()
            .join("||','||")
    };
    let trigger = |op: &str, event: &str, before: &str, after: &str| {
        format!(
            "CREATE TRIGGER text_{op} AFTER {event} ON {t} BEGIN \
             INSERT INTO text_log (ts, tbl, op, schema_id, before, after) \
             VALUES (julianday('now'), {name}, '{op}', 1, {before}, {after}); END;"
        )
    };
    format!(
        "CREATE TABLE text_log (id INTEGER PRIMARY KEY, ts REAL NOT NULL, tbl TEXT NOT NULL,
            op TEXT NOT NULL, schema_id INTEGER NOT NULL, before TEXT, after TEXT);
         {} {} {}",
        trigger("I", "INSERT", "NULL", &image("NEW")),
        trigger("U", "UPDATE", &image("OLD"), &image("NEW")),
        trigger("D", "DELETE", &image("OLD"), "NULL"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape installs on a 64-column table and logs one row per change.
    #[test]
    fn every_shape_captures_every_operation() {
        for shape in Shape::ALL {
            let conn = Connection::open_in_memory().unwrap();
            crate::bench::create_wide_table(&conn, "t", 64).unwrap();
            shape.install(&conn, "t").unwrap();
            let insert = crate::bench::wide_insert_sql("t", 64);
            let mut values = vec![rusqlite::types::Value::Integer(1)];
            values.extend(crate::bench::wide_row(1, 64));
            conn.execute(&insert, rusqlite::params_from_iter(values.iter()))
                .unwrap();
            conn.execute("UPDATE t SET c0 = 'x', c1 = NULL WHERE id = 1", [])
                .unwrap();
            conn.execute("DELETE FROM t WHERE id = 1", []).unwrap();
            let log = match shape {
                Shape::None => continue,
                Shape::KeyOnly => "key_log",
                Shape::Copy => "copy_log",
                Shape::History => "_t_history",
                Shape::Debezium => "_debezium_cdc_log",
                Shape::Text => "text_log",
                _ => "__cdc_log",
            };
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {log}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 3, "{shape:?}");
        }
    }

    #[test]
    fn copy_logs_every_value_of_both_rows() {
        let conn = Connection::open_in_memory().unwrap();
        crate::bench::create_wide_table(&conn, "t", 2).unwrap();
        Shape::Copy.install(&conn, "t").unwrap();
        conn.execute("INSERT INTO t VALUES (1, 'a', 2)", [])
            .unwrap();
        conn.execute("UPDATE t SET c1 = NULL WHERE id = 1", [])
            .unwrap();
        conn.execute("DELETE FROM t WHERE id = 1", []).unwrap();
        let rows: Vec<(String, i64, String)> = conn
            .prepare("SELECT op, rid, quote(v0) || ',' || quote(v1) || ',' || quote(v2) || ',' || quote(v3) || ',' || quote(v4) || ',' || quote(v5) FROM copy_log ORDER BY lsn")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let row = |op: &str, values: &str| (op.to_string(), 1, values.to_string());
        assert_eq!(
            rows,
            [
                row("I", "1,'a',2,NULL,NULL,NULL"),
                row("U", "1,'a',NULL,1,'a',2"),
                row("D", "1,'a',NULL,NULL,NULL,NULL"),
            ]
        );
    }

    #[test]
    fn text_logs_quoted_images() {
        let conn = Connection::open_in_memory().unwrap();
        crate::bench::create_wide_table(&conn, "t", 2).unwrap();
        Shape::Text.install(&conn, "t").unwrap();
        conn.execute("INSERT INTO t VALUES (1, 'a', 2)", [])
            .unwrap();
        conn.execute("UPDATE t SET c1 = NULL WHERE id = 1", [])
            .unwrap();
        let (before, after): (String, String) = conn
            .query_row(
                "SELECT before, after FROM text_log WHERE op = 'U'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((before.as_str(), after.as_str()), ("1,'a',2", "1,'a',NULL"));
    }

    /// What the two peers do with values `json_object` cannot hold, and with NULLs past
    /// sqlite-cdc's 63rd column (`json_patch` drops a key whose patch value is null).
    #[test]
    fn peers_on_blobs_and_nulls() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT)")
            .unwrap();
        Shape::Debezium.install(&conn, "t").unwrap();
        // Debezium: any BLOB value fails the user's own write.
        let err = conn
            .execute("INSERT INTO t VALUES (1, x'DEADBEEF', 'a')", [])
            .unwrap_err();
        assert!(err.to_string().contains("BLOB"), "{err}");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);

        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT)")
            .unwrap();
        Shape::SqliteCdc.install(&conn, "t").unwrap();
        // sqlite-cdc: a BLOB in a column declared BLOB is logged as hex text...
        conn.execute("INSERT INTO t VALUES (1, x'DEADBEEF', 'a')", [])
            .unwrap();
        let b: String = conn
            .query_row("SELECT after ->> '$.b' FROM __cdc_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(b, "DEADBEEF");
        // ...and a BLOB in any other column fails the user's write...
        let err = conn
            .execute("INSERT INTO t VALUES (2, NULL, x'DEADBEEF')", [])
            .unwrap_err();
        assert!(err.to_string().contains("BLOB"), "{err}");
        // ...unless its bytes happen to be valid JSONB (SQLite 3.45+): then `json_object`
        // reads them as JSON, and the blob x'00' is logged as a JSON null.
        conn.execute("INSERT INTO t VALUES (3, NULL, x'00')", [])
            .unwrap();
        let s: String = conn
            .query_row(
                "SELECT json_type(after, '$.s') FROM __cdc_log WHERE after ->> '$.id' = 3",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(s, "null");

        // Past the 63rd column (id, c0..c61), a NULL loses its key in the image.
        let conn = Connection::open_in_memory().unwrap();
        crate::bench::create_wide_table(&conn, "t", 64).unwrap();
        Shape::SqliteCdc.install(&conn, "t").unwrap();
        let insert = crate::bench::wide_insert_sql("t", 64);
        let mut values = vec![rusqlite::types::Value::Integer(1)];
        values.extend(crate::bench::wide_row(1, 64));
        values[2] = rusqlite::types::Value::Null; // c1
        values[64] = rusqlite::types::Value::Null; // c63
        conn.execute(&insert, rusqlite::params_from_iter(values.iter()))
            .unwrap();
        let (c1, c63, c62): (Option<String>, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT json_type(after, '$.c1'), json_type(after, '$.c63'), \
                 json_type(after, '$.c62') FROM __cdc_log",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(c1.as_deref(), Some("null"));
        assert_eq!(c63, None, "key dropped by json_patch");
        assert_eq!(c62.as_deref(), Some("text"));
    }
}
