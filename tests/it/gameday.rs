//! Game days: `rattle gameday run` (experiments in order, halt on failure, combined report,
//! worst exit code, the window), the webhook (received by a sink on 127.0.0.1, retried after
//! failures), `rattle schedule` (a seconds-level schedule with --max-runs, skipped overlaps,
//! the history file, SIGTERM reverting the running experiment's faults) and `--emit cronjob`
//! (the manifests parse into k8s-openapi types, and the ConfigMap's files validate again).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    Guard, free_port, proc_state, rattle, repo, resumed, run_bounded_cmd, signal, sleeper,
    wait_for_state, wait_run, write,
};

/// One request the sink received.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: String,
}

/// A webhook receiver on 127.0.0.1: answers the n-th request with `statuses[n]` (200 past the
/// end), records every request; stopped and joined when dropped.
struct Sink {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(statuses: Vec<u16>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                r.lock().expect("lock").push(Received { head, body });
                let status = statuses.get(n).copied().unwrap_or(200);
                n += 1;
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Sink {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An experiment that pauses the sleeper marked `marker` from 300 ms for 500 ms (1.5 s long).
fn pause_exp(dir: &Path, file: &str, name: &str, marker: &str) -> PathBuf {
    write(
        dir,
        file,
        &format!(
            r#"version: 1
name: {name}
steady_state: {{ warmup: 0s, hold: 200ms }}
faults:
  - name: freeze
    at: 300ms
    duration: 500ms
    process-pause: {{ match: "^{marker} ", mode: all }}
duration: 1500ms
"#
        ),
    )
}

/// An experiment whose steady state never holds (its probe targets a closed port): exit 1.
fn unsteady_exp(dir: &Path, file: &str) -> PathBuf {
    let closed = free_port();
    write(
        dir,
        file,
        &format!(
            r#"version: 1
name: unsteady
steady_state:
  warmup: 0s
  probes:
    - name: down
      http: {{ url: "http://127.0.0.1:{closed}/" }}
      interval: 100ms
duration: 1s
"#
        ),
    )
}

/// Starts `rattle schedule FILE --yes` (not waited for) with its own output and state
/// directories.
fn spawn_schedule(gd: &Path, out: &Path, state: &Path, extra: &[&str]) -> Guard {
    let mut cmd = rattle();
    cmd.arg("schedule")
        .arg(gd)
        .args(extra)
        .args(["--yes", "--out"])
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Guard(cmd.spawn().expect("spawn rattle schedule"))
}

/// A game day due every second whose one experiment pauses the sleeper marked `marker` from
/// 200 ms for `hold`, in a run of `length`.
fn every_second_pausing(dir: &Path, name: &str, marker: &str, hold: &str, length: &str) -> PathBuf {
    write(
        dir,
        "hold.yaml",
        &format!(
            r#"version: 1
name: hold
steady_state: {{ warmup: 0s, hold: 200ms }}
faults:
  - name: freeze
    at: 200ms
    duration: {hold}
    process-pause: {{ match: "^{marker} ", mode: all }}
duration: {length}
"#
        ),
    );
    write(
        dir,
        "gd.yaml",
        &format!(
            "version: 1\nname: {name}\nexperiments: [hold.yaml]\n\
             schedule: {{ cron: \"* * * * * *\" }}\n"
        ),
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

fn gameday_run(file: &Path, out: &Path, state: &Path) -> (i32, String, String) {
    let mut cmd = rattle();
    cmd.args(["gameday", "run"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .arg("--yes");
    run_bounded_cmd(cmd, Duration::from_secs(90))
}

#[test]
fn a_game_day_runs_its_experiments_in_order_and_notifies_once_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-ok-{}", std::process::id());
    let target = sleeper(&marker);
    pause_exp(dir.path(), "exp-1.yaml", "first", &marker);
    pause_exp(dir.path(), "exp-2.yaml", "second", &marker);
    // The receiver fails the first attempt (503): the notification is retried.
    let sink = Sink::start(vec![503]);
    let gd = write(
        dir.path(),
        "gd.yaml",
        &format!(
            r#"version: 1
name: nightly
experiments: ["exp-*.yaml"]
pause: 200ms
notify:
  webhook:
    url: "http://127.0.0.1:{}/hook/secret-token"
    headers: {{ Authorization: "Bearer s3cr3t" }}
    retries: 3
    backoff: 100ms
"#,
            sink.port
        ),
    );
    let out = dir.path().join("out");
    let (code, stdout, stderr) = gameday_run(&gd, &out, &dir.path().join("state"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(resumed(target.0.id()), "the sleeper was left paused");

    let index = json(&out.join("index.json"));
    assert_eq!(index["verdict"], "pass");
    assert_eq!(index["exit_code"], 0);
    let exps = index["experiments"].as_array().expect("experiments");
    let names: Vec<&str> = exps.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["first", "second"], "glob matches run in name order");
    for e in exps {
        assert_eq!(e["status"], "ran");
        assert_eq!(e["verdict"], "pass");
        let r = json(
            &out.join(e["report_dir"].as_str().expect("dir"))
                .join("report.json"),
        );
        assert_eq!(r["experiment"]["name"], e["name"]);
        assert_eq!(
            r["faults"][0]["targets"][0]["id"],
            target.0.id().to_string()
        );
    }
    // The second started after the first ended, plus the pause.
    let t = |e: &Value| {
        e["started_at"]
            .as_str()
            .expect("started_at")
            .parse::<chrono::DateTime<chrono::Utc>>()
            .expect("time")
    };
    assert!(t(&exps[1]) - t(&exps[0]) >= chrono::Duration::milliseconds(1500 + 200));
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    assert!(html.contains("01-first/report.html") && html.contains("02-second/report.html"));
    if let Some(dom) = crate::support::chromium_dump_dom(&out.join("index.html")) {
        for needle in [
            r#"data-verdict="pass""#,
            r#"id="experiments""#,
            r#"href="01-first/report.html""#,
            r#"id="notification""#,
        ] {
            assert!(dom.contains(needle), "rendered index.html lacks {needle:?}");
        }
        assert!(!dom.contains("<script") && !dom.contains("href=\"http"));
    }
    let md = std::fs::read_to_string(out.join("index.md")).expect("index.md");
    assert!(md.contains("| 1 | first | pass |"), "{md}");

    // Two attempts: 503, then 200; the body carries the text and every verdict.
    let got = sink.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].head.starts_with("POST /hook/secret-token HTTP/1.1"));
    assert!(
        got[1]
            .head
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t")
    );
    let body: Value = serde_json::from_str(&got[1].body).expect("json body");
    assert_eq!(body["verdict"], "pass");
    assert_eq!(body["gameday"], "nightly");
    let text = body["text"].as_str().expect("text");
    assert!(text.contains("nightly") && text.contains("PASS") && text.contains("first"));
    assert_eq!(body["experiments"][1]["verdict"], "pass");
    assert!(
        body["experiments"][0]["report"]
            .as_str()
            .expect("report path")
            .ends_with("01-first/report.json")
    );
    assert_eq!(index["notification"]["delivered"], true);
    assert_eq!(index["notification"]["attempts"], 2);
    // The secret parts of the webhook never reach the logs.
    assert!(
        !stderr.contains("secret-token") && !stderr.contains("s3cr3t"),
        "{stderr}"
    );
    drop(target);
}

#[test]
fn halt_on_failure_skips_the_rest_and_the_exit_code_is_the_worst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-halt-{}", std::process::id());
    let _target = sleeper(&marker);
    unsteady_exp(dir.path(), "a-unsteady.yaml");
    pause_exp(dir.path(), "b-pause.yaml", "after", &marker);
    let gd_text = |halt: bool| {
        format!(
            "version: 1\nname: halting\nexperiments: [a-unsteady.yaml, b-pause.yaml]\npause: 0s\n\
             halt_on_failure: {halt}\n"
        )
    };
    let gd = write(dir.path(), "halt.yaml", &gd_text(true));
    let out = dir.path().join("out-halt");
    let (code, stdout, stderr) = gameday_run(&gd, &out, &dir.path().join("state"));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let index = json(&out.join("index.json"));
    assert_eq!(index["verdict"], "fail");
    assert_eq!(index["experiments"][0]["verdict"], "fail");
    assert_eq!(index["experiments"][1]["status"], "skipped");
    assert!(!out.join("02-after").exists(), "a skipped experiment ran");

    let gd = write(dir.path(), "go-on.yaml", &gd_text(false));
    let out = dir.path().join("out-go-on");
    let (code, stdout, stderr) = gameday_run(&gd, &out, &dir.path().join("state"));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let index = json(&out.join("index.json"));
    assert_eq!(index["experiments"][1]["status"], "ran");
    assert_eq!(index["experiments"][1]["verdict"], "pass");
    assert!(out.join("02-after/report.json").exists());
}

#[test]
fn outside_the_window_nothing_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-window-{}", std::process::id());
    let target = sleeper(&marker);
    pause_exp(dir.path(), "exp.yaml", "windowed", &marker);
    // A window that is closed now: the one-minute slot twelve hours away.
    let later = chrono::Utc::now() + chrono::Duration::hours(12);
    let from = later.format("%H:%M").to_string();
    let to = (later + chrono::Duration::minutes(1))
        .format("%H:%M")
        .to_string();
    let gd = write(
        dir.path(),
        "gd.yaml",
        &format!(
            "version: 1\nname: windowed\nexperiments: [exp.yaml]\n\
             window: {{ from: \"{from}\", to: \"{to}\" }}\n"
        ),
    );
    let out = dir.path().join("out");
    let (code, stdout, stderr) = gameday_run(&gd, &out, &dir.path().join("state"));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("outside the allowed window"), "{stderr}");
    assert!(!out.exists(), "nothing may run or be written");
    assert_eq!(proc_state(target.0.id()).map(|c| c != 'T'), Some(true));
    // What the emitted CronJob runs: a skip, not a failed job.
    let mut cmd = rattle();
    cmd.args(["gameday", "run", "--yes", "--skip-outside-window"])
        .arg(&gd)
        .arg("--out")
        .arg(&out);
    let (code, stdout, stderr) = run_bounded_cmd(cmd, Duration::from_secs(30));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("skipped"), "{stdout}");
    assert!(!out.exists(), "nothing may run or be written");
}

#[test]
fn bad_game_days_are_refused_with_locations() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "broken.yaml",
        "version: 1\nname: broken\nduration: soon\n",
    );
    let cases: &[(&str, &[&str])] = &[
        (
            "version: 1\nname: x\nexperiments: [a.yaml]\nfrobnicate: 1\n",
            &["gd.yaml:4:1", "frobnicate"],
        ),
        (
            "version: 1\nname: x\nexperiments: [\"nope-*.yaml\"]\n",
            &["gd.yaml:3:15", "experiments[0]", "matches no file"],
        ),
        (
            "version: 1\nname: x\nexperiments:\n  - broken.yaml\n",
            &[
                "gd.yaml:4:5",
                "experiments[0]",
                "broken.yaml:3:11",
                "duration",
            ],
        ),
        (
            "version: 1\nname: x\nexperiments: [broken.yaml]\nschedule: { cron: \"61 * * * *\" }\n",
            &["schedule.cron", "gd.yaml:4:19"],
        ),
        (
            "version: 1\nname: x\nexperiments: [broken.yaml]\n\
             schedule: { cron: \"0 * * * *\", timezone: Mars/Base }\n",
            &["schedule.timezone", "unknown time zone"],
        ),
        (
            "version: 1\nname: x\nexperiments: [broken.yaml]\n\
             window: { days: [mon-funday], from: \"25:00\", to: \"10:00\" }\n",
            &["window.days", "window.from"],
        ),
        (
            "version: 1\nname: x\nexperiments: [broken.yaml]\n\
             notify: { webhook: { url: \"ftp://x\" } }\n",
            &["notify.webhook.url", "http"],
        ),
    ];
    for (text, want) in cases {
        let gd = write(dir.path(), "gd.yaml", text);
        let out = rattle()
            .args(["gameday", "validate"])
            .arg(&gd)
            .output()
            .expect("run rattle");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}\n{err}");
        for w in *want {
            assert!(err.contains(w), "{text}: want {w:?} in:\n{err}");
        }
    }
}

