//! Issue #19, what rattle prints and echoes: secrets never reach an error message (snippets,
//! `rattle load`'s flags), `rattle load`'s totals agree with its error classes, hostile bytes in
//! names and descriptions stay inert on a terminal and in Markdown/HTML, and input errors name
//! the real field. Every process is bounded in time; servers live on 127.0.0.1 inside the test.

use std::time::Duration;

use rattle::report::{self, Renderer as _};
use serde_json::Value;

use crate::support::{rattle, repo, run_bounded_cmd, write};

const LIMIT: Duration = Duration::from_secs(30);

const SECRETS: [&str; 3] = ["hunter2", "s3cr3t-t0ken", "k3y-v4lue"];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

fn assert_inert(what: &str, text: &str) {
    for (b, name) in [
        ('\x1b', "ESC"),
        ('\x07', "BEL"),
        ('\r', "CR"),
        ('\u{9b}', "CSI"),
    ] {
        assert!(!text.contains(b), "{what} carries a raw {name}:\n{text:?}");
    }
}

fn validate(dir: &std::path::Path, name: &str, content: &str) -> (i32, String, String) {
    let f = write(dir, name, content);
    let mut cmd = rattle();
    cmd.arg("validate").arg(&f);
    run_bounded_cmd(cmd, LIMIT)
}

#[test]
fn issue19_validation_snippets_never_show_secret_headers_or_url_passwords() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The error (an unknown field) sits between the secrets, so the snippet shows their lines.
    for (name, content) in [
        (
            "block.yaml",
            "version: 1\nname: s\nload:\n  http:\n    url: \"http://admin:hunter2@127.0.0.1:1/\"\n    rate: 20/s\n    headers:\n      Authorization: Bearer s3cr3t-t0ken\n      X-Api-Key:\n        k3y-v4lue\n    bogus: 1\nduration: 5s\n",
        ),
        (
            "flow.yaml",
            "version: 1\nname: s\nload:\n  http: { url: \"http://admin:hunter2@127.0.0.1:1/\", rate: 20/s,\n    headers: { Authorization: \"Bearer s3cr3t-t0ken\", \"X-Api-Key\": \"k3y-v4lue\" },\n    bogus: 1 }\nduration: 5s\n",
        ),
        (
            "json.json",
            "{\"version\": 1, \"name\": \"s\", \"load\": {\"http\": {\n \"url\": \"http://admin:hunter2@127.0.0.1:1/\",\n \"headers\": {\"Authorization\": \"Bearer s3cr3t-t0ken\", \"x-api-key\": \"k3y-v4lue\"},\n \"bogus\": 1, \"rate\": \"20/s\"}}, \"duration\": \"5s\"}\n",
        ),
        (
            "bad-url.yaml",
            "version: 1\nname: s\nload:\n  http: { url: \"ftp://admin:hunter2@127.0.0.1:1/\", rate: 20/s }\nduration: 5s\n",
        ),
        (
            "broken-url.yaml",
            "version: 1\nname: s\nload:\n  http: { url: \"http//admin:hunter2@127.0.0.1:1/\", rate: 20/s }\nduration: 5s\n",
        ),
    ] {
        let (code, out, err) = validate(dir.path(), name, content);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert_no_secret(name, &out);
        assert_no_secret(name, &err);
        assert!(err.contains("error:"), "{name}: {err}");
    }
    // The snippet still shows where the problem is, and that something was hidden.
    let (_, _, err) = validate(
        dir.path(),
        "block.yaml",
        &std::fs::read_to_string(dir.path().join("block.yaml")).expect("read"),
    );
    assert!(err.contains("field `load.http.bogus`"), "{err}");
    assert!(err.contains("        <redacted>"), "{err}");
    let (_, _, err) = validate(
        dir.path(),
        "flow.yaml",
        &std::fs::read_to_string(dir.path().join("flow.yaml")).expect("read"),
    );
    assert!(
        err.contains("Authorization: <redacted>, \"X-Api-Key\": <redacted> }"),
        "{err}"
    );
    assert!(err.contains("http://<redacted>@127.0.0.1:1/"), "{err}");
}

#[test]
fn issue19_a_dry_run_shows_no_secret_and_no_raw_control_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = write(
        dir.path(),
        "esc.yaml",
        "version: 1\nname: esc\ndescription: \"retitle \\e]0;pwned\\a clear \\e[2J \\u202e end\"\nload:\n  http:\n    url: \"http://admin:hunter2@127.0.0.1:1/\"\n    rate: 20/s\n    headers: { Authorization: \"Bearer s3cr3t-t0ken\", X-Api-Key: \"k3y-v4lue\" }\nfaults:\n  - name: \"kill\\e[31m-one\"\n    at: 2s\n    process-kill: { match: \"no-such-process-\\e]0;x\\a\", mode: one }\nduration: 5s\n",
    );
    let mut cmd = rattle();
    cmd.arg("run").arg(&f).arg("--dry-run");
    let (code, out, err) = run_bounded_cmd(cmd, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    for (what, text) in [("stdout", &out), ("stderr", &err)] {
        assert_no_secret(what, text);
        assert_inert(what, text);
    }
    assert!(out.contains("\\u001b]0;pwned\\u0007"), "{out}");
    assert!(out.contains("kill\\u001b[31m-one"), "{out}");
}

