use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::Operation;

fn change(lsn: i64, table: &str) -> Arc<Change> {
    Arc::new(Change::bare(lsn, table, Operation::Insert))
}

fn batch(after: i64, rows: &[(i64, &str)]) -> Arc<SharedBatch> {
    Arc::new(SharedBatch {
        after,
        upto: rows.last().map_or(after, |r| r.0),
        changes: rows.iter().map(|(l, t)| change(*l, t)).collect(),
    })
}

fn tables(names: &[&str]) -> Vec<String> {
    names.iter().map(|t| t.to_string()).collect()
}

/// A route registered at `position` and resumed (its component refreshed).
fn route(routing: &mut Routing, name: &str, of: &[&str], position: i64) -> Vec<Effect> {
    assert!(routing.register(name, tables(of), position));
    routing.resume(name)
}

/// The deliveries among `effects`, as (route, lsns, upto).
fn deliveries(effects: &[Effect]) -> Vec<(String, Vec<i64>, i64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                route,
                changes,
                upto,
            } => Some((
                route.clone(),
                changes.iter().map(|c| c.lsn).collect(),
                *upto,
            )),
            _ => None,
        })
        .collect()
}

fn persists(effects: &[Effect]) -> Vec<(String, i64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { route, position } => Some((route.clone(), *position)),
            _ => None,
        })
        .collect()
}

