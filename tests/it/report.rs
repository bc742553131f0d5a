//! Reports and gates: summary.md and junit.xml snapshots (insta, timestamps redacted) from a
//! hand-made report; report.json validated against its own JSON Schema; malformed gates are
//! exit 2 with line:column; a missed gate is exit 1 in a real short run; report.html checked in
//! headless Chromium (skipped with a notice when it is not installed); `rattle report` and
//! `rattle compare` and their exit codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rattle::report::junit::Junit;
use rattle::report::markdown::Markdown;
use rattle::report::{self, Renderer, Report};
use serde_json::Value;

use crate::support::{free_port, rattle, repo, write};

fn fixture_path() -> PathBuf {
    repo().join("tests/it/fixtures/report-v1-old.json")
}

/// The hand-made report (written before gates existed: no `phases`, `gates` or `score`).
fn fixture() -> Report {
    report::read(&fixture_path()).expect("fixture reads")
}

const GATED: &str = r#"version: 1
name: fixture
load:
  http: { url: "http://127.0.0.1:18080/", rate: 200/s }
faults:
  - name: kill-one
    at: 5s
    process-kill: { match: "rattle demo worker", mode: one }
duration: 12s
gates:
  recovery_time: "< 500ms"
  time_to_impact: "> 1ms"
  error_rate: "< 1%"
  availability: ">= 99.5%"
  latency:
    fault: { p99: "< 300ms" }
  faults:
    kill-one: { error_rate: "< 2%" }
  steady_state_after: { held: true }
"#;

/// The fixture judged against [`GATED`]: one gate missed, one skipped (no phases in an old
/// report), the rest passed.
fn judged() -> Report {
    let e = rattle::experiment::parse_str(GATED).expect("gated experiment parses");
    let mut r = fixture();
    report::judge(&mut r, &e.gates);
    r
}

fn redact(s: &str) -> String {
    let re = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("regex");
    re.replace_all(s, "[timestamp]").into_owned()
}

#[test]
fn a_missed_gate_fails_the_verdict_with_the_measured_value() {
    let r = judged();
    assert_eq!(r.verdict, report::Verdict::Fail);
    assert_eq!(r.exit_code, 1);
    assert!(
        r.reason
            .contains("time to recover of kill-one 812.4 ms, expected < 500ms"),
        "{}",
        r.reason
    );
    let skipped: Vec<&str> = r
        .gates
        .iter()
        .filter(|g| g.status == report::CheckStatus::Skipped)
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(skipped, ["latency.fault.p99"]);
    let score = r.score.as_ref().expect("score");
    // 3 hypothesis checks + 6 judged gates, 1 missed: round(100 * 8 / 9) = 89.
    assert_eq!((score.passed, score.judged, score.value), (8, 9, 89));
}

#[test]
fn summary_md_snapshot() {
    insta::assert_snapshot!(
        "summary_md",
        redact(&Markdown.render(&judged()).expect("markdown"))
    );
}

#[test]
fn junit_xml_snapshot() {
    let xml = Junit.render(&judged()).expect("junit");
    // Every hypothesis check and every gate is a test case.
    assert_eq!(xml.matches("<testcase ").count(), 3 + 7, "{xml}");
    insta::assert_snapshot!("junit_xml", redact(&xml));
}

pub(crate) fn report_schema() -> Value {
    let out = rattle()
        .args(["schema", "--report"])
        .output()
        .expect("run rattle");
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("schema is JSON")
}

pub(crate) fn assert_valid(schema: &Value, instance: &Value) {
    let validator = jsonschema::validator_for(schema).expect("the report schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report.json breaks its schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn report_json_matches_its_schema_old_and_new() {
    let schema = report_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let old: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path()).expect("read fixture"))
            .expect("fixture is JSON");
    assert_valid(&schema, &old);
    let new = serde_json::to_value(judged()).expect("serialize");
    assert_valid(&schema, &new);
    // The schema is not vacuous: a verdict outside the enum is refused.
    let mut bad = new.clone();
    bad["verdict"] = Value::from("maybe");
    let validator = jsonschema::validator_for(&schema).expect("compiles");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn experiment_schema_describes_gates() {
    let out = rattle().arg("schema").output().expect("run rattle");
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["recovery_time", "error_rate_during_faults", "p99_increase"] {
        assert!(text.contains(key), "experiment schema lacks {key}");
    }
}

