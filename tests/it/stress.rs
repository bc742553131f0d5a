//! `rattle stress` and the local `stress` fault, measured for real: the CPU time and the
//! resident anonymous memory of the stress process, read from /proc, against what was asked,
//! within 10 %. CPU is measured over the process's own lifetime (CPU ticks / ticks since it
//! started, both kernel clocks) and the best of the samples is kept, so a busy machine that
//! delays one sample does not make the test flaky; nothing is timed with the test's clock.
//! Every process started is killed by pid (guards) whatever the outcome.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Guard, rattle, wait_run, write};

/// USER_HZ: the unit of /proc/<pid>/stat times (100 on every Linux ABI).
const TICKS: f64 = 100.0;

/// One look at a stress process: for each CPU worker thread (`stress-cpu-N`), the cores it used
/// over its own lifetime so far (CPU nanoseconds from its schedstat / nanoseconds since it
/// started); the youngest worker's lifetime in seconds; the resident anonymous memory in bytes.
#[derive(Debug, Clone)]
struct Sample {
    workers: Vec<f64>,
    life_s: f64,
    rss_anon: u64,
}

/// (state, utime + stime, starttime) of a process.
fn stat(pid: u32) -> Option<(char, u64, u64)> {
    stat_at(&format!("/proc/{pid}/stat"))
}

fn stat_at(path: &str) -> Option<(char, u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((
        f[0].chars().next()?,
        utime + stime,
        f.get(19)?.parse().ok()?,
    ))
}

fn uptime_s() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn sample(pid: u32) -> Option<Sample> {
    let (state, _, _) = stat(pid)?;
    if state == 'Z' {
        return None;
    }
    let mut workers = Vec::new();
    let mut life_s = f64::MAX;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("stress-cpu-") {
            continue;
        }
        let (_, _, start) = stat_at(&dir.join("stat").to_string_lossy())?;
        let cpu_ns: f64 = std::fs::read_to_string(dir.join("schedstat"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let life = uptime_s()? - start as f64 / TICKS;
        life_s = life_s.min(life);
        workers.push(if life > 0.0 { cpu_ns / 1e9 / life } else { 0.0 });
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Sample {
        workers,
        life_s: if workers_empty(life_s) { 0.0 } else { life_s },
        rss_anon: kib * 1024,
    })
}

fn workers_empty(life: f64) -> bool {
    life == f64::MAX
}

/// Is the process `pid` that started at `start` still running (not a zombie)?
fn alive(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|(s, _, st)| st == start && s != 'Z' && s != 'X')
}

/// Kills (SIGKILL) a process we did not spawn directly, by pid and start time, when dropped.
struct Stray(u32, u64);

