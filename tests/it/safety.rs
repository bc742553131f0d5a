//! Never leave damage behind: every exit path reverts (signals, a panic, a stop condition), the
//! journal survives a SIGKILL and `rattle recover` reverts from it, resources stay bounded
//! against a blackholed target, and secrets never reach reports or logs.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    Guard, free_port, proc_state, rattle, resumed, signal, sleeper, wait_for_state, wait_run, write,
};

/// An experiment that pauses the sleeper marked `marker` from 1.5 s for 20 s.
fn pause_experiment(dir: &Path, marker: &str, extra: &str) -> std::path::PathBuf {
    write(
        dir,
        "pause.yaml",
        &format!(
            r#"version: 1
name: pause-it
faults:
  - name: freeze
    at: 1500ms
    duration: 20s
    process-pause: {{ match: "^{marker} ", mode: all }}
duration: 30s
{extra}"#
        ),
    )
}

/// Starts `rattle run` (not waited for), with its own state directory.
fn spawn_run(exp: &Path, out: &Path, state: &Path, env: &[(&str, &str)]) -> Guard {
    let mut cmd = rattle();
    cmd.args([
        "run",
        exp.to_str().expect("utf8"),
        "--yes",
        "--progress",
        "plain",
    ])
    .arg("--out")
    .arg(out)
    .arg("--state-dir")
    .arg(state)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Guard(cmd.spawn().expect("spawn rattle"))
}

fn report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json"))
        .expect("json")
}

#[test]
fn sigkill_mid_pause_then_recover_resumes_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let marker = format!("rattle-test-recover-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause_experiment(dir.path(), &marker, "");
    let mut run = spawn_run(&exp, &dir.path().join("out"), &state, &[]);
    wait_for_state(target.0.id(), 'T', "paused");
    signal(&run, Signal::SIGKILL);
    let _ = wait_run(&mut run, Duration::from_secs(10));
    // rattle is dead and nothing resumed the target: the journal knows.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        proc_state(target.0.id()),
        Some('T'),
        "still paused after the crash"
    );
    let entries: Vec<_> = std::fs::read_dir(state.join("journal"))
        .expect("journal dir")
        .collect();
    assert_eq!(entries.len(), 1, "one journal entry for the active pause");

    // A new run warns about it.
    let other = write(
        dir.path(),
        "noop.yaml",
        "version: 1\nname: noop\nduration: 1s\nsteady_state: { warmup: 100ms }\n",
    );
    let out = rattle()
        .args([
            "run",
            other.to_str().expect("utf8"),
            "--progress",
            "plain",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--out")
        .arg(dir.path().join("out2"))
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rattle recover"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a terminal and without --yes, recover refuses and changes nothing.
    let refused = rattle()
        .arg("recover")
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .expect("recover");
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(proc_state(target.0.id()), Some('T'));

    let rec = rattle()
        .args(["recover", "--yes", "--state-dir"])
        .arg(&state)
        .output()
        .expect("recover");
    let said = String::from_utf8_lossy(&rec.stdout);
    assert_eq!(
        rec.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    assert!(
        said.contains("reverted: pause-it / freeze (process-pause)"),
        "{said}"
    );
    assert!(
        resumed(target.0.id()),
        "resumed: {:?}",
        proc_state(target.0.id())
    );
    // Idempotent.
    let again = rattle()
        .args(["recover", "--yes", "--state-dir"])
        .arg(&state)
        .output()
        .expect("recover");
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to recover"));
}

#[test]
fn sigterm_mid_fault_reverts_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-test-term-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause_experiment(dir.path(), &marker, "");
    let out = dir.path().join("out");
    let mut run = spawn_run(&exp, &out, &dir.path().join("state"), &[]);
    wait_for_state(target.0.id(), 'T', "paused");
    let sent = Instant::now();
    signal(&run, Signal::SIGTERM);
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(resumed(target.0.id()));
    eprintln!("SIGTERM to exit: {:?}", sent.elapsed());
    let r = report(&out);
    assert_eq!(r["verdict"], "aborted");
    // Journal emptied once reverted.
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/journal"))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn a_second_sigint_does_not_skip_the_reverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-test-int2-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause_experiment(dir.path(), &marker, "");
    let mut run = spawn_run(
        &exp,
        &dir.path().join("out"),
        &dir.path().join("state"),
        &[],
    );
    wait_for_state(target.0.id(), 'T', "paused");
    signal(&run, Signal::SIGINT);
    signal(&run, Signal::SIGINT);
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    assert!(resumed(target.0.id()));
}

#[test]
fn a_panic_mid_fault_still_reverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-test-panic-{}", std::process::id());
    let target = sleeper(&marker);
    let exp = pause_experiment(dir.path(), &marker, "");
    let out = dir.path().join("out");
    let mut run = spawn_run(
        &exp,
        &out,
        &dir.path().join("state"),
        &[(rattle::runner::DEBUG_PANIC_AFTER_INJECT, "1")],
    );
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(30));
    assert!(err.contains("panicked"), "{err}");
    assert_eq!(code, 3, "{err}");
    assert!(
        resumed(target.0.id()),
        "state {:?}",
        proc_state(target.0.id())
    );
    let r = report(&out);
    assert!(r["reason"].as_str().is_some_and(|s| s.contains("panicked")));
    assert!(r["faults"][0]["reverted_at_ms"].is_number());
}

