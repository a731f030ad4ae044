//! The Iceberg mirror (`type = "iceberg"`) through the `astha run` binary, on rows written
//! by real triggers:
//! - the Iceberg tables hold exactly the SQLite tables' rows, value for value (REALs by
//!   bits), after inserts, updates (also of a key), deletes, NULLs, REALs of every finite
//!   kind, extreme integers, TEXT and BLOBs, and ADD/RENAME/DROP COLUMN; a value that does
//!   not fit its column is dead-lettered with the reason. Read back by Astha's reader and, with
//!   `ASTHA_INTEROP_PYTHON` (`scripts/interop_venv.sh`; CI always sets it), by pyiceberg and
//!   DuckDB (`scripts/interop/check_iceberg.py`);
//! - `kill -9` of `astha run` mid-stream, several times, with compaction (`fold_deletes`)
//!   and snapshot expiry running often: still exact, and every data row is deleted at most once
//!   (`total-records - total-position-deletes` equals the live rows).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use astha_components::iceberg::{IcebergTable, IcebergType, SqlCatalog};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Value as Json};
use support::{sigterm_and_wait, start_cmd};

/// A value as both sides can report it, compared exactly (REALs by bits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    Null,
    Int(i64),
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

impl V {
    /// The expected-rows JSON of `check_iceberg.py`.
    fn to_json(&self) -> Json {
        match self {
            V::Null => Json::Null,
            V::Int(n) => json!(n),
            V::Real(bits) => json!(f64::from_bits(*bits)),
            V::Text(s) => json!(s),
            V::Blob(b) => json!(b),
        }
    }
}

