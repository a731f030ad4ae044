//! A pipeline process for the broker sinks' crash tests (`tests/tests/sink_rabbitmq.rs`,
//! `tests/tests/sink_kafka.rs`): runs the pipeline file given, as `astha run` would. The
//! tests kill it with `kill -9` mid-stream and start it again; the broker must end up
//! with every change.
//!
//! With `--exit-when-caught-up` it stops gracefully once every sink's position reached
//! its log head, and exits 0 (2 when that does not happen within five minutes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use astha_components::sinks::SinkRegistry;
use astha_core::config::AsthaConfig;
use astha_pipeline::{plan, PipelineSpec};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The pipeline file (`${VAR}` is read from the environment).
    #[arg(long)]
    pipeline: PathBuf,
    #[arg(long)]
    exit_when_caught_up: bool,
}

fn main() {
    let args = Args::parse();
    let spec = PipelineSpec::load(&args.pipeline).expect("pipeline file");
    let mut engine =
        AsthaConfig::load_from(None, Vec::<(String, String)>::new()).expect("engine config");
    engine.backstop_interval = Duration::from_millis(20);
    engine.retry.initial_backoff = Duration::from_millis(20);
    engine.retry.max_backoff = Duration::from_millis(500);
    let planned = plan(&spec, &SinkRegistry::builtin(), &engine).expect("plan");
    actix_rt::System::new().block_on(async move {
        let running = planned.start(&engine).await.expect("start");
        if !args.exit_when_caught_up {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let caught_up = running.sources().iter().all(|source| {
                let astha = running.engine(source).expect("source");
                let conn = astha_core::db::open(&astha.config().database).expect("open");
                let head =
                    astha_core::log::head_lsn(&conn, &astha.config().log_table).expect("head");
                astha.all_components().iter().all(|c| c.position >= head)
            });
            if caught_up {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("pipeline worker: not caught up: {:?}", running.summary());
                std::process::exit(2);
            }
        }
        running.stop().await.expect("stop");
    });
}
