//! Process faults: `process-kill` (any signal, nothing to revert) and `process-pause` (SIGSTOP
//! for the entry's duration, SIGCONT on revert).
//!
//! Targets are local processes found by scanning `/proc`, picked by pid, pid file, executable
//! name or a regex over the command line (all given selectors must match), then narrowed by the
//! entry's [`Mode`] through the seeded [`crate::fault::select::choose`]. Both kinds share one
//! selector (`Selector`, a borrowed view of the fields they both list) rather than a nested
//! struct, because `#[serde(flatten)]` would break `deny_unknown_fields` and error locations.
//!
//! Safety shapes most of this file. Rattle never signals pid 1, itself, or any of its ancestors
//! (the shell, `cargo`, the CI runner that would die with it), even when a pattern matches them.
//! Pids are reused by the kernel, so a pid alone never identifies a process across time: inject
//! re-checks that a target still has the command line it was resolved with, and the pause token
//! records each process's start time so that a revert after a crash never sends SIGCONT to an
//! unrelated process that inherited the pid.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    BoxFuture, Fault, FaultEnv, FaultError, Locality, ResolveCtx, Result, RevertToken, Target,
    select,
};
use crate::experiment::Mode;

/// The `kind` of the targets this module resolves.
pub const TARGET_KIND: &str = "process";

/// The key of `process-pause`, which its revert tokens carry.
const PAUSE_KIND: &str = "process-pause";

/// Longest target description (the command line) kept, in characters: enough to recognise a
/// process in a report without pasting a JVM's classpath into it.
const DESCRIPTION_MAX: usize = 200;

/// `process-kill`: sends a signal (default KILL) to the selected processes. Instantaneous:
/// there is nothing to revert, so it takes no `duration`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSpec {
    /// Select the process with this pid. 0 and 1 are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Select the process whose pid is written in this file (read when the fault is resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Select processes whose name is exactly this: the kernel's name for it
    /// (`/proc/<pid>/comm`, at most 15 characters) or the file name of its `argv[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Select processes whose command line (arguments joined by spaces) matches this regular
    /// expression (unanchored: `worker` matches any command line containing it).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// How many of the matching processes to act on. Default: one, chosen at random (seeded).
    #[serde(default)]
    pub mode: Mode,
    /// The signal to send: a name with or without SIG (KILL, TERM, SIGTERM, INT, HUP, USR1...)
    /// or a number. Default: KILL. Stopping signals (STOP, TSTP, TTIN, TTOU) are refused; use
    /// `process-pause`, which resumes the process at the end.
    #[serde(default)]
    pub signal: SignalArg,
}

/// `process-pause`: stops the selected processes with SIGSTOP for the entry's `duration`, then
/// resumes them with SIGCONT. A paused process keeps its sockets open but answers nothing,
/// which is how a hung dependency looks from outside.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseSpec {
    /// Select the process with this pid. 0 and 1 are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Select the process whose pid is written in this file (read when the fault is resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Select processes whose name is exactly this: the kernel's name for it
    /// (`/proc/<pid>/comm`, at most 15 characters) or the file name of its `argv[0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Select processes whose command line (arguments joined by spaces) matches this regular
    /// expression (unanchored: `worker` matches any command line containing it).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// How many of the matching processes to act on. Default: one, chosen at random (seeded).
    #[serde(default)]
    pub mode: Mode,
}

impl KillSpec {
    fn selector(&self) -> Selector<'_> {
        Selector {
            pid: self.pid,
            pid_file: self.pid_file.as_deref(),
            name: self.name.as_deref(),
            pattern: self.pattern.as_deref(),
            mode: &self.mode,
        }
    }
}

impl PauseSpec {
    fn selector(&self) -> Selector<'_> {
        Selector {
            pid: self.pid,
            pid_file: self.pid_file.as_deref(),
            name: self.name.as_deref(),
            pattern: self.pattern.as_deref(),
            mode: &self.mode,
        }
    }
}

impl Fault for KillSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            self.selector().resolve(ctx.rng)
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async { Ok(None) })
    }

    fn inject<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Validated again because inject must refuse a stopping signal even when a caller
            // skipped validation: a stopped process with no revert is a fault left behind.
            self.validate().map_err(FaultError::InvalidSelection)?;
            let sig = self
                .signal
                .to_signal()
                .map_err(|e| FaultError::InvalidSelection(format!("`signal`: {e}")))?;
            signal_targets(targets, sig)?;
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        false
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Local
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.selector().validate()?;
        let sig = self
            .signal
            .to_signal()
            .map_err(|e| format!("`signal`: {e}"))?;
        if matches!(
            sig,
            Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
        ) {
            return Err(format!(
                "`signal`: {sig} would leave the process stopped with nothing to resume it; \
                 use `process-pause`, which resumes it at the end"
            ));
        }
        Ok(())
    }
}

