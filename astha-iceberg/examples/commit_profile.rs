//! Append commit cost against history, for profiling: appends of one 10-row file each on one
//! table, with the `astha-bench iceberg` settings (table defaults, expiry of all but the
//! newest 10 snapshots every 100 commits).
//!
//! - `commit_profile [N] [dir]`: N appends (default 10,020) on a new table under `dir` (or a
//!   temporary directory), printing the per-append milliseconds by range of commits.
//! - `commit_profile more M dir`: loads the table `dir` holds, appends one file (warm-up: the
//!   live index reads the manifests once), then M more through `measured_append`, so that
//!   `valgrind --tool=callgrind --toggle-collect='*measured_append*'` counts the
//!   instructions of exactly those M appends, whatever history `dir` holds.
//!
//! `cargo build --release -p astha-iceberg --example commit_profile`

use std::path::Path;
use std::time::Instant;

use astha_iceberg::{
    write_parquet, ColumnSpec, DataFileInfo, IcebergTable, IcebergType, SqlCatalog,
};
use serde_json::json;

fn columns() -> Vec<ColumnSpec> {
    vec![
        ColumnSpec::new(1, "id", IcebergType::Long, false),
        ColumnSpec::new(2, "name", IcebergType::String, false),
    ]
}

fn data_files(dir: &Path, from: i64, n: usize) -> Vec<DataFileInfo> {
    (from..from + n as i64)
        .map(|i| {
            let rows: Vec<Vec<serde_json::Value>> = (i * 10..(i + 1) * 10)
                .map(|r| vec![json!(r), json!(format!("name-{r}"))])
                .collect();
            write_parquet(
                &dir.join(format!("files/f{i:06}.parquet")),
                &columns(),
                &rows,
            )
            .expect("write data file")
        })
        .collect()
}

#[inline(never)]
fn measured_append(table: &mut IcebergTable, f: &DataFileInfo) {
    table.append(std::slice::from_ref(f)).expect("append");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("more") {
        let m: usize = args[1].parse().expect("M");
        let dir = Path::new(&args[2]);
        let catalog = SqlCatalog::open(dir.join("astha.db"), "bench").expect("catalog");
        let mut table = IcebergTable::load(&catalog, "bench", "commits").expect("table");
        let from = table
            .current_snapshot()
            .map_or(0, |s| s.summary_u64("total-records") / 10);
        let files = data_files(dir, from as i64 + 1_000_000, m + 1);
        table.append(&files[..1]).expect("warm-up append");
        let mut ms: Vec<f64> = files[1..]
            .iter()
            .map(|f| {
                let started = Instant::now();
                measured_append(&mut table, f);
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{m} appends after {from} commits: mean {:.2} ms, median {:.2} ms",
            ms.iter().sum::<f64>() / m.max(1) as f64,
            ms.get(m / 2).copied().unwrap_or_default()
        );
        return;
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_020);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    let files = data_files(&dir, 0, n);
    let catalog = SqlCatalog::open(dir.join("astha.db"), "bench").expect("catalog");
    let mut table = IcebergTable::create(
        &catalog,
        &dir.join("warehouse"),
        "bench",
        "commits",
        &columns(),
    )
    .expect("table");
    let mut ms = Vec::with_capacity(n);
    for (i, f) in files.iter().enumerate() {
        let started = Instant::now();
        table.append(std::slice::from_ref(f)).expect("append");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % 100 == 0 {
            table.expire_snapshots(10, None).expect("expire");
        }
    }
    let ranges = [
        (10, 30),
        (1_000, 1_020),
        (10_000, 10_020),
        (0, 1_000),
        (1_000, 5_000),
        (5_000, 10_020),
    ];
    for (a, b) in ranges {
        if b > n {
            continue;
        }
        let mut w: Vec<f64> = ms[a..b].to_vec();
        w.sort_by(f64::total_cmp);
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        println!(
            "appends {a}..{b}: mean {mean:.2} ms, median {:.2} ms, max {:.2} ms",
            w[w.len() / 2],
            w[w.len() - 1]
        );
    }
}