fn validate_text(content: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "exp.yaml", content);
    let out = rattle()
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run rattle");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_gates_are_exit_2_with_line_column_and_field() {
    let (code, err) = validate_text(&GATED.replace("\"< 500ms\"", "\"under 500ms\""));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exp.yaml:11:18") && err.contains("field `gates.recovery_time`"),
        "{err}"
    );
    assert!(err.contains("expected an operator"), "{err}");
    let (code, err) = validate_text(&GATED.replace("\"< 1%\"", "\"< 1ms\""));
    assert_eq!(code, 2);
    assert!(
        err.contains("exp.yaml:13:") && err.contains("field `gates.error_rate`"),
        "{err}"
    );
    let (code, err) = validate_text(&GATED.replace("{ p99: \"< 300ms\" }", "{ p95: \"< 1s\" }"));
    assert_eq!(code, 2);
    assert!(
        err.contains("field `gates.latency.fault") && err.contains("unknown field `p95`"),
        "{err}"
    );
    let (code, err) = validate_text(&GATED.replace("    kill-one: {", "    kill-two: {"));
    assert_eq!(code, 2);
    assert!(
        err.contains("exp.yaml:18:") && err.contains("gates.faults.kill-two"),
        "{err}"
    );
    assert!(err.contains("no fault is named \"kill-two\""), "{err}");
}

/// Runs `cmd`, killing it if it outlives `limit`. Returns (exit code, stdout, stderr).
fn bounded(mut cmd: Command, limit: Duration) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        code,
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
    )
}

/// A short real run of the demo with gates, one of which cannot be met.
fn gated_run(dir: &Path) -> (i32, PathBuf, String) {
    let port = free_port();
    let exp = write(
        dir,
        "gated.yaml",
        &format!(
            r#"version: 1
name: gated
setup:
  demo: {{ replicas: 3, port: {port}, restart_delay: 1s }}
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 100/s }}
steady_state:
  warmup: 1s
  hold: 1s
  slo: {{ success_rate: ">= 90%" }}
faults:
  - name: kill-one
    at: 2s
    process-kill: {{ match: "rattle demo worker .*--balancer-port {port}$", mode: one }}
gates:
  recovery_time: "< 0s"
  availability: ">= 50%"
  latency:
    baseline: {{ max: "< 2s" }}
duration: 5s
"#
        ),
    );
    let out = dir.join("out");
    let mut cmd = rattle();
    cmd.args(["run", "--progress", "quiet", "--seed", "3", "--out"])
        .arg(&out)
        .arg(&exp);
    let (code, stdout, stderr) = bounded(cmd, Duration::from_secs(60));
    (code, out, format!("stdout:\n{stdout}\nstderr:\n{stderr}"))
}

#[test]
fn a_real_run_with_a_missed_gate_exits_1_and_writes_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, log) = gated_run(dir.path());
    assert_eq!(code, 1, "{log}");
    for f in report::FORMATS.iter().map(|f| f.file()) {
        assert!(out.join(f).is_file(), "{f} missing\n{log}");
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(json["verdict"], "fail");
    assert_eq!(json["exit_code"], 1);
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("gate missed") && r.contains("expected < 0s")),
        "{json:#}"
    );
    assert_eq!(json["gates"].as_array().map(Vec::len), Some(3));
    assert!(json["phases"]["baseline"]["requests"].as_u64() > Some(0));
    assert!(json["score"]["value"].as_u64().is_some_and(|v| v < 100));
    assert_valid(&report_schema(), &json);

    let junit = std::fs::read_to_string(out.join("junit.xml")).expect("junit.xml");
    assert!(
        junit.contains("name=\"recovery_time[kill-one]\""),
        "{junit}"
    );
    assert!(junit.contains("expected &lt; 0s"), "{junit}");
    assert!(junit.contains("name=\"recovery of kill-one\""), "{junit}");

    // Re-rendering the run gives the same files as the run wrote.
    for (format, file) in [
        ("markdown", "summary.md"),
        ("junit", "junit.xml"),
        ("html", "report.html"),
    ] {
        let o = rattle()
            .args(["report", "--format", format])
            .arg(out.join("report.json"))
            .output()
            .expect("run rattle report");
        assert!(o.status.success());
        let written = std::fs::read_to_string(out.join(file)).expect("read");
        assert_eq!(String::from_utf8_lossy(&o.stdout), written, "{format}");
    }

    // The HTML, as a browser renders it.
    let Some(dom) = crate::support::chromium_dump_dom(&out.join("report.html")) else {
        return;
    };
    for needle in [
        r#"data-verdict="fail""#,
        r#"data-chart="throughput""#,
        r#"data-chart="latency""#,
        "<polyline",
        "fault-window",
        "marker inject",
        r#"data-fault="kill-one""#,
        "fault-table",
        "time to recover",
        "recovery_time[kill-one]",
        r#"id="plan""#,
    ] {
        assert!(dom.contains(needle), "rendered DOM lacks {needle:?}");
    }
    // Self-contained: nothing is fetched.
    for needle in ["<script", "<link", "src=\"http", "href=\"http"] {
        assert!(
            !dom.contains(needle),
            "report.html refers outside: {needle}"
        );
    }
}

