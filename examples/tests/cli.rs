//! The `astha` binary as a user runs it: watch, status, dead letters, config, and the
//! errors a person gets for bad input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{astha, make_db_with, output};

fn make_db(dir: &Path) -> std::path::PathBuf {
    make_db_with(
        dir,
        "CREATE TABLE \"my items\" (id INTEGER PRIMARY KEY, name TEXT, price REAL);",
    )
}

/// Starts `astha watch <db> --tables "my items" --install <extra>` with stdout piped, and
/// returns once it reports it is watching (its slot exists), so what is written next is
/// delivered.
fn watching(db: &Path, extra: &[&str]) -> std::process::Child {
    let mut child = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
        ])
        .args(extra)
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
    child
}

#[test]
fn watch_streams_changes_as_json_lines_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let child = watching(&db, &["--limit", "3"]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("INSERT INTO \"my items\" VALUES (1, 'pen', 1.5)", [])
        .unwrap();
    conn.execute("UPDATE \"my items\" SET price = 2.25", [])
        .unwrap();
    conn.execute("DELETE FROM \"my items\"", []).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["op"], "INSERT");
    assert_eq!(lines[0]["after"]["name"], "pen");
    assert_eq!(lines[1]["before"]["price"], 1.5);
    assert_eq!(lines[1]["after"]["price"], 2.25);
    assert_eq!(lines[2]["op"], "DELETE");
    assert_eq!(lines[2]["table"], "my items");
    let lsns: Vec<i64> = lines.iter().map(|l| l["lsn"].as_i64().unwrap()).collect();
    assert_eq!(lsns, vec![1, 2, 3]);

    // The watcher's own slot is gone (it never holds cleanup back); status says so.
    let (ok, stdout, _) =
        output(astha().args(["status", db.to_str().unwrap(), "--format", "json"]));
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["captured_tables"], serde_json::json!(["my items"]));
    assert_eq!(status["slots"], serde_json::json!([]));
    assert_eq!(status["log"]["head_lsn"], 3);
}

#[test]
fn a_durable_slot_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let run = |limit: &str| {
        let (ok, stdout, stderr) = output(astha().args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
            "--slot",
            "audit",
            "--from-beginning",
            "--limit",
            limit,
        ]));
        assert!(ok, "{stderr}");
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"]
                    .as_i64()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    // `--limit 0` installs capture and exits at once, so the writes below are captured.
    let (ok, stdout, stderr) = output(astha().args([
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "my items",
        "--install",
        "--limit",
        "0",
    ]));
    assert!(ok && stdout.is_empty(), "{stderr}");
    for i in 0..5 {
        conn.execute(
            "INSERT INTO \"my items\" (name) VALUES (?1)",
            [format!("n{i}")],
        )
        .unwrap();
    }
    let first = run("2");
    let second = run("3");
    assert_eq!(first, vec![1, 2]);
    assert_eq!(
        second,
        vec![3, 4, 5],
        "resumed after the last printed change"
    );
}

