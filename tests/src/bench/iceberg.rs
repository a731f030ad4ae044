//! Iceberg commit cost against history: milliseconds per append commit after 10, 1,000 and
//! 10,000 commits, and per replace, for Astha's writer (`astha-iceberg`) and for pyiceberg
//! in the same run, on the same machine and the same data files.
//!
//! The files (10 rows each, `id bigint, name text`) are written once, outside both tables,
//! before anything is timed; each writer then appends them one per commit and, every 100
//! commits, expires all but its newest 10 snapshots (untimed, as a snapshotter would), and
//! finally replaces 10 live files by one merged file 5 times. pyiceberg gets a time budget
//! for its appends (its commits slow down with history), after which it reports where it
//! stopped. Astha's side runs with the table defaults (manifest merging on). The pyiceberg
//! side is `scripts/interop/bench_iceberg_commits.py`, run with the Python of
//! `ASTHA_INTEROP_PYTHON` (`scripts/interop_venv.sh`); without it the baseline is skipped
//! and the report says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use astha_components::iceberg::{
    merge_parquet, read_manifest_list, write_parquet, ColumnSpec, DataFileInfo, IcebergTable,
    IcebergType, SqlCatalog,
};
use serde_json::{json, Value};

use super::Mode;

const ROWS_PER_FILE: i64 = 10;
const EXPIRE_EVERY: usize = 100;
const KEEP_SNAPSHOTS: usize = 10;
const REPLACES: usize = 5;
const FILES_PER_REPLACE: usize = 10;
/// pyiceberg's appends slow down with history (its fast appends never merge manifests), so
/// its side stops appending after this long and reports where it got;
/// `ASTHA_BENCH_PYICEBERG_BUDGET_S` overrides it.
const PYICEBERG_BUDGET_S: u64 = 600;

fn pyiceberg_budget_s() -> u64 {
    std::env::var("ASTHA_BENCH_PYICEBERG_BUDGET_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PYICEBERG_BUDGET_S)
}

/// Timings of one writer.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// (commits before the window, milliseconds of each timed append).
    pub append_ms: Vec<(usize, Vec<f64>)>,
    /// Milliseconds of every append, in commit order (merges included).
    pub all_ms: Vec<f64>,
    pub replace_ms: Vec<f64>,
    /// Where the side stopped appending before the last checkpoint (time budget), with the
    /// appends timed there.
    pub stopped: Option<(usize, Vec<f64>)>,
}

/// The suite's figures.
#[derive(Debug, Clone)]
pub struct IcebergCommits {
    pub checkpoints: Vec<usize>,
    pub measure: usize,
    pub astha: Side,
    /// Manifests the Astha table's current snapshot lists at the end.
    pub astha_manifests: usize,
    /// `None` when no interop Python was given, or why the baseline failed.
    pub pyiceberg: Result<Side, String>,
}

fn columns() -> Vec<ColumnSpec> {
    vec![
        ColumnSpec::new(1, "id", IcebergType::Long, false),
        ColumnSpec::new(2, "name", IcebergType::String, false),
    ]
}

/// Runs the suite.
pub fn run(mode: Mode) -> IcebergCommits {
    let (checkpoints, measure) = if mode.is_quick() {
        (vec![10, 50, 100], 5)
    } else {
        (vec![10, 1_000, 10_000], 20)
    };
    let total = checkpoints.iter().max().copied().unwrap_or(0) + measure;
    let dir = tempfile::tempdir().expect("temp dir");
    let files_dir = dir.path().join("files");

    eprintln!("iceberg: writing {total} data files");
    let cols = columns();
    let files: Vec<DataFileInfo> = (0..total as i64)
        .map(|i| {
            let rows: Vec<Vec<Value>> = (i * ROWS_PER_FILE..(i + 1) * ROWS_PER_FILE)
                .map(|r| vec![json!(r), json!(format!("name-{r}"))])
                .collect();
            write_parquet(&files_dir.join(format!("f{i:05}.parquet")), &cols, &rows)
                .expect("write data file")
        })
        .collect();
    let replaces: Vec<(Vec<DataFileInfo>, DataFileInfo)> = (0..REPLACES)
        .map(|r| {
            let inputs = files[r * FILES_PER_REPLACE..(r + 1) * FILES_PER_REPLACE].to_vec();
            let merged = merge_parquet(&files_dir.join(format!("m{r}.parquet")), &cols, &inputs)
                .expect("merge data files");
            (inputs, merged)
        })
        .collect();

    eprintln!("iceberg: astha-iceberg, {total} commits");
    let (astha, astha_manifests) = astha_side(dir.path(), &files, &replaces, &checkpoints, measure);
    let pyiceberg = match std::env::var_os("ASTHA_INTEROP_PYTHON").filter(|p| !p.is_empty()) {
        None => Err("ASTHA_INTEROP_PYTHON is not set (run scripts/interop_venv.sh)".into()),
        Some(python) => {
            eprintln!("iceberg: pyiceberg, {total} commits");
            pyiceberg_side(
                &python,
                dir.path(),
                &files,
                &replaces,
                &checkpoints,
                measure,
            )
        }
    };
    IcebergCommits {
        checkpoints,
        measure,
        astha,
        astha_manifests,
        pyiceberg,
    }
}

