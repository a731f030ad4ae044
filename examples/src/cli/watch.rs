//! `astha watch <db>`: change-data capture for any SQLite database, streamed to stdout as
//! JSON lines (or aligned text), in commit order.
//!
//! Without `--slot` the watcher uses a slot of its own that is dropped when it exits, and
//! leased meanwhile (a watcher killed with -9 loses it `lease_ttl` later), so it never
//! holds back log cleanup for long; with `--slot NAME` the position is kept and a later
//! `astha watch --slot NAME` resumes exactly where this one stopped.
//!
//! `--snapshot initial` first prints the watched tables' current rows (`READ`, debezium
//! `r`), then every change after them: none missed, none printed twice. A progress bar
//! on stderr (when it is a terminal) follows the snapshot.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use astha_actors::http::{EventHub, SseComponent};
use astha_actors::{Astha, Component, ComponentError};
use astha_core::capture::Capture;
use astha_core::config::AsthaConfig;
use astha_core::format::markers::Markers;
use astha_core::format::{Encoder, EventFormat, SourceInfo};
use astha_core::snapshot::SnapshotMode;
use astha_core::Change;
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use tokio::sync::watch;

use super::errors::open_existing;
use super::http_access::HttpAccess;
use super::{say, CliError};

/// What `watch` prints for each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// Astha's native JSON, one document per line.
    #[value(alias = "native")]
    Json,
    /// The Debezium change-event envelope, one per line.
    Debezium,
    /// CloudEvents 1.0 structured events, one per line.
    Cloudevents,
    /// Aligned text for people.
    Pretty,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The SQLite database to watch.
    pub database: PathBuf,
    /// Tables to watch (comma separated). Default: every captured table.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Install capture triggers on `--tables` if they are missing (they stay installed).
    #[arg(long)]
    pub install: bool,
    /// Capture the row an `INSERT OR REPLACE` removes (as a DELETE before the INSERT)
    /// even from connections without `PRAGMA recursive_triggers=ON`, the default of
    /// Python's sqlite3 and most drivers, where SQLite fires no delete trigger for it.
    /// `UPDATE OR REPLACE` likewise. Costs every captured INSERT and UPDATE a lookup
    /// per unique key (about doubling the trigger's cost). Shapes the triggers
    /// (re)installed; same as `exact_replace = true` in the config.
    #[arg(long)]
    pub exact_replace: bool,
    /// `json` (Astha's native JSON), `debezium` (the Debezium envelope), `cloudevents`
    /// (CloudEvents 1.0 structured JSON) or `pretty` (aligned text for people).
    #[arg(long, value_enum, default_value = "json")]
    pub format: WatchFormat,
    /// With `--format debezium`: wrap each event in `{"schema", "payload"}`, as Kafka
    /// Connect's JSON converter writes it with `schemas.enable=true`.
    #[arg(long)]
    pub debezium_schemas: bool,
    /// Print Debezium's BEGIN and END transaction markers (`{"status": "BEGIN", ...}`)
    /// as lines around each marked transaction's changes (in `pretty`: `BEGIN` and `END`
    /// lines). Only transactions whose boundaries are exact get them: those written
    /// through Astha's transaction writer or the `__astha_tx` SQL convention.
    #[arg(long)]
    pub transaction_events: bool,
    /// Keep the position in this durable slot and resume from it next time.
    #[arg(long)]
    pub slot: Option<String>,
    /// Start before the oldest change still in the log instead of at the head (new slots only).
    #[arg(long, conflicts_with = "snapshot")]
    pub from_beginning: bool,
    /// Start a new slot at a point the log still holds: `lsn:N` (deliver from LSN N on)
    /// or `time:2026-12-07T02:15:00Z` (from the first change written at or after it).
    /// Refused when the log no longer reaches back there. New slots only.
    #[arg(long, conflicts_with_all = ["snapshot", "from_beginning"])]
    pub start_at: Option<astha_core::retention::StartAt>,
    /// Keep log rows this long after every slot passed them, for `astha replay` and
    /// `astha state-at` (`[retention] keep_for`; e.g. "24h").
    #[arg(long, value_parser = astha_core::config::parse_duration)]
    pub keep_for: Option<std::time::Duration>,
    /// Keep the newest this many LSNs of the log after every slot passed them
    /// (`[retention] keep_rows`).
    #[arg(long)]
    pub keep_rows: Option<u64>,
    /// Print the tables' current rows first: `initial` (then the changes after them),
    /// `initial_only` (then exit), `when_needed` (as `initial`, and again when the slot's
    /// position was cleaned away) or `never`.
    #[arg(long, value_parser = parse_snapshot_mode)]
    pub snapshot: Option<SnapshotMode>,
    /// Exit after this many changes.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Also serve /metrics, /health, /events (SSE) and /ws (WebSocket) on this address
    /// (e.g. 127.0.0.1:9187).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    #[command(flatten)]
    pub access: HttpAccess,
    /// Let pages of this origin read the HTTP endpoints (CORS; repeat or separate with
    /// commas; `*` for any).
    #[arg(long, value_delimiter = ',')]
    pub http_cors_origin: Vec<String>,
    /// Most live clients (`/events` and `/ws` together) at once; more are refused with 503.
    #[arg(long, default_value_t = astha_actors::http::DEFAULT_MAX_CLIENTS)]
    pub http_max_sse_clients: usize,
    /// The format of `/events` and `/ws`: `native`, `debezium` or `cloudevents`. Default:
    /// `--format`'s (native for `json` and `pretty`).
    #[arg(long)]
    pub http_format: Option<EventFormat>,
}

