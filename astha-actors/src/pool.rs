//! A fixed set of named threads running blocking jobs from one bounded queue.
//!
//! [`Store`](crate::store::Store) runs Astha's SQLite work here rather than on tokio's
//! blocking pool, which may grow to 512 threads, each with its own glibc malloc arena:
//! Astha is often embedded in a host's runtime, so it cannot rely on how that runtime is
//! configured. The number of threads is fixed when the pool starts; each owns a state (a
//! SQLite connection) that its jobs borrow, so connections are as bounded as threads.
//!
//! Promises: a job never runs on the caller's thread, and a caller never blocks its
//! thread: it waits asynchronously for a place in the queue when the queue is full (the
//! bound counts jobs queued or running), then for the result; or, with
//! [`Pool::submit`], it does not wait at all and hears of a full queue at once. A new job wakes one idle
//! thread, the one idle for the shortest time. A job that panics fails its caller with
//! [`PoolError::Panicked`]; its thread starts again from a fresh state. Dropping the
//! pool closes the queue: the threads finish the jobs already queued, then exit. Nothing
//! here joins a thread, so dropping a pool never blocks.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a job did not return a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The pool's threads are gone.
    #[error("the worker threads have stopped")]
    Stopped,
    /// The job panicked.
    #[error("the job panicked")]
    Panicked,
    /// The queue was full and the caller could not wait ([`Pool::submit`]).
    #[error("the job queue is full")]
    Full,
}

/// Threads that each own an `S` and run the jobs sent to the pool on it.
pub struct Pool<S> {
    queue: Arc<Queue<S>>,
    /// One permit per job queued or running: the queue's bound.
    permits: Arc<Semaphore>,
    live: Arc<AtomicUsize>,
}

/// The jobs waiting and the threads waiting for them. A new job wakes the thread that
/// went idle last (its connection and CPU caches are the warmest), and only that one.
struct Queue<S> {
    inner: Mutex<Waiting<S>>,
}

struct Waiting<S> {
    jobs: VecDeque<(Job<S>, OwnedSemaphorePermit)>,
    idle: Vec<Thread>,
    closed: bool,
}

impl<S> Queue<S> {
    fn lock(&self) -> MutexGuard<'_, Waiting<S>> {
        // Nothing panics while holding the lock (jobs run outside it).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, waiting for one; `None` once the pool is dropped and none is left.
    fn next(&self) -> Option<(Job<S>, OwnedSemaphorePermit)> {
        let me = std::thread::current();
        let mut waiting = self.lock();
        loop {
            if let Some(job) = waiting.jobs.pop_front() {
                return Some(job);
            }
            if waiting.closed {
                return None;
            }
            waiting.idle.push(me.clone());
            drop(waiting);
            // An unpark that came first makes this return at once; so may nothing at all.
            std::thread::park();
            waiting = self.lock();
            waiting.idle.retain(|t| t.id() != me.id());
        }
    }
}

