//! What a full row image costs a 16-column table's UPDATEs and DELETEs, against the
//! floors of any trigger that writes one (issue 20), with only astha-core built: the
//! capture suite's method (tests/src/bench/capture.rs) for its four 16-column
//! update/delete cells — table `t(id, c0..c15)` (TEXT/INTEGER alternating), `UPDATE t
//! SET c0 = ?, c1 = ? WHERE id = ?` and `DELETE FROM t WHERE id = ?`, in 100-row
//! transactions and autocommit, WAL + `synchronous=NORMAL` (`astha_core::db::open`).
//!
//! Shapes, run interleaved in blocks of 500 rows; overhead = median over repetitions of
//! time / no-capture time in the same repetition:
//! - `none`: no capture;
//! - `key-only`: one log row of (table, op, rowid): the capture suite's floor;
//! - `copy`: the row-copy floor of docs/FLOORS.md: the key-only log row plus the values
//!   copied into untyped columns, every column of the old row and (UPDATE) of the new;
//! - `copy-changed`: `copy` with an UPDATE's old values written only where they changed
//!   (`CASE WHEN OLD.c IS NOT NEW.c THEN OLD.c END`, not exact for an old NULL: a cost
//!   proxy of Astha's choice without its fixed columns);
//! - `astha`: Astha's own triggers (`Capture::install`).
//!
//! Each repetition sets every database up, then measures on connections opened afresh:
//! measured on the connections that set them up, the shape set up last ran up to twice
//! as fast as the first whatever its triggers (two shapes with the same DELETE trigger
//! came out +99% and +33%). With the default 20,000 rows the table (about 5 MB) is larger
//! than a connection's page cache (2 MB), so every shape also pays reads from the OS's
//! cache; 5,000 rows fit in it.
//!
//! cargo run --release -p astha-core --example image_floor -- [rows] [reps]

use std::time::{Duration, Instant};

use astha_core::capture::Capture;
use rusqlite::{types::Value, Connection};

#[path = "../../tests/src/bench/table.rs"]
mod table;

use table::{create_wide_table, wide_insert_sql, wide_row};

const SHAPES: [&str; 5] = ["none", "key-only", "copy", "copy-changed", "astha"];
const COLUMNS: usize = 16;
const BLOCK: usize = 500;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Update,
    Delete,
}

fn columns() -> Vec<String> {
    (0..COLUMNS).map(|j| format!("c{j}")).collect()
}

