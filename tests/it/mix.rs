//! Issue #15: request mixes. A load section sends several named requests in proportion to
//! their weights; every figure is also given per request name, and each request may carry an
//! SLO of its own. Checked against a server that counts what it gets per path and answers each
//! path after a known delay.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{rattle, run_bounded_cmd, write};

/// What the server saw of one path: requests, and the method, `x-route` header and body of
/// the last one.
#[derive(Debug, Default, Clone)]
struct Seen {
    count: u64,
    method: String,
    route_header: String,
    body: String,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers each path after its delay in `delays` (others
/// at once), counting requests per path. A thread per connection; all end with the flag.
struct RouteServer {
    port: u16,
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for RouteServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn route_server(delays: &[(&str, Duration)]) -> RouteServer {
    route_server_down(delays, None)
}

/// [`route_server`], whose `/checkout` answers 503 while the file `down` exists.
fn route_server_down(delays: &[(&str, Duration)], down: Option<std::path::PathBuf>) -> RouteServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let delays: Arc<BTreeMap<String, Duration>> =
        Arc::new(delays.iter().map(|(p, d)| ((*p).to_string(), *d)).collect());
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (seen2, stop2) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            let conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            };
            let (seen, delays, stop) = (seen2.clone(), delays.clone(), stop2.clone());
            let down = down.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(mut writer) = conn.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(conn);
                while !stop.load(Ordering::SeqCst) {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let (mut length, mut route) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        match reader.read_line(&mut h) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if h == "\r\n" => break,
                            Ok(_) => {}
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        } else if let Some(v) = lower.strip_prefix("x-route:") {
                            route = v.trim().to_string();
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    {
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        let e = s.entry(path.clone()).or_default();
                        e.count += 1;
                        e.method = method;
                        e.route_header = route;
                        e.body = String::from_utf8_lossy(&body).into_owned();
                    }
                    let bare = path.split('?').next().unwrap_or_default();
                    if let Some(d) = delays.get(bare) {
                        std::thread::sleep(*d);
                    }
                    let answer: &[u8] =
                        if bare == "/checkout" && down.as_ref().is_some_and(|f| f.exists()) {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                    if writer.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    RouteServer { port, seen, stop }
}

fn run(dir: &Path, yaml: &str, extra: &[&str]) -> (i32, String, String, Value) {
    let exp = write(dir, "mix.yaml", yaml);
    let out = dir.join("out");
    let mut cmd = rattle();
    cmd.args([
        "run",
        exp.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--progress",
        "quiet",
    ]);
    cmd.args(extra);
    let (code, stdout, stderr) = run_bounded_cmd(cmd, Duration::from_secs(90));
    let report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (code, stdout, stderr, report)
}

fn request<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["requests"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no request {name} in {:#}", report["requests"]))
}

/// 10,000 requests at weights 6:3:1: each path's share at the server within 1 point of its
/// weight's, the report's shares agreeing with the server's counts, each request sent with its
/// own method, headers and body, and each request's latency at its path's known delay.
#[test]
fn shares_follow_the_weights_and_figures_are_per_request() {
    let server = route_server(&[
        ("/search", Duration::from_millis(20)),
        ("/checkout", Duration::from_millis(60)),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        r#"version: 1
name: mix
load:
  http:
    url: "http://127.0.0.1:{port}/"
    rate: 2000/s
    headers: {{ x-route: section }}
    requests:
      - {{ name: browse, url: /browse, weight: 6 }}
      - {{ name: search, url: "/search?q=socks", weight: 3 }}
      - name: checkout
        url: /checkout
        weight: 1
        method: POST
        body: '{{"cart": 7}}'
        headers: {{ x-route: checkout }}
steady_state:
  warmup: 0s
  hold: 1s
duration: 5s
"#,
        port = server.port
    );
    let (code, stdout, stderr, report) = run(dir.path(), &yaml, &["--seed", "7"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let seen = server.seen.lock().expect("seen").clone();
    let count = |p: &str| seen.get(p).map_or(0, |s| s.count);
    let (b, s, c) = (
        count("/browse"),
        count("/search?q=socks"),
        count("/checkout"),
    );
    let total = (b + s + c) as f64;
    eprintln!("mix 6:3:1 over {total} requests: browse {b}, search {s}, checkout {c}");
    assert!(total >= 9_000.0, "{seen:?}");
    for (n, want) in [(b, 0.6), (s, 0.3), (c, 0.1)] {
        let share = n as f64 / total;
        assert!(
            (share - want).abs() <= 0.01,
            "share {share} for {want}: {seen:?}"
        );
    }
    // What each request sent: the section's header unless its own, its own method and body.
    assert_eq!(seen["/browse"].method, "GET");
    assert_eq!(seen["/browse"].route_header, "section");
    assert_eq!(seen["/checkout"].method, "POST");
    assert_eq!(seen["/checkout"].route_header, "checkout");
    assert_eq!(seen["/checkout"].body, r#"{"cart": 7}"#);
    // The report's per-request counts are the server's (every request answered).
    for (name, path) in [
        ("browse", "/browse"),
        ("search", "/search?q=socks"),
        ("checkout", "/checkout"),
    ] {
        let r = request(&report, name);
        assert_eq!(
            r["totals"]["ok"].as_u64(),
            Some(count(path)),
            "{name}: {r:#}"
        );
        assert_eq!(r["totals"]["failed"].as_u64(), Some(0), "{name}");
        let share = r["share"].as_f64().expect("share");
        let asked = r["share_asked"].as_f64().expect("asked");
        assert!(
            (share - asked).abs() <= 0.01,
            "{name}: share {share}, asked {asked}"
        );
        assert!(
            !r["windows"].as_array().expect("windows").is_empty(),
            "{name}"
        );
        assert!(r["phases"].is_object(), "{name}: {r:#}");
    }
    let sum: u64 = ["browse", "search", "checkout"]
        .iter()
        .map(|n| {
            request(&report, n)["totals"]["requests"]
                .as_u64()
                .expect("requests")
        })
        .sum();
    assert_eq!(Some(sum), report["totals"]["requests"].as_u64());
    // Each request's latency is its path's: at least the delay, and the quietest window's
    // median within the tolerance of the known-delay test (+35 ms).
    for (name, delay) in [("browse", 0.0), ("search", 20.0), ("checkout", 60.0)] {
        let r = request(&report, name);
        let p50 = r["totals"]["p50_ms"].as_f64().expect("p50");
        let best = r["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .filter_map(|w| w["p50_ms"].as_f64())
            .fold(f64::INFINITY, f64::min);
        eprintln!("{name}: delay {delay} ms, p50 {p50} ms, best window p50 {best} ms");
        assert!(p50 >= delay, "{name}: p50 {p50}");
        assert!(best <= delay + 35.0, "{name}: best window p50 {best}");
    }
}

/// A request's own SLO is judged over its own requests: the slow one fails its p99 while the
/// whole load and the fast one hold, and the verdict names it.
#[test]
fn a_request_slo_fails_the_run_by_name() {
    let server = route_server(&[("/slow", Duration::from_millis(50))]);
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        r#"version: 1
name: mix-slo
load:
  http:
    url: "http://127.0.0.1:{port}/"
    rate: 200/s
    requests:
      - {{ name: fast, url: /fast, weight: 9, slo: {{ p99: "< 1s" }} }}
      - {{ name: slow, url: /slow, weight: 1, slo: {{ p99: "< 30ms" }} }}
steady_state:
  warmup: 0s
  hold: 2s
  slo: {{ success_rate: ">= 99%" }}
duration: 3s
gates:
  requests:
    fast: {{ availability: ">= 99%", error_rate: "< 1%" }}
    slow: {{ latency: {{ baseline: {{ p50: "< 10ms" }} }} }}
"#,
        port = server.port
    );
    let (code, stdout, stderr, report) = run(dir.path(), &yaml, &[]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let reason = report["reason"].as_str().expect("reason");
    assert!(reason.contains("slow: p99"), "{reason}");
    assert!(!reason.contains("fast:"), "{reason}");
    let after = &report["steady_state"]["after"];
    assert_eq!(after["slo"]["held"], true, "{after:#}");
    let checks = after["requests"].as_array().expect("per-request checks");
    let by = |n: &str| checks.iter().find(|c| c["name"] == n).expect("check");
    assert_eq!(by("fast")["slo"]["held"], true);
    assert_eq!(by("slow")["slo"]["held"], false);
    let md = std::fs::read_to_string(dir.path().join("out/summary.md")).expect("summary");
    assert!(
        md.contains("## Requests") && md.contains("| slow |"),
        "{md}"
    );
    // Gates per request: the fast one's hold, the slow one's baseline median (50 ms) does not.
    let gates = report["gates"].as_array().expect("gates");
    let gate = |n: &str| {
        gates
            .iter()
            .find(|g| g["name"] == n)
            .unwrap_or_else(|| panic!("no gate {n}: {gates:#?}"))
    };
    assert_eq!(gate("requests.fast.availability")["status"], "pass");
    assert_eq!(gate("requests.fast.error_rate")["status"], "pass");
    let slow = gate("requests.slow.latency.baseline.p50");
    assert_eq!(slow["status"], "fail", "{slow:#}");
    assert!(
        slow["measured"].as_f64().expect("measured") >= 50.0,
        "{slow:#}"
    );
}

/// A gate naming a request the mix does not have is a located error.
#[test]
fn a_gate_on_an_unknown_request_is_a_located_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = write(
        dir.path(),
        "g.yaml",
        r#"version: 1
name: g
load:
  http:
    url: "http://127.0.0.1:9/"
    rate: 10/s
    requests: [ { name: a }, { name: b } ]
duration: 3s
gates:
  requests:
    c: { error_rate: "< 1%" }
"#,
    );
    let mut cmd = rattle();
    cmd.args(["validate", exp.to_str().expect("utf8")]);
    let (code, _, stderr) = run_bounded_cmd(cmd, Duration::from_secs(30));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("g.yaml:11:") && stderr.contains("gates.requests.c"),
        "{stderr}"
    );
    assert!(stderr.contains("requests are: a, b"), "{stderr}");
}

/// Bad mixes are located errors (exit 2) before anything is sent.
#[test]
fn bad_mixes_are_located_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("name: b, weight: 0", "requests[1].weight", "above 0"),
        ("name: b, weight: -2", "requests[1].weight", "above 0"),
        (
            "name: b, weight: 0.0001",
            "requests[1].weight",
            "never be sent",
        ),
        ("name: b, url: search", "requests[1].url", "http"),
        ("name: a", "requests[1].name", "earlier request"),
        ("name: \"a b\"", "requests[1].name", "letters"),
        ("name: b, timeout: 0s", "requests[1].timeout", "above zero"),
        (
            "name: b, method: \"G T\"",
            "requests[1].method",
            "not an HTTP method",
        ),
    ];
    for (field, path, message) in cases {
        let yaml = format!(
            r#"version: 1
name: bad
load:
  http:
    url: "http://127.0.0.1:9/"
    rate: 10/s
    requests:
      - {{ name: a, weight: 1 }}
      - {{ {field} }}
duration: 1s
"#
        );
        let exp = write(dir.path(), "bad.yaml", &yaml);
        let mut cmd = rattle();
        cmd.args(["validate", exp.to_str().expect("utf8")]);
        let (code, stdout, stderr) = run_bounded_cmd(cmd, Duration::from_secs(30));
        assert_eq!(code, 2, "{field}: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stderr.contains(path) && stderr.contains(message),
            "{field}: {stderr}"
        );
        assert!(stderr.contains("bad.yaml:9:"), "{field}: located: {stderr}");
    }
}

/// Ground truth per request: an `exec` fault makes `/checkout` answer 503 for 1.5 s while
/// `/browse` never notices. Checkout's impact and recovery are the outage's (within the
/// tolerances of the whole-load outage tests); browse's fault is "not felt"; the whole load's
/// recovery agrees with checkout's.
#[test]
fn each_request_has_its_own_impact_and_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("down");
    let server = route_server_down(&[], Some(flag.clone()));
    let flag = flag.to_str().expect("utf8");
    let yaml = format!(
        r#"version: 1
name: mix-outage
load:
  http:
    url: "http://127.0.0.1:{port}/"
    rate: 200/s
    requests:
      - {{ name: browse, url: /browse, weight: 3 }}
      - {{ name: checkout, url: /checkout, weight: 1 }}
steady_state:
  warmup: 0s
  hold: 1s
  slo: {{ success_rate: ">= 99%" }}
faults:
  - name: checkout-down
    at: 2s
    duration: 1500ms
    exec: {{ inject: [touch, "{flag}"], revert: [rm, -f, "{flag}"], timeout: 5s }}
duration: 6s
"#,
        port = server.port
    );
    let (code, stdout, stderr, report) = run(dir.path(), &yaml, &["--yes"]);
    // The whole load's SLO (99 %) is missed during the outage (a quarter of it fails): the
    // fault is felt and recovers; the run passes.
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let fault = &report["faults"][0];
    let injected = fault["injected_at_ms"].as_f64().expect("injected");
    let reverted = fault["reverted_at_ms"].as_f64().expect("reverted");
    let by_fault = |name: &str| request(&report, name)["faults"][0].clone();
    let checkout = by_fault("checkout");
    assert_eq!(checkout["fault"], "checkout-down");
    let rec = &checkout["recovery"];
    let impact = rec["time_to_impact_ms"].as_f64().expect("impact");
    let recover = rec["time_to_recover_ms"].as_f64().expect("recovered");
    eprintln!(
        "checkout outage {:.1} ms: impact after {impact} ms, recovered {recover} ms after the revert, {} of {} failed",
        reverted - injected,
        rec["failed_requests"],
        rec["requests"]
    );
    // The file appears within the exec's run (a few ms); the first 503 follows at the next
    // checkout request (50/s: 20 ms apart).
    assert!(impact <= 100.0, "impact {impact}");
    // Recovery from the revert: the first good checkout after the file is gone.
    assert!(recover <= 100.0, "recover {recover}");
    // 1.5 s at 50 checkouts/s: about 75 failed.
    let failed = rec["failed_requests"].as_f64().expect("failed");
    assert!((60.0..=90.0).contains(&failed), "failed {failed}");
    let browse = by_fault("browse");
    assert!(
        browse["recovery"]["time_to_impact_ms"].is_null(),
        "{browse:#}"
    );
    assert_eq!(browse["recovery"]["failed_requests"], 0, "{browse:#}");
    let md = std::fs::read_to_string(dir.path().join("out/summary.md")).expect("summary");
    assert!(md.contains("checkout-down: not felt"), "{md}");
    // The page as a person sees it: the Requests table, a row per request, with its fault.
    if let Some(dom) = crate::support::chromium_dump_dom(&dir.path().join("out/report.html")) {
        let table = dom
            .split(r#"id="requests""#)
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap_or_else(|| panic!("no Requests table in the page"));
        let row = table
            .split("<tr>")
            .find(|r| r.contains(">checkout<"))
            .unwrap_or_else(|| panic!("no checkout row: {table}"));
        assert!(row.contains("checkout-down: impact after"), "{row}");
        assert!(table.contains("checkout-down: not felt"), "{table}");
    }
}
