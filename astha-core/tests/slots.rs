//! Slots, cleanup and bootstrap under concurrent writers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use astha_core::bootstrap::bootstrap_slot;
use astha_core::log::head_lsn;
use astha_core::slots::{self, SlotStart};
use astha_core::Value;
use common::*;

fn setup(db: &TestDb) -> rusqlite::Connection {
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn
}

#[test]
fn slots_move_forward_only_and_report_lag() {
    let db = TestDb::new();
    let conn = setup(&db);
    for i in 0..10 {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [i]).unwrap();
    }
    let slot = slots::create(&conn, LOG, "a", SlotStart::Beginning).unwrap();
    assert_eq!(slot.position, 0);
    assert!(matches!(
        slots::create(&conn, LOG, "a", SlotStart::Head),
        Err(astha_core::CoreError::SlotExists(_))
    ));
    assert_eq!(slots::advance(&conn, "a", 7).unwrap(), 7);
    assert_eq!(slots::advance(&conn, "a", 3).unwrap(), 7, "never backward");
    let lag = slots::lag(&conn, LOG, "a", i64::MAX / 2).unwrap();
    assert_eq!((lag.position, lag.head, lag.events), (7, 10, 3));
    assert!(lag.oldest_age_ms > 0);
    let head = slots::create(&conn, LOG, "b", SlotStart::Head).unwrap();
    assert_eq!(head.position, 10);
    assert_eq!(slots::lag(&conn, LOG, "b", 0).unwrap().events, 0);
    assert!(slots::drop_slot(&conn, "b").unwrap());
    assert!(!slots::drop_slot(&conn, "b").unwrap());
}

#[test]
fn cleanup_waits_for_the_slowest_slot_and_never_reuses_an_lsn() {
    let db = TestDb::new();
    let conn = setup(&db);
    // No slot: nothing may be deleted.
    for i in 0..5 {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [i]).unwrap();
    }
    assert_eq!(slots::cleanup(&conn, LOG).unwrap(), 0);
    slots::create(&conn, LOG, "fast", SlotStart::Beginning).unwrap();
    slots::create(&conn, LOG, "slow", SlotStart::Beginning).unwrap();
    slots::advance(&conn, "fast", 5).unwrap();
    slots::advance(&conn, "slow", 2).unwrap();
    assert_eq!(slots::cleanup(&conn, LOG).unwrap(), 2);
    assert_eq!(
        read_all(&conn, 2, 10).len(),
        3,
        "rows after the slowest slot stay"
    );
    // Everyone is past everything: all rows but the newest go, and the next LSN is new.
    slots::advance(&conn, "slow", 5).unwrap();
    assert_eq!(slots::cleanup(&conn, LOG).unwrap(), 2);
    assert_eq!(head_lsn(&conn, LOG).unwrap(), 5);
    conn.execute("INSERT INTO t (v) VALUES (99)", []).unwrap();
    assert_eq!(head_lsn(&conn, LOG).unwrap(), 6);
    // Reopen: the guarantee is in the data, not in memory.
    drop(conn);
    let conn = db.conn();
    slots::advance(&conn, "fast", 6).unwrap();
    slots::advance(&conn, "slow", 6).unwrap();
    slots::cleanup(&conn, LOG).unwrap();
    conn.execute("INSERT INTO t (v) VALUES (100)", []).unwrap();
    assert_eq!(head_lsn(&conn, LOG).unwrap(), 7);
}

/// Writers commit on other threads while a consumer reads, advances its slot and cleans
/// up; every change arrives exactly once, in order.
#[test]
fn slot_consumer_under_concurrent_writers_sees_every_change_in_order() {
    let db = TestDb::new();
    let conn = setup(&db);
    slots::create(&conn, LOG, "c", SlotStart::Head).unwrap();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = db.path.clone();
            std::thread::spawn(move || {
                let conn = astha_core::db::open(&path).unwrap();
                for i in 0..300 {
                    conn.execute("INSERT INTO t (v) VALUES (?1)", [w * 1000 + i])
                        .unwrap();
                }
            })
        })
        .collect();
    let mut reader = astha_core::log::LogReader::new(LOG);
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let limits = astha_core::log::BatchLimits {
        max_rows: 64,
        max_bytes: 1 << 20,
    };
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let position = slots::get(&conn, "c").unwrap().unwrap().position;
        let batch = reader.read(&conn, position, limits, None).unwrap();
        for change in &batch.changes {
            let v = match change.after.as_ref().unwrap().get("v") {
                Some(Value::Integer(v)) => *v,
                other => panic!("unexpected {other:?}"),
            };
            seen.push((change.lsn, v));
        }
        slots::advance(&conn, "c", batch.scanned_to).unwrap();
        slots::cleanup(&conn, LOG).unwrap();
        if done && batch.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 900);
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "LSNs strictly increase"
    );
    for w in 0..3 {
        let mine: Vec<i64> = seen.iter().map(|s| s.1).filter(|v| v / 1000 == w).collect();
        assert_eq!(
            mine,
            (0..300).map(|i| w * 1000 + i).collect::<Vec<_>>(),
            "writer {w} in order"
        );
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "cleanup keeps only the newest row");
}

