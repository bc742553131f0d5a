//! The open-model HTTP load generator: requests at a set arrival rate, each recorded with the
//! instant the schedule meant it to start.
//!
//! Shaped around one rule: the numbers must not flatter a struggling target. Arrivals follow
//! [`schedule`], not the server's pace, and latency runs from the intended start, so a stall shows
//! in the percentiles (no coordinated omission). Memory is bounded by a semaphore of
//! `max_in_flight` permits rather than a queue: tickets are arithmetic, and a ticket that cannot
//! get a permit before its own timeout has passed is recorded as [`Outcome::Missed`] without being
//! sent, so a saturated target shows as missed requests instead of a silently lower rate.
//!
//! One scheduler task walks the tickets in order, sleeping to each one's time, issuing due ones
//! back to back when behind. Each request is its own task holding a permit; it pushes exactly one
//! [`Record`] before giving the permit back, which is how [`LoadHandle::finish`] knows every
//! request is recorded: it takes all the permits. The scheduler is generic over the request
//! future so pacing is tested on a paused clock without sockets ([`client`] does the HTTP).

pub mod client;
pub mod closed;
mod cpu;
pub mod h1;
mod h2;
pub mod mix;
pub mod schedule;
pub mod stats;
pub mod tls;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::metrics::{Outcome, Record, Recording, RunClock};
use schedule::{Schedule, ScheduleError};
use stats::StatusCounts;
pub use tls::{ClientOptions, HttpVersion, TlsError};

/// The highest accepted rate. Past this the scheduler would spend its time on arithmetic for
/// tickets no single machine could send, and a backlog of missed tickets would grow too fast.
pub const MAX_RATE_PER_SEC: f64 = 10_000_000.0;

