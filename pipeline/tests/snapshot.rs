//! A sink with `snapshot = "initial"` in `astha run`: the table's rows first, then every
//! change after them, with writers busy throughout; a second start of the same pipeline
//! (its slot kept) takes no second snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection;
use serde_json::Value;

fn engine() -> AsthaConfig {
    AsthaConfig::load_from(None, [("ASTHA_BATCH_SIZE".to_string(), "50".to_string())]).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn table(db: &Path) -> BTreeMap<i64, i64> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, v FROM t").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows
}

/// Applies native events to a mirror, refusing what a gap or a duplicate would produce.
fn rebuild(events: &[Value]) -> BTreeMap<i64, i64> {
    let mut mirror = BTreeMap::new();
    let mut snapshot_lsn = None;
    for event in events {
        let row = |image: &str| {
            (
                event[image]["id"].as_i64().unwrap(),
                event[image]["v"].as_i64().unwrap(),
            )
        };
        let lsn = event["lsn"].as_i64().unwrap();
        match event["op"].as_str().unwrap() {
            "READ" => {
                assert!(snapshot_lsn.is_none_or(|s| s == lsn));
                snapshot_lsn = Some(lsn);
                let (id, v) = row("after");
                assert!(mirror.insert(id, v).is_none(), "read twice: {event}");
            }
            op => {
                let from = snapshot_lsn.expect("the snapshot comes first");
                assert!(lsn > from, "{lsn} is already in the snapshot at {from}");
                match op {
                    "INSERT" => {
                        let (id, v) = row("after");
                        assert!(mirror.insert(id, v).is_none(), "duplicate: {event}");
                    }
                    "UPDATE" => {
                        let (id, v) = row("after");
                        assert!(mirror.insert(id, v).is_some(), "gap: {event}");
                    }
                    "DELETE" => {
                        let (id, _) = row("before");
                        assert!(mirror.remove(&id).is_some(), "gap: {event}");
                    }
                    other => panic!("unexpected op {other}"),
                }
            }
        }
    }
    mirror
}

