//! A partitioned registry table through the lakehouse: the storage manager splits rows into
//! one file per partition under `data/<partition_path>/` and records the path; the Iceberg
//! updater appends them with their partition values; the compactor merges only files of
//! one partition. When `ASTHA_INTEROP_PYTHON` is set, pyiceberg reads the table and prunes
//! by partition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use astha_components::compactor::CompactorConfig;
use astha_components::iceberg::{read_parquet_rows, IcebergTable};
use astha_components::iceberg_updater::IcebergUpdaterConfig;
use astha_components::lakehouse::LakehouseConfig;
use astha_components::registry::{self, ColumnDef, IcebergState};
use astha_components::storage_manager::StorageManagerConfig;
use astha_components::{Compactor, IcebergUpdater, Lakehouse, StorageManager};
use serde_json::{json, Value};

const DB: &str = "shop";

fn columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef {
            nullable: false,
            ..ColumnDef::new("id", "bigint")
        },
        ColumnDef::new("region", "text"),
        ColumnDef::new("day", "date"),
        ColumnDef::new("amount", "double"),
    ]
}

fn row(i: i64) -> Vec<Value> {
    vec![
        json!(i),
        json!(["eu", "us", "ap"][(i % 3) as usize]),
        json!(format!("2024-0{}-{:02}", 1 + i % 2, 1 + i % 28)),
        json!(i as f64 * 0.5),
    ]
}

fn rows(r: std::ops::Range<i64>) -> Vec<Vec<Value>> {
    r.map(row).collect()
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| serde_json::to_string(r).unwrap());
    rows
}

