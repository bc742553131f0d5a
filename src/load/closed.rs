//! The closed model: N connections, each sending its next request as soon as the previous
//! response ended, for throughput tests (`rattle load` without `--rate`).
//!
//! Shaped for one core's worth of CPU per request, like wrk: one OS thread per core, each with
//! its own current-thread tokio runtime, the connections dealt out between them and never moved,
//! so nothing on the hot path crosses threads or takes a lock. Each thread aggregates into one
//! [`Stats`] (an HdrHistogram and counters, no per-request records) merged when the run ends.
//! Plain HTTP/1.1 goes through the minimal [`h1`] connection; HTTP/2 (`--http2`, h2c or TLS)
//! through [`super::h2`], each connection carrying `streams` requests in flight, one task per
//! stream; TLS without `--http2` through one single-connection pooled hyper client per
//! connection ([`client`]).
//!
//! Stopping drops every connection at once: requests in flight at that instant are not counted
//! (as in wrk), so the figures cover exactly the time until the stop.

use std::cell::{Cell, RefCell};
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
use super::h2::{H2Target, Sent, Unsent};
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
    /// Requests in flight on each connection at once (HTTP/2 streams); at least 1. Only HTTP/2
    /// can carry more than one: HTTP/1.1 connections ignore it.
    pub streams: usize,
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
    /// HTTP/2 through `h2`, this many streams per connection.
    H2(Arc<H2Target>, usize),
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
    if cfg.client.version == HttpVersion::Http2 {
        let addr = if plain {
            Some(resolve(uri).await?)
        } else {
            None
        };
        let target = H2Target::new(&cfg.load, &cfg.client, addr)?;
        return Ok(Path::H2(Arc::new(target), cfg.streams.max(1)));
    }
    if !plain {
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
                Path::H2(target, streams) => {
                    set.spawn_local(h2_loop(target.clone(), *streams, ctx))
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
#[derive(Clone)]
struct Ctx {
    timeout: Duration,
    ok: Option<Arc<[u16]>>,
    stats: Rc<RefCell<Stats>>,
    progress: Arc<Progress>,
}

impl Ctx {
    /// Records a request that started at `since` and ended now.
    #[inline]
    fn record(&self, outcome: Outcome, status: Option<u16>, since: Instant) {
        self.record_until(outcome, status, since, Instant::now());
    }

    /// Records a request that started at `since` and ended at `end`.
    #[inline]
    fn record_until(&self, outcome: Outcome, status: Option<u16>, since: Instant, end: Instant) {
        let us =
            u64::try_from(end.saturating_duration_since(since).as_micros()).unwrap_or(u64::MAX);
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
    // The connection's one timer for the per-request timeout (see `within`).
    let timer = tokio::time::sleep(ctx.timeout);
    tokio::pin!(timer);
    // When the last response ended, if the next request follows it at once: that instant is
    // the next request's start, which saves a clock read per request.
    let mut ended: Option<Instant> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                ended = None;
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
        let t0 = ended.take().unwrap_or_else(Instant::now);
        match within(timer.as_mut(), t0 + ctx.timeout, c.request(&req)).await {
            Some(Ok(resp)) => {
                let end = Instant::now();
                ctx.record_until(
                    status_outcome(resp.status, ctx.ok.as_deref()),
                    Some(resp.status),
                    t0,
                    end,
                );
                if resp.close {
                    conn = None;
                } else {
                    ended = Some(end);
                }
            }
            Some(Err(e)) => {
                conn = None;
                // A kept-alive connection the server closed while idle: send again on a new
                // one, as any HTTP client does, without counting a failure.
                if reused && e.stale() {
                    continue;
                }
                ctx.record(e.outcome(), None, t0);
            }
            None => {
                conn = None;
                ctx.record(Outcome::Timeout, None, t0);
            }
        }
    }
}

/// Runs `fut` until `deadline`: `None` if the deadline came first.
///
/// `tokio::time::timeout` per request puts a timer in the wheel and takes it out again for
/// every request, a sixth of this loop's instructions (callgrind). Deadlines of one connection
/// only move forward, so its one `timer` is left where it is and moved on only when it fires
/// before the current request's deadline: a timer operation per timeout period instead of per
/// request, with the same exact deadline.
async fn within<F: std::future::Future>(
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    use std::future::Future as _;
    use std::task::Poll;
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if timer.deadline() >= deadline => return Poll::Ready(None),
                // An earlier request's deadline: move on to this one's and wait again.
                Poll::Ready(()) => timer.as_mut().reset(deadline),
            }
        }
    })
    .await
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

