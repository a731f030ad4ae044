//! Capture: exact images for every storage class, hostile names, idempotent install,
//! schema changes mid-stream.

mod common;

use astha_core::capture::InstallOutcome;
use astha_core::{Operation, Value};
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary rows of every storage class, in columns of every affinity, are written,
    /// updated and deleted through real triggers, read back and compared bit for bit.
    #[test]
    fn every_value_round_trips(rows in prop::collection::vec(prop::collection::vec(arb_value(), 5), 1..8)) {
        let db = TestDb::new();
        let conn = db.conn();
        // Columns without type affinity (BLOB or no declared type) store every value as
        // given, so the capture must give back exactly what was written.
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a BLOB, b, c BLOB, d, e)").unwrap();
        capture().install(&conn, "t").unwrap();
        let mut written = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            conn.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![i as i64, row[0], row[1], row[2], row[3], row[4]]).unwrap();
            written.push(row.clone());
        }
        // Update every row to its reverse, then delete it.
        for (i, row) in rows.iter().enumerate() {
            let r: Vec<&Value> = row.iter().rev().collect();
            conn.execute("UPDATE t SET a=?2, b=?3, c=?4, d=?5, e=?6 WHERE id=?1",
                rusqlite::params![i as i64, r[0], r[1], r[2], r[3], r[4]]).unwrap();
            conn.execute("DELETE FROM t WHERE id=?1", [i as i64]).unwrap();
        }
        let changes = read_all(&conn, 0, 3);
        prop_assert_eq!(changes.len(), rows.len() * 3);
        let same = |img: &astha_core::Row, id: usize, vals: &[&Value]| {
            img.values()[0].same_as(&Value::Integer(id as i64))
                && img.values()[1..].iter().zip(vals).all(|(a, b)| a.same_as(b))
        };
        for (i, row) in rows.iter().enumerate() {
            let fwd: Vec<&Value> = row.iter().collect();
            let rev: Vec<&Value> = row.iter().rev().collect();
            let ins = &changes[i];
            prop_assert_eq!(ins.op, Operation::Insert);
            prop_assert!(same(ins.after.as_ref().unwrap(), i, &fwd), "insert {:?} vs {:?}", ins.after, row);
            let upd = &changes[rows.len() + 2 * i];
            prop_assert_eq!(upd.op, Operation::Update);
            prop_assert!(same(upd.before.as_ref().unwrap(), i, &fwd));
            prop_assert!(same(upd.after.as_ref().unwrap(), i, &rev));
            let del = &changes[rows.len() + 2 * i + 1];
            prop_assert_eq!(del.op, Operation::Delete);
            prop_assert!(same(del.before.as_ref().unwrap(), i, &rev));
            prop_assert!(del.after.is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Many more REALs than the row test: 500 random bit patterns per case, in a REAL
    /// column and in a column without affinity, inserted and updated.
    #[test]
    fn every_real_round_trips(reals in prop::collection::vec(any_real(), 500)) {
        let db = TestDb::new();
        let conn = db.conn();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, u)").unwrap();
        capture().install(&conn, "t").unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for (i, r) in reals.iter().enumerate() {
            tx.execute("INSERT INTO t VALUES (?1, ?2, ?2)", rusqlite::params![i as i64, r]).unwrap();
            tx.execute("UPDATE t SET u = ?2 WHERE id = ?1", rusqlite::params![i as i64, -r]).unwrap();
        }
        tx.commit().unwrap();
        let changes = read_all(&conn, 0, 1000);
        prop_assert_eq!(changes.len(), 2 * reals.len());
        for (i, r) in reals.iter().enumerate() {
            let ins = changes[2 * i].after.as_ref().unwrap();
            let upd = &changes[2 * i + 1];
            // A REAL column keeps an integral value as an integer on disk and gives it
            // back as the same REAL; SQLite itself turns -0.0 into 0 there.
            let stored = if *r == 0.0 { 0.0 } else { *r };
            prop_assert!(ins.get("r").unwrap().same_as(&Value::Real(stored)), "{:?} vs {}", ins.get("r"), r);
            prop_assert!(ins.get("u").unwrap().same_as(&Value::Real(*r)), "{:?} vs {}", ins.get("u"), r);
            let (before, after) = (upd.before.as_ref().unwrap(), upd.after.as_ref().unwrap());
            prop_assert!(before.get("u").unwrap().same_as(&Value::Real(*r)));
            prop_assert!(after.get("u").unwrap().same_as(&Value::Real(-*r)));
            prop_assert!(after.get("r").unwrap().same_as(&Value::Real(stored)));
        }
    }
}

#[test]
fn blob_in_text_column_does_not_fail_the_write() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute(
        "INSERT INTO t VALUES (1, ?1, ?2)",
        rusqlite::params![vec![0u8, 1, 2], 0.1 + 0.2],
    )
    .unwrap();
    let changes = read_all(&conn, 0, 10);
    let after = changes[0].after.as_ref().unwrap();
    assert_eq!(after.get("name"), Some(&Value::Blob(vec![0, 1, 2])));
    assert_eq!(after.get("score"), Some(&Value::Real(0.1 + 0.2)));
}

