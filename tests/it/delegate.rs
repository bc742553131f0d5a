//! Faults delegated to other tools: `exec` (commands as argument vectors) and `manifest` (any
//! Kubernetes object, server-side applied, deleted on revert). What they did is observed where
//! it lands (marker files; the fake API server's objects), and the journal is tested the hard
//! way: SIGKILL the run after the injection, then `rattle recover --yes` must revert.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Guard, rattle, run_bounded_cmd, wait_run, write};

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_run(file: &Path, dir: &Path, extra_env: &[(&str, &str)]) -> Guard {
    let mut c = rattle();
    c.args(["run", "--yes", "--progress", "quiet", "--out"])
        .arg(dir.join("out"))
        .arg(file)
        .env("RATTLE_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    Guard(c.spawn().expect("spawn run"))
}

fn recover(dir: &Path, extra_env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = rattle();
    c.args(["recover", "--yes"])
        .env("RATTLE_STATE_DIR", dir.join("state"));
    for (k, v) in extra_env {
        c.env(k, v);
    }
    run_bounded_cmd(c, Duration::from_secs(60))
}

fn exec_experiment(dir: &Path, duration: &str, total: &str) -> std::path::PathBuf {
    let log = dir.join("log");
    let marker = dir.join("injected");
    write(
        dir,
        "exec.yaml",
        &format!(
            r#"version: 1
name: exec-it
faults:
  - name: outside-tool
    at: 2s
    duration: {duration}
    exec:
      inject: [sh, -c, 'echo "inject $GREETING" >> "$1" && touch "$2"', sh, "{log}", "{marker}"]
      revert: [sh, -c, 'echo revert >> "$1"; rm -f "$2"', sh, "{log}", "{marker}"]
      env: {{ GREETING: hello }}
      timeout: 10s
duration: {total}
"#,
            log = log.display(),
            marker = marker.display()
        ),
    )
}

#[test]
fn exec_runs_inject_then_revert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = exec_experiment(dir.path(), "1s", "4s");
    let mut run = spawn_run(&file, dir.path(), &[]);
    let (code, out, err) = wait_run(&mut run, Duration::from_secs(60));
    assert_eq!(code, 0, "{out}\n{err}");
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert_eq!(log, "inject hello\nrevert\n");
    assert!(!dir.path().join("injected").exists());
}

#[test]
fn exec_failing_inject_fails_the_run_and_still_reverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let file = write(
        dir.path(),
        "exec.yaml",
        &format!(
            "version: 1\nname: exec-fail\nfaults:\n  - name: f\n    at: 2s\n    duration: 1s\n    \
             exec: {{ inject: [sh, -c, 'echo broken >&2; exit 7'], revert: [sh, -c, 'echo revert >> \"$1\"', sh, \"{}\"] }}\n\
             duration: 4s\n",
            log.display()
        ),
    );
    let mut run = spawn_run(&file, dir.path(), &[]);
    let (code, out, err) = wait_run(&mut run, Duration::from_secs(60));
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("exited 7 (expected 0): broken"),
        "{out}\n{err}"
    );
    // Journaled before the inject, so reverted although the inject failed.
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "revert\n");
}

#[test]
fn exec_revert_runs_from_recover_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = exec_experiment(dir.path(), "60s", "70s");
    let marker = dir.path().join("injected");
    let mut run = spawn_run(&file, dir.path(), &[]);
    wait_for("the inject command", Duration::from_secs(30), || marker.exists());
    let _ = run.0.kill();
    let _ = run.0.wait();
    assert!(marker.exists());
    let (code, out, err) = recover(dir.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!marker.exists(), "recover did not run the revert: {out}");
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert_eq!(log, "inject hello\nrevert\n");
    let (code, out, _) = recover(dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to recover"), "{out}");
}

#[test]
fn exec_bad_commands_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (spec, field) in [
        ("{ inject: [] }", "inject"),
        ("{ inject: [no-such-program-rattle] }", "inject"),
        ("{ inject: [true], revert: [true], timeout: 0s }", "timeout"),
        ("{ inject: [true], revert: [true], expect_exit: 999 }", "expect_exit"),
        ("{ inject: \"rm -rf /tmp/x\" }", "inject"),
    ] {
        let file = write(
            dir.path(),
            "bad.yaml",
            &format!(
                "version: 1\nname: bad\nfaults:\n  - name: f\n    at: 2s\n    duration: 1s\n    exec: {spec}\nduration: 4s\n"
            ),
        );
        let out = rattle()
            .arg("validate")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("validate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains("bad.yaml:7:"), "{spec}: no location: {err}");
        assert!(err.contains(field), "{spec}: {err}");
    }
}
