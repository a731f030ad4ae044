//! Turns at SQLite's write lock between this process's application writers (connections
//! from [`crate::db::open_writer`]) and Astha's slot writes.
//!
//! A route goes at most one batch past its durable position, so under a writer that
//! never pauses delivery runs at the pace of slot writes, and a slot write's time is
//! mostly its wait for the write lock. SQLite's write lock has no queue: whoever wants
//! it polls it from a busy handler. A writer committing back to back frees it for a few
//! microseconds between transactions, so the slot write spun on a CPU to catch that gap
//! and often missed it (a slot write took 0.9–1.4 ms on average from asked to durable in
//! the throughput bench, 0.6 ms of it in the write job); and when it did catch it, the
//! application's writer found the lock held and slept a blind 100 µs or more for a lock
//! that was free again after a few tens. Within one process both sides see the other's
//! commits (the `wal_hook`s of [`crate::wake`], which SQLite calls after a commit, with
//! the lock released), so they take turns instead:
//! - a slot write ([`taking_turns`]) that finds the lock held while an application
//!   writer of this process has committed lately asks for the next turn and sleeps
//!   until that writer's next commit wakes it ([`astha_wait`]);
//! - the application writer whose commit finds a turn asked for lets it go first: it
//!   waits in its hook until Astha's write commits, at most [`PARK_MAX`]
//!   ([`app_committed`]);
//! - an application writer that finds the lock held waits for Astha's next commit, at
//!   most as long as it would have slept ([`app_wait`]), rather than sleeping blind.
//!
//! Astha's other writes (cleanup, dead letters, heartbeats) do not ask: they are
//! background work, and take the lock as any connection does. Turns are per database
//! file ([`Database`]): a writer of one database never waits for a slot write of
//! another.
//!
//! Every wait is bounded. A turn not taken (Astha's thread not scheduled in time, a
//! writer of another process holding the lock) costs at most that bound and the busy
//! handlers go on retrying as before. Writers in other processes are not involved: they
//! meet Astha at the lock alone, as any two SQLite connections do.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Longest an application writer waits in its commit hook for the turn it gave Astha.
/// Astha's turn is one short transaction (a slot write takes tens of microseconds); the
/// bound covers its thread being woken late on a busy machine, and a turn asked for
/// and then not taken.
pub const PARK_MAX: Duration = Duration::from_millis(1);

/// Longest Astha's writer sleeps at a time waiting for an application commit before it
/// tries the lock again (a writer of another process may hold it, whose commits wake
/// nobody here).
pub const ASK_MAX: Duration = Duration::from_millis(2);

/// An application writer that committed within this long counts as active: a busy lock
/// is then most likely its, and its next commit will come soon.
const ACTIVE_WITHIN: Duration = Duration::from_millis(10);

/// A database file, by device and inode: two paths to one file are one database, and a
/// file replaced at the same path is another (what `Store::check_file` looks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Database(u64, u64);

impl Database {
    /// The database file at `path`; `None` when it cannot be told (no such file, or not
    /// on Unix): writes to it then take no turns.
    pub fn of(path: &Path) -> Option<Database> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path)
                .ok()
                .map(|m| Database(m.dev(), m.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }
}

/// One database's turns.
struct Lane {
    db: Database,
    /// Commits of its application writers so far.
    app_commits: u64,
    /// Slot writes asking for a turn now.
    asking: usize,
    /// Microseconds since [`epoch`] at its last application commit.
    last_app_commit_us: u64,
}

struct State {
    lanes: Vec<Lane>,
    /// Commits of Astha's writers so far (of any database: an application writer waiting
    /// for one wakes, tries the lock, and waits again if it was another's).
    astha_commits: u64,
    /// Threads waiting on [`TURNS`]'s condition variable (no wake-up call without one).
    sleepers: usize,
}

impl State {
    fn lane(&self, db: Database) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.db == db)
    }

    /// `db`'s lane, made if needed; lanes idle for a while (no commit for
    /// [`ACTIVE_WITHIN`], nobody asking) go first, so a process that opens many databases
    /// in turn keeps few.
    fn lane_mut(&mut self, db: Database, now: u64) -> &mut Lane {
        match self.lanes.iter().position(|l| l.db == db) {
            Some(i) => &mut self.lanes[i],
            None => {
                let idle = ACTIVE_WITHIN.as_micros() as u64;
                self.lanes
                    .retain(|l| l.asking > 0 || now.saturating_sub(l.last_app_commit_us) <= idle);
                self.lanes.push(Lane {
                    db,
                    app_commits: 0,
                    asking: 0,
                    last_app_commit_us: 0,
                });
                self.lanes.last_mut().expect("pushed above")
            }
        }
    }
}

struct Turns {
    state: Mutex<State>,
    changed: Condvar,
}

static TURNS: Turns = Turns {
    state: Mutex::new(State {
        lanes: Vec::new(),
        astha_commits: 0,
        sleepers: 0,
    }),
    changed: Condvar::new(),
};

