//! CLI conventions (issue #20, parts 4 and 5): completions accepted by bash, man pages for
//! every subcommand, `--version` with the commit, diagnostics through tracing on stderr only
//! (-v, -q, RUST_LOG, --log-format json) with results alone on stdout, the coloured verdict
//! (never an escape code when piped, unless --color always; NO_COLOR on a terminal), and the
//! JSON / GitHub output of validate, compare, run --dry-run and recover.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use serde_json::Value;

use crate::support::{free_port, rattle, repo, run_bounded_cmd, write};

const ESC: char = '\u{1b}';

/// Runs a short rattle command (bounded: 60 s) and returns (code, stdout, stderr).
fn run(cmd: Command) -> (i32, String, String) {
    run_bounded_cmd(cmd, Duration::from_secs(60))
}

/// Visible subcommand paths, from the parser itself: `run`, `gameday run`, ...
fn subcommands() -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if s.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix}{}", s.get_name());
            out.push(path.clone());
            walk(s, &format!("{path} "), out);
        }
    }
    let mut out = Vec::new();
    walk(&rattle::cli::Cli::command(), "", &mut out);
    out
}

/// Whether an external tool is installed; when not, fails if `RATTLE_REQUIRE_<NAME>` is set,
/// else the caller skips with a printed reason.
fn have_tool(tool: &str, require_var: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os(require_var).is_none(),
            "{require_var} is set but {tool} is not installed"
        );
        eprintln!("skipped: {tool} is not installed (set {require_var}=1 to require it)");
    }
    found
}

#[test]
fn bash_completion_names_every_subcommand_and_parses() {
    let (code, script, err) = run({
        let mut c = rattle();
        c.args(["completions", "bash"]);
        c
    });
    assert_eq!(code, 0, "{err}");
    for sub in subcommands() {
        let last = sub.rsplit(' ').next().unwrap_or(&sub);
        assert!(script.contains(last), "bash completion lacks {sub}");
    }
    assert!(script.contains("--log-format") && script.contains("--dry-run"));
    if have_tool("bash", "RATTLE_REQUIRE_BASH") {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "rattle.bash", &script);
        let out = Command::new("bash").arg("-n").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n rejects the script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let (code, script, err) = run({
            let mut c = rattle();
            c.args(["completions", shell]);
            c
        });
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            script.contains("rattle") && script.contains("gameday"),
            "{shell}"
        );
    }
    let (code, _, err) = run({
        let mut c = rattle();
        c.args(["completions", "tcsh"]);
        c
    });
    assert_eq!(code, 2, "an unknown shell is bad input: {err}");
}

