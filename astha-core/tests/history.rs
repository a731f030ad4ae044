//! Retention, replay and state-as-of-a-point on histories written through real triggers.

mod common;

use std::time::{Duration, Instant};

use astha_core::log::BatchLimits;
use astha_core::retention::Retention;
use astha_core::slots::{self, CleanupBudget, SlotStart};
use astha_core::{CoreError, Value};
use common::*;
use proptest::prelude::*;
use rusqlite::Connection;

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// `INSERT OR IGNORE` into the keyed table.
    Insert(i64, Vec<Value>),
    Update(i64, Vec<Value>),
    Delete(i64),
    /// Into the table without a key (duplicates allowed).
    InsertLoose(Value),
    /// Changes every loose row holding the first value to the second.
    UpdateLoose(Value, Value),
    /// Deletes one loose row holding the value.
    DeleteLoose(Value),
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0i64..3).prop_map(Value::Integer),
        prop_oneof![Just(0.0), Just(-0.0), Just(1.0)].prop_map(Value::Real),
        Just(Value::Text("1".into())),
        Just(Value::Blob(vec![1])),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let row = || prop::collection::vec(arb_value(), 4);
    prop_oneof![
        3 => (0i64..6, row()).prop_map(|(id, v)| Step::Insert(id, v)),
        3 => (0i64..6, row()).prop_map(|(id, v)| Step::Update(id, v)),
        2 => (0i64..6).prop_map(Step::Delete),
        2 => small_value().prop_map(Step::InsertLoose),
        1 => (small_value(), small_value()).prop_map(|(a, b)| Step::UpdateLoose(a, b)),
        1 => small_value().prop_map(Step::DeleteLoose),
    ]
}

fn apply(conn: &Connection, step: &Step) {
    use rusqlite::params;
    match step {
        Step::Insert(id, v) => conn
            .execute(
                "INSERT OR IGNORE INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, v[0], v[1], v[2], v[3]],
            )
            .map(drop),
        Step::Update(id, v) => conn
            .execute(
                "UPDATE t SET a = ?2, b = ?3, c = ?4, d = ?5 WHERE id = ?1",
                params![id, v[0], v[1], v[2], v[3]],
            )
            .map(drop),
        Step::Delete(id) => conn.execute("DELETE FROM t WHERE id = ?1", [id]).map(drop),
        Step::InsertLoose(v) => conn
            .execute("INSERT INTO k VALUES (?1, ?1)", params![v])
            .map(drop),
        // `IS` with the value's own class: `0.0 IS -0.0` and `1 IS 1.0` are true in
        // SQLite, so the rows touched are decided by SQLite, as an application's are.
        Step::UpdateLoose(a, b) => conn
            .execute("UPDATE k SET u = ?2 WHERE u IS ?1", params![a, b])
            .map(drop),
        Step::DeleteLoose(v) => conn
            .execute(
                "DELETE FROM k WHERE rowid = (SELECT min(rowid) FROM k WHERE u IS ?1)",
                params![v],
            )
            .map(drop),
    }
    .unwrap();
}

