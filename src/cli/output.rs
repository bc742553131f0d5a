//! Machine-readable output of `validate`, `compare`, `run --dry-run` and `recover`: the wire
//! shapes (serde structs owned here, the one place that speaks this JSON, converted from the
//! internal types so those can change without breaking a consumer), and `validate`'s GitHub
//! workflow-command annotations. Every document carries `"version": 1`; fields are only ever
//! added within a version. The shapes are documented in the README ("CLI conventions").
//!
//! Text output stays what it was; JSON goes to stdout as one pretty-printed document, through
//! the same escaping as every other line (`outln!`), which keeps JSON valid and equal.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Serialize;

use crate::experiment::{self, Diagnostic, ExperimentError};
use crate::fault::{FaultError, Target};
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::report::compare::{Delta, Unit};

/// The version of every JSON document below.
pub const JSON_VERSION: u32 = 1;

/// `--format` of `compare`, `run --dry-run` and `recover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document on stdout (shape in the README).
    Json,
}

/// `--format` of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ValidateFormat {
    /// `ok:` lines on stdout, problems on stderr.
    #[default]
    Text,
    /// One JSON document on stdout: every file with its problems.
    Json,
    /// `::error file=…,line=…,col=…,title=…::message` lines on stdout, which GitHub Actions
    /// shows as annotations on the lines at fault.
    Github,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => crate::outln!("{s}"),
        // Only non-string map keys or a failing Serialize impl could do this; none here.
        Err(e) => crate::errln!("error: cannot write JSON: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// validate

/// One problem in a file, as `validate --format json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonDiagnostic {
    /// The file, as given on the command line.
    pub file: String,
    /// 1-based line; `null` when the problem has no place (an unreadable file).
    pub line: Option<u64>,
    /// 1-based column; `null` when unknown.
    pub column: Option<u64>,
    /// The field path, like `faults[1].at`; `null` for the whole file.
    pub field: Option<String>,
    /// What is wrong (secrets redacted, as in text output).
    pub message: String,
}

/// One file of `validate --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonFile {
    /// The file, as given.
    pub file: String,
    /// True when it is a valid experiment.
    pub valid: bool,
    /// The experiment's name, when valid.
    pub name: Option<String>,
    /// How many faults it has, when valid.
    pub faults: Option<usize>,
    /// Every problem found (empty when valid).
    pub diagnostics: Vec<JsonDiagnostic>,
}

/// The document of `validate --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonValidate {
    /// [`JSON_VERSION`].
    pub version: u32,
    /// True when every file is valid (exit 0; else exit 2).
    pub valid: bool,
    /// The files, in the order given.
    pub files: Vec<JsonFile>,
}

fn nonzero(n: u64) -> Option<u64> {
    (n > 0).then_some(n)
}

/// The problems of a failed load, one object each.
pub fn diagnostics_of(path: &Path, e: &ExperimentError) -> Vec<JsonDiagnostic> {
    let file = path.display().to_string();
    let whole = |message: String| JsonDiagnostic {
        file: file.clone(),
        line: None,
        column: None,
        field: None,
        message,
    };
    match e {
        ExperimentError::Read { source, .. } => vec![whole(format!("cannot read: {source}"))],
        ExperimentError::TooLarge { size, .. } => vec![whole(format!(
            "file is {size} bytes; input files are limited to 1 MiB"
        ))],
        ExperimentError::Invalid { diagnostics, .. } => diagnostics
            .iter()
            .map(|d: &Diagnostic| JsonDiagnostic {
                file: file.clone(),
                line: nonzero(d.line),
                column: nonzero(d.line).and(nonzero(d.column)),
                field: (!d.field.is_empty()).then(|| d.field.clone()),
                message: d.message.clone(),
            })
            .collect(),
    }
}

