//! `astha slots list|drop|reset <db>`: the operator's hands on durable positions.
//!
//! A slot holds back log cleanup until its consumer passes each row, so a consumer that
//! is gone for good must have its slot dropped, or the log grows forever; `list` shows
//! each slot's lag and age so such a slot is found. `reset` moves a slot back to re-read
//! what the log still holds, or forward to skip. Stop the consumer that owns a slot
//! before dropping or resetting it: a running engine keeps its own position in memory.
//! A non-durable slot (a `watch` without `--slot`, a live feed) shows its lease: its
//! owner and when it expires; it goes by itself once its owner stops renewing it.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;

use super::errors::{log_table, open_existing, open_read_only};
use super::{CliError, Format};

#[derive(Debug, Subcommand)]
pub enum SlotsCommand {
    /// Every slot with its position, lag and the age of its oldest unread change.
    List {
        database: PathBuf,
        /// Change-log table name (default: the configuration's, `__cdc_log`).
        #[arg(long)]
        log_table: Option<String>,
        #[arg(long, value_enum, default_value = "pretty")]
        format: Format,
    },
    /// Drop a slot: its consumer's position is forgotten and cleanup may pass it.
    Drop { database: PathBuf, name: String },
    /// Set a slot's position: `--to head` (skip everything unread), `--to beginning`
    /// (re-read all the log still holds), `--to <LSN>` (deliver what follows it) or
    /// `--to-time <TIME>` (deliver from the first change written at or after it). A
    /// position the log no longer holds changes after is refused.
    Reset {
        database: PathBuf,
        name: String,
        #[arg(long, required_unless_present = "to_time", conflicts_with = "to_time")]
        to: Option<String>,
        /// UTC unless an offset is given, e.g. 2026-12-07T02:15:00Z.
        #[arg(long)]
        to_time: Option<String>,
        /// Change-log table name (default: the configuration's, `__cdc_log`).
        #[arg(long)]
        log_table: Option<String>,
    },
}

pub fn run(config: Option<&Path>, cmd: SlotsCommand) -> Result<(), CliError> {
    match cmd {
        SlotsCommand::List {
            database,
            log_table: flag,
            format,
        } => {
            let log_table = log_table(config, flag)?;
            let conn = open_read_only(&database)?;
            let on = |e| CliError::on(&database, e);
            if !astha_core::schema::is_plain_table(&conn, "__astha_slots").map_err(on)? {
                println!(
                    "no slots: {} has no Astha bookkeeping yet",
                    database.display()
                );
                return Ok(());
            }
            let now_ms = astha_core::change::unix_now_ms();
            let slots = astha_core::slots::list(&conn).map_err(on)?;
            let leases = astha_core::lease::list(&conn).map_err(on)?;
            for slot in &slots {
                let lag =
                    astha_core::slots::lag(&conn, &log_table, &slot.name, now_ms).map_err(on)?;
                let lease = leases.iter().find(|l| l.slot == slot.name);
                match format {
                    Format::Json => {
                        println!("{}", json!({"slot": slot, "lag": lag, "lease": lease}))
                    }
                    Format::Pretty => println!(
                        "{:<24} position {:<10} lag {:>8} changes, oldest {:.1}s, updated {}, {}",
                        slot.name,
                        slot.position,
                        lag.events,
                        lag.oldest_age_ms as f64 / 1000.0,
                        slot.updated_at,
                        match lease {
                            None => "durable".to_string(),
                            Some(l) => format!(
                                "leased by {} (expires in {:.1}s)",
                                l.owner,
                                (l.expires_ms - now_ms) as f64 / 1000.0
                            ),
                        }
                    ),
                }
            }
            if slots.is_empty() && format == Format::Pretty {
                println!("(no slots)");
            }
            Ok(())
        }
        SlotsCommand::Drop { database, name } => {
            let conn = open_existing(&database)?;
            let on = |e| CliError::on(&database, e);
            if astha_core::slots::drop_slot(&conn, &name).map_err(on)? {
                astha_core::lease::release(&conn, &name).map_err(on)?;
                println!("slot {name} dropped");
                Ok(())
            } else {
                Err(no_such_slot(&database, &name))
            }
        }
        SlotsCommand::Reset {
            database,
            name,
            to,
            to_time,
            log_table: flag,
        } => {
            let log_table = log_table(config, flag)?;
            let conn = open_existing(&database)?;
            let on = |e| CliError::on(&database, e);
            if astha_core::slots::get(&conn, &name).map_err(on)?.is_none() {
                return Err(no_such_slot(&database, &name));
            }
            let retention = astha_core::retention::check_from_lsn;
            let lsn = match (to.as_deref(), to_time) {
                (_, Some(time)) => {
                    let at = astha_core::retention::parse_time(&conn, &time).map_err(on)?;
                    astha_core::retention::check_from_time(&conn, &log_table, at).map_err(on)? - 1
                }
                (Some("head"), None) => astha_core::log::head_lsn(&conn, &log_table).map_err(on)?,
                (Some("beginning"), None) => 0,
                (Some(n), None) => {
                    let lsn = n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        CliError::Message(format!(
                            "--to {n:?}: give `head`, `beginning` or a log sequence number"
                        ))
                    })?;
                    retention(&conn, &log_table, lsn + 1).map_err(on)?;
                    lsn
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let slot = astha_core::slots::reset(&conn, &name, lsn).map_err(on)?;
            println!("slot {name} now at LSN {}", slot.position);
            Ok(())
        }
    }
}

fn no_such_slot(database: &Path, name: &str) -> CliError {
    CliError::Message(format!(
        "{} has no slot named {name:?}; `astha slots list {}` shows them",
        database.display(),
        database.display()
    ))
}
