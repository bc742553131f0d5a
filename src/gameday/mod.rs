//! Game days: a file naming experiments to run one after another ([`spec`]), when to run them
//! ([`when`]: cron schedule and allowed window), running one now with a combined report
//! ([`run`]), telling a webhook how it went ([`notify`]), the long-running scheduler
//! ([`schedule`]) and the Kubernetes CronJob that does the same in a cluster ([`emit`]).
//!
//! Loading a game day loads and validates every experiment it names, so a mistake in any of
//! them is reported, with its location, before the first fault of the first one.

pub mod emit;
mod html;
pub mod index;
pub mod notify;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod when;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::experiment::{self, Diagnostic, Experiment, ExperimentError, Located};
pub use spec::{GameDayFile, NotifyWhen, WebhookSpec};
pub use when::{Schedule, Window};

/// A loaded, validated game day.
#[derive(Debug, Clone)]
pub struct GameDay {
    /// The file it was read from.
    pub file: PathBuf,
    /// The file as written.
    pub spec: GameDayFile,
    /// Its experiments, globs expanded, each loaded and valid.
    pub experiments: Vec<GameDayExperiment>,
    /// The schedule, if any.
    pub schedule: Option<Schedule>,
    /// The allowed window, if any.
    pub window: Option<Window>,
    /// The variables it was loaded with (`--var`, `--var-file`), to load it again with.
    pub vars: experiment::Vars,
}

/// One experiment of a game day.
#[derive(Debug, Clone)]
pub struct GameDayExperiment {
    /// Its file (the game day's directory joined with what was written or matched).
    pub path: PathBuf,
    /// The experiment.
    pub experiment: Experiment,
}

impl GameDay {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Pause between experiments.
    pub fn pause(&self) -> Duration {
        self.spec.pause.get()
    }

    /// The longest a whole game day can take, from its experiments' durations, recovery
    /// timeouts, pauses and the notification's retries, plus a margin (the CronJob's
    /// deadline).
    pub fn longest(&self) -> Duration {
        let runs: Duration = self
            .experiments
            .iter()
            .map(|e| {
                e.experiment.duration.get()
                    + e.experiment.steady_state.recovery_timeout.get()
                    + Duration::from_secs(60)
            })
            .sum();
        let pauses = self.pause() * u32::try_from(self.experiments.len()).unwrap_or(u32::MAX);
        // The notification: every attempt's timeout and every backoff (capped at a minute).
        let notify = self.spec.notify.as_ref().map_or(Duration::ZERO, |n| {
            let w = &n.webhook;
            let attempts = 1 + *w.retries;
            let mut backoff = Duration::ZERO;
            let mut b = w.backoff.get();
            for _ in 0..*w.retries {
                backoff += b.min(Duration::from_secs(60));
                b *= 2;
            }
            w.timeout.get() * attempts + backoff
        });
        // Starting up (image pull, cluster client) and writing reports.
        runs + pauses + notify + Duration::from_secs(300)
    }
}

const SYNTAX_HELP: &str = "a game-day file";

/// Reads, parses and validates a game-day file and every experiment it names.
pub fn load(path: &Path) -> Result<GameDay, ExperimentError> {
    load_with(path, &experiment::Vars::new())
}

/// [`load`] with variables: `${var:NAME}` and `${env:NAME}` are substituted in the game-day
/// file and in every experiment it names.
pub fn load_with(path: &Path, vars: &experiment::Vars) -> Result<GameDay, ExperimentError> {
    let text = experiment::parse::read_text(path)?;
    load_str_with(&text, path, vars)
}

/// Parses and validates game-day text as if read from `path` (experiments are found relative
/// to its directory).
pub fn load_str(text: &str, path: &Path) -> Result<GameDay, ExperimentError> {
    load_str_with(text, path, &experiment::Vars::new())
}