fn parse_snapshot_mode(text: &str) -> Result<SnapshotMode, String> {
    text.parse()
}

pub fn run(config: Option<&Path>, args: WatchArgs) -> Result<(), CliError> {
    let path = args.database.clone();
    let conn = open_existing(&path)?;
    let mut config = AsthaConfig::load(config)?;
    config.exact_replace |= args.exact_replace;
    if let Some(keep_for) = args.keep_for {
        config.retention.keep_for = keep_for;
    }
    if let Some(keep_rows) = args.keep_rows {
        config.retention.keep_rows = keep_rows;
    }
    let capture = Capture::new(&config.log_table).with_exact_replace(config.exact_replace);
    let tables = resolve_tables(&conn, &capture, &args)?;
    drop(conn);
    config.database = path.clone();
    config.monitored_tables = if args.install {
        tables.clone()
    } else {
        Vec::new()
    };
    let system = actix::System::new();
    system.block_on(watch_async(config, tables, args))
}

fn resolve_tables(
    conn: &rusqlite::Connection,
    capture: &Capture,
    args: &WatchArgs,
) -> Result<Vec<String>, CliError> {
    let path = &args.database;
    let on = |e| CliError::on(path, e);
    let captured = capture.captured_tables(conn).map_err(on)?;
    if args.tables.is_empty() {
        if captured.is_empty() {
            return Err(CliError::Message(format!(
                "no table of {} is captured; name some with --tables and add --install",
                path.display()
            )));
        }
        return Ok(captured);
    }
    for table in &args.tables {
        if !astha_core::schema::is_plain_table(conn, table).map_err(on)? {
            let reason = astha_core::schema::not_capturable_reason(conn, table).map_err(on)?;
            return Err(CliError::Message(format!("{}: {reason}", path.display())));
        }
        let (_, key) = astha_core::schema::live_columns(conn, table).map_err(on)?;
        if key.is_empty() {
            say(&format!(
                "warning: table {table:?} has no primary key: consumers cannot tell identical \
                 rows apart (a change's key is the whole row)\n"
            ));
        }
        if !args.install && !captured.contains(table) {
            return Err(CliError::Message(format!(
                "table {table:?} has no capture; rerun with --install to create its triggers"
            )));
        }
    }
    Ok(args.tables.clone())
}

