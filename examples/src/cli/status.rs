//! `astha status <db>`: capture, log depth and age, slots and their lag, the last state
//! each component reported (status, breaker, position), each consumer's latest snapshot
//! and its progress, and pending dead letters.

use std::path::{Path, PathBuf};

use astha_core::capture::Capture;
use clap::Args;
use serde_json::json;

use super::errors::{log_table, open_read_only};
use super::{CliError, Format};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The SQLite database.
    pub database: PathBuf,
    /// Change-log table name (default: the configuration's, `__cdc_log`).
    #[arg(long)]
    pub log_table: Option<String>,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
}

/// Reads only: the database is opened read-only, so `status` never creates a file,
/// changes a journal mode or writes a row.
pub fn run(config: Option<&Path>, args: StatusArgs) -> Result<(), CliError> {
    let path = &args.database;
    let log_table = log_table(config, args.log_table.clone())?;
    let conn = open_read_only(path)?;
    let on = |e| CliError::on(path, e);
    if !astha_core::schema::is_plain_table(&conn, &log_table).map_err(on)? {
        return Err(CliError::Message(format!(
            "{} has no Astha change log ({}); set up capture with `astha watch {} --tables <t> --install`",
            path.display(),
            log_table,
            path.display()
        )));
    }
    let now_ms = astha_core::change::unix_now_ms();
    let captured = Capture::new(&log_table)
        .captured_tables(&conn)
        .map_err(on)?;
    let log = astha_core::log::log_stats(&conn, &log_table, now_ms).map_err(on)?;
    let sequence = astha_core::log_state::read(&conn).map_err(on)?;
    let mut slots = Vec::new();
    for slot in astha_core::slots::list(&conn).map_err(on)? {
        let lag = astha_core::slots::lag(&conn, &log_table, &slot.name, now_ms).map_err(on)?;
        slots.push((slot, lag));
    }
    let components = astha_core::heartbeat::list(&conn).map_err(on)?;
    let dead = astha_core::dead_letter::pending_counts(&conn).map_err(on)?;
    let snapshots = astha_core::snapshot::list(&conn).map_err(on)?;
    let snapshot_dead = astha_core::snapshot::dead_letter_counts(&conn).map_err(on)?;
    match args.format {
        Format::Json => {
            let doc = json!({
                "database": path,
                "captured_tables": captured,
                "log": log,
                "sequence": sequence.as_ref().map(|s| json!({"epoch": s.epoch, "high_water": s.high_water})),
                "slots": slots.iter().map(|(s, l)| json!({"slot": s, "lag": l})).collect::<Vec<_>>(),
                "components": components,
                "snapshots": snapshots,
                "snapshot_dead_letters": snapshot_dead.iter().map(|(c, n)| json!({"consumer": c, "rows": n})).collect::<Vec<_>>(),
                "dead_letters": dead.iter().map(|(c, n)| json!({"consumer": c, "pending": n})).collect::<Vec<_>>(),
            });
            println!("{doc}");
        }
        Format::Pretty => {
            println!("database       {}", path.display());
            println!(
                "captured       {}",
                if captured.is_empty() {
                    "(none)".to_string()
                } else {
                    captured.join(", ")
                }
            );
            println!(
                "log            {} rows, LSN {}..{}, oldest {:.1}s old",
                log.rows,
                log.first_lsn,
                log.head_lsn,
                log.oldest_age_ms as f64 / 1000.0
            );
            if let Some(s) = &sequence {
                println!(
                    "sequence       epoch {}, LSNs handed out up to at least {}",
                    s.epoch, s.high_water
                );
            }
            println!("\nslots");
            if slots.is_empty() {
                println!("  (none: nothing holds the log back, and nothing consumes it)");
            }
            for (slot, lag) in &slots {
                println!(
                    "  {:<24} position {:<10} lag {:>8} changes, oldest {:.1}s",
                    slot.name,
                    slot.position,
                    lag.events,
                    lag.oldest_age_ms as f64 / 1000.0
                );
            }
            println!("\ncomponents (last reported by a running Astha)");
            if components.is_empty() {
                println!("  (none reported)");
            }
            for c in &components {
                println!(
                    "  {:<24} {:<10} breaker {:<9} position {:<10} delivered {:<8} failures {:<6} dead letters {:<4} at {}",
                    c.name, c.status, c.breaker, c.position, c.delivered, c.failures, c.dead_letters, c.updated_at
                );
                if let Some(err) = &c.last_error {
                    println!("  {:<24} last error: {err}", "");
                }
            }
            println!("\nsnapshots");
            if snapshots.is_empty() {
                println!("  (none)");
            }
            for s in &snapshots {
                println!(
                    "  {:<24} {:<8} {}/{} rows at LSN {} of {} ({}, since {})",
                    s.consumer,
                    s.state,
                    s.done,
                    s.total,
                    s.lsn,
                    s.tables.join(", "),
                    s.reason,
                    s.started_at
                );
            }
            println!("\ndead letters waiting for replay");
            if dead.is_empty() {
                println!("  (none)");
            }
            for (consumer, n) in &dead {
                println!("  {consumer:<24} {n}");
            }
            for (consumer, n) in &snapshot_dead {
                println!(
                    "  {consumer:<24} {n} snapshot row(s) (in __astha_snapshot_dead_letters; a snapshot signal sends them again)"
                );
            }
        }
    }
    Ok(())
}
