//! Commit to file sink: changes per second from a writer's first commit until the file
//! sink's slot is durably at the head (every line written and `fdatasync`ed), for the
//! file sink embedded as a component and the same sink run by a pipeline (`astha run`'s
//! runner) in each format. The writer inserts flat out in 100-row transactions into a
//! 16-column table, in the same process, as the throughput suite does.
//!
//! Baselines in the same run: the writer's rate with capture and nothing reading, and the
//! sink's floor: the same lines encoded and appended with one `fdatasync` per 500 lines
//! (the sink's batch) by a plain loop, with no Astha.
//!
//! When a NATS server answers (`ASTHA_NATS_URL`, or `nats://127.0.0.1:4222` as
//! `scripts/start_nats.sh` starts it), the same is measured to NATS JetStream: the
//! slot reaches the head only once JetStream acknowledged every message.
//!
//! Destinations on real servers (when their URL is in the environment, as
//! `scripts/start_postgres.sh` exports it): changes per second into the server through
//! `astha run`, beside the same client writing the same rows with no Astha, batched the
//! way the sink batches them and one row per statement. RabbitMQ (`ASTHA_AMQP_URL`) and a
//! Kafka-protocol broker (`ASTHA_KAFKA_BROKERS`) likewise, in [`super::brokers`].

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use astha_actors::{Astha, Component};
use astha_components::sinks::postgres::Param;
use astha_components::sinks::{FileSinkConfig, SinkConfig, SinkContext, SinkRegistry};
use astha_core::config::AsthaConfig;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use astha_core::log::{BatchLimits, LogReader};
use astha_pipeline::{plan, PipelineSpec};
use rusqlite::{params_from_iter, Connection};
use tokio_postgres::types::ToSql;

use super::{create_wide_table, wide_insert_sql, wide_row, Mode};

const COLUMNS: usize = 16;

/// One measured case.
#[derive(Debug, Clone)]
pub struct SinkRun {
    pub label: String,
    pub format: EventFormat,
    pub rows: usize,
    /// Rows per second the writer achieved meanwhile.
    pub writer_rate: f64,
    /// Changes per second from the first commit until the sink's slot was at the head.
    pub delivered_rate: f64,
}

/// The suite's figures.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub runs: Vec<SinkRun>,
    /// To NATS JetStream, embedded and through `astha run`; empty without a server.
    pub nats: Vec<SinkRun>,
    /// Rows per second of the writer with capture and nothing reading (best of 3).
    pub capture_rate: f64,
    /// Lines per second the plain encode + append + fdatasync loop wrote, per format.
    pub floor: Vec<(EventFormat, f64)>,
    /// Destinations on real servers, for those whose server was reachable.
    pub destinations: Vec<DestinationRun>,
}

/// One destination: Astha's rate into it beside its client's own.
#[derive(Debug, Clone)]
pub struct DestinationRun {
    pub label: String,
    pub rows: usize,
    /// Changes per second from the first commit until the sink's slot was at the head.
    pub delivered_rate: f64,
    /// The same client writing the same rows batched as the sink batches them, no Astha.
    pub raw_batched_rate: f64,
    /// The same client, one row per statement (in transactions of the same size).
    pub raw_single_rate: f64,
}

