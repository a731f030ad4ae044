//! Crash and concurrency safety of commits.
//!
//! A failpoint stops a commit exactly where a crash would (after the manifests, after the
//! temporary metadata file, after the renamed metadata file but before the catalog swap,
//! inside the swap's transaction before it commits). For
//! each, a fresh process (a reload through the catalog) must see the previous version, whole
//! and readable, and a retried operation must then succeed without duplicating files. A lost
//! compare-and-swap must change nothing and clean up after itself.

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use astha_iceberg::{
    write_parquet, Clock, CommitFailpoint, DataFileInfo, IcebergError, IcebergTable, InSwap,
    SqlCatalog,
};
use support::{
    check_with_python, columns, rows, sorted, verify_in_rust, Expect, CATALOG, NAMESPACE,
};

const FAILPOINTS: [CommitFailpoint; 4] = [
    CommitFailpoint::AfterManifests,
    CommitFailpoint::AfterMetadataTemp,
    CommitFailpoint::BeforeCatalogSwap,
    CommitFailpoint::InSwapTransaction,
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

/// Every file under the table directory.
fn all_files(table: &IcebergTable) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![table.location().unwrap()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

/// What the table reaches, computed here independently of the crate's orphan finder: the
/// current metadata file and its log, the version hint, and every snapshot's manifest list,
/// manifests and data files.
fn reachable(table: &IcebergTable) -> BTreeSet<PathBuf> {
    let local = |loc: &str| PathBuf::from(loc.strip_prefix("file://").unwrap());
    let mut out = BTreeSet::from([
        local(table.metadata_location()),
        table.location().unwrap().join("metadata/version-hint.text"),
    ]);
    out.extend(
        table
            .metadata()
            .metadata_log
            .iter()
            .map(|l| local(&l.metadata_file)),
    );
    for s in table.snapshots() {
        out.insert(s.manifest_list.clone());
        for m in astha_iceberg::read_manifest_list(&s.manifest_list).unwrap() {
            out.insert(m.manifest_path.clone());
            for e in astha_iceberg::read_manifest(&m).unwrap() {
                out.insert(e.file.path);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Append,
    Replace,
    Expire,
}

/// A crash at every step of every kind of commit leaves files that orphan removal finds
/// (once they are older than the threshold, never before) and removes, and nothing else:
/// what remains is exactly what the table reaches, and it reads back.
#[test]
fn orphans_of_a_crash_at_every_commit_step_are_found_and_removed() {
    let steps = [
        CommitFailpoint::AfterManifests,
        CommitFailpoint::AfterMetadataTemp,
        CommitFailpoint::BeforeCatalogSwap,
        CommitFailpoint::InSwapTransaction,
        CommitFailpoint::AfterCatalogSwap,
    ];
    let now_ms = || astha_iceberg::SystemClock.now_ms();
    for op in [Op::Append, Op::Replace, Op::Expire] {
        for fp in steps {
            let fx = fixture();
            let name = format!("orphans_{op:?}_{fp:?}").to_lowercase();
            let mut table =
                IcebergTable::create(&fx.catalog, &fx.warehouse, NAMESPACE, &name, &columns())
                    .unwrap();
            // A short log, so that a commit also has an old metadata file to delete.
            table
                .set_properties(&[(astha_iceberg::METADATA_PREVIOUS_VERSIONS_MAX, "1")])
                .unwrap();
            let a = write(&table, "a.parquet", 0..3);
            let b = write(&table, "b.parquet", 3..6);
            table.append(std::slice::from_ref(&a)).unwrap();
            table.append(std::slice::from_ref(&b)).unwrap();
            // The file the operation commits is written before it, as callers do.
            let new_file = match op {
                Op::Append => Some(write(&table, "c.parquet", 6..9)),
                Op::Replace => Some(write(&table, "m.parquet", 0..6)),
                Op::Expire => None,
            };
            let before = all_files(&table);
            let crashed_at = now_ms();
            std::thread::sleep(std::time::Duration::from_millis(20));

            table.set_commit_failpoint(Some(fp));
            let err = match op {
                Op::Append => table
                    .append(std::slice::from_ref(new_file.as_ref().unwrap()))
                    .map(|_| ()),
                Op::Replace => table
                    .replace(
                        &[&a.path, &b.path],
                        std::slice::from_ref(new_file.as_ref().unwrap()),
                    )
                    .map(|_| ()),
                Op::Expire => table.expire_snapshots(1, None).map(|_| ()),
            }
            .unwrap_err();
            assert!(
                matches!(err, IcebergError::InjectedFailure(p) if p == fp),
                "{op:?} {fp:?}: {err}"
            );
            let debris: BTreeSet<PathBuf> =
                all_files(&table).difference(&before).cloned().collect();

            let mut reloaded = IcebergTable::load(&fx.catalog, NAMESPACE, &name).unwrap();
            let keep = BTreeSet::new();
            // Too young: a commit in flight looks just like this, so nothing is touched.
            let young: BTreeSet<PathBuf> = reloaded
                .find_orphan_files(crashed_at, &keep)
                .unwrap()
                .into_iter()
                .collect();
            assert!(young.is_subset(&before), "{op:?} {fp:?}: {young:?}");
            assert!(young.is_disjoint(&debris));

            let expected: BTreeSet<PathBuf> = all_files(&reloaded)
                .difference(&reachable(&reloaded))
                .cloned()
                .collect();
            let removed: BTreeSet<PathBuf> = reloaded
                .remove_orphan_files(now_ms() + 1_000, &keep)
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(removed, expected, "{op:?} {fp:?}");
            assert_eq!(all_files(&reloaded), reachable(&reloaded), "{op:?} {fp:?}");
            if fp == CommitFailpoint::AfterCatalogSwap {
                // Committed: the old metadata file (and, for an expiry, the expired
                // snapshots' files) were left for the orphan sweep.
                assert!(!removed.is_empty(), "{op:?} {fp:?}");
            } else {
                // Not committed: all the crash wrote, and the operation's new data file.
                let mut want = debris.clone();
                want.extend(new_file.as_ref().map(|f| f.path.clone()));
                assert_eq!(removed, want, "{op:?} {fp:?}");
            }

            let rows_now = match (op, fp) {
                (Op::Append, CommitFailpoint::AfterCatalogSwap) => rows(0..9),
                _ => rows(0..6),
            };
            let expect = Expect {
                rows: rows_now,
                ..Default::default()
            };
            verify_in_rust(&reloaded, &expect);
            check_with_python(&name, &fx.db, &fx.warehouse, &reloaded, &expect);
        }
    }
}

/// Work in the swap's transaction commits exactly when the snapshot does: with a swap that
/// lands, never with one that fails, is lost, or "crashes" before `COMMIT`; and when the work
/// fails the swap is rolled back with it.
#[test]
fn in_swap_work_commits_exactly_with_the_snapshot() {
    let fx = fixture();
    let side = rusqlite::Connection::open(&fx.db).unwrap();
    side.execute_batch("CREATE TABLE done(path TEXT NOT NULL)")
        .unwrap();
    let done = || -> i64 {
        side.query_row("SELECT count(*) FROM done", [], |r| r.get(0))
            .unwrap()
    };
    let record = |info: &DataFileInfo| {
        let p = info.path.display().to_string();
        InSwap::new(move |c| c.execute("INSERT INTO done VALUES (?1)", [p]).map(|_| ()))
    };
    let mut table =
        IcebergTable::create(&fx.catalog, &fx.warehouse, NAMESPACE, "in_swap", &columns()).unwrap();
    let a = write(&table, "a.parquet", 0..3);
    table
        .append_with(std::slice::from_ref(&a), record(&a))
        .unwrap();
    assert_eq!(done(), 1);
    let committed = table.metadata_location().to_string();

    // The work fails: the swap is rolled back, and the commit's files are removed.
    let b = write(&table, "b.parquet", 3..6);
    let files_before = metadata_files(&table);
    let err = table
        .append_with(
            std::slice::from_ref(&b),
            InSwap::new(|c| {
                c.execute("INSERT INTO no_such_table VALUES (1)", [])
                    .map(|_| ())
            }),
        )
        .unwrap_err();
    assert!(matches!(err, IcebergError::SwapAborted { .. }), "{err}");
    assert!(err.is_definitely_not_committed());
    assert_eq!(metadata_files(&table), files_before, "cleaned up");
    let reloaded = IcebergTable::load(&fx.catalog, NAMESPACE, "in_swap").unwrap();
    assert_eq!(reloaded.metadata_location(), committed);
    assert_eq!(reloaded.data_files().unwrap(), vec![a.path.clone()]);

    // A crash inside the transaction: neither the swap nor the work.
    table.set_commit_failpoint(Some(CommitFailpoint::InSwapTransaction));
    let err = table
        .append_with(std::slice::from_ref(&b), record(&b))
        .unwrap_err();
    assert!(matches!(
        err,
        IcebergError::InjectedFailure(CommitFailpoint::InSwapTransaction)
    ));
    assert_eq!(done(), 1);
    let mut table = IcebergTable::load(&fx.catalog, NAMESPACE, "in_swap").unwrap();
    assert_eq!(table.metadata_location(), committed);

    // A lost swap: the work never runs.
    let mut stale = IcebergTable::load(&fx.catalog, NAMESPACE, "in_swap").unwrap();
    table
        .append_with(std::slice::from_ref(&b), record(&b))
        .unwrap();
    assert_eq!(done(), 2);
    let c = write(&table, "c.parquet", 6..9);
    let err = stale
        .append_with(std::slice::from_ref(&c), record(&c))
        .unwrap_err();
    assert!(err.is_commit_conflict(), "{err}");
    assert_eq!(done(), 2);
    // A later plain append carries no leftover work.
    stale.refresh().unwrap();
    stale.append(std::slice::from_ref(&c)).unwrap();
    assert_eq!(done(), 2);
}
