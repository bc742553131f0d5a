//! `rattle stress`: the stress engine ([`crate::stress`]) as a command. It is what the local
//! `stress` fault runs as its child, and what `pod-stress` runs in an ephemeral container, so
//! its flags are a contract: `--cpu-workers N --cpu-load PCT --memory SIZE --ramp DURATION
//! --duration DURATION`. It prints one line once the stress runs (the parent waits for it),
//! stops itself at the deadline, and exits 0 at once on SIGTERM or SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::experiment::HumanDuration;
use crate::outcome::Outcome;
use crate::stress::{self, Ended, StressConfig};

/// `rattle stress`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  rattle stress --cpu-workers 2 --cpu-load 80 --duration 30s\n  \
                  rattle stress --memory 256MiB --ramp 10s --duration 1m\n\n\
                  Each CPU worker burns --cpu-load percent of one core, measured on its own CPU \
                  time: CPU lost to other processes is caught up (up to 1 s owed), but a worker \
                  cannot get more than the machine gives it. Memory is written page by page, so \
                  it is resident. The process stops itself after --duration even if \
                  whatever started it is gone; SIGTERM or SIGINT stop it at once (exit 0)."
)]
pub struct StressArgs {
    /// CPU worker threads, each burning --cpu-load percent of one core.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cpu_workers: u32,
    /// The share of one core each CPU worker burns: 1 to 100 (a trailing % is allowed).
    #[arg(long, value_name = "PCT", default_value = "100", value_parser = parse_percent)]
    pub cpu_load: u32,
    /// Memory to allocate and keep resident: bytes or a size like 256MiB, 1.5GiB, 100MB.
    #[arg(long, value_name = "SIZE", value_parser = stress::parse_bytes)]
    pub memory: Option<u64>,
    /// Grow the CPU load and the memory linearly from nothing over this time (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub ramp: HumanDuration,
    /// How long to stress (e.g. 30s, 5m); the process exits at the end.
    #[arg(long, value_name = "DURATION")]
    pub duration: HumanDuration,
    /// Internal: a label the local `stress` fault gives its child, so a revert finds exactly it.
    #[arg(long, value_name = "ID", hide = true)]
    pub tag: Option<String>,
}

fn parse_percent(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    t.parse::<u32>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| format!("{s:?} is not a whole percent from 1 to 100"))
}

/// Runs `rattle stress`: 0 at the deadline or on a signal, 2 for bad flags or memory that
/// could not be had.
pub async fn stress_cmd(args: StressArgs) -> anyhow::Result<Outcome> {
    let cfg = StressConfig {
        cpu_workers: args.cpu_workers,
        cpu_load: args.cpu_load,
        memory: args.memory.unwrap_or(0),
        ramp: args.ramp.get(),
        duration: args.duration.get(),
    };
    if let Err(e) = cfg.validate() {
        crate::errln!("error: rattle stress: {e}");
        return Ok(Outcome::BadInput);
    }
    // The handlers are in place before the stress starts (and before its first line tells a
    // parent it runs), so a SIGTERM is always a clean stop, never the default death.
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            stress::run(&cfg, &stop, || {
                crate::outln!(
                    "rattle stress: pid {} running: {}",
                    std::process::id(),
                    cfg.describe()
                )
            })
        })
    };
    tokio::pin!(engine);
    let joined = tokio::select! {
        r = &mut engine => r,
        _ = async { tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} } } => {
            stop.store(true, Ordering::Relaxed);
            engine.await
        }
    };
    match joined {
        Ok(Ok(Ended::Deadline)) => {
            crate::outln!("rattle stress: done ({} elapsed)", args.duration);
            Ok(Outcome::Pass)
        }
        Ok(Ok(Ended::Stopped)) => {
            crate::outln!("rattle stress: stopped by a signal");
            Ok(Outcome::Pass)
        }
        Ok(Err(e)) => {
            crate::errln!("error: rattle stress: {e}");
            Ok(Outcome::BadInput)
        }
        Err(e) => Err(anyhow::anyhow!("stress engine: {e}")),
    }
}
