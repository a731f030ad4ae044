//! Fault harness: a third process edits what Astha owns while the writer commits and
//! the worker delivers (issue 14): it cleans the log by hand (what every component has
//! handled, the newest row included, which used to make SQLite hand out LSNs again),
//! deletes slot rows, drops the slot table, and moves slots forward. Then the worker is
//! killed, the writer stopped, and a last worker catches up; the harness's checker
//! proves every committed change reached every component in commit order, with
//! duplicates only from the last unconfirmed batch.
//!
//! `ASTHA_FAULT_TAMPER_SECS` sets how long the edits go on (default 3),
//! `ASTHA_FAULT_SEED` replays a run.

mod support;

use std::time::{Duration, Instant};

use astha_tests::fault::{check, parse_ledger, COMPONENTS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::harness::*;

/// The newest LSN every component has handled, read from their sinks: what a careful
/// operator may delete by hand. (The slots cannot say it: the other edits corrupt them.)
fn handled_by_all(h: &Harness) -> i64 {
    COMPONENTS
        .iter()
        .map(|(name, _, _)| {
            sink(h, name)
                .lines()
                .filter_map(|l| l.split('\t').next()?.parse::<i64>().ok())
                .max()
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

/// One edit another process makes.
fn tamper(h: &Harness, conn: &rusqlite::Connection, rng: &mut StdRng) -> &'static str {
    let component = COMPONENTS[rng.random_range(0..COMPONENTS.len())].0;
    let (what, sql) = match rng.random_range(0..4) {
        0 => (
            "log cleaned by hand",
            format!("DELETE FROM __cdc_log WHERE id <= {}", handled_by_all(h)),
        ),
        1 => (
            "slot row deleted",
            format!("DELETE FROM __astha_slots WHERE name = '{component}'"),
        ),
        2 => ("slot table dropped", "DROP TABLE __astha_slots".to_string()),
        _ => (
            "slot moved forward",
            format!(
                "UPDATE __astha_slots SET position = position + 1000 WHERE name = '{component}'"
            ),
        ),
    };
    // An edit that finds the table gone (dropped a moment ago) is simply not made.
    let _ = conn.execute_batch(&sql);
    what
}

#[test]
fn another_process_editing_the_log_and_the_slots_loses_nothing() {
    let secs = env_u64("ASTHA_FAULT_TAMPER_SECS").unwrap_or(3);
    let seed = seed("fault_tamper");
    let mut rng = StdRng::seed_from_u64(seed);
    let h = harness();
    let mut writer = writer(&h, seed);
    let mut worker_process = Killed(worker(&h.db, &h.sinks).spawn().expect("start worker"));
    std::thread::sleep(Duration::from_millis(500));
    let other = rusqlite::Connection::open(&h.db).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut edits = std::collections::BTreeMap::<&str, usize>::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        *edits.entry(tamper(&h, &other, &mut rng)).or_default() += 1;
        std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
    }
    // Every component confirms again after the last edit (the writer goes on), so each
    // slot is back where its consumer is before the kill.
    std::thread::sleep(Duration::from_millis(800));
    if let Some(status) = worker_process.0.try_wait().unwrap() {
        panic!("worker exited on its own: {status}");
    }
    worker_process.0.kill().expect("kill -9");
    worker_process.0.wait().unwrap();
    std::fs::write(&h.stop, b"").unwrap();
    let status = wait_exit(&mut writer.0, Duration::from_secs(60), "writer");
    assert!(status.success(), "writer failed: {status}");
    let mut last = Killed(
        worker(&h.db, &h.sinks)
            .arg("--exit-when-caught-up")
            .spawn()
            .expect("start last worker"),
    );
    let status = wait_exit(&mut last.0, Duration::from_secs(300), "last worker");
    assert!(status.success(), "last worker failed: {status}");

    let ledger = parse_ledger(&std::fs::read_to_string(&h.ledger).unwrap()).unwrap();
    assert!(!ledger.is_empty(), "the writer committed nothing");
    println!("fault_tamper: edits {edits:?}");
    for (name, tables, _) in COMPONENTS {
        let report = check(&sink(&h, name), &ledger, tables)
            .unwrap_or_else(|err| panic!("component {name}: {err} (seed {seed})"));
        println!(
            "fault_tamper: component {name}: {} changes checked, lost 0, {} deliveries, {} duplicates (at most {} after one restart)",
            report.checked, report.deliveries, report.duplicates, report.max_duplicates_per_restart
        );
        assert!(
            report.max_duplicates_per_restart <= BATCH,
            "{name}: {} changes delivered again after one kill (seed {seed})",
            report.max_duplicates_per_restart
        );
    }
    let conn = astha_core::db::open_existing(&h.db).unwrap();
    let lsns: i64 = conn
        .query_row("SELECT count(*) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    println!(
        "fault_tamper: {} changes committed, {lsns} log rows left",
        ledger.len()
    );
}
