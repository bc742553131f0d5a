//! One proxied TCP connection: two directions, each a reader task stamping chunks with their
//! arrival time and a writer applying the toxics that hold for that direction right now.
//!
//! Why a reader and a writer rather than one loop: latency must be scheduled by deadline
//! (arrival + delay, `sleep_until`), so that a reader keeps reading while earlier chunks wait,
//! and 1 ms timer granularity never adds up across chunks. The writer re-reads the toxic list
//! whenever it changes, even in the middle of a wait: removing a toxic releases bytes already
//! queued, lifts a bandwidth limit and ends a blackhole at once.
//!
//! Backpressure: the reader reads only while the bytes queued between it and the writer are
//! below a [`Budget`] (64 KiB, or a bandwidth toxic's rate times the latency plus the pacing
//! slack, at most 4 MiB: the bandwidth-delay product), so a connection held in a toxic holds
//! that much and no more; the rest waits in the sender's socket, where TCP's flow control slows
//! the sender down as a slow link would.
//!
//! Bandwidth is a token bucket over time: a virtual clock advances by each piece's length over
//! the rate and the writer sends whenever the clock is not ahead of now, so a late timer wake-up
//! or a slow write is caught up on (within [`PACE_SLACK`]) instead of adding to every piece.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use rand::RngExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::toxic::{ActiveToxic, Effect, Stream};

/// The toxic list a proxy publishes to its connections.
pub type Toxics = watch::Receiver<Arc<Vec<ActiveToxic>>>;

/// Read size; also the largest chunk a latency deadline applies to.
const CHUNK: usize = 32 * 1024;
/// Chunks queued between reader and writer of one direction (the bytes are bounded by the
/// [`Budget`]; this only sizes the channel).
const QUEUE: usize = 256;
/// Bytes a direction may hold between its reader and its writer when no bandwidth toxic asks
/// for more: two reads, and TCP's window without scaling. Under a latency toxic alone this
/// bounds a connection's throughput to 64 KiB per latency period, as that window would.
pub const BUFFER_MIN: usize = 64 * 1024;
/// The most a direction may hold, whatever the bandwidth-delay product.
pub const BUFFER_MAX: usize = 4 * 1024 * 1024;
/// How far behind now the bandwidth clock may fall and still be caught up on: a timer that
/// fires late, or a write that blocks briefly, costs no throughput within this slack; beyond
/// it (the receiver stopped reading) the bucket holds no more than this much credit.
pub const PACE_SLACK: Duration = Duration::from_millis(10);
/// The largest piece written at once under a bandwidth toxic, as time at the rate: small
/// enough that a slow rate flows smoothly, large enough to cost few wake-ups.
const PACE_QUANTUM: Duration = Duration::from_millis(5);

/// The bytes queued between the reader and the writer of one direction, and their bound.
struct Budget {
    queued: AtomicUsize,
    limit: AtomicUsize,
    released: Notify,
}

impl Budget {
    fn new() -> Self {
        Self {
            queued: AtomicUsize::new(0),
            limit: AtomicUsize::new(BUFFER_MIN),
            released: Notify::new(),
        }
    }

    /// Room for the reader now (zero: wait for [`Budget::release`]).
    fn room(&self) -> usize {
        self.limit
            .load(Ordering::Acquire)
            .saturating_sub(self.queued.load(Ordering::Acquire))
    }

    /// The writer passed on or dropped `n` queued bytes.
    fn release(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.released.notify_one();
        }
    }

    /// The bound for what applies now: the bandwidth-delay product within
    /// [`BUFFER_MIN`]..=[`BUFFER_MAX`].
    fn set_for(&self, n: &Now) {
        let limit = match n.bandwidth {
            Some(rate) => {
                let (lat, jit) = n.latency.unwrap_or_default();
                let secs = (lat + jit + PACE_SLACK + PACE_QUANTUM).as_secs_f64();
                ((rate as f64 * 1000.0 * secs) as usize).clamp(BUFFER_MIN, BUFFER_MAX)
            }
            None => BUFFER_MIN,
        };
        if self.limit.swap(limit, Ordering::AcqRel) < limit {
            self.released.notify_one();
        }
    }
}

/// How a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source closed; the sink was shut down (half-close passed on).
    Eof,
    /// The connection must close (a toxic, an error, the proxy going away).
    Close,
    /// The connection must be reset (RST).
    Reset,
}