impl Fault for PauseSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            self.selector().resolve(ctx.rng)
        })
    }

    /// Names every target with its start time, read now: the token resumes exactly these
    /// processes, and never a later process given the same pid.
    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move { pause_token(targets) })
    }

    fn inject<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            signal_targets(targets, Signal::SIGSTOP)?;
            Ok(())
        })
    }
    fn needs_duration(&self) -> bool {
        true
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Local
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.selector().validate()
    }
}

/// The pause's revert token: every target with its start time, read now, so the revert resumes
/// exactly these processes and never a later process given the same pid.
fn pause_token(targets: &[Target]) -> Result<Option<RevertToken>> {
    let planned: Vec<PausedProcess> = targets
        .iter()
        .filter_map(|t| t.id.parse::<u32>().ok())
        .filter_map(|pid| {
            Stat::read(pid).map(|stat| PausedProcess {
                pid,
                starttime: stat.starttime,
            })
        })
        .collect();
    Ok(Some(RevertToken::new(PAUSE_KIND, &&planned)?))
}

/// Nothing to revert for a kill: the signal is delivered and the process handles it (or dies).
pub async fn revert_kill(_env: &FaultEnv, _token: &RevertToken) -> Result<()> {
    Ok(())
}

/// Resumes the processes a `process-pause` token names, with SIGCONT. Idempotent: a process
/// that is gone, or whose pid now belongs to a different process (the start time differs),
/// counts as reverted; a second SIGCONT is harmless. Fails, naming the pids, only when a
/// process that is still ours could not be signalled (e.g. EPERM).
pub async fn revert_pause(_env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let paused: Vec<PausedProcess> = token.data()?;
    // Check every pid before signalling any: a corrupt token naming pid 0 or -1 would otherwise
    // signal a whole process group, or every process we may signal.
    if let Some(bad) = paused.iter().find(|p| to_pid(p.pid).is_none()) {
        return Err(FaultError::InvalidSelection(format!(
            "revert token of {} names pid {}, which rattle never signals",
            token.kind, bad.pid
        )));
    }
    resume(&paused)
}

/// One process stopped by `process-pause`, as kept in its revert token. The start time (field
/// 22 of /proc/<pid>/stat, in clock ticks since boot) tells this process from a later one that
/// was given the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PausedProcess {
    pid: u32,
    starttime: u64,
}

/// A signal as written in the experiment file: a name, with or without `SIG`, in any case
/// (`TERM`, `SIGTERM`, `term`), or a number (`15`). Kept as written so that an unknown name is a
/// validation error that names the field rather than a parse error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalArg(String);

