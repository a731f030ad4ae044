//! The JetStream sink's Astha process for `tests/tests/sink_nats.rs`: runs Astha on a
//! database with one [`NatsSink`] subscribed to table `t`. The test kills it with
//! `kill -9` mid-stream and starts it again; JetStream must end up with every change
//! exactly once.
//!
//! With `--exit-when-caught-up` it stops gracefully once the sink's position reached the
//! log head, and exits 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use astha_actors::Astha;
use astha_components::sinks::{identity, NatsSink, NatsSinkConfig};
use astha_core::config::AsthaConfig;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    db: PathBuf,
    #[arg(long)]
    nats_url: String,
    #[arg(long)]
    stream: String,
    /// Component (and slot) name.
    #[arg(long, default_value = "nats_sink")]
    name: String,
    #[arg(long)]
    exit_when_caught_up: bool,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

fn main() {
    let args = Args::parse();
    let conn = astha_core::db::open(&args.db).expect("open database");
    let id = identity::stream_id(&conn, "__cdc_log").expect("database identity");
    let mut sink_config = NatsSinkConfig::new(&args.nats_url, "faultdb", &args.stream, &["t"]);
    sink_config.name = args.name.clone();
    sink_config.ack_timeout = Duration::from_secs(2);
    let sink = NatsSink::new(sink_config, &id).expect("sink config");

    let mut config = AsthaConfig {
        database: args.db.clone(),
        ..AsthaConfig::default()
    };
    config.monitored_tables = vec!["t".into()];
    config.batch_size = args.batch_size;
    config.window_batches = 4;
    config.backstop_interval = Duration::from_millis(20);
    config.cleanup_interval = Duration::from_millis(100);
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_backoff = Duration::from_millis(500);
    let astha = Astha::new(config).expect("astha");
    astha.start().expect("start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(astha.register_component(Box::new(sink)))
        .expect("register");
    if !args.exit_when_caught_up {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let head = astha_core::log::head_lsn(&conn, "__cdc_log").expect("head");
        if astha
            .component_info(&args.name)
            .is_some_and(|c| c.position >= head)
        {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("nats worker: not caught up: {:?}", astha.scheduler_stats());
            std::process::exit(2);
        }
    }
    rt.block_on(astha.stop()).expect("stop");
}
