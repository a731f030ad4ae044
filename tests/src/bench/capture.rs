//! Capture write overhead: what each trigger shape costs a writer, per row, over no
//! capture at all, for inserts, updates and deletes on 4-, 16- and 64-column tables,
//! one row per transaction (autocommit) and 100 rows per transaction.
//!
//! Each measurement uses a fresh database per shape (WAL, `synchronous=NORMAL`, Astha's
//! connection settings for every shape). For updates and deletes the table is first
//! filled with the same rows through the shape's own triggers (so the log or history
//! table holds the inserts, as it would in use) and checkpointed; only the measured
//! statements are timed.
//!
//! This machine is shared and noisy, so shapes run interleaved: the rows are cut into
//! blocks of 500 and every shape of a group does block 1, then every shape block 2, and
//! so on (rotating which shape goes first), so load that comes and goes hits them alike.
//! A group is the three floors (`none`, `key-only`, `copy`) and one other shape: each
//! shape is measured beside the floors, never beside the eleven others at once. (All
//! twelve interleaved, each with its own database, page cache and trigger programs,
//! made every image dearer than a writer of one database sees it: Astha's 16-column
//! UPDATE in 100-row transactions came out +143–150% there against +92–93% in a group
//! of four, and the row copy +85–89% against +110%; BENCHMARKS.md.) The floors' figures
//! are those of Astha's group. Each repetition gives every shape's time per row; a
//! shape's overhead is the median, over repetitions, of its time divided by the
//! no-capture time of the same repetition in its group, and its time per row the best
//! over repetitions.

use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::shapes::Shape;
use super::{create_wide_table, micros, wide_insert_sql, wide_row, Mode};

/// The statement measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    /// `UPDATE t SET c0 = ?, c1 = ? WHERE id = ?`: one TEXT and one INTEGER column.
    Update,
    Delete,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Rows per transaction: 1 (autocommit) or 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    Autocommit,
    Rows100,
}

impl Tx {
    pub fn name(self) -> &'static str {
        match self {
            Tx::Autocommit => "autocommit",
            Tx::Rows100 => "100-row tx",
        }
    }
}

/// One cell: a width, a statement, a transaction size and the figures of each shape.
#[derive(Debug, Clone)]
pub struct Cell {
    pub columns: usize,
    pub op: Op,
    pub tx: Tx,
    /// Best µs per row over the repetitions, in [`Shape::ALL`] order.
    pub micros: Vec<f64>,
    /// Median over the repetitions of the time per row divided by the no-capture time
    /// per row of the same repetition, in [`Shape::ALL`] order.
    pub ratios: Vec<f64>,
}

fn index_of(shape: Shape) -> usize {
    Shape::ALL
        .iter()
        .position(|s| *s == shape)
        .expect("known shape")
}

/// A shape's times per row over the repetitions, and each divided by the no-capture
/// time of the same repetition in its group.
#[derive(Debug, Clone, Default)]
struct Timings {
    micros: Vec<f64>,
    ratios: Vec<f64>,
}

impl Cell {
    /// A cell from each shape's timings, in [`Shape::ALL`] order.
    fn from_timings(columns: usize, op: Op, tx: Tx, timings: &[Timings]) -> Cell {
        let micros = timings
            .iter()
            .map(|t| t.micros.iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let ratios = timings
            .iter()
            .map(|t| {
                let mut r = t.ratios.clone();
                r.sort_by(f64::total_cmp);
                r[r.len() / 2]
            })
            .collect();
        Cell {
            columns,
            op,
            tx,
            micros,
            ratios,
        }
    }

    /// Overhead of `shape` over no capture, in percent (median of paired ratios).
    pub fn overhead(&self, shape: Shape) -> f64 {
        (self.ratios[index_of(shape)] - 1.0) * 100.0
    }

    /// Time per row `shape` adds over no capture, in µs (median ratio × best baseline).
    pub fn added_micros(&self, shape: Shape) -> f64 {
        (self.ratios[index_of(shape)] - 1.0) * self.micros[0]
    }

    /// Best time per row of `shape`, in µs.
    pub fn micros_of(&self, shape: Shape) -> f64 {
        self.micros[index_of(shape)]
    }
}

/// Sizes of the capture suite.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub rows: usize,
    pub reps: usize,
    pub columns: Vec<usize>,
}

impl CaptureOptions {
    /// The sizes of `mode`; `ASTHA_BENCH_CAPTURE_COLUMNS=16` (comma separated) runs
    /// only those table widths.
    pub fn for_mode(mode: Mode) -> Self {
        let mut options = Self::sizes(mode);
        if let Ok(list) = std::env::var("ASTHA_BENCH_CAPTURE_COLUMNS") {
            options.columns = list
                .split(',')
                .map(|w| {
                    w.trim()
                        .parse()
                        .expect("ASTHA_BENCH_CAPTURE_COLUMNS: widths")
                })
                .collect();
        }
        options
    }

    fn sizes(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self {
                rows: 400,
                reps: 1,
                columns: vec![4, 16, 64],
            },
            Mode::Full => Self {
                rows: 20_000,
                reps: 3,
                columns: vec![4, 16, 64],
            },
        }
    }
}

