//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use astha_core::capture::Capture;
use astha_core::log::{BatchLimits, LogReader};
use astha_core::Change;
use rusqlite::Connection;
use std::path::PathBuf;

pub const LOG: &str = "__cdc_log";

pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        Self { dir, path }
    }

    pub fn conn(&self) -> Connection {
        astha_core::db::open(&self.path).unwrap()
    }
}

pub fn capture() -> Capture {
    Capture::new(LOG)
}

/// Reads every change after `after` in batches of `batch` rows.
pub fn read_all(conn: &Connection, after: i64, batch: usize) -> Vec<Change> {
    let mut reader = LogReader::new(LOG);
    let mut pos = after;
    let mut out = Vec::new();
    loop {
        let limits = BatchLimits {
            max_rows: batch,
            max_bytes: 1 << 20,
        };
        let b = reader.read(conn, pos, limits, None).unwrap();
        assert!(
            b.malformed.is_empty(),
            "unexpected malformed rows: {:?}",
            b.malformed
        );
        if b.is_empty() {
            return out;
        }
        pos = b.scanned_to;
        out.extend(b.changes);
    }
}
