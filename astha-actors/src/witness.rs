//! A dead actor is reported, never silent.
//!
//! Owns [`PanicWitness`], a field of each long-lived actor (poller, router, supervisor,
//! janitor). When an actor's own code panics (a component's handlers are caught by its
//! supervisor; this is about Astha's code, or a library it calls, panicking), the runtime
//! drops the actor while the panic unwinds: its mailbox closes and nothing else would
//! notice. The process would go on, and exit 0 when stopped, with that actor's deliveries
//! stopped and its slot behind. The witness's `Drop` sees the unwinding and marks Astha
//! failed ([`Stats::failed`]) naming the actor, so [`crate::Astha::failed`] fires, the
//! command line exits non-zero, `/health` says why and a log line is written.
//!
//! It never catches, resumes or restarts anything: the log and the slots are intact (the
//! slot only moves past what was confirmed), so a restart resumes from them.

use std::sync::Arc;

use crate::stats::Stats;

/// Held by an actor; reports the actor's death by panic (see the module docs).
pub struct PanicWitness {
    stats: Arc<Stats>,
    actor: String,
}

impl PanicWitness {
    /// A witness for the actor called `actor` (e.g. `"router"`, `"supervisor of x"`).
    pub fn new(stats: Arc<Stats>, actor: impl Into<String>) -> Self {
        Self {
            stats,
            actor: actor.into(),
        }
    }
}

impl Drop for PanicWitness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stats.failed(format!(
                "the {} actor panicked and stopped; its deliveries stopped with it \
                 (see the panic message in the log). Restart Astha: the log and the slots \
                 are intact, delivery resumes from the last confirmed position",
                self.actor
            ));
        }
    }
}

impl std::fmt::Debug for PanicWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanicWitness")
            .field("actor", &self.actor)
            .finish()
    }
}
