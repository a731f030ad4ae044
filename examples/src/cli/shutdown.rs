//! The signals that stop a command gracefully: SIGINT (Ctrl-C), SIGTERM (what systemd,
//! docker, Kubernetes and `timeout` send) and SIGHUP (the terminal went away). Each ends
//! the command the same way, so a stop by any of them drops non-durable slots, writes
//! confirmed positions and exits 0. It never exits the process itself.
//!
//! Handlers are installed by [`Shutdown::install`], before a command says it is ready: a
//! signal that arrives between "ready" and the first wait would otherwise still kill the
//! process the default way, leaving a non-durable slot behind.

#[cfg(unix)]
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Installed stop signals; see the module docs.
pub struct Shutdown {
    #[cfg(unix)]
    signals: Vec<(&'static str, Signal)>,
}

impl Shutdown {
    /// Installs the handlers (inside a tokio runtime, e.g. an actix system).
    pub fn install() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        {
            let mut signals = Vec::new();
            for (name, kind) in [
                ("SIGINT", SignalKind::interrupt()),
                ("SIGTERM", SignalKind::terminate()),
                ("SIGHUP", SignalKind::hangup()),
            ] {
                signals.push((name, signal(kind)?));
            }
            Ok(Shutdown { signals })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Waits for any of the signals and says which.
    pub async fn signalled(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let waits = self.signals.iter_mut().map(|(name, s)| {
                Box::pin(async move {
                    s.recv().await;
                    *name
                })
            });
            futures::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
