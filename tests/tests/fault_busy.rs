//! Fault harness: a database locked by a long writer. A transaction that holds SQLite's
//! write lock for longer than Astha's busy timeout (5 s) makes every write Astha tries
//! (slot positions, cleanup, capture install) fail with `SQLITE_BUSY`; reads go on
//! (WAL). Nothing may be lost or delivered twice, a second Astha must fail to start with
//! a retriable error, and Astha must catch up once the lock is released.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use astha_actors::{Astha, AsthaError};
use support::*;

const HOLD: Duration = Duration::from_secs(7);

#[actix_rt::test]
async fn a_writer_holding_the_lock_past_the_busy_timeout_delays_but_loses_nothing() {
    let db = TestDb::new();
    let (astha, seen) = started_with_recorder(&db).await;
    let writer = db.writer();
    insert(&writer, "a", 0, 100);
    let path = db.path.clone();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let releasing = Arc::new(AtomicBool::new(false));
    let releasing_flag = releasing.clone();
    let holder = std::thread::spawn(move || {
        let conn = astha_core::db::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        for v in 100..150 {
            conn.execute("INSERT INTO a (v) VALUES (?1)", [v]).unwrap();
        }
        std::thread::sleep(HOLD);
        releasing_flag.store(true, Ordering::SeqCst);
        conn.execute_batch("COMMIT").unwrap();
    });
    locked.recv().unwrap();

    // Reads are not blocked by the writer, but every slot write waits for the lock; how
    // far delivery goes meanwhile depends on whether the router waits for durable
    // positions. Nothing here may be lost or duplicated either way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = seen.confirmed_lsns().len();
    println!("fault_busy: {during} of 100 committed changes confirmed while the lock was held");

    // A second Astha cannot start while the lock is held: its capture install needs the
    // write lock. It fails after the busy timeout with an error that says "retry".
    let config = db.config();
    let second = tokio::task::spawn_blocking(move || Astha::new(config).map(|_| ()))
        .await
        .unwrap();
    match second {
        Err(AsthaError::Core(err)) => assert!(err.is_retriable(), "{err}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(()) => assert!(
            releasing.load(Ordering::SeqCst),
            "Astha::new succeeded while the lock was held"
        ),
    }

    while !holder.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.join().unwrap();
    assert!(
        seen.wait_until(LONG, |s| s.confirmed.len() == 150).await,
        "caught up after the lock was released"
    );
    let conn = astha_core::db::open(&db.path).unwrap();
    let durable = seen
        .wait_until(LONG, |_| {
            astha_core::slots::get(&conn, "c")
                .unwrap()
                .is_some_and(|s| s.position == 150)
        })
        .await;
    assert!(durable, "the slot write succeeded once the lock was free");
    assert_eq!(
        values(&seen.state().confirmed),
        (0..150).collect::<Vec<_>>()
    );
    astha.stop().await.unwrap();

    // Nothing is delivered twice after a restart.
    let (astha, seen) = started_with_recorder(&db).await;
    insert(&writer, "a", 150, 1);
    assert!(seen.wait_until(LONG, |s| !s.confirmed.is_empty()).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(values(&seen.state().confirmed), vec![150]);
    astha.stop().await.unwrap();
}
