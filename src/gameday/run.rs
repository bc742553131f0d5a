//! Running a game day now: its experiments one after another (each through the ordinary
//! runner, so every fault is reverted on every path), pauses between them, halting on the
//! first failure if asked, the allowed window respected; then the combined report
//! (`index.json`, `index.md`, `index.html`, each experiment's reports in a numbered directory)
//! and the notification.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use super::index::{
    ExperimentResult, ExperimentStatus, GameDayReport, NotificationRecord, SCHEMA_VERSION,
    SkipReason,
};
use super::notify;
use super::{GameDay, NotifyWhen};
use crate::fault::FaultEnv;
use crate::outcome::{Outcome, Verdict};
use crate::plan;
use crate::runner::{self, ProgressMode, RunOptions};

/// How to run a game day.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Directory of the combined report; each experiment's reports go in a subdirectory.
    pub out_dir: PathBuf,
    /// Seed for every experiment (default: a fresh one each, recorded in its report).
    pub seed: Option<u64>,
    /// Confirmed: experiments may fault targets they did not start.
    pub yes: bool,
    /// Run even outside the allowed window.
    pub ignore_window: bool,
    /// Progress of each experiment.
    pub progress: ProgressMode,
    /// Journal directory (see `rattle run --state-dir`).
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig context.
    pub kube_context: Option<String>,
    /// Binary re-executed for demo workers (tests); default the current executable.
    pub demo_exe: Option<PathBuf>,
}

/// Errors that keep a game day from running or its report from being written.
#[derive(Debug, thiserror::Error)]
pub enum GameDayError {
    /// Outside the allowed window (and not `--ignore-window`): nothing ran.
    #[error(
        "outside the allowed window ({window}); it next opens {next}: nothing was run \
         (--ignore-window runs anyway)"
    )]
    OutsideWindow {
        /// The window.
        window: String,
        /// When it opens next.
        next: String,
    },
    /// The combined report could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Refuses to start outside the window (unless told to ignore it).
pub fn check_window(gd: &GameDay, ignore: bool, now: DateTime<Utc>) -> Result<(), GameDayError> {
    let Some(w) = &gd.window else { return Ok(()) };
    if ignore || w.contains(now) {
        return Ok(());
    }
    Err(GameDayError::OutsideWindow {
        window: w.to_string(),
        next: w
            .next_open(now)
            .map(|t| super::when::local(t, w.tz))
            .unwrap_or_else(|| "never".into()),
    })
}

/// The targets every experiment would fault now that exist outside the run (processes it did
/// not start, pods, nodes), chosen with `seed` as the run will: these need a confirmation
/// before the game day starts.
pub async fn outside_targets(gd: &GameDay, seed: u64, kube_context: Option<String>) -> Vec<String> {
    let env = FaultEnv::with_kube_context(kube_context);
    let mut out = Vec::new();
    for e in &gd.experiments {
        let Ok(plan) = plan::build(e.experiment.clone(), &e.path, Some(seed)) else {
            continue;
        };
        let resolved = plan.resolve_all(&env).await;
        out.extend(
            plan.outside_targets(&resolved)
                .into_iter()
                .map(|t| format!("{}: {t}", *e.experiment.name)),
        );
    }
    out
}