#[actix_rt::test]
async fn a_sink_with_an_initial_snapshot_rebuilds_the_table_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t (id, v) SELECT i, i FROM n;",
    )
    .unwrap();
    astha_core::capture::Capture::new("__cdc_log")
        .ensure_log(&conn)
        .unwrap();
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "t")
        .unwrap();
    drop(conn);
    let text = format!(
        r#"
        [defaults]
        snapshot = "initial"
        [[sources]]
        database = "{db}"
        [[sinks]]
        name = "mirror"
        type = "file"
        path = "{out}"
        "#,
        db = db.display(),
        out = dir.path().join("out.jsonl").display()
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    assert_eq!(
        checked.sources[0].sinks[0].snapshot,
        astha_core::snapshot::SnapshotMode::Initial
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writes = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sql = match n % 3 {
                    0 => "INSERT INTO t (v) VALUES (abs(random()) % 1000)",
                    1 => "UPDATE t SET v = v + 1 WHERE id = (SELECT id FROM t ORDER BY random() LIMIT 1)",
                    _ => "DELETE FROM t WHERE id = (SELECT id FROM t ORDER BY random() LIMIT 1)",
                };
                conn.execute(sql, []).unwrap();
                n += 1;
                if n.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            conn.execute("INSERT INTO t (id, v) VALUES (-1, 0)", [])
                .unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = checked.start(&engine()).await.unwrap();
    let out = dir.path().join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = lines(&out);
        let changes = events.iter().filter(|e| e["op"] != "READ").count();
        if changes >= 300 || Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
        }
        if events
            .iter()
            .any(|e| e["op"] == "INSERT" && e["after"]["id"] == -1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writes.join().unwrap();
    let engine_stats = running.engine(running.sources()[0]).unwrap();
    let progress = engine_stats
        .component_info("mirror")
        .unwrap()
        .snapshot
        .unwrap();
    assert!(progress.finished && progress.done == progress.total && progress.total >= 2900);
    running.stop().await.unwrap();
    let events = lines(&out);
    assert_eq!(rebuild(&events), table(&db), "the mirror is the table");
    let reads = events.iter().filter(|e| e["op"] == "READ").count();

    // Started again, the sink resumes from its slot: no second snapshot.
    let conn = Connection::open(&db).unwrap();
    conn.execute("UPDATE t SET v = 7 WHERE id = -1", [])
        .unwrap();
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    let running = checked.start(&engine()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines(&out).len() <= events.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    let again = lines(&out);
    assert_eq!(again.len(), events.len() + 1, "only the new change");
    assert_eq!(again.iter().filter(|e| e["op"] == "READ").count(), reads);
    assert_eq!(rebuild(&again), table(&db));
    let state: String = conn
        .query_row(
            "SELECT state FROM __astha_snapshots WHERE consumer = 'mirror'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "done");
}

#[test]
fn snapshot_modes_are_checked_and_belong_to_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
        .unwrap();
    let check = |extra_source: &str, extra_sink: &str| {
        let text = format!(
            "[[sources]]\ndatabase = \"{}\"\ninstall = true\n{extra_source}\n[[sinks]]\nname = \"s\"\ntype = \"stdout\"\n{extra_sink}\n",
            db.display()
        );
        let spec = PipelineSpec::parse(&text, |_| None).unwrap();
        plan(&spec, &SinkRegistry::builtin(), &engine()).map(|p| p.sources[0].sinks[0].snapshot)
    };
    use astha_core::snapshot::SnapshotMode;
    assert_eq!(check("", "").unwrap(), SnapshotMode::Never);
    assert_eq!(
        check("snapshot = \"when_needed\"", "").unwrap(),
        SnapshotMode::WhenNeeded
    );
    assert_eq!(
        check("snapshot = \"when_needed\"", "snapshot = \"initial_only\"").unwrap(),
        SnapshotMode::InitialOnly
    );
    let err = check("", "snapshot = \"always\"").unwrap_err().to_string();
    assert!(err.contains("when_needed"), "{err}");
    let err = check("[sources.table.t]\nsnapshot = \"initial\"", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a sink's"), "{err}");
    // `debezium_schemas` cascades the same way, into the sink's encoder.
    let text = format!(
        "[defaults]\ndebezium_schemas = true\nformat = \"debezium\"\n[[sources]]\ndatabase = \"{}\"\ninstall = true\n\
         [[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[[sinks]]\nname = \"b\"\ntype = \"stdout\"\ndebezium_schemas = false\n",
        db.display()
    );
    let planned = plan(
        &PipelineSpec::parse(&text, |_| None).unwrap(),
        &SinkRegistry::builtin(),
        &engine(),
    )
    .unwrap();
    let sinks = &planned.sources[0].sinks;
    assert!(sinks[0].context.debezium_schemas && !sinks[1].context.debezium_schemas);
}

/// Applies native events of tables `t` and `u` to a mirror keyed by (table, id). A
/// snapshot of a table (its first READ at a new LSN) replaces that table's rows; after
/// it, a change of that table at or before the snapshot's LSN is a duplicate.
fn rebuild_with_resnapshots(events: &[Value]) -> (BTreeMap<(String, i64), i64>, usize) {
    let mut mirror = BTreeMap::new();
    let mut snapshot_at: BTreeMap<String, i64> = BTreeMap::new();
    let mut snapshots = 0;
    for event in events {
        let table = event["table"].as_str().unwrap().to_string();
        let row = |image: &str| {
            (
                (table.clone(), event[image]["id"].as_i64().unwrap()),
                event[image]["v"].as_i64().unwrap(),
            )
        };
        let lsn = event["lsn"].as_i64().unwrap();
        if event["op"] == "READ" {
            if snapshot_at.get(&table) != Some(&lsn) {
                snapshots += 1;
                snapshot_at.insert(table.clone(), lsn);
                mirror.retain(|(t, _), _| *t != table);
            }
            let (key, v) = row("after");
            assert!(mirror.insert(key, v).is_none(), "read twice: {event}");
            continue;
        }
        let from = snapshot_at.get(&table).copied().unwrap_or(0);
        assert!(lsn > from, "{event} is already in the snapshot at {from}");
        match event["op"].as_str().unwrap() {
            "INSERT" => {
                let (key, v) = row("after");
                assert!(mirror.insert(key, v).is_none(), "duplicate: {event}");
            }
            "UPDATE" => {
                let (key, v) = row("after");
                assert!(mirror.insert(key, v).is_some(), "gap: {event}");
            }
            "DELETE" => {
                let (key, _) = row("before");
                assert!(mirror.remove(&key).is_some(), "gap: {event}");
            }
            other => panic!("unexpected op {other}"),
        }
    }
    (mirror, snapshots)
}

#[actix_rt::test]
async fn a_signal_snapshots_a_table_again_for_a_running_sink_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         CREATE TABLE u (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t (id, v) SELECT i, i FROM n;
         INSERT INTO u (id, v) SELECT id, v FROM t;",
    )
    .unwrap();
    drop(conn);
    let out = dir.path().join("out.jsonl");
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ninstall = true\n[[sinks]]\nname = \"mirror\"\ntype = \"file\"\n\
         snapshot = \"initial\"\npath = \"{}\"\n",
        db.display(),
        out.display()
    );
    let spec = PipelineSpec::parse(&text, |_| None).unwrap();
    let running = plan(&spec, &SinkRegistry::builtin(), &engine())
        .unwrap()
        .start(&engine())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let table = if n.is_multiple_of(2) { "t" } else { "u" };
                let sql = match (n / 2) % 3 {
                    0 => format!("INSERT INTO {table} (v) VALUES (abs(random()) % 1000)"),
                    1 => format!("UPDATE {table} SET v = v + 1 WHERE id = (SELECT id FROM {table} ORDER BY random() LIMIT 1)"),
                    _ => format!("DELETE FROM {table} WHERE id = (SELECT id FROM {table} ORDER BY random() LIMIT 1)"),
                };
                conn.execute(&sql, []).unwrap();
                n += 1;
                if n.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            conn.execute("INSERT INTO u (id, v) VALUES (-1, 0)", [])
                .unwrap();
        })
    };
    let engine_of = |running: &astha_pipeline::Running| {
        running
            .engine("app")
            .unwrap()
            .component_info("mirror")
            .unwrap()
            .snapshot
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine_of(&running).finished {
        assert!(Instant::now() < deadline, "initial snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The writers hold the write lock often: wait for it, as an application would.
    let signal = Connection::open(&db).unwrap();
    signal.busy_timeout(Duration::from_secs(10)).unwrap();
    signal
        .execute(
            "INSERT INTO __astha_signals (type, data) VALUES ('execute-snapshot', '{\"data-collections\": [\"t\"]}')",
            [],
        )
        .unwrap();
    // The second snapshot is of t alone, and is visible as progress.
    while engine_of(&running).tables != ["t"] || !engine_of(&running).finished {
        assert!(Instant::now() < deadline, "signalled snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writes.join().unwrap();
    while !lines(&out)
        .iter()
        .any(|e| e["op"] == "INSERT" && e["after"]["id"] == -1)
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "the last write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    let (mirror, snapshots) = rebuild_with_resnapshots(&lines(&out));
    assert_eq!(snapshots, 3, "t and u at start, t again on the signal");
    let mut want = BTreeMap::new();
    for table in ["t", "u"] {
        let conn = Connection::open(&db).unwrap();
        let mut stmt = conn.prepare(&format!("SELECT id, v FROM {table}")).unwrap();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
        {
            let (id, v) = row.unwrap();
            want.insert((table.to_string(), id), v);
        }
    }
    assert_eq!(mirror, want, "the mirror is both tables");
    let record: (String, String) = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT reason, state FROM __astha_snapshots WHERE consumer = 'mirror'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(record, ("signal".to_string(), "done".to_string()));
}
