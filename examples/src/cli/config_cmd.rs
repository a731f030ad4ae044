//! `astha config print`: the effective configuration (defaults, then the file, then
//! `ASTHA_*` environment variables), validated.

use std::path::Path;

use astha_core::config::AsthaConfig;
use clap::Subcommand;

use super::CliError;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Print,
}

pub fn run(config: Option<&Path>, cmd: ConfigCommand) -> Result<(), CliError> {
    match cmd {
        ConfigCommand::Print => {
            let config = AsthaConfig::load(config)?;
            print!("{}", config.to_toml_string()?);
            Ok(())
        }
    }
}