/// Runs the game day now (check the window first with [`check_window`]). `stop` ends it early: the running experiment reverts its faults and
/// writes a partial report (exit 3), the rest are skipped. Logs one line per step through
/// `log`. Returns the combined report, already written to `settings.out_dir`, and notified.
pub async fn run(
    gd: &GameDay,
    settings: &RunSettings,
    stop: CancellationToken,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<GameDayReport, GameDayError> {
    let started = Utc::now();
    // The window at the start is the caller's to check (`check_window`: the CLI refuses, the
    // scheduler skips the due time); from here on it is checked before each experiment, so a
    // window that closes a moment after the start skips experiments (exit 3) instead.
    // The combined report's directory takes files before any experiment runs (issue #19: a
    // read-only or full location is found before any fault, not after).
    std::fs::create_dir_all(&settings.out_dir)
        .and_then(|()| crate::fsutil::probe_writable(&settings.out_dir))
        .map_err(|source| GameDayError::Write {
            path: settings.out_dir.clone(),
            source,
        })?;
    let total = gd.experiments.len();
    log(&format!(
        "game day {}: {total} experiment(s), reports in {}",
        gd.name(),
        settings.out_dir.display()
    ));
    let mut results: Vec<ExperimentResult> = Vec::with_capacity(total);
    let mut halted: Option<SkipReason> = None;
    for (i, e) in gd.experiments.iter().enumerate() {
        let name = e.experiment.name.value.clone();
        let file = e.path.display().to_string();
        let skip = |why: SkipReason| ExperimentResult::skipped(name.clone(), file.clone(), why);
        if let Some(why) = &halted {
            results.push(skip(why.clone()));
            continue;
        }
        if stop.is_cancelled() {
            results.push(skip(SkipReason::Stopped));
            continue;
        }
        if i > 0 && !gd.pause().is_zero() {
            log(&format!(
                "game day {}: pausing {} before the next experiment",
                gd.name(),
                crate::experiment::HumanDuration(gd.pause())
            ));
            tokio::select! {
                _ = tokio::time::sleep(gd.pause()) => {}
                _ = stop.cancelled() => {
                    results.push(skip(SkipReason::Stopped));
                    continue;
                }
            }
        }
        if let Some(w) = &gd.window
            && !settings.ignore_window
            && !w.contains(Utc::now())
        {
            let why = SkipReason::WindowClosed {
                window: w.to_string(),
            };
            log(&format!(
                "game day {}: {why}: {name} and the rest are skipped",
                gd.name()
            ));
            halted = Some(why.clone());
            results.push(skip(why));
            continue;
        }
        log(&format!(
            "game day {}: experiment {}/{total}: {name} ({file})",
            gd.name(),
            i + 1
        ));
        let dir_name = format!("{:02}-{name}", i + 1);
        let result = run_one(e, settings, &settings.out_dir.join(&dir_name), &stop).await;
        let result = match result {
            Ok(outcome) => {
                let r = &outcome.report;
                let max_recovery_ms = r
                    .faults
                    .iter()
                    .filter_map(|f| f.recovery.as_ref()?.time_to_recover_ms)
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
                ExperimentResult {
                    name: name.clone(),
                    file: file.clone(),
                    status: ExperimentStatus::Ran,
                    verdict: Some(outcome.outcome.verdict()),
                    exit_code: Some(outcome.outcome.exit_code()),
                    // A report that could not be written is said beside the run's reason
                    // (issue #19); the exit code already says so.
                    reason: match &outcome.write_error {
                        Some(e) => format!("{}; its report was not written: {e}", r.reason),
                        None => r.reason.clone(),
                    },
                    report_dir: Some(dir_name),
                    score: r.score.as_ref().map(|s| s.value),
                    seed: Some(r.seed),
                    started_at: Some(r.started_at.clone()),
                    duration_ms: Some(r.duration_ms),
                    skipped: None,
                    failed_requests: Some(r.totals.failed),
                    max_recovery_ms,
                }
            }
            Err(reason) => ExperimentResult::errored(name.clone(), file.clone(), reason),
        };
        log(&format!(
            "game day {}: {name}: {} (exit {}) — {}",
            gd.name(),
            result
                .verdict
                .map_or("skipped", |v| v.as_str())
                .to_uppercase(),
            result.exit_code.unwrap_or(0),
            result.reason
        ));
        let outcome = result.outcome();
        if outcome == Some(Outcome::RevertFailed) {
            // Something may still be broken: never pile more faults on top, whatever the file
            // says about halting.
            halted = Some(SkipReason::RevertFailed { experiment: name });
        } else if outcome != Some(Outcome::Pass) && gd.spec.halt_on_failure && !stop.is_cancelled()
        {
            halted = Some(SkipReason::EarlierFailed { experiment: name });
        }
        results.push(result);
    }

    let finished = Utc::now();
    let mut report = combine(gd, results, started, finished);
    write(&report, &settings.out_dir)?;
    log(&format!(
        "game day {}: {} (exit {}) — {}",
        gd.name(),
        report.verdict.as_str().to_uppercase(),
        report.exit_code,
        report.reason
    ));

    if let Some(n) = &gd.spec.notify
        && (n.webhook.when == NotifyWhen::Always || report.verdict != Verdict::Pass)
    {
        let body = webhook_body(&report, &settings.out_dir);
        let delivery = notify::send(&n.webhook, &body, log, &stop).await;
        report.notification = Some(delivery.into());
        write(&report, &settings.out_dir)?;
    }
    Ok(report)
}

/// Plans and runs one experiment into `dir`. `Err` with a reason when it could not start.
async fn run_one(
    e: &super::GameDayExperiment,
    settings: &RunSettings,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<runner::RunOutcome, String> {
    let plan = plan::build(e.experiment.clone(), &e.path, settings.seed)
        .map_err(|err| format!("planning failed: {}", crate::probe::error_chain(&err)))?;
    let env = FaultEnv::with_kube_context(settings.kube_context.clone());
    if crate::probe::needs_cluster(&plan.probes)
        && let Err(err) = env.kube().await
    {
        return Err(format!("no usable Kubernetes cluster: {err}"));
    }
    if !settings.yes {
        let resolved = plan.resolve_all(&env).await;
        let outside = plan.outside_targets(&resolved);
        if !outside.is_empty() {
            return Err(format!(
                "acts on targets this run did not start ({}); confirm with --yes",
                outside.join("; ")
            ));
        }
    }
    let opts = RunOptions {
        out_dir: Some(dir.to_path_buf()),
        demo_exe: settings.demo_exe.clone(),
        progress: settings.progress,
        state_dir: settings.state_dir.clone(),
        kube_context: settings.kube_context.clone(),
        // A game day has no output flags: its runs read the same environment variables.
        observe: crate::observe::Config::from_env().map_err(|e| e.to_string())?,
    };
    let stop = stop.clone();
    runner::run(plan, opts, async move { stop.cancelled().await })
        .await
        .map_err(|err| format!("the run failed: {}", crate::probe::error_chain(&err)))
}

/// The combined report from the experiments' results.
pub fn combine(
    gd: &GameDay,
    experiments: Vec<ExperimentResult>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
) -> GameDayReport {
    let worst = experiments
        .iter()
        .filter_map(ExperimentResult::outcome)
        .max()
        .unwrap_or(Outcome::Pass);
    let count = |v: Verdict| {
        experiments
            .iter()
            .filter(|e| e.status != ExperimentStatus::Skipped && e.verdict == Some(v))
            .count()
    };
    let skipped = experiments
        .iter()
        .filter(|e| e.status == ExperimentStatus::Skipped)
        .count();
    let mut reason = format!(
        "{} of {} experiment(s) passed",
        count(Verdict::Pass),
        experiments.len()
    );
    for (v, word) in [
        (Verdict::Fail, "failed"),
        (Verdict::Aborted, "aborted"),
        (Verdict::Error, "errored"),
        (Verdict::Inconclusive, "inconclusive"),
    ] {
        let n = count(v);
        if n > 0 {
            reason.push_str(&format!(", {n} {word}"));
        }
    }
    if skipped > 0 {
        reason.push_str(&format!(", {skipped} skipped"));
    }
    GameDayReport {
        schema_version: SCHEMA_VERSION,
        rattle_version: env!("CARGO_PKG_VERSION").into(),
        name: gd.name().to_string(),
        file: gd.file.display().to_string(),
        description: gd.spec.description.clone(),
        started_at: crate::report::rfc3339_ms(started.timestamp_millis()),
        finished_at: crate::report::rfc3339_ms(finished.timestamp_millis()),
        duration_ms: u64::try_from((finished - started).num_milliseconds()).unwrap_or(0),
        verdict: worst.verdict(),
        exit_code: worst.exit_code(),
        reason,
        halt_on_failure: gd.spec.halt_on_failure,
        window: gd.window.as_ref().map(|w| w.to_string()),
        experiments,
        notification: None,
    }
}

/// The files of the combined report.
pub const FILES: [&str; 3] = ["index.json", "index.md", "index.html"];

/// Writes index.json, index.md and index.html into `dir`.
pub fn write(report: &GameDayReport, dir: &Path) -> Result<(), GameDayError> {
    let json = serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    for (name, content) in FILES
        .iter()
        .zip([json, markdown(report), super::html::render(report)])
    {
        let path = dir.join(name);
        // The run's secret values (issue #15) never reach a file.
        let content = crate::redact::redact_secrets(&content);
        // Temporary file and rename (issue #19): never through a symlink, never torn.
        crate::fsutil::write_atomic(&path, content.as_bytes())
            .map_err(|source| GameDayError::Write { path, source })?;
    }
    Ok(())
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1} ms"))
}

/// index.md. Every user-derived string goes through [`crate::text::markdown_cell`] (or
/// `markdown_code` in a code span): names, reasons and errors cannot break the table or inject
/// HTML.
pub fn markdown(r: &GameDayReport) -> String {
    use crate::text::{markdown_cell as cell, markdown_code as code};
    let mut s = format!(
        "# Game day {}: {}\n\n{}\n\n",
        cell(&r.name),
        r.verdict.as_str().to_uppercase(),
        cell(&r.reason)
    );
    if let Some(d) = &r.description {
        // Lines kept (a description is prose), each made inert.
        let d = d.trim().lines().map(cell).collect::<Vec<_>>().join("\n");
        s.push_str(&format!("{d}\n\n"));
    }
    s.push_str(&format!(
        "- started: {}\n- finished: {}\n- exit code: {}\n- file: `{}`\n",
        r.started_at,
        r.finished_at,
        r.exit_code,
        code(&r.file)
    ));
    if let Some(w) = &r.window {
        s.push_str(&format!("- allowed window: {}\n", cell(&w.to_string())));
    }
    s.push_str(
        "\n| # | experiment | verdict | exit | score | failed requests | slowest recovery | report | reason |\n\
         | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    use crate::report::{Renderer as _, markdown::Markdown};
    for (i, e) in r.experiments.iter().enumerate() {
        let verdict = match e.status {
            ExperimentStatus::Skipped => "skipped".to_string(),
            _ => e.verdict.map_or("–", |v| v.as_str()).to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            cell(&e.name),
            verdict,
            e.exit_code.map_or("–".into(), |c| c.to_string()),
            e.score.map_or("–".into(), |c| c.to_string()),
            e.failed_requests.map_or("–".into(), |c| c.to_string()),
            fmt_ms(e.max_recovery_ms),
            e.report_dir.as_ref().map_or("–".into(), |d| format!(
                "[{}]({}/{})",
                cell(d),
                cell(d),
                Markdown.file()
            )),
            cell(&e.reason),
        ));
    }
    if let Some(n) = &r.notification {
        s.push_str(&format!(
            "\nNotification: {} after {} attempt(s){}\n",
            if n.delivered {
                "delivered"
            } else {
                "NOT delivered"
            },
            n.attempts,
            n.error
                .as_ref()
                .map(|e| format!(" ({})", cell(e)))
                .unwrap_or_default()
        ));
    }
    s
}

/// The webhook's JSON body: a Slack-compatible `text`, then the figures for machines.
pub fn webhook_body(r: &GameDayReport, dir: &Path) -> serde_json::Value {
    use crate::report::{Renderer as _, html::Html, json::Json};
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
    // Slack reads `<...>` as a link or a mention (`<!channel>`) and `&` as an entity: names
    // and reasons are data, so they are escaped the way Slack asks for.
    let slack = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut text = format!(
        "rattle game day *{}*: {} — {}",
        slack(&r.name),
        r.verdict.as_str().to_uppercase(),
        slack(&r.reason)
    );
    for e in &r.experiments {
        let v = match e.status {
            ExperimentStatus::Skipped => "skipped".to_string(),
            _ => e.verdict.map_or("–", |v| v.as_str()).to_string(),
        };
        text.push_str(&format!(
            "\n• {}: {v} — {}",
            slack(&e.name),
            slack(&e.reason)
        ));
    }
    text.push_str(&format!("\nReport: {}", abs(dir.join("index.html"))));
    serde_json::json!({
        "text": text,
        "gameday": r.name,
        "verdict": r.verdict,
        "exit_code": r.exit_code,
        "reason": r.reason,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "report": abs(dir.join("index.json")),
        "report_html": abs(dir.join("index.html")),
        "experiments": r.experiments.iter().map(|e| serde_json::json!({
            "name": e.name,
            "file": e.file,
            "status": e.status,
            "verdict": e.verdict,
            "exit_code": e.exit_code,
            "reason": e.reason,
            "score": e.score,
            "report": e.report_dir.as_ref().map(|d| abs(dir.join(d).join(Json.file()))),
            "report_html": e.report_dir.as_ref().map(|d| abs(dir.join(d).join(Html.file()))),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #19: a reason carrying user text (a probe's error, a target's command line) must
    /// not ping a Slack channel or become a link in the notification.
    #[test]
    fn issue19_webhook_text_escapes_slack_markup() {
        let report = GameDayReport {
            schema_version: SCHEMA_VERSION,
            rattle_version: "0".into(),
            name: "gd".into(),
            file: "gd.yaml".into(),
            description: None,
            started_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            verdict: Verdict::Fail,
            exit_code: 1,
            reason: "<!channel> & <http://evil.example|click>".into(),
            halt_on_failure: true,
            window: None,
            experiments: Vec::new(),
            notification: None,
        };
        let body = webhook_body(&report, Path::new("out"));
        let text = body["text"].as_str().unwrap_or_default();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;"));
        // The machine-readable field keeps the words as they were.
        assert_eq!(body["reason"], report.reason);
    }
}