/// A table's rows as a sorted list, with a sort key that tells every value apart.
fn content(conn: &Connection, table: &str) -> Vec<Vec<Value>> {
    let columns = astha_core::schema::live_columns(conn, table).unwrap().0;
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            (0..columns.len())
                .map(|i| Ok(Value::from_ref(r.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    sorted(rows)
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_cached_key(|r| {
        r.iter()
            .map(|v| match v {
                Value::Real(f) => format!("real:{:x}", f.to_bits()),
                other => format!("{}:{:?}", other.type_name(), other),
            })
            .collect::<Vec<_>>()
    });
    rows
}

fn same_rows(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.same_as(q)))
}

fn state(conn: &Connection, table: &str, lsn: i64) -> astha_core::Result<(Vec<Vec<Value>>, bool)> {
    let mut rows = Vec::new();
    let found = astha_core::state_at::state_at(conn, LOG, table, lsn, &mut |values| {
        rows.push(values.to_vec());
        Ok(())
    })?;
    assert_eq!(found.rows as usize, rows.len());
    Ok((sorted(rows), found.exact()))
}

fn history_db() -> (TestDb, Connection) {
    let db = TestDb::new();
    let conn = db.conn();
    // Columns of every affinity: none, none, REAL, TEXT; and a table without a key.
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a BLOB, b, c REAL, d TEXT);
         CREATE TABLE k (u, w);",
    )
    .unwrap();
    capture().install(&conn, "t").unwrap();
    capture().install(&conn, "k").unwrap();
    (db, conn)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The content of both tables is recorded right after every commit of a random
    /// history; the state rebuilt as of each recorded LSN is exactly that content.
    #[test]
    fn state_at_every_recorded_lsn_is_the_recorded_content(
        steps in prop::collection::vec(step(), 1..40),
        grouped in prop::collection::vec(any::<bool>(), 40),
    ) {
        let (_db, conn) = history_db();
        let mut recorded = vec![(0, content(&conn, "t"), content(&conn, "k"))];
        let mut i = 0;
        while i < steps.len() {
            // Some steps are committed two at a time, as one transaction.
            let n = if grouped[i] { 2 } else { 1 };
            let tx = conn.unchecked_transaction().unwrap();
            for step in steps.iter().skip(i).take(n) {
                apply(&tx, step);
            }
            tx.commit().unwrap();
            i += n;
            let head = astha_core::log::head_lsn(&conn, LOG).unwrap();
            recorded.push((head, content(&conn, "t"), content(&conn, "k")));
        }
        for (lsn, t, k) in &recorded {
            let (rows, exact) = state(&conn, "t", *lsn).unwrap();
            prop_assert!(exact);
            prop_assert!(same_rows(&rows, t), "t at {}: {:?} != {:?}", lsn, rows, t);
            let (rows, exact) = state(&conn, "k", *lsn).unwrap();
            prop_assert!(exact);
            prop_assert!(same_rows(&rows, k), "k at {}: {:?} != {:?}", lsn, rows, k);
        }
    }
}

#[test]
fn state_at_refuses_points_the_log_no_longer_reaches_and_marks_what_it_cannot_undo() {
    let (_db, conn) = history_db();
    for i in 0..5 {
        conn.execute("INSERT INTO t (id, a) VALUES (?1, ?1)", [i])
            .unwrap();
    }
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    slots::cleanup(&conn, LOG).unwrap();
    // Only LSN 5 is left: the state after 4 is still rebuilt (undo 5), before is not.
    assert_eq!(state(&conn, "t", 4).unwrap().0.len(), 4);
    let err = state(&conn, "t", 3).unwrap_err();
    assert!(
        matches!(err, CoreError::NotRetained { oldest_lsn: 5, .. }),
        "{err}"
    );
    assert!(state(&conn, "t", 99).is_err(), "past the head");
    // A row removed without its trigger cannot be matched by the undo of its insert.
    conn.execute_batch("DROP TRIGGER IF EXISTS \"__astha_t_delete\"")
        .ok();
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 't'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for name in triggers {
        conn.execute_batch(&format!("DROP TRIGGER \"{name}\""))
            .unwrap();
    }
    conn.execute("DELETE FROM t WHERE id = 4", []).unwrap();
    let (rows, exact) = state(&conn, "t", 4).unwrap();
    assert!(
        !exact,
        "the undo of LSN 5 found no row: not exact, and said so"
    );
    assert_eq!(rows.len(), 4);
}

#[test]
fn state_at_refuses_a_point_before_capture_began() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY);",
    )
    .unwrap();
    capture().install(&conn, "a").unwrap();
    conn.execute("INSERT INTO a VALUES (1)", []).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    conn.execute("INSERT INTO b VALUES (1)", []).unwrap();
    capture().install(&conn, "b").unwrap();
    let err = state(&conn, "b", 1).unwrap_err();
    assert!(
        err.to_string().contains("capture of b began after"),
        "{err}"
    );
    capture().uninstall(&conn, "a").unwrap();
    let err = state(&conn, "a", 1).unwrap_err();
    assert!(err.to_string().contains("a is not captured"), "{err}");
}

