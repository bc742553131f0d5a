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

/// Bytes passed on the connections a toxic hit, in its direction, while it held. Clones share
/// the count.
#[derive(Debug, Clone, Default)]
pub struct Passed(Arc<AtomicU64>);

impl PartialEq for Passed {
    /// The count is bookkeeping, not part of what a toxic is.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Passed {
    /// Counts `n` bytes.
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a toxic measurably did over its window: what a report shows beside what was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds from the toxic's addition to its removal (or to now, while it holds).
    pub seconds: f64,
    /// Bytes passed on the connections it hit, in its direction.
    pub bytes: u64,
    /// Connections that met it (each decided once).
    pub connections: u64,
    /// Of which it hit (its `toxicity`).
    pub affected: u64,
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
