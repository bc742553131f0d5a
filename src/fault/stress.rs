//! `stress`: CPU and memory pressure on the machine rattle runs on, for the entry's duration.
//!
//! The fault runs `rattle stress` (this very executable, [`std::env::current_exe`]) as a child
//! process rather than threads of the run: its CPU time and resident memory are then a process
//! of their own that tools (and the tests) can measure, a crash of the stress cannot take the
//! run down, and the engine is the one `pod-stress` runs in a pod. The child gets the entry's
//! duration as its own deadline, so it stops by itself even if the run is killed.
//!
//! The revert token cannot hold the child's pid (the token is journaled before the child
//! exists), so it holds a unique tag the child carries on its command line (`--tag`). A revert
//! scans /proc for `rattle stress` processes of this uid with that tag, reads each one's start
//! time, sends SIGTERM, and waits until that very process (pid *and* start time) is gone,
//! then SIGKILLs a straggler: it never signals a recycled pid, and `rattle recover` after a
//! crash finds the leftover the same way.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{
    BoxFuture, Fault, FaultEnv, FaultError, Locality, ResolveCtx, Result, RevertToken, Target,
};
use crate::experiment::{HumanDuration, Percent};
use crate::stress::{ByteSize, StressConfig};

const KIND: &str = "stress";

/// How long inject waits for the child to say it runs.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a revert waits after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// `stress`: burns CPU and holds memory on this machine for the entry's `duration`, in a
/// `rattle stress` child process that is stopped on revert (and stops itself at the end).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StressSpec {
    /// CPU worker threads, each burning `cpu_load` of one core. Default 0 (no CPU stress).
    #[serde(default)]
    pub cpu_workers: u32,
    /// The share of one core each CPU worker burns, a whole percentage from 1% to 100%.
    /// Default 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_load: Option<Percent>,
    /// Memory to allocate and keep resident: bytes or a size like `256MiB`, `1GiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Grow the CPU load and the memory linearly from nothing over this time. Default: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<HumanDuration>,
    /// The entry's duration, given by the plan ([`Fault::set_duration`]).
    #[serde(skip)]
    #[schemars(skip)]
    duration: Option<Duration>,
}

/// The stress revert token: the tag the child carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    tag: String,
}

impl StressSpec {
    /// The engine's settings; `duration` is the entry's (the longest allowed while unknown:
    /// then `validate` checks everything else, and the entry's check, with it, the ramp).
    pub fn config(&self) -> std::result::Result<StressConfig, String> {
        let load = self.cpu_load.map(|p| p.get()).unwrap_or(100.0);
        if load.fract() != 0.0 || !(1.0..=100.0).contains(&load) {
            return Err(format!(
                "`cpu_load`: {load}% is not a whole percentage from 1% to 100%"
            ));
        }
        Ok(StressConfig {
            cpu_workers: self.cpu_workers,
            cpu_load: load as u32,
            memory: self.memory.map(ByteSize::get).unwrap_or(0),
            ramp: self.ramp.map(|r| r.get()).unwrap_or_default(),
            duration: self.duration.unwrap_or(crate::stress::MAX_DURATION),
        })
    }

    /// The child's argument vector (after the executable), with its tag.
    pub fn args(&self, tag: &str) -> std::result::Result<Vec<String>, String> {
        let cfg = self.config()?;
        Ok(vec![
            "stress".into(),
            "--cpu-workers".into(),
            cfg.cpu_workers.to_string(),
            "--cpu-load".into(),
            cfg.cpu_load.to_string(),
            "--memory".into(),
            cfg.memory.to_string(),
            "--ramp".into(),
            millis(cfg.ramp),
            "--duration".into(),
            millis(cfg.duration),
            "--tag".into(),
            tag.to_string(),
        ])
    }
}

/// A duration as `rattle stress` reads it, rounded up to a whole millisecond.
fn millis(d: Duration) -> String {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    format!("{ms}ms")
}

