//! The fault harness's processes, shared by the tests that run them: the writer and
//! the worker binaries, a child killed on drop, and a database prepared for them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use astha_tests::fault::{COMPONENTS, TABLES_SQL};

pub const WORKER: &str = env!("CARGO_BIN_EXE_astha-fault-worker");
pub const WRITER: &str = env!("CARGO_BIN_EXE_astha-fault-writer");
/// The worker's batch size (its `--batch-size` default).
pub const BATCH: usize = 64;

/// The numeric environment variable `name`, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The run's seed: `ASTHA_FAULT_SEED`, or the clock; printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = env_u64("ASTHA_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    println!("{test}: seed {seed} (replay with ASTHA_FAULT_SEED={seed})");
    seed
}

/// Waits for `child` up to `limit`; kills it and fails if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed when dropped, so a failing test leaves no process behind.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The writer, started on `h`'s database with `seed`.
pub fn writer(h: &Harness, seed: u64) -> Killed {
    Killed(
        Command::new(WRITER)
            .arg("--db")
            .arg(&h.db)
            .arg("--ledger")
            .arg(&h.ledger)
            .arg("--stop-file")
            .arg(&h.stop)
            .arg("--seed")
            .arg(seed.to_string())
            .spawn()
            .expect("start writer"),
    )
}

pub fn worker(db: &Path, sinks: &Path) -> Command {
    let mut cmd = Command::new(WORKER);
    cmd.arg("--db").arg(db).arg("--sinks").arg(sinks);
    cmd
}

/// The files of one harness run.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub db: PathBuf,
    pub sinks: PathBuf,
    pub ledger: PathBuf,
    pub stop: PathBuf,
}

/// A database with tables `t` and `u` captured and every component's slot created
/// before the first write, so nothing may be missed.
pub fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness {
        db: dir.path().join("fault.db"),
        sinks: dir.path().join("sinks"),
        ledger: dir.path().join("ledger.tsv"),
        stop: dir.path().join("stop"),
        _dir: dir,
    };
    std::fs::create_dir(&h.sinks).unwrap();
    let conn = astha_core::db::open(&h.db).unwrap();
    conn.execute_batch(TABLES_SQL).unwrap();
    let capture = astha_core::capture::Capture::new("__cdc_log");
    capture.install(&conn, "t").unwrap();
    capture.install(&conn, "u").unwrap();
    for (name, _, _) in COMPONENTS {
        astha_core::slots::create(
            &conn,
            "__cdc_log",
            name,
            astha_core::slots::SlotStart::Beginning,
        )
        .unwrap();
    }
    h
}

pub fn sink(h: &Harness, name: &str) -> String {
    std::fs::read_to_string(h.sinks.join(format!("{name}.log"))).unwrap_or_default()
}
