//! Window transforms against a straightforward model, on changes written by real
//! triggers: for every window kind, random change streams (inserts, updates, deletes,
//! out-of-order event times) are delivered through the real [`Windowed`] transform in
//! random batches, with random restarts (the transform dropped and rebuilt from its
//! stored state), sink failures mid-batch and crashes between the sink's acceptance and
//! the state's write (re-delivery from the last confirmed change, as the supervisor
//! does). The distinct results the sink received must be exactly the model's, number for
//! number: nothing lost, nothing counted twice, duplicates only of identical results.
//!
//! The model runs over the whole stream in memory, one change at a time, keeps each
//! window's contributing values in a list and computes the aggregates from scratch at
//! each emission, the SQL ones (count, sum, avg, min, max, count distinct) by SQLite
//! itself on an in-memory table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use astha_actors::store::Store;
use astha_actors::{Component, ComponentError};
use astha_core::change::{Change, Operation};
use astha_core::log::{BatchLimits, LogReader};
use astha_core::Value;
use astha_pipeline::window::config::{EmitMode, WindowConfig, WindowKind};
use astha_pipeline::window::Windowed;
use async_trait::async_trait;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;

const BASE_MS: i64 = 1_700_000_000_000;

/// The sink: records every result it accepts; fails now and then, maybe mid-batch.
struct Recorder {
    got: Arc<Mutex<Vec<Change>>>,
    rng: Arc<Mutex<StdRng>>,
    fail_rate: f64,
}

#[async_trait]
impl Component for Recorder {
    fn name(&self) -> &str {
        "win"
    }
    fn subscriptions(&self) -> Vec<String> {
        vec!["orders".into()]
    }
    fn max_batch(&self) -> usize {
        4
    }
    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        if self.rng.lock().unwrap().random_bool(self.fail_rate) {
            return Err(ComponentError::transient("sink down"));
        }
        self.got.lock().unwrap().push(change.clone());
        Ok(())
    }
}

fn window_toml(
    kind: WindowKind,
    a: i64,
    b: i64,
    lateness: i64,
    emit: EmitMode,
    max_open: usize,
) -> WindowConfig {
    let params = match kind {
        WindowKind::Tumbling => format!("kind = \"tumbling\"\nsize_ms = {a}"),
        WindowKind::Sliding => {
            format!("kind = \"sliding\"\nsize_ms = {}\nslide_ms = {b}", a.max(b))
        }
        WindowKind::Session => format!("kind = \"session\"\ngap_ms = {a}"),
        WindowKind::Count => format!("kind = \"count\"\ncount = {a}"),
    };
    let lateness = if kind == WindowKind::Count {
        0
    } else {
        lateness
    };
    let emit = if emit == EmitMode::Close {
        "close"
    } else {
        "change"
    };
    let text = format!(
        r#"{params}
        key = "customer"
        allowed_lateness_ms = {lateness}
        emit = "{emit}"
        max_open_windows = {max_open}
        aggregates = [
          {{ name = "n", fn = "count" }},
          {{ name = "cnt", fn = "count", column = "amount" }},
          {{ name = "total", fn = "sum", column = "amount" }},
          {{ name = "mean", fn = "avg", column = "amount" }},
          {{ name = "lo", fn = "min", column = "amount" }},
          {{ name = "hi", fn = "max", column = "amount" }},
          {{ name = "first_note", fn = "first", column = "note" }},
          {{ name = "last_old", fn = "last", column = "amount", image = "before", ops = ["update", "delete"] }},
          {{ name = "amounts", fn = "collect", column = "amount" }},
          {{ name = "notes", fn = "count_distinct", column = "note", ops = ["insert"] }},
        ]
        "#
    );
    let config: WindowConfig = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    config
}

/// One user write, and the event time its log row is given.
#[derive(Debug, Clone)]
struct Write {
    op: u8,
    customer: u8,
    amount: u8,
    note: u8,
    dt: i64,
}

fn amount(code: u8) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match code % 6 {
        0 => V::Null,
        1 | 2 => V::Integer(code as i64 * 7 - 20),
        _ => V::Real(code as f64 * 0.25 - 3.0),
    }
}

