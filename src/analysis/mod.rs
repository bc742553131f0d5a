//! Figures of a run, computed from what was recorded: SLO checks over a span of time and, per
//! fault, time to impact, time to recover, failed requests and availability.
//!
//! Pure functions: no I/O, no clock. Inputs are per-request [`Record`]s sorted by completion
//! time, so the recovery instant is found at the precision of single requests, not windows.
//!
//! Definitions (also in the README):
//! - A request is *bad* when it failed (any outcome but ok, missed included) or when it took
//!   longer than the SLO's per-request latency limit (the `max` threshold, else the `p99` one).
//! - *Time to impact*: from injection to the instant the first bad request was felt: its
//!   completion for a failure, or its intended start plus the limit for a slow one, whichever
//!   comes first.
//! - *Recovery instant*: the earliest instant R, at or after the fault's end (its injection for
//!   an instantaneous fault), such that R is that end or the completion of a bad request, and
//!   the SLO holds *continuously* over the requests completing in (R, R + hold]: evaluated after
//!   every completion over all requests completed since R, it never fails, and at least one
//!   request completes in that span. Without an SLO, "no request fails" is the criterion.
//!   *Time to recover* is R minus the fault's end (its injection for instantaneous faults).
//! - *Failed requests* and *availability* of a fault count the requests completing from its
//!   injection to R + hold (to the end of observation when it did not recover).
//! - The SLO's latency thresholds judge the *successful* requests' latency: what users who were
//!   served waited for. Failures already count against the success rate, and a failure that is
//!   fast (a refused connection) would otherwise pull the percentiles down during an outage.
//!   Figures of all sent requests, and of the failed ones apart, are kept beside them.

use crate::experiment::{Cmp, DurationThreshold, Slo};
use crate::metrics::{LatencySummary, Outcome, Record};

/// Microseconds to milliseconds, rounded to 0.001 ms.
pub fn us_to_ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

pub use crate::metrics::percentile_sorted;

/// The result of checking the SLO over a set of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct SloCheck {
    /// Did every threshold hold? False when there was no request to judge by.
    pub held: bool,
    /// Requests judged (missed included).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// ok / requests.
    pub success_rate: Option<f64>,
    /// Latency percentiles (ms) of the successful requests: what the SLO's latency thresholds
    /// judge.
    pub p50_ms: Option<f64>,
    /// 90th percentile (ms).
    pub p90_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// Maximum (ms).
    pub max_ms: Option<f64>,
    /// Each threshold that did not hold, as "p99 312.4ms, expected < 200ms".
    pub violations: Vec<String>,
}

/// Checks the SLO over `records` (any order). An empty SLO means "no request fails". Latency
/// thresholds judge the successful requests (see the module's definitions).
pub fn check_slo<'a>(records: impl IntoIterator<Item = &'a Record>, slo: &Slo) -> SloCheck {
    let mut requests = 0u64;
    let mut ok = 0u64;
    let mut latencies = Vec::new();
    for r in records {
        requests += 1;
        if r.outcome.is_ok() {
            ok += 1;
            latencies.push(r.latency_us());
        }
    }
    latencies.sort_unstable();
    let pct = |q: f64| percentile_sorted(&latencies, q);
    let success_rate = (requests > 0).then(|| ok as f64 / requests as f64);
    let mut violations = Vec::new();
    if requests == 0 {
        violations.push("no request completed in the span".to_string());
    }
    if let Some(rate) = success_rate {
        match &slo.success_rate {
            Some(t) if !t.holds_fraction(rate) => {
                violations.push(format!("success rate {:.3}%, expected {t}", rate * 100.0))
            }
            None if slo.is_empty() && ok < requests => violations.push(format!(
                "{} failed requests, expected none (no SLO given)",
                requests - ok
            )),
            _ => {}
        }
    }
    for (name, q, threshold) in latency_thresholds(slo) {
        if let Some(v) = pct(q)
            && !threshold.holds_us(v)
        {
            violations.push(format!("{name} {}ms, expected {threshold}", us_to_ms(v)));
        }
    }
    SloCheck {
        held: violations.is_empty(),
        requests,
        ok,
        success_rate,
        p50_ms: pct(0.50).map(us_to_ms),
        p90_ms: pct(0.90).map(us_to_ms),
        p99_ms: pct(0.99).map(us_to_ms),
        max_ms: pct(1.0).map(us_to_ms),
        violations,
    }
}

