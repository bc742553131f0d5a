//! `rattle schedule`: a long-running scheduler of game days. One run at a time: a run that
//! comes due while another is in progress is skipped and logged, never queued (a backlog of
//! chaos is the last thing a struggling system needs). Every due time lands in
//! `history.jsonl` in the output directory, run or skipped. Stopping (SIGTERM, Ctrl-C) stops the
//! run in progress the safe way (its faults reverted, a partial report written) and exits.
//!
//! Each run re-reads its game-day file, so edits to experiments take effect at the next run;
//! the schedule itself is the one read at start.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::run::{self, GameDayReport, NotificationRecord, RunSettings};
use super::{GameDay, when};
use crate::outcome::{Outcome, Verdict};

/// A logger shared with the run tasks.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Where runs and the history go (each run in `<name>-<UTC timestamp>/`).
    pub out_dir: PathBuf,
    /// Exit after this many runs have finished.
    pub max_runs: Option<u32>,
    /// Settings of each run (its `out_dir` is replaced per run).
    pub run: RunSettings,
}

/// What happened at one due time: a line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Game day name.
    pub gameday: String,
    /// Its file.
    pub file: String,
    /// The due time (RFC 3339 UTC).
    pub scheduled_for: String,
    /// What happened.
    pub event: HistoryEvent,
    /// Why it was skipped or failed to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its combined report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// What became of its notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationRecord>,
}

/// What happened at a due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryEvent {
    /// The game day ran (its verdict and exit code are on the entry).
    Ran,
    /// Not run: another run was in progress, the window was closed, or `--max-runs` was reached.
    Skipped,
    /// Not run, or ended without a report: the file could not be read at run time, or the run
    /// failed unexpectedly.
    Error,
}

impl HistoryEvent {
    /// The word used in `history.jsonl` and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Ran => "ran",
            HistoryEvent::Skipped => "skipped",
            HistoryEvent::Error => "error",
        }
    }
}

/// Errors that end the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A game day has no `schedule`.
    #[error("{}: has no `schedule`: add one (cron and time zone) or run it once with `rattle gameday run`", file.display())]
    NoSchedule {
        /// The file.
        file: PathBuf,
    },
    /// The schedule never fires again.
    #[error("{}: schedule {expr:?} has no future occurrence", file.display())]
    Never {
        /// The file.
        file: PathBuf,
        /// The expression.
        expr: String,
    },
    /// The history file cannot be written.
    #[error("history file {}: {source}", path.display())]
    History {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn rfc(t: DateTime<Utc>) -> String {
    crate::report::rfc3339_ms(t.timestamp_millis())
}

/// Lines describing each game day's schedule and its next `n` run times, for the start.
pub fn describe(gamedays: &[GameDay], now: DateTime<Utc>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for gd in gamedays {
        let Some(s) = &gd.schedule else { continue };
        let mut line = format!(
            "{} ({}): cron \"{}\" in {}",
            gd.name(),
            gd.file.display(),
            s.expr,
            s.tz.name()
        );
        if let Some(w) = &gd.window {
            line.push_str(&format!(", allowed window {w}"));
        }
        out.push(line);
        let next: Vec<String> = s
            .upcoming(now, n)
            .into_iter()
            .map(|t| {
                let mut s = when::local(t, s.tz);
                if gd.window.as_ref().is_some_and(|w| !w.contains(t)) {
                    s.push_str(" (outside the window: will be skipped)");
                }
                s
            })
            .collect();
        out.push(format!("  next runs: {}", next.join(", ")));
    }
    out
}

struct History {
    path: PathBuf,
}

impl History {
    /// Appends, logging a failure instead of returning it: the scheduler must never stop
    /// (abandoning a run in progress) because its history file cannot be written.
    fn record(&self, e: &HistoryEntry, log: &(dyn Fn(&str) + Send + Sync)) {
        if let Err(err) = self.append(e) {
            log(&format!("scheduler: warning: {err}"));
        }
    }

    fn append(&self, e: &HistoryEntry) -> Result<(), ScheduleError> {
        let err = |source| ScheduleError::History {
            path: self.path.clone(),
            source,
        };
        // O_NOFOLLOW (issue #19): a symlink planted at history.jsonl is refused, not followed.
        let mut f = crate::fsutil::open_append(&self.path).map_err(err)?;
        // The run's secret values (issue #15) never reach a file.
        let json = serde_json::to_string(e).unwrap_or_default();
        let mut line = crate::redact::redact_secrets(&json).into_owned();
        line.push('\n');
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }
}

/// Sleeps until the wall clock reaches `t` (in steps of at most 30 s, so a clock change or a
/// suspended machine is noticed).
async fn wait_until(t: DateTime<Utc>) {
    loop {
        let left = t - Utc::now();
        let Ok(left) = left.to_std() else { return };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_secs(30))).await;
    }
}

