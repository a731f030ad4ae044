//! Pipelines end to end on rows written by real triggers: a file sink receives every
//! change of the selected tables in commit order, excluded columns never appear, row
//! filters drop exactly what they should, several databases feed one sink, and a
//! pipeline that cannot run is refused at check time with a message naming the fix.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection;
use serde_json::Value;

fn make_shop(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, secret TEXT, amount REAL);
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, secret TEXT);
         CREATE TABLE audit_tmp (id INTEGER PRIMARY KEY, note TEXT);
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;",
    )
    .unwrap();
}

fn spec(text: &str, dir: &Path) -> PipelineSpec {
    let dir = dir.display().to_string();
    PipelineSpec::parse(&text.replace("$DIR", &dir), |_| None).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = lines(path);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn engine() -> AsthaConfig {
    AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap()
}

#[actix_rt::test]
async fn a_file_sink_gets_every_selected_change_shaped_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    make_shop(&db);
    let spec = spec(
        r#"
        [defaults]
        exclude_columns = ["secret"]
        [[sources]]
        database = "$DIR/shop.db"
        tables = ["orders", "users", "audit_*"]
        exclude_tables = ["*_tmp"]
        install = true
        [sources.table.orders]
        filter = "amount >= 10"
        [[sinks]]
        name = "all"
        type = "file"
        path = "$DIR/out/{source}.jsonl"
        "#,
        dir.path(),
    );
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    assert_eq!(checked.sources[0].tables, ["orders", "users"]);
    let running = checked.start(&engine()).await.unwrap();

    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO orders VALUES (1, 'ann', 'pw1', 5);      -- filtered out
         INSERT INTO orders VALUES (2, 'bob', 'pw2', 50);
         INSERT INTO users VALUES (1, 'ann', 'hidden');
         UPDATE orders SET amount = 1 WHERE id = 2;           -- leaves the filter: passed on
         UPDATE orders SET amount = 2 WHERE id = 2;           -- outside before and after
         INSERT INTO audit_tmp VALUES (1, 'not selected');
         DELETE FROM orders WHERE id = 1;                     -- outside: dropped
         INSERT INTO orders VALUES (3, 'cy', 'pw3', 10);",
    )
    .unwrap();

    let out = dir.path().join("out/shop.jsonl");
    let got = wait_for_lines(&out, 4).await;
    // Let anything wrongly passed arrive before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = lines(&out);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(got_after.len(), 4, "{got_after:#?}");
    let summary: Vec<(String, String, i64)> = got
        .iter()
        .map(|c| {
            let row = c["after"].as_object().or(c["before"].as_object()).unwrap();
            (
                c["table"].as_str().unwrap().to_string(),
                c["op"].as_str().unwrap().to_string(),
                row["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("orders".into(), "INSERT".into(), 2),
            ("users".into(), "INSERT".into(), 1),
            ("orders".into(), "UPDATE".into(), 2),
            ("orders".into(), "INSERT".into(), 3),
        ]
    );
    let lsns: Vec<i64> = got.iter().map(|c| c["lsn"].as_i64().unwrap()).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "commit order: {lsns:?}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("secret") && !text.contains("pw2") && !text.contains("hidden"));
    assert_eq!(got[0]["after"]["amount"], 50.0);

    let summary = running.summary();
    let all = summary.iter().find(|s| s.sink == "all").unwrap();
    assert_eq!(all.filtered, 3, "{summary:?}");
    running.stop().await.unwrap();

    // The sink's slot is durable: it is in the database after the stop, at the last LSN.
    let slot: i64 = conn
        .query_row(
            "SELECT position FROM __astha_slots WHERE name = 'all'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(slot >= *lsns.last().unwrap());
}

#[actix_rt::test]
async fn two_databases_feed_one_sink_one_file_each() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["east", "west"] {
        make_shop(&dir.path().join(format!("{name}.db")));
    }
    let spec = spec(
        r#"
        [defaults]
        install = true
        [[sources]]
        database = "$DIR/east.db"
        tables = ["orders"]
        [[sources]]
        name = "w"
        database = "$DIR/west.db"
        tables = ["orders", "users"]
        [[sinks]]
        name = "mirror"
        type = "file"
        path = "$DIR/{source}.jsonl"
        tables = ["orders"]
        "#,
        dir.path(),
    );
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine()).unwrap();
    let running = checked.start(&engine()).await.unwrap();
    for (name, n) in [("east", 3), ("west", 5)] {
        let conn = Connection::open(dir.path().join(format!("{name}.db"))).unwrap();
        for i in 0..n {
            conn.execute(
                "INSERT INTO orders (id, customer, amount) VALUES (?1, ?2, 1.5)",
                rusqlite::params![i, name],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO users VALUES (1, 'x', 'y')", [])
            .unwrap();
    }
    let east = wait_for_lines(&dir.path().join("east.jsonl"), 3).await;
    let west = wait_for_lines(&dir.path().join("w.jsonl"), 5).await;
    running.stop().await.unwrap();
    assert_eq!(east.len(), 3);
    assert_eq!(west.len(), 5);
    assert!(east.iter().all(|c| c["after"]["customer"] == "east"));
    assert!(west
        .iter()
        .all(|c| c["table"] == "orders" && c["after"]["customer"] == "west"));
}

fn check_error(dir: &Path, text: &str) -> String {
    let spec = spec(text, dir);
    plan(&spec, &SinkRegistry::builtin(), &engine())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_pipeline_that_cannot_run_is_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("shop.db");
    make_shop(&db);
    let source = "[[sources]]\ndatabase = \"$DIR/shop.db\"\ninstall = true\n";
    let sink = "[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n";
    let cases: &[(&str, &str)] = &[
        ("tables = [\"big_orders\"]\n", "is a view"),
        ("tables = [\"ordrs\"]\n", "no table named \"ordrs\""),
        ("tables = [\"ord*x\"]\n", "matches no table"),
        (
            "tables = [\"orders\"]\n[sources.table.orders]\nexclude_columns = [\"id\"]\n",
            "part of the primary key",
        ),
        (
            "tables = [\"orders\"]\n[sources.table.orders]\nexclude_columns = [\"scret\"]\n",
            "does not have",
        ),
        (
            "tables = [\"orders\"]\n[sources.table.orders]\nfilter = \"amont > 1\"\n",
            "no such column: amont",
        ),
        (
            "tables = [\"orders\"]\nformat = \"avro\"\n",
            "unknown format \"avro\"",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("{source}{extra}{sink}");
        let err = check_error(dir.path(), &text);
        assert!(err.contains(expected), "{text}\n=> {err}");
    }
    let err = check_error(
        dir.path(),
        "[[sources]]\ndatabase = \"$DIR/shop.db\"\ntables = [\"orders\"]\n[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n",
    );
    assert!(err.contains("set `install = true`"), "{err}");
    let err = check_error(
        dir.path(),
        &format!("{source}[[sinks]]\nname = \"o\"\ntype = \"kafak\"\n"),
    );
    assert!(err.contains("unknown sink type \"kafak\""), "{err}");
    let err = check_error(
        dir.path(),
        &format!("{source}[[sinks]]\nname = \"o\"\ntype = \"stdout\"\nsources = [\"nope\"]\n"),
    );
    assert!(
        err.contains("source \"nope\", which is not defined"),
        "{err}"
    );
    let err = check_error(dir.path(), &format!("{source}{sink}{sink}"));
    assert!(err.contains("two sinks are named \"o\""), "{err}");

    // A check never writes: no trigger was installed by any of the above.
    let conn = Connection::open(&db).unwrap();
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    // A missing database is not created by a check.
    let err = check_error(
        dir.path(),
        "[[sources]]\ndatabase = \"$DIR/none.db\"\n[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n",
    );
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dir.path().join("none.db").exists());
}

#[actix_rt::test]
async fn each_sink_writes_its_own_format() {
    let dir = tempfile::tempdir().unwrap();
    make_shop(&dir.path().join("shop.db"));
    let spec = spec(
        r#"
        [defaults]
        format = "debezium"
        [[sources]]
        database = "$DIR/shop.db"
        tables = ["orders"]
        install = true
        [[sinks]]
        name = "dbz"
        type = "file"
        path = "$DIR/dbz.jsonl"
        [[sinks]]
        name = "ce"
        type = "file"
        format = "cloudevents"
        path = "$DIR/ce.jsonl"
        "#,
        dir.path(),
    );
    let running = plan(&spec, &SinkRegistry::builtin(), &engine())
        .unwrap()
        .start(&engine())
        .await
        .unwrap();
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO orders VALUES (1, 'ann', x'0102', 2.5);
         UPDATE orders SET amount = 3 WHERE id = 1;
         DELETE FROM orders;",
    )
    .unwrap();
    let dbz = wait_for_lines(&dir.path().join("dbz.jsonl"), 3).await;
    let ce = wait_for_lines(&dir.path().join("ce.jsonl"), 3).await;
    running.stop().await.unwrap();
    let ops: Vec<&str> = dbz.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "u", "d"]);
    assert_eq!(dbz[0]["source"]["name"], "shop");
    assert_eq!(dbz[0]["source"]["table"], "orders");
    assert_eq!(dbz[0]["after"]["secret"], "AQI=", "a BLOB is base64");
    assert_eq!(dbz[1]["before"]["amount"], 2.5);
    let types: Vec<&str> = ce.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "io.astha.change.insert",
            "io.astha.change.update",
            "io.astha.change.delete"
        ]
    );
    assert_eq!(ce[0]["data"]["after"]["customer"], "ann");
    let lsn = ce[0]["data"]["lsn"].as_i64().unwrap();
    assert!(ce[0]["id"].as_str().unwrap().ends_with(&format!(":{lsn}")));
}

