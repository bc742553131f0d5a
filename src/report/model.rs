//! The report model: every type of report.json, owned here, so that the file's shape is
//! decided in one place. Other modules keep their own types (a fault's [`Target`], the
//! figures of `analysis`, a probe's summary, the plan); the wire counterparts at the end of
//! this file convert from them (`From<&internal>`), and the JSON Schema of `rattle schema
//! --report` is derived from these types themselves, so the schema cannot drift from the file.
//!
//! Compatibility rules, because other tools read report.json: keys are added, never renamed or
//! reordered (serde writes fields in declaration order); a new key has a serde default so that
//! older reports still read. The verdict word, [`Verdict`], comes from the ground-floor
//! [`crate::outcome`] module: it is derived from a run's `Outcome`, with the exit code.
//!
//! [`Target`]: crate::fault::Target

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{GateResult, Score, Verdict, fmt_ms};
use crate::{analysis, experiment, fault, plan, probe};

/// The complete record of a run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Format version.
    pub schema_version: u32,
    /// rattle's version.
    pub rattle_version: String,
    /// Which experiment.
    pub experiment: ExperimentRef,
    /// The run's seed.
    pub seed: u64,
    /// Start of load, RFC 3339 UTC with ms.
    pub started_at: String,
    /// Start of load, ms since the Unix epoch.
    pub started_at_unix_ms: i64,
    /// How long load ran (ms).
    pub duration_ms: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in a sentence.
    pub reason: String,
    /// The process's exit code.
    pub exit_code: i32,
    /// The resolved plan.
    pub plan: Option<PlanReport>,
    /// Faults in firing order.
    pub faults: Vec<FaultReport>,
    /// Windows of the load.
    pub windows: Vec<WindowReport>,
    /// Whole-run figures.
    pub totals: Totals,
    /// Steady-state checks.
    pub steady_state: SteadyState,
    /// What happened when.
    pub timeline: Vec<TimelineEvent>,
    /// The stop condition that ended the run, if one did.
    #[serde(default)]
    pub stop: Option<StopReport>,
    /// Latency and errors per phase (baseline, fault, recovery); null without load or in
    /// reports older than this key.
    #[serde(default)]
    pub phases: Option<Phases>,
    /// Every gate of the experiment, judged.
    #[serde(default)]
    pub gates: Vec<GateResult>,
    /// The resilience score (see the README); null in reports older than this key.
    #[serde(default)]
    pub score: Option<Score>,
    /// What the cluster did during a run that touched Kubernetes (Events and pod changes in
    /// the namespaces involved), each under the fault whose window it fell in; absent when the
    /// run touched no cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_events: Vec<ClusterEventReport>,
    /// The load's figures per request of its mix (absent without a mix): the same windows,
    /// totals and phases as the whole, for each request name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestReport>,
}

/// One request of the load's mix: its share and its figures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RequestReport {
    /// Its name.
    pub name: String,
    /// Its weight, as written.
    pub weight: f64,
    /// The share of tickets its weight asked for (0 to 1).
    pub share_asked: f64,
    /// The share of the load's requests (missed included) that were this one (0 to 1).
    pub share: Option<f64>,
    /// Its totals (no generator figures: the generator is shared).
    pub totals: Totals,
    /// Its windows.
    pub windows: Vec<WindowReport>,
    /// Its figures per phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// Its impact and recovery per fault, in the faults' order: over its own requests, judged
    /// by its own SLO (the steady state's when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<RequestFaultReport>,
}

