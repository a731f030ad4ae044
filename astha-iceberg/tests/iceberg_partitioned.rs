//! Partitioned tables: every transform writes the partition values readers see, files live
//! under `data/<name=value/...>/`, compaction stays within a partition, and filters on a
//! partition source column prune files. When `ASTHA_INTEROP_PYTHON` is set, pyiceberg and
//! DuckDB check the rows (scripts/interop/check_iceberg.py) and the partitions, the files
//! they plan for a filter and the rows it returns (scripts/interop/check_partitions.py).

#[path = "iceberg_support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use astha_iceberg::{
    merge_parquet, read_manifest, read_manifest_list, ColumnSpec, DataFileInfo, Datum,
    IcebergTable, IcebergType, PartitionDef, SqlCatalog,
};
use serde_json::{json, Value};
use support::{check_with_python, interop_python, sorted, Expect, CATALOG, NAMESPACE};

fn columns() -> Vec<ColumnSpec> {
    vec![
        ColumnSpec::new(1, "id", IcebergType::Long, true),
        ColumnSpec::new(2, "region", IcebergType::String, false),
        ColumnSpec::new(3, "ts", IcebergType::Timestamp, false),
        ColumnSpec::new(4, "qty", IcebergType::Int, false),
        ColumnSpec::new(5, "name", IcebergType::String, false),
        ColumnSpec::new(6, "d", IcebergType::Date, false),
    ]
}

/// Row `i`: three regions and a null one, four days, negative and positive quantities,
/// dates across a year boundary.
fn row(i: i64) -> Vec<Value> {
    let region = match i % 7 {
        6 => Value::Null,
        k => json!(["eu", "us", "ap"][(k % 3) as usize]),
    };
    vec![
        json!(i),
        region,
        json!(format!(
            "2024-03-0{}T{:02}:{:02}:00.000000",
            1 + i % 4,
            i % 24,
            i % 60
        )),
        json!(i * 7 - 100),
        json!(format!("n{i:03}")),
        json!(format!(
            "{}",
            ["2023-12-30", "2023-12-31", "2024-01-01", "2024-01-02"][(i % 4) as usize]
        )),
    ]
}

fn defs(specs: &[&str]) -> Vec<PartitionDef> {
    specs
        .iter()
        .map(|s| PartitionDef::parse(s).unwrap())
        .collect()
}

struct Env {
    dir: tempfile::TempDir,
    catalog: SqlCatalog,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqlCatalog::open(dir.path().join("catalog.db"), CATALOG).unwrap();
        Env { dir, catalog }
    }
    fn warehouse(&self) -> std::path::PathBuf {
        self.dir.path().join("warehouse")
    }
    fn create(&self, name: &str, specs: &[&str]) -> IcebergTable {
        IcebergTable::create_partitioned(
            &self.catalog,
            &self.warehouse(),
            NAMESPACE,
            name,
            &columns(),
            &defs(specs),
        )
        .unwrap()
    }
}

/// Live files of the current snapshot with their partitions as read back from the manifests.
fn live_files(table: &IcebergTable) -> Vec<DataFileInfo> {
    let list = read_manifest_list(&table.current_snapshot().unwrap().manifest_list).unwrap();
    list.iter()
        .flat_map(|m| read_manifest(m).unwrap())
        .filter(|e| e.status.is_live())
        .map(|e| e.file)
        .collect()
}

/// A data file's path below the table's `data/` directory (as the checker names files).
fn file_name(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.split_once("/data/").unwrap().1.to_string()
}

/// `{field name: value}` of a file's partition.
fn partition_object(table: &IcebergTable, f: &DataFileInfo) -> Value {
    let spec = table.partition_spec().unwrap();
    Value::Object(
        spec.fields
            .iter()
            .zip(&f.partition)
            .map(|(b, v)| (b.field.name.clone(), v.clone()))
            .collect(),
    )
}

fn run_partition_checker(step: &str, env: &Env, table: &IcebergTable, expected: Value) -> bool {
    let Some(python) = interop_python() else {
        println!(
            "[{step}] ASTHA_INTEROP_PYTHON is not set: pyiceberg/DuckDB partition check skipped"
        );
        return false;
    };
    let file = env.dir.path().join(format!("partitions-{step}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&expected).unwrap()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/check_partitions.py");
    let out = Command::new(python)
        .arg(script)
        .arg("--catalog-db")
        .arg(env.dir.path().join("catalog.db"))
        .args(["--catalog-name", CATALOG, "--table", &table.identifier()])
        .arg("--warehouse")
        .arg(env.warehouse())
        .arg("--expected")
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("[{step}] {report}");
    assert!(
        out.status.success(),
        "[{step}] partition check failed:\n{report}"
    );
    true
}

/// A filter: SQL predicate, which files may hold matching rows, which rows match.
type Filter<'a> = (
    &'a str,
    &'a dyn Fn(&DataFileInfo) -> bool,
    &'a dyn Fn(&[Value]) -> bool,
);