fn cleanup_with(conn: &Connection, retention: &Retention) -> usize {
    let bound = retention
        .bound(conn, LOG, astha_core::change::unix_now_ms())
        .unwrap();
    slots::cleanup_upto(conn, LOG, &CleanupBudget::default(), bound)
        .unwrap()
        .deleted
}

fn oldest(conn: &Connection) -> i64 {
    astha_core::retention::oldest(conn, LOG).unwrap().unwrap().0
}

#[test]
fn retention_by_rows_keeps_the_newest_rows_past_every_slot() {
    let (_db, conn) = history_db();
    for i in 0..10 {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [i]).unwrap();
    }
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    let keep = Retention {
        keep_for: Duration::ZERO,
        keep_rows: 3,
    };
    assert_eq!(cleanup_with(&conn, &keep), 7);
    assert_eq!(oldest(&conn), 8);
    // A slot behind still holds more than the policy would.
    for i in 10..15 {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [i]).unwrap();
    }
    assert_eq!(
        cleanup_with(&conn, &keep),
        3,
        "the slot at 10 holds 11 and on"
    );
    assert_eq!(oldest(&conn), 11);
    slots::advance(&conn, "s", 15).unwrap();
    assert_eq!(cleanup_with(&conn, &keep), 2);
    assert_eq!(oldest(&conn), 13);
    // Without retention, everything but the newest row goes.
    assert_eq!(cleanup_with(&conn, &Retention::default()), 2);
}

#[test]
fn retention_by_time_keeps_rows_until_they_are_old_enough() {
    let (_db, conn) = history_db();
    for i in 0..4 {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [i]).unwrap();
    }
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    let keep = Retention {
        keep_for: Duration::from_millis(300),
        keep_rows: 0,
    };
    // Just written: nothing is old enough (unless this machine stalled 300 ms since,
    // which only makes the wait below shorter).
    let first = cleanup_with(&conn, &keep);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut removed = first;
    while oldest(&conn) < 4 {
        assert!(Instant::now() < deadline, "rows were never removed");
        std::thread::sleep(Duration::from_millis(50));
        removed += cleanup_with(&conn, &keep);
    }
    assert_eq!(
        removed, 3,
        "all but the newest row, once older than keep_for"
    );
}

#[test]
fn replay_of_a_range_is_what_a_consumer_received_and_refuses_what_is_gone() {
    let (_db, conn) = history_db();
    for i in 0..20 {
        conn.execute("INSERT INTO t (id, a) VALUES (?1, ?1)", [i])
            .unwrap();
        if i % 3 == 0 {
            conn.execute("INSERT INTO k VALUES (?1, ?1)", [i]).unwrap();
        }
    }
    conn.execute("UPDATE t SET b = 'x' WHERE id % 2 = 0", [])
        .unwrap();
    // What a consumer received, through the log reader in small batches.
    let received = read_all(&conn, 0, 7);
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    let keep = Retention {
        keep_for: Duration::ZERO,
        keep_rows: 20,
    };
    cleanup_with(&conn, &keep);
    let first = oldest(&conn);
    let head = astha_core::log::head_lsn(&conn, LOG).unwrap();
    for (from, to, tables) in [
        (first, head, None),
        (first + 3, first + 9, None),
        (first, head, Some(vec!["k".to_string()])),
    ] {
        let mut got = Vec::new();
        let limits = BatchLimits {
            max_rows: 4,
            max_bytes: 1 << 20,
        };
        let done =
            astha_core::replay::replay(&conn, LOG, from, to, tables.as_deref(), limits, &mut |c| {
                got.push(c.to_json());
                Ok(())
            })
            .unwrap();
        let expected: Vec<serde_json::Value> = received
            .iter()
            .filter(|c| c.lsn >= from && c.lsn <= to)
            .filter(|c| {
                tables
                    .as_ref()
                    .is_none_or(|t| t.contains(&c.table.to_string()))
            })
            .map(|c| c.to_json())
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "{from}..={to} {tables:?}");
        assert_eq!(done.changes as usize, expected.len());
    }
    let err = astha_core::replay::replay(
        &conn,
        LOG,
        first - 1,
        head,
        None,
        BatchLimits::default(),
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(
        matches!(err, CoreError::NotRetained { oldest_lsn, .. } if oldest_lsn == first),
        "{err}"
    );
    assert!(
        err.to_string().contains("keep_rows"),
        "names the way out: {err}"
    );
}

