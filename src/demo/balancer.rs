//! The demo balancer: an HTTP/1.1 front on 127.0.0.1 that forwards each request to the next
//! worker marked *up*, round-robin.
//!
//! It is shaped to make a worker's death visible but short, like a real load balancer:
//! - passive detection: a failed forward (refused, reset, closed early, or slower than the
//!   upstream timeout) marks the worker down at once and answers that one request 502. It is
//!   never retried elsewhere, because hiding the failure would make a kill look free;
//! - active detection: each worker's `GET /health` every `health_interval` marks it up after
//!   one success (how a restarted worker comes back into rotation) and down after
//!   [`HEALTH_FALL`] consecutive failures, like haproxy's `fall`: a single failed check must not
//!   beat the traffic to a dead worker, or a kill would sometimes cost nothing and show no
//!   impact at all;
//! - nothing up: 503 at once rather than a queue.
//!
//! The up/down bookkeeping ([`Pool`]) is kept apart from the sockets so it can be unit-tested.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Base time a worker may take to answer a forwarded request (the configured latency is added):
/// past it the worker counts as failed, since a hung process must show up as errors too.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a TCP connect to a worker may take; on 127.0.0.1 anything longer means trouble.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bounds of a health check's timeout (it is otherwise the health interval): at most 500 ms so
/// a hung worker is found quickly, at least 50 ms so a busy machine does not make workers flap.
const HEALTH_TIMEOUT_MAX: Duration = Duration::from_millis(500);
const HEALTH_TIMEOUT_MIN: Duration = Duration::from_millis(50);
/// Least health interval (a zero interval would be a busy loop).
const HEALTH_INTERVAL_MIN: Duration = Duration::from_millis(10);
/// Largest request body the balancer buffers before forwarding (the demo workers ignore bodies;
/// the cap only bounds memory).
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Pause between readiness probes while `Demo::start` waits for workers.
const READY_POLL: Duration = Duration::from_millis(25);
/// How long `stop` waits for the accept loop to release the port.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which workers are up, and whose turn is next. Lock-free, since every request consults it.
#[derive(Debug)]
pub(super) struct Pool {
    up: Vec<AtomicBool>,
    /// Index at which the next pick starts looking; always `< up.len()` (or 0 when empty).
    next: AtomicUsize,
}

impl Pool {
    /// A pool of `n` workers, all down until a health check says otherwise.
    pub(super) fn new(n: usize) -> Pool {
        Pool {
            up: (0..n).map(|_| AtomicBool::new(false)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next worker that is up, in round-robin order, or `None` if none is.
    ///
    /// The cursor moves to just after the chosen worker (not just by one), so that when a worker
    /// is down its turns are shared evenly among the others instead of all going to its
    /// successor.
    pub(super) fn pick(&self) -> Option<usize> {
        let n = self.up.len();
        if n == 0 {
            return None;
        }
        let mut chosen = None;
        let _ = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                chosen = (0..n)
                    .map(|k| (cur + k) % n)
                    .find(|&i| self.up[i].load(Ordering::Relaxed));
                chosen.map(|i| (i + 1) % n)
            });
        chosen
    }

    /// Marks worker `i` up; true if it was down.
    pub(super) fn mark_up(&self, i: usize) -> bool {
        self.up
            .get(i)
            .is_some_and(|u| !u.swap(true, Ordering::Relaxed))
    }

    /// Marks worker `i` down; true if it was up.
    pub(super) fn mark_down(&self, i: usize) -> bool {
        self.up
            .get(i)
            .is_some_and(|u| u.swap(false, Ordering::Relaxed))
    }

    /// Whether worker `i` is up.
    pub(super) fn is_up(&self, i: usize) -> bool {
        self.up.get(i).is_some_and(|u| u.load(Ordering::Relaxed))
    }

    /// Whether every worker is up.
    pub(super) fn all_up(&self) -> bool {
        self.up.iter().all(|u| u.load(Ordering::Relaxed))
    }
}

/// Everything a request handler needs.
struct State {
    pool: Pool,
    upstreams: Vec<SocketAddr>,
    /// Forwards requests; pooled keep-alive connections, one pool per worker address.
    client: Client<HttpConnector, Full<Bytes>>,
    /// Health checks get their own client so they never queue behind forwarded requests.
    health_client: Client<HttpConnector, Full<Bytes>>,
    upstream_timeout: Duration,
    /// Where "marked down" / "is up" lines go.
    log: super::DemoLog,
}

/// The running balancer.
pub(super) struct Balancer {
    state: Arc<State>,
    stop: CancellationToken,
    accept: Option<JoinHandle<()>>,
    health: Vec<JoinHandle<()>>,
}

impl Balancer {
    /// Starts serving on `listener`, forwarding to `upstreams` (all down until `wait_ready` or
    /// the health checks find them up). `latency` is the workers' configured delay, added to the
    /// upstream timeout so slow-by-design workers are not counted as failed.
    pub(super) fn start(
        listener: TcpListener,
        upstreams: Vec<SocketAddr>,
        latency: Duration,
        log: super::DemoLog,
    ) -> Balancer {
        let state = Arc::new(State {
            pool: Pool::new(upstreams.len()),
            upstreams,
            client: Client::builder(TokioExecutor::new()).build(connector()),
            health_client: Client::builder(TokioExecutor::new()).build(connector()),
            upstream_timeout: UPSTREAM_TIMEOUT.saturating_add(latency),
            log,
        });
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Balancer {
            state,
            stop,
            accept: Some(accept),
            health: Vec::new(),
        }
    }