/// Runs the suite.
pub fn run(mode: Mode) -> Sinks {
    let rows = if mode.is_quick() { 2_000 } else { 100_000 };
    let data: Vec<Vec<rusqlite::types::Value>> = (0..rows as i64)
        .map(|i| {
            let mut row = vec![rusqlite::types::Value::Integer(i + 1)];
            row.extend(wide_row(i + 1, COLUMNS));
            row
        })
        .collect();
    let capture_rate = (0..3).map(|_| capture_only(&data)).fold(0.0, f64::max);
    let mut runs = vec![embedded(
        &data,
        "file sink embedded as a component",
        |ctx, dir| {
            FileSinkConfig::new(dir.join("out.jsonl"))
                .build(ctx)
                .expect("file sink")
        },
    )];
    for format in EventFormat::ALL {
        runs.push(through_pipeline(&data, format));
    }
    let nats = match nats_url() {
        None => {
            eprintln!("sinks: no NATS server answers; the NATS cases are skipped");
            Vec::new()
        }
        Some(url) => nats_runs(&data, &url),
    };
    for r in runs.iter().chain(&nats) {
        eprintln!(
            "sinks {}: writer {:.0}/s, delivered {:.0}/s",
            r.label, r.writer_rate, r.delivered_rate
        );
    }
    let floor = EventFormat::ALL
        .into_iter()
        .map(|f| (f, sink_floor(&data, f)))
        .collect();
    let mut destinations = Vec::new();
    if let Ok(url) = std::env::var("ASTHA_POSTGRES_URL") {
        destinations.push(postgres(&data, &url));
    } else {
        eprintln!("sinks: ASTHA_POSTGRES_URL not set, PostgreSQL not measured");
    }
    if let Ok(url) = std::env::var("ASTHA_AMQP_URL") {
        destinations.push(super::brokers::rabbitmq(&data, &url));
    } else {
        eprintln!("sinks: ASTHA_AMQP_URL not set, RabbitMQ not measured");
    }
    if let Ok(brokers) = std::env::var("ASTHA_KAFKA_BROKERS") {
        destinations.push(super::brokers::kafka(&data, &brokers));
    } else {
        eprintln!("sinks: ASTHA_KAFKA_BROKERS not set, Kafka not measured");
    }
    for d in &destinations {
        eprintln!(
            "sinks {}: {:.0}/s, raw client {:.0}/s batched, {:.0}/s row by row",
            d.label, d.delivered_rate, d.raw_batched_rate, d.raw_single_rate
        );
    }
    Sinks {
        runs,
        nats,
        capture_rate,
        floor,
        destinations,
    }
}

fn insert_all(conn: &Connection, data: &[Vec<rusqlite::types::Value>]) {
    let mut stmt = conn
        .prepare(&wide_insert_sql("t", COLUMNS))
        .expect("prepare");
    for chunk in data.chunks(100) {
        conn.execute_batch("BEGIN").expect("begin");
        for row in chunk {
            stmt.execute(params_from_iter(row.iter())).expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
}

pub(super) fn new_db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sinks.db");
    let conn = astha_core::db::open(&path).expect("open");
    create_wide_table(&conn, "t", COLUMNS).expect("table");
    path
}

fn capture_only(data: &[Vec<rusqlite::types::Value>]) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let conn = astha_core::db::open(&path).expect("open");
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "t")
        .expect("capture");
    let start = Instant::now();
    insert_all(&conn, data);
    data.len() as f64 / start.elapsed().as_secs_f64()
}

/// Writes `data` from a writer thread and waits until slot `sink` is at the head.
fn measure(path: &Path, sink: &str, data: &[Vec<rusqlite::types::Value>]) -> (f64, f64) {
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let writer = {
        let path = path.to_path_buf();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let conn = astha_core::db::open_writer(&path).expect("writer");
            insert_all(&conn, &data);
            Instant::now()
        })
    };
    let written = writer.join().expect("writer thread");
    let conn = astha_core::db::open(path).expect("open");
    let head = astha_core::log::head_lsn(&conn, "__cdc_log").expect("head");
    let done = super::wait_for(Duration::from_secs(600), || {
        conn.query_row(
            "SELECT position FROM __astha_slots WHERE name = ?1",
            [sink],
            |r| r.get::<_, i64>(0),
        )
        .map(|p| p >= head)
        .unwrap_or(false)
    });
    assert!(done, "the file sink never reached the head");
    let n = data.len() as f64;
    (
        n / (written - start).as_secs_f64(),
        n / start.elapsed().as_secs_f64(),
    )
}

/// `sink` (built by `build` for the context and the scratch directory) embedded as a
/// component named `file`, in the native format.
fn embedded(
    data: &[Vec<rusqlite::types::Value>],
    label: &str,
    build: impl FnOnce(&SinkContext, &Path) -> Box<dyn Component>,
) -> SinkRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let system = actix::System::new();
    let (writer_rate, delivered_rate) = system.block_on(async {
        let mut config = AsthaConfig {
            database: path.clone(),
            ..AsthaConfig::default()
        };
        config.monitored_tables = vec!["t".into()];
        let astha = Astha::new(config).expect("astha");
        astha.start().expect("start");
        let ctx = SinkContext::new("file", &path, "bench", &["t"]);
        let sink = build(&ctx, dir.path());
        astha.register_component(sink).await.expect("register");
        let rates = measure_async(&path, "file", data).await;
        astha.stop().await.expect("stop");
        rates
    });
    SinkRun {
        label: label.into(),
        format: EventFormat::Native,
        rows: data.len(),
        writer_rate,
        delivered_rate,
    }
}

