//! The Prometheus probe, gates and stop conditions against a real Prometheus (Debian's
//! `prometheus`), started per test in a tempdir and scraping a tiny exporter the test controls:
//! an error-ratio gauge flipped at instants the test records (the ground truth). Prometheus is
//! killed by pid when a test ends. Without the binary a test skips with a reason, unless
//! RATTLE_REQUIRE_PROMETHEUS=1 (CI), where it fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{self, Guard};

const SCRAPE: Duration = Duration::from_secs(1);

fn prometheus_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/prometheus");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("RATTLE_REQUIRE_PROMETHEUS").is_none(),
        "RATTLE_REQUIRE_PROMETHEUS is set but /usr/bin/prometheus is not installed"
    );
    eprintln!("skipped: /usr/bin/prometheus is not installed (apt-get install prometheus)");
    None
}

/// The exporter: `rattle_test_error_ratio <value>` on every request, the value set by the test.
struct Exporter {
    port: u16,
    ratio: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Exporter {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ratio = Arc::new(AtomicU64::new(0f64.to_bits()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (ratio.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = format!(
                    "# TYPE rattle_test_error_ratio gauge\nrattle_test_error_ratio {}\n",
                    f64::from_bits(r.load(Ordering::SeqCst))
                );
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { port, ratio, stop }
    }

    /// Sets the gauge; returns the instant it changed (unix ms).
    fn set(&self, v: f64) -> f64 {
        self.ratio.store(v.to_bits(), Ordering::SeqCst);
        unix_ms()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// A GET on 127.0.0.1:port, bounded; (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A real Prometheus scraping the exporter every second, with an alert rule on the gauge.
struct Prom {
    port: u16,
    _guard: Guard,
}

impl Prom {
    fn start(dir: &Path, exporter: &Exporter) -> Option<Self> {
        let prom = Self::spawn(dir, exporter, None)?;
        // Ready, then the exporter's first sample is in.
        prom.wait_for("/-/ready", |_| true, "ready");
        prom.wait_for(
            "/api/v1/query?query=rattle_test_error_ratio",
            |b| b.contains("rattle_test_error_ratio"),
            "the first scrape",
        );
        Some(prom)
    }

    /// Prometheus started, not waited for; `web` is a `--web.config.file` (TLS, basic auth).
    fn spawn(dir: &Path, exporter: &Exporter, web: Option<&Path>) -> Option<Self> {
        let bin = prometheus_bin()?;
        let port = support::free_port();
        support::write(
            dir,
            "rules.yml",
            "groups:\n  - name: rattle\n    rules:\n      - alert: RattleTestErrors\n        \
             expr: rattle_test_error_ratio > 0.3\n        for: 0s\n",
        );
        let config = support::write(
            dir,
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: exporter\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:{}\"]\n",
                dir.join("rules.yml").display(),
                exporter.port
            ),
        );
        let mut cmd = Command::new(bin);
        if let Some(web) = web {
            cmd.arg(format!("--web.config.file={}", web.display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        Some(Prom {
            port,
            _guard: Guard(child),
        })
    }

    fn wait_for(&self, path: &str, ok: impl Fn(&str) -> bool, what: &str) {
        let start = Instant::now();
        loop {
            if let Some((200, body)) = get(self.port, path)
                && ok(&body)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus: {what} not within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn run(dir: &Path, file: &Path) -> Guard {
    let mut c = support::rattle();
    c.args(["run", "--yes", "--progress", "plain", "--out"])
        .arg(dir.join("out"))
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Guard(c.spawn().expect("spawn rattle"))
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("out/report.json")).expect("report.json");
    serde_json::from_str(&text).unwrap()
}

const QUERY: &str = "rattle_test_error_ratio{job=\\\"exporter\\\"}";

#[test]
fn recovery_from_a_metric_is_timed_against_the_flip_within_a_scrape_and_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start();
    let Some(prom) = Prom::start(dir.path(), &exporter) else {
        return;
    };
    let marker = format!("rattle-prom-sleeper-{}", std::process::id());
    let sleeper = support::sleeper(&marker);
    let step = Duration::from_millis(500);
    let url = prom.url();
    let file = support::write(
        dir.path(),
        "exp.yaml",
        &format!(
            r#"version: 1
name: prom-recovery
steady_state:
  warmup: 1s
  hold: 2s
  probes:
    - name: error-ratio
      interval: {step_ms}ms
      prometheus:
        server: &prom {{ url: "{url}", timeout: 2s }}
        query: "{QUERY}"
        expect: "< 0.1"
faults:
  - name: pause
    at: 4s
    duration: 2s
    process-pause: {{ match: "^{marker} ", mode: one }}
duration: 15s
gates:
  prometheus:
    - {{ name: calm-before, server: *prom, query: "{QUERY}", phase: baseline, expect: "< 0.1", step: 500ms }}
    - {{ name: calm-during, server: *prom, query: "{QUERY}", phase: fault, expect: "< 0.1", step: 500ms }}
    - {{ name: absent, server: *prom, query: "rattle_no_such_metric", phase: run, expect: "< 1" }}
"#,
            step_ms = step.as_millis()
        ),
    );
    let mut g = run(dir.path(), &file);
    let pid = sleeper.0.id();
    support::wait_for_state(pid, 'T', "paused by the fault");
    let bad_at = exporter.set(0.5);
    support::wait_for_state(pid, 'S', "resumed by the revert");
    // The ground truth: the service recovers 2 s after the revert.
    std::thread::sleep(Duration::from_secs(2));
    let good_at = exporter.set(0.0);
    let (code, out, err) = support::wait_run(&mut g, Duration::from_secs(90));
    let r = report(dir.path());
    let t0 = r["started_at_unix_ms"].as_f64().unwrap();
    let rec = &r["faults"][0]["recovery"];
    let recovered = rec["recovered_at_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("not recovered: {rec}\n{out}\n{err}"));
    let impact_ms = rec["time_to_impact_ms"].as_f64().unwrap();
    let injected = r["faults"][0]["injected_at_ms"].as_f64().unwrap();
    let flip_ms = good_at - t0;
    let lag = recovered - flip_ms;
    let impact_lag = injected + impact_ms - (bad_at - t0);
    let tolerance = (SCRAPE + step).as_millis() as f64;
    eprintln!(
        "FIGURE prometheus recovery: flip to good at {flip_ms:.0} ms, probe recovered at \
         {recovered:.0} ms: {lag:.0} ms after the flip (tolerance {tolerance:.0} ms = scrape 1 s \
         + step {} ms); impact seen {impact_lag:.0} ms after the flip to bad",
        step.as_millis()
    );
    // -100 ms: a check that started just before the flip can be evaluated by Prometheus just
    // after a scrape that saw it.
    assert!(
        (-100.0..=tolerance + 100.0).contains(&lag),
        "recovery {lag} ms after the flip"
    );
    assert!(
        (-100.0..=tolerance + 100.0).contains(&impact_lag),
        "impact {impact_lag} ms after the flip"
    );
    // The gates: calm before holds, the fault phase saw 0.5, the absent metric is no pass.
    let gates = r["gates"].as_array().unwrap();
    let gate = |n: &str| {
        gates
            .iter()
            .find(|g| g["name"].as_str().unwrap().contains(n))
            .unwrap_or_else(|| panic!("no gate {n}: {gates:?}"))
    };
    assert_eq!(gate("calm-before")["status"], "pass", "{gates:?}");
    assert_eq!(gate("calm-during")["status"], "fail", "{gates:?}");
    assert_eq!(gate("calm-during")["measured"].as_f64(), Some(0.5));
    assert_eq!(gate("absent")["status"], "fail");
    assert!(
        gate("absent")["message"]
            .as_str()
            .unwrap()
            .contains("no point"),
        "{gates:?}"
    );
    assert_eq!(code, 1, "a missed gate fails the run\n{out}\n{err}");
}

#[test]
fn preflight_refuses_a_rejected_query_and_an_unreachable_server_before_any_fault() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start();
    let marker = format!("rattle-prom-pre-{}", std::process::id());
    let sleeper = support::sleeper(&marker);
    let exp = |url: &str, query: &str| {
        format!(
            r#"version: 1
name: prom-preflight
steady_state:
  warmup: 1s
  probes:
    - prometheus: {{ server: {{ url: "{url}", timeout: 2s }}, query: "{query}", expect: "< 0.1" }}
faults:
  - name: pause
    at: 2s
    duration: 1s
    process-pause: {{ match: "^{marker} ", mode: one }}
duration: 4s
"#
        )
    };
    // Unreachable: nothing listens on the port.
    let closed = support::free_port();
    let f = support::write(
        dir.path(),
        "down.yaml",
        &exp(&format!("http://127.0.0.1:{closed}"), "up"),
    );
    let mut g = run(dir.path(), &f);
    let (code, _, err) = support::wait_run(&mut g, Duration::from_secs(60));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert_eq!(support::proc_state(sleeper.0.id()), Some('S'));

    let Some(prom) = Prom::start(dir.path(), &exporter) else {
        return;
    };
    let f = support::write(dir.path(), "bad.yaml", &exp(&prom.url(), "sum(rate(x[1m])"));
    let mut g = run(dir.path(), &f);
    let (code, _, err) = support::wait_run(&mut g, Duration::from_secs(60));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sum(rate(x[1m])"), "the query is named: {err}");
    assert!(err.contains("bad_data"), "Prometheus's own error: {err}");
    assert!(err.contains("parse error"), "Prometheus's own error: {err}");
    assert!(!dir.path().join("out/report.json").exists());

    // Credentials from a variable that is not set: exit 2, the variable named.
    let text = exp(&prom.url(), "up").replace(
        "timeout: 2s }",
        "timeout: 2s, bearer_token_env: RATTLE_TEST_NO_SUCH_TOKEN }",
    );
    let f = support::write(dir.path(), "noenv.yaml", &text);
    let mut g = run(dir.path(), &f);
    let (code, _, err) = support::wait_run(&mut g, Duration::from_secs(60));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RATTLE_TEST_NO_SUCH_TOKEN"), "{err}");
}

#[test]
fn a_firing_alert_and_a_held_query_stop_the_run_and_revert() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start();
    let Some(prom) = Prom::start(dir.path(), &exporter) else {
        return;
    };
    let marker = format!("rattle-prom-stop-{}", std::process::id());
    let sleeper = support::sleeper(&marker);
    let pid = sleeper.0.id();
    let url = prom.url();
    for (case, stop) in [
        (
            "alert",
            format!(
                "alerts: {{ server: {{ url: \"{url}\" }}, names: [RattleTestErrors], interval: 250ms }}"
            ),
        ),
        (
            "query",
            format!(
                "prometheus:\n    - {{ server: {{ url: \"{url}\" }}, query: \"{QUERY}\", when: \"> 0.3 for 1s\", interval: 250ms }}"
            ),
        ),
    ] {
        exporter.set(0.0);
        let out = dir.path().join(case);
        std::fs::create_dir_all(&out).unwrap();
        let file = support::write(
            &out,
            "exp.yaml",
            &format!(
                r#"version: 1
name: prom-stop-{case}
steady_state:
  warmup: 1s
faults:
  - name: pause
    at: 2s
    duration: 60s
    process-pause: {{ match: "^{marker} ", mode: one }}
duration: 70s
stop_when:
  {stop}
"#
            ),
        );
        let mut g = run(&out, &file);
        support::wait_for_state(pid, 'T', "paused by the fault");
        exporter.set(0.9);
        let (code, o, err) = support::wait_run(&mut g, Duration::from_secs(60));
        assert_eq!(code, 3, "{case}: aborted by stop_when\n{o}\n{err}");
        let r = report(&out);
        let cond = r["stop"]["condition"].as_str().unwrap_or_default();
        match case {
            "alert" => assert!(cond.contains("RattleTestErrors firing"), "{cond}"),
            _ => assert!(cond.contains("> 0.3 for 1s"), "{cond}"),
        }
        assert_ne!(support::proc_state(pid), Some('T'), "{case}: reverted");
    }
}

/// A stand-in that answers the first `good` requests as Prometheus would (one series, value 0),
/// then accepts connections and never answers: the monitoring hanging mid-run.
fn hanging_after(good: usize) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            if s.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut c) = conn else { continue };
            if n >= good {
                held.push(c);
                continue;
            }
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8192];
            let _ = c.read(&mut buf);
            let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0"]}]}}"#;
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, stop)
}

#[test]
fn a_server_that_stops_answering_mid_run_fails_the_probe_and_stop_when_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    // The preflight and two checks are answered; then nothing.
    let (port, stop) = hanging_after(3);
    let file = support::write(
        dir.path(),
        "exp.yaml",
        &format!(
            r#"version: 1
name: prom-hang
steady_state:
  warmup: 1s
  probes:
    - name: ratio
      interval: 250ms
      prometheus: {{ server: {{ url: "http://127.0.0.1:{port}", timeout: 500ms }}, query: "x", expect: "< 1" }}
stop_when:
  probe_failing: 1s
duration: 60s
"#
        ),
    );
    let mut g = run(dir.path(), &file);
    let (code, out, err) = support::wait_run(&mut g, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(("127.0.0.1", port));
    assert_eq!(code, 3, "stopped by probe_failing\n{out}\n{err}");
    let r = report(dir.path());
    let cond = r["stop"]["condition"].as_str().unwrap_or_default();
    assert!(cond.contains("probe ratio"), "{cond}");
    let text = serde_json::to_string(&r).unwrap();
    assert!(
        text.contains("did not answer within 500 ms"),
        "the probe's failure says why: {text}"
    );
}

/// The bcrypt hash of `s3cret` (cost 4, so that each request's check is cheap), for
/// Prometheus's `basic_auth_users`.
const S3CRET_HASH: &str = "$2b$04$ze1jTARG3aWvzgkNQEyOSO/vH1TLYB4zv8T4AonhEh9I9NWTHZDii";

#[test]
fn https_with_a_private_ca_and_basic_auth_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let ca = support::write(dir.path(), "cert.pem", &cert.cert.pem());
    let key = support::write(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
    let web = support::write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  rattle: {S3CRET_HASH}\n",
            ca.display(),
            key.display()
        ),
    );
    let Some(prom) = Prom::spawn(dir.path(), &exporter, Some(&web)) else {
        return;
    };
    let url = format!("https://127.0.0.1:{}", prom.port);
    // Ready and scraped, asked through the library's client (the test's own HTTP is plain).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rattle::prometheus::Client::new(&rattle::prometheus::Connection {
        url: url.clone(),
        auth: Some(rattle::prometheus::Auth::Basic {
            user: "rattle".into(),
            password: "s3cret".into(),
        }),
        ca_file: Some(ca.clone()),
        insecure: false,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let start = Instant::now();
    while !rt
        .block_on(client.instant("rattle_test_error_ratio"))
        .is_ok_and(|s| !s.is_empty())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus over TLS not ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let exp = |name: &str, server: &str| {
        support::write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                r#"version: 1
name: prom-{name}
steady_state:
  warmup: 500ms
  hold: 500ms
  probes:
    - interval: 250ms
      prometheus: {{ server: {{ url: "{url}", {server} }}, query: "{QUERY}", expect: "< 0.1" }}
duration: 2s
"#
            ),
        )
    };
    let auth = "basic_auth: { username_env: RATTLE_T_USER, password_env: RATTLE_T_PASS }";
    let go = |file: &Path, pass: &str| {
        let mut c = support::rattle();
        c.args(["run", "--progress", "plain", "--out"])
            .arg(dir.path().join(file.file_stem().unwrap()))
            .arg(file)
            .env("RATTLE_T_USER", "rattle")
            .env("RATTLE_T_PASS", pass);
        support::run_bounded_cmd(c, Duration::from_secs(60))
    };
    let ca_s = format!("ca_file: {}, {auth}", ca.display());
    let (code, out, err) = go(&exp("good", &ca_s), "s3cret");
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = go(
        &exp("insecure", &format!("insecure: true, {auth}")),
        "s3cret",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // A wrong password: Prometheus's 401 at preflight, exit 2; the password never shown.
    let (code, out, err) = go(&exp("wrong", &ca_s), "not-the-pass-XYZ");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("401"), "{err}");
    assert!(!format!("{out}{err}").contains("not-the-pass-XYZ"));
    // No trust in the private CA: a TLS error at preflight, exit 2.
    let (code, out, err) = go(&exp("untrusted", auth), "s3cret");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn bad_prometheus_sections_are_located_errors_that_never_echo_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write(
        dir.path(),
        "bad.yaml",
        r#"version: 1
name: bad
steady_state:
  probes:
    - prometheus:
        server: { url: "http://127.0.0.1:9", bearer_token_env: "eyJhbGciOi.s3cr3t-token" }
        query: "up"
        expect: "< 1"
    - prometheus: { server: { url: "ftp://x" }, query: "up", expect: "0.01" }
stop_when:
  alerts: { server: { url: "http://127.0.0.1:9" }, names: [] }
  prometheus:
    - { server: { url: "http://127.0.0.1:9" }, query: "up", when: "> 1 for ever" }
duration: 5s
gates:
  prometheus:
    - { server: { url: "http://127.0.0.1:9" }, query: " ", phase: fault, expect: "< 1", step: 0s }
"#,
    );
    let mut c = support::rattle();
    c.arg("validate").arg(&file);
    let (code, out, err) = support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(!format!("{out}{err}").contains("s3cr3t"), "{err}");
    // Parse errors come first (the rest is checked once the file parses).
    assert!(err.contains("bad.yaml:9:"), "{err}");
    assert!(err.contains("is not an expectation"), "{err}");
    let file = support::write(
        dir.path(),
        "bad2.yaml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("expect: \"0.01\"", "expect: \"< 0.01\"")
            .replace("for ever", "for 5s"),
    );
    let mut c = support::rattle();
    c.arg("validate").arg(&file);
    let (code, out, err) = support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(!format!("{out}{err}").contains("s3cr3t"), "{err}");
    for needle in [
        "bad2.yaml:6:",
        "`bearer_token_env` names an environment variable",
        "bad2.yaml:9:",
        "must start with http:// or https://",
        "stop_when.alerts.names",
        "gates.prometheus[0]",
        "`query` must not be empty",
        "gates.prometheus[0].step",
        "the `fault` phase needs at least one fault",
    ] {
        assert!(err.contains(needle), "{needle:?} in\n{err}");
    }
    // Credentials in the URL are refused, and not shown.
    let file = support::write(
        dir.path(),
        "creds.yaml",
        "version: 1\nname: x\nsteady_state:\n  probes:\n    - prometheus: { server: { url: \
         \"http://admin:hunter2@127.0.0.1:9\" }, query: up, expect: \"< 1\" }\nduration: 5s\n",
    );
    let mut c = support::rattle();
    c.arg("validate").arg(&file);
    let (code, out, err) = support::run_bounded_cmd(c, Duration::from_secs(30));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("must not hold credentials"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{err}");
}

#[test]
fn a_stop_query_that_cannot_be_evaluated_stops_the_run_after_its_hold() {
    let dir = tempfile::tempdir().unwrap();
    // The preflight is answered; then nothing.
    let (port, stop) = hanging_after(1);
    let file = support::write(
        dir.path(),
        "exp.yaml",
        &format!(
            r#"version: 1
name: prom-stop-blind
steady_state:
  warmup: 1s
stop_when:
  prometheus:
    - {{ server: {{ url: "http://127.0.0.1:{port}", timeout: 300ms }}, query: x, when: "> 0.5 for 1s", interval: 200ms }}
duration: 60s
"#
        ),
    );
    let mut g = run(dir.path(), &file);
    let (code, out, err) = support::wait_run(&mut g, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(("127.0.0.1", port));
    assert_eq!(code, 3, "stopped: its guard cannot be seen\n{out}\n{err}");
    let r = report(dir.path());
    let cond = r["stop"]["condition"].as_str().unwrap_or_default();
    assert!(cond.contains("cannot evaluate"), "{cond}");
    assert!(cond.contains("did not answer within 300 ms"), "{cond}");
}