/// Column names and rows of a SQLite table, sorted.
fn sqlite_table(db: &Path, table: &str) -> (Vec<String>, Vec<Vec<V>>) {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows: Vec<Vec<V>> = stmt
        .query_map([], |r| {
            Ok((0..columns.len())
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(n) => V::Int(n),
                    ValueRef::Real(f) => V::Real(f.to_bits()),
                    ValueRef::Text(t) => V::Text(String::from_utf8(t.to_vec()).unwrap()),
                    ValueRef::Blob(b) => V::Blob(b.to_vec()),
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    (columns, rows)
}

/// The Iceberg table's column names and rows (deletes applied), sorted; `None` while it
/// does not exist.
fn iceberg_table(warehouse: &Path, table: &str) -> Option<(Vec<String>, Vec<Vec<V>>)> {
    let catalog = SqlCatalog::open(warehouse.join("catalog.db"), "astha").ok()?;
    let t = IcebergTable::load(&catalog, "cdc", table).ok()?;
    let columns = t.columns().to_vec();
    let mut rows: Vec<Vec<V>> = t
        .read_rows(None)
        .unwrap()
        .into_iter()
        .map(|row| {
            columns
                .iter()
                .zip(row)
                .map(|(c, v)| match (c.ty, v) {
                    (_, Json::Null) => V::Null,
                    (IcebergType::Long, v) => V::Int(v.as_i64().unwrap()),
                    (IcebergType::Double, v) => V::Real(v.as_f64().unwrap().to_bits()),
                    (IcebergType::String, Json::String(s)) => V::Text(s),
                    (IcebergType::Binary, Json::String(s)) => V::Blob(s.into_bytes()),
                    (IcebergType::Binary, Json::Array(a)) => {
                        V::Blob(a.iter().map(|b| b.as_u64().unwrap() as u8).collect())
                    }
                    (ty, v) => panic!("unexpected {ty} value {v}"),
                })
                .collect()
        })
        .collect();
    rows.sort();
    Some((columns.into_iter().map(|c| c.name).collect(), rows))
}

/// Waits until every table of `tables` is mirrored exactly; returns the last difference.
fn wait_mirrored(
    db: &Path,
    warehouse: &Path,
    tables: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut diff = None;
        for table in tables {
            let sqlite = sqlite_table(db, table);
            let mirrored = iceberg_table(warehouse, table);
            if mirrored.as_ref() != Some(&sqlite) {
                diff = Some(format!(
                    "{table}: sqlite {} rows {sqlite:?}\niceberg {mirrored:?}",
                    sqlite.1.len()
                ));
                break;
            }
        }
        match diff {
            None => return Ok(()),
            Some(d) if Instant::now() > deadline => return Err(d),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// pyiceberg and DuckDB read each table back equal to SQLite's (when the interop Python
/// is there; CI must have it).
fn check_with_real_readers(db: &Path, warehouse: &Path, tables: &[&str]) {
    let Some(python) = std::env::var_os("ASTHA_INTEROP_PYTHON").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the pyiceberg/DuckDB check: set ASTHA_INTEROP_PYTHON (scripts/interop_venv.sh)"
        );
        eprintln!("SKIPPED pyiceberg/DuckDB check: ASTHA_INTEROP_PYTHON not set (scripts/interop_venv.sh)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/interop/check_iceberg.py");
    for table in tables {
        let (columns, rows) = sqlite_table(db, table);
        let expected = warehouse.with_file_name(format!("expected-{table}.json"));
        let doc = json!({
            "columns": columns,
            "rows": rows.iter().map(|r| r.iter().map(V::to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        std::fs::write(&expected, serde_json::to_vec(&doc).unwrap()).unwrap();
        let out = Command::new(&python)
            .arg(&script)
            .arg("--catalog-db")
            .arg(warehouse.join("catalog.db"))
            .arg("--warehouse")
            .arg(warehouse)
            .args(["--table", &format!("cdc.{table}")])
            .arg("--expected")
            .arg(&expected)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{report}");
        assert!(
            out.status.success(),
            "interop check of {table} failed:\n{report}"
        );
    }
}

/// `lake.toml`: `tables` of `src.db` mirrored into `lake/`, namespace `cdc`.
fn pipeline(dir: &Path, tables: &[&str], extra: &str) {
    let tables: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            "[[sources]]\ndatabase = \"src.db\"\ntables = [{}]\ninstall = true\n\n\
             [[sinks]]\nname = \"mirror\"\ntype = \"iceberg\"\nwarehouse = \"lake\"\n\
             namespace = \"cdc\"\n{extra}",
            tables.join(", ")
        ),
    )
    .unwrap();
}

fn run(dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_astha"));
    cmd.env_remove("ASTHA_CONFIG");
    start_cmd(cmd, &["run", "lake.toml"], dir, "running")
}

/// Waits for `n` dead letters of the mirror; returns their reasons.
fn dead_letters(conn: &Connection, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reasons: Vec<String> = conn
            .prepare(
                "SELECT reason FROM __astha_dead_letters WHERE consumer = 'mirror' ORDER BY id",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_default();
        if reasons.len() >= n {
            return reasons;
        }
        assert!(Instant::now() < deadline, "dead letters: {reasons:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mirrors_every_value_and_change_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse: PathBuf = dir.path().join("lake");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n NUMERIC);
         CREATE TABLE k (a TEXT, b INTEGER, v VARCHAR(10), PRIMARY KEY (a, b));",
    )
    .unwrap();
    // Compaction after two delete files: folds run between the steps below.
    pipeline(dir.path(), &["t", "k"], "compact_after_delete_files = 2\n");
    let (child, _stderr) = run(dir.path());
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let reals = [0.1 + 0.2, -0.0, 1e300, -1e-300, 5e-324, f64::MAX, f64::MIN];
    for (id, r) in reals.iter().enumerate() {
        conn.execute(
            "INSERT INTO t (id, i, r, s, b, n) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                id as i64,
                [i64::MIN, i64::MAX, 0, -1][id % 4],
                r,
                format!("text {id} ünïcödé '\"\\ 🦀"),
                vec![id as u8, 0, 255, 0x80],
                [1, 42, -7, i64::MAX][id % 4],
            ],
        )
        .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO t (id) VALUES (100);                         -- all NULL
         INSERT INTO t (id, b, s) VALUES (101, x'', '');           -- empty, not NULL
         UPDATE t SET s = 'changed', r = NULL WHERE id = 1;
         UPDATE t SET id = 103 WHERE id = 3;                      -- the key moves
         DELETE FROM t WHERE id = 2;
         INSERT INTO k VALUES ('a', 1, 'x'), ('a', 2, 'y'), ('b', 1, 'z');
         UPDATE k SET b = 3 WHERE a = 'a' AND b = 2;
         DELETE FROM k WHERE a = 'b';
         INSERT INTO k VALUES ('b', 1, 'again');
         -- many changes of one row in one delivery: the last image wins
         INSERT INTO t (id, i) VALUES (200, 0);
         UPDATE t SET i = i + 1 WHERE id = 200;
         UPDATE t SET i = i + 1 WHERE id = 200;
         DELETE FROM t WHERE id = 200;
         INSERT INTO t (id, i) VALUES (200, 7);",
    )
    .unwrap();
    wait_mirrored(&db, &warehouse, &["t", "k"], Duration::from_secs(60)).unwrap();
    // Changes of rows committed earlier, in later deliveries: position deletes of rows in
    // older data files.
    conn.execute_batch(
        "UPDATE t SET i = 5, s = 'again' WHERE id IN (0, 4, 101);
         UPDATE t SET id = 104 WHERE id = 103;
         DELETE FROM t WHERE id = 5;
         UPDATE k SET v = 'w' WHERE a = 'a';",
    )
    .unwrap();
    wait_mirrored(&db, &warehouse, &["t", "k"], Duration::from_secs(60)).unwrap();

    // Values that do not fit: a REAL in the NUMERIC (long) column, an infinity in the REAL
    // (double) column. Dead-lettered with the reason; the rows around them are applied.
    conn.execute("INSERT INTO t (id, n) VALUES (300, 1.5)", [])
        .unwrap();
    conn.execute("INSERT INTO t (id, i) VALUES (301, 9)", [])
        .unwrap();
    conn.execute("INSERT INTO t (id, r) VALUES (302, ?1)", [f64::INFINITY])
        .unwrap();
    conn.execute("INSERT INTO t (id, i) VALUES (303, 10)", [])
        .unwrap();
    let reasons = dead_letters(&conn, 2);
    assert!(
        reasons[0].contains("column n")
            && reasons[0].contains("a real value does not fit Iceberg type long"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("column r") && reasons[1].contains("cannot be stored"),
        "{reasons:?}"
    );
    // Rows that never reached the mirror leave SQLite too, so the tables can be compared
    // (their deletes find no live copy and change nothing).
    conn.execute("DELETE FROM t WHERE id IN (300, 302)", [])
        .unwrap();
    wait_mirrored(&db, &warehouse, &["t", "k"], Duration::from_secs(60)).unwrap();
    sigterm_and_wait(child);
    check_with_real_readers(&db, &warehouse, &["t", "k"]);
}

#[test]
fn kill_9_of_astha_run_mid_stream_applies_nothing_twice() {
    // Small deliveries and frequent compaction, so kills land in both.
    kill_9_mid_stream("batch_size = 50\ncompact_after_delete_files = 3\nkeep_snapshots = 4\n");
}

/// With `commit_interval`, deliveries are confirmed once staged in the catalog file and
/// committed later: kills land while changes wait staged (confirmed, not yet in Iceberg),
/// in staged commits and in compactions.
#[test]
fn kill_9_with_commit_interval_loses_no_staged_change_and_applies_nothing_twice() {
    kill_9_mid_stream(
        "batch_size = 50\ncommit_interval = \"300ms\"\ncommit_rows = 400\n\
         compact_after_delete_files = 3\nkeep_snapshots = 4\n",
    );
}

/// Runs `astha run` with the sink settings `extra`, kills it with SIGKILL five times while
/// a writer inserts, updates and deletes, then checks the mirror exact, every data row
/// deleted at most once, compaction and expiry done, and no orphan file left (each start
/// sweeps what the kill before left, `orphan_age = "0s"`).
fn kill_9_mid_stream(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse = dir.path().join("lake");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);",
        )
        .unwrap();
    pipeline(dir.path(), &["t"], &format!("{extra}orphan_age = \"0s\"\n"));
    let (mut child, stderr) = run(dir.path());
    let mut stderrs = vec![stderr];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut v = 0i64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                match v % 5 {
                    0 => conn.execute("DELETE FROM t WHERE id = (SELECT min(id) FROM t)", []),
                    1 | 2 => conn.execute("UPDATE t SET v = ?1 WHERE id = ?1 % 50 + 1", [v]),
                    _ => conn.execute("INSERT INTO t (v, note) VALUES (?1, 'n')", [v]),
                }
                .unwrap();
                if v % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            v
        })
    };
    let mut left = Vec::new();
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(400 + 100 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What the kill left for the next start: changes confirmed but only staged, and
        // files no metadata names (reported, as where a kill lands is up to the clock).
        if let Ok(mut table) = SqlCatalog::open(warehouse.join("catalog.db"), "astha")
            .and_then(|c| IcebergTable::load(&c, "cdc", "t"))
        {
            let orphans = table.find_orphan_files(i64::MAX, &Default::default());
            let staged: i64 = Connection::open(warehouse.join("catalog.db"))
                .unwrap()
                .query_row("SELECT count(*) FROM astha_mirror_staged", [], |r| r.get(0))
                .unwrap_or(0);
            left.push((staged, orphans.map_or(0, |o| o.len())));
        }
        let (next, stderr) = run(dir.path());
        child = next;
        stderrs.push(stderr);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(120)).unwrap();
    sigterm_and_wait(child);
    // Every data row is deleted at most once: the live rows are the rows written minus the
    // positions deleted (a delete applied twice would make this smaller).
    let catalog = SqlCatalog::open(warehouse.join("catalog.db"), "astha").unwrap();
    let mut table = IcebergTable::load(&catalog, "cdc", "t").unwrap();
    let current = table.current_snapshot().unwrap();
    let live = sqlite_table(&db, "t").1.len() as u64;
    // Whatever the kills left unreferenced was swept by the next start.
    let orphans = table
        .find_orphan_files(i64::MAX, &Default::default())
        .unwrap();
    assert!(orphans.is_empty(), "orphans left: {orphans:?}");
    assert_eq!(
        current.summary_u64("total-records") - current.summary_u64("total-position-deletes"),
        live,
        "{:?}",
        current
    );
    let folds = table
        .snapshots()
        .iter()
        .filter(|s| s.operation == "replace")
        .count();
    assert!(folds > 0, "no compaction ran");
    // Expiry after each fold keeps 4 snapshots: the last fold and at most 3 before it.
    let snapshots = table.snapshots();
    let last_fold = snapshots
        .iter()
        .rposition(|s| s.operation == "replace")
        .unwrap();
    assert!(
        last_fold <= 3,
        "{last_fold} snapshots kept before the last fold"
    );
    println!("after each kill: (changes staged, orphan files) {left:?}");
    println!(
        "{written} changes written; {} snapshots ({folds} compactions); {} data rows, {} position deletes, {live} live",
        table.snapshots().len(),
        current.summary_u64("total-records"),
        current.summary_u64("total-position-deletes")
    );
    check_with_real_readers(&db, &warehouse, &["t"]);
}

/// Rows that existed before capture reach the mirror through `snapshot = "initial"`: every
/// snapshot row carries the snapshot's LSN, so the marker must never hide the next one.
#[test]
fn an_initial_snapshot_mirrors_the_rows_that_existed_before_capture() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse = dir.path().join("lake");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);
         CREATE TABLE k (a TEXT, b INTEGER, v REAL, PRIMARY KEY (a, b));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700)
         INSERT INTO t SELECT i, i * 10, 'before' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
         INSERT INTO k SELECT 'k' || (i % 7), i, i / 3.0 FROM n;",
    )
    .unwrap();
    pipeline(
        dir.path(),
        &["t", "k"],
        "snapshot = \"initial\"\nbatch_size = 100\n",
    );
    let (child, _stderr) = run(dir.path());
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "UPDATE t SET v = -v, note = 'after' WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 11 = 0;
         INSERT INTO t (id, v, note) VALUES (5000, 1, 'new');
         DELETE FROM k WHERE b % 5 = 0;",
    )
    .unwrap();
    let mirrored = wait_mirrored(&db, &warehouse, &["t", "k"], Duration::from_secs(120));
    sigterm_and_wait(child);
    mirrored.unwrap();
    assert_eq!(
        iceberg_table(&warehouse, "t").unwrap().1.len(),
        700 - 700 / 11 + 1,
        "every row that existed, less deletes"
    );
    check_with_real_readers(&db, &warehouse, &["t", "k"]);
}