/// Escapes the message of a workflow command (GitHub's rules: `%`, CR, LF).
pub fn github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value of a workflow command: as [`github_data`], and `:` and `,`, which
/// would otherwise end the value.
pub fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error ...::message` line for a problem.
pub fn github_annotation(d: &JsonDiagnostic) -> String {
    let mut props = vec![format!("file={}", github_property(&d.file))];
    if let Some(line) = d.line {
        props.push(format!("line={line}"));
        if let Some(col) = d.column {
            props.push(format!("col={col}"));
        }
    }
    let title = match &d.field {
        Some(f) => format!("rattle: invalid field {f}"),
        None => "rattle: invalid experiment".to_string(),
    };
    props.push(format!("title={}", github_property(&title)));
    format!("::error {}::{}", props.join(","), github_data(&d.message))
}

/// Runs `rattle validate`: every file is loaded (a bad one does not stop the others), and
/// within a file every meaning problem is listed. A syntax or shape error (bad YAML, an
/// unknown field, a value of the wrong type) ends that file's checks: the parser cannot
/// resume past it, and meaning checks need the whole file.
pub fn validate_cmd(
    files: &[PathBuf],
    vars: &super::vars::VarArgs,
    format: ValidateFormat,
) -> Outcome {
    let Some(vars) = vars.vars() else {
        return Outcome::BadInput;
    };
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let loaded = experiment::load_with(f, &vars);
        tracing::debug!(file = %f.display(), valid = loaded.is_ok(), "validated");
        let entry = match &loaded {
            Ok(e) => JsonFile {
                file: f.display().to_string(),
                valid: true,
                name: Some(e.name.to_string()),
                faults: Some(e.faults.len()),
                diagnostics: Vec::new(),
            },
            Err(err) => JsonFile {
                file: f.display().to_string(),
                valid: false,
                name: None,
                faults: None,
                diagnostics: diagnostics_of(f, err),
            },
        };
        match (format, &loaded) {
            (ValidateFormat::Json, _) => {}
            (_, Ok(e)) => crate::outln!(
                "ok: {} ({}, {} faults)",
                f.display(),
                *e.name,
                e.faults.len()
            ),
            (ValidateFormat::Text, Err(e)) => crate::errln!("error: {e}"),
            (ValidateFormat::Github, Err(_)) => {
                for d in &entry.diagnostics {
                    crate::outln!("{}", github_annotation(d));
                }
            }
        }
        out.push(entry);
    }
    let valid = out.iter().all(|f| f.valid);
    if format == ValidateFormat::Json {
        print_json(&JsonValidate {
            version: JSON_VERSION,
            valid,
            files: out,
        });
    }
    if valid {
        Outcome::Pass
    } else {
        Outcome::BadInput
    }
}

// ---------------------------------------------------------------------------------------------
// compare

/// A figure's value in JSON: a number, or the string `"inf"` for "never" (never recovered,
/// impact never felt), `null` when the run did not have the figure.
fn figure(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(v) if v.is_finite() => serde_json::json!(v),
        Some(v) if v.is_infinite() && v > 0.0 => serde_json::json!("inf"),
        Some(v) if v.is_infinite() => serde_json::json!("-inf"),
        _ => serde_json::Value::Null,
    }
}

fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::Ms => "ms",
        Unit::Percent => "percent",
        Unit::Points => "points",
        Unit::Count => "count",
    }
}

/// One figure of `compare --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDelta {
    /// Figure name (`p99`, `faults.kill-one.recovery_time`).
    pub name: String,
    /// `ms`, `percent` (0–100), `points` or `count`.
    pub unit: &'static str,
    /// In the old run (see [`figure`] for `"inf"` and `null`).
    pub old: serde_json::Value,
    /// In the new run.
    pub new: serde_json::Value,
    /// How much worse (positive) or better (negative), in the unit; `null` when a run lacks it.
    pub worse_by: serde_json::Value,
    /// The allowance in words (`20% or 10 ms`).
    pub allowed: String,
    /// `regressed`, `better`, `ok`, `new` (only in the new run) or `gone` (only in the old).
    pub result: &'static str,
}

/// One side of `compare --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonRun {
    /// The report.json read.
    pub report: String,
    /// The experiment's name.
    pub experiment: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
}

/// The document of `compare --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonCompare {
    /// [`JSON_VERSION`].
    pub version: u32,
    /// The reference run.
    pub old: JsonRun,
    /// The later run.
    pub new: JsonRun,
    /// Every figure, in the text table's order.
    pub figures: Vec<JsonDelta>,
    /// How many regressed beyond their allowance (exit 1 when above 0).
    pub regressed: usize,
}

