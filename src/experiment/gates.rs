//! The `gates:` section of an experiment as written: thresholds over the run's figures that CI
//! fails on (recovery time, time to impact, error rates, availability, latency per phase, the
//! steady state after). Only the shape and the checks that need the rest of the file (a gate
//! naming a fault that does not exist) live here; evaluating gates against a finished run is
//! `report::gates`, which reads only report.json so an old run can be judged again.
//!
//! Thresholds reuse the value types of the rest of the file (`"< 10s"`, `">= 99.5%"`), so a
//! malformed gate fails at parse time with its line:column and field path, like any value.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostic::Diagnostic;
use super::located::Located;
use super::prometheus::{GatePhase, MAX_INTERVAL, PromGate, check_query};
use super::values::{DurationThreshold, PercentThreshold};

/// Thresholds CI fails on. Every gate given must hold, else the run fails (exit 1). A gate whose
/// figure could not be measured (no request in its phase) is reported as skipped.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Every fault's time to recover, e.g. `"< 10s"`. A fault that never recovered misses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_time: Option<DurationThreshold>,
    /// Every fault's time to impact, e.g. `"> 500ms"`. A fault that was never felt counts as an
    /// infinite time to impact (it meets any `>` gate and misses any `<` gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_impact: Option<DurationThreshold>,
    /// Every fault's error rate (failed / requests from its injection to its recovery plus the
    /// hold period), e.g. `"< 5%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_per_fault: Option<PercentThreshold>,
    /// Error rate over the whole run (failed / requests, missed included), e.g. `"< 1%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<PercentThreshold>,
    /// Error rate over the fault phase (from the first injection until the last fault has
    /// recovered and held), e.g. `"< 5%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_during_faults: Option<PercentThreshold>,
    /// Availability over the whole run (ok / requests), e.g. `">= 99.5%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<PercentThreshold>,
    /// Latency percentiles per phase of the run.
    #[serde(default, skip_serializing_if = "LatencyGates::is_empty")]
    pub latency: LatencyGates,
    /// Gates of one fault, by its name; they apply in addition to the gates for every fault.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<String, Located<FaultGates>>,
    /// Gates of one request of the load's mix, by its name, over that request's figures
    /// alone (`checkout: { latency: { fault: { p99: "< 300ms" } } }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Located<RequestGates>>,
    /// Did the system return to its baseline at the end of the run, not only to the SLO?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state_after: Option<AfterGates>,
    /// Gates on PromQL expressions over a phase (`baseline`, `fault`, `recovery`, `run`),
    /// evaluated after the run with range queries over the phase's span.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<PromGate>,
}

impl Gates {
    /// True when no gate is set.
    pub fn is_empty(&self) -> bool {
        self.recovery_time.is_none()
            && self.time_to_impact.is_none()
            && self.error_rate_per_fault.is_none()
            && self.error_rate.is_none()
            && self.error_rate_during_faults.is_none()
            && self.availability.is_none()
            && self.latency.is_empty()
            && self.faults.is_empty()
            && self.requests.is_empty()
            && self.steady_state_after.is_none()
            && self.prometheus.is_empty()
    }
}

/// Latency gates per phase: `baseline` (warm-up end to the first injection), `fault` (first
/// injection until the last fault has recovered and held) and `recovery` (from there to the end
/// of the run).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyGates {
    /// Before any fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<PercentileGates>,
    /// While faults act and until they have recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<PercentileGates>,
    /// After the last fault has recovered, to the end of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<PercentileGates>,
}

impl LatencyGates {
    /// True when no phase has a gate.
    pub fn is_empty(&self) -> bool {
        self.baseline.is_none() && self.fault.is_none() && self.recovery.is_none()
    }
}

/// Latency percentiles of the requests of a phase, from their intended start.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PercentileGates {
    /// Median, e.g. `"< 20ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<DurationThreshold>,
    /// 90th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<DurationThreshold>,
    /// 99th percentile, e.g. `"< 200ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<DurationThreshold>,
    /// Maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<DurationThreshold>,
}

impl PercentileGates {
    /// The gates given, as (name, threshold), in the order p50, p90, p99, max.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, DurationThreshold)> {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("max", self.max),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
    }
}

/// Gates of one named fault.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultGates {
    /// Its time to recover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_time: Option<DurationThreshold>,
    /// Its time to impact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_impact: Option<DurationThreshold>,
    /// Its error rate (injection to recovery plus hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<PercentThreshold>,
    /// Its availability (the same span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<PercentThreshold>,
}

