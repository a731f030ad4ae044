//! Routing decisions, as a state machine: which component gets which changes next.
//!
//! Owns the ring (the batches the poller read and the routes still share, the window)
//! and each route's confirmed position and state. Every input — a batch arrived, a
//! component confirmed, paused or resumed, a catch-up read ended, a position became
//! durable, a route came, left or was disabled — returns the [`Effect`]s the caller
//! must perform, in order: deliver changes to a route, read a route's tables from the
//! log, persist a position, let the poller read more. It does no I/O, reads no clock and
//! knows no actor runtime; the router actor only moves messages and performs effects.
//!
//! Promises (checked by the property test below against a model of log, poller and
//! components):
//! - each route gets the changes of its tables in LSN order, each delivery starting
//!   right after its confirmed position: nothing skipped, nothing confirmed delivered
//!   again, across eviction and catch-up hand-over;
//! - a route has at most one delivery or catch-up read outstanding, and the changes it
//!   was given past its durable position (what a crash would deliver again) never number
//!   more than the re-delivery bound, one batch: a route whose last confirmation is
//!   still being written may get its next changes at once (slot write and delivery
//!   overlap), but only as many as keep it within the bound;
//! - a route that falls behind the ring (slow, paused, disabled or registered late)
//!   never holds it once someone waits for newer batches: it reads its own tables from
//!   the log instead, so it never blocks the others, and the ring holds no more than
//!   the poller sent;
//! - positions only move forward, only past changes the route confirmed or that are
//!   not of its tables, and never past what the poller published (so never past a row
//!   it has not yet read, or whose dead letter it has not yet written).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::Change;

/// A batch of decoded changes covering the LSN range `(after, upto]`, shared by all the
/// routes that read it.
#[derive(Debug)]
pub struct SharedBatch {
    pub after: i64,
    pub upto: i64,
    pub changes: Vec<Arc<Change>>,
}

/// What the caller must do, in the order given.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Hand `changes` (in order; the delivery ends at `upto`) to `route`'s component.
    Deliver {
        route: String,
        changes: Arc<Vec<Arc<Change>>>,
        upto: i64,
    },
    /// Read the next changes of `tables` after `after` from the log, then call
    /// [`Routing::catch_up_read`] (or [`Routing::catch_up_failed`]).
    CatchUp {
        route: String,
        after: i64,
        tables: Arc<[String]>,
    },
    /// `route` confirmed everything up to `position`: write its slot, then call
    /// [`Routing::persisted`] with the position written.
    Persist { route: String, position: i64 },
    /// This many batches left the ring: the poller may read as many more.
    Release(usize),
}

/// What a route is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Idle,
    Delivering,
    CatchingUp,
}

#[derive(Debug)]
struct Route {
    tables: HashSet<String>,
    table_list: Arc<[String]>,
    /// Last LSN the component confirmed.
    position: i64,
    work: Work,
    /// The component's breaker is open (or it is being refreshed): deliver nothing
    /// until it resumes.
    paused: bool,
    /// Disabled by the host.
    disabled: bool,
    /// Its slot position known durable.
    durable: i64,
    /// LSNs of the changes it was given past `durable`, in order: what a crash now would
    /// deliver again. Never longer than [`Routing`]'s bound.
    exposed: VecDeque<i64>,
}

impl Route {
    fn wants(&self, change: &Change) -> bool {
        self.tables.contains(&*change.table)
    }

    /// [`Route::wants`], remembering the answer for the last table asked about: the
    /// changes of a batch come in runs of one table (a transaction's rows), and hashing
    /// the name per change per route was a tenth of the actor thread at flat-out rates.
    fn wants_memo(&self, change: &Change, last: &mut Option<(Arc<str>, bool)>) -> bool {
        match last {
            Some((table, wanted))
                if Arc::ptr_eq(table, &change.table) || *table == change.table =>
            {
                *wanted
            }
            _ => {
                let wanted = self.wants(change);
                *last = Some((change.table.clone(), wanted));
                wanted
            }
        }
    }

    /// True if this route will take more changes as soon as there are some.
    fn active(&self) -> bool {
        !self.paused && !self.disabled
    }

    /// True if this route still needs the ring batch ending at `upto`.
    fn holds(&self, upto: i64) -> bool {
        self.active() && self.work != Work::CatchingUp && self.position < upto
    }
}

/// The router's state: the ring and the routes.
#[derive(Debug)]
pub struct Routing {
    window: usize,
    ring: VecDeque<Arc<SharedBatch>>,
    /// The ring covers the LSN range `(ring_start, ring_end]`.
    ring_start: i64,
    ring_end: i64,
    routes: BTreeMap<String, Route>,
    /// At most this many changes given to a route past its durable position.
    bound: usize,
    /// Stopping: start no new delivery or catch-up.
    stopping: bool,
}

impl Routing {
    /// A ring of at most `window` batches (the poller's bound) starting after `start`;
    /// a route is never given more than `bound` changes (at least 1) past its durable
    /// position: a crash re-delivers at most that many. The router passes the batch
    /// size, so the bound stays the one batch it always was.
    pub fn new(window: usize, start: i64, bound: usize) -> Self {
        Self {
            window,
            ring: VecDeque::new(),
            ring_start: start,
            ring_end: start,
            routes: BTreeMap::new(),
            bound: bound.max(1),
            stopping: false,
        }
    }

