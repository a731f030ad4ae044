use super::*;
use crate::capture::Capture;
use crate::log::{BatchLimits, LogReader};

const LOG: &str = "__cdc_log";

fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = crate::db::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v);
         CREATE TABLE b (id INTEGER PRIMARY KEY, v);",
    )
    .unwrap();
    let capture = Capture::new(LOG);
    capture.ensure_log(&conn).unwrap();
    capture.install(&conn, "a").unwrap();
    capture.install(&conn, "b").unwrap();
    (dir, path)
}

/// Every change after `after`, read `limit` rows at a time, with `tables` if given.
fn read(path: &std::path::Path, limit: usize, tables: Option<&[String]>) -> Vec<Change> {
    let conn = crate::db::open(path).unwrap();
    let mut reader = LogReader::new(LOG);
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let limits = BatchLimits {
            max_rows: limit,
            max_bytes: usize::MAX,
        };
        let batch = reader.read(&conn, after, limits, tables).unwrap();
        if batch.changes.is_empty() && batch.scanned_to == after {
            return out;
        }
        after = batch.scanned_to;
        out.extend(batch.changes);
    }
}

fn blocks(changes: &[Change]) -> Vec<Option<(i64, u64, u64, u64)>> {
    changes
        .iter()
        .map(|c| {
            c.transaction
                .as_ref()
                .map(|t| (t.id, t.total_order, t.data_collection_order, t.total))
        })
        .collect()
}

#[test]
fn marked_transactions_get_exact_blocks_and_unmarked_ones_none() {
    let (_dir, path) = db();
    let mut writer = Writer::new(crate::db::open_writer(&path).unwrap(), LOG).unwrap();
    // Unmarked: no boundary is invented.
    writer
        .conn()
        .execute_batch("BEGIN; INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1); COMMIT;")
        .unwrap();
    writer
        .transaction(|conn| {
            conn.execute_batch(
                "INSERT INTO a VALUES (2, 2); INSERT INTO b VALUES (2, 2);
                 UPDATE a SET v = 3 WHERE id = 2; DELETE FROM b WHERE id = 1;",
            )?;
            Ok(())
        })
        .unwrap();
    // The documented SQL convention, from a connection that is not Astha's.
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "PRAGMA foreign_keys = ON;
             BEGIN; INSERT INTO __astha_tx DEFAULT VALUES;
             INSERT INTO b VALUES (3, 3);
             DELETE FROM __astha_tx; COMMIT;
             INSERT INTO a VALUES (4, 4);",
        )
        .unwrap();
    let want = vec![
        None,
        None,
        Some((3, 1, 1, 4)),
        Some((3, 2, 1, 4)),
        Some((3, 3, 2, 4)),
        Some((3, 4, 2, 4)),
        Some((7, 1, 1, 1)),
        None,
    ];
    // However the log is cut into batches, and when a reader takes only some tables.
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            blocks(&read(&path, limit, None)),
            want,
            "batches of {limit}"
        );
    }
    let only_b = read(&path, 2, Some(&["b".to_string()]));
    assert_eq!(
        blocks(&only_b),
        vec![
            None,
            Some((3, 2, 1, 4)),
            Some((3, 4, 2, 4)),
            Some((7, 1, 1, 1))
        ]
    );
}

#[test]
fn a_marked_transaction_that_loses_its_end_cannot_commit_and_a_failed_one_leaves_nothing() {
    let (_dir, path) = db();
    let mut writer = Writer::new(crate::db::open_writer(&path).unwrap(), LOG).unwrap();
    let err = writer
        .transaction(|conn| {
            conn.execute_batch(
                "INSERT INTO a VALUES (1, 1); INSERT INTO __astha_tx DEFAULT VALUES;",
            )?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("foreign key"),
        "{err}"
    );
    assert!(writer
        .transaction(|conn| {
            conn.execute("INSERT INTO a VALUES (2, 2)", [])?;
            Err::<(), _>(crate::CoreError::Invalid("no".into()))
        })
        .is_err());
    let rows: i64 = writer
        .conn()
        .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "both rolled back");
    // A record without an end (a writer that broke the convention with foreign keys
    // off) gives no block to what follows.
    let loose = rusqlite::Connection::open(&path).unwrap();
    loose
        .execute_batch("PRAGMA foreign_keys = OFF; INSERT INTO __astha_tx DEFAULT VALUES; INSERT INTO a VALUES (3, 3);")
        .unwrap();
    assert_eq!(blocks(&read(&path, 10, None)), vec![None]);
}