#[test]
fn hostile_table_and_column_names() {
    let names = [
        r#"we"ird"#,
        "with space",
        "select",
        "ünïcødé 表",
        "semi;colon",
        "it's",
        "__astha_cdc_ins_x",
    ];
    let db = TestDb::new();
    let conn = db.conn();
    for (i, name) in names.iter().enumerate() {
        let q = astha_core::ident::quote_ident(name);
        let col = astha_core::ident::quote_ident(&format!("{name} col"));
        conn.execute_batch(&format!(
            "CREATE TABLE {q} (\"order\" INTEGER PRIMARY KEY, {col} TEXT)"
        ))
        .unwrap();
        let result = capture().install(&conn, name);
        if name.starts_with("__astha_") {
            assert!(result.is_err(), "internal prefix must be refused");
            continue;
        }
        assert_eq!(result.unwrap(), InstallOutcome::Installed);
        conn.execute(
            &format!("INSERT INTO {q} VALUES (?1, ?2)"),
            rusqlite::params![i as i64, *name],
        )
        .unwrap();
    }
    let changes = read_all(&conn, 0, 100);
    assert_eq!(changes.len(), names.len() - 1);
    for change in &changes {
        let after = change.after.as_ref().unwrap();
        assert_eq!(after.columns()[1], format!("{} col", change.table));
        assert_eq!(after.values()[1], Value::Text(change.table.to_string()));
    }
}

#[test]
fn composite_and_without_rowid_keys() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE kv (b TEXT, a INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID;",
    )
    .unwrap();
    capture().install(&conn, "kv").unwrap();
    conn.execute("INSERT INTO kv VALUES ('x', 1, x'01')", [])
        .unwrap();
    conn.execute("UPDATE kv SET v = x'02' WHERE a = 1 AND b = 'x'", [])
        .unwrap();
    let changes = read_all(&conn, 0, 10);
    let after = changes[1].after.as_ref().unwrap();
    assert_eq!(
        after.schema().primary_key,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(
        after.key(),
        vec![&Value::Integer(1), &Value::Text("x".into())]
    );
    assert_eq!(after.get("v"), Some(&Value::Blob(vec![2])));
}

#[test]
fn install_uninstall_reinstall_are_idempotent() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    let cap = capture();
    assert_eq!(cap.install(&conn, "t").unwrap(), InstallOutcome::Installed);
    assert_eq!(cap.install(&conn, "t").unwrap(), InstallOutcome::Unchanged);
    conn.execute("INSERT INTO t VALUES (1, 1)", []).unwrap();
    assert!(cap.uninstall(&conn, "t").unwrap());
    assert!(!cap.uninstall(&conn, "t").unwrap());
    conn.execute("INSERT INTO t VALUES (2, 2)", []).unwrap();
    assert_eq!(cap.install(&conn, "t").unwrap(), InstallOutcome::Installed);
    conn.execute("INSERT INTO t VALUES (3, 3)", []).unwrap();
    let ids: Vec<Value> = read_all(&conn, 0, 10)
        .iter()
        .map(|c| c.after.as_ref().unwrap().values()[0].clone())
        .collect();
    assert_eq!(ids, vec![Value::Integer(1), Value::Integer(3)]);
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='trigger' AND tbl_name = 't'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 3);
    assert!(cap.install(&conn, "missing").is_err());
}

#[test]
fn schema_change_mid_stream_regenerates_triggers() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    let cap = capture();
    cap.install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'old')", []).unwrap();

    // Another connection (any process) adds a column; refresh regenerates the triggers.
    let other = db.conn();
    let before = astha_core::schema::schema_version(&conn).unwrap();
    other
        .execute_batch("ALTER TABLE t ADD COLUMN y TEXT DEFAULT 'dflt'")
        .unwrap();
    assert_ne!(astha_core::schema::schema_version(&conn).unwrap(), before);
    let changes = cap.refresh(&conn).unwrap();
    assert!(
        matches!(&changes[..], [astha_core::capture::RefreshChange::Regenerated { table, .. }] if table == "t")
    );
    conn.execute("INSERT INTO t VALUES (2, 'new', 'why')", [])
        .unwrap();

    // Dropping a column a trigger names goes through alter(), in one transaction.
    cap.alter(&conn, "t", "ALTER TABLE t DROP COLUMN x")
        .unwrap();
    conn.execute("UPDATE t SET y = 'changed' WHERE id = 2", [])
        .unwrap();

    let changes = read_all(&conn, 0, 10);
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].after.as_ref().unwrap().columns(), ["id", "x"]);
    assert_eq!(
        changes[1].after.as_ref().unwrap().get("y"),
        Some(&Value::Text("why".into()))
    );
    let upd = &changes[2];
    assert_eq!(upd.after.as_ref().unwrap().columns(), ["id", "y"]);
    assert_eq!(
        upd.before.as_ref().unwrap().get("y"),
        Some(&Value::Text("why".into()))
    );

    // A dropped table stops being captured; its earlier changes remain readable.
    conn.execute_batch("DROP TABLE t").unwrap();
    let changes = cap.refresh(&conn).unwrap();
    assert!(matches!(
        &changes[..],
        [astha_core::capture::RefreshChange::Dropped { .. }]
    ));
    assert!(cap.refresh(&conn).unwrap().is_empty(), "reported once");
    assert_eq!(read_all(&conn, 0, 10).len(), 3);
    // Created again under the same name: captured again by the next refresh.
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, z)")
        .unwrap();
    let changes = cap.refresh(&conn).unwrap();
    assert!(matches!(
        &changes[..],
        [astha_core::capture::RefreshChange::Regenerated { .. }]
    ));
    conn.execute("INSERT INTO t VALUES (9, 'back')", [])
        .unwrap();
    let changes = read_all(&conn, 0, 10);
    assert_eq!(changes.len(), 4);
    assert_eq!(
        changes[3].after.as_ref().unwrap().get("z"),
        Some(&Value::Text("back".into()))
    );
}

