//! Which connections (a toxic's `toxicity`) or requests (an HTTP rule's `share`) a fault
//! affects: a given share of them, random which, with the affected count never more than one
//! away from the share times the count.
//!
//! Why not an independent roll each: over 1,000 connections a roll of 0.5 strays by more than two
//! points one time in five (its standard deviation is 1.6 points), so the fault a run reports
//! would often not be the fault it asked for. Each decision here is still random, but its
//! probability is the share plus what the decisions so far fell short of (clamped to 0..=1):
//! the error stays within one event, and which events are hit stays unpredictable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngExt;

/// A share and the decisions made so far. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct Share {
    state: Arc<Mutex<Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    /// Decisions made.
    seen: u64,
    /// Of which hit.
    hit: u64,
}

impl PartialEq for Share {
    /// The state is bookkeeping, not part of what a toxic or rule is.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Share {
    /// A fresh tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides the next event for share `p` (0 to 1).
    pub fn pick(&self, p: f64) -> bool {
        // A poisoned lock only means another decision panicked midway: the tally is still two
        // counters, good to go on with.
        let mut t = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let hit = if p >= 1.0 {
            true
        } else if p <= 0.0 || p.is_nan() {
            false
        } else {
            let owed = (t.seen + 1) as f64 * p - t.hit as f64;
            rand::rng().random::<f64>() < owed.clamp(0.0, 1.0)
        };
        t.seen += 1;
        t.hit += u64::from(hit);
        hit
    }

    /// Decisions made and how many hit.
    pub fn tally(&self) -> (u64, u64) {
        let t = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (t.seen, t.hit)
    }
}

/// What a toxic did on the connections it hit, in its direction, while it held: bytes passed,
/// how long data waited for it, how late its delays released. Clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct Passed(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    /// Nanoseconds, summed over connections, during which data was waiting to pass, and the
    /// bytes that passed in that time beyond what a bandwidth toxic's credit let through at once.
    busy_ns: AtomicU64,
    busy_bytes: AtomicU64,
    /// Chunks released after a latency deadline, and how late, in nanoseconds (sum and most).
    delayed: AtomicU64,
    late_sum_ns: AtomicU64,
    late_max_ns: AtomicU64,
}

