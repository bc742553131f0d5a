//! Flat memory for long runs: decides, once a second, how far back the run's per-request
//! records must still reach, and lets the recording forget the rest
//! ([`crate::metrics::Recording::forget_before`]).
//!
//! Records are needed only where analysis reads requests one by one: the baseline until its
//! SLO check is made, each fault from its injection until its recovery is decided (the
//! recovery instant is found at the precision of single requests), and the last seconds for
//! the stop conditions and the final steady-state check. A fault's recovery is decided here as
//! soon as it can be (recovered and held), its figures kept, and the phase boundaries cut
//! into the recording's segments, whose aggregates give the phase figures after the records
//! are gone. Everything else is already in windows and histograms.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Shared, dur_us, fault_span, lock};
use crate::analysis;

/// How often the watermark moves.
const EVERY: Duration = Duration::from_secs(1);

/// Beyond the hold period (the final check's span) and the stop conditions' trailing second,
/// records are kept this much longer: a margin for requests pushed a little after their
/// completion instant.
const SLACK_US: u64 = 2_000_000;

/// Moves the watermark every second until `stop`.
pub(super) async fn run(s: Arc<Shared>, stop: CancellationToken) {
    if s.plan.load.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (shared, now_us) = (s.clone(), s.clock.now_us());
        super::in_background(move || step(&shared, now_us)).await;
    }
}

/// The records completing this long before now are always kept.
fn tail_us(s: &Shared) -> u64 {
    dur_us(s.plan.hold).max(1_000_000).saturating_add(SLACK_US)
}

/// One move: decide the faults that can be decided, then forget what nothing needs.
fn step(s: &Shared, now_us: u64) {
    let mut keep_from = now_us.saturating_sub(tail_us(s));
    if !s.plan.faults.is_empty() && lock(&s.before_slo).is_none() {
        keep_from = keep_from.min(dur_us(s.plan.warmup));
    }
    let states = lock(&s.faults).clone();
    let mut sorted = None;
    for (i, (st, pf)) in states.iter().zip(&s.plan.faults).enumerate() {
        if st.decided.is_some() {
            continue;
        }
        let Some(span) = fault_span(&s.plan, pf, st, now_us) else {
            continue;
        };
        // A fault with a duration is decided only once reverted.
        if pf.duration.is_some() && st.reverted_us.is_none() {
            keep_from = keep_from.min(span.injected_us);
            continue;
        }
        let records = sorted.get_or_insert_with(|| s.sorted_records());
        let recovery = analysis::fault_recovery(records, s.plan.slo(), span);
        // With a mix, every request's own recovery must have settled too: one request may
        // still be failing its SLO while the whole load holds.
        let routes = s.route_recoveries(records, span);
        let settled_at = |r: &analysis::Recovery| {
            r.recovered_at_ms
                .map(|ms| (ms * 1000.0).round() as u64 + span.hold_us)
        };
        let settled = std::iter::once(&recovery)
            .chain(&routes)
            .map(settled_at)
            .try_fold(0u64, |latest, t| t.map(|t| latest.max(t)));
        match settled {
            Some(settled)
                if settled <= now_us
                    && s.recording.cut_at(span.injected_us).is_ok()
                    && s.recording.cut_at(settled).is_ok() =>
            {
                let mut faults = lock(&s.faults);
                faults[i].decided = Some(recovery);
                faults[i].decided_routes = routes;
            }
            _ => keep_from = keep_from.min(span.injected_us),
        }
    }
    s.recording.forget_before(keep_from);
}