/// Writes `writes` through real triggers, sets their event times, reads the changes back.
fn capture(path: &std::path::Path, store: &Store, writes: &[Write]) -> Vec<Arc<Change>> {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount, note TEXT)",
    )
    .unwrap();
    store
        .write_blocking(|c| store.capture().install(c, "orders").map(drop))
        .unwrap();
    let mut ids: Vec<i64> = Vec::new();
    let mut time = BASE_MS;
    for (i, w) in writes.iter().enumerate() {
        let customer = format!("c{}", w.customer % 4);
        let note = format!("n{}", w.note % 5);
        match (w.op % 4, ids.is_empty()) {
            (0 | 1, _) | (_, true) => {
                conn.execute(
                    "INSERT INTO orders (customer, amount, note) VALUES (?1, ?2, ?3)",
                    rusqlite::params![customer, amount(w.amount), note],
                )
                .unwrap();
                ids.push(conn.last_insert_rowid());
            }
            (2, false) => {
                let id = ids[i % ids.len()];
                conn.execute(
                    "UPDATE orders SET amount = ?1, note = ?2 WHERE id = ?3",
                    rusqlite::params![amount(w.amount), note, id],
                )
                .unwrap();
            }
            _ => {
                let id = ids.remove(i % ids.len());
                conn.execute("DELETE FROM orders WHERE id = ?1", [id])
                    .unwrap();
            }
        }
        time += w.dt;
        conn.execute(
            "UPDATE __cdc_log SET ts = 2440587.5 + ?1 / 86400000.0 WHERE id = (SELECT max(id) FROM __cdc_log)",
            [time],
        )
        .unwrap();
    }
    let mut reader = LogReader::new("__cdc_log");
    let batch = reader
        .read(
            &conn,
            0,
            BatchLimits {
                max_rows: 100_000,
                max_bytes: usize::MAX,
            },
            None,
        )
        .unwrap();
    assert!(batch.malformed.is_empty());
    assert_eq!(batch.changes.len(), writes.len());
    batch.changes.into_iter().map(Arc::new).collect()
}

// ---------------------------------------------------------------- the model

/// One change's contribution to each aggregate (None: not taken).
type Contribs = Vec<Option<Value>>;

fn contributions(change: &Change) -> (String, Vec<Option<Option<Value>>>) {
    let image = if change.op == Operation::Delete {
        change.before.as_ref()
    } else {
        change.after.as_ref()
    };
    let key = match image.and_then(|r| r.get("customer")) {
        Some(Value::Text(t)) => t.clone(),
        other => panic!("customer {other:?}"),
    };
    let after = |c: &str| {
        change
            .after
            .as_ref()
            .map(|r| r.get(c).cloned().unwrap_or(Value::Null))
    };
    let before = |c: &str| {
        change
            .before
            .as_ref()
            .map(|r| r.get(c).cloned().unwrap_or(Value::Null))
    };
    let is = |ops: &[Operation]| ops.contains(&change.op);
    let values = vec![
        Some(None),                // n
        after("amount").map(Some), // cnt
        after("amount").map(Some), // total
        after("amount").map(Some), // mean
        after("amount").map(Some), // lo
        after("amount").map(Some), // hi
        after("note").map(Some),   // first_note
        if is(&[Operation::Update, Operation::Delete]) {
            before("amount").map(Some)
        } else {
            None
        }, // last_old
        after("amount").map(Some), // amounts
        if is(&[Operation::Insert]) {
            after("note").map(Some)
        } else {
            None
        }, // notes
    ];
    (key, values)
}

struct ModelWindow {
    key: String,
    start: i64,
    end: i64,
    first_ms: i64,
    last_ms: i64,
    /// (lsn, contributions), in LSN order.
    items: Vec<(i64, Vec<Option<Option<Value>>>)>,
    emitted: u64,
}