/// Turns application writers gave (commits that found a turn asked for).
static TURNS_GIVEN: AtomicU64 = AtomicU64::new(0);

/// Turns application writers of this process have given Astha's slot writes so far (for
/// tests and diagnostics).
pub fn turns_given() -> u64 {
    TURNS_GIVEN.load(Ordering::Relaxed)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn state() -> MutexGuard<'static, State> {
    // The state is counters only: a panic elsewhere cannot leave it inconsistent.
    TURNS.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on [`TURNS`] until `done` holds or `deadline` passes; true if `done` held.
fn wait_until(
    mut state: MutexGuard<'static, State>,
    deadline: Instant,
    done: impl Fn(&State) -> bool,
) -> (MutexGuard<'static, State>, bool) {
    state.sleepers += 1;
    let held = loop {
        if done(&state) {
            break true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        state = TURNS
            .changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    };
    state.sleepers -= 1;
    (state, held)
}

fn notify(state: &State) {
    if state.sleepers > 0 {
        TURNS.changed.notify_all();
    }
}

thread_local! {
    /// The database whose application commit this thread is making (set by the commit
    /// hook just before the commit, taken by the `wal_hook` just after).
    static COMMITTING: Cell<Option<Database>> = const { Cell::new(None) };
    /// The database of the write this thread runs with [`taking_turns`].
    static TAKES_TURNS: Cell<Option<Database>> = const { Cell::new(None) };
}

/// Called by an application writer's commit hook, just before it commits to `db`.
pub fn app_committing(db: Database) {
    COMMITTING.with(|c| c.set(Some(db)));
}

/// Called by an application writer's `wal_hook`, after the commit, with the write lock
/// released. When a slot write on the same database is asking for a turn, wakes it and
/// waits until Astha's write committed (at most [`PARK_MAX`]); otherwise returns at once.
/// A commit whose database is unknown (no [`app_committing`] before it) takes no part.
pub fn app_committed() {
    let Some(db) = COMMITTING.with(Cell::take) else {
        return;
    };
    let now = now_us();
    let mut state = state();
    let lane = state.lane_mut(db, now);
    lane.last_app_commit_us = now;
    if lane.asking == 0 {
        return;
    }
    lane.app_commits += 1;
    TURNS_GIVEN.fetch_add(1, Ordering::Relaxed);
    let seen = state.astha_commits;
    notify(&state);
    let deadline = Instant::now() + PARK_MAX;
    drop(wait_until(state, deadline, |s| s.astha_commits != seen));
}

/// Called by the commit hook of Astha's own writers: wakes application writers waiting
/// for the lock ([`app_wait`]) or for the end of the turn they gave ([`app_committed`]).
pub fn astha_committed() {
    let mut state = state();
    state.astha_commits += 1;
    notify(&state);
}

/// Runs `write` (a short write that others wait for: a slot write, to `db`) so that the
/// busy handler of its connection ([`crate::db::use_fast_busy_handler`]) asks this
/// process's application writers of `db` for turns at the lock ([`astha_wait`]). With
/// `db` `None`, `write` just runs.
pub fn taking_turns<T>(db: Option<Database>, write: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            TAKES_TURNS.with(|t| t.set(None));
        }
    }
    TAKES_TURNS.with(|t| t.set(db));
    let _reset = Reset;
    write()
}

/// For Astha's writers' busy handler: in a write run by [`taking_turns`], when an
/// application writer of its database committed within [`ACTIVE_WITHIN`], asks for the
/// next turn and sleeps until its next commit (at most [`ASK_MAX`]), returning true (try
/// the lock again now). False otherwise: a write that does not take turns, or a lock held
/// by someone whose commits are not seen here; the caller retries as it would without
/// turns.
pub fn astha_wait() -> bool {
    let Some(db) = TAKES_TURNS.with(Cell::get) else {
        return false;
    };
    let now = now_us();
    let mut state = state();
    let seen = match state.lane(db) {
        Some(lane)
            if now.saturating_sub(lane.last_app_commit_us) <= ACTIVE_WITHIN.as_micros() as u64 =>
        {
            lane.app_commits
        }
        _ => return false,
    };
    state.lane_mut(db, now).asking += 1;
    let deadline = Instant::now() + ASK_MAX;
    let (mut state, _) = wait_until(state, deadline, |s| {
        s.lane(db).map(|l| l.app_commits) != Some(seen)
    });
    state.lane_mut(db, now).asking -= 1;
    true
}

