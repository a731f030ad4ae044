//! `astha dead-letters list|replay`: inspect changes components gave up on, and put them
//! back into the change log once the cause is fixed.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::errors::{open_existing, open_read_only};
use super::{CliError, Format};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters waiting for replay.
    List {
        database: PathBuf,
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        /// Include the ones already replayed.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "pretty")]
        format: Format,
    },
    /// Put dead letters back into the log as new changes (every subscriber of the table
    /// receives them again: delivery is at-least-once).
    Replay {
        database: PathBuf,
        /// Replay only this dead letter (by id).
        #[arg(long)]
        id: Option<i64>,
        /// Replay all of this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        /// Change-log table name (default: the configuration's, `__cdc_log`).
        #[arg(long)]
        log_table: Option<String>,
    },
}

pub fn run(config: Option<&Path>, cmd: DeadLettersCommand) -> Result<(), CliError> {
    match cmd {
        DeadLettersCommand::List {
            database,
            consumer,
            all,
            format,
        } => {
            let conn = open_read_only(&database)?;
            let on = |e| CliError::on(&database, e);
            if !astha_core::schema::is_plain_table(&conn, "__astha_dead_letters").map_err(on)? {
                println!(
                    "no dead letters: {} has no Astha bookkeeping yet",
                    database.display()
                );
                return Ok(());
            }
            let rows =
                astha_core::dead_letter::list(&conn, consumer.as_deref(), all).map_err(on)?;
            for d in &rows {
                match format {
                    Format::Json => println!("{}", serde_json::to_string(d).unwrap_or_default()),
                    Format::Pretty => println!(
                        "#{:<5} {:<20} lsn {:<8} {:<16} {:<6} attempts {:<3} {}{}",
                        d.id,
                        d.consumer,
                        d.lsn,
                        d.table,
                        d.op,
                        d.attempts,
                        d.reason,
                        d.replayed_at
                            .as_ref()
                            .map(|t| format!(" (replayed {t})"))
                            .unwrap_or_default()
                    ),
                }
            }
            if rows.is_empty() && format == Format::Pretty {
                println!("(no dead letters)");
            }
            Ok(())
        }
        DeadLettersCommand::Replay {
            database,
            id,
            consumer,
            log_table,
        } => {
            let log_table = super::errors::log_table(config, log_table)?;
            let conn = open_existing(&database)?;
            let on = |e| CliError::on(&database, e);
            let ids: Vec<i64> = match (id, consumer) {
                (Some(id), None) => vec![id],
                (None, consumer) => {
                    astha_core::dead_letter::list(&conn, consumer.as_deref(), false)
                        .map_err(on)?
                        .into_iter()
                        .filter(|d| d.consumer != astha_core::dead_letter::ANY_CONSUMER)
                        .map(|d| d.id)
                        .collect()
                }
                (Some(_), Some(_)) => {
                    return Err(CliError::Message(
                        "give --id or --consumer, not both".into(),
                    ))
                }
            };
            for id in &ids {
                let lsn = astha_core::dead_letter::replay(&conn, &log_table, *id).map_err(on)?;
                println!("dead letter #{id} replayed as LSN {lsn}");
            }
            if ids.is_empty() {
                println!("nothing to replay");
            }
            Ok(())
        }
    }
}
