//! The built-in demo target: N worker processes behind a round-robin HTTP balancer, with a
//! supervisor that restarts dead workers.
//!
//! It exists so an experiment has something real to break: the workers are separate processes
//! (re-executions of this binary as `rattle demo worker`), so a process-kill fault kills a real
//! process and users of the balancer feel a real, short impact. The pieces live in three files,
//! one per moving part, so each can be read and tested alone:
//! - `worker.rs`: the worker process body (tiny HTTP server, dies with its supervisor);
//! - `supervisor.rs`: spawns workers, watches them, restarts them on the same port;
//! - `balancer.rs`: the HTTP front: round-robin over healthy workers, passive and active health.
//!
//! This file ties them together and owns the lifecycle guarantee: whatever happens (error during
//! start, `shutdown`, a panic that drops [`Demo`]), no worker is left running.

/// One line of the demo's own news (a worker down, up, restarted) through a [`DemoLog`],
/// prefixed `rattle demo: `.
macro_rules! note {
    ($log:expr, $($arg:tt)*) => {
        $log.line(format_args!($($arg)*))
    };
}

mod balancer;
mod supervisor;
mod worker;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use worker::run_worker;

use balancer::Balancer;
use supervisor::{Supervisor, WorkerSpec};

/// How long [`Demo::start`] waits for every worker to pass a health check. Generous, because a
/// debug binary on a shared, busy machine can take a while to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the demo service.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The balancer's port is already taken by another socket.
    #[error("port {port} on 127.0.0.1 is already in use: {source}")]
    PortInUse {
        /// The port asked for.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A listening socket could not be opened for another reason than the port being in use.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration asks for something impossible (e.g. zero replicas).
    #[error("invalid demo configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The path of the running executable (to re-execute as workers) is unknown.
    #[error("cannot find the current executable to start workers: {source}")]
    CurrentExe {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A worker process could not be started.
    #[error("cannot start worker `{exe} demo worker --port {port}`: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The worker's port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Some workers did not pass a health check in time; everything started was stopped.
    #[error("demo workers not healthy after {waited:?}: {failing}")]
    Unhealthy {
        /// How long start waited.
        waited: Duration,
        /// Each failing worker with the last health-check error it gave.
        failing: String,
    },
    /// A worker could not ask the kernel to kill it when its supervisor dies.
    #[error("cannot set the parent-death signal of the demo worker: {source}")]
    ParentDeathSignal {
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// A worker found that its supervisor died before the worker could tie its life to it.
    #[error("demo worker orphaned: parent is pid {actual}, expected {expected}")]
    Orphaned {
        /// The supervisor's pid as announced to the worker (1 means "any but init").
        expected: i32,
        /// The worker's actual parent pid.
        actual: i32,
    },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where the demo's own lines go: stderr by default; during a run, the run's printer, so that
/// they appear above the live progress line instead of breaking into it.
#[derive(Clone, Default)]
pub struct DemoLog(Option<LineSink>);

/// A function that takes whole lines.
type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

impl DemoLog {
    /// Lines go to `f`, each a whole line without its newline.
    pub fn to(f: impl Fn(&str) + Send + Sync + 'static) -> DemoLog {
        DemoLog(Some(Arc::new(f)))
    }

    /// Writes one line. To stderr, it never panics: a closed stderr (e.g.
    /// `rattle demo 2>&1 | head`) must not take the balancer or a worker down.
    pub(crate) fn line(&self, args: std::fmt::Arguments<'_>) {
        match &self.0 {
            Some(f) => f(&format!("rattle demo: {args}")),
            None => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr().lock(), "rattle demo: {args}");
            }
        }
    }
}

impl std::fmt::Debug for DemoLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DemoLog(to a sink)"
        } else {
            "DemoLog(stderr)"
        })
    }
}

/// Configuration of the demo service.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Worker count.
    pub replicas: u32,
    /// Balancer port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Delay before a dead worker is restarted.
    pub restart_delay: Duration,
    /// Delay each worker adds to each response.
    pub latency: Duration,
    /// Interval of active health checks.
    pub health_interval: Duration,
    /// Binary to re-execute for workers; default: the current executable.
    pub exe: Option<PathBuf>,
    /// Where its lines go (default: stderr).
    pub log: DemoLog,
}

/// A running demo service.
///
/// Dropping it without [`Demo::shutdown`] still SIGKILLs every worker (best effort, synchronous),
/// so a panicking caller never leaves workers behind.
pub struct Demo {
    addr: SocketAddr,
    supervisor: Supervisor,
    balancer: Balancer,
}

