use super::*;
use crate::capture::Capture;

const LOG: &str = "__cdc_log";

fn db() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let conn = crate::db::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v);
         CREATE TABLE b (k TEXT PRIMARY KEY, r REAL);",
    )
    .unwrap();
    let capture = Capture::new(LOG);
    capture.ensure_log(&conn).unwrap();
    capture.install(&conn, "a").unwrap();
    capture.install(&conn, "b").unwrap();
    crate::slots::ensure_tables(&conn).unwrap();
    (dir, path, conn)
}

fn read_all(snapshot: &Snapshot, chunk: usize) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let (rows, next) = snapshot.read_chunk(cursor, chunk).unwrap();
        if rows.is_empty() {
            return out;
        }
        assert!(rows.len() <= chunk);
        out.extend(rows);
        cursor = next;
    }
}

#[test]
fn modes_parse_by_name_and_unknown_ones_list_the_choices() {
    for m in SnapshotMode::ALL {
        assert_eq!(m.name().parse::<SnapshotMode>().unwrap(), m);
    }
    assert_eq!(
        "initial-only".parse::<SnapshotMode>().unwrap(),
        SnapshotMode::InitialOnly
    );
    let err = "always".parse::<SnapshotMode>().unwrap_err();
    assert!(
        err.contains("never, initial, initial_only, when_needed"),
        "{err}"
    );
}

#[test]
fn a_snapshot_reads_every_row_exactly_in_bounded_chunks_at_the_log_head() {
    let (_dir, path, conn) = db();
    conn.execute_batch(
        "INSERT INTO a VALUES (1, x'00ff'), (2, -0.0), (3, 'é'), (4, NULL), (5, 9223372036854775807);
         INSERT INTO b VALUES ('k', 1e308);",
    )
    .unwrap();
    let head = crate::log::head_lsn(&conn, LOG).unwrap();
    let tables = vec!["a".to_string(), "b".to_string()];
    let snapshot = take(&path, LOG, "c", &tables, "initial").unwrap();
    assert_eq!(snapshot.lsn, head);
    assert_eq!(snapshot.total(), 6);
    let rows = read_all(&snapshot, 4);
    assert_eq!(rows.len(), 6);
    let seqs: Vec<u64> = rows.iter().map(|c| c.snapshot.unwrap().seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let lasts: Vec<bool> = rows.iter().map(|c| c.snapshot.unwrap().last).collect();
    assert_eq!(lasts, vec![false, false, false, false, false, true]);
    assert!(rows
        .iter()
        .all(|c| c.op == Operation::Read && c.lsn == head));
    let value = |i: usize, col: &str| rows[i].after.as_ref().unwrap().get(col).unwrap().clone();
    assert_eq!(value(0, "v"), Value::Blob(vec![0, 255]));
    match value(1, "v") {
        Value::Real(r) => assert!(r == 0.0 && r.is_sign_negative(), "-0.0 kept"),
        other => panic!("{other:?}"),
    }
    assert_eq!(value(2, "v"), Value::Text("é".into()));
    assert_eq!(value(3, "v"), Value::Null);
    assert_eq!(value(4, "v"), Value::Integer(i64::MAX));
    assert_eq!(&*rows[5].table, "b");
    assert_eq!(value(5, "r"), Value::Real(1e308));
    assert_eq!(
        rows[5].after.as_ref().unwrap().schema().primary_key,
        vec!["k"]
    );

    let recorded = state(&conn, "c").unwrap().unwrap();
    assert_eq!(
        (recorded.state.as_str(), recorded.total, recorded.lsn),
        ("running", 6, head)
    );
    record_progress(&conn, "c", 4).unwrap();
    assert_eq!(state(&conn, "c").unwrap().unwrap().done, 4);
    assert!(snapshot.file.exists());
    finish(&conn, &snapshot).unwrap();
    assert!(
        !snapshot.file.exists(),
        "the copy is deleted once delivered"
    );
    let recorded = state(&conn, "c").unwrap().unwrap();
    assert_eq!((recorded.state.as_str(), recorded.done), ("done", 6));
}

#[test]
fn changes_after_the_copy_are_not_in_it() {
    let (_dir, path, conn) = db();
    conn.execute_batch("INSERT INTO a VALUES (1, 'old')")
        .unwrap();
    let snapshot = take(&path, LOG, "c", &["a".to_string()], "initial").unwrap();
    conn.execute_batch("UPDATE a SET v = 'new'; INSERT INTO a VALUES (2, 'x');")
        .unwrap();
    let rows = read_all(&snapshot, 10);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].after.as_ref().unwrap().get("v"),
        Some(&Value::Text("old".into()))
    );
    assert!(crate::log::head_lsn(&conn, LOG).unwrap() > snapshot.lsn);
}

#[test]
fn an_empty_table_gives_an_empty_snapshot_and_a_missing_one_an_error() {
    let (_dir, path, conn) = db();
    let snapshot = take(&path, LOG, "c", &["a".to_string()], "initial").unwrap();
    assert!(read_all(&snapshot, 10).is_empty());
    let err = take(&path, LOG, "d", &["nope".to_string()], "initial").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    drop(conn);
}

#[test]
fn who_needs_a_snapshot() {
    let (_dir, path, conn) = db();
    let need = |mode, slot: Option<&Slot>| needed(&conn, LOG, "c", mode, slot).unwrap();
    assert_eq!(need(SnapshotMode::Never, None), None);
    for mode in [
        SnapshotMode::Initial,
        SnapshotMode::InitialOnly,
        SnapshotMode::WhenNeeded,
    ] {
        assert_eq!(need(mode, None), Some("initial"), "{mode}");
    }
    conn.execute_batch("INSERT INTO a VALUES (1, 1), (2, 2), (3, 3)")
        .unwrap();
    let slot = crate::slots::create(&conn, LOG, "c", crate::slots::SlotStart::At(0)).unwrap();
    assert_eq!(need(SnapshotMode::Initial, Some(&slot)), None);
    assert_eq!(need(SnapshotMode::WhenNeeded, Some(&slot)), None);
    // Rows the slot still needs are cleaned away (as after `slots reset` forward and back).
    conn.execute_batch("DELETE FROM __cdc_log WHERE id < 3")
        .unwrap();
    assert_eq!(need(SnapshotMode::Initial, Some(&slot)), None);
    assert_eq!(
        need(SnapshotMode::WhenNeeded, Some(&slot)),
        Some("position lost")
    );
    // A snapshot cut short is taken again, in any mode but never.
    let snapshot = take(&path, LOG, "c", &["a".to_string()], "initial").unwrap();
    assert_eq!(need(SnapshotMode::Initial, Some(&slot)), Some("unfinished"));
    finish(&conn, &snapshot).unwrap();
    assert_eq!(need(SnapshotMode::Initial, Some(&slot)), None);
    // A finished snapshot-only consumer (no slot any more) is done.
    assert_eq!(need(SnapshotMode::InitialOnly, None), None);
    forget(&conn, &path, "c").unwrap();
    assert_eq!(need(SnapshotMode::InitialOnly, None), Some("initial"));
}
