//! Transaction markers through the `astha` binary, on rows written by real triggers:
//! transactions marked by `astha_core::transaction::Writer` and by the SQL convention get
//! BEGIN and END around exactly their changes (`watch --transaction-events` in every
//! format, a file sink with `transaction_events = true`), unmarked ones get none, a
//! consumer of some tables gets markers and counts for its part, and a stop or a kill -9
//! between BEGIN and END leaves a stream a consumer can still read exactly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use astha_core::transaction::Writer;
use rusqlite::Connection;
use serde_json::{json, Value};

const LOG: &str = "__cdc_log";

fn astha() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_astha"));
    cmd.env_remove("ASTHA_CONFIG").env_remove("ASTHA_LOG");
    cmd
}

fn make_db(dir: &Path) -> PathBuf {
    let path = dir.join("shop.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER);
             CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT);",
        )
        .unwrap();
    path
}

/// Starts `astha watch <db> --install --transaction-events <extra>` and returns once it
/// watches (its slot exists).
fn watching(db: &Path, extra: &[&str]) -> Child {
    let mut child = astha()
        .args([
            "watch",
            db.to_str().unwrap(),
            "--install",
            "--transaction-events",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        if line.unwrap().starts_with("watching") {
            break;
        }
    }
    // Keep reading: a watcher whose stderr is closed cannot log its retries.
    std::thread::spawn(move || stderr.for_each(drop));
    child
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The writes every test makes: an unmarked change, a transaction marked by `Writer`
/// over both tables (orders, items, items, orders), one marked by the SQL convention from
/// a plain connection (items only), and an unmarked multi-row transaction. 8 changes.
fn write_all(db: &Path) {
    let plain = Connection::open(db).unwrap();
    plain
        .execute("INSERT INTO orders VALUES (1, 10)", [])
        .unwrap();
    let mut writer = Writer::new(astha_core::db::open_writer(db).unwrap(), LOG).unwrap();
    writer
        .transaction(|conn| {
            conn.execute_batch(
                "INSERT INTO orders VALUES (2, 20);
                 INSERT INTO items VALUES (1, 2, 'pen');
                 INSERT INTO items VALUES (2, 2, 'ink');
                 UPDATE orders SET amount = 25 WHERE id = 2;",
            )?;
            Ok(())
        })
        .unwrap();
    plain
        .execute_batch(
            "PRAGMA foreign_keys = ON;
             BEGIN;
             INSERT INTO __astha_tx DEFAULT VALUES;
             DELETE FROM items WHERE id = 1;
             DELETE FROM __astha_tx;
             COMMIT;",
        )
        .unwrap();
    plain
        .execute_batch(
            "BEGIN; INSERT INTO orders VALUES (3, 30); INSERT INTO items VALUES (3, 3, 'cap'); COMMIT;",
        )
        .unwrap();
}

/// Checks a consumer's stream of Debezium-shaped lines (markers have `status`, changes
/// carry `transaction`): every marked transaction is BEGIN, exactly its changes, END
/// with counts equal to what came between; an unmarked change stands outside any.
fn check_bracketing(lines: &[Value], id_of: impl Fn(&Value) -> Option<String>) {
    let mut open: Option<(String, Vec<Value>)> = None;
    for line in lines {
        match line["status"].as_str() {
            Some("BEGIN") => {
                assert!(open.is_none(), "BEGIN inside a transaction: {line}");
                assert_eq!(line["event_count"], Value::Null);
                open = Some((line["id"].as_str().unwrap().to_string(), Vec::new()));
            }
            Some("END") => {
                let (id, changes) = open.take().expect("END without BEGIN");
                assert_eq!(line["id"], json!(id));
                assert_eq!(line["event_count"], json!(changes.len()), "{line}");
                let listed: u64 = line["data_collections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["event_count"].as_u64().unwrap())
                    .sum();
                assert_eq!(listed, changes.len() as u64);
            }
            _ => match (&mut open, id_of(line)) {
                (Some((id, changes)), Some(tx)) => {
                    assert_eq!(&tx, id, "a change of another transaction: {line}");
                    changes.push(line.clone());
                }
                (None, None) => {}
                (open, tx) => panic!("change {line} (transaction {tx:?}) in {open:?}"),
            },
        }
    }
    assert!(open.is_none(), "a transaction never ended");
}

#[test]
fn watch_brackets_marked_transactions_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let child = watching(
        &db,
        &[
            "--tables",
            "orders,items",
            "--format",
            "debezium",
            "--limit",
            "8",
        ],
    );
    write_all(&db);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got = lines(&out.stdout);
    let shape: Vec<String> = got
        .iter()
        .map(|l| match l["status"].as_str() {
            Some(s) => s.to_string(),
            None => format!(
                "{}{}",
                l["source"]["table"].as_str().unwrap(),
                l["op"].as_str().unwrap()
            ),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "ordersc", "BEGIN", "ordersc", "itemsc", "itemsc", "ordersu", "END", "BEGIN", "itemsd",
            "END", "ordersc", "itemsc"
        ],
        "{got:#?}"
    );
    assert_eq!(
        got[1],
        json!({"status": "BEGIN", "id": "2", "ts_ms": got[2]["ts_ms"], "event_count": null,
               "data_collections": null})
    );
    assert_eq!(
        got[6],
        json!({"status": "END", "id": "2", "ts_ms": got[5]["ts_ms"], "event_count": 4,
               "data_collections": [
                   {"data_collection": "shop.orders", "event_count": 2},
                   {"data_collection": "shop.items", "event_count": 2}]})
    );
    assert_eq!(got[9]["event_count"], 1);
    assert_eq!(got[9]["id"], "6");
    assert_eq!(got[8]["transaction"]["id"], "6");
    check_bracketing(&got, |l| {
        l["transaction"]["id"].as_str().map(str::to_string)
    });
}

#[test]
fn a_consumer_of_one_table_gets_markers_and_counts_for_its_part_in_native_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    // Both tables are captured; this consumer takes one.
    let conn = Connection::open(&db).unwrap();
    let capture = astha_core::capture::Capture::new(LOG);
    capture.ensure_log(&conn).unwrap();
    capture.install(&conn, "orders").unwrap();
    capture.install(&conn, "items").unwrap();
    let child = watching(&db, &["--tables", "items", "--limit", "4"]);
    write_all(&db);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got = lines(&out.stdout);
    let shape: Vec<String> = got
        .iter()
        .map(|l| match l["status"].as_str() {
            Some(s) => s.to_string(),
            None => format!(
                "{}{}",
                l["table"].as_str().unwrap(),
                l["op"].as_str().unwrap()
            ),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "BEGIN",
            "itemsINSERT",
            "itemsINSERT",
            "END",
            "BEGIN",
            "itemsDELETE",
            "END",
            "itemsINSERT"
        ],
        "{got:#?}"
    );
    // The native event carries the same block as Debezium's, positions in the whole
    // transaction; the END counts what this consumer received.
    assert_eq!(
        got[1]["transaction"],
        json!({"id": "2", "total_order": 2, "data_collection_order": 1, "total": 4})
    );
    assert_eq!(
        got[3]["data_collections"],
        json!([{"data_collection": "shop.items", "event_count": 2}])
    );
    assert!(got[7].get("transaction").is_none(), "unmarked: no block");
    check_bracketing(&got, |l| {
        l["transaction"]["id"].as_str().map(str::to_string)
    });
}

#[test]
fn cloudevents_markers_are_events_and_changes_carry_transaction_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    let child = watching(
        &db,
        &[
            "--tables",
            "orders,items",
            "--format",
            "cloudevents",
            "--limit",
            "8",
        ],
    );
    write_all(&db);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 12);
    assert_eq!(got[1]["type"], "io.astha.transaction.begin");
    assert_eq!(got[6]["type"], "io.astha.transaction.end");
    assert!(got[1]["id"].as_str().unwrap().ends_with(":tx2:begin"));
    assert_eq!(got[6]["data"]["event_count"], 4);
    assert_eq!(got[2]["asthatxid"], "2");
    assert_eq!(got[2]["asthatxorder"], "1");
    assert_eq!(got[2]["asthatxtotal"], "4");
    assert!(got[0].get("asthatxid").is_none());
    let ids: std::collections::BTreeSet<&str> =
        got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "every event id is unique");
    // CloudEvents wraps markers; unwrap them for the common check.
    let unwrapped: Vec<Value> = got
        .iter()
        .map(|e| {
            match e["type"]
                .as_str()
                .unwrap()
                .starts_with("io.astha.transaction")
            {
                true => e["data"].clone(),
                false => e.clone(),
            }
        })
        .collect();
    check_bracketing(&unwrapped, |l| l["asthatxid"].as_str().map(str::to_string));
}