/// [`load_str`] with variables (see [`load_with`]).
pub fn load_str_with(
    text: &str,
    path: &Path,
    vars: &experiment::Vars,
) -> Result<GameDay, ExperimentError> {
    let invalid = |diagnostics| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let substituted = vars.substitute(text).map_err(invalid)?;
    let spec: GameDayFile = experiment::parse::parse_yaml(&substituted.text).map_err(|mut d| {
        if d.message.contains("missing field") {
            d.message = format!(
                "{} ({SYNTAX_HELP} needs version, name and experiments)",
                d.message
            );
        }
        invalid(vec![substituted.locate(d)])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(spec, base, path, vars)
        .map_err(|ds| invalid(ds.into_iter().map(|d| substituted.locate(d)).collect()))
}

fn diag<T>(loc: &Located<T>, field: impl Into<String>, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line: loc.line,
        column: loc.column,
        field: field.into(),
        message: message.into(),
        snippet: None,
    }
}

fn validate(
    spec: GameDayFile,
    base: &Path,
    file: &Path,
    vars: &experiment::Vars,
) -> Result<GameDay, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    if *spec.version != 1 {
        problems.push(diag(
            &spec.version,
            "version",
            format!(
                "unsupported version {}: this rattle reads version 1",
                *spec.version
            ),
        ));
    }
    let name = spec.name.trim();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problems.push(diag(
            &spec.name,
            "name",
            "must start with a letter or digit and contain only letters, digits, '-', '_' and \
             '.' (it names report directories and Kubernetes objects)",
        ));
    }

    let mut experiments = Vec::new();
    if spec.experiments.is_empty() {
        problems.push(diag(
            &spec.experiments,
            "experiments",
            "lists no experiment",
        ));
    }
    for (i, entry) in spec.experiments.iter().enumerate() {
        let field = format!("experiments[{i}]");
        let paths = match expand(base, entry) {
            Ok(p) => p
                .into_iter()
                .filter(|p| !same_file(p, file))
                .collect::<Vec<_>>(),
            Err(msg) => {
                problems.push(diag(entry, field, msg));
                continue;
            }
        };
        for p in paths {
            match experiment::load_with(&p, vars) {
                Ok(experiment) => experiments.push(GameDayExperiment {
                    path: p,
                    experiment,
                }),
                Err(e) => problems.push(diag(
                    entry,
                    field.clone(),
                    format!("experiment {} is not valid:\n{e}", p.display()),
                )),
            }
        }
    }

    let schedule = spec.schedule.as_ref().and_then(|s| {
        let tz = s.timezone.as_ref().map(|t| t.as_str());
        match Schedule::parse(&s.cron, tz) {
            Ok(parsed) if parsed.next_after(chrono::Utc::now()).is_none() => {
                problems.push(diag(
                    &s.cron,
                    "schedule.cron",
                    format!(
                        "cron expression {:?} never fires (no such date)",
                        parsed.expr
                    ),
                ));
                None
            }
            Ok(s) => Some(s),
            Err(msg) => {
                problems.push(match (&s.timezone, when::parse_tz(tz)) {
                    (Some(t), Err(_)) => diag(t, "schedule.timezone", msg),
                    _ => diag(&s.cron, "schedule.cron", msg),
                });
                None
            }
        }
    });

    let window = spec.window.as_ref().and_then(|w| {
        let mut ok = true;
        let days = match &w.days {
            Some(d) => when::parse_days(d).unwrap_or_else(|msg| {
                problems.push(diag(d, "window.days", msg));
                ok = false;
                [true; 7]
            }),
            None => [true; 7],
        };
        let from = when::parse_hhmm(&w.from).unwrap_or_else(|msg| {
            problems.push(diag(&w.from, "window.from", msg));
            ok = false;
            0
        });
        let to = when::parse_hhmm(&w.to).unwrap_or_else(|msg| {
            problems.push(diag(&w.to, "window.to", msg));
            ok = false;
            0
        });
        if ok && from == to {
            problems.push(diag(
                &w.to,
                "window.to",
                "equals `from`: the window would be empty",
            ));
            ok = false;
        }
        let tz_name = w
            .timezone
            .as_ref()
            .or(spec.schedule.as_ref().and_then(|s| s.timezone.as_ref()));
        let tz = match when::parse_tz(tz_name.map(|t| t.as_str())) {
            Ok(tz) => tz,
            Err(msg) => {
                if let Some(t) = &w.timezone {
                    problems.push(diag(t, "window.timezone", msg));
                }
                ok = false;
                chrono_tz::Tz::UTC
            }
        };
        ok.then_some(Window { days, from, to, tz })
    });

    if let Some(n) = &spec.notify {
        let w = &n.webhook;
        match (&w.url, &w.url_env) {
            (Some(u), None) => {
                if let Err(msg) = notify::check_url(u) {
                    problems.push(diag(u, "notify.webhook.url", msg));
                }
            }
            (None, Some(v)) => {
                if v.is_empty() || v.contains('=') || v.contains('\0') {
                    problems.push(diag(
                        v,
                        "notify.webhook.url_env",
                        "not an environment variable name",
                    ));
                }
            }
            (Some(u), Some(_)) => problems.push(diag(
                u,
                "notify.webhook",
                "give exactly one of `url` and `url_env`, not both",
            )),
            (None, None) => problems.push(diag(
                &w.timeout,
                "notify.webhook",
                "needs `url` or `url_env`",
            )),
        }
        for name in w.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(diag(
                    &w.timeout,
                    format!("notify.webhook.headers.{name}"),
                    "not a valid header name",
                ));
            }
        }
        for (name, value) in &w.headers {
            if http::HeaderValue::from_str(value).is_err() {
                problems.push(diag(
                    &w.timeout,
                    format!("notify.webhook.headers.{name}"),
                    "not a valid header value",
                ));
            }
        }
        if w.timeout.get().is_zero() {
            problems.push(diag(
                &w.timeout,
                "notify.webhook.timeout",
                "must be above zero",
            ));
        }
        if *w.retries > 20 {
            problems.push(diag(&w.retries, "notify.webhook.retries", "at most 20"));
        }
    }

    if problems.is_empty() {
        Ok(GameDay {
            file: file.to_path_buf(),
            spec,
            experiments,
            schedule,
            window,
            vars: vars.clone(),
        })
    } else {
        Err(problems)
    }
}