#[test]
fn replace_is_captured_as_delete_then_insert() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    conn.execute("INSERT OR REPLACE INTO t VALUES (1, 'b')", [])
        .unwrap();
    let ops: Vec<Operation> = read_all(&conn, 0, 10).iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [Operation::Insert, Operation::Delete, Operation::Insert]
    );
}

#[test]
fn malformed_rows_are_reported_not_dropped() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    // An UPDATE whose change mask is text, and a row of a schema nobody recorded.
    conn.execute(
        "INSERT INTO __cdc_log (ts, tbl, op, schema_id, v0, v1, v2, v3, v4)
         VALUES (julianday('now'), 't', 'U', 1, 1, 'b', NULL, NULL, 'unterminated')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO __cdc_log (ts, tbl, op, schema_id, v0)
         VALUES (julianday('now'), 'nope', 'I', 999, 1)",
        [],
    )
    .unwrap();
    conn.execute("INSERT INTO t VALUES (2, 'b')", []).unwrap();
    let mut reader = astha_core::log::LogReader::new(LOG);
    let batch = reader.read(&conn, 0, Default::default(), None).unwrap();
    assert_eq!(batch.changes.len(), 2);
    assert_eq!(batch.malformed.len(), 2);
    assert!(batch.malformed[0].reason.contains("mask"));
    assert!(batch.malformed[1].reason.contains("unknown schema id 999"));
    let rows: Vec<(i64, String)> = batch
        .malformed
        .iter()
        .map(|m| (m.raw.lsn, m.reason.clone()))
        .collect();
    assert_eq!(
        astha_core::dead_letter::quarantine(&conn, LOG, &rows).unwrap(),
        2
    );
    let dead = astha_core::dead_letter::list(&conn, Some("*"), false).unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        dead[0].raw.values,
        [
            Value::Integer(1),
            Value::Text("b".into()),
            Value::Null,
            Value::Null,
            Value::Text("unterminated".into())
        ]
    );
    let again = reader.read(&conn, 0, Default::default(), None).unwrap();
    assert!(again.malformed.is_empty());
    assert_eq!(again.changes.len(), 2);
}

#[test]
fn dead_letters_replay_as_new_changes() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    let failure = astha_core::dead_letter::Failure {
        consumer: "c",
        reason: "boom",
        attempts: 30,
        retriable: true,
    };
    assert!(astha_core::dead_letter::record(&conn, LOG, 1, &failure).unwrap());
    assert!(
        !astha_core::dead_letter::record(&conn, LOG, 1, &failure).unwrap(),
        "recorded once"
    );
    let dead = astha_core::dead_letter::list(&conn, Some("c"), false).unwrap();
    let lsn = astha_core::dead_letter::replay(&conn, LOG, dead[0].id).unwrap();
    assert_eq!(lsn, 2);
    let changes = read_all(&conn, 1, 10);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].after.as_ref().unwrap().get("x"),
        Some(&Value::Text("a".into()))
    );
    assert!(astha_core::dead_letter::list(&conn, Some("c"), false)
        .unwrap()
        .is_empty());
    assert_eq!(
        astha_core::dead_letter::list(&conn, Some("c"), true)
            .unwrap()
            .len(),
        1
    );
    assert!(
        astha_core::dead_letter::replay(&conn, LOG, dead[0].id).is_err(),
        "only once"
    );
}