/// The aggregates of `items`, SQL ones by SQLite.
fn aggregates(sql: &Connection, items: &[(i64, Vec<Option<Option<Value>>>)]) -> Contribs {
    let col = |i: usize| -> Vec<(i64, Option<Value>)> {
        items
            .iter()
            .filter_map(|(lsn, v)| v[i].clone().map(|x| (*lsn, x)))
            .collect()
    };
    let by_sql = |i: usize, f: &str| -> Value {
        sql.execute_batch("DELETE FROM t").unwrap();
        for (lsn, v) in col(i) {
            sql.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                rusqlite::params![lsn, v.unwrap_or(Value::Null)],
            )
            .unwrap();
        }
        sql.query_row(&format!("SELECT {f} FROM t"), [], |r| r.get(0))
            .unwrap()
    };
    let n = Value::Integer(col(0).len() as i64);
    let first = col(6)
        .first()
        .map_or(Value::Null, |(_, v)| v.clone().unwrap_or(Value::Null));
    let last = col(7)
        .last()
        .map_or(Value::Null, |(_, v)| v.clone().unwrap_or(Value::Null));
    let amounts: Vec<serde_json::Value> = col(8)
        .into_iter()
        .map(|(_, v)| v.unwrap_or(Value::Null).to_json())
        .collect();
    vec![
        Some(n),
        Some(by_sql(1, "count(v)")),
        Some(by_sql(2, "sum(v)")),
        Some(by_sql(3, "avg(v)")),
        Some(by_sql(4, "min(v)")),
        Some(by_sql(5, "max(v)")),
        Some(first),
        Some(last),
        Some(Value::Text(serde_json::Value::Array(amounts).to_string())),
        Some(Value::Integer(0)),
        Some(by_sql(9, "count(DISTINCT v)")),
        Some(Value::Integer(0)),
    ]
}

/// Every result of the stream, in order: (operation, values).
fn model(config: &WindowConfig, changes: &[Arc<Change>]) -> Vec<(Operation, Vec<Value>)> {
    let sql = Connection::open_in_memory().unwrap();
    sql.execute_batch("CREATE TABLE t (lsn, v)").unwrap();
    let mut open: Vec<ModelWindow> = Vec::new();
    let mut out = Vec::new();
    let mut max_ms = i64::MIN;
    let lateness = config.allowed_lateness_ms;
    let emit = |w: &mut ModelWindow, state: &str, out: &mut Vec<(Operation, Vec<Value>)>| {
        let (s, e) = if config.kind == WindowKind::Count {
            (w.first_ms, w.last_ms)
        } else {
            (w.start, w.end)
        };
        let mut values = vec![
            Value::Text(w.key.clone()),
            Value::Integer(s),
            Value::Integer(e),
            Value::Text(state.into()),
            Value::Integer(w.items.len() as i64),
        ];
        values.extend(aggregates(&sql, &w.items).into_iter().map(|v| v.unwrap()));
        let op = if w.emitted == 0 {
            Operation::Insert
        } else {
            Operation::Update
        };
        out.push((op, values));
        w.emitted += 1;
    };
    let retract = |w: &mut ModelWindow, out: &mut Vec<(Operation, Vec<Value>)>| {
        let mut values = vec![
            Value::Text(w.key.clone()),
            Value::Integer(w.start),
            Value::Integer(w.end),
            Value::Text("open".into()),
            Value::Integer(w.items.len() as i64),
        ];
        values.extend(aggregates(&sql, &w.items).into_iter().map(|v| v.unwrap()));
        out.push((Operation::Delete, values));
    };
    let close_order = |w: &ModelWindow| (w.end, w.key.clone(), w.start);
    for change in changes {
        let t = change.timestamp_ms;
        let (key, values) = contributions(change);
        if config.kind != WindowKind::Count {
            max_ms = max_ms.max(t);
        }
        let wm = max_ms.saturating_sub(lateness);
        let item = (change.lsn, values);
        let mut touched: Vec<(String, i64)> = Vec::new();
        let new_window = |start: i64, end: i64| ModelWindow {
            key: key.clone(),
            start,
            end,
            first_ms: t,
            last_ms: t,
            items: Vec::new(),
            emitted: 0,
        };
        match config.kind {
            WindowKind::Tumbling | WindowKind::Sliding => {
                let size = config.size_ms.unwrap();
                let slide = config.slide_ms.unwrap_or(size);
                // Every start that is a multiple of slide with start <= t < start + size.
                let mut start = (t - size + 1).div_euclid(slide) * slide;
                if start <= t - size {
                    start += slide;
                }
                while start <= t {
                    assert!(start + size > t);
                    if start + size > wm {
                        let w = match open
                            .iter_mut()
                            .position(|w| w.key == key && w.start == start)
                        {
                            Some(i) => &mut open[i],
                            None => {
                                open.push(new_window(start, start + size));
                                open.last_mut().unwrap()
                            }
                        };
                        w.items.push(item.clone());
                        w.first_ms = w.first_ms.min(t);
                        w.last_ms = w.last_ms.max(t);
                        touched.push((key.clone(), start));
                    }
                    start += slide;
                }
            }
            WindowKind::Session => {
                let gap = config.gap_ms.unwrap();
                let (mut near, rest): (Vec<ModelWindow>, Vec<ModelWindow>) = open
                    .drain(..)
                    .partition(|w| w.key == key && t > w.start - gap && t < w.end);
                open = rest;
                if near.is_empty() && t + gap <= wm {
                    // late
                } else {
                    near.sort_by_key(|w| w.start);
                    let start = near.first().map_or(t, |n| n.start.min(t));
                    let mut w = new_window(t, t + gap);
                    // Only the session that keeps its start keeps its results; the
                    // others' last results are retracted.
                    w.emitted = near
                        .iter()
                        .find(|n| n.start == start)
                        .map_or(0, |n| n.emitted);
                    for n in &mut near {
                        if n.start != start && n.emitted > 0 {
                            retract(n, &mut out);
                        }
                    }
                    for n in near {
                        w.start = w.start.min(n.start);
                        w.end = w.end.max(n.end);
                        w.first_ms = w.first_ms.min(n.first_ms);
                        w.last_ms = w.last_ms.max(n.last_ms);
                        w.items.extend(n.items);
                    }
                    w.items.push(item.clone());
                    w.items.sort_by_key(|(lsn, _)| *lsn);
                    touched.push((key.clone(), w.start));
                    open.push(w);
                }
            }
            WindowKind::Count => {
                let i = match open.iter().position(|w| w.key == key) {
                    Some(i) => i,
                    None => {
                        open.push(new_window(change.lsn, change.lsn));
                        open.len() - 1
                    }
                };
                open[i].items.push(item.clone());
                open[i].first_ms = open[i].first_ms.min(t);
                open[i].last_ms = open[i].last_ms.max(t);
                if open[i].items.len() as u64 >= config.count.unwrap() {
                    let mut w = open.remove(i);
                    emit(&mut w, "closed", &mut out);
                } else {
                    touched.push((key.clone(), open[i].start));
                }
            }
        }
        if config.emit == EmitMode::Change {
            for (k, s) in &touched {
                let w = open
                    .iter_mut()
                    .find(|w| &w.key == k && w.start == *s)
                    .unwrap();
                emit(w, "open", &mut out);
            }
        }
        if config.kind != WindowKind::Count {
            loop {
                open.sort_by_key(close_order);
                if open.first().is_some_and(|w| w.end <= wm) {
                    let mut w = open.remove(0);
                    emit(&mut w, "closed", &mut out);
                } else {
                    break;
                }
            }
        }
        while open.len() > config.max_open_windows {
            open.sort_by_key(close_order);
            let mut w = open.remove(0);
            emit(&mut w, "evicted", &mut out);
        }
    }
    out
}

