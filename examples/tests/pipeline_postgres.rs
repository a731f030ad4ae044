//! The PostgreSQL destination through the `astha run` binary, against a real PostgreSQL
//! 15 (`ASTHA_POSTGRES_URL`, which `scripts/start_postgres.sh` exports; CI always runs
//! these):
//! - the mirrored tables equal the SQLite tables row for row, value for value, after
//!   inserts, updates (also of a key), deletes, NULLs, REALs of every kind, extreme
//!   integers, BLOBs, and ADD/RENAME/DROP COLUMN; a value that does not fit its column
//!   is dead-lettered with the reason;
//! - `kill -9` of `astha run` mid-stream, several times, and a restart of PostgreSQL
//!   mid-stream: nothing lost, and nothing applied twice (a trigger on the mirror records
//!   every row version written; each version is unique in the workload, so a repeat would
//!   show).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use support::{sigterm_and_wait, start_cmd};

/// A value as both databases can report it, compared exactly (REALs by bits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    Null,
    Int(i64),
    Real(u64),
    Text(String),
    Blob(Vec<u8>),
}

/// A blocking PostgreSQL client for the test's own reads and setup.
struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    fn connect(url: &str) -> Pg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        });
        Pg { rt, client }
    }

    fn batch(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap();
    }

    fn try_rows(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.rt.block_on(self.client.query(sql, &[]))
    }

    /// The rows of `schema.table` with `columns` (the SQLite table's, in its order).
    fn table(&self, schema: &str, table: &str, columns: &[String]) -> Option<Vec<Vec<V>>> {
        let types: BTreeMap<String, String> = self
            .try_rows(&format!(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = '{schema}' AND table_name = '{table}'"
            ))
            .ok()?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if columns.iter().any(|c| !types.contains_key(c)) {
            return None;
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| match types[c].as_str() {
                "numeric" => format!("\"{c}\"::text"),
                _ => format!("\"{c}\""),
            })
            .collect();
        let rows = self
            .try_rows(&format!(
                "SELECT {} FROM \"{schema}\".\"{table}\"",
                select.join(", ")
            ))
            .ok()?;
        let mut out: Vec<Vec<V>> = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match types[c].as_str() {
                        "bigint" => row.get::<_, Option<i64>>(i).map_or(V::Null, V::Int),
                        "double precision" => row
                            .get::<_, Option<f64>>(i)
                            .map_or(V::Null, |f| V::Real(f.to_bits())),
                        "text" => row.get::<_, Option<String>>(i).map_or(V::Null, V::Text),
                        "bytea" => row.get::<_, Option<Vec<u8>>>(i).map_or(V::Null, V::Blob),
                        "numeric" => match row.get::<_, Option<String>>(i) {
                            None => V::Null,
                            Some(t) => match t.parse::<i64>() {
                                Ok(n) => V::Int(n),
                                Err(_) => V::Real(t.parse::<f64>().unwrap().to_bits()),
                            },
                        },
                        other => panic!("unexpected column type {other}"),
                    })
                    .collect()
            })
            .collect();
        out.sort();
        Some(out)
    }
}

