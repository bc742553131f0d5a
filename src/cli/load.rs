//! `rattle load`: the load generator on its own, as a load tester in the manner of wrk and oha.
//!
//! Only the command's edge lives here: parsing the flags into a [`LoadConfig`], choosing the
//! closed model ([`load::closed`], throughput) or the open model ([`load::start_with`], `--rate`),
//! the progress line, Ctrl-C, and rendering the figures. Both text and `--json` are rendered from
//! one [`LoadReport`], so they cannot disagree. Figures are aggregated as the run goes (one
//! HdrHistogram, counters), never kept per request, so a long run costs no more memory than a
//! short one.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::experiment::{HumanDuration, Rate};
use crate::load::closed::{self, ClosedConfig};
use crate::load::stats::{FlatSink, Stats, StatusCounts};
use crate::load::{self, ClientOptions, HttpVersion, LATE_AFTER, LoadConfig, LoadSummary};
use crate::metrics::{Outcome, RunClock};

/// One `-H "Name: value"` header.
#[derive(Debug, Clone)]
pub struct Header(pub HeaderName, pub HeaderValue);

fn parse_header(s: &str) -> Result<Header, String> {
    // Never echo the argument: it is likely a credential (`Authorization: Bearer ...`).
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| "invalid header: expected \"Name: value\", found no colon".to_string())?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name {:?}", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("invalid value for header {name} (value not shown)"))?;
    Ok(Header(name, value))
}

fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("invalid URL {:?}: {e}", crate::redact::redact_url_loose(s)))?;
    match uri.scheme_str() {
        Some(sc) if sc.eq_ignore_ascii_case("http") || sc.eq_ignore_ascii_case("https") => {}
        _ => {
            return Err(format!(
                "invalid URL {:?}: expected http:// or https://",
                crate::redact::redact_url_loose(s)
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "invalid URL {:?}: no host",
            crate::redact::redact_url_loose(s)
        ));
    }
    Ok(uri)
}

/// A clap value parser whose error never repeats the argument: clap's own
/// "invalid value '<argument>'" would print a header's secret or a URL's password. The message
/// of `parse` says what is wrong, showing only what may be shown.
#[derive(Clone, Copy)]
struct Quiet<T: Clone + Send + Sync + 'static>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Quiet<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let arg = arg.map_or_else(|| "argument".to_string(), ToString::to_string);
        let fail = |msg: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{arg}': {msg}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value
            .to_str()
            .ok_or_else(|| fail("not UTF-8".to_string()))?;
        (self.0)(s).map_err(fail)
    }
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.as_bytes()).map_err(|_| format!("invalid method {s:?}"))
}

fn parse_positive_duration(s: &str) -> Result<HumanDuration, String> {
    let d: HumanDuration = s.parse().map_err(|e| format!("{e}"))?;
    if d.get().is_zero() {
        return Err(format!("invalid duration {s:?}: must be above zero"));
    }
    Ok(d)
}

/// `rattle load`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --rate: closed model, each connection sends its next request \
    as soon as the previous response ended (throughput). With --rate: open model, requests start \
    on schedule whatever the responses do, latency counts from each one's intended start, and \
    -c caps the requests in flight. Exit 0 if any request succeeded, 1 if none did, 2 on bad \
    input. Ctrl-C stops early and prints the figures so far."
)]
pub struct LoadArgs {
    /// Target URL (http:// or https://).
    #[arg(value_parser = Quiet(parse_url))]
    pub url: Uri,
    /// Connections (closed model), or the cap on requests in flight (open model).
    #[arg(short = 'c', long, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// How long to run.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: HumanDuration,
    /// Open model at this rate: `5000/s` (or `5000`, `300/m`).
    #[arg(long, value_name = "R/s")]
    pub rate: Option<Rate>,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET", value_parser = parse_method)]
    pub method: Method,
    /// Request header, `"Name: value"` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = Quiet(parse_header))]
    pub headers: Vec<Header>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body, read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: HumanDuration,
    /// HTTP/2: h2c with prior knowledge for http://, ALPN h2 for https://.
    #[arg(long)]
    pub http2: bool,
    /// HTTP/1.1 only, also over https:// (where ALPN would otherwise choose).
    #[arg(long, conflicts_with = "http2")]
    pub http1: bool,
    /// Do not verify the server's certificate.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Trust the CA certificates of this PEM file too.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// HTTP/2 streams per connection (closed model): each of the -c connections keeps this
    /// many requests in flight, so `-c 50 --streams 10` has 500 in flight over 50 connections
    /// (as `h2load -c 50 -m 10`). Needs --http2.
    #[arg(long, default_value_t = 1, requires = "http2", conflicts_with = "rate",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub streams: u32,
    /// Threads of the closed model [default: the CPUs this process may run on].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// Latency percentiles in ms, from intended start (open model) or from the send (closed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

/// The open model's pacing figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenFigures {
    /// The rate asked for, requests/s.
    pub target_rate: f64,
    /// Requests sent per second of the run.
    pub achieved_rate: f64,
    /// Requests whose time came: `sent + missed + unsent`.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Sent more than `late_after_ms` after their intended start (behind a stalled target).
    pub late: u64,
    /// The lateness threshold, ms.
    pub late_after_ms: f64,
    /// Never sent: no connection was free before their timeout ran out.
    pub missed: u64,
    /// Not sent because the run stopped while they waited for a connection with their timeout
    /// not yet run out: neither sent nor missed, and not counted in `requests` (the stop, not
    /// the target, ended them).
    pub unsent: u64,
}

