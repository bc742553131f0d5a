//! The fault proxy on real sockets on 127.0.0.1: each toxic's measured effect with a
//! tolerance, reverts restoring baseline behaviour, the Toxiproxy API (in-process, and driven
//! by the third-party `toxiproxy-python` client when installed), and a whole run via the binary.
//!
//! Timing checks are lower bounds plus generous upper tolerances: a loaded CI machine makes
//! things slower, never faster. So a lower bound may hold every sample (or the median), but an
//! upper bound holds the best of several samples: a busy machine delays any one round trip, or
//! half of them, by as much as it likes, while the fastest shows what the proxy itself adds
//! (issue #21).

use std::time::Duration;

use hyper::Method;
use proptest::prelude::*;
use rattle::proxy::api;
use rattle::proxy::{ProxyError, Registry, Stream};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

use crate::support::{echo, free_port, sender, toxic};

/// Bound on any single test step.
const STEP: Duration = Duration::from_secs(10);

async fn proxy_to(reg: &Registry, name: &str, upstream: &str) -> String {
    reg.create(name, "127.0.0.1:0", upstream, true)
        .await
        .unwrap()
        .listen
}

/// Round-trip times of `n` small messages on one connection, in ms, sorted.
async fn rtts(addr: &str, n: usize) -> Vec<f64> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8];
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"ping1234").await.unwrap();
        timeout(STEP, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn read_all(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    timeout(STEP, s.read_to_end(&mut v))
        .await
        .map_err(std::io::Error::other)??;
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_toxic_p50_within_tolerance_and_revert_restores_baseline() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "lat", &echo().await).await;
    let base = rtts(&addr, 20).await;
    reg.add_toxic(
        "lat",
        toxic(
            "l",
            "latency",
            Stream::Downstream,
            1.0,
            json!({"latency": 100}),
        ),
    )
    .await
    .unwrap();
    let with = rtts(&addr, 20).await;
    eprintln!(
        "latency 100ms: baseline p50 {:.3} ms; with toxic p50 {:.3} ms p99 {:.3} ms",
        pct(&base, 0.5),
        pct(&with, 0.5),
        pct(&with, 0.99)
    );
    assert!(pct(&with, 0.5) >= 100.0, "{with:?}");
    // Sorted: `with[0]` is the fastest round trip.
    assert!(with[0] <= 100.0 + 40.0, "{with:?}");
    reg.remove_toxic("lat", "l").await.unwrap();
    let after = rtts(&addr, 20).await;
    assert!(after[0] < 50.0, "{after:?}");
}