// ---------------------------------------------------------------- delivery

/// Delivers `changes` through the transform as the supervisor would, with restarts,
/// failures and lost confirmations from `seed`; returns what the sink accepted.
fn deliver(
    store: &Store,
    config: &WindowConfig,
    changes: &[Arc<Change>],
    seed: u64,
) -> Vec<Change> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let build = || {
        let sink = Recorder {
            got: got.clone(),
            rng: rng.clone(),
            fail_rate: 0.05,
        };
        Windowed::new(Box::new(sink), store.clone(), "win", config.clone()).unwrap()
    };
    let mut transform = build();
    let mut position = 0; // index of the first change not confirmed
    let mut attempts = 0;
    while position < changes.len() {
        attempts += 1;
        assert!(attempts < 100_000, "no progress");
        let (restart, crash, lost_ack, size) = {
            let mut r = rng.lock().unwrap();
            (
                r.random_bool(0.15),
                r.random_bool(0.1),
                r.random_bool(0.15),
                r.random_range(1..=12usize),
            )
        };
        if restart {
            transform = build();
        }
        if crash {
            transform.fail_next_commit();
        }
        let end = (position + size).min(changes.len());
        match rt.block_on(transform.on_batch(&changes[position..end])) {
            // A crash after the state was written but before the slot moved: the
            // batch comes again (its changes are in the state already).
            Ok(()) if lost_ack => transform = build(),
            Ok(()) => position = end,
            Err(e) => {
                assert!(e.error.is_retriable(), "{:?}", e.error);
                position += e.handled;
            }
        }
    }
    let _ = rt.block_on(transform.on_refresh());
    let got = got.lock().unwrap().clone();
    got
}

