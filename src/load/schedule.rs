//! Pacing: when each request of an open-model run is meant to start.
//!
//! This is the one place that knows the arrival curve, so every request can carry its intended
//! start and latency can be measured from it (wrk2, oha's latency correction). Tickets are
//! arithmetic, not queued: request `k` starts at [`Schedule::offset_us`]`(k)`, and
//! [`Schedule::due_by`] is its inverse. That keeps the scheduler's memory flat however far behind
//! a stalled target pushes it, and lets it count missed requests as a range instead of one by
//! one. Pure functions of their inputs, no clock, so they are tested without any runtime.
//!
//! The curve is the integral of the rate. With a linear ramp of length `R` up to rate `r`:
//! `n(t) = r·t²/(2R)` while `t < R`, then `n(t) = r·R/2 + r·(t − R)`. Request `k` is due when
//! `n(t)` reaches `k`, so request 0 is due at `t = 0`.

use std::time::Duration;

/// Why a schedule cannot be built.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ScheduleError {
    /// The rate is zero, negative, infinite or NaN; an open model needs a finite positive rate.
    #[error("rate must be a finite number of requests per second above 0, got {rate}")]
    InvalidRate {
        /// The rejected rate, requests per second.
        rate: f64,
    },
}

/// An arrival curve: a constant rate, optionally reached by a linear ramp from 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Requests per microsecond at full rate.
    rate_per_us: f64,
    /// Ramp length in µs; 0 means no ramp.
    ramp_us: f64,
}