struct Running {
    index: usize,
    scheduled_for: DateTime<Utc>,
    started: DateTime<Utc>,
    dir: PathBuf,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<GameDayReport, String>>,
}

/// Runs the scheduler until `stop` or until `max_runs` runs have finished. Returns the highest
/// exit code of the runs (0 when none ran).
pub async fn run_scheduler(
    gamedays: Vec<GameDay>,
    settings: ScheduleSettings,
    stop: CancellationToken,
    log: Log,
) -> Result<Outcome, ScheduleError> {
    let mut schedules = Vec::with_capacity(gamedays.len());
    for gd in &gamedays {
        let s = gd
            .schedule
            .clone()
            .ok_or_else(|| ScheduleError::NoSchedule {
                file: gd.file.clone(),
            })?;
        schedules.push(s);
    }
    std::fs::create_dir_all(&settings.out_dir).map_err(|source| ScheduleError::History {
        path: settings.out_dir.clone(),
        source,
    })?;
    let history = History {
        path: settings.out_dir.join("history.jsonl"),
    };
    // A history that cannot be written is refused now, before anything runs; later failures
    // are logged, never fatal.
    crate::fsutil::open_append(&history.path).map_err(|source| ScheduleError::History {
        path: history.path.clone(),
        source,
    })?;
    let now = Utc::now();
    let mut next: Vec<DateTime<Utc>> = Vec::with_capacity(schedules.len());
    for (gd, s) in gamedays.iter().zip(&schedules) {
        next.push(s.next_after(now).ok_or_else(|| ScheduleError::Never {
            file: gd.file.clone(),
            expr: s.expr.clone(),
        })?);
    }
    log(&format!(
        "scheduler: {} game day(s), one run at a time; history in {}{}",
        gamedays.len(),
        history.path.display(),
        settings
            .max_runs
            .map(|n| format!("; exits after {n} run(s)"))
            .unwrap_or_default()
    ));

    let mut started_runs: u32 = 0;
    let mut finished_runs: u32 = 0;
    let mut worst = Outcome::Pass;
    let mut running: Option<Running> = None;
    loop {
        if settings.max_runs.is_some_and(|m| finished_runs >= m) {
            log(&format!("scheduler: {finished_runs} run(s) done; exiting"));
            break;
        }
        let (i, due) = next
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| **t)
            .map(|(i, t)| (i, *t))
            .unwrap_or((0, Utc::now()));
        tokio::select! {
            _ = wait_until(due) => {
                let s = &schedules[i];
                let now = Utc::now();
                // After a suspend or a clock jump, due times that passed meanwhile are not
                // fired in a burst: the next one is the first after now.
                next[i] = s.next_after(due.max(now)).unwrap_or(DateTime::<Utc>::MAX_UTC);
                let gd = &gamedays[i];
                let late = now - due;
                if late > chrono::Duration::seconds(5) {
                    log(&format!(
                        "scheduler: {} due at {} fired {} s late (the machine slept or the clock                          jumped); due times passed meanwhile are not caught up",
                        gd.name(),
                        rfc(due),
                        late.num_seconds()
                    ));
                }
                let skip = |reason: String| HistoryEntry {
                    gameday: gd.name().to_string(),
                    file: gd.file.display().to_string(),
                    scheduled_for: rfc(due),
                    event: HistoryEvent::Skipped,
                    reason: Some(reason),
                    started_at: None,
                    finished_at: None,
                    verdict: None,
                    exit_code: None,
                    report: None,
                    notification: None,
                };
                if settings.max_runs.is_some_and(|m| started_runs >= m) {
                    history.record(&skip("--max-runs reached: no further run starts".into()), &*log);
                    continue;
                }
                if let Some(r) = &running {
                    let reason = format!(
                        "{} (due {}) is still running",
                        gamedays[r.index].name(),
                        rfc(r.scheduled_for)
                    );
                    log(&format!("scheduler: {} due at {}: skipped, {reason}", gd.name(), rfc(due)));
                    history.record(&skip(reason), &*log);
                    continue;
                }
                if let Some(w) = &gd.window && !w.contains(Utc::now()) {
                    let reason = format!("outside the allowed window ({w})");
                    log(&format!("scheduler: {} due at {}: skipped, {reason}", gd.name(), rfc(due)));
                    history.record(&skip(reason), &*log);
                    continue;
                }
                // Re-read the file: experiments edited since the start take effect now.
                let fresh = match super::load_with(&gd.file, &gd.vars) {
                    Ok(f) => f,
                    Err(e) => {
                        let reason = format!("cannot load the game day: {e}");
                        log(&format!("scheduler: {} due at {}: {reason}", gd.name(), rfc(due)));
                        history.record(&HistoryEntry { event: HistoryEvent::Error, ..skip(reason) }, &*log);
                        continue;
                    }
                };
                let started = Utc::now();
                let dir = settings
                    .out_dir
                    .join(crate::report::dir_name(gd.name(), started.timestamp_millis()));
                let mut rs = settings.run.clone();
                rs.out_dir = dir.clone();
                // The run checks the window again itself (at start and before each
                // experiment), so no experiment starts after it closes.
                rs.ignore_window = false;
                let token = CancellationToken::new();
                let task_token = token.clone();
                let task_log = log.clone();
                started_runs += 1;
                log(&format!(
                    "scheduler: {} due at {}: starting run {}{} in {}",
                    gd.name(),
                    rfc(due),
                    started_runs,
                    settings.max_runs.map(|m| format!(" of {m}")).unwrap_or_default(),
                    dir.display()
                ));
                let handle = tokio::spawn(async move {
                    let l = move |s: &str| task_log(s);
                    run::run(&fresh, &rs, task_token, &l).await.map_err(|e| e.to_string())
                });
                running = Some(Running { index: i, scheduled_for: due, started, dir, stop: token, handle });
            }
            result = async {
                match running.as_mut() {
                    Some(r) => (&mut r.handle).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(r) = running.take() else { continue };
                finished_runs += 1;
                let code = record(&gamedays[r.index], &r, result, &history, &*log);
                worst = worst.max(code);
            }
            _ = stop.cancelled() => {
                if let Some(mut r) = running.take() {
                    log(&format!(
                        "scheduler: stopping: {} is running; reverting its faults first",
                        gamedays[r.index].name()
                    ));
                    r.stop.cancel();
                    let result = (&mut r.handle).await;
                    let code = record(&gamedays[r.index], &r, result, &history, &*log);
                    worst = worst.max(code);
                }
                log("scheduler: stopped");
                break;
            }
        }
    }
    Ok(worst)
}

