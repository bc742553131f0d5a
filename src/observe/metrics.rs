//! The run's figures in Prometheus's text format (version 0.0.4): what `--metrics-addr` serves
//! at `/metrics` while the run lasts and what each Pushgateway push carries. One renderer,
//! [`render`], for both, over [`Live`]: the handles the runner shares with it (the recording,
//! the fault counters), read at the moment of the scrape, so a scrape never waits on the run.
//!
//! Names follow Prometheus's conventions: a `rattle_` prefix, base units (`_seconds`), `_total`
//! on counters, one `outcome` label instead of a series per outcome. The latency histogram has
//! fixed buckets (those of Prometheus's client libraries) so that series from different runs
//! aggregate; its counts come from the run's HdrHistogram (3 significant figures: a latency
//! within 0.1 % of a bucket's bound may fall on either side of it).
//!
//! The server follows the project's rules for listeners: default address 127.0.0.1, a
//! `header_read_timeout`, accept errors paused with [`crate::proxy::accept::Backoff`], and
//! every request passed through [`crate::proxy::api::check`] first, so that a web page cannot
//! read it through the browser (DNS rebinding, cross-site requests).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Outcome, Recording, RunClock};

/// Upper bounds of the latency histogram's buckets, in seconds (Prometheus's defaults).
pub const BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the exposition reads, shared between the runner (which updates the counters) and the
/// server and pushes (which read them).
pub struct Live {
    /// The experiment's name (label `experiment`).
    pub experiment: String,
    /// The run's id (label `run_id`).
    pub run_id: String,
    clock: RunClock,
    recording: Option<Recording>,
    active: AtomicU64,
    injected: AtomicU64,
    reverted: AtomicU64,
    verdict: Mutex<Option<(String, i32)>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("experiment", &self.experiment)
            .field("run_id", &self.run_id)
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The figures of a run: `recording` is `None` when the experiment has no load.
    pub fn new(
        experiment: String,
        run_id: String,
        clock: RunClock,
        recording: Option<Recording>,
    ) -> Self {
        Live {
            experiment,
            run_id,
            clock,
            recording,
            active: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            reverted: AtomicU64::new(0),
            verdict: Mutex::new(None),
        }
    }

    /// A fault was injected; `active` faults hold a state now (the runner's active list:
    /// an instantaneous fault such as a pod kill holds none).
    pub fn injected(&self, active: usize) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        self.active.store(active as u64, Ordering::Relaxed);
    }

    /// A fault was reverted; `active` still hold a state.
    pub fn reverted(&self, active: usize) {
        self.reverted.fetch_add(1, Ordering::Relaxed);
        self.active.store(active as u64, Ordering::Relaxed);
    }

    /// Faults active now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// The run ended with this verdict and exit code (exposed as `rattle_run_verdict`).
    pub fn set_verdict(&self, verdict: &str, exit_code: i32) {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((verdict.to_string(), exit_code));
    }
}