#[test]
fn the_scheduler_runs_a_seconds_schedule_twice_and_skips_overlaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-sched-{}", std::process::id());
    let target = sleeper(&marker);
    pause_exp(dir.path(), "exp.yaml", "tick", &marker);
    // Due every second; each run lasts about 1.5 s, so some due times find a run in progress.
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: every-second\nexperiments: [exp.yaml]\npause: 0s\n\
         schedule: { cron: \"* * * * * *\" }\n",
    );
    let out = dir.path().join("sched");
    let mut cmd = rattle();
    cmd.arg("schedule")
        .arg(&gd)
        .args(["--max-runs", "2", "--yes", "--out"])
        .arg(&out)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let (code, stdout, stderr) = run_bounded_cmd(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("next runs:"), "{stdout}");
    assert!(resumed(target.0.id()));
    let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history");
    let entries: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let ran: Vec<&Value> = entries.iter().filter(|e| e["event"] == "ran").collect();
    assert_eq!(ran.len(), 2, "{history}");
    // Due times are the cron's whole seconds, not offsets from when the scheduler started.
    assert!(
        entries.iter().all(|e| e["scheduled_for"]
            .as_str()
            .is_some_and(|t| t.ends_with(".000Z"))),
        "{history}"
    );
    for r in &ran {
        assert_eq!(r["verdict"], "pass");
        let index = PathBuf::from(r["report"].as_str().expect("report"));
        assert!(index.exists(), "{}", index.display());
    }
    let skipped: Vec<&Value> = entries.iter().filter(|e| e["event"] == "skipped").collect();
    let reason = |e: &&Value, what: &str| e["reason"].as_str().is_some_and(|r| r.contains(what));
    assert!(
        skipped.iter().any(|e| reason(e, "still running")),
        "no overlap was skipped: {history}"
    );
    assert!(
        skipped
            .iter()
            .all(|e| reason(e, "still running") || reason(e, "--max-runs reached")),
        "{history}"
    );
    assert!(stderr.contains("skipped"), "{stderr}");
}

