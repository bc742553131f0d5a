//! The closed model: N connections, each sending its next request as soon as the previous
//! response ended, for throughput tests (`rattle load` without `--rate`).
//!
//! Shaped for one core's worth of CPU per request, like wrk: one OS thread per core, each with
//! its own current-thread tokio runtime, the connections dealt out between them and never moved,
//! so nothing on the hot path crosses threads or takes a lock. Each thread aggregates into one
//! [`Stats`] (an HdrHistogram and counters, no per-request records) merged when the run ends.
//! Plain HTTP/1.1 goes through the minimal [`h1`] connection; TLS and HTTP/2 through one
//! single-connection pooled hyper client per connection ([`client`]).
//!
//! Stopping drops every connection at once: requests in flight at that instant are not counted
//! (as in wrk), so the figures cover exactly the time until the stop.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tokio::sync::oneshot;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{self, HttpSender, classify_error};
use super::h1::{H1Conn, H1Request, status_outcome};
use super::stats::{Progress, Stats};
use super::tls::{ClientOptions, HttpVersion};
use super::{LoadConfig, LoadError, Result};
use crate::metrics::Outcome;

/// Pause after a failed connect before the next attempt, so a refusing target is not hammered
/// in a busy loop (each failure is still counted).
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What a closed-model run does.
#[derive(Debug, Clone)]
pub struct ClosedConfig {
    /// URL, method, headers, body, timeout and accepted statuses (rate, ramp and in-flight cap
    /// are not used).
    pub load: LoadConfig,
    /// Connections, each with one request in flight at a time; at least 1.
    pub connections: usize,
    /// OS threads; at least 1, at most `connections` are used.
    pub threads: usize,
    /// HTTP version and TLS trust.
    pub client: ClientOptions,
}

