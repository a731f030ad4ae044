//! End-to-end lifecycle of one table, checked after every step by Rust and, when
//! `ASTHA_INTEROP_PYTHON` is set, by pyiceberg and DuckDB (scripts/interop/check_iceberg.py):
//! create, append 3 files in 2 snapshots, replace 2 files by their merge (compaction shape),
//! expire the old snapshots, then append again.

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeMap;

use astha_iceberg::{
    read_manifest, read_manifest_list, read_parquet_rows, write_parquet, EntryStatus, IcebergTable,
    SqlCatalog,
};
use serde_json::Value;
use support::{
    check_with_python, columns, rows, run_checker, sorted, verify_in_rust, Expect, CATALOG,
    NAMESPACE,
};

#[test]
fn create_append_replace_expire_is_read_back_by_real_readers() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let warehouse = dir.path().join("warehouse");
    let catalog = SqlCatalog::open(&db, CATALOG).unwrap();
    let cols = columns();
    let mut table = IcebergTable::create(&catalog, &warehouse, NAMESPACE, "orders", &cols).unwrap();
    let data = table.data_dir().unwrap();
    assert_eq!(data, warehouse.join("cdc/orders/data"));
    let mut checks = 0;

    // 0. Empty table.
    let expect = Expect::default();
    verify_in_rust(&table, &expect);
    checks += check_with_python("empty", &db, &warehouse, &table, &expect) as usize;

    // 1. Two files in one snapshot.
    let a = write_parquet(&data.join("a.parquet"), &cols, &rows(0..3)).unwrap();
    let b = write_parquet(&data.join("b.parquet"), &cols, &rows(3..7)).unwrap();
    let s1 = table.append(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(
        (
            s1.operation.as_str(),
            s1.sequence_number,
            s1.parent_snapshot_id
        ),
        ("append", 1, None)
    );
    assert_eq!(s1.summary_u64("added-data-files"), 2);
    assert_eq!(s1.summary_u64("added-records"), 7);
    assert_eq!(
        s1.summary_u64("added-files-size"),
        a.file_size_in_bytes + b.file_size_in_bytes
    );
    assert_eq!(s1.summary_u64("total-records"), 7);
    let expect = Expect {
        rows: rows(0..7),
        current_snapshot_id: Some(s1.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("append1", &db, &warehouse, &table, &expect) as usize;
    checker_catches_a_wrong_value(&db, &warehouse, &table, &expect);

    // 2. A third file in a second snapshot; the first stays readable by time travel.
    let c = write_parquet(&data.join("c.parquet"), &cols, &rows(7..10)).unwrap();
    let s2 = table.append(std::slice::from_ref(&c)).unwrap();
    assert_eq!(
        (s2.sequence_number, s2.parent_snapshot_id),
        (2, Some(s1.snapshot_id))
    );
    assert_eq!(
        (
            s2.summary_u64("total-data-files"),
            s2.summary_u64("total-records")
        ),
        (3, 10)
    );
    let expect = Expect {
        rows: rows(0..10),
        snapshots: BTreeMap::from([(s1.snapshot_id, rows(0..7))]),
        snapshot_ids: Some(vec![s1.snapshot_id, s2.snapshot_id]),
        current_snapshot_id: Some(s2.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("append2", &db, &warehouse, &table, &expect) as usize;

    // 3. Compaction: merge a and b into m, swap them in one replace snapshot.
    let mut merged = read_parquet_rows(&a.path, &cols).unwrap();
    merged.extend(read_parquet_rows(&b.path, &cols).unwrap());
    assert_eq!(merged, rows(0..7), "rows read back are the rows written");
    let m = write_parquet(&data.join("m.parquet"), &cols, &merged).unwrap();
    let s3 = table
        .replace(&[a.path.clone(), b.path.clone()], std::slice::from_ref(&m))
        .unwrap();
    assert_eq!((s3.operation.as_str(), s3.sequence_number), ("replace", 3));
    assert_eq!(
        (
            s3.summary_u64("deleted-data-files"),
            s3.summary_u64("deleted-records")
        ),
        (2, 7)
    );
    assert_eq!(
        (
            s3.summary_u64("added-data-files"),
            s3.summary_u64("added-records")
        ),
        (1, 7)
    );
    assert_eq!(
        (
            s3.summary_u64("total-data-files"),
            s3.summary_u64("total-records")
        ),
        (2, 10)
    );
    assert_eq!(
        table.data_files().unwrap(),
        vec![c.path.clone(), m.path.clone()]
    );
    assert_replace_manifests(&table, &s3, &a.path, &b.path, &m.path);
    let expect = Expect {
        rows: rows(0..10),
        snapshots: BTreeMap::from([(s1.snapshot_id, rows(0..7)), (s2.snapshot_id, rows(0..10))]),
        snapshot_ids: Some(vec![s1.snapshot_id, s2.snapshot_id, s3.snapshot_id]),
        current_snapshot_id: Some(s3.snapshot_id),
        filters: pruning_filters(&rows(0..10)),
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("replace", &db, &warehouse, &table, &expect) as usize;

    // 4. Expire everything but the current snapshot: a and b and the old manifest lists go,
    //    c (still live, in a carried manifest) and m stay.
    let s2_list = s2.manifest_list.clone();
    let s1_list = s1.manifest_list.clone();
    let expired = table.expire_snapshots(1, None).unwrap();
    let mut ids = expired.expired_snapshot_ids.clone();
    ids.sort();
    let mut want = vec![s1.snapshot_id, s2.snapshot_id];
    want.sort();
    assert_eq!(ids, want);
    for gone in [&a.path, &b.path, &s1_list, &s2_list] {
        assert!(!gone.exists(), "{} deleted", gone.display());
        assert!(
            expired.deleted_files.contains(gone),
            "{} reported",
            gone.display()
        );
    }
    for kept in [&c.path, &m.path, &s3.manifest_list] {
        assert!(kept.exists(), "{} kept", kept.display());
    }
    for (manifest, _) in manifests_of(&s3.manifest_list) {
        assert!(
            manifest.manifest_path.exists(),
            "manifest {} kept",
            manifest.manifest_path.display()
        );
    }
    assert!(expired
        .deleted_files
        .iter()
        .all(|p| p.starts_with(warehouse.join("cdc/orders"))));
    assert_eq!(table.snapshots().len(), 1);
    assert!(
        table.read_rows(Some(s1.snapshot_id)).is_err(),
        "expired snapshot is gone"
    );
    let expect = Expect {
        rows: rows(0..10),
        snapshots: BTreeMap::from([(s3.snapshot_id, rows(0..10))]),
        snapshot_ids: Some(vec![s3.snapshot_id]),
        current_snapshot_id: Some(s3.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("expire", &db, &warehouse, &table, &expect) as usize;
    let again = table.expire_snapshots(1, None).unwrap();
    assert!(again.expired_snapshot_ids.is_empty() && again.deleted_files.is_empty());

    // 5. The table keeps working after expiry.
    let d = write_parquet(&data.join("d.parquet"), &cols, &rows(10..12)).unwrap();
    let s4 = table.append(&[d]).unwrap();
    assert_eq!(
        (s4.sequence_number, s4.parent_snapshot_id),
        (4, Some(s3.snapshot_id))
    );
    let expect = Expect {
        rows: rows(0..12),
        snapshots: BTreeMap::from([(s3.snapshot_id, rows(0..10))]),
        snapshot_ids: Some(vec![s3.snapshot_id, s4.snapshot_id]),
        current_snapshot_id: Some(s4.snapshot_id),
        filters: pruning_filters(&rows(0..12)),
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("append-after-expire", &db, &warehouse, &table, &expect) as usize;

    println!(
        "interop lifecycle done in {:.1?}; python checks run: {checks}/6",
        started.elapsed()
    );
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..12)));
}

/// Predicates over every column type; the files hold disjoint id ranges, so a reader that
/// prunes with wrong manifest bounds loses rows and the check fails.
fn pruning_filters(all: &[Vec<Value>]) -> Vec<(String, Vec<Vec<Value>>)> {
    let pick =
        |f: &dyn Fn(&[Value]) -> bool| all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>();
    let long_name = all[5][1].as_str().unwrap().to_string();
    vec![
        ("id >= 8".into(), pick(&|r| r[0].as_i64().unwrap() >= 8)),
        ("id = 0".into(), pick(&|r| r[0].as_i64() == Some(0))),
        // Longer than the 16-character bound: exercises the truncated upper bound.
        (
            format!("name = '{long_name}'"),
            pick(&|r| r[1].as_str() == Some(long_name.as_str())),
        ),
        ("score < 0".into(), pick(&|r| r[2].as_f64().unwrap() < 0.0)),
        (
            "day >= '2024-01-08'".into(),
            pick(&|r| r[4].as_str().is_some_and(|d| d >= "2024-01-08")),
        ),
        (
            "updated_at > '2024-02-03T04:05:08.000000'".into(),
            pick(&|r| r[5].as_str().unwrap() > "2024-02-03T04:05:08.000000"),
        ),
        ("qty = -6".into(), pick(&|r| r[7].as_i64() == Some(-6))),
        (
            "ratio > 2.0".into(),
            pick(&|r| r[8].as_f64().unwrap() > 2.0),
        ),
    ]
}

/// The checker is not vacuous: one changed value makes it fail and name the row.
fn checker_catches_a_wrong_value(
    db: &std::path::Path,
    warehouse: &std::path::Path,
    table: &IcebergTable,
    good: &Expect,
) {
    let mut rows = good.rows.clone();
    rows[2][1] = Value::String("not what was written".into());
    let wrong = Expect {
        rows,
        ..Default::default()
    };
    if let Some((ok, report)) = run_checker("negative", db, warehouse, table, &wrong) {
        assert!(!ok, "checker accepted a wrong row:\n{report}");
        assert!(
            report.contains("MISMATCH") && report.contains("not what was written"),
            "{report}"
        );
    }
}

/// The replace snapshot has the shape docs/ICEBERG.md describes: one manifest with m ADDED, one with
/// a and b DELETED (new snapshot id, original sequence number 1), c's manifest carried as is.
fn assert_replace_manifests(
    table: &IcebergTable,
    s3: &astha_iceberg::SnapshotInfo,
    a: &std::path::Path,
    b: &std::path::Path,
    m: &std::path::Path,
) {
    let manifests = manifests_of(&s3.manifest_list);
    assert_eq!(manifests.len(), 3);
    let (added, added_entries) = &manifests[0];
    assert_eq!((added.added_files_count, added.sequence_number), (1, 3));
    assert_eq!(added_entries[0].file.path, m);
    assert_eq!(added_entries[0].status, EntryStatus::Added);
    let (rewritten, entries) = &manifests[1];
    assert_eq!(rewritten.deleted_files_count, 2);
    for e in entries {
        assert_eq!(e.status, EntryStatus::Deleted);
        assert!(e.file.path == a || e.file.path == b);
        assert_eq!(
            (e.snapshot_id, e.sequence_number, e.file_sequence_number),
            (s3.snapshot_id, 1, 1)
        );
    }
    let (carried, carried_entries) = &manifests[2];
    assert_eq!((carried.sequence_number, carried.added_files_count), (2, 1));
    assert_eq!(
        carried_entries[0].sequence_number, 2,
        "inherited from the manifest list"
    );
    assert_eq!(table.metadata().last_sequence_number, 3);
}

fn manifests_of(
    list: &std::path::Path,
) -> Vec<(
    astha_iceberg::ManifestFile,
    Vec<astha_iceberg::ManifestEntry>,
)> {
    read_manifest_list(list)
        .unwrap()
        .into_iter()
        .map(|m| {
            let entries = read_manifest(&m).unwrap();
            (m, entries)
        })
        .collect()
}
