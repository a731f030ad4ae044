//! HTTP load: a component catching up on a large backlog from the log, timed alone and
//! while many clients scrape `/metrics` as fast as they can (issue 14). The catch-up
//! reads run on the store's read threads; `/metrics` must not take them, and must cost
//! the same whatever the backlog. Unloaded and loaded runs alternate, on identical
//! fresh databases, in the same process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use astha_actors::http::{self, EventHub, HttpConfig};
use astha_actors::{Astha, Component, ComponentError};
use astha_core::config::AsthaConfig;
use astha_core::Change;
use async_trait::async_trait;
use rusqlite::params_from_iter;

use super::{create_wide_table, wide_insert_sql, wide_row, Mode};

/// Columns of the table in the backlog.
const COLUMNS: usize = 4;

/// One catch-up.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// Clients scraping `/metrics` meanwhile.
    pub clients: usize,
    pub elapsed: Duration,
    /// Scrapes answered during the catch-up.
    pub scrapes: u64,
    /// Scrapes that failed (connection error or a status other than 200).
    pub failed: u64,
}

/// The suite's figures.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    pub changes: usize,
    pub runs: Vec<CatchUp>,
}

impl HttpLoad {
    fn best(&self, loaded: bool) -> Option<Duration> {
        self.runs
            .iter()
            .filter(|r| (r.clients > 0) == loaded)
            .map(|r| r.elapsed)
            .min()
    }

    fn median(&self, loaded: bool) -> Option<Duration> {
        let mut times: Vec<Duration> = self
            .runs
            .iter()
            .filter(|r| (r.clients > 0) == loaded)
            .map(|r| r.elapsed)
            .collect();
        times.sort();
        times.get(times.len() / 2).copied()
    }

    /// Best loaded catch-up time over best unloaded, in percent.
    pub fn slowdown_pct(&self) -> Option<f64> {
        Some((self.best(true)?.as_secs_f64() / self.best(false)?.as_secs_f64() - 1.0) * 100.0)
    }

    /// The same with medians.
    pub fn median_slowdown_pct(&self) -> Option<f64> {
        Some((self.median(true)?.as_secs_f64() / self.median(false)?.as_secs_f64() - 1.0) * 100.0)
    }
}

/// Runs the suite: three catch-ups alone and three under load, alternating.
pub fn run(mode: Mode) -> HttpLoad {
    let (changes, clients) = if mode.is_quick() {
        (20_000, 8)
    } else {
        (400_000, 32)
    };
    let mut runs = Vec::new();
    for load in [0, clients, 0, clients, 0, clients] {
        let run = catch_up(changes, load);
        eprintln!(
            "http: catch-up of {changes} changes with {load} /metrics clients: {:.2} s, {} scrapes ({} failed)",
            run.elapsed.as_secs_f64(),
            run.scrapes,
            run.failed
        );
        runs.push(run);
    }
    HttpLoad { changes, runs }
}

