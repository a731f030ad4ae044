//! Row-level deletes (merge-on-read position delete files), checked by Rust and, when
//! `ASTHA_INTEROP_PYTHON` is set, by pyiceberg and DuckDB after every step: two files
//! appended, then a row delta that deletes rows of both and adds a file (an update's shape),
//! then a delete-only commit, then time travel back to before the deletes.

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeMap;

use astha_iceberg::{
    read_manifest, read_manifest_list, write_parquet, IcebergError, IcebergTable, PositionDelete,
    SqlCatalog,
};
use serde_json::Value;
use support::{check_with_python, columns, row, rows, verify_in_rust, Expect, NAMESPACE};

fn del(file: &std::path::Path, pos: u64) -> PositionDelete {
    PositionDelete {
        data_file: file.to_path_buf(),
        pos,
    }
}

/// Rows `range` except the ids in `gone`.
fn rows_without(range: std::ops::Range<i64>, gone: &[i64]) -> Vec<Vec<Value>> {
    range.filter(|i| !gone.contains(i)).map(row).collect()
}

#[test]
fn position_deletes_are_applied_by_real_readers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let warehouse = dir.path().join("warehouse");
    let catalog = SqlCatalog::open(&db, support::CATALOG).unwrap();
    let cols = columns();
    let mut table = IcebergTable::create(&catalog, &warehouse, NAMESPACE, "items", &cols).unwrap();
    let data = table.data_dir().unwrap();
    let mut checks = 0;

    // 1. Two data files: ids 0..5 and 5..10.
    let a = write_parquet(&data.join("a.parquet"), &cols, &rows(0..5)).unwrap();
    let b = write_parquet(&data.join("b.parquet"), &cols, &rows(5..10)).unwrap();
    let s1 = table.append(&[a.clone(), b.clone()]).unwrap();
    let expect1 = rows(0..10);

    // 2. An update's shape: delete rows 1 and 3 of a (ids 1, 3) and row 0 of b (id 5), add
    //    a file with ids 10, 11 in the same snapshot.
    let c = write_parquet(&data.join("c.parquet"), &cols, &rows(10..12)).unwrap();
    let s2 = table
        .row_delta(
            std::slice::from_ref(&c),
            &[del(&a.path, 3), del(&a.path, 1), del(&b.path, 0)],
        )
        .unwrap();
    assert_eq!(
        (s2.operation.as_str(), s2.sequence_number),
        ("overwrite", 2)
    );
    let get = |k: &str| s2.summary_u64(k);
    assert_eq!(
        (
            get("added-data-files"),
            get("added-records"),
            get("added-delete-files"),
            get("added-position-delete-files"),
            get("added-position-deletes"),
        ),
        (1, 2, 1, 1, 3)
    );
    assert_eq!(
        (
            get("total-data-files"),
            get("total-records"),
            get("total-delete-files"),
            get("total-position-deletes")
        ),
        (3, 12, 1, 3)
    );
    let expect2 = rows_without(0..12, &[1, 3, 5]);

    // The delete manifest: content 1 in the list and in its entry, one delete file for the
    // commit, with the smallest and largest target location (whole) as `file_path` bounds.
    let current = table.metadata().current_snapshot().unwrap();
    let list = read_manifest_list(std::path::Path::new(
        current.manifest_list.strip_prefix("file://").unwrap(),
    ))
    .unwrap();
    let deletes: Vec<_> = list.iter().filter(|m| m.content == 1).collect();
    assert_eq!(deletes.len(), 1);
    let entries = read_manifest(deletes[0]).unwrap();
    assert_eq!(entries.len(), 1);
    let s = &entries[0].file.column_stats[&astha_iceberg::DELETE_FILE_PATH_FIELD_ID];
    let mut locations = [a.location(), b.location()];
    locations.sort();
    assert_eq!(s.lower_bound.as_deref(), Some(locations[0].as_bytes()));
    assert_eq!(s.upper_bound.as_deref(), Some(locations[1].as_bytes()));
    assert_eq!(entries[0].file.record_count, 3);

    // 3. Delete-only: id 10 (row 0 of c) and id 9 (row 4 of b).
    let s3 = table
        .row_delta(&[], &[del(&c.path, 0), del(&b.path, 4)])
        .unwrap();
    assert_eq!(s3.operation, "delete");
    assert_eq!(s3.summary_u64("total-position-deletes"), 5);
    assert_eq!(s3.summary_u64("total-records"), 12);
    let expect3 = rows_without(0..12, &[1, 3, 5, 9, 10]);

    let expect = Expect {
        rows: expect3.clone(),
        snapshots: BTreeMap::from([
            (s1.snapshot_id, expect1),
            (s2.snapshot_id, expect2),
            (s3.snapshot_id, expect3),
        ]),
        current_snapshot_id: Some(s3.snapshot_id),
        filters: vec![("id >= 4".into(), rows_without(4..12, &[5, 9, 10]))],
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("deletes", &db, &warehouse, &table, &expect) as usize;

    // Refused before anything is written: a row deleted twice in one call, a position past
    // the end, a file that is not in the table, a delete file as a target.
    let before = table.metadata_location().to_string();
    let twice = table.row_delta(&[], &[del(&a.path, 0), del(&a.path, 0)]);
    assert!(
        matches!(twice, Err(IcebergError::InvalidArgument(_))),
        "{twice:?}"
    );
    let past = table.row_delta(&[], &[del(&c.path, 2)]);
    assert!(
        matches!(past, Err(IcebergError::InvalidArgument(_))),
        "{past:?}"
    );
    let unknown = table.row_delta(&[], &[del(&data.join("nope.parquet"), 0)]);
    assert!(
        matches!(unknown, Err(IcebergError::UnknownDataFile(_))),
        "{unknown:?}"
    );
    let delete_file = entries[0].file.path.clone();
    let not_data = table.row_delta(&[], &[del(&delete_file, 0)]);
    assert!(
        matches!(not_data, Err(IcebergError::UnknownDataFile(_))),
        "{not_data:?}"
    );
    // Compaction by replace would bring deleted rows back: refused on such a table.
    let merged = write_parquet(&data.join("m.parquet"), &cols, &rows(0..5)).unwrap();
    let replace = table.replace(&[&a.path], &[merged]);
    assert!(
        matches!(replace, Err(IcebergError::InvalidArgument(_))),
        "{replace:?}"
    );
    assert_eq!(table.metadata_location(), before);
    verify_in_rust(&table, &expect);

    // 4. Compaction: the deletes are folded into one new data file replacing a, b and c
    //    (every one has a delete); no delete file stays live, the rows are the same, and
    //    time travel to the snapshots before still applies the old deletes.
    let folded_path = data.join("folded.parquet");
    let mut seen = None;
    let (s4, folded) = table
        .fold_deletes(&folded_path, |f| {
            seen = Some(f.clone());
            None
        })
        .unwrap()
        .unwrap();
    assert_eq!(seen.as_ref(), Some(&folded));
    assert_eq!(s4.operation, "replace");
    assert_eq!(folded.new_file.as_deref(), Some(folded_path.as_path()));
    assert_eq!(folded.removed_files.len(), 3);
    assert_eq!(folded.removed_delete_files.len(), 2);
    assert_eq!(
        (
            s4.summary_u64("total-data-files"),
            s4.summary_u64("total-records"),
            s4.summary_u64("total-delete-files"),
            s4.summary_u64("total-position-deletes"),
            s4.summary_u64("removed-position-deletes"),
        ),
        (1, 7, 0, 0, 5)
    );
    // Where each surviving row went: ids 0, 2, 4 of a, 6, 7, 8 of b, 11 of c.
    let id_at = |file: &std::path::Path, pos: u64| -> i64 {
        let base = if file == a.path {
            0
        } else if file == b.path {
            5
        } else {
            10
        };
        base + pos as i64
    };
    let mut moved_ids: Vec<(i64, u64)> = folded
        .moved()
        .map(|(f, old, new)| (id_at(f, old), new))
        .collect();
    assert_eq!(folded.surviving_rows(), 7);
    moved_ids.sort();
    let folded_rows = astha_iceberg::read_parquet_rows(&folded_path, &cols).unwrap();
    for (id, new) in &moved_ids {
        assert_eq!(folded_rows[*new as usize], row(*id));
    }
    assert_eq!(
        moved_ids.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![0, 2, 4, 6, 7, 8, 11]
    );
    // Nothing left to fold.
    assert!(table
        .fold_deletes(&data.join("again.parquet"), |_| None)
        .unwrap()
        .is_none());
    // 5. A delete in the folded file.
    let pos_of_6 = moved_ids.iter().find(|(id, _)| *id == 6).unwrap().1;
    let s5 = table
        .row_delta(&[], &[del(&folded_path, pos_of_6)])
        .unwrap();
    let expect = Expect {
        rows: rows_without(0..12, &[1, 3, 5, 6, 9, 10]),
        snapshots: BTreeMap::from([
            (s2.snapshot_id, rows_without(0..12, &[1, 3, 5])),
            (s4.snapshot_id, rows_without(0..12, &[1, 3, 5, 9, 10])),
            (s5.snapshot_id, rows_without(0..12, &[1, 3, 5, 6, 9, 10])),
        ]),
        current_snapshot_id: Some(s5.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    checks += check_with_python("folded", &db, &warehouse, &table, &expect) as usize;

    println!("position deletes: {checks} pyiceberg/DuckDB check(s) ran");
}
