//! The built-in demo service. (Stub; being written.)
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of the demo service.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
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
}

/// A running demo service.
pub struct Demo {
    addr: SocketAddr,
}

impl Demo {
    /// Start workers and balancer; returns once all are healthy.
    pub async fn start(cfg: DemoConfig) -> Result<Demo, DemoError> {
        let _ = cfg;
        Err(DemoError::Io {
            what: "demo".into(),
            source: std::io::Error::other("not yet"),
        })
    }
    /// The balancer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Pids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        vec![]
    }
    /// Stop everything, killing and reaping every worker.
    pub async fn shutdown(self) -> Result<(), DemoError> {
        Ok(())
    }
}

/// `rattle demo worker`: serve until killed.
pub async fn run_worker(port: u16, latency: Duration) -> Result<(), DemoError> {
    let _ = (port, latency);
    Ok(())
}

/// `rattle demo`: run the demo service until `shutdown` completes.
pub async fn run_standalone(
    cfg: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let demo = Demo::start(cfg).await?;
    shutdown.await;
    demo.shutdown().await
}