impl RequestReport {
    /// How each fault touched this request, in words: "kill-one: impact after 8.3 ms,
    /// recovered after 9.0 ms, 2 of 120 failed; pause: not felt".
    pub fn by_fault(&self) -> String {
        self.faults
            .iter()
            .map(|f| {
                let words = match &f.recovery {
                    None => "not injected".to_string(),
                    Some(r) => match (r.time_to_impact_ms, r.time_to_recover_ms) {
                        (None, _) => "not felt".to_string(),
                        (Some(i), Some(t)) => format!(
                            "impact after {}, recovered after {}, {} of {} failed",
                            fmt_ms(Some(i)),
                            fmt_ms(Some(t)),
                            r.failed_requests,
                            r.requests
                        ),
                        (Some(i), None) => format!(
                            "impact after {}, not recovered{}",
                            fmt_ms(Some(i)),
                            r.reason
                                .as_ref()
                                .map(|w| format!(" ({w})"))
                                .unwrap_or_default()
                        ),
                    },
                };
                format!("{}: {words}", f.fault)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One request's figures for one fault.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RequestFaultReport {
    /// The fault's name.
    pub fault: String,
    /// Impact and recovery, as the fault's own `recovery`.
    pub recovery: Option<RecoveryReport>,
}

/// One thing the cluster did, as rattle saw it (see `observe::events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterEventReport {
    /// When rattle's watch delivered it, ms since run start.
    pub t_ms: f64,
    /// Namespace.
    pub namespace: String,
    /// The object, `Kind/name`.
    pub object: String,
    /// Short reason (`FailedScheduling`, `Evicted`, `OOMKilled`, `Restarted`, `NotReady`...).
    pub reason: String,
    /// `Warning` or `Normal`.
    pub severity: String,
    /// What happened, in the cluster's words.
    pub message: String,
    /// `event` (a Kubernetes Event) or `pod` (a change seen in a pod's status).
    pub source: String,
    /// The fault whose window (injection to revert, or to recovery when later) it fell in;
    /// null outside every window.
    pub fault: Option<String>,
}

impl ClusterEventReport {
    /// The event as one line for the timeline: `ns Pod/web-1 OOMKilled: message`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}: {}",
            self.namespace, self.object, self.reason, self.message
        )
    }
}

/// The experiment's identity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentRef {
    /// Name.
    pub name: String,
    /// Path of the file as given.
    pub file: String,
    /// Description.
    pub description: Option<String>,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FaultReport {
    /// Name.
    pub name: String,
    /// Kind key.
    pub kind: String,
    /// What it acted on.
    pub targets: Vec<TargetReport>,
    /// Injection, ms since run start; null if it never fired.
    pub injected_at_ms: Option<f64>,
    /// Revert, ms since run start; null for instantaneous faults or if never reverted.
    pub reverted_at_ms: Option<f64>,
    /// What went wrong while resolving, injecting or reverting.
    pub error: Option<String>,
    /// Impact and recovery figures; null if it never fired.
    pub recovery: Option<RecoveryReport>,
    /// What the fault measurably did, where rattle can measure it (a proxy toxic: the bytes
    /// per second through the connections it hit, the share of connections it hit), so that a
    /// reader sees the fault actually applied beside the one asked. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<EffectReport>,
}

/// A fault's measured effect over its window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EffectReport {
    /// From injection to revert (or to the end of the run), ms.
    pub window_ms: f64,
    /// Bytes passed on the connections it hit, in its direction (0 for an HTTP rule, which
    /// counts requests).
    pub bytes: u64,
    /// `bytes` over the window; null for an empty window and for an HTTP rule.
    pub bytes_per_sec: Option<f64>,
    /// Connections that met it; for an HTTP rule (`unit: requests`), requests that matched.
    pub connections: u64,
    /// Of which it hit (its `toxicity`, or the rule's `share`).
    pub affected: u64,
    /// `affected` / `connections`; null without any.
    pub affected_share: Option<f64>,
    /// What `connections` and `affected` count: `connections` (a toxic) or `requests` (an HTTP
    /// rule).
    #[serde(default = "connections_unit")]
    pub unit: String,
    /// A bandwidth toxic: the rate asked, bytes/s per connection (as in Toxiproxy, the limit
    /// holds for each connection; `bytes_per_sec` is all of them together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_bytes_per_sec: Option<f64>,
    /// A bandwidth toxic: bytes over the connection-seconds during which data waited to pass,
    /// less what the bucket's credit let through at once: the rate a connection's link actually
    /// ran at while it was the limit (gaps and short bursts in the traffic do not count).
    /// Within a few percent of `asked_bytes_per_sec` when the fault held its rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_bytes_per_sec: Option<f64>,
    /// A latency toxic: the delay asked and its jitter, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_latency_ms: Option<f64>,
    /// Jitter asked, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_jitter_ms: Option<f64>,
    /// A latency toxic: chunks it delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_chunks: Option<u64>,
    /// How late after their deadline those chunks went: mean, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_mean_ms: Option<f64>,
    /// And the latest, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_max_ms: Option<f64>,
    /// Set when the effect measurably differs from the one asked (a rate the machine could not
    /// carry, delays released late), in words; summary.md and the HTML show it as a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<String>,
}