#[test]
fn partitioned_inserts_appends_and_compactions_stay_within_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let registry_path = dir.path().join("registry.db");
    let warehouse = dir.path().join("warehouse");
    let lakehouse = Lakehouse::open(LakehouseConfig::new(&registry_path, &warehouse)).unwrap();
    let conn = astha_core::db::open(&registry_path).unwrap();
    let id = registry::create_table(&conn, DB, "sales", &columns()).unwrap();
    conn.execute(
        "UPDATE table_metadata SET partition_by = ?1 WHERE table_id = ?2",
        (r#"["region", "month(day)"]"#, id),
    )
    .unwrap();
    let storage = StorageManager::new(lakehouse.clone(), StorageManagerConfig::default()).unwrap();
    let updater = IcebergUpdater::new(lakehouse.clone(), IcebergUpdaterConfig::default()).unwrap();

    // One file per partition (3 regions x 2 months), each under its partition directory.
    let first = storage.insert_files(DB, "sales", &rows(0..30)).unwrap();
    assert_eq!(first.len(), 6);
    for f in &first {
        let rel = f
            .path
            .strip_prefix(warehouse.join(DB).join("sales").join("data"))
            .unwrap();
        assert_eq!(rel.parent().unwrap().to_string_lossy(), f.partition_path);
        assert!(
            f.partition_path.starts_with("region="),
            "{}",
            f.partition_path
        );
    }
    let recorded: BTreeMap<i64, String> = registry::data_files(&conn, id)
        .unwrap()
        .into_iter()
        .map(|f| (f.id, f.partition_path))
        .collect();
    for f in &first {
        assert_eq!(recorded[&f.file_id], f.partition_path);
    }
    assert!(recorded
        .values()
        .any(|p| p == "region=eu/day_month=2024-01"));
    // `insert` writes one file, so rows spanning partitions are refused, leaving nothing.
    assert!(storage.insert(DB, "sales", &rows(0..2)).is_err());
    assert_eq!(registry::data_files(&conn, id).unwrap().len(), 6);
    assert_eq!(
        storage
            .insert(DB, "sales", &[row(0), row(6)])
            .unwrap()
            .partition_path,
        "region=eu/day_month=2024-01"
    );

    // A bad value in the last partition's rows: no file recorded, none left on disk.
    let parquet_files = || {
        walk(&warehouse.join(DB).join("sales").join("data"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    let before = parquet_files();
    let mut bad = rows(100..106);
    bad[5][3] = json!("not a number");
    assert!(storage.insert_files(DB, "sales", &bad).is_err());
    assert_eq!(registry::data_files(&conn, id).unwrap().len(), 7);
    assert_eq!(parquet_files(), before);

    updater.sync_table_blocking(id).unwrap();
    storage.insert_files(DB, "sales", &rows(30..60)).unwrap();
    updater.sync_table_blocking(id).unwrap();
    let table = IcebergTable::load(lakehouse.catalog(), DB, "sales").unwrap();
    let spec = table.partition_spec().unwrap();
    assert_eq!(spec.fields.len(), 2);
    let all: Vec<Vec<Value>> = rows(0..60).into_iter().chain([row(0), row(6)]).collect();
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(all.clone()));
    let files = registry::data_files(&conn, id).unwrap();
    assert!(files
        .iter()
        .all(|f| f.iceberg_metadata_state == IcebergState::Completed));
    let live = table.live_data_files().unwrap();
    assert_eq!(live.len(), 13);
    for f in &live {
        let registered = files
            .iter()
            .find(|r| Path::new(&r.file_path) == f.path)
            .unwrap();
        assert_eq!(spec.path(&f.partition).unwrap(), registered.partition_path);
    }

    // Compaction: each partition's files merge into one file of that partition.
    let compactor = Compactor::new(
        lakehouse.clone(),
        CompactorConfig {
            min_files: 4,
            target_file_size: 1 << 20,
            ..CompactorConfig::default()
        },
    )
    .unwrap();
    let report = compactor.compact_table_blocking(id).unwrap().unwrap();
    assert_eq!(report.rows, 62);
    let table = IcebergTable::load(lakehouse.catalog(), DB, "sales").unwrap();
    let live = table.live_data_files().unwrap();
    assert_eq!(live.len(), 6, "one file per partition");
    let mut seen = BTreeSet::new();
    for f in &live {
        assert!(
            seen.insert(Value::Array(f.partition.clone()).to_string()),
            "one file per partition"
        );
        for r in read_parquet_rows(&f.path, table.columns()).unwrap() {
            assert_eq!(spec.partition_of(&r).unwrap(), f.partition);
        }
    }
    assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(all.clone()));
    let files = registry::data_files(&conn, id).unwrap();
    assert_eq!(files.len(), 6);
    for f in &files {
        let info = live
            .iter()
            .find(|l| l.path == Path::new(&f.file_path))
            .unwrap();
        assert_eq!(spec.path(&info.partition).unwrap(), f.partition_path);
        assert!(f
            .file_path
            .contains(&format!("/data/{}/", f.partition_path)));
    }

    // A reader prunes by the partition values.
    let Some(python) = std::env::var_os("ASTHA_INTEROP_PYTHON").filter(|p| !p.is_empty()) else {
        println!("ASTHA_INTEROP_PYTHON is not set: pyiceberg check skipped (Rust checks ran)");
        return;
    };
    let script = format!(
        r#"
from pyiceberg.catalog.sql import SqlCatalog
t = SqlCatalog("astha", uri="sqlite:///{db}", warehouse="file://{wh}").load_table("{DB}.sales")
planned = list(t.scan(row_filter="region = 'eu'").plan_files())
rows = t.scan(row_filter="region = 'eu'").to_arrow().num_rows
parts = len(t.inspect.partitions())
print(len(planned), rows, parts, t.scan().to_arrow().num_rows)
"#,
        db = registry_path.display(),
        wh = warehouse.display()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("pyiceberg: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let eu = all.iter().filter(|r| r[1] == json!("eu")).count();
    assert_eq!(
        text,
        format!("2 {eu} 6 62"),
        "planned files, rows, partitions, all rows"
    );
}
