//! Fault harness: another connection edits what Astha owns under a running Astha (issue
//! 14, "Integrity of the log and the slots"). The log emptied or dropped, a slot row
//! deleted or its table dropped, a slot moved past the head: each must end exact (every
//! committed change delivered, in order, no LSN handed out twice) or refused loudly,
//! never silently skipped; and a user's write must never fail because of Astha.

mod support;

use std::time::Duration;

use astha_actors::testing::RecordingComponent;
use support::*;

/// Long enough for a backstop tick or two, short enough that a test of a loss fails fast.
const SHORT: Duration = Duration::from_secs(15);

fn strictly_increasing(lsns: &[i64]) -> bool {
    lsns.windows(2).all(|w| w[0] < w[1])
}

/// Waits until `f` holds on a fresh connection to `db`.
async fn wait_db(db: &TestDb, f: impl Fn(&rusqlite::Connection) -> bool) -> bool {
    let deadline = std::time::Instant::now() + SHORT;
    while std::time::Instant::now() < deadline {
        let conn = astha_core::db::open_existing(&db.path).unwrap();
        if f(&conn) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[actix_rt::test]
async fn an_emptied_log_never_hands_out_an_lsn_twice() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 50);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 50).await);
    // Another process empties the log while the slot is at its head.
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other.execute("DELETE FROM __cdc_log", []).unwrap();
    insert(&writer, "a", 50, 30);
    let all = seen.wait_until(SHORT, |s| s.confirmed.len() >= 80).await;
    let lsns = seen.confirmed_lsns();
    assert!(all, "{} of 80 changes delivered: {lsns:?}", lsns.len());
    assert!(strictly_increasing(&lsns), "an LSN was reused: {lsns:?}");
    assert_eq!(values(&seen.state().confirmed), (0..80).collect::<Vec<_>>());
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_dropped_log_is_created_again_whole_and_user_writes_never_fail_for_it() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 10);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 10).await);
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other.execute_batch("DROP TABLE __cdc_log").unwrap();
    // Until Astha notices, the triggers name a missing table and SQLite fails the write
    // (no DDL triggers: that window cannot be closed). Then every write must succeed.
    assert!(
        wait_db(&db, |c| astha_core::schema::is_plain_table(c, "__cdc_log")
            .unwrap())
        .await,
        "the log was not created again"
    );
    for v in 10..30 {
        writer
            .execute("INSERT INTO a (v) VALUES (?1)", [v])
            .unwrap_or_else(|e| panic!("a user's write failed because of Astha: {e}"));
    }
    let all = seen.wait_until(SHORT, |s| s.confirmed.len() >= 30).await;
    let lsns = seen.confirmed_lsns();
    assert!(all, "{} of 30 changes delivered: {lsns:?}", lsns.len());
    assert!(strictly_increasing(&lsns), "an LSN was reused: {lsns:?}");
    assert_eq!(values(&seen.state().confirmed), (0..30).collect::<Vec<_>>());
    astha.stop().await.unwrap();
    // A restart that installs again keeps every write working.
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    drop(astha);
    insert(&writer, "a", 30, 1);
}

/// Deletes the recorder's slot row (or drops the slot table), writes on, stops, writes
/// while Astha is down, and starts again: nothing may be skipped.
async fn slot_removed_under_a_running_astha(removal: &str) {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 20).await);
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other.execute_batch(removal).unwrap();
    insert(&writer, "a", 20, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 40).await);
    // Loudly: counted, and the component's status says so.
    let stats = astha.scheduler_stats();
    assert!(stats.slots_lost >= 1, "the lost slot was not reported");
    let c = stats.components.iter().find(|c| c.name == "c").unwrap();
    assert!(
        c.last_error.as_deref().unwrap_or("").contains("slot"),
        "{:?}",
        c.last_error
    );
    astha.stop().await.unwrap();
    drop(astha);
    // Written while Astha is down: the restored slot must deliver them after a restart.
    insert(&writer, "a", 40, 10);
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, again) = RecordingComponent::new("c", &["a"]);
    astha.register_component(Box::new(c)).await.unwrap();
    let all = again.wait_until(SHORT, |s| s.confirmed.len() >= 10).await;
    assert!(
        all,
        "after the restart {:?} were delivered, expected 40..50",
        values(&again.state().confirmed)
    );
    assert_eq!(
        values(&again.state().confirmed),
        (40..50).collect::<Vec<_>>()
    );
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_deleted_slot_row_is_restored_and_nothing_is_skipped() {
    slot_removed_under_a_running_astha("DELETE FROM __astha_slots").await;
}

#[actix_rt::test]
async fn a_dropped_slot_table_is_restored_and_nothing_is_skipped() {
    slot_removed_under_a_running_astha("DROP TABLE __astha_slots").await;
}

#[actix_rt::test]
async fn a_slot_moved_forward_under_a_running_astha_is_put_back() {
    slot_removed_under_a_running_astha("UPDATE __astha_slots SET position = position + 1000").await;
}