fn latency_thresholds(slo: &Slo) -> Vec<(&'static str, f64, DurationThreshold)> {
    [
        ("p50", 0.50, slo.p50),
        ("p90", 0.90, slo.p90),
        ("p99", 0.99, slo.p99),
        ("max", 1.0, slo.max),
    ]
    .into_iter()
    .filter_map(|(n, q, t)| t.map(|t| (n, q, t)))
    .collect()
}

/// The per-request latency above which a request counts as bad (µs), if the SLO sets one.
fn bad_latency_limit_us(slo: &Slo) -> Option<u64> {
    slo.max.or(slo.p99).and_then(|t| match t.cmp {
        Cmp::Lt | Cmp::Le => Some(t.limit.as_micros()),
        Cmp::Gt | Cmp::Ge => None,
    })
}

/// Is this request bad, and if so at which instant was it felt (µs)? A failure is felt when it
/// completes; a request over the latency limit is felt when it passes the limit, even if it
/// fails later (a hung request that times out was felt long before its timeout).
fn bad_at(r: &Record, limit_us: Option<u64>) -> Option<u64> {
    let slow_at = match limit_us {
        Some(limit) if r.latency_us() > limit => Some(r.intended_us + limit),
        _ => None,
    };
    let failed_at = (!r.outcome.is_ok()).then_some(r.done_us);
    match (failed_at, slow_at) {
        (Some(f), Some(s)) => Some(f.min(s)),
        (f, s) => f.or(s),
    }
}

/// Incremental SLO evaluation over requests added one by one (used for "holds continuously").
struct Running<'a> {
    slo: &'a Slo,
    thresholds: Vec<(f64, DurationThreshold, u64, u64)>, // q, threshold, count_lt, count_le
    requests: u64,
    ok: u64,
}

impl<'a> Running<'a> {
    fn new(slo: &'a Slo) -> Self {
        let thresholds = latency_thresholds(slo)
            .into_iter()
            .map(|(_, q, t)| (q, t, 0, 0))
            .collect();
        Self {
            slo,
            thresholds,
            requests: 0,
            ok: 0,
        }
    }

    /// Adds a request; returns whether the SLO holds over all requests added so far.
    fn add(&mut self, r: &Record) -> bool {
        self.requests += 1;
        if r.outcome.is_ok() {
            // Latency thresholds judge the successful requests only.
            self.ok += 1;
            let lat = r.latency_us();
            for (_, t, lt, le) in &mut self.thresholds {
                let limit = t.limit.as_micros();
                if lat < limit {
                    *lt += 1;
                }
                if lat <= limit {
                    *le += 1;
                }
            }
        }
        self.holds()
    }

    fn holds(&self) -> bool {
        let rate = self.ok as f64 / self.requests.max(1) as f64;
        let rate_ok = match &self.slo.success_rate {
            Some(t) => t.holds_fraction(rate),
            None => !self.slo.is_empty() || self.ok == self.requests,
        };
        if !rate_ok {
            return false;
        }
        if self.ok == 0 {
            return true;
        }
        // Nearest-rank percentile p at rank k = ceil(q*n): p < L iff at least k values are < L.
        self.thresholds.iter().all(|(q, t, lt, le)| {
            let k = ((q * self.ok as f64).ceil() as u64).clamp(1, self.ok);
            match t.cmp {
                Cmp::Lt => *lt >= k,
                Cmp::Le => *le >= k,
                Cmp::Gt => *le < k,
                Cmp::Ge => *lt < k,
            }
        })
    }
}

/// The figures of one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// From injection to the first bad request; null when none was seen.
    pub time_to_impact_ms: Option<f64>,
    /// From the fault's end (injection, for instantaneous faults) to the recovery instant; null
    /// when it did not recover within the observation (see `reason`).
    pub time_to_recover_ms: Option<f64>,
    /// The recovery instant, ms since run start.
    pub recovered_at_ms: Option<f64>,
    /// Why a figure is null.
    pub reason: Option<String>,
    /// Requests counted for this fault (injection to recovery + hold).
    pub requests: u64,
    /// Of them, failed (missed included).
    pub failed_requests: u64,
    /// ok / requests over the same span.
    pub availability: Option<f64>,
}

