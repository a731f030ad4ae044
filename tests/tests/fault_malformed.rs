//! Fault harness: malformed rows injected into the change log between rows written by
//! the real triggers. Rows Astha cannot decode must land in the dead-letter table (under
//! the consumer `*`), never be delivered and never stop the others from flowing.

mod support;

use std::time::Duration;

use astha_actors::testing::{Recording, RecordingComponent};
use rusqlite::Connection;
use support::*;

/// Writes one log row directly, as a broken tool or a hand edit might: `sql_values`
/// for `ts, tbl, op, schema_id` and then the value columns `v0, v1, ...`.
fn inject(conn: &Connection, sql_values: &str) -> i64 {
    let values = sql_values.split(", ").count() - 4;
    conn.execute(
        &format!(
            "INSERT INTO __cdc_log (ts, tbl, op, schema_id, {}) VALUES ({sql_values})",
            astha_core::image::value_list(values)
        ),
        [],
    )
    .unwrap();
    conn.last_insert_rowid()
}

fn schema_id(conn: &Connection, table: &str) -> i64 {
    astha_core::capture::Capture::new("__cdc_log")
        .captured_schema(conn, table)
        .unwrap()
        .unwrap()
        .id
}

/// Rows whose columns have the right types but whose content is wrong. (A change mask
/// of the wrong type is covered in astha-core's capture tests: tables `a` and `b` have
/// only typed columns, whose UPDATEs carry no mask.)
fn bad_content(a: i64, b: i64) -> Vec<String> {
    let now = "julianday('now')";
    vec![
        format!("{now}, 'a', 'I', 999999, 1, 2"),
        format!("{now}, 'a', 'X', {a}, 1, 2"),
        format!("{now}, 'a', '', {a}, 1, 2"),
        format!("{now}, 'a', 'U', {b}, 1, 2, NULL, 3"),
        format!("{now}, 'b', 'D', {a}, 1, 2"),
    ]
}

/// Rows whose columns hold values of the wrong storage class.
fn bad_types(a: i64) -> Vec<String> {
    let now = "julianday('now')";
    vec![
        format!("'yesterday', 'a', 'I', {a}, 1, 2"),
        format!("{now}, 'a', X'49', {a}, 1, 2"),
        format!("{now}, 'a', 'I', 'one', 1, 2"),
        format!("{now}, 42, 'I', {a}, 1, 2"),
    ]
}

async fn run(bad: impl Fn(i64, i64) -> Vec<String>) {
    let db = TestDb::new();
    keep_log(&db);
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    let (a, b) = (schema_id(&writer, "a"), schema_id(&writer, "b"));
    let rows = bad(a, b);
    let mut injected = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        insert(&writer, "a", i as i64 * 10, 3);
        injected.push(inject(&writer, row));
    }
    insert(&writer, "a", 1000, 3);
    let good = logged_lsns(&db.path, "a")
        .into_iter()
        .filter(|l| !injected.contains(l))
        .collect::<Vec<_>>();
    assert_eq!(good.len(), rows.len() * 3 + 3);
    let done = seen
        .wait_until(Duration::from_secs(20), |s| s.confirmed.len() >= good.len())
        .await;
    assert!(
        done,
        "only {} of {} good changes delivered; stats {:?}",
        seen.confirmed_lsns().len(),
        good.len(),
        astha.scheduler_stats()
    );
    assert_eq!(seen.confirmed_lsns(), good, "good rows, in order, once");
    let conn = astha_core::db::open(&db.path).unwrap();
    let mut quarantined = Vec::new();
    for _ in 0..500 {
        quarantined = astha_core::dead_letter::list(&conn, Some("*"), false)
            .unwrap()
            .iter()
            .map(|d| d.lsn)
            .collect::<Vec<_>>();
        if quarantined.len() >= injected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    quarantined.sort();
    assert_eq!(
        quarantined, injected,
        "every malformed row is a dead letter"
    );
    assert_eq!(astha.scheduler_stats().malformed, injected.len() as u64);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn rows_with_bad_content_go_to_dead_letters_and_the_rest_flows() {
    run(bad_content).await;
}

#[actix_rt::test]
async fn rows_with_bad_types_go_to_dead_letters_and_the_rest_flows() {
    run(|a, _| bad_types(a)).await;
}

/// Makes every insert into the dead-letter table fail, until [`heal_dead_letters`].
fn break_dead_letters(conn: &Connection) {
    conn.execute_batch(
        "CREATE TRIGGER fail_dead_letters BEFORE INSERT ON __astha_dead_letters
         BEGIN SELECT RAISE(ABORT, 'injected: dead-letter write fails'); END;",
    )
    .unwrap();
}

fn heal_dead_letters(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER fail_dead_letters")
        .unwrap();
}

/// Astha with component "c" on `a`, dead-letter writes failing, and
/// [`good_bad_good`] written and delivered up to the malformed row.
async fn delivered_up_to_a_bad_row() -> (TestDb, astha_actors::Astha, Recording, Connection, i64) {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    break_dead_letters(&writer);
    let bad = good_bad_good(&writer);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() >= 3).await);
    (db, astha, seen, writer, bad)
}