#[test]
fn report_re_renders_an_old_report_and_refuses_unknown_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html = dir.path().join("r.html");
    let out = rattle()
        .args(["report", "--format", "html", "--out"])
        .arg(&html)
        .arg(fixture_path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&html).expect("html written");
    assert!(text.contains("data-verdict=\"pass\"") && text.contains("<svg"));
    let out = rattle()
        .args(["report", "--format", "json"])
        .arg(fixture_path())
        .output()
        .expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["score"]["value"], 100, "an old report gets its score");

    let mut v2: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_path()).expect("read"))
            .expect("json");
    v2["schema_version"] = Value::from(2);
    let p = write(dir.path(), "v2.json", &v2.to_string());
    let out = rattle().args(["report"]).arg(&p).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema_version 2 is not supported") && err.contains("reads version 1"),
        "{err}"
    );
    let p = write(dir.path(), "x.json", "{\"hello\": 1}");
    let out = rattle().args(["report"]).arg(&p).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compare_exits_1_on_a_regression_beyond_its_allowance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = fixture_path();
    let mut worse: Value =
        serde_json::from_str(&std::fs::read_to_string(&old).expect("read")).expect("json");
    worse["faults"][0]["recovery"]["time_to_recover_ms"] = Value::from(5000.0);
    let new = write(dir.path(), "new.json", &worse.to_string());
    let run = |args: &[&str], a: &Path, b: &Path| {
        let o = rattle()
            .arg("compare")
            .arg(a)
            .arg(b)
            .args(args)
            .output()
            .expect("run");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&[], &old, &old);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No figure regressed"));
    let (code, out, _) = run(&[], &old, &new);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("| faults.kill-one.recovery_time | 812.4 ms | 5000.0 ms | +4187.6 ms |")
            && out.contains("regressed"),
        "{out}"
    );
    // Better is never a regression.
    let (code, _, _) = run(&[], &new, &old);
    assert_eq!(code, 0);
    let (code, out, _) = run(&["--max-regression", "recovery_time=5s"], &old, &new);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&["--max-regression", "recovery_tim=5s"], &old, &new);
    assert_eq!(code, 2);
    assert!(err.contains("no such figure"), "{err}");
    let (code, _, err) = run(&["--max-regression", "p99=fast"], &old, &new);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&[], &old, &dir.path().join("missing.json"));
    assert_eq!(code, 2);
}

#[test]
fn compare_with_an_inconclusive_report_exits_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = fixture_path();
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(&old).expect("read")).expect("json");
    v["verdict"] = Value::from("inconclusive");
    v["exit_code"] = Value::from(5);
    let same = write(dir.path(), "inconclusive.json", &v.to_string());
    // Worse figures too: a regression against rattle's own lag is no finding either.
    v["faults"][0]["recovery"]["time_to_recover_ms"] = Value::from(5000.0);
    let worse = write(dir.path(), "worse.json", &v.to_string());
    for (a, b) in [(&old, &same), (&same, &old), (&old, &worse), (&same, &same)] {
        let o = rattle().arg("compare").arg(a).arg(b).output().expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(5), "{a:?} {b:?}: {err}");
        assert!(err.contains("is inconclusive"), "{err}");
    }
}
