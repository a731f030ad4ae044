//! The throughput suite's floor for a durable log consumer: the least that any reader of
//! a trigger-written change log must do to deliver every change once and keep the log
//! bounded, written by hand on one thread with one connection and nothing else. It reads
//! the log past its position in batches (every value of every row copied out, as a
//! consumer that hands rows on must), then in one write transaction per batch moves four
//! slot positions, and deletes the rows it read in that write, or in one of their own
//! after it, or never ([`Delete`]). With [`Protocol::turns`] the writes that move the
//! positions take turns with the writer at the lock as Astha's slot writes do
//! (`astha_core::write_turns`); otherwise it waits for the lock in 50 µs sleeps.
//!
//! It owns its own table of positions (`bare_slots`), never Astha's; it has no actors, no
//! components, no retries, no wake-ups (an empty read sleeps 50 µs) and no WAL bound. It
//! promises nothing to an application: it exists so that the writer's rate beside it says
//! what any consumer of the log costs a writer on this machine, measured in the same run
//! as Astha.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_core::write_turns;
use rusqlite::types::Value;

/// Positions moved in each write, one per component of the suite.
const SLOTS: i64 = 4;

/// Whether and how the bare consumer deletes the rows it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delete {
    /// Never: the rows stay (as with Astha's cleanup held off).
    Keep,
    /// In the write that moves the positions.
    WithPositions,
    /// In a write of its own after that one, which never takes turns (as Astha's
    /// cleanup does not).
    Apart,
}

/// How the bare consumer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    pub delete: Delete,
    /// The writes that move the positions take turns with this process's `open_writer`
    /// writers at the lock.
    pub turns: bool,
}

impl Protocol {
    /// The protocols measured, the rows kept first.
    pub const ALL: [Protocol; 5] = [
        Protocol {
            delete: Delete::Keep,
            turns: false,
        },
        Protocol {
            delete: Delete::Keep,
            turns: true,
        },
        Protocol {
            delete: Delete::WithPositions,
            turns: false,
        },
        Protocol {
            delete: Delete::WithPositions,
            turns: true,
        },
        Protocol {
            delete: Delete::Apart,
            turns: true,
        },
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match (self.delete, self.turns) {
            (Delete::Keep, false) => "keeping rows, sleeping for the lock",
            (Delete::Keep, true) => "keeping rows, taking turns",
            (Delete::WithPositions, false) => "deleting with the positions, sleeping for the lock",
            (Delete::WithPositions, true) => "deleting with the positions, taking turns",
            (Delete::Apart, false) => "deleting apart, sleeping for the lock",
            (Delete::Apart, true) => "deleting apart, positions taking turns",
        }
    }
}

/// What the floor's run measured.
#[derive(Debug, Clone, Copy)]
pub struct BareRun {
    /// When the consumer's position reached the last row.
    pub done: Instant,
    /// Its write transactions (positions moved, rows deleted).
    pub writes: u64,
    /// Its thread's time on CPU.
    pub cpu: Duration,
}

