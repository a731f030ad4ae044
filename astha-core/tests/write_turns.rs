//! Turns at the write lock with real SQLite connections: a slot-like write taking turns
//! gets the lock from an application writer that commits back to back, and every write
//! of both is there afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_core::db;
use astha_core::write_turns::{taking_turns, turns_given, Database};

/// A database at `path` with an application table and a slot table, and a connection
/// to it set up as Astha's write connection is (its busy handler, its commits ending
/// the turns it was given).
fn astha_connection(path: &std::path::Path) -> rusqlite::Connection {
    let astha = db::open(path).unwrap();
    astha
        .execute_batch(
            "CREATE TABLE app (id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE slot (name TEXT PRIMARY KEY, position INTEGER);
             INSERT INTO slot VALUES ('a', 0);",
        )
        .unwrap();
    db::use_fast_busy_handler(&astha).unwrap();
    astha_core::wake::install_checkpoint_hook(&astha);
    astha
}

#[test]
fn a_slot_write_taking_turns_gets_the_lock_from_a_writer_that_never_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turns.db");
    let astha = astha_connection(&path);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = db::open_writer(&path).unwrap();
            let mut insert = conn.prepare("INSERT INTO app (v) VALUES (?1)").unwrap();
            let mut rows = 0u64;
            while !stop.load(Ordering::Relaxed) {
                conn.execute_batch("BEGIN").unwrap();
                for _ in 0..100 {
                    insert.execute(["some text"]).unwrap();
                }
                conn.execute_batch("COMMIT").unwrap();
                rows += 100;
            }
            rows
        })
    };
    // Let the writer run flat out, then write positions as the router does: 200 of them,
    // and more until a turn was given (a loaded machine may starve the writer a while),
    // for 10 s at most.
    std::thread::sleep(Duration::from_millis(50));
    let database = Database::of(&path);
    assert!(database.is_some());
    let given_before = turns_given();
    let started = Instant::now();
    let mut position = 0i64;
    while position < 200
        || (turns_given() == given_before && started.elapsed() < Duration::from_secs(10))
    {
        position += 1;
        taking_turns(database, || {
            astha
                .execute("UPDATE slot SET position = ?1 WHERE name = 'a'", [position])
                .unwrap()
        });
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let rows = writer.join().unwrap();

    let stored: i64 = astha
        .query_row("SELECT position FROM slot WHERE name = 'a'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, position, "every slot write committed");
    let written: u64 = astha
        .query_row("SELECT count(*) FROM app", [], |r| r.get(0))
        .unwrap();
    assert_eq!(written, rows, "every application commit is there");
    assert!(
        turns_given() > given_before,
        "the writer never handed the lock over: {position} slot writes in {took:?}, {rows} rows"
    );
}

/// Astha's commits wake a waiting application writer early, so a writer can be woken
/// many times within a millisecond: its busy handler must count the time it waited, not
/// its tries, or it gives up with `SQLITE_BUSY` long before the 5 s busy timeout.
#[test]
fn a_writer_kept_from_the_lock_by_back_to_back_astha_commits_waits_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hog.db");
    let astha = astha_connection(&path);

    let hogging = Arc::new(AtomicBool::new(true));
    let hog = {
        let hogging = hogging.clone();
        std::thread::spawn(move || {
            // Commits back to back for 300 ms, taking the lock again at once each time.
            let started = Instant::now();
            let mut position = 0i64;
            while started.elapsed() < Duration::from_millis(300) {
                position += 1;
                astha
                    .execute_batch(&format!(
                        "BEGIN IMMEDIATE; UPDATE slot SET position = {position}; COMMIT;"
                    ))
                    .unwrap();
            }
            hogging.store(false, Ordering::Relaxed);
            position
        })
    };
    let writer = db::open_writer(&path).unwrap();
    let mut written = 0;
    while hogging.load(Ordering::Relaxed) {
        writer
            .execute("INSERT INTO app (v) VALUES ('x')", [])
            .unwrap_or_else(|e| panic!("the application's write failed after {written}: {e}"));
        written += 1;
    }
    let commits = hog.join().unwrap();
    assert!(commits > 0);
    let stored: i64 = writer
        .query_row("SELECT count(*) FROM app", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, written);
}
