//! Flat aggregation for `rattle load`: outcome counts, status codes and one latency HdrHistogram,
//! never a record per request, so memory stays the same however long a run lasts.
//!
//! The experiment path keeps per-request [`Record`]s because recovery is computed from
//! completions; a stand-alone load test only reports totals and percentiles, so it aggregates as
//! it goes. The closed model keeps one [`Stats`] per thread (no lock on the hot path) and merges
//! them at the end; the open model records through [`FlatSink`], a [`RecordSink`] behind a mutex
//! (its rate is set, not maximal). Status codes are counted in [`StatusCounts`], an array of
//! atomics any task can bump without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;

use super::RecordSink;
use crate::metrics::{Outcome, OutcomeCounts, Record, new_histogram};

/// Whole-run figures: counts by outcome, by status code, and latencies (µs).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests by outcome (missed included).
    pub counts: OutcomeCounts,
    /// Responses by status code, sorted by code.
    pub statuses: Vec<(u16, u64)>,
    /// Latency in µs of every request but missed ones: responses and errors alike.
    pub latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: OutcomeCounts::default(),
            statuses: Vec::new(),
            latency: new_histogram(),
        }
    }
}

impl Stats {
    /// Counts one request that ended in `outcome` after `latency_us`.
    #[inline]
    pub fn record(&mut self, outcome: Outcome, latency_us: u64) {
        self.counts.add(outcome);
        if outcome != Outcome::Missed {
            self.latency.saturating_record(latency_us.max(1));
        }
    }

    /// Counts one response with `status`.
    #[inline]
    pub fn add_status(&mut self, status: u16) {
        // Almost always one or two distinct codes: a linear scan beats any map.
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => {
                self.statuses.push((status, 1));
                self.statuses.sort_unstable();
            }
        }
    }

    /// Adds all of `other`.
    pub fn merge(&mut self, other: &Stats) {
        self.counts.merge(&other.counts);
        for &(status, n) in &other.statuses {
            match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, m)) => *m += n,
                None => self.statuses.push((status, n)),
            }
        }
        self.statuses.sort_unstable();
        // Both histograms come from `new_histogram`, so their bounds agree and this cannot fail;
        // a failure would only lose latencies, never counts.
        let _ = self.latency.add(&other.latency);
    }
}

/// Response counts by status code (100..=999), bumped lock-free from any task.
pub struct StatusCounts(Box<[AtomicU64]>);

impl Default for StatusCounts {
    fn default() -> Self {
        Self((0..900).map(|_| AtomicU64::new(0)).collect())
    }
}

impl std::fmt::Debug for StatusCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl StatusCounts {
    /// Counts one response; codes outside 100..=999 cannot come from a parsed response.
    pub fn add(&self, status: u16) {
        if let Some(c) = status
            .checked_sub(100)
            .and_then(|i| self.0.get(usize::from(i)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The non-zero counts, sorted by code.
    pub fn snapshot(&self) -> Vec<(u16, u64)> {
        (100u16..)
            .zip(self.0.iter())
            .map(|(s, c)| (s, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// A [`RecordSink`] that only aggregates: the open model's sink for `rattle load`.
#[derive(Clone, Default)]
pub struct FlatSink(Arc<Mutex<Stats>>);

impl FlatSink {
    fn lock(&self) -> MutexGuard<'_, Stats> {
        // Losing figures to a poisoned lock would be worse than reading them after a panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the figures so far (without status codes: see [`StatusCounts`]).
    pub fn stats(&self) -> Stats {
        self.lock().clone()
    }
}

impl RecordSink for FlatSink {
    fn push(&self, rec: Record) {
        self.lock().record(rec.outcome, rec.latency_us());
    }

    fn push_all(&self, recs: &[Record]) {
        let mut g = self.lock();
        for r in recs {
            g.record(r.outcome, r.latency_us());
        }
    }

    // `rattle load` reports late sends and unsent tickets from its `LoadSummary`.
    fn sent(&self, _intended_us: u64, _ready_us: u64, _sent_us: u64) {}

    fn unsent(&self, _n: u64) {}

    fn cpu_busy(&self, _from_us: u64, _to_us: u64, _busy: f64) {}
    fn runtime_lag(&self, _at_us: u64, _lag_us: u64) {}
}

/// Live totals of a run for the progress line: completed requests and failures.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
}

impl Progress {
    /// Counts one completed request.
    #[inline]
    pub fn add(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (completed, failed) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_statuses_and_latencies() {
        let mut a = Stats::default();
        a.record(Outcome::Ok, 100);
        a.add_status(200);
        let mut b = Stats::default();
        b.record(Outcome::Ok, 300);
        b.record(Outcome::Missed, 5_000_000);
        b.add_status(500);
        b.add_status(200);
        a.merge(&b);
        assert_eq!(a.counts.total(), 3);
        assert_eq!(a.statuses, vec![(200, 2), (500, 1)]);
        assert_eq!(a.latency.len(), 2, "missed requests have no latency");
        assert!(a.latency.max() < 1000);
    }

    #[test]
    fn status_counts_keep_valid_codes_only() {
        let s = StatusCounts::default();
        s.add(200);
        s.add(200);
        s.add(999);
        s.add(99);
        s.add(1000);
        assert_eq!(s.snapshot(), vec![(200, 2), (999, 1)]);
    }
}