/// Writes the history entry of a finished run; returns its exit code.
fn record(
    gd: &GameDay,
    r: &Running,
    result: Result<Result<GameDayReport, String>, tokio::task::JoinError>,
    history: &History,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Outcome {
    let mut entry = HistoryEntry {
        gameday: gd.name().to_string(),
        file: gd.file.display().to_string(),
        scheduled_for: rfc(r.scheduled_for),
        event: HistoryEvent::Ran,
        reason: None,
        started_at: Some(rfc(r.started)),
        finished_at: Some(rfc(Utc::now())),
        verdict: None,
        exit_code: None,
        report: None,
        notification: None,
    };
    let code = match result {
        Ok(Ok(report)) => {
            entry.reason = Some(report.reason.clone());
            entry.verdict = Some(report.verdict);
            entry.exit_code = Some(report.exit_code);
            entry.report = Some(r.dir.join("index.html").display().to_string());
            entry.notification = report.notification.clone();
            report.outcome()
        }
        Ok(Err(e)) => {
            entry.event = HistoryEvent::Error;
            entry.reason = Some(e);
            entry.exit_code = Some(Outcome::BadInput.exit_code());
            Outcome::BadInput
        }
        Err(e) => {
            // The run task panicked: its experiments' runners revert their own faults before
            // returning, so what is lost here is the combined report, not a revert.
            entry.event = HistoryEvent::Error;
            entry.reason = Some(format!("the run failed unexpectedly: {e}"));
            entry.exit_code = Some(Outcome::Aborted.exit_code());
            Outcome::Aborted
        }
    };
    log(&format!(
        "scheduler: {} finished: {} (exit {})",
        gd.name(),
        entry
            .verdict
            .map_or(entry.event.as_str(), |v| v.as_str())
            .to_uppercase(),
        code.exit_code()
    ));
    history.record(&entry, log);
    code
}
