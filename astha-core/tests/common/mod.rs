//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use astha_core::capture::Capture;
use astha_core::log::{BatchLimits, LogReader};
use astha_core::{Change, Value};
use proptest::prelude::*;
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

/// Any double SQLite can store: every bit pattern but NaN (SQLite stores NaN as NULL),
/// so subnormals, -0.0 and ±infinity included.
pub fn any_real() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        prop_oneof![
            Just(-0.0),
            Just(f64::MIN_POSITIVE / 3.0),
            Just(f64::MAX),
            Just(0.1 + 0.2)
        ],
    ]
    .prop_filter("SQLite stores NaN as NULL", |f| !f.is_nan())
}

pub fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64)].prop_map(Value::Integer),
        any_real().prop_map(Value::Real),
        prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)].prop_map(Value::Real),
        // Any text, NUL characters, commas and quotes included.
        prop::collection::vec(any::<char>(), 0..40)
            .prop_map(|c| Value::Text(c.into_iter().collect())),
        // TEXT that is not UTF-8 (SQLite does not check): any bytes, kept exactly.
        prop::collection::vec(any::<u8>(), 1..40)
            .prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err())
            .prop_map(Value::text_from_bytes),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}