/// Column names and rows of a SQLite table, sorted.
fn sqlite_table(db: &Path, table: &str) -> (Vec<String>, Vec<Vec<V>>) {
    let conn = Connection::open(db).unwrap();
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

/// Waits until every table of `tables` is mirrored exactly; returns the last difference.
fn wait_mirrored(
    pg: &Pg,
    db: &Path,
    schema: &str,
    tables: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut diff = None;
        for table in tables {
            let (columns, rows) = sqlite_table(db, table);
            let mirrored = pg.table(schema, table, &columns);
            if mirrored.as_ref() != Some(&rows) {
                diff = Some(format!(
                    "{table}: sqlite {} rows {rows:?}\npostgres {mirrored:?}",
                    rows.len()
                ));
                break;
            }
        }
        match diff {
            None => return Ok(()),
            Some(d) if Instant::now() > deadline => return Err(d),
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn postgres_url() -> Option<String> {
    match std::env::var("ASTHA_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run this test: source scripts/start_postgres.sh"
            );
            eprintln!("SKIPPED: ASTHA_POSTGRES_URL not set (source scripts/start_postgres.sh)");
            None
        }
    }
}

/// A schema of this test's own (dropped first, so a rerun starts clean).
fn fresh_schema(pg: &Pg, name: &str) -> String {
    let schema = format!("astha_test_{name}");
    pg.batch(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    schema
}

/// `pg.toml`: `tables` of `src.db` mirrored into `schema`; `extra` ends the sink's table.
fn pipeline(dir: &Path, tables: &[&str], schema: &str, extra: &str) {
    let tables: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        dir.join("pg.toml"),
        format!(
            "[[sources]]\ndatabase = \"src.db\"\ntables = [{}]\ninstall = true\n\n\
             [[sinks]]\nname = \"mirror\"\ntype = \"postgres\"\nurl = \"${{ASTHA_POSTGRES_URL}}\"\n\
             schema = \"{schema}\"\n{extra}",
            tables.join(", ")
        ),
    )
    .unwrap();
}

fn run(dir: &Path, url: &str) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_astha"));
    cmd.env_remove("ASTHA_CONFIG")
        .env("ASTHA_POSTGRES_URL", url);
    start_cmd(cmd, &["run", "pg.toml"], dir, "running")
}

