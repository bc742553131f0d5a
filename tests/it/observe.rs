//! Outputs to the dashboards (issue #16, parts 3-5): `/metrics` scraped during a real run, the
//! Pushgateway (the real Debian `prometheus-pushgateway`) read back after it, a recording
//! stand-in for Grafana's annotation API, outputs that fail (closed port, a server that never
//! answers) as warnings that change no verdict, bad output flags as exit 2 before anything
//! starts, and cluster evidence from the fake API server's event stream in report.json and the
//! HTML.
//!
//! Synchronisation is on events (the run's own `/metrics` saying a fault is active), never on
//! sleeps. Every process started is killed by pid (`Guard`); every socket is on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_k8s::FakeK8s;
use crate::support::{Guard, free_port, rattle, wait_run, write};

/// A plain HTTP/1.1 GET (or `method`) on 127.0.0.1 with extra headers; (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One sample of an exposition: `name{labels} value`; labels as written.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((name.to_string(), labels.to_string(), v))
        })
        .collect()
}

fn sample(s: &[(String, String, f64)], name: &str, label: &str) -> Option<f64> {
    s.iter()
        .find(|(n, l, _)| n == name && (label.is_empty() || l.contains(label)))
        .map(|x| x.2)
}

/// Checks that an exposition parses and is coherent: every sample line well-formed, histogram
/// buckets cumulative and ending with +Inf = count, counters not negative.
fn check_exposition(text: &str) -> Vec<(String, String, f64)> {
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            l.starts_with("rattle_") && l.rsplit_once(' ').is_some(),
            "bad line {l:?} in\n{text}"
        );
    }
    let s = samples(text);
    let buckets: Vec<f64> = s
        .iter()
        .filter(|(n, _, _)| n == "rattle_request_duration_seconds_bucket")
        .map(|x| x.2)
        .collect();
    if !buckets.is_empty() {
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        let count = sample(&s, "rattle_request_duration_seconds_count", "").expect("count");
        assert_eq!(buckets.last().copied(), Some(count), "+Inf bucket = count");
    }
    s
}

/// What the Grafana stand-in received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    auth: Option<String>,
    body: Value,
}