impl SignalArg {
    /// A signal as written (checked by [`SignalArg::to_signal`], not here).
    pub fn new(written: impl Into<String>) -> Self {
        Self(written.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The signal it names. The message says what was wrong, without the field name.
    pub fn to_signal(&self) -> std::result::Result<Signal, String> {
        let written = self.0.trim();
        if !written.is_empty() && written.bytes().all(|b| b.is_ascii_digit()) {
            return written
                .parse::<i32>()
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| Signal::try_from(n).ok())
                .ok_or_else(|| format!("{written} is not a signal number this system knows"));
        }
        let upper = written.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        full.parse::<Signal>().map_err(|_| {
            format!(
                "unknown signal {written:?}: expected a name like KILL, TERM, INT, HUP, USR1 \
                 (SIG prefix optional) or a number"
            )
        })
    }
}

impl Default for SignalArg {
    fn default() -> Self {
        Self::new("KILL")
    }
}

impl fmt::Display for SignalArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SignalArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SignalArg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name like TERM or a signal number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<SignalArg, E> {
                Ok(SignalArg::new(s))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<SignalArg, E> {
                Ok(SignalArg::new(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<SignalArg, E> {
                // Kept, so that validation reports it with the field's name.
                Ok(SignalArg::new(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for SignalArg {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for SignalArg {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Signal")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "a signal name (KILL, TERM, SIGTERM, INT, HUP, USR1...) or number",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*([A-Za-z0-9+]+|\\d+)\\s*$" },
                { "type": "integer", "minimum": 1, "maximum": 64 }
            ]
        })
    }
}

/// The selector fields both kinds list, borrowed from either spec, so validation and discovery
/// exist once.
#[derive(Debug, Clone, Copy)]
struct Selector<'a> {
    pid: Option<u32>,
    pid_file: Option<&'a Path>,
    name: Option<&'a str>,
    pattern: Option<&'a str>,
    mode: &'a Mode,
}

impl Selector<'_> {
    /// What can be checked without touching the system. Messages name the field.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.pid.is_none()
            && self.pid_file.is_none()
            && self.name.is_none()
            && self.pattern.is_none()
        {
            return Err(
                "one of `pid`, `pid_file`, `name` or `match` is required to select processes"
                    .to_string(),
            );
        }
        if self.pid.is_some() && self.pid_file.is_some() {
            return Err("`pid` and `pid_file`: give one or the other, not both".to_string());
        }
        if let Some(pid) = self.pid {
            check_pid(pid).map_err(|e| format!("`pid`: {e}"))?;
        }
        if self.pid_file.is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("`pid_file`: must not be empty".to_string());
        }
        if let Some(name) = self.name {
            if name.is_empty() {
                return Err("`name`: must not be empty".to_string());
            }
            if name.contains('/') {
                return Err(format!(
                    "`name`: {name:?} contains '/', but a name is compared with the executable's \
                     file name only; use `match` to select by path"
                ));
            }
        }
        if let Some(pattern) = self.pattern {
            Regex::new(pattern).map_err(|e| format!("`match`: invalid regex: {e}"))?;
        }
        match *self.mode {
            Mode::Fixed(0) => Err("`mode`: fixed: 0 selects no process".to_string()),
            Mode::Percent(p) | Mode::MaxPercent(p) if p.get() <= 0.0 => {
                Err(format!("`mode`: {p} selects no process"))
            }
            _ => Ok(()),
        }
    }

    /// Scans /proc, keeps the processes every given selector matches and rattle may touch,
    /// and applies the mode. Assumes `Selector::validate` passed.
    fn resolve(&self, rng: &mut StdRng) -> Result<Vec<Target>> {
        let pattern =
            self.pattern.map(Regex::new).transpose().map_err(|e| {
                FaultError::InvalidSelection(format!("`match`: invalid regex: {e}"))
            })?;
        let file_pid = self.pid_file.map(read_pid_file).transpose()?;
        let wanted_pid = self.pid.or(file_pid);
        let describe = || self.describe(file_pid);

        let protected = Protected::now();
        let mut eligible = Vec::new();
        let mut left_out = Vec::new();
        // A pid names at most one process: read it alone rather than all of /proc, which is
        // most of the time between a fault's instant and its signal (issue #22).
        let procs = match wanted_pid {
            // /proc/<tid> of a thread is readable but not listed: a scan never finds one.
            Some(pid) if is_listed_process(pid) => ProcInfo::read(pid).into_iter().collect(),
            Some(_) => Vec::new(),
            None => scan_processes()?,
        };
        for proc in procs {
            let name_ok = self.name.is_none_or(|n| proc.has_name(n));
            let pid_ok = wanted_pid.is_none_or(|p| p == proc.pid);
            let pattern_ok = pattern.as_ref().is_none_or(|r| r.is_match(&proc.cmdline()));
            if !(name_ok && pid_ok && pattern_ok) {
                continue;
            }
            match protected.reason(&proc) {
                None => eligible.push(proc),
                Some(why) => left_out.push(format!("pid {} ({why})", proc.pid)),
            }
        }
        if eligible.is_empty() {
            let mut msg = format!("no process matches {}", describe());
            if !left_out.is_empty() {
                let shown = left_out.len().min(5);
                msg.push_str(&format!(
                    "; left out: {}{}",
                    left_out[..shown].join(", "),
                    if left_out.len() > shown { ", ..." } else { "" }
                ));
            }
            return Err(FaultError::NoTarget(msg));
        }
        // /proc lists in pid order already, but the seeded choice is only reproducible if the
        // order is guaranteed, so do not rely on readdir.
        eligible.sort_by_key(|p| p.pid);
        let found = eligible.len();
        let chosen = select::choose(eligible, self.mode, rng).map_err(|e| {
            FaultError::NoTarget(format!("{found} process(es) match {}, but {e}", describe()))
        })?;
        Ok(chosen.iter().map(ProcInfo::target).collect())
    }

