//! The stress engine behind `rattle stress`: CPU workers that each burn a share of one core,
//! and memory that is allocated and touched page by page so the resident set is real, both
//! optionally ramped up, for a bounded time.
//!
//! It is ground floor (it imports nothing of rattle's) because it runs in places where the rest
//! of rattle does not: as the child process of the local `stress` fault, and inside a pod's
//! ephemeral container for `pod-stress`, where nothing supervises it. So it owns its deadline:
//! the deadline is computed once from a monotonic clock when it starts, and every loop checks
//! it, so the stress never outlives its duration even when whatever started it is gone.
//!
//! The CPU load is a feedback loop on each worker thread's *own* CPU time
//! (`/proc/thread-self/schedstat`, nanoseconds), not a duty cycle of wall time: a worker spins
//! while the CPU time it has used is behind `load × elapsed` (the integral of the ramp), and
//! sleeps while it is ahead. On a busy machine a duty cycle of wall time burns less than asked
//! (the spin is preempted); the feedback catches up instead, with at most [`MAX_DEBT`] owed so
//! that a long starvation does not turn into a long burst at 100 %.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most CPU time a worker owes and catches up on after being starved.
pub const MAX_DEBT: Duration = Duration::from_secs(1);

/// The longest a worker spins or sleeps between two checks of its CPU time, the deadline and
/// the stop flag: what bounds how late it stops.
const SLICE: Duration = Duration::from_millis(10);

/// Memory is allocated and touched in chunks of this size.
const CHUNK: u64 = 1 << 20;

/// The most CPU workers one stress process starts.
pub const MAX_WORKERS: u32 = 1024;

/// The longest stress (7 days): a deadline far beyond any experiment, and far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors of the stress engine.
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// A setting is out of range; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The memory asked for could not be allocated.
    #[error("allocating memory: {held} of {asked} bytes held when the allocator refused more")]
    Alloc {
        /// Bytes already held.
        held: u64,
        /// Bytes asked for.
        asked: u64,
    },
    /// A worker thread could not be started.
    #[error("starting a CPU worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Result alias of this module.
pub type Result<T, E = StressError> = std::result::Result<T, E>;

/// What to stress, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StressConfig {
    /// CPU worker threads (0: no CPU stress).
    pub cpu_workers: u32,
    /// The share of one core each worker burns, in percent (1 to 100).
    pub cpu_load: u32,
    /// Bytes of memory to allocate and touch (0: no memory stress).
    pub memory: u64,
    /// Time over which the CPU load and the memory grow linearly from nothing to what is asked
    /// (zero: all at once).
    pub ramp: Duration,
    /// How long the stress lasts; it stops itself at the end.
    pub duration: Duration,
}

impl StressConfig {
    /// Checks every setting; the message names the flag or field (`cpu_workers`, ...).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StressError::Invalid(m));
        if self.cpu_workers > MAX_WORKERS {
            return bad(format!(
                "cpu_workers: {} is more than {MAX_WORKERS}",
                self.cpu_workers
            ));
        }
        if !(1..=100).contains(&self.cpu_load) {
            return bad(format!(
                "cpu_load: {}% is out of range (1% to 100% of one core per worker)",
                self.cpu_load
            ));
        }
        if self.cpu_workers == 0 && self.memory == 0 {
            return bad("nothing to stress: give cpu_workers and/or memory".into());
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "duration: {:?} is out of range (more than 0, at most 7 days)",
                self.duration
            ));
        }
        if self.ramp > self.duration {
            return bad(format!(
                "ramp: {:?} is longer than the duration {:?}",
                self.ramp, self.duration
            ));
        }
        if let Some(total) = mem_total() {
            if self.memory > total {
                return bad(format!(
                    "memory: {} is more than this machine's memory ({})",
                    format_bytes(self.memory),
                    format_bytes(total)
                ));
            }
        }
        Ok(())
    }

    /// The settings in words: `2 CPU workers at 50%, 256 MiB, ramp 5s, for 30s`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.cpu_workers > 0 {
            parts.push(format!(
                "{} CPU worker{} at {}%",
                self.cpu_workers,
                if self.cpu_workers == 1 { "" } else { "s" },
                self.cpu_load
            ));
        }
        if self.memory > 0 {
            parts.push(format_bytes(self.memory));
        }
        if !self.ramp.is_zero() {
            parts.push(format!("ramp {}", format_duration(self.ramp)));
        }
        format!(
            "{}, for {}",
            parts.join(", "),
            format_duration(self.duration)
        )
    }
}