/// One HTTP/2 connection: connects, runs `streams` stream loops on it until it breaks (or closes
/// after a GOAWAY), and connects again.
async fn h2_loop(target: Arc<H2Target>, streams: usize, ctx: Ctx) {
    loop {
        let t0 = Instant::now();
        let conn = match tokio::time::timeout(ctx.timeout, target.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                ctx.record(e.outcome(), None, t0);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(_) => {
                ctx.record(Outcome::Timeout, None, t0);
                continue;
            }
        };
        let answered = Rc::new(Cell::new(0u64));
        let mut set = JoinSet::new();
        for _ in 0..streams {
            let stream = h2_stream(
                conn.send.clone(),
                target.clone(),
                ctx.clone(),
                answered.clone(),
            );
            set.spawn_local(stream);
        }
        while set.join_next().await.is_some() {}
        drop(conn);
        // A server that accepts and then closes at once must not be hammered in a busy loop.
        if answered.get() == 0 {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

/// One stream slot of an HTTP/2 connection: a request at a time, the next as soon as the
/// previous response ended, until the connection breaks or closes.
async fn h2_stream(
    mut send: h2::client::SendRequest<bytes::Bytes>,
    target: Arc<H2Target>,
    ctx: Ctx,
    answered: Rc<Cell<u64>>,
) {
    // One timer per stream slot for the per-request timeout (see `within`).
    let timer = tokio::time::sleep(ctx.timeout);
    tokio::pin!(timer);
    let mut ended: Option<Instant> = None;
    loop {
        let t0 = ended.take().unwrap_or_else(Instant::now);
        match within(timer.as_mut(), t0 + ctx.timeout, target.send(&mut send)).await {
            Some(Ok(Sent::Done(outcome, status))) => {
                let end = Instant::now();
                ctx.record_until(outcome, Some(status), t0, end);
                answered.set(answered.get() + 1);
                ended = Some(end);
            }
            Some(Ok(Sent::Failed(e, status))) => {
                if e.never_processed() && answered.get() > 0 {
                    return;
                }
                ctx.record(e.outcome(), status, t0);
                if !e.stream_only() {
                    return;
                }
            }
            // Nothing was sent: the connection is closing (a GOAWAY after the server's
            // request limit, as nginx sends every 1000 requests) or broken. On a connection that
            // served, the request goes again on a new one without counting a failure, as any
            // client does; on one that never answered, it is the failure.
            Some(Err(Unsent(e))) => {
                if answered.get() == 0 {
                    ctx.record(e.outcome(), None, t0);
                }
                return;
            }
            // Dropping the request reset its stream; the connection goes on.
            None => ctx.record(Outcome::Timeout, None, t0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Method;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn within_moves_a_stale_timer_on_and_fires_at_the_deadline() {
        let timer = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(timer);
        let start = Instant::now();
        // Done before its deadline.
        let quick = within(timer.as_mut(), start + Duration::from_millis(100), async {
            7
        });
        assert_eq!(quick.await, Some(7));
        // A later request: the timer fires at the first deadline, is moved on, and the request
        // times out at its own deadline, not before.
        tokio::time::advance(Duration::from_millis(50)).await;
        let deadline = Instant::now() + Duration::from_millis(100);
        let stuck = within(timer.as_mut(), deadline, std::future::pending::<()>());
        assert_eq!(stuck.await, None);
        assert_eq!(Instant::now(), deadline);
        // A timer set later than a deadline (not in the loop, but allowed) is brought forward.
        let deadline = Instant::now() + Duration::from_millis(10);
        timer.as_mut().reset(deadline + Duration::from_secs(60));
        assert_eq!(
            within(timer.as_mut(), deadline, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(Instant::now(), deadline);
    }

    /// A server that answers `answered` requests on its one connection, then goes silent.
    async fn answers_then_hangs(answered: usize) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut first = true;
            while let Ok((mut s, _)) = l.accept().await {
                let n = if first { answered } else { 0 };
                first = false;
                let mut buf = [0u8; 1024];
                for _ in 0..n {
                    if s.read(&mut buf).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        break;
                    }
                }
                held.push(s);
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_counts_as_a_timeout() {
        let addr = answers_then_hangs(3).await;
        let load = LoadConfig {
            url: format!("http://{addr}/")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            rate_per_sec: 1.0,
            ramp: None,
            // Long enough that an answered request never times out on a busy machine (issue
            // #21); the hung ones still do, and the test waits for two of them.
            timeout: Duration::from_secs(1),
            max_in_flight: 1,
            ok_status: None,
            mix: Vec::new(),
            seed: 0,
        };
        let cfg = ClosedConfig {
            load,
            connections: 1,
            threads: 1,
            streams: 1,
            client: ClientOptions::default(),
        };
        let stop = CancellationToken::new();
        let handle = start(cfg, stop.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Three answers, then a timeout; later connections get no answer either.
        let t0 = std::time::Instant::now();
        while handle.progress().1 < 2 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let stats = handle.finish().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats.counts.get(Outcome::Ok), 3);
        assert!(
            stats.counts.get(Outcome::Timeout) >= 2,
            "{:?}",
            stats.counts
        );
        assert_eq!(stats.counts.total(), 3 + stats.counts.get(Outcome::Timeout));
        assert_eq!(stats.statuses, vec![(200, 3)]);
        assert_eq!(stats.latency.len(), stats.counts.total());
        // A timed-out request's latency is at least the timeout.
        assert!(stats.latency.max() >= 1_000_000, "{}", stats.latency.max());
    }
}
