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
//! background work, and take the lock as any connection does.
//!
//! Every wait is bounded. A turn not taken (Astha's thread not scheduled in time, a
//! writer of another process holding the lock) costs at most that bound and the busy
//! handlers go on retrying as before. Writers in other processes are not involved: they
//! meet Astha at the lock alone, as any two SQLite connections do.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

#[derive(Default)]
struct State {
    /// Commits of application writers, and of Astha's writers, so far.
    app_commits: u64,
    astha_commits: u64,
    /// Threads waiting on [`TURNS`]'s condition variable (no wake-up call without one).
    sleepers: usize,
}

struct Turns {
    state: Mutex<State>,
    changed: Condvar,
}

static TURNS: Turns = Turns {
    state: Mutex::new(State {
        app_commits: 0,
        astha_commits: 0,
        sleepers: 0,
    }),
    changed: Condvar::new(),
};

/// Astha's writers asking for a turn now (read on every application commit, lock-free).
static ASKING: AtomicUsize = AtomicUsize::new(0);

/// Turns application writers gave (commits that found a turn asked for).
static TURNS_GIVEN: AtomicU64 = AtomicU64::new(0);

/// Turns application writers of this process have given Astha's slot writes so far (for
/// tests and diagnostics).
pub fn turns_given() -> u64 {
    TURNS_GIVEN.load(Ordering::Relaxed)
}

/// Microseconds since [`epoch`] at the last application commit (0: none yet).
static LAST_APP_COMMIT_US: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    // +1: a commit in the epoch's first microsecond is not "none yet".
    epoch().elapsed().as_micros() as u64 + 1
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
) -> bool {
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
    held
}

fn notify(state: &State) {
    if state.sleepers > 0 {
        TURNS.changed.notify_all();
    }
}

/// Called by an application writer's commit hook, after the commit, with the write lock
/// released. When Astha's writer is asking for a turn, wakes it and waits until its
/// write committed (at most [`PARK_MAX`]); otherwise returns at once (one atomic load).
pub fn app_committed() {
    LAST_APP_COMMIT_US.store(now_us(), Ordering::Relaxed);
    if ASKING.load(Ordering::Acquire) == 0 {
        return;
    }
    TURNS_GIVEN.fetch_add(1, Ordering::Relaxed);
    let mut state = state();
    state.app_commits += 1;
    let seen = state.astha_commits;
    notify(&state);
    let deadline = Instant::now() + PARK_MAX;
    wait_until(state, deadline, |s| s.astha_commits != seen);
}

/// Called by the commit hook of Astha's own writers: wakes application writers waiting
/// for the lock ([`app_wait`]) or for the end of the turn they gave ([`app_committed`]).
pub fn astha_committed() {
    let mut state = state();
    state.astha_commits += 1;
    notify(&state);
}

thread_local! {
    /// This thread runs a write that asks for turns ([`taking_turns`]).
    static TAKES_TURNS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `write` (a short write that others wait for: a slot write) so that the busy
/// handler of its connection ([`crate::db::use_fast_busy_handler`]) asks this process's
/// application writers for turns at the lock ([`astha_wait`]).
pub fn taking_turns<T>(write: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            TAKES_TURNS.with(|t| t.set(false));
        }
    }
    TAKES_TURNS.with(|t| t.set(true));
    let _reset = Reset;
    write()
}

/// Whether an application writer of this process committed lately.
fn app_writer_active() -> bool {
    let last = LAST_APP_COMMIT_US.load(Ordering::Relaxed);
    last != 0 && now_us().saturating_sub(last) <= ACTIVE_WITHIN.as_micros() as u64
}

/// For Astha's writers' busy handler: in a write run by [`taking_turns`], when an
/// application writer of this process is active, asks for the next turn and sleeps until
/// its next commit (at most [`ASK_MAX`]), returning true (try the lock again now). False
/// otherwise: a write that does not take turns, or a lock held by someone whose commits
/// are not seen here; the caller retries as it would without turns.
pub fn astha_wait() -> bool {
    if !TAKES_TURNS.with(Cell::get) || !app_writer_active() {
        return false;
    }
    let state = state();
    let seen = state.app_commits;
    ASKING.fetch_add(1, Ordering::AcqRel);
    let deadline = Instant::now() + ASK_MAX;
    wait_until(state, deadline, |s| s.app_commits != seen);
    ASKING.fetch_sub(1, Ordering::AcqRel);
    true
}

/// For application writers' busy handler: waits at most `delay` for Astha's next commit
/// (when Astha holds the lock, the lock is free again then), instead of sleeping all of it.
pub fn app_wait(delay: Duration) {
    let deadline = Instant::now() + delay;
    let state = state();
    let seen = state.astha_commits;
    wait_until(state, deadline, |s| s.astha_commits != seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The turns are process-wide: the tests of this module run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn only_a_write_taking_turns_asks_and_only_while_an_application_writer_is_active() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        LAST_APP_COMMIT_US.store(0, Ordering::Relaxed);
        assert!(
            !taking_turns(astha_wait),
            "no application writer yet: no turn to ask for"
        );
        app_committed();
        assert!(
            !astha_wait(),
            "a write that does not take turns asks for none"
        );
        let started = Instant::now();
        assert!(
            taking_turns(astha_wait),
            "an active writer: a turn is asked for"
        );
        assert!(
            started.elapsed() >= ASK_MAX,
            "no commit came: the ask lasts its bound"
        );
        assert_eq!(ASKING.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_application_commit_gives_an_asked_turn_and_waits_for_astha_to_take_it() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // A run where the main thread was scheduled too late for Astha's bounded ask
        // (a loaded machine) shows nothing: tried again, a few times at most.
        for _ in 0..20 {
            app_committed(); // an active application writer
            let astha = std::thread::spawn(|| {
                let seen = state().app_commits;
                assert!(taking_turns(astha_wait));
                let woken_by_a_commit = state().app_commits != seen;
                std::thread::sleep(Duration::from_micros(300)); // its write
                let took = Instant::now();
                astha_committed();
                (woken_by_a_commit, took)
            });
            while ASKING.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            let started = Instant::now();
            app_committed();
            let returned = Instant::now();
            let (woken_by_a_commit, took) = astha.join().unwrap();
            if !woken_by_a_commit {
                continue;
            }
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
    fn an_application_writer_waiting_for_the_lock_wakes_at_asthas_commit() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
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
}