/// A full disk with retention holding rows (the database's page limit stands in for the
/// disk): the captured write that needs a page fails whole, and once the retention is
/// lowered a cleanup frees pages that the next writes reuse.
#[test]
fn a_full_disk_fails_the_captured_write_whole_until_retention_is_lowered() {
    let (_db, conn) = history_db();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 40))
        .unwrap();
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    let keep_all = Retention {
        keep_for: Duration::ZERO,
        keep_rows: 1_000_000,
    };
    let blob = vec![7u8; 900];
    let mut written = 0i64;
    let err = loop {
        match conn.execute(
            "INSERT INTO t (id, a) VALUES (?1, ?2)",
            rusqlite::params![written, blob],
        ) {
            Ok(_) => {
                written += 1;
                slots::advance(&conn, "s", astha_core::log::head_lsn(&conn, LOG).unwrap()).unwrap();
                assert_eq!(cleanup_with(&conn, &keep_all), 0, "retention keeps them");
            }
            Err(err) => break err,
        }
        assert!(written < 10_000, "the page limit was never reached");
    };
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull),
        "{err}"
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rows, written,
        "the failed insert left neither its row nor a log row"
    );
    assert_eq!(astha_core::log::head_lsn(&conn, LOG).unwrap(), written);
    // The way out: keep less; the rows go and their pages are reused.
    let keep_less = Retention {
        keep_for: Duration::ZERO,
        keep_rows: 2,
    };
    assert!(written > 10, "{written}");
    assert!(cleanup_with(&conn, &keep_less) as i64 >= written - 3);
    for i in 0..5 {
        conn.execute(
            "INSERT INTO t (id, a) VALUES (?1, ?2)",
            rusqlite::params![written + i, blob],
        )
        .unwrap();
    }
}

/// A slot put anywhere inside the retained log is neither "behind the log" for the
/// integrity check nor "position lost" for `when_needed` snapshots; one step further
/// back it is both.
#[test]
fn the_integrity_checks_agree_with_a_slot_inside_the_retained_log() {
    let (_db, conn) = history_db();
    for i in 0..10 {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [i]).unwrap();
    }
    slots::create(&conn, LOG, "s", SlotStart::Head).unwrap();
    let keep = Retention {
        keep_for: Duration::ZERO,
        keep_rows: 4,
    };
    cleanup_with(&conn, &keep);
    let first = oldest(&conn);
    assert_eq!(first, 7);
    for position in [first - 1, first + 1, 10] {
        slots::reset(&conn, "s", position).unwrap();
        assert!(astha_core::log_state::slots_behind_log(&conn, LOG)
            .unwrap()
            .is_empty());
        assert!(!astha_core::snapshot::position_lost(&conn, LOG, position).unwrap());
        astha_core::retention::check_from_lsn(&conn, LOG, position + 1).unwrap();
    }
    slots::reset(&conn, "s", first - 2).unwrap();
    assert_eq!(
        astha_core::log_state::slots_behind_log(&conn, LOG).unwrap(),
        vec![("s".to_string(), first - 2, first)]
    );
    assert!(astha_core::snapshot::position_lost(&conn, LOG, first - 2).unwrap());
    assert!(astha_core::retention::check_from_lsn(&conn, LOG, first - 1).is_err());
}