fn connections_unit() -> String {
    "connections".into()
}

impl EffectReport {
    /// The measured effect in one sentence (summary.md and the HTML), without the shortfall.
    pub fn words(&self) -> String {
        let secs = self.window_ms / 1000.0;
        let kb = |b: f64| format!("{:.1} KB/s", b / 1000.0);
        if self.unit == "requests" {
            return format!(
                "it hit {} of {} matching requests in {secs:.1} s ({})",
                self.affected,
                self.connections,
                self.affected_share
                    .map_or("–".into(), |s| format!("{:.1} %", s * 100.0))
            );
        }
        let mut w = format!(
            "{} bytes in {secs:.1} s ({}) through the connections it hit; it hit {} of {} \
             connections",
            self.bytes,
            self.bytes_per_sec.map_or("–".into(), kb),
            self.affected,
            self.connections
        );
        if let Some(asked) = self.asked_bytes_per_sec {
            w += &format!(
                "; while data waited, a connection passed {} (asked {} per connection)",
                self.busy_bytes_per_sec.map_or("–".into(), kb),
                kb(asked)
            );
        }
        if let (Some(n), Some(mean), Some(max)) =
            (self.delayed_chunks, self.late_mean_ms, self.late_max_ms)
        {
            w += &format!(
                "; {n} delayed chunks went {mean:.2} ms after their deadline on average (at \
                 most {max:.2} ms)"
            );
        }
        w
    }
}

impl From<&crate::proxy::share::Measured> for EffectReport {
    fn from(m: &crate::proxy::share::Measured) -> Self {
        let latency = m.asked_latency_ms.is_some();
        Self {
            window_ms: m.seconds * 1000.0,
            bytes: m.bytes,
            bytes_per_sec: (m.seconds > 0.0 && !m.requests).then(|| m.bytes as f64 / m.seconds),
            connections: m.connections,
            affected: m.affected,
            affected_share: (m.connections > 0).then(|| m.affected as f64 / m.connections as f64),
            unit: if m.requests {
                "requests"
            } else {
                "connections"
            }
            .into(),
            asked_bytes_per_sec: m.asked_bytes_per_sec,
            busy_bytes_per_sec: m.asked_bytes_per_sec.and(m.busy_bytes_per_sec()),
            asked_latency_ms: m.asked_latency_ms.map(|l| l.0),
            asked_jitter_ms: m.asked_latency_ms.map(|l| l.1),
            delayed_chunks: latency.then_some(m.delayed),
            late_mean_ms: (latency && m.delayed > 0).then_some(m.late_mean_ms),
            late_max_ms: (latency && m.delayed > 0).then_some(m.late_max_ms),
            shortfall: m.shortfall(),
        }
    }
}

/// One window of the load.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WindowReport {
    /// Window start, ms since run start.
    pub t_ms: u64,
    /// Requests sent that completed in the window.
    pub sent: u64,
    /// Of them, successful.
    pub ok: u64,
    /// Failed, missed included.
    pub failed: u64,
    /// Not sent on time (in-flight cap, or rattle behind), counted in the window of their
    /// intended start.
    pub missed: u64,
    /// Latency percentiles (ms), from intended start, of every request sent: successes and
    /// failures mixed, as wrk and oha report them. See `ok_latency` for what users waited for.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful requests alone (what users who were served waited for; what
    /// SLOs, gates and the HTML chart read). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_latency: Option<LatencyReport>,
    /// Latency of the failed requests that were sent (a timeout counts at its timeout; missed
    /// requests have none). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_latency: Option<LatencyReport>,
    /// Send lag of the requests sent in this window: how late rattle sent them after their
    /// intended start. Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag: Option<SendLagReport>,
}

