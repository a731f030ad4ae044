//! The actor runtime end to end: order, restart, retries and dead letters, the circuit
//! breaker, refresh on timeout, panics, isolation between components, graceful stop.
//!
//! Tests run on tokio's paused clock inside an actix system, so retry backoffs, breaker
//! cool-downs and timeouts are exact and take no wall-clock time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use astha_actors::testing::{Behavior, RecordingComponent};
use astha_actors::{Astha, AsthaError, ComponentError};
use astha_core::breaker::BreakerState;
use support::*;

#[actix_rt::test]
async fn order_is_kept_per_component_under_concurrent_writers() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (both, seen_both) = RecordingComponent::new("both", &["a", "b"]);
    let (only_b, seen_b) = RecordingComponent::new("only_b", &["b"]);
    astha.register_component(Box::new(both)).await.unwrap();
    astha.register_component(Box::new(only_b)).await.unwrap();
    let writers: Vec<_> = ["a", "b", "a"]
        .iter()
        .enumerate()
        .map(|(w, table)| {
            let path = db.path.clone();
            let table = table.to_string();
            std::thread::spawn(move || {
                let conn = astha_core::db::open_writer(&path).unwrap();
                insert(&conn, &table, w as i64 * 1000, 200);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        seen_both
            .wait_until(LONG, |s| s.confirmed.len() == 600)
            .await
    );
    assert!(seen_b.wait_until(LONG, |s| s.confirmed.len() == 200).await);
    let lsns = seen_both.confirmed_lsns();
    assert!(
        lsns == (1..=600).collect::<Vec<_>>(),
        "every change once, in commit order"
    );
    let only_b: Vec<i64> = seen_both
        .state()
        .confirmed
        .iter()
        .filter(|c| &*c.table == "b")
        .map(|c| c.lsn)
        .collect();
    assert_eq!(seen_b.confirmed_lsns(), only_b, "b's changes, same order");
    assert!(values(&seen_b.state().confirmed) == (1000..1200).collect::<Vec<_>>());
    let stats = astha.scheduler_stats();
    assert_eq!(stats.event_counts.get("a"), Some(&400));
    assert_eq!(astha.table_subscribers("b"), vec!["both", "only_b"]);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn restart_resumes_from_slots_without_loss() {
    let db = TestDb::new();
    let writer = db.writer();
    {
        let astha = Astha::new(db.config()).unwrap();
        astha.start().unwrap();
        let (c, seen) = RecordingComponent::new("c", &["a"]);
        astha.register_component(Box::new(c)).await.unwrap();
        insert(&writer, "a", 0, 50);
        assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 50).await);
        astha.stop().await.unwrap();
    }
    // Written while Astha is down: waits in the log.
    insert(&writer, "a", 50, 70);
    let (astha, seen) = started_with_recorder(&db).await;
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() >= 70).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        values(&seen.state().confirmed) == (50..120).collect::<Vec<_>>(),
        "exactly the missed changes"
    );
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_change_that_always_fails_gets_exactly_30_attempts_then_a_dead_letter() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::scripted(
        "flaky",
        &["a"],
        Arc::new(|change, _| {
            if change.lsn == 2 {
                Behavior::Fail(ComponentError::transient("downstream unavailable"))
            } else {
                Behavior::Succeed
            }
        }),
    );
    astha.register_component(Box::new(c)).await.unwrap();
    insert(&db.writer(), "a", 0, 3);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 2).await);
    assert_eq!(seen.attempts(2), 30);
    assert_eq!(
        seen.confirmed_lsns(),
        vec![1, 3],
        "moved on after the dead letter, in order"
    );
    let conn = astha_core::db::open(&db.path).unwrap();
    let dead = astha_core::dead_letter::list(&conn, Some("flaky"), false).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].lsn, dead[0].attempts, dead[0].retriable),
        (2, 30, true)
    );
    assert!(dead[0].reason.contains("downstream unavailable"));
    let info = astha.component_info("flaky").unwrap();
    assert_eq!((info.dead_letters, info.failures), (1, 30));
    // The slot moves past it (the dead letter was written above). The position is
    // written after the confirmation the wait above saw, so it is polled for.
    let path = db.path.clone();
    let slot_past = move || {
        let conn = astha_core::db::open(&path).unwrap();
        astha_core::slots::get(&conn, "flaky")
            .unwrap()
            .unwrap()
            .position
            >= 3
    };
    let moved = actix_rt::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + LONG;
        while !slot_past() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    })
    .await
    .unwrap();
    assert!(moved, "the slot never moved past the dead-lettered change");
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn permanent_errors_go_straight_to_dead_letters() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::scripted(
        "strict",
        &["a"],
        Arc::new(|change, _| {
            if change.lsn == 1 {
                Behavior::Fail(ComponentError::permanent("row rejected"))
            } else {
                Behavior::Succeed
            }
        }),
    );
    astha.register_component(Box::new(c)).await.unwrap();
    insert(&db.writer(), "a", 0, 2);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 1).await);
    assert_eq!(seen.attempts(1), 1);
    let conn = astha_core::db::open(&db.path).unwrap();
    let dead = astha_core::dead_letter::list(&conn, Some("strict"), false).unwrap();
    assert_eq!(
        (dead[0].lsn, dead[0].attempts, dead[0].retriable),
        (1, 1, false)
    );
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn breaker_opens_half_opens_and_closes() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    // Fails its first 5 attempts (the breaker threshold), then works.
    let (c, seen) = RecordingComponent::scripted(
        "c",
        &["a"],
        Arc::new(|_, attempt| {
            if attempt <= 5 {
                Behavior::Fail(ComponentError::transient("warming up"))
            } else {
                Behavior::Succeed
            }
        }),
    );
    // The first half-open probe fails, the second succeeds.
    seen.state().health_script = vec![Err(ComponentError::transient("still down")), Ok(())];
    astha.register_component(Box::new(c)).await.unwrap();
    insert(&db.writer(), "a", 0, 1);
    assert!(
        seen.wait_until(LONG, |s| s.attempts.get(&1) == Some(&5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        astha.component_info("c").unwrap().breaker,
        BreakerState::Open
    );
    // While open, no attempt is made.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(seen.attempts(1), 5);
    assert_eq!(seen.state().health_calls, 0);
    // Cool-down (500 ms) passes: probe 1 fails, the breaker reopens; probe 2 closes it.
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 1).await);
    assert_eq!(seen.state().health_calls, 2);
    assert_eq!(seen.attempts(1), 6);
    let info = astha.component_info("c").unwrap();
    assert_eq!(info.breaker, BreakerState::Closed);
    assert_eq!(info.status, astha_actors::ComponentStatus::Active);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_hung_handler_times_out_and_the_component_is_refreshed() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::scripted(
        "c",
        &["a"],
        Arc::new(|_, attempt| {
            if attempt == 1 {
                Behavior::Hang
            } else {
                Behavior::Succeed
            }
        }),
    );
    astha.register_component(Box::new(c)).await.unwrap();
    assert!(
        seen.wait_until(LONG, |s| s.refresh_calls == 1).await,
        "refreshed at registration"
    );
    insert(&db.writer(), "a", 0, 1);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 1).await);
    assert_eq!(seen.attempts(1), 2);
    assert_eq!(seen.state().refresh_calls, 2, "refreshed after the timeout");
    assert_eq!(astha.component_info("c").unwrap().timeouts, 1);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_panicking_handler_is_recovered_and_others_are_unaffected() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (bad, seen_bad) = RecordingComponent::scripted(
        "bad",
        &["a"],
        Arc::new(|_, attempt| {
            if attempt == 1 {
                Behavior::Panic
            } else {
                Behavior::Succeed
            }
        }),
    );
    let (good, seen_good) = RecordingComponent::new("good", &["a"]);
    astha.register_component(Box::new(bad)).await.unwrap();
    astha.register_component(Box::new(good)).await.unwrap();
    insert(&db.writer(), "a", 0, 20);
    assert!(seen_bad.wait_until(LONG, |s| s.confirmed.len() == 20).await);
    assert!(
        seen_good
            .wait_until(LONG, |s| s.confirmed.len() == 20)
            .await
    );
    assert_eq!(seen_bad.confirmed_lsns(), seen_good.confirmed_lsns());
    assert_eq!(astha.component_info("bad").unwrap().panics, 20);
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_broken_component_does_not_slow_the_others() {
    tokio::time::pause();
    let db = TestDb::new();
    let mut config = db.config();
    config.supervisor.refresh_after = Duration::from_secs(3600);
    let astha = Astha::new(config).unwrap();
    astha.start().unwrap();
    let (broken, seen_broken) = RecordingComponent::scripted(
        "broken",
        &["a"],
        Arc::new(|_, _| Behavior::Fail(ComponentError::transient("down"))),
    );
    seen_broken.state().health_script = vec![Err(ComponentError::transient("down")); 1000];
    let (healthy, seen_healthy) = RecordingComponent::new("healthy", &["a"]);
    astha.register_component(Box::new(broken)).await.unwrap();
    astha.register_component(Box::new(healthy)).await.unwrap();
    // Far more than the window (2 batches of 16) can hold.
    insert(&db.writer(), "a", 0, 500);
    assert!(
        seen_healthy
            .wait_until(LONG, |s| s.confirmed.len() == 500)
            .await
    );
    assert!(
        seen_broken.state().confirmed.is_empty(),
        "all 500 went by while broken was stuck"
    );
    let opened = seen_broken
        .wait_until(LONG, |_| {
            astha.component_info("broken").unwrap().breaker == BreakerState::Open
        })
        .await;
    assert!(opened, "the broken component's breaker opens");
    // Five consecutive failures open it: change attempts, or a failed health check
    // (every 10 s of the paused clock) landing between the retries.
    let at_open = seen_broken.attempts(1);
    assert!(
        (1..=5).contains(&at_open),
        "{at_open} attempts before the breaker opened"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        seen_broken.attempts(1),
        at_open,
        "no attempts while open (cool-down 5 s)"
    );
    // Its changes wait in the log: its slot has not moved, so cleanup keeps them.
    let conn = astha_core::db::open(&db.path).unwrap();
    let lag = astha_core::slots::lag(&conn, "__cdc_log", "broken", 0).unwrap();
    assert_eq!(lag.events, 500);
    astha.stop().await.unwrap();
}