/// Three good rows of `a`, a malformed one (an unknown schema id), three good ones;
/// returns the malformed row's LSN.
fn good_bad_good(conn: &Connection) -> i64 {
    let a = schema_id(conn, "a");
    insert(conn, "a", 0, 3);
    let bad = inject(conn, &format!("julianday('now'), 'a', 'I', 999999, {a}, 2"));
    insert(conn, "a", 3, 3);
    bad
}

/// Asserts, after many cleanup ticks and poller retries, that the row `bad` is still in
/// the log and `slot` has not passed it.
async fn assert_held(conn: &Connection, bad: i64, slot: &str) {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let still_there: i64 = conn
        .query_row("SELECT count(*) FROM __cdc_log WHERE id = ?1", [bad], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        still_there, 1,
        "cleanup deleted a row that was never dead-lettered"
    );
    let slot = astha_core::slots::get(conn, slot).unwrap().unwrap();
    assert!(
        slot.position < bad,
        "slot at {} passed the row {bad}",
        slot.position
    );
}

fn quarantined(conn: &Connection) -> Vec<i64> {
    astha_core::dead_letter::list(conn, Some("*"), false)
        .unwrap()
        .iter()
        .map(|d| d.lsn)
        .collect()
}

/// Issue 14: the dead-letter write of a malformed row fails (injected: a trigger makes
/// every insert into the dead-letter table abort). Until it succeeds, nothing may move
/// past the row: no slot passes it, so cleanup (every 50 ms here, with only the
/// component's slot) cannot delete it. Once writes work again, it is dead-lettered and
/// everything after it flows, in order.
#[actix_rt::test]
async fn a_failed_dead_letter_write_never_lets_cleanup_delete_the_row() {
    let (_db, astha, seen, writer, bad) = delivered_up_to_a_bad_row().await;
    assert_held(&writer, bad, "c").await;
    assert_eq!(bad, 4);
    assert_eq!(
        seen.confirmed_lsns(),
        vec![1, 2, 3],
        "nothing delivered past it"
    );

    heal_dead_letters(&writer);
    // Delivered rows may be cleaned by now: the good rows are those around the bad one.
    let good: Vec<i64> = (1..bad).chain(bad + 1..=bad + 3).collect();
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() >= 6).await);
    assert_eq!(seen.confirmed_lsns(), good, "good rows, in order, once");
    assert_eq!(quarantined(&writer), vec![bad]);
    assert_eq!(astha.scheduler_stats().malformed, 1);
    astha.stop().await.unwrap();
}

/// Registers a component "late" of table `a` whose slot starts at the beginning of the
/// log (so it catches up over rows already there); what it was given is recorded.
async fn register_from_the_beginning(
    astha: &astha_actors::Astha,
    writer: &Connection,
) -> Recording {
    astha_core::slots::create(
        writer,
        "__cdc_log",
        "late",
        astha_core::slots::SlotStart::Beginning,
    )
    .unwrap();
    let (late, seen) = RecordingComponent::new("late", &["a"]);
    astha.register_component(Box::new(late)).await.unwrap();
    seen
}

/// The same failure, met by a component catching up from the log (its slot behind the
/// ring, the only slot): its read sees the rows after the malformed one, but counts
/// nothing past what the poller published, so its slot stays before the row.
#[actix_rt::test]
async fn a_catch_up_never_moves_past_a_row_whose_dead_letter_failed() {
    let (_db, astha, _seen, writer, bad) = delivered_up_to_a_bad_row().await;
    // "c" leaves; "late" comes with a slot at the beginning of the log, behind the ring.
    astha.unregister_component("c").await.unwrap();
    let seen_late = register_from_the_beginning(&astha, &writer).await;
    assert_held(&writer, bad, "late").await;
    assert!(
        seen_late.confirmed_lsns().iter().all(|l| *l < bad),
        "delivered past it: {:?}",
        seen_late.confirmed_lsns()
    );

    heal_dead_letters(&writer);
    let after: Vec<i64> = (bad + 1..=bad + 3).collect();
    let flowed = seen_late
        .wait_until(LONG, |s| s.confirmed.iter().any(|c| c.lsn == bad + 3))
        .await;
    assert!(flowed);
    let late_lsns = seen_late.confirmed_lsns();
    assert_eq!(late_lsns[late_lsns.len() - 3..], after[..]);
    assert_eq!(quarantined(&writer), vec![bad]);
    astha.stop().await.unwrap();
}

/// A malformed row the poller never reads: it lies before the poller's start (no slot
/// held the log when Astha started, so the poller began at the head), and a slot created
/// afterwards at the beginning of the log catches up over it. The router moves it to dead
/// letters before the route passes it, as the poller does with the rows it reads; it is
/// never skipped in silence (as `astha watch --from-beginning` did, starting Astha before
/// making its slot).
#[actix_rt::test]
async fn a_malformed_row_before_the_pollers_start_is_dead_lettered_by_a_catch_up() {
    let db = TestDb::new();
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    let writer = db.writer();
    let bad = good_bad_good(&writer);
    astha.start().unwrap();
    let seen = register_from_the_beginning(&astha, &writer).await;
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() >= 6).await);
    let good: Vec<i64> = (1..bad).chain(bad + 1..=bad + 3).collect();
    assert_eq!(seen.confirmed_lsns(), good, "good rows, in order, once");
    assert_eq!(
        quarantined(&writer),
        vec![bad],
        "the malformed row is a dead letter"
    );
    assert_eq!(astha.scheduler_stats().malformed, 1);
    astha.stop().await.unwrap();
}
