//! `rattle load --http2` end to end against h2c servers started inside the test, counting what
//! only the server can see: how many connections were opened, how many requests were in flight
//! at once, and that a server closing connections gracefully (GOAWAY, as nginx does after 1000
//! requests) costs no failed request. Synchronised on the server's own counts, never on time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::load_cli::{json_of, rattle_load, u};

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Requests that were not HTTP/2.
    not_h2: AtomicU64,
}

/// An h2c server. Requests are held until `gate` requests are in flight at once (for good: from
/// then on every request is answered at once); each connection is closed gracefully after
/// `per_conn` requests when given.
async fn h2c_server(gate: u64, per_conn: Option<u64>) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    let seen = Arc::new(Seen::default());
    let (open_tx, open_rx) = watch::channel(gate <= 1);
    let open_tx = Arc::new(open_tx);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (s, open_tx, open_rx) = (s.clone(), open_tx.clone(), open_rx.clone());
            tokio::spawn(async move {
                let served = Arc::new(AtomicU64::new(0));
                let done = Arc::new(Notify::new());
                let (served2, done2) = (served.clone(), done.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (s, open_tx, mut open_rx) = (s.clone(), open_tx.clone(), open_rx.clone());
                    let (served, done) = (served2.clone(), done2.clone());
                    async move {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        if req.version() != Version::HTTP_2 {
                            s.not_h2.fetch_add(1, Ordering::SeqCst);
                        }
                        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        if now >= gate {
                            let _ = open_tx.send(true);
                        }
                        let _ = open_rx.wait_for(|open| *open).await;
                        s.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        if per_conn.is_some_and(|limit| n >= limit) {
                            done.notify_one();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi\n"))))
                    }
                });
                let conn = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    () = done.notified() => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn streams_multiplex_requests_over_the_connections() {
    // 5 connections × 10 streams: the server holds every request until 50 are in flight, so a
    // run with any answered request proves 50 were in flight at once, over exactly 5
    // connections (no failure, so no reconnect).
    let (addr, seen) = h2c_server(50, None).await;
    let url = format!("http://{addr}/");
    let out = rattle_load(&[
        &url,
        "--http2",
        "-c",
        "5",
        "--streams",
        "10",
        "--threads",
        "2",
        "-d",
        "1s",
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json_of(&out);
    assert!(u(&r, "ok") > 0, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(u(&r, "requests"), u(&r, "ok"), "{r}");
    assert_eq!(r["status_codes"]["200"].as_u64(), Some(u(&r, "ok")), "{r}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 50);
    assert_eq!(seen.not_h2.load(Ordering::SeqCst), 0);
    // Every answered request was one the server saw (those cut at the stop are not counted).
    assert!(u(&r, "ok") <= seen.requests.load(Ordering::SeqCst), "{r}");
}

#[tokio::test]
async fn one_stream_per_connection_by_default() {
    // Gate at 4: reached only if all 4 connections carry a request at once; never above 4.
    let (addr, seen) = h2c_server(4, None).await;
    let url = format!("http://{addr}/");
    let out = rattle_load(&[&url, "--http2", "-c", "4", "-d", "1s", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = json_of(&out);
    assert!(u(&r, "ok") > 0, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_graceful_goaway_costs_no_request() {
    // Each connection closes gracefully after 20 requests: rattle reconnects and resends what
    // the server did not take, counting no failure.
    for streams in ["1", "4"] {
        let (addr, seen) = h2c_server(1, Some(20)).await;
        let url = format!("http://{addr}/");
        let out = rattle_load(&[
            &url,
            "--http2",
            "-c",
            "2",
            "--streams",
            streams,
            "--threads",
            "1",
            "-d",
            "1s",
            "--json",
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let r = json_of(&out);
        assert_eq!(u(&r, "failed"), 0, "streams {streams}: {r}");
        assert!(u(&r, "ok") > 0, "{r}");
        // Wait for the server's count rather than time: more than 40 answers need more than
        // the first two connections.
        if u(&r, "ok") > 40 {
            assert!(seen.connections.load(Ordering::SeqCst) > 2, "{r}");
        }
    }
}

#[tokio::test]
async fn streams_needs_http2_and_the_closed_model() {
    let url = "http://127.0.0.1:9/";
    let cases: [&[&str]; 5] = [
        &[url, "--streams", "10"],
        &[url, "--http2", "--streams", "0"],
        &[url, "--http2", "--streams", "1001"],
        &[url, "--http2", "--streams", "10", "--rate", "10/s"],
        &[url, "--http2", "-c", "1000000", "--streams", "1000"],
    ];
    for args in cases {
        let out = rattle_load(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--streams"), "{args:?}: {err}");
    }
}
