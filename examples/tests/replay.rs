//! `astha replay`, `astha state-at` and `astha slots reset --to-time` as a user runs
//! them, on a log kept by `[retention]` in a running `watch`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;

use support::{astha, make_db_with, output};

fn make_db(dir: &Path) -> std::path::PathBuf {
    make_db_with(
        dir,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, b BLOB);",
    )
}

fn watch(db: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "items",
        "--install",
    ];
    args.extend_from_slice(extra);
    output(astha().args(&args))
}

fn replay(db: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["replay", "--db", db.to_str().unwrap()];
    args.extend_from_slice(extra);
    output(astha().args(&args))
}

fn oldest(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT min(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap()
}

fn rows_json(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT id, name, price, b FROM items ORDER BY id")
        .unwrap();
    let names = ["id", "name", "price", "b"];
    let mut rows: Vec<String> = stmt
        .query_map([], |r| {
            let mut map = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = astha_core::Value::from_ref(r.get_ref(i)?);
                map.insert(name.to_string(), v.to_json());
            }
            Ok(serde_json::Value::Object(map).to_string())
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort();
    rows
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn replay_prints_what_watch_printed_keeps_what_retention_says_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let (ok, _, stderr) = watch(&db, &["--slot", "keep", "--limit", "0"]);
    assert!(ok, "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for i in 0..6 {
        conn.execute(
            "INSERT INTO items (name, price, b) VALUES (?1, ?2, x'00ff')",
            rusqlite::params![format!("n{i}"), -0.0 + i as f64],
        )
        .unwrap();
    }
    conn.execute("UPDATE items SET price = price * 2 WHERE id % 2 = 0", [])
        .unwrap();
    conn.execute("DELETE FROM items WHERE id = 1", []).unwrap();
    let head: i64 = conn
        .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(head, 10);

    // What a consumer received, in two formats, against the replay of the same range.
    for format in ["json", "debezium"] {
        let (ok, received, stderr) = watch(
            &db,
            &[
                "--slot",
                format,
                "--from-beginning",
                "--limit",
                "10",
                "--format",
                format,
            ],
        );
        assert!(ok, "{stderr}");
        let (ok, replayed, stderr) = replay(&db, &["--from-lsn", "1", "--format", format]);
        assert!(ok, "{stderr}");
        assert_eq!(replayed, received, "{format}");
        assert!(
            stderr.contains("replayed 10 change(s) of LSN 1..=10"),
            "{stderr}"
        );
    }
    let (ok, middle, _) = replay(&db, &["--from-lsn", "3", "--to-lsn", "5"]);
    assert!(ok);
    let lsns: Vec<i64> = middle
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(lsns, [3, 4, 5]);
    // The state as of LSN 6 (every insert, no update yet), recorded before the cleanup.
    let (ok, state6, stderr) = output(astha().args([
        "state-at",
        "--db",
        db.to_str().unwrap(),
        "--table",
        "items",
        "--lsn",
        "6",
    ]));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("6 row(s), 4 later change(s) undone; exact"),
        "{stderr}"
    );

    // A running engine with `[retention] keep_rows = 4` removes all but the newest four
    // LSNs once every slot is past them, and no more.
    for slot in ["json", "debezium"] {
        let (ok, _, stderr) = output(astha().args(["slots", "drop", db.to_str().unwrap(), slot]));
        assert!(ok, "{stderr}");
    }
    let config = dir.path().join("astha.toml");
    std::fs::write(
        &config,
        "cleanup_interval = \"50ms\"\n[retention]\nkeep_rows = 4\n",
    )
    .unwrap();
    let mut child = astha()
        .args(["--config", config.to_str().unwrap()])
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "items",
            "--slot",
            "keep",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().starts_with("watching") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while oldest(&conn) < 7 {
        assert!(
            Instant::now() < deadline,
            "retention never cleaned up to LSN 6"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few more ticks: still four rows, not fewer.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(oldest(&conn), 7, "keep_rows = 4 keeps LSNs 7..=10");

    let (ok, stdout, stderr) = replay(&db, &["--from-lsn", "2"]);
    assert!(!ok && stdout.is_empty(), "nothing printed: {stdout}");
    assert!(
        stderr.contains("no longer holds LSN 2")
            && stderr.contains("oldest retained change is LSN 7")
            && stderr.contains("keep_rows"),
        "names the oldest LSN and the way out: {stderr}"
    );
    let (ok, tail, stderr) = replay(&db, &["--from-lsn", "7", "--table", "items"]);
    assert!(ok, "{stderr}");
    assert_eq!(tail.lines().count(), 4);
    // By time: the first change written at or after LSN 8's time.
    let t8: String = conn
        .query_row(
            "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ts) FROM __cdc_log WHERE id = 8",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let first_at_t8: i64 = conn
        .query_row(
            "SELECT min(id) FROM __cdc_log WHERE ts >= julianday(?1)",
            [&t8],
            |r| r.get(0),
        )
        .unwrap();
    let (ok, by_time, stderr) = replay(&db, &["--from-time", &t8]);
    if first_at_t8 > 7 {
        assert!(ok, "{stderr}");
        assert_eq!(by_time.lines().count() as i64, 10 - first_at_t8 + 1);
    } else {
        // LSN 7 was written in the same millisecond: rows of that millisecond may be
        // gone, so the time is refused.
        assert!(!ok && stderr.contains("no longer holds time"), "{stderr}");
    }

    // State as of LSN 6 is still rebuilt (the log holds 7 and on), and is what it was.
    let (ok, again, stderr) = output(astha().args([
        "state-at",
        "--db",
        db.to_str().unwrap(),
        "--table",
        "items",
        "--lsn",
        "6",
    ]));
    assert!(ok, "{stderr}");
    assert_eq!(sorted_lines(&again), sorted_lines(&state6));
    let (ok, _, stderr) = output(astha().args([
        "state-at",
        "--db",
        db.to_str().unwrap(),
        "--table",
        "items",
        "--lsn",
        "5",
    ]));
    assert!(
        !ok && stderr.contains("oldest retained change is LSN 7"),
        "{stderr}"
    );

    // A new consumer starts at a retained point, and only there.
    let (ok, stdout, stderr) = watch(
        &db,
        &["--slot", "late", "--start-at", "lsn:8", "--limit", "3"],
    );
    assert!(ok, "{stderr}");
    let lsns: Vec<i64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(lsns, [8, 9, 10]);
    let (ok, _, stderr) = watch(
        &db,
        &["--slot", "early", "--start-at", "lsn:2", "--limit", "1"],
    );
    assert!(
        !ok && stderr.contains("oldest retained change is LSN 7"),
        "{stderr}"
    );
    let (ok, _, _) = output(astha().args(["slots", "drop", db.to_str().unwrap(), "late"]));
    assert!(ok);

    // A slot goes back only to what the log holds: by LSN or by time.
    let d = db.to_str().unwrap();
    let (ok, _, stderr) = output(astha().args(["slots", "reset", d, "keep", "--to", "3"]));
    assert!(
        !ok && stderr.contains("oldest retained change is LSN 7"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = output(astha().args(["slots", "reset", d, "keep", "--to", "6"]));
    assert!(ok && stdout.contains("now at LSN 6"), "{stdout}{stderr}");
    if first_at_t8 > 7 {
        let (ok, stdout, stderr) =
            output(astha().args(["slots", "reset", d, "keep", "--to-time", &t8]));
        assert!(
            ok && stdout.contains(&format!("now at LSN {}", first_at_t8 - 1)),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn state_at_rebuilds_earlier_contents_to_stdout_and_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let (ok, _, stderr) = watch(&db, &["--limit", "0"]);
    assert!(ok, "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut recorded = Vec::new();
    let values: [rusqlite::types::Value; 4] = [
        rusqlite::types::Value::Null,
        rusqlite::types::Value::Real(-0.0),
        rusqlite::types::Value::Text("é\0x".into()),
        rusqlite::types::Value::Blob(vec![0, 1, 255]),
    ];
    for i in 0..12i64 {
        let v = &values[i as usize % 4];
        match i % 3 {
            0 | 1 => conn
                .execute(
                    "INSERT INTO items (name, price, b) VALUES (?1, ?2, ?3)",
                    rusqlite::params![format!("n{i}"), i as f64 / 3.0, v],
                )
                .unwrap(),
            _ => conn
                .execute(
                    "UPDATE items SET b = ?1, name = NULL WHERE id = (SELECT min(id) FROM items)",
                    [v],
                )
                .unwrap(),
        };
        if i == 7 {
            conn.execute("DELETE FROM items WHERE id = 2", []).unwrap();
        }
        let lsn: i64 = conn
            .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
            .unwrap();
        let at: String = conn
            .query_row(
                "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ts) FROM __cdc_log WHERE id = ?1",
                [lsn],
                |r| r.get(0),
            )
            .unwrap();
        recorded.push((lsn, at, rows_json(&conn)));
        std::thread::sleep(Duration::from_millis(3));
    }
    let d = db.to_str().unwrap();
    for (lsn, at, rows) in &recorded {
        let (ok, stdout, stderr) = output(astha().args([
            "state-at",
            "--db",
            d,
            "--table",
            "items",
            "--lsn",
            &lsn.to_string(),
        ]));
        assert!(ok, "{stderr}");
        assert_eq!(&sorted_lines(&stdout), rows, "at LSN {lsn}");
        let (ok, stdout, stderr) =
            output(astha().args(["state-at", "--db", d, "--table", "items", "--time", at]));
        assert!(ok, "{stderr}");
        assert_eq!(&sorted_lines(&stdout), rows, "at {at}");
    }
    let (lsn, _, rows) = &recorded[5];
    let out = dir.path().join("items-then.db");
    let (ok, _, stderr) = output(astha().args([
        "state-at",
        "--db",
        d,
        "--table",
        "items",
        "--lsn",
        &lsn.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(ok, "{stderr}");
    let then = rusqlite::Connection::open(&out).unwrap();
    assert_eq!(&rows_json(&then), rows);
    let (at, exact): (i64, bool) = then
        .query_row("SELECT lsn, exact FROM __astha_state_at", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((at, exact), (*lsn, true));
    let (ok, _, stderr) = output(astha().args([
        "state-at",
        "--db",
        d,
        "--table",
        "items",
        "--lsn",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(!ok && stderr.contains("exists"), "{stderr}");
}