impl JsonCompare {
    /// The document for two reports and their deltas.
    pub fn new(
        (old_path, old): (&Path, &crate::report::Report),
        (new_path, new): (&Path, &crate::report::Report),
        deltas: &[Delta],
    ) -> Self {
        let run = |p: &Path, r: &crate::report::Report| JsonRun {
            report: p.display().to_string(),
            experiment: r.experiment.name.clone(),
            started_at: r.started_at.clone(),
        };
        JsonCompare {
            version: JSON_VERSION,
            old: run(old_path, old),
            new: run(new_path, new),
            figures: deltas
                .iter()
                .map(|d| JsonDelta {
                    name: d.name.clone(),
                    unit: unit_name(d.unit),
                    old: figure(d.old),
                    new: figure(d.new),
                    worse_by: figure(d.worse_by),
                    allowed: d.allowed.clone(),
                    result: match (d.regressed, d.worse_by, d.old, d.new) {
                        (true, _, _, _) => "regressed",
                        (_, _, None, _) => "new",
                        (_, _, _, None) => "gone",
                        (false, Some(w), _, _) if w < 0.0 => "better",
                        _ => "ok",
                    },
                })
                .collect(),
            regressed: deltas.iter().filter(|d| d.regressed).count(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// run --dry-run

/// One fault of `run --dry-run --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonPlannedFault {
    /// Its name.
    pub name: String,
    /// Its kind (`process-kill`, ...).
    pub kind: String,
    /// Offset from the start of load (ms).
    pub at_ms: u64,
    /// How long it holds (ms); `null` for an instantaneous fault.
    pub duration_ms: Option<u64>,
    /// Its settings, as in report.json's plan.
    pub spec: serde_json::Value,
    /// The targets it would act on if it fired now; `null` when they cannot be chosen yet.
    pub targets: Option<Vec<Target>>,
    /// Why there are no targets now, when `targets` is `null`.
    pub targets_error: Option<String>,
}

/// One probe of `run --dry-run --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonProbe {
    /// Its name.
    pub name: String,
    /// What it checks, in words.
    pub description: String,
}

/// The demo of `run --dry-run --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDemo {
    /// Worker processes.
    pub replicas: u32,
    /// The balancer's port on 127.0.0.1.
    pub port: u16,
    /// Delay before a dead worker is restarted (ms).
    pub restart_delay_ms: u64,
}

/// The document of `run --dry-run --format json`: the resolved plan; nothing was touched.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// [`JSON_VERSION`].
    pub version: u32,
    /// The experiment's name.
    pub experiment: String,
    /// The file, as given.
    pub file: String,
    /// The run's seed (`--seed` replays it).
    pub seed: u64,
    /// Run length from the start of load (ms).
    pub duration_ms: u64,
    /// Warm-up before the baseline (ms).
    pub warmup_ms: u64,
    /// End of the baseline: the first fault, or the end of the run (ms).
    pub baseline_end_ms: u64,
    /// Hold period for recovery (ms).
    pub hold_ms: u64,
    /// Longest extension to observe recovery (ms).
    pub recovery_timeout_ms: u64,
    /// The demo service the run starts in setup; `null` without one. Its workers do not exist
    /// yet, so faults that target them have no targets now (`targets_error` says so).
    pub demo: Option<JsonDemo>,
    /// The load's settings (secret header values and URL credentials redacted); `null` without
    /// load.
    pub load: Option<serde_json::Value>,
    /// The SLO as written in the file.
    pub slo: serde_json::Value,
    /// The SLO in words.
    pub slo_text: String,
    /// The probes.
    pub probes: Vec<JsonProbe>,
    /// The faults, in firing order.
    pub faults: Vec<JsonPlannedFault>,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DryRun {
    /// The document of a plan and its targets resolved now (`Plan::resolve_all`).
    pub fn new(plan: &Plan, resolved: &[Result<Vec<Target>, FaultError>]) -> Self {
        let summary = plan.summary();
        DryRun {
            version: JSON_VERSION,
            experiment: plan.experiment.name.to_string(),
            file: plan.file.display().to_string(),
            seed: plan.seed,
            duration_ms: ms(plan.duration),
            warmup_ms: ms(plan.warmup),
            baseline_end_ms: ms(plan.baseline_end()),
            hold_ms: ms(plan.hold),
            recovery_timeout_ms: ms(plan.recovery_timeout),
            demo: plan.demo.as_ref().map(|d| JsonDemo {
                replicas: d.replicas,
                port: d.port,
                restart_delay_ms: ms(d.restart_delay),
            }),
            load: summary.load,
            slo: serde_json::to_value(plan.slo()).unwrap_or_default(),
            slo_text: crate::plan::describe_slo(plan.slo()),
            probes: plan
                .probes
                .iter()
                .map(|p| JsonProbe {
                    name: p.name.to_string(),
                    description: p.spec.probe().describe(p.interval),
                })
                .collect(),
            faults: plan
                .faults
                .iter()
                .zip(summary.faults)
                .enumerate()
                .map(|(i, (f, s))| {
                    let r = resolved.get(i);
                    JsonPlannedFault {
                        name: f.name.clone(),
                        kind: f.spec.kind().to_string(),
                        at_ms: ms(f.at),
                        duration_ms: f.duration.map(ms),
                        spec: s.get("spec").cloned().unwrap_or_default(),
                        targets: r.and_then(|r| r.as_ref().ok()).cloned(),
                        targets_error: r.and_then(|r| r.as_ref().err()).map(|e| e.to_string()),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_data_and_properties() {
        assert_eq!(github_data("100%\r\nnext"), "100%25%0D%0Anext");
        assert_eq!(github_property("a:b,c%"), "a%3Ab%2Cc%25");
        let d = JsonDiagnostic {
            file: "dir,x/a:b.yaml".into(),
            line: Some(3),
            column: Some(7),
            field: Some("faults[0].at".into()),
            message: "bad\nvalue, 5%".into(),
        };
        assert_eq!(
            github_annotation(&d),
            "::error file=dir%2Cx/a%3Ab.yaml,line=3,col=7,title=rattle%3A invalid field \
             faults[0].at::bad%0Avalue, 5%25"
        );
        let whole = JsonDiagnostic {
            line: None,
            column: None,
            field: None,
            ..d
        };
        assert_eq!(
            github_annotation(&whole),
            "::error file=dir%2Cx/a%3Ab.yaml,title=rattle%3A invalid experiment::bad%0Avalue, 5%25"
        );
    }

    #[test]
    fn figures_never_are_inf() {
        assert_eq!(figure(Some(f64::INFINITY)), serde_json::json!("inf"));
        assert_eq!(figure(Some(1.5)), serde_json::json!(1.5));
        assert_eq!(figure(None), serde_json::Value::Null);
        assert_eq!(figure(Some(f64::NAN)), serde_json::Value::Null);
    }
}
