//! Retry with exponential backoff and jitter, as pure arithmetic.
//!
//! Owns [`RetryPolicy`] (the configuration) and [`RetryState`] (the attempt count of one
//! item). It promises that an item gets exactly `max_attempts` attempts, that every backoff
//! lies in `[0, max_backoff]`, and that without jitter backoffs never shrink. It never
//! sleeps, reads a clock or owns a random generator: the caller injects a uniform sample in
//! `[0, 1)`, so the same inputs always give the same delay and tests need no runtime.
//!
//! Deciding *whether* an error is retriable is the caller's job: only retriable failures
//! should be recorded here, so that a permanent error does not burn through the attempts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration::{duration_serde, format_duration};
use crate::config::error::ConfigError;

/// How often and how patiently a failing item is retried.
///
/// Backoff after the `n`-th failure is `min(max_backoff, initial_backoff * multiplier^(n-1))`,
/// scaled by a jitter factor in `[1 - jitter, 1 + jitter]` and capped again at `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Delay after the first failure. Default `"100ms"`.
    #[serde(with = "duration_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any delay, jitter included. Default `"30s"`.
    #[serde(with = "duration_serde")]
    pub max_backoff: Duration,
    /// Growth factor between consecutive delays; at least 1. Default `2.0`.
    pub multiplier: f64,
    /// Fraction (0 to 1) by which a delay is randomly stretched or shrunk, so that items
    /// that failed together do not retry in lockstep. Default `0.2`.
    pub jitter: f64,
    /// Total attempts per item, the first one included; the failure of the last one gives
    /// up (the item goes to the dead letters). Default `30`.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: 30,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy; field names in the error are relative to the policy
    /// (`multiplier`, not `retry.multiplier`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.initial_backoff > self.max_backoff {
            return Err(ConfigError::invalid(
                "initial_backoff",
                format!(
                    "must not exceed max_backoff ({}) (got {})",
                    format_duration(self.max_backoff),
                    format_duration(self.initial_backoff)
                ),
            ));
        }
        // Below 1 the delays would shrink, which defeats backing off and breaks the
        // "never shrinks" promise the scheduler relies on.
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "multiplier",
                format!(
                    "must be a finite number of at least 1.0 (got {})",
                    self.multiplier
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::invalid(
                "jitter",
                format!("must be between 0.0 and 1.0 (got {})", self.jitter),
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "max_attempts",
                "must be at least 1 (got 0)".to_string(),
            ));
        }
        Ok(())
    }

    /// Un-jittered backoff after the `failures`-th failure (1-based; 0 is treated as 1).
    pub fn base_backoff(&self, failures: u32) -> Duration {
        let first = self.initial_backoff.min(self.max_backoff);
        if failures <= 1 || self.multiplier == 1.0 {
            return first;
        }
        let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        // Whole nanoseconds as f64: the initial value is exact (below 2^53 ns, about 104
        // days) and rounding is monotone, so the result never drops below `first` and
        // never shrinks as `failures` grows.
        let raw = nanos(self.initial_backoff) * self.multiplier.powi(exponent);
        // `raw` may be infinite or NaN for extreme multipliers; both mean "past the cap".
        if raw.is_nan() || raw >= nanos(self.max_backoff) {
            return self.max_backoff;
        }
        from_nanos(raw).clamp(first, self.max_backoff)
    }

    /// Backoff after the `failures`-th failure with jitter derived from `sample`.
    ///
    /// `sample` is a uniform draw from `[0, 1)`; it maps linearly onto the factor
    /// `[1 - jitter, 1 + jitter)`. Samples outside the range are clamped and NaN counts as
    /// 0.5 (no jitter), so a bad sample can never produce a bad delay.
    pub fn backoff_for(&self, failures: u32, sample: f64) -> Duration {
        let base = self.base_backoff(failures);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 {
            return base;
        }
        let sample = if sample.is_nan() {
            0.5
        } else {
            sample.clamp(0.0, 1.0)
        };
        let factor = 1.0 - jitter + 2.0 * jitter * sample;
        let jittered = (nanos(base) * factor).clamp(0.0, nanos(self.max_backoff));
        from_nanos(jittered).min(self.max_backoff)
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Rounds to whole nanoseconds; `f64 as u64` saturates, so no input can panic.
fn from_nanos(n: f64) -> Duration {
    Duration::from_nanos(n.round() as u64)
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again once this delay has passed.
    RetryAfter(Duration),
    /// The attempts are used up; `attempts` were made in total.
    GiveUp {
        /// Number of attempts made, equal to the policy's `max_attempts`.
        attempts: u32,
    },
}

/// Attempt bookkeeping for one item (one batch, one delivery).
///
/// Create it when the item is first tried, call [`record_failure`](Self::record_failure)
/// after each retriable failure, and drop it (or [`reset`](Self::reset)) on success.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryState {
    policy: RetryPolicy,
    failures: u32,
}