#[test]
fn records_go_once_their_changes_left_the_log() {
    let (_dir, path) = db();
    let mut writer = Writer::new(crate::db::open_writer(&path).unwrap(), LOG).unwrap();
    for i in 0..3 {
        writer
            .transaction(|conn| {
                conn.execute("INSERT INTO a (v) VALUES (?1)", [i])?;
                Ok(())
            })
            .unwrap();
    }
    let conn = writer.conn();
    let records = || -> i64 {
        conn.query_row("SELECT count(*) FROM __astha_transactions", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(
        prune(conn, LOG).unwrap(),
        0,
        "every change is still in the log"
    );
    conn.execute("DELETE FROM __cdc_log WHERE id < 3", [])
        .unwrap();
    assert_eq!(prune(conn, LOG).unwrap(), 2);
    assert_eq!(records(), 1);
    assert_eq!(blocks(&read(&path, 10, None)), vec![Some((3, 1, 1, 1))]);
}

/// `(table, count, first, last)`: one table's part in a transaction.
type Part = (String, u64, u64, u64);

/// The parts of each change's transaction, per change.
fn tables(changes: &[Change]) -> Vec<Option<Vec<Part>>> {
    changes
        .iter()
        .map(|c| {
            c.transaction.as_ref().map(|t| {
                t.tables
                    .iter()
                    .map(|e| (e.table.to_string(), e.count, e.first, e.last))
                    .collect()
            })
        })
        .collect()
}

#[test]
fn every_change_of_a_marked_transaction_knows_its_tables_however_it_is_read() {
    let (_dir, path) = db();
    let mut writer = Writer::new(crate::db::open_writer(&path).unwrap(), LOG).unwrap();
    writer
        .transaction(|conn| {
            conn.execute_batch(
                "INSERT INTO b VALUES (1, 1); INSERT INTO a VALUES (1, 1);
                 INSERT INTO a VALUES (2, 2); INSERT INTO b VALUES (2, 2);
                 INSERT INTO a VALUES (3, 3);",
            )?;
            Ok(())
        })
        .unwrap();
    let want = vec![("b".to_string(), 2, 1, 4), ("a".to_string(), 3, 2, 5)];
    for limit in [1, 2, 100] {
        let read = read(&path, limit, None);
        assert_eq!(read.len(), 5);
        assert!(
            tables(&read).iter().all(|t| t.as_ref() == Some(&want)),
            "batches of {limit}: {:?}",
            tables(&read)
        );
    }
    // A reader of one table still learns what the others hold.
    let only_a = read(&path, 2, Some(&["a".to_string()]));
    assert_eq!(only_a.len(), 3);
    assert!(tables(&only_a).iter().all(|t| t.as_ref() == Some(&want)));
}

#[test]
fn a_transaction_whose_first_rows_left_the_log_gets_no_block() {
    let (_dir, path) = db();
    let mut writer = Writer::new(crate::db::open_writer(&path).unwrap(), LOG).unwrap();
    for _ in 0..2 {
        writer
            .transaction(|conn| {
                conn.execute_batch("INSERT INTO a (v) VALUES (1); INSERT INTO b (v) VALUES (2);")?;
                Ok(())
            })
            .unwrap();
    }
    // As cleanup would once every slot is past the first change of the first one.
    writer
        .conn()
        .execute("DELETE FROM __cdc_log WHERE id = 1", [])
        .unwrap();
    assert_eq!(
        blocks(&read(&path, 10, None)),
        vec![None, Some((3, 1, 1, 2)), Some((3, 2, 1, 2))],
        "what is left of the cut transaction is not described; the whole one is"
    );
}
