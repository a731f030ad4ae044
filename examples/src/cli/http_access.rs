//! Who may read the HTTP endpoint: the options `watch --http` and `run --http` share.
//!
//! Owns the bearer token (its first line from `--http-token-file`, else `--http-token`
//! or `ASTHA_HTTP_TOKEN`) and the explicit opt-in to anonymous access on a non-loopback
//! address; [`HttpAccess::config`] builds the endpoint's settings from them and checks
//! them before anything starts. It never binds a socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use astha_actors::http::HttpConfig;
use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct HttpAccess {
    /// Require this bearer token on the HTTP endpoint. Prefer `--http-token-file` or the
    /// environment: other users can read a command line (`/proc/<pid>/cmdline`).
    #[arg(long, env = "ASTHA_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Read the bearer token from this file (its first line).
    #[arg(long, conflicts_with = "http_token")]
    pub http_token_file: Option<PathBuf>,
    /// Serve a non-loopback `--http` address without a token (refused otherwise).
    #[arg(long)]
    pub http_allow_anonymous: bool,
}

impl HttpAccess {
    /// The endpoint's settings on `bind`, checked: an unreadable or empty token file, or
    /// a public address without a token or the opt-in, is refused here.
    pub fn config(
        &self,
        bind: SocketAddr,
        cors_origins: Vec<String>,
    ) -> Result<HttpConfig, CliError> {
        let config = HttpConfig {
            bind,
            bearer_token: self.token()?,
            allow_anonymous: self.http_allow_anonymous,
            cors_origins,
        };
        config.validate()?;
        Ok(config)
    }

    fn token(&self) -> Result<Option<String>, CliError> {
        let Some(file) = &self.http_token_file else {
            return Ok(self.http_token.clone());
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::Message(format!("cannot read {}: {e}", file.display())))?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(CliError::Message(format!(
                "{} holds no token",
                file.display()
            )));
        }
        Ok(Some(token.to_string()))
    }
}