impl Demo {
    /// Start workers and balancer; returns once the balancer listens and every worker passed a
    /// health check. On any error, everything already started has been stopped.
    pub async fn start(cfg: DemoConfig) -> Result<Demo, DemoError> {
        if cfg.replicas == 0 {
            return Err(DemoError::Config {
                reason: "replicas must be at least 1".into(),
            });
        }
        let exe = match cfg.exe.clone() {
            Some(exe) => exe,
            None => std::env::current_exe().map_err(|source| DemoError::CurrentExe { source })?,
        };
        // The balancer's port is bound first: a port in use is the likeliest user error, and
        // finding it before any worker exists means there is nothing to clean up.
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.port));
        let listener = TcpListener::bind(listen).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                DemoError::PortInUse {
                    port: cfg.port,
                    source,
                }
            } else {
                DemoError::Bind {
                    addr: listen,
                    source,
                }
            }
        })?;
        let addr = listener.local_addr().map_err(|source| DemoError::Io {
            what: "cannot read the balancer's address".into(),
            source,
        })?;
        let ports = free_ports(cfg.replicas)?;
        let spec = WorkerSpec {
            exe,
            latency: cfg.latency,
            restart_delay: cfg.restart_delay,
            balancer_port: addr.port(),
            log: cfg.log.clone(),
        };
        let supervisor = Supervisor::start(spec, &ports).await?;
        let upstreams = ports
            .iter()
            .map(|&p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .collect();
        let balancer = Balancer::start(listener, upstreams, cfg.latency, cfg.log.clone());
        let mut demo = Demo {
            addr,
            supervisor,
            balancer,
        };
        match demo.balancer.wait_ready(START_TIMEOUT).await {
            Ok(()) => {
                demo.balancer.start_health_checks(cfg.health_interval);
                Ok(demo)
            }
            Err(failing) => {
                demo.stop().await;
                Err(DemoError::Unhealthy {
                    waited: START_TIMEOUT,
                    failing,
                })
            }
        }
    }

    /// The balancer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Pids of the live workers (a worker between its death and its restart has none).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.supervisor.pids()
    }

    /// How many times the supervisor restarted a dead worker since start.
    pub fn restarts(&self) -> u64 {
        self.supervisor.restarts()
    }

    /// Stop everything: the balancer stops listening, and every worker is SIGKILLed by pid and
    /// reaped. Calling it is always safe; the `Drop` that follows finds nothing left to do.
    pub async fn shutdown(mut self) -> Result<(), DemoError> {
        self.stop().await;
        Ok(())
    }

    /// The body of `shutdown`, by reference so that `start` can use it on its error path and
    /// `Drop` still runs (and finds nothing to do) afterwards.
    async fn stop(&mut self) {
        // Balancer first, so no request is forwarded to a worker being killed.
        self.balancer.stop().await;
        self.supervisor.stop().await;
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Synchronous best effort: it cannot await the reaping, but the kill itself is what
        // matters; the supervisor's tasks (or tokio's orphan reaper) reap afterwards. After a
        // complete `shutdown` the pid table is empty and this kills nothing; after an
        // interrupted one it kills what is left.
        self.balancer.abort();
        self.supervisor.kill_now();
    }
}

/// Picks `n` distinct free ports on 127.0.0.1 by binding them all at once, then releasing them.
/// Another process may take one in between; the worker then fails to bind and is restarted, and
/// `start` reports it if that persists. A fixed port per worker keeps the upstream list stable.
fn free_ports(n: u32) -> Result<Vec<u16>, DemoError> {
    let mut held = Vec::new();
    for _ in 0..n {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let l =
            std::net::TcpListener::bind(addr).map_err(|source| DemoError::Bind { addr, source })?;
        held.push(l);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|source| DemoError::Io {
                    what: "cannot read a free port's number".into(),
                    source,
                })
        })
        .collect()
}

/// `rattle demo`: run the demo service until `shutdown` completes.
pub async fn run_standalone(
    cfg: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let log = cfg.log.clone();
    let demo = Demo::start(cfg).await?;
    // The CLI prints the port it asked for; this line says where it really listens (port 0).
    let pids: Vec<String> = demo.worker_pids().iter().map(u32::to_string).collect();
    note!(
        log,
        "listening on http://{}/ (worker pids {}); Ctrl-C stops",
        demo.addr(),
        pids.join(", ")
    );
    shutdown.await;
    note!(log, "stopping");
    demo.shutdown().await
}
