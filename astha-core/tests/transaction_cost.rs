//! What transaction blocks and markers cost a reader (ignored; run with
//! `cargo test --release -p astha-core --test transaction_cost -- --ignored --nocapture`):
//! 100,000 changes of two tables read from the log in 500-row batches and encoded as
//! Debezium JSON lines, for writes in unmarked transactions (the baseline), in marked
//! transactions of 100 changes without markers, and the same with BEGIN/END markers;
//! and marked transactions of 10,000 changes, which every batch reads only part of.
//! Each figure is the best of 3 runs over the same database.

mod common;

use std::time::Instant;

use astha_core::format::markers::Markers;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use astha_core::log::{BatchLimits, LogReader};
use astha_core::transaction::Writer;
use common::*;

const CHANGES: i64 = 100_000;

/// A database holding `CHANGES` inserts into `a` and `b`, in transactions of `size`,
/// marked or not.
fn database(size: i64, marked: bool) -> TestDb {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, n INTEGER);
         CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT, n INTEGER);",
    )
    .unwrap();
    let capture = capture();
    capture.ensure_log(&conn).unwrap();
    capture.install(&conn, "a").unwrap();
    capture.install(&conn, "b").unwrap();
    let mut writer = Writer::new(conn, LOG).unwrap();
    let write = |conn: &rusqlite::Connection, first: i64| {
        for i in first..first + size {
            let table = if i % 3 == 0 { "b" } else { "a" };
            conn.execute(
                &format!("INSERT INTO {table} (id, v, n) VALUES (?1, 'some text', ?1)"),
                [i],
            )?;
        }
        Ok(())
    };
    for first in (0..CHANGES).step_by(size as usize) {
        if marked {
            writer.transaction(|conn| write(conn, first)).unwrap();
        } else {
            let tx = writer.conn().unchecked_transaction().unwrap();
            write(&tx, first).unwrap();
            tx.commit().unwrap();
        }
    }
    db
}

/// Changes per second read and encoded with `encoder` (best of 3).
fn rate(db: &TestDb, encoder: &Encoder) -> f64 {
    let conn = db.conn();
    let mut best = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let mut reader = LogReader::new(LOG);
        let mut pos = 0;
        let (mut changes, mut bytes) = (0usize, 0usize);
        loop {
            let limits = BatchLimits {
                max_rows: 500,
                max_bytes: usize::MAX,
            };
            let batch = reader.read(&conn, pos, limits, None).unwrap();
            if batch.is_empty() {
                break;
            }
            pos = batch.scanned_to;
            changes += batch.changes.len();
            bytes += encoder.json_lines(&batch.changes).len();
        }
        assert_eq!(changes as i64, CHANGES);
        assert!(bytes > 0);
        best = best.max(changes as f64 / started.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore]
fn transaction_blocks_and_markers_cost() {
    let source = SourceInfo {
        name: "shop".into(),
        db: "shop".into(),
        identity: "id:e".into(),
    };
    let plain = Encoder::new(EventFormat::Debezium, source);
    let markers = plain
        .clone()
        .with_transaction_events(Some(Markers::new(Some(vec!["a".into(), "b".into()]))));
    let unmarked = database(100, false);
    let marked = database(100, true);
    let large = database(10_000, true);
    let figures = [
        ("unmarked, 100-change transactions", rate(&unmarked, &plain)),
        ("marked, 100-change transactions", rate(&marked, &plain)),
        ("marked, 100-change, with markers", rate(&marked, &markers)),
        (
            "marked, 10,000-change, with markers",
            rate(&large, &markers),
        ),
    ];
    for (label, rate) in figures {
        println!("{label:<40} {rate:>10.0} changes/s");
    }
}
