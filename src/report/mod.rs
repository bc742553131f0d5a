//! Reports: a model and its renderers.
//!
//! The model (`model.rs`, re-exported here) is report.json's own types, [`Report`] and its
//! parts. The runner converts its figures into them (`From<&internal>`: a fault's target,
//! `analysis`'s recovery, SLO and phase figures, the probes' summaries, the plan), so that no
//! other module's type is part of the file, and the JSON Schema (`rattle schema --report`,
//! [`json_schema`]) is derived from the model itself. report.json is the complete, versioned
//! record of a run ([`SCHEMA_VERSION`]); other tools rely on its keys: add, never rename or
//! reorder; a new key has a serde default so that older reports still read.
//!
//! Every format renders from a [`Report`] alone (so `rattle report` can render an old run
//! again) behind one trait, [`Renderer`]: its `--format` name, its file in a run's directory,
//! the label `rattle run` prints, a help line and `render`. One table, [`FORMATS`], lists them
//! (`json`, `markdown`, `html`, `junit`) and drives [`write()`], `rattle report --format` and its
//! help, the files printed after a run, and the file names a game day's index links to. A new
//! format is one file here implementing [`Renderer`], its `mod` line and one line in
//! [`FORMATS`].
//!
//! Beside them: the gates are judged from the report ([`gates`], [`judge`]), the score too
//! ([`score`]), the checks every format lists ([`checks`]), and two reports can be compared
//! ([`compare`]).

mod chart;
pub mod cluster;
pub mod compare;
pub mod gates;
pub mod html;
pub mod json;
pub mod junit;
mod lag;
pub mod markdown;
mod model;
pub mod score;

pub use gates::{CheckStatus, GateResult};
pub use markdown::markdown;
pub use model::ClusterEventReport;
pub use model::{
    EffectReport, EventKind, ExperimentRef, FaultReport, LatencyReport, PhaseStats, Phases,
    PlanReport, ProbeReport, RecoveryReport, Report, RequestFaultReport, RequestReport,
    RequestSloCheck, SloCheckReport, SloReport, SteadyCheck, SteadyState, StopReport, TargetReport,
    TimelineEvent, Totals, WindowReport,
};
pub use score::Score;

use std::path::{Path, PathBuf};

use crate::outcome::Outcome;

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

impl Report {
    /// How the run ended, from its exit code (the verdict follows from it). A report whose
    /// code rattle never writes reads as its verdict's closest outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome::from_exit_code(self.exit_code).unwrap_or(match self.verdict {
            Verdict::Pass => Outcome::Pass,
            Verdict::Fail => Outcome::Fail,
            Verdict::Aborted => Outcome::Aborted,
            Verdict::Error => Outcome::BadInput,
            Verdict::Inconclusive => Outcome::Inconclusive,
        })
    }

    /// Records how the run ended: the verdict and the exit code, from one value.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.verdict = outcome.verdict();
        self.exit_code = outcome.exit_code();
    }
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

/// One output format of a report: the `--format` value `rattle report` takes, the file a run
/// writes it to, and how it renders. Every format renders from [`Report`] alone, so an old
/// run's report.json can be rendered again. A new format is one file implementing this trait
/// and one line in [`FORMATS`].
pub trait Renderer: Sync {
    /// The `--format` value, e.g. `markdown`.
    fn name(&self) -> &'static str;
    /// The file's name in a run's directory, e.g. `summary.md`.
    fn file(&self) -> &'static str;
    /// The word `rattle run` prints before the file's path when the run ends, e.g. `summary`.
    fn label(&self) -> &'static str;
    /// One line for `rattle report --help`.
    fn help(&self) -> &'static str;
    /// Renders the report in this format.
    fn render(&self, report: &Report) -> Result<String, ReportError>;
}

impl std::fmt::Debug for dyn Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every report format, in the order a run writes their files and `rattle run` lists them.
/// Drives [`write()`], `rattle report --format` and its help, the file list printed after a run
/// and the links of a game day's index.
pub static FORMATS: &[&dyn Renderer] = &[
    &json::Json,         // report.json
    &markdown::Markdown, // summary.md
    &html::Html,         // report.html
    &junit::Junit,       // junit.xml
];