/// The generator's own truth (issue #14), from [`Recording::send_lag`]: the run's send lag
/// (actual send minus intended start) at p50, p99 and max, the count of sends over 10 ms late,
/// and whether rattle is behind its own schedule now (its figures then measure rattle, not
/// the service).
pub fn render_send_lag(o: &mut String, rec: &Recording) {
    let lag = rec.send_lag();
    for (stat, v, what) in [
        ("p50", lag.run.p50_us, "median"),
        ("p99", lag.run.p99_us, "99th percentile"),
        ("max", lag.run.max_us, "maximum"),
    ] {
        if let Some(us) = v {
            let _ = writeln!(
                o,
                "# HELP rattle_send_lag_{stat}_seconds The {what} of how late requests were \
                 sent after their intended start, over the run so far.\n\
                 # TYPE rattle_send_lag_{stat}_seconds gauge\nrattle_send_lag_{stat}_seconds {}",
                num(us as f64 / 1e6)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP rattle_late_sends_total Requests sent more than 10 ms after their intended \
         start.\n# TYPE rattle_late_sends_total counter\nrattle_late_sends_total {}",
        lag.run.over_10ms
    );
    let _ = writeln!(
        o,
        "# HELP rattle_generator_behind 1 while rattle cannot keep its own schedule (the run \
         cannot pass).\n# TYPE rattle_generator_behind gauge\nrattle_generator_behind {}",
        u8::from(lag.behind.now)
    );
}

/// A label value escaped for the text format (backslash, double quote, newline).
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// The exposition of `live` now.
pub fn render(live: &Live) -> String {
    let mut o = String::new();
    let run = format!(
        "experiment=\"{}\",run_id=\"{}\"",
        label_value(&live.experiment),
        label_value(&live.run_id)
    );
    let _ = writeln!(
        o,
        "# HELP rattle_run_info The run these figures belong to (always 1).\n\
         # TYPE rattle_run_info gauge\nrattle_run_info{{{run}}} 1"
    );
    let _ = writeln!(
        o,
        "# HELP rattle_run_start_time_seconds When the run's clock started, Unix time.\n\
         # TYPE rattle_run_start_time_seconds gauge\nrattle_run_start_time_seconds {}",
        num(live.clock.start_unix_ms() as f64 / 1000.0)
    );
    let _ = writeln!(
        o,
        "# HELP rattle_run_elapsed_seconds Time since the run's clock started.\n\
         # TYPE rattle_run_elapsed_seconds gauge\nrattle_run_elapsed_seconds {}",
        num(live.clock.now_us() as f64 / 1e6)
    );
    let _ = writeln!(
        o,
        "# HELP rattle_active_faults Faults injected and not yet reverted.\n\
         # TYPE rattle_active_faults gauge\nrattle_active_faults {}",
        live.active()
    );
    let _ = writeln!(
        o,
        "# HELP rattle_faults_injected_total Faults injected so far.\n\
         # TYPE rattle_faults_injected_total counter\nrattle_faults_injected_total {}",
        live.injected.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "# HELP rattle_faults_reverted_total Faults reverted so far.\n\
         # TYPE rattle_faults_reverted_total counter\nrattle_faults_reverted_total {}",
        live.reverted.load(Ordering::Relaxed)
    );
    if let Some(rec) = &live.recording {
        render_load(&mut o, rec);
    }
    if let Some((verdict, code)) = live
        .verdict
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        let _ = writeln!(
            o,
            "# HELP rattle_run_verdict The run's verdict (1 on the verdict's series).\n\
             # TYPE rattle_run_verdict gauge\nrattle_run_verdict{{verdict=\"{}\"}} 1",
            label_value(&verdict)
        );
        let _ = writeln!(
            o,
            "# HELP rattle_run_exit_code The exit code of the run.\n\
             # TYPE rattle_run_exit_code gauge\nrattle_run_exit_code {code}"
        );
    }
    o
}

fn render_load(o: &mut String, rec: &Recording) {
    let counts = rec.totals();
    let _ = writeln!(
        o,
        "# HELP rattle_requests_total Requests of the load, by how they ended (missed: never \
         sent, the in-flight cap was reached).\n# TYPE rattle_requests_total counter"
    );
    for oc in Outcome::ALL {
        let _ = writeln!(
            o,
            "rattle_requests_total{{outcome=\"{}\"}} {}",
            oc.as_str(),
            counts.get(oc)
        );
    }
    let h = rec.total_latency();
    let _ = writeln!(
        o,
        "# HELP rattle_request_duration_seconds Latency of the requests sent, from each \
         request's intended start.\n# TYPE rattle_request_duration_seconds histogram"
    );
    let mut cumulative = [0u64; BUCKETS_SECONDS.len()];
    let mut sum_us = 0f64;
    for v in h.iter_recorded() {
        let value_us = v.value_iterated_to();
        let n = v.count_at_value();
        sum_us += h.median_equivalent(value_us) as f64 * n as f64;
        let secs = h.median_equivalent(value_us) as f64 / 1e6;
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *le {
                cumulative[i] += n;
            }
        }
    }
    for (le, c) in BUCKETS_SECONDS.iter().zip(cumulative) {
        let _ = writeln!(
            o,
            "rattle_request_duration_seconds_bucket{{le=\"{le}\"}} {c}"
        );
    }
    let _ = writeln!(
        o,
        "rattle_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
         rattle_request_duration_seconds_sum {}\nrattle_request_duration_seconds_count {}",
        h.len(),
        num(sum_us / 1e6),
        h.len()
    );
    render_send_lag(o, rec);
}

/// Binds the metrics listener (before the run touches anything, so a taken address is a clear
/// error and exit 2).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Most connections the `/metrics` server holds at once. A scraper needs one; a flood of
/// connections beyond this is answered 503 and closed at once, so it cannot take the file
/// descriptors the run's own load needs (same process, same limit).
pub const MAX_CONNECTIONS: usize = 32;