    /// The selector in words, for error messages.
    fn describe(&self, file_pid: Option<u32>) -> String {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if let Some(path) = self.pid_file {
            match file_pid {
                Some(pid) => parts.push(format!("pid_file {} (pid {pid})", path.display())),
                None => parts.push(format!("pid_file {}", path.display())),
            }
        }
        if let Some(name) = self.name {
            parts.push(format!("name {name:?}"));
        }
        if let Some(pattern) = self.pattern {
            // Not `{:?}`: Debug would double every backslash of the regex the user wrote.
            parts.push(format!("match \"{pattern}\""));
        }
        parts.join(" and ")
    }
}

/// Why `pid` may never be a target, if it may not.
fn check_pid(pid: u32) -> std::result::Result<(), String> {
    match pid {
        0 => Err("0 is not a process (signalling it would hit rattle's own process group)".into()),
        1 => Err("1 is init; rattle never signals it".into()),
        p if i32::try_from(p).is_err() => Err(format!("{p} is not a valid pid")),
        _ => Ok(()),
    }
}

/// `pid` as nix wants it, if rattle may signal it at all. Negative or zero pids address
/// process groups or everything, so they never get through.
fn to_pid(pid: u32) -> Option<Pid> {
    check_pid(pid).ok()?;
    i32::try_from(pid).ok().map(Pid::from_raw)
}

/// Reads the pid written in a pid file (surrounding whitespace allowed).
fn read_pid_file(path: &Path) -> Result<u32> {
    // Bounded, regular files only (issue #19): a pid file naming /dev/zero must not hang.
    let text = crate::fsutil::read_text_bounded(path, 4096).map_err(|source| FaultError::Io {
        what: format!("reading pid_file {}", path.display()),
        source,
    })?;
    let trimmed = text.trim();
    let pid: u32 = trimmed.parse().map_err(|_| {
        let shown: String = trimmed.chars().take(40).collect();
        FaultError::NoTarget(format!(
            "pid_file {} does not hold a pid: {shown:?}",
            path.display()
        ))
    })?;
    check_pid(pid)
        .map_err(|e| FaultError::InvalidSelection(format!("pid_file {}: {e}", path.display())))?;
    Ok(pid)
}

/// What /proc says about one process, as far as selection needs.
#[derive(Debug, Clone)]
struct ProcInfo {
    pid: u32,
    stat: Stat,
    comm: String,
    argv: Vec<String>,
}

impl ProcInfo {
    /// Reads /proc/<pid>. `None` when the process vanished meanwhile or cannot be read; either
    /// way it cannot be selected, and a scan must not fail because of it.
    fn read(pid: u32) -> Option<Self> {
        let dir = Path::new("/proc").join(pid.to_string());
        let stat = Stat::parse(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
        let raw = std::fs::read(dir.join("cmdline")).ok()?;
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        Some(Self {
            pid,
            stat,
            comm: comm.trim_end_matches('\n').to_string(),
            argv: split_cmdline(&raw),
        })
    }

    /// The arguments joined by spaces: what `match` runs over and what reports show.
    fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    /// Does `name` equal the kernel's name or the file name of argv[0]?
    fn has_name(&self, name: &str) -> bool {
        self.comm == name
            || self
                .argv
                .first()
                .and_then(|a0| a0.rsplit('/').next())
                .is_some_and(|base| base == name)
    }

    fn target(&self) -> Target {
        Target {
            kind: TARGET_KIND.to_string(),
            id: self.pid.to_string(),
            description: truncate(&self.cmdline(), DESCRIPTION_MAX),
        }
    }
}

/// The fields of /proc/<pid>/stat that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// R, S, D, T, t, Z, X...
    state: char,
    ppid: u32,
    /// Clock ticks after boot at which the process started.
    starttime: u64,
}

impl Stat {
    /// Parses a stat line. The name (field 2) is in parentheses and may itself hold spaces and
    /// parentheses, so fields are counted from the last `)`.
    fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); field N is fields[N - 3].
        Some(Self {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            starttime: fields.get(19)?.parse().ok()?,
        })
    }

    fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Splits a NUL-separated /proc cmdline. Processes that rewrite their title (nginx, postgres)
