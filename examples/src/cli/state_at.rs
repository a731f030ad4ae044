//! `astha state-at --db app.db --table t --lsn N | --time T`: a table's rows as they were
//! right after LSN N (or the last change at or before time T), rebuilt from its current
//! rows and the retained change log ([`astha_core::state_at`]).
//!
//! Rows go to stdout as JSON lines (`{column: value}` in the lossless form of `watch`), or
//! into a new SQLite file with `--out`, as a table created with the original's `CREATE
//! TABLE` plus a `__astha_state_at` row that says what the rows are. The source is read
//! read-only. A summary goes to stderr; a result that is not exact (changes marked
//! incomplete, rows that could not be decoded or matched) says so there, in the file, and
//! in a non-zero exit status, after the rows are written.

use std::io::Write;
use std::path::{Path, PathBuf};

use astha_core::ident::quote_ident;
use astha_core::retention;
use astha_core::state_at::StateAt;
use clap::{Args, ValueEnum};

use super::errors::{log_table, open_read_only};
use super::CliError;

/// How `state-at` writes the rows when there is no `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RowsFormat {
    /// One JSON object per row.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct StateAtArgs {
    /// The SQLite database holding the table and its change log.
    #[arg(long = "db")]
    pub database: PathBuf,
    /// The table to rebuild.
    #[arg(long)]
    pub table: String,
    /// The state right after this LSN.
    #[arg(long, required_unless_present = "time", conflicts_with = "time")]
    pub lsn: Option<i64>,
    /// The state after the last change written at or before this time (UTC, e.g.
    /// 2026-12-07T02:15:00Z, or with an offset such as +01:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Write the rows into this new SQLite file (refused if it exists).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The format of the rows on stdout.
    #[arg(long, value_enum, default_value = "jsonl", conflicts_with = "out")]
    pub format: RowsFormat,
    /// Change-log table name (default: the configuration's, `__cdc_log`).
    #[arg(long)]
    pub log_table: Option<String>,
}

pub fn run(config: Option<&Path>, args: StateAtArgs) -> Result<(), CliError> {
    let path = &args.database;
    let log = log_table(config, args.log_table.clone())?;
    let conn = open_read_only(path)?;
    let on = |e| CliError::on(path, e);
    let lsn = match (args.lsn, &args.time) {
        (Some(lsn), _) => lsn,
        (None, Some(time)) => {
            let at = retention::parse_time(&conn, time).map_err(on)?;
            retention::lsn_as_of_time(&conn, &log, at).map_err(on)?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let found = match &args.out {
        Some(out) => to_file(&conn, &log, &args.table, lsn, path, out)?,
        None => {
            let RowsFormat::Jsonl = args.format;
            let columns = astha_core::schema::live_columns(&conn, &args.table)
                .map_err(on)?
                .0;
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let found =
                astha_core::state_at::state_at(&conn, &log, &args.table, lsn, &mut |values| {
                    let row: serde_json::Map<String, serde_json::Value> = columns
                        .iter()
                        .zip(values)
                        .map(|(c, v)| (c.clone(), v.to_json()))
                        .collect();
                    writeln!(stdout, "{}", serde_json::Value::Object(row)).map_err(|e| {
                        astha_core::CoreError::Invalid(format!("cannot write to stdout: {e}"))
                    })
                })
                .map_err(on)?;
            stdout.flush()?;
            found
        }
    };
    // A closed stderr must not fail a run whose rows were written (`eprintln!` panics).
    let _ = writeln!(std::io::stderr(), "{}", summary(&found));
    if !found.exact() {
        return Err(CliError::Message(format!(
            "the state of {} as of LSN {lsn} is NOT exact (see above); the rows were written",
            args.table
        )));
    }
    Ok(())
}

fn summary(found: &StateAt) -> String {
    let mut line = format!(
        "state of {} as of LSN {}: {} row(s), {} later change(s) undone",
        found.table, found.lsn, found.rows, found.undone
    );
    if found.exact() {
        line.push_str("; exact");
    } else {
        line.push_str(&format!(
            "; NOT EXACT: {} change(s) marked incomplete (a schema change by another \
             connection), {} log row(s) not decodable, {} undo(s) with no matching row \
             (writes that bypassed capture)",
            found.incomplete, found.malformed, found.unmatched
        ));
    }
    line
}

/// Writes the rows into a new database `out`, as a table made with the original's
/// `CREATE TABLE`, and a `__astha_state_at` row describing them.
fn to_file(
    conn: &rusqlite::Connection,
    log: &str,
    table: &str,
    lsn: i64,
    source: &Path,
    out: &Path,
) -> Result<StateAt, CliError> {
    if out.exists() {
        return Err(CliError::Message(format!(
            "{} exists; name a new file for --out",
            out.display()
        )));
    }
    let on = |e| CliError::on(source, e);
    let create: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .map_err(|e| on(e.into()))?;
    let Some(create) = create else {
        return Err(on(astha_core::CoreError::NoSuchTable(table.to_string())));
    };
    let columns = astha_core::schema::live_columns(conn, table).map_err(on)?.0;
    let target = rusqlite::Connection::open(out).map_err(|e| CliError::on(out, e.into()))?;
    let on_out = |e: rusqlite::Error| CliError::on(out, e.into());
    let tx = target.unchecked_transaction().map_err(on_out)?;
    tx.execute_batch(&create).map_err(on_out)?;
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(table),
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    let found = {
        let mut stmt = tx.prepare(&insert).map_err(on_out)?;
        astha_core::state_at::state_at(conn, log, table, lsn, &mut |values| {
            stmt.execute(rusqlite::params_from_iter(values))?;
            Ok(())
        })
        .map_err(on)?
    };
    tx.execute_batch(
        "CREATE TABLE __astha_state_at (tbl TEXT, lsn INTEGER, exact INTEGER, rows INTEGER,
             undone INTEGER, incomplete INTEGER, malformed INTEGER, unmatched INTEGER)",
    )
    .map_err(on_out)?;
    tx.execute(
        "INSERT INTO __astha_state_at VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            found.table,
            found.lsn,
            found.exact(),
            found.rows as i64,
            found.undone as i64,
            found.incomplete as i64,
            found.malformed as i64,
            found.unmatched as i64
        ],
    )
    .map_err(on_out)?;
    tx.commit().map_err(on_out)?;
    Ok(found)
}
