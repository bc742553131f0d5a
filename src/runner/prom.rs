//! What the runner asks of Prometheus outside the probes: the preflight of every query and
//! server the experiment names (exit 2 before any fault), the live `stop_when` conditions on
//! queries and alerts, and the gates over a phase, evaluated after the run with range queries.
//!
//! Kept apart from `stop.rs` (which reads the run's own records every 100 ms) because these
//! conditions poll a remote server at their own interval, each in its own loop, and a slow or
//! unreachable server must never delay the local conditions.

use std::time::Duration;

use futures_util::future::select_all;
use tokio_util::sync::CancellationToken;

use super::Trigger;
use crate::experiment::prometheus::{GatePhase, PromGate};
use crate::experiment::stop::{AlertStop, PromStop};
use crate::metrics::RunClock;
use crate::plan::Plan;
use crate::prometheus::single_value;
use crate::report::{CheckStatus, GateResult, Report};

/// Every Prometheus server and query the experiment names, tried once: the first problem, with
/// the query and Prometheus's own error.
pub(super) async fn preflight(plan: &Plan) -> Result<(), String> {
    for p in &plan.probes {
        p.spec
            .probe()
            .preflight()
            .await
            .map_err(|e| format!("probe {}: {e}", p.name))?;
    }
    let e = &plan.experiment;
    for (i, g) in e.gates.prometheus.iter().enumerate() {
        crate::probe::prometheus::preflight_query(&g.server, &g.query)
            .await
            .map_err(|m| format!("gates.prometheus[{i}]: {m}"))?;
    }
    for (i, s) in e.stop_when.prometheus.iter().enumerate() {
        crate::probe::prometheus::preflight_query(&s.server, &s.query)
            .await
            .map_err(|m| format!("stop_when.prometheus[{i}]: {m}"))?;
    }
    if let Some(a) = &e.stop_when.alerts {
        let c = a
            .server
            .connect()
            .map_err(|m| format!("stop_when.alerts: {m}"))?;
        c.alerts()
            .await
            .map_err(|m| format!("stop_when.alerts: {m}"))?;
    }
    Ok(())
}

/// Watches the Prometheus conditions of `stop_when` until one triggers (returned) or `stop` is
/// cancelled (None). Never returns when there is none.
pub(super) async fn watch(
    queries: Vec<PromStop>,
    alerts: Option<AlertStop>,
    clock: RunClock,
    stop: CancellationToken,
) -> Option<Trigger> {
    let mut loops: Vec<std::pin::Pin<Box<dyn Future<Output = Trigger> + Send>>> = queries
        .into_iter()
        .map(|q| Box::pin(watch_query(q, clock)) as _)
        .collect();
    if let Some(a) = alerts {
        loops.push(Box::pin(watch_alerts(a, clock)));
    }
    if loops.is_empty() {
        stop.cancelled().await;
        return None;
    }
    tokio::select! {
        _ = stop.cancelled() => None,
        (t, _, _) = select_all(loops) => Some(t),
    }
}