#[test]
fn issue19_errors_quoting_user_text_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = validate(
        dir.path(),
        "key.yaml",
        "version: 1\nname: k\n\"\\e]0;pwned\\a\\e[2J\": 1\nduration: 5s\n",
    );
    assert_eq!(code, 2, "{out}{err}");
    assert_inert("stderr", &err);
    assert!(err.contains("\\u001b]0;pwned\\u0007"), "{err}");
}

fn rattle_load(args: &[&str]) -> (i32, String, String) {
    let mut cmd = rattle();
    cmd.arg("load").args(args);
    run_bounded_cmd(cmd, LIMIT)
}

#[test]
fn issue19_rattle_load_never_echoes_a_header_value_or_a_url_password() {
    for args in [
        &[
            "http://127.0.0.1:1/",
            "-H",
            "Authorization: Bearer s3cr3t-t0ken\x01",
        ][..],
        &[
            "http://127.0.0.1:1/",
            "-H",
            "Authorization Bearer s3cr3t-t0ken",
        ][..],
        &["http://127.0.0.1:1/", "-H", "X-Api-Key: k3y-v4lue\x7f"][..],
        &["ftp://admin:hunter2@127.0.0.1:1/"][..],
        &["http://admin:hunter2@127.0.0.1:1/ x"][..],
        &["http//admin:hunter2@127.0.0.1:1/"][..],
        &["http://admin:hunter2@/"][..],
    ] {
        let (code, out, err) = rattle_load(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_no_secret(&format!("{args:?}"), &format!("{out}{err}"));
        assert!(err.contains("invalid"), "{args:?}: {err}");
    }
    // A valid URL with credentials, against a closed port: neither text nor JSON shows them.
    let port = crate::support::free_port().to_string();
    let url = format!("http://admin:hunter2@127.0.0.1:{port}/");
    for json in [false, true] {
        let mut args = vec![url.as_str(), "-d", "300ms", "-c", "2", "--no-progress"];
        args.extend(["-H", "Authorization: Bearer s3cr3t-t0ken"]);
        if json {
            args.push("--json");
        }
        let (code, out, err) = rattle_load(&args);
        assert_eq!(code, 1, "{out}{err}");
        assert_no_secret("rattle load", &format!("{out}{err}"));
    }
}

/// A server that accepts every connection and never answers (nor closes).
fn silent_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    l.set_nonblocking(true).expect("nonblocking");
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        let start = std::time::Instant::now();
        // Bounded: the longest run below is a few seconds.
        while start.elapsed() < LIMIT {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, h)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn issue19_load_totals_agree_with_the_error_classes_against_a_server_that_never_answers() {
    let (addr, _server) = silent_server();
    let url = format!("http://{addr}/");
    // 200/s for 1 s with at most 5 in flight and a 300 ms timeout: most tickets find no free
    // connection (missed), the few sent time out.
    let base = [
        url.as_str(),
        "--rate",
        "200/s",
        "-c",
        "5",
        "--timeout",
        "300ms",
        "-d",
        "1s",
        "--no-progress",
    ];
    let mut args = base.to_vec();
    args.push("--json");
    let (code, out, err) = rattle_load(&args);
    assert_eq!(code, 1, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let errors = r["errors"].as_object().cloned().unwrap_or_default();
    let error_sum: u64 = errors.values().filter_map(Value::as_u64).sum();
    let (requests, sent, ok, failed, missed) = (
        u(&r, "requests"),
        u(&r, "sent"),
        u(&r, "ok"),
        u(&r, "failed"),
        u(&r, "missed"),
    );
    assert_eq!(ok, 0, "{r}");
    assert!(
        missed > 0 && errors.get("timeout").and_then(Value::as_u64) > Some(0),
        "{r}"
    );
    assert_eq!(requests, ok + failed, "{r}");
    assert_eq!(failed, error_sum, "{r}");
    assert_eq!(requests, sent + missed, "{r}");
    assert_eq!(u(&errors.into(), "missed"), missed, "{r}");
    // Tickets still waiting for a connection when the run stopped, their timeout not run out,
    // are unsent: neither a request nor a failure of the target.
    assert_eq!(
        u(&r["open"], "scheduled"),
        requests + u(&r["open"], "unsent"),
        "{r}"
    );
    assert_eq!(u(&r["open"], "sent"), sent, "{r}");
    assert_eq!(u(&r["open"], "missed"), missed, "{r}");

    // The text: the requests line's figures add up to what the errors line lists.
    let (code, out, err) = rattle_load(&base);
    assert_eq!(code, 1, "{out}{err}");
    let line = |k: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(k))
            .unwrap_or_else(|| panic!("no {k} line in\n{out}"))
            .to_string()
    };
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|w| !w.is_empty() && !w.contains('.'))
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let requests_line = line("requests");
    let errors_line = line("errors");
    let classes: u64 = errors_line
        .split(", ")
        .filter_map(|kv| kv.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum();
    let n = nums(&requests_line);
    // "N in T s: S sent, R/s, M missed (ok O, failed F incl. the missed)"
    let (total, sent, missed, ok, failed) = (n[0], n[1], n[2], n[3], n[4]);
    assert_eq!(total, sent + missed, "{out}");
    assert_eq!(total, ok + failed, "{out}");
    assert_eq!(failed, classes, "{out}");
    assert!(errors_line.contains(&format!("missed: {missed}")), "{out}");
}