/// The benchmarks' table `t` (`tests/src/bench/table.rs`), filled with rows `1..=rows`.
fn create_table(conn: &Connection, rows: usize) {
    create_wide_table(conn, "t", COLUMNS).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut stmt = tx.prepare(&wide_insert_sql("t", COLUMNS)).unwrap();
        for i in 1..=rows as i64 {
            let mut row = vec![Value::Integer(i)];
            row.extend(wide_row(i, COLUMNS));
            stmt.execute(rusqlite::params_from_iter(row)).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// The `copy` and `copy-changed` triggers: a key-only log row plus values.
fn copy_sql(changed_only: bool) -> String {
    let cols = columns();
    let values: Vec<String> = (0..2 * COLUMNS).map(|i| format!("v{i}")).collect();
    let old: Vec<String> = cols.iter().map(|c| format!("OLD.{c}")).collect();
    let new: Vec<String> = cols.iter().map(|c| format!("NEW.{c}")).collect();
    let old_changed: Vec<String> = cols
        .iter()
        .map(|c| format!("CASE WHEN OLD.{c} IS NOT NEW.{c} THEN OLD.{c} END"))
        .collect();
    let update_values = [
        new.clone(),
        if changed_only {
            old_changed
        } else {
            old.clone()
        },
    ]
    .concat();
    format!(
        "CREATE TABLE copy_log (lsn INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER, {});
         CREATE TRIGGER copy_u AFTER UPDATE ON t BEGIN
           INSERT INTO copy_log (tbl, op, rid, {all}) VALUES ('t', 'U', NEW.rowid, {upd}); END;
         CREATE TRIGGER copy_d AFTER DELETE ON t BEGIN
           INSERT INTO copy_log (tbl, op, rid, {first}) VALUES ('t', 'D', OLD.rowid, {del}); END;",
        values.join(", "),
        all = values.join(", "),
        upd = update_values.join(", "),
        first = values[..COLUMNS].join(", "),
        del = old.join(", "),
    )
}

fn setup(conn: &Connection, shape: &str, rows: usize) {
    create_table(conn, rows);
    match shape {
        "none" => {}
        "key-only" => conn
            .execute_batch(
                "CREATE TABLE key_log (lsn INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, rid INTEGER);
                 CREATE TRIGGER k_u AFTER UPDATE ON t BEGIN
                   INSERT INTO key_log (tbl, op, rid) VALUES ('t', 'U', NEW.rowid); END;
                 CREATE TRIGGER k_d AFTER DELETE ON t BEGIN
                   INSERT INTO key_log (tbl, op, rid) VALUES ('t', 'D', OLD.rowid); END;",
            )
            .unwrap(),
        "copy" => conn.execute_batch(&copy_sql(false)).unwrap(),
        "copy-changed" => conn.execute_batch(&copy_sql(true)).unwrap(),
        "astha" => {
            Capture::new("__cdc_log").install(conn, "t").unwrap();
        }
        _ => unreachable!(),
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// Runs rows `range` of `op` on `conn`, in 100-row transactions or one per row.
fn timed(conn: &Connection, op: Op, in_tx: bool, range: std::ops::Range<usize>) -> Duration {
    let sql = match op {
        Op::Update => "UPDATE t SET c0 = ?1, c1 = ?2 WHERE id = ?3",
        Op::Delete => "DELETE FROM t WHERE id = ?1",
    };
    let mut stmt = conn.prepare_cached(sql).unwrap();
    let mut begin = conn.prepare_cached("BEGIN").unwrap();
    let mut commit = conn.prepare_cached("COMMIT").unwrap();
    let t0 = Instant::now();
    for (n, i) in range.clone().enumerate() {
        let id = i as i64 + 1;
        if in_tx && n % 100 == 0 {
            begin.execute([]).unwrap();
        }
        match op {
            Op::Update => stmt.execute((format!("changed-{id}"), id * 7, id)).unwrap(),
            Op::Delete => stmt.execute([id]).unwrap(),
        };
        if in_tx && (n % 100 == 99 || i + 1 == range.end) {
            commit.execute([]).unwrap();
        }
    }
    t0.elapsed()
}

fn cell(op: Op, in_tx: bool, rows: usize, reps: usize) {
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut best = vec![f64::MAX; SHAPES.len()];
    for rep in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        for (i, shape) in SHAPES.iter().enumerate() {
            let conn = astha_core::db::open(&dir.path().join(format!("{i}.db"))).unwrap();
            setup(&conn, shape, rows);
        }
        // Measured on connections opened afresh, after every database was set up: the
        // connection that set a database up keeps what it touched last in its cache.
        let conns: Vec<Connection> = (0..SHAPES.len())
            .map(|i| astha_core::db::open(&dir.path().join(format!("{i}.db"))).unwrap())
            .collect();
        let mut totals = vec![Duration::ZERO; SHAPES.len()];
        for (b, start) in (0..rows).step_by(BLOCK).enumerate() {
            for k in 0..SHAPES.len() {
                let i = (k + b + rep) % SHAPES.len();
                totals[i] += timed(&conns[i], op, in_tx, start..(start + BLOCK).min(rows));
            }
        }
        for i in 0..SHAPES.len() {
            let per_row = totals[i].as_secs_f64() * 1e6 / rows as f64;
            ratios[i].push(per_row / (totals[0].as_secs_f64() * 1e6 / rows as f64));
            best[i] = best[i].min(per_row);
        }
    }
    let name = match op {
        Op::Update => "update",
        Op::Delete => "delete",
    };
    let tx = if in_tx { "100-row tx" } else { "autocommit" };
    let cells: Vec<String> = (0..SHAPES.len())
        .map(|i| {
            let mut r = ratios[i].clone();
            r.sort_by(f64::total_cmp);
            let median = r[r.len() / 2];
            match i {
                0 => format!("{:.2}", best[0]),
                _ => format!("{:+.0}% ({:.2})", (median - 1.0) * 100.0, best[i]),
            }
        })
        .collect();
    println!("| {name} | {tx} | {} |", cells.join(" | "));
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let rows = args.first().copied().unwrap_or(20_000);
    let reps = args.get(1).copied().unwrap_or(5);
    println!(
        "| statement | transaction | none µs/row | {} |",
        SHAPES[1..].join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(SHAPES.len()));
    for op in [Op::Update, Op::Delete] {
        for in_tx in [true, false] {
            cell(op, in_tx, rows, reps);
        }
    }
}
