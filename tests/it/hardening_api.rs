//! Issue #19, the proxy API and every listener: what a browser can send is refused, a token
//! can be required, slow or hostile clients cannot pin a core or hold descriptors for ever,
//! untrusted numbers in toxics never panic a connection; plus bounded fuzzing (property tests)
//! of the API over real sockets and of the load engine's HTTP/1.1 response parser.
//!
//! Every server here is on 127.0.0.1; every child process is killed by pid when its guard drops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper::Method;
use proptest::prelude::*;
use rattle::proxy::{ActiveToxic, Registry, Stream, api};
use serde_json::{Map, Value, json};

use crate::support::{Guard, echo, free_port, rattle};

/// Bound on any single network step.
const STEP: Duration = Duration::from_secs(10);

/// A parsed HTTP response: status, lower-cased headers, body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Parses one whole response (read to the connection's close).
fn parse_resp(raw: &[u8]) -> Option<Resp> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    let len = match r.parse(raw).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let headers = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some(Resp {
        status: r.code?,
        headers,
        body: raw[len..].to_vec(),
    })
}

/// Sends `raw` on a new connection and reads to the close; `None` when no complete response.
/// The requests built by [`request`] ask the server to close after answering.
fn exchange(addr: &str, raw: &[u8]) -> Option<Resp> {
    exchange_then(addr, raw, false)
}

/// [`exchange`], half-closing after `raw` when `half_close` (raw bytes that may never form a
/// whole request: the server sees the end instead of waiting for more).
fn exchange_then(addr: &str, raw: &[u8], half_close: bool) -> Option<Resp> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(STEP)).ok()?;
    s.write_all(raw).ok()?;
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_resp(&out)
}

/// A request with `Connection: close`, `Host: host`, the extra header lines, and a JSON-ish
/// body with its length.
fn request(method: &str, path: &str, host: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PATCH" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// The API in-process on a fresh loopback port, with `guard`; lives as long as the runtime.
async fn api_in_process(guard: api::Guard) -> (String, Registry) {
    let l = api::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let reg = Registry::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api::serve_guarded(l, reg.clone(), cancel, guard));
    (addr, reg)
}

