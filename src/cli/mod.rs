//! Command-line interface: clap types and dispatch only. Every command returns an
//! [`ExitCode`]-like number; `main.rs` maps it to the process's exit status in one place.

use clap::{Parser, Subcommand};

use crate::demo::{self, DemoConfig};
use crate::experiment::HumanDuration;

/// Exit codes of rattle (design: 0 passed, 1 a hypothesis or gate failed, 2 bad input or
/// environment, 3 stopped with all faults reverted, 4 a revert failed).
pub mod exit {
    /// Everything passed.
    pub const OK: i32 = 0;
    /// A hypothesis or gate failed.
    pub const FAILED: i32 = 1;
    /// The input or the environment is wrong.
    pub const BAD_INPUT: i32 = 2;
    /// The run was stopped (stop condition, Ctrl-C) and all faults were reverted.
    pub const ABORTED: i32 = 3;
    /// A revert failed: something may still be broken.
    pub const REVERT_FAILED: i32 = 4;
}

/// rattle: drive load at a service, inject faults, measure impact and recovery, always revert.
#[derive(Debug, Parser)]
#[command(name = "rattle", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in demo service: worker processes behind a round-robin balancer.
    Demo(DemoArgs),
}

/// `rattle demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Balancer port on 127.0.0.1.
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Delay before a dead worker is restarted.
    #[arg(long, default_value = "2s")]
    pub restart_delay: HumanDuration,
    /// Delay each worker adds to each response.
    #[arg(long, default_value = "0s")]
    pub latency: HumanDuration,
    /// Interval of the balancer's active health checks.
    #[arg(long, default_value = "250ms")]
    pub health_interval: HumanDuration,
    /// Internal: run one worker process (the supervisor starts these).
    #[command(subcommand)]
    pub worker: Option<DemoSub>,
}

/// `rattle demo worker` (internal).
#[derive(Debug, Subcommand)]
pub enum DemoSub {
    /// Run one demo worker on a port (started by the demo supervisor).
    #[command(hide = true)]
    Worker {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Delay added to each response.
        #[arg(long, default_value = "0s")]
        latency: HumanDuration,
    },
}

/// Runs the parsed command; returns the exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Demo(args) => demo_cmd(args).await,
    }
}

async fn demo_cmd(args: DemoArgs) -> anyhow::Result<i32> {
    if let Some(DemoSub::Worker { port, latency }) = args.worker {
        demo::run_worker(port, latency.get()).await?;
        return Ok(exit::OK);
    }
    let cfg = DemoConfig {
        replicas: args.replicas,
        port: args.port,
        restart_delay: args.restart_delay.get(),
        latency: args.latency.get(),
        health_interval: args.health_interval.get(),
        exe: None,
    };
    eprintln!(
        "rattle demo: starting {} workers behind http://127.0.0.1:{}/",
        cfg.replicas, cfg.port
    );
    demo::run_standalone(cfg, shutdown_signal()).await?;
    Ok(exit::OK)
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers, wait forever: the process still dies on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
}