/// The highest accepted in-flight cap: plenty for one machine, and it fits the semaphore's
/// `u32` bulk acquire that [`LoadHandle::finish`] relies on.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// Why the load generator cannot start.
#[derive(thiserror::Error, Debug)]
pub enum LoadError {
    /// The rate is not a finite positive number.
    #[error("invalid load rate")]
    Schedule(#[from] ScheduleError),
    /// The rate is above [`MAX_RATE_PER_SEC`].
    #[error("rate {rate}/s is above the maximum of {max}/s")]
    RateTooHigh {
        /// The rejected rate, requests per second.
        rate: f64,
        /// The maximum, requests per second.
        max: f64,
    },
    /// `max_in_flight` is 0 or above [`MAX_IN_FLIGHT`].
    #[error("max in-flight requests must be between 1 and {max}, got {value}")]
    InvalidMaxInFlight {
        /// The rejected value.
        value: usize,
        /// The maximum.
        max: usize,
    },
    /// The request mix cannot be sent as given.
    #[error("invalid request mix: {0}")]
    InvalidMix(String),
    /// The per-request timeout is zero, so no request could ever succeed.
    #[error("the per-request timeout must be above zero")]
    ZeroTimeout,
    /// An accepted status is outside 100..=999, so it could never match a response.
    #[error("accepted status {status} is not an HTTP status code (100..=999)")]
    InvalidOkStatus {
        /// The rejected status.
        status: u16,
    },
    /// The URL lacks a scheme or a host, or has a scheme that is not HTTP at all.
    #[error("invalid load URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS configuration (trusted roots) cannot be built.
    #[error("TLS setup failed")]
    Tls(#[from] TlsError),
    /// The target's host name does not resolve to any address.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host and port looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// A closed-model worker thread or its runtime could not be started.
    #[error("cannot start a load thread")]
    Thread(#[source] std::io::Error),
    /// The method, URL, headers and body do not make a valid HTTP request.
    #[error("cannot build the load request")]
    InvalidRequest {
        /// What `http` rejected.
        #[source]
        source: http::Error,
    },
    /// [`start`] was called outside a tokio runtime, so there is nowhere to run requests.
    #[error("the load generator must be started inside a tokio runtime")]
    NoRuntime {
        /// tokio's explanation.
        #[source]
        source: tokio::runtime::TryCurrentError,
    },
}

/// Results of this module.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// What to send, how often, and what counts as success. Its `Debug` shows header names but not
/// their values, and the URL without `user:password@`: either may hold credentials.
#[derive(Clone)]
pub struct LoadConfig {
    /// Target URL, `http://` or `https://`.
    pub url: Uri,
    /// Request method.
    pub method: Method,
    /// Extra request headers, in order; repeated names are all sent.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body, sent with every request.
    pub body: Bytes,
    /// Arrival rate at full speed, requests per second; finite and above 0.
    pub rate_per_sec: f64,
    /// Linear ramp of the rate from 0 to `rate_per_sec` over this time; `None` starts at full rate.
    pub ramp: Option<Duration>,
    /// Per-request timeout, covering connect, response and the whole body.
    pub timeout: Duration,
    /// Most requests in flight at once; at least 1.
    pub max_in_flight: usize,
    /// Statuses counted as `Ok`; `None` means 200..=399.
    pub ok_status: Option<Vec<u16>>,
    /// A mix of named requests, each ticket sending one of them ([`mix::Mix`]); empty, every
    /// ticket sends the request above. Each record carries its request's index (its route).
    pub mix: Vec<MixRequest>,
    /// Seed of the mix's order.
    pub seed: u64,
}

/// One request of a mix: what it sends, how long it may take, what counts as success, and its
/// weight among the others.
#[derive(Clone)]
pub struct MixRequest {
    /// Name in reports.
    pub name: String,
    /// Relative share of the section's rate; finite and above 0.
    pub weight: f64,
    /// Target URL, `http://` or `https://`.
    pub url: Uri,
    /// Method.
    pub method: Method,
    /// Headers, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
    /// Its own timeout (a ticket that cannot get an in-flight slot within the section's
    /// `timeout` is missed whatever this says).
    pub timeout: Duration,
    /// Statuses counted as `Ok`; `None` means 200..=399.
    pub ok_status: Option<Vec<u16>>,
}

impl LoadConfig {
    /// The single request of route `route`: the section's own when there is no mix.
    pub fn route(&self, route: usize) -> LoadConfig {
        match self.mix.get(route) {
            None => self.clone(),
            Some(m) => LoadConfig {
                url: m.url.clone(),
                method: m.method.clone(),
                headers: m.headers.clone(),
                body: m.body.clone(),
                timeout: m.timeout,
                ok_status: m.ok_status.clone(),
                mix: Vec::new(),
                ..self.clone()
            },
        }
    }

    /// Every route's single request (one when there is no mix).
    pub fn routes(&self) -> Vec<LoadConfig> {
        if self.mix.is_empty() {
            vec![self.clone()]
        } else {
            (0..self.mix.len()).map(|r| self.route(r)).collect()
        }
    }
}

impl std::fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("LoadConfig")
            .field("url", &redacted(&self.url))
            .field("method", &self.method)
            .field("headers", &header_names)
            .field("body_len", &self.body.len())
            .field("rate_per_sec", &self.rate_per_sec)
            .field("ramp", &self.ramp)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("ok_status", &self.ok_status)
            .field(
                "mix",
                &self
                    .mix
                    .iter()
                    .map(|m| (&m.name, m.weight))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LoadConfig {
    /// Checks everything that can be checked before any traffic, so a bad spec fails up front.
    pub fn validate(&self) -> Result<()> {
        Schedule::new(self.rate_per_sec, self.ramp)?;
        if self.rate_per_sec > MAX_RATE_PER_SEC {
            return Err(LoadError::RateTooHigh {
                rate: self.rate_per_sec,
                max: MAX_RATE_PER_SEC,
            });
        }
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(LoadError::InvalidMaxInFlight {
                value: self.max_in_flight,
                max: MAX_IN_FLIGHT,
            });
        }
        if self.timeout.is_zero() {
            return Err(LoadError::ZeroTimeout);
        }
        if let Some(&status) = self
            .ok_status
            .iter()
            .flatten()
            .find(|s| !(100..=999).contains(*s))
        {
            return Err(LoadError::InvalidOkStatus { status });
        }
        let url_err = |reason| LoadError::InvalidUrl {
            url: redacted(&self.url),
            reason,
        };
        match self.url.scheme_str() {
            None => return Err(url_err("no scheme (expected http:// or https://)")),
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
            Some(_) => return Err(url_err("the scheme is neither http nor https")),
        }
        if self.url.host().is_none_or(str::is_empty) {
            return Err(url_err("no host"));
        }
        if self.mix.len() > mix::MAX_ROUTES {
            return Err(LoadError::InvalidMix(format!(
                "{} requests, at most {} allowed",
                self.mix.len(),
                mix::MAX_ROUTES
            )));
        }
        for (i, m) in self.mix.iter().enumerate() {
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(LoadError::InvalidMix(format!(
                    "request {:?}: weight must be a number above 0, got {}",
                    m.name, m.weight
                )));
            }
            self.route(i).validate()?;
        }
        if self.mix.len() > 1 {
            let weights: Vec<f64> = self.mix.iter().map(|m| m.weight).collect();
            if mix::Mix::new(&weights, 0).is_none() {
                return Err(LoadError::InvalidMix(
                    "the weights do not add up to a finite number".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `uri` for messages, without any `user:password@` part.
pub(crate) fn redacted(uri: &Uri) -> String {
    let s = uri.to_string();
    match uri.authority().map(|a| a.as_str()) {
        Some(auth) if auth.contains('@') => {
            let host = auth.rsplit('@').next().unwrap_or_default();
            s.replacen(auth, &format!("***@{host}"), 1)
        }
        _ => s,
    }
}

/// The share of the in-flight permits (numerator, denominator) that requests launched but not
/// yet run must hold for a permit wait to count as rattle's own lag ([`Pacer::backlogged`]).
/// A flooded runtime holds a quarter to a third of a 20,000 cap this way; a healthy one, the
/// one request it just launched.
const BACKLOG_SHARE: (u64, u64) = (1, 10);

/// A request sent this long after its intended start counts as [`LoadSummary::late`]. Well above
/// the timer's 1 ms resolution, so only a real backlog (a stalled target holding every permit)
/// shows, not ordinary pacing jitter.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// Totals of one run of the generator. `scheduled == sent + missed + unsent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSummary {
    /// Tickets whose time came: each was sent, missed, or left unsent when the load stopped.
    pub scheduled: u64,
    /// Requests actually sent (each recorded with its outcome).
    pub sent: u64,
    /// Tickets recorded as [`Outcome::Missed`], never sent.
    pub missed: u64,
    /// Of `sent`, those sent more than [`LATE_AFTER`] after their intended start: the sends a
    /// closed-loop tool would have silently skipped. Their latency still runs from the intended
    /// start.
    pub late: u64,
    /// Tickets that were due when the load stopped, not sent and with time left before their
    /// timeout: the run ended under them. Neither sent nor missed, and never recorded as a
    /// request (so they cannot pile up in the last window).
    pub unsent: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    missed: AtomicU64,
    late: AtomicU64,
    unsent: AtomicU64,
    /// Of `sent`, those whose task has run (the request actually went out).
    started: AtomicU64,
}

impl Counters {
    fn summary(&self) -> LoadSummary {
        let sent = self.sent.load(Ordering::Relaxed);
        let missed = self.missed.load(Ordering::Relaxed);
        let unsent = self.unsent.load(Ordering::Relaxed);
        LoadSummary {
            scheduled: sent + missed + unsent,
            sent,
            missed,
            late: self.late.load(Ordering::Relaxed),
            unsent,
        }
    }
}

/// Where the open model puts each request's [`Record`]: the experiment's [`Recording`] (which
/// keeps them for recovery analysis) or a flat aggregate ([`stats::FlatSink`]) for `rattle load`.
pub trait RecordSink: Clone + Send + Sync + 'static {
    /// Records one request.
    fn push(&self, rec: Record);
    /// Records many at once.
    fn push_all(&self, recs: &[Record]);
    /// Notes the send of the request due at `intended_us`, at `sent_us` (when its task first
    /// ran); `ready_us` is when it could go at the earliest (its intended start, or the
    /// instant an in-flight permit freed up). Called before the request's [`RecordSink::push`].
    fn sent(&self, intended_us: u64, ready_us: u64, sent_us: u64);
    /// Counts `n` tickets left unsent because the load stopped (see [`LoadSummary::unsent`]).
    fn unsent(&self, n: u64);
    /// From `from_us` to `to_us`, the busiest of rattle's runtime workers was running or
    /// waiting to run `busy` of the time (0 to 1; Linux only).
    fn cpu_busy(&self, from_us: u64, to_us: u64, busy: f64);
    /// At `at_us`, a task of the load's runtime woke `lag_us` later than its timer asked: the
    /// runtime's own queueing.
    fn runtime_lag(&self, at_us: u64, lag_us: u64);
}

impl RecordSink for Recording {
    fn push(&self, rec: Record) {
        Recording::push(self, rec);
    }
    fn push_all(&self, recs: &[Record]) {
        Recording::push_all(self, recs);
    }
    fn sent(&self, intended_us: u64, ready_us: u64, sent_us: u64) {
        Recording::sent(self, intended_us, ready_us, sent_us);
    }
    fn unsent(&self, n: u64) {
        Recording::add_unsent(self, n);
    }
    fn cpu_busy(&self, from_us: u64, to_us: u64, busy: f64) {
        Recording::cpu_busy(self, from_us, to_us, busy);
    }
    fn runtime_lag(&self, at_us: u64, lag_us: u64) {
        Recording::runtime_lag(self, at_us, lag_us);
    }
}

/// A running load generator. Dropping it stops scheduling (requests in flight still finish and
/// are recorded); [`LoadHandle::finish`] also waits for them and returns the totals.
pub struct LoadHandle {
    scheduler: JoinHandle<()>,
    in_flight: Arc<Semaphore>,
    permits: u32,
    counters: Arc<Counters>,
    _stop_on_drop: DropGuard,
}

impl LoadHandle {
    /// Waits for the scheduler to stop (after `stop` was cancelled) and for requests in flight to
    /// finish (each bounded by the timeout), then returns totals. By then every scheduled ticket
    /// is in the `Recording`.
    pub async fn finish(self) -> LoadSummary {
        // A scheduler that panicked has stopped issuing all the same; what it issued is counted.
        let _ = self.scheduler.await;
        // Each request task gives its permit back only after pushing its record, so holding all
        // permits means all records are in. The semaphore is never closed, so this cannot fail.
        let _ = self.in_flight.acquire_many(self.permits).await;
        self.counters.summary()
    }

    /// Totals so far (the run may still be going).
    pub fn progress(&self) -> LoadSummary {
        self.counters.summary()
    }
}

/// Starts generating at once; the schedule's t=0 is `start_us` on the clock (intended start of
/// request k is `start_us + offset_k`). Requests stop being scheduled when `stop` is cancelled.
///
/// `start_us` should be about now: tickets due before now are sent back to back as if the
/// generator were behind schedule. Must be called inside a tokio runtime.
///
/// One engine: plain `http://` goes through the same minimal HTTP/1.1 client as `rattle load`
/// (about half the CPU per request of hyper's pooled client), `https://` through hyper.
pub fn start(
    cfg: LoadConfig,
    clock: RunClock,
    start_us: u64,
    recording: Recording,
    stop: CancellationToken,
) -> Result<LoadHandle> {
    start_with(
        cfg,
        &ClientOptions {
            minimal_h1: true,
            ..ClientOptions::default()
        },
        None,
        clock,
        start_us,
        recording,
        stop,
    )
}

/// [`start`] with client options (HTTP version, TLS trust), optional status-code counts, and any
/// [`RecordSink`]: how `rattle load --rate` runs the open model with flat memory.
pub fn start_with<K: RecordSink>(
    cfg: LoadConfig,
    opts: &ClientOptions,
    statuses: Option<Arc<StatusCounts>>,
    clock: RunClock,
    start_us: u64,
    sink: K,
    stop: CancellationToken,
) -> Result<LoadHandle> {
    cfg.validate()?;
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|source| LoadError::NoRuntime { source })?;
    let routes = cfg.routes();
    let plain = routes.iter().all(|r| {
        r.url
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    });
    let pacer = Pacer::new(&cfg, clock, start_us, sink.clone(), stop)?;
    let handle = pacer.handle_parts();
    runtime.spawn(cpu::watch(clock, sink.clone(), pacer.stop.clone()));
    runtime.spawn(cpu::stalls(clock, sink, pacer.stop.clone()));
    let scheduler = if opts.minimal_h1 && plain && opts.version != HttpVersion::Http2 {
        let first = h1::H1PoolSender::new(&routes[0], statuses)?;
        if routes.len() == 1 {
            runtime.spawn(pacer.run(move |_| first.send()))
        } else {
            let senders: Vec<h1::H1PoolSender> =
                routes.iter().map(|r| first.for_route(r)).collect();
            runtime.spawn(pacer.run(move |r: u16| senders[usize::from(r)].send()))
        }
    } else {
        let first = client::HttpSender::with_options(&routes[0], opts, cfg.max_in_flight)?
            .count_statuses(statuses);
        if routes.len() == 1 {
            runtime.spawn(pacer.run(move |_| first.send()))
        } else {
            let senders = routes
                .iter()
                .map(|r| first.for_route(r))
                .collect::<Result<Vec<_>>>()?;
            runtime.spawn(pacer.run(move |r: u16| senders[usize::from(r)].send()))
        }
    };
    Ok(handle.into_handle(scheduler))
}

/// The parts of a [`LoadHandle`] known before the scheduler task exists.
struct HandleParts {
    in_flight: Arc<Semaphore>,
    permits: u32,
    counters: Arc<Counters>,
    stop_on_drop: DropGuard,
}

impl HandleParts {
    fn into_handle(self, scheduler: JoinHandle<()>) -> LoadHandle {
        LoadHandle {
            scheduler,
            in_flight: self.in_flight,
            permits: self.permits,
            counters: self.counters,
            _stop_on_drop: self.stop_on_drop,
        }
    }
}

/// Missed records are pushed in chunks of this many: one lock per chunk, bounded scratch memory.
const MISSED_CHUNK: usize = 4096;

/// The scheduler: walks tickets in order and turns each into a request task or a missed record.
struct Pacer<K> {
    schedule: Schedule,
    clock: RunClock,
    start_us: u64,
    timeout: Duration,
    timeout_us: u64,
    recording: K,
    in_flight: Arc<Semaphore>,
    permits: u32,
    counters: Arc<Counters>,
    stop: CancellationToken,
    /// Which request each ticket sends; `None`: route 0 always.
    mix: Option<mix::Mix>,
    /// Each route's own timeout.
    timeouts: Vec<Duration>,
}

impl<K: RecordSink> Pacer<K> {
    fn new(
        cfg: &LoadConfig,
        clock: RunClock,
        start_us: u64,
        recording: K,
        stop: CancellationToken,
    ) -> Result<Self> {
        let permits =
            u32::try_from(cfg.max_in_flight).map_err(|_| LoadError::InvalidMaxInFlight {
                value: cfg.max_in_flight,
                max: MAX_IN_FLIGHT,
            })?;
        Ok(Self {
            schedule: Schedule::new(cfg.rate_per_sec, cfg.ramp)?,
            clock,
            start_us,
            timeout: cfg.timeout,
            timeout_us: u64::try_from(cfg.timeout.as_micros()).unwrap_or(u64::MAX),
            recording,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            permits,
            counters: Arc::new(Counters::default()),
            // A child, so dropping the handle can stop this generator without cancelling the
            // caller's token.
            stop: stop.child_token(),
            mix: mix::Mix::new(
                &cfg.mix.iter().map(|m| m.weight).collect::<Vec<_>>(),
                cfg.seed,
            ),
            timeouts: cfg.routes().iter().map(|r| r.timeout).collect(),
        })
    }

    fn handle_parts(&self) -> HandleParts {
        HandleParts {
            in_flight: self.in_flight.clone(),
            permits: self.permits,
            counters: self.counters.clone(),
            stop_on_drop: self.stop.clone().drop_guard(),
        }
    }

    fn intended_us(&self, k: u64) -> u64 {
        self.start_us.saturating_add(self.schedule.offset_us(k))
    }

    /// Index one past the last ticket whose intended start is at or before `t_us`.
    fn due_end(&self, t_us: u64) -> u64 {
        match t_us.checked_sub(self.start_us) {
            Some(rel) => self.schedule.due_by(rel),
            None => 0,
        }
    }

    /// Index one past the last ticket whose timeout has run out by `now_us` (intended + timeout
    /// strictly before now), but at least `next + 1`: callers have checked that `next` has.
    fn expired_end(&self, next: u64, now_us: u64) -> u64 {
        let end = match now_us
            .checked_sub(self.timeout_us)
            .and_then(|t| t.checked_sub(1))
        {
            Some(t) => self.due_end(t),
            None => 0,
        };
        end.max(next.saturating_add(1))
    }

    /// True when the in-flight permits are held in good part by requests rattle launched but
    /// has not yet run: at least [`BACKLOG_SHARE`] of them (and two or more). Then a wait for a
    /// permit is rattle's own doing (its runtime's queue), not the target's, and counts in its
    /// own lag. A healthy generator has at most the request it just launched waiting to run.
    fn backlogged(&self) -> bool {
        let launched = self.counters.sent.load(Ordering::Relaxed);
        let started = self.counters.started.load(Ordering::Relaxed);
        let waiting = launched.saturating_sub(started);
        waiting >= 2
            && waiting.saturating_mul(BACKLOG_SHARE.1) >= u64::from(self.permits) * BACKLOG_SHARE.0
    }

    /// The request ticket `k` sends.
    fn route_of(&self, k: u64) -> u16 {
        self.mix.as_ref().map_or(0, |m| m.route(k))
    }

    fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Records tickets `range` as missed, given up at `give_up_us` at the latest: a ticket is
    /// abandoned when its timeout ran out, or at `give_up_us` if the run ended first.
    fn record_missed(&self, range: Range<u64>, give_up_us: u64) {
        let n = range.end.saturating_sub(range.start);
        let mut buf =
            Vec::with_capacity(usize::try_from(n).unwrap_or(MISSED_CHUNK).min(MISSED_CHUNK));
        for k in range {
            let intended_us = self.intended_us(k);
            buf.push(Record {
                intended_us,
                done_us: intended_us.saturating_add(self.timeout_us).min(give_up_us),
                outcome: Outcome::Missed,
                route: self.route_of(k),
            });
            if buf.len() == MISSED_CHUNK {
                self.recording.push_all(&buf);
                buf.clear();
            }
        }
        self.recording.push_all(&buf);
        self.counters.missed.fetch_add(n, Ordering::Relaxed);
    }

    /// Spawns one request; its task holds `permit` until the record is pushed. `ready_us`: when
    /// the request could go at the earliest (see [`RecordSink::sent`]).
    fn launch<F>(
        &self,
        intended_us: u64,
        ready_us: u64,
        permit: OwnedSemaphorePermit,
        route: u16,
        request: F,
    ) where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let timeout = self
            .timeouts
            .get(usize::from(route))
            .copied()
            .unwrap_or(self.timeout);
        let (clock, recording) = (self.clock, self.recording.clone());
        let counters = self.counters.clone();
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        if clock.now_us().saturating_sub(intended_us) > LATE_AFTER.as_micros() as u64 {
            self.counters.late.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            // The send is when this task first runs: a runtime too busy to run it is rattle
            // falling behind, and shows in the send lag.
            counters.started.fetch_add(1, Ordering::Relaxed);
            recording.sent(intended_us, ready_us, clock.now_us());
            let outcome = tokio::time::timeout(timeout, request)
                .await
                .unwrap_or(Outcome::Timeout);
            recording.push(Record {
                intended_us,
                done_us: clock.now_us(),
                outcome,
                route,
            });
            drop(permit);
        });
    }

    /// The instant of `us` on the run clock, or `None` past the end of representable time.
    fn instant_at(&self, us: u64) -> Option<Instant> {
        self.clock.origin().checked_add(Duration::from_micros(us))
    }

    async fn run<S, F>(self, send: S)
    where
        S: Fn(u16) -> F,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let mut next: u64 = 0;
        // A permit freed by a ticket that turned out to be missed, kept for the next one.
        let mut held: Option<OwnedSemaphorePermit> = None;
        loop {
            let intended = self.intended_us(next);
            if self.clock.now_us() < intended {
                let wake = self.instant_at(intended);
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => break,
                    () = sleep_until_or_forever(wake) => {}
                }
            } else {
                if self.stop.is_cancelled() {
                    break;
                }
                // Behind schedule: due tickets go back to back, yielding only when this task's
                // cooperative budget runs out, so the requests it spawns still get to run.
                tokio::task::coop::consume_budget().await;
            }
            // When the request could go at the earliest: its intended start, or the instant a
            // permit freed up if it had to wait for one (the target's doing, not rattle's),
            // unless rattle's own backlog held the permits (see `backlogged`).
            let mut ready = intended;
            let permit = match held.take().or_else(|| self.try_permit()) {
                Some(p) => p,
                None => {
                    let own = self.backlogged();
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => break,
                        p = self.in_flight.clone().acquire_owned() => match p {
                            Ok(p) => {
                                if !own {
                                    ready = self.clock.now_us();
                                }
                                p
                            }
                            Err(_) => break,
                        },
                    }
                }
            };
            let now = self.clock.now_us();
            if intended.saturating_add(self.timeout_us) < now {
                // The permit came too late for this ticket and maybe for the ones after it: all
                // whose timeout has run out are missed as one range, and the permit goes to the
                // first ticket still worth sending.
                let end = self.expired_end(next, now);
                self.record_missed(next..end, now);
                next = end;
                held = Some(permit);
                continue;
            }
            let route = self.route_of(next);
            self.launch(intended, ready, permit, route, send(route));
            next = next.saturating_add(1);
        }
        self.drain(next, held, &send);
    }

