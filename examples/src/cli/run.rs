//! `astha run pipeline.toml`: runs the pipeline a file declares until SIGINT, SIGTERM or
//! SIGHUP; `--check` only checks it (read-only: no file created, no trigger installed);
//! `--list-sinks` lists the registered sink types.
//!
//! The engine's own settings (retries, breaker, timeouts) come from `--config` and
//! `ASTHA_*` variables as for every command; the pipeline file says what flows where.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use astha_actors::http::HttpConfig;

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{describe, plan, PipelineSpec};
use clap::Args;

use super::http_access::HttpAccess;
use super::shutdown::Shutdown;
use super::{say, CliError};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (TOML): [[sources]], [[sinks]], [defaults]. See examples/pipelines/.
    #[arg(required_unless_present = "list_sinks")]
    pub pipeline: Option<PathBuf>,
    /// Check the file against the databases and sink types, print the plan, and exit.
    #[arg(long)]
    pub check: bool,
    /// List the sink types this build knows, and exit.
    #[arg(long)]
    pub list_sinks: bool,
    /// Serve /metrics (every figure labelled with its `source`) and /health (each source;
    /// 503 unless all are healthy) on this address, e.g. 127.0.0.1:9187.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    #[command(flatten)]
    pub access: HttpAccess,
}

pub fn run(config: Option<&Path>, args: RunArgs) -> Result<(), CliError> {
    let registry = SinkRegistry::builtin();
    if args.list_sinks {
        for (name, about) in registry.types() {
            println!("{name:<10} {about}");
        }
        return Ok(());
    }
    let path = args.pipeline.expect("clap requires the pipeline");
    let engine = AsthaConfig::load(config)?;
    let spec = PipelineSpec::load(&path).map_err(pipeline_error)?;
    let checked = plan(&spec, &registry, &engine).map_err(pipeline_error)?;
    if args.check {
        print!("{}", describe(&checked));
        println!("{}: ok", path.display());
        return Ok(());
    }
    let http_config = match args.http {
        Some(bind) => Some(args.access.config(bind, Vec::new())?),
        None => None,
    };
    say(&describe(&checked));
    let system = actix::System::new();
    system.block_on(async move {
        let mut shutdown = Shutdown::install()?;
        let running = checked.start(&engine).await.map_err(pipeline_error)?;
        let http = match http_config {
            Some(config) => match serve_metrics(&config, &running) {
                Ok(handle) => Some(handle),
                Err(error) => {
                    running.stop().await.map_err(pipeline_error)?;
                    return Err(error);
                }
            },
            None => None,
        };
        say(&format!(
            "running {}; SIGINT, SIGTERM or SIGHUP stops it\n",
            path.display()
        ));
        let failure = tokio::select! {
            signal = shutdown.signalled() => {
                say(&format!("{signal}: stopping\n"));
                None
            }
            (source, reason) = running.failed() => Some(format!("source {source:?}: {reason}")),
        };
        let summary = running.summary();
        let source_dead_letters = running.source_dead_letters();
        if let Some(handle) = http {
            handle.stop(true).await;
        }
        running.stop().await.map_err(pipeline_error)?;
        for s in summary {
            say(&format!(
                "{} -> {}: {} delivered, {} filtered out, {} dead-lettered\n",
                s.source, s.sink, s.delivered, s.filtered, s.dead_lettered
            ));
        }
        for d in source_dead_letters.into_iter().filter(|d| d.rows > 0) {
            say(&format!(
                "{}: {} log row(s) that no sink could read moved to dead letters \
                 (`astha dead-letters list {}`)\n",
                d.source,
                d.rows,
                d.database.display()
            ));
        }
        match failure {
            Some(reason) => Err(CliError::Message(reason)),
            None => Ok(()),
        }
    })
}

/// Serves `/metrics` and `/health` of every source of `running`, with its sinks' filter
/// and window figures.
fn serve_metrics(
    config: &HttpConfig,
    running: &astha_pipeline::Running,
) -> Result<actix_web::dev::ServerHandle, CliError> {
    let sources = running
        .sources()
        .into_iter()
        .filter_map(|name| {
            let astha = running.engine(name)?;
            Some((name.to_string(), astha.stats(), astha.store()))
        })
        .collect();
    let extra = super::pipeline_metrics::extra(running);
    let (handle, addr) = astha_actors::http::start_metrics(config, sources, Some(extra))?;
    say(&format!("serving /metrics and /health on http://{addr}\n"));
    Ok(handle)
}

fn pipeline_error(err: astha_pipeline::PipelineError) -> CliError {
    CliError::Message(err.to_string())
}
