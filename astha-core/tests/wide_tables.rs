//! Wide tables: a table whose images need more value columns than
//! [`image::NARROW_WIDTH`] keeps them in the log's wide table, so the log stays as narrow
//! as the narrow tables' images. Real triggers, real rows: one LSN order across tables,
//! exact images, batches that end anywhere, dead letters, cleanup, restart, a log of an
//! earlier build.

mod common;

use std::collections::HashMap;

use astha_core::capture::InstallOutcome;
use astha_core::log::{BatchLimits, LogReader};
use astha_core::{dead_letter, image, log_layout, slots, Change, Operation, Value};
use common::*;
use rusqlite::{params_from_iter, Connection};

/// Columns of the wide table besides its id: every affinity, so UPDATE images carry
/// change masks too.
const WIDE: usize = 69;
const TYPES: [&str; 5] = ["TEXT", "INTEGER", "BLOB", "", "REAL"];

fn create_tables(conn: &Connection) {
    let cols: Vec<String> = (0..WIDE)
        .map(|j| format!("c{j} {}", TYPES[j % TYPES.len()]))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE w (id INTEGER PRIMARY KEY, {});
         CREATE TABLE n (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c);",
        cols.join(", ")
    ))
    .unwrap();
    capture().install(conn, "w").unwrap();
    capture().install(conn, "n").unwrap();
}

/// Value `j` of version `v` of row `i`: every storage class, NULLs, -0.0.
fn value(i: i64, j: usize, v: i64) -> Value {
    match (i + j as i64 + v) % 7 {
        0 => Value::Null,
        1 => Value::Integer(i * 1000 + j as i64 + v),
        2 => Value::Real(if j.is_multiple_of(2) {
            -0.0
        } else {
            i as f64 + 0.25
        }),
        3 => Value::Blob(vec![j as u8, 0, v as u8]),
        4 => Value::Integer(0),
        _ => Value::Text(format!("t-{i}-{j}-{v}")),
    }
}

/// An expected change: table, operation, before- and after-image.
type Expected = (
    &'static str,
    Operation,
    Option<Vec<Value>>,
    Option<Vec<Value>>,
);

/// A model of both tables: each row's values (id first), and the expected changes.
#[derive(Default)]
struct Model {
    rows: HashMap<(&'static str, i64), Vec<Value>>,
    expected: Vec<Expected>,
}

impl Model {
    fn width(table: &str) -> usize {
        if table == "w" {
            WIDE
        } else {
            3
        }
    }

    fn write(&mut self, conn: &Connection, table: &'static str, op: Operation, i: i64, v: i64) {
        let n = Self::width(table);
        let names: Vec<String> = match table {
            "w" => (0..n).map(|j| format!("c{j}")).collect(),
            _ => ["a", "b", "c"].map(String::from).to_vec(),
        };
        let mut row = vec![Value::Integer(i)];
        row.extend((0..n).map(|j| value(i, j, v)));
        let before = self.rows.get(&(table, i)).cloned();
        // The row as stored (column affinity converts some values).
        let stored = |conn: &Connection| -> Vec<Value> {
            conn.query_row(&format!("SELECT * FROM {table} WHERE id = ?1"), [i], |r| {
                (0..=n)
                    .map(|k| r.get_ref(k).map(Value::from_ref))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
        };
        match op {
            Operation::Insert => {
                let marks = vec!["?"; n + 1].join(", ");
                conn.execute(
                    &format!(
                        "INSERT INTO {table} (id, {}) VALUES ({marks})",
                        names.join(", ")
                    ),
                    params_from_iter(row.iter()),
                )
                .unwrap();
                let row = stored(conn);
                self.rows.insert((table, i), row.clone());
                self.expected.push((table, op, None, Some(row)));
            }
            Operation::Update => {
                let sets: Vec<String> = names
                    .iter()
                    .enumerate()
                    .map(|(k, c)| format!("{c} = ?{}", k + 2))
                    .collect();
                conn.execute(
                    &format!("UPDATE {table} SET {} WHERE id = ?1", sets.join(", ")),
                    params_from_iter(row.iter()),
                )
                .unwrap();
                let row = stored(conn);
                self.rows.insert((table, i), row.clone());
                self.expected.push((table, op, before, Some(row)));
            }
            Operation::Delete => {
                conn.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [i])
                    .unwrap();
                self.rows.remove(&(table, i));
                self.expected.push((table, op, before, None));
            }
            Operation::Read => unreachable!(),
        }
    }

    /// Mixed transactions on both tables, starting at version `v`.
    fn mixed(&mut self, conn: &Connection, v: i64) {
        for round in 0..6 {
            let tx = conn.unchecked_transaction().unwrap();
            let i = v * 100 + round;
            self.write(&tx, "n", Operation::Insert, i, v);
            self.write(&tx, "w", Operation::Insert, i, v);
            self.write(&tx, "w", Operation::Update, i, v + 1);
            self.write(&tx, "n", Operation::Update, i, v + 2);
            if round % 2 == 0 {
                self.write(&tx, "w", Operation::Delete, i, 0);
            }
            self.write(&tx, "n", Operation::Delete, i, 0);
            tx.commit().unwrap();
        }
    }
}

fn same(a: &Option<astha_core::Row>, b: &Option<Vec<Value>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.values().len() == b.len() && a.values().iter().zip(b).all(|(x, y)| x.same_as(y))
        }
        _ => false,
    }
}

