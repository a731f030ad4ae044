//! A circuit breaker, as a state machine driven by an injected clock.
//!
//! Owns [`BreakerConfig`] and [`CircuitBreaker`]. After `failure_threshold` consecutive
//! failures the breaker opens and refuses work for `cool_down`; then it lets probes through
//! (half-open) and closes again after `half_open_successes` successes, or reopens on the
//! first failed probe. Every method takes `now` instead of reading a clock, so the same
//! calls always lead to the same states and tests need neither sleeps nor a runtime. It
//! never schedules anything itself: a caller that wants to wake up when probing may start
//! asks [`CircuitBreaker::retry_at`].

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::duration::duration_serde;
use crate::config::error::ConfigError;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; a success resets the count. Default `5`.
    pub failure_threshold: u32,
    /// How long an open breaker refuses work before letting a probe through. Default `"5s"`.
    #[serde(with = "duration_serde")]
    pub cool_down: Duration,
    /// Successful probes needed in half-open to close again. Default `1`.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
            half_open_successes: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks the configuration; field names in the error are relative to it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::invalid(
                "failure_threshold",
                "must be at least 1 (got 0)".to_string(),
            ));
        }
        // A zero cool-down would turn "open" into "half-open on the next call", i.e. no
        // protection at all; that is better said by a large failure_threshold.
        if self.cool_down.is_zero() {
            return Err(ConfigError::invalid(
                "cool_down",
                "must be greater than 0 (got 0ms)".to_string(),
            ));
        }
        if self.half_open_successes == 0 {
            return Err(ConfigError::invalid(
                "half_open_successes",
                "must be at least 1 (got 0)".to_string(),
            ));
        }
        Ok(())
    }
}

/// The externally visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Work flows; failures are being counted.
    Closed,
    /// Work is refused until the cool-down has passed.
    Open,
    /// Probes are let through to find out whether the dependency recovered.
    HalfOpen,
}

impl BreakerState {
    /// The name used in logs, metrics and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Internal state; unlike [`BreakerState`] it remembers when the breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { since: Instant },
    HalfOpen,
}