    /// After `stop`: tickets that were already due are not dropped silently. Those a free permit
    /// can take are sent; of the rest (the target was saturating the cap, or rattle was behind),
    /// those whose timeout had run out are missed, and those with time left are counted as
    /// unsent: the run ended under them, which says nothing about the target. Tickets not yet
    /// due are not scheduled at all.
    fn drain<S, F>(&self, mut next: u64, mut held: Option<OwnedSemaphorePermit>, send: &S)
    where
        S: Fn(u16) -> F,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let stop_us = self.clock.now_us();
        while next < u64::MAX {
            let intended = self.intended_us(next);
            if intended > stop_us {
                break;
            }
            match held.take().or_else(|| self.try_permit()) {
                Some(p) if intended.saturating_add(self.timeout_us) >= stop_us => {
                    let route = self.route_of(next);
                    self.launch(intended, intended, p, route, send(route));
                    next += 1;
                }
                Some(p) => {
                    let end = self.expired_end(next, stop_us);
                    self.record_missed(next..end, stop_us);
                    next = end;
                    held = Some(p);
                }
                None => {
                    let end = self.due_end(stop_us).max(next + 1);
                    // Those whose timeout had run out are missed; the rest, unsent.
                    let expired = if intended.saturating_add(self.timeout_us) < stop_us {
                        self.expired_end(next, stop_us).min(end)
                    } else {
                        next
                    };
                    self.record_missed(next..expired, stop_us);
                    let n = end.saturating_sub(expired);
                    self.recording.unsent(n);
                    self.counters.unsent.fetch_add(n, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::OutcomeCounts;

    fn cfg(rate: f64, max_in_flight: usize, timeout_ms: u64) -> LoadConfig {
        LoadConfig {
            url: Uri::from_static("http://127.0.0.1:9/"),
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            rate_per_sec: rate,
            ramp: None,
            timeout: Duration::from_millis(timeout_ms),
            max_in_flight,
            ok_status: None,
            mix: Vec::new(),
            seed: 0,
        }
    }

    /// Runs the scheduler with fake requests until `stop_after`, then finishes.
    async fn run_fake<S, F>(
        cfg: LoadConfig,
        stop_after: Duration,
        send: S,
    ) -> (LoadSummary, Recording, OutcomeCounts)
    where
        S: Fn() -> F + Send + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let clock = RunClock::start_now();
        let recording = Recording::new(Duration::from_secs(1), true);
        let stop = CancellationToken::new();
        let pacer = match Pacer::new(&cfg, clock, 0, recording.clone(), stop.clone()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let parts = pacer.handle_parts();
        let handle = parts.into_handle(tokio::spawn(pacer.run(move |_| send())));
        tokio::time::sleep(stop_after).await;
        stop.cancel();
        let summary = handle.finish().await;
        let totals = recording.totals();
        (summary, recording, totals)
    }

    #[tokio::test(start_paused = true)]
    async fn fast_target_gets_every_ticket_at_its_time() {
        let (summary, rec, totals) =
            run_fake(cfg(100.0, 10, 1000), Duration::from_millis(995), || async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                Outcome::Ok
            })
            .await;
        assert_eq!(
            summary,
            LoadSummary {
                scheduled: 100,
                sent: 100,
                missed: 0,
                late: 0,
                unsent: 0,
            }
        );
        assert_eq!(totals.ok(), 100);
        let mut recs = rec.records();
        recs.sort_by_key(|r| r.intended_us);
        for (k, r) in recs.iter().enumerate() {
            assert_eq!(r.intended_us, k as u64 * 10_000);
            assert_eq!(r.latency_us(), 3_000);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_shows_in_latency_from_the_intended_start() {
        // Cap 2; the first two requests take 100 ms, the rest 1 ms. Tickets 2..=9 (due at
        // 20..=90 ms) wait for a permit; nothing times out (10 s), so the wait shows as latency.
        let n = Arc::new(AtomicU64::new(0));
        let send = move || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            async move {
                let ms = if i < 2 { 100 } else { 1 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Outcome::Ok
            }
        };
        let (summary, rec, totals) =
            run_fake(cfg(100.0, 2, 10_000), Duration::from_millis(195), send).await;
        assert_eq!(
            summary,
            LoadSummary {
                scheduled: 20,
                sent: 20,
                missed: 0,
                late: summary.late,
                unsent: 0,
            }
        );
        // The tickets queued behind the slow request went out late (3..=7 by more than 10 ms).
        assert!(summary.late >= 5, "{summary:?}");
        // Their send lag shows (ticket 2 waited 80 ms), but the wait was for the target to free
        // a permit: rattle itself kept its schedule.
        let lag = rec.send_lag();
        assert_eq!(lag.run.count, 20);
        assert!(lag.run.max_us >= Some(80_000), "{lag:?}");
        assert!(lag.run.over_10ms >= 5, "{lag:?}");
        assert_eq!(lag.behind.longest_us, 0, "{lag:?}");
        assert_eq!(lag.behind.since_us, None);
        assert_eq!(totals.ok(), 20);
        let mut recs = rec.records();
        recs.sort_by_key(|r| r.intended_us);
        // Ticket 2 (due at 20 ms) gets the first permit back at 100 ms and is done at 101 ms.
        assert_eq!(recs[2].latency_us(), 81_000);
        // The slowest is the slow request itself; the queued ones show their wait.
        assert_eq!(recs.iter().map(Record::latency_us).max(), Some(100_000));
        assert!(
            recs[3..10].iter().all(|r| r.latency_us() > 10_000),
            "{recs:?}"
        );
        // Once the backlog is gone, requests are on time again.
        assert_eq!(recs[19].latency_us(), 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_past_their_timeout_waiting_for_a_permit_are_missed() {
        // A target that never answers: requests time out after 100 ms, cap 10, 500/s. The
        // timer has 1 ms resolution, so stop between tickets: 500 due (0..=998 ms) by 999 ms.
        let (summary, rec, totals) = run_fake(
            cfg(500.0, 10, 100),
            Duration::from_millis(999),
            std::future::pending::<Outcome>,
        )
        .await;
        assert_eq!(summary.scheduled, 500);
        assert_eq!(
            summary.scheduled,
            summary.sent + summary.missed + summary.unsent
        );
        assert!(summary.missed > 0, "{summary:?}");
        // Due at 900..=998 ms: time left before their timeout at the stop, so unsent.
        assert_eq!(summary.unsent, 50, "{summary:?}");
        assert_eq!(totals.total(), 450);
        assert_eq!(totals.get(Outcome::Missed), summary.missed);
        assert_eq!(totals.get(Outcome::Timeout), summary.sent);
        for r in rec.records() {
            match r.outcome {
                // Sent no later than intended + timeout, then timed out after 100 ms more.
                Outcome::Timeout => assert!((100_000..=200_000).contains(&r.latency_us()), "{r:?}"),
                // Given up when its timeout ran out, or at stop.
                Outcome::Missed => assert!(r.latency_us() <= 100_000, "{r:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A permit wait is rattle's own when a tenth of the cap (and at least two) is held by
    /// requests launched but not yet run; the one request just launched is not a backlog.
    #[test]
    fn a_backlog_is_a_tenth_of_the_permits_waiting_to_run() {
        let clock = RunClock::start_now();
        let stop = CancellationToken::new();
        let backlog = |permits: usize, launched: u64, started: u64| {
            let pacer = Pacer::new(
                &cfg(10.0, permits, 1_000),
                clock,
                0,
                Recording::new(Duration::from_secs(1), false),
                stop.clone(),
            )
            .expect("pacer");
            pacer.counters.sent.store(launched, Ordering::Relaxed);
            pacer.counters.started.store(started, Ordering::Relaxed);
            pacer.backlogged()
        };
        assert!(backlog(20_000, 100_000, 95_000));
        assert!(backlog(20_000, 100_000, 98_000));
        assert!(!backlog(20_000, 100_000, 98_001));
        assert!(!backlog(4, 100, 99), "just launched");
        assert!(backlog(4, 100, 98));
        assert!(!backlog(100, 0, 0));
    }

    /// Issue #14: tickets due when the run stops, with time left before their timeout, are
    /// neither sent nor missed: they are counted apart, and no window gets them.
    #[tokio::test(start_paused = true)]
    async fn tickets_due_when_stopped_with_no_permit_are_unsent_not_missed() {
        // Cap 5 held for 10 s; 50 tickets due by the stop at 495 ms, 5 of them sent.
        let (summary, rec, totals) = run_fake(
            cfg(100.0, 5, 10_000),
            Duration::from_millis(495),
            std::future::pending::<Outcome>,
        )
        .await;
        assert_eq!(
            summary,
            LoadSummary {
                scheduled: 50,
                sent: 5,
                missed: 0,
                late: 0,
                unsent: 45,
            }
        );
        assert_eq!(totals.get(Outcome::Missed), 0);
        assert_eq!(rec.unsent(), 45);
        assert_eq!(rec.records().len(), 5);
    }

    /// Issue #14: at the stop, due tickets whose timeout already ran out are missed, in the
    /// window of their intended start; the ones with time left are unsent.
    #[tokio::test(start_paused = true)]
    async fn at_stop_expired_tickets_are_missed_and_the_rest_unsent() {
        // Cap 5 held for ever, timeout 200 ms, 100/s, stop at 1995 ms: 200 tickets due. The
        // scheduler misses tickets as their timeouts run out while it waits for a permit, so
        // by the stop only those due within the last 200 ms are still waiting: unsent.
        let (summary, rec, totals) = run_fake(
            cfg(100.0, 5, 200),
            Duration::from_millis(1995),
            std::future::pending::<Outcome>,
        )
        .await;
        assert_eq!(summary.scheduled, 200);
        assert_eq!(summary.sent + summary.missed + summary.unsent, 200);
        assert!(summary.sent >= 5);
        // Due in (1795, 1990] ms: 20 tickets with time left at the stop, never sent.
        assert_eq!(summary.unsent, 20, "{summary:?}");
        assert_eq!(totals.get(Outcome::Missed), summary.missed);
        // Every missed ticket counts in the window of its intended start: window 0 holds the
        // tickets due in its second (minus the sent ones), window 1 the rest.
        let w = rec.windows();
        let due_in = |s: u64| {
            rec.records()
                .iter()
                .filter(|r| r.outcome == Outcome::Missed && r.intended_us / 1_000_000 == s)
                .count() as u64
        };
        assert_eq!(w[0].counts.get(Outcome::Missed), due_in(0));
        assert_eq!(w[1].counts.get(Outcome::Missed), due_in(1));
        assert!(due_in(0) >= 50, "{}", due_in(0));
        // Every ticket due in the first second is accounted for by its intended start.
        let in_0 = rec
            .records()
            .iter()
            .filter(|r| r.intended_us < 1_000_000)
            .count();
        assert_eq!(in_0, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn ramp_starts_slow() {
        let mut c = cfg(100.0, 10, 1000);
        c.ramp = Some(Duration::from_secs(1));
        let (summary, rec, _) =
            run_fake(c, Duration::from_millis(995), || async { Outcome::Ok }).await;
        // n(1 s) = 50: tickets 0..=49 due by then (49 at 990 ms), ticket 50 exactly at 1 s.
        assert_eq!(summary.sent, 50);
        // A quarter of them in the first half.
        let first_half = rec
            .records()
            .iter()
            .filter(|r| r.intended_us < 500_000)
            .count();
        assert_eq!(first_half, 13);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_scheduling() {
        let c = cfg(100.0, 10, 1000);
        let clock = RunClock::start_now();
        let recording = Recording::new(Duration::from_secs(1), true);
        let stop = CancellationToken::new();
        let pacer = match Pacer::new(&c, clock, 0, recording.clone(), stop.clone()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let handle = pacer
            .handle_parts()
            .into_handle(tokio::spawn(pacer.run(|_| async { Outcome::Ok })));
        tokio::time::sleep(Duration::from_millis(95)).await;
        drop(handle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(recording.totals().total(), 10);
        assert!(!stop.is_cancelled(), "the caller's token is left alone");
    }

    #[test]
    fn validation_rejects_bad_configs() {
        assert!(cfg(100.0, 1, 1).validate().is_ok());
        assert!(matches!(
            cfg(0.0, 1, 1).validate(),
            Err(LoadError::Schedule(_))
        ));
        assert!(matches!(
            cfg(f64::NAN, 1, 1).validate(),
            Err(LoadError::Schedule(_))
        ));
        assert!(matches!(
            cfg(1e12, 1, 1).validate(),
            Err(LoadError::RateTooHigh { .. })
        ));
        assert!(matches!(
            cfg(1.0, 0, 1).validate(),
            Err(LoadError::InvalidMaxInFlight { .. })
        ));
        assert!(matches!(
            cfg(1.0, MAX_IN_FLIGHT + 1, 1).validate(),
            Err(LoadError::InvalidMaxInFlight { .. })
        ));
        assert!(matches!(
            cfg(1.0, 1, 0).validate(),
            Err(LoadError::ZeroTimeout)
        ));
        let mut c = cfg(1.0, 1, 1);
        c.ok_status = Some(vec![200, 1000]);
        assert!(matches!(
            c.validate(),
            Err(LoadError::InvalidOkStatus { status: 1000 })
        ));
        for (url, ok) in [
            ("https://example.com/", true),
            ("/just/a/path", false),
            ("ftp://example.com/", false),
            ("http://example.com", true),
            ("HTTP://example.com:8080/x?y=1", true),
        ] {
            let mut c = cfg(1.0, 1, 1);
            c.url = match url.parse() {
                Ok(u) => u,
                Err(e) => panic!("{url}: {e}"),
            };
            assert_eq!(c.validate().is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn url_credentials_stay_out_of_errors() {
        let mut c = cfg(1.0, 1, 1);
        c.url = Uri::from_static("ftp://user:s3cret@example.com/");
        let msg = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("***@example.com"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn debug_does_not_show_header_values() {
        let mut c = cfg(1.0, 1, 1);
        c.headers = vec![(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        )];
        let shown = format!("{c:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let r = start(
            cfg(1.0, 1, 1),
            RunClock::start_now(),
            0,
            Recording::new(Duration::from_secs(1), false),
            CancellationToken::new(),
        );
        assert!(matches!(r, Err(LoadError::NoRuntime { .. })));
    }
}