/// Runs blocking client code off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_api_refuses_what_a_browser_sends_and_curl_still_works() {
    let (addr, reg) = api_in_process(api::Guard::default()).await;
    let exposed = free_port();
    let a = addr.clone();
    let results = blocking(move || {
        let create =
            format!(r#"{{"name":"x","upstream":"127.0.0.1:22","listen":"0.0.0.0:{exposed}"}}"#);
        let mut out = Vec::new();
        // The issue's example, verbatim but for the port: every browser trait at once.
        let browser = [
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ];
        out.push((
            "issue example",
            exchange(&a, &request("POST", "/proxies", &a, &browser, &create)),
        ));
        // Each trait alone is enough.
        let one = |h: (&'static str, &'static str)| {
            exchange(&a, &request("POST", "/proxies", &a, &[h], &create))
        };
        out.push(("browser user agent", one(("User-Agent", "Mozilla/5.0"))));
        out.push(("foreign origin", one(("Origin", "http://evil.example"))));
        out.push(("null origin", one(("Origin", "null"))));
        out.push(("cross-site fetch", one(("Sec-Fetch-Site", "cross-site"))));
        out.push((
            "text/plain body",
            one(("Content-Type", "text/plain;charset=UTF-8")),
        ));
        out.push((
            "multipart body",
            one(("Content-Type", "multipart/form-data; boundary=x")),
        ));
        // DNS rebinding: the page's own name in Host, on a loopback API.
        out.push((
            "foreign host",
            exchange(
                &a,
                &request("POST", "/proxies", "evil.example:8474", &[], &create),
            ),
        ));
        out
    })
    .await;
    for (what, r) in &results {
        let r = r.as_ref().unwrap_or_else(|| panic!("{what}: no response"));
        let want = if what.ends_with("body") { 415 } else { 403 };
        assert_eq!(r.status, want, "{what}: {r:?}");
        assert_eq!(r.json()["status"], want, "{what}: {r:?}");
        assert!(r.json()["error"].is_string(), "{what}: {r:?}");
    }
    // Nothing was created, nothing listens on the exposed port.
    assert!(reg.list().await.is_empty());
    assert!(std::net::TcpStream::connect(("127.0.0.1", exposed)).is_err());

    // curl as Toxiproxy documents it (`curl -d`: form content type), and the python client's
    // shape (JSON, python-requests agent), by the names a local client uses.
    let a = addr.clone();
    let port = addr.rsplit(':').next().unwrap_or("").to_string();
    let ok = blocking(move || {
        let curl = [
            ("User-Agent", "curl/8.5.0"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        let py = [
            ("User-Agent", "python-requests/2.31.0"),
            ("Content-Type", "application/json"),
        ];
        let body = r#"{"name":"c","upstream":"127.0.0.1:9"}"#;
        let mut out = vec![exchange(&a, &request("POST", "/proxies", &a, &curl, body))];
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            "LOCALHOST".to_string(),
            format!("[::1]:{port}"),
        ] {
            out.push(exchange(&a, &request("GET", "/proxies/c", &host, &py, "")));
        }
        // An Origin of this machine (a local tool's page) is not foreign.
        out.push(exchange(
            &a,
            &request(
                "GET",
                "/version",
                &a,
                &[("Origin", "http://localhost:3000")],
                "",
            ),
        ));
        out
    })
    .await;
    assert_eq!(ok[0].as_ref().map(|r| r.status), Some(201), "{:?}", ok[0]);
    for r in &ok[1..] {
        assert_eq!(r.as_ref().map(|r| r.status), Some(200), "{r:?}");
    }
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_unsupported_methods_on_known_routes_are_405_with_allow() {
    let (addr, reg) = api_in_process(api::Guard::default()).await;
    let a = addr.clone();
    let got = blocking(move || {
        [
            ("PUT", "/proxies", Some("GET, POST")),
            ("DELETE", "/version", Some("GET")),
            ("GET", "/reset", Some("POST")),
            ("GET", "/populate", Some("POST")),
            ("PUT", "/proxies/p", Some("GET, POST, PATCH, DELETE")),
            ("DELETE", "/proxies/p/toxics", Some("GET, POST")),
            (
                "OPTIONS",
                "/proxies/p/toxics/t",
                Some("GET, POST, PATCH, DELETE"),
            ),
            ("GET", "/nope", None),
            ("GET", "/proxies/p/x", None),
        ]
        .map(|(m, p, allow)| (m, p, allow, exchange(&a, &request(m, p, &a, &[], ""))))
    })
    .await;
    for (m, p, allow, r) in got {
        let r = r.unwrap_or_else(|| panic!("{m} {p}: no response"));
        match allow {
            Some(allow) => {
                assert_eq!(r.status, 405, "{m} {p}: {r:?}");
                assert_eq!(r.header("allow"), Some(allow), "{m} {p}");
            }
            None => assert_eq!(r.status, 404, "{m} {p}: {r:?}"),
        }
    }
    // The in-process router says the same.
    let e = api::route(&reg, &Method::PUT, "/proxies", b"")
        .await
        .unwrap_err();
    assert_eq!(e.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_a_token_when_set_is_required_and_compared_whole() {
    let guard = api::Guard {
        token: Some("s3cret-token".into()),
    };
    let (addr, _reg) = api_in_process(guard).await;
    let a = addr.clone();
    let got = blocking(move || {
        [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token-and-more"),
            Some("Basic s3cret-token"),
            Some("Bearer s3cret-token"),
            Some("bearer s3cret-token"),
        ]
        .map(|auth| {
            let extra: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", *v)).collect();
            (
                auth,
                exchange(&a, &request("GET", "/version", &a, &extra, "")),
            )
        })
    })
    .await;
    for (auth, r) in got {
        let r = r.unwrap_or_else(|| panic!("{auth:?}: no response"));
        if auth.is_some_and(|a| a.eq_ignore_ascii_case("Bearer s3cret-token")) {
            assert_eq!(r.status, 200, "{r:?}");
        } else {
            assert_eq!(r.status, 401, "{auth:?}: {r:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(!String::from_utf8_lossy(&r.body).contains("s3cret"));
        }
    }
}

/// Waits until something accepts on `addr`.
fn wait_up(addr: &str) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < STEP, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn issue19_stand_alone_token_option_and_exposure_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An unset token variable is bad input: exit 2 before anything listens.
    let port = free_port();
    let mut cmd = rattle();
    cmd.args(["proxy", "--api", &format!("127.0.0.1:{port}")])
        .args(["--api-token-env", "RATTLE_TEST_NO_SUCH_TOKEN_VAR"])
        .env_remove("RATTLE_TEST_NO_SUCH_TOKEN_VAR");
    let (code, _, err) = crate::support::run_bounded_cmd(cmd, STEP);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RATTLE_TEST_NO_SUCH_TOKEN_VAR"), "{err}");

    // Beyond loopback: a warning naming the risk; the token is enforced.
    let port = free_port();
    let errf = dir.path().join("stderr");
    let child = rattle()
        .args(["proxy", "--api", &format!("0.0.0.0:{port}")])
        .args(["--api-token-env", "RATTLE_TEST_TOKEN"])
        .env("RATTLE_TEST_TOKEN", "tok-123")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&errf).expect("stderr file"))
        .spawn()
        .expect("spawn rattle proxy");
    let guard = Guard(child);
    let addr = format!("127.0.0.1:{port}");
    wait_up(&addr);
    let no = exchange(&addr, &request("GET", "/proxies", &addr, &[], "")).expect("answer");
    assert_eq!(no.status, 401, "{no:?}");
    let auth = [("Authorization", "Bearer tok-123")];
    let exposed = free_port();
    let body = format!(r#"{{"name":"e","upstream":"127.0.0.1:9","listen":"0.0.0.0:{exposed}"}}"#);
    let yes = exchange(&addr, &request("POST", "/proxies", &addr, &auth, &body)).expect("answer");
    assert_eq!(yes.status, 201, "{yes:?}");
    drop(guard);
    let err = std::fs::read_to_string(&errf).unwrap_or_default();
    assert!(err.contains("beyond loopback"), "{err}");
    assert!(!err.contains("set a token"), "a token was set: {err}");
    assert!(err.contains("\"e\" listens on 0.0.0.0"), "{err}");
    assert!(!err.contains("tok-123"), "{err}");

    // --help says so.
    let (_, out, _) = crate::support::run_bounded_cmd(
        {
            let mut c = rattle();
            c.args(["proxy", "--help"]);
            c
        },
        STEP,
    );
    assert!(out.contains("--api-token-env"), "{out}");
    assert!(out.contains("Authorization: Bearer"), "{out}");
}

/// CPU time (user + system) of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

/// Resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn issue19_half_sent_requests_under_a_low_fd_limit_neither_spin_nor_starve_the_api() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = std::process::Command::new("prlimit")
        .arg("--nofile=512:512")
        .arg("--")
        .arg(crate::support::rattle_bin())
        .args(["proxy", "--api", &addr])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn prlimit rattle proxy");
    // prlimit execs rattle: same pid.
    let pid = child.id();
    let _guard = Guard(child);
    wait_up(&addr);
    // 600 heads that never complete: more than the server has descriptors for.
    let mut held = Vec::new();
    for _ in 0..600 {
        let mut s = TcpStream::connect(&addr).expect("connect (backlog)");
        let _ = s.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_millis(2500));
    let (c1, wall) = (cpu_time(pid), t0.elapsed());
    let rss = rss_kib(pid);
    let used = c1.saturating_sub(c0);
    eprintln!(
        "half-sent x600 under nofile 512: cpu {:?} over {:?}, rss {} KiB",
        used, wall, rss
    );
    // A spinning accept loop uses the whole window; backing off uses next to nothing.
    assert!(
        used < wall / 4,
        "the API used {used:?} of CPU in {wall:?}: spinning on accept errors?"
    );
    assert!(rss < 100 * 1024, "rss {rss} KiB");
    // Heads time out, descriptors free up, and a new request is answered.
    let start = Instant::now();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    s.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = parse_resp(&out);
    assert_eq!(
        r.as_ref().map(|r| r.status),
        Some(200),
        "no answer after {:?}: {r:?}",
        start.elapsed()
    );
    eprintln!("new request answered after {:?}", start.elapsed());
    // The first half-sent connection was closed by the server, not held for ever.
    let first = &mut held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut rest = Vec::new();
    match first.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a half-sent request is still held open: {e}"
        ),
    }
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_out_of_range_toxic_attributes_are_400_naming_the_field() {
    let reg = Registry::new();
    reg.create("p", "127.0.0.1:0", "127.0.0.1:9", true)
        .await
        .unwrap();
    let big = [
        json!(u64::MAX),
        json!(1e19),
        json!(1e300),
        json!(9_223_372_036_854_775_808u64),
    ];
    let fields = [
        ("latency", "latency"),
        ("latency", "jitter"),
        ("bandwidth", "rate"),
        ("slow_close", "delay"),
        ("timeout", "timeout"),
        ("reset_peer", "timeout"),
        ("slicer", "average_size"),
        ("slicer", "size_variation"),
        ("slicer", "delay"),
        ("limit_data", "bytes"),
    ];
    for (kind, field) in fields {
        for v in big.iter().chain([&json!(-1), &json!("1"), &json!([1])]) {
            let mut a = Map::new();
            if kind == "slicer" && field != "average_size" {
                a.insert("average_size".into(), json!(100));
            }
            a.insert(field.into(), v.clone());
            let body = json!({"type": kind, "attributes": a}).to_string();
            let e = api::route(&reg, &Method::POST, "/proxies/p/toxics", body.as_bytes())
                .await
                .unwrap_err();
            assert_eq!(e.status(), 400, "{kind}.{field}={v}: {e}");
            assert!(e.to_string().contains(field), "{kind}.{field}={v}: {e}");
        }
    }
    for t in [json!(1e300), json!(-0.5), json!(1.5)] {
        let body = json!({"type": "latency", "toxicity": t}).to_string();
        let e = api::route(&reg, &Method::POST, "/proxies/p/toxics", body.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400, "toxicity {t}: {e}");
    }
    assert!(reg.toxics("p").await.unwrap().is_empty());
    reg.shutdown().await;
}

/// Echoes 256 KiB through `listen`; the bytes that came back.
async fn echo_through(listen: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let mut got = vec![0u8; data.len()];
    let (_, read) = tokio::join!(w.write_all(&data), async {
        tokio::time::timeout(STEP, r.read_exact(&mut got)).await
    });
    assert!(matches!(read, Ok(Ok(_))), "{read:?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_toxics_at_their_largest_values_never_panic_a_connection() {
    let up = echo().await;
    let reg = Registry::new();
    let listen = reg
        .create("p", "127.0.0.1:0", &up, true)
        .await
        .unwrap()
        .listen;
    let max = i64::MAX as u64;
    let year = rattle::proxy::toxic::MAX_DURATION_MS;
    // The issue's slicer (average_size near i64::MAX) and its neighbours: data passes whole.
    for (avg, var) in [(max, max - 1), (max, 0), (max - 1, max - 2), (1, 0), (2, 1)] {
        let a = ActiveToxic::new(
            "s".into(),
            "slicer",
            Stream::Downstream,
            1.0,
            &attrs(json!({"average_size": avg, "size_variation": var, "delay": 0})),
        )
        .unwrap();
        reg.add_toxic("p", a).await.unwrap();
        let got = echo_through(&listen).await;
        assert_eq!(got.len(), 256 * 1024, "slicer {avg}±{var}");
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        reg.remove_toxic("p", "s").await.unwrap();
    }
    // Bandwidth beyond what the proxy can pace is refused with the attribute named (#22);
    // at its largest accepted rate, and limit_data at i64::MAX: no limit to speak of.
    let too_fast = ActiveToxic::new(
        "t".into(),
        "bandwidth",
        Stream::Downstream,
        1.0,
        &attrs(json!({"rate": max})),
    );
    assert!(
        too_fast.as_ref().is_err_and(|e| e.contains("`rate`")),
        "{too_fast:?}"
    );
    for (kind, attr) in [
        ("bandwidth", json!({"rate": rattle::proxy::toxic::MAX_RATE})),
        ("limit_data", json!({"bytes": max})),
    ] {
        let a = ActiveToxic::new("t".into(), kind, Stream::Downstream, 1.0, &attrs(attr)).unwrap();
        reg.add_toxic("p", a).await.unwrap();
        assert_eq!(echo_through(&listen).await.len(), 256 * 1024, "{kind}");
        reg.remove_toxic("p", "t").await.unwrap();
    }
    // Durations of a year: the connection is held (not panicked closed), and lifting the toxic
    // lets the data through.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (kind, attr) in [
        ("latency", json!({"latency": year, "jitter": year})),
        ("timeout", json!({"timeout": year})),
        ("reset_peer", json!({"timeout": year})),
        ("slicer", json!({"average_size": 1, "delay": year * 1000})),
    ] {
        let a = ActiveToxic::new("t".into(), kind, Stream::Downstream, 1.0, &attrs(attr)).unwrap();
        reg.add_toxic("p", a).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(&listen).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        match early {
            // Nothing yet: held. A slicer of 1 byte may let the first byte out.
            Err(_) => {}
            Ok(Ok(n)) if kind == "slicer" && n >= 1 => {}
            // reset_peer passes data until its (year-long) timeout.
            Ok(Ok(4)) if kind == "reset_peer" => {}
            other => panic!("{kind}: the connection ended early: {other:?}"),
        }
        reg.remove_toxic("p", "t").await.unwrap();
        if kind == "latency" {
            let got = tokio::time::timeout(STEP, s.read_exact(&mut buf)).await;
            assert!(matches!(got, Ok(Ok(_))), "{kind}: {got:?}");
            assert_eq!(&buf, b"ping");
        }
    }
    // The proxy still serves.
    assert_eq!(echo_through(&listen).await.len(), 256 * 1024);
    reg.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Fuzzing, bounded: the API over real sockets with random HTTP.

/// One API server for every fuzz case, on its own thread and runtime.
fn fuzz_api() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let up = echo().await;
                let l = api::bind("127.0.0.1:0").await.expect("bind");
                let _ = tx.send(l.local_addr().expect("addr").to_string());
                let reg = Registry::new();
                let _ = reg.create("p", "127.0.0.1:0", &up, true).await;
                let cancel = tokio_util::sync::CancellationToken::new();
                api::serve(l, reg, cancel).await;
            });
        });
        rx.recv_timeout(STEP).expect("fuzz API up")
    })
}