/// Rows per interleaving block.
const BLOCK: usize = 500;

/// Runs the whole suite and returns every cell.
pub fn run(options: &CaptureOptions) -> Vec<Cell> {
    let mut cells = Vec::new();
    let work = tempfile::tempdir().expect("temp dir");
    for &columns in &options.columns {
        let rows: Vec<Vec<Value>> = (0..options.rows as i64)
            .map(|i| {
                let mut row = vec![Value::Integer(i + 1)];
                row.extend(wide_row(i + 1, columns));
                row
            })
            .collect();
        let updates: Vec<(String, i64)> = (0..rows.len() as i64)
            .map(|i| (format!("updated-{i}-abcdef"), i * 7))
            .collect();
        // One database per shape, empty and filled, copied for every measurement.
        let templates: Vec<(std::path::PathBuf, std::path::PathBuf)> = Shape::ALL
            .iter()
            .map(|shape| {
                let empty = work
                    .path()
                    .join(format!("{}-{columns}-empty.db", shape.name()));
                let filled = work
                    .path()
                    .join(format!("{}-{columns}-filled.db", shape.name()));
                template(&empty, *shape, columns, &[]);
                template(&filled, *shape, columns, &rows);
                (empty, filled)
            })
            .collect();
        for op in [Op::Insert, Op::Update, Op::Delete] {
            for tx in [Tx::Autocommit, Tx::Rows100] {
                let input = Input {
                    templates: &templates,
                    op,
                    tx,
                    columns,
                    rows: &rows,
                    updates: &updates,
                };
                let mut timings = vec![Timings::default(); Shape::ALL.len()];
                for group in groups() {
                    let reps = measure_group(&input, &group, options.reps);
                    // Each shape's figures from its own group, the floors' from Astha's.
                    let astha = group.contains(&Shape::Astha);
                    for (k, &shape) in group.iter().enumerate() {
                        if astha || !FLOORS.contains(&shape) {
                            timings[index_of(shape)] = Timings {
                                micros: reps.iter().map(|r| r[k]).collect(),
                                ratios: reps.iter().map(|r| r[k] / r[0]).collect(),
                            };
                        }
                    }
                }
                let cell = Cell::from_timings(columns, op, tx, &timings);
                let overheads: Vec<String> = Shape::ALL[1..]
                    .iter()
                    .map(|s| format!("{} {:+.0}%", s.name(), cell.overhead(*s)))
                    .collect();
                eprintln!(
                    "capture {columns:>2} cols {:<6} {:<10} none {:.2} µs, {}",
                    op.name(),
                    tx.name(),
                    cell.micros[0],
                    overheads.join(", "),
                );
                cells.push(cell);
            }
        }
    }
    cells
}

/// The floors every group holds.
const FLOORS: [Shape; 3] = [Shape::None, Shape::KeyOnly, Shape::Copy];

/// The groups measured together: the floors (`none` first) and one other shape each.
fn groups() -> Vec<Vec<Shape>> {
    Shape::ALL
        .iter()
        .filter(|s| !FLOORS.contains(s))
        .map(|&other| [&FLOORS[..], &[other]].concat())
        .collect()
}

/// What one cell measures.
struct Input<'a> {
    templates: &'a [(std::path::PathBuf, std::path::PathBuf)],
    op: Op,
    tx: Tx,
    columns: usize,
    rows: &'a [Vec<Value>],
    updates: &'a [(String, i64)],
}

/// Times per row of the shapes of `group` (`none` first), interleaved in blocks, one
/// vector per repetition in `group`'s order.
fn measure_group(input: &Input<'_>, group: &[Shape], reps: usize) -> Vec<Vec<f64>> {
    let rows = input.rows;
    let mut out = Vec::new();
    for rep in 0..reps {
        let dir = tempfile::tempdir().expect("temp dir");
        let conns: Vec<Connection> = group
            .iter()
            .map(|&shape| {
                let (empty, filled) = &input.templates[index_of(shape)];
                let path = dir.path().join(format!("{}.db", shape.name()));
                let from = if input.op == Op::Insert {
                    empty
                } else {
                    filled
                };
                std::fs::copy(from, &path).expect("copy template");
                astha_core::db::open(&path).expect("open copy")
            })
            .collect();
        let sql = statement(input.op, input.columns);
        let mut totals = vec![Duration::ZERO; conns.len()];
        for (b, block) in (0..rows.len()).step_by(BLOCK).enumerate() {
            let range = block..(block + BLOCK).min(rows.len());
            for k in 0..conns.len() {
                let i = (k + b + rep) % conns.len();
                let start = Instant::now();
                timed(
                    &conns[i],
                    &sql,
                    input.op,
                    input.tx,
                    &rows[range.clone()],
                    &input.updates[range.clone()],
                )
                .expect("measured statements");
                totals[i] += start.elapsed();
            }
        }
        out.push(
            totals
                .iter()
                .map(|t| micros(*t) / rows.len() as f64)
                .collect(),
        );
    }
    out
}

