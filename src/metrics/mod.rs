//! Measurement primitives shared by the load generator, probes, the runner and analysis.
//!
//! Every request becomes one compact [`Record`] (intended start, completion, outcome) so that
//! analysis can compute recovery instants from per-request completions rather than from whole
//! windows. Alongside, each time window and the whole run get an HdrHistogram, which is what the
//! progress line and report windows read. Times are microseconds since the run's start
//! ([`RunClock`]), measured with tokio's clock so logic tests can run on a paused clock.
//!
//! Memory stays flat however long a run lasts: the per-request records are kept only from a
//! watermark on ([`Recording::forget_before`]), which the runner holds back only as far as
//! analysis still needs them (the baseline until it is checked, a fault from its injection
//! until its recovery is decided, the last seconds for the stop conditions and the final
//! check). Everything older lives on only in aggregates: the windows, the whole-run histograms,
//! and *segments*: counts and latency histograms between cut instants
//! ([`Recording::cut_at`]: the end of warm-up, each injection, each fault's settling, the end of
//! load), from which the figures of any span between two cuts are merged
//! ([`Recording::span_figures`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The run's time origin: a monotonic instant plus the wall-clock time it corresponds to.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    start_unix_ms: i64,
}

impl RunClock {
    /// A clock whose origin is now.
    pub fn start_now() -> Self {
        let start_unix_ms = jiff::Timestamp::now().as_millisecond();
        Self {
            start: Instant::now(),
            start_unix_ms,
        }
    }

    /// The monotonic origin.
    pub fn origin(&self) -> Instant {
        self.start
    }

    /// Wall-clock milliseconds since the Unix epoch at the origin.
    pub fn start_unix_ms(&self) -> i64 {
        self.start_unix_ms
    }

    /// Microseconds since the origin for `at` (0 if `at` is before the origin).
    pub fn us_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Microseconds since the origin, now.
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// The instant `us` microseconds after the origin.
    pub fn instant_at_us(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }
}

/// How one request ended. Everything but `Ok` counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A response with a status the load spec accepts (2xx/3xx by default).
    Ok,
    /// A 4xx response.
    Status4xx,
    /// A 5xx response.
    Status5xx,
    /// The connection was refused.
    Refused,
    /// The connection was reset or closed before a full response arrived.
    Reset,
    /// No full response within the per-request timeout.
    Timeout,
    /// Any other error (DNS, protocol, body read).
    Other,
    /// The request could not be sent on time because the in-flight cap was reached; it was never
    /// sent. Counted so that a saturated target shows, instead of silently lowering the rate.
    Missed,
}

impl Outcome {
    /// All outcomes, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Status4xx,
        Outcome::Status5xx,
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Other,
        Outcome::Missed,
    ];

    /// True for a successful request.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// The stable name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Status4xx => "status_4xx",
            Outcome::Status5xx => "status_5xx",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Other => "other",
            Outcome::Missed => "missed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One request, as analysis sees it. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// When the schedule meant the request to start (µs since run start). Latency is measured
    /// from here, so a stalled target shows in the percentiles (no coordinated omission).
    pub intended_us: u64,
    /// When the response (or error) completed (µs since run start). For `Missed`, the instant the
    /// request was given up.
    pub done_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Which request of the load's mix it was (0 without a mix; see `load::mix`). Fits in the
    /// padding: the record stays 24 bytes.
    pub route: u16,
}

impl Record {
    /// Latency from the intended start, in µs.
    pub fn latency_us(&self) -> u64 {
        self.done_us.saturating_sub(self.intended_us)
    }
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts([u64; 8]);

impl OutcomeCounts {
    /// Add one.
    pub fn add(&mut self, outcome: Outcome) {
        self.0[outcome.index()] += 1;
    }
    /// Remove all of `other` (saturating at zero).
    pub fn subtract(&mut self, other: &OutcomeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_sub(*b);
        }
    }
    /// Add all of `other`.
    pub fn merge(&mut self, other: &OutcomeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
    /// How many ended so.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome.index()]
    }
    /// All requests counted, missed included.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.get(Outcome::Ok)
    }
    /// Failed requests, missed included.
    pub fn failed(&self) -> u64 {
        self.total() - self.ok()
    }
    /// Requests actually sent (everything but missed).
    pub fn sent(&self) -> u64 {
        self.total() - self.get(Outcome::Missed)
    }
}

/// A new latency histogram: 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // 1..=3_600_000_000 µs with 3 significant figures is always a valid configuration.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is valid")))
}

/// The nearest-rank percentile of sorted values (`q` in 0..=1); `None` when empty.
pub fn percentile_sorted(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Latency percentiles of a window (µs, from intended start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Latencies recorded (every outcome but `Missed`).
    pub count: u64,
    /// Median.
    pub p50_us: Option<u64>,
    /// 90th percentile.
    pub p90_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// Maximum.
    pub max_us: Option<u64>,
}

impl LatencySummary {
    /// Exact nearest-rank percentiles of `latencies` (µs, any order): for spans analysis reads
    /// from per-request records rather than from a histogram.
    pub fn of_unsorted(mut latencies: Vec<u64>) -> Self {
        latencies.sort_unstable();
        let pct = |q: f64| percentile_sorted(&latencies, q);
        Self {
            count: latencies.len() as u64,
            p50_us: pct(0.5),
            p90_us: pct(0.9),
            p99_us: pct(0.99),
            max_us: latencies.last().copied(),
        }
    }

    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: Some(h.value_at_quantile(0.5)),
            p90_us: Some(h.value_at_quantile(0.9)),
            p99_us: Some(h.value_at_quantile(0.99)),
            max_us: Some(h.max()),
        }
    }
}

/// One time window of the run.
#[derive(Debug, Clone)]
pub struct Window {
    /// Start of the window, µs since run start.
    pub start_us: u64,
    /// Outcome counts of requests that completed in this window.
    pub counts: OutcomeCounts,
    /// Latency percentiles of every request sent that completed in this window, successes and
    /// failures mixed (as wrk and oha report them).
    pub latency: LatencySummary,
    /// Latency percentiles of the successful requests only: what users who were served
    /// waited for. A fast failure (a refused connection) never pulls these down.
    pub ok_latency: LatencySummary,
    /// Latency percentiles of the failed requests that were sent (a timeout counts at its
    /// timeout; missed requests, never sent, have no latency).
    pub failed_latency: LatencySummary,
    /// Send lag of the requests *sent* in this window: how late rattle sent them.
    pub send_lag: LagSummary,
}