/// Send lag: actual send minus intended start, in ms. Large figures mean the load generator,
/// not the service, set the pace: the latencies beside them then measure rattle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendLagReport {
    /// Requests sent.
    pub count: u64,
    /// Median lag (ms).
    pub p50_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// Maximum (ms).
    pub max_ms: Option<f64>,
    /// Requests sent more than 10 ms after their intended start.
    pub over_10ms: u64,
}

impl From<&crate::metrics::LagSummary> for SendLagReport {
    fn from(s: &crate::metrics::LagSummary) -> Self {
        Self {
            count: s.count,
            p50_ms: s.p50_us.map(analysis::us_to_ms),
            p99_ms: s.p99_us.map(analysis::us_to_ms),
            max_ms: s.max_us.map(analysis::us_to_ms),
            over_10ms: s.over_10ms,
        }
    }
}

/// Whether rattle kept its own schedule over the run. When it did not, the run is
/// `inconclusive` (exit 5): its figures measure rattle, not the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GeneratorReport {
    /// The whole run's send lag.
    pub send_lag: SendLagReport,
    /// False when rattle's own lag (send minus the instant the request could go: its intended
    /// start, or later if the target held every in-flight permit) stayed over 10 ms for 1 s
    /// (at 90 % of the sends of each 10 ms slot).
    pub kept_schedule: bool,
    /// When that stretch began (ms since the run's start).
    pub behind_since_ms: Option<f64>,
    /// The longest stretch of 10 ms slots whose sends were 90 % or more over 10 ms late by
    /// rattle's own doing (ms).
    pub longest_late_stretch_ms: f64,
    /// True when rattle's busiest runtime worker was running or waiting to run 95 % of the
    /// time for 2 s (Linux): rattle wanted more CPU than it got.
    #[serde(default)]
    pub cpu_saturated: bool,
    /// True when rattle's runtime woke its tasks over 10 ms late at 90 % of its wake-ups over
    /// 1 s, or once by 1 s (its queues held more than it could poll, so every latency it
    /// measured included its own queueing).
    #[serde(default)]
    pub runtime_stalled: bool,
}

impl From<&crate::metrics::SendLag> for GeneratorReport {
    fn from(l: &crate::metrics::SendLag) -> Self {
        Self {
            send_lag: (&l.run).into(),
            kept_schedule: l.behind.since_us.is_none(),
            behind_since_ms: l.behind.since_us.map(analysis::us_to_ms),
            longest_late_stretch_ms: analysis::us_to_ms(l.behind.longest_us),
            cpu_saturated: l.behind.cpu_saturated,
            runtime_stalled: l.behind.runtime_stalled,
        }
    }
}

/// Whole-run figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Totals {
    /// Requests, missed included.
    pub requests: u64,
    /// Sent.
    pub sent: u64,
    /// Successful.
    pub ok: u64,
    /// Failed, missed included.
    pub failed: u64,
    /// Not sent on time.
    pub missed: u64,
    /// ok / requests.
    pub availability: Option<f64>,
    /// Achieved rate of requests sent per second of load.
    pub rate_per_sec: Option<f64>,
    /// Latency percentiles (ms) of every request sent, successes and failures mixed.
    pub p50_ms: Option<f64>,
    /// 90th.
    pub p90_ms: Option<f64>,
    /// 99th.
    pub p99_ms: Option<f64>,
    /// 99.9th.
    pub p999_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful requests alone (what users who were served waited for; what
    /// SLOs, gates and the HTML chart read). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_latency: Option<LatencyReport>,
    /// Latency of the failed requests that were sent (a timeout counts at its timeout; missed
    /// requests have none). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_latency: Option<LatencyReport>,
    /// Tickets that were due when the load stopped, not sent, with time left before their
    /// timeout: the run ended under them. Counted in neither `requests` nor `missed`.
    #[serde(default)]
    pub unsent: u64,
    /// The load generator's own figures: its send lag and whether it kept its schedule.
    /// Absent without load and in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorReport>,
}

