//! A snapshot goes through the same delivery path as changes: a row that fails for a
//! while is retried with backoff, a row that can never be handled is dead-lettered with
//! its reason (and the snapshot goes on), and changes follow only after the last row.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use astha_actors::testing::{Behavior, RecordingComponent};
use astha_actors::{Astha, ComponentError};
use astha_core::snapshot::SnapshotMode;
use astha_core::{Operation, Value};
use support::*;

fn v(change: &astha_core::Change) -> i64 {
    match change.row().and_then(|r| r.get("v")) {
        Some(Value::Integer(v)) => *v,
        other => panic!("{other:?}"),
    }
}

#[actix_rt::test]
async fn snapshot_rows_are_retried_and_dead_lettered_like_changes() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    insert(&db.writer(), "a", 0, 40);
    // Per row (by value): attempts so far.
    let tries: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let script_tries = tries.clone();
    let (c, seen) = RecordingComponent::scripted(
        "c",
        &["a"],
        Arc::new(move |change, _| {
            if change.op != Operation::Read {
                return Behavior::Succeed;
            }
            let value = v(change);
            let n = {
                let mut tries = script_tries.lock().unwrap();
                let n = tries.entry(value).or_insert(0);
                *n += 1;
                *n
            };
            match value {
                5 if n <= 3 => Behavior::Fail(ComponentError::transient("busy")),
                7 => Behavior::Fail(ComponentError::permanent("cannot take row 7")),
                _ => Behavior::Succeed,
            }
        }),
    );
    astha
        .register_component_with(Box::new(c), SnapshotMode::Initial)
        .await
        .unwrap();
    // Written after the snapshot was taken: a change, delivered after every row.
    insert(&db.writer(), "a", 1000, 1);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 40).await);
    let confirmed = seen.state().confirmed.clone();
    let ops: Vec<Operation> = confirmed.iter().map(|c| c.op).collect();
    assert!(ops[..39].iter().all(|op| *op == Operation::Read), "{ops:?}");
    assert_eq!(
        ops[39],
        Operation::Insert,
        "the change comes after the snapshot"
    );
    assert_eq!(v(&confirmed[39]), 1000);
    let values: Vec<i64> = confirmed[..39].iter().map(|c| v(c)).collect();
    let expected: Vec<i64> = (0..40).filter(|v| *v != 7).collect();
    assert_eq!(values, expected, "in order, row 7 left out");
    assert_eq!(tries.lock().unwrap()[&5], 4, "three failures, then success");
    let info = astha.component_info("c").unwrap();
    assert_eq!((info.failures, info.dead_letters), (4, 1));
    let progress = info.snapshot.unwrap();
    assert!(progress.finished && progress.total == 40 && progress.done == 40);
    let conn = astha_core::db::open(&db.path).unwrap();
    let (table, row, reason): (String, String, String) = conn
        .query_row(
            "SELECT tbl, row, reason FROM __astha_snapshot_dead_letters WHERE consumer = 'c'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(table, "a");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&row).unwrap()["v"],
        7
    );
    assert!(reason.contains("cannot take row 7"), "{reason}");
    // Nothing was copied from the log into the ordinary dead letters.
    assert!(astha_core::dead_letter::list(&conn, Some("c"), true)
        .unwrap()
        .is_empty());
    astha.stop().await.unwrap();
}