async fn watch_query(q: PromStop, clock: RunClock) -> Trigger {
    let client = q.server.connect().map_err(|e| e.to_string());
    let mut tick = tokio::time::interval(q.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since: Option<u64> = None;
    loop {
        tick.tick().await;
        let now = clock.now_us();
        let value = match &client {
            Err(e) => Err(e.clone()),
            Ok(c) => c
                .instant(&q.query)
                .await
                .map_err(|e| e.to_string())
                .and_then(|s| single_value(&s)),
        };
        // Unevaluable counts as holding: a run that cannot see its guard must not go on.
        let (holds, seen) = match &value {
            Ok(v) => (q.when.threshold.holds(*v), format!("value {v}")),
            Err(e) => (true, format!("cannot evaluate: {e}")),
        };
        if !holds {
            since = None;
            continue;
        }
        let start = *since.get_or_insert(now);
        if now - start >= q.when.for_.as_micros() {
            return Trigger {
                condition: format!(
                    "prometheus {} {} ({seen}, held {:.1}s)",
                    q.query,
                    q.when,
                    (now - start) as f64 / 1e6
                ),
                at_us: clock.now_us(),
            };
        }
    }
}

async fn watch_alerts(a: AlertStop, clock: RunClock) -> Trigger {
    let client = a.server.connect().map_err(|e| e.to_string());
    let mut tick = tokio::time::interval(a.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<u64> = None;
    loop {
        tick.tick().await;
        let now = clock.now_us();
        let got = match &client {
            Err(e) => Err(e.clone()),
            Ok(c) => c.alerts().await.map_err(|e| e.to_string()),
        };
        match got {
            Ok(alerts) => {
                failing_since = None;
                if let Some(f) = alerts
                    .iter()
                    .find(|x| x.state == "firing" && a.names.contains(&x.name))
                {
                    return Trigger {
                        condition: format!("alert {} firing {}", f.name, f.labels),
                        at_us: clock.now_us(),
                    };
                }
            }
            Err(e) => {
                let start = *failing_since.get_or_insert(now);
                if now - start >= a.unreachable_for.as_micros() {
                    return Trigger {
                        condition: format!(
                            "alerts unreadable for {:.1}s: {e}",
                            (now - start) as f64 / 1e6
                        ),
                        at_us: clock.now_us(),
                    };
                }
            }
        }
    }
}

/// The phase's span, µs since the run's start, from the report alone.
fn span(r: &Report, phase: GatePhase) -> Option<(u64, u64)> {
    let spans = crate::report::phase_spans(r);
    match phase {
        GatePhase::Baseline => spans.baseline,
        GatePhase::Fault => spans.fault,
        GatePhase::Recovery => spans.recovery,
        GatePhase::Run => (r.duration_ms > 0).then_some((0, r.duration_ms * 1000)),
    }
}

/// Evaluates the Prometheus gates over their phases of the finished run in `r` (its start time
/// and phase spans): one range query each; every point must meet the expectation.
pub(super) async fn evaluate_gates(gates: &[PromGate], r: &Report) -> Vec<GateResult> {
    let mut out = Vec::with_capacity(gates.len());
    for g in gates {
        out.push(evaluate_gate(g, r).await);
    }
    out
}

async fn evaluate_gate(g: &PromGate, r: &Report) -> GateResult {
    let name = g.display_name();
    let threshold = g.expect.to_string();
    let result = |status, measured: Option<f64>, message: String| GateResult {
        name: name.clone(),
        threshold: threshold.clone(),
        measured,
        unit: String::new(),
        measured_text: measured.map_or_else(|| "not measured".into(), |v| format!("{v}")),
        status,
        message,
    };
    let Some((from_us, to_us)) = span(r, g.phase) else {
        return result(
            CheckStatus::Skipped,
            None,
            format!("{name}: the run had no {} phase", g.phase.as_str()),
        );
    };
    let t0 = r.started_at_unix_ms as f64 / 1000.0;
    let (start, end) = (t0 + from_us as f64 / 1e6, t0 + to_us as f64 / 1e6);
    let step = effective_step(g.step.get(), to_us.saturating_sub(from_us));
    let series = match g.server.connect() {
        Err(e) => Err(e.to_string()),
        Ok(c) => c
            .range(&g.query, start, end, step)
            .await
            .map_err(|e| e.to_string()),
    };
    let fail = |m: String| result(CheckStatus::Fail, None, format!("{name}: {m}"));
    let series = match series {
        Err(e) => return fail(e),
        Ok(s) => s,
    };
    let points = match series.as_slice() {
        [] => return fail("no point in the phase (an empty result is never a pass)".into()),
        [s] if s.points.is_empty() => return fail("no point in the phase".into()),
        [s] => &s.points,
        many => {
            return fail(format!(
                "{} series, not one (aggregate it, e.g. sum(...)); first: {}",
                many.len(),
                many[0].labels
            ));
        }
    };
    if let Some((t, _)) = points.iter().find(|(_, v)| !v.is_finite()) {
        return fail(format!(
            "a point that is not a finite number at {:.1}s into the run",
            t - t0
        ));
    }
    // The worst point for the operator: the highest for `<`, the lowest for `>`.
    let values = points.iter().map(|p| p.1);
    let worst = match g.expect.cmp {
        crate::experiment::Cmp::Lt | crate::experiment::Cmp::Le => values.fold(f64::MIN, f64::max),
        crate::experiment::Cmp::Gt | crate::experiment::Cmp::Ge => values.fold(f64::MAX, f64::min),
    };
    let ok = points.iter().all(|p| g.expect.holds(p.1));
    let status = if ok {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    let verb = if ok { "held" } else { "missed" };
    result(
        status,
        Some(worst),
        format!(
            "{name}: worst of {} points {worst} against {threshold}: {verb} ({} phase, \
             {:.1}–{:.1}s, step {})",
            points.len(),
            g.phase.as_str(),
            from_us as f64 / 1e6,
            to_us as f64 / 1e6,
            crate::experiment::HumanDuration(step)
        ),
    )
}

/// Prometheus refuses a range query of more than 11,000 points per series: over a long phase
/// the step is raised to keep under 10,000 (never lowered, never below 1 ms).
fn effective_step(step: Duration, span_us: u64) -> Duration {
    let floor = Duration::from_micros(span_us / 10_000);
    step.max(floor).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_phases_raise_the_step_under_prometheus_limit() {
        let s = Duration::from_secs(1);
        assert_eq!(effective_step(s, 60_000_000), s);
        // A day at 1 s would be 86,400 points.
        let day = 86_400_000_000;
        assert!(day / effective_step(s, day).as_micros() as u64 <= 10_000);
        assert_eq!(effective_step(Duration::ZERO, 0), Duration::from_millis(1));
    }
}