/// Input to [`fault_recovery`].
#[derive(Debug, Clone, Copy)]
pub struct FaultSpan {
    /// Injection instant (µs since run start).
    pub injected_us: u64,
    /// The instant recovery is measured from: the revert for a fault with a duration, else the
    /// injection.
    pub from_us: u64,
    /// Hold period (µs).
    pub hold_us: u64,
    /// Requests completing up to here were observed (µs).
    pub observed_until_us: u64,
}

/// Computes the figures of one fault from records sorted by `done_us`.
pub fn fault_recovery(sorted: &[Record], slo: &Slo, span: FaultSpan) -> Recovery {
    let limit = bad_latency_limit_us(slo);
    let first = sorted.partition_point(|r| r.done_us < span.injected_us);
    let time_to_impact_us = sorted[first..]
        .iter()
        .filter_map(|r| bad_at(r, limit))
        .filter(|&t| t >= span.injected_us)
        .min()
        .map(|t| t - span.injected_us);

    let recovered_at = find_recovery(sorted, slo, limit, span);
    let (count_until, reason) = match &recovered_at {
        Ok(r) => (r.saturating_add(span.hold_us), None),
        Err(reason) => (span.observed_until_us, Some(reason.clone())),
    };
    let mut requests = 0;
    let mut ok = 0;
    for r in sorted[first..]
        .iter()
        .take_while(|r| r.done_us <= count_until)
    {
        requests += 1;
        if r.outcome.is_ok() {
            ok += 1;
        }
    }
    Recovery {
        time_to_impact_ms: time_to_impact_us.map(us_to_ms),
        time_to_recover_ms: recovered_at
            .as_ref()
            .ok()
            .map(|r| us_to_ms(r - span.from_us)),
        recovered_at_ms: recovered_at.as_ref().ok().map(|r| us_to_ms(*r)),
        reason,
        requests,
        failed_requests: requests - ok,
        availability: (requests > 0).then(|| ok as f64 / requests as f64),
    }
}

fn find_recovery(
    sorted: &[Record],
    slo: &Slo,
    limit: Option<u64>,
    span: FaultSpan,
) -> Result<u64, String> {
    let start = sorted.partition_point(|r| r.done_us <= span.from_us);
    // Candidates: the start instant, then the completion of every bad request after it.
    let candidates = std::iter::once((span.from_us, start)).chain(
        sorted[start..]
            .iter()
            .enumerate()
            .filter(|(_, r)| bad_at(r, limit).is_some())
            .map(|(i, r)| (r.done_us, start + i + 1)),
    );
    let mut last_gap = None;
    for (candidate, next) in candidates {
        let end = candidate.saturating_add(span.hold_us);
        if end > span.observed_until_us {
            last_gap = Some(candidate);
            break;
        }
        let mut running = Running::new(slo);
        let mut any = false;
        let mut held = true;
        for r in sorted[next..].iter().take_while(|r| r.done_us <= end) {
            any = true;
            if !running.add(r) {
                held = false;
                break;
            }
        }
        if held && any {
            return Ok(candidate);
        }
    }
    let hold_s = span.hold_us as f64 / 1e6;
    Err(match last_gap {
        Some(c) if c >= span.from_us => format!(
            "not recovered: the SLO did not hold for {hold_s}s before observation ended at {:.1}s \
             (last disturbance at {:.3}s)",
            span.observed_until_us as f64 / 1e6,
            c as f64 / 1e6
        ),
        _ => format!("not recovered: the SLO did not hold for {hold_s}s before observation ended"),
    })
}

/// A span of the run by phase, for latency and error figures per phase (µs since run start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhaseSpans {
    /// Warm-up end to the first injection (to the end of load without faults).
    pub baseline: Option<(u64, u64)>,
    /// First injection until the last fault has recovered and held (the end of load if one
    /// never recovered).
    pub fault: Option<(u64, u64)>,
    /// From the end of the fault phase to the end of load.
    pub recovery: Option<(u64, u64)>,
}