/// Typed columns use the cheap comparison; it must still see every change, including
/// one its collation calls equal.
#[test]
fn updates_of_typed_columns_keep_exact_before_images() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, n INTEGER,
                         r REAL, d NUMERIC, free)",
    )
    .unwrap();
    capture().install(&conn, "t").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'abc', NULL, 1.5, 2, 1)", [])
        .unwrap();
    conn.execute(
        "UPDATE t SET name = 'ABC', n = 7, r = 1.5, d = 2.0, free = 1.0 WHERE id = 1",
        [],
    )
    .unwrap();
    let changes = read_all(&conn, 0, 10);
    let update = &changes[1];
    let before = update.before.as_ref().unwrap();
    let after = update.after.as_ref().unwrap();
    assert_eq!(before.get("name"), Some(&Value::Text("abc".into())));
    assert_eq!(after.get("name"), Some(&Value::Text("ABC".into())));
    assert_eq!(before.get("n"), Some(&Value::Null));
    assert_eq!(after.get("n"), Some(&Value::Integer(7)));
    assert_eq!(before.get("r"), Some(&Value::Real(1.5)));
    // NUMERIC affinity stores 2.0 as the integer 2: unchanged.
    assert_eq!(before.get("d"), Some(&Value::Integer(2)));
    assert_eq!(after.get("d"), Some(&Value::Integer(2)));
    // No affinity: the integer 1 became the real 1.0, which compares equal.
    assert_eq!(before.get("free"), Some(&Value::Integer(1)));
    assert_eq!(after.get("free"), Some(&Value::Real(1.0)));
}

/// A database set up by an earlier build: text-image log, its triggers on `t`.
fn legacy_database(conn: &rusqlite::Connection, log_rows: usize) {
    let [ins, upd, del] = astha_core::capture::trigger_names("t");
    conn.execute_batch(&format!(
        "CREATE TABLE __cdc_log (id INTEGER PRIMARY KEY, ts REAL NOT NULL, tbl TEXT NOT NULL,
            op TEXT NOT NULL, schema_id INTEGER NOT NULL, before TEXT, after TEXT);
         CREATE TABLE __astha_captured (tbl TEXT PRIMARY KEY, schema_id INTEGER NOT NULL);
         INSERT INTO __astha_captured VALUES ('t', 1);
         CREATE TABLE t (id INTEGER PRIMARY KEY, x);
         CREATE TRIGGER \"{ins}\" AFTER INSERT ON t BEGIN INSERT INTO __cdc_log
            (ts, tbl, op, schema_id, before, after) VALUES (0, 't', 'I', 1, NULL, quote(NEW.x)); END;
         CREATE TRIGGER \"{upd}\" AFTER UPDATE ON t BEGIN INSERT INTO __cdc_log
            (ts, tbl, op, schema_id, before, after) VALUES (0, 't', 'U', 1, quote(OLD.x), quote(NEW.x)); END;
         CREATE TRIGGER \"{del}\" AFTER DELETE ON t BEGIN INSERT INTO __cdc_log
            (ts, tbl, op, schema_id, before, after) VALUES (0, 't', 'D', 1, quote(OLD.x), NULL); END;"
    ))
    .unwrap();
    for i in 0..log_rows {
        conn.execute("INSERT INTO t (x) VALUES (?1)", [i as i64])
            .unwrap();
    }
}

#[test]
fn an_empty_log_of_an_earlier_build_is_replaced_and_its_triggers_regenerated() {
    let db = TestDb::new();
    let conn = db.conn();
    legacy_database(&conn, 0);
    // Opening the log (as Astha does at start) replaces it; the old triggers would now
    // fail every write to `t`, so they must be regenerated in the same step.
    capture().ensure_log(&conn).unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    let changes = read_all(&conn, 0, 10);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].after.as_ref().unwrap().get("x"),
        Some(&Value::Text("a".into()))
    );
    assert_eq!(
        capture().install(&conn, "t").unwrap(),
        InstallOutcome::Unchanged
    );
}

#[test]
fn a_log_of_an_earlier_build_holding_rows_is_refused_and_kept() {
    let db = TestDb::new();
    let conn = db.conn();
    legacy_database(&conn, 2);
    let err = capture().ensure_log(&conn).unwrap_err().to_string();
    assert!(err.contains("earlier Astha build"), "{err}");
    // The old triggers still capture into the old log: writes go on, nothing is lost.
    conn.execute("INSERT INTO t (x) VALUES (9)", []).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
}

#[test]
fn tables_too_wide_for_images_are_refused_with_the_limit() {
    let db = TestDb::new();
    let conn = db.conn();
    let max = astha_core::image::max_table_columns();
    let cols: Vec<String> = (0..max).map(|i| format!("c{i}")).collect();
    conn.execute_batch(&format!(
        "CREATE TABLE ok (id INTEGER PRIMARY KEY, {})",
        cols[1..].join(", ")
    ))
    .unwrap();
    capture().install(&conn, "ok").unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE wide (id INTEGER PRIMARY KEY, {})",
        cols.join(", ")
    ))
    .unwrap();
    let err = capture().install(&conn, "wide").unwrap_err().to_string();
    assert!(err.contains(&format!("up to {max}")), "{err}");
    conn.execute("INSERT INTO ok (id, c1) VALUES (1, 'x')", [])
        .unwrap();
    conn.execute("UPDATE ok SET c1 = 'y'", []).unwrap();
    let changes = read_all(&conn, 0, 10);
    assert_eq!(
        changes[1].before.as_ref().unwrap().get("c1"),
        Some(&Value::Text("x".into()))
    );
}

