//! Reports. `report.json` is the complete, versioned record of a run ([`Report`]); every other
//! format renders from it (so `rattle report` can re-render an old run): `summary.md`
//! ([`markdown`]), `junit.xml` ([`junit`]), `report.html` ([`html`]). Gates are judged from it
//! ([`gates`]), the score too ([`score`]), and two of them can be compared ([`compare`]).
//! The keys of [`Report`] are relied upon by other tools: add, never rename; a new key has a
//! serde default so that older reports still read.

mod chart;
pub mod compare;
pub mod gates;
pub mod html;
pub mod junit;
pub mod markdown;
mod schema;
pub mod score;

pub use gates::{CheckStatus, GateResult};
pub use markdown::markdown;
pub use score::Score;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::{Recovery, SloCheck, SpanStats};
use crate::fault::Target;
use crate::outcome::Outcome;
use crate::plan::PlanSummary;
use crate::probe::ProbeSummary;

/// Version of the report.json format.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors of writing reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be serialized.
    #[error("serializing the report: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A report file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A report file is not a report.json this rattle understands.
    #[error("{}: not a rattle report.json: {message}", path.display())]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A report of a format version this rattle does not read.
    #[error(
        "{}: report schema_version {found} is not supported: this rattle ({}) reads version {SCHEMA_VERSION}",
        path.display(), env!("CARGO_PKG_VERSION")
    )]
    UnknownVersion {
        /// The path.
        path: PathBuf,
        /// The version found.
        found: String,
    },
    /// The JUnit XML could not be written.
    #[error("rendering junit.xml: {0}")]
    Junit(String),
    /// The HTML template failed.
    #[error("rendering report.html: {0}")]
    Html(String),
}

pub use crate::outcome::Verdict;

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
    #[schemars(with = "Vec<schema::TargetSchema>")]
    pub targets: Vec<Target>,
    /// Injection, ms since run start; null if it never fired.
    pub injected_at_ms: Option<f64>,
    /// Revert, ms since run start; null for instantaneous faults or if never reverted.
    pub reverted_at_ms: Option<f64>,
    /// What went wrong while resolving, injecting or reverting.
    pub error: Option<String>,
    /// Impact and recovery figures; null if it never fired.
    #[schemars(with = "Option<schema::RecoverySchema>")]
    pub recovery: Option<RecoveryReport>,
}

/// Recovery figures of a fault (see `analysis` for the definitions).
pub type RecoveryReport = Recovery;

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
    /// Not sent on time (in-flight cap).
    pub missed: u64,
    /// Latency percentiles (ms), from intended start.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Maximum.
    pub max_ms: Option<f64>,
    /// Failures by class.
    pub errors: BTreeMap<String, u64>,
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
    /// Latency percentiles (ms).
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
    #[schemars(with = "Option<schema::SloCheckSchema>")]
    pub slo: Option<SloCheck>,
    /// Probe results in the span.
    #[schemars(with = "Vec<schema::ProbeSummarySchema>")]
    pub probes: Vec<ProbeSummary>,
}

impl SteadyCheck {
    /// Every reason the check did not hold: SLO violations, then failing probes.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .slo
            .as_ref()
            .map(|s| s.violations.clone())
            .unwrap_or_default();
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
        }
    }
}

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
    #[schemars(with = "Option<schema::PlanSummarySchema>")]
    pub plan: Option<PlanSummary>,
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
}

impl Report {
    /// How the run ended, from its exit code (the verdict follows from it). A report whose
    /// code rattle never writes reads as its verdict's closest outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome::from_exit_code(self.exit_code).unwrap_or(match self.verdict {
            Verdict::Pass => Outcome::Pass,
            Verdict::Fail => Outcome::Fail,
            Verdict::Aborted => Outcome::Aborted,
            Verdict::Error => Outcome::BadInput,
        })
    }

    /// Records how the run ended: the verdict and the exit code, from one value.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.verdict = outcome.verdict();
        self.exit_code = outcome.exit_code();
    }
}