#[test]
fn mirrors_every_value_and_change_row_for_row() {
    let Some(url) = postgres_url() else { return };
    let pg = Pg::connect(&url);
    let schema = fresh_schema(&pg, "values");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n NUMERIC, u,
                         d DATETIME DEFAULT CURRENT_TIMESTAMP);
         CREATE TABLE k (a TEXT, b INTEGER, v VARCHAR(10), PRIMARY KEY (a, b));
         CREATE TABLE loose (x, y);",
    )
    .unwrap();
    // A table without a key is refused by --check, with the way out.
    pipeline(dir.path(), &["t", "k", "loose"], &schema, "");
    let out = Command::new(env!("CARGO_BIN_EXE_astha"))
        .args(["run", "--check", "pg.toml"])
        .current_dir(dir.path())
        .env("ASTHA_POSTGRES_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("table loose has no primary key"),
        "{stderr}"
    );

    // `d` is DATETIME (NUMERIC affinity) holding text: mirrored as text by request.
    pipeline(
        dir.path(),
        &["t", "k"],
        &schema,
        "[sinks.column_types]\n\"t.d\" = \"text\"\n",
    );
    let (child, _stderr) = run(dir.path(), &url);
    let reals = [
        0.1 + 0.2,
        -0.0,
        1e300,
        -1e-300,
        5e-324,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
    ];
    for (id, r) in reals.iter().enumerate() {
        conn.execute(
            "INSERT INTO t (id, i, r, s, b, n, u) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                id as i64,
                [i64::MIN, i64::MAX, 0, -1][id % 4],
                r,
                format!("text {id} ünïcödé '\"\\"),
                vec![id as u8, 0, 255],
                [1.5, 42.0, 1e20, 7.0][id % 4],
                vec![0xde_u8, 0xad],
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
    // A BLOB in the INTEGER column: SQLite keeps it, PostgreSQL's bigint cannot.
    conn.execute("INSERT INTO t (id, i) VALUES (300, x'01')", [])
        .unwrap();
    conn.execute("INSERT INTO t (id, i) VALUES (301, 5)", [])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason: String = loop {
        let found = conn.query_row(
            "SELECT reason FROM __astha_dead_letters WHERE consumer = 'mirror' ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        );
        match found {
            Ok(reason) => break reason,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no dead letter: {e}"),
        }
    };
    assert!(
        reason.contains("column i: a BLOB value does not fit a PostgreSQL bigint column"),
        "{reason}"
    );
    // Rows that never reached the mirror leave SQLite too, so the tables can be compared.
    conn.execute("DELETE FROM t WHERE id = 300", []).unwrap();
    wait_mirrored(&pg, &db, &schema, &["t", "k"], Duration::from_secs(30)).unwrap();

    // A row the server itself refuses (a constraint added to the mirror): the delivery is
    // narrowed down to that change, which is dead-lettered; its neighbours are applied.
    pg.batch(&format!(
        "ALTER TABLE {schema}.t ADD CONSTRAINT not_424242 CHECK (i <> 424242) NOT VALID"
    ));
    conn.execute_batch(
        "BEGIN;
         INSERT INTO t (id, i) VALUES (500, 1);
         INSERT INTO t (id, i) VALUES (501, 424242);
         INSERT INTO t (id, i) VALUES (502, 2);
         COMMIT;",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused: String = loop {
        let found = conn.query_row(
            "SELECT reason FROM __astha_dead_letters WHERE consumer = 'mirror' \
             AND reason LIKE '%refused%'",
            [],
            |r| r.get(0),
        );
        match found {
            Ok(reason) => break reason,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no dead letter for the refused row: {e}"),
        }
    };
    assert!(refused.contains("not_424242"), "{refused}");
    conn.execute("DELETE FROM t WHERE id = 501", []).unwrap();
    wait_mirrored(&pg, &db, &schema, &["t"], Duration::from_secs(30)).unwrap();
    pg.batch(&format!(
        "ALTER TABLE {schema}.t DROP CONSTRAINT not_424242"
    ));

    // Schema changes, through Capture::alter (triggers regenerated in the same transaction).
    let capture = astha_core::capture::Capture::new("__cdc_log");
    capture
        .alter(&conn, "t", "ALTER TABLE t ADD COLUMN extra TEXT")
        .unwrap();
    conn.execute("UPDATE t SET extra = 'new' WHERE id = 1", [])
        .unwrap();
    conn.execute("INSERT INTO t (id, extra) VALUES (400, 'x')", [])
        .unwrap();
    wait_mirrored(&pg, &db, &schema, &["t"], Duration::from_secs(30)).unwrap();
    capture
        .alter(&conn, "t", "ALTER TABLE t RENAME COLUMN s TO label")
        .unwrap();
    conn.execute("UPDATE t SET label = 'renamed' WHERE id = 4", [])
        .unwrap();
    wait_mirrored(&pg, &db, &schema, &["t"], Duration::from_secs(30)).unwrap();
    capture
        .alter(&conn, "t", "ALTER TABLE t DROP COLUMN n")
        .unwrap();
    conn.execute("INSERT INTO t (id, label) VALUES (401, 'after drop')", [])
        .unwrap();
    wait_mirrored(&pg, &db, &schema, &["t"], Duration::from_secs(30)).unwrap();
    sigterm_and_wait(child);

    // The markers: per source table, the last LSN applied.
    let markers = pg
        .try_rows(&format!(
            "SELECT table_name, lsn FROM {schema}.astha_markers ORDER BY table_name"
        ))
        .unwrap();
    // The last change was of t: its marker is where the slot stopped.
    let position: i64 = conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'mirror'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let names: Vec<String> = markers.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["k", "t"]);
    assert_eq!(markers[1].get::<_, i64>(1), position);
}

#[test]
fn kill_9_of_astha_run_mid_stream_applies_nothing_twice() {
    let Some(url) = postgres_url() else { return };
    let pg = Pg::connect(&url);
    let schema = fresh_schema(&pg, "kill");
    // The mirror exists already (the sink adopts it), with a trigger recording every row
    // version written to it.
    pg.batch(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v bigint, note text);
         CREATE TABLE {schema}.written (id bigint, v bigint);
         CREATE FUNCTION {schema}.record() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO {schema}.written VALUES (NEW.id, NEW.v); RETURN NEW; END $$;
         CREATE TRIGGER record AFTER INSERT OR UPDATE ON {schema}.t
           FOR EACH ROW EXECUTE FUNCTION {schema}.record();"
    ));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, note TEXT);",
        )
        .unwrap();
    pipeline(dir.path(), &["t"], &schema, "");
    // Capture (and the slot) must exist before the writer starts.
    let (mut child, stderr) = run(dir.path(), &url);
    let mut stderrs = vec![stderr];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            // Every row version gets its own v: inserts, updates and deletes interleaved.
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
    let restart_server = match (
        std::env::var("ASTHA_POSTGRES_BIN"),
        std::env::var("ASTHA_POSTGRES_DATA"),
    ) {
        // `-l`: the server's log goes to its file, not to this test's output (a server
        // holding the test's stdout would keep `cargo test`'s pipe open after it ends).
        (Ok(bin), Ok(data)) => Some(format!(
            "{bin}/pg_ctl -D {data} -l {data}/../log -m fast -w restart"
        )),
        _ => None,
    };
    let mut applied_at_kills = Vec::new();
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(300 + 50 * round));
        if round == 3 {
            if let Some(restart) = &restart_server {
                // PostgreSQL restarted under a running Astha: its deliveries fail, the
                // breaker and retries carry it over.
                let status = Command::new("su")
                    .args(["postgres", "-c", restart])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "pg_ctl restart: {status}");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let pg = Pg::connect(&url);
        applied_at_kills.push(
            pg.try_rows(&format!("SELECT count(*) FROM {schema}.written"))
                .unwrap()[0]
                .get::<_, i64>(0),
        );
        let (next, stderr) = run(dir.path(), &url);
        child = next;
        stderrs.push(stderr);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let pg = Pg::connect(&url);
    wait_mirrored(&pg, &db, &schema, &["t"], Duration::from_secs(60)).unwrap();
    sigterm_and_wait(child);
    assert!(
        applied_at_kills.windows(2).any(|w| w[1] > w[0]) && applied_at_kills[0] < written,
        "kills landed while changes were applied: {applied_at_kills:?} of {written}"
    );
    let repeated = pg
        .try_rows(&format!(
            "SELECT id, v, count(*) FROM {schema}.written GROUP BY id, v HAVING count(*) > 1"
        ))
        .unwrap();
    assert!(
        repeated.is_empty(),
        "row versions written twice: {:?}",
        repeated
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
            .collect::<Vec<_>>()
    );
    let versions: i64 = pg
        .try_rows(&format!("SELECT count(*) FROM {schema}.written"))
        .unwrap()[0]
        .get(0);
    println!(
        "{written} changes written; {versions} row versions applied; applied at kills: {applied_at_kills:?}"
    );
}