/// A snapshot taken while writers run, plus the changes after its LSN, rebuilds exactly
/// the final table: no gap, no duplicate.
#[test]
fn bootstrap_with_concurrent_writes_has_no_gap_and_no_duplicate() {
    let db = TestDb::new();
    let conn = setup(&db);
    for i in 0..500 {
        conn.execute("INSERT INTO t (id, v) VALUES (?1, 0)", [i])
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let path = db.path.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let conn = astha_core::db::open(&path).unwrap();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) || n < 2000 {
                let id = n % 700;
                conn.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET v = ?2",
                    [id, n],
                )
                .unwrap();
                if n % 7 == 0 {
                    conn.execute("DELETE FROM t WHERE id = ?1", [(n * 13) % 700])
                        .unwrap();
                }
                n += 1;
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut state = std::collections::BTreeMap::new();
    let lsn = bootstrap_slot(&conn, LOG, "boot", &["t".to_string()], |_, row| {
        let id = match row.get("id") {
            Some(Value::Integer(i)) => *i,
            _ => unreachable!(),
        };
        assert!(
            state.insert(id, row.get("v").cloned().unwrap()).is_none(),
            "row twice in snapshot"
        );
        Ok(())
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(slots::get(&conn, "boot").unwrap().unwrap().position, lsn);
    for change in read_all(&conn, lsn, 128) {
        let id = match change.row().unwrap().get("id") {
            Some(Value::Integer(i)) => *i,
            _ => unreachable!(),
        };
        match change.op {
            astha_core::Operation::Delete => {
                assert!(state.remove(&id).is_some(), "delete of a row not in state");
            }
            astha_core::Operation::Insert => {
                assert!(state
                    .insert(id, change.after.unwrap().get("v").cloned().unwrap())
                    .is_none());
            }
            astha_core::Operation::Update => {
                assert!(state
                    .insert(id, change.after.unwrap().get("v").cloned().unwrap())
                    .is_some());
            }
            astha_core::Operation::Read => unreachable!("the log holds no snapshot rows"),
        }
    }
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let actual: std::collections::BTreeMap<i64, Value> = stmt
        .query_map([], |r| Ok((r.get(0)?, Value::Integer(r.get(1)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(state, actual);
}

/// The commit hook replaces SQLite's auto-checkpoint (registering a `wal_hook` switches
/// it off), so it must checkpoint itself: the WAL stays near 1000 pages however much is
/// written, instead of growing with every commit.
#[test]
fn writer_connections_keep_checkpointing_the_wal() {
    let db = TestDb::new();
    let conn = astha_core::db::open_writer(&db.path).unwrap();
    conn.execute_batch("CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB)")
        .unwrap();
    let page = vec![7u8; 4000];
    for _ in 0..4000 {
        conn.execute("INSERT INTO big (b) VALUES (?1)", [&page])
            .unwrap();
    }
    let wal = std::fs::metadata(db.path.with_extension("db-wal"))
        .unwrap()
        .len();
    // 4000 commits of a page each: without checkpoints the WAL would pass 16 MB.
    assert!(wal < 8 << 20, "WAL grew to {wal} bytes");
}

/// `log_ends` reads the two ends of the log, not the rows between them: the SQLite
/// instructions it runs do not grow with the log (a `min` and `max` in one statement
/// would), and it follows cleanup.
#[test]
fn log_ends_costs_the_same_whatever_the_depth() {
    use astha_core::log::{log_ends, log_stats};
    let db = TestDb::new();
    let conn = setup(&db);
    let steps = |conn: &rusqlite::Connection, f: &dyn Fn(&rusqlite::Connection)| {
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = count.clone();
        conn.progress_handler(
            1,
            Some(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                false
            }),
        );
        f(conn);
        conn.progress_handler(1, None::<fn() -> bool>);
        count.load(Ordering::Relaxed)
    };
    let now = i64::MAX / 2;
    conn.execute("INSERT INTO t (v) VALUES (0)", []).unwrap();
    // Once first, so the shallow count does not include preparing cached statements.
    log_ends(&conn, LOG, now).unwrap();
    let shallow = steps(&conn, &|c| {
        log_ends(c, LOG, now).unwrap();
    });
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t (v) SELECT i FROM n",
    )
    .unwrap();
    let deep = steps(&conn, &|c| {
        log_ends(c, LOG, now).unwrap();
    });
    assert_eq!(shallow, deep, "log_ends read rows between the ends");
    // What `/metrics` ran before: one statement with min and max, which visits every row.
    let scanned = steps(&conn, &|c| {
        c.query_row(
            "SELECT count(*), min(id), max(id) FROM __cdc_log",
            [],
            |_| Ok(()),
        )
        .unwrap();
    });
    assert!(
        scanned > 10 * deep,
        "the test measures nothing: {scanned} vs {deep}"
    );

    let ends = log_ends(&conn, LOG, now).unwrap();
    assert_eq!(
        (ends.first_lsn, ends.head_lsn, ends.span()),
        (1, 20001, 20001)
    );
    assert!(ends.oldest_age_ms > 0);
    slots::create(&conn, LOG, "s", SlotStart::Beginning).unwrap();
    slots::advance(&conn, "s", 15000).unwrap();
    slots::cleanup(&conn, LOG).unwrap();
    let ends = log_ends(&conn, LOG, now).unwrap();
    assert_eq!((ends.first_lsn, ends.span()), (15001, 5001));
    assert_eq!(ends.span(), log_stats(&conn, LOG, now).unwrap().rows);
    // An empty log: only with the guard that keeps the newest row gone.
    conn.execute_batch(&format!(
        "DROP TRIGGER \"{}\"; DELETE FROM __cdc_log",
        astha_core::log_state::guard_name(LOG)
    ))
    .unwrap();
    assert_eq!(log_ends(&conn, LOG, now).unwrap(), Default::default());
}
