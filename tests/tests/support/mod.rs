//! Shared setup for the integration tests.
#![allow(dead_code)]

pub mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use astha_actors::testing::{Recording, RecordingComponent};
use astha_core::config::AsthaConfig;
use rusqlite::Connection;

pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestDb {
    /// A database with tables `a` and `b` (id, v).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("astha.db");
        let conn = astha_core::db::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE a (id INTEGER PRIMARY KEY, v INTEGER);
             CREATE TABLE b (id INTEGER PRIMARY KEY, v INTEGER);",
        )
        .unwrap();
        Self { dir, path }
    }

    /// A writer connection whose commits wake Astha at once.
    pub fn writer(&self) -> Connection {
        astha_core::db::open_writer(&self.path).unwrap()
    }

    /// Fast, test-sized settings: small batches and window, short backoffs.
    pub fn config(&self) -> AsthaConfig {
        config_for(&self.path)
    }
}

pub fn config_for(path: &Path) -> AsthaConfig {
    let mut c = AsthaConfig {
        database: path.to_path_buf(),
        ..AsthaConfig::default()
    };
    c.monitored_tables = vec!["a".into(), "b".into()];
    c.batch_size = 16;
    c.window_batches = 2;
    c.backstop_interval = Duration::from_millis(20);
    c.cleanup_interval = Duration::from_millis(50);
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(200);
    c.breaker.failure_threshold = 5;
    c.breaker.cool_down = Duration::from_millis(500);
    c.supervisor.event_timeout = Duration::from_secs(2);
    c.supervisor.refresh_after = Duration::from_secs(30);
    c.supervisor.health_interval = Duration::from_secs(20);
    c
}

/// Inserts `n` rows into `table` with values `first..first+n`, one commit each.
pub fn insert(conn: &Connection, table: &str, first: i64, n: i64) {
    for v in first..first + n {
        conn.execute(&format!("INSERT INTO {table} (v) VALUES (?1)"), [v])
            .unwrap();
    }
}

/// Log LSNs of `table`'s changes, read straight from the database.
pub fn logged_lsns(path: &Path, table: &str) -> Vec<i64> {
    let conn = astha_core::db::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM __cdc_log WHERE tbl = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([table], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The `v` value of each change's newest image.
pub fn values(changes: &[std::sync::Arc<astha_core::Change>]) -> Vec<i64> {
    changes
        .iter()
        .map(|c| match c.row().unwrap().get("v") {
            Some(astha_core::Value::Integer(v)) => *v,
            other => panic!("unexpected value {other:?}"),
        })
        .collect()
}

pub const LONG: Duration = Duration::from_secs(120);

/// Astha started on `db` with default settings, and one recording component `c` on
/// table `a`.
pub async fn started_with_recorder(db: &TestDb) -> (astha_actors::Astha, Recording) {
    let astha = astha_actors::Astha::new(db.config()).unwrap();
    astha.start().unwrap();
    let (c, seen) = RecordingComponent::new("c", &["a"]);
    astha.register_component(Box::new(c)).await.unwrap();
    (astha, seen)
}

/// A slot that never moves, so cleanup keeps every log row for the test to read.
pub fn keep_log(db: &TestDb) {
    let conn = astha_core::db::open(&db.path).unwrap();
    astha_core::capture::Capture::new("__cdc_log")
        .ensure_log(&conn)
        .unwrap();
    astha_core::slots::create(
        &conn,
        "__cdc_log",
        "keep",
        astha_core::slots::SlotStart::Beginning,
    )
    .unwrap();
}
