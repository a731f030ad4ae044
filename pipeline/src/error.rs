//! What can go wrong between a pipeline file and a running pipeline. Every message names
//! the file, source, table or sink at fault and, where there is one, the way out.

use std::path::PathBuf;

use astha_actors::AsthaError;
use astha_components::sinks::RegistryError;

/// A pipeline that cannot be checked, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file cannot be read.
    #[error("cannot read pipeline file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// The file is not a valid pipeline.
    #[error("pipeline file {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// The pipeline is well formed but cannot run as written.
    #[error("{0}")]
    Invalid(String),
    /// A source database cannot be opened or read.
    #[error("source {source_name:?} ({}): {reason}", database.display())]
    Source {
        source_name: String,
        database: PathBuf,
        reason: String,
    },
    /// A sink's settings are refused by its type.
    #[error(transparent)]
    Sink(#[from] RegistryError),
    /// The engine refused to start or stop.
    #[error("source {source_name:?}: {error}")]
    Engine {
        source_name: String,
        error: AsthaError,
    },
}