/// The format whose `--format` value is `name`.
pub fn format(name: &str) -> Option<&'static dyn Renderer> {
    FORMATS.iter().copied().find(|f| f.name() == name)
}

/// Writes every format of [`FORMATS`] into `dir` (created if needed). Returns the files.
///
/// Each file is written to a new temporary file beside it, fsynced and renamed over
/// ([`crate::fsutil::write_atomic`]): a symlink planted at its place is replaced, never
/// followed, and a full disk leaves the file absent or as it was, never empty or torn; the
/// error names the file.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for format in FORMATS {
        let path = dir.join(format.file());
        let content = format.render(report)?;
        // The run's secret values (issue #15) never reach a file, whatever field holds them.
        let content = crate::redact::redact_secrets(&content);
        crate::fsutil::write_atomic(&path, content.as_bytes()).map_err(|source| {
            ReportError::Write {
                path: path.clone(),
                source,
            }
        })?;
        files.push(path);
    }
    Ok(files)
}

/// The directory reports go to when no `--out` is given: `reports/<name>-<timestamp>`.
const DEFAULT_PARENT: &str = "reports";

/// Where a run's reports go without `--out`: `reports/<name>-<UTC timestamp>/`.
pub fn default_dir(name: &str, started_at_unix_ms: i64) -> PathBuf {
    Path::new(DEFAULT_PARENT).join(dir_name(name, started_at_unix_ms))
}

/// Preflight of [`write()`]: before a run touches anything, the directory its reports will go
/// to (`out_dir`, else [`DEFAULT_PARENT`] that will hold `<name>-<timestamp>`) is created and
/// takes a file (a probe written and removed: permission bits lie to root and to read-only
/// mounts), and the directory's name fits NAME_MAX.
pub fn check_writable(out_dir: Option<&Path>, name: &str) -> Result<(), ReportError> {
    let dir = match out_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let longest = dir_name(name, 0);
            if longest.len() > 255 {
                return Err(ReportError::Write {
                    path: Path::new(DEFAULT_PARENT).join(longest),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the report directory's name is longer than 255 bytes",
                    ),
                });
            }
            PathBuf::from(DEFAULT_PARENT)
        }
    };
    let err = |source| ReportError::Write {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    crate::fsutil::probe_writable(&dir).map_err(err)
}

/// Reads a report.json written by this or an older rattle of the same format version. An
/// unknown `schema_version` is refused with its number, before the rest is looked at.
pub fn read(path: &Path) -> Result<Report, ReportError> {
    // Bounded and regular files only (issue #19): far above a long run's report.
    let text = crate::fsutil::read_text_bounded(path, 256 * 1024 * 1024).map_err(|source| {
        ReportError::Read {
            path: path.to_path_buf(),
            source,
        }
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
    // Prometheus gates were measured against the server after the run, not from the report:
    // kept as measured.
    let measured_outside: Vec<GateResult> = report
        .gates
        .iter()
        .filter(|g| g.name.starts_with("prometheus."))
        .cloned()
        .collect();
    report.gates = gates::evaluate(gates, report);
    report.gates.extend(measured_outside);
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
                let figures = c.requests.iter().fold(figures, |f, q| {
                    format!(
                        "{f}; {}: success rate {}, p99 {}",
                        q.name,
                        fmt_pct(q.slo.success_rate),
                        fmt_ms(q.slo.p99_ms)
                    )
                });
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
    // An inconclusive run's checks may all have held, but on figures that measure rattle, not
    // the service: without a failing case here, a CI system reading junit.xml would show it
    // green while the run exits 5.
    if r.verdict == Verdict::Inconclusive {
        out.push(Check {
            group: "hypothesis",
            name: "load generator kept its schedule".into(),
            status: CheckStatus::Fail,
            message: r.reason.clone(),
        });
    }
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
