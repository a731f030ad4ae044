//! `astha replay --db app.db --from-lsn N | --from-time T`: prints the changes of a range
//! of the retained change log again, through the same encoders and lines as `watch`.
//!
//! It reads the database read-only, moves no slot and holds nothing back. The range is
//! all there or refused: a start before the oldest retained row is an error naming the
//! oldest one and the retention settings ([`astha_core::retention`]); rows of the range
//! that cannot be decoded are counted on stderr and make the exit status non-zero.

use std::io::Write;
use std::path::{Path, PathBuf};

use astha_core::format::{Encoder, SourceInfo};
use astha_core::log::BatchLimits;
use astha_core::retention;
use clap::Args;

use super::errors::{log_table, open_read_only};
use super::watch::{change_line, event_format, WatchFormat};
use super::CliError;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The SQLite database whose log is replayed.
    #[arg(long = "db")]
    pub database: PathBuf,
    /// First LSN of the range (inclusive).
    #[arg(
        long,
        required_unless_present = "from_time",
        conflicts_with = "from_time"
    )]
    pub from_lsn: Option<i64>,
    /// Start at the first change written at or after this time (UTC, e.g.
    /// 2026-12-07T02:15:00Z, or with an offset such as +01:00).
    #[arg(long)]
    pub from_time: Option<String>,
    /// Last LSN of the range (inclusive). Default: the head when the replay starts.
    #[arg(long, conflicts_with = "to_time")]
    pub to_lsn: Option<i64>,
    /// End with the last change written at or before this time.
    #[arg(long)]
    pub to_time: Option<String>,
    /// Only these tables (comma separated). Default: every table.
    #[arg(long, alias = "tables", value_delimiter = ',')]
    pub table: Vec<String>,
    /// `native` (Astha's JSON), `debezium`, `cloudevents` or `pretty`.
    #[arg(long, value_enum, default_value = "json")]
    pub format: WatchFormat,
    /// With `--format debezium`: wrap each event in `{"schema", "payload"}`.
    #[arg(long)]
    pub debezium_schemas: bool,
    /// Change-log table name (default: the configuration's, `__cdc_log`).
    #[arg(long)]
    pub log_table: Option<String>,
}

pub fn run(config: Option<&Path>, args: ReplayArgs) -> Result<(), CliError> {
    let path = &args.database;
    let log = log_table(config, args.log_table.clone())?;
    let conn = open_read_only(path)?;
    let on = |e| CliError::on(path, e);
    if !astha_core::schema::is_plain_table(&conn, &log).map_err(on)? {
        return Err(CliError::Message(format!(
            "{} has no change log {log:?}: nothing was ever captured there",
            path.display()
        )));
    }
    let from = match (args.from_lsn, &args.from_time) {
        (Some(lsn), _) => lsn,
        (None, Some(time)) => {
            let at = retention::parse_time(&conn, time).map_err(on)?;
            retention::check_from_time(&conn, &log, at).map_err(on)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let to = match (args.to_lsn, &args.to_time) {
        (Some(lsn), _) => lsn,
        (None, Some(time)) => {
            let at = retention::parse_time(&conn, time).map_err(on)?;
            retention::last_lsn_at_or_before(&conn, &log, at).map_err(on)?
        }
        (None, None) => astha_core::log::head_lsn(&conn, &log).map_err(on)?,
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let encoder = Encoder::new(
        event_format(args.format),
        SourceInfo {
            name: stem.clone(),
            db: stem,
            identity: stream_id(&conn).map_err(on)?,
        },
    )
    .with_debezium_schemas(args.debezium_schemas);
    let tables = (!args.table.is_empty()).then_some(args.table.as_slice());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let done = astha_core::replay::replay(
        &conn,
        &log,
        from,
        to,
        tables,
        BatchLimits::default(),
        &mut |change| {
            writeln!(out, "{}", change_line(args.format, &encoder, change))
                .map_err(|e| astha_core::CoreError::Invalid(format!("cannot write to stdout: {e}")))
        },
    )
    .map_err(on)?;
    out.flush()?;
    // A closed stderr must not fail a replay whose output was written (`eprintln!`
    // panics then).
    let _ = writeln!(
        std::io::stderr(),
        "replayed {} change(s) of LSN {from}..={to}{}",
        done.changes,
        if done.incomplete > 0 {
            format!(
                ", {} marked incomplete (a schema change by another connection)",
                done.incomplete
            )
        } else {
            String::new()
        }
    );
    if !done.malformed.is_empty() {
        let lsns: Vec<String> = done.malformed.iter().map(|(l, _)| l.to_string()).collect();
        return Err(CliError::Message(format!(
            "{} row(s) of the range could not be decoded and were not printed (LSN {}; first \
             reason: {}); a running Astha moves them to the dead letters (`astha dead-letters list`)",
            done.malformed.len(),
            lsns.join(", "),
            done.malformed[0].1
        )));
    }
    Ok(())
}

/// The stream identity `watch` gives its events, read without writing: `identity:epoch`,
/// or what exists of it in a database Astha never ran on.
fn stream_id(conn: &rusqlite::Connection) -> astha_core::Result<String> {
    let identity = astha_components::sinks::identity::read(conn)?.unwrap_or_default();
    let epoch = astha_core::log_state::read(conn)?
        .map(|s| s.epoch)
        .unwrap_or_default();
    Ok(format!("{identity}:{epoch}"))
}