fn assert_matches(changes: &[Change], expected: &Model) {
    assert_eq!(changes.len(), expected.expected.len());
    for (k, (c, (table, op, before, after))) in changes.iter().zip(&expected.expected).enumerate() {
        assert_eq!((&*c.table, c.op), (*table, *op), "change {k}");
        assert!(same(&c.before, before), "change {k} before: {:?}", c.before);
        assert!(same(&c.after, after), "change {k} after: {:?}", c.after);
        if k > 0 {
            assert_eq!(c.lsn, changes[k - 1].lsn + 1, "one LSN sequence, no gaps");
        }
    }
}

#[test]
fn narrow_and_wide_tables_share_one_lsn_order_with_exact_images() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    let mut model = Model::default();
    model.mixed(&conn, 1);
    // The log is as wide as the narrow table's UPDATE images; the wide one's are apart.
    let narrow_need = image::columns_needed(4, 1);
    assert_eq!(image::value_columns(&conn, LOG).unwrap(), narrow_need);
    let wide_table = log_layout::wide_table(LOG);
    assert!(image::value_columns(&conn, &wide_table).unwrap() > image::NARROW_WIDTH);
    // Batches of every size end anywhere, between and on wide changes.
    for batch in [1, 2, 3, 7, 256] {
        assert_matches(&read_all(&conn, 0, batch), &model);
    }
    // A table filter skips the other table's rows, wide rows included.
    for table in ["w", "n"] {
        let mut reader = LogReader::new(LOG);
        let filter = [table.to_string()];
        let (mut after, mut got) = (0, Vec::new());
        loop {
            let limits = BatchLimits {
                max_rows: 2,
                max_bytes: 1 << 20,
            };
            let b = reader.read(&conn, after, limits, Some(&filter)).unwrap();
            assert!(b.malformed.is_empty());
            if b.is_empty() {
                break;
            }
            after = b.scanned_to;
            got.extend(b.changes);
        }
        let only = Model {
            rows: HashMap::new(),
            expected: model
                .expected
                .iter()
                .filter(|e| e.0 == table)
                .cloned()
                .collect(),
        };
        assert_eq!(got.len(), only.expected.len());
        for (c, (_, op, before, after)) in got.iter().zip(&only.expected) {
            assert_eq!(c.op, *op);
            assert!(same(&c.before, before) && same(&c.after, after));
        }
    }
}