/// Serves one accepted connection until both directions end or `cancel` fires.
pub async fn serve(
    client: TcpStream,
    upstream: TcpStream,
    toxics: Toxics,
    cancel: CancellationToken,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let conn = cancel.child_token();
    let up = direction(
        &mut cr,
        &mut uw,
        Stream::Upstream,
        toxics.clone(),
        conn.clone(),
    );
    let down = direction(&mut ur, &mut cw, Stream::Downstream, toxics, conn.clone());
    let (a, b) = tokio::join!(Gated::new(up), Gated::new(down));
    if a == End::Reset || b == End::Reset {
        for (r, w) in [(cr, cw), (ur, uw)] {
            if let Ok(s) = r.reunite(w) {
                let _ = s.set_zero_linger();
                drop(s);
            }
        }
    }
}

async fn direction(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    stream: Stream,
    mut toxics: Toxics,
    conn: CancellationToken,
) -> End {
    // Fast path while the proxy has no toxic: bytes are copied as they come, with no queue
    // between reader and writer. Nothing is held when it ends, so switching to the toxic path
    // when a toxic appears loses and reorders nothing; a connection never switches back.
    if toxics.borrow_and_update().is_empty() {
        match fast_path(src, dst, &mut toxics, &conn).await {
            Fast::Eof => {
                let _ = dst.shutdown().await;
                return End::Eof;
            }
            Fast::Close => {
                conn.cancel();
                return End::Close;
            }
            Fast::Cancelled => return End::Close,
            Fast::Toxic => {}
        }
    }
    toxic_path(src, dst, stream, toxics, conn).await
}

/// How the fast path ended.
enum Fast {
    /// The source closed.
    Eof,
    /// A read or write failed: the connection must close.
    Close,
    /// The connection was cancelled.
    Cancelled,
    /// A toxic appeared: go on with the toxic path.
    Toxic,
}

/// Wakes the task for a cancellation or a toxic change, and remembers that it did.
///
/// Polling `cancelled()` and `changed()` on every wake-up locked their `Notify`'s waiter list
/// each time: a fifth of the proxy's instructions per request in callgrind, for events that
/// come once in a connection's life. They are polled with this waker instead, and polled again
/// only after it fired.
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A future polled only when its own waker fired, so that a wake-up for one direction of a
/// connection does not poll the other: `join!` polls both on every wake-up, and a read that is
/// not ready re-registers its waker under a lock.
struct Gated<F> {
    fut: Pin<Box<F>>,
    signal: Arc<Signal>,
    waker: Waker,
}

