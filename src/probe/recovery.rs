//! A fault's recovery measured on probe results alone, for experiments with no load: the
//! probes that record a change the moment it happens ([`super::Probe::decides_recovery`], the
//! `kubernetes` probe today) give the instant the replacement became Ready. Pure: no I/O, no
//! clock, like `analysis`.

use std::collections::BTreeMap;

use super::ProbeResult;
use crate::analysis::{Recovery, us_to_ms};

/// A fault's recovery measured on probe results alone (experiments with no load), with the
/// same rules as the load-based analysis: impact is the first failing result at or after
/// `injected_us`; the recovery instant is the first instant at or after `from_us` (the
/// injection, or the revert for a fault with a duration) from which every probe in `probes`
/// keeps passing for `hold_us`: `from_us` itself if they pass there, else the first result
/// that makes them all pass again (the instant the replacement was seen Ready). Undecided
/// until `observed_until_us` is a hold past the candidate. A probe's state is its latest
/// result; a probe with no result since the injection counts as passing.
pub fn probe_recovery(
    results: &[ProbeResult],
    probes: &[usize],
    injected_us: u64,
    from_us: u64,
    hold_us: u64,
    observed_until_us: u64,
) -> Recovery {
    let mut rs: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| probes.contains(&r.probe) && r.t_us >= injected_us)
        .collect();
    rs.sort_by_key(|r| r.t_us);
    let total = rs.len() as u64;
    let failed = rs.iter().filter(|r| !r.ok).count() as u64;
    let mut out = Recovery {
        time_to_impact_ms: rs
            .iter()
            .find(|r| !r.ok)
            .map(|r| us_to_ms(r.t_us - injected_us)),
        time_to_recover_ms: None,
        recovered_at_ms: None,
        reason: None,
        requests: total,
        failed_requests: failed,
        availability: (total > 0).then(|| (total - failed) as f64 / total as f64),
    };
    let mut state: BTreeMap<usize, bool> = BTreeMap::new();
    let all_ok = |st: &BTreeMap<usize, bool>| st.values().all(|ok| *ok);
    let split = rs.partition_point(|r| r.t_us <= from_us);
    for r in &rs[..split] {
        state.insert(r.probe, r.ok);
    }
    let mut candidate = all_ok(&state).then_some(from_us);
    let mut decided = None;
    for r in &rs[split..] {
        if let Some(c) = candidate
            && r.t_us > c.saturating_add(hold_us)
        {
            decided = Some(c);
            break;
        }
        state.insert(r.probe, r.ok);
        match (all_ok(&state), candidate) {
            (false, _) => candidate = None,
            (true, None) => candidate = Some(r.t_us),
            (true, Some(_)) => {}
        }
    }
    let decided = decided.or(candidate.filter(|c| observed_until_us >= c.saturating_add(hold_us)));
    match (decided, candidate) {
        (Some(t), _) => {
            out.recovered_at_ms = Some(us_to_ms(t));
            out.time_to_recover_ms = Some(us_to_ms(t.saturating_sub(from_us)));
        }
        (None, Some(_)) => {
            out.reason = Some("not recovered: the probes passed, but not for the hold period before observation ended".into())
        }
        (None, None) => {
            out.reason = Some("not recovered: the probes were still failing when observation ended".into())
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t_us: u64, ok: bool) -> ProbeResult {
        ProbeResult {
            probe: 0,
            t_us,
            ok,
            error: None,
        }
    }

    #[test]
    fn recovery_is_the_first_pass_that_holds() {
        let rs = vec![
            r(0, true),
            r(1_000, false),
            r(1_500, true),
            r(1_600, false),
            r(3_000, true),
            r(9_000, true),
        ];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 9_000);
        assert_eq!(rec.recovered_at_ms, Some(3.0));
        assert_eq!(rec.time_to_recover_ms, Some(2.0));
        assert_eq!(rec.time_to_impact_ms, Some(0.0));
    }

    #[test]
    fn not_held_is_undecided_and_never_failing_is_recovered_at_once() {
        let rs = vec![r(1_000, false), r(3_000, true)];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 4_000);
        assert_eq!(rec.recovered_at_ms, None);
        assert!(rec.reason.is_some());
        let rs = vec![r(1_000, true), r(3_000, true)];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 9_000);
        assert_eq!(rec.time_to_recover_ms, Some(0.0));
        assert_eq!(rec.time_to_impact_ms, None);
    }

    #[test]
    fn failures_during_a_faults_window_count_until_they_end() {
        // Failing from 2 ms, reverted at 5 ms, ready again at 7 ms.
        let rs = vec![
            r(2_000, false),
            r(4_000, false),
            r(7_000, true),
            r(20_000, true),
        ];
        let rec = probe_recovery(&rs, &[0], 1_000, 5_000, 5_000, 20_000);
        assert_eq!(rec.recovered_at_ms, Some(7.0));
        assert_eq!(rec.time_to_recover_ms, Some(2.0));
    }

    #[test]
    fn every_probe_must_pass() {
        let mut b = r(3_000, false);
        b.probe = 1;
        let mut b2 = r(6_000, true);
        b2.probe = 1;
        let rs = vec![r(2_000, false), b, r(4_000, true), b2, r(20_000, true)];
        let rec = probe_recovery(&rs, &[0, 1], 1_000, 1_000, 5_000, 20_000);
        assert_eq!(rec.recovered_at_ms, Some(6.0));
    }
}
