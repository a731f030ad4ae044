//! Fault harness: a full disk, simulated with `PRAGMA max_page_count` on the writer's
//! connection (SQLite then fails a write that needs a new page with `SQLITE_FULL`, as it
//! does when the file system is full). A write that fails must leave no trace in the
//! change log (the trigger's log row is part of the failed statement), every write that
//! committed must be delivered, and Astha must carry on once there is room again.

mod support;

use support::*;

#[actix_rt::test]
async fn writes_failing_with_a_full_disk_leave_no_trace_and_nothing_is_lost() {
    let db = TestDb::new();
    // The last assertion counts log rows: hold them, or cleanup may already have removed
    // the delivered ones (it did under load).
    keep_log(&db);
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 20);
    let pages: i64 = writer
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    writer
        .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 40))
        .unwrap();
    // Wide values fill the last free pages quickly.
    let big = "x".repeat(3000);
    let mut committed: Vec<i64> = (0..20).collect();
    let mut full = 0;
    for v in 20..200 {
        match writer.execute("INSERT INTO a (v) VALUES (?1 || ?2)", (v, &big)) {
            Ok(_) => committed.push(v),
            Err(err) => {
                assert_eq!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DiskFull),
                    "{err}"
                );
                full += 1;
            }
        }
    }
    assert!(full > 0, "the disk never filled up");
    assert!(
        committed.len() > 20,
        "no write fitted before the disk filled up"
    );
    // Room again.
    writer
        .execute_batch("PRAGMA max_page_count = 1073741823")
        .unwrap();
    insert(&writer, "a", 1000, 10);
    committed.extend(1000..1010);
    let done = seen
        .wait_until(LONG, |s| s.confirmed.len() >= committed.len())
        .await;
    assert!(
        done,
        "{} of {} delivered",
        seen.confirmed_lsns().len(),
        committed.len()
    );
    let got: Vec<i64> = seen
        .state()
        .confirmed
        .iter()
        .map(|c| match c.row().unwrap().get("v") {
            Some(astha_core::Value::Integer(v)) => *v,
            Some(astha_core::Value::Text(t)) => t.trim_end_matches('x').parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, committed, "exactly the committed writes, in order");
    // The log holds one row per committed write and none for the failed ones.
    assert_eq!(logged_lsns(&db.path, "a").len(), committed.len());
    astha.stop().await.unwrap();
}
