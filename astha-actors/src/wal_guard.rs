//! When to reset the WAL, and how: the poller's policy for `wal_max_bytes` (the reset
//! itself is [`astha_core::wal_bound::reset`], run on the store's write thread).
//!
//! A reset restarts the WAL and keeps its file, which the next writes go over from the
//! start; the file grows again only once the WAL is longer than the file, and that is when
//! the next reset comes. A file past twice the limit is truncated instead (a restart is
//! about ten times cheaper for writers than a truncation, which is kept for the rare file
//! that overshot), so the file stays under about twice `wal_max_bytes`.
//!
//! It promises at most one reset at a time, one only when the WAL file is past the
//! limit, and, after a reset that could not finish (another connection's long read
//! transaction kept it from copying every frame), a pause that doubles up to
//! [`MAX_BACKOFF`] before the next, so writers are not made to wait again and again for
//! a reader that is not going away. It reads no file and runs no SQL: the poller gives
//! it the size its read thread measured.

use std::time::{Duration, Instant};

use astha_core::wal_bound::ResetMode;

/// Pause after the first reset that could not finish.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between two resets that could not finish.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The WAL bound's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLimit {
    /// WAL file size past which it is reset; 0: never.
    pub max_bytes: u64,
    /// How long a reset waits for readers inside the WAL.
    pub wait: Duration,
}

impl Default for WalLimit {
    fn default() -> Self {
        let defaults = astha_core::config::AsthaConfig::default();
        Self {
            max_bytes: defaults.wal_max_bytes,
            wait: defaults.wal_reset_wait,
        }
    }
}

/// The state of the WAL bound.
#[derive(Debug)]
pub struct WalGuard {
    limit: WalLimit,
    running: bool,
    not_before: Option<Instant>,
    backoff: Duration,
    /// Size of the file the last reset left: writes go over it until the WAL is longer.
    kept: u64,
}

impl WalGuard {
    pub fn new(limit: WalLimit) -> Self {
        Self {
            limit,
            running: false,
            not_before: None,
            backoff: FIRST_BACKOFF,
            kept: 0,
        }
    }

    pub fn limit(&self) -> WalLimit {
        self.limit
    }

    /// The reset to start now, for a WAL file of `bytes`, if any; it is running until
    /// [`finished`](Self::finished).
    pub fn start(&mut self, bytes: u64, now: Instant) -> Option<ResetMode> {
        let max = self.limit.max_bytes;
        let oversized = bytes > max.saturating_mul(2);
        let due = max > 0
            && bytes > max
            && (bytes > self.kept || oversized)
            && !self.running
            && self.not_before.is_none_or(|t| now >= t);
        self.running |= due;
        let mode = match oversized {
            true => ResetMode::Truncate,
            false => ResetMode::Restart,
        };
        due.then_some(mode)
    }

    /// How long from `now` until a reset may start again (zero when it may now).
    pub fn paused_for(&self, now: Instant) -> Duration {
        self.not_before
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Records how the running reset ended: `complete` when every frame was copied, and
    /// the size of the WAL file after it.
    pub fn finished(&mut self, complete: bool, file_after: u64, now: Instant) {
        self.running = false;
        if complete {
            self.kept = file_after;
            self.not_before = None;
            self.backoff = FIRST_BACKOFF;
        } else {
            self.not_before = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn guard() -> WalGuard {
        WalGuard::new(WalLimit {
            max_bytes: 4 * MB,
            wait: Duration::from_millis(10),
        })
    }

    #[test]
    fn resets_only_past_the_limit_and_one_at_a_time() {
        let mut g = guard();
        let now = Instant::now();
        assert_eq!(g.start(4 * MB, now), None, "at the limit is within it");
        assert_eq!(g.start(4 * MB + 1, now), Some(ResetMode::Restart));
        assert_eq!(g.start(40 * MB, now), None, "one reset at a time");
        g.finished(true, 0, now);
        assert!(
            g.start(5 * MB, now).is_some(),
            "a finished reset leaves no pause"
        );
    }

    #[test]
    fn a_restarted_file_is_written_over_until_the_wal_outgrows_it_and_past_twice_the_limit_truncated(
    ) {
        let mut g = guard();
        let now = Instant::now();
        assert_eq!(g.start(6 * MB, now), Some(ResetMode::Restart));
        g.finished(true, 6 * MB, now);
        assert_eq!(
            g.start(6 * MB, now),
            None,
            "the kept file is being written over"
        );
        assert_eq!(g.start(6 * MB + 4096, now), Some(ResetMode::Restart));
        g.finished(true, 6 * MB + 4096, now);
        assert_eq!(g.start(9 * MB, now), Some(ResetMode::Truncate));
        g.finished(true, 9 * MB, now);
        assert_eq!(
            g.start(9 * MB, now),
            Some(ResetMode::Truncate),
            "still too big"
        );
        g.finished(true, 0, now);
        assert_eq!(g.start(4 * MB + 1, now), Some(ResetMode::Restart));
    }

    #[test]
    fn backs_off_after_resets_that_could_not_finish_doubling_to_a_cap() {
        let mut g = guard();
        let mut now = Instant::now();
        assert!(g.start(6 * MB, now).is_some());
        let mut pauses = Vec::new();
        for _ in 0..9 {
            g.finished(false, 0, now);
            assert!(g.start(6 * MB, now).is_none());
            let mut waited = Duration::ZERO;
            while g.start(6 * MB, now + waited).is_none() {
                waited += Duration::from_millis(250);
            }
            pauses.push(waited.as_secs_f64());
            now += waited;
        }
        assert_eq!(pauses, [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        g.finished(true, 0, now);
        assert!(
            g.start(6 * MB, now).is_some(),
            "a reset that finished ends the pauses"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let mut g = WalGuard::new(WalLimit {
            max_bytes: 0,
            wait: Duration::from_millis(10),
        });
        assert_eq!(g.start(u64::MAX, Instant::now()), None);
    }
}