/// A tag no other stress of this machine carries: this process, the time, a counter.
fn new_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The tag of the one target [`StressSpec::resolve`] names.
fn tag_of(targets: &[Target]) -> Result<&str> {
    match targets {
        [t] if t.kind == KIND && !t.id.is_empty() => Ok(&t.id),
        _ => Err(FaultError::InvalidSelection(
            "stress acts on the one new process its resolve names".into(),
        )),
    }
}

impl Fault for StressSpec {
    /// One target: the process to start, named by its fresh tag (which the token and the
    /// child's command line then carry).
    fn resolve<'a>(&'a self, _ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let cfg = self.config().map_err(FaultError::InvalidSelection)?;
            Ok(vec![Target {
                kind: KIND.into(),
                id: new_tag(),
                description: format!("a new `rattle stress` process: {}", cfg.describe()),
            }])
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let tag = tag_of(targets)?.to_string();
            Ok(Some(RevertToken::new(KIND, &Token { tag })?))
        })
    }

    fn inject<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let tag = tag_of(targets)?;
            if self.duration.is_none() {
                return Err(FaultError::InvalidSelection(
                    "stress needs the entry's `duration`".into(),
                ));
            }
            self.validate().map_err(FaultError::InvalidSelection)?;
            let args = self.args(tag).map_err(FaultError::InvalidSelection)?;
            spawn(&args).await
        })
    }

    fn needs_duration(&self) -> bool {
        true
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Local
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let cfg = self.config()?;
        cfg.validate().map_err(|e| {
            let m = e.to_string();
            // The engine names its settings as the fault's fields are named; quote them.
            match m.split_once(": ") {
                Some((field, rest)) if !field.contains(' ') => format!("`{field}`: {rest}"),
                _ => m,
            }
        })
    }

    fn set_duration(&mut self, duration: Option<Duration>) {
        self.duration = duration;
    }
}

/// Starts `rattle stress` with `args` and waits for its first line (it runs). The child is
/// reaped by a task of its own; its later output is read and dropped.
async fn spawn(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| FaultError::Io {
        what: "finding rattle's own executable to run `rattle stress`".into(),
        source,
    })?;
    let mut child = tokio::process::Command::new(&exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| FaultError::Io {
            what: format!("starting {} stress", exe.display()),
            source,
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.start_kill();
        return Err(FaultError::InvalidSelection(
            "stress: no pipes to the child".into(),
        ));
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let started = matches!(&first, Ok(Ok(Some(l))) if l.starts_with("rattle stress: pid"));
    if !started {
        let _ = child.start_kill();
        let mut err = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            (&mut stderr).take(4096).read_to_end(&mut err),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        let why = String::from_utf8_lossy(&err).trim().to_string();
        return Err(FaultError::Command(format!(
            "`rattle stress` did not start{}",
            if why.is_empty() {
                match first {
                    Err(_) => format!(" within {}s", START_TIMEOUT.as_secs()),
                    _ => String::new(),
                }
            } else {
                format!(": {why}")
            }
        )));
    }
    tokio::spawn(async move {
        let drain_out = async { while let Ok(Some(_)) = lines.next_line().await {} };
        let drain_err = async {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        };
        tokio::join!(drain_out, drain_err);
        let _ = child.wait().await;
    });
    Ok(())
}

/// Stops the `rattle stress` process a token names (SIGTERM, then SIGKILL after a grace) and
/// waits until it is gone. Idempotent: no such process is a success.
pub async fn revert(_env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    if t.tag.is_empty() {
        return Err(FaultError::InvalidSelection(
            "stress revert token with an empty tag".into(),
        ));
    }
    let found = tagged(&t.tag);
    for p in &found {
        send(p, Signal::SIGTERM)?;
    }
    let deadline = Instant::now() + TERM_GRACE;
    loop {
        let alive: Vec<&Proc> = found.iter().filter(|p| p.alive()).collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for p in alive {
                send(p, Signal::SIGKILL)?;
            }
            // SIGKILL cannot be caught: the process is gone once the kernel tears it down.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process found by its tag: its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    starttime: u64,
}

impl Proc {
    /// Is this very process (not a later one given its pid) still running (not a zombie)?
    fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(state, start)| {
            start == self.starttime && !matches!(state, 'Z' | 'X' | 'x')
        })
    }
}