/// A JSON number a hostile client might send.
fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just("1e309".to_string()),
        Just("-0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("9223372036854775807".to_string()),
        (0u64..2000).prop_map(|n| n.to_string()),
    ]
}

fn hostile_body() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "latency",
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
        "nope",
    ]);
    let field = prop::sample::select(vec![
        "latency",
        "jitter",
        "rate",
        "delay",
        "timeout",
        "average_size",
        "size_variation",
        "bytes",
    ]);
    prop_oneof![
        (
            kind,
            prop::collection::vec((field, hostile_number()), 0..4),
            hostile_number()
        )
            .prop_map(|(k, fs, tox)| {
                let a: Vec<String> = fs.iter().map(|(f, n)| format!("\"{f}\":{n}")).collect();
                format!(
                    r#"{{"type":"{k}","toxicity":{tox},"attributes":{{{}}}}}"#,
                    a.join(",")
                )
            }),
        (hostile_number(), "[a-z0-9:.]{0,24}").prop_map(|(n, s)| format!(
            r#"{{"name":"f{n}","upstream":"{s}","listen":"127.0.0.1:0","enabled":{}}}"#,
            n.len() % 2 == 0
        )),
        "[ -~]{0,80}",
        Just(String::new()),
        Just("[".repeat(4096)),
    ]
}