#[test]
fn sigterm_stops_the_scheduler_after_reverting_the_running_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-term-{}", std::process::id());
    let target = sleeper(&marker);
    let gd = every_second_pausing(dir.path(), "term", &marker, "60s", "70s");
    let out = dir.path().join("sched");
    let mut sched = spawn_schedule(&gd, &out, &dir.path().join("state"), &[]);
    wait_for_state(target.0.id(), 'T', "paused by the scheduled run");
    let sent = Instant::now();
    signal(&sched, Signal::SIGTERM);
    let (code, _, stderr) = wait_run(&mut sched, Duration::from_secs(30));
    eprintln!("SIGTERM to scheduler exit: {:?}", sent.elapsed());
    assert_eq!(code, 3, "{stderr}");
    assert!(resumed(target.0.id()), "the paused target was left behind");
    let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history");
    let last: Value =
        serde_json::from_str(history.lines().last().expect("an entry")).expect("json");
    assert_eq!(last["event"], "ran");
    assert_eq!(last["verdict"], "aborted");
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/journal"))
            .expect("journal dir")
            .count(),
        0,
        "the journal still holds a fault"
    );
}

fn docs(yaml: &str) -> Vec<(String, String)> {
    yaml.split("\n---\n")
        .map(|d| {
            let v: serde_json::Value = serde_saphyr::from_str(d).expect("a YAML document");
            (v["kind"].as_str().expect("kind").to_string(), d.to_string())
        })
        .collect()
}