/// A request sent more than this after its intended start counts as sent late (the issue's
/// test of a generator that holds its rate: 99.8 % of requests within 10 ms).
pub const LAG_LATE_US: u64 = 10_000;

/// Rattle has fallen behind its own schedule once its own lag (see [`Recording::sent`]) stayed
/// above [`LAG_LATE_US`] for this long (at 90 % of the sends of every [`LAG_SLOT_US`] slot that
/// had any): from then on the run's figures measure rattle, not the service.
pub const BEHIND_FOR_US: u64 = 1_000_000;

/// Sends are judged in slots of this length: a slot whose sends were late by rattle's own
/// doing at 90 % or more is late. A share, not every send: a flooded runtime still runs the
/// task it spawned last at once now and then, and one on-time send must not hide a second of
/// backlog.
pub const LAG_SLOT_US: u64 = 10_000;

/// Rattle's CPU counts as saturated when its busiest runtime worker was running or waiting to
/// run at least this share of a second...
pub const CPU_SATURATED: f64 = 0.95;

/// ... for this long without a break: then rattle is behind too, whatever its send lag says
/// (a small in-flight cap turns a starved generator into what looks like a slow target).
pub const CPU_SATURATED_FOR_US: u64 = 2_000_000;

/// Why rattle fell behind, beyond its send lag, as the start of a parenthesis ("" when the
/// send lag alone said so).
pub fn behind_cause(cpu_saturated: bool, runtime_stalled: bool) -> &'static str {
    match (cpu_saturated, runtime_stalled) {
        (true, true) => "its CPU was saturated and its runtime woke tasks over 10 ms late; ",
        (true, false) => "its CPU was saturated; ",
        (false, true) => "its runtime woke tasks over 10 ms late for a second; ",
        (false, false) => "",
    }
}

/// Send lag figures: actual send minus intended start, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagSummary {
    /// Requests sent.
    pub count: u64,
    /// Median lag.
    pub p50_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// Maximum.
    pub max_us: Option<u64>,
    /// Requests sent more than [`LAG_LATE_US`] late.
    pub over_10ms: u64,
}

impl LagSummary {
    fn of(h: &Histogram<u64>, over_10ms: u64) -> Self {
        if h.is_empty() {
            return Self {
                over_10ms,
                ..Self::default()
            };
        }
        Self {
            count: h.len(),
            p50_us: Some(h.value_at_quantile(0.5)),
            p99_us: Some(h.value_at_quantile(0.99)),
            max_us: Some(h.max()),
            over_10ms,
        }
    }
}

/// Whether rattle kept its own schedule: the run's verdict can only be trusted if it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behind {
    /// When rattle's own lag first stayed above [`LAG_LATE_US`] for [`BEHIND_FOR_US`] (µs since
    /// the run's start, the start of that stretch); `None` if it never did.
    pub since_us: Option<u64>,
    /// The longest stretch of [`LAG_SLOT_US`] slots whose sends were 90 % or more over
    /// [`LAG_LATE_US`] of rattle's own lag (µs).
    pub longest_us: u64,
    /// True while the current stretch has lasted [`BEHIND_FOR_US`] (for the live line).
    pub now: bool,
    /// True when rattle's CPU was saturated ([`CPU_SATURATED`] for [`CPU_SATURATED_FOR_US`]):
    /// one way of falling behind.
    pub cpu_saturated: bool,
    /// True when rattle's runtime woke its tasks over [`LAG_LATE_US`] late at 90 % of its
    /// wake-ups over [`BEHIND_FOR_US`] (see [`Recording::runtime_lag`]): another way.
    pub runtime_stalled: bool,
}

/// The send lag of the run so far: what the progress line and `/metrics` read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLag {
    /// The whole run's send lag.
    pub run: LagSummary,
    /// Whether (and since when) rattle fell behind its own schedule.
    pub behind: Behind,
}

/// Latency histograms kept apart by how requests ended: the successful ones and the failed
/// ones. Every sent request's figures are their sum, derived when read (a window's once, when
/// it closes), so a request is recorded once.
struct Latencies {
    ok: Histogram<u64>,
    failed: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Self {
            ok: new_histogram(),
            failed: new_histogram(),
        }
    }

    /// Records a request that was sent (not `Missed`).
    fn record(&mut self, outcome: Outcome, latency_us: u64) {
        let h = if outcome.is_ok() {
            &mut self.ok
        } else {
            &mut self.failed
        };
        h.saturating_record(latency_us.max(1));
    }

    /// Every sent request: the two histograms added. They share their bounds, so the addition
    /// cannot fail; were it to, the figures would miss the failures, never panic.
    fn all(&self) -> Histogram<u64> {
        let mut all = self.ok.clone();
        let _ = all.add(&self.failed);
        all
    }

    fn summaries(&self) -> [LatencySummary; 3] {
        [
            LatencySummary::of(&self.all()),
            LatencySummary::of(&self.ok),
            LatencySummary::of(&self.failed),
        ]
    }
}

/// Windows this far behind the newest one keep their histograms; older ones keep only their
/// summaries. Latencies are recorded at completion, so they only ever land in the newest window
/// (give or take a scheduling delay); only `Missed` records, which carry no latency, land
/// further back. A histogram of 1 µs to 1 hour at 3 digits is ~180 KB: kept for every window
/// it grew memory by 180 KB a second of run.
const OPEN_WINDOWS: usize = 3;

struct WindowState {
    counts: OutcomeCounts,
    histograms: Option<Box<Latencies>>,
    /// All, ok, failed: kept once the histograms are freed.
    summaries: [LatencySummary; 3],
    /// Send lag of the requests sent in the window, allocated at its first send and freed
    /// with the latency histograms.
    lag: Option<Box<Histogram<u64>>>,
    lag_over: u64,
    /// Kept once `lag` is freed.
    lag_summary: LagSummary,
}