/// Figures of the requests completing in one span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanStats {
    /// Span start, ms since run start.
    pub from_ms: f64,
    /// Span end, ms since run start.
    pub to_ms: f64,
    /// Requests completing in the span (missed included).
    pub requests: u64,
    /// Of them, failed (missed included).
    pub failed: u64,
    /// failed / requests; null without requests.
    pub error_rate: Option<f64>,
    /// Latency percentiles (ms) of every request sent, successes and failures mixed, from
    /// their intended start.
    pub p50_ms: Option<f64>,
    /// 90th percentile (ms).
    pub p90_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// Maximum (ms).
    pub max_ms: Option<f64>,
    /// Latency of the successful requests.
    pub ok_latency: LatencySummary,
    /// Latency of the failed requests that were sent (a timeout at its timeout).
    pub failed_latency: LatencySummary,
}

/// Figures of the requests completing in `[from_us, to_us)`, from records sorted by `done_us`.
pub fn span_stats(sorted: &[Record], from_us: u64, to_us: u64) -> SpanStats {
    let lo = sorted.partition_point(|r| r.done_us < from_us);
    let hi = sorted.partition_point(|r| r.done_us < to_us).max(lo);
    let span = &sorted[lo..hi];
    let failed = span.iter().filter(|r| !r.outcome.is_ok()).count() as u64;
    let mut lat: Vec<u64> = span
        .iter()
        .filter(|r| r.outcome != Outcome::Missed)
        .map(Record::latency_us)
        .collect();
    lat.sort_unstable();
    let pct = |q: f64| percentile_sorted(&lat, q).map(us_to_ms);
    let requests = span.len() as u64;
    let latencies = |ok: bool| {
        span.iter()
            .filter(|r| r.outcome != Outcome::Missed && r.outcome.is_ok() == ok)
            .map(Record::latency_us)
            .collect::<Vec<u64>>()
    };
    SpanStats {
        from_ms: us_to_ms(from_us),
        to_ms: us_to_ms(to_us),
        requests,
        failed,
        error_rate: (requests > 0).then(|| failed as f64 / requests as f64),
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        ok_latency: LatencySummary::of_unsorted(latencies(true)),
        failed_latency: LatencySummary::of_unsorted(latencies(false)),
    }
}

/// [`span_stats`] from aggregates (counts and histograms merged over the span, see
/// [`crate::metrics::Recording::span_figures`]) instead of records: the same figures, the
/// percentiles within the histograms' 0.1 %.
pub fn span_stats_of(f: &crate::metrics::SpanFigures, from_us: u64, to_us: u64) -> SpanStats {
    let requests = f.counts.total();
    let failed = f.counts.failed();
    SpanStats {
        from_ms: us_to_ms(from_us),
        to_ms: us_to_ms(to_us),
        requests,
        failed,
        error_rate: (requests > 0).then(|| failed as f64 / requests as f64),
        p50_ms: f.latency.p50_us.map(us_to_ms),
        p90_ms: f.latency.p90_us.map(us_to_ms),
        p99_ms: f.latency.p99_us.map(us_to_ms),
        max_ms: f.latency.max_us.map(us_to_ms),
        ok_latency: f.ok_latency,
        failed_latency: f.failed_latency,
    }
}