impl RetryState {
    /// A fresh state: no attempt has failed yet.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// The policy this state follows.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Failed attempts recorded so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the item has been given up on.
    pub fn is_exhausted(&self) -> bool {
        self.failures >= self.policy.max_attempts.max(1)
    }

    /// Records a failed attempt and says what to do next.
    ///
    /// The failure of attempt number `max_attempts` returns [`RetryDecision::GiveUp`], so
    /// exactly `max_attempts` attempts are made. Once given up, further calls keep
    /// returning `GiveUp` without counting, so a late report cannot inflate the count.
    pub fn record_failure(&mut self, rng_sample: f64) -> RetryDecision {
        let max_attempts = self.policy.max_attempts.max(1);
        if self.failures < max_attempts {
            self.failures += 1;
        }
        if self.failures >= max_attempts {
            RetryDecision::GiveUp {
                attempts: self.failures,
            }
        } else {
            RetryDecision::RetryAfter(self.policy.backoff_for(self.failures, rng_sample))
        }
    }

    /// [`record_failure`](Self::record_failure) with the sample drawn from `rng`.
    pub fn record_failure_with<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) -> RetryDecision {
        let sample: f64 = rng.random();
        self.record_failure(sample)
    }

    /// Forgets all failures, e.g. after a success when the same state is reused.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn default_matches_the_documented_values() {
        let p = RetryPolicy::default();
        assert_eq!(p.initial_backoff, ms(100));
        assert_eq!(p.max_backoff, Duration::from_secs(30));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.jitter, 0.2);
        assert_eq!(p.max_attempts, 30);
        p.validate().unwrap();
    }

    #[test]
    fn backoff_grows_geometrically_then_caps() {
        let p = no_jitter();
        assert_eq!(p.backoff_for(1, 0.0), ms(100));
        assert_eq!(p.backoff_for(2, 0.0), ms(200));
        assert_eq!(p.backoff_for(3, 0.0), ms(400));
        assert_eq!(p.backoff_for(9, 0.0), ms(25_600));
        assert_eq!(p.backoff_for(10, 0.0), Duration::from_secs(30));
        assert_eq!(p.backoff_for(u32::MAX, 0.0), Duration::from_secs(30));
        // 0 is treated like the first failure rather than underflowing.
        assert_eq!(p.backoff_for(0, 0.0), ms(100));
    }

    #[test]
    fn jitter_spans_the_band_deterministically() {
        let p = RetryPolicy::default(); // jitter 0.2
        assert_eq!(p.backoff_for(1, 0.0), ms(80));
        assert_eq!(p.backoff_for(1, 0.5), ms(100));
        assert_eq!(p.backoff_for(1, 0.75), ms(110));
        assert_eq!(p.backoff_for(3, 0.25), p.backoff_for(3, 0.25));
    }

    #[test]
    fn jitter_never_exceeds_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_for(20, 0.999), Duration::from_secs(30));
        assert_eq!(p.backoff_for(20, 0.0), Duration::from_secs(24));
    }

    #[test]
    fn odd_samples_are_tamed() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_for(1, f64::NAN), ms(100));
        assert_eq!(p.backoff_for(1, -3.0), ms(80));
        assert_eq!(p.backoff_for(1, 7.0), ms(120));
        assert_eq!(p.backoff_for(1, f64::INFINITY), ms(120));
    }

    #[test]
    fn gives_up_on_the_last_attempt() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..no_jitter()
        };
        let mut state = RetryState::new(policy);
        assert_eq!(
            state.record_failure(0.3),
            RetryDecision::RetryAfter(ms(100))
        );
        assert_eq!(
            state.record_failure(0.3),
            RetryDecision::RetryAfter(ms(200))
        );
        assert!(!state.is_exhausted());
        assert_eq!(
            state.record_failure(0.3),
            RetryDecision::GiveUp { attempts: 3 }
        );
        assert!(state.is_exhausted());
        // Late reports do not inflate the count.
        assert_eq!(
            state.record_failure(0.3),
            RetryDecision::GiveUp { attempts: 3 }
        );
        assert_eq!(state.failures(), 3);
    }

    #[test]
    fn single_attempt_gives_up_immediately() {
        let mut state = RetryState::new(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        });
        assert_eq!(
            state.record_failure(0.0),
            RetryDecision::GiveUp { attempts: 1 }
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut state = RetryState::new(no_jitter());
        state.record_failure(0.0);
        state.record_failure(0.0);
        state.reset();
        assert_eq!(state.failures(), 0);
        assert_eq!(
            state.record_failure(0.0),
            RetryDecision::RetryAfter(ms(100))
        );
    }

    #[test]
    fn rng_helper_stays_in_band() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut state = RetryState::new(RetryPolicy::default());
        match state.record_failure_with(&mut rng) {
            RetryDecision::RetryAfter(d) => assert!(d >= ms(80) && d <= ms(120), "{d:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        let cases = [
            (
                RetryPolicy {
                    multiplier: 0.5,
                    ..Default::default()
                },
                "multiplier",
            ),
            (
                RetryPolicy {
                    multiplier: f64::NAN,
                    ..Default::default()
                },
                "multiplier",
            ),
            (
                RetryPolicy {
                    jitter: 1.5,
                    ..Default::default()
                },
                "jitter",
            ),
            (
                RetryPolicy {
                    jitter: -0.1,
                    ..Default::default()
                },
                "jitter",
            ),
            (
                RetryPolicy {
                    max_attempts: 0,
                    ..Default::default()
                },
                "max_attempts",
            ),
            (
                RetryPolicy {
                    initial_backoff: ms(5),
                    max_backoff: ms(1),
                    ..Default::default()
                },
                "initial_backoff",
            ),
        ];
        for (policy, field) in cases {
            match policy.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{policy:?}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_accepts_strings_and_milliseconds() {
        let p: RetryPolicy = toml::from_str(
            "initial_backoff = 250\nmax_backoff = \"1m\"\nmultiplier = 3\nmax_attempts = 5",
        )
        .unwrap();
        assert_eq!(p.initial_backoff, ms(250));
        assert_eq!(p.max_backoff, Duration::from_secs(60));
        assert_eq!(p.multiplier, 3.0);
        assert_eq!(p.jitter, 0.2, "missing fields keep their defaults");
        assert_eq!(p.max_attempts, 5);
        let text = toml::to_string(&p).unwrap();
        assert!(text.contains("initial_backoff = \"250ms\""), "{text}");
        assert!(text.contains("max_backoff = \"1m\""), "{text}");
        assert_eq!(toml::from_str::<RetryPolicy>(&text).unwrap(), p);
        assert!(toml::from_str::<RetryPolicy>("attempts = 3").is_err());
    }

    fn policy_strategy(with_jitter: bool) -> impl Strategy<Value = RetryPolicy> {
        let jitter = if with_jitter {
            (0.0..=1.0f64).boxed()
        } else {
            Just(0.0).boxed()
        };
        (0u64..5_000, 0u64..120_000, 1.0..8.0f64, jitter, 1u32..60).prop_map(
            |(initial, extra, multiplier, jitter, max_attempts)| RetryPolicy {
                initial_backoff: ms(initial),
                max_backoff: ms(initial + extra),
                multiplier,
                jitter,
                max_attempts,
            },
        )
    }

    /// Runs one item to exhaustion, returning the delays seen and the final attempt count.
    fn drive(policy: RetryPolicy, samples: &[f64]) -> (Vec<Duration>, u32) {
        let mut state = RetryState::new(policy);
        let mut delays = Vec::new();
        for i in 0.. {
            match state.record_failure(samples[i % samples.len()]) {
                RetryDecision::RetryAfter(d) => delays.push(d),
                RetryDecision::GiveUp { attempts } => return (delays, attempts),
            }
        }
        unreachable!()
    }

    proptest! {
        #[test]
        fn exactly_max_attempts_and_bounded(
            policy in policy_strategy(true),
            samples in prop::collection::vec(0.0..1.0f64, 1..16),
        ) {
            prop_assert!(policy.validate().is_ok());
            let (delays, attempts) = drive(policy, &samples);
            prop_assert_eq!(attempts, policy.max_attempts);
            // Every attempt but the last is followed by a retry.
            prop_assert_eq!(delays.len() as u32, policy.max_attempts - 1);
            for (i, d) in delays.iter().enumerate() {
                let base = policy.base_backoff(i as u32 + 1).as_secs_f64();
                let low = base * (1.0 - policy.jitter) - 1e-9;
                let high = (base * (1.0 + policy.jitter)).min(policy.max_backoff.as_secs_f64()) + 1e-9;
                prop_assert!(*d <= policy.max_backoff);
                prop_assert!(d.as_secs_f64() >= low && d.as_secs_f64() <= high,
                    "delay {:?} outside [{}, {}]", d, low, high);
            }
        }

        #[test]
        fn without_jitter_delays_never_shrink(
            policy in policy_strategy(false),
            samples in prop::collection::vec(0.0..1.0f64, 1..16),
        ) {
            let (delays, attempts) = drive(policy, &samples);
            prop_assert_eq!(attempts, policy.max_attempts);
            for pair in delays.windows(2) {
                prop_assert!(pair[0] <= pair[1], "{:?} then {:?}", pair[0], pair[1]);
            }
            if let Some(first) = delays.first() {
                prop_assert_eq!(*first, policy.initial_backoff);
            }
        }

        #[test]
        fn same_sample_same_delay(policy in policy_strategy(true), n in 0u32..100, s in 0.0..1.0f64) {
            prop_assert_eq!(policy.backoff_for(n, s), policy.backoff_for(n, s));
        }
    }
}