impl WindowState {
    fn summaries(&self) -> [LatencySummary; 3] {
        match &self.histograms {
            Some(h) => h.summaries(),
            None => self.summaries,
        }
    }

    fn lag_summary(&self) -> LagSummary {
        match &self.lag {
            Some(h) => LagSummary::of(h, self.lag_over),
            None => self.lag_summary,
        }
    }

    fn window(&self, start_us: u64) -> Window {
        let [latency, ok_latency, failed_latency] = self.summaries();
        Window {
            start_us,
            counts: self.counts,
            latency,
            ok_latency,
            failed_latency,
            send_lag: self.lag_summary(),
        }
    }

    fn close(&mut self) {
        if let Some(h) = self.histograms.take() {
            self.summaries = h.summaries();
        }
        if let Some(h) = self.lag.take() {
            self.lag_summary = LagSummary::of(&h, self.lag_over);
        }
    }
}

/// Counts and latencies of the requests completing from `from_us` to the next segment's start.
struct Segment {
    from_us: u64,
    counts: OutcomeCounts,
    latencies: Latencies,
}

impl Segment {
    fn new(from_us: u64) -> Self {
        Self {
            from_us,
            counts: OutcomeCounts::default(),
            latencies: Latencies::new(),
        }
    }

    fn add(&mut self, rec: &Record) {
        self.counts.add(rec.outcome);
        if rec.outcome != Outcome::Missed {
            self.latencies.record(rec.outcome, rec.latency_us());
        }
    }
}

/// Figures of the requests completing in a span, merged from segments: counts, and the
/// latency percentiles of every request sent, of the successful ones and of the failed ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanFigures {
    /// Requests completing in the span, missed included.
    pub counts: OutcomeCounts,
    /// Every request sent.
    pub latency: LatencySummary,
    /// The successful requests.
    pub ok_latency: LatencySummary,
    /// The failed requests that were sent.
    pub failed_latency: LatencySummary,
}

/// Why a cut could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CutError {
    /// The records after the instant were already forgotten, so the segment holding it
    /// cannot be split exactly.
    #[error(
        "cannot cut the recording at {at_us} µs: its records were forgotten up to {kept_from_us} µs"
    )]
    Forgotten {
        /// The instant asked for.
        at_us: u64,
        /// The watermark.
        kept_from_us: u64,
    },
}