/// A running closed-model load.
pub struct ClosedHandle {
    progress: Vec<Arc<Progress>>,
    results: Vec<oneshot::Receiver<std::io::Result<Stats>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ClosedHandle {
    /// (completed, failed) requests so far.
    pub fn progress(&self) -> (u64, u64) {
        self.progress
            .iter()
            .map(|p| p.get())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Waits for the threads to stop (cancel the run's token first) and merges their figures.
    pub async fn finish(self) -> Result<Stats> {
        let mut total = Stats::default();
        for rx in self.results {
            match rx.await {
                Ok(Ok(s)) => total.merge(&s),
                Ok(Err(e)) => return Err(LoadError::Thread(e)),
                // A thread that died without a word (a panic) lost its figures, nothing more.
                Err(_) => {}
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        Ok(total)
    }
}

/// How each connection sends.
#[derive(Clone)]
enum Path {
    /// Plain HTTP/1.1 through [`H1Conn`].
    Fast(SocketAddr, Arc<H1Request>),
    /// Anything else through hyper, one client (so one connection) per loop.
    Hyper(Arc<LoadConfig>, ClientOptions),
}

/// Starts `cfg.connections` connections on `cfg.threads` threads; they run until `stop`.
pub async fn start(cfg: ClosedConfig, stop: CancellationToken) -> Result<ClosedHandle> {
    let mut check = cfg.load.clone();
    check.rate_per_sec = 1.0;
    check.ramp = None;
    check.max_in_flight = 1;
    check.validate()?;
    let connections = cfg.connections.max(1);
    let threads = cfg.threads.clamp(1, connections);
    let path = path_for(&cfg).await?;
    // Surface a bad TLS setup or an unbuildable request once, up front.
    if let Path::Hyper(load, opts) = &path {
        HttpSender::with_options(load, opts, 1)?;
    }
    let timeout = cfg.load.timeout;
    let ok: Option<Arc<[u16]>> = cfg.load.ok_status.as_deref().map(Arc::from);
    let mut handle = ClosedHandle {
        progress: Vec::new(),
        results: Vec::new(),
        threads: Vec::new(),
    };
    for t in 0..threads {
        let n = connections / threads + usize::from(t < connections % threads);
        let progress = Arc::new(Progress::default());
        let (tx, rx) = oneshot::channel();
        let (path, ok, stop, p) = (path.clone(), ok.clone(), stop.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name(format!("rattle-load-{t}"))
            .spawn(move || {
                let _ = tx.send(run_thread(n, path, timeout, ok, p, stop));
            })
            .map_err(LoadError::Thread)?;
        handle.progress.push(progress);
        handle.results.push(rx);
        handle.threads.push(thread);
    }
    Ok(handle)
}

async fn path_for(cfg: &ClosedConfig) -> Result<Path> {
    let uri = &cfg.load.url;
    let plain = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"));
    if !plain || cfg.client.version == HttpVersion::Http2 {
        return Ok(Path::Hyper(Arc::new(cfg.load.clone()), cfg.client.clone()));
    }
    let addr = resolve(uri).await?;
    let req = H1Request::new(&cfg.load.method, uri, &cfg.load.headers, &cfg.load.body);
    Ok(Path::Fast(addr, Arc::new(req)))
}

/// The first address of the URL's host (port 80 unless given).
async fn resolve(uri: &Uri) -> Result<SocketAddr> {
    let host = uri.host().unwrap_or_default();
    // `[::1]` in a URL is `::1` to the resolver.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let target = format!("{host}:{port}");
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| LoadError::Resolve {
            host: target.clone(),
            source,
        })?;
    addrs.next().ok_or_else(|| LoadError::Resolve {
        host: target,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
    })
}

/// One thread: its own runtime, `n` connections, until `stop`.
fn run_thread(
    n: usize,
    path: Path,
    timeout: Duration,
    ok: Option<Arc<[u16]>>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> std::io::Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = Rc::new(RefCell::new(Stats::default()));
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let ctx = Ctx {
                timeout,
                ok: ok.clone(),
                stats: stats.clone(),
                progress: progress.clone(),
            };
            match &path {
                Path::Fast(addr, req) => set.spawn_local(h1_loop(*addr, req.clone(), ctx)),
                Path::Hyper(load, opts) => {
                    set.spawn_local(hyper_loop(load.clone(), opts.clone(), ctx))
                }
            };
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => {}
            () = async { while set.join_next().await.is_some() {} } => {}
        }
        // Dropping the set aborts every connection, requests in flight included.
        drop(set);
    });
    let s = std::mem::take(&mut *stats.borrow_mut());
    Ok(s)
}

/// What every connection of a thread shares.
struct Ctx {
    timeout: Duration,
    ok: Option<Arc<[u16]>>,
    stats: Rc<RefCell<Stats>>,
    progress: Arc<Progress>,
}

impl Ctx {
    #[inline]
    fn record(&self, outcome: Outcome, status: Option<u16>, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut s = self.stats.borrow_mut();
        s.record(outcome, us);
        if let Some(code) = status {
            s.add_status(code);
        }
        drop(s);
        self.progress.add(outcome.is_ok());
    }
}

async fn h1_loop(addr: SocketAddr, req: Arc<H1Request>, ctx: Ctx) {
    let mut conn: Option<H1Conn> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let t0 = Instant::now();
                match tokio::time::timeout(ctx.timeout, H1Conn::connect(addr)).await {
                    Ok(Ok(c)) => conn.insert(c),
                    Ok(Err(e)) => {
                        ctx.record(classify_error(&e), None, t0);
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                        continue;
                    }
                    Err(_) => {
                        ctx.record(Outcome::Timeout, None, t0);
                        continue;
                    }
                }
            }
        };
        let reused = c.reused();
        let t0 = Instant::now();
        match tokio::time::timeout(ctx.timeout, c.request(&req)).await {
            Ok(Ok(resp)) => {
                ctx.record(
                    status_outcome(resp.status, ctx.ok.as_deref()),
                    Some(resp.status),
                    t0,
                );
                if resp.close {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                conn = None;
                // A kept-alive connection the server closed while idle: send again on a new
                // one, as any HTTP client does, without counting a failure.
                if reused && e.stale() {
                    continue;
                }
                ctx.record(e.outcome(), None, t0);
            }
            Err(_) => {
                conn = None;
                ctx.record(Outcome::Timeout, None, t0);
            }
        }
    }
}

async fn hyper_loop(load: Arc<LoadConfig>, opts: ClientOptions, ctx: Ctx) {
    // Checked in `start`; should it fail here all the same, this connection sends nothing.
    let Ok(sender) = client::HttpSender::with_options(&load, &opts, 1) else {
        return;
    };
    loop {
        let t0 = Instant::now();
        match tokio::time::timeout(ctx.timeout, sender.send_with_status()).await {
            Ok((outcome, status)) => {
                ctx.record(outcome, status, t0);
                if outcome == Outcome::Refused {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            Err(_) => ctx.record(Outcome::Timeout, None, t0),
        }
    }
}
