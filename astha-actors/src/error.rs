//! Errors of the actor runtime and the facade.

use astha_core::CoreError;

/// What the facade's calls can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AsthaError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Config(#[from] astha_core::config::ConfigError),
    #[error("a component named {0:?} is already registered")]
    DuplicateComponent(String),
    #[error("no component named {0:?}")]
    UnknownComponent(String),
    #[error("Astha is not running")]
    NotRunning,
    #[error("Astha is already running")]
    AlreadyRunning,
    #[error("the actor system is gone: {0}")]
    Mailbox(String),
}

impl From<actix::MailboxError> for AsthaError {
    fn from(err: actix::MailboxError) -> Self {
        AsthaError::Mailbox(err.to_string())
    }
}
