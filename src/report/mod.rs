//! Reports. `report.json` is the complete, versioned record of a run ([`Report`]); every other
//! format renders from it (so `rattle report` can re-render an old run). The keys of
//! [`Report`] are relied upon by other tools: add, never rename.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::{Recovery, SloCheck};
use crate::fault::Target;
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
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The hypothesis held and every fault recovered.
    Pass,
    /// The hypothesis failed (not steady before, not recovered, not steady after).
    Fail,
    /// The run was stopped; every fault was reverted.
    Aborted,
    /// The environment or a fault went wrong (target not found, setup failed, revert failed).
    Error,
}

/// The experiment's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentRef {
    /// Name.
    pub name: String,
    /// Path of the file as given.
    pub file: String,
    /// Description.
    pub description: Option<String>,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultReport {
    /// Name.
    pub name: String,
    /// Kind key.
    pub kind: String,
    /// What it acted on.
    pub targets: Vec<Target>,
    /// Injection, ms since run start; null if it never fired.
    pub injected_at_ms: Option<f64>,
    /// Revert, ms since run start; null for instantaneous faults or if never reverted.
    pub reverted_at_ms: Option<f64>,
    /// What went wrong while resolving, injecting or reverting.
    pub error: Option<String>,
    /// Impact and recovery figures; null if it never fired.
    pub recovery: Option<RecoveryReport>,
}

/// Recovery figures of a fault (see `analysis` for the definitions).
pub type RecoveryReport = Recovery;

/// One window of the load.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteadyCheck {
    /// Did the hypothesis hold (SLO and every probe)?
    pub held: bool,
    /// Span start, ms since run start.
    pub from_ms: u64,
    /// Span end.
    pub to_ms: u64,
    /// The SLO check; null without load.
    pub slo: Option<SloCheck>,
    /// Probe results in the span.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteadyState {
    /// Over the baseline, before any fault.
    pub before: Option<SteadyCheck>,
    /// Over the last hold period of the run.
    pub after: Option<SteadyCheck>,
}

/// One event of the run's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// ms since run start.
    pub t_ms: f64,
    /// What happened: `phase`, `inject`, `revert`, `error`, `note`.
    pub event: String,
    /// Details.
    pub detail: String,
}

/// The complete record of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// A `stop_when` condition that ended the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Writes report.json and summary.md into `dir` (created if needed). Returns the files.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let json = serde_json::to_string_pretty(report)?;
    for (name, content) in [("report.json", json), ("summary.md", markdown(report))] {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        files.push(path);
    }
    Ok(files)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "–".into())
}

fn opt_pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.3}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// summary.md: short, tables; fits a CI step summary or a pull-request comment.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let icon = match r.verdict {
        Verdict::Pass => "✅ PASS",
        Verdict::Fail => "❌ FAIL",
        Verdict::Aborted => "⏹ ABORTED",
        Verdict::Error => "⚠️ ERROR",
    };
    let _ = writeln!(s, "# rattle: {} — {}\n", r.experiment.name, icon);
    let _ = writeln!(s, "{}\n", r.reason);
    let _ = writeln!(
        s,
        "Started {} · ran {:.1} s · seed `{}` · exit code {}\n",
        r.started_at,
        r.duration_ms as f64 / 1000.0,
        r.seed,
        r.exit_code
    );
    if !r.faults.is_empty() {
        let _ = writeln!(s, "## Faults\n");
        let _ = writeln!(
            s,
            "| fault | kind | targets | injected | time to impact | time to recover | failed | availability |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for f in &r.faults {
            let targets = f
                .targets
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let (tti, ttr, failed, avail) = match &f.recovery {
                Some(rec) => (
                    opt_ms(rec.time_to_impact_ms),
                    rec.time_to_recover_ms
                        .map(|v| format!("{v:.1} ms"))
                        .unwrap_or_else(|| "not recovered".into()),
                    rec.failed_requests.to_string(),
                    opt_pct(rec.availability),
                ),
                None => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            let injected = f.injected_at_ms.map(|t| format!("{:.3} s", t / 1000.0));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                f.kind,
                if targets.is_empty() {
                    "–".into()
                } else {
                    targets
                },
                injected.unwrap_or_else(|| "not fired".into()),
                tti,
                ttr,
                failed,
                avail
            );
            if let Some(e) = &f.error {
                let _ = writeln!(s, "\n> **{}**: {}\n", f.name, e);
            }
        }
        let _ = writeln!(s);
    }
    let t = &r.totals;
    let _ = writeln!(s, "## Load\n");
    let _ = writeln!(
        s,
        "| requests | ok | failed | missed | availability | rate | p50 | p90 | p99 | max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        t.requests,
        t.ok,
        t.failed,
        t.missed,
        opt_pct(t.availability),
        t.rate_per_sec
            .map(|v| format!("{v:.1}/s"))
            .unwrap_or_else(|| "–".into()),
        opt_ms(t.p50_ms),
        opt_ms(t.p90_ms),
        opt_ms(t.p99_ms),
        opt_ms(t.max_ms)
    );
    if !t.errors.is_empty() {
        let errs = t
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "Errors by class: {errs}\n");
    }
    let _ = writeln!(s, "## Steady state\n");
    let _ = writeln!(s, "| check | span | held | success rate | p99 | notes |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (name, c) in [
        ("before", &r.steady_state.before),
        ("after", &r.steady_state.after),
    ] {
        match c {
            None => {
                let _ = writeln!(s, "| {name} | – | not checked | – | – | |");
            }
            Some(c) => {
                let notes = c.problems();
                let _ = writeln!(
                    s,
                    "| {name} | {:.1}–{:.1} s | {} | {} | {} | {} |",
                    c.from_ms as f64 / 1000.0,
                    c.to_ms as f64 / 1000.0,
                    if c.held { "yes" } else { "**no**" },
                    opt_pct(c.slo.as_ref().and_then(|s| s.success_rate)),
                    opt_ms(c.slo.as_ref().and_then(|s| s.p99_ms)),
                    notes.join("; ")
                );
            }
        }
    }
    s
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