#[test]
fn man_writes_a_page_per_subcommand_that_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let (code, stdout, err) = run({
        let mut c = rattle();
        c.args(["man", "--out"]).arg(&out_dir);
        c
    });
    assert_eq!(code, 0, "{err}");
    let subs = subcommands();
    assert!(stdout.contains(&format!("wrote {} manual pages", subs.len() + 1)));
    let top = std::fs::read_to_string(out_dir.join("rattle.1")).unwrap();
    assert!(top.contains(".TH rattle 1"), "{top}");
    for sub in &subs {
        let name = format!("rattle-{}", sub.replace(' ', "-"));
        let page = std::fs::read_to_string(out_dir.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(page.contains(&format!(".TH {name} 1")), "{name}: {page}");
        assert!(page.contains(".SH SYNOPSIS"), "{name}");
    }
    // The top page lists the subcommands; a hidden one gets no page.
    for sub in subs.iter().filter(|s| !s.contains(' ')) {
        assert!(
            top.contains(&format!("rattle\\-{sub}(1)")),
            "top page lacks {sub}"
        );
    }
    assert!(!out_dir.join("rattle-demo-worker.1").exists());
    if have_tool("man", "RATTLE_REQUIRE_MAN") {
        let out = Command::new("man")
            .arg("-l")
            .arg(out_dir.join("rattle-run.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("rattle-run") && text.contains("--dry-run"),
            "{text}"
        );
    }
    // One page on stdout, by subcommand path; an unknown one is exit 2 with the list.
    let (code, page, _) = run({
        let mut c = rattle();
        c.args(["man", "gameday", "run"]);
        c
    });
    assert_eq!(code, 0);
    assert!(page.contains(".TH rattle-gameday-run 1"), "{page}");
    let (code, _, err) = run({
        let mut c = rattle();
        c.args(["man", "nosuch"]);
        c
    });
    assert_eq!(code, 2);
    assert!(err.contains("gameday run"), "{err}");
    // A symlink where a page goes is refused, not followed.
    let victim = write(dir.path(), "victim", "keep");
    let linked = dir.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(&victim, linked.join("rattle-run.1")).unwrap();
    let (code, _, err) = run({
        let mut c = rattle();
        c.args(["man", "--out"]).arg(&linked);
        c
    });
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn version_names_the_commit() {
    let (code, out, _) = run({
        let mut c = rattle();
        c.arg("--version");
        c
    });
    assert_eq!(code, 0);
    let expected = match std::env::var("RATTLE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(repo())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
    };
    assert_eq!(
        out.trim(),
        format!("rattle {} (commit {expected})", env!("CARGO_PKG_VERSION"))
    );
}

/// A short passing run: a demo of two workers, light load, no fault, 1 s.
fn short_experiment(dir: &Path) -> PathBuf {
    let port = free_port();
    write(
        dir,
        "short.yaml",
        &format!(
            r#"version: 1
name: short-cli
setup:
  demo: {{ replicas: 2, port: {port}, restart_delay: 200ms }}
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 20/s, timeout: 2s }}
steady_state:
  warmup: 200ms
  hold: 200ms
  slo: {{ success_rate: ">= 0%" }}
duration: 1s
"#
        ),
    )
}

fn run_short(dir: &Path, exp: &Path, tag: &str, args: &[&str]) -> Command {
    let mut c = rattle();
    // Global flags are accepted after the subcommand too.
    c.arg("run")
        .arg(exp)
        .args(args)
        .arg("--out")
        .arg(dir.join(format!("out-{tag}")))
        .arg("--state-dir")
        .arg(dir.join("state"));
    c
}

#[test]
fn diagnostics_go_to_stderr_and_results_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let exp = short_experiment(dir.path());
    // -v: what rattle decides, on stderr, with the fault's name; stdout has the results only.
    let (code, out, err) = run(run_short(dir.path(), &exp, "v", &["-v"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("PASS: short-cli"), "{out}");
    assert!(!out.contains("INFO") && !out.contains("preflight"), "{out}");
    assert!(
        err.contains("INFO") && err.contains("preflight passed") && err.contains("reports written"),
        "{err}"
    );
    // Default: no log lines (warnings only), the progress lines as before.
    let (code, _, err) = run(run_short(dir.path(), &exp, "default", &[]));
    assert_eq!(code, 0);
    assert!(!err.contains("INFO"), "{err}");
    // RUST_LOG selects the same events; a bad one is reported, not fatal.
    let mut c = run_short(dir.path(), &exp, "rustlog", &[]);
    c.env("RUST_LOG", "rattle=info");
    let (code, _, err) = run(c);
    assert_eq!(code, 0);
    assert!(err.contains("preflight passed"), "{err}");
    let mut c = run_short(dir.path(), &exp, "badlog", &[]);
    c.env("RUST_LOG", "rattle=shouting");
    let (code, _, err) = run(c);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("RUST_LOG") && err.contains("not a valid filter"),
        "{err}"
    );
    // -q: nothing on stderr for a passing run; the results unchanged.
    let (code, out, err) = run(run_short(dir.path(), &exp, "q", &["-q"]));
    assert_eq!(code, 0);
    assert!(err.trim().is_empty(), "{err}");
    assert!(out.starts_with("PASS: short-cli"), "{out}");
    // --log-format json: every stderr line is one JSON object with level and message.
    let (code, out, err) = run(run_short(
        dir.path(),
        &exp,
        "json",
        &["-v", "--log-format", "json", "--progress", "quiet"],
    ));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|v| v["level"].is_string() && v["message"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "reports written" && v["dir"].is_string()),
        "{err}"
    );
    // -v and -q contradict each other: a usage error.
    let (code, _, _) = run(run_short(dir.path(), &exp, "vq", &["-v", "-q"]));
    assert_eq!(code, 2);
}