fn hostile_path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("proxies".to_string()),
        Just("toxics".to_string()),
        Just("p".to_string()),
        Just("version".to_string()),
        Just("reset".to_string()),
        Just("populate".to_string()),
        "[A-Za-z0-9%._~-]{0,12}",
    ];
    prop::collection::vec(seg, 0..6).prop_map(|s| format!("/{}", s.join("/")))
}

fn hostile_header() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("User-Agent".to_string()),
        Just("Origin".to_string()),
        Just("Content-Type".to_string()),
        Just("Authorization".to_string()),
        Just("Sec-Fetch-Site".to_string()),
        Just("Accept".to_string()),
        "X-[A-Za-z0-9-]{1,16}",
    ];
    (name, "[ -~]{0,40}").prop_map(|(n, v)| (n, v.trim().to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random method, path, headers and JSON with hostile numbers: always one well-formed
    /// response, never a 5xx, errors as `{"error", "status"}`; the server keeps serving.
    #[test]
    fn issue19_fuzz_api_random_http_always_answers_well_formed(
        method in prop::sample::select(vec![
            "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TRACE", "FOO",
        ]),
        path in hostile_path(),
        headers in prop::collection::vec(hostile_header(), 0..5),
        body in hostile_body(),
    ) {
        let addr = fuzz_api();
        let extra: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let raw = request(method, &path, addr, &extra, &body);
        let r = exchange(addr, &raw);
        let r = match r {
            Some(r) => r,
            None => return Err(TestCaseError::fail(format!("no response to {}",
                String::from_utf8_lossy(&raw)))),
        };
        prop_assert!((200..500).contains(&r.status), "{} for {}", r.status,
            String::from_utf8_lossy(&raw));
        if r.status >= 400 && method != "HEAD" && !r.body.is_empty() {
            let v = r.json();
            prop_assert_eq!(&v["status"], &json!(r.status), "{:?}", r);
            prop_assert!(v["error"].is_string(), "{:?}", r);
        }
        // Undo what a case may have created, so cases stay independent-ish and bounded.
        let _ = exchange(addr, &request("POST", "/reset", addr, &[], ""));
    }

    /// Raw and mutated bytes as a request: a response or a close, never a hang past the head
    /// timeout, and the API answers the next request.
    #[test]
    fn issue19_fuzz_api_raw_bytes_never_break_the_server(
        seed in prop::collection::vec(any::<u8>(), 0..512),
        pos in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        mutate in any::<bool>(),
    ) {
        let addr = fuzz_api();
        let mut raw = if mutate {
            let mut base = request("POST", "/proxies/p/toxics", addr, &[],
                r#"{"type":"slicer","attributes":{"average_size":9223372036854775807}}"#);
            let at = pos.index(base.len());
            let n = seed.len().min(base.len() - at);
            base[at..at + n].copy_from_slice(&seed[..n]);
            base.truncate(cut.index(base.len() + 1).max(at));
            base
        } else {
            seed.clone()
        };
        if raw.is_empty() {
            raw.push(b'\n');
        }
        let _ = exchange_then(addr, &raw, true);
        let next = exchange(addr, &request("GET", "/version", addr, &[], ""));
        prop_assert_eq!(next.map(|r| r.status), Some(200));
        let _ = exchange(addr, &request("POST", "/reset", addr, &[], ""));
    }
}

// ---------------------------------------------------------------------------------------
// Fuzzing, bounded: the load engine's HTTP/1.1 response parser against hostile servers.

/// Serves `bytes` to one connection then closes; asks for one response with [`H1Conn`].
/// Returns the status on success; an error is fine, a panic or a hang is not.
fn h1_against(bytes: Vec<u8>, head_request: bool) -> Result<Option<u16>, String> {
    use rattle::load::h1::{H1Conn, H1Request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = l.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
        });
        let method = if head_request {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let uri: http::Uri = format!("http://{addr}/")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let req = H1Request::new(&method, &uri, &[], b"");
        let mut c = H1Conn::connect(addr).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(STEP, c.request(&req)).await {
            Err(_) => Err("hung past the step bound".to_string()),
            Ok(Ok(r)) => Ok(Some(r.status)),
            Ok(Err(_)) => Ok(None),
        }
    })
}