fn catch_up(changes: usize, clients: usize) -> CatchUp {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("http.db");
    {
        let conn = astha_core::db::open(&path).expect("open");
        create_wide_table(&conn, "t", COLUMNS).expect("table");
        astha_core::capture::Capture::new("__cdc_log")
            .install(&conn, "t")
            .expect("capture");
        let mut stmt = conn
            .prepare(&wide_insert_sql("t", COLUMNS))
            .expect("prepare");
        for chunk in (1..=changes as i64).collect::<Vec<_>>().chunks(1000) {
            conn.execute_batch("BEGIN").expect("begin");
            for &i in chunk {
                let mut row = vec![rusqlite::types::Value::Integer(i)];
                row.extend(wide_row(i, COLUMNS));
                stmt.execute(params_from_iter(row.iter())).expect("insert");
            }
            conn.execute_batch("COMMIT").expect("commit");
        }
    }
    let mut config = AsthaConfig {
        database: path.clone(),
        ..AsthaConfig::default()
    };
    config.monitored_tables = vec!["t".into()];
    config.subscriptions.clear();
    let system = actix::System::new();
    system.block_on(async move {
        let astha = Astha::new(config).expect("astha");
        astha.start().expect("start");
        let (server, addr) = http::start(
            &HttpConfig {
                bind: "127.0.0.1:0".parse().expect("address"),
                ..HttpConfig::default()
            },
            astha.stats(),
            astha.store().clone(),
            Arc::new(EventHub::new(16)),
        )
        .expect("http");
        let stop = Arc::new(AtomicBool::new(false));
        let (scrapes, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let scrapers: Vec<_> = (0..clients)
            .map(|_| {
                let (stop, scrapes, failed) = (stop.clone(), scrapes.clone(), failed.clone());
                std::thread::spawn(move || scrape_until(addr, &stop, &scrapes, &failed))
            })
            .collect();
        // The scrapers are running before the catch-up starts.
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let before = (
            scrapes.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        astha
            .store()
            .write(|conn| {
                astha_core::slots::create(
                    conn,
                    "__cdc_log",
                    "catch-up",
                    astha_core::slots::SlotStart::Beginning,
                )
            })
            .await
            .expect("slot");
        let seen = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        astha
            .register_component(Box::new(Counting { seen: seen.clone() }))
            .await
            .expect("register");
        let deadline = start + Duration::from_secs(600);
        while seen.load(Ordering::Relaxed) < changes && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = start.elapsed();
        assert!(
            seen.load(Ordering::Relaxed) >= changes,
            "the catch-up did not finish"
        );
        let after = (
            scrapes.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        stop.store(true, Ordering::Relaxed);
        for scraper in scrapers {
            scraper.join().expect("scraper");
        }
        server.stop(true).await;
        let _ = astha.stop().await;
        CatchUp {
            clients,
            elapsed,
            scrapes: after.0 - before.0,
            failed: after.1 - before.1,
        }
    })
}

/// Scrapes `/metrics` back to back on one keep-alive connection (a new one after an
/// error) until `stop`.
fn scrape_until(addr: SocketAddr, stop: &AtomicBool, scrapes: &AtomicU64, failed: &AtomicU64) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = TcpStream::connect(addr).ok().map(|s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                BufReader::new(s)
            });
        }
        let ok = conn.as_mut().is_some_and(|c| scrape(c).unwrap_or(false));
        if ok {
            scrapes.fetch_add(1, Ordering::Relaxed);
        } else {
            failed.fetch_add(1, Ordering::Relaxed);
            conn = None;
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One GET on a keep-alive connection: true for a 200 with its whole body read.
fn scrape(conn: &mut BufReader<TcpStream>) -> std::io::Result<bool> {
    conn.get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let ok = line.starts_with("HTTP/1.1 200");
    let mut length = 0;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Ok(false);
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok(ok && length > 0)
}

/// Counts what it confirms.
struct Counting {
    seen: Arc<AtomicUsize>,
}

#[async_trait]
impl Component for Counting {
    fn name(&self) -> &str {
        "catch-up"
    }

    fn subscriptions(&self) -> Vec<String> {
        vec!["t".into()]
    }

    async fn on_event(&mut self, _change: &Change) -> Result<(), ComponentError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The suite's section of the report.
pub fn report(load: &HttpLoad) -> String {
    let mut out = format!(
        "### Catch-up under `/metrics` load (issue 14)\n\n\
         A component registered with a slot at the beginning of a {}-change backlog \
         ({COLUMNS}-column table) reads it all from the log on the store's read threads. \
         Loaded runs: that many client threads in the same process scrape `/metrics` back \
         to back, each on a keep-alive connection. Runs alternate, each on a fresh \
         identical database.\n\n\
         | /metrics clients | catch-up time | scrapes answered meanwhile | failed |\n\
         |---|---|---|---|\n",
        load.changes
    );
    for r in &load.runs {
        out.push_str(&format!(
            "| {} | {:.2} s | {} | {} |\n",
            r.clients,
            r.elapsed.as_secs_f64(),
            r.scrapes,
            r.failed
        ));
    }
    if let (Some(best), Some(median)) = (load.slowdown_pct(), load.median_slowdown_pct()) {
        out.push_str(&format!(
            "\nLoaded over unloaded: best **{best:+.0}%**, median {median:+.0}% (target: within +20%).\n"
        ));
    }
    out.push('\n');
    out
}