#[allow(clippy::too_many_arguments)]
fn check(
    kind: WindowKind,
    writes: Vec<Write>,
    a: i64,
    b: i64,
    lateness: i64,
    emit: EmitMode,
    max_open: usize,
    seed: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let store = Store::open(&path, "__cdc_log").unwrap();
    let changes = capture(&path, &store, &writes);
    let config = window_toml(kind, a, b, lateness, emit, max_open);
    let expected = model(&config, &changes);
    let got = deliver(&store, &config, &changes, seed);
    let mut by_seq: BTreeMap<i64, &Change> = BTreeMap::new();
    for change in &got {
        if let Some(earlier) = by_seq.insert(change.lsn, change) {
            assert_eq!(
                earlier, change,
                "result {} delivered twice with different content",
                change.lsn
            );
        }
    }
    let got_seqs: Vec<i64> = by_seq.keys().copied().collect();
    let want_seqs: Vec<i64> = (1..=expected.len() as i64).collect();
    assert_eq!(got_seqs, want_seqs, "result numbers");
    let columns = config.result_columns();
    for (seq, (op, values)) in expected.iter().enumerate() {
        let change = by_seq[&(seq as i64 + 1)];
        let row = change.after.as_ref().or(change.before.as_ref()).unwrap();
        let named = |vals: &[Value]| -> HashMap<String, Value> {
            columns.iter().cloned().zip(vals.iter().cloned()).collect()
        };
        assert_eq!(named(row.values()), named(values), "result {}", seq + 1);
        assert_eq!(change.op, *op, "result {}", seq + 1);
    }
}

fn writes() -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec(
        (0u8..4, 0u8..4, 0u8..24, 0u8..5, -6i64..10).prop_map(
            |(op, customer, amount, note, dt)| Write {
                op,
                customer,
                amount,
                note,
                dt,
            },
        ),
        1..70,
    )
}

fn emit_mode() -> impl Strategy<Value = EmitMode> {
    prop_oneof![Just(EmitMode::Close), Just(EmitMode::Change)]
}

fn max_open() -> impl Strategy<Value = usize> {
    prop_oneof![Just(100_000usize), 1usize..6]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn tumbling_windows_match_the_model(w in writes(), size in 1i64..30, lateness in 0i64..12, emit in emit_mode(), max in max_open(), seed: u64) {
        check(WindowKind::Tumbling, w, size, 0, lateness, emit, max, seed);
    }

    #[test]
    fn sliding_windows_match_the_model(w in writes(), size in 2i64..30, slide in 1i64..10, lateness in 0i64..12, emit in emit_mode(), max in max_open(), seed: u64) {
        check(WindowKind::Sliding, w, size, slide, lateness, emit, max, seed);
    }

    #[test]
    fn session_windows_match_the_model(w in writes(), gap in 1i64..15, lateness in 0i64..12, emit in emit_mode(), max in max_open(), seed: u64) {
        check(WindowKind::Session, w, gap, 0, lateness, emit, max, seed);
    }

    #[test]
    fn count_windows_match_the_model(w in writes(), n in 1i64..6, emit in emit_mode(), max in max_open(), seed: u64) {
        check(WindowKind::Count, w, n, 0, 0, emit, max, seed);
    }
}

// ---------------------------------------------------------------- formats and checks