/// The stored form of row `id` of `t`, as SQLite holds it after affinity.
fn stored_row(conn: &rusqlite::Connection, id: i64) -> Vec<Value> {
    conn.query_row("SELECT * FROM t WHERE id = ?1", [id], |r| {
        (0..r.as_ref().column_count())
            .map(|i| r.get::<_, Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Typed columns (exact comparison, old slot `coalesce(OLD, NEW)`) and loose ones
    /// side by side: every image equals the row as SQLite stored it, whatever mix of
    /// changed, unchanged, to-NULL and from-NULL columns an UPDATE has.
    #[test]
    fn images_equal_the_stored_rows(
        rows in prop::collection::vec(
            (prop::collection::vec(arb_value(), 6),
             prop::collection::vec(prop::option::of(arb_value()), 6)),
            1..6,
        )
    ) {
        let db = TestDb::new();
        let conn = db.conn();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c REAL,
                             d TEXT COLLATE NOCASE, e NUMERIC, f)",
        ).unwrap();
        capture().install(&conn, "t").unwrap();
        let mut expected = Vec::new();
        for (i, (first, second)) in rows.iter().enumerate() {
            let id = i as i64;
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![id, first[0], first[1], first[2], first[3], first[4], first[5]],
            ).unwrap();
            let inserted = stored_row(&conn, id);
            // `None` keeps the column as it is (`SET x = x`).
            let sets: Vec<String> = ["a", "b", "c", "d", "e", "f"]
                .iter()
                .zip(second)
                .enumerate()
                .map(|(k, (c, v))| match v {
                    Some(_) => format!("{c} = ?{}", k + 2),
                    // Names the parameter too, so every one is bound.
                    None => format!("{c} = CASE WHEN ?{} IS NULL THEN {c} ELSE {c} END", k + 2),
                })
                .collect();
            let params: Vec<Value> = std::iter::once(Value::Integer(id))
                .chain(second.iter().map(|v| v.clone().unwrap_or(Value::Null)))
                .collect();
            conn.execute(
                &format!("UPDATE t SET {} WHERE id = ?1", sets.join(", ")),
                rusqlite::params_from_iter(params.iter()),
            ).unwrap();
            let updated = stored_row(&conn, id);
            conn.execute("DELETE FROM t WHERE id = ?1", [id]).unwrap();
            expected.push((inserted, updated));
        }
        let changes = read_all(&conn, 0, 100);
        prop_assert_eq!(changes.len(), 3 * rows.len());
        let same = |img: &astha_core::Row, want: &[Value]| {
            img.values().len() == want.len()
                && img.values().iter().zip(want).all(|(a, b)| a.same_as(b))
        };
        for (i, (inserted, updated)) in expected.iter().enumerate() {
            let (ins, upd, del) = (&changes[3 * i], &changes[3 * i + 1], &changes[3 * i + 2]);
            prop_assert!(same(ins.after.as_ref().unwrap(), inserted), "insert {:?} vs {:?}", ins.after, inserted);
            prop_assert!(same(upd.before.as_ref().unwrap(), inserted), "before {:?} vs {:?}", upd.before, inserted);
            prop_assert!(same(upd.after.as_ref().unwrap(), updated), "after {:?} vs {:?}", upd.after, updated);
            prop_assert!(same(del.before.as_ref().unwrap(), updated), "delete {:?} vs {:?}", del.before, updated);
        }
    }
}

/// `install` compares the live trigger SQL with what this build generates: a trigger
/// edited by hand (or left by another build) is regenerated, not trusted.
#[test]
fn install_regenerates_triggers_that_differ_from_this_builds() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
        .unwrap();
    capture().install(&conn, "t").unwrap();
    let [ins, _, _] = astha_core::capture::trigger_names("t");
    conn.execute_batch(&format!(
        "DROP TRIGGER \"{ins}\"; CREATE TRIGGER \"{ins}\" AFTER INSERT ON t BEGIN SELECT 1; END;"
    ))
    .unwrap();
    assert_eq!(
        capture().install(&conn, "t").unwrap(),
        InstallOutcome::Regenerated
    );
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    assert_eq!(
        read_all(&conn, 0, 10).len(),
        1,
        "the insert is captured again"
    );
    assert_eq!(
        capture().install(&conn, "t").unwrap(),
        InstallOutcome::Unchanged
    );
}

/// One statement of the REPLACE property test.
#[derive(Debug, Clone)]
enum Write {
    Insert(Option<i64>, i64, i64),
    Replace(Option<i64>, i64, i64),
    Ignore(Option<i64>, i64, i64),
    UpsertUpdate(i64, i64, i64),
    UpsertNothing(i64, i64, i64),
    Update(i64, i64),
    UpdateOrReplace(i64, i64),
    Delete(i64),
}

