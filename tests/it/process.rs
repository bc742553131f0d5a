//! Integration tests of `process-kill` and `process-pause` against real processes.
//!
//! Each test spawns its own `sleep 30` children with a unique argv[0] marker, so tests running
//! in parallel (and anything else on the machine) never select each other's processes. Every
//! child is owned by a [`Sleeper`] guard whose Drop kills and reaps it by pid, so a failing
//! assertion never leaves a process behind. Waits poll /proc with a bound and assert states,
//! never durations.

use std::collections::BTreeSet;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rattle::experiment::{Mode, Percent};
use rattle::fault::process::{KillSpec, PauseSpec, SignalArg};
use rattle::fault::{Fault, FaultEnv, FaultError, ResolveCtx, RevertToken, Target};

async fn revert(token: &RevertToken) -> Result<(), FaultError> {
    rattle::fault::revert(&FaultEnv::new(), token).await
}

/// Upper bound on any wait for the kernel to reflect a signal in /proc.
const WAIT: Duration = Duration::from_secs(10);

/// A `sleep 30` child, killed and reaped when dropped.
struct Sleeper {
    child: Child,
}

impl Sleeper {
    /// Runs `program 30` with `argv0` as its argv[0], so its command line is `<argv0> 30`.
    fn spawn_as(program: &Path, argv0: &str) -> Sleeper {
        let child = Command::new(program)
            .arg0(argv0)
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        // std's spawn returns after the exec succeeded, so /proc already shows the new cmdline.
        Sleeper { child }
    }

    fn spawn(argv0: &str) -> Sleeper {
        Self::spawn_as(Path::new("sleep"), argv0)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the child to exit and returns the signal that ended it.
    fn wait_exit_signal(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.signal(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {}: {e}", self.pid()),
            }
        }
        panic!("pid {} did not exit within {WAIT:?}", self.pid());
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // SIGKILL works on stopped processes too; std does not signal a child it already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A marker no other process on the machine has: this test process's pid, a counter, a tag.
fn marker(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "rattle-test-{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn pct(p: f64) -> Percent {
    Percent::new(p).unwrap_or_else(|| panic!("{p} is not a percentage"))
}

fn pause_spec(pattern: &str, mode: Mode) -> PauseSpec {
    PauseSpec {
        pid: None,
        pid_file: None,
        name: None,
        pattern: Some(regex::escape(pattern)),
        mode,
    }
}

fn kill_spec(pattern: &str, mode: Mode, signal: &str) -> KillSpec {
    KillSpec {
        pid: None,
        pid_file: None,
        name: None,
        pattern: Some(regex::escape(pattern)),
        mode,
        signal: SignalArg::new(signal),
    }
}

/// Resolves now. Process faults resolve from /proc without awaiting anything, so one poll
/// completes the future (usable from sync and async tests alike).
fn resolve(fault: &dyn Fault, seed: u64) -> Result<Vec<Target>, FaultError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let env = FaultEnv::new();
    let mut fut = fault.resolve(ResolveCtx {
        rng: &mut rng,
        env: &env,
    });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => panic!("process resolution awaited something"),
    }
}

fn pids(targets: &[Target]) -> BTreeSet<u32> {
    targets
        .iter()
        .map(|t| {
            assert_eq!(t.kind, "process");
            t.id.parse()
                .unwrap_or_else(|e| panic!("target id {:?}: {e}", t.id))
        })
        .collect()
}

fn pids_of(sleepers: &[Sleeper]) -> BTreeSet<u32> {
    sleepers.iter().map(Sleeper::pid).collect()
}