/// Figures per phase of the run. `baseline`: warm-up end to the first injection; `fault`: first
/// injection until the last fault has recovered and held; `recovery`: from there to the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Phases {
    /// Before any fault; null when empty.
    pub baseline: Option<SpanStats>,
    /// While faults acted and until they recovered; null without faults.
    pub fault: Option<SpanStats>,
    /// After the last fault recovered; null when empty.
    pub recovery: Option<SpanStats>,
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

/// A report directory name: `<name>-<UTC timestamp>`.
pub fn dir_name(name: &str, started_at_unix_ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(started_at_unix_ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| started_at_unix_ms.to_string());
    format!("{name}-{}", ts.replace('.', ""))
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// The files a run writes, in this order.
pub const FILES: [&str; 4] = ["report.json", "summary.md", "junit.xml", "report.html"];

/// Writes report.json, summary.md, junit.xml and report.html into `dir` (created if needed).
/// Returns the files.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for (name, format) in
        FILES
            .iter()
            .zip([Format::Json, Format::Markdown, Format::Junit, Format::Html])
    {
        let path = dir.join(name);
        let content = render(report, format)?;
        std::fs::write(&path, content).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(files)
}

/// An output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// report.json.
    Json,
    /// summary.md.
    Markdown,
    /// junit.xml.
    Junit,
    /// report.html.
    Html,
}

/// Renders a report in one format.
pub fn render(report: &Report, format: Format) -> Result<String, ReportError> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Markdown => markdown(report),
        Format::Junit => junit::junit(report)?,
        Format::Html => html::html(report)?,
    })
}

/// Reads a report.json written by this or an older rattle of the same format version. An
/// unknown `schema_version` is refused with its number, before the rest is looked at.
pub fn read(path: &Path) -> Result<Report, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_json(&text).map_err(|e| match e {
        FromJsonError::Version(found) => ReportError::UnknownVersion {
            path: path.to_path_buf(),
            found,
        },
        FromJsonError::Invalid(message) => ReportError::Invalid {
            path: path.to_path_buf(),
            message,
        },
    })
}

enum FromJsonError {
    Version(String),
    Invalid(String),
}

fn from_json(text: &str) -> Result<Report, FromJsonError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| FromJsonError::Invalid(e.to_string()))?;
    match value.get("schema_version") {
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(v) => return Err(FromJsonError::Version(v.to_string())),
        None => {
            return Err(FromJsonError::Invalid(
                "no `schema_version` key (is this a report.json?)".into(),
            ));
        }
    }
    let mut report: Report =
        serde_json::from_value(value).map_err(|e| FromJsonError::Invalid(e.to_string()))?;
    if report.score.is_none() {
        report.score = Some(score::score(&report));
    }
    Ok(report)
}

/// The JSON Schema (draft-07) of report.json.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<Report>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

/// The phase spans of a run, from its report alone: the baseline from the warm-up's end, the
/// fault phase from the first injection until every fault has recovered and held, the
/// recovery phase from there to the end of load.
pub fn phase_spans(r: &Report) -> crate::analysis::PhaseSpans {
    let us = |ms: f64| (ms.max(0.0) * 1000.0).round() as u64;
    let hold_ms = r.plan.as_ref().map_or(0, |p| p.hold_ms);
    let warmup_ms = r.plan.as_ref().map_or(0, |p| p.warmup_ms);
    let faults: Vec<(u64, Option<u64>)> = r
        .faults
        .iter()
        .filter_map(|f| {
            let injected = f.injected_at_ms?;
            let settled = f
                .recovery
                .as_ref()
                .and_then(|rec| rec.recovered_at_ms)
                .map(|t| us(t) + hold_ms * 1000);
            Some((us(injected), settled))
        })
        .collect();
    crate::analysis::phase_spans(warmup_ms * 1000, &faults, r.duration_ms * 1000)
}

/// Fills what is judged after the figures: the gates (a missed gate turns a pass into a fail,
/// exit 1) and the score. Pure: reads only the report and the gates.
pub fn judge(report: &mut Report, gates: &crate::experiment::gates::Gates) {
    report.gates = gates::evaluate(gates, report);
    if report.verdict == Verdict::Pass {
        let missed: Vec<&GateResult> = report
            .gates
            .iter()
            .filter(|g| g.status == CheckStatus::Fail)
            .collect();
        if let Some(first) = missed.first() {
            report.reason = match missed.len() {
                1 => format!("gate missed: {}", first.message),
                n => format!("{n} gates missed; first: {}", first.message),
            };
            report.set_outcome(Outcome::Fail);
        }
    }
    report.score = Some(score::score(report));
}