/// A watcher whose stderr reader went away (a closed pipe) must still make its slot
/// durable: a log line it cannot write is dropped, never a panic in the thread that
/// logged (tracing-subscriber reports a failed write with `eprint!`, which panics on a
/// closed pipe; the watcher then printed every change and kept its slot where it was).
#[test]
fn a_closed_stderr_never_stops_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let child = watching(&db, &["--slot", "audit", "--limit", "3"]);
    // `watching` dropped the reading end of stderr: every later write to it fails.
    let conn = rusqlite::Connection::open(&db).unwrap();
    for i in 0..5 {
        conn.execute(
            "INSERT INTO \"my items\" (name) VALUES (?1)",
            [format!("n{i}")],
        )
        .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let lsns = |stdout: &[u8]| -> Vec<i64> {
        String::from_utf8_lossy(stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(lsns(&out.stdout), vec![1, 2, 3]);
    let (ok, stdout, stderr) = output(astha().args([
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "my items",
        "--slot",
        "audit",
        "--limit",
        "2",
    ]));
    assert!(ok, "{stderr}");
    assert_eq!(
        lsns(stdout.as_bytes()),
        vec![4, 5],
        "the first watcher's slot was not made durable"
    );
}

#[test]
fn errors_name_the_problem_and_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let (ok, _, err) = output(astha().args(["watch", "/nonexistent/x.db"]));
    assert!(!ok);
    assert!(err.contains("no such file: /nonexistent/x.db"), "{err}");
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        "this is not sqlite, it is text and long enough to have a header",
    )
    .unwrap();
    let (ok, _, err) = output(astha().args(["status", junk.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("is not a SQLite database"), "{err}");
    let (ok, _, err) =
        output(astha().args(["watch", db.to_str().unwrap(), "--tables", "my items"]));
    assert!(!ok);
    assert!(
        err.contains("has no capture; rerun with --install"),
        "{err}"
    );
    let (ok, _, err) = output(astha().args([
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "nope",
        "--install",
    ]));
    assert!(!ok);
    assert!(err.contains("no table named \"nope\""), "{err}");
    let (ok, _, err) = output(astha().args(["status", db.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("has no Astha change log"), "{err}");
    // A database locked by a long writer: status waits its busy timeout, then says so.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker
        .execute_batch("PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE; CREATE TABLE hold (x);")
        .unwrap();
    let start = std::time::Instant::now();
    let (ok, _, err) = output(astha().args(["status", db.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("is locked by another connection"), "{err}");
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "waited for the lock first"
    );
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn dead_letters_are_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let conn = astha_core::db::open(&db).unwrap();
    let capture = astha_core::capture::Capture::new("__cdc_log");
    capture.install(&conn, "my items").unwrap();
    conn.execute("INSERT INTO \"my items\" (name) VALUES ('x')", [])
        .unwrap();
    let failure = astha_core::dead_letter::Failure {
        consumer: "indexer",
        reason: "search cluster down",
        attempts: 30,
        retriable: true,
    };
    astha_core::dead_letter::record(&conn, "__cdc_log", 1, &failure).unwrap();
    let (ok, stdout, _) = output(astha().args(["dead-letters", "list", db.to_str().unwrap()]));
    assert!(ok);
    assert!(
        stdout.contains("indexer")
            && stdout.contains("search cluster down")
            && stdout.contains("attempts 30"),
        "{stdout}"
    );
    let (ok, stdout, _) = output(astha().args([
        "dead-letters",
        "replay",
        db.to_str().unwrap(),
        "--consumer",
        "indexer",
    ]));
    assert!(ok);
    assert!(stdout.contains("replayed as LSN 2"), "{stdout}");
    let (_, stdout, _) = output(astha().args(["dead-letters", "list", db.to_str().unwrap()]));
    assert!(stdout.contains("(no dead letters)"), "{stdout}");
}

#[test]
fn config_print_shows_the_effective_config_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("astha.toml");
    std::fs::write(&file, "batch_size = 512\n").unwrap();
    let (ok, stdout, err) = output(
        astha()
            .args(["--config", file.to_str().unwrap(), "config", "print"])
            .env("ASTHA_RETRY__MAX_ATTEMPTS", "7"),
    );
    assert!(ok, "{err}");
    let parsed: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(parsed["batch_size"].as_integer(), Some(512));
    assert_eq!(parsed["retry"]["max_attempts"].as_integer(), Some(7));
    std::fs::write(&file, "batch_sise = 512\n").unwrap();
    let (ok, _, err) =
        output(astha().args(["--config", file.to_str().unwrap(), "config", "print"]));
    assert!(!ok);
    assert!(err.contains("batch_sise"), "{err}");
    let (ok, _, err) = output(
        astha()
            .args(["config", "print"])
            .env("ASTHA_BATCH_SIZE", "0"),
    );
    assert!(!ok);
    assert!(err.contains("batch_size"), "{err}");
}

/// `--http` on a non-loopback address needs a token (from a file, the environment or the
/// command line) or `--http-allow-anonymous`; the check comes before anything starts.
#[test]
fn watch_refuses_a_public_http_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let watch = |extra: &[&str]| {
        let mut cmd = astha();
        cmd.env_remove("ASTHA_HTTP_TOKEN").args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
            "--limit",
            "0",
            "--http",
            "0.0.0.0:0",
        ]);
        output(cmd.args(extra))
    };
    let (ok, _, stderr) = watch(&[]);
    assert!(!ok);
    assert!(stderr.contains("without a bearer token"), "{stderr}");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let (ok, _, stderr) = watch(&["--http-token-file", token.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = watch(&["--http-allow-anonymous"]);
    assert!(ok, "{stderr}");
    std::fs::write(&token, "\n").unwrap();
    let (ok, _, stderr) = watch(&["--http-token-file", token.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("holds no token"), "{stderr}");
}

#[test]
fn status_and_listings_never_write_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    // A rollback-journal database an application owns, without Astha.
    let db = make_db(dir.path());
    let size = std::fs::metadata(&db).unwrap().len();
    let (ok, _, stderr) = output(astha().args(["status", db.to_str().unwrap()]));
    assert!(
        !ok && stderr.contains("has no Astha change log"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = output(astha().args(["slots", "list", db.to_str().unwrap()]));
    assert!(ok && stdout.contains("no slots"), "{stderr}");
    let (ok, _, stderr) = output(astha().args(["dead-letters", "list", db.to_str().unwrap()]));
    assert!(ok, "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "status switched the journal mode");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
    // An empty file stays empty (it is not turned into a database).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let (ok, _, _) = output(astha().args(["status", empty.to_str().unwrap()]));
    assert!(!ok);
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
}

#[test]
fn status_and_slots_read_the_configured_log_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let config = dir.path().join("astha.toml");
    std::fs::write(&config, "log_table = \"my_changes\"\n").unwrap();
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
            "--slot",
            "keep",
        ];
        args.extend_from_slice(extra);
        output(astha().args(&args))
    };
    let (ok, _, stderr) = watch(&["--limit", "0"]);
    assert!(ok, "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for i in 0..3 {
        conn.execute("INSERT INTO \"my items\" (name) VALUES (?1)", [i])
            .unwrap();
    }
    let (ok, stdout, stderr) = output(astha().args([
        "--config",
        config.to_str().unwrap(),
        "status",
        db.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert!(ok, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["log"]["head_lsn"], 3);
    assert_eq!(status["slots"][0]["slot"]["name"], "keep");
    assert_eq!(status["slots"][0]["lag"]["events"], 3);

    // slots: reset to the head skips the three, to the beginning takes them back, drop
    // forgets the slot; an unknown slot is named.
    let slots = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap(), "slots"];
        all.extend_from_slice(args);
        output(astha().args(&all))
    };
    let d = db.to_str().unwrap();
    let (ok, stdout, stderr) = slots(&["reset", d, "keep", "--to", "head"]);
    assert!(ok && stdout.contains("now at LSN 3"), "{stdout}{stderr}");
    let (ok, stdout, _) = slots(&["list", d]);
    assert!(ok && stdout.contains("lag        0 changes"), "{stdout}");
    let (ok, stdout, _) = slots(&["reset", d, "keep", "--to", "beginning"]);
    assert!(ok && stdout.contains("now at LSN 0"), "{stdout}");
    let (ok, stdout, stderr) = watch(&["--limit", "3"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        3,
        "re-read after the reset: {stdout}"
    );
    let (ok, _, stderr) = slots(&["reset", d, "keep", "--to", "soon"]);
    assert!(!ok && stderr.contains("give `head`, `beginning` or a log sequence number"));
    let (ok, stdout, _) = slots(&["drop", d, "keep"]);
    assert!(ok && stdout.contains("dropped"));
    let (ok, _, stderr) = slots(&["drop", d, "keep"]);
    assert!(!ok && stderr.contains("no slot named \"keep\""), "{stderr}");
}

#[test]
fn logging_is_plain_off_a_terminal_and_a_bad_filter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let (ok, _, stderr) = output(astha().args([
        "-v",
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "my items",
        "--install",
        "--limit",
        "0",
    ]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("astha started"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a pipe: {stderr:?}"
    );
    let out = astha()
        .env("ASTHA_LOG", "astha_actors=loud")
        .args(["status", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ASTHA_LOG=\"astha_actors=loud\" is not a log filter"),
        "{stderr}"
    );
}

#[test]
fn a_misspelt_security_variable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let out = astha()
        .env("ASTHA_HTTP_TOKN", "secret")
        .args(["status", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean ASTHA_HTTP_TOKEN"), "{stderr}");
}

#[test]
fn the_http_live_view_leaves_no_slot_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let (ok, _, stderr) = output(astha().args([
        "watch",
        db.to_str().unwrap(),
        "--tables",
        "my items",
        "--install",
        "--http",
        "127.0.0.1:0",
        "--limit",
        "0",
    ]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("serving /metrics"), "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let slots: Vec<String> = conn
        .prepare("SELECT name FROM __astha_slots")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(slots.is_empty(), "slots left behind: {slots:?}");
}

#[test]
fn views_and_tables_without_a_key_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE VIEW cheap AS SELECT * FROM \"my items\" WHERE price < 2;
         CREATE TABLE notes (body TEXT);",
    )
    .unwrap();
    let d = db.to_str().unwrap();
    let (ok, _, stderr) = output(astha().args(["watch", d, "--tables", "cheap", "--install"]));
    assert!(!ok && stderr.contains("\"cheap\" is a view"), "{stderr}");
    let (ok, _, stderr) = output(astha().args(["watch", d, "--tables", "nope", "--install"]));
    assert!(
        !ok && stderr.contains("no table named \"nope\""),
        "{stderr}"
    );
    let (ok, _, stderr) =
        output(astha().args(["watch", d, "--tables", "notes", "--install", "--limit", "0"]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("\"notes\" has no primary key"), "{stderr}");
}

/// Runs `watch` with stdout on `/dev/full` (every write fails: no space left) while a
/// writer commits: it must exit non-zero and say why, not exit 0 as if all were printed.
#[test]
fn watch_exits_non_zero_when_its_output_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let mut child = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
            "--slot",
            "keep",
        ])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.starts_with("watching") {
        line.clear();
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("INSERT INTO \"my items\" VALUES (1, 'pen', 1.5)", [])
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "exit 0 although nothing could be printed: {rest}"
    );
    assert!(
        rest.contains("stdout") && rest.contains("No space left"),
        "{rest}"
    );
    // The change was not printed, so the durable slot did not move past it.
    let position: i64 = conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'keep'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(position, 0);
}

/// A database on a full file system (a small tmpfs, mounted when the test may: it needs
/// root): the error says the disk is full, not "disk I/O error".
#[test]
fn a_full_disk_at_start_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let db = make_db(&mount);
    // Fill the file system, then free a page at a time: with a few pages free SQLite
    // gets part way (-wal and -shm made, then a write fails), and said "disk I/O error".
    let filler = mount.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 64 * 1024]);
    let filled = std::fs::metadata(&filler).unwrap().len();
    let mut messages = Vec::new();
    for freed in 0..5u64 {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap();
        file.set_len(filled.saturating_sub(freed * 4096)).unwrap();
        drop(file);
        let _ = std::fs::remove_file(mount.join("shop.db-wal"));
        let _ = std::fs::remove_file(mount.join("shop.db-shm"));
        let (ok, _, err) = output(astha().args([
            "watch",
            db.to_str().unwrap(),
            "--tables",
            "my items",
            "--install",
            "--limit",
            "0",
        ]));
        if !ok {
            messages.push(err);
        }
    }
    assert!(!messages.is_empty(), "the disk never was full");
    for err in &messages {
        assert!(err.contains("is full"), "{messages:#?}");
        assert!(!err.contains("disk I/O error"), "{messages:#?}");
    }
}

/// Every message id carries the log's epoch: `<database identity>:<epoch>:<lsn>`, so an
/// LSN handed out again after a restarted sequence (a restore, a rolled-back WAL) never
/// looks like a duplicate of the change that had it before.
#[test]
fn message_ids_carry_the_log_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let ids = |db: &Path| -> (String, String) {
        let child = watching(db, &["--format", "cloudevents", "--limit", "1"]);
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute("INSERT INTO \"my items\" (name) VALUES ('pen')", [])
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let event: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let lsn = event["asthalsn"].as_str().unwrap().to_string();
        (event["id"].as_str().unwrap().to_string(), lsn)
    };
    let state = |db: &Path| -> (String, String) {
        let conn = rusqlite::Connection::open(db).unwrap();
        let identity = conn
            .query_row(
                "SELECT value FROM __astha_meta WHERE key = 'database_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let epoch = conn
            .query_row("SELECT epoch FROM __astha_log_state", [], |r| r.get(0))
            .unwrap();
        (identity, epoch)
    };
    let (id, lsn) = ids(&db);
    let (identity, epoch) = state(&db);
    assert_eq!(id, format!("{identity}:{epoch}:{lsn}"));
    // A new epoch (as after a detected restart) gives new ids.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE __astha_log_state SET epoch = 'e2'", [])
        .unwrap();
    let (id, lsn) = ids(&db);
    assert_eq!(id, format!("{identity}:e2:{lsn}"));
    // `astha status` shows the epoch and the mark.
    let (ok, stdout, _) =
        output(astha().args(["status", db.to_str().unwrap(), "--format", "json"]));
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["sequence"]["epoch"], "e2");
    assert!(status["sequence"]["high_water"].as_i64().unwrap() >= 1);
}