/// What a connection over [`MAX_CONNECTIONS`] is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 31\r\nconnection: close\r\n\r\ntoo many connections to rattle\n";

/// Serves `/metrics` on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, live: std::sync::Arc<Live>, cancel: CancellationToken) {
    let mut backoff = crate::proxy::accept::Backoff::new();
    let guard = std::sync::Arc::new(crate::proxy::api::Guard::default());
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = backoff.pause() => continue,
                    }
                }
            },
        };
        backoff.reset();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Never waits: a full socket buffer just loses the message.
            let _ = sock.try_write(BUSY);
            continue;
        };
        let Ok(local) = sock.local_addr() else {
            continue;
        };
        let live = live.clone();
        let guard = guard.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(crate::proxy::api::HEAD_TIMEOUT)
                .max_buf_size(crate::proxy::api::HEAD_MAX)
                .serve_connection(
                    TokioIo::new(sock),
                    service_fn(move |req| {
                        let resp = answer(&live, &guard, local, &req);
                        async move { Ok::<_, Infallible>(resp) }
                    }),
                );
            tokio::select! {
                _ = conn => {}
                _ = c.cancelled() => {}
            }
        });
    }
}

fn answer(
    live: &Live,
    guard: &crate::proxy::api::Guard,
    local: SocketAddr,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if let Err(e) = crate::proxy::api::check(req, local, guard) {
        return plain(StatusCode::FORBIDDEN, format!("{e}\n"));
    }
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the figures are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    let mut r = plain(StatusCode::OK, render(live));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Record;

    /// Sends one GET /metrics on `s` and returns what the first read brings.
    async fn get(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A turned-away connection may be reset under the request: that reads as "".
        if s.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .is_err()
        {
            return String::new();
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_connection_flood_is_turned_away_and_scrapes_go_on() {
        use tokio::io::AsyncReadExt;
        use tokio::net::TcpStream;
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live = std::sync::Arc::new(Live::new(
            "e".into(),
            "r".into(),
            RunClock::start_now(),
            None,
        ));
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, live, cancel.clone()));
        let bounded = std::time::Duration::from_secs(20);
        tokio::time::timeout(bounded, async {
            // Every slot held by a connection the server has answered (so it accepted it).
            let mut held = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = get(&mut s).await;
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                held.push(s);
            }
            // One more is told why and closed, without a request.
            let mut extra = TcpStream::connect(addr).await.unwrap();
            let mut text = String::new();
            extra.read_to_string(&mut text).await.unwrap();
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.ends_with("too many connections to rattle\n"), "{text}");
            // A slot freed is a slot a scraper gets again (the server notices the close on
            // its own time: try until it has).
            drop(held.pop());
            loop {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let head = get(&mut s).await;
                if head.starts_with("HTTP/1.1 200") {
                    break;
                }
                assert!(
                    head.is_empty() || head.starts_with("HTTP/1.1 503"),
                    "{head}"
                );
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("bounded");
        cancel.cancel();
        server.await.unwrap();
    }

    #[test]
    fn histogram_buckets_count_known_latencies() {
        let rec = Recording::new(std::time::Duration::from_secs(1), false);
        // 3 requests at 2 ms, 2 at 40 ms, 1 at 3 s, 1 failed with 5xx at 7 ms.
        let push = |lat_us: u64, outcome| {
            rec.push(Record {
                intended_us: 1_000,
                done_us: 1_000 + lat_us,
                outcome,
                route: 0,
            })
        };
        for _ in 0..3 {
            push(2_000, Outcome::Ok);
        }
        push(40_000, Outcome::Ok);
        push(40_000, Outcome::Ok);
        push(3_000_000, Outcome::Ok);
        push(7_000, Outcome::Status5xx);
        let live = Live::new("x\"y".into(), "r1".into(), RunClock::start_now(), Some(rec));
        live.injected(1);
        let text = render(&live);
        assert!(
            text.contains("rattle_run_info{experiment=\"x\\\"y\",run_id=\"r1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rattle_requests_total{outcome=\"ok\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("rattle_requests_total{outcome=\"status_5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_bucket{le=\"0.01\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_bucket{le=\"0.05\"} 6\n"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_bucket{le=\"2.5\"} 6\n"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_bucket{le=\"5\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("rattle_request_duration_seconds_count 7\n"),
            "{text}"
        );
        assert!(text.contains("rattle_active_faults 1\n"), "{text}");
        live.reverted(0);
        assert!(render(&live).contains("rattle_active_faults 0\n"));
    }
}