/// Starts the consumer on its own thread; it returns once its position reached `rows`
/// (the log's ids start at 1), or fails the bench after 300 s. `writer_done` only decides
/// how long an empty read sleeps.
pub fn spawn(
    path: &Path,
    log: &str,
    batch: usize,
    rows: i64,
    protocol: Protocol,
    writer_done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BareRun> {
    let path = path.to_path_buf();
    let log = log.to_string();
    std::thread::Builder::new()
        .name("bare-consumer".into())
        .spawn(move || consume(&path, &log, batch, rows, protocol, &writer_done))
        .expect("bare consumer thread")
}

fn consume(
    path: &Path,
    log: &str,
    batch: usize,
    rows: i64,
    protocol: Protocol,
    writer_done: &AtomicBool,
) -> BareRun {
    let conn = astha_core::db::open(path).expect("bare consumer connection");
    conn.busy_handler(Some(taking_turns_or_short_sleeps))
        .expect("busy handler");
    let database = write_turns::Database::of(path).filter(|_| protocol.turns);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS bare_slots (slot INTEGER PRIMARY KEY, position INTEGER NOT NULL)",
    )
    .expect("slots table");
    for slot in 1..=SLOTS {
        conn.execute("INSERT OR IGNORE INTO bare_slots VALUES (?1, 0)", [slot])
            .expect("slot");
    }
    let mut read = conn
        .prepare(&format!(
            "SELECT * FROM {log} WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .expect("read");
    let mut move_slots = conn
        .prepare("UPDATE bare_slots SET position = ?1")
        .expect("slots");
    let mut remove = conn
        .prepare(&format!("DELETE FROM {log} WHERE id <= ?1"))
        .expect("delete");
    let started = super::throughput::thread_sched("thread-self").0;
    let (mut position, mut writes) = (0i64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    while position < rows {
        assert!(
            Instant::now() < deadline,
            "the bare consumer did not catch up"
        );
        let width = read.column_count();
        // One read transaction per batch, as a poll read.
        conn.execute_batch("BEGIN").expect("begin read");
        let batch_rows: Vec<Vec<Value>> = read
            .query_map(rusqlite::params![position, batch as i64], |row| {
                (0..width).map(|i| row.get::<_, Value>(i)).collect()
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        conn.execute_batch("COMMIT").expect("end read");
        let Some(last) = batch_rows.last() else {
            let pause = if writer_done.load(Ordering::Relaxed) {
                1
            } else {
                50
            };
            std::thread::sleep(Duration::from_micros(pause));
            continue;
        };
        let Value::Integer(last_id) = last[0] else {
            panic!("a log id that is not an integer");
        };
        drop(batch_rows);
        // With `database` None the write takes no turns: `astha_wait` declines and the
        // busy handler sleeps.
        write_turns::taking_turns(database, || {
            conn.execute_batch("BEGIN").expect("begin write");
            move_slots.execute([last_id]).expect("move slots");
            if protocol.delete == Delete::WithPositions {
                remove.execute([last_id]).expect("delete");
            }
            conn.execute_batch("COMMIT").expect("commit write");
        });
        if protocol.turns {
            write_turns::astha_committed();
        }
        writes += 1;
        if protocol.delete == Delete::Apart {
            remove.execute([last_id]).expect("delete");
            if protocol.turns {
                write_turns::astha_committed();
            }
            writes += 1;
        }
        position = last_id;
    }
    BareRun {
        done: Instant::now(),
        writes,
        cpu: super::throughput::thread_sched("thread-self")
            .0
            .saturating_sub(started),
    }
}

/// Waits for the writer's next commit when its write takes turns and the writer is
/// active (as Astha's slot writes wait), otherwise 50 µs; gives up after 100,000 tries.
fn taking_turns_or_short_sleeps(count: i32) -> bool {
    if count >= 100_000 {
        return false;
    }
    if !write_turns::astha_wait() {
        std::thread::sleep(Duration::from_micros(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor consumes rows a real trigger wrote, whatever its protocol: its positions
    /// end at the last id, and when it deletes only the log's newest row is left.
    #[test]
    fn the_bare_consumer_reads_every_row_moves_its_slots_and_deletes_what_it_read() {
        for protocol in Protocol::ALL {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bare.db");
            let conn = astha_core::db::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .unwrap();
            astha_core::capture::Capture::new("__cdc_log")
                .install(&conn, "t")
                .unwrap();
            for i in 0..1000 {
                conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("v{i}")])
                    .unwrap();
            }
            let done = Arc::new(AtomicBool::new(true));
            let run = spawn(&path, "__cdc_log", 256, 1000, protocol, done)
                .join()
                .unwrap();
            let per_batch = if protocol.delete == Delete::Apart {
                2
            } else {
                1
            };
            assert_eq!(run.writes, 4 * per_batch, "1000 rows in batches of 256");
            let positions: Vec<i64> = conn
                .prepare("SELECT position FROM bare_slots ORDER BY slot")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(positions, vec![1000; SLOTS as usize]);
            let left: i64 = conn
                .query_row("SELECT count(*) FROM __cdc_log", [], |r| r.get(0))
                .unwrap();
            // The log keeps its newest row whatever deletes it (so an id is never
            // handed out twice): deleting leaves that one.
            let kept = protocol.delete == Delete::Keep;
            assert_eq!(left, if kept { 1000 } else { 1 });
        }
    }
}