/// The state letter of /proc/<pid>/stat (R, S, T, Z...), or None when the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Polls (bounded) until the process's state satisfies `ok`; returns the last state seen.
fn wait_state(pid: u32, ok: impl Fn(Option<char>) -> bool) -> Option<char> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = state(pid);
        if ok(s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_stopped(s: Option<char>) -> bool {
    s == Some('T')
}

/// Alive and not stopped. Not only S or R: a process just exec'd on a busy machine can be in D
/// (uninterruptible sleep) for a moment.
fn is_running(s: Option<char>) -> bool {
    matches!(s, Some(c) if !matches!(c, 'T' | 't' | 'Z' | 'X' | 'x'))
}

/// The pause's revert token, computed before injecting (as the runner journals it), then the
/// injection.
async fn inject_pause(spec: &PauseSpec, targets: &[Target]) -> Option<RevertToken> {
    let token = spec
        .revert_token(&FaultEnv::new(), targets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spec.inject(&FaultEnv::new(), targets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    token
}

fn paused_token(targets: &[Target], token: Option<RevertToken>) -> RevertToken {
    let token = token.unwrap_or_else(|| panic!("pause of {targets:?} returned no revert token"));
    assert_eq!(token.kind, "process-pause");
    token
}

#[test]
fn match_selects_exactly_the_marked_processes() {
    let m = marker("match");
    let sleepers: Vec<Sleeper> = (0..3).map(|_| Sleeper::spawn(&m)).collect();
    let targets = resolve(&pause_spec(&m, Mode::All), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&targets), pids_of(&sleepers));
    for t in &targets {
        assert_eq!(t.description, format!("{m} 30"));
    }
    // Targets come sorted by pid, so plans and replays list them in one order.
    let ids: Vec<u32> = targets.iter().filter_map(|t| t.id.parse().ok()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn modes_pick_the_right_counts_reproducibly() {
    let m = marker("modes");
    let sleepers: Vec<Sleeper> = (0..4).map(|_| Sleeper::spawn(&m)).collect();
    let all = pids_of(&sleepers);
    let count = |mode: Mode, seed: u64| {
        let picked = pids(&resolve(&pause_spec(&m, mode), seed).unwrap_or_else(|e| panic!("{e}")));
        assert!(picked.is_subset(&all), "{picked:?} not within {all:?}");
        picked.len()
    };
    assert_eq!(count(Mode::One, 1), 1);
    assert_eq!(count(Mode::All, 1), 4);
    assert_eq!(count(Mode::Fixed(3), 1), 3);
    assert_eq!(count(Mode::Percent(pct(50.0)), 1), 2);
    for seed in 0..10 {
        assert!((1..=2).contains(&count(Mode::MaxPercent(pct(50.0)), seed)));
    }

    let twice = |seed| pids(&resolve(&pause_spec(&m, Mode::Fixed(2)), seed).unwrap_or_default());
    assert_eq!(twice(7), twice(7), "same seed, same candidates, same picks");

    let too_many = resolve(&pause_spec(&m, Mode::Fixed(5)), 1);
    assert!(
        matches!(&too_many, Err(FaultError::NoTarget(msg)) if msg.contains("fixed: 5")),
        "{too_many:?}"
    );
    let rounds_to_none = resolve(&pause_spec(&m, Mode::Percent(pct(10.0))), 1);
    assert!(
        matches!(&rounds_to_none, Err(FaultError::NoTarget(msg))
            if msg.contains("percent 10% of 4 candidates selects none")),
        "{rounds_to_none:?}"
    );
}

#[test]
fn nothing_matching_is_an_error() {
    let m = marker("absent");
    let r = resolve(&pause_spec(&m, Mode::All), 1);
    assert!(
        matches!(&r, Err(FaultError::NoTarget(msg))
            if *msg == format!("no process matches match \"{}\"", regex::escape(&m))),
        "{r:?}"
    );
}

#[test]
fn name_matches_argv0_basename_or_comm() {
    let m = marker("name");
    // argv[0] with a directory: the name is compared with its file name.
    let by_argv0 = Sleeper::spawn(&format!("/opt/fake/{m}"));
    let spec = |name: &str, pattern: Option<&str>| PauseSpec {
        pid: None,
        pid_file: None,
        name: Some(name.to_string()),
        pattern: pattern.map(str::to_string),
        mode: Mode::All,
    };
    let found = resolve(&spec(&m, None), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&found), BTreeSet::from([by_argv0.pid()]));

    // The kernel's name (comm) is the executable's file name: run sleep through a symlink with
    // a unique name, at most 15 characters since comm is truncated there.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let comm = format!("rt{}", std::process::id() % 1_000_000_000);
    let link = dir.path().join(&comm);
    let sleep = which_sleep();
    std::os::unix::fs::symlink(&sleep, &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    let by_comm = Sleeper::spawn_as(&link, &format!("{m}-comm"));
    let found = resolve(&spec(&comm, None), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&found), BTreeSet::from([by_comm.pid()]));

    // Several selectors must all match.
    let both = resolve(&spec(&m, Some(&regex::escape(&m))), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&both), BTreeSet::from([by_argv0.pid()]));
    let disjoint = resolve(&spec(&m, Some("this-matches-nothing-of-ours")), 1);
    assert!(
        matches!(disjoint, Err(FaultError::NoTarget(_))),
        "{disjoint:?}"
    );
}

fn which_sleep() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("sleep"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no sleep on PATH"))
}

#[test]
fn pid_and_pid_file_select_one_process() {
    let m = marker("pid");
    let a = Sleeper::spawn(&m);
    let _b = Sleeper::spawn(&m);
    let by_pid = PauseSpec {
        pid: Some(a.pid()),
        pid_file: None,
        name: None,
        pattern: None,
        mode: Mode::All,
    };
    let found = resolve(&by_pid, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&found), BTreeSet::from([a.pid()]));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = dir.path().join("a.pid");
    std::fs::write(&file, format!("{}\n", a.pid())).unwrap_or_else(|e| panic!("write: {e}"));
    let by_file = |path: &Path, pattern: Option<&str>| KillSpec {
        pid: None,
        pid_file: Some(path.to_path_buf()),
        name: None,
        pattern: pattern.map(str::to_string),
        mode: Mode::One,
        signal: SignalArg::default(),
    };
    let found = resolve(&by_file(&file, None), 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&found), BTreeSet::from([a.pid()]));
    let mismatch = resolve(&by_file(&file, Some("not-this-one")), 1);
    assert!(
        matches!(mismatch, Err(FaultError::NoTarget(_))),
        "{mismatch:?}"
    );

    let missing = dir.path().join("missing.pid");
    let r = resolve(&by_file(&missing, None), 1);
    assert!(
        matches!(&r, Err(FaultError::Io { what, .. }) if what.contains("missing.pid")),
        "{r:?}"
    );
    let garbage = dir.path().join("garbage.pid");
    std::fs::write(&garbage, "not a pid").unwrap_or_else(|e| panic!("write: {e}"));
    let r = resolve(&by_file(&garbage, None), 1);
    assert!(
        matches!(&r, Err(FaultError::NoTarget(msg)) if msg.contains("garbage.pid")),
        "{r:?}"
    );
}