fn released(effects: &[Effect]) -> usize {
    effects
        .iter()
        .map(|e| match e {
            Effect::Release(n) => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn each_route_gets_only_its_tables_and_moves_past_batches_without_any() {
    let mut r = Routing::new(4, 0, 64);
    assert!(route(&mut r, "ab", &["a", "b"], 0).is_empty());
    assert!(route(&mut r, "c", &["c"], 0).is_empty());
    assert!(!r.register("c", tables(&["a"]), 0), "names are unique");
    let out = r.batch(batch(0, &[(1, "a"), (2, "b"), (3, "a")]));
    assert_eq!(deliveries(&out), vec![("ab".into(), vec![1, 2, 3], 3)]);
    // Nothing of "c" in (0, 3]: its slot moves without a delivery, and the ring keeps
    // the batch for "ab", which has not confirmed it.
    assert_eq!(persists(&out), vec![("c".into(), 3)]);
    assert_eq!(released(&out), 0);
    let out = r.progress("ab", 3, true, false);
    assert_eq!(persists(&out), vec![("ab".into(), 3)]);
    assert_eq!(released(&out), 1, "nobody needs the batch any more");
    assert_eq!(r.position("ab"), Some(3));
}

#[test]
fn nothing_more_is_delivered_until_the_confirmed_position_is_durable() {
    let mut r = Routing::new(4, 0, 1);
    route(&mut r, "x", &["a"], 0);
    r.batch(batch(0, &[(1, "a")]));
    let out = r.batch(batch(1, &[(2, "a")]));
    assert!(deliveries(&out).is_empty(), "one delivery at a time");
    let out = r.progress("x", 1, true, false);
    assert!(deliveries(&out).is_empty(), "position 1 is not durable yet");
    let out = r.persisted("x", 1);
    assert_eq!(deliveries(&out), vec![("x".into(), vec![2], 2)]);
}

/// The re-delivery bound counts changes, not slot writes: with room left in it, a
/// route gets its next changes while its last position is still being written, and a
/// delivery is cut short where the bound ends.
#[test]
fn slot_writes_and_deliveries_overlap_within_the_redelivery_bound() {
    let mut r = Routing::new(4, 0, 3);
    route(&mut r, "x", &["a"], 0);
    let out = r.batch(batch(0, &[(1, "a")]));
    assert_eq!(deliveries(&out), vec![("x".into(), vec![1], 1)]);
    r.batch(batch(1, &[(2, "a"), (3, "b"), (4, "a"), (5, "a")]));
    // Position 1 is being written; 2 more changes keep a crash within 3.
    let out = r.progress("x", 1, true, false);
    assert_eq!(persists(&out), vec![("x".into(), 1)]);
    assert_eq!(deliveries(&out), vec![("x".into(), vec![2, 4], 4)]);
    let out = r.progress("x", 4, true, false);
    assert_eq!(persists(&out), vec![("x".into(), 4)]);
    assert!(deliveries(&out).is_empty(), "3 changes past the durable 0");
    // The write of 1 lands: one change of room.
    let out = r.persisted("x", 1);
    assert_eq!(deliveries(&out), vec![("x".into(), vec![5], 5)]);
    // A delivery given back unhandled no longer counts; a catch-up read is cut to the
    // room left.
    let out = r.progress("x", 4, true, true);
    assert!(deliveries(&out).is_empty(), "paused");
    let out = r.resume("x");
    assert!(matches!(&out[..], [Effect::CatchUp { after: 4, .. }]));
    let out = r.catch_up_read("x", vec![change(5, "a"), change(6, "a")], 6);
    assert_eq!(deliveries(&out), vec![("x".into(), vec![5], 5)]);
}

#[test]
fn a_stuck_route_gives_up_the_full_ring_and_catches_up_from_the_log() {
    let mut r = Routing::new(2, 0, 1);
    route(&mut r, "slow", &["a"], 0);
    route(&mut r, "fast", &["a"], 0);
    let fast_takes = |r: &mut Routing, after: i64, lsn: i64| {
        let out = r.batch(batch(after, &[(lsn, "a")]));
        assert!(deliveries(&out).contains(&("fast".into(), vec![lsn], lsn)));
        let out = r.progress("fast", lsn, true, false);
        r.persisted("fast", lsn);
        out
    };
    let out = fast_takes(&mut r, 0, 1);
    assert_eq!(
        released(&out),
        0,
        "\"slow\" holds batch 1, the window is not full"
    );
    // Each time the ring is full while "fast" waits for the next batch, the oldest
    // goes, though "slow" (still on its delivery of change 1) needs it.
    let out = fast_takes(&mut r, 1, 2);
    assert_eq!(released(&out), 1);
    let out = fast_takes(&mut r, 2, 3);
    assert_eq!(released(&out), 1);
    assert_eq!(r.ring_len(), 1);
    // "slow" confirms its delivery; it is now behind the ring: it reads the log.
    let out = r.progress("slow", 1, true, false);
    assert!(deliveries(&out).is_empty());
    let out = r.persisted("slow", 1);
    assert!(matches!(
        &out[..],
        [Effect::CatchUp { route, after: 1, .. }] if route == "slow"
    ));
    // The read reaches the ring: the route is fed from the ring again.
    let out = r.catch_up_read("slow", vec![change(2, "a")], 2);
    assert_eq!(deliveries(&out), vec![("slow".into(), vec![2], 2)]);
    r.progress("slow", 2, true, false);
    let out = r.persisted("slow", 2);
    assert_eq!(deliveries(&out), vec![("slow".into(), vec![3], 3)]);
}

/// Found by the property test: a route registered at the head while a stuck route
/// held the full ring waited for the stuck one, since nothing evicted on its resume.
#[test]
fn a_route_resumed_at_the_head_does_not_wait_for_a_stuck_one() {
    let mut r = Routing::new(1, 0, 1);
    route(&mut r, "stuck", &["a"], 0);
    r.batch(batch(0, &[(1, "a")]));
    assert!(r.register("late", tables(&["a"]), 1));
    let out = r.resume("late");
    assert_eq!(released(&out), 1, "the poller may read on for \"late\"");
    let out = r.batch(batch(1, &[(2, "a")]));
    assert_eq!(deliveries(&out), vec![("late".into(), vec![2], 2)]);
}

#[test]
fn a_pause_during_a_catch_up_read_drops_the_read_and_resume_reads_again() {
    let mut r = Routing::new(1, 5, 1);
    assert!(r.register("late", tables(&["a"]), 0));
    r.batch(batch(5, &[(6, "a")]));
    let out = r.resume("late");
    assert!(matches!(&out[..], [Effect::CatchUp { after: 0, .. }]));
    assert!(r.busy());
    // The component's health check fails meanwhile: its breaker opens.
    assert!(r.progress("late", 0, true, true).is_empty());
    assert!(r.catch_up_read("late", vec![change(2, "a")], 5).is_empty());
    assert!(!r.busy());
    let out = r.resume("late");
    assert!(matches!(&out[..], [Effect::CatchUp { after: 0, .. }]));
    r.catch_up_failed("late");
    assert!(matches!(
        &r.pump("late")[..],
        [Effect::CatchUp { after: 0, .. }]
    ));
}

#[test]
fn stopping_starts_nothing_new() {
    let mut r = Routing::new(2, 0, 1);
    route(&mut r, "x", &["a"], 0);
    r.stop();
    assert!(deliveries(&r.batch(batch(0, &[(1, "a")]))).is_empty());
    assert!(!r.busy());
}

#[test]
fn a_disabled_route_holds_nothing_and_resumes_where_it_stopped() {
    let mut r = Routing::new(1, 0, 1);
    route(&mut r, "x", &["a"], 0);
    assert!(r.set_disabled("x", true).unwrap().is_empty());
    let out = r.batch(batch(0, &[(1, "a")]));
    assert_eq!(released(&out), 1, "a disabled route does not hold the ring");
    let out = r.set_disabled("x", false).unwrap();
    assert!(matches!(&out[..], [Effect::CatchUp { after: 0, .. }]));
    assert!(r.set_disabled("nobody", true).is_none());
    assert!(r.unregister("x").is_some());
    assert!(r.unregister("x").is_none());
}

// The property test: a model of the log, the poller and the components drives the state
// machine through random interleavings, and every effect is checked against the model.

const TABLES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// Writers commit this many more rows.
    Commit(u8),
    /// The poller reads a batch of at most this many rows.
    Poll(u8),
    /// A route's component handles its whole delivery.
    Confirm(u8),
    /// A route's breaker opens after it handled this many changes of its delivery.
    PauseDuring(u8, u8),
    /// A route's breaker opens with no delivery (a failed health check).
    PauseIdle(u8),
    Resume(u8),
    /// A route's catch-up read returns at most this many changes.
    CatchUp(u8, u8),
    CatchUpFails(u8),
    /// The router's retry timer pumps a route.
    Pump(u8),
    /// A route's slot write completes (the one holding which of its positions).
    Persisted(u8, u8),
    /// A component registers: its tables (a bit mask) and its slot (a fraction of the head).
    Register(u8, u8),
    Disable(u8, bool),
    Unregister(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let r = any::<u8>();
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Commit),
        3 => (1u8..5).prop_map(Op::Poll),
        4 => r.prop_map(Op::Confirm),
        1 => (r, any::<u8>()).prop_map(|(a, b)| Op::PauseDuring(a, b)),
        1 => r.prop_map(Op::PauseIdle),
        2 => r.prop_map(Op::Resume),
        3 => (r, 1u8..5).prop_map(|(a, b)| Op::CatchUp(a, b)),
        1 => r.prop_map(Op::CatchUpFails),
        1 => r.prop_map(Op::Pump),
        4 => (r, any::<u8>()).prop_map(|(a, b)| Op::Persisted(a, b)),
        1 => (1u8..8, any::<u8>()).prop_map(|(a, b)| Op::Register(a, b)),
        1 => (r, any::<bool>()).prop_map(|(a, b)| Op::Disable(a, b)),
        1 => r.prop_map(Op::Unregister),
    ]
}

/// What the model knows of one route's component.
#[derive(Debug, Default)]
struct Component {
    tables: Vec<&'static str>,
    /// The last position the state machine asked to persist.
    position: i64,
    delivery: Option<(Vec<i64>, i64)>,
    catch_up: Option<i64>,
    /// Positions asked to be persisted and not yet written, in order.
    persists: Vec<i64>,
    /// The position its slot durably holds.
    durable: i64,
    /// A catch-up read failed: the router's timer will pump the route.
    retry_pending: bool,
    paused: bool,
    disabled: bool,
    /// Changes the component handled.
    handled: BTreeSet<i64>,
}

struct World {
    /// The table of each log row; row `i` has LSN `i + 1`.
    log: Vec<&'static str>,
    written: i64,
    read_pos: i64,
    in_flight: usize,
    window: usize,
    /// The re-delivery bound the routing was made with.
    bound: usize,
    routing: Routing,
    components: BTreeMap<String, Component>,
    registered: usize,
}

impl World {
    fn rows(&self, tables: &[&str], after: i64, upto: i64) -> Vec<i64> {
        (after + 1..=upto)
            .filter(|l| tables.contains(&self.log[(*l - 1) as usize]))
            .collect()
    }

    fn name(&self, i: u8) -> Option<String> {
        let names: Vec<&String> = self.components.keys().collect();
        (!names.is_empty()).then(|| names[i as usize % names.len()].clone())
    }

    /// Checks each effect against the model and records it.
    fn apply(&mut self, effects: Vec<Effect>) -> Result<(), TestCaseError> {
        for effect in effects {
            match effect {
                Effect::Deliver {
                    route,
                    changes,
                    upto,
                } => {
                    let c = &self.components[&route];
                    prop_assert!(
                        c.delivery.is_none() && c.catch_up.is_none(),
                        "one at a time"
                    );
                    // What a crash now would deliver again: all it handled past its
                    // durable position, and this delivery.
                    let exposed = c.handled.range(c.durable + 1..).count() + changes.len();
                    prop_assert!(
                        exposed <= self.bound,
                        "{} changes past the durable position {} (bound {})",
                        exposed,
                        c.durable,
                        self.bound
                    );
                    prop_assert!(!c.paused && !c.disabled, "delivered to a paused route");
                    prop_assert!(upto > c.position && upto <= self.read_pos);
                    let lsns: Vec<i64> = changes.iter().map(|c| c.lsn).collect();
                    // Exactly its changes right after its position: no gap, no repeat.
                    prop_assert_eq!(&lsns, &self.rows(&c.tables, c.position, upto));
                    self.components.get_mut(&route).unwrap().delivery = Some((lsns, upto));
                }
                Effect::CatchUp {
                    route,
                    after,
                    tables,
                } => {
                    let c = self.components.get_mut(&route).unwrap();
                    prop_assert!(
                        c.delivery.is_none() && c.catch_up.is_none(),
                        "one at a time"
                    );
                    prop_assert!(!c.paused && !c.disabled);
                    prop_assert!(c.handled.range(c.durable + 1..).count() < self.bound);
                    prop_assert_eq!(after, c.position);
                    prop_assert_eq!(tables.len(), c.tables.len());
                    c.catch_up = Some(after);
                }
                Effect::Persist { route, position } => {
                    let c = &self.components[&route];
                    prop_assert!(position > c.position, "positions only move forward");
                    prop_assert!(
                        position <= self.read_pos,
                        "moved past what the poller published"
                    );
                    let missed: Vec<i64> = self
                        .rows(&c.tables, c.position, position)
                        .into_iter()
                        .filter(|l| !c.handled.contains(l))
                        .collect();
                    prop_assert!(
                        missed.is_empty(),
                        "{} moved past {:?} unhandled",
                        route,
                        missed
                    );
                    let c = self.components.get_mut(&route).unwrap();
                    c.position = position;
                    c.persists.push(position);
                }
                Effect::Release(n) => {
                    prop_assert!(n >= 1 && n <= self.in_flight);
                    self.in_flight -= n;
                }
            }
        }
        prop_assert_eq!(self.routing.ring_len(), self.in_flight);
        prop_assert!(self.routing.ring_len() <= self.window);
        Ok(())
    }

    fn poll(&mut self, rows: i64) -> Result<(), TestCaseError> {
        if self.in_flight >= self.window || self.read_pos >= self.written {
            return Ok(());
        }
        let upto = (self.read_pos + rows).min(self.written);
        let shared = Arc::new(SharedBatch {
            after: self.read_pos,
            upto,
            changes: (self.read_pos + 1..=upto)
                .map(|l| change(l, self.log[(l - 1) as usize]))
                .collect(),
        });
        self.read_pos = upto;
        self.in_flight += 1;
        let out = self.routing.batch(shared);
        self.apply(out)
    }

    fn confirm(&mut self, name: &str) -> Result<(), TestCaseError> {
        let c = self.components.get_mut(name).unwrap();
        let Some((lsns, upto)) = c.delivery.take() else {
            return Ok(());
        };
        c.handled.extend(lsns);
        let out = self.routing.progress(name, upto, true, false);
        self.apply(out)
    }

    fn catch_up(&mut self, name: &str, limit: usize) -> Result<(), TestCaseError> {
        let c = &self.components[name];
        let Some(after) = c.catch_up else {
            return Ok(());
        };
        let found = self.rows(&c.tables, after, self.written);
        let (lsns, scanned_to) = if found.len() > limit {
            (found[..limit].to_vec(), found[limit - 1])
        } else {
            (found, self.written)
        };
        let changes = lsns
            .iter()
            .map(|l| change(*l, self.log[(*l - 1) as usize]))
            .collect();
        self.components.get_mut(name).unwrap().catch_up = None;
        let out = self.routing.catch_up_read(name, changes, scanned_to);
        self.apply(out)
    }

    /// The slot write holding the `k`th position asked for (mod their number) lands;
    /// those before it were coalesced into it. `None`: the newest.
    fn persisted(&mut self, name: &str, k: Option<u8>) -> Result<(), TestCaseError> {
        let c = self.components.get_mut(name).unwrap();
        if c.persists.is_empty() {
            return Ok(());
        }
        let k = k.map_or(c.persists.len() - 1, |k| k as usize % c.persists.len());
        let position = c.persists[k];
        c.persists.drain(..=k);
        c.durable = position;
        let out = self.routing.persisted(name, position);
        self.apply(out)
    }

    fn retry(&mut self, name: &str) -> Result<(), TestCaseError> {
        let c = self.components.get_mut(name).unwrap();
        if !std::mem::take(&mut c.retry_pending) {
            return Ok(());
        }
        let out = self.routing.pump(name);
        self.apply(out)
    }

    fn resume(&mut self, name: &str) -> Result<(), TestCaseError> {
        let c = self.components.get_mut(name).unwrap();
        if !std::mem::take(&mut c.paused) {
            return Ok(());
        }
        let out = self.routing.resume(name);
        self.apply(out)
    }

    fn register(&mut self, mask: u8, position: i64) -> Result<(), TestCaseError> {
        let name = format!("c{}", self.registered);
        self.registered += 1;
        let tables: Vec<&'static str> = (0..3)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| TABLES[i])
            .collect();
        prop_assert!(self.routing.register(
            &name,
            tables.iter().map(|t| t.to_string()).collect(),
            position
        ));
        self.components.insert(
            name,
            Component {
                tables,
                position,
                durable: position,
                paused: true,
                ..Component::default()
            },
        );
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let pick = |w: &World, i: u8| w.name(i);
        match op {
            Op::Commit(n) => {
                self.written = (self.written + i64::from(n)).min(self.log.len() as i64)
            }
            Op::Poll(n) => self.poll(i64::from(n))?,
            Op::Confirm(i) => {
                if let Some(name) = pick(self, i) {
                    self.confirm(&name)?;
                }
            }
            Op::PauseDuring(i, k) => {
                let Some(name) = pick(self, i) else {
                    return Ok(());
                };
                let c = self.components.get_mut(&name).unwrap();
                let Some((lsns, _)) = c.delivery.take() else {
                    return Ok(());
                };
                let k = k as usize % lsns.len();
                c.handled.extend(&lsns[..k]);
                c.paused = true;
                // The supervisor reports what it handled, or 0 if nothing.
                let confirmed = if k == 0 { 0 } else { lsns[k - 1] };
                let out = self.routing.progress(&name, confirmed, true, true);
                self.apply(out)?;
            }
            Op::PauseIdle(i) => {
                let Some(name) = pick(self, i) else {
                    return Ok(());
                };
                let c = self.components.get_mut(&name).unwrap();
                if c.delivery.is_some() || c.paused {
                    return Ok(());
                }
                c.paused = true;
                let out = self.routing.progress(&name, 0, true, true);
                self.apply(out)?;
            }
            Op::Resume(i) => {
                if let Some(name) = pick(self, i) {
                    self.resume(&name)?;
                }
            }
            Op::CatchUp(i, limit) => {
                if let Some(name) = pick(self, i) {
                    self.catch_up(&name, limit as usize)?;
                }
            }
            Op::CatchUpFails(i) => {
                let Some(name) = pick(self, i) else {
                    return Ok(());
                };
                let c = self.components.get_mut(&name).unwrap();
                if c.catch_up.take().is_some() {
                    c.retry_pending = true;
                    self.routing.catch_up_failed(&name);
                }
            }
            Op::Pump(i) => {
                if let Some(name) = pick(self, i) {
                    self.retry(&name)?;
                }
            }
            Op::Persisted(i, k) => {
                if let Some(name) = pick(self, i) {
                    self.persisted(&name, Some(k))?;
                }
            }
            Op::Register(mask, frac) => {
                let position = self.written * i64::from(frac) / 255;
                self.register(mask, position)?;
            }
            Op::Disable(i, disabled) => {
                let Some(name) = pick(self, i) else {
                    return Ok(());
                };
                self.components.get_mut(&name).unwrap().disabled = disabled;
                let out = self.routing.set_disabled(&name, disabled).unwrap();
                self.apply(out)?;
            }
            Op::Unregister(i) => {
                let Some(name) = pick(self, i) else {
                    return Ok(());
                };
                self.components.remove(&name);
                let out = self.routing.unregister(&name).unwrap();
                self.apply(out)?;
            }
        }
        Ok(())
    }

    /// Commits everything, then runs poller, reads, slot writes and every component but
    /// those in `stuck` until nothing moves.
    fn drain(&mut self, stuck: &BTreeSet<String>) -> Result<(), TestCaseError> {
        self.written = self.log.len() as i64;
        loop {
            let before = self.fingerprint();
            self.poll(3)?;
            let names: Vec<String> = self.components.keys().cloned().collect();
            for name in names.iter().filter(|n| !stuck.contains(*n)) {
                self.confirm(name)?;
                self.catch_up(name, 4)?;
                self.persisted(name, None)?;
                self.retry(name)?;
            }
            if self.fingerprint() == before {
                return Ok(());
            }
        }
    }

    /// Everything that moves, to tell when nothing does any more.
    fn fingerprint(&self) -> String {
        format!("{} {} {:?}", self.read_pos, self.in_flight, self.components)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_the_model(
        log in prop::collection::vec(0usize..3, 0..60),
        window in 1usize..4,
        bound in 1usize..6,
        initial in prop::collection::vec(1u8..8, 0..3),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let mut world = World {
            log: log.into_iter().map(|t| TABLES[t]).collect(),
            written: 0,
            read_pos: 0,
            in_flight: 0,
            window,
            bound,
            routing: Routing::new(window, 0, bound),
            components: BTreeMap::new(),
            registered: 0,
        };
        for mask in initial {
            world.register(mask, 0)?;
            let name = format!("c{}", world.registered - 1);
            world.resume(&name)?;
        }
        for op in ops {
            world.step(op)?;
        }
        // A slow route never blocks the others: with the components that hold a
        // delivery stuck for good, every other active route still reaches the head.
        let stuck: BTreeSet<String> = world
            .components
            .iter()
            .filter(|(_, c)| c.delivery.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        world.drain(&stuck)?;
        let head = world.log.len() as i64;
        for (name, c) in &world.components {
            if !stuck.contains(name) && !c.paused && !c.disabled {
                prop_assert_eq!(c.position, head, "{} was held back", name);
            }
        }
        // Once everyone works again, everyone reaches the head, having handled every
        // change of its tables (checked at each position move).
        let names: Vec<String> = world.components.keys().cloned().collect();
        for name in &names {
            world.resume(name)?;
            if world.components[name].disabled {
                world.components.get_mut(name).unwrap().disabled = false;
                let out = world.routing.set_disabled(name, false).unwrap();
                world.apply(out)?;
            }
        }
        world.drain(&BTreeSet::new())?;
        for (name, c) in &world.components {
            prop_assert_eq!(c.position, head, "{} did not reach the head", name);
            prop_assert_eq!(world.routing.position(name), Some(head));
        }
        prop_assert!(!world.routing.busy());
    }
}