#[test]
fn a_stop_condition_reverts_everything_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-test-stop-{}", std::process::id());
    let target = sleeper(&marker);
    let port = free_port();
    let exp = write(
        dir.path(),
        "stop.yaml",
        &format!(
            r#"version: 1
name: stop-it
setup:
  demo: {{ replicas: 2, port: {port}, restart_delay: 60s }}
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 100/s, timeout: 500ms }}
steady_state:
  warmup: 500ms
faults:
  - name: freeze-outsider
    at: 1s
    duration: 25s
    process-pause: {{ match: "^{marker} ", mode: all }}
  - name: kill-all-workers
    at: 2s
    process-kill: {{ match: "rattle demo worker .*--balancer-port {port}$", mode: all }}
stop_when:
  error_rate: "> 50% for 1s"
duration: 30s
"#
        ),
    );
    let out = dir.path().join("out");
    let mut run = spawn_run(&exp, &out, &dir.path().join("state"), &[]);
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(40));
    assert_eq!(code, 3, "{err}");
    assert!(resumed(target.0.id()));
    let r = report(&out);
    assert_eq!(r["verdict"], "aborted");
    let stop = &r["stop"];
    assert!(
        stop["condition"]
            .as_str()
            .is_some_and(|c| c.contains("error_rate")),
        "{stop}"
    );
    let triggered = stop["triggered_at_ms"].as_f64().expect("triggered_at_ms");
    // Workers die at 2 s; the rate must exceed 50% over the trailing second, then hold 1 s.
    assert!(triggered >= 3000.0, "triggered at {triggered}");
    let ttr = stop["time_to_revert_ms"]
        .as_f64()
        .expect("time_to_revert_ms");
    eprintln!("stop condition: triggered at {triggered} ms, all reverted {ttr} ms later");
    assert!(ttr >= 0.0);
}

#[test]
fn a_blackholed_target_is_counted_not_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Accepts connections and never answers.
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().take(400).flatten() {
            held.push(s);
        }
    });
    let exp = write(
        dir.path(),
        "hole.yaml",
        &format!(
            r#"version: 1
name: blackhole
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 200/s, timeout: 300ms, max_in_flight: 20 }}
steady_state:
  warmup: 200ms
  hold: 1s