fn arb_write() -> impl Strategy<Value = Write> {
    // Few ids and unique values, so conflicts on the key and on `u` are frequent; id
    // `None` lets SQLite choose (NEW.rowid is -1 in a BEFORE trigger then, and a row -1
    // exists in the table).
    let id = prop_oneof![Just(None), (-1i64..4).prop_map(Some)];
    let v = 0i64..4;
    prop_oneof![
        (id.clone(), v.clone(), v.clone()).prop_map(|(i, u, x)| Write::Insert(i, u, x)),
        (id.clone(), v.clone(), v.clone()).prop_map(|(i, u, x)| Write::Replace(i, u, x)),
        (id, v.clone(), v.clone()).prop_map(|(i, u, x)| Write::Ignore(i, u, x)),
        (-1i64..4, v.clone(), v.clone()).prop_map(|(i, u, x)| Write::UpsertUpdate(i, u, x)),
        (-1i64..4, v.clone(), v.clone()).prop_map(|(i, u, x)| Write::UpsertNothing(i, u, x)),
        (-1i64..4, v.clone()).prop_map(|(i, x)| Write::Update(i, x)),
        (-1i64..4, v.clone()).prop_map(|(i, u)| Write::UpdateOrReplace(i, u)),
        (-1i64..4).prop_map(Write::Delete),
    ]
}

fn apply(conn: &rusqlite::Connection, w: &Write) {
    use rusqlite::params;
    let r = match w {
        Write::Insert(i, u, x) => {
            conn.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params![i, u, x])
        }
        Write::Replace(i, u, x) => conn.execute(
            "INSERT OR REPLACE INTO t VALUES (?1, ?2, ?3)",
            params![i, u, x],
        ),
        Write::Ignore(i, u, x) => conn.execute(
            "INSERT OR IGNORE INTO t VALUES (?1, ?2, ?3)",
            params![i, u, x],
        ),
        Write::UpsertUpdate(i, u, x) => conn.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET x = excluded.x",
            params![i, u, x],
        ),
        Write::UpsertNothing(i, u, x) => conn.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![i, u, x],
        ),
        Write::Update(i, x) => conn.execute("UPDATE t SET x = ?2 WHERE id = ?1", params![i, x]),
        Write::UpdateOrReplace(i, u) => conn.execute(
            "UPDATE OR REPLACE t SET u = ?2 WHERE id = ?1",
            params![i, u],
        ),
        Write::Delete(i) => conn.execute("DELETE FROM t WHERE id = ?1", params![i]),
    };
    // A plain conflict fails the statement (and its log rows with it), as it should.
    let _ = r;
}

