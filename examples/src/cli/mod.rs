//! Command-line definitions and dispatch. Each subcommand lives in its own module.

mod alter;
mod config_cmd;
mod dead_letters;
mod demo;
mod errors;
mod http_access;
mod pipeline_metrics;
mod replay;
mod run;
mod shutdown;
mod slots;
mod state_at;
mod status;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use errors::CliError;

/// Astha: change-data capture for SQLite, delivered in commit order to supervised components.
#[derive(Debug, Parser)]
#[command(name = "astha", version, about)]
pub struct Cli {
    /// Configuration file (TOML). `ASTHA_*` environment variables override it.
    #[arg(long, global = true, env = "ASTHA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log more (repeat for more detail). `ASTHA_LOG` sets a full filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter when `ASTHA_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lakehouse demo on an embedded registry and warehouse it creates.
    Demo(demo::DemoArgs),
    /// Stream the changes of a SQLite database to stdout as JSON lines.
    ///
    /// Delivery is at least once: after a crash or kill, a restart with `--slot` prints
    /// again at most the one batch that was in flight (up to `batch_size`, 256 by
    /// default; lower it with ASTHA_BATCH_SIZE). `INSERT OR REPLACE` from a connection
    /// without `PRAGMA recursive_triggers=ON` (the default of Python's sqlite3 and most
    /// drivers) is captured as an INSERT only, the replaced row unseen, unless capture is
    /// installed with `--exact-replace` (a DELETE of the replaced row, then the INSERT;
    /// it costs every captured INSERT and UPDATE a lookup per unique key).
    Watch(watch::WatchArgs),
    /// Run a pipeline file: sources, per-table shaping, sinks (`--check` to check only).
    Run(run::RunArgs),
    /// Show capture, log depth, slots, component states and dead letters of a database.
    Status(status::StatusArgs),
    /// List, drop or reset the durable positions (slots) of a database's consumers.
    #[command(subcommand)]
    Slots(slots::SlotsCommand),
    /// List or replay dead letters.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Change the schema of a captured database safely: the SQL runs in one transaction
    /// that re-installs capture, so no write goes uncaptured and nothing is marked
    /// incomplete (as a schema change by another tool can cause).
    Alter(alter::AlterArgs),
    /// Print the changes of a range of the retained change log again (`--from-lsn` or
    /// `--from-time`), as `watch` prints them; a range the log no longer holds is refused.
    Replay(replay::ReplayArgs),
    /// A table's rows as of an earlier LSN or time, rebuilt from the retained change log.
    StateAt(state_at::StateAtArgs),
}

/// Output format for commands that print changes or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON document per line.
    Json,
    /// Aligned text for people.
    Pretty,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(args) => demo::run(cli.config.as_deref(), args),
        Command::Watch(args) => watch::run(cli.config.as_deref(), args),
        Command::Run(args) => run::run(cli.config.as_deref(), args),
        Command::Status(args) => status::run(cli.config.as_deref(), args),
        Command::Slots(cmd) => slots::run(cli.config.as_deref(), cmd),
        Command::DeadLetters(cmd) => dead_letters::run(cli.config.as_deref(), cmd),
        Command::Config(cmd) => config_cmd::run(cli.config.as_deref(), cmd),
        Command::Alter(args) => alter::run(cli.config.as_deref(), args),
        Command::Replay(args) => replay::run(cli.config.as_deref(), args),
        Command::StateAt(args) => state_at::run(cli.config.as_deref(), args),
    }
}

/// Progress and errors for people on stderr. A closed stderr must not stop a pipeline or
/// a watcher (`eprint!` panics when the write fails), so the result is ignored.
pub fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}