/// A steady-state check: the SLO over the load's requests in a span, and the probes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SteadyCheck {
    /// Did the hypothesis hold (SLO and every probe)?
    pub held: bool,
    /// Span start, ms since run start.
    pub from_ms: u64,
    /// Span end.
    pub to_ms: u64,
    /// The SLO check; null without load.
    pub slo: Option<SloCheckReport>,
    /// Each mix request's own SLO over its own requests (those with an `slo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestSloCheck>,
    /// Probe results in the span.
    pub probes: Vec<ProbeReport>,
}

/// One mix request's SLO check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RequestSloCheck {
    /// The request's name.
    pub name: String,
    /// Its check.
    pub slo: SloCheckReport,
}

impl SteadyCheck {
    /// Every reason the check did not hold: SLO violations, then failing probes.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .slo
            .as_ref()
            .map(|s| s.violations.clone())
            .unwrap_or_default();
        for r in &self.requests {
            out.extend(r.slo.violations.iter().map(|v| format!("{}: {v}", r.name)));
        }
        for p in self.probes.iter().filter(|p| p.failed > 0) {
            out.push(format!(
                "probe {} failed {} of {} checks{}",
                p.name,
                p.failed,
                p.failed + p.passed,
                p.last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// Before and after.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct SteadyState {
    /// Over the baseline, before any fault.
    pub before: Option<SteadyCheck>,
    /// Over the last hold period of the run.
    pub after: Option<SteadyCheck>,
}

/// One event of the run's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEvent {
    /// ms since run start.
    pub t_ms: f64,
    /// What happened.
    pub event: EventKind,
    /// Details, for people.
    pub detail: String,
}

/// What a timeline event is: a closed set, so that a program reading `report.json` can match
/// on it (the same word starts the event's line in the run's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The run entered a phase; the detail names it.
    Phase,
    /// The steady state held over the baseline.
    Baseline,
    /// A fault was injected; the detail names it, its kind and its targets.
    Inject,
    /// A fault was reverted; the detail names it.
    Revert,
    /// The run stops early (a signal or a stop condition), or what became of such a stop.
    Stop,
    /// Something went wrong that changes no outcome (a journal entry left behind after a
    /// successful revert: `rattle recover` reverts it again, harmlessly).
    Warning,
    /// A fault could not be resolved, injected or reverted; the run panicked; the demo service
    /// did not stop.
    Error,
    /// The cluster did something during the run (an Event, a restart, a readiness flip); the
    /// detail says what, and `cluster_events` has it in full.
    Cluster,
}

impl EventKind {
    /// The word used in reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Phase => "phase",
            EventKind::Baseline => "baseline",
            EventKind::Inject => "inject",
            EventKind::Revert => "revert",
            EventKind::Stop => "stop",
            EventKind::Warning => "warning",
            EventKind::Error => "error",
            EventKind::Cluster => "cluster",
        }
    }
}

/// Figures per phase of the run. `baseline`: warm-up end to the first injection; `fault`: first
/// injection until the last fault has recovered and held; `recovery`: from there to the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Phases {
    /// Before any fault; null when empty.
    pub baseline: Option<PhaseStats>,
    /// While faults acted and until they recovered; null without faults.
    pub fault: Option<PhaseStats>,
    /// After the last fault recovered; null when empty.
    pub recovery: Option<PhaseStats>,
}

/// A `stop_when` condition that ended the run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopReport {
    /// The condition and the value that crossed it.
    pub condition: String,
    /// When it held long enough (ms since run start).
    pub triggered_at_ms: f64,
    /// When every active fault was reverted (ms since run start).
    pub reverted_at_ms: f64,
    /// From the condition to the last revert (ms).
    pub time_to_revert_ms: f64,
}

// Wire counterparts of other modules' types. Field names, order and types are those the
// internal types were serialized with when report.json borrowed them: keep them so.

/// One concrete thing a fault acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetReport {
    /// What kind of thing: `process`, `pod`, `deployment`, `node`, `proxy`.
    pub kind: String,
    /// Its identity: a pid, `namespace/name`, a proxy name.
    pub id: String,
    /// A human description (a process's command line).
    pub description: String,
}