impl<S: 'static> Pool<S> {
    /// Starts `threads` threads named `name-0`, `name-1`, ... sharing a queue of `queue`
    /// jobs. Each builds its state with `state` on its own thread, and again after a job
    /// panicked.
    pub fn start<F>(name: &str, threads: usize, queue: usize, state: F) -> std::io::Result<Self>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        let pool = Pool {
            queue: Arc::new(Queue {
                inner: Mutex::new(Waiting {
                    jobs: VecDeque::new(),
                    idle: Vec::new(),
                    closed: false,
                }),
            }),
            permits: Arc::new(Semaphore::new(queue.max(1))),
            live: Arc::new(AtomicUsize::new(0)),
        };
        let state = Arc::new(state);
        for i in 0..threads.max(1) {
            let (queue, state, alive) = (pool.queue.clone(), state.clone(), Alive::new(&pool.live));
            // On failure, dropping `pool` stops the threads already started.
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&queue, &*state, alive))?;
        }
        Ok(pool)
    }

    /// Runs `f` on one of the pool's threads with that thread's state.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Box::new(move |state| {
            let _ = tx.send(f(state));
        }))
        .await?;
        // The sender is dropped unsent only when the job panicked.
        rx.await.map_err(|_| PoolError::Panicked)
    }

    /// Queues `f` to run on one of the pool's threads without waiting for anything, from
    /// any thread (an async one, or a SQLite hook on an application's thread): `f` gets
    /// `Ok` with the thread's state, or `Err` (on the caller's thread, before this
    /// returns) when the queue is full or the pool stopped. `f` runs once either way,
    /// unless it panics on the pool's thread, which starts that thread afresh as for
    /// [`Pool::run`]; a caller that must hear of that catches the panic in `f`.
    pub fn submit<F>(&self, f: F)
    where
        F: FnOnce(Result<&mut S, PoolError>) + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return f(Err(PoolError::Stopped)),
            Err(tokio::sync::TryAcquireError::NoPermits) => return f(Err(PoolError::Full)),
        };
        self.push(Box::new(move |state| f(Ok(state))), permit);
    }

    /// Queues `job`, waiting for a place first if the queue is full.
    async fn enqueue(&self, job: Job<S>) -> Result<(), PoolError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Stopped)?;
        self.push(job, permit);
        Ok(())
    }

    /// Queues `job`, which holds its place in the queue with `permit`, and wakes the
    /// thread idle for the shortest time.
    fn push(&self, job: Job<S>, permit: OwnedSemaphorePermit) {
        let wake = {
            let mut waiting = self.queue.lock();
            waiting.jobs.push_back((job, permit));
            waiting.idle.pop()
        };
        if let Some(thread) = wake {
            thread.unpark();
        }
    }

    /// Jobs queued and not yet started.
    pub fn queued(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// Threads still running (they outlive the pool by the jobs queued when it dropped).
    pub fn live_threads(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The live-thread counter itself, to watch the threads after the pool is dropped.
    #[cfg(test)]
    pub(crate) fn live(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

impl<S> Drop for Pool<S> {
    fn drop(&mut self) {
        self.permits.close();
        let idle = {
            let mut waiting = self.queue.lock();
            waiting.closed = true;
            std::mem::take(&mut waiting.idle)
        };
        for thread in idle {
            thread.unpark();
        }
    }
}

fn work<S>(queue: &Queue<S>, state: &dyn Fn() -> S, _alive: Alive) {
    let mut current = state();
    while let Some((job, _permit)) = queue.next() {
        if catch_unwind(AssertUnwindSafe(|| job(&mut current))).is_err() {
            current = state();
        }
    }
}

/// Counts a thread as live from before it is spawned until it returns.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Alive(live.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_until(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[tokio::test]
    async fn jobs_run_on_the_pool_threads_only_and_no_more_at_once() {
        let pool = Pool::start("test-pool", 2, 4, || ()).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let caller = std::thread::current().id();
        let jobs = (0..32).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
                let me = std::thread::current();
                assert_ne!(me.id(), caller);
                me.name().unwrap().to_string()
            })
        });
        let names = futures::future::join_all(jobs).await;
        for name in names {
            assert!(name.unwrap().starts_with("test-pool-"));
        }
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(pool.live_threads(), 2);
    }

    /// Submits a job that runs until the returned gate is sent to (or dropped), and waits
    /// until it runs: the thread it runs on, and the gate.
    fn occupy(pool: &Pool<()>) -> (std::thread::ThreadId, std::sync::mpsc::Sender<()>) {
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        let (ran, ran_on) = std::sync::mpsc::channel();
        pool.submit(move |state| {
            assert!(state.is_ok());
            ran.send(std::thread::current().id()).unwrap();
            let _ = wait.recv();
        });
        (ran_on.recv_timeout(Duration::from_secs(10)).unwrap(), gate)
    }

    #[test]
    fn queued_counts_the_jobs_waiting_behind_the_running_ones() {
        let pool = Pool::start("test-queued", 1, 4, || ()).unwrap();
        let (_, gate) = occupy(&pool);
        assert_eq!(pool.queued(), 0, "the running job is not queued");
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let done = done.clone();
            pool.submit(move |_| done.send(()).unwrap());
        }
        assert_eq!(pool.queued(), 2);
        gate.send(()).unwrap();
        for _ in 0..2 {
            finished.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(pool.queued(), 0);
    }

    #[test]
    fn submit_runs_on_a_pool_thread_and_reports_a_full_queue_or_a_stopped_pool_at_once() {
        let pool = Pool::start("test-submit", 1, 1, || ()).unwrap();
        let caller = std::thread::current().id();
        let (on, gate) = occupy(&pool);
        assert_ne!(on, caller);
        // The one place is taken by the job still running: refused, on this thread.
        let (refused, why) = std::sync::mpsc::channel();
        pool.submit(move |state| {
            refused
                .send((std::thread::current().id(), state.err()))
                .unwrap()
        });
        assert_eq!(why.try_recv().unwrap(), (caller, Some(PoolError::Full)));
        gate.send(()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = done.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            pool.submit(move |state| {
                let ok = state.is_ok();
                if ok {
                    done.send(()).unwrap();
                }
                tx.send(ok).unwrap();
            });
            if rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                break;
            }
            assert!(Instant::now() < deadline, "the place never came free");
            std::thread::sleep(Duration::from_millis(1));
        }
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        drop(pool);
        let stopped = Pool::start("test-submit-2", 1, 1, || ()).unwrap();
        stopped.permits.close();
        let (tx, rx) = std::sync::mpsc::channel();
        stopped.submit(move |state| tx.send(state.err()).unwrap());
        assert_eq!(rx.try_recv().unwrap(), Some(PoolError::Stopped));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_and_the_thread_starts_afresh() {
        let built = Arc::new(AtomicUsize::new(0));
        let counter = built.clone();
        let pool = Pool::start("test-panic", 1, 1, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            0u32
        })
        .unwrap();
        assert_eq!(pool.run(|n| std::mem::replace(n, 7)).await, Ok(0));
        let failed = pool
            .run(|_: &mut u32| -> u32 { panic!("job panics") })
            .await;
        assert_eq!(failed, Err(PoolError::Panicked));
        assert_eq!(pool.run(|n| *n).await, Ok(0), "fresh state after a panic");
        assert_eq!(built.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn threads_exit_after_the_pool_is_dropped_and_finish_queued_jobs() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let pool = Pool::start("test-drop", 3, 8, || ()).unwrap();
        let live = pool.live();
        let done = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            assert_eq!(pool.run(|_| 1).await, Ok(1));
            // Queued, not awaited: they still run after the drop.
            for _ in 0..5 {
                let done = done.clone();
                let job: Job<()> = Box::new(move |_| {
                    std::thread::sleep(Duration::from_millis(5));
                    done.fetch_add(1, Ordering::SeqCst);
                });
                pool.enqueue(job).await.unwrap();
            }
        });
        assert_eq!(live.load(Ordering::SeqCst), 3);
        drop(pool);
        assert!(
            wait_until(|| live.load(Ordering::SeqCst) == 0),
            "threads still alive"
        );
        assert_eq!(done.load(Ordering::SeqCst), 5);
    }
}
