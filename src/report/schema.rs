//! Schema-only mirrors of the types report.json borrows from other modules (fault targets,
//! recovery figures, SLO checks, probe summaries, the plan), so that report.json's JSON Schema
//! can be derived without those modules depending on schemars. Each mirror denies unknown
//! fields: when a borrowed type gains a field, the test that validates a real report.json
//! against this schema fails, and the mirror is updated in the same change.

#![allow(dead_code)]

use schemars::JsonSchema;

use crate::experiment::Slo;

/// One concrete thing a fault acted on.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetSchema {
    /// What kind of thing: `process`, later `pod`, `deployment`, `node`, `proxy`.
    kind: String,
    /// Its identity: a pid, `namespace/name`, a proxy name.
    id: String,
    /// A human description (a process's command line).
    description: String,
}

/// Impact and recovery figures of a fault (definitions in the README).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecoverySchema {
    /// From injection to the first bad request; null when none was seen.
    time_to_impact_ms: Option<f64>,
    /// From the fault's end (injection, for instantaneous faults) to the recovery instant;
    /// null when it did not recover (see `reason`).
    time_to_recover_ms: Option<f64>,
    /// The recovery instant, ms since run start.
    recovered_at_ms: Option<f64>,
    /// Why a figure is null.
    reason: Option<String>,
    /// Requests counted for this fault (injection to recovery + hold).
    requests: u64,
    /// Of them, failed (missed included).
    failed_requests: u64,
    /// ok / requests over the same span.
    availability: Option<f64>,
}

/// The SLO checked over the requests of a span.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SloCheckSchema {
    /// Did every threshold hold?
    held: bool,
    /// Requests judged (missed included).
    requests: u64,
    /// Successful requests.
    ok: u64,
    /// ok / requests.
    success_rate: Option<f64>,
    /// Median latency (ms).
    p50_ms: Option<f64>,
    /// 90th percentile (ms).
    p90_ms: Option<f64>,
    /// 99th percentile (ms).
    p99_ms: Option<f64>,
    /// Maximum (ms).
    max_ms: Option<f64>,
    /// Each threshold that did not hold.
    violations: Vec<String>,
}

/// Probe results over a span.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProbeSummarySchema {
    /// Probe name.
    name: String,
    /// Checks that passed.
    passed: u64,
    /// Checks that failed.
    failed: u64,
    /// The last failure's message.
    last_error: Option<String>,
}

/// The resolved plan.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanSummarySchema {
    /// Seed.
    seed: u64,
    /// Run length (ms).
    duration_ms: u64,
    /// Warm-up (ms).
    warmup_ms: u64,
    /// Hold period (ms).
    hold_ms: u64,
    /// Load, with secret header values redacted.
    load: Option<serde_json::Value>,
    /// The SLO.
    slo: Slo,
    /// Faults in firing order: name, kind, at_ms, duration_ms, spec.
    faults: Vec<serde_json::Value>,
}