impl std::fmt::Display for TargetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.kind, self.id, self.description)
    }
}

impl From<&fault::Target> for TargetReport {
    fn from(t: &fault::Target) -> Self {
        Self {
            kind: t.kind.clone(),
            id: t.id.clone(),
            description: t.description.clone(),
        }
    }
}

/// Impact and recovery figures of a fault (definitions in the README and in `analysis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecoveryReport {
    /// From injection to the first bad request; null when none was seen.
    pub time_to_impact_ms: Option<f64>,
    /// From the fault's end (injection, for instantaneous faults) to the recovery instant;
    /// null when it did not recover (see `reason`).
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

impl From<&analysis::Recovery> for RecoveryReport {
    fn from(r: &analysis::Recovery) -> Self {
        Self {
            time_to_impact_ms: r.time_to_impact_ms,
            time_to_recover_ms: r.time_to_recover_ms,
            recovered_at_ms: r.recovered_at_ms,
            reason: r.reason.clone(),
            requests: r.requests,
            failed_requests: r.failed_requests,
            availability: r.availability,
        }
    }
}

/// The SLO checked over the requests of a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SloCheckReport {
    /// Did every threshold hold? False when there was no request to judge by.
    pub held: bool,
    /// Requests judged (missed included).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// ok / requests.
    pub success_rate: Option<f64>,
    /// Median latency (ms) of the successful requests: what the SLO's latency thresholds judge
    /// (reports written before `ok_latency` existed hold all sent requests' here).
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

impl From<&analysis::SloCheck> for SloCheckReport {
    fn from(c: &analysis::SloCheck) -> Self {
        Self {
            held: c.held,
            requests: c.requests,
            ok: c.ok,
            success_rate: c.success_rate,
            p50_ms: c.p50_ms,
            p90_ms: c.p90_ms,
            p99_ms: c.p99_ms,
            max_ms: c.max_ms,
            violations: c.violations.clone(),
        }
    }
}

/// One probe's results over a span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeReport {
    /// Probe name.
    pub name: String,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
}

impl From<&probe::ProbeSummary> for ProbeReport {
    fn from(p: &probe::ProbeSummary) -> Self {
        Self {
            name: p.name.clone(),
            passed: p.passed,
            failed: p.failed,
            last_error: p.last_error.clone(),
        }
    }
}

/// Figures of the requests completing in one phase of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseStats {
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
    /// Latency percentiles (ms) of every request sent, from their intended start: successes and
    /// failures mixed. Latency gates read `ok_latency`.
    pub p50_ms: Option<f64>,
    /// 90th percentile (ms).
    pub p90_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// Maximum (ms).
    pub max_ms: Option<f64>,
    /// Latency of the successful requests alone (what users who were served waited for; what
    /// SLOs, gates and the HTML chart read). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_latency: Option<LatencyReport>,
    /// Latency of the failed requests that were sent (a timeout counts at its timeout; missed
    /// requests have none). Absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_latency: Option<LatencyReport>,
}

impl From<&analysis::SpanStats> for PhaseStats {
    fn from(s: &analysis::SpanStats) -> Self {
        Self {
            from_ms: s.from_ms,
            to_ms: s.to_ms,
            requests: s.requests,
            failed: s.failed,
            error_rate: s.error_rate,
            p50_ms: s.p50_ms,
            p90_ms: s.p90_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            ok_latency: Some((&s.ok_latency).into()),
            failed_latency: Some((&s.failed_latency).into()),
        }
    }
}

impl PhaseStats {
    /// The latency users waited for: the successful requests' (the mixed figures of a report
    /// written before `ok_latency` existed).
    pub fn success_latency(&self) -> LatencyReport {
        self.ok_latency.unwrap_or(LatencyReport {
            count: self.requests,
            p999_ms: None,
            ..LatencyReport::mixed(self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms)
        })
    }
}