/// The partition checker's expectations: spec, each file's partition, per-partition counts,
/// and for each filter the files that may hold matching rows (`may_match`) and the ids.
fn expected_partitions(table: &IcebergTable, all_rows: &[Vec<Value>], filters: &[Filter]) -> Value {
    let spec = table.partition_spec().unwrap();
    let files = live_files(table);
    let mut partitions: BTreeMap<String, (Value, u64, u64)> = BTreeMap::new();
    for f in &files {
        let p = partition_object(table, f);
        let e = partitions.entry(p.to_string()).or_insert((p, 0, 0));
        e.1 += f.record_count;
        e.2 += 1;
    }
    json!({
        "spec": spec.spec.fields.iter().map(|f| json!({
            "name": f.name, "transform": f.transform.to_string(),
            "source-id": f.source_id, "field-id": f.field_id})).collect::<Vec<_>>(),
        "files": files.iter().map(|f| (file_name(&f.path), partition_object(table, f))).collect::<serde_json::Map<_, _>>(),
        "partitions": partitions.values().map(|(p, r, n)| json!({"partition": p, "record_count": r, "file_count": n})).collect::<Vec<_>>(),
        "filters": filters.iter().map(|(w, may_match, keep)| json!({
            "where": w,
            "files": files.iter().filter(|f| may_match(f)).map(|f| file_name(&f.path)).collect::<Vec<_>>(),
            "rows": all_rows.iter().filter(|r| keep(r)).map(|r| vec![r[0].clone()]).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Bounds of column `id` of a file, as longs.
fn id_bounds(f: &DataFileInfo) -> (i64, i64) {
    let s = &f.column_stats[&1];
    let get = |b: &Option<Vec<u8>>| match Datum::from_bytes(IcebergType::Long, b.as_ref().unwrap())
    {
        Some(Datum::Long(v)) => v,
        other => panic!("{other:?}"),
    };
    (get(&s.lower_bound), get(&s.upper_bound))
}

#[test]
fn identity_day_and_bucket_partitions_are_written_compacted_and_pruned() {
    let env = Env::new();
    let mut table = env.create("events", &["region", "day(ts)", "bucket(4, id)"]);
    let first: Vec<Vec<Value>> = (0..60).map(row).collect();
    let files = table.write_data_files("a", &first).unwrap();
    assert!(
        files.len() > 10,
        "60 rows over 3 regions + null, 4 days, 4 buckets: {}",
        files.len()
    );
    let spec = table.partition_spec().unwrap();
    for f in &files {
        // Under data/<name=value/...>/, every row of the file in its partition.
        let rel = f.path.strip_prefix(table.data_dir().unwrap()).unwrap();
        assert_eq!(
            rel.parent().unwrap().to_string_lossy(),
            spec.path(&f.partition).unwrap()
        );
        for r in astha_iceberg::read_parquet_rows(&f.path, table.columns()).unwrap() {
            assert_eq!(spec.partition_of(&r).unwrap(), f.partition);
        }
    }
    let null_region = files.iter().find(|f| f.partition[0].is_null()).unwrap();
    assert!(null_region
        .path
        .to_string_lossy()
        .contains("/data/region=null/"));
    table.append(&files).unwrap();
    let second: Vec<Vec<Value>> = (60..100).map(row).collect();
    table
        .append(&table.write_data_files("b", &second).unwrap())
        .unwrap();

    // Manifests hold the partition values, and the list's summaries bound them.
    let live = live_files(&table);
    assert_eq!(live.iter().map(|f| f.record_count).sum::<u64>(), 100);
    let list = read_manifest_list(&table.current_snapshot().unwrap().manifest_list).unwrap();
    for m in &list {
        assert_eq!(m.partitions.len(), 3);
        let entries = read_manifest(m).unwrap();
        let days: Vec<&str> = entries
            .iter()
            .map(|e| e.file.partition[1].as_str().unwrap())
            .collect();
        let day_bytes = |s: &str| {
            Datum::from_json(IcebergType::Date, &json!(s))
                .unwrap()
                .to_bytes()
        };
        assert_eq!(
            m.partitions[1].lower_bound,
            Some(day_bytes(days.iter().min().unwrap()))
        );
        assert_eq!(
            m.partitions[1].upper_bound,
            Some(day_bytes(days.iter().max().unwrap()))
        );
        assert_eq!(
            m.partitions[0].contains_null,
            entries.iter().any(|e| e.file.partition[0].is_null())
        );
    }

    // A file whose rows lie outside its stated partition is refused.
    let mut wrong = table.write_data_files("c", &[row(100)]).unwrap().remove(0);
    wrong.partition[1] = json!("2024-03-04");
    if wrong.partition
        == table
            .partition_spec()
            .unwrap()
            .partition_of(&row(100))
            .unwrap()
    {
        wrong.partition[1] = json!("2024-03-03");
    }
    let err = table.append(&[wrong.clone()]).unwrap_err();
    assert!(err.to_string().contains("partition"), "{err}");
    // So is an unpartitioned file.
    wrong.partition.clear();
    assert!(table.append(&[wrong]).is_err());

    // Compaction within a partition: the two files of one partition merge into one there.
    let mut by_partition: BTreeMap<String, Vec<DataFileInfo>> = BTreeMap::new();
    for f in live_files(&table) {
        by_partition
            .entry(Value::Array(f.partition.clone()).to_string())
            .or_default()
            .push(f);
    }
    let (_, pair) = by_partition
        .iter()
        .find(|(_, fs)| fs.len() >= 2)
        .expect("some partition got files from both appends");
    let pair = &pair[..2];
    let dir = pair[0].path.parent().unwrap();
    let merged = merge_parquet(&dir.join("merged.parquet"), table.columns(), pair).unwrap();
    assert_eq!(merged.partition, pair[0].partition);
    let removed: Vec<&Path> = pair.iter().map(|f| f.path.as_path()).collect();
    // Merging across partitions is refused by replace (the merged file has no partition,
    // and a file claiming a partition none of the removed files has is refused too).
    let other = by_partition
        .values()
        .flatten()
        .find(|f| f.partition != pair[0].partition)
        .unwrap();
    let across = merge_parquet(
        &dir.join("across.parquet"),
        table.columns(),
        &[pair[0].clone(), other.clone()],
    )
    .unwrap();
    assert!(across.partition.is_empty());
    assert!(table
        .replace(
            &[pair[0].path.as_path(), other.path.as_path()],
            std::slice::from_ref(&across)
        )
        .is_err());
    let mut claimed = across;
    claimed.partition = other.partition.clone();
    let err = table.replace(
        &[pair[0].path.as_path(), pair[1].path.as_path()],
        &[claimed.clone()],
    );
    assert!(
        err.is_err(),
        "replace into another partition must be refused"
    );
    std::fs::remove_file(&claimed.path).unwrap();
    table
        .replace(&removed, std::slice::from_ref(&merged))
        .unwrap();
    let after = live_files(&table);
    assert!(after
        .iter()
        .any(|f| f.path == merged.path && f.partition == pair[0].partition));
    assert_eq!(after.iter().map(|f| f.record_count).sum::<u64>(), 100);

    // Reloaded from the catalog, the spec is the same and rows read back.
    let all: Vec<Vec<Value>> = first.iter().chain(&second).cloned().collect();
    let reloaded = IcebergTable::load(&env.catalog, NAMESPACE, "events").unwrap();
    assert_eq!(reloaded.partition_spec().unwrap(), spec);
    assert_eq!(
        sorted(reloaded.read_rows(None).unwrap()),
        sorted(all.clone())
    );

    // Pruning: which files a filter on a partition source column may read.
    let bucket_of_5 = spec.partition_of(&row(5)).unwrap()[2].clone();
    let day = |f: &DataFileInfo| f.partition[1].as_str().unwrap().to_string();
    let region_eu = |f: &DataFileInfo| f.partition[0] == json!("eu");
    let from_day3 = |f: &DataFileInfo| day(f).as_str() >= "2024-03-03";
    let id_5 = |f: &DataFileInfo| {
        let (lo, hi) = id_bounds(f);
        f.partition[2] == bucket_of_5 && lo <= 5 && 5 <= hi
    };
    let filters: Vec<Filter> = vec![
        ("region = 'eu'", &region_eu, &|r: &[Value]| {
            r[1] == json!("eu")
        }),
        (
            "ts >= '2024-03-03T00:00:00'",
            &from_day3,
            &|r: &[Value]| r[2].as_str().unwrap() >= "2024-03-03",
        ),
        ("id = 5", &id_5, &|r: &[Value]| r[0] == json!(5)),
    ];
    let expected = expected_partitions(&reloaded, &all, &filters);
    let planned_eu = expected["filters"][0]["files"].as_array().unwrap().len();
    let planned_id = expected["filters"][2]["files"].as_array().unwrap().len();
    let total = live_files(&reloaded).len();
    assert!(
        planned_eu < total && planned_id < total / 2,
        "{planned_eu} {planned_id} of {total}"
    );
    println!("pruning: region='eu' {planned_eu}/{total} files, id=5 {planned_id}/{total} files");

    let expect = Expect {
        rows: all.clone(),
        filters: vec![
            (
                "region = 'eu'".into(),
                all.iter()
                    .filter(|r| r[1] == json!("eu"))
                    .cloned()
                    .collect(),
            ),
            ("id = 5".into(), vec![row(5)]),
        ],
        ..Expect::default()
    };
    let db = env.dir.path().join("catalog.db");
    if check_with_python("partitioned", &db, &env.warehouse(), &reloaded, &expect) {
        assert!(run_partition_checker(
            "identity-day-bucket",
            &env,
            &reloaded,
            expected
        ));
    }
}

#[test]
fn year_month_hour_and_truncate_partitions_are_read_back_by_real_readers() {
    let env = Env::new();
    let mut table = env.create(
        "metrics",
        &[
            "year(d)",
            "month(ts)",
            "hour(ts)",
            "truncate(50, qty)",
            "truncate(3, name)",
        ],
    );
    let rows: Vec<Vec<Value>> = (0..40).map(row).collect();
    let files = table.write_data_files("a", &rows).unwrap();
    table.append(&files).unwrap();
    let spec = table.partition_spec().unwrap();
    // Spot values: row 1 is at 2024-03-02T01:01, d 2023-12-31, qty -93, name n001.
    let p = spec.partition_of(&row(1)).unwrap();
    assert_eq!(
        p,
        vec![
            json!(53),
            json!(650),
            json!(474_817),
            json!(-100),
            json!("n00")
        ]
    );
    assert_eq!(
        spec.path(&p).unwrap(),
        "d_year=2023/ts_month=2024-03/ts_hour=2024-03-02-01/qty_trunc=-100/name_trunc=n00"
    );
    for f in &files {
        assert!(f
            .path
            .starts_with(table.partition_data_dir(&f.partition).unwrap()));
    }
    let qty_ge_100 = |f: &DataFileInfo| f.partition[3].as_i64().unwrap() >= 100;
    let d_2024 = |f: &DataFileInfo| f.partition[0] == json!(54);
    let filters: Vec<Filter> = vec![
        ("qty >= 100", &qty_ge_100, &|r: &[Value]| {
            r[3].as_i64().unwrap() >= 100
        }),
        ("d >= '2024-01-01'", &d_2024, &|r: &[Value]| {
            r[5].as_str().unwrap() >= "2024-01-01"
        }),
    ];
    let expected = expected_partitions(&table, &rows, &filters);
    let expect = Expect {
        rows: rows.clone(),
        ..Expect::default()
    };
    let db = env.dir.path().join("catalog.db");
    if check_with_python("partitioned-time", &db, &env.warehouse(), &table, &expect) {
        assert!(run_partition_checker(
            "year-month-hour-truncate",
            &env,
            &table,
            expected
        ));
    }
}

#[test]
fn an_existing_table_with_another_spec_is_refused_and_partition_columns_stay() {
    let env = Env::new();
    let mut table = env.create("t", &["region"]);
    let err = IcebergTable::create_partitioned(
        &env.catalog,
        &env.warehouse(),
        NAMESPACE,
        "t",
        &columns(),
        &defs(&["day(ts)"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("partition spec"), "{err}");
    assert!(
        IcebergTable::create(&env.catalog, &env.warehouse(), NAMESPACE, "t", &columns()).is_err()
    );
    // The partition source column cannot be dropped.
    let without_region: Vec<ColumnSpec> = columns()
        .into_iter()
        .filter(|c| c.name != "region")
        .collect();
    let err = table.update_schema(&without_region).unwrap_err();
    assert!(err.to_string().contains("partition"), "{err}");
    // A renamed source column keeps the spec (bound by field id).
    let renamed: Vec<ColumnSpec> = columns()
        .into_iter()
        .map(|mut c| {
            if c.name == "region" {
                c.name = "area".into();
            }
            c
        })
        .collect();
    table.update_schema(&renamed).unwrap();
    let files = table
        .write_data_files("a", &(0..7).map(row).collect::<Vec<_>>())
        .unwrap();
    table.append(&files).unwrap();
    assert_eq!(live_files(&table).len(), 4, "eu, us, ap and null");
}
