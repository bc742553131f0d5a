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
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "revert\n"
    );
}

#[test]
fn exec_revert_runs_from_recover_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = exec_experiment(dir.path(), "60s", "70s");
    let marker = dir.path().join("injected");
    let mut run = spawn_run(&file, dir.path(), &[]);
    wait_for("the inject command", Duration::from_secs(30), || {
        marker.exists()
    });
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
        (
            "{ inject: [true], revert: [true], expect_exit: 999 }",
            "expect_exit",
        ),
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

mod manifest {
    use super::*;
    use crate::fake_k8s::FakeK8s;

    const GV: &str = "chaos-mesh.org/v1alpha1";

    fn fake() -> FakeK8s {
        let f = FakeK8s::start(Duration::from_millis(50), Duration::from_millis(50));
        f.add_kind(GV, "IOChaos", "iochaos", true);
        f
    }

    fn kube_env(f: &FakeK8s) -> [(&'static str, String); 1] {
        [("KUBECONFIG", f.kubeconfig.display().to_string())]
    }

    fn env_refs<'a>(e: &'a [(&'static str, String); 1]) -> Vec<(&'static str, &'a str)> {
        e.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    /// An experiment applying an IOChaos from a file (discovery finds its resource).
    fn experiment(dir: &Path, duration: &str, total: &str, ns: &str) -> std::path::PathBuf {
        write(
            dir,
            "iochaos.yaml",
            &format!(
                "apiVersion: {GV}\nkind: IOChaos\nmetadata:\n  name: io-latency\n  namespace: {ns}\n\
                 spec:\n  action: latency\n  mode: one\n  selector: {{ labelSelectors: {{ app: web }} }}\n  \
                 volumePath: /data\n  delay: 100ms\n"
            ),
        );
        write(
            dir,
            "manifest.yaml",
            &format!(
                "version: 1\nname: manifest-it\nfaults:\n  - name: io\n    at: 2s\n    duration: {duration}\n    \
                 manifest: {{ file: \"{}\" }}\nduration: {total}\n",
                dir.join("iochaos.yaml").display()
            ),
        )
    }

    #[test]
    fn applies_server_side_then_deletes_on_revert() {
        let f = fake();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = experiment(dir.path(), "2s", "5s", "shop");
        let env = kube_env(&f);
        let mut run = spawn_run(&file, dir.path(), &env_refs(&env));
        wait_for("the apply", Duration::from_secs(30), || {
            f.get_generic(GV, "iochaos", "shop", "io-latency").is_some()
        });
        let obj = f
            .get_generic(GV, "iochaos", "shop", "io-latency")
            .expect("applied");
        assert_eq!(obj["spec"]["delay"], "100ms");
        assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "rattle");
        let (code, out, err) = wait_run(&mut run, Duration::from_secs(60));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(f.get_generic(GV, "iochaos", "shop", "io-latency").is_none());
        let log = f.log();
        assert_eq!(
            log,
            [
                "APPLY iochaos shop/io-latency fieldManager=rattle",
                "DELETE iochaos shop/io-latency"
            ],
            "{log:?}"
        );
    }

    #[test]
    fn recover_deletes_what_a_killed_run_applied() {
        let f = fake();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = experiment(dir.path(), "60s", "70s", "shop");
        let env = kube_env(&f);
        let mut run = spawn_run(&file, dir.path(), &env_refs(&env));
        wait_for("the apply", Duration::from_secs(30), || {
            f.get_generic(GV, "iochaos", "shop", "io-latency").is_some()
        });
        let _ = run.0.kill();
        let _ = run.0.wait();
        assert!(f.get_generic(GV, "iochaos", "shop", "io-latency").is_some());
        let (code, out, err) = recover(dir.path(), &env_refs(&env));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            f.get_generic(GV, "iochaos", "shop", "io-latency").is_none(),
            "recover left the IOChaos: {out}"
        );
        assert!(
            f.log()
                .contains(&"DELETE iochaos shop/io-latency".to_string())
        );
    }

    #[test]
    fn an_existing_object_is_never_taken_over() {
        let f = fake();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = experiment(dir.path(), "2s", "5s", "shop");
        f.put_generic(
            GV,
            "iochaos",
            "shop",
            "io-latency",
            serde_json::json!({"apiVersion": GV, "kind": "IOChaos",
                "metadata": {"name": "io-latency", "namespace": "shop"}}),
        );
        let env = kube_env(&f);
        let mut c = rattle();
        c.args(["run", "--dry-run"])
            .arg(&file)
            .env("KUBECONFIG", &env[0].1);
        let (code, out, err) = run_bounded_cmd(c, Duration::from_secs(60));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("already exists"), "{out}");
        let mut run = spawn_run(&file, dir.path(), &env_refs(&env));
        let (code, out, err) = wait_run(&mut run, Duration::from_secs(60));
        assert_ne!(code, 0, "{out}\n{err}");
        assert!(f.get_generic(GV, "iochaos", "shop", "io-latency").is_some());
        assert!(f.log().is_empty(), "{:?}", f.log());
    }

    #[test]
    fn dry_run_names_the_exact_object() {
        let f = fake();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = experiment(dir.path(), "2s", "5s", "shop");
        let mut c = rattle();
        c.args(["run", "--dry-run"])
            .arg(&file)
            .env("KUBECONFIG", f.kubeconfig.display().to_string());
        let (code, out, err) = run_bounded_cmd(c, Duration::from_secs(60));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("IOChaos shop/io-latency"), "{out}");
        assert!(out.contains("(iochaos)"), "{out}");
        assert!(
            f.log().is_empty(),
            "a dry run touched the cluster: {:?}",
            f.log()
        );
    }

    #[test]
    fn protected_namespaces_are_refused_before_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = experiment(dir.path(), "2s", "5s", "kube-system");
        let out = rattle()
            .arg("validate")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("validate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("manifest.yaml:7:"), "{err}");
        assert!(err.contains("kube-system is protected"), "{err}");
    }
}