#[test]
fn restart_and_rollback_keep_one_order() {
    let db = TestDb::new();
    let mut model = Model::default();
    {
        let conn = db.conn();
        create_tables(&conn);
        model.mixed(&conn, 1);
        // A transaction that never commits (the process dies): neither row stays.
        conn.execute_batch("BEGIN").unwrap();
        conn.execute("INSERT INTO n (id, a) VALUES (999, 'lost')", [])
            .unwrap();
        conn.execute("INSERT INTO w (id, c0) VALUES (999, 'lost')", [])
            .unwrap();
    }
    let conn = db.conn();
    assert_eq!(
        capture().install(&conn, "w").unwrap(),
        InstallOutcome::Unchanged
    );
    model.mixed(&conn, 2);
    assert_matches(&read_all(&conn, 0, 5), &model);
}

#[test]
fn a_dead_letter_of_a_wide_change_replays_exactly() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    let mut model = Model::default();
    model.mixed(&conn, 1);
    let changes = read_all(&conn, 0, 256);
    let wide_update = changes
        .iter()
        .find(|c| &*c.table == "w" && c.op == Operation::Update)
        .unwrap();
    let failure = dead_letter::Failure {
        consumer: "sink",
        reason: "refused",
        attempts: 3,
        retriable: false,
    };
    assert!(dead_letter::record(&conn, LOG, wide_update.lsn, &failure).unwrap());
    let letters = dead_letter::list(&conn, Some("sink"), false).unwrap();
    assert_eq!(letters.len(), 1);
    let head = astha_core::log::head_lsn(&conn, LOG).unwrap();
    let lsn = dead_letter::replay(&conn, LOG, letters[0].id).unwrap();
    assert_eq!(lsn, head + 1);
    let replayed = read_all(&conn, head, 256);
    assert_eq!(replayed.len(), 1);
    let (a, b) = (&replayed[0], wide_update);
    assert_eq!((&a.table, a.op), (&b.table, b.op));
    let exact = |x: &Option<astha_core::Row>, y: &Option<astha_core::Row>| {
        same(x, &y.as_ref().map(|r| r.values().to_vec()))
    };
    assert!(exact(&a.before, &b.before) && exact(&a.after, &b.after));
    // The replay did not widen the log.
    assert_eq!(
        image::value_columns(&conn, LOG).unwrap(),
        image::columns_needed(4, 1)
    );
}

#[test]
fn cleanup_and_quarantine_remove_wide_rows_with_their_log_rows() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    let mut model = Model::default();
    model.mixed(&conn, 1);
    let changes = read_all(&conn, 0, 256);
    let wide_table = log_layout::wide_table(LOG);
    let wide_rows = |conn: &Connection| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {wide_table}"), [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let before = wide_rows(&conn);
    // Quarantine one wide change (not the newest): its wide row goes with it.
    let victim = changes.iter().find(|c| &*c.table == "w").unwrap().lsn;
    dead_letter::quarantine(&conn, LOG, &[(victim, "test".into())]).unwrap();
    assert_eq!(wide_rows(&conn), before - 1);
    // Cleanup up to the middle: the wide rows below the oldest log row go.
    let middle = changes[changes.len() / 2].lsn;
    slots::create(&conn, LOG, "s", slots::SlotStart::Beginning).unwrap();
    slots::advance(&conn, "s", middle).unwrap();
    slots::cleanup(&conn, LOG).unwrap();
    let oldest: i64 = conn
        .query_row(&format!("SELECT min(id) FROM {LOG}"), [], |r| r.get(0))
        .unwrap();
    let below: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {wide_table} WHERE id < ?1"),
            [oldest],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(below, 0);
    let left = read_all(&conn, middle, 3);
    let expected: Vec<&Change> = changes.iter().filter(|c| c.lsn > middle).collect();
    assert_eq!(left.len(), expected.len());
    for (a, b) in left.iter().zip(expected) {
        assert_eq!(a.lsn, b.lsn);
        assert_eq!(
            a.after.as_ref().map(|r| r.values().len()),
            b.after.as_ref().map(|r| r.values().len())
        );
    }
}

