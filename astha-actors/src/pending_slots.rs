//! Confirmed positions not yet written, shared by the router (which adds them as routes
//! confirm) and its slot write on the store's write thread (which takes them once it
//! holds the write lock).
//!
//! A slot write waits for the lock, often for a turn the application's writer gives
//! ([`astha_core::write_turns`]); the four routes of a batch confirm within that wait.
//! Taken when the write was asked for, the positions of the routes that confirmed later
//! waited for a second write, and the application's writer gave a second turn: the
//! throughput bench counted about two slot writes per batch of four routes. Taken when
//! the lock is held ([`astha_core::slots::advance_taking`]), they go in the same write.
//!
//! It promises that a position is never lost between the two sides: what a failed write
//! took goes back ([`PendingSlots::put_back`]), and a position only ever moves forward.
//! It never writes anything itself, and holds its lock for a map operation only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Positions confirmed by routes and not yet taken by a slot write, by route name.
#[derive(Debug, Clone, Default)]
pub struct PendingSlots {
    positions: Arc<Mutex<HashMap<String, i64>>>,
}

impl PendingSlots {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        // A map of positions: a panic elsewhere cannot leave it half-updated.
        self.positions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `route` confirmed `position` (kept if a larger one is pending).
    pub fn confirm(&self, route: &str, position: i64) {
        let mut positions = self.lock();
        match positions.get_mut(route) {
            Some(pending) => *pending = (*pending).max(position),
            None => {
                positions.insert(route.to_string(), position);
            }
        }
    }

    /// Takes every pending position, for a slot write.
    pub fn take(&self) -> Vec<(String, i64)> {
        self.lock().drain().collect()
    }

    /// Gives back what a slot write took and did not make durable.
    pub fn put_back(&self, positions: Vec<(String, i64)>) {
        for (route, position) in positions {
            self.confirm(&route, position);
        }
    }

    /// Forgets `route`'s pending position (its component was unregistered), returning it.
    pub fn forget(&self, route: &str) -> Option<i64> {
        self.lock().remove(route)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward_and_what_a_failed_write_took_comes_back() {
        let pending = PendingSlots::default();
        pending.confirm("a", 10);
        pending.confirm("a", 7);
        pending.confirm("b", 3);
        let mut taken = pending.take();
        taken.sort();
        assert_eq!(taken, vec![("a".to_string(), 10), ("b".to_string(), 3)]);
        assert!(pending.is_empty());
        // While the write failed, "a" confirmed further: the larger position stays.
        pending.confirm("a", 12);
        pending.put_back(taken);
        let mut back = pending.take();
        back.sort();
        assert_eq!(back, vec![("a".to_string(), 12), ("b".to_string(), 3)]);
        pending.confirm("c", 1);
        assert_eq!(pending.forget("c"), Some(1));
        assert!(pending.is_empty());
    }
}