impl Totals {
    /// The latency users waited for over the run: the successful requests' (the mixed figures
    /// of a report written before `ok_latency` existed).
    pub fn success_latency(&self) -> LatencyReport {
        self.ok_latency.unwrap_or(LatencyReport {
            count: self.sent,
            p999_ms: self.p999_ms,
            ..LatencyReport::mixed(self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms)
        })
    }
}

impl WindowReport {
    /// The latency users waited for in this window: the successful requests' (the mixed
    /// figures of a report written before `ok_latency` existed).
    pub fn success_latency(&self) -> LatencyReport {
        self.ok_latency.unwrap_or(LatencyReport {
            count: self.sent,
            p999_ms: None,
            ..LatencyReport::mixed(self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms)
        })
    }
}

/// Latency percentiles (ms, from each request's intended start) of one class of requests:
/// the successful ones, or the failed ones that were sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LatencyReport {
    /// Requests counted.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile (whole-run figures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
}

impl From<&crate::metrics::LatencySummary> for LatencyReport {
    fn from(s: &crate::metrics::LatencySummary) -> Self {
        Self {
            count: s.count,
            p50_ms: s.p50_us.map(analysis::us_to_ms),
            p90_ms: s.p90_us.map(analysis::us_to_ms),
            p99_ms: s.p99_us.map(analysis::us_to_ms),
            p999_ms: None,
            max_ms: s.max_us.map(analysis::us_to_ms),
        }
    }
}

impl LatencyReport {
    /// The mixed figures of a report written before `ok_latency` existed, read as the best
    /// that report knows of what users waited for.
    fn mixed(p50: Option<f64>, p90: Option<f64>, p99: Option<f64>, max: Option<f64>) -> Self {
        Self {
            count: 0,
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
            p999_ms: None,
            max_ms: max,
        }
    }

    /// The figures of a whole-run histogram (µs), with the 99.9th percentile.
    pub fn of_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        let q = |q: f64| (!h.is_empty()).then(|| analysis::us_to_ms(h.value_at_quantile(q)));
        Self {
            count: h.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: (!h.is_empty()).then(|| analysis::us_to_ms(h.max())),
        }
    }
}

/// The resolved plan, as run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PlanReport {
    /// Seed.
    pub seed: u64,
    /// Run length (ms).
    pub duration_ms: u64,
    /// Warm-up (ms).
    pub warmup_ms: u64,
    /// Hold period (ms).
    pub hold_ms: u64,
    /// The load as written in the experiment, with secret header values and URL credentials
    /// redacted; null without load.
    pub load: Option<serde_json::Value>,
    /// The SLO.
    pub slo: SloReport,
    /// Faults in firing order: `name`, `kind`, `at_ms`, `duration_ms` and the kind's `spec` as
    /// written (keys in alphabetical order).
    pub faults: Vec<serde_json::Value>,
}

impl From<&plan::PlanSummary> for PlanReport {
    fn from(p: &plan::PlanSummary) -> Self {
        Self {
            seed: p.seed,
            duration_ms: p.duration_ms,
            warmup_ms: p.warmup_ms,
            hold_ms: p.hold_ms,
            load: p.load.clone(),
            slo: SloReport::from(&p.slo),
            faults: p.faults.clone(),
        }
    }
}

/// The SLO of the hypothesis, each threshold as the experiment file reads (`">= 99.5%"`,
/// `"< 200ms"`); null when not set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SloReport {
    /// Share of successful requests.
    pub success_rate: Option<String>,
    /// Median latency.
    pub p50: Option<String>,
    /// 90th percentile latency.
    pub p90: Option<String>,
    /// 99th percentile latency.
    pub p99: Option<String>,
    /// Maximum latency.
    pub max: Option<String>,
}

impl From<&experiment::Slo> for SloReport {
    fn from(s: &experiment::Slo) -> Self {
        Self {
            success_rate: s.success_rate.map(|t| t.to_string()),
            p50: s.p50.map(|t| t.to_string()),
            p90: s.p90.map(|t| t.to_string()),
            p99: s.p99.map(|t| t.to_string()),
            max: s.max.map(|t| t.to_string()),
        }
    }
}
