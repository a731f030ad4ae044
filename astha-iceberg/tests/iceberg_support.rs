//! Shared helpers for the Iceberg integration tests (included with `#[path]`; on its own this
//! file is an empty test crate).
//!
//! Owns the test table shape (one column of every supported type), deterministic rows, and the
//! bridge to `scripts/interop/check_iceberg.py`, which runs only when `ASTHA_INTEROP_PYTHON`
//! names a Python with pyiceberg and DuckDB (`scripts/interop_venv.sh` prints one).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use astha_iceberg::{ColumnSpec, IcebergTable, IcebergType};
use serde_json::{json, Value};

pub const CATALOG: &str = "astha";
pub const NAMESPACE: &str = "cdc";

pub fn columns() -> Vec<ColumnSpec> {
    vec![
        ColumnSpec::new(1, "id", IcebergType::from_sql("bigint").unwrap(), true),
        ColumnSpec::new(2, "name", IcebergType::from_sql("text").unwrap(), false),
        ColumnSpec::new(3, "score", IcebergType::from_sql("double").unwrap(), false),
        ColumnSpec::new(
            4,
            "active",
            IcebergType::from_sql("boolean").unwrap(),
            false,
        ),
        ColumnSpec::new(5, "day", IcebergType::from_sql("date").unwrap(), false),
        ColumnSpec::new(
            6,
            "updated_at",
            IcebergType::from_sql("timestamp").unwrap(),
            false,
        ),
        ColumnSpec::new(7, "payload", IcebergType::from_sql("blob").unwrap(), false),
        ColumnSpec::new(8, "qty", IcebergType::from_sql("int32").unwrap(), false),
        ColumnSpec::new(9, "ratio", IcebergType::from_sql("float32").unwrap(), false),
    ]
}

/// Row `i`, in canonical JSON shapes; every few rows hold nulls and non-UTF-8 bytes.
pub fn row(i: i64) -> Vec<Value> {
    let null_if = |cond: bool, v: Value| if cond { Value::Null } else { v };
    vec![
        json!(i),
        null_if(
            i % 4 == 3,
            json!(format!(
                "customer-{i:03} with a name longer than sixteen chars"
            )),
        ),
        json!(i as f64 * 1.25 - 3.0),
        json!(i % 2 == 0),
        null_if(i % 5 == 4, json!(format!("2024-01-{:02}", 1 + i % 28))),
        json!(format!("2024-02-03T04:05:{:02}.{:06}", i % 60, i * 7)),
        if i % 3 == 0 {
            json!([0, 159, 255, i % 256])
        } else {
            json!(format!("p{i}"))
        },
        null_if(i % 6 == 5, json!(i as i32 * -3)),
        json!(i as f64 / 4.0),
    ]
}

pub fn rows(range: std::ops::Range<i64>) -> Vec<Vec<Value>> {
    range.map(row).collect()
}

/// Sorted by their JSON text: an order-independent comparison that keeps duplicates.
pub fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

/// What a reader of the table should see.
#[derive(Default)]
pub struct Expect {
    pub rows: Vec<Vec<Value>>,
    /// Time-travel scans: snapshot id -> rows.
    pub snapshots: BTreeMap<i64, Vec<Vec<Value>>>,
    /// The exact snapshot ids the metadata must list, when given.
    pub snapshot_ids: Option<Vec<i64>>,
    pub current_snapshot_id: Option<i64>,
    /// Filtered scans of the current snapshot: SQL predicate -> rows.
    pub filters: Vec<(String, Vec<Vec<Value>>)>,
}

/// Checks `expect` with Rust only: reload from the catalog, compare rows (also time travel).
pub fn verify_in_rust(table: &IcebergTable, expect: &Expect) {
    let reloaded = IcebergTable::load(table.catalog(), table.namespace(), table.name()).unwrap();
    assert_eq!(
        reloaded.metadata_location(),
        table.metadata_location(),
        "catalog points at the last commit"
    );
    assert_eq!(reloaded.snapshots(), table.snapshots());
    assert_eq!(
        sorted(reloaded.read_rows(None).unwrap()),
        sorted(expect.rows.clone())
    );
    for (id, rows) in &expect.snapshots {
        assert_eq!(
            sorted(reloaded.read_rows(Some(*id)).unwrap()),
            sorted(rows.clone()),
            "snapshot {id}"
        );
    }
    if let Some(ids) = &expect.snapshot_ids {
        let mut have: Vec<i64> = reloaded.snapshots().iter().map(|s| s.snapshot_id).collect();
        let mut want = ids.clone();
        have.sort();
        want.sort();
        assert_eq!(have, want);
    }
    if let Some(id) = expect.current_snapshot_id {
        assert_eq!(reloaded.current_snapshot().map(|s| s.snapshot_id), Some(id));
    }
    // Every snapshot's files exist, with the recorded sizes.
    for s in reloaded.snapshots() {
        assert!(
            s.manifest_list.exists(),
            "manifest list of {} exists",
            s.snapshot_id
        );
        for f in reloaded.data_files_at(s.snapshot_id).unwrap() {
            assert!(f.exists(), "{} exists", f.display());
        }
    }
    for f in reloaded.live_data_files().unwrap() {
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().len(),
            f.file_size_in_bytes
        );
    }
}

/// The interop Python, if this run has one.
pub fn interop_python() -> Option<std::ffi::OsString> {
    std::env::var_os("ASTHA_INTEROP_PYTHON").filter(|p| !p.is_empty())
}

/// Runs the Python checker against the table when `ASTHA_INTEROP_PYTHON` is set and asserts
/// it passes. Returns whether it ran.
pub fn check_with_python(
    step: &str,
    db: &Path,
    warehouse: &Path,
    table: &IcebergTable,
    expect: &Expect,
) -> bool {
    match run_checker(step, db, warehouse, table, expect) {
        None => {
            println!("[{step}] ASTHA_INTEROP_PYTHON is not set: pyiceberg/DuckDB check skipped (Rust checks ran)");
            false
        }
        Some((ok, report)) => {
            assert!(ok, "[{step}] interop check failed:\n{report}");
            true
        }
    }
}

/// Runs the checker; `None` without a Python, else (passed, its output).
pub fn run_checker(
    step: &str,
    db: &Path,
    warehouse: &Path,
    table: &IcebergTable,
    expect: &Expect,
) -> Option<(bool, String)> {
    let python = interop_python()?;
    let mut doc = json!({
        "columns": table.columns().iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "rows": expect.rows,
        "snapshots": expect.snapshots.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(ids) = &expect.snapshot_ids {
        doc["snapshot_ids"] = json!(ids);
    }
    if let Some(id) = expect.current_snapshot_id {
        doc["current_snapshot_id"] = json!(id);
    }
    doc["filters"] = expect
        .filters
        .iter()
        .map(|(w, rows)| json!({"where": w, "rows": rows}))
        .collect();
    let expected_file = warehouse.with_file_name(format!("expected-{step}.json"));
    std::fs::write(&expected_file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(&python)
        .arg(checker_script())
        .arg("--catalog-db")
        .arg(db)
        .args(["--catalog-name", CATALOG])
        .arg("--warehouse")
        .arg(warehouse)
        .args(["--table", &table.identifier()])
        .arg("--expected")
        .arg(&expected_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", PathBuf::from(&python).display()));
    let report = format!(
        "{}{}(exit: {})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    println!("[{step}] checker took {:.1?}\n{report}", started.elapsed());
    Some((out.status.success(), report))
}

pub fn checker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/check_iceberg.py")
}