impl<F: Future> Gated<F> {
    fn new(fut: F) -> Self {
        let signal = Arc::new(Signal {
            // Set, so the first poll polls the future.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            fut: Box::pin(fut),
            waker: Waker::from(signal.clone()),
            signal,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.signal.task.register(cx.waker());
        if !this.signal.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// Copies `src` to `dst` until the source ends, an error, the cancellation, or a toxic.
async fn fast_path(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    toxics: &mut Toxics,
    conn: &CancellationToken,
) -> Fast {
    let cancelled = conn.cancelled();
    let changed = toxics.changed();
    tokio::pin!(cancelled, changed);
    let signal = Arc::new(Signal {
        // Set, so the first poll registers both futures.
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let signal_waker = Waker::from(signal.clone());
    let mut buf = vec![0u8; CHUNK].into_boxed_slice();
    // Bytes read and not yet written are `buf[from..to]`.
    let (mut from, mut to) = (0, 0);
    let mut src = Pin::new(src);
    let mut dst = Pin::new(dst);
    std::future::poll_fn(|cx| {
        signal.task.register(cx.waker());
        if signal.fired.swap(false, Ordering::AcqRel) {
            let mut scx = Context::from_waker(&signal_waker);
            if cancelled.as_mut().poll(&mut scx).is_ready() {
                return Poll::Ready(Fast::Cancelled);
            }
            // A toxic is taken up between writes, never with bytes in hand; until then the
            // signal stays set so that this is looked at again.
            if from == to {
                if changed.as_mut().poll(&mut scx).is_ready() {
                    return Poll::Ready(Fast::Toxic);
                }
            } else {
                signal.fired.store(true, Ordering::Release);
            }
        }
        loop {
            if from < to {
                match dst.as_mut().poll_write(cx, &buf[from..to]) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Fast::Close),
                    Poll::Ready(Ok(n)) => from += n,
                }
                if from < to {
                    continue;
                }
                (from, to) = (0, 0);
                if signal.fired.load(Ordering::Acquire) {
                    // A signal came while writing: look at it before reading on.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let mut rb = ReadBuf::new(&mut buf);
            match src.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Fast::Close),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Fast::Eof);
                    }
                    to = n;
                }
            }
        }
    })
    .await
}

async fn toxic_path(
    src: &mut OwnedReadHalf,
    dst: &mut OwnedWriteHalf,
    stream: Stream,
    toxics: Toxics,
    conn: CancellationToken,
) -> End {
    let (tx, rx) = mpsc::channel::<(Bytes, Instant)>(QUEUE);
    let budget = Budget::new();
    let rconn = conn.clone();
    // The reader owns `tx` (moved in), so that the writer sees the end when the reader ends;
    // the budget is shared by reference.
    let rbudget = &budget;
    let reader = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            // Read only with room in the budget: what the toxics hold back stays in the
            // sender's socket, and TCP slows the sender.
            let room = loop {
                let released = rbudget.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let room = rbudget.room();
                if room > 0 {
                    break room;
                }
                tokio::select! {
                    _ = rconn.cancelled() => return,
                    _ = released => {}
                }
            };
            buf.reserve(CHUNK);
            let mut limited = (&mut buf).limit(room.min(CHUNK));
            tokio::select! {
                _ = rconn.cancelled() => return,
                r = src.read_buf(&mut limited) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let now = Instant::now();
                        rbudget.queued.fetch_add(n, Ordering::AcqRel);
                        if tx.send((buf.split().freeze(), now)).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    };
    let writer = async {
        let end = Writer::new(stream, toxics, conn.clone(), &budget)
            .run(rx, dst)
            .await;
        // A close or reset ends both directions, the reader of this one included.
        if end != End::Eof {
            conn.cancel();
        }
        end
    };
    let (_, end) = tokio::join!(reader, writer);
    end
}

/// Sleeps until `deadline` with sub-millisecond precision: tokio's timer fires on the first
/// millisecond tick at or after a deadline (up to 1 ms late, about 0.5 ms on average), so the
/// timer is set 1 ms early and the rest is waited by yielding. The yield loop lasts at most
/// about a millisecond per delayed chunk and only runs under a latency toxic.
async fn sleep_precise(deadline: Instant) {
    let early = deadline
        .checked_sub(Duration::from_millis(1))
        .unwrap_or(deadline);
    tokio::time::sleep_until(early).await;
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// Ends a spell of data waiting to pass: its time and its bytes beyond its starting credit go
/// to the meters of the toxics holding now.
/// The link is busy until the bandwidth clock `due` (the last piece's bytes are due then), if
/// that is later than now.
fn end_spell(busy: &mut Option<(Instant, u64, u64)>, n: &Now, due: Option<Instant>) {
    if let Some((since, credit, bytes)) = busy.take() {
        let end = due.map_or_else(Instant::now, |d| d.max(Instant::now()));
        for p in &n.passed {
            p.busy(end - since, bytes.saturating_sub(credit));
        }
    }
}

/// `at + d`, saturating at a year from now rather than panicking on overflow (#19).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365))
}

/// [`sleep_precise`] when `precise` (a close or reset is due), else tokio's timer alone.
async fn sleep_precise_if(deadline: Instant, precise: bool) {
    if precise {
        sleep_precise(deadline).await
    } else {
        tokio::time::sleep_until(deadline).await
    }
}

/// What applies to this connection and direction now.
#[derive(Default)]
struct Now {
    latency: Option<(Duration, Duration)>,
    bandwidth: Option<u64>,
    slow_close: Option<Duration>,
    /// Blackhole, with its close deadline (`None`: never).
    timeout: Option<Option<Instant>>,
    reset: Option<Instant>,
    slicer: Option<(u64, u64, Duration)>,
    limit: Option<(String, u64)>,
    /// The counters of the toxics that hit this direction (what a report measures).
    passed: Vec<super::share::Passed>,
}

struct Writer<'a> {
    stream: Stream,
    /// The bytes queued by this direction's reader: released as they are written or dropped.
    budget: &'a Budget,
    toxics: Toxics,
    conn: CancellationToken,
    /// Per toxic name: did the toxicity roll hit this connection, and when was it first seen.
    rolls: HashMap<String, (bool, Instant)>,
    /// Per limit_data toxic: bytes passed since it was first seen.
    passed: HashMap<String, u64>,
}

impl<'a> Writer<'a> {
    fn new(stream: Stream, toxics: Toxics, conn: CancellationToken, budget: &'a Budget) -> Self {
        Self {
            stream,
            budget,
            toxics,
            conn,
            rolls: HashMap::new(),
            passed: HashMap::new(),
        }
    }