#[test]
fn verdict_is_coloured_only_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let exp = short_experiment(dir.path());
    // Piped, colour auto, NO_COLOR unset: no escape code anywhere.
    let mut c = run_short(dir.path(), &exp, "piped", &[]);
    c.env_remove("NO_COLOR");
    let (code, out, _) = run(c);
    assert_eq!(code, 0);
    assert!(!out.contains(ESC), "{out:?}");
    // --color always: the verdict is green, the rest plain.
    let (code, out, _) = run(run_short(
        dir.path(),
        &exp,
        "always",
        &["--color", "always"],
    ));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("\u{1b}[1;32mPASS\u{1b}[0m: short-cli"),
        "{out:?}"
    );
    assert_eq!(out.matches(ESC).count(), 2, "{out:?}");
    // On a terminal (a pseudo-terminal from script(1)): coloured, unless NO_COLOR.
    if have_tool("script", "RATTLE_REQUIRE_SCRIPT") {
        let on_tty = |tag: &str, no_color: bool| {
            let inner = run_short(dir.path(), &exp, tag, &["--progress", "quiet"]);
            let line = std::iter::once(inner.get_program())
                .chain(inner.get_args())
                .map(|a| format!("'{}'", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ");
            let mut c = Command::new("script");
            c.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR");
            if no_color {
                c.env("NO_COLOR", "1");
            }
            c.env("TERM", "xterm").env(
                "RATTLE_STATE_DIR",
                dir.path().join("state").display().to_string(),
            );
            run(c)
        };
        let (code, out, err) = on_tty("tty", false);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("\u{1b}[1;32mPASS\u{1b}[0m"), "{out:?}");
        let (code, out, _) = on_tty("tty-nocolor", true);
        assert_eq!(code, 0);
        assert!(
            out.contains("PASS: short-cli") && !out.contains("\u{1b}[1;32m"),
            "{out:?}"
        );
    }
}

#[test]
fn validate_lists_every_problem_as_json_and_github_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let good = repo().join("experiments/quickstart.yaml");
    // Three meaning problems in one file, all reported.
    let semantic = write(
        dir.path(),
        "semantic.yaml",
        r#"version: 2
name: "bad name!"
load:
  http: { url: "ftp://user:hunter2@127.0.0.1/", rate: 10/s }
faults:
  - name: a
    at: 20s
    process-kill: { match: "x", mode: one }
duration: 10s
"#,
    );
    let shape = write(
        dir.path(),
        "shape.yaml",
        "version: 1\nname: x\nduration: 10s\nbogus: 1\n",
    );
    let odd = write(dir.path(), "we,ird:na%me.yaml", "version: 1\nname: [\n");
    let missing = dir.path().join("missing.yaml");
    let files = [&good, &semantic, &shape, &odd, &missing];
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["validate", "--format", "json"]).args(files);
        c
    });
    assert_eq!(code, 2, "{err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}"
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["valid"], false);
    let f = doc["files"].as_array().unwrap();
    assert_eq!(f.len(), 5);
    assert_eq!(f[0]["valid"], true);
    assert_eq!(f[0]["name"], "quickstart");
    let sem = f[1]["diagnostics"].as_array().unwrap();
    assert!(sem.len() >= 3, "{sem:?}");
    for d in sem {
        assert_eq!(d["file"], semantic.display().to_string());
        assert!(d["line"].as_u64().unwrap() > 0 && d["column"].as_u64().unwrap() > 0);
        assert!(d["field"].is_string() && d["message"].is_string(), "{d}");
    }
    let fields: Vec<&str> = sem.iter().filter_map(|d| d["field"].as_str()).collect();
    assert!(
        fields.contains(&"version") && fields.contains(&"name"),
        "{fields:?}"
    );
    assert_eq!(f[2]["diagnostics"][0]["field"], "bogus");
    assert_eq!(f[2]["diagnostics"][0]["line"], 4);
    assert!(f[3]["diagnostics"][0]["line"].is_u64());
    assert_eq!(f[4]["diagnostics"][0]["line"], Value::Null);
    assert!(
        f[4]["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot read")
    );

    let (code, out, _) = run({
        let mut c = rattle();
        c.args(["validate", "--format", "github"]).args(files);
        c
    });
    assert_eq!(code, 2);
    assert!(!out.contains("hunter2"), "{out}");
    let annotations: Vec<&str> = out.lines().filter(|l| l.starts_with("::error ")).collect();
    assert_eq!(
        annotations.len(),
        sem.len() + 3,
        "one annotation per problem: {out}"
    );
    let re =
        regex::Regex::new(r"^::error file=[^,:]+(,line=\d+,col=\d+)?,title=[^,:]+::.+$").unwrap();
    for a in &annotations {
        assert!(re.is_match(a), "malformed annotation: {a}");
    }
    assert!(
        out.contains("file=") && out.contains("we%2Cird%3Ana%25me.yaml,line=2,col="),
        "{out}"
    );
    assert!(
        out.contains("::error file=")
            && out.contains(
                ",line=4,col=1,title=rattle%3A invalid field bogus::unknown field `bogus`"
            ),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok: ") && l.contains("quickstart"))
    );
}