/// Replays changes onto a mirror keyed by `id`, failing on what a consumer could not
/// apply: an INSERT over a row it has (a missed DELETE), a DELETE or UPDATE of a row it
/// lacks or holds differently (a DELETE logged twice, or wrongly).
fn mirror(changes: &[astha_core::Change]) -> std::result::Result<Vec<Vec<Value>>, String> {
    let mut rows = std::collections::BTreeMap::<i64, Vec<Value>>::new();
    let id = |r: &astha_core::Row| match r.values()[0] {
        Value::Integer(i) => i,
        ref v => panic!("id {v:?}"),
    };
    for c in changes {
        if let Some(before) = &c.before {
            match rows.remove(&id(before)) {
                Some(held) if held == before.values() => {}
                held => return Err(format!("lsn {} {:?}: mirror holds {held:?}", c.lsn, c.op)),
            }
        }
        if let Some(after) = &c.after {
            if let Some(held) = rows.insert(id(after), after.values().to_vec()) {
                return Err(format!("lsn {} {:?} over {held:?}", c.lsn, c.op));
            }
        }
    }
    Ok(rows.into_values().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With `exact_replace`, a mirror rebuilt from the captured changes equals the table
    /// after any mix of inserts, REPLACEs (conflicting on the key, on a UNIQUE column, or
    /// both), UPDATE OR REPLACE, INSERT OR IGNORE, upserts, updates and deletes, from a
    /// connection with
    /// `recursive_triggers` off (SQLite's default) or on, in a rowid or a `WITHOUT ROWID`
    /// table: no replaced row is lost, none
    /// is deleted twice, and no conflict that did not replace logs a DELETE.
    #[test]
    fn exact_replace_mirrors_the_table(
        writes in prop::collection::vec(arb_write(), 1..30),
        recursive in any::<bool>(),
        without_rowid in any::<bool>(),
    ) {
        let db = TestDb::new();
        let conn = db.conn();
        let kind = if without_rowid { " WITHOUT ROWID" } else { "" };
        conn.execute_batch(&format!("CREATE TABLE t (id INTEGER PRIMARY KEY, u INTEGER UNIQUE, x){kind}")).unwrap();
        capture().with_exact_replace(true).install(&conn, "t").unwrap();
        let writer = rusqlite::Connection::open(&db.path).unwrap();
        writer.pragma_update(None, "recursive_triggers", recursive).unwrap();
        writer.execute("INSERT INTO t VALUES (-1, 100, 'minus one')", []).unwrap();
        for w in &writes {
            apply(&writer, w);
        }
        let changes = read_all(&conn, 0, 1000);
        let mut stmt = conn.prepare("SELECT * FROM t ORDER BY id").unwrap();
        let table: Vec<Vec<Value>> = stmt
            .query_map([], |r| (0..3).map(|i| r.get::<_, Value>(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mirrored = mirror(&changes).map_err(TestCaseError::fail)?;
        prop_assert_eq!(mirrored, table);
    }
}

#[test]
fn replace_without_recursive_triggers_is_a_delete_and_an_insert_with_exact_replace() {
    for exact in [false, true] {
        let db = TestDb::new();
        let conn = db.conn();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, x)")
            .unwrap();
        capture()
            .with_exact_replace(exact)
            .install(&conn, "t")
            .unwrap();
        // Python's sqlite3 and most drivers: recursive_triggers off.
        let writer = rusqlite::Connection::open(&db.path).unwrap();
        writer.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
        writer
            .execute("INSERT OR REPLACE INTO t VALUES (1, 'b')", [])
            .unwrap();
        let changes = read_all(&conn, 0, 10);
        let ops: Vec<Operation> = changes.iter().map(|c| c.op).collect();
        if !exact {
            assert_eq!(
                ops,
                [Operation::Insert, Operation::Insert],
                "SQLite's limit"
            );
            continue;
        }
        assert_eq!(
            ops,
            [Operation::Insert, Operation::Delete, Operation::Insert]
        );
        assert_eq!(
            changes[1].before.as_ref().unwrap().get("x"),
            Some(&Value::Text("a".into()))
        );
    }
}

/// Reads everything after `after` in one batch, as the poller does.
fn read_batch(conn: &rusqlite::Connection, after: i64) -> astha_core::log::Batch {
    let mut reader = astha_core::log::LogReader::new(LOG);
    reader
        .read(conn, after, astha_core::log::BatchLimits::default(), None)
        .unwrap()
}

/// Another connection adds a column and writes at once, before Astha regenerates the
/// triggers: the change lacks the column. A read's schema version shows the triggers
/// are stale; the refresh marks the changes since the last LSN proved complete (which
/// columns they may lack) in every format, and captures the column from then on.
#[test]
fn a_column_added_by_another_connection_marks_the_changes_that_may_lack_it() {
    use astha_core::format::{Encoder, EventFormat, SourceInfo};
    use astha_core::gaps::Reason;
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE typed (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    let cap = capture();
    cap.install(&conn, "typed").unwrap();
    conn.execute("INSERT INTO typed VALUES (1, 'before')", [])
        .unwrap();
    // The poller's view: a read under the version the triggers were made in proves
    // every row it read complete.
    let version = astha_core::schema::schema_version(&conn).unwrap();
    let first = read_batch(&conn, 0);
    assert_eq!(first.schema_version, version);
    let proved = first.scanned_to;
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other
        .execute_batch(
            "ALTER TABLE typed ADD COLUMN added_later TEXT DEFAULT 'dflt';
             INSERT INTO typed (id, added_later) VALUES (5, 'after-alter');",
        )
        .unwrap();
    let stale = read_batch(&conn, proved);
    assert_ne!(
        stale.schema_version, version,
        "the read sees the schema moved"
    );
    assert!(
        stale.changes[0].row().unwrap().get("added_later").is_none(),
        "SQLite's window: the old triggers wrote the row"
    );
    cap.refresh_since(&conn, Some(proved)).unwrap();
    conn.execute("INSERT INTO typed VALUES (6, 'x', 'captured')", [])
        .unwrap();
    let changes = read_all(&conn, proved, 10);
    assert_eq!(changes.len(), 2);
    let marked = changes[0].incomplete.as_ref().expect("marked incomplete");
    assert_eq!(marked.reason, Reason::ColumnsAdded);
    assert_eq!(marked.columns, ["added_later"]);
    assert!(changes[1].incomplete.is_none());
    assert_eq!(
        changes[1].row().unwrap().get("added_later"),
        Some(&Value::Text("captured".into()))
    );
    assert!(
        read_all(&conn, 0, 10)[0].incomplete.is_none(),
        "rows proved complete stay unmarked"
    );
    let source = SourceInfo {
        name: "app".into(),
        db: "app".into(),
        identity: "id".into(),
    };
    let encode = |f| Encoder::new(f, source.clone()).encode(&changes[0]);
    let expected = serde_json::json!({"reason": "columns_added", "columns": ["added_later"]});
    assert_eq!(encode(EventFormat::Native)["incomplete"], expected);
    assert_eq!(
        encode(EventFormat::Debezium)["source"]["incomplete"],
        expected
    );
    let ce = encode(EventFormat::CloudEvents);
    assert_eq!(ce["asthaincomplete"], "columns_added:added_later");
    assert_eq!(ce["data"]["incomplete"], expected);
    assert!(encode_plain(&changes[1], &source));
}

/// A complete change has no `incomplete` anywhere.
fn encode_plain(change: &astha_core::Change, source: &astha_core::format::SourceInfo) -> bool {
    use astha_core::format::{Encoder, EventFormat};
    let native = Encoder::new(EventFormat::Native, source.clone()).encode(change);
    let dbz = Encoder::new(EventFormat::Debezium, source.clone()).encode(change);
    let ce = Encoder::new(EventFormat::CloudEvents, source.clone()).encode(change);
    native.get("incomplete").is_none()
        && dbz["source"].get("incomplete").is_none()
        && ce.get("asthaincomplete").is_none()
}

/// A table dropped and created again by another connection (here rebuilt the way ORMs
/// do, with a value changed on the way) has lost its triggers: nothing it writes is
/// logged until Astha re-installs them. The refresh then logs the rows it holds as
/// INSERTs marked `recreated`, so a consumer's copy equals the table again.
#[test]
fn a_table_recreated_by_another_connection_has_its_rows_logged_marked() {
    use astha_core::gaps::Reason;
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    let cap = capture();
    cap.install(&conn, "t").unwrap();
    conn.execute_batch("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    let head = read_all(&conn, 0, 10).last().unwrap().lsn;
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other
        .execute_batch(
            "BEGIN;
             CREATE TABLE new_t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             INSERT INTO new_t SELECT id, upper(v) FROM t;
             DROP TABLE t;
             ALTER TABLE new_t RENAME TO t;
             COMMIT;
             INSERT INTO t VALUES (3, 'c');",
        )
        .unwrap();
    assert!(
        read_all(&conn, head, 10).is_empty(),
        "SQLite's window: no triggers"
    );
    cap.refresh(&conn).unwrap();
    conn.execute("INSERT INTO t VALUES (4, 'd')", []).unwrap();
    let changes = read_all(&conn, head, 10);
    let rows: Vec<(i64, String, Option<Reason>)> = changes
        .iter()
        .map(|c| {
            let r = c.row().unwrap();
            let id = match r.get("id") {
                Some(Value::Integer(i)) => *i,
                other => panic!("{other:?}"),
            };
            let v = match r.get("v") {
                Some(Value::Text(t)) => t.clone(),
                other => panic!("{other:?}"),
            };
            (id, v, c.incomplete.as_ref().map(|m| m.reason))
        })
        .collect();
    let recreated = Some(Reason::Recreated);
    assert_eq!(
        rows,
        [
            (1, "A".into(), recreated),
            (2, "B".into(), recreated),
            (3, "c".into(), recreated),
            (4, "d".into(), None),
        ]
    );
    assert!(changes.iter().all(|c| c.op == Operation::Insert));
}

/// `Capture::alter_with`: DDL and writes in one transaction with the triggers
/// re-installed in it; a rebuild logs nothing extra and marks nothing, and every write
/// in or after it is captured with the new columns.
#[test]
fn alter_with_leaves_no_write_uncaptured_and_marks_nothing() {
    let db = TestDb::new();
    let conn = db.conn();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE u (id INTEGER PRIMARY KEY);",
    )
    .unwrap();
    let cap = capture();
    cap.install(&conn, "t").unwrap();
    cap.install(&conn, "u").unwrap();
    conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
    let (_, changes) = cap
        .alter_with(&conn, |c| {
            Ok(c.execute_batch(
                "CREATE TABLE new_t (id INTEGER PRIMARY KEY, v TEXT, w TEXT);
                 INSERT INTO new_t SELECT id, v, 'w' FROM t;
                 DROP TABLE t;
                 ALTER TABLE new_t RENAME TO t;
                 DROP TABLE u;",
            )?)
        })
        .unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    conn.execute("INSERT INTO t VALUES (2, 'b', 'x')", [])
        .unwrap();
    let changes = read_all(&conn, 0, 10);
    assert_eq!(changes.len(), 2, "the rebuild itself logs nothing");
    assert!(changes.iter().all(|c| c.incomplete.is_none()));
    assert_eq!(
        changes[1].row().unwrap().get("w"),
        Some(&Value::Text("x".into()))
    );
}

/// `exact_replace` quotes every name it puts in its triggers: tables and UNIQUE
/// columns with hostile names replace exactly.
#[test]
fn exact_replace_with_hostile_names() {
    let names = [
        r#"we"ird"#,
        "with space",
        "select",
        "ünïcødé 表",
        "it's",
        "p",
        "t",
    ];
    let db = TestDb::new();
    let conn = db.conn();
    let writer = rusqlite::Connection::open(&db.path).unwrap();
    for name in names {
        let q = astha_core::ident::quote_ident(name);
        let col = astha_core::ident::quote_ident(&format!("{name} col"));
        conn.execute_batch(&format!(
            "CREATE TABLE {q} (\"order\" INTEGER PRIMARY KEY, {col} TEXT UNIQUE, \"rid\")"
        ))
        .unwrap();
        capture()
            .with_exact_replace(true)
            .install(&conn, name)
            .unwrap();
        writer
            .execute_batch(&format!(
                "INSERT INTO {q} VALUES (1, 'a', 'x');
                 INSERT OR REPLACE INTO {q} VALUES (2, 'a', 'y');"
            ))
            .unwrap();
    }
    let changes = read_all(&conn, 0, 100);
    let ops: Vec<Operation> = changes.iter().map(|c| c.op).collect();
    let per_table = [Operation::Insert, Operation::Delete, Operation::Insert];
    assert_eq!(ops, per_table.repeat(names.len()));
    for deleted in changes.iter().filter(|c| c.op == Operation::Delete) {
        assert_eq!(
            deleted.before.as_ref().unwrap().get("rid"),
            Some(&Value::Text("x".into()))
        );
    }
}