#[test]
fn a_wide_change_without_its_wide_row_is_malformed_not_null() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    conn.execute("INSERT INTO w (id, c0) VALUES (1, 'x')", [])
        .unwrap();
    conn.execute("INSERT INTO n (id, a) VALUES (1, 'y')", [])
        .unwrap();
    conn.execute_batch(&format!("DELETE FROM {}", log_layout::wide_table(LOG)))
        .unwrap();
    let b = LogReader::new(LOG)
        .read(&conn, 0, BatchLimits::default(), None)
        .unwrap();
    assert_eq!(b.changes.len(), 1, "the narrow change reads");
    assert_eq!(b.malformed.len(), 1);
    assert!(
        b.malformed[0].reason.contains("missing"),
        "{}",
        b.malformed[0].reason
    );
}

#[test]
fn a_log_widened_by_an_earlier_build_still_reads_and_new_wide_changes_go_apart() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    // What an earlier build did: the wide table's triggers write its values into the
    // log, widened for them.
    let schema = capture().captured_schema(&conn, "w").unwrap().unwrap();
    let needed = image::columns_needed_by(&schema);
    image::widen(&conn, LOG, needed).unwrap();
    for (trigger, op) in astha_core::capture::trigger_names("w").iter().zip([
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
    ]) {
        let (columns, values) = image::trigger_values(op, &schema);
        let event = match op {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            _ => "DELETE",
        };
        conn.execute_batch(&format!(
            "DROP TRIGGER \"{trigger}\"; CREATE TRIGGER \"{trigger}\" AFTER {event} ON w BEGIN \
             INSERT INTO {LOG} (ts, tbl, op, schema_id, {columns}) \
             VALUES (julianday('now'), 'w', '{}', {}, {values}); END",
            op.code(),
            schema.id
        ))
        .unwrap();
    }
    let mut model = Model::default();
    model.mixed(&conn, 1);
    let old_rows: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}", log_layout::wide_table(LOG)),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_rows, 0, "the old triggers wrote into the log");
    // This build regenerates them; old and new rows read in one order.
    assert_eq!(
        capture().install(&conn, "w").unwrap(),
        InstallOutcome::Regenerated
    );
    model.mixed(&conn, 2);
    assert_matches(&read_all(&conn, 0, 4), &model);

    // The log keeps the old width until narrowed, which waits for the old rows to go.
    assert_eq!(image::value_columns(&conn, LOG).unwrap(), needed);
    let err = capture().narrow_log(&conn).unwrap_err().to_string();
    assert!(err.contains("still holds values"), "{err}");
    assert_eq!(image::value_columns(&conn, LOG).unwrap(), needed);
    let changes = read_all(&conn, 0, 256);
    let last_old = changes[model.expected.len() / 2 - 1].lsn;
    slots::create(&conn, LOG, "s", slots::SlotStart::Beginning).unwrap();
    slots::advance(&conn, "s", last_old).unwrap();
    slots::cleanup(&conn, LOG).unwrap();
    let narrow = image::columns_needed(4, 1);
    assert_eq!(capture().narrow_log(&conn).unwrap(), needed - narrow);
    assert_eq!(image::value_columns(&conn, LOG).unwrap(), narrow);
    // What was left reads exactly, and new writes still capture.
    let mut rest = Model {
        rows: model.rows.clone(),
        expected: model.expected[model.expected.len() / 2..].to_vec(),
    };
    rest.mixed(&conn, 3);
    assert_matches(&read_all(&conn, last_old, 3), &rest);
}

