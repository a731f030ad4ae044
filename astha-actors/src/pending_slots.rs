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
//! It promises that a position is never lost between the two sides: what a write took
//! stays in flight until the router settles it, and goes back to pending when the write
//! failed or its job died ([`PendingSlots::settle`]); a position only ever moves forward.
//! It never writes anything itself, and holds its lock for a map operation only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Positions confirmed by routes and not yet written, by route name: pending (not yet
/// taken by a slot write) and in flight (taken by the write under way).
#[derive(Debug, Clone, Default)]
pub struct PendingSlots {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<String, i64>,
    /// What the write under way took, until the router settles it.
    in_flight: Vec<(String, i64)>,
}

impl Inner {
    fn confirm(&mut self, route: &str, position: i64) {
        match self.pending.get_mut(route) {
            Some(pending) => *pending = (*pending).max(position),
            None => {
                self.pending.insert(route.to_string(), position);
            }
        }
    }
}

impl PendingSlots {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Maps of positions: a panic elsewhere cannot leave them half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `route` confirmed `position` (kept if a larger one is pending).
    pub fn confirm(&self, route: &str, position: i64) {
        self.lock().confirm(route, position);
    }

    /// Takes every pending position for a slot write; they stay in flight until
    /// [`PendingSlots::settle`].
    pub fn take(&self) -> Vec<(String, i64)> {
        let mut inner = self.lock();
        let taken: Vec<(String, i64)> = inner.pending.drain().collect();
        inner.in_flight.extend(taken.iter().cloned());
        taken
    }

    /// Ends the write under way: what it took is durable (`written`) and is returned, or
    /// pending again (the write failed, or its job never finished and what it wrote is
    /// unknown) and nothing is returned.
    pub fn settle(&self, written: bool) -> Vec<(String, i64)> {
        let mut inner = self.lock();
        let in_flight = std::mem::take(&mut inner.in_flight);
        if written {
            return in_flight;
        }
        for (route, position) in in_flight {
            inner.confirm(&route, position);
        }
        Vec::new()
    }

    /// Forgets `route` (its component was unregistered), pending and in flight alike,
    /// returning the furthest position it had confirmed. Kept in flight, a failed write
    /// would put it back, and the next write would find its slot dropped and restore it:
    /// a slot nobody reads, holding back cleanup.
    pub fn forget(&self, route: &str) -> Option<i64> {
        let mut inner = self.lock();
        let pending = inner.pending.remove(route);
        let mut furthest = pending;
        inner.in_flight.retain(|(r, position)| {
            if r != route {
                return true;
            }
            furthest = Some(furthest.map_or(*position, |f| f.max(*position)));
            false
        });
        furthest
    }

    /// Whether no position waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
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
        assert!(pending.settle(false).is_empty());
        let mut back = pending.take();
        back.sort();
        assert_eq!(back, vec![("a".to_string(), 12), ("b".to_string(), 3)]);
        // Written: what was taken is durable, and nothing comes back.
        let mut durable = pending.settle(true);
        durable.sort();
        assert_eq!(durable, back);
        assert!(pending.is_empty());
        assert!(pending.take().is_empty());
        pending.confirm("c", 1);
        assert_eq!(pending.forget("c"), Some(1));
        assert!(pending.is_empty());
    }

    /// An unregistered route's position in a write that then fails does not come back:
    /// the next write would restore the slot its unregistering dropped.
    #[test]
    fn a_forgotten_route_in_flight_does_not_come_back_after_a_failed_write() {
        let pending = PendingSlots::default();
        pending.confirm("gone", 5);
        pending.confirm("kept", 4);
        assert_eq!(pending.take().len(), 2);
        pending.confirm("gone", 9);
        assert_eq!(pending.forget("gone"), Some(9), "the furthest it confirmed");
        assert!(pending.settle(false).is_empty());
        assert_eq!(pending.take(), vec![("kept".to_string(), 4)]);
        assert_eq!(pending.settle(true), vec![("kept".to_string(), 4)]);
    }
}