/// may leave one long argument with spaces; that is kept as it is.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Every process /proc lists that could be read, in pid order.
fn scan_processes() -> Result<Vec<ProcInfo>> {
    let entries = std::fs::read_dir("/proc").map_err(|source| FaultError::Io {
        what: "listing /proc".to_string(),
        source,
    })?;
    let mut procs: Vec<ProcInfo> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(ProcInfo::read)
        .collect();
    procs.sort_by_key(|p| p.pid);
    Ok(procs)
}

/// Is `pid` a process (a thread group leader), as a scan of /proc would list it?
fn is_listed_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .is_some_and(|t| t.trim() == pid.to_string())
    })
}

/// The processes rattle must never signal, computed once per resolve or inject.
struct Protected {
    own: u32,
    ancestors: BTreeSet<u32>,
}

impl Protected {
    fn now() -> Self {
        let own = std::process::id();
        let mut ancestors = BTreeSet::new();
        let mut pid = own;
        // Bounded in case /proc shows a cycle (it should not) or a very deep tree.
        for _ in 0..4096 {
            let Some(stat) = Stat::read(pid) else { break };
            if stat.ppid == 0 || !ancestors.insert(stat.ppid) {
                break;
            }
            pid = stat.ppid;
        }
        Self { own, ancestors }
    }

    /// Why `proc` is not a candidate, if it is not.
    fn reason(&self, proc: &ProcInfo) -> Option<&'static str> {
        if proc.stat.is_dead() {
            Some("already exited")
        } else if proc.argv.is_empty() {
            Some("kernel thread")
        } else {
            self.reason_pid(proc.pid)
        }
    }

    fn reason_pid(&self, pid: u32) -> Option<&'static str> {
        if pid <= 1 {
            Some("init")
        } else if pid == self.own {
            Some("rattle itself")
        } else if self.ancestors.contains(&pid) {
            Some("an ancestor of rattle")
        } else {
            None
        }
    }
}

/// Sends `sig` to each target that is still the process it was resolved as. Returns what was
/// signalled, with start times. Targets already gone are skipped; if all are gone that is an
/// error, since the fault then did nothing. If some signal fails otherwise (EPERM), processes
/// already stopped by this call are resumed before the error is returned, so a failed pause
/// never half-applies.
fn signal_targets(targets: &[Target], sig: Signal) -> Result<Vec<PausedProcess>> {
    let protected = Protected::now();
    let mut planned = Vec::with_capacity(targets.len());
    // Check every target before signalling any, so a bad one does not leave others signalled.
    for t in targets {
        let pid = (t.kind == TARGET_KIND)
            .then(|| t.id.parse::<u32>().ok())
            .flatten()
            .filter(|&p| to_pid(p).is_some())
            .ok_or_else(|| {
                FaultError::InvalidSelection(format!("{t} is not a process rattle can signal"))
            })?;
        if let Some(why) = protected.reason_pid(pid) {
            return Err(FaultError::InvalidSelection(format!(
                "refusing to signal pid {pid}: {why}"
            )));
        }
        planned.push((pid, t));
    }

    let mut sent = Vec::new();
    let mut gone = Vec::new();
    let mut failed = Vec::new();
    for (pid, target) in planned {
        // Pids are reused: only signal the process still running the command line resolved.
        let current = ProcInfo::read(pid)
            .filter(|p| !p.stat.is_dead() && p.target().description == target.description);
        let (Some(current), Some(nix_pid)) = (current, to_pid(pid)) else {
            gone.push(pid);
            continue;
        };
        match signal::kill(nix_pid, sig) {
            Ok(()) => sent.push(PausedProcess {
                pid,
                starttime: current.stat.starttime,
            }),
            Err(Errno::ESRCH) => gone.push(pid),
            Err(e) => failed.push((pid, e)),
        }
    }

    if let Some(&(_, errno)) = failed.first() {
        let mut what = format!(
            "sending {sig} to pid(s) {}",
            join_pids(failed.iter().map(|f| f.0))
        );
        if sig == Signal::SIGSTOP && !sent.is_empty() {
            let undo = resume(&sent);
            what.push_str(&format!(
                "; resumed the {} already stopped{}",
                sent.len(),
                if undo.is_err() {
                    " (partly failed)"
                } else {
                    ""
                }
            ));
        } else if !sent.is_empty() {
            what.push_str(&format!(
                "; already signalled: {}",
                join_pids(sent.iter().map(|s| s.pid))
            ));
        }
        return Err(FaultError::Sys {
            what,
            source: errno,
        });
    }
    if sent.is_empty() {
        return Err(FaultError::NoTarget(format!(
            "every target had exited (or its pid was reused) before {sig}: pid(s) {}",
            join_pids(gone.into_iter())
        )));
    }
    Ok(sent)
}

