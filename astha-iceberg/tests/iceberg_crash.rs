//! Crash and concurrency safety of commits.
//!
//! A failpoint stops a commit exactly where a crash would (after the manifests, after the
//! temporary metadata file, after the renamed metadata file but before the catalog swap). For
//! each, a fresh process (a reload through the catalog) must see the previous version, whole
//! and readable, and a retried operation must then succeed without duplicating files. A lost
//! compare-and-swap must change nothing and clean up after itself.

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use astha_iceberg::{
    write_parquet, CommitFailpoint, DataFileInfo, IcebergError, IcebergTable, SqlCatalog,
};
use support::{
    check_with_python, columns, rows, sorted, verify_in_rust, Expect, CATALOG, NAMESPACE,
};

const FAILPOINTS: [CommitFailpoint; 3] = [
    CommitFailpoint::AfterManifests,
    CommitFailpoint::AfterMetadataTemp,
    CommitFailpoint::BeforeCatalogSwap,
];

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    warehouse: PathBuf,
    catalog: SqlCatalog,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let warehouse = dir.path().join("warehouse");
    let catalog = SqlCatalog::open(&db, CATALOG).unwrap();
    Fixture {
        _dir: dir,
        db,
        warehouse,
        catalog,
    }
}

fn write(table: &IcebergTable, name: &str, range: std::ops::Range<i64>) -> DataFileInfo {
    write_parquet(
        &table.data_dir().unwrap().join(name),
        &columns(),
        &rows(range),
    )
    .unwrap()
}