#[test]
fn issue19_duplicate_keys_and_empty_files_name_the_real_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gate = std::fs::read_to_string(repo().join("experiments/ci-gate.yaml")).expect("read");
    let dup = gate.replace(
        "slo: { success_rate: \">= 99%\", p99: \"< 100ms\" }",
        "slo:\n    success_rate: \">= 99%\"\n    success_rate: \">= 98%\"",
    );
    assert_ne!(dup, gate, "the example changed: update this test");
    let line = dup
        .lines()
        .position(|l| l.contains(">= 98%"))
        .expect("dup line")
        + 1;
    let (code, _, err) = validate(dir.path(), "dup.yaml", &dup);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "dup.yaml:{line}:5: field `steady_state.slo.success_rate`: duplicate key `success_rate`"
        )),
        "{err}"
    );
    assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    let (code, _, err) = validate(dir.path(), "top.yaml", "version: 1\nname: a\nname: b\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("top.yaml:3:1: field `name`: duplicate key `name`"),
        "{err}"
    );
    for (name, content) in [("empty.yaml", ""), ("comments.yaml", "# nothing\n\n---\n")] {
        let (code, _, err) = validate(dir.path(), name, content);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("{name}: the whole file is empty")),
            "{err}"
        );
    }
    for (_, _, err) in [
        validate(dir.path(), "dup.yaml", &dup),
        validate(dir.path(), "empty.yaml", ""),
    ] {
        assert!(
            !err.contains("field `?`") && !err.contains("field `.`"),
            "{err}"
        );
        assert!(!err.contains(".?`"), "{err}");
    }
}

#[test]
fn issue19_summary_md_and_report_html_keep_hostile_names_inert() {
    let mut r =
        report::read(&repo().join("tests/it/fixtures/report-v1-old.json")).expect("fixture");
    r.experiment.name = "x | y <script>alert(1)</script>\n# h".into();
    r.reason = "expected < 500ms & <img src=x onerror=alert(2)>".into();
    assert!(!r.faults.is_empty(), "the fixture has a fault");
    r.faults[0].name = "kill|one\x1b[2J".into();
    r.faults[0].error = Some("boom <b>x</b>".into());
    let md = report::markdown(&r);
    assert!(
        !md.contains("<script") && !md.contains("<img") && !md.contains("<b>"),
        "{md}"
    );
    assert_inert("summary.md", &md);
    assert!(
        md.contains("expected < 500ms &"),
        "prose stays as written: {md}"
    );
    // Every row of the faults table still has its 8 cells.
    for row in md.lines().filter(|l| l.starts_with("| kill")) {
        let cells = row.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 9, "{row}");
    }
    // The heading is one line.
    assert!(
        md.starts_with("# rattle: x \\| y &lt;script>alert(1)&lt;/script> # h — "),
        "{md}"
    );
    // report.html: minijinja's autoescape.
    let html = report::html::Html.render(&r).expect("html");
    assert!(
        !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
        "html"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)") || html.contains("\\u003cscript"),
        "html"
    );
    assert_inert("report.html", &html);
}