/// A plausible response: status line, framing headers, body (plain or chunked).
fn plausible_response() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 ", "ICY"]),
        prop_oneof![
            100u16..600,
            Just(101),
            Just(204),
            Just(304),
            Just(0),
            Just(999)
        ],
        prop::collection::vec(
            prop_oneof![
                hostile_number().prop_map(|n| format!("Content-Length: {n}")),
                Just("Transfer-Encoding: chunked".to_string()),
                Just("Transfer-Encoding: gzip, chunked".to_string()),
                Just("Transfer-Encoding: chunked, gzip".to_string()),
                Just("Connection: close".to_string()),
                Just("Connection: keep-alive".to_string()),
                "[A-Za-z-]{1,12}: [ -~]{0,20}",
            ],
            0..6,
        ),
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec((0u64..64, any::<bool>()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(ver, status, headers, body, chunks, chunked_body)| {
            let mut r = format!("{ver} {status} X\r\n");
            for h in headers {
                r.push_str(&h);
                r.push_str("\r\n");
            }
            r.push_str("\r\n");
            let mut b = r.into_bytes();
            if chunked_body {
                for (n, hex_garbage) in chunks {
                    if hex_garbage {
                        b.extend_from_slice(b"fffffffffffffffffff\r\n");
                    } else {
                        b.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        b.extend(std::iter::repeat_n(b'z', n as usize));
                        b.extend_from_slice(b"\r\n");
                    }
                }
                b.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            } else {
                b.extend_from_slice(&body);
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes, plausible responses, and plausible responses mutated (bytes overwritten,
    /// cut short, repeated): never a panic, never a hang.
    #[test]
    fn issue19_fuzz_h1_response_parser_never_panics_or_hangs(
        resp in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..1024),
            plausible_response(),
            (plausible_response(), prop::collection::vec(any::<u8>(), 1..16),
             any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1usize..4)
                .prop_map(|(mut r, junk, at, cut, times)| {
                    let i = at.index(r.len().max(1)).min(r.len());
                    let n = junk.len().min(r.len() - i);
                    r[i..i + n].copy_from_slice(&junk[..n]);
                    r.truncate(cut.index(r.len() + 1).max(i));
                    r.repeat(times)
                }),
        ],
        head in any::<bool>(),
    ) {
        let r = h1_against(resp, head);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

#[test]
fn issue19_h1_parser_bounds_a_head_that_never_ends() {
    // 4 MiB of header lines without the blank line: refused at the 1 MiB head limit, not
    // buffered whole.
    let mut b = b"HTTP/1.1 200 OK\r\n".to_vec();
    while b.len() < 4 << 20 {
        b.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    assert_eq!(h1_against(b, false), Ok(None));
    // A chunk size beyond u64 and a Content-Length beyond the body: errors, not panics.
    let b =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n".to_vec();
    assert_eq!(h1_against(b, false), Ok(None));
    let b = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nabc".to_vec();
    assert_eq!(h1_against(b, false), Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_oversized_heads_and_stalled_bodies_are_refused() {
    let (addr, _reg) = api_in_process(api::Guard::default()).await;
    let a = addr.clone();
    let (big_head, stalled, big_body) = blocking(move || {
        // A 128 KiB header: beyond the 64 KiB head cap.
        let filler = "a".repeat(128 * 1024);
        let big_head = exchange(
            &a,
            &request("GET", "/version", &a, &[("X-Filler", &filler)], ""),
        );
        // A body announced and never sent: 408 once the body timeout passes, not held.
        let t = Instant::now();
        let raw = format!(
            "POST /proxies HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\
             Content-Length: 100\r\n\r\n{{"
        );
        let stalled = (exchange(&a, raw.as_bytes()), t.elapsed());
        // A body beyond 1 MiB.
        let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
        let big_body = exchange(&a, &request("POST", "/proxies", &a, &[], &huge));
        (big_head, stalled, big_body)
    })
    .await;
    // hyper answers 431 to a head beyond its buffer, or closes.
    assert!(
        big_head.as_ref().is_none_or(|r| r.status == 431),
        "{big_head:?}"
    );
    let (stalled, took) = stalled;
    assert_eq!(stalled.as_ref().map(|r| r.status), Some(408), "{stalled:?}");
    assert!(took < api::BODY_TIMEOUT + STEP, "{took:?}");
    assert!(
        big_body.as_ref().is_none_or(|r| r.status == 400),
        "{big_body:?}"
    );
}

#[test]
fn issue19_stand_alone_rss_stays_bounded_under_the_issues_slicer() {
    // An echo server on a thread of its own.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = echo.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = rattle()
        .args(["proxy", "--api", &addr])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rattle proxy");
    let pid = child.id();
    let _guard = Guard(child);
    wait_up(&addr);
    let before = rss_kib(pid);
    let body = format!(r#"{{"name":"s","upstream":"{up}"}}"#);
    let r = exchange(&addr, &request("POST", "/proxies", &addr, &[], &body)).expect("answer");
    assert_eq!(r.status, 201, "{r:?}");
    let listen = r.json()["listen"].as_str().unwrap_or_default().to_string();
    let max = i64::MAX;
    for (stream, toxic) in [
        (
            "downstream",
            format!(
                r#""type":"slicer","attributes":{{"average_size":{max},"size_variation":{}}}"#,
                max - 1
            ),
        ),
        (
            "upstream",
            format!(r#""type":"limit_data","attributes":{{"bytes":{max}}}"#),
        ),
    ] {
        let body = format!(r#"{{"stream":"{stream}",{toxic}}}"#);
        let r = exchange(
            &addr,
            &request("POST", "/proxies/s/toxics", &addr, &[], &body),
        )
        .expect("answer");
        assert_eq!(r.status, 200, "{r:?}");
    }
    // 16 MiB through, on 4 connections.
    let mut peak = 0;
    for _ in 0..4 {
        let mut s = TcpStream::connect(&listen).expect("connect");
        s.set_read_timeout(Some(STEP)).expect("timeout");
        let mut r = s.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            while got < 4 << 20 {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            s.write_all(&chunk).expect("write");
        }
        assert_eq!(reader.join().expect("reader"), 4 << 20);
        peak = peak.max(rss_kib(pid));
    }
    eprintln!(
        "stand-alone proxy rss: {before} KiB idle, {peak} KiB peak after 16 MiB through the slicer"
    );
    assert!(peak < 100 * 1024, "rss {peak} KiB");
}
