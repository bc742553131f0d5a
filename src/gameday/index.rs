//! The combined report of a game day, as data: `index.json`'s types ([`GameDayReport`], a
//! [`ExperimentResult`] per experiment) and why an experiment was skipped ([`SkipReason`]).
//! Kept apart from `run` (which fills them) and from `html` and the Markdown (which render
//! them), so that the renderers and the runner both import the model and not each other.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::notify::Delivery;
use crate::outcome::{Outcome, Verdict};

/// Format version of `index.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened to one experiment of a game day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    /// It ran (whatever its verdict).
    Ran,
    /// It could not run: planning, confirmation or setup failed (nothing was touched), or
    /// the runner failed (its report could not be written); see the reason.
    Error,
    /// Not run: an earlier one failed (`halt_on_failure`), the window closed, or the game day
    /// was stopped.
    Skipped,
}

/// Why an experiment of a game day did not run. Its words are the result's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// An earlier experiment's revert failed: nothing more is piled on a system that may
    /// still be broken, whatever the file says about halting.
    RevertFailed {
        /// The experiment whose revert failed.
        experiment: String,
    },
    /// An earlier experiment did not pass and the game day halts on failure.
    EarlierFailed {
        /// The experiment that did not pass.
        experiment: String,
    },
    /// The allowed window closed before this experiment's turn.
    WindowClosed {
        /// The window, as written.
        window: String,
    },
    /// The game day was stopped (signal, scheduler shutdown).
    Stopped,
}

impl SkipReason {
    /// True when the game day halted on its own rule (an earlier failure). Such a skip is the
    /// consequence of an outcome already counted, not an outcome of its own.
    pub fn is_halt(&self) -> bool {
        matches!(
            self,
            SkipReason::RevertFailed { .. } | SkipReason::EarlierFailed { .. }
        )
    }

    /// What a skipped experiment counts as in the game day's outcome: nothing for a halt
    /// (the failure that caused it already counts), aborted for a closed window or a stop.
    pub fn outcome(&self) -> Option<Outcome> {
        (!self.is_halt()).then_some(Outcome::Aborted)
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::RevertFailed { experiment } => write!(
                f,
                "halted: a revert of {experiment} failed; run `rattle recover` before going on"
            ),
            SkipReason::EarlierFailed { experiment } => {
                write!(f, "halted: {experiment} did not pass (halt_on_failure)")
            }
            SkipReason::WindowClosed { window } => {
                write!(f, "the allowed window ({window}) closed")
            }
            SkipReason::Stopped => f.write_str("the game day was stopped"),
        }
    }
}

/// One experiment's line in the combined report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentResult {
    /// The experiment's name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// Ran, error or skipped.
    pub status: ExperimentStatus,
    /// Its verdict, when it ran.
    pub verdict: Option<Verdict>,
    /// Its exit code (as `rattle run` would have exited); null when skipped.
    pub exit_code: Option<i32>,
    /// Why, in a sentence.
    pub reason: String,
    /// Its report directory, relative to the game day's.
    pub report_dir: Option<String>,
    /// Its resilience score.
    pub score: Option<u32>,
    /// Its seed.
    pub seed: Option<u64>,
    /// When its load started (RFC 3339 UTC).
    pub started_at: Option<String>,
    /// How long it ran (ms).
    pub duration_ms: Option<u64>,
    /// Why it was skipped, as a value (the `reason` says it in words). Not written to
    /// index.json.
    #[serde(skip)]
    pub skipped: Option<SkipReason>,
    /// Failed requests over the run.
    pub failed_requests: Option<u64>,
    /// The slowest recovery among its faults (ms); null if none recovered or none fired.
    pub max_recovery_ms: Option<f64>,
}

/// The combined report of a game day: `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GameDayReport {
    /// Format version.
    pub schema_version: u32,
    /// rattle's version.
    pub rattle_version: String,
    /// Game day name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// Its description.
    pub description: Option<String>,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// Wall time (ms).
    pub duration_ms: u64,
    /// Pass only if every experiment ran and passed; otherwise from the worst exit code:
    /// 1 fail, 3 aborted, 2 and 4 error.
    pub verdict: Verdict,
    /// The highest exit code of its experiments (3 when some were skipped by the window or a
    /// stop).
    pub exit_code: i32,
    /// Why, in a sentence.
    pub reason: String,
    /// Halt on the first failure?
    pub halt_on_failure: bool,
    /// The allowed window, if any.
    pub window: Option<String>,
    /// Each experiment, in order.
    pub experiments: Vec<ExperimentResult>,
    /// The webhook's delivery, when one was configured and due (written after sending).
    #[serde(default)]
    pub notification: Option<NotificationRecord>,
}

/// What became of the notification.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NotificationRecord {
    /// Did the receiver accept it?
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last status received.
    pub status: Option<u16>,
    /// The last error.
    pub error: Option<String>,
}

impl ExperimentResult {
    /// An experiment that did not run, for `why`.
    pub fn skipped(name: String, file: String, why: SkipReason) -> Self {
        Self {
            reason: why.to_string(),
            skipped: Some(why),
            ..Self::without_run(name, file, ExperimentStatus::Skipped)
        }
    }

    /// An experiment that could not start (nothing was touched): bad input or environment.
    pub fn errored(name: String, file: String, reason: String) -> Self {
        Self {
            verdict: Some(Outcome::BadInput.verdict()),
            exit_code: Some(Outcome::BadInput.exit_code()),
            reason,
            ..Self::without_run(name, file, ExperimentStatus::Error)
        }
    }

    fn without_run(name: String, file: String, status: ExperimentStatus) -> Self {
        Self {
            name,
            file,
            status,
            verdict: None,
            exit_code: None,
            reason: String::new(),
            report_dir: None,
            score: None,
            seed: None,
            started_at: None,
            duration_ms: None,
            skipped: None,
            failed_requests: None,
            max_recovery_ms: None,
        }
    }

    /// What this experiment counts as in the game day's outcome: its run's outcome; for a
    /// skip, see [`SkipReason::outcome`]; an experiment that could not start is bad input.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.status {
            ExperimentStatus::Skipped => self.skipped.as_ref().and_then(SkipReason::outcome),
            ExperimentStatus::Ran | ExperimentStatus::Error => Some(
                self.exit_code
                    .and_then(Outcome::from_exit_code)
                    .unwrap_or(Outcome::BadInput),
            ),
        }
    }
}

impl GameDayReport {
    /// How the game day ended, from its exit code.
    pub fn outcome(&self) -> Outcome {
        Outcome::from_exit_code(self.exit_code).unwrap_or(Outcome::BadInput)
    }
}

impl From<Delivery> for NotificationRecord {
    fn from(d: Delivery) -> Self {
        Self {
            delivered: d.delivered,
            attempts: d.attempts,
            status: d.status,
            error: d.error,
        }
    }
}