/// Rows that existed before capture reach the mirror through `snapshot = "initial"`:
/// every snapshot row carries the snapshot's LSN, so a marker taken from one row must
/// never hide the next (found when the destination met snapshots: all but the first
/// row of each table in a delivery were skipped). Writes during and after the snapshot
/// follow, and the mirror equals the table.
#[test]
fn an_initial_snapshot_mirrors_the_rows_that_existed_before_capture() {
    let Some(url) = postgres_url() else { return };
    let pg = Pg::connect(&url);
    let schema = fresh_schema(&pg, "snapshot");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
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
    pipeline(dir.path(), &["t", "k"], &schema, "snapshot = \"initial\"\n");
    let (child, _stderr) = run(dir.path(), &url);
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "UPDATE t SET v = -v, note = 'after' WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 11 = 0;
         INSERT INTO t (id, v, note) VALUES (5000, 1, 'new');
         DELETE FROM k WHERE b % 5 = 0;",
    )
    .unwrap();
    let mirrored = wait_mirrored(&pg, &db, &schema, &["t", "k"], Duration::from_secs(120));
    sigterm_and_wait(child);
    mirrored.unwrap();
    let count = pg.table(&schema, "t", &["id".to_string()]).unwrap().len();
    assert_eq!(
        count,
        700 - 700 / 11 + 1,
        "every row that existed, less deletes"
    );
}