/// For application writers' busy handler: waits at most `delay` for Astha's next commit
/// (when Astha holds the lock, the lock is free again then), instead of sleeping all of it.
pub fn app_wait(delay: Duration) {
    let deadline = Instant::now() + delay;
    let state = state();
    let seen = state.astha_commits;
    drop(wait_until(state, deadline, |s| s.astha_commits != seen));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// The turns are process-wide: the tests of this module run one at a time, each on
    /// databases of its own.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(db: Database) {
        app_committing(db);
        app_committed();
    }

    fn asking(db: Database) -> usize {
        state().lane(db).map_or(0, |l| l.asking)
    }

    #[test]
    fn only_a_write_taking_turns_asks_and_only_while_a_writer_of_its_database_is_active() {
        let _serial = serial();
        let (db, other) = (Database(u64::MAX, 1), Database(u64::MAX, 2));
        assert!(
            !taking_turns(Some(db), astha_wait),
            "no application writer yet: no turn to ask for"
        );
        commit(db);
        assert!(
            !astha_wait(),
            "a write that does not take turns asks for none"
        );
        assert!(
            !taking_turns(None, astha_wait),
            "nor one of an unknown database"
        );
        assert!(
            !taking_turns(Some(other), astha_wait),
            "the writer is another database's"
        );
        // An active writer: a turn is asked for. (On a loaded machine this thread may
        // be scheduled out for longer than the writer counts as active: tried again.)
        let asked = (0..20).any(|_| {
            commit(db);
            let started = Instant::now();
            let asked = taking_turns(Some(db), astha_wait);
            if asked {
                assert!(
                    started.elapsed() >= ASK_MAX,
                    "no commit came: the ask lasts its bound"
                );
            }
            asked
        });
        assert!(asked, "an active writer: a turn is asked for");
        assert_eq!(asking(db), 0);
        // A commit without its database said first (a connection whose commit hook was
        // replaced) takes no part.
        app_committed();
    }

    #[test]
    fn an_application_commit_gives_an_asked_turn_and_waits_for_astha_to_take_it() {
        let _serial = serial();
        let db = Database(u64::MAX, 3);
        // A run where the main thread was scheduled too late for Astha's bounded ask
        // (a loaded machine) shows nothing: tried again, a few times at most.
        for _ in 0..20 {
            commit(db); // an active application writer
            let astha = std::thread::spawn(move || {
                let seen = state().lane(db).map(|l| l.app_commits);
                // No ask when the writer no longer counts as active by now.
                if !taking_turns(Some(db), astha_wait) {
                    return None;
                }
                let woken_by_a_commit = state().lane(db).map(|l| l.app_commits) != seen;
                std::thread::sleep(Duration::from_micros(300)); // its write
                let took = Instant::now();
                astha_committed();
                Some((woken_by_a_commit, took))
            });
            // Until it asks, or is done (its ask may have come and gone unseen).
            while asking(db) == 0 && !astha.is_finished() {
                std::thread::yield_now();
            }
            let started = Instant::now();
            commit(db);
            let returned = Instant::now();
            let Some((true, took)) = astha.join().unwrap() else {
                continue;
            };
            // Parked until Astha's write committed; only Astha's thread scheduled later
            // than the bound lets the hook return first, and then only at the bound.
            assert!(
                returned >= took || returned - started >= PARK_MAX,
                "the hook returned {:?} before Astha's write committed, after {:?}",
                took - returned,
                returned - started
            );
            return;
        }
        panic!("no application commit ever ended Astha's ask");
    }

    #[test]
    fn a_writer_of_another_database_gives_no_turn() {
        let _serial = serial();
        let (db, other) = (Database(u64::MAX, 4), Database(u64::MAX, 5));
        let stop = Arc::new(AtomicBool::new(false));
        let astha = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    commit(db); // keeps db's writer active, so the asks go on
                    taking_turns(Some(db), astha_wait);
                }
            })
        };
        let looking = Instant::now();
        while asking(db) == 0 {
            assert!(looking.elapsed() < Duration::from_secs(30), "never asked");
            std::thread::yield_now();
        }
        let given = turns_given();
        for _ in 0..100 {
            commit(other);
        }
        assert_eq!(
            turns_given(),
            given,
            "another database's commits gave a turn"
        );
        stop.store(true, Ordering::Relaxed);
        astha.join().unwrap();
    }

    #[test]
    fn an_application_writer_waiting_for_the_lock_wakes_at_asthas_commit() {
        let _serial = serial();
        let waiter = std::thread::spawn(|| {
            let started = Instant::now();
            app_wait(Duration::from_secs(5));
            started.elapsed()
        });
        // Commit until the waiter is gone (it may not be waiting yet at the first one).
        while !waiter.is_finished() {
            astha_committed();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(waiter.join().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn idle_lanes_go_when_another_database_comes() {
        let _serial = serial();
        let mut state = State {
            lanes: Vec::new(),
            astha_commits: 0,
            sleepers: 0,
        };
        let idle = ACTIVE_WITHIN.as_micros() as u64;
        state.lane_mut(Database(1, 1), 0).last_app_commit_us = 0;
        state.lane_mut(Database(1, 2), 0).asking = 1;
        state.lane_mut(Database(1, 3), 0).last_app_commit_us = 5 * idle;
        state.lane_mut(Database(1, 4), 5 * idle);
        let kept: Vec<Database> = state.lanes.iter().map(|l| l.db).collect();
        assert_eq!(
            kept,
            [Database(1, 2), Database(1, 3), Database(1, 4)],
            "the idle lane went; the asking one and the recent one stayed"
        );
    }
}