/// A sink whose build fails after an earlier sink of the same source started: the start
/// returns the error and stops that source's engine, so nothing it started lives on. The
/// first sink's file claim is the witness: a leaked engine would keep its file sink, and
/// the same pipeline could not start again in this process.
#[actix_rt::test]
async fn a_sink_that_fails_to_build_stops_the_engine_started_for_it() {
    let dir = tempfile::tempdir().unwrap();
    make_shop(&dir.path().join("busy.db"));
    make_shop(&dir.path().join("shop.db"));
    let holder = spec(
        r#"
        [[sources]]
        database = "$DIR/busy.db"
        tables = ["orders"]
        install = true
        [[sinks]]
        name = "holder"
        type = "file"
        path = "$DIR/taken.jsonl"
        "#,
        dir.path(),
    );
    let holder = plan(&holder, &SinkRegistry::builtin(), &engine())
        .unwrap()
        .start(&engine())
        .await
        .unwrap();
    let two_sinks = r#"
        [[sources]]
        database = "$DIR/shop.db"
        tables = ["orders"]
        install = true
        [[sinks]]
        name = "first"
        type = "file"
        path = "$DIR/first.jsonl"
        [[sinks]]
        name = "second"
        type = "file"
        path = "$DIR/taken.jsonl"
        "#;
    let failing = plan(
        &spec(two_sinks, dir.path()),
        &SinkRegistry::builtin(),
        &engine(),
    )
    .unwrap();
    let error = failing
        .start(&engine())
        .await
        .err()
        .expect("second sink cannot build");
    assert!(error.to_string().contains("taken.jsonl"), "{error}");
    holder.stop().await.unwrap();

    let again = plan(
        &spec(two_sinks, dir.path()),
        &SinkRegistry::builtin(),
        &engine(),
    )
    .unwrap()
    .start(&engine())
    .await
    .expect("nothing of the failed start holds the first sink's file");
    let conn = Connection::open(dir.path().join("shop.db")).unwrap();
    for i in 0..4 {
        conn.execute(
            "INSERT INTO orders (id, customer, amount) VALUES (?1, 'c', 2.0)",
            [i],
        )
        .unwrap();
    }
    let first = wait_for_lines(&dir.path().join("first.jsonl"), 4).await;
    let second = wait_for_lines(&dir.path().join("taken.jsonl"), 4).await;
    again.stop().await.unwrap();
    let ids = |lines: &[Value]| -> Vec<i64> {
        lines
            .iter()
            .map(|c| c["after"]["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&first), [0, 1, 2, 3], "each change once, none twice");
    assert_eq!(ids(&second), [0, 1, 2, 3]);
}