/// A graceful stop lets each component finish after its last confirmed delivery
/// (`on_stop`, once, after the slot is written), and returns only when they are done; a
/// component whose `on_stop` hangs, fails or panics is bounded by the event timeout and
/// changes no position.
#[actix_rt::test]
async fn stop_lets_each_component_finish_once_after_its_last_delivery() {
    // Real time: on tokio's paused clock the stop's drain timeout would fire while the
    // slot write runs on a blocking thread. A hanging `on_stop` costs the event timeout (2 s).
    let db = TestDb::new();
    let writer = db.writer();
    for (round, stop_behavior) in [
        None,
        Some(Behavior::Hang),
        Some(Behavior::Fail(ComponentError::permanent("cannot finish"))),
        Some(Behavior::Panic),
    ]
    .into_iter()
    .enumerate()
    {
        let astha = Astha::new(db.config()).unwrap();
        astha.start().unwrap();
        let (c, seen) = RecordingComponent::new("c", &["a"]);
        let (other, seen_other) = RecordingComponent::new("other", &["a"]);
        seen.state().stop_behavior = stop_behavior.clone();
        astha.register_component(Box::new(c)).await.unwrap();
        astha.register_component(Box::new(other)).await.unwrap();
        let head = 40 * (round as i64 + 1);
        insert(&writer, "a", head - 40, 40);
        assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 40).await);
        assert!(
            seen_other
                .wait_until(LONG, |s| s.confirmed.len() == 40)
                .await
        );
        assert!(seen.state().stops.is_empty(), "not before the stop");
        astha.stop().await.unwrap();
        assert_eq!(seen.state().stops, vec![40], "{stop_behavior:?}");
        assert_eq!(seen_other.state().stops, vec![40], "{stop_behavior:?}");
        let conn = astha_core::db::open(&db.path).unwrap();
        for name in ["c", "other"] {
            let slot = astha_core::slots::list(&conn)
                .unwrap()
                .into_iter()
                .find(|s| s.name == name)
                .unwrap();
            assert_eq!(slot.position, head, "{name}: {stop_behavior:?}");
        }
    }
}