    /// Probes every worker not yet up until all have passed a health check, or `timeout` passes;
    /// then the error lists each failing worker with its last error.
    pub(super) async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let n = self.state.upstreams.len();
        let mut last_error: Vec<String> = vec!["not checked yet".into(); n];
        loop {
            for (i, &addr) in self.state.upstreams.iter().enumerate() {
                if self.state.pool.is_up(i) {
                    continue;
                }
                match check(&self.state.health_client, addr, HEALTH_TIMEOUT_MAX).await {
                    Ok(()) => {
                        self.state.pool.mark_up(i);
                    }
                    Err(e) => last_error[i] = e,
                }
            }
            if self.state.pool.all_up() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let failing: Vec<String> = (0..n)
                    .filter(|&i| !self.state.pool.is_up(i))
                    .map(|i| format!("{}: {}", self.state.upstreams[i], last_error[i]))
                    .collect();
                return Err(failing.join("; "));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Starts one active health-check loop per worker.
    pub(super) fn start_health_checks(&mut self, interval: Duration) {
        let interval = interval.max(HEALTH_INTERVAL_MIN);
        for i in 0..self.state.upstreams.len() {
            self.health.push(tokio::spawn(health_loop(
                self.state.clone(),
                i,
                interval,
                self.stop.clone(),
            )));
        }
    }

    /// Stops accepting, closes every connection, stops health checks; returns once the
    /// listening socket is closed (the port is free). Idempotent.
    pub(super) async fn stop(&mut self) {
        self.stop.cancel();
        for task in self.health.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if let Some(accept) = self.accept.take() {
            let abort = accept.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, accept).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Synchronous stop for `Drop`: the tasks end at their next poll.
    pub(super) fn abort(&mut self) {
        self.stop.cancel();
        for task in self.health.drain(..) {
            task.abort();
        }
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A connector for 127.0.0.1 workers: no Nagle delay on small requests, and a bounded connect.
fn connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    // Dropping the set on return aborts every connection task, so stop really stops.
    let mut conns = JoinSet::new();
    let mut backoff = crate::proxy::accept::Backoff::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors and the like: pause, longer each time, rather
                    // than spin (#19); reap meanwhile, since closing connections frees fds.
                    while conns.try_join_next().is_some() {}
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = backoff.pause() => continue,
                    }
                }
            },
        };
        backoff.reset();
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(forward(&state, req).await) }
            });
            // A connection error (client went away, bad request) only ends that connection;
            // hyper answers malformed requests itself.
            // A head that never completes is closed after a minute (#19), idle or not.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(crate::proxy::http::HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        // Reap finished connection tasks so the set does not grow for ever.
        while conns.try_join_next().is_some() {}
    }
}

/// Forwards one request to the next worker up, or answers 4xx/502/503 itself.
///
/// Only a failure of the worker may mark it down: everything the client controls (its body,
/// its request target) is dealt with before a worker is chosen.
async fn forward(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    // Buffered first, so a client that stalls or hangs up mid-body costs a worker nothing.
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        Err(_) => return plain(StatusCode::BAD_REQUEST, "request body unreadable\n"),
    };
    // Origin-form targets pass as they are; `*` (OPTIONS) and anything odd become `/`, since
    // the path is the only part of the target a worker sees.
    let path = parts
        .uri
        .path_and_query()
        .filter(|pq| pq.as_str().starts_with('/'))
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let Some(i) = state.pool.pick() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no demo worker is up\n");
    };
    let upstream = state.upstreams[i];
    // Built from parts, not from a formatted string, so no input can change the authority.
    let uri = Uri::builder()
        .scheme("http")
        .authority(upstream.to_string())
        .path_and_query(path)
        .build();
    let Ok(uri) = uri else {
        return plain(
            StatusCode::BAD_REQUEST,
            "request target cannot be forwarded\n",
        );
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let exchange = async {
        let resp = state
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| describe(&e))?;
        let (parts, body) = resp.into_parts();
        // Buffered, so a worker dying mid-body is still a clean 502, not a truncated 200.
        let bytes = body.collect().await.map_err(|e| describe(&e))?.to_bytes();
        Ok::<_, String>((parts, bytes))
    };
    let failure = match tokio::time::timeout(state.upstream_timeout, exchange).await {
        Ok(Ok((mut parts, bytes))) => {
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, Full::new(bytes));
        }
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {:?}", state.upstream_timeout),
    };
    // Logged on the transition only: one line per incident, not one per failed request.
    if state.pool.mark_down(i) {
        note!(state.log, "worker {upstream} marked down: {failure}");
    }
    plain(StatusCode::BAD_GATEWAY, "demo worker failed\n")
}

