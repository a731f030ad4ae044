//! What retention, replay and state-at cost (ignored; run with
//! `cargo test --release -p astha-core --test retention_cost -- --ignored --nocapture`).
//!
//! - cleanup of a 200,000-row backlog every slot is past, in the janitor's budgets:
//!   retention off (the baseline) beside `keep_for` with every row expired (the time
//!   scan runs before each budget);
//! - one janitor pass with nothing to remove: no retention (baseline), 200,000 young rows
//!   kept by `keep_for`, and 200,000 expired rows held by a slot at 0;
//! - replay of 200,000 changes beside the log reader's own read (baseline);
//! - state-at of a 100,000-row table with 0 and 20,000 changes after the point, beside
//!   reading the table's rows (baseline).
//!
//! Each figure is the best of 3.

mod common;

use std::time::{Duration, Instant};

use astha_core::log::BatchLimits;
use astha_core::retention::Retention;
use astha_core::slots::{self, CleanupBudget, SlotStart};
use astha_core::Value;
use common::*;
use rusqlite::Connection;

const ROWS: i64 = 200_000;

fn backlog(db: &TestDb) -> Connection {
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n REAL)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..ROWS {
        tx.execute(
            "INSERT INTO t VALUES (?1, 'some text of a row', ?1 * 0.5)",
            [i],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn
}

/// One janitor pass: the retention bound (when on), then one budget of cleanup.
fn pass(conn: &Connection, retention: &Retention) -> slots::Cleanup {
    let budget = CleanupBudget::default();
    let upto = if retention.is_off() {
        i64::MAX
    } else {
        retention
            .bound_within(
                conn,
                LOG,
                astha_core::change::unix_now_ms(),
                slots::slowest(conn).unwrap().unwrap_or(i64::MAX),
                budget.max_rows as u64,
            )
            .unwrap()
    };
    slots::cleanup_upto(conn, LOG, &budget, upto).unwrap()
}

fn best<F: FnMut() -> Duration>(mut run: F) -> Duration {
    (0..3).map(|_| run()).min().unwrap()
}

#[test]
#[ignore]
fn retention_replay_and_state_at_costs() {
    let expired = Retention {
        keep_for: Duration::from_millis(1),
        keep_rows: 0,
    };
    let young = Retention {
        keep_for: Duration::from_secs(3600),
        keep_rows: 0,
    };
    for (name, retention) in [
        ("off (baseline)", Retention::default()),
        ("keep_for, all expired", expired),
    ] {
        let took = best(|| {
            let db = TestDb::new();
            let conn = backlog(&db);
            slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let start = Instant::now();
            let mut deleted = 0;
            loop {
                let done = pass(&conn, &retention);
                deleted += done.deleted;
                if done.finished {
                    break;
                }
            }
            assert_eq!(deleted as i64, ROWS - 1);
            start.elapsed()
        });
        println!(
            "cleanup of {ROWS} rows, retention {name}: {:.1} ms",
            took.as_secs_f64() * 1e3
        );
    }

    let db = TestDb::new();
    let conn = backlog(&db);
    slots::create(&conn, LOG, "s", SlotStart::Beginning).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let per_pass = |retention: &Retention| {
        best(|| {
            let start = Instant::now();
            for _ in 0..1000 {
                assert_eq!(pass(&conn, retention).deleted, 0);
            }
            start.elapsed() / 1000
        })
    };
    println!(
        "a pass with nothing to remove, slot at 0 holding {ROWS} rows: retention off {:.1} us, \
         keep_for with all expired {:.1} us",
        per_pass(&Retention::default()).as_secs_f64() * 1e6,
        per_pass(&expired).as_secs_f64() * 1e6
    );
    slots::reset(&conn, "s", ROWS).unwrap();
    println!(
        "a pass with nothing to remove, slot at head, {ROWS} young rows kept by keep_for: {:.1} us",
        per_pass(&young).as_secs_f64() * 1e6
    );

    // Replay beside the reader's own read of the same rows.
    let limits = BatchLimits::default();
    let read = best(|| {
        let start = Instant::now();
        let mut reader = astha_core::log::LogReader::new(LOG);
        let mut after = 0;
        let mut n = 0;
        loop {
            let batch = reader.read(&conn, after, limits, None).unwrap();
            if batch.is_empty() {
                break;
            }
            n += batch.changes.len();
            after = batch.scanned_to;
        }
        assert_eq!(n as i64, ROWS);
        start.elapsed()
    });
    let replayed = best(|| {
        let start = Instant::now();
        let done =
            astha_core::replay::replay(&conn, LOG, 1, ROWS, None, limits, &mut |_| Ok(())).unwrap();
        assert_eq!(done.changes as i64, ROWS);
        start.elapsed()
    });
    println!(
        "{ROWS} changes: log reader {:.0}/s (baseline), replay {:.0}/s",
        ROWS as f64 / read.as_secs_f64(),
        ROWS as f64 / replayed.as_secs_f64()
    );

    // State-at: 100,000 rows, then 20,000 updates after the point.
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE s (id INTEGER PRIMARY KEY, v TEXT, n REAL)")
        .unwrap();
    capture().install(&conn, "s").unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..100_000i64 {
        tx.execute(
            "INSERT INTO s VALUES (?1, 'some text of a row', ?1 * 0.5)",
            [i],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let point = astha_core::log::head_lsn(&conn, LOG).unwrap();
    let scan = best(|| {
        let start = Instant::now();
        let mut stmt = conn.prepare("SELECT id, v, n FROM s").unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            let values: Vec<Value> = (0..3)
                .map(|i| Value::from_ref(row.get_ref(i).unwrap()))
                .collect();
            n += values.len();
        }
        assert_eq!(n, 300_000);
        start.elapsed()
    });
    let state = |conn: &Connection| {
        best(|| {
            let start = Instant::now();
            let found =
                astha_core::state_at::state_at(conn, LOG, "s", point, &mut |_| Ok(())).unwrap();
            assert_eq!(found.rows, 100_000);
            assert!(found.exact());
            start.elapsed()
        })
    };
    let none_after = state(&conn);
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..20_000i64 {
        tx.execute("UPDATE s SET n = -n, v = 'changed' WHERE id = ?1", [i * 5])
            .unwrap();
    }
    tx.commit().unwrap();
    let changed_after = state(&conn);
    println!(
        "100000-row table: read rows {:.1} ms (baseline), state-at with 0 later changes {:.1} ms, \
         with 20000 later updates {:.1} ms",
        scan.as_secs_f64() * 1e3,
        none_after.as_secs_f64() * 1e3,
        changed_after.as_secs_f64() * 1e3
    );
}