#[actix_rt::test]
async fn stop_loses_nothing() {
    let db = TestDb::new();
    // Capture is installed and the component's slot exists before the first write.
    let conn = astha_core::db::open(&db.path).unwrap();
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "a")
        .unwrap();
    astha_core::slots::create(&conn, "__cdc_log", "c", astha_core::slots::SlotStart::Head).unwrap();
    let path = db.path.clone();
    let writer = std::thread::spawn(move || {
        let conn = astha_core::db::open_writer(&path).unwrap();
        insert(&conn, "a", 0, 3000);
    });
    let mut seen_all = Vec::new();
    for _round in 0..3 {
        let astha = Astha::new(db.config()).unwrap();
        astha.start().unwrap();
        let (c, seen) = RecordingComponent::new("c", &["a"]);
        astha.register_component(Box::new(c)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        astha.stop().await.unwrap();
        seen_all.extend(seen.confirmed_lsns());
    }
    writer.join().unwrap();
    let (astha, seen) = started_with_recorder(&db).await;
    // Earlier rounds may already have confirmed everything: wait for the position.
    let done = seen
        .wait_until(LONG, |_| {
            astha.component_info("c").unwrap().position == 3000
        })
        .await;
    if !done {
        let conn = astha_core::db::open(&db.path).unwrap();
        panic!(
            "stalled: stats {:?}\nslots {:?}\nlast {:?}",
            astha.scheduler_stats(),
            astha_core::slots::list(&conn).unwrap(),
            seen.confirmed_lsns().last()
        );
    }
    seen_all.extend(seen.confirmed_lsns());
    seen_all.sort();
    let before = seen_all.len();
    seen_all.dedup();
    assert!(
        seen_all == (1..=3000).collect::<Vec<_>>(),
        "every change delivered"
    );
    assert_eq!(
        before,
        seen_all.len(),
        "graceful stops deliver nothing twice"
    );
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn registration_rules() {
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    assert!(matches!(
        astha
            .register_component(Box::new(RecordingComponent::new("x", &["a"]).0))
            .await,
        Err(AsthaError::NotRunning)
    ));
    astha.start().unwrap();
    astha
        .register_component(Box::new(RecordingComponent::new("x", &["a"]).0))
        .await
        .unwrap();
    let again = astha
        .register_component(Box::new(RecordingComponent::new("x", &["a"]).0))
        .await;
    assert!(matches!(again, Err(AsthaError::DuplicateComponent(_))));
    assert_eq!(astha.all_components().len(), 1);
    astha.unregister_component("x").await.unwrap();
    let conn = astha_core::db::open(&db.path).unwrap();
    assert!(
        astha_core::slots::get(&conn, "x").unwrap().is_none(),
        "slot dropped"
    );
    assert!(matches!(
        astha.unregister_component("x").await,
        Err(AsthaError::UnknownComponent(_))
    ));
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn malformed_log_rows_are_quarantined_and_delivery_goes_on() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 2);
    writer
        .execute(
            "INSERT INTO __cdc_log (ts, tbl, op, schema_id, v0, v1)
             VALUES (julianday('now'), 'a', 'I', 'not a schema id', 1, 2)",
            [],
        )
        .unwrap();
    insert(&writer, "a", 2, 2);
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 4).await);
    assert_eq!(seen.confirmed_lsns(), vec![1, 2, 4, 5]);
    let conn = astha_core::db::open(&db.path).unwrap();
    let quarantined = seen
        .wait_until(LONG, |_| {
            !astha_core::dead_letter::list(&conn, Some("*"), false)
                .unwrap()
                .is_empty()
        })
        .await;
    assert!(quarantined, "the bad row is kept as a dead letter");
    let dead = astha_core::dead_letter::list(&conn, Some("*"), false).unwrap();
    assert_eq!(dead[0].lsn, 3);
    assert!(dead[0].reason.contains("schema_id"), "{}", dead[0].reason);
    assert_eq!(astha.scheduler_stats().malformed, 1);
    let info = astha.component_info("c").unwrap();
    assert_eq!((info.position, info.lag), (5, 0));
    astha.stop().await.unwrap();
}

