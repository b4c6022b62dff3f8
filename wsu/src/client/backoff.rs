//! The reconnection policy: exponential backoff with jitter.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How a client reconnects after losing its connection (see
/// [`ClientBuilder::reconnect`](super::ClientBuilder::reconnect)).
///
/// Before attempt `n` (from 1) the client waits
/// `min(max_delay, initial_delay × factorⁿ⁻¹ × (1 ± jitter))`, the `±` drawn uniformly at random
/// for each attempt, so that many clients dropped at once do not all come back at the same
/// instant. The attempt counter starts again from 1 after a connection becomes ready.
///
/// ```
/// use std::time::Duration;
/// use wsu::client::Reconnect;
///
/// let policy = Reconnect {
///     max_attempts: Some(10),
///     ..Reconnect::default()
/// };
/// assert_eq!(policy.initial_delay, Duration::from_millis(500));
/// // Without jitter: 500 ms, 1 s, 2 s, 4 s, 8 s, then 10 s (the maximum) every time.
/// assert_eq!(policy.base_delay(3), Duration::from_secs(2));
/// assert_eq!(policy.base_delay(7), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// The delay before the first attempt. Default 500 ms.
    pub initial_delay: Duration,
    /// The longest delay between attempts. Default 10 s.
    pub max_delay: Duration,
    /// How much the delay grows after each failed attempt. Default 2.0.
    pub factor: f64,
    /// Random spread of each delay, as a fraction: 0.5 (the default) means ±50 %; 0 disables it.
    pub jitter: f64,
    /// Give up after this many failed attempts in a row (reported as
    /// [`StateEvent::GaveUp`](super::StateEvent::GaveUp)); `None` (the default) retries forever.
    pub max_attempts: Option<u32>,
    /// Also reconnect after the server closed with `1000` (normal closure, for example
    /// `Socket::close`). Default `false`: a normal close from the server is final.
    pub on_normal_close: bool,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.5,
            max_attempts: None,
            on_normal_close: false,
        }
    }
}

impl Reconnect {
    /// The delay before attempt `attempt` (from 1) without jitter:
    /// `min(max_delay, initial_delay × factor^(attempt − 1))`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.factor.powi(exponent);
        self.clamp(secs)
    }

    /// The delay before attempt `attempt`, with `unit` (in `[0, 1)`) choosing the jitter.
    fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.clamp(base * (1.0 + jitter * (2.0 * unit - 1.0)))
    }

    /// Seconds to a duration in `[0, max_delay]` (non-finite values give `max_delay`).
    fn clamp(&self, secs: f64) -> Duration {
        if !secs.is_finite() {
            return self.max_delay;
        }
        Duration::try_from_secs_f64(secs.max(0.0))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// A [`Reconnect`] policy with its random source.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: Reconnect,
    rng: XorShift64,
}

impl Backoff {
    pub(crate) fn new(policy: Reconnect) -> Self {
        Backoff {
            policy,
            rng: XorShift64::from_entropy(),
        }
    }

    pub(crate) fn policy(&self) -> &Reconnect {
        &self.policy
    }

    /// The delay before attempt `attempt` (from 1), jittered.
    pub(crate) fn delay(&mut self, attempt: u32) -> Duration {
        let unit = self.rng.next_unit();
        self.policy.delay_with(attempt, unit)
    }
}

/// Marsaglia's xorshift64: plenty for spreading reconnection delays (not for anything secret).
#[derive(Debug)]
struct XorShift64(u64);

impl XorShift64 {
    /// Seeded from the process's hash keys (`RandomState` is randomly keyed per instance).
    fn from_entropy() -> Self {
        let seed = RandomState::new().hash_one(0x5753_5543_4c49_454eu64);
        XorShift64(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniform float in `[0, 1)` from the top 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_and_capped() {
        let p = Reconnect::default();
        let base: Vec<_> = (1..=7).map(|n| p.base_delay(n)).collect();
        assert_eq!(
            base,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(p.base_delay(u32::MAX), ms(10_000));
        assert_eq!(p.base_delay(0), ms(500));
    }

    #[test]
    fn jitter_bounds() {
        let p = Reconnect::default();
        assert_eq!(p.delay_with(1, 0.0), ms(250));
        assert_eq!(p.delay_with(1, 0.5), ms(500));
        assert_eq!(p.delay_with(2, 0.0), ms(500));
        // Never above the maximum.
        assert_eq!(p.delay_with(10, 0.999), ms(10_000));
        let none = Reconnect {
            jitter: 0.0,
            ..Reconnect::default()
        };
        assert_eq!(none.delay_with(3, 0.9), ms(2000));
        let weird = Reconnect {
            factor: f64::NAN,
            jitter: f64::INFINITY,
            ..Reconnect::default()
        };
        assert_eq!(weird.delay_with(3, 0.3), ms(10_000));
    }

    #[test]
    fn random_delays_stay_in_range_and_vary() {
        let mut b = Backoff::new(Reconnect::default());
        let delays: Vec<_> = (0..200).map(|_| b.delay(2)).collect();
        assert!(delays.iter().all(|d| *d >= ms(500) && *d <= ms(1500)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread the delays");
        let mut rng = XorShift64(1);
        for _ in 0..1000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