/// Expands one `experiments` entry: a plain path, or a glob whose matches (files only) come in
/// name order. A glob with no match is an error, never a silently shorter game day.
fn expand(base: &Path, entry: &str) -> Result<Vec<PathBuf>, String> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("empty path".into());
    }
    let joined = if Path::new(entry).is_absolute() {
        PathBuf::from(entry)
    } else {
        base.join(entry)
    };
    if !entry.contains(['*', '?', '[']) {
        return Ok(vec![normalize(&joined)]);
    }
    let pattern = if Path::new(entry).is_absolute() || base.as_os_str().is_empty() {
        entry.to_string()
    } else {
        format!("{}/{entry}", glob::Pattern::escape(&base.to_string_lossy()))
    };
    let paths = glob::glob(&pattern).map_err(|e| format!("invalid glob pattern {entry:?}: {e}"))?;
    let mut out: Vec<PathBuf> = paths
        .filter_map(|p| p.ok())
        .filter(|p| p.is_file())
        .map(|p| normalize(&p))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "pattern {entry:?} matches no file (looked in {})",
            base.display()
        ));
    }
    Ok(out)
}

/// Are `a` and `b` the same file (a glob in a game day must not pick up the game day itself)?
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `a/b/../c` → `a/c`, lexically (no file system access), so paths read well in reports.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_normal =
                    matches!(out.components().next_back(), Some(Component::Normal(_)));
                if last_is_normal {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The JSON Schema (draft-07) of the game-day format, for editors.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<GameDayFile>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