    fn now(&mut self) -> Now {
        let list = self.toxics.borrow_and_update().clone();
        let mut n = Now::default();
        let t = Instant::now();
        self.rolls
            .retain(|k, _| list.iter().any(|a| &a.toxic.name == k));
        for a in list.iter().filter(|a| a.toxic.stream == self.stream) {
            let (hit, seen) = *self
                .rolls
                .entry(a.toxic.name.clone())
                .or_insert_with(|| (a.connections.pick(f64::from(a.toxic.toxicity)), t));
            if !hit {
                continue;
            }
            n.passed.push(a.passed.clone());
            match &a.effect {
                Effect::Latency { latency, jitter } => n.latency = Some((*latency, *jitter)),
                // 0 is no limit, as in Toxiproxy.
                Effect::Bandwidth { rate } => n.bandwidth = (*rate > 0).then_some(*rate),
                Effect::SlowClose { delay } => n.slow_close = Some(*delay),
                Effect::Timeout { timeout } => {
                    n.timeout = Some((!timeout.is_zero()).then(|| later(seen, *timeout)))
                }
                Effect::ResetPeer { timeout } => n.reset = Some(later(seen, *timeout)),
                Effect::Slicer {
                    average_size,
                    size_variation,
                    delay,
                } => n.slicer = Some((*average_size, *size_variation, *delay)),
                Effect::LimitData { bytes } => n.limit = Some((a.toxic.name.clone(), *bytes)),
            }
        }
        n
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(Bytes, Instant)>,
        dst: &mut OwnedWriteHalf,
    ) -> End {
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut pending: Option<(Bytes, Instant, f64)> = None;
        // The bandwidth clock: when the bytes passed so far are due at the rate (`None` while
        // no bandwidth toxic holds). A token bucket whose credit is at most `PACE_SLACK`.
        let mut due: Option<Instant> = None;
        // The earliest instant of the next slice (slicer's gap).
        let mut next_slice = Instant::now();
        // Since when data has been waiting to pass without a pause (`None`: idle).
        // (since, the bandwidth credit it began with in bytes, bytes passed since).
        let mut busy: Option<(Instant, u64, u64)> = None;
        // The arrival of the last chunk a latency deadline released (counted once).
        let mut released: Option<Instant> = None;
        loop {
            let n = self.now();
            self.budget.set_for(&n);
            let t = Instant::now();
            if n.reset.is_some_and(|d| t >= d) {
                return End::Reset;
            }
            if let Some(Some(d)) = n.timeout
                && t >= d
            {
                return End::Close;
            }
            let wake = n
                .reset
                .into_iter()
                .chain(n.timeout.flatten())
                .min()
                .unwrap_or(far);
            if n.timeout.is_some() {
                // Blackhole: data is dropped while the toxic holds.
                if let Some((d, _, _)) = pending.take() {
                    self.budget.release(d.len());
                }
                tokio::select! {
                    _ = self.conn.cancelled() => return End::Close,
                    r = self.toxics.changed() => if r.is_err() { return End::Close },
                    m = rx.recv() => match m {
                        Some((d, _)) => self.budget.release(d.len()),
                        None => return self.eof(dst, &n).await,
                    },
                    _ = sleep_precise(wake) => {}
                }
                continue;
            }
            let Some((data, arrival, sample)) = pending.take() else {
                // Nothing waits to pass: the connection's busy spell (what the meters' rate
                // while data waited is over) ends here, unless more is already queued.
                if let Ok((d, at)) = rx.try_recv() {
                    let s = rand::rng().random_range(-1.0..=1.0);
                    pending = Some((d, at, s));
                    continue;
                }
                end_spell(&mut busy, &n, due);
                tokio::select! {
                    _ = self.conn.cancelled() => return End::Close,
                    r = self.toxics.changed() => if r.is_err() { return End::Close },
                    m = rx.recv() => match m {
                        Some((d, at)) => {
                            let s = rand::rng().random_range(-1.0..=1.0);
                            pending = Some((d, at, s));
                        }
                        None => return self.eof(dst, &n).await,
                    },
                    _ = sleep_precise(wake) => {}
                }
                continue;
            };
            if busy.is_none() {
                // What the bucket lets through at once now (up to `PACE_SLACK` at the rate).
                let now = Instant::now();
                let credit = match (n.bandwidth, due) {
                    (Some(rate), Some(d)) => {
                        let ahead = now.saturating_duration_since(d).min(PACE_SLACK);
                        (ahead.as_secs_f64() * rate as f64 * 1000.0) as u64
                    }
                    _ => 0,
                };
                busy = Some((now, credit, 0));
            }
            if let Some((lat, jit)) = n.latency {
                let delay = (lat.as_secs_f64() + jit.as_secs_f64() * sample).max(0.0);
                let deadline = later(arrival, Duration::from_secs_f64(delay));
                let now = Instant::now();
                if deadline > now {
                    // Waiting out a delay is not data waiting for the link's rate.
                    end_spell(&mut busy, &n, due);
                    pending = Some((data, arrival, sample));
                    tokio::select! {
                        _ = self.conn.cancelled() => return End::Close,
                        r = self.toxics.changed() => if r.is_err() { return End::Close },
                        _ = sleep_precise(deadline.min(wake)) => {}
                    }
                    continue;
                }
                // Released: how late after its deadline (once per chunk read, not per piece).
                if released != Some(arrival) {
                    released = Some(arrival);
                    for p in &n.passed {
                        p.released(now - deadline);
                    }
                }
            }
            // Bandwidth: the clock starts when the toxic is first seen, is never more than
            // `PACE_SLACK` behind now (no hoarded credit), and a piece goes when it is not ahead.
            let now = Instant::now();
            let bw_start = n.bandwidth.map(|_| {
                let floor = now.checked_sub(PACE_SLACK).unwrap_or(now);
                due.map_or(now, |d| d.max(floor))
            });
            due = bw_start;
            let start = bw_start.unwrap_or(now).max(next_slice);
            if start > now {
                pending = Some((data, arrival, sample));
                tokio::select! {
                    _ = self.conn.cancelled() => return End::Close,
                    r = self.toxics.changed() => if r.is_err() { return End::Close },
                    _ = sleep_precise_if(start.min(wake), start >= wake) => {}
                }
                continue;
            }
            // Pacing by bandwidth and slicer: one piece now, the rest back in `pending`.
            let mut piece = data;
            let mut rest = None;
            let mut gap = None;
            if let Some(rate) = n.bandwidth {
                let max = (rate as f64 * 1000.0 * PACE_QUANTUM.as_secs_f64()).max(1.0) as usize;
                if piece.len() > max {
                    rest = Some(piece.split_off(max));
                }
            }
            if let Some((avg, var, delay)) = n.slicer {
                let size = if var == 0 {
                    avg
                } else {
                    // Never an empty range, whatever the attributes (#19).
                    let (lo, hi) = (avg.saturating_sub(var).max(1), avg.saturating_add(var));
                    rand::rng().random_range(lo..=hi.max(lo))
                }
                .max(1) as usize;
                // A slice short of its size (the end of a read) takes from the chunks already
                // queued, so that sizes hold across read boundaries.
                if rest.is_none() && piece.len() < size {
                    let mut b = BytesMut::from(&piece[..]);
                    while b.len() < size {
                        match rx.try_recv() {
                            Ok((d, _)) => b.extend_from_slice(&d),
                            Err(_) => break,
                        }
                    }
                    piece = b.freeze();
                }
                if piece.len() > size {
                    let tail = piece.split_off(size);
                    rest = Some(match rest {
                        Some(r) => {
                            let mut b = BytesMut::from(&tail[..]);
                            b.extend_from_slice(&r);
                            b.freeze()
                        }
                        None => tail,
                    });
                }
                gap = Some(delay);
            }
            let mut close_after = false;
            if let Some((name, limit)) = &n.limit {
                let passed = self.passed.entry(name.clone()).or_insert(0);
                let left = limit.saturating_sub(*passed) as usize;
                if piece.len() >= left {
                    piece.truncate(left);
                    rest = None;
                    close_after = true;
                }
                *passed += piece.len() as u64;
            }
            if !piece.is_empty() && dst.write_all(&piece).await.is_err() {
                return End::Close;
            }
            self.budget.release(piece.len());
            for p in &n.passed {
                p.add(piece.len());
            }
            if let Some((_, _, b)) = busy.as_mut() {
                *b += piece.len() as u64;
            }
            if close_after {
                return End::Close;
            }
            if let (Some(rate), Some(d)) = (n.bandwidth, due) {
                let bps = rate.saturating_mul(1000).max(1) as f64;
                due = Some(d + Duration::from_secs_f64(piece.len() as f64 / bps));
            }
            if let Some(gap) = gap {
                next_slice = Instant::now() + gap;
            }
            if let Some(r) = rest.filter(|r| !r.is_empty()) {
                pending = Some((r, arrival, sample));
            }
        }
    }

    /// The source ended: pass the half-close on, after slow_close's delay.
    async fn eof(&mut self, dst: &mut OwnedWriteHalf, n: &Now) -> End {
        if let Some(d) = n.slow_close {
            tokio::select! {
                _ = self.conn.cancelled() => return End::Close,
                _ = tokio::time::sleep(d) => {}
            }
        }
        let _ = dst.shutdown().await;
        End::Eof
    }
}