/// A circuit breaker for one dependency.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    /// Consecutive failures while closed.
    consecutive_failures: u32,
    /// Successful probes while half-open.
    probe_successes: u32,
    times_opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            phase: Phase::Closed,
            consecutive_failures: 0,
            probe_successes: 0,
            times_opened: 0,
        }
    }

    /// The configuration this breaker follows.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Current state. An open breaker whose cool-down has passed still reports `Open`
    /// until [`allow`](Self::allow) is called: only `allow` moves it to half-open.
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// When the breaker last opened, if it is open.
    pub fn open_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { since } => Some(since),
            _ => None,
        }
    }

    /// When an open breaker will let a probe through; `None` unless open (or if the
    /// instant is not representable, which means never).
    pub fn retry_at(&self) -> Option<Instant> {
        self.open_since()
            .and_then(|since| since.checked_add(self.config.cool_down))
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How many times the breaker has opened (including reopenings and forced opens)
    /// since it was created; [`reset`](Self::reset) does not clear it.
    pub fn times_opened(&self) -> u64 {
        self.times_opened
    }

    /// Whether a call may go ahead now. An open breaker whose cool-down has passed turns
    /// half-open here and answers `true`: the caller's call is the probe.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Closed | Phase::HalfOpen => true,
            Phase::Open { .. } => {
                let cooled = self.retry_at().is_some_and(|at| now >= at);
                if cooled {
                    self.phase = Phase::HalfOpen;
                    self.probe_successes = 0;
                }
                cooled
            }
        }
    }

    /// Reports a successful call.
    ///
    /// While open, results are ignored: they come from calls admitted before the breaker
    /// opened, and must neither close it early nor change the cool-down.
    pub fn on_success(&mut self, _now: Instant) {
        match self.phase {
            Phase::Closed => self.consecutive_failures = 0,
            Phase::HalfOpen => {
                self.probe_successes += 1;
                if self.probe_successes >= self.config.half_open_successes {
                    self.close();
                }
            }
            Phase::Open { .. } => {}
        }
    }

    /// Reports a failed call. A failure while half-open reopens the breaker with a fresh
    /// cool-down starting at `now`; failures while open are ignored (see
    /// [`on_success`](Self::on_success)).
    pub fn on_failure(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= self.config.failure_threshold {
                    self.open(now);
                }
            }
            Phase::HalfOpen => self.open(now),
            Phase::Open { .. } => {}
        }
    }

    /// Opens the breaker now, e.g. on an operator's request or an error known to be
    /// fatal for a while. If already open, the cool-down restarts at `now` without
    /// counting another opening.
    pub fn force_open(&mut self, now: Instant) {
        if let Phase::Open { .. } = self.phase {
            self.phase = Phase::Open { since: now };
        } else {
            self.open(now);
        }
    }

    /// Closes the breaker and clears its failure and probe counts; `times_opened` is kept
    /// because it is a lifetime counter.
    pub fn reset(&mut self) {
        self.close();
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Open { since: now };
        self.consecutive_failures = 0;
        self.probe_successes = 0;
        self.times_opened += 1;
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.consecutive_failures = 0;
        self.probe_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(threshold: u32, cool_ms: u64, successes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_millis(cool_ms),
            half_open_successes: successes,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_and_display() {
        let c = BreakerConfig::default();
        assert_eq!(
            (c.failure_threshold, c.cool_down, c.half_open_successes),
            (5, ms(5000), 1)
        );
        c.validate().unwrap();
        assert_eq!(BreakerState::Closed.to_string(), "closed");
        assert_eq!(BreakerState::Open.to_string(), "open");
        assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config(3, 1000, 1));
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success(t0); // resets the streak
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        b.on_failure(t0 + ms(1));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.open_since(), Some(t0 + ms(1)));
        assert_eq!(b.retry_at(), Some(t0 + ms(1001)));
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn cool_down_then_probe_then_close() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config(1, 1000, 2));
        b.on_failure(t0);
        assert!(!b.allow(t0 + ms(999)));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow(t0 + ms(1000)));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(t0 + ms(1001)), "half-open lets probes through");
        b.on_success(t0 + ms(1002));
        assert_eq!(b.state(), BreakerState::HalfOpen, "needs two successes");
        b.on_success(t0 + ms(1003));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn failed_probe_reopens_with_fresh_cool_down() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config(1, 1000, 1));
        b.on_failure(t0);
        assert!(b.allow(t0 + ms(1500)));
        b.on_failure(t0 + ms(1600));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.open_since(), Some(t0 + ms(1600)));
        assert!(!b.allow(t0 + ms(2599)));
        assert!(b.allow(t0 + ms(2600)));
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn results_while_open_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config(1, 1000, 1));
        b.on_failure(t0);
        b.on_success(t0 + ms(10));
        b.on_failure(t0 + ms(20));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.open_since(), Some(t0));
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn force_open_and_reset() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        b.on_failure(t0);
        b.force_open(t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.consecutive_failures(), 0);
        b.force_open(t0 + ms(100)); // restarts the cool-down, no second count
        assert_eq!(b.open_since(), Some(t0 + ms(100)));
        assert_eq!(b.times_opened(), 1);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t0 + ms(101)));
        assert_eq!(b.times_opened(), 1, "lifetime counter survives reset");
    }

    #[test]
    fn unrepresentable_cool_down_never_elapses() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            cool_down: Duration::MAX,
            ..BreakerConfig::default()
        });
        b.force_open(t0);
        assert_eq!(b.retry_at(), None);
        assert!(!b.allow(t0 + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn validate_rejects_zeroes() {
        for (c, field) in [
            (config(0, 1000, 1), "failure_threshold"),
            (config(1, 0, 1), "cool_down"),
            (config(1, 1000, 0), "half_open_successes"),
        ] {
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{c:?}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_round_trip() {
        let c: BreakerConfig = toml::from_str("failure_threshold = 2\ncool_down = \"1m\"").unwrap();
        assert_eq!(c, config(2, 60_000, 1));
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("cool_down = \"1m\""), "{text}");
        assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), c);
        let err = toml::from_str::<BreakerConfig>("threshold = 2").unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
    }

    /// The reference: the textbook description, written as directly as possible, with
    /// time as plain milliseconds.
    #[derive(Debug)]
    struct Model {
        threshold: u32,
        cool_ms: u64,
        needed: u32,
        /// `Some(t)` while open since `t`.
        opened_at: Option<u64>,
        probing: bool,
        failures: u32,
        successes: u32,
        opened: u64,
    }

    impl Model {
        fn state(&self) -> BreakerState {
            if self.opened_at.is_some() {
                BreakerState::Open
            } else if self.probing {
                BreakerState::HalfOpen
            } else {
                BreakerState::Closed
            }
        }

        fn trip(&mut self, now: u64) {
            self.opened_at = Some(now);
            self.probing = false;
            self.failures = 0;
            self.successes = 0;
            self.opened += 1;
        }

        fn allow(&mut self, now: u64) -> bool {
            match self.opened_at {
                Some(t) if now - t >= self.cool_ms => {
                    self.opened_at = None;
                    self.probing = true;
                    self.successes = 0;
                    true
                }
                Some(_) => false,
                None => true,
            }
        }

        fn success(&mut self) {
            if self.opened_at.is_some() {
                return;
            }
            if self.probing {
                self.successes += 1;
                if self.successes == self.needed {
                    self.probing = false;
                    self.successes = 0;
                }
            } else {
                self.failures = 0;
            }
        }

        fn failure(&mut self, now: u64) {
            if self.opened_at.is_some() {
                return;
            }
            if self.probing {
                self.trip(now);
            } else {
                self.failures += 1;
                if self.failures == self.threshold {
                    self.trip(now);
                }
            }
        }

        fn force_open(&mut self, now: u64) {
            if self.opened_at.is_some() {
                self.opened_at = Some(now);
            } else {
                self.trip(now);
            }
        }

        fn reset(&mut self) {
            self.opened_at = None;
            self.probing = false;
            self.failures = 0;
            self.successes = 0;
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Success,
        Failure,
        Allow,
        ForceOpen,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..1500).prop_map(Op::Advance),
            4 => Just(Op::Success),
            5 => Just(Op::Failure),
            5 => Just(Op::Allow),
            1 => Just(Op::ForceOpen),
            1 => Just(Op::Reset),
        ]
    }

    proptest! {
        #[test]
        fn matches_the_model(
            threshold in 1u32..6,
            cool_ms in 1u64..2000,
            needed in 1u32..4,
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let t0 = Instant::now();
            let mut breaker = CircuitBreaker::new(config(threshold, cool_ms, needed));
            let mut model = Model {
                threshold, cool_ms, needed,
                opened_at: None, probing: false, failures: 0, successes: 0, opened: 0,
            };
            let mut now_ms = 0u64;
            for op in ops {
                let now = t0 + ms(now_ms);
                match op {
                    Op::Advance(d) => now_ms += d,
                    Op::Success => { breaker.on_success(now); model.success(); }
                    Op::Failure => { breaker.on_failure(now); model.failure(now_ms); }
                    Op::Allow => prop_assert_eq!(breaker.allow(now), model.allow(now_ms)),
                    Op::ForceOpen => { breaker.force_open(now); model.force_open(now_ms); }
                    Op::Reset => { breaker.reset(); model.reset(); }
                }
                prop_assert_eq!(breaker.state(), model.state());
                prop_assert_eq!(breaker.times_opened(), model.opened);
                prop_assert_eq!(breaker.consecutive_failures(), model.failures);
                prop_assert_eq!(breaker.open_since(), model.opened_at.map(|t| t0 + ms(t)));
                prop_assert!(breaker.consecutive_failures() < threshold);
            }
        }
    }
}