#[test]
fn compare_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let old = repo().join("tests/it/fixtures/report-v1-old.json");
    let mut worse: Value = serde_json::from_str(&std::fs::read_to_string(&old).unwrap()).unwrap();
    worse["faults"][0]["recovery"]["time_to_recover_ms"] = Value::Null;
    worse["faults"][0]["recovery"]["reason"] = Value::from("never recovered");
    let new = write(dir.path(), "new.json", &worse.to_string());
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["compare", "--format", "json"]).arg(&old).arg(&new);
        c
    });
    assert_eq!(code, 1, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["old"]["experiment"], "fixture");
    let figures = doc["figures"].as_array().unwrap();
    let rec = figures
        .iter()
        .find(|f| f["name"] == "faults.kill-one.recovery_time")
        .unwrap();
    assert_eq!(rec["unit"], "ms");
    assert_eq!(rec["old"], 812.4);
    assert_eq!(rec["new"], "inf", "never recovered is inf: {rec}");
    assert_eq!(rec["result"], "regressed");
    assert_eq!(
        doc["regressed"].as_u64().unwrap() as usize,
        figures
            .iter()
            .filter(|f| f["result"] == "regressed")
            .count()
    );
    let (code, out, _) = run({
        let mut c = rattle();
        c.args(["compare", "--format", "json"]).arg(&old).arg(&old);
        c
    });
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["regressed"], 0);
}

#[test]
fn dry_run_speaks_json_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let exp = write(
        dir.path(),
        "dry.yaml",
        &format!(
            r#"version: 1
name: dry
load:
  http:
    url: "http://user:hunter2@127.0.0.1:{port}/"
    rate: 10/s
    headers: {{ Authorization: "Bearer sekrit", X-Trace: "yes" }}
faults:
  - name: stop-it
    at: 1500ms
    process-kill: {{ match: "no-such-process-cli-test-{port}", mode: one }}
duration: 3s
"#
        ),
    );
    let out_dir = dir.path().join("reports");
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["run", "--dry-run", "--format", "json", "--seed", "42"])
            .arg(&exp)
            .arg("--out")
            .arg(&out_dir);
        c
    });
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2") && !out.contains("sekrit"), "{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["experiment"], "dry");
    assert_eq!(doc["seed"], 42);
    assert_eq!(doc["duration_ms"], 3000);
    assert_eq!(doc["load"]["headers"]["X-Trace"], "yes");
    let fault = &doc["faults"][0];
    assert_eq!(fault["name"], "stop-it");
    assert_eq!(fault["kind"], "process-kill");
    assert_eq!(fault["at_ms"], 1500);
    assert_eq!(fault["targets"], Value::Null);
    assert!(
        fault["targets_error"]
            .as_str()
            .unwrap()
            .contains("no target")
    );
    assert!(!out_dir.exists(), "a dry run creates nothing");
    // --format json without --dry-run is a usage error, not a silently text run.
    let (code, _, err) = run({
        let mut c = rattle();
        c.args(["run", "--format", "json"]).arg(&exp);
        c
    });
    assert_eq!(code, 2);
    assert!(err.contains("--dry-run"), "{err}");
}