/// One check of the run as JUnit, the summary and the HTML show it: a hypothesis check (steady
/// state before and after, each fault's recovery) or a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// `hypothesis` or `gate`.
    pub group: &'static str,
    /// Short name, e.g. `steady state before`, `recovery of kill-one`, `recovery_time[kill-one]`.
    pub name: String,
    /// The outcome.
    pub status: CheckStatus,
    /// The measured value against the expectation, or why it was skipped.
    pub message: String,
}

/// Every check of the run: hypothesis checks first, then the gates.
pub fn checks(r: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    let steady = |name: &str, c: &Option<SteadyCheck>, missing: &str| -> Check {
        match c {
            Some(c) => {
                let span = format!(
                    "{:.1}–{:.1} s",
                    c.from_ms as f64 / 1000.0,
                    c.to_ms as f64 / 1000.0
                );
                let figures = c
                    .slo
                    .as_ref()
                    .map(|s| {
                        format!(
                            "success rate {}, p99 {}",
                            fmt_pct(s.success_rate),
                            fmt_ms(s.p99_ms)
                        )
                    })
                    .unwrap_or_else(|| "probes only".into());
                if c.held {
                    Check {
                        group: "hypothesis",
                        name: name.into(),
                        status: CheckStatus::Pass,
                        message: format!("held over {span}: {figures}"),
                    }
                } else {
                    Check {
                        group: "hypothesis",
                        name: name.into(),
                        status: CheckStatus::Fail,
                        message: format!("did not hold over {span}: {}", c.problems().join("; ")),
                    }
                }
            }
            None => Check {
                group: "hypothesis",
                name: name.into(),
                status: CheckStatus::Skipped,
                message: missing.into(),
            },
        }
    };
    if r.steady_state.before.is_some() || !r.faults.is_empty() {
        out.push(steady(
            "steady state before",
            &r.steady_state.before,
            "not checked",
        ));
    }
    for f in &r.faults {
        let name = format!("recovery of {}", f.name);
        let (status, message) = match (&f.recovery, f.injected_at_ms) {
            (Some(rec), _) => match rec.time_to_recover_ms {
                Some(t) => (
                    CheckStatus::Pass,
                    format!(
                        "recovered after {}; impact after {}; {} failed of {} requests",
                        fmt_ms(Some(t)),
                        rec.time_to_impact_ms
                            .map(|v| fmt_ms(Some(v)))
                            .unwrap_or_else(|| "never".into()),
                        rec.failed_requests,
                        rec.requests
                    ),
                ),
                None => (
                    CheckStatus::Fail,
                    rec.reason.clone().unwrap_or_else(|| "not recovered".into()),
                ),
            },
            (None, Some(_)) => match &f.error {
                Some(e) => (CheckStatus::Fail, e.clone()),
                None => (
                    CheckStatus::Skipped,
                    "no load: recovery is not measured".into(),
                ),
            },
            (None, None) => match &f.error {
                Some(e) => (CheckStatus::Fail, format!("not fired: {e}")),
                None => (CheckStatus::Skipped, "not fired".into()),
            },
        };
        out.push(Check {
            group: "hypothesis",
            name,
            status,
            message,
        });
    }
    out.push(steady(
        "steady state after",
        &r.steady_state.after,
        "not checked: the run did not complete",
    ));
    for g in &r.gates {
        out.push(Check {
            group: "gate",
            name: g.name.clone(),
            status: g.status,
            message: g.message.clone(),
        });
    }
    out
}

/// `12.3 ms`, or `–`.
pub(crate) fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "–".into())
}

/// `99.500%` from a fraction, or `–`.
pub(crate) fn fmt_pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.3}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(dir_name("x", 1_700_000_000_123), "x-20231114T221320123Z");
    }
}