/// Gates of one request of the load's mix, over its own figures.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestGates {
    /// Its error rate over the run (failed / requests, missed included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<PercentThreshold>,
    /// Its availability over the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<PercentThreshold>,
    /// Its error rate over the fault phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_during_faults: Option<PercentThreshold>,
    /// Its latency percentiles per phase.
    #[serde(default, skip_serializing_if = "LatencyGates::is_empty")]
    pub latency: LatencyGates,
}

/// Gates over the steady state at the end of the run (the last `hold` of it).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterGates {
    /// `true`: the hypothesis (SLO and probes) must hold at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// How much higher p99 may be at the end than in the baseline, relative to the baseline,
    /// e.g. `"< 50%"` (a p99 of 15 ms after a baseline of 10 ms is an increase of 50%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_increase: Option<PercentThreshold>,
}

/// Checks of the gates that need the rest of the experiment: every fault named under
/// `gates.faults` exists; fault gates need faults; figures measured over the load need load.
pub(super) fn validate(
    gates: &Gates,
    fault_names: &[&str],
    request_names: &[&str],
    has_load: bool,
    anchor: &Located<String>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let at = |line: u64, column: u64, field: String, message: String| Diagnostic {
        line,
        column,
        field,
        message,
        snippet: None,
    };
    for (name, g) in &gates.faults {
        if !fault_names.contains(&name.as_str()) {
            let known = if fault_names.is_empty() {
                "the experiment has no faults".to_string()
            } else {
                format!("faults are: {}", fault_names.join(", "))
            };
            out.push(at(
                g.line,
                g.column,
                format!("gates.faults.{name}"),
                format!("no fault is named {name:?} ({known})"),
            ));
        }
    }
    for (name, g) in &gates.requests {
        if !request_names.contains(&name.as_str()) {
            let known = if request_names.is_empty() {
                "the load has no `requests` mix".to_string()
            } else {
                format!("requests are: {}", request_names.join(", "))
            };
            out.push(at(
                g.line,
                g.column,
                format!("gates.requests.{name}"),
                format!("no request is named {name:?} ({known})"),
            ));
        }
        if fault_names.is_empty()
            && (g.latency.fault.is_some() || g.error_rate_during_faults.is_some())
        {
            out.push(at(
                g.line,
                g.column,
                format!("gates.requests.{name}"),
                "gates over the fault phase need at least one fault".into(),
            ));
        }
    }
    if fault_names.is_empty()
        && (gates.recovery_time.is_some()
            || gates.time_to_impact.is_some()
            || gates.error_rate_per_fault.is_some()
            || gates.error_rate_during_faults.is_some()
            || gates.latency.fault.is_some())
    {
        out.push(at(
            anchor.line,
            anchor.column,
            "gates".into(),
            "gates over faults (recovery_time, time_to_impact, error_rate_per_fault, \
             error_rate_during_faults, latency.fault) need at least one fault"
                .into(),
        ));
    }
    let needs_load = gates.error_rate.is_some()
        || gates.availability.is_some()
        || gates.error_rate_per_fault.is_some()
        || gates.error_rate_during_faults.is_some()
        || gates.recovery_time.is_some()
        || gates.time_to_impact.is_some()
        || !gates.latency.is_empty()
        || gates
            .steady_state_after
            .is_some_and(|a| a.p99_increase.is_some())
        || !gates.faults.is_empty();
    if needs_load && !has_load {
        out.push(at(
            anchor.line,
            anchor.column,
            "gates".into(),
            "these gates are measured over the load's requests: add `load`".into(),
        ));
    }
    for (i, g) in gates.prometheus.iter().enumerate() {
        let mut bad = |field: String, message: String| {
            out.push(at(g.server.url.line, g.server.url.column, field, message))
        };
        let field = format!("gates.prometheus[{i}]");
        if let Err(m) = g.server.validate() {
            bad(format!("{field}.server"), m);
        }
        if let Err(m) = check_query(&g.query) {
            bad(field.clone(), m);
        }
        if g.step.get().is_zero() || g.step.get() > MAX_INTERVAL {
            bad(
                format!("{field}.step"),
                "must be above zero and at most 1 day".into(),
            );
        }
        if matches!(g.phase, GatePhase::Fault | GatePhase::Recovery) && fault_names.is_empty() {
            bad(
                format!("{field}.phase"),
                format!("the `{}` phase needs at least one fault", g.phase.as_str()),
            );
        }
    }
    if let Some(AfterGates {
        held: Some(false), ..
    }) = gates.steady_state_after
    {
        out.push(at(
            anchor.line,
            anchor.column,
            "gates.steady_state_after.held".into(),
            "only `true` is meaningful (remove the key to not gate on it)".into(),
        ));
    }
    out
}
