//! The fault harness's writer process: commits inserts, updates and deletes to tables
//! `t` and `u` of a database Astha captures, continuously, until a stop file appears,
//! and after each commit appends the committed changes to a ledger (see
//! `astha_tests::fault`). It opens a plain connection, as any application would: its
//! commits reach Astha through `PRAGMA data_version`.
//!
//! A failed transaction (`SQLITE_BUSY` while Astha is killed or recovering, for one) is
//! rolled back and retried with the same changes; only committed changes reach the
//! ledger.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    db: PathBuf,
    #[arg(long)]
    ledger: PathBuf,
    /// The writer stops (after its current transaction) once this file exists.
    #[arg(long)]
    stop_file: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pause between transactions, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pause_us: u64,
}

#[derive(Clone, Copy)]
enum Step {
    Insert { table: usize, id: i64, n: i64 },
    Update { table: usize, id: i64, n: i64 },
    Delete { table: usize, id: i64, old_n: i64 },
}

const TABLES: [&str; 2] = ["t", "u"];

/// Live rows per table (id, n), and the counters that make ids and `n` unique.
struct State {
    live: [Vec<(i64, i64)>; 2],
    next_id: i64,
    next_n: i64,
}

fn main() {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut conn = astha_core::db::open(&args.db).expect("open database");
    let mut ledger = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ledger)
        .expect("open ledger");
    let mut state = State {
        live: [Vec::new(), Vec::new()],
        next_id: 1,
        next_n: 1,
    };
    let pad = "p".repeat(48);
    let mut transactions = 0u64;
    let mut retries = 0u64;
    // The database disappears when a failed test removes its directory: stop then too.
    while !args.stop_file.exists() && args.db.exists() {
        let size = if rng.random_ratio(1, 50) {
            rng.random_range(100..400)
        } else {
            rng.random_range(1..=8)
        };
        let plan = plan(&mut rng, &mut state, size);
        loop {
            match apply(&mut conn, &plan, &pad) {
                Ok(()) => break,
                Err(err) => {
                    retries += 1;
                    eprintln!("writer: transaction failed, retrying: {err}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let mut lines = String::new();
        for step in &plan {
            let (table, id) = match *step {
                Step::Insert { table, n, .. } => (table, format!("I:{n}")),
                Step::Update { table, n, .. } => (table, format!("U:{n}")),
                Step::Delete { table, old_n, .. } => (table, format!("D:{old_n}")),
            };
            lines.push_str(&format!("{}\t{id}\n", TABLES[table]));
        }
        ledger.write_all(lines.as_bytes()).expect("ledger");
        transactions += 1;
        if args.pause_us > 0 {
            std::thread::sleep(Duration::from_micros(args.pause_us));
        }
    }
    ledger.flush().expect("ledger");
    eprintln!("writer: {transactions} transactions committed, {retries} retried");
}

/// Chooses the next transaction's changes and applies them to `state` (the database
/// gets the same changes, retried until they commit).
fn plan(rng: &mut StdRng, state: &mut State, size: usize) -> Vec<Step> {
    let mut steps = Vec::with_capacity(size);
    for _ in 0..size {
        let table = if rng.random_ratio(3, 5) { 0 } else { 1 };
        let live = &mut state.live[table];
        let roll = rng.random_range(0..100);
        let n = state.next_n;
        if live.is_empty() || roll < 55 {
            let id = state.next_id;
            state.next_id += 1;
            state.next_n += 1;
            live.push((id, n));
            steps.push(Step::Insert { table, id, n });
        } else if roll < 85 {
            let i = rng.random_range(0..live.len());
            state.next_n += 1;
            live[i].1 = n;
            steps.push(Step::Update {
                table,
                id: live[i].0,
                n,
            });
        } else {
            let i = rng.random_range(0..live.len());
            let (id, old_n) = live.swap_remove(i);
            steps.push(Step::Delete { table, id, old_n });
        }
    }
    steps
}

fn apply(conn: &mut rusqlite::Connection, plan: &[Step], pad: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for step in plan {
        match *step {
            Step::Insert { table, id, n } => tx.execute(
                &format!(
                    "INSERT INTO {} (id, n, pad) VALUES (?1, ?2, ?3)",
                    TABLES[table]
                ),
                (id, n, pad),
            )?,
            Step::Update { table, id, n } => tx.execute(
                &format!("UPDATE {} SET n = ?2 WHERE id = ?1", TABLES[table]),
                (id, n),
            )?,
            Step::Delete { table, id, .. } => tx.execute(
                &format!("DELETE FROM {} WHERE id = ?1", TABLES[table]),
                [id],
            )?,
        };
    }
    tx.commit()
}