/// [`measure`] off the actor system's thread, so the actors keep running.
pub(super) async fn measure_async(
    path: &Path,
    sink: &str,
    data: &[Vec<rusqlite::types::Value>],
) -> (f64, f64) {
    let path = path.to_path_buf();
    let sink = sink.to_string();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || measure(&path, &sink, &data))
        .await
        .expect("measure")
}

fn through_pipeline(data: &[Vec<rusqlite::types::Value>], format: EventFormat) -> SinkRun {
    let sink = |dir: &Path| {
        format!(
            "type = \"file\"\nformat = \"{format}\"\npath = \"{}\"\n",
            dir.join("out.jsonl").display()
        )
    };
    through_pipeline_to(data, &format!("`astha run`, format {format}"), format, sink)
}

/// `data` through `astha run`'s runner to the sink `sink` describes (its TOML keys but
/// `name`, given the scratch directory); the sink is named `file`.
fn through_pipeline_to(
    data: &[Vec<rusqlite::types::Value>],
    label: &str,
    format: EventFormat,
    sink: impl FnOnce(&Path) -> String,
) -> SinkRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"t\"]\ninstall = true\n\
         [[sinks]]\nname = \"file\"\n{}",
        path.display(),
        sink(dir.path())
    );
    let spec = PipelineSpec::parse(&text, |_| None).expect("pipeline");
    let engine = AsthaConfig::default();
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine).expect("plan");
    let system = actix::System::new();
    let (writer_rate, delivered_rate) = system.block_on(async {
        let running = checked.start(&engine).await.expect("start");
        let rates = measure_async(&path, "file", data).await;
        running.stop().await.expect("stop");
        rates
    });
    SinkRun {
        label: label.into(),
        format,
        rows: data.len(),
        writer_rate,
        delivered_rate,
    }
}

/// The NATS server to measure against, if one answers.
fn nats_url() -> Option<String> {
    let url = std::env::var("ASTHA_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url.trim_start_matches("nats://").to_string();
    std::net::TcpStream::connect(addr).ok().map(|_| url)
}

/// The NATS sink embedded and through `astha run`, each into a stream of its own.
fn nats_runs(data: &[Vec<rusqlite::types::Value>], url: &str) -> Vec<SinkRun> {
    let stream = || format!("BENCH_{:08X}", rand::random::<u32>());
    let embedded_stream = stream();
    let embedded_run = embedded(data, "NATS sink embedded as a component", |ctx, _| {
        let settings = serde_json::json!({
            "url": url,
            "database": embedded_stream.to_lowercase(),
            "stream": {"create": {"name": embedded_stream}},
        });
        SinkRegistry::builtin()
            .parse("file", "nats", settings)
            .and_then(|sink| sink.build(ctx))
            .expect("nats sink")
    });
    let pipeline_stream = stream();
    let pipeline_run = through_pipeline_to(
        data,
        "NATS sink through `astha run`",
        EventFormat::Native,
        |_| {
            format!(
                "type = \"nats\"\nurl = \"{url}\"\ndatabase = \"{}\"\n\
                 [sinks.stream.create]\nname = \"{pipeline_stream}\"\n",
                pipeline_stream.to_lowercase()
            )
        },
    );
    vec![embedded_run, pipeline_run]
}

/// The sink's floor in `format`: the captured changes read back, then encoded and
/// appended with one `fdatasync` per 500 lines by a plain loop.
fn sink_floor(data: &[Vec<rusqlite::types::Value>], format: EventFormat) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let changes = captured_changes(data);
    let encoder = Encoder::new(
        format,
        SourceInfo {
            name: "sinks".into(),
            db: "sinks".into(),
            identity: "bench".into(),
        },
    );
    let mut file = std::fs::File::create(dir.path().join("floor.jsonl")).expect("file");
    let start = Instant::now();
    for chunk in changes.chunks(500) {
        let lines = encoder.json_lines(chunk);
        file.write_all(&lines).expect("write");
        file.sync_data().expect("fdatasync");
    }
    changes.len() as f64 / start.elapsed().as_secs_f64()
}

