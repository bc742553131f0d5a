//! `rattle load` end to end: the binary against servers started inside the test on 127.0.0.1
//! (HTTP/1.1, h2c, TLS with ALPN), checking that counts add up, that latency matches a known
//! server delay, that text and JSON agree, that Ctrl-C still prints results, and that bad input
//! exits 2 with a clear message.
//!
//! Every run is short (1 s), bounded by a timeout, and its process is killed on drop. Nothing is
//! asserted about speed: only counts, classes and latencies against the server's own delay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::rattle_bin;

/// Upper bound on one `rattle load` run.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// The test server's delay before answering.
const DELAY: Duration = Duration::from_millis(20);

/// 200 for HTTP/2, 201 for HTTP/1.x: the status says which protocol the request came over.
async fn handle(
    req: Request<Incoming>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(delay).await;
    let status = if req.version() == Version::HTTP_2 {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"hello\n")));
    *resp.status_mut() = status;
    Ok(resp)
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let a = l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    (l, a)
}

/// A plain-TCP server speaking HTTP/1.1 and h2c (prior knowledge), answering after `delay`.
async fn plain_server(delay: Duration) -> SocketAddr {
    let (l, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, delay));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TLS server for `localhost` (self-signed; its certificate PEM is returned) offering h2 and
/// http/1.1 by ALPN.
async fn tls_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap_or_else(|e| panic!("rcgen: {e}"));
    let pem = dir.join("cert.pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap_or_else(|e| panic!("write: {e}"));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("versions: {e}"))
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap_or_else(|e| panic!("cert: {e}"));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let (l, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req| handle(req, Duration::ZERO));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, pem)
}

/// Runs `rattle load ARGS` to completion (bounded), killing it if the bound runs out.
pub(crate) async fn rattle_load(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(rattle_bin())
        .arg("load")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn rattle: {e}"));
    match tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("rattle load: {e}"),
        Err(_) => panic!("rattle load {args:?} did not finish in {RUN_LIMIT:?}"),
    }
}

