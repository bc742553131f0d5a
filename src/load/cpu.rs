//! Is rattle's CPU saturated? Once a second, reads how long each of the runtime's worker
//! threads ran and waited to run (Linux's `/proc/self/task/<tid>/schedstat`: time on a CPU and
//! time runnable in a run queue). A worker that was running or waiting to run for nearly the
//! whole second never went idle: rattle wanted more CPU than it got, so its requests waited in
//! its own queues before going out, and a small in-flight cap then makes that wait look like a
//! slow target. That is the case send lag alone cannot see; the sink hears about every such
//! second ([`super::RecordSink::cpu_busy`]).
//!
//! Elsewhere than Linux, or without `/proc`, it reports nothing.
//!
//! And is rattle's runtime stalled? [`stalls`] sleeps [`CANARY`] at a time on the load's runtime
//! and reports how late each wake-up came ([`super::RecordSink::runtime_lag`]). A runtime whose
//! queues hold more ready tasks than it can poll wakes the canary late, as it does every
//! response and every timeout: then each latency it measures includes its own queueing. That
//! case hides from send lag when every in-flight permit is held by requests rattle has not yet
//! polled to completion (the permits look held by the target), and from the CPU test when the
//! kernel's own network work (softirq) takes the rest of the machine.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RecordSink;
use crate::metrics::RunClock;

/// How often the workers are sampled.
const EVERY: Duration = Duration::from_secs(1);

/// The canary's sleep: its wake-up is late by the runtime's queueing (plus the timer's 1 ms
/// granularity, well under the 10 ms that counts as late).
const CANARY: Duration = Duration::from_millis(10);

/// The thread names tokio gives its workers, as `comm` shows them (15 bytes): older tokio's
/// "tokio-runtime-worker", and "tokio-rt-worker" (the tokio this builds with, 1.54).
const WORKER_COMM: [&str; 2] = ["tokio-runtime-w", "tokio-rt-worker"];

/// Nanoseconds each worker thread ran and waited, by thread id.
fn sample() -> Vec<(u64, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !WORKER_COMM.contains(&comm.trim_end()) {
            continue;
        }
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let (run, wait) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        out.push((tid, run.saturating_add(wait)));
    }
    out
}

/// The busiest worker's share of the last interval spent running or waiting to run, from two
/// samples `dt_ns` apart.
fn busiest(before: &[(u64, u64)], after: &[(u64, u64)], dt_ns: u64) -> Option<f64> {
    if dt_ns == 0 {
        return None;
    }
    after
        .iter()
        .filter_map(|&(tid, t)| {
            let (_, t0) = before.iter().find(|(b, _)| *b == tid)?;
            Some(t.saturating_sub(*t0) as f64 / dt_ns as f64)
        })
        .reduce(f64::max)
}

/// Samples until `stop`, telling `sink` each second how busy the busiest worker was.
pub(super) async fn watch<K: RecordSink>(clock: RunClock, sink: K, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = (std::time::Instant::now(), sample());
    if last.1.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (std::time::Instant::now(), sample());
        let dt = u64::try_from(now.0.duration_since(last.0).as_nanos()).unwrap_or(u64::MAX);
        if let Some(busy) = busiest(&last.1, &now.1, dt) {
            let to_us = clock.now_us();
            let from_us = to_us.saturating_sub(dt / 1000);
            sink.cpu_busy(from_us, to_us, busy);
        }
        last = now;
    }
}

/// Sleeps [`CANARY`] at a time until `stop` and reports each wake-up's lateness to `sink`.
pub(super) async fn stalls<K: RecordSink>(clock: RunClock, sink: K, stop: CancellationToken) {
    loop {
        let asleep = std::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CANARY) => {}
        }
        let late = asleep.elapsed().saturating_sub(CANARY);
        let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        sink.runtime_lag(clock.now_us(), late_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_worker_share() {
        let before = [(1, 100), (2, 1_000)];
        let after = [(1, 900_100), (2, 1_000), (3, 5)];
        assert_eq!(busiest(&before, &after, 1_000_000), Some(0.9));
        assert_eq!(busiest(&before, &after, 0), None);
        assert_eq!(busiest(&[], &after, 10), None);
    }
}
