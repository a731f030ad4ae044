//! Peak memory of `fold_deletes` against the table's size: appends `files` data files of
//! `rows` rows each (about 120 bytes a row) and deletes one row of each; then a fresh
//! process (this example run again) opens the table and folds, and prints its peak RSS
//! (`VmHWM`), beside that of a fresh process that only opens the table. Linux only.
//!
//! `cargo run --release -p astha-iceberg --example fold_memory -- <files> <rows>`

use std::path::Path;

use astha_iceberg::{
    write_parquet, ColumnSpec, IcebergTable, IcebergType, PositionDelete, SqlCatalog,
};
use serde_json::{json, Value};

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, dir] = &raw[..] {
        if mode == "open" || mode == "fold" {
            return open_and_maybe_fold(mode, Path::new(dir));
        }
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("two integers: files rows"))
        .collect();
    let [files, rows] = args[..] else {
        panic!("usage: fold_memory <files> <rows per file>");
    };
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqlCatalog::open(dir.path().join("catalog.db"), "bench").unwrap();
    let columns = vec![
        ColumnSpec::new(1, "id", IcebergType::Long, true),
        ColumnSpec::new(2, "name", IcebergType::String, false),
        ColumnSpec::new(3, "score", IcebergType::Double, false),
    ];
    let warehouse = dir.path().join("warehouse");
    let mut table = IcebergTable::create(&catalog, &warehouse, "bench", "t", &columns).unwrap();
    let data = table.data_dir().unwrap();
    let mut deletes = Vec::new();
    for f in 0..files {
        let batch: Vec<Vec<Value>> = (0..rows)
            .map(|r| {
                let id = f * rows + r;
                vec![
                    json!(id),
                    json!(format!("{id:>12} {}", "x".repeat(96))),
                    json!(id as f64 / 3.0),
                ]
            })
            .collect();
        let info = write_parquet(&data.join(format!("f{f}.parquet")), &columns, &batch).unwrap();
        deletes.push(PositionDelete {
            data_file: info.path.clone(),
            pos: rows / 2,
        });
        table.append(&[info]).unwrap();
    }
    table.row_delta(&[], &deletes).unwrap();
    let open_only = child(dir.path(), "open");
    let fold = child(dir.path(), "fold");
    println!(
        "files {files} rows/file {rows}: peak RSS of a process that opens the table {} MiB, \
         that opens it and folds {fold}",
        open_only
    );
}

/// Runs this example as `<mode> <dir>` and returns what it printed.
fn child(dir: &Path, mode: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([mode, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The child: opens the table (and folds it when `mode` is `fold`), prints its peak RSS.
fn open_and_maybe_fold(mode: &str, dir: &Path) {
    let catalog = SqlCatalog::open(dir.join("catalog.db"), "bench").unwrap();
    let mut table = IcebergTable::load(&catalog, "bench", "t").unwrap();
    if mode == "open" {
        print!("{}", peak_rss_kib() / 1024);
        return;
    }
    let started = std::time::Instant::now();
    let data = table.data_dir().unwrap();
    let (_, folded) = table
        .fold_deletes(&data.join("folded.parquet"), |_| None)
        .unwrap()
        .expect("there were deletes to fold");
    print!(
        "{} MiB (rewrote {} files in {:.2} s)",
        peak_rss_kib() / 1024,
        folded.removed_files.len(),
        started.elapsed().as_secs_f64()
    );
}