/// Creates a database file with the table and the shape's capture, filled with `rows`,
/// checkpointed and with its WAL removed, ready to be copied.
fn template(path: &std::path::Path, shape: Shape, columns: usize, rows: &[Vec<Value>]) {
    let conn = astha_core::db::open(path).expect("open database");
    create_wide_table(&conn, "t", columns).expect("create table");
    shape.install(&conn, "t").expect("install capture");
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut stmt = conn.prepare(&wide_insert_sql("t", columns)).unwrap();
        for row in rows {
            stmt.execute(params_from_iter(row.iter())).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    // Leaving WAL mode folds everything into the main file; `open` turns it back on.
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
        .unwrap();
}

fn statement(op: Op, columns: usize) -> String {
    match op {
        Op::Insert => wide_insert_sql("t", columns),
        Op::Update => "UPDATE t SET c0 = ?1, c1 = ?2 WHERE id = ?3".into(),
        Op::Delete => "DELETE FROM t WHERE id = ?1".into(),
    }
}

fn timed(
    conn: &Connection,
    sql: &str,
    op: Op,
    tx: Tx,
    rows: &[Vec<Value>],
    updates: &[(String, i64)],
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut begin = conn.prepare_cached("BEGIN")?;
    let mut commit = conn.prepare_cached("COMMIT")?;
    for (i, row) in rows.iter().enumerate() {
        if tx == Tx::Rows100 && i % 100 == 0 {
            begin.execute([])?;
        }
        match op {
            Op::Insert => stmt.execute(params_from_iter(row.iter()))?,
            Op::Update => stmt.execute((&updates[i].0, updates[i].1, &row[0]))?,
            Op::Delete => stmt.execute([&row[0]])?,
        };
        if tx == Tx::Rows100 && (i % 100 == 99 || i + 1 == rows.len()) {
            commit.execute([])?;
        }
    }
    Ok(())
}

/// The suite's section of the report, in Markdown.
pub fn report(cells: &[Cell], options: &CaptureOptions) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "### Capture write overhead ({} rows, {} repetitions, each shape interleaved with the floors in blocks of 500 rows)\n\n\
         Time per row with no capture (best repetition), then each shape's overhead over it \
         (median over repetitions of the ratio to no capture in the same repetition, measured \
         in a group of four: `none`, `key-only`, `copy` and the shape; the floors' figures \
         are those of Astha's group) and, in brackets, its own best time per row in µs.\n\n",
        options.rows, options.reps
    ));
    let shapes = &Shape::ALL[1..];
    out.push_str("| columns | statement | transaction | none µs/row |");
    for s in shapes {
        out.push_str(&format!(" {} |", s.name()));
    }
    out.push_str("\n|---|---|---|---|");
    for _ in shapes {
        out.push_str("---|");
    }
    out.push('\n');
    for c in cells {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} |",
            c.columns,
            c.op.name(),
            c.tx.name(),
            c.micros[0]
        ));
        for s in shapes {
            out.push_str(&format!(
                " {:+.0}% ({:.2}) |",
                c.overhead(*s),
                c.micros_of(*s)
            ));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&linearity(cells));
    out
}

/// Astha's added cost per column, by width: flat or falling means no cliff.
fn linearity(cells: &[Cell]) -> String {
    let mut out = String::from(
        "Astha's added time per row divided by the number of columns (id included), by \
         width; a flat or falling figure means cost grows at most linearly:\n\n\
         | statement | transaction |",
    );
    let mut widths: Vec<usize> = cells.iter().map(|c| c.columns).collect();
    widths.dedup();
    for w in &widths {
        out.push_str(&format!(" {w} cols ns/col |"));
    }
    out.push_str("\n|---|---|");
    for _ in &widths {
        out.push_str("---|");
    }
    out.push('\n');
    for op in [Op::Insert, Op::Update, Op::Delete] {
        for tx in [Tx::Autocommit, Tx::Rows100] {
            out.push_str(&format!("| {} | {} |", op.name(), tx.name()));
            for w in &widths {
                let cell = cells
                    .iter()
                    .find(|c| c.columns == *w && c.op == op && c.tx == tx);
                match cell {
                    Some(c) => {
                        let added = c.added_micros(Shape::Astha);
                        out.push_str(&format!(" {:.0} |", added * 1000.0 / (*w + 1) as f64));
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_is_measured_once_beside_the_floors() {
        let groups = groups();
        for group in &groups {
            assert_eq!(
                group[..FLOORS.len()],
                FLOORS,
                "the floors first, none first"
            );
            assert_eq!(group.len(), FLOORS.len() + 1);
        }
        let others: Vec<Shape> = groups.iter().map(|g| g[FLOORS.len()]).collect();
        let expected: Vec<Shape> = Shape::ALL
            .iter()
            .copied()
            .filter(|s| !FLOORS.contains(s))
            .collect();
        assert_eq!(others, expected);
        // The floors' figures come from Astha's group: there is one.
        assert_eq!(others.iter().filter(|s| **s == Shape::Astha).count(), 1);
    }
}