#[test]
fn a_durable_watcher_stopped_between_begin_and_end_resumes_without_a_second_begin() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    // `--limit 0` installs capture and exits, so the writes are captured; the watchers
    // then read them from the beginning, as `a_durable_slot_resumes_where_it_stopped`.
    watching(&db, &["--tables", "orders,items", "--limit", "0"])
        .wait()
        .unwrap();
    write_all(&db);
    let run = |limit: &str| {
        let child = watching(
            &db,
            &[
                "--tables",
                "orders,items",
                "--slot",
                "s",
                "--from-beginning",
                "--limit",
                limit,
            ],
        );
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        lines(&out.stdout)
    };
    let before = run("3");
    // Unmarked change, BEGIN, then two of the transaction's four changes.
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(before[1]["status"], "BEGIN");
    let after = run("5");
    // The slot is past the first two changes: they, and the BEGIN before them, are not
    // printed again; the rest of the transaction and its END follow.
    assert_eq!(after[0]["transaction"]["total_order"], 3, "{after:?}");
    assert_eq!(after[2]["status"], "END");
    assert_eq!(after[2]["event_count"], 4);
    let all: Vec<Value> = before.into_iter().chain(after).collect();
    check_bracketing(&all, |l| {
        l["transaction"]["id"].as_str().map(str::to_string)
    });
}