impl Drop for Stray {
    fn drop(&mut self) {
        if alive(self.0, self.1) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// The `rattle stress` child of `parent`, waited for (bounded).
fn stress_child_of(parent: u32, limit: Duration) -> (u32, u64) {
    let t0 = Instant::now();
    loop {
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            if argv.get(1) != Some(&&b"stress"[..]) {
                continue;
            }
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s[s.rfind(')')? + 2..].to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if ppid == Some(parent)
                && let Some((_, _, start)) = stat(pid)
            {
                return (pid, start);
            }
        }
        assert!(
            t0.elapsed() < limit,
            "no stress child of {parent} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Samples `pid` every 50 ms while it runs (bounded), keeping the samples after `settle` s of
/// its life.
fn samples_while(pid: u32, start: u64, settle: f64, limit: Duration) -> Vec<Sample> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    while alive(pid, start) && t0.elapsed() < limit {
        if let Some(s) = sample(pid)
            && (s.life_s >= settle || s.workers.is_empty())
        {
            out.push(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    out
}

/// For each worker, the CPU figure closest to `want` cores; and the largest RSS seen.
fn best(samples: &[Sample], want_cores: f64) -> (Vec<f64>, u64) {
    assert!(!samples.is_empty(), "no sample of the stress process");
    let n = samples.iter().map(|s| s.workers.len()).max().unwrap_or(0);
    let cores = (0..n)
        .map(|i| {
            samples
                .iter()
                .filter_map(|s| s.workers.get(i).copied())
                .min_by(|a, b| (a - want_cores).abs().total_cmp(&(b - want_cores).abs()))
                .unwrap_or(0.0)
        })
        .collect();
    let rss = samples.iter().map(|s| s.rss_anon).max().unwrap_or(0);
    (cores, rss)
}

fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= want * tol
}

const MIB: u64 = 1 << 20;

fn spawn_stress(args: &[&str]) -> (Guard, String) {
    let mut child: Child = rattle()
        .arg("stress")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rattle stress");
    let mut line = String::new();
    let out = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(out);
    let _ = reader.read_line(&mut line);
    // Keep the pipe drained so the last line never blocks.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (Guard(child), line)
}

/// The share of a core asked of each worker in the measurements: low enough that a worker gets
/// it on a shared, busy machine (the scheduler favours a thread that sleeps most of the time
/// over the hogs beside it), high enough that 10 % of it is well above the clocks' resolution.
const LOAD: f64 = 0.10;

fn assert_workers(cores: &[f64], n: usize) {
    assert_eq!(cores.len(), n, "{cores:?}");
    for c in cores {
        assert!(
            within(*c, LOAD, 0.10),
            "a worker burnt {c:.4} cores, asked {LOAD}: {cores:?}"
        );
    }
}

#[test]
fn rattle_stress_burns_the_cpu_asked() {
    let (mut g, line) = spawn_stress(&[
        "--cpu-workers",
        "2",
        "--cpu-load",
        "10%",
        "--duration",
        "4s",
    ]);
    assert!(line.starts_with("rattle stress: pid"), "{line}");
    let pid = g.0.id();
    let (_, _, start) = stat(pid).expect("stat");
    let samples = samples_while(pid, start, 1.5, Duration::from_secs(30));
    let (cores, _) = best(&samples, LOAD);
    println!(
        "asked 2 workers x {LOAD} cores: measured {cores:.4?} over {} samples",
        samples.len()
    );
    assert_workers(&cores, 2);
    let status = g.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "exit at the deadline");
}

#[test]
fn rattle_stress_holds_the_memory_asked() {
    let (mut g, line) = spawn_stress(&["--memory", "128MiB", "--duration", "3s"]);
    assert!(line.contains("128 MiB"), "{line}");
    let pid = g.0.id();
    let (_, _, start) = stat(pid).expect("stat");
    let samples = samples_while(pid, start, 0.0, Duration::from_secs(30));
    let (_, rss) = best(&samples, LOAD);
    println!(
        "asked 128 MiB: {:.1} MiB resident (anonymous)",
        rss as f64 / MIB as f64
    );
    assert!(
        within(rss as f64, (128 * MIB) as f64, 0.10),
        "{rss} bytes, asked 128 MiB"
    );
    let status = g.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "exit at the deadline");
}

#[test]
fn rattle_stress_ramps_and_exits_0_on_sigterm() {
    let (mut g, line) = spawn_stress(&[
        "--cpu-workers",
        "1",
        "--cpu-load",
        "20",
        "--memory",
        "64MiB",
        "--ramp",
        "20s",
        "--duration",
        "60s",
    ]);
    assert!(line.contains("ramp 20s"), "{line}");
    let pid = g.0.id();
    // Ramping: after the start, far less than the 64 MiB is held (64 MiB is reached at 20 s).
    std::thread::sleep(Duration::from_millis(500));
    let s = sample(pid).expect("sample");
    assert!(
        s.rss_anon < 48 * MIB,
        "{} bytes held early in a 20 s ramp",
        s.rss_anon
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = g.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn rattle_stress_refuses_bad_flags_with_exit_2() {
    for args in [
        vec!["--cpu-workers", "1", "--cpu-load", "0", "--duration", "1s"],
        vec![
            "--cpu-workers",
            "1",
            "--cpu-load",
            "150%",
            "--duration",
            "1s",
        ],
        vec!["--memory", "12XB", "--duration", "1s"],
        vec!["--memory", "1000000TiB", "--duration", "1s"],
        vec!["--cpu-workers", "1"],
        vec!["--duration", "1s"],
        vec!["--cpu-workers", "1", "--ramp", "5s", "--duration", "1s"],
    ] {
        let out = rattle()
            .arg("stress")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn stress_experiment(dir: &Path, duration: &str, total: &str, spec: &str) -> std::path::PathBuf {
    write(
        dir,
        "stress.yaml",
        &format!(
            "version: 1\nname: stress-it\nfaults:\n  - name: hog\n    at: 2s\n    duration: {duration}\n    \
             stress: {spec}\nduration: {total}\n"
        ),
    )
}

#[test]
fn stress_fault_is_measured_then_released_on_revert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = stress_experiment(
        dir.path(),
        "5s",
        "8s",
        "{ cpu_workers: 1, cpu_load: 10%, memory: 64MiB }",
    );
    let mut run = Guard(
        rattle()
            .args(["run", "--yes", "--progress", "quiet", "--out"])
            .arg(dir.path().join("out"))
            .arg(&file)
            .env("RATTLE_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run"),
    );
    let (pid, start) = stress_child_of(run.0.id(), Duration::from_secs(30));
    let _stray = Stray(pid, start);
    let samples = samples_while(pid, start, 1.5, Duration::from_secs(30));
    let (cores, rss) = best(&samples, LOAD);
    println!(
        "stress fault: asked 1 worker x {LOAD} cores and 64 MiB: measured {cores:.4?} cores, {:.1} MiB",
        rss as f64 / MIB as f64
    );
    assert_workers(&cores, 1);
    assert!(
        within(rss as f64, (64 * MIB) as f64, 0.10),
        "{rss} bytes, asked 64 MiB"
    );
    let (code, out, err) = wait_run(&mut run, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!alive(pid, start), "the stress process outlived the run");
    // Nothing left in the journal.
    let (code, out, _) = crate::support::run_bounded_cmd(
        {
            let mut c = rattle();
            c.args(["recover", "--yes"])
                .env("RATTLE_STATE_DIR", dir.path().join("state"));
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(code, 0);
    assert!(out.contains("nothing to recover"), "{out}");
}

#[test]
fn recover_stops_the_stress_of_a_killed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = stress_experiment(dir.path(), "60s", "70s", "{ cpu_workers: 1, cpu_load: 5% }");
    let state = dir.path().join("state");
    let mut run = Guard(
        rattle()
            .args(["run", "--yes", "--progress", "quiet", "--out"])
            .arg(dir.path().join("out"))
            .arg(&file)
            .env("RATTLE_STATE_DIR", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn run"),
    );
    let (pid, start) = stress_child_of(run.0.id(), Duration::from_secs(30));
    let _stray = Stray(pid, start);
    // The child is started after its journal entry is written, so the entry is there.
    let _ = run.0.kill();
    let _ = run.0.wait();
    assert!(
        alive(pid, start),
        "the stress should outlive a SIGKILLed run"
    );
    let mut c = rattle();
    c.args(["recover", "--yes"]).env("RATTLE_STATE_DIR", &state);
    let (code, out, err) = crate::support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}\n{err}");
    let t0 = Instant::now();
    while alive(pid, start) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "recover left the stress running: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = rattle();
    c.args(["recover", "--yes"]).env("RATTLE_STATE_DIR", &state);
    let (code, out, _) = crate::support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(out.contains("nothing to recover"), "{out}");
}

#[test]
fn stress_fault_settings_are_checked_with_their_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (spec, want) in [
        (
            "{ cpu_workers: 1, ramp: 10s }",
            "`ramp`: 10s is longer than the duration 5s",
        ),
        ("{ cpu_workers: 1, cpu_load: 0% }", "`cpu_load`"),
        ("{ memory: 999999TiB }", "`memory`"),
        ("{ memory: lots }", "lots"),
        ("{ }", "nothing to stress"),
    ] {
        let file = stress_experiment(dir.path(), "5s", "8s", spec);
        let out = rattle()
            .arg("validate")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("validate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains("stress.yaml:7:"), "{spec}: {err}");
        assert!(err.contains(want), "{spec}: {err}");
    }
}

#[test]
fn an_orphaned_stress_stops_at_its_own_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = stress_experiment(dir.path(), "3s", "8s", "{ cpu_workers: 1, cpu_load: 5% }");
    let mut run = Guard(
        rattle()
            .args(["run", "--yes", "--progress", "quiet", "--out"])
            .arg(dir.path().join("out"))
            .arg(&file)
            .env("RATTLE_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn run"),
    );
    let (pid, start) = stress_child_of(run.0.id(), Duration::from_secs(30));
    let _stray = Stray(pid, start);
    let _ = run.0.kill();
    let _ = run.0.wait();
    // Nobody reverts it: it ends by itself when its 3 s are over (bounded wait, no timing).
    let t0 = Instant::now();
    while alive(pid, start) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "an orphaned stress outlived its deadline"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dry_run_names_the_stress_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = stress_experiment(
        dir.path(),
        "5s",
        "8s",
        "{ cpu_workers: 2, cpu_load: 30%, memory: 64MiB }",
    );
    let mut c = rattle();
    c.args(["run", "--dry-run"]).arg(&file);
    let (code, out, err) = crate::support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("a new `rattle stress` process: 2 CPU workers at 30%, 64 MiB, for 5s"),
        "{out}"
    );
}