impl Schedule {
    /// A schedule at `rate_per_sec` requests per second, reached by a linear ramp over `ramp`
    /// (`None` or zero: full rate from the start).
    pub fn new(rate_per_sec: f64, ramp: Option<Duration>) -> Result<Self, ScheduleError> {
        if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
            return Err(ScheduleError::InvalidRate { rate: rate_per_sec });
        }
        let ramp_us = ramp.map_or(0.0, |r| r.as_secs_f64() * 1e6);
        Ok(Self {
            rate_per_us: rate_per_sec / 1e6,
            ramp_us,
        })
    }

    /// Requests due by `t_us` µs on the continuous curve, `n(t)`.
    pub fn count_at(&self, t_us: f64) -> f64 {
        let t = t_us.max(0.0);
        let (r, ramp) = (self.rate_per_us, self.ramp_us);
        if t < ramp {
            r * t * t / (2.0 * ramp)
        } else {
            r * ramp / 2.0 + r * (t - ramp)
        }
    }

    /// Intended start of request `k` (from 0), in µs after the schedule's origin, rounded to the
    /// nearest µs. Non-decreasing in `k`; saturates at `u64::MAX` for tickets beyond any run.
    pub fn offset_us(&self, k: u64) -> u64 {
        let (r, ramp) = (self.rate_per_us, self.ramp_us);
        let k = k as f64;
        let in_ramp = r * ramp / 2.0;
        let t = if k <= in_ramp {
            // Solving r·t²/(2R) = k; `in_ramp > 0` here unless k is 0, where this is 0 too.
            (2.0 * k * ramp / r).sqrt()
        } else {
            ramp + (k - in_ramp) / r
        };
        // `as` saturates (and maps NaN to 0), which is the behaviour wanted at the extremes.
        t.round() as u64
    }

    /// How many requests are due by `t_us` inclusive: the number of `k` with
    /// `offset_us(k) <= t_us`. Exactly consistent with [`Schedule::offset_us`] (found by search
    /// over it rather than by inverting the float curve), so a range of tickets computed from it
    /// never skips or repeats one.
    pub fn due_by(&self, t_us: u64) -> u64 {
        if self.offset_us(u64::MAX) <= t_us {
            return u64::MAX;
        }
        // Smallest k with offset_us(k) > t_us, by bisection over the monotone offsets: at most
        // 64 steps, and callers only need this off the per-ticket path.
        let (mut lo, mut hi) = (0u64, u64::MAX);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.offset_us(mid) > t_us {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rate: f64, ramp_ms: Option<u64>) -> Schedule {
        match Schedule::new(rate, ramp_ms.map(Duration::from_millis)) {
            Ok(s) => s,
            Err(e) => panic!("valid schedule rejected: {e}"),
        }
    }

    #[test]
    fn rejects_rates_that_are_not_finite_and_positive() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Schedule::new(rate, None).is_err(), "rate {rate}");
        }
    }

    #[test]
    fn constant_rate_spaces_requests_evenly_from_zero() {
        let s = s(200.0, None);
        assert_eq!(s.offset_us(0), 0);
        assert_eq!(s.offset_us(1), 5_000);
        assert_eq!(s.offset_us(200), 1_000_000);
        assert_eq!(s.due_by(0), 1);
        assert_eq!(s.due_by(4_999), 1);
        assert_eq!(s.due_by(5_000), 2);
        assert_eq!(s.due_by(997_500), 200);
        assert_eq!(s.due_by(1_000_000), 201);
    }

    #[test]
    fn fractional_rates_round_to_the_nearest_microsecond() {
        let s = s(3.0, None);
        assert_eq!(s.offset_us(1), 333_333);
        assert_eq!(s.offset_us(2), 666_667);
        assert_eq!(s.offset_us(3), 1_000_000);
    }

    #[test]
    fn ramp_follows_the_integral_of_the_rate() {
        // 1000/s reached over 2 s: 1000 requests during the ramp, then 1 per ms.
        let s = s(1000.0, Some(2_000));
        for (t_us, n) in [
            (1_000_000.0, 250.0),
            (2_000_000.0, 1000.0),
            (3_000_000.0, 2000.0),
        ] {
            assert!((s.count_at(t_us) - n).abs() < 1e-6, "n({t_us}) = {n}");
        }
        // Quarter of the ramp's requests by half of its time.
        assert_eq!(s.offset_us(250), 1_000_000);
        assert_eq!(s.offset_us(1000), 2_000_000);
        assert_eq!(s.offset_us(1001), 2_001_000);
        assert_eq!(s.offset_us(2000), 3_000_000);
        assert_eq!(s.due_by(1_000_000), 251);
        assert_eq!(s.due_by(2_000_000), 1001);
        // The ramp starts slow: the second request waits sqrt(2·R/r) = 63 ms.
        assert_eq!(s.offset_us(1), 63_246);
    }

    #[test]
    fn zero_ramp_is_no_ramp() {
        assert_eq!(s(100.0, Some(0)), s(100.0, None));
    }

    #[test]
    fn due_by_inverts_offset_exactly() {
        for sched in [
            s(200.0, None),
            s(3.0, Some(1_500)),
            s(1e7, Some(10)),
            s(5000.0, Some(2_000)),
        ] {
            let mut prev = 0;
            for k in 0..5_000u64 {
                let off = sched.offset_us(k);
                assert!(off >= prev, "offsets must not decrease");
                prev = off;
                // k is due at its own offset, so at least k+1 are due then...
                assert!(sched.due_by(off) > k);
                // ...and it is not due a microsecond earlier.
                if off > 0 {
                    assert!(sched.due_by(off - 1) <= k);
                }
            }
        }
    }

    #[test]
    fn extremes_saturate_instead_of_panicking() {
        let slow = s(f64::MIN_POSITIVE, None);
        assert_eq!(slow.offset_us(1), u64::MAX);
        assert_eq!(slow.due_by(u64::MAX - 1), 1);
        let fast = s(f64::MAX, None);
        assert_eq!(fast.offset_us(u64::MAX), 0);
        assert_eq!(fast.due_by(0), u64::MAX);
        let long_ramp = match Schedule::new(10.0, Some(Duration::MAX)) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(long_ramp.offset_us(u64::MAX) > 0);
        let _ = long_ramp.due_by(u64::MAX);
    }
}