    /// Adds a route at its slot `position`, paused until [`Routing::resume`] (its
    /// component is refreshed first). False if the name is taken.
    pub fn register(&mut self, name: &str, tables: Vec<String>, position: i64) -> bool {
        if self.routes.contains_key(name) {
            return false;
        }
        self.routes.insert(
            name.to_string(),
            Route {
                table_list: tables.clone().into(),
                tables: tables.into_iter().collect(),
                position,
                work: Work::Idle,
                paused: true,
                disabled: false,
                durable: position,
                exposed: VecDeque::new(),
            },
        );
        true
    }

    /// True if a route of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// Removes a route; `None` if there is none of that name. Whatever it still held
    /// leaves the ring.
    pub fn unregister(&mut self, name: &str) -> Option<Vec<Effect>> {
        self.routes.remove(name)?;
        let mut out = Vec::new();
        self.evict(&mut out);
        Some(out)
    }

    /// The host disabled (or enabled again) a route; `None` if there is none.
    pub fn set_disabled(&mut self, name: &str, disabled: bool) -> Option<Vec<Effect>> {
        self.routes.get_mut(name)?.disabled = disabled;
        let mut out = Vec::new();
        self.evict(&mut out);
        self.pump_into(name, &mut out);
        Some(out)
    }

    /// The poller read a new batch; it starts where the previous one ended.
    pub fn batch(&mut self, batch: Arc<SharedBatch>) -> Vec<Effect> {
        debug_assert_eq!(batch.after, self.ring_end, "batches are contiguous");
        self.ring_end = batch.upto;
        self.ring.push_back(batch);
        let mut out = Vec::new();
        self.pump_all(&mut out);
        self.evict(&mut out);
        out
    }

    /// `name`'s component confirmed everything up to `confirmed`; `finished` ends its
    /// delivery (completely handled, or given back); `paused` stops deliveries until
    /// [`Routing::resume`]. A pause may also come with no delivery outstanding.
    pub fn progress(
        &mut self,
        name: &str,
        confirmed: i64,
        finished: bool,
        paused: bool,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(route) = self.routes.get_mut(name) else {
            return out;
        };
        if finished {
            if route.work == Work::Delivering {
                route.work = Work::Idle;
            }
            route.paused = paused;
            // What it gave back unhandled is no longer out: it comes again as new.
            let handled = route.position.max(confirmed);
            while route.exposed.back().is_some_and(|l| *l > handled) {
                route.exposed.pop_back();
            }
        }
        if confirmed > route.position {
            self.confirm(name, confirmed, &mut out);
        } else {
            self.evict(&mut out);
            self.pump_into(name, &mut out);
        }
        out
    }

    /// `name`'s component is healthy again: deliver from its position.
    pub fn resume(&mut self, name: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(route) = self.routes.get_mut(name) {
            route.paused = false;
            // It may be waiting for newer batches at once (a route registered at the
            // head, say): the full ring must not wait for a slow route on its account.
            self.evict(&mut out);
            self.pump_into(name, &mut out);
        }
        out
    }

    /// The catch-up read asked for `name` returned `changes` (of its tables, in LSN
    /// order) and considered every log row up to `scanned_to`.
    ///
    /// Only what the poller has published (up to the ring's end) counts: past it may lie
    /// rows the poller could not decode and has not yet moved to the dead letters, and
    /// a position moved past such a row would let cleanup delete it.
    pub fn catch_up_read(
        &mut self,
        name: &str,
        mut changes: Vec<Arc<Change>>,
        scanned_to: i64,
    ) -> Vec<Effect> {
        let mut scanned_to = scanned_to.min(self.ring_end);
        changes.retain(|c| c.lsn <= scanned_to);
        let mut out = Vec::new();
        let Some(route) = self.routes.get_mut(name) else {
            return out;
        };
        if route.work != Work::CatchingUp {
            return out;
        }
        route.work = Work::Idle;
        // Within the re-delivery bound: the rest is read again next time.
        let budget = self.bound.saturating_sub(route.exposed.len()).max(1);
        if changes.len() > budget {
            changes.truncate(budget);
            scanned_to = changes[budget - 1].lsn;
        }
        if changes.is_empty() {
            // Nothing of its tables up to `scanned_to` (undecodable rows are dead
            // letters by now: the poller's when it read them, the router's when they lie
            // before the poller's start).
            if scanned_to > route.position {
                self.confirm(name, scanned_to, &mut out);
            }
        } else if route.active() && !self.stopping {
            route.work = Work::Delivering;
            route.exposed.extend(changes.iter().map(|c| c.lsn));
            out.push(Effect::Deliver {
                route: name.to_string(),
                changes: Arc::new(changes),
                upto: scanned_to,
            });
        }
        // Paused meanwhile (or stopping): the changes wait in the log.
        out
    }