/// A table without a primary key is refused by `--check`, with the way out.
#[test]
fn a_table_without_a_key_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join("src.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE loose (x, y);")
        .unwrap();
    pipeline(dir.path(), &["t", "loose"], "");
    let out = Command::new(env!("CARGO_BIN_EXE_astha"))
        .args(["run", "--check", "lake.toml"])
        .current_dir(dir.path())
        .env_remove("ASTHA_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("table loose has no primary key"),
        "{stderr}"
    );
    assert!(!dir.path().join("lake").exists(), "--check writes nothing");
}

/// What a kill -9 between writing a commit's data file and its catalog swap leaves (a
/// Parquet file no metadata names) is deleted when the mirror next starts, once older than
/// `orphan_age`; a younger one (another writer's commit in flight) is left alone.
#[test]
fn a_start_removes_orphan_files_older_than_orphan_age_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse = dir.path().join("lake");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);",
    )
    .unwrap();
    pipeline(dir.path(), &["t"], "");
    let (child, _stderr) = run(dir.path());
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch("INSERT INTO t (v, note) VALUES (1, 'a'), (2, 'b'), (3, 'c');")
        .unwrap();
    let mirrored = wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(60));
    sigterm_and_wait(child);
    mirrored.unwrap();

    // Two unreferenced copies of a real data file: one written two hours ago (a crashed
    // commit), one just now (as if a commit were in flight).
    let catalog = SqlCatalog::open(warehouse.join("catalog.db"), "astha").unwrap();
    let table = IcebergTable::load(&catalog, "cdc", "t").unwrap();
    let data_dir = table.data_dir().unwrap();
    let written = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let crashed = data_dir.join("00000000-0000-0000-0000-00000000dead.parquet");
    let in_flight = data_dir.join("00000000-0000-0000-0000-0000000f1177.parquet");
    std::fs::copy(&written, &crashed).unwrap();
    std::fs::copy(&written, &in_flight).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&crashed)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();

    let (child, _stderr) = run(dir.path());
    conn.execute_batch("INSERT INTO t (v, note) VALUES (4, 'd'); DELETE FROM t WHERE v = 1;")
        .unwrap();
    let mirrored = wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(60));
    sigterm_and_wait(child);
    mirrored.unwrap();
    assert!(!crashed.exists(), "the old orphan was not removed");
    assert!(
        in_flight.exists(),
        "a file younger than orphan_age was removed"
    );
    assert!(written.exists());
    check_with_real_readers(&db, &warehouse, &["t"]);
}

