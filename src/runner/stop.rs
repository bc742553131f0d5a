//! The live watch of `stop_when`. Every 100 ms each condition is evaluated over what completed
//! in the trailing second (the requests) or since the last success (the probes); a condition
//! triggers once it has held at every evaluation for its `for` time. Reads the recording
//! incrementally, so the cost per evaluation is bounded by one second of traffic.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Shared, Trigger};
use crate::analysis::{percentile_sorted, us_to_ms};
use crate::experiment::StopWhen;
use crate::metrics::Record;

/// How often conditions are evaluated.
const EVERY: Duration = Duration::from_millis(100);
/// The trailing span request conditions are evaluated over.
const SPAN_US: u64 = 1_000_000;

/// One condition's state: since when it has held (µs), if it holds now.
#[derive(Default)]
struct Held(Option<u64>);

impl Held {
    /// Updates with this evaluation; true if it has held for at least `for_us`.
    fn update(&mut self, holds: bool, now_us: u64, for_us: u64) -> bool {
        if !holds {
            self.0 = None;
            return false;
        }
        let since = *self.0.get_or_insert(now_us);
        now_us - since >= for_us
    }
}

/// Watches until a condition triggers (returns it) or `stop` is cancelled (returns None).
pub(super) async fn watch(s: Arc<Shared>, stop: CancellationToken) -> Option<Trigger> {
    let when = &s.plan.experiment.stop_when;
    let remote = super::prom::watch(
        when.prometheus.clone(),
        when.alerts.clone(),
        s.clock,
        stop.clone(),
    );
    tokio::select! {
        Some(t) = remote => Some(t),
        t = watch_local(s.clone(), stop.clone()) => t,
    }
}

/// The conditions on the run's own requests and probes.
async fn watch_local(s: Arc<Shared>, stop: CancellationToken) -> Option<Trigger> {
    let when: StopWhen = s.plan.experiment.stop_when.clone();
    if when.is_empty() {
        stop.cancelled().await;
        return None;
    }
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recent: VecDeque<Record> = VecDeque::new();
    let mut seen = 0usize;
    // Failed requests in `recent`, kept as records come and go.
    let mut failed_in = 0usize;
    let (mut err_held, mut p50_held, mut p99_held, mut probe_held) = (
        Held::default(),
        Held::default(),
        Held::default(),
        Held::default(),
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let now = s.clock.now_us();
        let (new, len) = s.recording.records_since(seen);
        seen = len;
        failed_in += new.iter().filter(|r| !r.outcome.is_ok()).count();
        recent.extend(new);
        let from = now.saturating_sub(SPAN_US);
        // Records arrive roughly in completion order: those out of the span leave from the
        // front (a straggler behind the front leaves with it), so that a tick costs what
        // arrived since the last one, not the whole second (190,000 records at 190,000/s).
        while let Some(r) = recent.front()
            && r.done_us < from
        {
            failed_in -= usize::from(!r.outcome.is_ok());
            recent.pop_front();
        }
        let trigger = |condition: String| {
            Some(Trigger {
                condition,
                at_us: now,
            })
        };

        if let Some(c) = &when.error_rate {
            let total = recent.len();
            let failed = failed_in;
            let rate = failed as f64 / total.max(1) as f64;
            let holds = total > 0 && c.threshold.holds_fraction(rate);
            if err_held.update(holds, now, c.for_.as_micros()) {
                return trigger(format!(
                    "error_rate {c}: {:.1}% of {total} requests failed in the last second",
                    rate * 100.0
                ));
            }
        }
        if when.p50.is_some() || when.p99.is_some() {
            // The successful requests' latency, as the SLO reads it: fast failures are the
            // error-rate condition's to catch.
            let mut lat: Vec<u64> = recent
                .iter()
                .filter(|r| r.outcome.is_ok())
                .map(Record::latency_us)
                .collect();
            lat.sort_unstable();
            for (name, cond, held, q) in [
                ("p50", &when.p50, &mut p50_held, 0.5),
                ("p99", &when.p99, &mut p99_held, 0.99),
            ] {
                let Some(c) = cond else { continue };
                let v = percentile_sorted(&lat, q);
                let holds = v.is_some_and(|v| c.threshold.holds_us(v));
                if held.update(holds, now, c.for_.as_micros()) {
                    return trigger(format!(
                        "{name} {c}: {}ms over the last second",
                        v.map(us_to_ms).unwrap_or_default()
                    ));
                }
            }
        }
        if let Some(for_) = when.probe_failing {
            let results = s.probe_results();
            // A probe is failing when its latest check failed; since the first failure after
            // its last success.
            let mut failing_since: Option<(String, u64)> = None;
            let mut last_error: Option<String> = None;
            for (i, p) in s.plan.probes.iter().enumerate() {
                let mine: Vec<_> = results.iter().filter(|r| r.probe == i).collect();
                if mine.last().is_some_and(|r| !r.ok) {
                    let last_ok = mine.iter().rposition(|r| r.ok);
                    let first_fail = mine[last_ok.map(|k| k + 1).unwrap_or(0)].t_us;
                    if failing_since.as_ref().is_none_or(|(_, t)| first_fail < *t) {
                        failing_since = Some((p.name.clone(), first_fail));
                        last_error = mine.last().and_then(|r| r.error.clone());
                    }
                }
            }
            let holds = failing_since
                .as_ref()
                .is_some_and(|(_, t)| now - t >= for_.as_micros());
            if probe_held.update(holds, now, 0)
                && let Some((name, t)) = failing_since
            {
                // Why it fails (a server that stopped answering, a value out of bounds).
                let why = last_error
                    .map(|e| format!(" (last: {})", crate::redact::redact_urls_in(&e)))
                    .unwrap_or_default();
                return trigger(format!(
                    "probe_failing {for_}: probe {name} has failed every check for {:.1}s{why}",
                    (now - t) as f64 / 1e6
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_needs_continuity() {
        let mut h = Held::default();
        assert!(!h.update(true, 0, 500));
        assert!(!h.update(true, 400, 500));
        assert!(!h.update(false, 450, 500));
        assert!(!h.update(true, 500, 500));
        assert!(h.update(true, 1000, 500));
        let mut h = Held::default();
        assert!(h.update(true, 7, 0));
    }
}