/// How a stress ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its duration was over.
    Deadline,
    /// It was asked to stop.
    Stopped,
}

/// Runs the stress on the calling thread (memory) and `cpu_workers` threads (CPU) until the
/// deadline or until `stop` is set; `started` is called once everything runs (the first memory
/// step held). Blocking: call it from a thread of its own.
pub fn run(cfg: &StressConfig, stop: &AtomicBool, started: impl FnOnce()) -> Result<Ended> {
    cfg.validate()?;
    let start = Instant::now();
    let deadline = start
        .checked_add(cfg.duration)
        .ok_or_else(|| StressError::Invalid("duration: too long".into()))?;
    // Set when the memory side ends (deadline, stop or an error): the workers follow it.
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut spawned = Ok(());
        for i in 0..cfg.cpu_workers {
            let worker = Worker {
                load: f64::from(cfg.cpu_load) / 100.0,
                ramp: cfg.ramp,
                start,
                deadline,
            };
            let done = &done;
            let r = std::thread::Builder::new()
                .name(format!("stress-cpu-{i}"))
                .spawn_scoped(s, move || worker.run(stop, done));
            if let Err(e) = r {
                spawned = Err(StressError::Thread(e));
                break;
            }
        }
        let result = spawned.and_then(|()| hold_memory(cfg, start, deadline, stop, started));
        done.store(true, Ordering::Relaxed);
        result
    })
}

/// One CPU worker's feedback loop (see the module's comment).
struct Worker {
    load: f64,
    ramp: Duration,
    start: Instant,
    deadline: Instant,
}

impl Worker {
    fn run(&self, stop: &AtomicBool, done: &AtomicBool) {
        let clock = ThreadClock::new();
        let mut forgiven = 0.0_f64;
        loop {
            let now = Instant::now();
            if now >= self.deadline || stop.load(Ordering::Relaxed) || done.load(Ordering::Relaxed)
            {
                return;
            }
            let elapsed = (now - self.start).as_secs_f64();
            let target = self.load * ramp_integral(elapsed, self.ramp.as_secs_f64()) - forgiven;
            let debt = target - clock.used();
            let max_debt = MAX_DEBT.as_secs_f64();
            if debt > max_debt {
                forgiven += debt - max_debt;
            }
            if debt > 0.0 {
                let spin = Duration::from_secs_f64(debt.min(SLICE.as_secs_f64()));
                clock.spin(now + spin);
            } else {
                // Ahead by -debt seconds of CPU: at this load the target catches up after
                // -debt / load seconds of wall time.
                let wait = (-debt / self.load.max(0.01)).clamp(0.0001, SLICE.as_secs_f64());
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
        }
    }
}

/// The integral over [0, t] of a load that grows linearly from 0 to 1 over `ramp` seconds and
/// stays at 1: the CPU seconds one worker at 100 % owes at time `t`.
fn ramp_integral(t: f64, ramp: f64) -> f64 {
    if ramp <= 0.0 {
        t
    } else if t < ramp {
        t * t / (2.0 * ramp)
    } else {
        ramp / 2.0 + (t - ramp)
    }
}

/// A thread's own CPU time: from the kernel where it says (nanoseconds in
/// `/proc/thread-self/schedstat`), else the wall time spent spinning.
struct ThreadClock {
    origin: Option<u64>,
    spun: std::cell::Cell<f64>,
}

impl ThreadClock {
    fn new() -> Self {
        Self {
            origin: thread_cpu_ns(),
            spun: std::cell::Cell::new(0.0),
        }
    }