/// A live feed's (non-durable) slot is leased so that it goes when its owner dies. Restored
/// after someone deleted it, it must be leased again: a restored slot without its lease
/// would outlive a kill -9 of its owner and hold the log back for ever.
#[actix_rt::test]
async fn a_restored_slot_of_a_live_feed_is_leased_again() {
    let db = TestDb::new();
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::new("live", &["a"]);
    astha
        .register_component(Box::new(c.non_durable()))
        .await
        .unwrap();
    let writer = db.writer();
    insert(&writer, "a", 0, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 20).await);
    let leased = |c: &rusqlite::Connection| astha_core::lease::get(c, "live").unwrap().is_some();
    assert!(
        wait_db(&db, leased).await,
        "the live feed's slot was never leased"
    );
    // Someone removes the slot with its lease, as another process's janitor does when it
    // believes the owner dead.
    let other = rusqlite::Connection::open(&db.path).unwrap();
    other
        .execute_batch(
            "DELETE FROM __astha_slots WHERE name = 'live';
             DELETE FROM __astha_leases WHERE slot = 'live';",
        )
        .unwrap();
    insert(&writer, "a", 20, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 40).await);
    assert!(
        astha.scheduler_stats().slots_lost >= 1,
        "the loss was not reported"
    );
    let restored = |c: &rusqlite::Connection| {
        astha_core::slots::get(c, "live").unwrap().is_some()
            && astha_core::lease::get(c, "live").unwrap().is_some()
    };
    assert!(
        wait_db(&db, restored).await,
        "the slot was restored without its lease"
    );
    astha.stop().await.unwrap();
}

/// Runs the recorder over 20 changes, stops, applies `edit` with Astha down, writes 10
/// more, and starts again; returns what the new run delivered and its stats.
async fn edited_while_down(edit: &str) -> (Vec<i64>, astha_actors::SchedulerStats) {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 20).await);
    // Let cleanup remove what every slot is past.
    assert!(
        wait_db(&db, |c| {
            c.query_row("SELECT min(id) FROM __cdc_log", [], |r| r.get::<_, i64>(0))
                .unwrap()
                > 10
        })
        .await
    );
    astha.stop().await.unwrap();
    drop(astha);
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(edit)
        .unwrap();
    insert(&writer, "a", 20, 10);
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, again) = RecordingComponent::new("c", &["a"]);
    astha.register_component(Box::new(c)).await.unwrap();
    again
        .wait_until(SHORT, |s| {
            s.confirmed
                .last()
                .is_some_and(|c| values(std::slice::from_ref(c)) == [29])
        })
        .await;
    let got = values(&again.state().confirmed);
    let stats = astha.scheduler_stats();
    astha.stop().await.unwrap();
    (got, stats)
}

#[actix_rt::test]
async fn a_slot_moved_past_the_head_while_astha_was_down_is_re_based_loudly() {
    let (got, stats) =
        edited_while_down("UPDATE __astha_slots SET position = 1000000 WHERE name = 'c'").await;
    assert!(
        got.ends_with(&(20..30).collect::<Vec<_>>()),
        "changes skipped: {got:?}"
    );
    assert!(strictly_increasing(&got), "{got:?}");
    assert!(stats.integrity_errors >= 1);
    let problem = stats.integrity_problem.unwrap_or_default();
    assert!(problem.contains("a slot's position"), "{problem}");
}

#[actix_rt::test]
async fn a_slot_moved_back_behind_cleaned_rows_is_reported() {
    let (got, stats) =
        edited_while_down("UPDATE __astha_slots SET position = 0 WHERE name = 'c'").await;
    assert!(got.ends_with(&(20..30).collect::<Vec<_>>()), "{got:?}");
    assert!(stats.integrity_errors >= 1, "the gap was not reported");
    let problem = stats.integrity_problem.unwrap_or_default();
    assert!(
        problem.contains("were removed before its consumer saw"),
        "{problem}"
    );
}

#[actix_rt::test]
async fn a_database_file_deleted_under_astha_stops_it_and_is_never_created_again() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 5);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 5).await);
    std::fs::remove_file(&db.path).unwrap();
    let reason = tokio::time::timeout(SHORT, astha.failed())
        .await
        .expect("a deleted database file was not noticed");
    assert!(reason.contains("deleted or renamed"), "{reason}");
    // Nothing Astha runs may leave an empty database where the file was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !db.path.exists(),
        "a database was created at the path again"
    );
    astha.stop().await.unwrap();
    assert!(
        !db.path.exists(),
        "a database was created at the path again"
    );
}

#[actix_rt::test]
async fn a_log_emptied_past_its_guard_stops_delivery_and_re_bases_with_a_new_epoch() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 20);
    assert!(seen.wait_until(SHORT, |s| s.confirmed.len() >= 20).await);
    let epoch = |db: &TestDb| -> String {
        rusqlite::Connection::open(&db.path)
            .unwrap()
            .query_row("SELECT epoch FROM __astha_log_state", [], |r| r.get(0))
            .unwrap()
    };
    let before = epoch(&db);
    // Someone removes the guard and empties the log in one transaction: SQLite numbers
    // the next rows from 1 again.
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(&format!(
            "BEGIN IMMEDIATE; DROP TRIGGER \"{}\"; DELETE FROM __cdc_log; COMMIT;",
            astha_core::log_state::guard_name("__cdc_log")
        ))
        .unwrap();
    insert(&writer, "a", 20, 5);
    let reason = tokio::time::timeout(SHORT, astha.failed())
        .await
        .expect("a restarted LSN sequence was not noticed");
    assert!(reason.contains("restarted"), "{reason}");
    assert_ne!(epoch(&db), before, "the epoch did not change");
    astha.stop().await.unwrap();
    drop(astha);
    // The next start resumes from the re-based slot: the 5 changes with reused LSNs are
    // delivered, not skipped.
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, again) = RecordingComponent::new("c", &["a"]);
    astha.register_component(Box::new(c)).await.unwrap();
    let all = again.wait_until(SHORT, |s| s.confirmed.len() >= 5).await;
    assert!(all, "{:?}", values(&again.state().confirmed));
    assert_eq!(
        values(&again.state().confirmed),
        (20..25).collect::<Vec<_>>()
    );
    astha.stop().await.unwrap();
}