/// Consecutive failed health checks that mark a worker down (haproxy's `fall`).
const HEALTH_FALL: u32 = 2;

/// One health-check loop for worker `i`.
async fn health_loop(state: Arc<State>, i: usize, interval: Duration, stop: CancellationToken) {
    let timeout = interval.clamp(HEALTH_TIMEOUT_MIN, HEALTH_TIMEOUT_MAX);
    let addr = state.upstreams[i];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match check(&state.health_client, addr, timeout).await {
            Ok(()) => {
                failures = 0;
                if state.pool.mark_up(i) {
                    note!(state.log, "worker {addr} is up");
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures >= HEALTH_FALL && state.pool.mark_down(i) {
                    note!(state.log, "worker {addr} marked down: health check: {e}");
                }
            }
        }
    }
}

/// `GET /health` on one worker: Ok on a 200 within `timeout`.
async fn check(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let uri = format!("http://{addr}/health")
        .parse::<Uri>()
        .map_err(|e| e.to_string())?;
    let probe = async {
        let resp = client.get(uri).await.map_err(|e| describe(&e))?;
        let status = resp.status();
        // Read the body so the connection can be reused for the next check.
        resp.into_body().collect().await.map_err(|e| describe(&e))?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// including those the `Connection` header names; hyper sets its own framing for each side.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An error with its chain of causes: hyper-util's own message ("client error (Connect)") says
/// little without them.
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(pool: &Pool, n: usize) -> Vec<Option<usize>> {
        (0..n).map(|_| pool.pick()).collect()
    }

    #[test]
    fn all_down_picks_none() {
        let pool = Pool::new(3);
        assert_eq!(picks(&pool, 3), vec![None, None, None]);
        assert!(!pool.all_up());
    }

    #[test]
    fn empty_pool_picks_none() {
        let pool = Pool::new(0);
        assert_eq!(pool.pick(), None);
        assert!(!pool.mark_up(0), "out of range is ignored");
    }

    #[test]
    fn all_up_is_round_robin() {
        let pool = Pool::new(3);
        for i in 0..3 {
            assert!(pool.mark_up(i));
        }
        assert!(pool.all_up());
        let got = picks(&pool, 7);
        let want: Vec<_> = [0, 1, 2, 0, 1, 2, 0].into_iter().map(Some).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn down_worker_is_skipped_and_its_turns_shared_evenly() {
        let pool = Pool::new(3);
        for i in 0..3 {
            pool.mark_up(i);
        }
        assert_eq!(pool.pick(), Some(0));
        assert!(pool.mark_down(1));
        let got = picks(&pool, 6);
        let want: Vec<_> = [2, 0, 2, 0, 2, 0].into_iter().map(Some).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn marked_up_again_rejoins_rotation() {
        let pool = Pool::new(3);
        pool.mark_up(0);
        pool.mark_up(2);
        assert_eq!(picks(&pool, 2), vec![Some(0), Some(2)]);
        assert!(pool.mark_up(1));
        assert_eq!(picks(&pool, 3), vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn mark_reports_transitions_only() {
        let pool = Pool::new(2);
        assert!(pool.mark_up(0));
        assert!(!pool.mark_up(0), "already up");
        assert!(pool.mark_down(0));
        assert!(!pool.mark_down(0), "already down");
        assert!(!pool.mark_down(1), "never up");
        assert!(!pool.is_up(0));
    }

    #[test]
    fn single_worker_down_then_up() {
        let pool = Pool::new(1);
        pool.mark_up(0);
        assert_eq!(picks(&pool, 2), vec![Some(0), Some(0)]);
        pool.mark_down(0);
        assert_eq!(pool.pick(), None);
        pool.mark_up(0);
        assert_eq!(pool.pick(), Some(0));
    }

    #[test]
    fn concurrent_picks_stay_balanced() {
        let pool = Arc::new(Pool::new(4));
        for i in 0..4 {
            pool.mark_up(i);
        }
        let counts: Vec<[usize; 4]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let pool = &pool;
                    s.spawn(move || {
                        let mut c = [0usize; 4];
                        for _ in 0..1000 {
                            if let Some(i) = pool.pick() {
                                c[i] += 1;
                            }
                        }
                        c
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut total = [0usize; 4];
        for c in &counts {
            for (t, x) in total.iter_mut().zip(c) {
                *t += x;
            }
        }
        // Every pick is one step of the same cursor, so 4000 picks over 4 workers is exact.
        assert_eq!(total, [1000; 4]);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::HOST, "example".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-length", "host"]);
    }
}