/// `keep_for`: after a compaction, snapshots older than that are expired (and their files
/// deleted), the younger ones kept; the table still reads back exact.
#[test]
fn keep_for_expires_snapshots_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse = dir.path().join("lake");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);",
    )
    .unwrap();
    pipeline(
        dir.path(),
        &["t"],
        "compact_after_delete_files = 1\nkeep_for = \"2s\"\n",
    );
    let (child, _stderr) = run(dir.path());
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    // Several commits, none with a delete (so no compaction yet).
    for i in 0..5 {
        conn.execute("INSERT INTO t (v, note) VALUES (?1, 'old')", [i])
            .unwrap();
        wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(60)).unwrap();
    }
    let old_snapshots = {
        let catalog = SqlCatalog::open(warehouse.join("catalog.db"), "astha").unwrap();
        IcebergTable::load(&catalog, "cdc", "t")
            .unwrap()
            .snapshots()
    };
    assert!(old_snapshots.len() >= 5, "{old_snapshots:?}");
    let before_update = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Past keep_for: every snapshot so far is older than 2 s when the update's commit
    // (a delete file, so a compaction, then expiry) runs.
    std::thread::sleep(Duration::from_millis(2500));
    conn.execute("UPDATE t SET note = 'new' WHERE v = 0", [])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let catalog = SqlCatalog::open(warehouse.join("catalog.db"), "astha").unwrap();
        let table = IcebergTable::load(&catalog, "cdc", "t").unwrap();
        let snapshots = table.snapshots();
        if snapshots.iter().any(|s| s.operation == "replace")
            && snapshots.iter().all(|s| s.timestamp_ms >= before_update)
        {
            break snapshots;
        }
        assert!(Instant::now() < deadline, "not expired: {snapshots:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(60)).unwrap();
    sigterm_and_wait(child);
    // The update's commit and the fold are younger than 2 s at expiry: both kept.
    assert!(kept.len() >= 2, "{kept:?}");
    for old in &old_snapshots {
        assert!(
            !old.manifest_list.exists(),
            "manifest list of expired snapshot {} still there",
            old.snapshot_id
        );
    }
    check_with_real_readers(&db, &warehouse, &["t"]);
}