/// One round trip of a small message on `s`, in ms.
async fn rtt_on(s: &mut TcpStream) -> f64 {
    let t = Instant::now();
    s.write_all(b"ping1234").await.unwrap();
    let mut buf = [0u8; 8];
    timeout(STEP, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping1234");
    t.elapsed().as_secs_f64() * 1000.0
}

/// Issue #3: a connection copies directly while its proxy has no toxic; a toxic added while
/// bytes stream through it takes effect on that same connection, and no byte is lost or
/// reordered by the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toxic_added_to_a_live_connection_applies_and_loses_nothing() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "live", &echo().await).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    rtt_on(&mut s).await;
    let (mut r, mut w) = s.into_split();
    const TOTAL: usize = 4 << 20;
    let pattern: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let sent = pattern.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(16 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w
    });
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0u8; 64 * 1024];
    let mut added = false;
    while got.len() < TOTAL {
        let n = timeout(STEP, r.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if !added && got.len() >= TOTAL / 8 {
            added = true;
            for stream in [Stream::Upstream, Stream::Downstream] {
                let name = format!("{stream:?}");
                reg.add_toxic(
                    "live",
                    toxic(&name, "latency", stream, 1.0, json!({"latency": 30})),
                )
                .await
                .unwrap();
            }
        }
    }
    assert!(got == pattern, "bytes lost or reordered across the switch");
    let w = writer.await.unwrap();
    let mut s = r.reunite(w).unwrap();
    // The same connection now goes through the toxics: 30 ms each way.
    assert!(rtt_on(&mut s).await >= 60.0);
    reg.remove_toxic("live", "Upstream").await.unwrap();
    reg.remove_toxic("live", "Downstream").await.unwrap();
    rtt_on(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_upstream_and_jitter_stay_in_range() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "jit", &echo().await).await;
    reg.add_toxic(
        "jit",
        toxic(
            "j",
            "latency",
            Stream::Upstream,
            1.0,
            json!({"latency": 60, "jitter": 20}),
        ),
    )
    .await
    .unwrap();
    let v = rtts(&addr, 20).await;
    assert!(v[0] >= 40.0, "{v:?}");
    assert!(v[0] <= 80.0 + 40.0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_latency_releases_bytes_already_queued() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "rel", &echo().await).await;
    reg.add_toxic(
        "rel",
        toxic(
            "l",
            "latency",
            Stream::Downstream,
            1.0,
            json!({"latency": 5000}),
        ),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"hello").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reg.remove_toxic("rel", "l").await.unwrap();
    let mut buf = [0u8; 5];
    timeout(STEP, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(4000),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_zero_affects_no_connection() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "tox0", &echo().await).await;
    reg.add_toxic(
        "tox0",
        toxic(
            "l",
            "latency",
            Stream::Downstream,
            0.0,
            json!({"latency": 500}),
        ),
    )
    .await
    .unwrap();
    let v = rtts(&addr, 5).await;
    assert!(v[0] < 400.0, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limits_rate_and_lifts_on_revert() {
    let reg = Registry::new();
    let size = 100_000;
    let addr = proxy_to(&reg, "bw", &sender(size).await).await;
    reg.add_toxic(
        "bw",
        toxic(
            "b",
            "bandwidth",
            Stream::Downstream,
            1.0,
            json!({"rate": 200}),
        ),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let got = read_all(&mut s).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    let rate = got.len() as f64 / secs / 1000.0;
    eprintln!("bandwidth 200 KB/s: measured {rate:.1} KB/s over {secs:.3} s");
    assert_eq!(got.len(), size);
    assert!(rate <= 200.0 * 1.1, "{rate} KB/s");
    // The toxic promises a ceiling; the floor only shows it is not far stricter than asked.
    // It paces in 10 ms pieces and a busy machine wakes each one late, so the floor is wide.
    assert!(rate >= 200.0 * 0.25, "{rate} KB/s");

    // Revert in the middle of a transfer: the rest arrives at full speed.
    reg.update_toxic(
        "bw",
        toxic(
            "b",
            "bandwidth",
            Stream::Downstream,
            1.0,
            json!({"rate": 10}),
        ),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    reg.remove_toxic("bw", "b").await.unwrap();
    let got = read_all(&mut s).await.unwrap();
    assert_eq!(got.len(), size);
    // At 10 KB/s the transfer would take 10 s.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_resets_the_connection() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "rst", &echo().await).await;
    reg.add_toxic(
        "rst",
        toxic(
            "r",
            "reset_peer",
            Stream::Downstream,
            1.0,
            json!({"timeout": 100}),
        ),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let r = timeout(STEP, s.read(&mut buf)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(95));
    let e = r.expect_err("a reset, not data or EOF");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    reg.remove_toxic("rst", "r").await.unwrap();
    assert!(rtts(&addr, 3).await[0] < 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_blackholes_then_closes() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "to", &echo().await).await;
    reg.add_toxic(
        "to",
        toxic(
            "t",
            "timeout",
            Stream::Downstream,
            1.0,
            json!({"timeout": 300}),
        ),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"lost").await.unwrap();
    let got = read_all(&mut s).await.unwrap_or_default();
    assert!(got.is_empty(), "data passed a blackhole: {got:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_holds_until_removed_then_data_flows() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "to0", &echo().await).await;
    reg.add_toxic(
        "to0",
        toxic(
            "t",
            "timeout",
            Stream::Downstream,
            1.0,
            json!({"timeout": 0}),
        ),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"lost").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(
        timeout(Duration::from_millis(400), s.read(&mut buf))
            .await
            .is_err()
    );
    reg.remove_toxic("to0", "t").await.unwrap();
    s.write_all(b"kept").await.unwrap();
    timeout(STEP, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_splits_and_spaces_data() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "sl", &sender(100).await).await;
    reg.add_toxic(
        "sl",
        toxic(
            "s",
            "slicer",
            Stream::Downstream,
            1.0,
            json!({"average_size": 10, "size_variation": 0, "delay": 20000}),
        ),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut total = 0;
    let mut buf = [0u8; 1024];
    loop {
        let n = timeout(STEP, s.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        total += n;
        // Slice k leaves no earlier than k gaps after the connection started, so a reader
        // never holds more than this, however late it reads. (Not "each read is one slice":
        // a reader a busy machine holds up finds several slices waiting: issue #21.)
        let gaps = (t.elapsed().as_micros() / 20_000) as usize;
        assert!(
            total <= 10 * (gaps + 1),
            "{total} bytes after {:?}: faster than 10 bytes per 20 ms",
            t.elapsed()
        );
    }
    assert_eq!(total, 100);
    // Ten slices, nine gaps of 20 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(170),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_closes_after_the_budget() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "lim", &sender(10_000).await).await;
    reg.add_toxic(
        "lim",
        toxic(
            "l",
            "limit_data",
            Stream::Downstream,
            1.0,
            json!({"bytes": 1234}),
        ),
    )
    .await
    .unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let got = read_all(&mut s).await.unwrap_or_default();
    assert_eq!(got.len(), 1234);
    reg.remove_toxic("lim", "l").await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(read_all(&mut s).await.unwrap().len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delays_the_close() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "sc", &sender(10).await).await;
    reg.add_toxic(
        "sc",
        toxic(
            "c",
            "slow_close",
            Stream::Downstream,
            1.0,
            json!({"delay": 300}),
        ),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let got = read_all(&mut s).await.unwrap();
    assert_eq!(got.len(), 10);
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_closes_connections_and_stops_listening() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "dis", &echo().await).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    assert!(!rtts(&addr, 1).await.is_empty());
    reg.update("dis", None, None, Some(false)).await.unwrap();
    let mut buf = [0u8; 4];
    let r = timeout(STEP, s.read(&mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    assert!(TcpStream::connect(&addr).await.is_err());
    let info = reg.update("dis", None, None, Some(true)).await.unwrap();
    assert!(info.enabled);
    assert!(!rtts(&info.listen, 1).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_port_in_use_is_a_clear_error_and_creates_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let reg = Registry::new();
    let e = reg
        .create("busy", &addr, "127.0.0.1:1", true)
        .await
        .unwrap_err();
    assert!(matches!(e, ProxyError::Bind { .. }), "{e}");
    assert!(e.to_string().contains(&addr), "{e}");
    assert!(reg.list().await.is_empty());
    let (status, body) = match api::route(
        &reg,
        &Method::POST,
        "/proxies",
        json!({"name": "busy", "listen": addr, "upstream": "127.0.0.1:1"})
            .to_string()
            .as_bytes(),
    )
    .await
    {
        Ok(_) => panic!("created on a port in use"),
        Err(e) => (e.status(), e.to_string()),
    };
    assert_eq!(status, 409);
    assert!(body.contains("cannot listen"), "{body}");
    assert!(reg.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shapes_and_errors() {
    let reg = Registry::new();
    let up = echo().await;
    let r = |m: Method, p: &'static str, b: Value| {
        let reg = reg.clone();
        async move { api::route(&reg, &m, p, b.to_string().as_bytes()).await }
    };
    let (s, v) = r(
        Method::POST,
        "/proxies",
        json!({"name": "a", "upstream": up}),
    )
    .await
    .unwrap();
    assert_eq!(s.as_u16(), 201);
    let v = v.unwrap();
    assert_eq!(v["name"], "a");
    assert_eq!(v["enabled"], true);
    assert_ne!(v["listen"], "127.0.0.1:0");
    assert!(v["toxics"].as_array().unwrap().is_empty());
    let e = r(
        Method::POST,
        "/proxies",
        json!({"name": "a", "upstream": up}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), 409);
    let (_, t) = r(
        Method::POST,
        "/proxies/a/toxics",
        json!({"type": "latency", "attributes": {"latency": 10}}),
    )
    .await
    .unwrap();
    let t = t.unwrap();
    assert_eq!(t["name"], "latency_downstream");
    assert_eq!(t["stream"], "downstream");
    assert_eq!(t["toxicity"], 1.0);
    assert_eq!(t["attributes"], json!({"latency": 10, "jitter": 0}));
    let (_, all) = r(Method::GET, "/proxies", Value::Null).await.unwrap();
    assert_eq!(all.unwrap()["a"]["toxics"][0]["type"], "latency");
    for (m, p, b) in [
        (Method::POST, "/proxies/a/toxics", json!({"type": "nope"})),
        (
            Method::POST,
            "/proxies/a/toxics",
            json!({"type": "latency", "toxicity": 7}),
        ),
        (
            Method::POST,
            "/proxies/a/toxics",
            json!({"type": "latency", "attributes": {"latency": -1}}),
        ),
        (Method::POST, "/proxies", json!({"name": 3})),
        (
            Method::POST,
            "/proxies/a/toxics/latency_downstream",
            json!({"toxicity": "x"}),
        ),
    ] {
        let e = r(m, p, b).await.unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
    }
    assert_eq!(
        r(Method::GET, "/proxies/zz", Value::Null)
            .await
            .unwrap_err()
            .status(),
        404
    );
    assert_eq!(
        r(Method::DELETE, "/proxies/a/toxics/zz", Value::Null)
            .await
            .unwrap_err()
            .status(),
        404
    );
    let (s, _) = r(Method::POST, "/reset", Value::Null).await.unwrap();
    assert_eq!(s.as_u16(), 204);
    let (_, v) = r(Method::GET, "/proxies/a/toxics", Value::Null)
        .await
        .unwrap();
    assert_eq!(v.unwrap(), json!([]));
    let (s, v) = r(
        Method::POST,
        "/populate",
        json!([{"name": "b", "listen": "127.0.0.1:0", "upstream": up}]),
    )
    .await
    .unwrap();
    assert_eq!(s.as_u16(), 201);
    assert_eq!(v.unwrap()["proxies"][0]["name"], "b");
    // Still serving after all the bad input.
    let addr = reg.get("a").await.unwrap().listen;
    assert!(!rtts(&addr, 1).await.is_empty());
    reg.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_api_json_never_panics(
        path in prop::sample::select(vec![
            "/proxies", "/populate", "/proxies/p", "/proxies/p/toxics",
            "/proxies/p/toxics/latency_downstream", "/reset", "/version", "/x/y/z/w",
        ]),
        method in prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE"]),
        body in prop_oneof![
            ".{0,64}",
            Just(r#"{"type":"latency","attributes":{"latency":1e300,"jitter":-5}}"#.to_string()),
            Just(r#"{"type":"slicer","attributes":{"average_size":0}}"#.to_string()),
            Just(r#"{"type":"bandwidth","toxicity":NaN}"#.to_string()),
            Just(r#"{"name":"p","upstream":"127.0.0.1:9","listen":"999.1.1.1:0"}"#.to_string()),
            Just(r#"[{"name":"","upstream":""}]"#.to_string()),
        ],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let reg = Registry::new();
            let _ = reg.create("p", "127.0.0.1:0", "127.0.0.1:9", true).await;
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            match api::route(&reg, &m, path, body.as_bytes()).await {
                Ok(_) => {}
                Err(e) => prop_assert!((400..500).contains(&e.status())),
            }
            reg.shutdown().await;
            Ok(())
        })?;
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end, killing it after `limit`. Returns (exit code, stdout, stderr).
fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> (i32, String, String) {
    use std::io::Read;
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut g = Guard(child);
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(s) = g.0.try_wait().expect("wait") {
            break s.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if code != -1 {
        if let Some(mut o) = g.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = g.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
    }
    (code, out, err)
}

#[test]
fn experiment_with_a_proxy_and_a_latency_fault_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (demo, proxy) = (free_port(), free_port());
    let exp = crate::support::write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"version: 1
name: proxied
setup:
  demo: {{ replicas: 2, port: {demo} }}
proxies:
  - {{ name: api, listen: "127.0.0.1:{proxy}", upstream: "127.0.0.1:{demo}" }}
load:
  http: {{ url: "http://127.0.0.1:{proxy}/", rate: 50/s, timeout: 2s }}
steady_state:
  warmup: 1s
  hold: 1s
  slo: {{ success_rate: ">= 95%" }}
faults:
  - name: slow
    at: 2s
    duration: 2s
    net-latency: {{ proxy: api, latency: 100ms }}
duration: 6s
"#
        ),
    );
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    let mut cmd = crate::support::rattle();
    cmd.args([
        "run",
        exp.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--progress",
        "quiet",
    ])
    .env("RATTLE_STATE_DIR", &state);
    let (code, stdout, stderr) = run_bounded(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let r: Value = serde_json::from_str(&text).expect("json");
    let p99 = r
        .pointer("/totals/p99_ms")
        .and_then(Value::as_f64)
        .expect("p99");
    let p50 = r
        .pointer("/totals/p50_ms")
        .and_then(Value::as_f64)
        .expect("p50");
    eprintln!("proxied run: p50 {p50} ms, p99 {p99} ms");
    // A quarter of the requests fall in the fault: p99 carries the 100 ms, p50 does not.
    assert!(p99 >= 100.0, "p99 {p99}");
    assert!(p50 < 100.0, "p50 {p50}");
    // The effect measured over the fault's window: its 2 s, connections met and all hit, bytes.
    let effect = r.pointer("/faults/0/effect").expect("fault.effect");
    let window = effect["window_ms"].as_f64().expect("window_ms");
    assert!((1900.0..5000.0).contains(&window), "{effect}");
    assert!(effect["bytes"].as_u64().expect("bytes") > 0, "{effect}");
    assert_eq!(effect["affected"], effect["connections"], "{effect}");
    assert_eq!(effect["unit"], "connections", "{effect}");
    assert_eq!(effect["asked_latency_ms"], 100.0, "{effect}");
    assert!(
        effect["delayed_chunks"].as_u64().expect("delayed") > 0,
        "{effect}"
    );
    let (mean, max) = (
        effect["late_mean_ms"].as_f64().expect("late_mean_ms"),
        effect["late_max_ms"].as_f64().expect("late_max_ms"),
    );
    assert!(0.0 <= mean && mean <= max, "{effect}");
    // summary.md and the HTML say it in words.
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(md.contains("Measured effect of slow:"), "{md}");
    assert!(md.contains("delayed chunks went"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(
        html.contains("measured effect"),
        "no effect row in the HTML"
    );
    // The proxy is gone with the run.
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy)).is_err());
}

#[test]
fn an_http_rule_reports_the_requests_it_hit_as_the_load_saw_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (demo, proxy) = (free_port(), free_port());
    let exp = crate::support::write(
        dir.path(),
        "h.yaml",
        &format!(
            r#"version: 1
name: http-share
setup:
  demo: {{ replicas: 2, port: {demo} }}
proxies:
  - {{ name: api, listen: "127.0.0.1:{proxy}", upstream: "127.0.0.1:{demo}", mode: http }}
load:
  http: {{ url: "http://127.0.0.1:{proxy}/", rate: 100/s, timeout: 2s }}
steady_state:
  warmup: 1s
  hold: 1s
  slo: {{ success_rate: ">= 50%" }}
faults:
  - name: some-503s
    at: 2s
    duration: 2s
    http-abort: {{ proxy: api, status: 503, share: 0.3 }}
duration: 5s
"#
        ),
    );
    let out = dir.path().join("out");
    let mut cmd = crate::support::rattle();
    cmd.args([
        "run",
        exp.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--progress",
        "quiet",
    ])
    .env("RATTLE_STATE_DIR", dir.path().join("state"));
    let (code, stdout, stderr) = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        code == 0 || code == 1,
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("json");
    let effect = r.pointer("/faults/0/effect").expect("fault.effect");
    eprintln!("http rule effect: {effect}");
    assert_eq!(effect["unit"], "requests", "{effect}");
    assert!(effect["bytes_per_sec"].is_null(), "{effect}");
    let (met, hit) = (
        effect["connections"].as_u64().expect("requests met"),
        effect["affected"].as_u64().expect("affected"),
    );
    assert!(met > 0, "{effect}");
    assert!((hit as f64 - met as f64 * 0.3).abs() < 1.0, "{effect}");
    // Every request through the proxy is the load's, and only the rule answers 503: the load
    // saw exactly the 5xx answers the rule says it gave (the demo answers 200).
    let seen: u64 = r["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .filter_map(|w| w["errors"].as_object())
        .flat_map(|e| e.iter())
        .filter(|(k, _)| k.contains("5xx"))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(seen, hit, "{effect}");
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(
        md.contains(&format!("it hit {hit} of {met} matching requests")),
        "{md}"
    );
}

/// Drives a stand-alone `rattle proxy` with the third-party Toxiproxy client `toxiproxy-python`
/// (PyPI), unchanged: create, toxic (measured), list, delete, disable/enable, populate, reset.
const PYTHON_CLIENT_SCRIPT: &str = r#"
import socket, sys, threading, time
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import ProxyExists, NotFound

api_port = int(sys.argv[1])

def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    def loop():
        while True:
            c, _ = srv.accept()
            def serve(c=c):
                while True:
                    d = c.recv(65536)
                    if not d:
                        c.close()
                        return
                    c.sendall(d)
            threading.Thread(target=serve, daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return "127.0.0.1:%d" % srv.getsockname()[1]

def rtt_ms(listen):
    host, port = listen.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = time.monotonic()
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        d = s.recv(4)
        assert d, "closed"
        got += d
    s.close()
    return (time.monotonic() - t) * 1000

server = Toxiproxy()
server.update_api_consumer("127.0.0.1", api_port)
assert server.running()
assert server.version(), "no version"
up = echo_server()
proxy = server.create(upstream=up, name="echo")
assert proxy.listen != "127.0.0.1:0", proxy.listen
assert "echo" in server.proxies()
try:
    server.create(upstream=up, name="echo")
    raise SystemExit("duplicate create accepted")
except ProxyExists:
    pass
base = rtt_ms(proxy.listen)
proxy.add_toxic(type="latency", attributes={"latency": 200})
assert "latency_downstream" in proxy.toxics(), proxy.toxics()
slow = rtt_ms(proxy.listen)
assert slow >= 200, slow
proxy.destroy_toxic("latency_downstream")
# The best of five round trips: a busy machine may delay any one of them.
after = min(rtt_ms(proxy.listen) for _ in range(5))
assert after < 150, after
print("python client: rtt base %.2f ms, with 200 ms latency %.2f ms, after removal %.2f ms" % (base, slow, after))
proxy.disable()
try:
    rtt_ms(proxy.listen)
    raise SystemExit("disabled proxy still accepts")
except OSError:
    pass
proxy.enable()
assert min(rtt_ms(proxy.listen) for _ in range(5)) < 150
try:
    proxy.add_toxic(type="no_such_toxic")
    raise SystemExit("bad toxic accepted")
except Exception as e:
    assert "InvalidToxic" in type(e).__name__, repr(e)
created = server.populate([{"name": "pop", "listen": "127.0.0.1:0", "upstream": up}])
assert "pop" in server.proxies()
proxy.add_toxic(type="bandwidth", attributes={"rate": 1}, name="bw")
server.reset()
assert proxy.toxics() == {}, proxy.toxics()
server.destroy_all()
assert server.proxies() == {}
try:
    server.get_proxy("echo") is None or (_ for _ in ()).throw(SystemExit("still there"))
except NotFound:
    pass
print("python client: ok")
"#;

fn python_client_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import toxiproxy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn third_party_toxiproxy_python_client_drives_rattle_proxy() {
    if !python_client_available() {
        // CI installs the client and sets this, so there the test can never silently skip.
        assert!(
            std::env::var_os("RATTLE_REQUIRE_TOXIPROXY_CLIENT").is_none(),
            "RATTLE_REQUIRE_TOXIPROXY_CLIENT is set but python3 with toxiproxy-python is missing"
        );
        eprintln!(
            "SKIPPED: python3 with `toxiproxy-python` is not installed \
             (pip install toxiproxy-python==0.1.1)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = crate::support::write(dir.path(), "client.py", PYTHON_CLIENT_SCRIPT);
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let child = crate::support::rattle()
        .args(["proxy", "--api", &api])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rattle proxy");
    let _guard = Guard(child);
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(&api).is_err() {
        assert!(start.elapsed() < STEP, "rattle proxy API never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script).arg(port.to_string());
    let (code, out, err) = run_bounded(cmd, Duration::from_secs(60));
    eprintln!("{out}");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("python client: ok"), "{out}");
}

#[test]
fn stand_alone_proxy_refuses_a_busy_api_port_and_bad_config() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut cmd = crate::support::rattle();
    cmd.args(["proxy", "--api", &addr]);
    let (code, _, err) = run_bounded(cmd, STEP);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&addr), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let busy = format!(r#"[{{"name": "x", "listen": "{addr}", "upstream": "127.0.0.1:1"}}]"#);
    let cfg = crate::support::write(dir.path(), "c.json", &busy);
    let mut cmd = crate::support::rattle();
    cmd.args(["proxy", "--api", &format!("127.0.0.1:{}", free_port())])
        .arg("--config")
        .arg(&cfg);
    let (code, _, err) = run_bounded(cmd, STEP);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot listen"), "{err}");
}

/// An HTTP/1.1 server answering 200 `ok` to everything, keep-alive.
async fn http_upstream() -> String {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One keep-alive HTTP/1.1 connection to `addr`.
async fn http_conn(
    addr: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn status(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    method: &str,
    path: &str,
    header: Option<(&str, &str)>,
) -> u16 {
    use http_body_util::BodyExt;
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x");
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    let req = b.body(http_body_util::Empty::new()).unwrap();
    send.ready().await.unwrap();
    let resp = timeout(STEP, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let s = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    s
}

fn rule(name: &str, action: rattle::proxy::HttpAction, share: f64) -> rattle::proxy::HttpRule {
    rattle::proxy::HttpRule {
        name: name.into(),
        action,
        share,
        matcher: rattle::proxy::HttpMatch::default(),
        tally: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_abort_matches_method_path_and_header_on_one_keepalive_connection() {
    use rattle::proxy::{HttpAction, Mode};
    let reg = Registry::new();
    let up = http_upstream().await;
    let addr = reg
        .create_mode("h", "127.0.0.1:0", &up, true, Mode::Http)
        .await
        .unwrap()
        .listen;
    let mut c = http_conn(&addr).await;
    assert_eq!(status(&mut c, "GET", "/api/x", None).await, 200);
    let mut r = rule("abort", HttpAction::Abort { status: 503 }, 1.0);
    r.matcher.method = Some("GET".into());
    r.matcher.path_prefix = Some("/api/".into());
    r.matcher.headers = vec![("x-user".into(), "test".into())];
    reg.add_rule("h", r).await.unwrap();
    // Every status comes back on the same connection: an abort keeps keep-alive.
    assert_eq!(
        status(&mut c, "GET", "/api/x", Some(("x-user", "test"))).await,
        503
    );
    assert_eq!(status(&mut c, "GET", "/api/x", None).await, 200);
    assert_eq!(
        status(&mut c, "POST", "/api/x", Some(("x-user", "test"))).await,
        200
    );
    assert_eq!(
        status(&mut c, "GET", "/other", Some(("x-user", "test"))).await,
        200
    );
    reg.remove_fault("h", "abort").await.unwrap();
    assert_eq!(
        status(&mut c, "GET", "/api/x", Some(("x-user", "test"))).await,
        200
    );

    // A share: 0.5 of 200 requests, within a wide binomial tolerance.
    let mut r = rule("half", HttpAction::Abort { status: 500 }, 0.5);
    r.matcher.path_regex = Some(regex::Regex::new("^/r/[0-9]+$").unwrap());
    reg.add_rule("h", r).await.unwrap();
    let mut aborted = 0;
    for i in 0..200 {
        if status(&mut c, "GET", &format!("/r/{i}"), None).await == 500 {
            aborted += 1;
        }
    }
    assert!((60..=140).contains(&aborted), "{aborted} of 200 aborted");
    assert_eq!(status(&mut c, "GET", "/r/x", None).await, 200);
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_delay_delays_each_request_and_lifts_at_once() {
    use rattle::proxy::{HttpAction, Mode};
    let reg = Registry::new();
    let up = http_upstream().await;
    let addr = reg
        .create_mode("hd", "127.0.0.1:0", &up, true, Mode::Http)
        .await
        .unwrap()
        .listen;
    let mut c = http_conn(&addr).await;
    reg.add_rule(
        "hd",
        rule(
            "d",
            HttpAction::Delay {
                delay: Duration::from_millis(150),
            },
            1.0,
        ),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(status(&mut c, "GET", "/", None).await, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }
    reg.remove_fault("hd", "d").await.unwrap();
    // The best of five: no request is held 150 ms any more, and one of them shows it even on
    // a busy machine.
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(status(&mut c, "GET", "/", None).await, 200);
        best = best.min(t.elapsed());
    }
    assert!(best < Duration::from_millis(150), "{best:?}");
    // A long delay in progress ends when the rule goes.
    reg.add_rule(
        "hd",
        rule(
            "long",
            HttpAction::Delay {
                delay: Duration::from_secs(30),
            },
            1.0,
        ),
    )
    .await
    .unwrap();
    let r2 = reg.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = r2.remove_fault("hd", "long").await;
    });
    let t = Instant::now();
    assert_eq!(status(&mut c, "GET", "/", None).await, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_share_hits_its_share_of_requests_within_one_across_connections() {
    use rattle::proxy::{HttpAction, Mode};
    let reg = Registry::new();
    let up = http_upstream().await;
    let addr = reg
        .create_mode("hs", "127.0.0.1:0", &up, true, Mode::Http)
        .await
        .unwrap()
        .listen;
    reg.add_rule("hs", rule("s", HttpAction::Abort { status: 503 }, 0.3))
        .await
        .unwrap();
    // 400 requests over 4 connections: one tally for the proxy, so 120 +- 1 are aborted.
    let mut aborted = 0u32;
    for _ in 0..4 {
        let mut c = http_conn(&addr).await;
        for _ in 0..100 {
            if status(&mut c, "GET", "/", None).await == 503 {
                aborted += 1;
            }
        }
    }
    assert!(aborted.abs_diff(120) <= 1, "{aborted} of 400 aborted");
    // The rule's meter (what report.json's fault.effect shows) counts the same requests.
    let m = reg.measured("hs", "s").expect("a rule is metered");
    assert!(m.requests, "{m:?}");
    assert_eq!((m.connections, m.affected), (400, u64::from(aborted)));
    reg.remove_fault("hs", "s").await.unwrap();
    let mut c = http_conn(&addr).await;
    assert_eq!(status(&mut c, "GET", "/", None).await, 200);
    let after = reg.measured("hs", "s").expect("kept after removal");
    assert_eq!(after.connections, 400, "the window closed with the rule");
    reg.shutdown().await;
}