#[test]
fn emitted_cronjob_manifests_parse_into_kubernetes_types() {
    let gd = repo().join("experiments/gamedays/k8s-nightly.yaml");
    let out = rattle()
        .arg("schedule")
        .arg(&gd)
        .args([
            "--emit",
            "cronjob",
            "--image",
            "registry.example.com/rattle:1",
            "--namespace",
            "chaos",
        ])
        .output()
        .expect("run rattle");
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = docs(&yaml);
    let kinds: Vec<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "PersistentVolumeClaim",
            "CronJob"
        ],
        "{yaml}"
    );
    let get = |kind: &str| &docs.iter().find(|(k, _)| k == kind).expect(kind).1;

    let sa: ServiceAccount = serde_saphyr::from_str(get("ServiceAccount")).expect("sa");
    assert_eq!(sa.metadata.namespace.as_deref(), Some("chaos"));
    let sa_name = sa.metadata.name.clone().expect("name");

    // Least privilege: only what the four experiments' faults and probes use, and the watch for
    // cluster evidence, in `shop`.
    let role: Role = serde_saphyr::from_str(get("Role")).expect("role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("shop"));
    let rules = role.rules.expect("rules");
    let verbs = |group: &str, resource: &str| -> Vec<String> {
        rules
            .iter()
            .find(|r| {
                r.api_groups.as_deref() == Some(&[group.to_string()][..])
                    && r.resources.as_deref() == Some(&[resource.to_string()][..])
            })
            .map(|r| r.verbs.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        verbs("", "pods"),
        ["delete", "get", "list", "patch", "watch"]
    );
    assert_eq!(
        verbs("apps", "deployments"),
        ["get", "list", "patch", "watch"]
    );
    assert_eq!(verbs("apps", "deployments/scale"), ["get", "patch"]);
    // The run's watch for cluster evidence, where it reaches.
    assert_eq!(verbs("", "events"), ["list", "watch"]);
    assert_eq!(
        verbs("discovery.k8s.io", "endpointslices"),
        ["list", "watch"]
    );
    assert_eq!(rules.len(), 5, "{rules:?}");
    let binding: RoleBinding = serde_saphyr::from_str(get("RoleBinding")).expect("binding");
    assert_eq!(binding.role_ref.kind, "Role");
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (sa_name.as_str(), Some("chaos"))
    );

    let cron: CronJob = serde_saphyr::from_str(get("CronJob")).expect("cronjob");
    let spec = cron.spec.expect("spec");
    assert_eq!(spec.schedule, "30 2 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("America/New_York"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job = spec.job_template.spec.expect("job");
    assert_eq!(job.backoff_limit, Some(0));
    let pod = job.template.spec.expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some(sa_name.as_str()));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example.com/rattle:1"));
    let args = c.args.clone().expect("args");
    assert_eq!(&args[..3], ["gameday", "run", "/etc/rattle/gameday.yaml"]);
    assert!(
        args.iter().any(|a| a == "--skip-outside-window"),
        "{args:?}"
    );
    // The journal survives the pod; the next job's init container reverts leftovers.
    let init = &pod.init_containers.clone().expect("init containers")[0];
    assert_eq!(init.args.clone().expect("args")[..2], ["recover", "--yes"]);
    let pvc: PersistentVolumeClaim =
        serde_saphyr::from_str(get("PersistentVolumeClaim")).expect("pvc");
    let claim = pod
        .volumes
        .clone()
        .expect("volumes")
        .into_iter()
        .find_map(|v| v.persistent_volume_claim)
        .expect("a claim");
    assert_eq!(Some(claim.claim_name), pvc.metadata.name);
    let env = c.env.clone().expect("env");
    assert!(env.iter().any(|e| {
        e.name == "RATTLE_WEBHOOK_URL"
            && e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some()
    }));

    // The ConfigMap holds a game day that validates again on its own, as the pod will read it.
    let cm: ConfigMap = serde_saphyr::from_str(get("ConfigMap")).expect("configmap");
    let data = cm.data.expect("data");
    assert_eq!(data.len(), 5, "{:?}", data.keys());
    let dir = tempfile::tempdir().expect("tempdir");
    for (k, v) in &data {
        write(dir.path(), k, v);
    }
    let out = rattle()
        .args(["gameday", "validate"])
        .arg(dir.path().join("gameday.yaml"))
        .output()
        .expect("run rattle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn emit_uses_a_cluster_role_only_for_cluster_wide_access_and_refuses_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let drain = repo().join("experiments/k8s-node-drain.yaml");
    let gd = write(
        dir.path(),
        "gd.yaml",
        &format!(
            "version: 1\nname: drain\nexperiments: [\"{}\"]\nschedule: {{ cron: \"@daily\" }}\n",
            drain.display()
        ),
    );
    let out = rattle()
        .arg("schedule")
        .arg(&gd)
        .args(["--emit", "cronjob"])
        .output()
        .expect("run rattle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    let docs = docs(&yaml);
    let role = &docs
        .iter()
        .find(|(k, _)| k == "ClusterRole")
        .expect("ClusterRole")
        .1;
    let role: ClusterRole = serde_saphyr::from_str(role).expect("cluster role");
    let resources: Vec<String> = role
        .rules
        .expect("rules")
        .iter()
        .flat_map(|r| r.resources.clone().unwrap_or_default())
        .collect();
    assert!(resources.contains(&"nodes".to_string()), "{resources:?}");
    assert!(
        resources.contains(&"pods/eviction".to_string()),
        "{resources:?}"
    );
    let binding = &docs
        .iter()
        .find(|(k, _)| k == "ClusterRoleBinding")
        .expect("binding")
        .1;
    let _: ClusterRoleBinding = serde_saphyr::from_str(binding).expect("cluster role binding");

    let gd = write(
        dir.path(),
        "secs.yaml",
        "version: 1\nname: secs\nexperiments: [\"k.yaml\"]\nschedule:\n  cron: \"*/10 * * * * *\"\n",
    );
    write(dir.path(), "k.yaml", "version: 1\nname: k\nduration: 5s\n");
    let out = rattle()
        .arg("schedule")
        .arg(&gd)
        .args(["--emit", "cronjob"])
        .output()
        .expect("run rattle");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("secs.yaml:5:9") && err.contains("seconds field"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing may be printed on refusal");
}

const GOOD: &str = r#"version: 1
name: weekly
experiments: ["../../experiments/quickstart.yaml", "../../experiments/proxy-*.yaml"]
pause: 5s
halt_on_failure: false
schedule: { cron: "0 10 * * TUE", timezone: Europe/Berlin }
window: { days: [mon-fri], from: "09:00", to: "17:00" }
notify:
  webhook: { url: "https://hooks.example.com/x", retries: 2, backoff: 1s, when: failure }
"#;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    #[test]
    fn arbitrary_game_day_text_never_panics(s in "\\PC{0,300}") {
        let _ = rattle::gameday::load_str(&s, &repo().join("experiments/gamedays/x.yaml"));
    }

    #[test]
    fn mutated_game_day_never_panics(pos in 0usize..420, len in 0usize..8, insert in "\\PC{0,8}") {
        let s = crate::support::mutate(GOOD, pos, len, &insert);
        let _ = rattle::gameday::load_str(&s, &repo().join("experiments/gamedays/x.yaml"));
    }
}

#[test]
fn the_good_game_day_of_the_property_tests_is_valid() {
    let gd = rattle::gameday::load_str(GOOD, &repo().join("experiments/gamedays/x.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gd.experiments.len(), 3);
}

#[test]
fn an_unwritable_history_never_abandons_a_running_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-gd-hist-{}", std::process::id());
    let target = sleeper(&marker);
    let gd = every_second_pausing(dir.path(), "hist", &marker, "2s", "3s");
    let out = dir.path().join("sched");
    let mut sched = spawn_schedule(&gd, &out, &dir.path().join("state"), &["--max-runs", "1"]);
    wait_for_state(target.0.id(), 'T', "paused by the scheduled run");
    // The history file becomes unwritable while the fault is active.
    let history = out.join("history.jsonl");
    std::fs::remove_file(&history).expect("remove history");
    std::fs::create_dir(&history).expect("a directory in its place");
    let (code, _, stderr) = wait_run(&mut sched, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert!(resumed(target.0.id()), "the paused target was left behind");
    assert!(stderr.contains("warning: history file"), "{stderr}");
}