/// A window result is an ordinary change: every format encodes it, with the window's
/// key as the event key.
#[test]
fn results_encode_in_every_format() {
    use astha_core::format::{Encoder, EventFormat, SourceInfo};
    let writes: Vec<Write> = (0..6)
        .map(|i| Write {
            op: 0,
            customer: i % 2,
            amount: 1,
            note: 0,
            dt: 50,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let store = Store::open(&path, "__cdc_log").unwrap();
    let changes = capture(&path, &store, &writes);
    let config = window_toml(WindowKind::Tumbling, 100, 0, 0, EmitMode::Close, 100);
    let got = deliver(&store, &config, &changes, 7);
    assert!(!got.is_empty());
    let source = SourceInfo {
        name: "shop".into(),
        db: "shop".into(),
        identity: "id-1:1:w:win".into(),
    };
    for format in [
        EventFormat::Native,
        EventFormat::Debezium,
        EventFormat::CloudEvents,
    ] {
        let encoder = Encoder::new(format, source.clone()).with_debezium_schemas(true);
        for change in &got {
            let text = encoder.encode(change).to_string();
            let keyed = text.contains("\"c0\"") || text.contains("\"c1\"");
            assert!(text.contains("window_start") && keyed, "{format:?}: {text}");
            let key = encoder.key(change).to_string();
            assert!(key.contains("window_key"), "{format:?}: {key}");
        }
    }
}

#[test]
fn check_refuses_what_a_window_cannot_do_and_names_the_fix() {
    use astha_components::sinks::SinkRegistry;
    use astha_core::config::AsthaConfig;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount)")
        .unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let check = |sink_extra: &str, window: &str| -> String {
        let text = format!(
            "[[sources]]\ndatabase = \"{}\"\ninstall = true\n[[sinks]]\nname = \"w\"\ntype = \"stdout\"\n{sink_extra}\n[sinks.window]\n{window}\n",
            path.display()
        );
        match astha_pipeline::PipelineSpec::parse(&text, |_| None) {
            Err(e) => e,
            Ok(spec) => match astha_pipeline::plan(&spec, &SinkRegistry::builtin(), &engine) {
                Ok(_) => "ok".into(),
                Err(e) => e.to_string(),
            },
        }
    };
    let good =
        "kind = \"tumbling\"\nsize_ms = 1000\naggregates = [{ name = \"n\", fn = \"count\" }]";
    assert_eq!(check("", good), "ok");
    for (extra, window, expect) in [
        ("snapshot = \"initial\"", good, "remove `snapshot`"),
        ("", "kind = \"tumbling\"\naggregates = [{ name = \"n\", fn = \"count\" }]", "needs size_ms"),
        ("", "kind = \"sliding\"\nsize_ms = 10\nslide_ms = 20\naggregates = [{ name = \"n\", fn = \"count\" }]", "slide_ms larger"),
        ("", "kind = \"tumbling\"\nsize_ms = 10\naggregates = [{ name = \"t\", fn = \"sum\" }]", "needs a column"),
        ("", "kind = \"tumbling\"\nsize_ms = 10\naggregates = []", "at least one aggregate"),
        ("", "kind = \"tumbling\"\nsize_ms = 10\nsize = 3\naggregates = [{ name = \"n\", fn = \"count\" }]", "size"),
        ("", "kind = \"tumbling\"\nsize_ms = 10\nkey = \"customer ||\"\naggregates = [{ name = \"n\", fn = \"count\" }]", "does not compile"),
        ("", "kind = \"tumbling\"\nsize_ms = 10\naggregates = [{ name = \"state\", fn = \"count\" }]", "named twice"),
    ] {
        let err = check(extra, window);
        assert!(err.contains(expect), "{window}: {err}");
    }
}

/// A start refuses window state stored under other settings, naming the way out; with
/// the settings restored it starts and the stored windows are there.
#[actix_rt::test]
async fn a_start_refuses_state_stored_under_other_settings() {
    use astha_components::sinks::SinkRegistry;
    use astha_core::config::AsthaConfig;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount)")
        .unwrap();
    let engine = AsthaConfig::load_from(None, Vec::<(String, String)>::new()).unwrap();
    let pipeline = |size: i64| {
        let text = format!(
            "[[sources]]\ndatabase = \"{}\"\ninstall = true\n[[sinks]]\nname = \"w\"\ntype = \"file\"\npath = \"{}\"\n[sinks.window]\nkind = \"tumbling\"\nsize_ms = {size}\naggregates = [{{ name = \"n\", fn = \"count\" }}]\n",
            path.display(),
            dir.path().join("out.jsonl").display()
        );
        let spec = astha_pipeline::PipelineSpec::parse(&text, |_| None).unwrap();
        astha_pipeline::plan(&spec, &SinkRegistry::builtin(), &engine).unwrap()
    };
    let running = pipeline(60_000).start(&engine).await.unwrap();
    running.stop().await.unwrap();
    let err = match pipeline(1_000).start(&engine).await {
        Ok(_) => panic!("started with other window settings"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("changed since its state was stored")
            && err.contains("DELETE FROM __astha_windows"),
        "{err}"
    );
    let running = pipeline(60_000).start(&engine).await.unwrap();
    running.stop().await.unwrap();
}
