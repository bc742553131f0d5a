//! Cluster evidence in the report: each event the run saw in the cluster is put under the fault
//! whose window it fell in and on the timeline, so that a reader of any format sees what the
//! cluster did while the users felt the impact. Pure: the report in, the report out.

use super::{ClusterEventReport, EventKind, FaultReport, Report, TimelineEvent};

/// The window of a fault as the charts shade it: from its injection to its revert, or to its
/// recovery when that came later; to the end of the run when it never recovered. `None` if it
/// never fired.
pub fn fault_window(f: &FaultReport, run_end_ms: f64) -> Option<(f64, f64)> {
    let inj = f.injected_at_ms?;
    let recovered = f.recovery.as_ref().and_then(|r| r.recovered_at_ms);
    let end = if recovered.is_none() && f.recovery.is_some() {
        run_end_ms
    } else {
        f.reverted_at_ms
            .unwrap_or(inj)
            .max(recovered.unwrap_or(inj))
    };
    Some((inj, end.max(inj)))
}

/// The fault whose window holds `t_ms`: of several, the one injected last (the nearest
/// cause).
pub fn fault_at(r: &Report, t_ms: f64) -> Option<String> {
    let end = r.duration_ms as f64;
    r.faults
        .iter()
        .filter_map(|f| fault_window(f, end).map(|w| (w, f)))
        .filter(|((from, to), _)| *from <= t_ms && t_ms <= *to)
        .max_by(|a, b| a.0.0.total_cmp(&b.0.0))
        .map(|(_, f)| f.name.clone())
}

/// Adds `events` to the report: each with its fault, in time order, and on the timeline as a
/// `cluster` event (the timeline stays in time order).
pub fn attach(r: &mut Report, mut events: Vec<ClusterEventReport>) {
    if events.is_empty() {
        return;
    }
    for e in &mut events {
        e.fault = fault_at(r, e.t_ms);
    }
    events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    for e in &events {
        let detail = match &e.fault {
            Some(f) => format!("{} (during {f})", e.summary()),
            None => e.summary(),
        };
        r.timeline.push(TimelineEvent {
            t_ms: e.t_ms,
            event: EventKind::Cluster,
            detail,
        });
    }
    r.timeline.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    r.cluster_events.extend(events);
    r.cluster_events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Report {
        // One fault, kill-one: injected at 5000.5 ms, no revert, recovered at 5812.9 ms.
        serde_json::from_str(include_str!("../../tests/it/fixtures/report-v1-old.json"))
            .expect("fixture")
    }

    fn ev(t_ms: f64, reason: &str) -> ClusterEventReport {
        ClusterEventReport {
            t_ms,
            namespace: "shop".into(),
            object: "Pod/web-1".into(),
            reason: reason.into(),
            severity: "Warning".into(),
            message: "m".into(),
            source: "event".into(),
            fault: None,
        }
    }

    #[test]
    fn events_go_under_the_fault_whose_window_holds_them_and_on_the_timeline_in_order() {
        let mut r = fixture();
        let before = r.timeline.len();
        attach(
            &mut r,
            vec![
                ev(5900.0, "After"),
                ev(4999.0, "Before"),
                ev(5000.5, "AtInjection"),
                ev(5812.9, "AtRecovery"),
            ],
        );
        let got: Vec<(&str, Option<&str>)> = r
            .cluster_events
            .iter()
            .map(|e| (e.reason.as_str(), e.fault.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("Before", None),
                ("AtInjection", Some("kill-one")),
                ("AtRecovery", Some("kill-one")),
                ("After", None),
            ]
        );
        assert_eq!(r.timeline.len(), before + 4);
        assert!(r.timeline.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        let cluster: Vec<&TimelineEvent> = r
            .timeline
            .iter()
            .filter(|e| e.event == EventKind::Cluster)
            .collect();
        assert_eq!(
            cluster[1].detail,
            "shop Pod/web-1 AtInjection: m (during kill-one)"
        );
    }

    #[test]
    fn an_unrecovered_fault_holds_its_events_to_the_end_of_the_run() {
        let mut r = fixture();
        if let Some(rec) = r.faults[0].recovery.as_mut() {
            rec.recovered_at_ms = None;
        }
        assert_eq!(fault_at(&r, 11_000.0).as_deref(), Some("kill-one"));
        assert_eq!(fault_at(&r, 12_001.0), None);
    }
}