struct Inner {
    window_us: u64,
    keep_records: bool,
    /// The records kept: those completing at or after `kept_from_us` (give or take a few that
    /// arrived out of order), in arrival order.
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`: every record pushed gets the next one.
    first_seq: u64,
    kept_from_us: u64,
    /// Sorted by `from_us`; the first starts at 0.
    segments: Vec<Segment>,
    windows: Vec<WindowState>,
    /// Windows below this index are closed (summary only).
    closed: usize,
    total: OutcomeCounts,
    total_latency: Latencies,
    lag: Histogram<u64>,
    lag_over: u64,
    /// Send instant of the first late send of the current stretch of late slots (closed ones).
    late_since: Option<u64>,
    /// The slot being filled: its index, sends, sends late by rattle's own doing, the first and
    /// the last late send's instants.
    slot: LagSlot,
    /// Start of the current stretch of saturated seconds.
    busy_since: Option<u64>,
    /// The runtime canary's wake-ups of the trailing second: when each was due, and whether it
    /// came over [`LAG_LATE_US`] late.
    stall_wakes: VecDeque<(u64, bool)>,
    lag_now: bool,
    busy_now: bool,
    stall_now: bool,
    behind: Behind,
    unsent: u64,
}

/// One [`LAG_SLOT_US`] slot of sends, for the own-lag stretch.
#[derive(Debug, Default, Clone, Copy)]
struct LagSlot {
    index: u64,
    sends: u64,
    late: u64,
    first_late_us: u64,
    last_late_us: u64,
}

impl LagSlot {
    fn add(&mut self, sent_us: u64, late: bool) {
        self.sends += 1;
        if late {
            if self.late == 0 {
                self.first_late_us = sent_us;
            }
            self.late += 1;
            self.last_late_us = self.last_late_us.max(sent_us);
        }
    }

    /// Late at 90 % of its sends or more.
    fn is_late(&self) -> bool {
        self.late > 0 && self.late * 10 >= self.sends * 9
    }
}

/// Thread-safe sink of request records: per-request log (optional), per-window counts and
/// percentiles, and a whole-run histogram. Cheap to clone (an `Arc`). Memory: the per-request
/// log (24 bytes a request) when kept, ~100 bytes per closed window, and a few histograms.
///
/// With routes ([`Recording::with_routes`]), each route (a request of the load's mix) also has
/// a recording of its own that gets that route's records: the same figures per request name.
#[derive(Clone)]
pub struct Recording {
    inner: Arc<Mutex<Inner>>,
    routes: Arc<[Recording]>,
}

impl Recording {
    /// A recording with windows of `window` (at least 1 ms). `keep_records` keeps every record
    /// for analysis (24 bytes a request); without it memory is flat however long the run.
    pub fn new(window: Duration, keep_records: bool) -> Self {
        let window_us = u64::try_from(window.as_micros())
            .unwrap_or(u64::MAX)
            .max(1_000);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                window_us,
                keep_records,
                records: VecDeque::new(),
                first_seq: 0,
                kept_from_us: 0,
                segments: vec![Segment::new(0)],
                windows: Vec::new(),
                closed: 0,
                total: OutcomeCounts::default(),
                total_latency: Latencies::new(),
                lag: new_histogram(),
                lag_over: 0,
                late_since: None,
                slot: LagSlot::default(),
                busy_since: None,
                stall_wakes: VecDeque::new(),
                lag_now: false,
                busy_now: false,
                stall_now: false,
                behind: Behind::default(),
                unsent: 0,
            })),
            routes: Arc::new([]),
        }
    }

    /// A recording as [`Recording::new`], with a recording of its own for each of `routes`
    /// routes (none when there are fewer than two: the whole is the one route).
    pub fn with_routes(window: Duration, keep_records: bool, routes: usize) -> Self {
        let mut r = Self::new(window, keep_records);
        if routes > 1 {
            r.routes = (0..routes)
                .map(|_| Self::new(window, keep_records))
                .collect();
        }
        r
    }

    /// Each route's own recording (empty without a mix).
    pub fn routes(&self) -> &[Recording] {
        &self.routes
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the data inconsistent in a way that
        // matters more than losing the run's figures, so recover the guard.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Window length in µs.
    pub fn window_us(&self) -> u64 {
        self.lock().window_us
    }

    /// Record one request.
    pub fn push(&self, rec: Record) {
        self.lock().record_one(rec);
        if let Some(route) = self.routes.get(usize::from(rec.route)) {
            route.push(rec);
        }
    }

    /// Record many requests at once (one lock).
    pub fn push_all(&self, recs: &[Record]) {
        {
            let mut g = self.lock();
            for r in recs {
                g.record_one(*r);
            }
        }
        if !self.routes.is_empty() {
            for r in recs {
                if let Some(route) = self.routes.get(usize::from(r.route)) {
                    route.push(*r);
                }
            }
        }
    }

    /// A copy of the records kept (all of them, unless [`Recording::forget_before`] was
    /// called), in arrival order (not sorted).
    pub fn records(&self) -> Vec<Record> {
        // Copied in chunks, the lock released between them: a run at 150,000 requests/s keeps
        // ~750,000 records, and copying them in one hold kept the load's pushes waiting for
        // ~10 ms (late sends). The records as of the call: those pushed meanwhile are not
        // chased; those forgotten meanwhile are skipped.
        const CHUNK: u64 = 16_384;
        let (mut next, end, mut out) = {
            let g = self.lock();
            let end = g.first_seq + g.records.len() as u64;
            (g.first_seq, end, Vec::with_capacity(g.records.len()))
        };
        while next < end {
            let g = self.lock();
            next = next.max(g.first_seq);
            let from = usize::try_from(next - g.first_seq).unwrap_or(usize::MAX);
            let to = usize::try_from((next + CHUNK).min(end) - g.first_seq)
                .unwrap_or(usize::MAX)
                .min(g.records.len());
            if from >= to {
                break;
            }
            out.extend(g.records.range(from..to).copied());
            next += (to - from) as u64;
        }
        out
    }

    /// Records with sequence number >= `from` that are still kept (for incremental
    /// consumers), and the sequence number of the next record. Sequence numbers count every
    /// record pushed, forgotten or not.
    pub fn records_since(&self, from: usize) -> (Vec<Record>, usize) {
        let g = self.lock();
        let next = g.first_seq + g.records.len() as u64;
        let skip = (from as u64)
            .saturating_sub(g.first_seq)
            .min(g.records.len() as u64);
        let out = g.records.iter().skip(skip as usize).copied().collect();
        (out, usize::try_from(next).unwrap_or(usize::MAX))
    }

    /// Forgets the records completing before `t_us` and keeps none completing before it from
    /// now on: only aggregates (windows, totals, segments) hold them. The watermark never moves
    /// back. Records arrive roughly in completion order; a few stragglers behind the front may
    /// be kept a little longer, never fewer than asked.
    pub fn forget_before(&self, t_us: u64) {
        for r in self.routes.iter() {
            r.forget_before(t_us);
        }
        let mut g = self.lock();
        if t_us <= g.kept_from_us {
            return;
        }
        g.kept_from_us = t_us;
        while g.records.front().is_some_and(|r| r.done_us < t_us) {
            g.records.pop_front();
            g.first_seq += 1;
        }
    }

    /// The watermark: records completing before it may have been forgotten.
    pub fn kept_from_us(&self) -> u64 {
        self.lock().kept_from_us
    }

    /// Starts a new segment at `t_us`, so that spans starting or ending there can be read
    /// from aggregates ([`Recording::span_figures`]). A cut at an instant already cut is a
    /// no-op; a cut in the past moves the kept records completing after it into the new
    /// segment, so it needs them: it fails below the watermark.
    pub fn cut_at(&self, t_us: u64) -> Result<(), CutError> {
        for r in self.routes.iter() {
            // The routes keep what the whole keeps, so they can be cut where it can.
            let _ = r.cut_at(t_us);
        }
        let mut g = self.lock();
        let g = &mut *g;
        let idx = g.segments.partition_point(|seg| seg.from_us <= t_us);
        // `segments[0]` starts at 0, so idx >= 1.
        let holder = idx.saturating_sub(1);
        if g.segments[holder].from_us == t_us {
            return Ok(());
        }
        if t_us < g.kept_from_us || !g.keep_records {
            return Err(CutError::Forgotten {
                at_us: t_us,
                kept_from_us: g.kept_from_us,
            });
        }
        let end = g.segments.get(idx).map_or(u64::MAX, |seg| seg.from_us);
        let mut new = Segment::new(t_us);
        let mut moved = Latencies::new();
        let mut moved_counts = OutcomeCounts::default();
        for r in g
            .records
            .iter()
            .filter(|r| r.done_us >= t_us && r.done_us < end)
        {
            new.add(r);
            moved_counts.add(r.outcome);
            if r.outcome != Outcome::Missed {
                moved.record(r.outcome, r.latency_us());
            }
        }
        let old = &mut g.segments[holder];
        old.counts.subtract(&moved_counts);
        // Same bounds, and every value moved was recorded in `old`: cannot fail; were it to,
        // the old segment would keep a few latencies too many, never panic.
        let _ = old.latencies.ok.subtract(&moved.ok);
        let _ = old.latencies.failed.subtract(&moved.failed);
        g.segments.insert(idx, new);
        Ok(())
    }

    /// Figures of the requests completing in `[from_us, to_us)`, merged from the segments,
    /// when both ends are cuts (0 and `u64::MAX` always are); `None` otherwise.
    pub fn span_figures(&self, from_us: u64, to_us: u64) -> Option<SpanFigures> {
        let g = self.lock();
        let is_cut = |t: u64| t == u64::MAX || g.segments.iter().any(|seg| seg.from_us == t);
        if !is_cut(from_us) || !is_cut(to_us) {
            return None;
        }
        let mut counts = OutcomeCounts::default();
        let mut lat = Latencies::new();
        for seg in g
            .segments
            .iter()
            .filter(|seg| seg.from_us >= from_us && seg.from_us < to_us)
        {
            counts.merge(&seg.counts);
            let _ = lat.ok.add(&seg.latencies.ok);
            let _ = lat.failed.add(&seg.latencies.failed);
        }
        let [latency, ok_latency, failed_latency] = lat.summaries();
        Some(SpanFigures {
            counts,
            latency,
            ok_latency,
            failed_latency,
        })
    }

    /// The windows so far (dense: windows with no requests are present and empty).
    pub fn windows(&self) -> Vec<Window> {
        let g = self.lock();
        g.windows
            .iter()
            .enumerate()
            .map(|(i, w)| w.window(i as u64 * g.window_us))
            .collect()
    }

    /// The window containing `t_us`, if any request completed in it or after it.
    pub fn window_at(&self, t_us: u64) -> Option<Window> {
        let g = self.lock();
        let idx = usize::try_from(t_us / g.window_us).ok()?;
        g.windows
            .get(idx)
            .map(|w| w.window(idx as u64 * g.window_us))
    }

    /// Notes that a request due at `intended_us` went out at `sent_us`; `ready_us` is when it
    /// could go at the earliest (its intended start, or later if it had to wait for an
    /// in-flight permit). Feeds the send lag of the window of `sent_us` and of the run, and
    /// the test of whether rattle kept its own schedule ([`Behind`]).
    pub fn sent(&self, intended_us: u64, ready_us: u64, sent_us: u64) {
        self.lock().sent(intended_us, ready_us, sent_us);
    }

    /// From `from_us` to `to_us` the busiest runtime worker was running or waiting to run
    /// `busy` of the time: [`CPU_SATURATED`] for [`CPU_SATURATED_FOR_US`] puts rattle behind.
    pub fn cpu_busy(&self, from_us: u64, to_us: u64, busy: f64) {
        self.lock().cpu_busy(from_us, to_us, busy);
    }

    /// At `at_us` the load's runtime woke a timer `lag_us` late: its own queueing, which every
    /// response and timeout of the run waited through too. Late over [`LAG_LATE_US`] at 90 % of
    /// the wake-ups of a trailing [`BEHIND_FOR_US`], or once by that much, puts rattle behind (a
    /// short stall is not enough).
    pub fn runtime_lag(&self, at_us: u64, lag_us: u64) {
        self.lock().runtime_lag(at_us, lag_us);
    }

    /// The run's send lag so far, and whether rattle fell behind its schedule: the live
    /// figure the progress line (and a metrics endpoint) reads. Cheap: no histogram is copied.
    pub fn send_lag(&self) -> SendLag {
        let g = self.lock();
        SendLag {
            run: LagSummary::of(&g.lag, g.lag_over),
            behind: g.behind,
        }
    }

    /// Counts `n` tickets that were due but never sent because the run ended (neither sent nor
    /// missed: see [`Recording::unsent`]).
    pub fn add_unsent(&self, n: u64) {
        let mut g = self.lock();
        g.unsent = g.unsent.saturating_add(n);
    }

    /// Tickets that were due when the load stopped and had not been sent, with time left
    /// before their timeout: the run ended under them. Not counted as missed nor in any
    /// window.
    pub fn unsent(&self) -> u64 {
        self.lock().unsent
    }

    /// Whole-run counts.
    pub fn totals(&self) -> OutcomeCounts {
        self.lock().total
    }

    /// Whole-run latency histogram of every request sent.
    pub fn total_latency(&self) -> Histogram<u64> {
        self.lock().total_latency.all()
    }

    /// Whole-run latency histograms of the successful and of the failed requests sent.
    pub fn total_latency_by_outcome(&self) -> (Histogram<u64>, Histogram<u64>) {
        let g = self.lock();
        (g.total_latency.ok.clone(), g.total_latency.failed.clone())
    }
}

impl Inner {
    /// The window holding `t_us`, created (with every window before it) if need be; older
    /// windows are closed as newer ones open. `None` past the representable windows.
    fn window_mut(&mut self, t_us: u64) -> Option<&mut WindowState> {
        let idx = usize::try_from(t_us / self.window_us).ok()?;
        if idx == usize::MAX {
            return None;
        }
        while self.windows.len() <= idx {
            self.windows.push(WindowState {
                counts: OutcomeCounts::default(),
                histograms: Some(Box::new(Latencies::new())),
                summaries: [LatencySummary::default(); 3],
                lag: None,
                lag_over: 0,
                lag_summary: LagSummary::default(),
            });
        }
        // Close the windows that fell behind: keep their summary, free their histograms.
        let close_below = self.windows.len().saturating_sub(OPEN_WINDOWS);
        while self.closed < close_below {
            self.windows[self.closed].close();
            self.closed += 1;
        }
        self.windows.get_mut(idx)
    }

    fn record_one(&mut self, rec: Record) {
        // A missed request counts in the window of its intended start: the moment users would
        // have sent it, not the moment rattle gave up on it (see the README's "Missed").
        let at = match rec.outcome {
            Outcome::Missed => rec.intended_us,
            _ => rec.done_us,
        };
        if let Some(w) = self.window_mut(at) {
            w.counts.add(rec.outcome);
            if rec.outcome != Outcome::Missed
                && let Some(h) = &mut w.histograms
            {
                h.record(rec.outcome, rec.latency_us());
            }
        }
        self.total.add(rec.outcome);
        if rec.outcome != Outcome::Missed {
            self.total_latency.record(rec.outcome, rec.latency_us());
        }
        let seg = self
            .segments
            .partition_point(|seg| seg.from_us <= rec.done_us)
            .saturating_sub(1);
        if let Some(seg) = self.segments.get_mut(seg) {
            seg.add(&rec);
        }
        if self.keep_records && rec.done_us >= self.kept_from_us {
            self.records.push_back(rec);
        } else {
            // Never kept, but numbered all the same, so `records_since` stays consistent.
            if self.records.is_empty() {
                self.first_seq += 1;
            } else {
                // A straggler below the watermark behind kept records: count it in the
                // sequence by keeping it (rare: it arrived out of order).
                self.records.push_back(rec);
            }
        }
    }

    fn sent(&mut self, intended_us: u64, ready_us: u64, sent_us: u64) {
        let lag = sent_us.saturating_sub(intended_us);
        let late = lag > LAG_LATE_US;
        if let Some(w) = self.window_mut(sent_us) {
            w.lag
                .get_or_insert_with(|| Box::new(new_histogram()))
                .saturating_record(lag.max(1));
            w.lag_over += u64::from(late);
        }
        self.lag.saturating_record(lag.max(1));
        self.lag_over += u64::from(late);
        // Rattle's own lag: from when the request could go (its intended start, or the
        // instant an in-flight permit freed up, if the target held them all) to its send. A
        // target that holds every permit delays sends too, but that shows as its latency and
        // as missed requests; only this part says rattle itself could not keep up.
        let own = sent_us.saturating_sub(ready_us.max(intended_us));
        let index = sent_us / LAG_SLOT_US;
        if index > self.slot.index {
            // The slot closes: a late one extends the stretch, an on-time one ends it (a slot
            // without sends does neither). A send a little out of order joins the open slot.
            if self.slot.sends > 0 {
                if self.slot.is_late() {
                    self.late_since.get_or_insert(self.slot.first_late_us);
                } else {
                    self.late_since = None;
                }
            }
            self.slot = LagSlot {
                index,
                ..LagSlot::default()
            };
        }
        self.slot.add(sent_us, own > LAG_LATE_US);
        // The stretch as it stands with the open slot in it, for the live line.
        if self.slot.is_late() {
            let since = self.late_since.unwrap_or(self.slot.first_late_us);
            let stretch = self.slot.last_late_us.saturating_sub(since);
            self.behind.longest_us = self.behind.longest_us.max(stretch);
            if stretch >= BEHIND_FOR_US {
                self.behind.since_us.get_or_insert(since);
            }
            self.lag_now = stretch >= BEHIND_FOR_US;
        } else {
            self.lag_now = false;
        }
        self.behind.now = self.lag_now || self.busy_now || self.stall_now;
    }

    fn runtime_lag(&mut self, at_us: u64, lag_us: u64) {
        let due = at_us.saturating_sub(lag_us);
        self.stall_wakes.push_back((due, lag_us > LAG_LATE_US));
        while self
            .stall_wakes
            .front()
            .is_some_and(|&(d, _)| due.saturating_sub(d) > BEHIND_FOR_US)
        {
            self.stall_wakes.pop_front();
        }
        // Stalled: one wake-up a whole second late, or the trailing second (covered by
        // wake-ups at least 90 % of the way) late at 90 % of its wake-ups or more. A share,
        // not an unbroken run: a flooded runtime still wakes the canary on time now and then,
        // when its queue happens to be short.
        let late = self.stall_wakes.iter().filter(|w| w.1).count();
        let covered = self
            .stall_wakes
            .front()
            .map_or(0, |&(d, _)| at_us.saturating_sub(d));
        let stalled = lag_us >= BEHIND_FOR_US
            || (covered >= BEHIND_FOR_US * 9 / 10 && late * 10 >= self.stall_wakes.len() * 9);
        if stalled {
            let since = self.stall_wakes.iter().find(|w| w.1).map_or(due, |w| w.0);
            self.behind.since_us.get_or_insert(since);
            self.behind.runtime_stalled = true;
        }
        self.stall_now = stalled;
        self.behind.now = self.lag_now || self.busy_now || self.stall_now;
    }

    fn cpu_busy(&mut self, from_us: u64, to_us: u64, busy: f64) {
        if busy >= CPU_SATURATED {
            let since = *self.busy_since.get_or_insert(from_us);
            if to_us.saturating_sub(since) >= CPU_SATURATED_FOR_US {
                self.behind.since_us.get_or_insert(since);
                self.behind.cpu_saturated = true;
                self.busy_now = true;
            }
        } else {
            self.busy_since = None;
            self.busy_now = false;
        }
        self.behind.now = self.lag_now || self.busy_now || self.stall_now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_windows_keep_their_summary() {
        let r = Recording::new(Duration::from_secs(1), false);
        for s in 0..10u64 {
            for k in 0..100u64 {
                let t = s * 1_000_000 + k * 10_000;
                r.push(Record {
                    intended_us: t,
                    done_us: t + (s + 1) * 100,
                    outcome: Outcome::Ok,
                    route: 0,
                });
            }
        }
        let w = r.windows();
        assert_eq!(w.len(), 10);
        // Window 0 was closed long ago; its figures survive exactly.
        assert_eq!(w[0].latency.count, 100);
        assert_eq!(w[0].latency.p50_us, Some(100));
        assert_eq!(w[9].latency.max_us, Some(1000));
        let g = r.lock();
        assert!(g.windows[..7].iter().all(|w| w.histograms.is_none()));
        assert!(g.windows[7..].iter().all(|w| w.histograms.is_some()));
    }

    /// Issue #23: refusals answered in a millisecond never pull the successes' percentiles
    /// down, in a window or over the run, and stay visible as failures.
    #[test]
    fn fast_failures_stay_out_of_the_success_latency() {
        let r = Recording::new(Duration::from_secs(1), false);
        for k in 0..1000u64 {
            let t = k * 1000;
            let (done, outcome) = if k % 2 == 0 {
                (t + 40_000, Outcome::Ok)
            } else {
                (t + 1_000, Outcome::Refused)
            };
            r.push(Record {
                intended_us: t,
                done_us: done,
                outcome,
                route: 0,
            });
        }
        let w = &r.windows()[0];
        let ok50 = w.ok_latency.p50_us.expect("ok p50");
        assert!((39_900..=40_100).contains(&ok50), "{ok50}");
        assert_eq!(w.failed_latency.p99_us.map(|v| v / 100), Some(10));
        // The mixed figure is what the issue saw: the median of all is a refusal's.
        assert!(w.latency.p50_us.expect("p50") < 2_000);
        let (ok, failed) = r.total_latency_by_outcome();
        assert_eq!(ok.len() + failed.len(), r.total_latency().len());
        assert!(ok.value_at_quantile(0.01) >= 39_900);
    }

    #[test]
    fn windows_are_dense_and_counts_add_up() {
        let r = Recording::new(Duration::from_secs(1), true);
        r.push(Record {
            intended_us: 0,
            done_us: 500,
            outcome: Outcome::Ok,
            route: 0,
        });
        r.push(Record {
            intended_us: 2_000_000,
            done_us: 2_100_000,
            outcome: Outcome::Reset,
            route: 0,
        });
        r.push(Record {
            intended_us: 2_000_000,
            done_us: 2_300_000,
            outcome: Outcome::Missed,
            route: 0,
        });
        let w = r.windows();
        assert_eq!(w.len(), 3);
        assert_eq!(w[1].counts.total(), 0);
        assert_eq!(w[2].counts.failed(), 2);
        assert_eq!(w[2].counts.sent(), 1);
        assert_eq!(w[2].latency.count, 1);
        assert_eq!(w[2].failed_latency.count, 1);
        assert_eq!(w[2].ok_latency.count, 0);
        assert_eq!(w[0].ok_latency.p50_us, Some(500));
        assert_eq!(r.totals().total(), 3);
        assert_eq!(r.records().len(), 3);
    }

    fn ok(intended_us: u64, done_us: u64) -> Record {
        Record {
            intended_us,
            done_us,
            outcome: Outcome::Ok,
            route: 0,
        }
    }

    /// Issue #14: memory stays flat: forgotten records leave the log but not the figures, and
    /// incremental readers keep their place.
    #[test]
    fn forgetting_keeps_aggregates_and_sequence_numbers() {
        let r = Recording::new(Duration::from_secs(1), true);
        for k in 0..100u64 {
            r.push(ok(k * 10_000, k * 10_000 + 500));
        }
        let (_, seen) = r.records_since(0);
        assert_eq!(seen, 100);
        r.forget_before(500_000);
        assert_eq!(r.records().len(), 50);
        assert!(r.records().iter().all(|rec| rec.done_us >= 500_000));
        for k in 100..110u64 {
            r.push(ok(k * 10_000, k * 10_000 + 500));
        }
        let (new, next) = r.records_since(seen);
        assert_eq!((new.len(), next), (10, 110));
        assert_eq!(new[0].intended_us, 1_000_000);
        // A reader that fell behind the watermark gets what is left.
        assert_eq!(r.records_since(10).0.len(), 60);
        assert_eq!(r.totals().ok(), 110);
        assert_eq!(r.windows()[0].counts.ok(), 100);
        // The watermark never moves back; below it nothing is kept.
        r.forget_before(100);
        assert_eq!(r.kept_from_us(), 500_000);
        r.push(ok(0, 400_000));
        assert!(
            r.records()
                .iter()
                .all(|rec| rec.done_us >= 500_000 || rec.done_us == 400_000)
        );
    }

    #[test]
    fn records_are_copied_whole_and_in_order_across_chunks() {
        // More than three of `records`' chunks, some forgotten first.
        let r = Recording::new(Duration::from_secs(1), true);
        let n = 3 * 16_384 + 123;
        for k in 0..n as u64 {
            r.push(ok(k, k + 10));
        }
        let all = r.records();
        assert_eq!(all.len(), n);
        assert!(
            all.windows(2)
                .all(|w| w[0].intended_us + 1 == w[1].intended_us)
        );
        r.forget_before(20_000);
        let kept = r.records();
        assert_eq!(kept.len(), n - (20_000 - 10));
        assert_eq!(kept[0].done_us, 20_000);
        assert_eq!(kept.last().map(|x| x.intended_us), Some(n as u64 - 1));
    }

    /// Issue #14: the figures of a span between two cuts, merged from segments, equal the
    /// figures of its records, even for a cut made after the requests completed.
    #[test]
    fn span_figures_between_cuts_match_the_records() {
        let r = Recording::new(Duration::from_secs(1), true);
        r.cut_at(1_000_000).expect("cut before any request");
        for k in 0..300u64 {
            let t = k * 10_000;
            let (done, outcome) = if (150..200).contains(&k) {
                (t + 5_000, Outcome::Reset)
            } else {
                (t + 1_000 + k, Outcome::Ok)
            };
            r.push(Record {
                intended_us: t,
                done_us: done,
                outcome,
                route: 0,
            });
        }
        // Cut in the past: the requests completing after 2 s move to the new segment.
        r.cut_at(2_000_000).expect("records kept");
        let f = r.span_figures(1_000_000, 2_000_000).expect("both ends cut");
        assert_eq!(f.counts.total(), 100);
        assert_eq!(f.counts.failed(), 50);
        assert_eq!(f.ok_latency.count, 50);
        assert_eq!(f.failed_latency.p50_us.map(|v| v / 10), Some(500));
        let rest = r.span_figures(2_000_000, u64::MAX).expect("cut");
        assert_eq!(rest.counts.total(), 100);
        assert_eq!(rest.ok_latency.max_us.map(|v| v / 10), Some(129));
        assert_eq!(
            r.span_figures(0, 1_000_000).map(|f| f.counts.total()),
            Some(100)
        );
        assert!(r.span_figures(1_500_000, 2_000_000).is_none(), "not a cut");
        // Below the watermark a new cut cannot be exact: refused, never approximated.
        r.forget_before(2_500_000);
        assert!(r.cut_at(2_200_000).is_err());
        assert!(r.cut_at(2_000_000).is_ok(), "an existing cut stays");
    }

    /// Issue #14: a missed request counts in the window of its intended start.
    #[test]
    fn missed_requests_count_where_they_were_due() {
        let r = Recording::new(Duration::from_secs(1), false);
        r.push(ok(0, 100));
        r.push(Record {
            intended_us: 300_000,
            done_us: 5_300_000,
            outcome: Outcome::Missed,
            route: 0,
        });
        r.push(ok(5_000_000, 5_100_000));
        let w = r.windows();
        assert_eq!(w[0].counts.get(Outcome::Missed), 1);
        assert_eq!(w[5].counts.get(Outcome::Missed), 0);
        assert_eq!(r.totals().get(Outcome::Missed), 1);
    }

    /// Issue #14: rattle is behind only when its own lag stays over 10 ms for a second; a
    /// wait for a permit (the target's doing) or a short hiccup is not enough.
    #[test]
    fn behind_needs_a_second_of_own_lag() {
        let r = Recording::new(Duration::from_secs(1), false);
        // Late by 50 ms for 2 s, but each waited for a permit until just before its send.
        for k in 0..200u64 {
            let t = k * 10_000;
            r.sent(t, t + 49_000, t + 50_000);
        }
        assert_eq!(r.send_lag().behind, Behind::default());
        assert_eq!(r.send_lag().run.over_10ms, 200);
        // A 500 ms hiccup of own lag, then on time.
        for k in 210..260u64 {
            let t = k * 10_000;
            r.sent(t, t, t + 20_000);
        }
        r.sent(2_700_000, 2_700_000, 2_700_100);
        let lag = r.send_lag();
        assert_eq!(lag.behind.since_us, None);
        assert!(!lag.behind.now);
        assert_eq!(lag.behind.longest_us, 490_000);
        // 1.2 s of own lag: behind, from the first late send of the stretch.
        for k in 0..=120u64 {
            let t = 3_000_000 + k * 10_000;
            r.sent(t, t, t + 15_000);
        }
        let lag = r.send_lag();
        assert_eq!(lag.behind.since_us, Some(3_015_000));
        assert!(lag.behind.now);
        assert_eq!(r.windows()[3].send_lag.count, 99, "sent in 3.015..=3.995 s");
        assert_eq!(r.windows()[3].send_lag.p50_us.map(|v| v / 100), Some(150));
    }

    /// A flooded runtime runs the task it spawned last at once now and then: a few on-time
    /// sends among many late ones do not break the stretch; a slot mostly on time does.
    #[test]
    fn a_few_on_time_sends_do_not_hide_a_backlog() {
        let r = Recording::new(Duration::from_secs(1), false);
        // 1.5 s at 20 sends per 10 ms slot, one of them on time, the rest 200 ms late.
        for k in 0..3_000u64 {
            let t = k * 500;
            let own = if k % 20 == 0 { 100 } else { 200_000 };
            r.sent(t, t, t + own);
        }
        let b = r.send_lag().behind;
        assert_eq!(b.since_us, Some(200_500), "the first late send");
        assert!(b.now && b.longest_us >= 1_000_000, "{b:?}");
        // Half on time for a slot: the stretch ends.
        let r2 = Recording::new(Duration::from_secs(1), false);
        for k in 0..3_000u64 {
            let t = k * 500;
            let on_time = k % 20 == 0 || (1_000..1_020).contains(&k) && k % 2 == 0;
            r2.sent(t, t, t + if on_time { 100 } else { 200_000 });
        }
        let b = r2.send_lag().behind;
        assert_eq!(b.since_us, None, "{b:?}");
        assert!(b.longest_us < 1_000_000, "{b:?}");
    }

    /// Issue #14: a saturated CPU puts rattle behind after 2 s of it, even with on-time
    /// sends (a small in-flight cap hides the lag as permit waits); a busy second is not
    /// enough.
    #[test]
    fn a_saturated_cpu_for_two_seconds_is_behind() {
        let r = Recording::new(Duration::from_secs(1), false);
        r.cpu_busy(0, 1_000_000, 0.99);
        r.cpu_busy(1_000_000, 2_000_000, 0.5);
        r.cpu_busy(2_000_000, 3_000_000, 0.97);
        r.sent(3_000_000, 3_000_000, 3_000_100);
        assert_eq!(r.send_lag().behind, Behind::default());
        r.cpu_busy(3_000_000, 4_000_000, 0.96);
        let b = r.send_lag().behind;
        assert_eq!(b.since_us, Some(2_000_000));
        assert!(b.cpu_saturated && b.now);
        r.cpu_busy(4_000_000, 5_000_000, 0.2);
        assert!(!r.send_lag().behind.now);
        assert_eq!(
            r.send_lag().behind.since_us,
            Some(2_000_000),
            "once behind, for good"
        );
    }

    /// Issue #14: a runtime that wakes its tasks over 10 ms late for a second is behind, even
    /// when sends look on time (the permits were held by requests it had not polled); a
    /// shorter stall is not.
    #[test]
    fn a_runtime_stalled_for_a_second_is_behind() {
        let r = Recording::new(Duration::from_secs(1), false);
        // The canary: a wake-up 30 ms late every 40 ms, or on time every 10 ms.
        let late = |from: u64, to: u64| {
            let mut t = from;
            while t + 40_000 <= to {
                t += 40_000;
                r.runtime_lag(t, 30_000);
            }
        };
        let on_time = |from: u64, to: u64| {
            let mut t = from;
            while t + 10_000 <= to {
                t += 10_000;
                r.runtime_lag(t, 500);
            }
        };
        // 600 ms stalled, then on time: not behind.
        late(0, 600_000);
        on_time(600_000, 1_000_000);
        assert_eq!(r.send_lag().behind, Behind::default());
        // From 1 s, stalled for 1.2 s, with a wake-up on time now and then (as a flooded runtime
        // does when its queue happens to be short): behind, from the first late wake-up's due
        // instant in the trailing second.
        late(1_000_000, 1_600_000);
        r.runtime_lag(1_605_000, 100);
        late(1_600_000, 2_200_000);
        r.sent(2_200_000, 2_200_000, 2_200_100);
        let b = r.send_lag().behind;
        assert_eq!(b.since_us, Some(1_010_000));
        assert!(b.runtime_stalled && b.now && !b.cpu_saturated);
        // A second on time: no longer behind now (behind once, for good).
        on_time(2_200_000, 3_300_000);
        let b = r.send_lag().behind;
        assert!(!b.now);
        assert_eq!(b.since_us, Some(1_010_000));
        // One wake-up a whole second late is behind at once.
        let r2 = Recording::new(Duration::from_secs(1), false);
        r2.runtime_lag(1_500_000, 1_200_000);
        assert_eq!(r2.send_lag().behind.since_us, Some(300_000));
    }
}