#[actix_rt::test]
async fn batching_components_get_batches_and_keep_partial_progress() {
    tokio::time::pause();
    let db = TestDb::new();
    let astha = Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::scripted(
        "batcher",
        &["a"],
        Arc::new(|change, attempt| {
            if change.lsn == 5 && attempt == 1 {
                Behavior::Fail(ComponentError::transient("ack timeout"))
            } else {
                Behavior::Succeed
            }
        }),
    );
    astha
        .register_component(Box::new(c.batching(8)))
        .await
        .unwrap();
    let writer = db.writer();
    writer.execute_batch("BEGIN").unwrap();
    insert(&writer, "a", 0, 16);
    writer.execute_batch("COMMIT").unwrap();
    assert!(seen.wait_until(LONG, |s| s.confirmed.len() == 16).await);
    assert_eq!(seen.confirmed_lsns(), (1..=16).collect::<Vec<_>>());
    assert_eq!(
        seen.attempts(4),
        1,
        "changes before the failure were confirmed, not redelivered"
    );
    assert_eq!(seen.attempts(5), 2);
    let sizes = seen.state().batch_sizes.clone();
    assert!(
        sizes.iter().all(|&n| n <= 8) && sizes.iter().any(|&n| n > 1),
        "{sizes:?}"
    );
    astha.stop().await.unwrap();
}