/// Starts `astha run <file>` in `dir` and returns once it runs.
fn run(dir: &Path, file: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = astha()
        .args(["run", file])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("running") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("astha run {file} did not start");
            }
        }
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A file sink with `transaction_events`, killed with -9 again and again while a writer
/// commits marked transactions of 1 to 7 changes: the file may repeat the lines of the
/// batch in flight at a kill (a BEGIN among them), but each BEGIN stands right before its
/// transaction's first change, each END right after its last with the right count, every
/// transaction's first line is a BEGIN, and de-duplicated by (id, total_order) every
/// transaction is whole.
#[test]
fn kill_9_of_a_file_sink_between_begin_and_end_keeps_every_transaction_readable() {
    const KILLS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path());
    std::fs::write(
        dir.path().join("tx.toml"),
        "[defaults]\ntransaction_events = true\n\
         [[sources]]\ndatabase = \"shop.db\"\ntables = [\"orders\", \"items\"]\ninstall = true\n\
         [[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"out/tx.jsonl\"\nmax_batch = 5\n",
    )
    .unwrap();
    let (mut child, rx) = run(dir.path(), "tx.toml");
    let mut stderrs = vec![rx];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let conn = astha_core::db::open_writer(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut writer = Writer::new(conn, LOG).unwrap();
            let mut n = 0i64;
            let mut transactions = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let size = 1 + transactions % 7;
                writer
                    .transaction(|conn| {
                        for _ in 0..size {
                            n += 1;
                            let table = if n % 3 == 0 { "items" } else { "orders" };
                            conn.execute(&format!("INSERT INTO {table} (id) VALUES (?1)"), [n])?;
                        }
                        Ok(())
                    })
                    .unwrap();
                transactions += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (n, transactions)
        })
    };
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
        let (next, rx) = run(dir.path(), "tx.toml");
        child = next;
        stderrs.push(rx);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (changes, transactions) = writer.join().unwrap();
    let out = dir.path().join("out/tx.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    let head: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(id) FROM __cdc_log", [], |r| r.get(0))
        .unwrap();
    loop {
        let done = read_lines(&out)
            .iter()
            .rev()
            .find_map(|l| l["lsn"].as_i64())
            == Some(head);
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    drop(stderrs);

    let got = read_lines(&out);
    let mut seen = std::collections::BTreeMap::<String, std::collections::BTreeSet<u64>>::new();
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    let (mut begins, mut ends) = (0u64, 0u64);
    for (i, line) in got.iter().enumerate() {
        match line["status"].as_str() {
            Some("BEGIN") => {
                begins += 1;
                // The change it opens follows, unless a kill cut the batch's write right
                // after it (one write(2) per batch makes that unlikely, not impossible):
                // then the re-delivery repeats the BEGIN first.
                let next = &got[i + 1];
                if next != line {
                    assert_eq!(next["transaction"]["id"], line["id"]);
                    assert_eq!(next["transaction"]["total_order"], 1);
                }
            }
            Some("END") => {
                ends += 1;
                let prev = &got[i - 1];
                assert_eq!(prev["transaction"]["id"], line["id"]);
                assert_eq!(
                    prev["transaction"]["total_order"],
                    prev["transaction"]["total"]
                );
                assert_eq!(line["event_count"], prev["transaction"]["total"]);
            }
            _ => {
                let tx = &line["transaction"];
                let id = tx["id"]
                    .as_str()
                    .expect("every change here is marked")
                    .to_string();
                if !seen.contains_key(&id) {
                    assert_eq!(got[i - 1]["status"], "BEGIN", "first line of {id}");
                }
                seen.entry(id.clone())
                    .or_default()
                    .insert(tx["total_order"].as_u64().unwrap());
                totals.insert(id, tx["total"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(
        seen.len() as u64,
        transactions,
        "every transaction is in the file"
    );
    for (id, orders) in &seen {
        let total = totals[id];
        assert_eq!(
            orders.iter().copied().collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>(),
            "transaction {id} is whole"
        );
    }
    assert_eq!(seen.values().map(|o| o.len() as i64).sum::<i64>(), changes);
    assert!(begins >= transactions && ends >= transactions);
    println!(
        "{changes} changes in {transactions} transactions, {} lines, {} BEGIN and {} END \
         repeated after {KILLS} kills",
        got.len(),
        begins - transactions,
        ends - transactions
    );
}

#[test]
fn transaction_events_are_refused_where_they_would_be_wrong() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path());
    let check = |toml: &str| {
        std::fs::write(dir.path().join("p.toml"), toml).unwrap();
        let out = astha()
            .args(["run", "--check", "p.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let base = "[[sources]]\ndatabase = \"shop.db\"\ntables = [\"orders\"]\ninstall = true\n";
    let (ok, text) = check(&format!(
        "{base}[[sinks]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\
         secret = \"s\"\ntransaction_events = true\n"
    ));
    assert!(
        !ok && text.contains("does not write transaction markers"),
        "{text}"
    );
    let (ok, text) = check(&format!(
        "[defaults]\nfilter = \"amount > 1\"\n{base}[[sinks]]\nname = \"f\"\ntype = \"file\"\n\
         path = \"o.jsonl\"\ntransaction_events = true\n"
    ));
    assert!(!ok && text.contains("filter"), "{text}");
    let (ok, text) = check(&format!(
        "{base}[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"o.jsonl\"\ntransaction_events = true\n"
    ));
    assert!(ok, "{text}");
}