/// The phase spans of a run: `faults` lists each fired fault's injection and the instant it
/// settled (recovery plus hold; `None` when it never recovered), `end_us` is the end of load.
pub fn phase_spans(warmup_us: u64, faults: &[(u64, Option<u64>)], end_us: u64) -> PhaseSpans {
    let nonempty = |a: u64, b: u64| (a < b).then_some((a, b));
    let first = faults.iter().map(|f| f.0).min();
    let Some(first) = first else {
        return PhaseSpans {
            baseline: nonempty(warmup_us, end_us),
            ..PhaseSpans::default()
        };
    };
    let settled = faults
        .iter()
        .map(|f| f.1.unwrap_or(end_us).max(f.0))
        .max()
        .unwrap_or(end_us)
        .min(end_us);
    PhaseSpans {
        baseline: nonempty(warmup_us, first.min(end_us)),
        fault: nonempty(first, settled.max(first)),
        recovery: nonempty(settled, end_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{DurationThreshold, PercentThreshold};

    fn slo(rate: Option<&str>, p99: Option<&str>) -> Slo {
        Slo {
            success_rate: rate.map(|s| s.parse::<PercentThreshold>().expect("valid")),
            p99: p99.map(|s| s.parse::<DurationThreshold>().expect("valid")),
            ..Slo::default()
        }
    }

    /// Requests every `step_us` from `from` to `to`, each taking `lat_us`, outcome from `f`.
    fn traffic(from: u64, to: u64, step: u64, lat: u64, f: impl Fn(u64) -> Outcome) -> Vec<Record> {
        let mut v: Vec<Record> = (from..to)
            .step_by(step as usize)
            .map(|t| Record {
                intended_us: t,
                done_us: t + lat,
                outcome: f(t),
                route: 0,
            })
            .collect();
        v.sort_by_key(|r| r.done_us);
        v
    }

    const S: u64 = 1_000_000;

    #[test]
    fn outage_of_known_length_recovers_at_its_end() {
        // 200/s; the target refuses everything from 10 s to 12.5 s.
        let recs = traffic(0, 30 * S, 5_000, 1_000, |t| {
            if (10 * S..12_500_000).contains(&t) {
                Outcome::Refused
            } else {
                Outcome::Ok
            }
        });
        let span = FaultSpan {
            injected_us: 10 * S,
            from_us: 10 * S,
            hold_us: 5 * S,
            observed_until_us: 30 * S,
        };
        let r = fault_recovery(&recs, &slo(Some(">= 99%"), Some("< 200ms")), span);
        // Last failure: intended 12.495 s, done 12.496 s.
        assert_eq!(r.recovered_at_ms, Some(12_496.0));
        assert_eq!(r.time_to_recover_ms, Some(2_496.0));
        assert_eq!(r.time_to_impact_ms, Some(1.0));
        assert_eq!(r.failed_requests, 500);
        assert_eq!(r.requests, 500 + 1000); // to recovery + 5 s hold
    }

    #[test]
    fn tolerated_noise_after_recovery_does_not_move_it() {
        let recs = traffic(0, 30 * S, 5_000, 1_000, |t| {
            if (10 * S..11 * S).contains(&t) || t == 13 * S {
                Outcome::Status5xx
            } else {
                Outcome::Ok
            }
        });
        let span = FaultSpan {
            injected_us: 10 * S,
            from_us: 10 * S,
            hold_us: 5 * S,
            observed_until_us: 30 * S,
        };
        let r = fault_recovery(&recs, &slo(Some(">= 99%"), None), span);
        assert_eq!(r.recovered_at_ms, Some(10_996.0));
        // Without an SLO every failure counts: the stray one moves the recovery.
        let r = fault_recovery(&recs, &Slo::default(), span);
        assert_eq!(r.recovered_at_ms, Some(13_001.0));
    }

    #[test]
    fn slow_requests_count_through_the_latency_limit() {
        // 300 ms responses from 5 s to 7 s, then 1 ms again; p99 < 100ms.
        let mut recs = traffic(0, 20 * S, 10_000, 1_000, |_| Outcome::Ok);
        for r in &mut recs {
            if (5 * S..7 * S).contains(&r.intended_us) {
                r.done_us = r.intended_us + 300_000;
            }
        }
        recs.sort_by_key(|r| r.done_us);
        let span = FaultSpan {
            injected_us: 5 * S,
            from_us: 7 * S,
            hold_us: 3 * S,
            observed_until_us: 20 * S,
        };
        let r = fault_recovery(&recs, &slo(None, Some("< 100ms")), span);
        // The last slow request was intended at 6.99 s and completed at 7.29 s.
        assert_eq!(r.recovered_at_ms, Some(7_290.0));
        assert_eq!(r.time_to_recover_ms, Some(290.0));
        // Impact is felt when the first slow request passes the limit: 5 s + 100 ms.
        assert_eq!(r.time_to_impact_ms, Some(100.0));
    }

    #[test]
    fn a_hung_request_is_felt_when_it_passes_the_limit_not_when_it_fails() {
        let mut recs = traffic(0, 10 * S, 10_000, 1_000, |_| Outcome::Ok);
        // Sent at 5 s, hung, failed with a 504 after 1 s.
        recs.push(Record {
            intended_us: 5 * S,
            done_us: 6 * S,
            outcome: Outcome::Status5xx,
            route: 0,
        });
        recs.sort_by_key(|r| r.done_us);
        let span = FaultSpan {
            injected_us: 5 * S - 1,
            from_us: 5 * S - 1,
            hold_us: S,
            observed_until_us: 10 * S,
        };
        let r = fault_recovery(&recs, &slo(None, Some("< 200ms")), span);
        assert_eq!(r.time_to_impact_ms, Some(200.001));
        // Without a latency limit, only the failure is felt.
        let r = fault_recovery(&recs, &slo(Some(">= 99%"), None), span);
        assert_eq!(r.time_to_impact_ms, Some(1000.001));
    }

    #[test]
    fn never_recovered_gives_null_with_reason() {
        let recs = traffic(0, 10 * S, 5_000, 1_000, |t| {
            if t >= 5 * S {
                Outcome::Refused
            } else {
                Outcome::Ok
            }
        });
        let span = FaultSpan {
            injected_us: 5 * S,
            from_us: 5 * S,
            hold_us: 2 * S,
            observed_until_us: 10 * S,
        };
        let r = fault_recovery(&recs, &slo(Some(">= 99%"), None), span);
        assert_eq!(r.time_to_recover_ms, None);
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|s| s.contains("not recovered"))
        );
        assert_eq!(r.availability, Some(0.0));
    }

    #[test]
    fn no_impact_recovers_at_once() {
        let recs = traffic(0, 10 * S, 5_000, 1_000, |_| Outcome::Ok);
        let span = FaultSpan {
            injected_us: 5 * S,
            from_us: 5 * S,
            hold_us: 2 * S,
            observed_until_us: 10 * S,
        };
        let r = fault_recovery(&recs, &slo(Some(">= 99%"), Some("< 10ms")), span);
        assert_eq!(r.time_to_recover_ms, Some(0.0));
        assert_eq!(r.time_to_impact_ms, None);
        assert_eq!(r.failed_requests, 0);
    }

    #[test]
    fn slo_check_reports_violations() {
        let recs = traffic(0, S, 10_000, 250_000, |t| {
            if t < 50_000 {
                Outcome::Timeout
            } else {
                Outcome::Ok
            }
        });
        let c = check_slo(&recs, &slo(Some(">= 99%"), Some("< 200ms")));
        assert!(!c.held);
        assert_eq!(c.requests, 100);
        assert_eq!(c.ok, 95);
        assert_eq!(c.violations.len(), 2, "{:?}", c.violations);
        assert_eq!(c.p99_ms, Some(250.0));
        let empty: Vec<Record> = vec![];
        assert!(!check_slo(&empty, &Slo::default()).held);
    }

    #[test]
    fn running_percentile_matches_sorted_percentile() {
        let s = slo(None, Some("< 50ms"));
        let lats = [10u64, 70, 20, 30, 90, 5, 49, 51, 50, 1];
        let mut running = Running::new(&s);
        let mut seen = Vec::new();
        for (i, l) in lats.iter().enumerate() {
            let r = Record {
                intended_us: 0,
                done_us: l * 1000,
                outcome: Outcome::Ok,
                route: 0,
            };
            let holds = running.add(&r);
            seen.push(l * 1000);
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            let p = percentile_sorted(&sorted, 0.99).expect("non-empty");
            assert_eq!(holds, p < 50_000, "after {} values", i + 1);
        }
    }

    #[test]
    fn phases_split_the_run_and_stats_count_their_requests() {
        let recs = traffic(0, 10 * S, 10_000, 2_000, |t| {
            if (4 * S..5 * S).contains(&t) {
                Outcome::Refused
            } else {
                Outcome::Ok
            }
        });
        let p = phase_spans(S, &[(4 * S, Some(7 * S))], 10 * S);
        assert_eq!(p.baseline, Some((S, 4 * S)));
        assert_eq!(p.fault, Some((4 * S, 7 * S)));
        assert_eq!(p.recovery, Some((7 * S, 10 * S)));
        let f = span_stats(&recs, 4 * S, 7 * S);
        assert_eq!(f.requests, 300);
        assert_eq!(f.failed, 100);
        assert_eq!(f.p99_ms, Some(2.0));
        // Never recovered: the fault phase runs to the end, no recovery phase.
        let p = phase_spans(S, &[(4 * S, None)], 10 * S);
        assert_eq!((p.fault, p.recovery), (Some((4 * S, 10 * S)), None));
        // No faults: all baseline.
        assert_eq!(phase_spans(S, &[], 10 * S).baseline, Some((S, 10 * S)));
        assert_eq!(span_stats(&recs, 20 * S, 30 * S).error_rate, None);
    }
}