#[test]
fn issue19_gameday_index_md_keeps_hostile_names_inert() {
    let exp = |name: &str, reason: &str| {
        serde_json::json!({
            "name": name, "file": "a.yaml", "status": "ran", "verdict": "fail",
            "exit_code": 1, "reason": reason, "report_dir": "01-a", "score": 50, "seed": 1,
            "started_at": null, "duration_ms": 1, "failed_requests": 3, "max_recovery_ms": 1.0
        })
    };
    let v = serde_json::json!({
        "schema_version": 1, "rattle_version": "0", "name": "gd | <b>x</b>",
        "file": "g`d.yaml", "description": "line one\n<script>x</script> | two",
        "started_at": "t", "finished_at": "t", "duration_ms": 1, "verdict": "fail",
        "exit_code": 1, "reason": "r\nr", "halt_on_failure": false, "window": null,
        "experiments": [exp("a|b\x1b]0;t\x07", "why <i>x</i>\nnext | cell"), exp("plain", "expected < 1s")],
    });
    let gd: rattle::gameday::index::GameDayReport =
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    let md = rattle::gameday::run::markdown(&gd);
    assert_inert("index.md", &md);
    assert!(
        !md.contains("<b>") && !md.contains("<script") && !md.contains("<i>"),
        "{md}"
    );
    for row in md
        .lines()
        .filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 "))
    {
        assert_eq!(row.replace("\\|", "").matches('|').count(), 10, "{row}");
    }
    assert!(md.contains("| expected < 1s |"), "{md}");
    // index.html: the game day's template escapes too.
    let dir = tempfile::tempdir().expect("temp dir");
    rattle::gameday::run::write(&gd, dir.path()).expect("write");
    let html = std::fs::read_to_string(dir.path().join("index.html")).expect("index.html");
    assert!(
        !html.contains("<b>x</b>") && !html.contains("<script>x") && !html.contains("<i>x"),
        "{html}"
    );
    assert_inert("index.html", &html);
}

/// Every file under `dir`, as text (lossy), with its path.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

#[test]
fn issue19_a_real_run_keeps_secrets_out_of_its_output_and_reports_and_names_inert() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = crate::support::free_port();
    let exp = write(
        dir.path(),
        "secret.yaml",
        &format!(
            r#"version: 1
name: secret-run
description: "retitle \e]0;pwned\a | <b>bold</b>"
setup:
  demo: {{ replicas: 2, port: {port}, restart_delay: 1s }}
load:
  http:
    url: "http://admin:hunter2@127.0.0.1:{port}/"
    rate: 50/s
    headers: {{ Authorization: "Bearer s3cr3t-t0ken", X-Api-Key: "k3y-v4lue" }}
steady_state:
  warmup: 1s
  hold: 1s
faults:
  - name: "kill|one\e[2J<i>"
    at: 2s
    process-kill: {{ match: "rattle demo worker .*--balancer-port {port}$", mode: one }}
duration: 4s
"#
        ),
    );
    let out_dir = dir.path().join("out");
    let mut cmd = rattle();
    cmd.args(["run", "--progress", "plain", "--seed", "3", "--out"])
        .arg(&out_dir)
        .arg(&exp);
    let (code, out, err) = run_bounded_cmd(cmd, Duration::from_secs(60));
    assert!((0..=1).contains(&code), "exit {code}\n{out}\n{err}");
    for (what, text) in [("stdout", &out), ("stderr", &err)] {
        assert_no_secret(what, text);
        assert_inert(what, text);
    }
    assert!(err.contains("kill|one\\u001b[2J<i>"), "{err}");
    let files = files_under(&out_dir);
    assert!(files.len() >= 3, "{files:?}");
    for (path, text) in &files {
        let what = path.display().to_string();
        assert_no_secret(&what, text);
        assert_inert(&what, text);
    }
    let (_, md) = files
        .iter()
        .find(|(p, _)| p.ends_with("summary.md"))
        .expect("summary.md");
    assert!(!md.contains("<i>") && !md.contains("<b>"), "{md}");
    let row = md
        .lines()
        .find(|l| l.starts_with("| kill"))
        .unwrap_or_else(|| panic!("no fault row in {md}"));
    assert_eq!(row.replace("\\|", "").matches('|').count(), 9, "{row}");
}

#[test]
fn issue19_json_on_a_terminal_stays_valid_and_equal_with_raw_c1_and_bidi_in_names() {
    // serde_json leaves DEL, C1 controls and bidi marks raw; the terminal escaping turns them
    // into JSON escapes of the same characters.
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = std::fs::read_to_string(repo().join("tests/it/fixtures/report-v1-old.json"))
        .expect("fixture");
    let mut v: Value = serde_json::from_str(&fixture).expect("fixture json");
    let name = "csi\u{9b}2J del\u{7f} rlo\u{202e}txt esc\u{1b}";
    v["experiment"]["name"] = Value::from(name);
    let f = write(dir.path(), "report.json", &v.to_string());
    let mut cmd = rattle();
    cmd.arg("report").arg(&f).args(["--format", "json"]);
    let (code, out, err) = run_bounded_cmd(cmd, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    assert_inert("stdout", &out);
    assert!(
        !out.contains('\u{202e}') && !out.contains('\u{7f}'),
        "{out:?}"
    );
    let back: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(back["experiment"]["name"], Value::from(name));
}
