//! What a table keeps stays bounded through a long history: manifests (deleted-only ones
//! dropped once their snapshot is gone, small ones merged by size tier, so their number is
//! logarithmic in the live files and each file is rewritten a logarithmic number of
//! times), metadata files (the log and the
//! files on disk follow `write.metadata.*`), and the totals carried from summary to summary
//! stay exact. Checked by Rust and, with `ASTHA_INTEROP_PYTHON`, by pyiceberg (`inspect`) and
//! DuckDB (also through `version-hint.text`).

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use astha_iceberg::{
    merge_parquet, read_manifest, read_manifest_list, write_parquet, DataFileInfo, EntryStatus,
    IcebergTable, ManifestFile, SnapshotInfo, SqlCatalog, MANIFEST_MERGE_ENABLED,
    MANIFEST_MIN_MERGE_COUNT, METADATA_DELETE_AFTER_COMMIT, METADATA_PREVIOUS_VERSIONS_MAX,
};
use support::{
    check_with_python, columns, rows, sorted, verify_in_rust, Expect, CATALOG, NAMESPACE,
};

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

impl Fixture {
    fn table(&self, name: &str) -> IcebergTable {
        IcebergTable::create(&self.catalog, &self.warehouse, NAMESPACE, name, &columns()).unwrap()
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

fn manifests(s: &SnapshotInfo) -> Vec<ManifestFile> {
    read_manifest_list(&s.manifest_list).unwrap()
}

fn metadata_json_files(table: &IcebergTable) -> usize {
    std::fs::read_dir(table.location().unwrap().join("metadata"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".metadata.json")
        })
        .count()
}

/// The summary's carried totals equal what the live files add up to.
fn assert_totals(table: &IcebergTable) {
    let s = table.current_snapshot().unwrap();
    let live = table.live_data_files().unwrap();
    assert_eq!(
        (
            s.summary_u64("total-data-files"),
            s.summary_u64("total-records"),
            s.summary_u64("total-files-size")
        ),
        (
            live.len() as u64,
            live.iter().map(|f| f.record_count).sum(),
            live.iter().map(|f| f.file_size_in_bytes).sum()
        ),
        "totals of {}",
        s.snapshot_id
    );
}

#[test]
fn a_long_history_keeps_manifests_and_metadata_files_bounded() {
    let fx = fixture();
    let mut table = fx.table("history");
    table
        .set_properties(&[
            (MANIFEST_MIN_MERGE_COUNT, "4"),
            (METADATA_PREVIOUS_VERSIONS_MAX, "5"),
        ])
        .unwrap();
    let (mut next_row, mut compactions) = (0i64, 0);
    let mut most_manifests = 0;
    // Checked right after each commit: a manifest is dropped by the first commit after its
    // snapshot expired, so between an expiry and the next commit it is still listed.
    let mut check = |table: &IcebergTable, round: usize| {
        let listed = manifests(&table.current_snapshot().unwrap());
        most_manifests = most_manifests.max(listed.len());
        for m in &listed {
            let deleted_only = m.added_files_count == 0 && m.existing_files_count == 0;
            assert!(
                !deleted_only || table.metadata().snapshot(m.added_snapshot_id).is_some(),
                "round {round}: a deleted-only manifest of an expired snapshot is still listed"
            );
        }
        // Fan-out 4: at most 3 manifests per size tier, 1 + log4(live files) tiers, plus
        // one per retained snapshot that deleted files (3 retained).
        let live = table.live_data_files().unwrap().len().max(1);
        let bound = 3 * (1 + live.ilog(4) as usize) + 3;
        assert!(
            listed.len() <= bound,
            "round {round}: {} manifests for {live} live files (bound {bound})",
            listed.len()
        );
        assert!(table.metadata().metadata_log.len() <= 5);
        assert!(
            metadata_json_files(table) <= 6,
            "round {round}: {} metadata files on disk",
            metadata_json_files(table)
        );
        assert_totals(table);
    };
    for round in 0..60 {
        let f = write(&table, &format!("f{round}.parquet"), next_row..next_row + 3);
        next_row += 3;
        table.append(&[f]).unwrap();
        check(&table, round);
        if round % 6 == 5 {
            // Compact everything live into one file, then expire all but 3 snapshots: the
            // demo's lifecycle, in miniature.
            let live = table.live_data_files().unwrap();
            let merged = merge_parquet(
                &table.data_dir().unwrap().join(format!("c{round}.parquet")),
                &columns(),
                &live,
            )
            .unwrap();
            let removed: Vec<PathBuf> = live.iter().map(|f| f.path.clone()).collect();
            table.replace(&removed, &[merged]).unwrap();
            check(&table, round);
            table.expire_snapshots(3, None).unwrap();
            compactions += 1;
        }
    }
    assert_eq!(compactions, 10);
    println!("most manifests listed by one snapshot: {most_manifests}");
    let expect = Expect {
        rows: rows(0..next_row),
        current_snapshot_id: table.current_snapshot().map(|s| s.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python("long-history", &fx.db, &fx.warehouse, &table, &expect);
}

/// 2,000 appends of one file each, with the default merge settings (fan-out 8, 8 MiB
/// target): after every commit the list holds at most `7 · (1 + log8(commits))` manifests
/// (so under `2.4 · log2(commits) + 7`), merging never changes the live files, and each
/// file is rewritten by merges at most once per tier.
#[test]
fn tiered_merging_keeps_the_manifest_count_logarithmic() {
    const COMMITS: usize = 2_000;
    const FAN_OUT: usize = 8;
    let fx = fixture();
    let mut table = fx.table("tiers");
    // One real Parquet file, copied under a new name per commit: the writer checks each
    // file's size on disk, not its rows.
    let model = write(&table, "model.parquet", 0..3);
    let mut appended = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    let (mut most, mut rewritten) = (0usize, 0u64);
    for i in 0..COMMITS {
        let path = table.data_dir().unwrap().join(format!("f{i:04}.parquet"));
        std::fs::copy(&model.path, &path).unwrap();
        let f = DataFileInfo {
            path: path.clone(),
            ..model.clone()
        };
        let s = table.append(&[f]).unwrap();
        appended.insert(path);
        let listed = manifests(&s);
        for m in &listed {
            // A manifest seen for the first time that carries EXISTING files is a merge:
            // those files were rewritten.
            if seen.insert(m.manifest_path.clone()) {
                rewritten += m.existing_files_count as u64;
            }
        }
        let commits = i + 1;
        let bound = (FAN_OUT - 1) * (1 + commits.ilog(FAN_OUT) as usize);
        assert!(
            listed.len() <= bound,
            "after {commits} commits: {} manifests (bound {bound})",
            listed.len()
        );
        assert!(listed.len() as f64 <= 2.4 * (commits as f64).log2() + 7.0);
        most = most.max(listed.len());
        if commits % 250 == 0 || commits == COMMITS {
            let live: std::collections::BTreeSet<PathBuf> = table
                .live_data_files()
                .unwrap()
                .into_iter()
                .map(|f| f.path)
                .collect();
            assert_eq!(live, appended, "after {commits} commits");
            assert_totals(&table);
        }
        if commits % 100 == 0 {
            table.expire_snapshots(5, None).unwrap();
        }
    }
    let tiers = 1 + COMMITS.ilog(FAN_OUT) as u64;
    println!(
        "{COMMITS} commits: at most {most} manifests listed, {rewritten} entries rewritten by \
         merges ({:.2} per file, bound {tiers})",
        rewritten as f64 / COMMITS as f64
    );
    assert!(rewritten <= COMMITS as u64 * tiers);
    // A manifest merged again within its own commit (a cascade) is removed by that commit:
    // every file in the table directory is reachable from a snapshot.
    // (The fixture's template data file, `model.parquet`, is not the table's.)
    let orphans: Vec<_> = table
        .find_orphan_files(i64::MAX, &Default::default())
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "avro"))
        .collect();
    assert!(orphans.is_empty(), "{} orphans: {orphans:?}", orphans.len());
    let expect = Expect {
        rows: (0..COMMITS).flat_map(|_| rows(0..3)).collect(),
        current_snapshot_id: table.current_snapshot().map(|s| s.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python("tiers", &fx.db, &fx.warehouse, &table, &expect);
}

#[test]
fn merging_keeps_every_file_and_its_sequence_number() {
    let fx = fixture();
    let mut table = fx.table("merged");
    table
        .set_properties(&[(MANIFEST_MIN_MERGE_COUNT, "3")])
        .unwrap();
    let s1 = table.append(&[write(&table, "a.parquet", 0..2)]).unwrap();
    let s2 = table.append(&[write(&table, "b.parquet", 2..4)]).unwrap();
    assert_eq!(
        manifests(&s2).len(),
        2,
        "below the merge count: carried as is"
    );
    let s3 = table.append(&[write(&table, "c.parquet", 4..6)]).unwrap();
    let listed = manifests(&s3);
    assert_eq!(listed.len(), 1, "three manifests merged into one");
    let m = &listed[0];
    assert_eq!(
        (
            m.added_files_count,
            m.existing_files_count,
            m.deleted_files_count
        ),
        (1, 2, 0)
    );
    assert_eq!((m.sequence_number, m.min_sequence_number), (3, 1));
    let mut entries: Vec<(String, EntryStatus, i64)> = read_manifest(m)
        .unwrap()
        .into_iter()
        .map(|e| {
            let name = e.file.path.file_name().unwrap().to_string_lossy().into();
            (name, e.status, e.sequence_number)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        entries,
        [
            ("a.parquet".to_string(), EntryStatus::Existing, 1),
            ("b.parquet".to_string(), EntryStatus::Existing, 2),
            ("c.parquet".to_string(), EntryStatus::Added, 3),
        ]
    );
    assert_totals(&table);
    let expect = Expect {
        rows: rows(0..6),
        snapshots: BTreeMap::from([(s1.snapshot_id, rows(0..2)), (s2.snapshot_id, rows(0..4))]),
        current_snapshot_id: Some(s3.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python("merged", &fx.db, &fx.warehouse, &table, &expect);

    // Merging off: every append adds a manifest.
    table
        .set_properties(&[(MANIFEST_MERGE_ENABLED, "false")])
        .unwrap();
    for (i, name) in ["d", "e", "f"].iter().enumerate() {
        let start = 6 + 2 * i as i64;
        table
            .append(&[write(&table, &format!("{name}.parquet"), start..start + 2)])
            .unwrap();
    }
    assert_eq!(manifests(&table.current_snapshot().unwrap()).len(), 4);
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows(0..12)));
}

#[test]
fn deleted_only_manifests_go_once_their_snapshot_is_gone() {
    let fx = fixture();
    let mut table = fx.table("deletes");
    table
        .set_properties(&[(MANIFEST_MERGE_ENABLED, "false")])
        .unwrap();
    let a = write(&table, "a.parquet", 0..2);
    let b = write(&table, "b.parquet", 2..4);
    table.append(std::slice::from_ref(&a)).unwrap();
    table.append(std::slice::from_ref(&b)).unwrap();
    let m = write(&table, "m.parquet", 0..4);
    let s3 = table.replace(&[&a.path, &b.path], &[m]).unwrap();
    let deleted_only = |l: &[ManifestFile]| {
        l.iter()
            .filter(|m| m.added_files_count + m.existing_files_count == 0)
            .count()
    };
    assert_eq!(
        deleted_only(&manifests(&s3)),
        1,
        "the replace lists its deletes"
    );
    let s4 = table.append(&[write(&table, "c.parquet", 4..6)]).unwrap();
    assert_eq!(
        deleted_only(&manifests(&s4)),
        1,
        "carried while the replace snapshot is in the table"
    );
    table.expire_snapshots(1, None).unwrap();
    assert!(table.metadata().snapshot(s3.snapshot_id).is_none());
    let s5 = table.append(&[write(&table, "d.parquet", 6..8)]).unwrap();
    let listed = manifests(&s5);
    assert_eq!(
        deleted_only(&listed),
        0,
        "dropped once the replace snapshot expired"
    );
    assert_eq!(listed.len(), 3, "m's, c's and d's manifests");
    assert_totals(&table);
    let expect = Expect {
        rows: rows(0..8),
        current_snapshot_id: Some(s5.snapshot_id),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python("deleted-only", &fx.db, &fx.warehouse, &table, &expect);
}

#[test]
fn metadata_files_follow_the_table_properties() {
    let fx = fixture();
    let mut table = fx.table("meta");
    let hint = table.location().unwrap().join("metadata/version-hint.text");
    let hint_names_current = |t: &IcebergTable| {
        let stem = std::fs::read_to_string(&hint).unwrap();
        assert!(
            t.metadata_location()
                .ends_with(&format!("/{stem}.metadata.json")),
            "{stem} vs {}",
            t.metadata_location()
        );
    };
    hint_names_current(&table);
    table
        .set_properties(&[(METADATA_PREVIOUS_VERSIONS_MAX, "2")])
        .unwrap();
    for i in 0..6 {
        table
            .append(&[write(&table, &format!("f{i}.parquet"), i * 2..i * 2 + 2)])
            .unwrap();
        hint_names_current(&table);
    }
    assert_eq!(table.metadata().metadata_log.len(), 2);
    assert_eq!(metadata_json_files(&table), 3, "current + the two logged");
    for l in &table.metadata().metadata_log {
        assert!(std::path::Path::new(&l.metadata_file["file://".len()..]).exists());
    }
    // Turned off (Java's default), old files stay on disk while the log stays short.
    table
        .set_properties(&[(METADATA_DELETE_AFTER_COMMIT, "false")])
        .unwrap();
    for i in 6..10 {
        table
            .append(&[write(&table, &format!("f{i}.parquet"), i * 2..i * 2 + 2)])
            .unwrap();
    }
    assert_eq!(table.metadata().metadata_log.len(), 2);
    // The properties commit and the four appends each left one behind.
    assert_eq!(metadata_json_files(&table), 3 + 5);
    let expect = Expect {
        rows: rows(0..20),
        ..Default::default()
    };
    verify_in_rust(&table, &expect);
    check_with_python("metadata-files", &fx.db, &fx.warehouse, &table, &expect);
}

#[test]
fn files_without_column_sizes_get_them_from_their_footer() {
    let fx = fixture();
    let mut table = fx.table("sizes");
    let written = write(&table, "a.parquet", 0..5);
    let mut bare = written.clone();
    for s in bare.column_stats.values_mut() {
        s.column_size = None;
    }
    let s1 = table.append(&[bare]).unwrap();
    let entries = read_manifest(&manifests(&s1)[0]).unwrap();
    assert_eq!(
        entries[0].file, written,
        "sizes as the writer measured them"
    );
    assert!(written
        .column_stats
        .values()
        .all(|s| s.column_size > Some(0)));
    check_with_python(
        "column-sizes",
        &fx.db,
        &fx.warehouse,
        &table,
        &Expect {
            rows: rows(0..5),
            ..Default::default()
        },
    );
}
