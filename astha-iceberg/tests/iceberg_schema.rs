//! Schema evolution read back across files written under every schema: a rename (same field
//! id), two widenings (`int` -> `long`, `float` -> `double`), an added column, a drop, and a
//! column added again under a dropped column's name (a new id: the old files' values under
//! the dropped id must not reappear). Checked by Rust after every step and, when
//! `ASTHA_INTEROP_PYTHON` is set, by pyiceberg and DuckDB (scripts/interop/check_iceberg.py),
//! filters included (they prune with bounds written under the old, narrower types).

#[path = "iceberg_support.rs"]
mod support;

use astha_iceberg::{
    write_parquet, ColumnSpec, DataFileInfo, IcebergError, IcebergTable, IcebergType, SqlCatalog,
};
use serde_json::{json, Value};
use support::{check_with_python, sorted, verify_in_rust, Expect, CATALOG, NAMESPACE};

fn col(id: i32, name: &str, ty: IcebergType, required: bool) -> ColumnSpec {
    ColumnSpec::new(id, name, ty, required)
}

/// Schema 0: id, qty int, price float, note.
fn v0() -> Vec<ColumnSpec> {
    vec![
        col(1, "id", IcebergType::Long, true),
        col(2, "qty", IcebergType::Int, false),
        col(3, "price", IcebergType::Float, false),
        col(4, "note", IcebergType::String, false),
    ]
}

/// Schema 1: note renamed to comment (id 4 kept), qty and price widened, tag added (id 5).
fn v1() -> Vec<ColumnSpec> {
    vec![
        col(1, "id", IcebergType::Long, true),
        col(2, "qty", IcebergType::Long, false),
        col(3, "price", IcebergType::Double, false),
        col(4, "comment", IcebergType::String, false),
        col(5, "tag", IcebergType::String, false),
    ]
}

/// Schema 2: comment (id 4) dropped.
fn v2() -> Vec<ColumnSpec> {
    let mut c = v1();
    c.remove(3);
    c
}

/// Schema 3: a column named comment again, under a new id (6).
fn v3() -> Vec<ColumnSpec> {
    let mut c = v2();
    c.push(col(6, "comment", IcebergType::String, false));
    c
}

/// Row `i` as written under schema `version` (values exactly representable as floats).
fn row(version: usize, i: i64) -> Vec<Value> {
    let qty = json!(i * 10);
    let price = json!(i as f64 + 0.25);
    match version {
        0 => vec![json!(i), qty, price, json!(format!("note {i}"))],
        1 => vec![
            json!(i),
            json!(i * 10 + 3_000_000_000),
            price,
            json!(format!("note {i}")),
            json!(format!("t{}", i % 2)),
        ],
        2 => vec![json!(i), qty, price, json!(format!("t{}", i % 2))],
        _ => vec![
            json!(i),
            qty,
            price,
            json!(format!("t{}", i % 2)),
            json!(format!("new {i}")),
        ],
    }
}

/// Row `i`, written under `written`, as a reader of schema `read` sees it.
fn seen(written: usize, read: usize, i: i64) -> Vec<Value> {
    let r = row(written, i);
    // Values by field id in the written schema.
    let ids: Vec<i32> = schema(written).iter().map(|c| c.field_id).collect();
    schema(read)
        .iter()
        .map(|c| {
            ids.iter()
                .position(|id| *id == c.field_id)
                .map(|p| r[p].clone())
                .unwrap_or(Value::Null)
        })
        .collect()
}

fn schema(version: usize) -> Vec<ColumnSpec> {
    [v0, v1, v2, v3][version]()
}

fn write(
    table: &IcebergTable,
    name: &str,
    version: usize,
    ids: std::ops::Range<i64>,
) -> DataFileInfo {
    let rows: Vec<Vec<Value>> = ids.map(|i| row(version, i)).collect();
    write_parquet(
        &table.data_dir().unwrap().join(name),
        &schema(version),
        &rows,
    )
    .unwrap()
}

/// Every file's rows as read under schema `read`: (written under, id range).
fn expected(read: usize, files: &[(usize, std::ops::Range<i64>)]) -> Vec<Vec<Value>> {
    files
        .iter()
        .flat_map(|(v, r)| r.clone().map(move |i| seen(*v, read, i)))
        .collect()
}

