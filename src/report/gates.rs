//! Judging the experiment's gates against a finished run. Reads only the [`Report`] (the fault
//! figures, the totals, the per-phase figures, the steady-state checks), so it is pure and the
//! same gates give the same results on an old report.json.
//!
//! Each gate gives one [`GateResult`] per figure it covers (a gate over "every fault" gives one
//! per fault), with the measured value written next to the threshold: that message is what a
//! CI log and a JUnit failure show.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PhaseStats, Report};
use crate::experiment::gates::{FaultGates, Gates, PercentileGates, RequestGates};
use crate::experiment::{Cmp, DurationThreshold, PercentThreshold};

/// Outcome of a check or a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Held.
    Pass,
    /// Missed.
    Fail,
    /// Could not be judged (no figure: no request in its phase, a fault that never fired).
    Skipped,
}

/// One gate, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateResult {
    /// Stable name: the gate's key, with the fault or phase it covers, e.g.
    /// `recovery_time[kill-one]`, `latency.fault.p99`, `error_rate`.
    pub name: String,
    /// The threshold as written, e.g. `< 10s`.
    pub threshold: String,
    /// The measured value in `unit`; null when there was nothing to measure or it is infinite
    /// (a fault that never recovered or was never felt).
    pub measured: Option<f64>,
    /// Unit of `measured`: `ms` or `%`; empty for a Prometheus gate (the query's own unit).
    pub unit: String,
    /// The measured value as shown: `12.3 ms`, `99.500%`, `not recovered`, `not measured`.
    pub measured_text: String,
    /// Outcome.
    pub status: CheckStatus,
    /// The measured value against the threshold, in words.
    pub message: String,
}