fn astha_side(
    dir: &Path,
    files: &[DataFileInfo],
    replaces: &[(Vec<DataFileInfo>, DataFileInfo)],
    checkpoints: &[usize],
    measure: usize,
) -> (Side, usize) {
    let catalog = SqlCatalog::open(dir.join("astha.db"), "bench").expect("catalog");
    let mut table = IcebergTable::create(
        &catalog,
        &dir.join("astha-warehouse"),
        "bench",
        "commits",
        &columns(),
    )
    .expect("table");
    // `ASTHA_BENCH_ICEBERG_MANIFEST_PROPS=key=value,...`: table properties to try (say a
    // smaller `commit.manifest.target-size-bytes`); the default run uses none.
    if let Ok(props) = std::env::var("ASTHA_BENCH_ICEBERG_MANIFEST_PROPS") {
        let pairs: Vec<(&str, &str)> = props
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        eprintln!("iceberg: astha table properties {pairs:?}");
        table.set_properties(&pairs).expect("set properties");
    }
    let mut side = Side {
        append_ms: checkpoints.iter().map(|k| (*k, Vec::new())).collect(),
        ..Side::default()
    };
    // `ASTHA_BENCH_ICEBERG_SLOW_MS=<ms>`: print every append slower than that (stderr),
    // to see which commits carry a manifest merge.
    let slow_ms: Option<f64> = std::env::var("ASTHA_BENCH_ICEBERG_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (i, f) in files.iter().enumerate() {
        let started = Instant::now();
        table.append(std::slice::from_ref(f)).expect("append");
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        side.all_ms.push(ms);
        if slow_ms.is_some_and(|limit| ms > limit) {
            eprintln!("iceberg: astha append {i}: {ms:.2} ms");
        }
        for (k, out) in side.append_ms.iter_mut() {
            if *k <= i && i < *k + measure {
                out.push(ms);
            }
        }
        if (i + 1) % EXPIRE_EVERY == 0 {
            table
                .expire_snapshots(KEEP_SNAPSHOTS, None)
                .expect("expire");
        }
    }
    for (removed, added) in replaces {
        let paths: Vec<&Path> = removed.iter().map(|f| f.path.as_path()).collect();
        let started = Instant::now();
        table
            .replace(&paths, std::slice::from_ref(added))
            .expect("replace");
        side.replace_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let current = table.current_snapshot().expect("a snapshot");
    assert_eq!(
        current.summary_u64("total-records"),
        files.len() as u64 * ROWS_PER_FILE as u64,
        "every row is in the table"
    );
    let manifests = read_manifest_list(&current.manifest_list)
        .expect("manifest list")
        .len();
    (side, manifests)
}

fn pyiceberg_side(
    python: &std::ffi::OsStr,
    dir: &Path,
    files: &[DataFileInfo],
    replaces: &[(Vec<DataFileInfo>, DataFileInfo)],
    checkpoints: &[usize],
    measure: usize,
) -> Result<Side, String> {
    let loc = |p: &PathBuf| format!("file://{}", p.display());
    let plan = json!({
        "schema": [[1, "id", "long"], [2, "name", "string"]],
        "files": files.iter().map(|f| loc(&f.path)).collect::<Vec<_>>(),
        "checkpoints": checkpoints,
        "measure": measure,
        "expire_every": EXPIRE_EVERY,
        "keep": KEEP_SNAPSHOTS,
        "budget_s": pyiceberg_budget_s(),
        "replaces": replaces.iter().map(|(removed, added)| json!({
            "remove": removed.iter().map(|f| loc(&f.path)).collect::<Vec<_>>(),
            "add": loc(&added.path),
        })).collect::<Vec<_>>(),
    });
    let plan_path = dir.join("pyiceberg-plan.json");
    std::fs::write(&plan_path, plan.to_string()).map_err(|e| e.to_string())?;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/bench_iceberg_commits.py");
    let out = Command::new(python)
        .arg(script)
        .arg("--catalog-db")
        .arg(dir.join("pyiceberg.db"))
        .arg("--warehouse")
        .arg(dir.join("pyiceberg-warehouse"))
        .arg("--plan")
        .arg(&plan_path)
        .output()
        .map_err(|e| format!("cannot run the pyiceberg script: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pyiceberg script failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let ms = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Ok(Side {
        append_ms: checkpoints
            .iter()
            .map(|k| (*k, ms(&v["append_ms"][k.to_string()])))
            .collect(),
        replace_ms: ms(&v["replace_ms"]),
        all_ms: ms(&v["all_ms"]),
        stopped: v["stopped_at"]
            .as_u64()
            .map(|n| (n as usize, ms(&v["stop_ms"]))),
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// The value at or below which `p` percent of `v` lie (nearest rank).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Commit ranges of the all-appends table: each decade of commits, from the first.
fn ranges(total: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut from, mut to) = (0, 10);
    while from < total {
        out.push((from, to.min(total)));
        from = to;
        to *= 10;
    }
    out
}

/// The Markdown section.
pub fn report(r: &IcebergCommits) -> String {
    let mut out = format!(
        "### Iceberg commit cost against history\n\n\
         Milliseconds per commit of one 10-row data file, timed over {} appends after each \
         number of earlier commits, then per replace of {FILES_PER_REPLACE} live files by one \
         ({REPLACES} replaces). Both writers commit the same files, written before timing; \
         every {EXPIRE_EVERY} commits each expires all but its newest {KEEP_SNAPSHOTS} \
         snapshots (untimed). Astha: `astha-iceberg` with the table defaults (manifest merging \
         on; {} manifests listed at the end). pyiceberg 0.12: fast appends and overwrites \
         through its SqlCatalog, statistics read from the footers before timing.\n\n\
         | commits before | Astha mean | Astha median | Astha max | pyiceberg mean | pyiceberg median | pyiceberg max |\n\
         |---|---|---|---|---|---|---|\n",
        r.measure, r.astha_manifests
    );
    let cells = |v: &[f64]| format!("{:.2} ms | {:.2} ms | {:.2} ms", mean(v), median(v), max(v));
    let none = "- | - | -".to_string();
    let py = r.pyiceberg.as_ref().ok();
    for (i, (k, astha)) in r.astha.append_ms.iter().enumerate() {
        let theirs = py
            .and_then(|p| p.append_ms.get(i))
            .filter(|(_, v)| !v.is_empty())
            .map_or_else(|| none.clone(), |(_, v)| cells(v));
        out.push_str(&format!("| {k} | {} | {theirs} |\n", cells(astha)));
    }
    let theirs = py.map_or_else(|| none.clone(), |p| cells(&p.replace_ms));
    out.push_str(&format!(
        "| replace | {} | {theirs} |\n\n",
        cells(&r.astha.replace_ms)
    ));
    out.push_str(
        "Every append, by range of commits (merge commits included): mean, median, p99 and \
         max.\n\n\
         | commits | Astha mean | Astha median | Astha p99 | Astha max | pyiceberg mean | pyiceberg median | pyiceberg p99 | pyiceberg max |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let dist = |v: &[f64]| {
        if v.is_empty() {
            "- | - | - | -".to_string()
        } else {
            format!(
                "{:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms",
                mean(v),
                median(v),
                percentile(v, 99.0),
                max(v)
            )
        }
    };
    for (from, to) in ranges(r.astha.all_ms.len()) {
        let theirs = py
            .map(|p| &p.all_ms[from.min(p.all_ms.len())..to.min(p.all_ms.len())])
            .unwrap_or(&[]);
        out.push_str(&format!(
            "| {}–{} | {} | {} |\n",
            from + 1,
            to,
            dist(&r.astha.all_ms[from..to]),
            dist(theirs)
        ));
    }
    out.push('\n');
    if let Some((n, v)) = py.and_then(|p| p.stopped.as_ref()) {
        out.push_str(&format!(
            "pyiceberg used its {} s budget at {n} commits and stopped \
             there (its replaces ran on that table); its last {} appends: {}.\n\n",
            pyiceberg_budget_s(),
            v.len(),
            cells(v)
        ));
    }
    if let Err(why) = &r.pyiceberg {
        out.push_str(&format!("pyiceberg baseline not run: {why}\n\n"));
    }
    out
}