duration: 3s
"#
        ),
    );
    let out = dir.path().join("out");
    let mut run = spawn_run(&exp, &out, &dir.path().join("state"), &[]);
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(30));
    assert_eq!(code, 1, "the steady state cannot hold: {err}");
    let r = report(&out);
    let t = &r["totals"];
    let requests = t["requests"].as_u64().expect("requests");
    let missed = t["missed"].as_u64().expect("missed");
    // Issue #14: tickets still due with time left when the load stopped are unsent, apart.
    let unsent = t["unsent"].as_u64().expect("unsent");
    // The schedule held: about 3 s × 200/s requests were accounted for, most of them missed
    // (20 in flight, each held for the 300 ms timeout, serve at most ~67/s).
    assert!(requests + unsent >= 550, "{t}");
    assert!(missed > requests / 3, "{t}");
    assert_eq!(t["ok"], 0);
    drop(keep);
}

#[test]
fn secrets_never_reach_reports_or_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let exp = write(
        dir.path(),
        "secret.yaml",
        &format!(
            r#"version: 1
name: secrets
setup:
  demo: {{ replicas: 1, port: {port} }}
load:
  http:
    url: "http://user:PASSWORD-789@127.0.0.1:{port}/"
    rate: 20/s
    headers: {{ Authorization: "Bearer SECRET-TOKEN-123", X-Api-Key: "KEY-456", Accept: "text/plain" }}
steady_state:
  warmup: 200ms
  hold: 500ms
duration: 1500ms
"#
        ),
    );
    let out = dir.path().join("out");
    let mut run = spawn_run(&exp, &out, &dir.path().join("state"), &[]);
    let (code, stdout, stderr) = wait_run(&mut run, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let dry = rattle()
        .args(["run", exp.to_str().expect("utf8"), "--dry-run"])
        .output()
        .expect("dry run");
    let mut everything = format!(
        "{stdout}{stderr}{}{}",
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr)
    );
    for f in ["report.json", "summary.md"] {
        everything.push_str(&std::fs::read_to_string(out.join(f)).expect("report file"));
    }
    for secret in ["SECRET-TOKEN-123", "KEY-456", "PASSWORD-789"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    assert!(
        everything.contains("text/plain"),
        "non-secret headers are kept"
    );
}

#[test]
fn recover_exits_4_and_keeps_what_it_cannot_revert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let journal = state.join("journal");
    std::fs::create_dir_all(&journal).expect("mkdir");
    // A dead owner (pid 1's start time is never 12345678... and pid 1 is not rattle).
    let entry = serde_json::json!({
        "version": 1, "run_id": "old-1-1", "experiment": "old", "file": "old.yaml",
        "fault": "mystery", "targets": [],
        "token": { "kind": "from-a-newer-rattle", "data": {} },
        "written_at": "2026-01-01T00:00:00.000Z", "owner_pid": 1, "owner_starttime": 12345678
    });
    std::fs::write(journal.join("old-1-1-0.json"), entry.to_string()).expect("write");
    std::fs::write(journal.join("torn.json"), b"{\"version\": 1, \"run_").expect("write");
    let out = rattle()
        .args(["recover", "--yes", "--state-dir"])
        .arg(&state)
        .output()
        .expect("recover");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown fault kind") && err.contains("unreadable"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&journal).expect("dir").count(),
        2,
        "nothing it could not revert is dropped"
    );
}

#[test]
fn a_failing_probe_stops_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = free_port();
    let exp = write(
        dir.path(),
        "probe.yaml",
        &format!(
            r#"version: 1
name: probe-stop
steady_state:
  warmup: 200ms
  probes:
    - http: {{ url: "http://127.0.0.1:{closed}/health" }}
      interval: 100ms
stop_when:
  probe_failing: 1s
duration: 20s
"#
        ),
    );
    let out = dir.path().join("out");
    let mut run = spawn_run(&exp, &out, &dir.path().join("state"), &[]);
    let (code, _, err) = wait_run(&mut run, Duration::from_secs(20));
    assert_eq!(code, 3, "{err}");
    let r = report(&out);
    assert!(
        r["stop"]["condition"]
            .as_str()
            .is_some_and(|c| c.contains("probe_failing")),
        "{}",
        r["stop"]
    );
    assert!(
        r["stop"]["triggered_at_ms"]
            .as_f64()
            .is_some_and(|t| t >= 1000.0)
    );
}