/// `data` inserted into a captured wide table and read back from the log: the changes a
/// sink is handed, for the baselines that run with no Astha.
pub(super) fn captured_changes(data: &[Vec<rusqlite::types::Value>]) -> Vec<astha_core::Change> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let conn = astha_core::db::open(&path).expect("open");
    astha_core::capture::Capture::new("__cdc_log")
        .install(&conn, "t")
        .expect("capture");
    insert_all(&conn, data);
    let mut reader = LogReader::new("__cdc_log");
    let mut changes = Vec::with_capacity(data.len());
    let mut after = 0;
    loop {
        let batch = reader
            .read(&conn, after, BatchLimits::default(), None)
            .expect("read");
        if batch.changes.is_empty() {
            break;
        }
        after = batch.scanned_to;
        changes.extend(batch.changes);
    }
    changes
}

/// Rows per PostgreSQL transaction, for the sink (its `batch_size`) and the raw client.
const PG_BATCH: usize = 1000;

/// `astha run` into PostgreSQL, then the raw client on the same rows.
fn postgres(data: &[Vec<rusqlite::types::Value>], url: &str) -> DestinationRun {
    let pg = BenchPg::connect(url);
    pg.batch(
        "DROP SCHEMA IF EXISTS astha_bench CASCADE; DROP SCHEMA IF EXISTS astha_bench_raw CASCADE",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = new_db(dir.path());
    let text = format!(
        "[[sources]]\ndatabase = \"{}\"\ntables = [\"t\"]\ninstall = true\n\
         [[sinks]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{url}\"\n\
         schema = \"astha_bench\"\nbatch_size = {PG_BATCH}\n",
        path.display(),
    );
    let spec = PipelineSpec::parse(&text, |_| None).expect("pipeline");
    let engine = AsthaConfig::default();
    let checked = plan(&spec, &SinkRegistry::builtin(), &engine).expect("plan");
    let system = actix::System::new();
    let (_, delivered_rate) = system.block_on(async {
        let running = checked.start(&engine).await.expect("start");
        let rates = measure_async(&path, "pg", data).await;
        running.stop().await.expect("stop");
        rates
    });
    // The raw client: a table as the sink creates it, the same upserts, no Astha.
    let columns: Vec<String> = std::iter::once("id".to_string())
        .chain((0..COLUMNS).map(|j| format!("c{j}")))
        .collect();
    let types: Vec<(&str, tokio_postgres::types::Type)> =
        std::iter::once(("bigint", tokio_postgres::types::Type::INT8))
            .chain((0..COLUMNS).map(|j| {
                if j % 2 == 0 {
                    ("text", tokio_postgres::types::Type::TEXT)
                } else {
                    ("bigint", tokio_postgres::types::Type::INT8)
                }
            }))
            .collect();
    let defs: Vec<String> = columns
        .iter()
        .zip(&types)
        .map(|(c, (t, _))| format!("{c} {t}"))
        .collect();
    pg.batch(&format!(
        "CREATE SCHEMA astha_bench_raw; CREATE TABLE astha_bench_raw.t ({}, PRIMARY KEY (id))",
        defs.join(", ")
    ));
    let rows: Vec<Vec<Param>> = data
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => Param::Int(*i),
                    rusqlite::types::Value::Text(t) => Param::Text(t.clone()),
                    other => panic!("the wide table holds no {other:?}"),
                })
                .collect()
        })
        .collect();
    let upsert = |n: usize| {
        let mut values = Vec::new();
        for r in 0..n {
            let ps: Vec<String> = (0..columns.len())
                .map(|c| format!("${}", r * columns.len() + c + 1))
                .collect();
            values.push(format!("({})", ps.join(", ")));
        }
        let set: Vec<String> = columns[1..]
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "INSERT INTO astha_bench_raw.t ({}) VALUES {} ON CONFLICT (id) DO UPDATE SET {}",
            columns.join(", "),
            values.join(", "),
            set.join(", ")
        )
    };
    let run = |per_statement: usize| -> f64 {
        pg.batch("TRUNCATE astha_bench_raw.t");
        let start = Instant::now();
        for tx in rows.chunks(PG_BATCH) {
            pg.batch("BEGIN");
            for statement in tx.chunks(per_statement) {
                let params: Vec<(&(dyn ToSql + Sync), tokio_postgres::types::Type)> = statement
                    .iter()
                    .flat_map(|row| {
                        row.iter()
                            .zip(&types)
                            .map(|(p, (_, t))| (p as &(dyn ToSql + Sync), t.clone()))
                    })
                    .collect();
                pg.rt
                    .block_on(pg.client.execute_typed(&upsert(statement.len()), &params))
                    .expect("upsert");
            }
            pg.batch("COMMIT");
        }
        rows.len() as f64 / start.elapsed().as_secs_f64()
    };
    let raw_batched_rate = run(PG_BATCH);
    let raw_single_rate = run(1);
    pg.batch("DROP SCHEMA astha_bench CASCADE; DROP SCHEMA astha_bench_raw CASCADE");
    DestinationRun {
        label: "PostgreSQL 15 (`type = \"postgres\"`, loopback)".into(),
        rows: data.len(),
        delivered_rate,
        raw_batched_rate,
        raw_single_rate,
    }
}