    /// CPU seconds this thread used since `new`.
    fn used(&self) -> f64 {
        match (self.origin, self.origin.and_then(|_| thread_cpu_ns())) {
            (Some(o), Some(now)) => now.saturating_sub(o) as f64 / 1e9,
            _ => self.spun.get(),
        }
    }

    /// Burns CPU until `until`.
    fn spin(&self, until: Instant) {
        let from = Instant::now();
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        while Instant::now() < until {
            for _ in 0..256 {
                x = std::hint::black_box(x.rotate_left(5) ^ 0x5851_F42D_4C95_7F2D);
            }
        }
        self.spun
            .set(self.spun.get() + from.elapsed().as_secs_f64());
    }
}

/// The calling thread's CPU time in nanoseconds (first field of its schedstat).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Allocates and touches memory as the ramp allows, calls `started` once the first step is
/// held, then holds it all until the deadline or `stop`, and frees it.
fn hold_memory(
    cfg: &StressConfig,
    start: Instant,
    deadline: Instant,
    stop: &AtomicBool,
    started: impl FnOnce(),
) -> Result<Ended> {
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0u64;
    let mut started = Some(started);
    let ended = loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            break Ended::Stopped;
        }
        if now >= deadline {
            break Ended::Deadline;
        }
        let share = if cfg.ramp.is_zero() {
            1.0
        } else {
            ((now - start).as_secs_f64() / cfg.ramp.as_secs_f64()).min(1.0)
        };
        let want = ((cfg.memory as f64) * share) as u64;
        let want = if share >= 1.0 {
            cfg.memory
        } else {
            want.min(cfg.memory)
        };
        // Grow in chunks, checking the stop flag between them: touching a few GiB takes a while.
        while bytes < want && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let n = (want - bytes).min(CHUNK);
            let len = usize::try_from(n).map_err(|_| StressError::Alloc {
                held: bytes,
                asked: cfg.memory,
            })?;
            let mut chunk: Vec<u8> = Vec::new();
            chunk
                .try_reserve_exact(len)
                .map_err(|_| StressError::Alloc {
                    held: bytes,
                    asked: cfg.memory,
                })?;
            // Writing every byte makes every page resident; a fresh allocation may be untouched
            // zero pages that cost no memory at all. Copied a page at a time (a memcpy even in
            // an unoptimised build, where a byte loop would take seconds per GiB).
            static PAGE: [u8; 4096] = [0xA5; 4096];
            while chunk.len() < len {
                let n = (len - chunk.len()).min(PAGE.len());
                chunk.extend_from_slice(&PAGE[..n]);
            }
            held.push(std::hint::black_box(chunk));
            bytes += n;
        }
        if let Some(f) = started.take() {
            f();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(SLICE));
    };
    if let Some(f) = started.take() {
        f();
    }
    // Read back one byte per page, so no optimiser may treat the writes as dead.
    let sum: u64 = held
        .iter()
        .map(|c| c.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>())
        .sum();
    std::hint::black_box(sum);
    drop(held);
    Ok(ended)
}

/// The machine's memory (`MemTotal` of /proc/meminfo), if it says.
fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses a size: a number of bytes (`1048576`) or a number with a unit (`256MiB`, `1.5GiB`,
/// `512M`, `2G`, `64k`, `100MB`): binary units (KiB, MiB, GiB, TiB; K, M, G, T alone are read as
/// binary too, as `free` and Kubernetes' `Mi` mean them) and decimal ones (kB, MB, GB, TB).
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected bytes or a number with a unit, like 256MiB"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size: {num:?} is not a number"))?;
    let mult: u64 = match unit {
        "" | "B" | "b" => 1,
        "K" | "k" | "Ki" | "KiB" | "kiB" => 1 << 10,
        "M" | "Mi" | "MiB" => 1 << 20,
        "G" | "Gi" | "GiB" => 1 << 30,
        "T" | "Ti" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, or kB, MB, GB, TB)"
            ));
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    if bytes.fract() != 0.0 && mult == 1 {
        return Err(format!("{text:?}: a number of bytes must be whole"));
    }
    Ok(bytes as u64)
}

