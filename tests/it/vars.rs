//! Issue #15: values from outside the file. `${var:NAME}` from `--var` and `--var-file`,
//! `${env:NAME}` from the environment, `$${` for a literal; an unset name or a bad var file is
//! a located error (exit 2) before anything runs; later diagnostics still point at the file as
//! written; and a secret value, though it is really sent (the test server sees it), appears in
//! no file of the report directory, nor on stdout or stderr, nor in an error message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::support::{rattle, run_bounded_cmd, write};

const SECRET: &str = "s3cr3t-0f-issue15-Zq9";

/// Runs rattle with `args` and extra environment; returns (code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let mut cmd = rattle();
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded_cmd(cmd, Duration::from_secs(60))
}

const EXP: &str =
    "version: 1\nname: vars\nsteady_state:\n  probes:\n    - name: x\n      interval: 500ms\n";

#[test]
fn issue15_unset_names_and_bad_var_files_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let exp = format!(
        "{EXP}      tcp: {{ address: \"${{var:HOST}}:${{var:PORT}}\", timeout: \"${{env:RATTLE_T15_UNSET}}\" }}\nduration: 5s\n"
    );
    write(dir.path(), "exp.yaml", &exp);
    let (code, _, err) = run(
        &["validate", "exp.yaml", "--var", "HOST=127.0.0.1"],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    // Each reference is located where it is written.
    assert!(
        err.contains("exp.yaml:7:36: variable `PORT` is not set (set: HOST)"),
        "{err}"
    );
    assert!(
        err.contains("exp.yaml:7:60: environment variable `RATTLE_T15_UNSET` is not set"),
        "{err}"
    );

    // A reference that is not one, and an unterminated one.
    write(
        dir.path(),
        "bad.yaml",
        &format!("{EXP}      tcp: {{ address: \"${{HOST}}:1\" }}\nduration: ${{var:D\n"),
    );
    let (code, _, err) = run(&["validate", "bad.yaml"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml:7:24: `${HOST}` is not a reference"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:8:11: `${` with no closing `}`"),
        "{err}"
    );

    // --var-file: missing, empty, malformed, a bad name; each names the file.
    write(
        dir.path(),
        "ok.yaml",
        &format!("{EXP}      tcp: {{ address: \"127.0.0.1:${{var:PORT}}\" }}\nduration: 5s\n"),
    );
    let cases: &[(&str, &str, &str)] = &[
        ("missing.yaml", "", "missing.yaml: cannot read"),
        (
            "empty.yaml",
            "# nothing\n",
            "empty.yaml: the whole file is empty",
        ),
        ("list.yaml", "- a\n- b\n", "list.yaml:1:1"),
        ("nested.yaml", "PORT: [1, 2]\n", "nested.yaml:1:"),
        (
            "badname.yaml",
            "PORT: 1\n9x: 2\n",
            "badname.yaml:2:1: field `9x`",
        ),
    ];
    for (name, content, want) in cases {
        if !content.is_empty() {
            write(dir.path(), name, content);
        }
        let (code, _, err) = run(
            &["validate", "ok.yaml", "--var-file", name],
            &[],
            dir.path(),
        );
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let (code, _, err) = run(&["validate", "ok.yaml", "--var", "PORT"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected NAME=VALUE"), "{err}");
}

#[test]
fn issue15_values_are_typed_by_the_scalar_and_cannot_change_the_structure() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "vars.json",
        "{\"PORT\": 5432, \"CODE\": 204, \"T\": \"250ms\"}\n",
    );
    let exp = format!(
        "{EXP}      http:\n        url: \"http://127.0.0.1:${{var:PORT}}/\"\n        expect_status: ${{var:CODE}}\n        timeout: ${{var:T}}\nduration: 5s\ndescription: \"$${{not a reference}}\"\n"
    );
    write(dir.path(), "exp.yaml", &exp);
    let (code, out, err) = run(
        &[
            "run",
            "--dry-run",
            "exp.yaml",
            "--var-file",
            "vars.json",
            "--var",
            "T=300ms",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // A number where the file wants one; --var wins over --var-file; `$${` is a literal `${`.
    assert!(
        out.contains("GET http://127.0.0.1:5432/ expects status 204 every 500ms"),
        "{out}"
    );
    assert!(out.contains("${not a reference}"), "{out}");

    // A value holding YAML stays one string: here it makes an invalid duration, located at
    // the reference, and no new key appears.
    let (code, _, err) = run(
        &[
            "validate",
            "exp.yaml",
            "--var-file",
            "vars.json",
            "--var",
            "T=1s\nfaults: []",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exp.yaml:10:18: field `steady_state.probes[0].http.timeout`"),
        "{err}"
    );
    assert!(!err.contains("unknown field"), "{err}");

    // Inside a flow mapping, an unquoted reference is a syntax trap: said so, located.
    write(
        dir.path(),
        "flow.yaml",
        &format!("{EXP}      tcp: {{ address: ${{var:A}} }}\nduration: 5s\n"),
    );
    let (code, _, err) = run(
        &["validate", "flow.yaml", "--var", "A=x:1"],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "flow.yaml:7:23: inside `{ }` or `[ ]`, a value with a reference must be quoted"
        ),
        "{err}"
    );
}

#[test]
fn issue15_diagnostics_after_substitution_point_at_the_file_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // The substituted value is much longer than its reference; the error after it on the
    // same line must still be located where the author wrote it.
    let exp =
        format!("{EXP}      tcp: {{ address: \"${{var:H}}:1\", timeout: 0ms }}\nduration: 5s\n");
    write(dir.path(), "exp.yaml", &exp);
    let long = "h".repeat(200);
    let (code, _, err) = run(
        &["validate", "exp.yaml", "--var", &format!("H={long}")],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "exp.yaml:7:12: field `steady_state.probes[0].tcp`: `timeout`: must be above zero"
        ),
        "{err}"
    );
    // A parse error after the value: `timeot` is at column 37 of the file.
    let exp =
        format!("{EXP}      tcp: {{ address: \"${{var:H}}:1\", timeot: 1s }}\nduration: 5s\n");
    write(dir.path(), "exp.yaml", &exp);
    let (code, _, err) = run(
        &["validate", "exp.yaml", "--var", &format!("H={long}")],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exp.yaml:7:37"), "{err}");
    assert!(
        !err.contains(&long),
        "the snippet shows the file as written: {err}"
    );
}

/// A server that records the Authorization header and the query of each request.
async fn recording_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        seen.lock().unwrap().push(format!("{auth}|{query}"));
                        // Echo the secret back in a failing answer: the probe's error quotes
                        // the body, which must still not reach any output.
                        let mut r =
                            Response::new(Full::new(Bytes::from(format!("denied {query}"))));
                        *r.status_mut() = http::StatusCode::OK;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn assert_no_secret(where_: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "the secret reached {where_}:\n{text}"
    );
}

#[tokio::test]
async fn issue15_secrets_from_the_environment_are_sent_but_never_written() {
    let (addr, seen) = recording_server().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "secrets.yaml",
        &format!("KEY2: {{ secret: \"{SECRET}-file\" }}\n"),
    );
    let exp = format!(
        "{EXP}      http:\n        url: \"http://{addr}/h?token=${{env:RATTLE_T15_TOKEN}}&k=${{var:KEY2}}\"\n        headers: {{ Authorization: \"Bearer ${{env:RATTLE_T15_TOKEN}}\" }}\n        body_contains: \"granted\"\nduration: 2s\ndescription: \"uses ${{env:RATTLE_T15_TOKEN}}\"\n"
    );
    write(dir.path(), "exp.yaml", &exp);
    let out_dir = dir.path().join("out");
    let env = [("RATTLE_T15_TOKEN", SECRET)];
    let d = dir.path().to_path_buf();
    let o = out_dir.display().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &[
                // Debug logs on stderr too: they pass through the same redaction.
                "-vv",
                "run",
                "exp.yaml",
                "--var-file",
                "secrets.yaml",
                "--out",
                &o,
                "--progress",
                "plain",
            ],
            &env,
            &d,
        )
    })
    .await
    .unwrap();
    assert!(code == 0 || code == 1, "{code}\n{stdout}\n{stderr}");
    // The secret was really used: the server saw it in the header and the query.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with(&format!("Bearer {SECRET}|token={SECRET}&k={SECRET}-file"))),
        "{seen:?}"
    );
    assert_no_secret("stdout", &stdout);
    assert_no_secret("stderr", &stderr);
    let mut files = 0;
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert_no_secret(&path.display().to_string(), &text);
        files += 1;
    }
    assert!(files >= 3, "the report directory holds its files");
    let report = std::fs::read_to_string(out_dir.join("report.json")).unwrap();
    // The failing check quoted the echoed body, redacted.
    assert!(report.contains("<redacted>"), "{report}");

    // --dry-run and error messages too.
    let d = dir.path().to_path_buf();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &["run", "--dry-run", "exp.yaml", "--var-file", "secrets.yaml"],
            &env,
            &d,
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_no_secret("--dry-run stdout", &stdout);
    assert_no_secret("--dry-run stderr", &stderr);
    write(
        dir.path(),
        "bad.yaml",
        &format!("{EXP}      tcp: {{ address: \"${{env:RATTLE_T15_TOKEN}}\" }}\nduration: 5s\n"),
    );
    let d = dir.path().to_path_buf();
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run(&["validate", "bad.yaml"], &env, &d))
            .await
            .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected host:port"), "{stderr}");
    assert_no_secret("an error message", &stderr);
}

#[test]
fn issue15_game_days_substitute_in_their_file_and_in_their_experiments() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "exp.yaml",
        &format!("{EXP}      tcp: {{ address: \"127.0.0.1:${{var:PORT}}\" }}\nduration: 5s\n"),
    );
    write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: \"${var:GD}\"\nexperiments: [\"${var:WHICH}\"]\n",
    );
    let (code, out, err) = run(
        &[
            "gameday",
            "validate",
            "gd.yaml",
            "--var",
            "GD=nightly",
            "--var",
            "WHICH=exp.yaml",
            "--var",
            "PORT=5432",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(nightly, 1 experiment(s)"), "{out}");
    // The experiment's own unset reference is located in the experiment, inside the game
    // day's error.
    let (code, _, err) = run(
        &[
            "gameday",
            "validate",
            "gd.yaml",
            "--var",
            "GD=nightly",
            "--var",
            "WHICH=exp.yaml",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exp.yaml:7:34: variable `PORT` is not set"),
        "{err}"
    );
    let (code, _, err) = run(&["gameday", "validate", "gd.yaml"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gd.yaml:2:8: variable `GD` is not set"),
        "{err}"
    );
}