/// A blocking tokio-postgres client for the raw-client baseline.
struct BenchPg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl BenchPg {
    fn connect(url: &str) -> BenchPg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect to ASTHA_POSTGRES_URL");
            tokio::spawn(conn);
            client
        });
        BenchPg { rt, client }
    }

    fn batch(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .expect("postgres");
    }
}

/// The suite's Markdown section.
pub fn report(s: &Sinks) -> String {
    let mut out = String::from(
        "### Commit to file sink (`astha run` and embedded, per format)\n\n\
         16-column table, 100-row transactions, writer thread in the same process, file \
         sink with its defaults (500 lines per batch, `fdatasync` before each confirmation). \
         Rate: changes from the first commit until the sink's slot is durably at the head. \
         `floor`: the same changes encoded and appended with one `fdatasync` per 500 lines \
         by a plain loop, no Astha (same run).\n\n",
    );
    out.push_str(&format!(
        "Writer with capture, nothing reading: {:.0} rows/s (best of 3).\n\n\
         | case | rows | writer rate meanwhile | commit → file | floor for the format | share of floor |\n\
         |---|---|---|---|---|---|\n",
        s.capture_rate
    ));
    for r in &s.runs {
        let floor = s
            .floor
            .iter()
            .find(|(f, _)| *f == r.format)
            .map_or(0.0, |(_, v)| *v);
        out.push_str(&format!(
            "| {} | {} | {:.0}/s | **{:.0}/s** | {:.0}/s | {:.0}% |\n",
            r.label,
            r.rows,
            r.writer_rate,
            r.delivered_rate,
            floor,
            r.delivered_rate / floor * 100.0
        ));
    }
    out.push('\n');
    if !s.nats.is_empty() {
        out.push_str(
            "### Commit to NATS JetStream (`astha run` and embedded)\n\n\
             Same table and writer; the NATS sink with its defaults (a batch of messages \
             published, then every JetStream acknowledgement awaited before the batch is \
             confirmed), native format, a local `nats-server -js` with file storage. Rate: \
             changes from the first commit until the sink's slot is durably at the head.\n\n\
             | case | rows | writer rate meanwhile | commit → JetStream |\n|---|---|---|---|\n",
        );
        for r in &s.nats {
            out.push_str(&format!(
                "| {} | {} | {:.0}/s | **{:.0}/s** |\n",
                r.label, r.rows, r.writer_rate, r.delivered_rate
            ));
        }
        out.push('\n');
    }
    if !s.destinations.is_empty() {
        out.push_str(&format!(
            "Destinations on real servers, same run, same rows: commit → slot at the head \
             through `astha run`, beside the same client writing the same rows with no Astha: \
             batched as the sink batches them (PostgreSQL: multi-row upserts, {PG_BATCH} rows \
             per transaction; RabbitMQ: 256 messages, then their confirms; Kafka: 1000 \
             records, then their acknowledgements), and one at a time (PostgreSQL: one row per \
             statement; the brokers: each message awaits its confirm, first 5000 only).\n\n\
             | destination | rows | `astha run` | raw client, batched | share | raw client, row by row |\n\
             |---|---|---|---|---|---|\n"
        ));
        for d in &s.destinations {
            out.push_str(&format!(
                "| {} | {} | **{:.0}/s** | {:.0}/s | {:.0}% | {:.0}/s |\n",
                d.label,
                d.rows,
                d.delivered_rate,
                d.raw_batched_rate,
                d.delivered_rate / d.raw_batched_rate * 100.0,
                d.raw_single_rate
            ));
        }
        out.push('\n');
    }
    out
}