/// A size in the largest binary unit that keeps it readable: `256 MiB`, `1.5 GiB`, `512 B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A size as an experiment file writes it: bytes (`1048576`) or a string with a unit
/// (`256MiB`, see [`parse_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_bytes(s).map(ByteSize)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes, or a number with a unit like 256MiB")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<ByteSize, E> {
                parse_bytes(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{n} is not a size: must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Exact: a rounded "976.6 KiB" would not read back as the bytes asked for.
        s.serialize_u64(self.0)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ByteSize")
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a size: bytes, or a number with a unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB), like 256MiB",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*\\d+(\\.\\d+)?\\s*([KMGT]i?B?|[kKMGT]B|[kKMGT]i|B|b)?\\s*$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StressConfig {
        StressConfig {
            cpu_workers: 1,
            cpu_load: 50,
            memory: 0,
            ramp: Duration::ZERO,
            duration: Duration::from_secs(1),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("100MB"), Ok(100_000_000));
        assert_eq!(parse_bytes(" 4096 "), Ok(4096));
        assert_eq!(parse_bytes("64k"), Ok(65536));
        for bad in ["", "MiB", "12XB", "-1", "1.5", "99999999999TiB", "1e9"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(17), "17 B");
    }

    #[test]
    fn validation_names_the_setting() {
        let err = |c: StressConfig| {
            c.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            err(StressConfig {
                cpu_load: 0,
                ..cfg()
            })
            .starts_with("cpu_load")
        );
        assert!(
            err(StressConfig {
                cpu_load: 101,
                ..cfg()
            })
            .starts_with("cpu_load")
        );
        assert!(
            err(StressConfig {
                cpu_workers: 5000,
                ..cfg()
            })
            .starts_with("cpu_workers")
        );
        assert!(
            err(StressConfig {
                cpu_workers: 0,
                ..cfg()
            })
            .contains("nothing to stress")
        );
        assert!(
            err(StressConfig {
                duration: Duration::ZERO,
                ..cfg()
            })
            .starts_with("duration")
        );
        assert!(
            err(StressConfig {
                ramp: Duration::from_secs(2),
                ..cfg()
            })
            .starts_with("ramp")
        );
        assert!(
            err(StressConfig {
                memory: u64::MAX,
                ..cfg()
            })
            .starts_with("memory")
        );
        assert!(cfg().validate().is_ok());
        assert_eq!(
            StressConfig {
                cpu_workers: 2,
                memory: 256 << 20,
                ramp: Duration::from_secs(5),
                duration: Duration::from_secs(30),
                ..cfg()
            }
            .describe(),
            "2 CPU workers at 50%, 256 MiB, ramp 5s, for 30s"
        );
    }

    #[test]
    fn ramp_integral_is_continuous() {
        assert_eq!(ramp_integral(3.0, 0.0), 3.0);
        assert!((ramp_integral(2.0, 2.0) - 1.0).abs() < 1e-12);
        assert!((ramp_integral(1.0, 2.0) - 0.25).abs() < 1e-12);
        assert!((ramp_integral(5.0, 2.0) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn stops_when_asked_and_holds_memory() {
        let stop = AtomicBool::new(false);
        let c = StressConfig {
            cpu_workers: 1,
            memory: 4 << 20,
            duration: Duration::from_secs(60),
            ..cfg()
        };
        let r = std::thread::scope(|s| {
            let h = s.spawn(|| run(&c, &stop, || stop.store(true, Ordering::Relaxed)));
            h.join().ok()
        });
        assert!(matches!(r, Some(Ok(Ended::Stopped))), "{r:?}");
    }
}