/// Waits until the slot `mirror` has confirmed every change in the log.
fn wait_confirmed(conn: &Connection) {
    let head: i64 = conn
        .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'mirror'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
        < head
    {
        assert!(Instant::now() < deadline, "the slot never reached the head");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn staged_count(warehouse: &Path) -> i64 {
    Connection::open(warehouse.join("catalog.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM astha_mirror_staged", [], |r| r.get(0))
        .unwrap()
}

/// Staged changes (`commit_interval`) are confirmed but not yet in Iceberg. A graceful
/// stop (SIGTERM) commits them (`on_stop`); after a kill they wait in the catalog file and
/// the next start commits them, here with `commit_interval` since removed.
#[test]
fn staged_changes_are_committed_at_a_graceful_stop_or_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let warehouse = dir.path().join("lake");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);",
    )
    .unwrap();
    // An interval no test waits for: nothing is committed by the timer while a run lasts.
    pipeline(dir.path(), &["t"], "commit_interval = \"1h\"\n");
    let (child, _stderr) = run(dir.path());
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "INSERT INTO t (v, note) VALUES (1, 'a'), (2, 'b'), (3, 'c');
         UPDATE t SET note = 'B' WHERE v = 2;
         DELETE FROM t WHERE v = 1;",
    )
    .unwrap();
    wait_confirmed(&conn);
    assert_eq!(staged_count(&warehouse), 5, "confirmed, staged");
    assert!(iceberg_table(&warehouse, "t").is_none_or(|(_, rows)| rows.is_empty()));
    sigterm_and_wait(child);
    // The stop committed them.
    assert_eq!(staged_count(&warehouse), 0);
    assert_eq!(iceberg_table(&warehouse, "t"), Some(sqlite_table(&db, "t")));
    check_with_real_readers(&db, &warehouse, &["t"]);

    // A kill leaves them staged.
    let (mut child, _stderr) = run(dir.path());
    conn.execute_batch(
        "INSERT INTO t (v, note) VALUES (5, 'e');
         UPDATE t SET note = 'C' WHERE v = 3;",
    )
    .unwrap();
    wait_confirmed(&conn);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(staged_count(&warehouse), 2);
    let (_, rows) = iceberg_table(&warehouse, "t").unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");

    pipeline(dir.path(), &["t"], "");
    let (child, _stderr) = run(dir.path());
    conn.execute("INSERT INTO t (v, note) VALUES (4, 'd')", [])
        .unwrap();
    let mirrored = wait_mirrored(&db, &warehouse, &["t"], Duration::from_secs(60));
    sigterm_and_wait(child);
    mirrored.unwrap();
    assert_eq!(staged_count(&warehouse), 0);
    check_with_real_readers(&db, &warehouse, &["t"]);
}