#[test]
fn exact_replace_and_a_recreated_wide_table_log_exact_rows() {
    let db = TestDb::new();
    let conn = db.conn();
    let cols: Vec<String> = (0..WIDE).map(|j| format!("c{j}")).collect();
    conn.execute_batch(&format!(
        "CREATE TABLE w (id INTEGER PRIMARY KEY, {}, UNIQUE (c0));",
        cols.join(", ")
    ))
    .unwrap();
    let exact = capture().with_exact_replace(true);
    exact.install(&conn, "w").unwrap();
    let row = |i: i64, c0: i64| -> Vec<Value> {
        let mut r = vec![Value::Integer(i), Value::Integer(c0)];
        r.extend((1..WIDE).map(|j| value(i, j, 0)));
        r
    };
    let insert = format!(
        "INSERT OR REPLACE INTO w VALUES ({})",
        vec!["?"; WIDE + 1].join(", ")
    );
    let (r1, r2, r3) = (row(1, 10), row(2, 20), row(1, 20));
    for r in [&r1, &r2, &r3] {
        conn.execute(&insert, params_from_iter(r.iter())).unwrap();
    }
    // The third replaces row 1 (same id) and row 2 (same c0): two DELETEs, in the
    // order the rows were copied, then the INSERT.
    let changes = read_all(&conn, 0, 2);
    let ops: Vec<Operation> = changes.iter().map(|c| c.op).collect();
    use Operation::*;
    assert_eq!(ops, [Insert, Insert, Delete, Delete, Insert]);
    let deleted: Vec<Vec<Value>> = changes[2..4]
        .iter()
        .map(|c| c.before.as_ref().unwrap().values().to_vec())
        .collect();
    assert!(
        deleted.contains(&r1) && deleted.contains(&r2),
        "{deleted:?}"
    );
    assert_eq!(changes[4].after.as_ref().unwrap().values(), &r3[..]);

    // Dropped and created again by a connection without Astha: its rows are logged.
    let head = astha_core::log::head_lsn(&conn, LOG).unwrap();
    conn.execute_batch(&format!(
        "DROP TABLE w; CREATE TABLE w (id INTEGER PRIMARY KEY, {}, UNIQUE (c0));",
        cols.join(", ")
    ))
    .unwrap();
    let rows = [row(5, 1), row(3, 2), row(4, 3)];
    for r in &rows {
        conn.execute(&insert, params_from_iter(r.iter())).unwrap();
    }
    exact.install(&conn, "w").unwrap();
    let logged = read_all(&conn, head, 256);
    let ids: Vec<Value> = logged
        .iter()
        .map(|c| c.after.as_ref().unwrap().values()[0].clone())
        .collect();
    assert_eq!(ids, [3, 4, 5].map(Value::Integer), "in rowid order");
    for c in &logged {
        let id = c.after.as_ref().unwrap().values()[0].clone();
        let expected = rows.iter().find(|r| r[0] == id).unwrap();
        assert_eq!(c.after.as_ref().unwrap().values(), &expected[..]);
        assert!(c.incomplete.is_some(), "marked recreated");
    }
}

#[test]
fn a_wide_table_created_after_the_reader_started_is_read() {
    let db = TestDb::new();
    let conn = db.conn();
    create_tables(&conn);
    // A log of an earlier build, without the wide table: the reader learns it is absent.
    let wide_table = log_layout::wide_table(LOG);
    conn.execute_batch(&format!("DROP TABLE {wide_table}"))
        .unwrap();
    conn.execute("INSERT INTO n (id, a) VALUES (1, 'y')", [])
        .unwrap();
    let mut reader = LogReader::new(LOG);
    let first = reader.read(&conn, 0, BatchLimits::default(), None).unwrap();
    assert_eq!(first.changes.len(), 1);
    assert!(first.malformed.is_empty());
    // This build creates it again (the schema moves); the same reader reads its rows,
    // filtered or not.
    capture().ensure_log(&conn).unwrap();
    let mut model = Model::default();
    model.mixed(&conn, 1);
    let after = first.scanned_to;
    let mut got = Vec::new();
    let mut at = after;
    loop {
        let b = reader
            .read(&conn, at, BatchLimits::default(), None)
            .unwrap();
        assert!(b.malformed.is_empty(), "{:?}", b.malformed);
        if b.is_empty() {
            break;
        }
        at = b.scanned_to;
        got.extend(b.changes);
    }
    assert_matches(&got, &model);
    let filter = ["w".to_string()];
    let b = reader
        .read(&conn, after, BatchLimits::default(), Some(&filter))
        .unwrap();
    assert!(b.malformed.is_empty());
    let wide: Vec<_> = model.expected.iter().filter(|e| e.0 == "w").collect();
    assert_eq!(b.changes.len(), wide.len());
    for (c, (_, op, before, after)) in b.changes.iter().zip(wide) {
        assert_eq!(c.op, *op);
        assert!(same(&c.before, before) && same(&c.after, after));
    }
}
