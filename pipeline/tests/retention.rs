//! Retention per source: `keep_for` / `keep_rows` cascade from [defaults] to a source,
//! are refused on a table, and a running pipeline keeps the newest rows of its log
//! after its sink passed them.

use std::path::Path;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::Connection;

fn make_shop(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL);",
    )
    .unwrap();
}

fn spec(text: &str, dir: &Path) -> PipelineSpec {
    let dir = dir.display().to_string();
    PipelineSpec::parse(&text.replace("$DIR", &dir), |_| None).unwrap()
}

fn engine() -> AsthaConfig {
    let mut config = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    config.cleanup_interval = Duration::from_millis(50);
    config
}

#[test]
fn retention_cascades_to_the_source_and_is_refused_on_a_table() {
    let dir = tempfile::tempdir().unwrap();
    make_shop(&dir.path().join("shop.db"));
    let text = "[defaults]\nkeep_for = \"2h\"\n[[sources]]\ndatabase = \"$DIR/shop.db\"\n\
                install = true\nkeep_rows = 9\n[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n";
    let checked = plan(&spec(text, dir.path()), &SinkRegistry::builtin(), &engine()).unwrap();
    assert_eq!(checked.sources[0].keep_for, Some(Duration::from_secs(7200)));
    assert_eq!(checked.sources[0].keep_rows, Some(9));
    let bad = text.replace("keep_for = \"2h\"", "keep_for = \"2 days\"");
    let err = plan(&spec(&bad, dir.path()), &SinkRegistry::builtin(), &engine()).unwrap_err();
    assert!(
        err.to_string().contains("keep_for: invalid duration"),
        "{err}"
    );
    let on_table = format!("{text}[sources.table.orders]\nkeep_rows = 1\n")
        .replace("[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n", "")
        + "[[sinks]]\nname = \"o\"\ntype = \"stdout\"\n";
    let err = plan(
        &spec(&on_table, dir.path()),
        &SinkRegistry::builtin(),
        &engine(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("the source's log's retention"),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_running_source_keeps_the_newest_rows_its_sink_passed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    make_shop(&db);
    let text = "[[sources]]\ndatabase = \"$DIR/shop.db\"\ninstall = true\nkeep_rows = 5\n\
                [[sinks]]\nname = \"out\"\ntype = \"file\"\npath = \"$DIR/out.jsonl\"\n";
    let checked = plan(&spec(text, dir.path()), &SinkRegistry::builtin(), &engine()).unwrap();
    let running = checked.start(&engine()).await.unwrap();
    let conn = Connection::open(&db).unwrap();
    for i in 0..20 {
        conn.execute("INSERT INTO orders VALUES (?1, 1.5)", [i])
            .unwrap();
    }
    let oldest = || -> i64 {
        conn.query_row("SELECT min(id) FROM __cdc_log", [], |r| r.get(0))
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while oldest() < 16 {
        assert!(
            Instant::now() < deadline,
            "the log was not cleaned to its newest 5 rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oldest(), 16, "keep_rows = 5 keeps LSNs 16..=20");
    running.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_new_sink_starts_at_a_retained_point_and_a_bad_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    make_shop(&db);
    let conn = Connection::open(&db).unwrap();
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "orders")
        .unwrap();
    for i in 0..10 {
        conn.execute("INSERT INTO orders VALUES (?1, 1.5)", [i])
            .unwrap();
    }
    let sink = |extra: &str| {
        format!(
            "[[sources]]\ndatabase = \"$DIR/shop.db\"\n[[sinks]]\nname = \"late\"\n\
             type = \"file\"\npath = \"$DIR/late.jsonl\"\n{extra}"
        )
    };
    for (extra, expected) in [
        ("start_at = \"lsn\"\n", "lsn:N or time:"),
        (
            "start_at = \"lsn:4\"\nsnapshot = \"initial\"\n",
            "`start_at` with `snapshot",
        ),
    ] {
        let err = plan(
            &spec(&sink(extra), dir.path()),
            &SinkRegistry::builtin(),
            &engine(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(expected), "{extra}: {err}");
    }
    let checked = plan(
        &spec(&sink("start_at = \"lsn:4\"\n"), dir.path()),
        &SinkRegistry::builtin(),
        &engine(),
    )
    .unwrap();
    let running = checked.start(&engine()).await.unwrap();
    let out = dir.path().join("late.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lsns = loop {
        let lsns: Vec<i64> = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["lsn"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        if lsns.len() >= 7 || Instant::now() > deadline {
            break lsns;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    running.stop().await.unwrap();
    assert_eq!(lsns, (4..=10).collect::<Vec<i64>>());
}
