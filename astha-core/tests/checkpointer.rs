//! The checkpointer ([`astha_core::wake::Checkpointer`]): while it runs, a hooked writer's
//! WAL is copied into the database on the checkpointer's thread, not between the
//! writer's transactions; the captured rows stay exact; once it stops, the writer
//! checkpoints itself again. One test in its own binary: the checkpoint counts are the
//! process's.

mod common;

use std::time::Duration;

use astha_core::wake::{checkpoint_counts, Checkpointer};
use astha_core::Value;
use common::*;

/// Commits `txs` transactions of 50 captured rows of about 1 KB each into `t`, from `first`.
fn write(conn: &rusqlite::Connection, first: i64, txs: i64) {
    for tx in 0..txs {
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..50 {
            let id = first + tx * 50 + i;
            conn.execute(
                "INSERT INTO t (id, body) VALUES (?1, ?2)",
                rusqlite::params![id, format!("{id:>1000}")],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
}

/// The WAL's frames and how many of them are copied into the database.
fn wal_state(conn: &rusqlite::Connection) -> (i64, i64) {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
    .unwrap()
}

#[test]
fn the_checkpointer_takes_the_writers_checkpoints_and_hands_them_back_when_it_stops() {
    let db = TestDb::new();
    let setup = db.conn();
    setup
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        .unwrap();
    capture().install(&setup, "t").unwrap();
    // A reader that holds an old snapshot keeps the WAL from starting over, so it grows
    // past the checkpoint threshold whoever copies it.
    let reader = db.conn();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();

    let checkpointer = Checkpointer::start(db.conn()).unwrap();
    let writer = astha_core::db::open_writer(&db.path).unwrap();
    let before = checkpoint_counts();
    // Half a frame a row (the row and its log row, about 1 KB each): some 2,500 frames,
    // beyond the threshold (1,000) and below what makes the writer checkpoint itself
    // while a checkpointer runs (16,000).
    write(&writer, 0, 100);
    let done = wait(|| checkpoint_counts().beside > before.beside);
    assert!(done, "the checkpointer ran");
    assert_eq!(
        checkpoint_counts().inline,
        before.inline,
        "the writer left its checkpoints to the checkpointer"
    );
    checkpointer.stop();

    // Stopped: the writer checkpoints itself again.
    let stopped = checkpoint_counts();
    write(&writer, 5_000, 100);
    assert!(checkpoint_counts().inline > stopped.inline);
    assert_eq!(checkpoint_counts().beside, stopped.beside);

    // The reader's snapshot is the one it began with; every row was captured, in order.
    let (frames, _) = wal_state(&setup);
    assert!(frames > 1_000, "the WAL could not start over: {frames}");
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    reader.execute_batch("COMMIT").unwrap();
    let changes = read_all(&setup, 0, 256);
    let ids: Vec<i64> = changes
        .iter()
        .map(|c| match c.after.as_ref().unwrap().values()[0] {
            Value::Integer(id) => id,
            ref other => panic!("id {other:?}"),
        })
        .collect();
    let expected: Vec<i64> = (0..10_000).collect();
    assert_eq!(ids, expected);
}

/// Waits until `done` holds, for at most a minute (a machine this slow fails the test).
fn wait(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..60_000 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}
