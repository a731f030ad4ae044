//! `astha`: run Astha's lakehouse demo, watch any SQLite database, inspect slots, lag and
//! dead letters, and print the effective configuration.

mod cli;

/// The `astha` binary allocates with mimalloc: each change's values are allocated on the
/// poll thread and freed on the actor thread, which glibc's allocator handles poorly
/// (BENCHMARKS.md, "The poll thread's allocations"). The libraries set no allocator; an
/// application that embeds Astha chooses its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before clap reads them: a misspelt ASTHA_HTTP_TOKEN (or ASTHA_CONFIG, ASTHA_LOG)
    // would otherwise be ignored, and the endpoints would run without a token.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(astha_core::config::ENV_PREFIX) {
            continue;
        }
        if let Some(meant) =
            astha_core::config::misspelling_of(name, astha_core::config::NON_CONFIG_ENV_VARS)
        {
            eprintln!(
                "error: environment variable {name} is not one Astha reads; did you mean {meant}? \
                 (unset or rename it)"
            );
            return ExitCode::from(2);
        }
    }
    let args = cli::Cli::parse();
    // An ASTHA_LOG that does not parse is refused: ignoring it would hide the very
    // logs the user asked for.
    let filter = match std::env::var("ASTHA_LOG") {
        Ok(text) => match tracing_subscriber::EnvFilter::try_new(&text) {
            Ok(filter) => filter,
            Err(err) => {
                eprintln!(
                    "error: ASTHA_LOG={text:?} is not a log filter ({err}); \
                     use e.g. ASTHA_LOG=info or ASTHA_LOG=astha_actors=debug"
                );
                return ExitCode::from(2);
            }
        },
        Err(_) => tracing_subscriber::EnvFilter::new(args.default_log_filter()),
    };
    // Colours only on a terminal: escape codes in a log file or a pipe are noise.
    // A log line that cannot be written is dropped: tracing-subscriber would otherwise
    // report it with `eprint!`, which panics on a closed stderr, in whatever thread
    // logged; a watcher whose reader went away then printed changes but never made its
    // slot durable (`cli::a_closed_stderr_never_stops_the_slot`).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cli::say(&format!("error: {err}\n"));
            ExitCode::FAILURE
        }
    }
}
