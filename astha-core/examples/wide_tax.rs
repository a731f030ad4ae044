//! What a captured 64-column table costs a 4-column table's inserts (issue 20), with
//! only astha-core built: the capture suite's method (tests/src/bench/capture.rs) for
//! one cell — 4 columns (id + c0..c3, TEXT/INTEGER alternating), INSERT, 100-row
//! transactions, WAL + `synchronous=NORMAL` (`astha_core::db::open`) — and the shapes
//! `none`, `key-only`, `astha`, `astha-wide` (a 64-column table captured too), and
//! `astha-wide-log` (the log as wide as that table's images, as before issue 20: the
//! `astha` shape with the log widened to 130 value columns). Shapes run interleaved in
//! blocks of 500 rows; overhead = median over repetitions of time / no-capture time.
//!
//! cargo run --release -p astha-core --example wide_tax -- [rows] [reps]

use std::time::{Duration, Instant};

use astha_core::capture::Capture;
use rusqlite::{params_from_iter, types::Value, Connection};

#[path = "../../tests/src/bench/table.rs"]
mod table;

use table::{create_wide_table, wide_insert_sql, wide_row};

const SHAPES: [&str; 5] = ["none", "key-only", "astha", "astha-wide", "astha-wide-log"];
const BLOCK: usize = 500;

fn setup(conn: &Connection, shape: &str) {
    create_wide_table(conn, "t", 4).unwrap();
    let capture = Capture::new("__cdc_log");
    match shape {
        "none" => {}
        "key-only" => conn
            .execute_batch(
                "CREATE TABLE key_log (id INTEGER PRIMARY KEY, tbl TEXT, op TEXT, rid INTEGER);
                 CREATE TRIGGER k AFTER INSERT ON t BEGIN
                   INSERT INTO key_log (tbl, op, rid) VALUES ('t', 'I', NEW.rowid); END;",
            )
            .unwrap(),
        "astha" => {
            capture.install(conn, "t").unwrap();
        }
        "astha-wide" => {
            create_wide_table(conn, "wide_neighbour", 64).unwrap();
            capture.install(conn, "wide_neighbour").unwrap();
            capture.install(conn, "t").unwrap();
        }
        "astha-wide-log" => {
            capture.install(conn, "t").unwrap();
            astha_core::image::widen(conn, "__cdc_log", 130).unwrap();
        }
        _ => unreachable!(),
    }
}

fn row(i: i64) -> Vec<Value> {
    let mut r = vec![Value::Integer(i)];
    r.extend(wide_row(i, 4));
    r
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let rows = args.first().copied().unwrap_or(20_000);
    let reps = args.get(1).copied().unwrap_or(5);
    let sql = &wide_insert_sql("t", 4);
    let data: Vec<Vec<Value>> = (1..=rows as i64).map(row).collect();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut best = vec![f64::MAX; SHAPES.len()];
    for rep in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let conns: Vec<Connection> = SHAPES
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let conn = astha_core::db::open(&dir.path().join(format!("{i}.db"))).unwrap();
                setup(&conn, shape);
                conn
            })
            .collect();
        let mut totals = vec![Duration::ZERO; SHAPES.len()];
        for (b, start) in (0..rows).step_by(BLOCK).enumerate() {
            for k in 0..SHAPES.len() {
                let i = (k + b + rep) % SHAPES.len();
                let conn = &conns[i];
                let t0 = Instant::now();
                for chunk in data[start..(start + BLOCK).min(rows)].chunks(100) {
                    let tx = conn.unchecked_transaction().unwrap();
                    {
                        let mut stmt = tx.prepare_cached(sql).unwrap();
                        for r in chunk {
                            stmt.execute(params_from_iter(r.iter())).unwrap();
                        }
                    }
                    tx.commit().unwrap();
                }
                totals[i] += t0.elapsed();
            }
        }
        let per_row: Vec<f64> = totals
            .iter()
            .map(|t| t.as_secs_f64() * 1e6 / rows as f64)
            .collect();
        for i in 0..SHAPES.len() {
            ratios[i].push(per_row[i] / per_row[0]);
            best[i] = best[i].min(per_row[i]);
        }
    }
    println!("| shape | overhead over none (median of {reps}) | best µs/row |");
    println!("|---|---|---|");
    for i in 0..SHAPES.len() {
        let mut r = ratios[i].clone();
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        println!(
            "| {} | {:+.0}% | {:.2} |",
            SHAPES[i],
            (median - 1.0) * 100.0,
            best[i]
        );
    }
}