/// SIGCONT to each paused process still alive with the start time it was paused with.
fn resume(paused: &[PausedProcess]) -> Result<()> {
    let mut failed = Vec::new();
    for p in paused {
        let Some(pid) = to_pid(p.pid) else { continue };
        match Stat::read(p.pid) {
            // Gone, or the pid now names another process: nothing of ours to resume.
            None => continue,
            Some(stat) if stat.starttime != p.starttime || stat.is_dead() => continue,
            Some(_) => {}
        }
        match signal::kill(pid, Signal::SIGCONT) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => failed.push((p.pid, e)),
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(&(_, errno)) => Err(FaultError::Sys {
            what: format!(
                "resuming (SIGCONT) paused pid(s) {}",
                join_pids(failed.iter().map(|f| f.0))
            ),
            source: errno,
        }),
    }
}

fn join_pids(pids: impl Iterator<Item = u32>) -> String {
    pids.map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill_yaml(yaml: &str) -> std::result::Result<KillSpec, String> {
        serde_saphyr::from_str::<KillSpec>(yaml).map_err(|e| e.to_string())
    }

    fn pause_yaml(yaml: &str) -> std::result::Result<PauseSpec, String> {
        serde_saphyr::from_str::<PauseSpec>(yaml).map_err(|e| e.to_string())
    }

    fn kill_validate(yaml: &str) -> std::result::Result<(), String> {
        kill_yaml(yaml)?.validate()
    }

    #[test]
    fn parses_the_documented_shapes() {
        let kill = kill_yaml("{ match: \"rattle demo worker\", mode: one, signal: KILL }");
        let kill = kill.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kill.pattern.as_deref(), Some("rattle demo worker"));
        assert_eq!(kill.mode, Mode::One);
        assert_eq!(kill.signal.to_signal(), Ok(Signal::SIGKILL));
        assert!(!kill.needs_duration());

        let pause = pause_yaml("{ name: nginx, mode: all }").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pause.name.as_deref(), Some("nginx"));
        assert_eq!(pause.mode, Mode::All);
        assert!(pause.needs_duration());

        let defaults = kill_yaml("{ pid: 1234 }").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(defaults.mode, Mode::One);
        assert_eq!(defaults.signal.to_signal(), Ok(Signal::SIGKILL));

        let numeric = kill_yaml("{ pid: 1234, signal: 15, mode: { fixed: 2 } }");
        let numeric = numeric.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(numeric.signal.to_signal(), Ok(Signal::SIGTERM));
        assert_eq!(numeric.mode, Mode::Fixed(2));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = kill_yaml("{ match: x, singal: TERM }")
            .err()
            .unwrap_or_default();
        assert!(err.contains("singal"), "{err}");
        // `signal` belongs to process-kill only.
        let err = pause_yaml("{ match: x, signal: TERM }")
            .err()
            .unwrap_or_default();
        assert!(err.contains("signal"), "{err}");
    }

    #[test]
    fn schema_describes_every_field() {
        let schema = serde_json::to_value(schemars::schema_for!(KillSpec)).unwrap_or_default();
        for field in ["pid", "pid_file", "name", "match", "mode", "signal"] {
            let described = schema["properties"][field]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty());
            assert!(described, "{field}: {}", schema["properties"][field]);
        }
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    }

    #[test]
    fn signal_names() {
        for (written, sig) in [
            ("KILL", Signal::SIGKILL),
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("term", Signal::SIGTERM),
            (" sigint ", Signal::SIGINT),
            ("HUP", Signal::SIGHUP),
            ("USR1", Signal::SIGUSR1),
            ("9", Signal::SIGKILL),
        ] {
            assert_eq!(SignalArg::new(written).to_signal(), Ok(sig), "{written:?}");
        }
        for bad in ["", "BOGUS", "SIG", "0", "-9", "999", "9x"] {
            assert!(SignalArg::new(bad).to_signal().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| kill_validate(yaml).err().unwrap_or_default();
        assert!(err("{ mode: all }").contains("`match`"));
        assert!(err("{ match: \"(\" }").starts_with("`match`: invalid regex"));
        assert!(err("{ match: x, signal: BOGUS }").starts_with("`signal`"));
        assert!(err("{ match: x, signal: STOP }").contains("process-pause"));
        assert!(err("{ pid: 0 }").starts_with("`pid`"));
        assert!(err("{ pid: 1 }").starts_with("`pid`"));
        assert!(err("{ pid: 4000000000 }").starts_with("`pid`"));
        assert!(err("{ pid: 12, pid_file: /run/x.pid }").contains("`pid_file`"));
        assert!(err("{ name: \"\" }").starts_with("`name`"));
        assert!(err("{ name: /usr/bin/sleep }").starts_with("`name`"));
        assert!(err("{ name: x, mode: { fixed: 0 } }").starts_with("`mode`"));
        assert!(err("{ name: x, mode: { percent: 0% } }").starts_with("`mode`"));
        assert_eq!(
            kill_validate("{ name: x, match: y, signal: SIGUSR2 }"),
            Ok(())
        );
        let pause = pause_yaml("{ match: \"[\" }").unwrap_or_else(|e| panic!("{e}"));
        assert!(pause.validate().is_err_and(|e| e.starts_with("`match`")));
    }

    #[test]
    fn stat_parsing_survives_odd_names() {
        let mut line = "4242 (a) (b c) S 17".to_string();
        for field in 5..=21 {
            line.push_str(&format!(" {field}"));
        }
        line.push_str(" 987654 0 0\n");
        assert_eq!(
            Stat::parse(&line),
            Some(Stat {
                state: 'S',
                ppid: 17,
                starttime: 987654
            })
        );
        assert_eq!(Stat::parse("12 (x) S"), None);
        assert_eq!(Stat::parse("garbage"), None);
        let own = Stat::read(std::process::id());
        assert!(own.is_some_and(|s| !s.is_dead()));
    }

    #[test]
    fn cmdlines_and_descriptions() {
        assert_eq!(split_cmdline(b"sleep\x0030\x00"), vec!["sleep", "30"]);
        assert_eq!(
            split_cmdline(b"nginx: worker process"),
            vec!["nginx: worker process"]
        );
        assert!(split_cmdline(b"").is_empty());
        let long = "é".repeat(300);
        let cut = truncate(&long, DESCRIPTION_MAX);
        assert_eq!(cut.chars().count(), DESCRIPTION_MAX);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", DESCRIPTION_MAX), "short");
    }

    #[test]
    fn protects_self_and_ancestors() {
        let protected = Protected::now();
        assert_eq!(
            protected.reason_pid(std::process::id()),
            Some("rattle itself")
        );
        assert_eq!(protected.reason_pid(1), Some("init"));
        let parent = Stat::read(std::process::id()).map(|s| s.ppid).unwrap_or(0);
        if parent > 1 {
            assert_eq!(protected.reason_pid(parent), Some("an ancestor of rattle"));
        }
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_before_signalling() {
        let token = |data| RevertToken {
            kind: "process-pause".to_string(),
            data,
        };
        let garbage =
            revert_pause(&FaultEnv::new(), &token(serde_json::json!({ "pid": "x" }))).await;
        assert!(matches!(garbage, Err(FaultError::BadToken { .. })));
        for pid in [0u64, 1, 3_000_000_000] {
            let r = revert_pause(
                &FaultEnv::new(),
                &token(serde_json::json!([{ "pid": pid, "starttime": 1 }])),
            )
            .await;
            assert!(
                matches!(r, Err(FaultError::InvalidSelection(_))),
                "{pid}: {r:?}"
            );
        }
        assert!(
            revert_pause(&FaultEnv::new(), &token(serde_json::json!([])))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn refuses_hand_made_targets_it_must_not_touch() {
        let spec = kill_yaml("{ match: x, signal: 0 }").unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.validate().is_err());
        let spec = kill_yaml("{ match: x, signal: CONT }").unwrap_or_else(|e| panic!("{e}"));
        for id in ["0", "1", "-1", "abc", &std::process::id().to_string()] {
            let target = Target {
                kind: TARGET_KIND.to_string(),
                id: id.to_string(),
                description: String::new(),
            };
            let r = spec
                .inject(&FaultEnv::new(), std::slice::from_ref(&target))
                .await;
            assert!(
                matches!(r, Err(FaultError::InvalidSelection(_))),
                "{id}: {r:?}"
            );
        }
    }
}