/// What a gate measured.
#[derive(Clone)]
enum Measured {
    /// A finite value.
    Value(f64),
    /// Infinite: never recovered, never felt.
    Infinite(&'static str),
    /// Nothing to judge by.
    Missing(String),
}

fn judge(
    name: String,
    what: &str,
    threshold: String,
    unit: &str,
    measured: Measured,
    holds: impl Fn(f64) -> bool,
    cmp: Cmp,
) -> GateResult {
    let shown = |v: f64| match unit {
        "%" => format!("{v:.3}%"),
        _ => format!("{v:.1} ms"),
    };
    let (measured, text, status, message) = match measured {
        Measured::Value(v) => {
            let ok = holds(v);
            (
                Some(v),
                shown(v),
                if ok {
                    CheckStatus::Pass
                } else {
                    CheckStatus::Fail
                },
                format!("{what} {}, expected {threshold}", shown(v)),
            )
        }
        Measured::Infinite(words) => {
            let ok = matches!(cmp, Cmp::Gt | Cmp::Ge);
            (
                None,
                words.to_string(),
                if ok {
                    CheckStatus::Pass
                } else {
                    CheckStatus::Fail
                },
                format!("{what}: {words}, expected {threshold}"),
            )
        }
        Measured::Missing(why) => (
            None,
            "not measured".to_string(),
            CheckStatus::Skipped,
            format!("{what}: not measured ({why}), expected {threshold}"),
        ),
    };
    GateResult {
        name,
        threshold,
        measured,
        unit: unit.into(),
        measured_text: text,
        status,
        message,
    }
}

fn duration_gate(name: String, what: &str, t: DurationThreshold, m: Measured) -> GateResult {
    let limit_ms = t.limit.get().as_secs_f64() * 1000.0;
    judge(
        name,
        what,
        t.to_string(),
        "ms",
        m,
        |v| t.cmp.holds(v, limit_ms),
        t.cmp,
    )
}

/// `m` is a fraction (0..=1) in a `Value`; shown and stored as a percentage.
fn percent_gate(name: String, what: &str, t: PercentThreshold, m: Measured) -> GateResult {
    let m = match m {
        Measured::Value(f) => Measured::Value(f * 100.0),
        other => other,
    };
    judge(
        name,
        what,
        t.to_string(),
        "%",
        m,
        |v| t.cmp.holds(v, t.limit.get()),
        t.cmp,
    )
}

fn opt(v: Option<f64>, why: &str) -> Measured {
    match v {
        Some(v) => Measured::Value(v),
        None => Measured::Missing(why.to_string()),
    }
}

/// Judges every gate against the report. Order: gates over every fault (per fault), per-fault
/// gates, whole-run gates, latency per phase, steady state after.
pub fn evaluate(g: &Gates, r: &Report) -> Vec<GateResult> {
    let mut out = Vec::new();
    for f in &r.faults {
        let every = FaultGates {
            recovery_time: g.recovery_time,
            time_to_impact: g.time_to_impact,
            error_rate: g.error_rate_per_fault,
            availability: None,
        };
        fault_gates(&mut out, r, &f.name, &every, |key| {
            if key == "error_rate" {
                format!("error_rate_per_fault[{}]", f.name)
            } else {
                format!("{key}[{}]", f.name)
            }
        });
    }
    for (name, fg) in &g.faults {
        fault_gates(&mut out, r, name, &fg.value, |key| {
            format!("faults.{name}.{key}")
        });
    }
    let t = &r.totals;
    if let Some(th) = g.error_rate {
        let rate = (t.requests > 0).then(|| t.failed as f64 / t.requests as f64);
        out.push(percent_gate(
            "error_rate".into(),
            "error rate of the run",
            th,
            opt(rate, "no request"),
        ));
    }
    if let Some(th) = g.availability {
        out.push(percent_gate(
            "availability".into(),
            "availability of the run",
            th,
            opt(t.availability, "no request"),
        ));
    }
    let phases = r.phases.as_ref();
    if let Some(th) = g.error_rate_during_faults {
        let m = match (phases, phases.and_then(|p| p.fault.as_ref())) {
            (_, Some(s)) => opt(s.error_rate, "no request completed during the faults"),
            (None, _) => Measured::Missing("the report has no per-phase figures".into()),
            (Some(_), None) => Measured::Missing("no fault phase".into()),
        };
        out.push(percent_gate(
            "error_rate_during_faults".into(),
            "error rate during the faults",
            th,
            m,
        ));
    }
    for (phase, gates) in [
        ("baseline", &g.latency.baseline),
        ("fault", &g.latency.fault),
        ("recovery", &g.latency.recovery),
    ] {
        let Some(gates) = gates else { continue };
        let stats = phases.and_then(|p| match phase {
            "baseline" => p.baseline.as_ref(),
            "fault" => p.fault.as_ref(),
            _ => p.recovery.as_ref(),
        });
        latency_gates(&mut out, phase, gates, stats, phases.is_some());
    }
    for (name, rg) in &g.requests {
        request_gates(&mut out, r, name, &rg.value);
    }
    if let Some(after) = g.steady_state_after {
        if after.held == Some(true) {
            let (status, message) = match &r.steady_state.after {
                Some(a) if a.held => (CheckStatus::Pass, "the steady state held at the end".into()),
                Some(a) => (
                    CheckStatus::Fail,
                    format!(
                        "the steady state did not hold at the end: {}",
                        a.problems().join("; ")
                    ),
                ),
                None => (
                    CheckStatus::Fail,
                    "the steady state was not checked at the end: the run did not complete"
                        .to_string(),
                ),
            };
            out.push(GateResult {
                name: "steady_state_after.held".into(),
                threshold: "true".into(),
                measured: None,
                unit: String::new(),
                measured_text: if status == CheckStatus::Pass {
                    "held".into()
                } else {
                    "did not hold".into()
                },
                status,
                message,
            });
        }
        if let Some(th) = after.p99_increase {
            let before = r
                .steady_state
                .before
                .as_ref()
                .and_then(|c| c.slo.as_ref())
                .and_then(|s| s.p99_ms)
                .or_else(|| {
                    phases
                        .and_then(|p| p.baseline.as_ref())
                        .and_then(|b| b.success_latency().p99_ms)
                });
            let end = r
                .steady_state
                .after
                .as_ref()
                .and_then(|c| c.slo.as_ref())
                .and_then(|s| s.p99_ms);
            let m = match (before, end) {
                (None, _) => Measured::Missing("no baseline p99".into()),
                (Some(b), _) if b <= 0.0 => Measured::Missing("the baseline p99 is zero".into()),
                (_, None) => Measured::Missing("no p99 at the end of the run".into()),
                (Some(b), Some(a)) => Measured::Value(a / b - 1.0),
            };
            out.push(percent_gate(
                "steady_state_after.p99_increase".into(),
                "p99 at the end over the baseline's",
                th,
                m,
            ));
        }
    }
    out
}

fn fault_gates(
    out: &mut Vec<GateResult>,
    r: &Report,
    fault: &str,
    g: &FaultGates,
    name: impl Fn(&str) -> String,
) {
    let f = r.faults.iter().find(|f| f.name == fault);
    let rec = f.and_then(|f| f.recovery.as_ref());
    let not_fired = || {
        Measured::Missing(match f {
            None => "no such fault in the run".to_string(),
            Some(f) if f.injected_at_ms.is_none() => "the fault never fired".to_string(),
            Some(_) => "no load".to_string(),
        })
    };
    if let Some(t) = g.recovery_time {
        let m = match rec {
            Some(rec) => match rec.time_to_recover_ms {
                Some(v) => Measured::Value(v),
                None => Measured::Infinite("not recovered"),
            },
            None => not_fired(),
        };
        out.push(duration_gate(
            name("recovery_time"),
            &format!("time to recover of {fault}"),
            t,
            m,
        ));
    }
    if let Some(t) = g.time_to_impact {
        let m = match rec {
            Some(rec) => match rec.time_to_impact_ms {
                Some(v) => Measured::Value(v),
                None => Measured::Infinite("never felt"),
            },
            None => not_fired(),
        };
        out.push(duration_gate(
            name("time_to_impact"),
            &format!("time to impact of {fault}"),
            t,
            m,
        ));
    }
    if let Some(t) = g.error_rate {
        let m = match rec {
            Some(rec) if rec.requests > 0 => {
                Measured::Value(rec.failed_requests as f64 / rec.requests as f64)
            }
            Some(_) => Measured::Missing("no request in its span".into()),
            None => not_fired(),
        };
        out.push(percent_gate(
            name("error_rate"),
            &format!("error rate of {fault}"),
            t,
            m,
        ));
    }
    if let Some(t) = g.availability {
        let m = match rec {
            Some(rec) => opt(rec.availability, "no request in its span"),
            None => not_fired(),
        };
        out.push(percent_gate(
            name("availability"),
            &format!("availability of {fault}"),
            t,
            m,
        ));
    }
}

/// The gates of request `name` of the mix, over its own figures (`requests.<name>.…`).
fn request_gates(out: &mut Vec<GateResult>, r: &Report, name: &str, g: &RequestGates) {
    let Some(q) = r.requests.iter().find(|q| q.name == name) else {
        let missing = Measured::Missing(format!("the report has no request named {name:?}"));
        for key in ["error_rate", "availability", "error_rate_during_faults"] {
            let th = match key {
                "error_rate" => g.error_rate,
                "availability" => g.availability,
                _ => g.error_rate_during_faults,
            };
            if let Some(th) = th {
                out.push(percent_gate(
                    format!("requests.{name}.{key}"),
                    &format!("{key} of {name}"),
                    th,
                    missing.clone(),
                ));
            }
        }
        return;
    };
    let t = &q.totals;
    if let Some(th) = g.error_rate {
        let rate = (t.requests > 0).then(|| t.failed as f64 / t.requests as f64);
        out.push(percent_gate(
            format!("requests.{name}.error_rate"),
            &format!("error rate of {name}"),
            th,
            opt(rate, "no request"),
        ));
    }
    if let Some(th) = g.availability {
        out.push(percent_gate(
            format!("requests.{name}.availability"),
            &format!("availability of {name}"),
            th,
            opt(t.availability, "no request"),
        ));
    }
    let phases = q.phases.as_ref();
    if let Some(th) = g.error_rate_during_faults {
        let m = match phases.and_then(|p| p.fault.as_ref()) {
            Some(s) => opt(s.error_rate, "no request completed during the faults"),
            None => Measured::Missing("no fault phase".into()),
        };
        out.push(percent_gate(
            format!("requests.{name}.error_rate_during_faults"),
            &format!("error rate of {name} during the faults"),
            th,
            m,
        ));
    }
    for (phase, gates) in [
        ("baseline", &g.latency.baseline),
        ("fault", &g.latency.fault),
        ("recovery", &g.latency.recovery),
    ] {
        let Some(gates) = gates else { continue };
        let stats = phases.and_then(|p| match phase {
            "baseline" => p.baseline.as_ref(),
            "fault" => p.fault.as_ref(),
            _ => p.recovery.as_ref(),
        });
        let before = out.len();
        latency_gates(out, phase, gates, stats, phases.is_some());
        for res in &mut out[before..] {
            res.name = format!("requests.{name}.{}", res.name);
            res.message = format!("{name}: {}", res.message);
        }
    }
}

fn latency_gates(
    out: &mut Vec<GateResult>,
    phase: &str,
    gates: &PercentileGates,
    stats: Option<&PhaseStats>,
    has_phases: bool,
) {
    for (q, t) in gates.iter() {
        // What users waited for: the successful requests' latency (failures count against
        // the error-rate gates; a fast refusal must not make a phase look quick).
        let v = stats
            .map(PhaseStats::success_latency)
            .and_then(|l| match q {
                "p50" => l.p50_ms,
                "p90" => l.p90_ms,
                "p99" => l.p99_ms,
                _ => l.max_ms,
            });
        let why = if !has_phases {
            "the report has no per-phase figures".to_string()
        } else if stats.is_none() {
            format!("the run had no {phase} phase")
        } else {
            format!("no request completed in the {phase} phase")
        };
        out.push(duration_gate(
            format!("latency.{phase}.{q}"),
            &format!("{q} latency in the {phase} phase"),
            t,
            opt(v, &why),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Phases;

    fn fixture() -> Report {
        serde_json::from_str(include_str!("../../tests/it/fixtures/report-v1-old.json"))
            .expect("fixture")
    }

    fn gates(yaml: &str) -> Gates {
        let text = format!(
            "version: 1\nname: t\nload: {{ http: {{ url: \"http://127.0.0.1:1/\", rate: 1/s }} }}\n\
             faults:\n  - name: kill-one\n    at: 5s\n    process-kill: {{ match: x }}\n\
             duration: 12s\ngates:\n{yaml}"
        );
        crate::experiment::parse_str(&text)
            .map(|e| e.gates)
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn stats(p99: f64, error_rate: f64) -> PhaseStats {
        PhaseStats {
            from_ms: 0.0,
            to_ms: 1.0,
            requests: 100,
            failed: 0,
            error_rate: Some(error_rate),
            p50_ms: Some(1.0),
            p90_ms: Some(2.0),
            p99_ms: Some(p99),
            max_ms: Some(p99 * 2.0),
            ok_latency: None,
            failed_latency: None,
        }
    }

    #[test]
    fn never_recovered_misses_a_recovery_gate_and_never_felt_meets_an_impact_gate() {
        let mut r = fixture();
        if let Some(rec) = r.faults[0].recovery.as_mut() {
            rec.time_to_recover_ms = None;
            rec.time_to_impact_ms = None;
        }
        let g = evaluate(
            &gates("  recovery_time: \"< 1h\"\n  time_to_impact: \"> 1s\"\n"),
            &r,
        );
        assert_eq!(g[0].status, CheckStatus::Fail);
        assert_eq!(g[0].measured_text, "not recovered");
        assert_eq!(g[1].status, CheckStatus::Pass);
        assert_eq!(g[1].measured, None);
    }

    #[test]
    fn phase_gates_read_the_phase_figures() {
        let mut r = fixture();
        r.phases = Some(Phases {
            baseline: Some(stats(5.0, 0.0)),
            fault: Some(stats(250.0, 0.04)),
            recovery: None,
        });
        let g = evaluate(
            &gates(
                "  error_rate_during_faults: \"< 5%\"\n  latency:\n    baseline: { p99: \"< 10ms\" }\n    fault: { p99: \"< 200ms\", max: \"< 1s\" }\n    recovery: { p99: \"< 10ms\" }\n",
            ),
            &r,
        );
        let by: Vec<(&str, CheckStatus)> = g.iter().map(|g| (g.name.as_str(), g.status)).collect();
        assert_eq!(
            by,
            [
                ("error_rate_during_faults", CheckStatus::Pass),
                ("latency.baseline.p99", CheckStatus::Pass),
                ("latency.fault.p99", CheckStatus::Fail),
                ("latency.fault.max", CheckStatus::Pass),
                ("latency.recovery.p99", CheckStatus::Skipped),
            ]
        );
        assert_eq!(
            g[2].message,
            "p99 latency in the fault phase 250.0 ms, expected < 200ms"
        );
    }

    #[test]
    fn p99_increase_is_relative_to_the_baseline() {
        let mut r = fixture();
        if let Some(a) = r.steady_state.after.as_mut().and_then(|a| a.slo.as_mut()) {
            a.p99_ms = Some(12.0); // baseline 8.0: +50%
        }
        let g = evaluate(
            &gates("  steady_state_after: { p99_increase: \"< 40%\" }\n"),
            &r,
        );
        assert_eq!(g[0].status, CheckStatus::Fail);
        assert_eq!(g[0].measured, Some(50.0));
    }

    #[test]
    fn a_missed_gate_only_turns_a_pass_into_a_fail() {
        let g = gates("  recovery_time: \"< 1ms\"\n");
        let mut r = fixture();
        crate::report::judge(&mut r, &g);
        assert_eq!((r.verdict, r.exit_code), (crate::report::Verdict::Fail, 1));
        let mut r = fixture();
        r.verdict = crate::report::Verdict::Aborted;
        r.exit_code = 3;
        crate::report::judge(&mut r, &g);
        assert_eq!(r.exit_code, 3);
        assert_eq!(r.score.map(|s| s.value), Some(0));
    }
}