/// The figures of one `rattle load` run: what `--json` prints and the text is rendered from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    /// Target (any `user:password@` hidden).
    pub url: String,
    /// Request method.
    pub method: String,
    /// `closed` or `open`.
    pub model: String,
    /// `auto`, `http1` or `http2`.
    pub http: String,
    /// Connections (closed) or in-flight cap (open).
    pub connections: u32,
    /// Requested duration, s.
    pub duration_s: f64,
    /// Measured time from start to stop, s.
    pub elapsed_s: f64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// Every request counted: sent (completed with a response or an error) plus missed (never
    /// sent), as in report.json's totals. `requests == ok + failed == sent + missed`.
    pub requests: u64,
    /// Of `requests`, those sent.
    pub sent: u64,
    /// Of `requests`, successes (2xx/3xx).
    pub ok: u64,
    /// Of `requests`, failures, missed included: the sum of `errors`.
    pub failed: u64,
    /// Of `failed`, never sent: no connection was free before their timeout ran out (open
    /// model; always 0 in the closed model).
    pub missed: u64,
    /// Requests sent per second: `sent / elapsed_s`.
    pub requests_per_sec: f64,
    /// Latency percentiles; none when nothing completed.
    pub latency_ms: Option<LatencyMs>,
    /// Responses by status code.
    pub status_codes: BTreeMap<String, u64>,
    /// Failures by class (`status_4xx`, `status_5xx`, `refused`, `reset`, `timeout`, `other`,
    /// `missed`); classes with none are left out.
    pub errors: BTreeMap<String, u64>,
    /// Pacing figures of the open model.
    pub open: Option<OpenFigures>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LoadReport {
    fn latency(stats: &Stats) -> Option<LatencyMs> {
        let h = &stats.latency;
        (!h.is_empty()).then(|| LatencyMs {
            min: ms(h.min()),
            mean: h.mean().round() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }

    /// Text in the manner of wrk and oha.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("  {k:<14}{v}\n"));
        s.push_str(&format!(
            "rattle load {} {} · {} model · {} connections · {} · {:.1} s{}\n",
            self.method,
            self.url,
            self.model,
            self.connections,
            self.http,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        ));
        // The figures add up as the errors line does: ok + failed = requests, and failed is
        // the sum of the error classes, missed included.
        let requests = if self.missed == 0 {
            format!(
                "{} in {:.2} s, {:.1}/s (ok {}, failed {})",
                self.requests, self.elapsed_s, self.requests_per_sec, self.ok, self.failed
            )
        } else {
            format!(
                "{} in {:.2} s: {} sent, {:.1}/s, {} missed (ok {}, failed {} incl. the missed)",
                self.requests,
                self.elapsed_s,
                self.sent,
                self.requests_per_sec,
                self.missed,
                self.ok,
                self.failed
            )
        };
        line(&mut s, "requests", requests);
        match &self.latency_ms {
            Some(l) => line(
                &mut s,
                "latency",
                format!(
                    "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (min {:.3} ms, mean {:.3} ms)",
                    l.p50, l.p90, l.p99, l.p99_9, l.max, l.min, l.mean
                ),
            ),
            None => line(&mut s, "latency", "none (nothing completed)".into()),
        }
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        line(&mut s, "status codes", join(&self.status_codes));
        line(&mut s, "errors", join(&self.errors));
        if let Some(o) = &self.open {
            line(
                &mut s,
                "open model",
                format!(
                    "target {:.1}/s, achieved {:.1}/s ({:.3}%), scheduled {}, sent {}, late (> {} ms) {}, missed {}, unsent at the stop {}",
                    o.target_rate,
                    o.achieved_rate,
                    if o.target_rate > 0.0 {
                        o.achieved_rate / o.target_rate * 100.0
                    } else {
                        0.0
                    },
                    o.scheduled,
                    o.sent,
                    o.late_after_ms,
                    o.late,
                    o.missed,
                    o.unsent
                ),
            );
        }
        s
    }
}

/// Runs `rattle load`; returns the exit code.
pub async fn load_cmd(args: LoadArgs) -> anyhow::Result<crate::outcome::Outcome> {
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone().into_bytes()),
        // Bounded, regular files only (issue #19): /dev/zero or a FIFO would never end.
        (None, Some(path)) => match crate::fsutil::read_bounded(path, 64 * 1024 * 1024) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                crate::errln!("error: cannot read the body file {}: {e}", path.display());
                return Ok(crate::outcome::Outcome::BadInput);
            }
        },
        (None, None) => Bytes::new(),
    };
    let cfg = LoadConfig {
        url: args.url.clone(),
        method: args.method.clone(),
        headers: args
            .headers
            .iter()
            .map(|h| (h.0.clone(), h.1.clone()))
            .collect(),
        body,
        rate_per_sec: args.rate.map_or(1.0, Rate::per_sec),
        ramp: None,
        timeout: args.timeout.get(),
        max_in_flight: args.connections as usize,
        ok_status: None,
        mix: Vec::new(),
        seed: 0,
    };
    if let Err(e) = cfg.validate() {
        crate::errln!("error: {}", crate::probe::error_chain(&e));
        return Ok(crate::outcome::Outcome::BadInput);
    }
    // Every stream is a task with its own request in flight: bound the total as the open
    // model bounds its in-flight cap.
    let in_flight = u64::from(args.connections) * u64::from(args.streams);
    if in_flight > load::MAX_IN_FLIGHT as u64 {
        crate::errln!(
            "error: --connections {} × --streams {} is {in_flight} requests in flight, above the maximum of {}",
            args.connections,
            args.streams,
            load::MAX_IN_FLIGHT
        );
        return Ok(crate::outcome::Outcome::BadInput);
    }
    let version = if args.http2 {
        HttpVersion::Http2
    } else if args.http1 {
        HttpVersion::Http1
    } else {
        HttpVersion::Auto
    };
    let client = ClientOptions {
        version,
        insecure: args.insecure,
        ca_file: args.cacert.clone(),
        minimal_h1: true,
    };
    let stop = CancellationToken::new();
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let report = match args.rate {
        None => {
            let threads = args.threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |t| t as usize,
            );
            let closed_cfg = ClosedConfig {
                load: cfg,
                connections: args.connections as usize,
                threads,
                streams: args.streams as usize,
                client,
            };
            let handle = match closed::start(closed_cfg, stop.clone()).await {
                Ok(h) => h,
                Err(e) => {
                    crate::errln!("error: {}", crate::probe::error_chain(&e));
                    return Ok(crate::outcome::Outcome::BadInput);
                }
            };
            let started = Instant::now();
            let interrupted = wait(&args, started, progress, || handle.progress()).await;
            stop.cancel();
            let elapsed = started.elapsed();
            let stats = handle.finish().await?;
            build_report(&args, version, &stats, None, elapsed, interrupted)
        }
        Some(rate) => {
            let sink = FlatSink::default();
            let statuses = Arc::new(StatusCounts::default());
            let clock = RunClock::start_now();
            let handle = match load::start_with(
                cfg,
                &client,
                Some(statuses.clone()),
                clock,
                0,
                sink.clone(),
                stop.clone(),
            ) {
                Ok(h) => h,
                Err(e) => {
                    crate::errln!("error: {}", crate::probe::error_chain(&e));
                    return Ok(crate::outcome::Outcome::BadInput);
                }
            };
            let started = clock.origin();
            let interrupted = wait(&args, started, progress, || {
                let p = handle.progress();
                (p.sent, p.missed)
            })
            .await;
            stop.cancel();
            let elapsed = started.elapsed();
            let summary = handle.finish().await;
            let mut stats = sink.stats();
            stats.statuses = statuses.snapshot();
            build_report(
                &args,
                version,
                &stats,
                Some((rate.per_sec(), summary)),
                elapsed,
                interrupted,
            )
        }
    };
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", report.render_text());
    }
    Ok(if report.ok > 0 {
        crate::outcome::Outcome::Pass
    } else {
        crate::outcome::Outcome::Fail
    })
}