fn send(p: &Proc, sig: Signal) -> Result<()> {
    if !p.alive() {
        return Ok(());
    }
    match signal::kill(Pid::from_raw(p.pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(FaultError::Sys {
            what: format!("sending {sig} to the stress process {}", p.pid),
            source,
        }),
    }
}

/// The `rattle stress` processes of this uid whose command line carries `--tag <tag>`.
fn tagged(tag: &str) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let uid = nix::unistd::getuid().as_raw();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid > 1 && pid != std::process::id() as i32)
        .filter(|&pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            let Ok(raw) = std::fs::read(dir.join("cmdline")) else {
                return false;
            };
            let argv: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            let is_stress = argv.get(1).is_some_and(|a| *a == b"stress");
            let has_tag = argv
                .windows(2)
                .any(|w| w[0] == b"--tag" && w[1] == tag.as_bytes());
            is_stress && has_tag && owner(&dir) == Some(uid)
        })
        .filter_map(|pid| {
            let (state, starttime) = stat(pid)?;
            (!matches!(state, 'Z' | 'X' | 'x')).then_some(Proc { pid, starttime })
        })
        .collect()
}

/// The real uid owning a /proc/<pid> directory's process.
fn owner(dir: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(dir.join("status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// State and start time (fields 3 and 22 of /proc/<pid>/stat).
fn stat(pid: i32) -> Option<(char, u64)> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> std::result::Result<StressSpec, String> {
        serde_saphyr::from_str::<StressSpec>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_and_builds_the_child_command() {
        let mut s = spec("{ cpu_workers: 2, cpu_load: 50%, memory: 256MiB, ramp: 2s }")
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_duration(Some(Duration::from_millis(30_500)));
        assert_eq!(s.validate(), Ok(()));
        let args = s.args("t1").unwrap_or_default();
        assert_eq!(
            args.join(" "),
            "stress --cpu-workers 2 --cpu-load 50 --memory 268435456 --ramp 2000ms \
             --duration 30500ms --tag t1"
        );
        let bytes = spec("{ memory: 1048576 }").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.config().map(|c| c.memory), Ok(1 << 20));
    }

    #[test]
    fn validation_names_the_field() {
        let err = |y: &str| spec(y).and_then(|s| s.validate()).err().unwrap_or_default();
        assert!(err("{ cpu_workers: 1, cpu_load: 0% }").starts_with("`cpu_load`"));
        assert!(err("{ cpu_workers: 1, cpu_load: 12.5% }").starts_with("`cpu_load`"));
        assert!(err("{ cpu_workers: 100000 }").starts_with("`cpu_workers`"));
        assert!(err("{ memory: 1000TiB }").starts_with("`memory`"));
        assert!(err("{}").contains("nothing to stress"));
        assert!(err("{ memory: 12XB }").contains("unknown unit"));
        assert!(err("{ memory: -5 }").contains("negative"));
        assert!(err("{ cpu_worker: 1 }").contains("cpu_worker"));
    }

    #[tokio::test]
    async fn revert_of_nothing_succeeds() {
        let token =
            RevertToken::new(KIND, &Token { tag: new_tag() }).unwrap_or_else(|e| panic!("{e}"));
        assert!(revert(&FaultEnv::new(), &token).await.is_ok());
        let empty =
            RevertToken::new(KIND, &Token { tag: String::new() }).unwrap_or_else(|e| panic!("{e}"));
        assert!(revert(&FaultEnv::new(), &empty).await.is_err());
    }
}