pub(crate) fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// The invariants of every report: counts add up, percentiles are ordered.
fn check_report(r: &Value) {
    let (requests, ok, failed) = (u(r, "requests"), u(r, "ok"), u(r, "failed"));
    assert_eq!(requests, ok + failed, "{r}");
    let statuses: u64 = r["status_codes"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let errors = r["errors"].as_object().cloned().unwrap_or_default();
    let error_sum: u64 = errors.values().filter_map(Value::as_u64).sum();
    let missed = errors.get("missed").and_then(Value::as_u64).unwrap_or(0);
    let status_failures: u64 = ["status_4xx", "status_5xx"]
        .iter()
        .filter_map(|k| errors.get(*k).and_then(Value::as_u64))
        .sum();
    // Every failure is classed once, missed ones included (#19: the totals agree with the
    // classes); missed requests were never sent.
    assert_eq!(error_sum, failed, "{r}");
    assert_eq!(u(r, "missed"), missed, "{r}");
    assert_eq!(requests, u(r, "sent") + missed, "{r}");
    // Every response has a status; the other failures (refused, reset, ...) have none.
    assert!(statuses >= ok + status_failures, "{r}");
    assert!(statuses <= requests, "{r}");
    if u(r, "sent") > 0 {
        let l = &r["latency_ms"];
        let (min, p50, p90, p99, p999, max) = (
            f(l, "min"),
            f(l, "p50"),
            f(l, "p90"),
            f(l, "p99"),
            f(l, "p99_9"),
            f(l, "max"),
        );
        assert!(
            min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
            "{l}"
        );
    }
}

/// Latency of a server that waits `DELAY` is at least that (a busy machine only adds), and the
/// measurement adds little to it. The upper bound is on the fastest request, not the median:
/// every request a busy machine delays counts in the median (the open model rightly measures
/// from the intended start), while one request from its best moment shows what rattle itself
/// adds (issue #21).
fn check_delay(r: &Value) {
    let (min, p50) = (f(&r["latency_ms"], "min"), f(&r["latency_ms"], "p50"));
    let d = DELAY.as_secs_f64() * 1000.0;
    assert!(p50 >= d, "p50 {p50} ms for a {d} ms server");
    assert!(
        (d * 0.99..=d + 30.0).contains(&min),
        "min {min} ms for a {d} ms server"
    );
}

#[tokio::test]
async fn closed_model_counts_add_up_and_latency_matches_the_server_delay() {
    let addr = plain_server(DELAY).await;
    let url = format!("http://{addr}/x?y=1");
    let out = rattle_load(&[&url, "-c", "4", "-d", "1s", "--json", "-H", "X-Test: 1"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json_of(&out);
    check_report(&r);
    check_delay(&r);
    assert_eq!(r["model"], "closed");
    assert!(u(&r, "requests") > 0);
    assert_eq!(u(&r, "failed"), 0, "{r}");
    // HTTP/1.1 by default over plain TCP.
    assert_eq!(
        r["status_codes"]["201"].as_u64(),
        Some(u(&r, "requests")),
        "{r}"
    );
}

#[tokio::test]
async fn text_output_agrees_with_its_counts() {
    let addr = plain_server(DELAY).await;
    let out = rattle_load(&[&format!("http://{addr}/"), "-c", "2", "-d", "1s"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
    };
    let requests = field("requests");
    assert!(requests > 0);
    assert_eq!(field("status codes  201:"), requests, "{text}");
    assert!(
        text.contains(&format!("(ok {requests}, failed 0)")),
        "{text}"
    );
    assert!(text.contains("errors        none"), "{text}");
}

#[tokio::test]
async fn open_model_sends_on_schedule_and_measures_from_the_intended_start() {
    let addr = plain_server(DELAY).await;
    let out = rattle_load(&[
        &format!("http://{addr}/"),
        "--rate",
        "100/s",
        "-d",
        "1s",
        "-c",
        "10",
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json_of(&out);
    check_report(&r);
    check_delay(&r);
    let o = &r["open"];
    assert_eq!(u(o, "scheduled"), u(o, "sent") + u(o, "missed"), "{r}");
    assert_eq!(u(o, "sent"), u(&r, "sent"), "{r}");
    assert_eq!(u(o, "scheduled"), u(&r, "requests"), "{r}");
    // 100/s: tickets 0..=100·t are due by the stop at t. A busy machine can fire the 1 s stop
    // late (issue #21: seen as 103 scheduled), so the bound is the run's own measured length.
    let elapsed = r["elapsed_s"].as_f64().expect("elapsed_s");
    let scheduled = u(o, "scheduled");
    assert!(
        scheduled >= 1 && scheduled as f64 <= elapsed * 100.0 + 1.0 + 1e-9,
        "scheduled {scheduled} in {elapsed} s: {r}"
    );
    assert_eq!(u(&r, "failed"), 0, "{r}");
}

#[tokio::test]
async fn h2c_with_prior_knowledge() {
    let addr = plain_server(Duration::ZERO).await;
    for extra in [&[][..], &["--rate", "50/s"][..]] {
        let url = format!("http://{addr}/");
        let mut args = vec![url.as_str(), "--http2", "-c", "2", "-d", "1s", "--json"];
        args.extend_from_slice(extra);
        let out = rattle_load(&args).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let r = json_of(&out);
        check_report(&r);
        assert!(u(&r, "requests") > 0);
        // 200 means the server saw HTTP/2.
        assert_eq!(
            r["status_codes"]["200"].as_u64(),
            Some(u(&r, "requests")),
            "{r}"
        );
    }
}

#[tokio::test]
async fn https_with_alpn_a_custom_root_or_insecure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (addr, pem) = tls_server(dir.path()).await;
    let url = format!("https://localhost:{}/", addr.port());
    let pem = pem.to_string_lossy().into_owned();
    // (extra args, the status expected: 200 over h2, 201 over HTTP/1.1)
    let cases: [(&[&str], &str); 5] = [
        (&["--cacert", &pem], "200"),
        (&["--cacert", &pem, "--http1"], "201"),
        (&["-k", "--http2"], "200"),
        (&["-k", "--http1", "--rate", "50/s"], "201"),
        (&["--cacert", &pem, "--rate", "50/s"], "200"),
    ];
    for (extra, status) in cases {
        let mut args = vec![url.as_str(), "-c", "2", "-d", "1s", "--json"];
        args.extend_from_slice(extra);
        let out = rattle_load(&args).await;
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {out:?}");
        let r = json_of(&out);
        check_report(&r);
        assert!(u(&r, "requests") > 0, "{extra:?}: {r}");
        assert_eq!(
            r["status_codes"][status].as_u64(),
            Some(u(&r, "requests")),
            "{extra:?}: {r}"
        );
    }
    // Without trusting the certificate every request fails, classed, and the exit code says so.
    let out = rattle_load(&[&url, "-c", "1", "-d", "1s", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = json_of(&out);
    check_report(&r);
    assert_eq!(u(&r, "ok"), 0, "{r}");
    assert!(u(&r, "failed") > 0, "{r}");
}

#[tokio::test]
async fn connection_close_and_refused_are_counted() {
    // A server that closes after each response: the closed model reconnects, nothing fails.
    let (l, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req| handle(req, Duration::ZERO));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let url = format!("http://{addr}/");
    for extra in [&[][..], &["--rate", "200/s"][..]] {
        let mut args = vec![url.as_str(), "-c", "2", "-d", "1s", "--json"];
        args.extend_from_slice(extra);
        let out = rattle_load(&args).await;
        let r = json_of(&out);
        check_report(&r);
        assert!(u(&r, "requests") > 0, "{extra:?}: {r}");
        assert_eq!(u(&r, "failed"), 0, "{extra:?}: {r}");
    }

    // Nothing listening: refused, exit 1.
    // A port outside the ephemeral range, which nothing else in the suite takes (issue #21).
    let addr = SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
    let url = format!("http://{addr}/");
    for extra in [&[][..], &["--rate", "50/s"][..]] {
        let mut args = vec![url.as_str(), "-c", "1", "-d", "1s", "--json"];
        args.extend_from_slice(extra);
        let out = rattle_load(&args).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let r = json_of(&out);
        check_report(&r);
        assert!(u(&r, "requests") > 0, "{extra:?}: {r}");
        assert_eq!(u(&r["errors"], "refused"), u(&r, "requests"), "{r}");
    }
}

/// Like `plain_server` with no delay, counting the requests it has answered.
async fn counting_server() -> (SocketAddr, Arc<AtomicU64>) {
    let (l, addr) = bind().await;
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    handle(req, Duration::ZERO)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn ctrl_c_stops_early_and_still_prints_results() {
    let (addr, answered) = counting_server().await;
    let child = tokio::process::Command::new(rattle_bin())
        .args([
            "load",
            &format!("http://{addr}/"),
            "-c",
            "2",
            "-d",
            "60s",
            "--json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let pid = child.id().unwrap_or_else(|| panic!("no pid"));
    // Not a fixed sleep (issue #21): Ctrl-C once requests have been answered and rattle
    // catches SIGINT, which it starts doing only after the load has started; before that the
    // default action would kill it with nothing printed.
    let waited = tokio::time::Instant::now();
    while answered.load(Ordering::SeqCst) < 10
        || !crate::support::catches(pid, nix::sys::signal::Signal::SIGINT)
        || !crate::support::catches(pid, nix::sys::signal::Signal::SIGTERM)
    {
        assert!(
            waited.elapsed() < RUN_LIMIT,
            "rattle load never got going: {} answered",
            answered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or_else(|e| panic!("{e}")));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
        .unwrap_or_else(|e| panic!("kill: {e}"));
    let out = match tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        other => panic!("rattle load did not stop on SIGINT: {other:?}"),
    };
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json_of(&out);
    check_report(&r);
    assert_eq!(r["interrupted"], true, "{r}");
    assert!(f(&r, "elapsed_s") < 30.0, "{r}");
    assert!(u(&r, "requests") > 0, "{r}");
}

#[tokio::test]
async fn bad_input_exits_2_with_a_clear_message() {
    let cases: [(&[&str], &str); 6] = [
        (&["not a url"], "invalid URL"),
        (&["ftp://127.0.0.1/"], "expected http:// or https://"),
        (
            &["http://127.0.0.1:1/", "-H", "no-colon"],
            "expected \"Name: value\"",
        ),
        (
            &["http://127.0.0.1:1/", "-H", "bad name: x"],
            "invalid header name",
        ),
        (&["http://127.0.0.1:1/", "-d", "0s"], "must be above zero"),
        (
            &["https://127.0.0.1:1/", "--cacert", "/nonexistent/ca.pem"],
            "/nonexistent/ca.pem",
        ),
    ];
    for (args, message) in cases {
        let out = rattle_load(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