async fn watch_async(
    config: AsthaConfig,
    tables: Vec<String>,
    args: WatchArgs,
) -> Result<(), CliError> {
    let mut shutdown = super::shutdown::Shutdown::install()?;
    let path = config.database.clone();
    let log_table = config.log_table.clone();
    // Settings are checked before anything starts.
    let http_config = match args.http {
        Some(bind) => Some(args.access.config(bind, args.http_cors_origin.clone())?),
        None => None,
    };
    let astha = Astha::new(config).map_err(|e| CliError::astha(&path, e))?;
    astha.start().map_err(|e| CliError::astha(&path, e))?;
    let durable = args.slot.is_some();
    let name = args
        .slot
        .clone()
        .unwrap_or_else(|| format!("watch-{}", std::process::id()));
    if args.from_beginning {
        let name = name.clone();
        astha
            .store()
            .write_blocking(|conn| {
                if astha_core::slots::get(conn, &name)?.is_none() {
                    astha_core::slots::create(
                        conn,
                        &log_table,
                        &name,
                        astha_core::slots::SlotStart::Beginning,
                    )?;
                }
                Ok(())
            })
            .map_err(|e| CliError::on(&path, e))?;
    }
    if let Some(point) = args.start_at.clone() {
        let name = name.clone();
        let log_table = log_table.clone();
        astha
            .store()
            .write_blocking(move |conn| point.create_slot(conn, &log_table, &name))
            .map_err(|e| CliError::on(&path, e))?;
    }
    let (done_tx, mut done_rx) = watch::channel(args.limit == Some(0));
    let identity = astha
        .store()
        .write_blocking(|conn| astha_components::sinks::identity::stream_id(conn, &log_table))
        .map_err(|e| CliError::on(&path, e))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = event_format(args.format);
    let source = SourceInfo {
        name: stem.clone(),
        db: stem,
        identity,
    };
    let encoder = Encoder::new(format, source.clone())
        .with_debezium_schemas(args.debezium_schemas)
        .with_transaction_events(
            args.transaction_events
                .then(|| Markers::new(Some(tables.clone()))),
        );
    let output_failed = Arc::new(std::sync::Mutex::new(None));
    let http = match http_config {
        Some(http_config) => {
            let hub = Arc::new(EventHub::new(1024).with_max_clients(args.http_max_sse_clients));
            let (handle, addr) = astha_actors::http::start(
                &http_config,
                astha.stats(),
                astha.store().clone(),
                hub.clone(),
            )?;
            say(&format!(
                "serving /metrics, /health, /events and /ws on http://{addr}\n"
            ));
            let live = SseComponent::new(hub, tables.clone()).with_encoder(
                Encoder::new(args.http_format.unwrap_or(format), source)
                    .with_debezium_schemas(args.debezium_schemas),
            );
            astha
                .register_component(Box::new(live))
                .await
                .map_err(|e| CliError::astha(&path, e))?;
            Some(handle)
        }
        None => None,
    };
    let printer = Printer {
        output_failed: output_failed.clone(),
        name: name.clone(),
        durable,
        tables,
        format: args.format,
        encoder,
        remaining: args.limit,
        done: done_tx,
    };
    let snapshot = args.snapshot.unwrap_or_default();
    astha
        .register_component_with(Box::new(printer), snapshot)
        .await
        .map_err(|e| CliError::astha(&path, e))?;
    if let Err(e) = astha.check_subscriptions() {
        // A throwaway slot must not outlive the run and hold back log cleanup.
        if !durable {
            let _ = astha.unregister_component(&name).await;
        }
        return Err(CliError::astha(&path, e));
    }
    say(&format!(
        "watching {} (slot {name}{}); Ctrl-C, SIGTERM or SIGHUP stops\n",
        path.display(),
        if durable { ", durable" } else { "" }
    ));
    let mut report = SnapshotReport::default();
    let snapshot_over = snapshot_progress(
        &astha,
        &name,
        snapshot == SnapshotMode::InitialOnly,
        &mut report,
    );
    let failure = tokio::select! {
        _ = shutdown.signalled() => None,
        _ = done_rx.wait_for(|done| *done) => None,
        reason = astha.failed() => Some(reason),
        // The snapshot is all `initial_only` asked for.
        _ = snapshot_over => None,
    };
    report.last_look(&astha, &name);
    if !durable {
        astha
            .unregister_component(&name)
            .await
            .map_err(|e| CliError::astha(&path, e))?;
    }
    if let Some(handle) = http {
        handle.stop(true).await;
        // The SSE feed is a live view: its slot goes with the process, so it never holds
        // log cleanup back after `watch` ends.
        astha
            .unregister_component("sse")
            .await
            .map_err(|e| CliError::astha(&path, e))?;
    }
    astha.stop().await.map_err(|e| CliError::astha(&path, e))?;
    if let Some(reason) = failure {
        return Err(CliError::Message(format!("{}: {reason}", path.display())));
    }
    let output_failed = output_failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(err) = output_failed {
        return Err(CliError::Message(format!(
            "cannot write to stdout: {err}; stopped (what was not printed stays in the log{})",
            if durable {
                " for the next run of this slot"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// Follows `name`'s snapshots (the initial one, and any a signal asks for later) with a
/// progress bar on stderr (drawn only on a terminal). Returns once a snapshot is
/// delivered if `until_one` (there is none: at once), and never otherwise.
async fn snapshot_progress(
    astha: &Astha,
    name: &str,
    until_one: bool,
    report: &mut SnapshotReport,
) {
    while !report.look(astha, name, until_one) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What `watch` has shown of a component's snapshots: the bar of the one running, and
/// the last one whose end was said (so a finished snapshot is said once).
#[derive(Default)]
struct SnapshotReport {
    shown: Option<(indicatif::ProgressBar, i64)>,
    said: Option<i64>,
}

impl SnapshotReport {
    /// Looks at `name`'s snapshot once and shows what changed since the last look. True
    /// when `until_one` and a snapshot was delivered, or there is none.
    fn look(&mut self, astha: &Astha, name: &str, until_one: bool) -> bool {
        let now = astha.component_info(name).and_then(|c| c.snapshot);
        match (&self.shown, now) {
            (None, None) => until_one,
            // Started and delivered between two looks: no bar, but its end is said.
            (None, Some(p)) if p.finished && self.said != Some(p.lsn) => {
                say(&format!("snapshot of {} rows delivered\n", p.total));
                self.said = Some(p.lsn);
                until_one
            }
            (None, Some(p)) if !p.finished => {
                let bar = indicatif::ProgressBar::new(p.total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "snapshot {msg} [{bar:30}] {pos}/{len} rows ({per_sec}, {eta} left)",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_message(p.tables.join(","));
                self.shown = Some((bar, p.lsn));
                false
            }
            (None, Some(_)) => until_one,
            (Some((bar, lsn)), Some(p)) if p.lsn == *lsn => {
                bar.set_position(p.done);
                if !p.finished {
                    return false;
                }
                bar.finish_and_clear();
                say(&format!("snapshot of {} rows delivered\n", p.total));
                self.said = Some(p.lsn);
                self.shown = None;
                until_one
            }
            _ => false,
        }
    }

    /// The look taken as `watch` stops: a snapshot delivered since the last look (a run
    /// that stops within the 100 ms between two) is still said, and a bar is cleared.
    fn last_look(&mut self, astha: &Astha, name: &str) {
        self.look(astha, name, false);
        if let Some((bar, _)) = self.shown.take() {
            bar.finish_and_clear();
        }
    }
}

/// The component that prints. It writes each change before confirming it, so a durable
/// slot never moves past a change that was not printed.
struct Printer {
    /// Why stdout failed, if it did: `watch` then exits non-zero.
    output_failed: Arc<std::sync::Mutex<Option<std::io::Error>>>,
    name: String,
    /// `--slot` given: the position is kept; otherwise the slot is leased.
    durable: bool,
    tables: Vec<String>,
    format: WatchFormat,
    encoder: Encoder,
    remaining: Option<u64>,
    done: watch::Sender<bool>,
}

#[async_trait]
impl Component for Printer {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<String> {
        self.tables.clone()
    }

    fn durable(&self) -> bool {
        self.durable
    }

    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        if self.remaining == Some(0) {
            // Past the limit: leave the change for the next watcher.
            return Err(ComponentError::transient("watch limit reached"));
        }
        let markers = self.encoder.markers(change);
        let line = change_line(self.format, &self.encoder, change);
        let marker = |json: &serde_json::Value| match self.format {
            WatchFormat::Pretty => pretty_marker(json),
            _ => json.to_string(),
        };
        let mut text = String::new();
        for part in [
            markers.begin.as_ref().map(marker),
            Some(line),
            markers.end.as_ref().map(marker),
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(&part);
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        if let Err(err) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            // stdout is gone (`| head` exited, a full disk): stop instead of retrying.
            let message = format!("stdout: {err}");
            self.output_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(err);
            let _ = self.done.send(true);
            return Err(ComponentError::transient(message));
        }
        if let Some(n) = &mut self.remaining {
            *n -= 1;
            if *n == 0 {
                let _ = self.done.send(true);
            }
        }
        Ok(())
    }
}

/// One change as `format` prints it (`replay` prints the same lines as `watch`).
pub(super) fn change_line(format: WatchFormat, encoder: &Encoder, change: &Change) -> String {
    match format {
        WatchFormat::Pretty => format!(
            "{:>8}  {:<6}  {:<20}  {}",
            change.lsn,
            change.op,
            change.table,
            serde_json::Value::Object(change.row().map(|r| r.to_json()).unwrap_or_default())
        ),
        _ => encoder.encode(change).to_string(),
    }
}

/// The event format behind a `watch` output format (`pretty` prints native changes).
pub(super) fn event_format(format: WatchFormat) -> EventFormat {
    match format {
        WatchFormat::Debezium => EventFormat::Debezium,
        WatchFormat::Cloudevents => EventFormat::CloudEvents,
        WatchFormat::Json | WatchFormat::Pretty => EventFormat::Native,
    }
}

/// A marker (Debezium's value, as the native encoder writes it) as a `pretty` line:
/// `BEGIN  transaction 3` or `END    transaction 3  (3 changes: shop.a 2, shop.b 1)`.
fn pretty_marker(json: &serde_json::Value) -> String {
    let status = json["status"].as_str().unwrap_or_default();
    let id = json["id"].as_str().unwrap_or_default();
    let mut line = format!("{:>8}  {status:<6}  transaction {id}", "");
    if let Some(tables) = json["data_collections"].as_array() {
        let parts: Vec<String> = tables
            .iter()
            .map(|t| {
                format!(
                    "{} {}",
                    t["data_collection"].as_str().unwrap_or_default(),
                    t["event_count"]
                )
            })
            .collect();
        line.push_str(&format!(
            "  ({} changes: {})",
            json["event_count"],
            parts.join(", ")
        ));
    }
    line
}