/// Waits for the duration or Ctrl-C (true), drawing the progress line on stderr meanwhile.
async fn wait(
    args: &LoadArgs,
    started: Instant,
    progress: bool,
    counts: impl Fn() -> (u64, u64),
) -> bool {
    let deadline = started + args.duration.get();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    let interrupted = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break false,
            () = &mut signal => break true,
            _ = tick.tick(), if progress => {
                let (done, second) = counts();
                let secs = started.elapsed().as_secs_f64();
                let label = if args.rate.is_some() { "missed" } else { "failed" };
                let mut err = std::io::stderr();
                let _ = write!(
                    err,
                    "\r\x1b[2K  {secs:>5.1} s / {:.0} s  {done} requests  {:.0}/s  {second} {label}",
                    args.duration.get().as_secs_f64(),
                    done as f64 / secs.max(1e-9),
                );
                let _ = err.flush();
            }
        }
    };
    if progress {
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
    interrupted
}

fn build_report(
    args: &LoadArgs,
    version: HttpVersion,
    stats: &Stats,
    open: Option<(f64, LoadSummary)>,
    elapsed: Duration,
    interrupted: bool,
) -> LoadReport {
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let counts = &stats.counts;
    let requests = counts.total();
    let sent = counts.sent();
    let ok = counts.ok();
    let errors = Outcome::ALL
        .iter()
        .filter(|o| **o != Outcome::Ok)
        .filter_map(|&o| {
            let n = counts.get(o);
            (n > 0).then(|| (o.as_str().to_string(), n))
        })
        .collect();
    LoadReport {
        url: load::redacted(&args.url),
        method: args.method.to_string(),
        model: if open.is_some() { "open" } else { "closed" }.into(),
        http: match version {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "http1",
            HttpVersion::Http2 => "http2",
        }
        .into(),
        connections: args.connections,
        duration_s: args.duration.get().as_secs_f64(),
        elapsed_s,
        interrupted,
        requests,
        sent,
        ok,
        failed: counts.failed(),
        missed: counts.get(Outcome::Missed),
        requests_per_sec: sent as f64 / elapsed_s,
        latency_ms: LoadReport::latency(stats),
        status_codes: stats
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect(),
        errors,
        open: open.map(|(target_rate, s)| OpenFigures {
            target_rate,
            achieved_rate: s.sent as f64 / elapsed_s,
            scheduled: s.scheduled,
            sent: s.sent,
            late: s.late,
            late_after_ms: LATE_AFTER.as_secs_f64() * 1000.0,
            missed: s.missed,
            unsent: s.unsent,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_the_json_numbers() {
        let mut stats = Stats::default();
        for us in [1_000, 2_000, 3_000, 20_000] {
            stats.record(Outcome::Ok, us);
            stats.add_status(200);
        }
        stats.record(Outcome::Reset, 500);
        let args = LoadArgs {
            url: Uri::from_static("http://u:secret@127.0.0.1:1/"),
            connections: 2,
            duration: HumanDuration(Duration::from_secs(1)),
            rate: None,
            method: Method::GET,
            headers: vec![],
            body: None,
            body_file: None,
            timeout: HumanDuration(Duration::from_secs(1)),
            http2: false,
            http1: false,
            insecure: false,
            cacert: None,
            streams: 1,
            threads: None,
            json: true,
            no_progress: true,
        };
        let r = build_report(
            &args,
            HttpVersion::Auto,
            &stats,
            Some((
                5.0,
                LoadSummary {
                    scheduled: 6,
                    sent: 5,
                    missed: 1,
                    late: 2,
                    unsent: 0,
                },
            )),
            Duration::from_secs(1),
            false,
        );
        assert_eq!((r.requests, r.ok, r.failed), (5, 4, 1));
        let text = r.render_text();
        assert!(!text.contains("secret"), "{text}");
        for needle in [
            "5 in 1.00 s, 5.0/s (ok 4, failed 1)",
            "p50 2.000 ms",
            "max 20.015 ms",
            "200: 4",
            "reset: 1",
            "late (> 10 ms) 2, missed 1",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: LoadReport = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
    }

    #[test]
    fn header_and_url_parsing() {
        assert!(parse_header("X-A: b").is_ok());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("/path").is_err());
        assert!(parse_url("http://").is_err());
    }
}