impl PartialEq for Passed {
    /// The counts are bookkeeping, not part of what a toxic is.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Passed {
    /// Counts `n` bytes.
    pub fn add(&self, n: usize) {
        self.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes so far.
    pub fn get(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// A connection had data waiting to pass for `d`, and `bytes` passed in that time beyond
    /// the bucket's credit at its start (what went at once does not make a rate).
    pub fn busy(&self, d: std::time::Duration, bytes: u64) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.0.busy_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A delayed chunk was released `late` after its deadline.
    pub fn released(&self, late: std::time::Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.0.delayed.fetch_add(1, Ordering::Relaxed);
        self.0.late_sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.0.late_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, f64, u64, u64, f64, f64) {
        let c = &self.0;
        let delayed = c.delayed.load(Ordering::Relaxed);
        let sum = c.late_sum_ns.load(Ordering::Relaxed) as f64;
        (
            c.bytes.load(Ordering::Relaxed),
            c.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
            c.busy_bytes.load(Ordering::Relaxed),
            delayed,
            if delayed > 0 {
                sum / delayed as f64 / 1e6
            } else {
                0.0
            },
            c.late_max_ns.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// What a toxic (or an HTTP rule) measurably did over its window: what a report shows beside
/// what was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds from the toxic's addition to its removal (or to now, while it holds).
    pub seconds: f64,
    /// Bytes passed on the connections it hit, in its direction.
    pub bytes: u64,
    /// Connections that met it (each decided once); for an HTTP rule, requests that matched.
    pub connections: u64,
    /// Of which it hit (its `toxicity`, or the rule's `share`).
    pub affected: u64,
    /// An HTTP rule (counts are requests, no bytes are metered).
    pub requests: bool,
    /// Connection-seconds during which data waited to pass it (summed over connections).
    pub busy_seconds: f64,
    /// Bytes passed in that time beyond the bandwidth credit each spell began with.
    pub busy_bytes: u64,
    /// The bandwidth asked, bytes per second, for a bandwidth toxic.
    pub asked_bytes_per_sec: Option<f64>,
    /// The latency asked (and jitter), ms, for a latency toxic.
    pub asked_latency_ms: Option<(f64, f64)>,
    /// Chunks it delayed.
    pub delayed: u64,
    /// How late after their deadline the delayed chunks went, on average, ms.
    pub late_mean_ms: f64,
    /// The latest of them, ms.
    pub late_max_ms: f64,
}

impl Measured {
    /// The counters of `passed` and `tally` over `seconds`.
    pub fn of(seconds: f64, passed: &Passed, tally: &Share) -> Self {
        let (bytes, busy_seconds, busy_bytes, delayed, late_mean_ms, late_max_ms) =
            passed.snapshot();
        let (connections, affected) = tally.tally();
        Self {
            seconds,
            bytes,
            connections,
            affected,
            requests: false,
            busy_seconds,
            busy_bytes,
            asked_bytes_per_sec: None,
            asked_latency_ms: None,
            delayed,
            late_mean_ms,
            late_max_ms,
        }
    }

    /// The rate while data waited to pass (bytes over busy connection-seconds, less what the
    /// bucket's credit let through at once): a bandwidth toxic that holds its rate gives the
    /// rate asked here, whatever the traffic's gaps and bursts.
    pub fn busy_bytes_per_sec(&self) -> Option<f64> {
        (self.busy_seconds > 0.0).then(|| self.busy_bytes as f64 / self.busy_seconds)
    }

    /// In words, when the effect measurably differs from the one asked: a bandwidth toxic that
    /// passed data more than 5 % slower than asked while data waited for at least 0.5
    /// connection-seconds (the proxy, the machine or the receiver could not carry the rate),
    /// or a latency toxic that released its chunks more than 2 ms late on average.
    pub fn shortfall(&self) -> Option<String> {
        if let (Some(asked), Some(got)) = (self.asked_bytes_per_sec, self.busy_bytes_per_sec())
            && self.busy_seconds >= 0.5
            && got < asked * 0.95
        {
            return Some(format!(
                "passed {:.1} KB/s while data waited, {:.1} % below the {:.1} KB/s asked: this \
                 machine, the proxy or the receiver could not carry the rate, so the link was \
                 slower than asked",
                got / 1000.0,
                (1.0 - got / asked) * 100.0,
                asked / 1000.0
            ));
        }
        if self.delayed > 0 && self.late_mean_ms > 2.0 {
            return Some(format!(
                "released its {} delayed chunks {:.2} ms late on average (at most {:.1} ms): \
                 the delay was longer than asked",
                self.delayed, self.late_mean_ms, self.late_max_ms
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_within_one_event() {
        for p in [0.01, 0.1, 0.3, 0.5, 0.77, 0.99] {
            let s = Share::new();
            for n in 1..=2000u64 {
                s.pick(p);
                let (seen, hit) = s.tally();
                assert_eq!(seen, n);
                assert!(
                    (hit as f64 - n as f64 * p).abs() < 1.0,
                    "p {p} n {n} hit {hit}"
                );
            }
        }
        assert!(Share::new().pick(1.0));
        assert!(!Share::new().pick(0.0));
    }

    #[test]
    fn which_events_hit_varies() {
        let a: Vec<bool> = (0..200)
            .map({
                let s = Share::new();
                move |_| s.pick(0.5)
            })
            .collect();
        let b: Vec<bool> = (0..200)
            .map({
                let s = Share::new();
                move |_| s.pick(0.5)
            })
            .collect();
        assert_ne!(a, b, "two tallies made the same 200 decisions");
    }
}