    /// The catch-up read for `name` failed; the caller retries with [`Routing::pump`].
    /// The end of what the poller has published (its start until it publishes): a
    /// catch-up read counts nothing past it.
    pub fn ring_end(&self) -> i64 {
        self.ring_end
    }

    pub fn catch_up_failed(&mut self, name: &str) {
        if let Some(route) = self.routes.get_mut(name) {
            if route.work == Work::CatchingUp {
                route.work = Work::Idle;
            }
        }
    }

    /// `name`'s slot now durably holds `position` (one it was asked to persist): what
    /// it confirmed up to there will not come again after a crash, so it may get more.
    pub fn persisted(&mut self, name: &str, position: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(route) = self.routes.get_mut(name) {
            route.durable = route.durable.max(position);
            while route.exposed.front().is_some_and(|l| *l <= route.durable) {
                route.exposed.pop_front();
            }
            self.pump_into(name, &mut out);
        }
        out
    }

    /// Gives `name` its next delivery or catch-up read, if it is free to take one.
    pub fn pump(&mut self, name: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        self.pump_into(name, &mut out);
        out
    }

    /// Starts nothing new from now on (shutdown).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// True while a delivery or a catch-up read is outstanding.
    pub fn busy(&self) -> bool {
        self.routes.values().any(|r| r.work != Work::Idle)
    }

    /// Batches in the ring.
    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }

    /// A route's confirmed position.
    pub fn position(&self, name: &str) -> Option<i64> {
        self.routes.get(name).map(|r| r.position)
    }

    fn pump_all(&mut self, out: &mut Vec<Effect>) {
        let names: Vec<String> = self.routes.keys().cloned().collect();
        for name in names {
            self.pump_into(&name, out);
        }
    }

    fn pump_into(&mut self, name: &str, out: &mut Vec<Effect>) {
        if self.stopping {
            return;
        }
        let Some(route) = self.routes.get_mut(name) else {
            return;
        };
        if route.work != Work::Idle || !route.active() {
            return;
        }
        // Changes it may still be given before a slot write must land.
        let budget = self.bound.saturating_sub(route.exposed.len());
        if budget == 0 {
            return; // The next slot write (already asked for) pumps it.
        }
        if route.position >= self.ring_end {
            return; // Caught up: the next batch pumps it.
        }
        if route.position < self.ring_start {
            // Left behind by the ring: read its own tables from the log.
            route.work = Work::CatchingUp;
            out.push(Effect::CatchUp {
                route: name.to_string(),
                after: route.position,
                tables: route.table_list.clone(),
            });
            return;
        }
        // This route's changes from the first ring batch that has any.
        let mut upto = route.position;
        let mut changes = Vec::new();
        let mut last_table: Option<(Arc<str>, bool)> = None;
        for batch in self.ring.iter().filter(|b| b.upto > route.position) {
            let mut wanted = batch
                .changes
                .iter()
                .filter(|c| c.lsn > route.position && route.wants_memo(c, &mut last_table));
            changes.extend(wanted.by_ref().take(budget).cloned());
            upto = match (wanted.next(), changes.last()) {
                // Cut short by the bound: the delivery ends at its last change.
                (Some(_), Some(last)) => last.lsn,
                _ => batch.upto,
            };
            if !changes.is_empty() {
                break;
            }
        }
        if changes.is_empty() {
            // Nothing for this route up to `upto`: move its slot without a delivery.
            self.confirm(name, upto, out);
            return;
        }
        route.work = Work::Delivering;
        route.exposed.extend(changes.iter().map(|c| c.lsn));
        out.push(Effect::Deliver {
            route: name.to_string(),
            changes: Arc::new(changes),
            upto,
        });
    }

    /// Records a new confirmed position: persist it, let the ring shrink, pump again
    /// (within the re-delivery bound while the position is not yet durable).
    fn confirm(&mut self, name: &str, position: i64, out: &mut Vec<Effect>) {
        if let Some(route) = self.routes.get_mut(name) {
            debug_assert!(position > route.position, "positions only move forward");
            route.position = position;
            out.push(Effect::Persist {
                route: name.to_string(),
                position,
            });
        }
        self.evict(out);
        self.pump_into(name, out);
    }

    /// Drops ring batches nobody needs any more, and, when the ring is full while some
    /// route waits for newer changes, the oldest batch even if a slow route still needs
    /// it (that route will read it from the log).
    fn evict(&mut self, out: &mut Vec<Effect>) {
        let mut released = 0;
        while let Some(oldest) = self.ring.front() {
            let upto = oldest.upto;
            let needed = self.routes.values().any(|r| r.holds(upto));
            let someone_waits = self
                .routes
                .values()
                .any(|r| r.active() && r.work == Work::Idle && r.position >= self.ring_end);
            if needed && !(self.ring.len() >= self.window && someone_waits) {
                break;
            }
            self.ring.pop_front();
            self.ring_start = upto;
            released += 1;
        }
        if released > 0 {
            out.push(Effect::Release(released));
            // Routes the ring left behind now catch up from the log.
            self.pump_all(out);
        }
    }
}

#[cfg(test)]
mod tests;
