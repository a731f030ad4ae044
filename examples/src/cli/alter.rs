//! `astha alter --db app.db "SQL"`: the safe path for schema changes of a captured
//! database. The SQL runs in one transaction with the triggers of every captured table
//! dropped before and re-installed after (`Capture::alter_with`), so no write is ever
//! made without capture and no change is marked incomplete, which a schema change made
//! by another tool can cause (RELIABILITY.md).

use std::path::{Path, PathBuf};

use astha_core::capture::{Capture, RefreshChange};
use astha_core::config::AsthaConfig;
use clap::Args;

use super::errors::open_existing;
use super::CliError;

#[derive(Debug, Args)]
pub struct AlterArgs {
    /// The SQLite database to change.
    #[arg(long)]
    pub db: PathBuf,
    /// The schema change: any SQL (`ALTER TABLE ...`, a table rebuilt by CREATE, copy,
    /// DROP and RENAME, ...), several statements allowed; it all commits or none of it.
    pub sql: String,
    /// Install the triggers with `exact_replace` (see `astha watch --help`); same as
    /// `exact_replace = true` in the config.
    #[arg(long)]
    pub exact_replace: bool,
}

pub fn run(config: Option<&Path>, args: AlterArgs) -> Result<(), CliError> {
    let conn = open_existing(&args.db)?;
    let config = AsthaConfig::load(config)?;
    let capture = Capture::new(&config.log_table)
        .with_exact_replace(config.exact_replace || args.exact_replace);
    let ((), changes) = capture
        .alter_with(&conn, |conn| Ok(conn.execute_batch(&args.sql)?))
        .map_err(|e| CliError::on(&args.db, e))?;
    for change in changes {
        match change {
            RefreshChange::Regenerated { table, schema_id } => {
                println!("capture of {table} re-installed (schema {schema_id})")
            }
            RefreshChange::Dropped { table } => {
                println!("{table} was dropped; it is captured again if created again")
            }
        }
    }
    Ok(())
}
