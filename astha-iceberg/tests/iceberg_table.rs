//! Table operations refuse inputs that would corrupt the table, and keep their promises on
//! the edges: idempotent create, duplicate and unknown files, row-preserving replace, expiry
//! by age and count.

#[path = "iceberg_support.rs"]
mod support;

use astha_iceberg::{
    write_parquet, ColumnSpec, IcebergError, IcebergTable, IcebergType, SqlCatalog,
};
use support::{columns, rows, sorted, CATALOG, NAMESPACE};

fn setup() -> (tempfile::TempDir, SqlCatalog, IcebergTable) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqlCatalog::open(dir.path().join("catalog.db"), CATALOG).unwrap();
    let table =
        IcebergTable::create(&catalog, &dir.path().join("wh"), NAMESPACE, "t", &columns()).unwrap();
    (dir, catalog, table)
}

#[test]
fn create_is_idempotent_and_checks_the_schema() {
    let (dir, catalog, mut table) = setup();
    let a = write_parquet(
        &table.data_dir().unwrap().join("a.parquet"),
        &columns(),
        &rows(0..2),
    )
    .unwrap();
    table.append(&[a]).unwrap();
    let again = IcebergTable::create(
        &catalog,
        &dir.path().join("elsewhere"),
        NAMESPACE,
        "t",
        &columns(),
    )
    .unwrap();
    assert_eq!(again.metadata_location(), table.metadata_location());
    assert_eq!(again.data_files().unwrap(), table.data_files().unwrap());

    let other = vec![ColumnSpec::new(1, "id", IcebergType::Long, true)];
    let err =
        IcebergTable::create(&catalog, &dir.path().join("wh"), NAMESPACE, "t", &other).unwrap_err();
    assert!(matches!(err, IcebergError::SchemaMismatch { .. }), "{err}");
    assert!(matches!(
        IcebergTable::load(&catalog, NAMESPACE, "missing"),
        Err(IcebergError::NoSuchTable(_))
    ));
    assert!(
        IcebergTable::create(&catalog, dir.path(), NAMESPACE, "../escape", &columns()).is_err()
    );
    assert_eq!(
        catalog.list_tables(NAMESPACE).unwrap(),
        vec!["t".to_string()]
    );
}

#[test]
fn append_refuses_bad_files() {
    let (_dir, _catalog, mut table) = setup();
    let data = table.data_dir().unwrap();
    let a = write_parquet(&data.join("a.parquet"), &columns(), &rows(0..2)).unwrap();
    assert!(matches!(
        table.append(&[]),
        Err(IcebergError::InvalidArgument(_))
    ));
    assert!(matches!(
        table.append(&[a.clone(), a.clone()]),
        Err(IcebergError::DuplicateDataFile(_))
    ));

    let mut wrong_size = a.clone();
    wrong_size.file_size_in_bytes += 1;
    let err = table.append(&[wrong_size]).unwrap_err();
    assert!(err.to_string().contains("bytes on disk"), "{err}");

    let mut missing = a.clone();
    missing.path = data.join("never-written.parquet");
    assert!(matches!(
        table.append(&[missing]),
        Err(IcebergError::Io { .. })
    ));

    let mut foreign = a.clone();
    foreign.column_stats.insert(99, Default::default());
    assert!(table
        .append(&[foreign])
        .unwrap_err()
        .to_string()
        .contains("field id 99"));

    assert!(
        table.current_snapshot().is_none(),
        "no failed append committed anything"
    );
    table.append(std::slice::from_ref(&a)).unwrap();
    assert!(matches!(
        table.append(&[a]),
        Err(IcebergError::DuplicateDataFile(_))
    ));
}

#[test]
fn replace_checks_files_and_row_counts() {
    let (_dir, _catalog, mut table) = setup();
    let data = table.data_dir().unwrap();
    let a = write_parquet(&data.join("a.parquet"), &columns(), &rows(0..2)).unwrap();
    let b = write_parquet(&data.join("b.parquet"), &columns(), &rows(2..5)).unwrap();
    table.append(&[a.clone(), b.clone()]).unwrap();
    let short = write_parquet(&data.join("short.parquet"), &columns(), &rows(0..4)).unwrap();
    let err = table
        .replace(&[&a.path, &b.path], std::slice::from_ref(&short))
        .unwrap_err();
    assert!(
        err.to_string().contains("removing 5 records but adding 4"),
        "{err}"
    );
    let err = table
        .replace(&[data.join("nope.parquet")], std::slice::from_ref(&short))
        .unwrap_err();
    assert!(matches!(err, IcebergError::UnknownDataFile(_)), "{err}");
    let no_paths: &[&str] = &[];
    assert!(table.replace(no_paths, &[]).is_err());

    // `file://` locations are accepted as well as plain paths; replacing one file of a
    // manifest keeps its sibling as EXISTING.
    let a2 = write_parquet(&data.join("a2.parquet"), &columns(), &rows(0..2)).unwrap();
    let loc = format!("file://{}", a.path.display());
    let s = table
        .replace(&[loc.as_str()], std::slice::from_ref(&a2))
        .unwrap();
    assert_eq!(s.summary_u64("deleted-data-files"), 1);
    assert_eq!(
        table.data_files().unwrap(),
        vec![a2.path.clone(), b.path.clone()]
    );
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..5)));

    // Replacing again from the rewritten manifest (EXISTING entry for b) works too.
    let b2 = write_parquet(&data.join("b2.parquet"), &columns(), &rows(2..5)).unwrap();
    table
        .replace(&[&b.path], std::slice::from_ref(&b2))
        .unwrap();
    assert_eq!(
        table.data_files().unwrap(),
        vec![a2.path.clone(), b2.path.clone()]
    );
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..5)));
}

#[test]
fn expiry_respects_keep_last_and_age() {
    let (_dir, _catalog, mut table) = setup();
    let data = table.data_dir().unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let f = write_parquet(
            &data.join(format!("f{i}.parquet")),
            &columns(),
            &rows(i..i + 1),
        )
        .unwrap();
        ids.push(table.append(&[f]).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Age wins over count: snapshots at least as young as the cutoff stay.
    let cutoff = ids[2].timestamp_ms;
    let r = table.expire_snapshots(1, Some(cutoff)).unwrap();
    assert_eq!(
        r.expired_snapshot_ids,
        vec![ids[0].snapshot_id, ids[1].snapshot_id]
    );
    // Appends never make a data file unreachable, so only the manifest lists go.
    assert_eq!(r.deleted_files, {
        let mut v = vec![ids[0].manifest_list.clone(), ids[1].manifest_list.clone()];
        v.sort();
        v
    });
    assert_eq!(table.data_files().unwrap().len(), 4);
    // Count: keeping the last two keeps both remaining snapshots; keeping one drops the older.
    assert!(table
        .expire_snapshots(2, None)
        .unwrap()
        .expired_snapshot_ids
        .is_empty());
    let r = table.expire_snapshots(1, None).unwrap();
    assert_eq!(r.expired_snapshot_ids, vec![ids[2].snapshot_id]);
    let left: Vec<i64> = table.snapshots().iter().map(|s| s.snapshot_id).collect();
    assert_eq!(left, vec![ids[3].snapshot_id]);
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..4)));
}