#[test]
fn never_selects_itself_its_ancestors_or_init() {
    let own = std::process::id();
    let mut protected = BTreeSet::from([1, own]);
    let mut pid = own;
    while let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_string();
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        .filter(|&p| p > 0 && protected.insert(p))
    {
        pid = ppid;
    }

    // A pattern matching every process: resolve only, never inject.
    let everything =
        pids(&resolve(&pause_spec("", Mode::All), 1).unwrap_or_else(|e| panic!("{e}")));
    assert!(!everything.is_empty());
    let leaked: Vec<_> = everything.intersection(&protected).collect();
    assert!(leaked.is_empty(), "selected protected pids {leaked:?}");

    // A pattern matching this test binary's own command line.
    let own_cmdline = std::fs::read(format!("/proc/{own}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default();
    let argv0 = own_cmdline.split(' ').next().unwrap_or_default();
    assert!(!argv0.is_empty());
    let r = resolve(&pause_spec(argv0, Mode::All), 1);
    match &r {
        Err(FaultError::NoTarget(msg)) => assert!(msg.contains("rattle itself"), "{msg}"),
        Ok(targets) => assert!(!pids(targets).contains(&own), "{targets:?}"),
        Err(e) => panic!("{e}"),
    }

    // By pid, the refusal says why.
    let by_pid = |pid| KillSpec {
        pid: Some(pid),
        pid_file: None,
        name: None,
        pattern: None,
        mode: Mode::One,
        signal: SignalArg::default(),
    };
    let r = resolve(&by_pid(own), 1);
    assert!(
        matches!(&r, Err(FaultError::NoTarget(m)) if m.contains("rattle itself")),
        "{r:?}"
    );
    let parent = protected.iter().copied().find(|&p| p != own && p != 1);
    if let Some(parent) = parent {
        let r = resolve(&by_pid(parent), 1);
        assert!(
            matches!(&r, Err(FaultError::NoTarget(m)) if m.contains("ancestor")),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn kill_with_term_ends_the_targets() {
    let m = marker("kill");
    let mut sleepers: Vec<Sleeper> = (0..2).map(|_| Sleeper::spawn(&m)).collect();
    let spec = kill_spec(&m, Mode::All, "TERM");
    assert!(!spec.needs_duration());
    let targets = resolve(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pids(&targets), pids_of(&sleepers));
    let token = spec
        .revert_token(&FaultEnv::new(), &targets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(token.is_none(), "a kill has nothing to revert");
    spec.inject(&FaultEnv::new(), &targets)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for s in &mut sleepers {
        assert_eq!(s.wait_exit_signal(), Some(libc_sigterm()));
    }
    // Every target gone: injecting again did nothing, which must not pass silently.
    let again = spec.inject(&FaultEnv::new(), &targets).await;
    assert!(matches!(again, Err(FaultError::NoTarget(_))), "{again:?}");
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[tokio::test]
async fn kill_spares_a_pid_now_running_something_else() {
    let m = marker("reused");
    let mut s = Sleeper::spawn(&m);
    // A target resolved for this pid when it ran another command line (as after pid reuse).
    let stale = Target {
        kind: "process".to_string(),
        id: s.pid().to_string(),
        description: "some-other-program --flag".to_string(),
    };
    let r = kill_spec(&m, Mode::One, "KILL")
        .inject(&FaultEnv::new(), std::slice::from_ref(&stale))
        .await;
    assert!(matches!(r, Err(FaultError::NoTarget(_))), "{r:?}");
    assert!(is_running(state(s.pid())));
    assert!(s.child.try_wait().is_ok_and(|status| status.is_none()));
}

#[tokio::test]
async fn pause_stops_and_revert_resumes() {
    let m = marker("pause");
    let sleepers: Vec<Sleeper> = (0..2).map(|_| Sleeper::spawn(&m)).collect();
    let spec = pause_spec(&m, Mode::All);
    assert!(spec.needs_duration());
    let targets = resolve(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    let token = paused_token(&targets, inject_pause(&spec, &targets).await);
    for s in &sleepers {
        assert_eq!(wait_state(s.pid(), is_stopped), Some('T'));
    }
    // The token survives the journal's round trip through JSON.
    let json = serde_json::to_string(&token).unwrap_or_else(|e| panic!("{e}"));
    let token: RevertToken = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));

    revert(&token).await.unwrap_or_else(|e| panic!("{e}"));
    for s in &sleepers {
        assert!(
            is_running(wait_state(s.pid(), is_running)),
            "pid {}",
            s.pid()
        );
    }
    // Idempotent: a second revert (say, by `rattle recover` after a crash) is fine.
    revert(&token)
        .await
        .unwrap_or_else(|e| panic!("second revert: {e}"));
    for s in &sleepers {
        assert!(is_running(state(s.pid())));
    }
}

#[tokio::test]
async fn revert_after_the_process_died_succeeds() {
    let m = marker("died");
    let mut s = Sleeper::spawn(&m);
    let spec = pause_spec(&m, Mode::One);
    let targets = resolve(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    let token = paused_token(&targets, inject_pause(&spec, &targets).await);
    assert_eq!(wait_state(s.pid(), is_stopped), Some('T'));
    let _ = s.child.kill();
    let _ = s.child.wait();
    revert(&token).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn revert_does_not_signal_a_reused_pid() {
    let m = marker("starttime");
    let s = Sleeper::spawn(&m);
    let spec = pause_spec(&m, Mode::One);
    let targets = resolve(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    let token = paused_token(&targets, inject_pause(&spec, &targets).await);
    assert_eq!(wait_state(s.pid(), is_stopped), Some('T'));

    // The same pid with another start time stands for a different process that reused it.
    let mut forged = token.clone();
    let entries = forged
        .data
        .as_array_mut()
        .unwrap_or_else(|| panic!("{:?}", token.data));
    for entry in entries {
        let starttime = entry["starttime"]
            .as_u64()
            .unwrap_or_else(|| panic!("{entry}"));
        entry["starttime"] = serde_json::json!(starttime + 1);
    }
    revert(&forged).await.unwrap_or_else(|e| panic!("{e}"));
    // SIGCONT wakes a stopped process within the kill() call itself, so had the forged revert
    // signalled it, the state would already have left T here.
    assert_eq!(state(s.pid()), Some('T'));

    revert(&token).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(is_running(wait_state(s.pid(), is_running)));
}

#[tokio::test]
async fn pause_with_every_target_gone_is_an_error() {
    let m = marker("gone");
    let mut s = Sleeper::spawn(&m);
    let spec = pause_spec(&m, Mode::One);
    let targets = resolve(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.child.kill();
    let _ = s.child.wait();
    let r = spec.inject(&FaultEnv::new(), &targets).await;
    assert!(matches!(r, Err(FaultError::NoTarget(_))), "{r:?}");
}