#[test]
fn evolved_schemas_read_back_across_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let warehouse = dir.path().join("warehouse");
    let catalog = SqlCatalog::open(&db, CATALOG).unwrap();
    let mut table =
        IcebergTable::create(&catalog, &warehouse, NAMESPACE, "evolving", &v0()).unwrap();
    let check = |step: &str,
                 table: &IcebergTable,
                 read: usize,
                 files: &[(usize, std::ops::Range<i64>)],
                 filters: Vec<(String, Vec<Vec<Value>>)>| {
        let rows = expected(read, files);
        let expect = Expect {
            rows: rows.clone(),
            filters,
            ..Default::default()
        };
        verify_in_rust(table, &expect);
        assert_eq!(sorted(table.read_rows(None).unwrap()), sorted(rows));
        check_with_python(step, &db, &warehouse, table, &expect);
    };

    let a = write(&table, "a.parquet", 0, 0..4);
    table.append(&[a]).unwrap();
    let mut files = vec![(0, 0..4)];
    check("schema0", &table, 0, &files, vec![]);

    // Rename, widen, add.
    assert_eq!(table.update_schema(&v1()).unwrap(), Some(1));
    assert_eq!(
        table.update_schema(&v1()).unwrap(),
        None,
        "no change, no commit"
    );
    let b = write(&table, "b.parquet", 1, 4..8);
    table.append(&[b]).unwrap();
    files.push((1, 4..8));
    let all = expected(1, &files);
    let pick =
        |f: &dyn Fn(&[Value]) -> bool| all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>();
    check(
        "schema1",
        &table,
        1,
        &files,
        vec![
            // Prunes the old file with its 4-byte int bounds read as long.
            (
                "qty >= 3000000000".into(),
                pick(&|r| r[1].as_i64().unwrap() >= 3_000_000_000),
            ),
            ("qty = 20".into(), pick(&|r| r[1].as_i64() == Some(20))),
            (
                "price > 2.0".into(),
                pick(&|r| r[2].as_f64().unwrap() > 2.0),
            ),
            (
                "comment = 'note 1'".into(),
                pick(&|r| r[3].as_str() == Some("note 1")),
            ),
            ("tag = 't1'".into(), pick(&|r| r[4].as_str() == Some("t1"))),
        ],
    );

    // Drop comment (id 4).
    assert_eq!(table.update_schema(&v2()).unwrap(), Some(2));
    let c = write(&table, "c.parquet", 2, 8..10);
    table.append(&[c]).unwrap();
    files.push((2, 8..10));
    check("schema2", &table, 2, &files, vec![]);

    // Reusing the dropped id is refused; a new id is fine.
    let mut reuse = v2();
    reuse.push(col(4, "comment", IcebergType::String, false));
    assert!(matches!(
        table.update_schema(&reuse),
        Err(IcebergError::SchemaMismatch { .. })
    ));
    assert_eq!(table.update_schema(&v3()).unwrap(), Some(3));
    let d = write(&table, "d.parquet", 3, 10..12);
    table.append(&[d]).unwrap();
    files.push((3, 10..12));
    let all = expected(3, &files);
    assert!(
        all[..8].iter().all(|r| r[4].is_null()),
        "old values under id 4 stay hidden"
    );
    let pick =
        |f: &dyn Fn(&[Value]) -> bool| all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>();
    check(
        "schema3",
        &table,
        3,
        &files,
        vec![
            ("comment IS NULL".into(), pick(&|r| r[4].is_null())),
            (
                "comment = 'new 10'".into(),
                pick(&|r| r[4].as_str() == Some("new 10")),
            ),
        ],
    );

    // Each snapshot names the schema it was written under; the table keeps them all.
    let ids: Vec<Option<i32>> = table
        .metadata()
        .snapshots
        .iter()
        .map(|s| s.schema_id)
        .collect();
    assert_eq!(ids, vec![Some(0), Some(1), Some(2), Some(3)]);
    assert_eq!(table.metadata().last_column_id, 6);
    let reloaded = IcebergTable::load(&catalog, NAMESPACE, "evolving").unwrap();
    assert_eq!(reloaded.columns(), v3().as_slice());

    // Going back to an earlier column list makes that schema current again.
    assert_eq!(table.update_schema(&v2()).unwrap(), Some(2));
    assert_eq!(table.metadata().schemas.len(), 4);
}