fn metadata_files(table: &IcebergTable) -> BTreeSet<PathBuf> {
    std::fs::read_dir(table.location().unwrap().join("metadata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// What a restarted process sees, checked against the state before the crash.
fn assert_unchanged_after_reload(
    fx: &Fixture,
    name: &str,
    before_location: &str,
    expect: &Expect,
    live: &[&Path],
) -> IcebergTable {
    let reloaded = IcebergTable::load(&fx.catalog, NAMESPACE, name).unwrap();
    assert_eq!(
        reloaded.metadata_location(),
        before_location,
        "catalog still points at the old version"
    );
    let want: Vec<PathBuf> = live.iter().map(|p| p.to_path_buf()).collect();
    assert_eq!(reloaded.data_files().unwrap(), want);
    verify_in_rust(&reloaded, expect);
    reloaded
}

#[test]
fn crash_during_append_keeps_previous_version_and_retry_succeeds() {
    for (i, fp) in FAILPOINTS.into_iter().enumerate() {
        let fx = fixture();
        let name = format!("append_crash_{i}");
        let mut table =
            IcebergTable::create(&fx.catalog, &fx.warehouse, NAMESPACE, &name, &columns()).unwrap();
        let a = write(&table, "a.parquet", 0..5);
        let s1 = table.append(std::slice::from_ref(&a)).unwrap();
        let before = table.metadata_location().to_string();
        let files_before = metadata_files(&table);

        let b = write(&table, "b.parquet", 5..9);
        table.set_commit_failpoint(Some(fp));
        let err = table.append(std::slice::from_ref(&b)).unwrap_err();
        assert!(
            matches!(err, IcebergError::InjectedFailure(p) if p == fp),
            "{fp:?}: {err}"
        );
        // The "crash" left debris behind (as a real one would), none of it referenced.
        assert!(
            metadata_files(&table).len() > files_before.len(),
            "{fp:?} left files"
        );

        let expect = Expect {
            rows: rows(0..5),
            current_snapshot_id: Some(s1.snapshot_id),
            ..Default::default()
        };
        let mut reloaded = assert_unchanged_after_reload(&fx, &name, &before, &expect, &[&a.path]);
        check_with_python(
            &format!("crash-append-{fp:?}"),
            &fx.db,
            &fx.warehouse,
            &reloaded,
            &expect,
        );

        let s2 = reloaded.append(std::slice::from_ref(&b)).unwrap();
        assert_eq!(
            (s2.parent_snapshot_id, s2.sequence_number),
            (Some(s1.snapshot_id), 2)
        );
        assert_eq!(
            reloaded.data_files().unwrap(),
            vec![a.path.clone(), b.path.clone()],
            "each file once"
        );
        assert_eq!(s2.summary_u64("total-records"), 9);
        let expect = Expect {
            rows: rows(0..9),
            snapshot_ids: Some(vec![s1.snapshot_id, s2.snapshot_id]),
            current_snapshot_id: Some(s2.snapshot_id),
            ..Default::default()
        };
        verify_in_rust(&reloaded, &expect);
        check_with_python(
            &format!("retry-append-{fp:?}"),
            &fx.db,
            &fx.warehouse,
            &reloaded,
            &expect,
        );
        // A second retry of the same files is refused rather than duplicating them.
        assert!(matches!(
            reloaded.append(std::slice::from_ref(&b)),
            Err(IcebergError::DuplicateDataFile(_))
        ));
    }
}

#[test]
fn crash_during_replace_and_expire_keeps_previous_version() {
    let fx = fixture();
    let mut table = IcebergTable::create(
        &fx.catalog,
        &fx.warehouse,
        NAMESPACE,
        "compacted",
        &columns(),
    )
    .unwrap();
    let a = write(&table, "a.parquet", 0..3);
    let b = write(&table, "b.parquet", 3..6);
    table.append(std::slice::from_ref(&a)).unwrap();
    let s2 = table.append(std::slice::from_ref(&b)).unwrap();
    let m = write(&table, "m.parquet", 0..6);

    for fp in FAILPOINTS {
        let before = table.metadata_location().to_string();
        table.set_commit_failpoint(Some(fp));
        let err = table
            .replace(&[&a.path, &b.path], std::slice::from_ref(&m))
            .unwrap_err();
        assert!(matches!(err, IcebergError::InjectedFailure(_)), "{err}");
        let expect = Expect {
            rows: rows(0..6),
            current_snapshot_id: Some(s2.snapshot_id),
            ..Default::default()
        };
        table =
            assert_unchanged_after_reload(&fx, "compacted", &before, &expect, &[&a.path, &b.path]);
    }
    let s3 = table
        .replace(&[&a.path, &b.path], std::slice::from_ref(&m))
        .unwrap();
    assert_eq!(table.data_files().unwrap(), vec![m.path.clone()]);

    // Expiry crashing before its swap must not delete anything: files go only after commit.
    let before = table.metadata_location().to_string();
    table.set_commit_failpoint(Some(CommitFailpoint::BeforeCatalogSwap));
    assert!(table.expire_snapshots(1, None).is_err());
    assert!(
        a.path.exists() && b.path.exists(),
        "nothing deleted by a crashed expiry"
    );
    let expect = Expect {
        rows: rows(0..6),
        current_snapshot_id: Some(s3.snapshot_id),
        snapshot_ids: Some(table.snapshots().iter().map(|s| s.snapshot_id).collect()),
        ..Default::default()
    };
    let mut table = assert_unchanged_after_reload(&fx, "compacted", &before, &expect, &[&m.path]);
    let expired = table.expire_snapshots(1, None).unwrap();
    assert_eq!(expired.expired_snapshot_ids.len(), 2);
    assert!(!a.path.exists() && !b.path.exists() && m.path.exists());
    let expect = Expect {
        rows: rows(0..6),
        snapshot_ids: Some(vec![s3.snapshot_id]),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python(
        "crash-replace-expire",
        &fx.db,
        &fx.warehouse,
        &table,
        &expect,
    );
}

#[test]
fn lost_compare_and_swap_changes_nothing_and_cleans_up() {
    let fx = fixture();
    let mut first = IcebergTable::create(
        &fx.catalog,
        &fx.warehouse,
        NAMESPACE,
        "contended",
        &columns(),
    )
    .unwrap();
    let mut second = IcebergTable::load(&fx.catalog, NAMESPACE, "contended").unwrap();
    let a = write(&first, "a.parquet", 0..2);
    let b = write(&first, "b.parquet", 2..4);
    let s1 = first.append(std::slice::from_ref(&a)).unwrap();
    let files_after_first = metadata_files(&first);

    let err = second.append(std::slice::from_ref(&b)).unwrap_err();
    assert!(matches!(err, IcebergError::CommitConflict { .. }), "{err}");
    assert!(err.is_retriable());
    assert_eq!(
        metadata_files(&second),
        files_after_first,
        "the losing commit removed its files"
    );
    assert_eq!(
        second.current_snapshot(),
        None,
        "the losing handle is unchanged"
    );

    second.refresh().unwrap();
    let s2 = second.append(std::slice::from_ref(&b)).unwrap();
    assert_eq!(s2.parent_snapshot_id, Some(s1.snapshot_id));
    first.refresh().unwrap();
    assert_eq!(
        first.data_files().unwrap(),
        vec![a.path.clone(), b.path.clone()]
    );
    assert_eq!(sorted(first.read_rows(None).unwrap()), sorted(rows(0..4)));
}