/// A recording stand-in for Grafana's annotation API on 127.0.0.1: `POST /api/annotations`
/// answers `{"id": n}`, `PATCH /api/annotations/n` answers `{"message": ...}`, anything else 404.
struct FakeGrafana {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeGrafana {
    fn start() -> FakeGrafana {
        use http_body_util::{BodyExt, Full};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g = got.clone();
        rt.spawn(async move {
            let next = Arc::new(Mutex::new(0u64));
            while let Ok((sock, _)) = listener.accept().await {
                let (g, next) = (g.clone(), next.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (g, next) = (g.clone(), next.clone());
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_string();
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(String::from);
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let body: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                g.lock().unwrap().push(Received {
                                    method: method.clone(),
                                    path: path.clone(),
                                    auth,
                                    body,
                                });
                                let (code, answer) = match (method.as_str(), path.as_str()) {
                                    ("POST", "/api/annotations") => {
                                        let mut n = next.lock().unwrap();
                                        *n += 1;
                                        (200, json!({"id": *n, "message": "Annotation added"}))
                                    }
                                    ("PATCH", p) if p.starts_with("/api/annotations/") => {
                                        (200, json!({"message": "Annotation patched"}))
                                    }
                                    _ => (404, json!({"message": "not found"})),
                                };
                                let mut r = hyper::Response::new(Full::new(bytes::Bytes::from(
                                    answer.to_string(),
                                )));
                                *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FakeGrafana { addr, got, _rt: rt }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// The real Pushgateway on a free port, killed when dropped; `None` (with a notice) when it is
/// not installed, unless RATTLE_REQUIRE_PUSHGATEWAY is set (CI), where that fails.
fn pushgateway() -> Option<(Guard, String, tempfile::TempDir)> {
    let bin = ["prometheus-pushgateway", "pushgateway"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("RATTLE_REQUIRE_PUSHGATEWAY").is_none(),
            "RATTLE_REQUIRE_PUSHGATEWAY is set but prometheus-pushgateway is not installed"
        );
        eprintln!("NOTICE: prometheus-pushgateway is not installed; skipping the Pushgateway test");
        return None;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let g = Guard(
        Command::new(bin)
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("pg.data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pushgateway"),
    );
    let start = Instant::now();
    while http(&addr, "GET", "/-/ready", &[]).is_none_or(|(c, _)| c != 200) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pushgateway not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((g, addr, dir))
}

/// An experiment with load on the demo through a fault proxy and one latency fault.
fn proxy_experiment(dir: &Path, name: &str, fault_duration: &str) -> std::path::PathBuf {
    let (demo, proxy) = (free_port(), free_port());
    write(
        dir,
        "exp.yaml",
        &format!(
            r#"version: 1
name: {name}
setup:
  demo: {{ replicas: 2, port: {demo}, health_interval: 250ms }}
proxies:
  - {{ name: api, listen: "127.0.0.1:{proxy}", upstream: "127.0.0.1:{demo}" }}
load:
  http: {{ url: "http://127.0.0.1:{proxy}/", rate: 50/s, timeout: 2s, window: 500ms }}
steady_state:
  warmup: 500ms
  hold: 500ms
  slo: {{ success_rate: ">= 90%", p99: "< 1500ms" }}
faults:
  - name: slow
    at: 1500ms
    duration: {fault_duration}
    net-latency: {{ proxy: api, latency: 20ms, jitter: 0ms, direction: downstream }}
duration: 5s
"#
        ),
    )
}

fn spawn_run(dir: &Path, file: &Path, extra: &[&str], env: &[(&str, &str)]) -> Guard {
    let mut cmd = rattle();
    cmd.env("RATTLE_STATE_DIR", dir.join("state"))
        .env_remove("RATTLE_GRAFANA_TOKEN")
        .args([
            "run",
            file.to_str().unwrap(),
            "--yes",
            "--progress",
            "plain",
            "--out",
        ])
        .arg(dir.join("out"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Guard(cmd.spawn().expect("spawn rattle"))
}

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("out/report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report json")
}

/// Scrapes `addr` until `until` holds for a scrape, or the run ends (None); bounded.
fn scrape_until(
    g: &mut Guard,
    addr: &str,
    until: impl Fn(&[(String, String, f64)]) -> bool,
) -> Option<Vec<(String, String, f64)>> {
    let start = Instant::now();
    loop {
        if let Some((200, body)) = http(addr, "GET", "/metrics", &[]) {
            let s = check_exposition(&body);
            if until(&s) {
                return Some(s);
            }
        }
        if matches!(g.0.try_wait(), Ok(Some(_))) {
            return None;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no matching scrape"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_scraped_during_a_run_pushes_read_back_and_annotations_recorded() {
    // The data directory may go first: the Pushgateway writes it only every 5 minutes or on a
    // clean shutdown, and it is killed (SIGKILL, by pid).
    let Some((_pg, pg_addr, _pg_dir)) = pushgateway() else {
        return;
    };
    let grafana = FakeGrafana::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = proxy_experiment(dir.path(), "observe-all", "1500ms");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let token = "s3cret-grafana-token";
    let mut g = spawn_run(
        dir.path(),
        &file,
        &[
            "--metrics-addr",
            &metrics_addr,
            "--pushgateway",
            &format!("http://{pg_addr}"),
            "--grafana-url",
            &format!("http://{}", grafana.addr),
            "--grafana-dashboard",
            "dash-1",
        ],
        &[("RATTLE_GRAFANA_TOKEN", token)],
    );

    // During the fault: the scrape says one fault is active and requests are flowing.
    let during = scrape_until(&mut g, &metrics_addr, |s| {
        sample(s, "rattle_active_faults", "") == Some(1.0)
            && sample(s, "rattle_requests_total", "outcome=\"ok\"").is_some_and(|v| v > 0.0)
    })
    .expect("a scrape while the fault was active");
    assert_eq!(
        sample(&during, "rattle_faults_injected_total", ""),
        Some(1.0)
    );
    assert!(sample(&during, "rattle_run_info", "experiment=\"observe-all\"").is_some());
    // The generator's own truth: send lag measured, and not behind at this modest rate.
    assert!(sample(&during, "rattle_send_lag_p99_seconds", "").is_some_and(|v| v >= 0.0));
    assert!(sample(&during, "rattle_late_sends_total", "").is_some());
    assert!(sample(&during, "rattle_generator_behind", "").is_some());
    assert!(
        sample(&during, "rattle_run_verdict", "").is_none(),
        "no verdict yet"
    );
    // The window pushes: while the run goes on, the Pushgateway already holds the group, with
    // the fault counted and no verdict yet (only the final push has one).
    let seen = Instant::now();
    let window_push = loop {
        let (_, text) = http(&pg_addr, "GET", "/metrics", &[]).expect("pushgateway answers");
        let group: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(_, l, _)| l.contains("experiment=\"observe-all\""))
            .collect();
        if sample(&group, "rattle_faults_injected_total", "") == Some(1.0) {
            break group;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(30),
            "no window push: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        sample(&window_push, "rattle_run_verdict", "").is_none(),
        "the first push seen after the injection was already the final one"
    );
    // A web page cannot read it (cross-site, DNS rebinding).
    let (code, _) = http(
        &metrics_addr,
        "GET",
        "/metrics",
        &[("Origin", "http://evil.example")],
    )
    .expect("answer");
    assert_eq!(code, 403);
    let (code, _) = http(
        &metrics_addr,
        "GET",
        "/metrics",
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .expect("answer");
    assert_eq!(code, 403);
    let (code, _) = http(&metrics_addr, "GET", "/other", &[]).expect("answer");
    assert_eq!(code, 404);

    let (code, stdout, stderr) = wait_run(&mut g, Duration::from_secs(90));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stdout.contains(token) && !stderr.contains(token),
        "token leaked"
    );
    let r = read_report(dir.path());
    assert!(!serde_json::to_string(&r).unwrap().contains(token));
    // The server lived while the run lasted only.
    assert!(
        TcpStream::connect(&metrics_addr).is_err(),
        "/metrics still served after the run"
    );

    // Pushgateway: the final push carries the report's own totals, exactly, and the verdict.
    let (code, text) = http(&pg_addr, "GET", "/metrics", &[]).expect("pushgateway answers");
    assert_eq!(code, 200);
    let pushed: Vec<_> = samples(&text)
        .into_iter()
        .filter(|(_, l, _)| {
            l.contains("experiment=\"observe-all\"") && l.contains("job=\"rattle\"")
        })
        .collect();
    println!(
        "pushgateway series for the run: {}",
        pushed
            .iter()
            .filter(|(n, _, _)| n.starts_with("rattle_"))
            .count()
    );
    let ok_pushed = sample(&pushed, "rattle_requests_total", "outcome=\"ok\"").expect("pushed ok");
    let ok_report = r["totals"]["ok"].as_f64().expect("totals.ok");
    assert_eq!(ok_pushed, ok_report, "pushed ok count = report's");
    let count = sample(&pushed, "rattle_request_duration_seconds_count", "").expect("count");
    assert_eq!(count, r["totals"]["sent"].as_f64().expect("sent"));
    assert_eq!(
        sample(&pushed, "rattle_run_verdict", "verdict=\"pass\""),
        Some(1.0)
    );
    assert_eq!(sample(&pushed, "rattle_active_faults", ""), Some(0.0));
    assert!(
        pushed
            .iter()
            .any(|(n, l, _)| n == "rattle_run_info" && l.contains("run_id=\"observe-all-")),
        "{pushed:?}"
    );

    // Grafana: one region for the fault, opened at injection, closed at revert, tagged with
    // the verdict at the end, every call with the bearer token.
    let got = grafana.received();
    println!("annotation calls received: {}", got.len());
    assert!(
        got.iter()
            .all(|c| c.auth.as_deref() == Some(&format!("Bearer {token}"))),
        "{got:?}"
    );
    let posts: Vec<_> = got.iter().filter(|c| c.method == "POST").collect();
    assert_eq!(posts.len(), 1, "{got:?}");
    let post = &posts[0].body;
    let tags: Vec<&str> = post["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        tags,
        [
            "rattle",
            "experiment:observe-all",
            "fault:slow",
            "kind:net-latency"
        ]
    );
    assert_eq!(post["dashboardUID"], "dash-1");
    let start = r["started_at_unix_ms"].as_f64().expect("start");
    let fault = &r["faults"][0];
    let injected = start + fault["injected_at_ms"].as_f64().expect("injected");
    let reverted = start + fault["reverted_at_ms"].as_f64().expect("reverted");
    // The annotation's instants and the report's come from the same run clock, a few
    // statements apart: 1 ms of rounding plus the gap between them.
    let t = post["time"].as_f64().expect("time");
    println!("annotation time - injection: {:.1} ms", t - injected);
    assert!(
        (t - injected).abs() <= 250.0,
        "annotation at {t}, injection at {injected}"
    );
    let patches: Vec<_> = got.iter().filter(|c| c.method == "PATCH").collect();
    assert_eq!(patches.len(), 2, "{got:?}");
    assert!(patches.iter().all(|p| p.path == "/api/annotations/1"));
    let end = patches[0].body["timeEnd"].as_f64().expect("timeEnd");
    println!("annotation timeEnd - revert: {:.1} ms", end - reverted);
    assert!(
        (end - reverted).abs() <= 250.0,
        "timeEnd {end}, revert at {reverted}"
    );
    let final_tags: Vec<&str> = patches[1].body["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(final_tags.contains(&"verdict:pass"), "{final_tags:?}");
    assert!(final_tags.contains(&"fault:slow"), "{final_tags:?}");
    // No warning: every output answered.
    let warnings: Vec<_> = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "warning")
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn failing_outputs_are_warnings_that_change_no_verdict_and_never_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = proxy_experiment(dir.path(), "observe-down", "1s");
    // The Pushgateway: a closed port. Grafana: a listener that accepts (the kernel's backlog)
    // but never answers, which only a timeout ends.
    let closed = free_port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let mut g = spawn_run(
        dir.path(),
        &file,
        &[
            "--pushgateway",
            &format!("http://127.0.0.1:{closed}"),
            "--grafana-url",
            &format!("http://{silent_addr}"),
        ],
        &[("RATTLE_GRAFANA_TOKEN", "t0ken-never-printed")],
    );
    let (code, stdout, stderr) = wait_run(&mut g, Duration::from_secs(120));
    drop(silent);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("t0ken-never-printed") && !stderr.contains("t0ken-never-printed"));
    let r = read_report(dir.path());
    assert_eq!(r["verdict"], "pass");
    let warnings: Vec<String> = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("Pushgateway:")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("Grafana:") && w.contains("no answer within")),
        "{warnings:?}"
    );
    // One warning for the window pushes, however many windows failed.
    let window_push = warnings
        .iter()
        .filter(|w| w.contains("Pushgateway: push failed"))
        .count();
    assert!(window_push <= 1, "{warnings:?}");
}

#[test]
fn bad_output_flags_are_exit_2_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = proxy_experiment(dir.path(), "observe-bad", "1s");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    // (flags, environment, what the error must say)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--metrics-addr".into(), taken_addr.clone()],
            vec![],
            "--metrics-addr",
        ),
        (
            vec!["--metrics-addr".into(), "nonsense".into()],
            vec![],
            "not an address",
        ),
        (
            vec!["--grafana-url".into(), "http://127.0.0.1:3000".into()],
            vec![],
            "RATTLE_GRAFANA_TOKEN",
        ),
        (
            vec!["--grafana-url".into(), "ftp://grafana".into()],
            vec![("RATTLE_GRAFANA_TOKEN", "x")],
            "--grafana-url",
        ),
        (
            vec![
                "--pushgateway".into(),
                "http://user:pw@127.0.0.1:9091".into(),
            ],
            vec![],
            "credentials",
        ),
    ];
    for (args, env, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut g = spawn_run(dir.path(), &file, &args, &env);
        let (code, stdout, stderr) = wait_run(&mut g, Duration::from_secs(60));
        assert_eq!(code, 2, "{args:?}\nstdout: {stdout}\nstderr: {stderr}");
        assert!(
            stderr.contains(needle) || stdout.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(
            !stdout.contains("setup: starting the demo"),
            "{args:?} started the demo: {stdout}"
        );
        assert!(!dir.path().join("out/report.json").exists());
    }
    drop(taken);
}

const SCALE: &str = r#"version: 1
name: observe-k8s
setup:
  demo: { replicas: 2, port: DEMO, health_interval: 250ms }
load:
  http: { url: "http://127.0.0.1:DEMO/", rate: 50/s, timeout: 2s, window: 500ms }
steady_state:
  warmup: 500ms
  hold: 500ms
  slo: { success_rate: ">= 90%", p99: "< 1500ms" }
faults:
  - name: scale-web
    at: 1s
    duration: 6s
    deployment-scale: { namespace: shop, names: [web], replicas: 1 }
duration: 9s
"#;

#[test]
fn cluster_events_from_the_api_stream_are_on_the_timeline_under_their_fault_and_charted() {
    let fake = FakeK8s::start(Duration::from_millis(100), Duration::from_millis(100));
    fake.add_deployment("shop", "web", 3);
    fake.add_deployment("shop", "db", 1);
    fake.set_endpoints("shop", "web", 3, 0);
    // Before the run: the baseline, never reported.
    fake.add_event(
        "shop",
        "Pod",
        "old",
        "Warning",
        "BackOff",
        "from before the run",
    );
    let db = fake
        .pod_names("shop")
        .into_iter()
        .find(|p| p.starts_with("db-"))
        .expect("db pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "k.yaml",
        &SCALE.replace("DEMO", &free_port().to_string()),
    );
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let kubeconfig = fake.kubeconfig.to_str().unwrap().to_string();
    let mut g = spawn_run(
        dir.path(),
        &file,
        &["--metrics-addr", &metrics_addr],
        &[
            ("KUBECONFIG", &kubeconfig),
            ("RATTLE_PROTECTED_NAMESPACES", ""),
        ],
    );
    // The fault is active (after its injection instant): the cluster misbehaves.
    scrape_until(&mut g, &metrics_addr, |s| {
        sample(s, "rattle_active_faults", "") == Some(1.0)
    })
    .expect("fault active");
    fake.add_event(
        "shop",
        "Pod",
        "web-pending",
        "Warning",
        "FailedScheduling",
        "0/3 nodes are available: 3 Insufficient memory.",
    );
    assert!(fake.set_pod_status(
        "shop",
        &db,
        json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 1, "image": "app",
                "imageID": "", "started": false,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})
    ));
    fake.add_event(
        "shop",
        "Pod",
        &db,
        "Normal",
        "Pulled",
        "image pulled (chatter, not kept)",
    );
    fake.set_endpoints("shop", "web", 1, 2);
    let (code, stdout, stderr) = wait_run(&mut g, Duration::from_secs(90));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let r = read_report(dir.path());
    let events = r["cluster_events"].as_array().expect("cluster_events");
    println!("cluster events in the report: {}", events.len());
    let find = |reason: &str| {
        events
            .iter()
            .find(|e| e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} in {events:#?}"))
    };
    let fs = find("FailedScheduling");
    assert_eq!(fs["object"], "Pod/web-pending");
    assert_eq!(fs["namespace"], "shop");
    assert_eq!(fs["severity"], "Warning");
    assert_eq!(fs["source"], "event");
    assert_eq!(fs["fault"], "scale-web");
    let oom = find("OOMKilled");
    assert_eq!(oom["object"], format!("Pod/{db}"));
    assert!(
        oom["message"].as_str().unwrap().contains("exit code 137"),
        "{oom}"
    );
    assert_eq!(oom["fault"], "scale-web");
    assert_eq!(find("NotReady")["fault"], "scale-web");
    let ep = find("EndpointsChanged");
    assert_eq!(ep["object"], "Service/web");
    assert_eq!(ep["message"], "1 ready endpoint(s), was 3");
    assert_eq!(ep["fault"], "scale-web");
    // The fault's own doing: the scaled-down pods deleted.
    assert!(
        events.iter().any(|e| e["reason"] == "PodDeleted"),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["reason"] == "BackOff" || e["reason"] == "Pulled"),
        "{events:#?}"
    );
    // Each event inside its fault's window on the report's own clock.
    let fault = &r["faults"][0];
    let (from, to) = (
        fault["injected_at_ms"].as_f64().unwrap(),
        fault["reverted_at_ms"].as_f64().unwrap(),
    );
    for e in events.iter().filter(|e| e["fault"] == "scale-web") {
        let t = e["t_ms"].as_f64().unwrap();
        assert!(from <= t && t <= to.max(from), "{e} outside [{from}, {to}]");
    }
    // On the timeline, in time order.
    let timeline = r["timeline"].as_array().unwrap();
    assert!(timeline
        .iter()
        .any(|e| e["event"] == "cluster" && e["detail"].as_str().unwrap().contains("OOMKilled")));
    let ts: Vec<f64> = timeline
        .iter()
        .map(|e| e["t_ms"].as_f64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    // In the HTML: markers on the charts and a table under the fault.
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).expect("html");
    assert!(
        html.contains(r#"class="marker cluster""#),
        "no cluster marker"
    );
    assert!(html.contains("What the cluster did in this window"));
    assert!(html.contains("FailedScheduling"));
    assert!(html.contains("0/3 nodes are available"));
    // report.json keeps to its schema and stays readable by `rattle report`.
    crate::report::assert_valid(&crate::report::report_schema(), &r);
    let mut cmd = rattle();
    cmd.args([
        "report",
        dir.path().join("out/report.json").to_str().unwrap(),
        "--format",
        "markdown",
    ]);
    let (code, _, stderr) = crate::support::run_bounded_cmd(cmd, Duration::from_secs(30));
    let md = std::fs::read_to_string(dir.path().join("out/summary.md")).expect("summary.md");
    assert!(md.contains("## What the cluster did"), "{md}");
    assert!(
        md.contains("| scale-web | shop Pod/web-pending | FailedScheduling |"),
        "{md}"
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn game_day_runs_take_their_outputs_from_the_environment() {
    let grafana = FakeGrafana::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = format!("rattle-obs-gd-{}", std::process::id());
    let target = crate::support::sleeper(&marker);
    for name in ["first", "second"] {
        write(
            dir.path(),
            &format!("exp-{name}.yaml"),
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
        );
    }
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: nightly\nexperiments: [\"exp-*.yaml\"]\n",
    );
    let mut cmd = rattle();
    cmd.args(["gameday", "run"])
        .arg(&gd)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--yes")
        .env("RATTLE_GRAFANA_URL", format!("http://{}", grafana.addr))
        .env("RATTLE_GRAFANA_TOKEN", "gd-token")
        .env_remove("RATTLE_METRICS_ADDR")
        .env_remove("RATTLE_PUSHGATEWAY_URL");
    let (code, stdout, stderr) = crate::support::run_bounded_cmd(cmd, Duration::from_secs(90));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        crate::support::resumed(target.0.id()),
        "the sleeper was left paused"
    );
    let got = grafana.received();
    let experiments: Vec<&str> = got
        .iter()
        .filter(|c| c.method == "POST")
        .filter_map(|c| c.body["tags"][1].as_str())
        .collect();
    assert_eq!(
        experiments,
        ["experiment:first", "experiment:second"],
        "{got:?}"
    );
    assert!(
        got.iter()
            .all(|c| c.auth.as_deref() == Some("Bearer gd-token"))
    );
    // Each region closed and tagged with its run's verdict.
    assert_eq!(
        got.iter().filter(|c| c.method == "PATCH").count(),
        4,
        "{got:?}"
    );
}
