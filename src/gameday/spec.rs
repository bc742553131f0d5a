//! The game-day file as written: serde structs with their defaults and documentation (which
//! becomes the JSON Schema's descriptions, `rattle schema --gameday`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::experiment::{HumanDuration, Located};

/// A game day: experiments run one after another, on a schedule, with a notification at the
/// end.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GameDayFile {
    /// Format version; must be 1.
    pub version: Located<u32>,
    /// Short name; used in report directory names and notifications.
    pub name: Located<String>,
    /// What the game day shows, in a sentence or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Experiment files, in the order they run: paths or glob patterns (`experiments/k8s-*.yaml`),
    /// relative to this file's directory. A pattern's matches run in name order; a pattern
    /// that matches nothing is an error.
    pub experiments: Located<Vec<Located<String>>>,
    /// Pause between two experiments, so the system settles (default 10s).
    #[serde(default = "default_pause")]
    pub pause: Located<HumanDuration>,
    /// Stop at the first experiment that does not pass; the rest are skipped (default true).
    #[serde(default = "default_true")]
    pub halt_on_failure: bool,
    /// When `rattle schedule` (or the emitted CronJob) runs the game day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// When the game day may run at all: a run due outside it is skipped, and no experiment
    /// starts after it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
    /// Who is told when the game day ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
}

fn default_pause() -> Located<HumanDuration> {
    Located::new(HumanDuration::from_secs(10))
}

fn default_true() -> bool {
    true
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Cron expression: `minute hour day-of-month month day-of-week` (`0 10 * * MON-FRI`), or
    /// with a leading seconds field for the local scheduler only (`*/30 * * * * *`); `@daily`,
    /// `@hourly`, ... are accepted too.
    pub cron: Located<String>,
    /// IANA time zone the expression is read in, e.g. `Europe/Berlin` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
}

/// The allowed window: days of the week and a time range.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Days the window is open: `mon` ... `sun`, ranges like `mon-fri` (default every day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Located<Vec<String>>>,
    /// Opening time, `HH:MM` (24-hour).
    pub from: Located<String>,
    /// Closing time, `HH:MM`; earlier than `from` means the window runs past midnight.
    pub to: Located<String>,
    /// IANA time zone of the window (default: the schedule's, else UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Located<String>>,
}

/// Notifications.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// An HTTP(S) webhook receiving a JSON body (Slack-compatible `text` field).
    pub webhook: WebhookSpec,
}

/// When to notify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyWhen {
    /// After every game day.
    #[default]
    Always,
    /// Only when the game day did not pass.
    Failure,
}

/// An HTTP(S) webhook. Failures are retried with exponential backoff and never fail the game
/// day.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// The URL (http or https). Exactly one of `url` and `url_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Located<String>>,
    /// Name of an environment variable holding the URL, for URLs that are secrets (Slack's
    /// are): keeps the secret out of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<Located<String>>,
    /// Extra request headers (e.g. `Authorization`); their values never appear in logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// When to send (default always).
    #[serde(default)]
    pub when: NotifyWhen,
    /// Timeout of one attempt (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: Located<HumanDuration>,
    /// Retries after a failed attempt (default 4): connection errors, timeouts, 429 and 5xx.
    #[serde(default = "default_retries")]
    pub retries: Located<u32>,
    /// Wait before the first retry, doubled each time up to 1 minute (default 1s); a
    /// `Retry-After` header is honoured up to the same cap.
    #[serde(default = "default_backoff")]
    pub backoff: Located<HumanDuration>,
}

fn default_timeout() -> Located<HumanDuration> {
    Located::new(HumanDuration::from_secs(10))
}

fn default_retries() -> Located<u32> {
    Located::new(4)
}

fn default_backoff() -> Located<HumanDuration> {
    Located::new(HumanDuration::from_secs(1))
}