/// `astha alter`: a table rebuilt (and a column dropped that the triggers name, which
/// SQLite refuses outside it) in one transaction that re-installs capture; writes after
/// it are captured with the new columns and nothing is marked incomplete.
#[test]
fn alter_changes_the_schema_without_an_uncaptured_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let conn = astha_core::db::open(&db).unwrap();
    let capture = astha_core::capture::Capture::new("__cdc_log");
    capture.install(&conn, "my items").unwrap();
    conn.execute("INSERT INTO \"my items\" (name) VALUES ('x')", [])
        .unwrap();
    let (ok, stdout, stderr) = output(astha().args([
        "alter",
        "--db",
        db.to_str().unwrap(),
        "ALTER TABLE \"my items\" ADD COLUMN extra TEXT; \
         ALTER TABLE \"my items\" DROP COLUMN name;",
    ]));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("capture of my items re-installed"),
        "{stdout}"
    );
    conn.execute("INSERT INTO \"my items\" (extra) VALUES ('e')", [])
        .unwrap();
    let mut reader = astha_core::log::LogReader::new("__cdc_log");
    let batch = reader
        .read(&conn, 0, astha_core::log::BatchLimits::default(), None)
        .unwrap();
    assert_eq!(batch.changes.len(), 2);
    assert!(batch.changes.iter().all(|c| c.incomplete.is_none()));
    let last = batch.changes[1].row().unwrap();
    assert_eq!(last.columns(), ["id", "price", "extra"]);
    let (ok, _, stderr) = output(astha().args([
        "alter",
        "--db",
        db.to_str().unwrap(),
        "ALTER TABLE nope ADD COLUMN x",
    ]));
    assert!(!ok && stderr.contains("nope"), "{stderr}");
}