#[test]
fn recover_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (code, out, _) = run({
        let mut c = rattle();
        c.args(["recover", "--dry-run", "--format", "json", "--state-dir"])
            .arg(&state);
        c
    });
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["leftovers"], serde_json::json!([]));
    assert!(!state.exists(), "a dry run creates nothing");
    // An entry of a dead run that cannot be reverted (a kind this rattle does not know), and an
    // unreadable one.
    let journal = state.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        &journal,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let entry = serde_json::json!({
        "version": 1, "run_id": "old-1-1", "experiment": "old", "file": "old.yaml",
        "fault": "mystery", "targets": [{"kind": "process", "id": "1", "description": "init"}],
        "token": { "kind": "from-a-newer-rattle", "data": {} },
        "written_at": "2026-01-01T00:00:00.000Z", "owner_pid": 1, "owner_starttime": 12345678
    });
    std::fs::write(journal.join("old-1-1-0.json"), entry.to_string()).unwrap();
    std::fs::write(journal.join("torn.json"), b"{\"version\": 1, \"run_").unwrap();
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["recover", "--dry-run", "--format", "json", "--state-dir"])
            .arg(&state);
        c
    });
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let left = doc["leftovers"].as_array().unwrap();
    assert_eq!(left.len(), 2, "{doc}");
    assert!(
        left.iter()
            .all(|l| l["status"] == "would_revert" || l["status"] == "unreadable")
    );
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["recover", "--yes", "--format", "json", "--state-dir"])
            .arg(&state);
        c
    });
    assert_eq!(code, 4, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let left = doc["leftovers"].as_array().unwrap();
    let mystery = left.iter().find(|l| l["fault"] == "mystery").unwrap();
    assert_eq!(mystery["status"], "failed");
    assert_eq!(mystery["experiment"], "old");
    assert_eq!(mystery["targets"][0]["id"], "1");
    assert!(
        mystery["error"]
            .as_str()
            .unwrap()
            .contains("unknown fault kind")
    );
    let torn = left.iter().find(|l| l["status"] == "unreadable").unwrap();
    assert!(torn["path"].as_str().unwrap().ends_with("torn.json"));
    assert!(torn["error"].is_string());
}

#[test]
fn validate_reports_every_unknown_key_and_then_the_meaning_problems() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "multi.yaml",
        r#"version: 2
name: x
durration: 10s
load:
  http: { url: "http://127.0.0.1:1/", rate: 10/s }
  bogus:
    - 1
faults:
  - name: a
    at: 20s
    typo: 1
    process-kill: { match: "x", mode: one }
duration: 10s
"#,
    );
    let (code, out, err) = run({
        let mut c = rattle();
        c.args(["validate", "--format", "json"]).arg(&f);
        c
    });
    assert_eq!(code, 2, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let found: Vec<(u64, String)> = doc["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lines: Vec<u64> = found.iter().map(|(l, _)| *l).collect();
    // Three unknown keys in the order found, then the two meaning problems, each on its line.
    assert_eq!(lines, vec![3, 6, 11, 1, 10], "{found:?}");
    assert!(found[0].1.contains("`durration`") && found[2].1.contains("`typo`"));
    assert!(found[3].1.contains("unsupported version 2"), "{found:?}");
    // A flow-style unknown key cannot be skipped soundly: the pass stops there.
    let flow = write(
        dir.path(),
        "flow.yaml",
        "version: 2\nname: x\nload:\n  http: { url: \"http://127.0.0.1:1/\", rate: 10/s, rat: 1 }\nduration: 10s\n",
    );
    let (code, out, _) = run({
        let mut c = rattle();
        c.args(["validate", "--format", "json"]).arg(&flow);
        c
    });
    assert_eq!(code, 2);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["files"][0]["diagnostics"].as_array().unwrap().len(),
        1,
        "{doc}"
    );
}
