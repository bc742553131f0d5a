//! The load generator. (Stub with the agreed API; being written.)
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{Recording, RunClock};

/// Load configuration.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// URL.
    pub url: http::Uri,
    /// Method.
    pub method: http::Method,
    /// Headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Body.
    pub body: bytes::Bytes,
    /// Rate.
    pub rate_per_sec: f64,
    /// Ramp.
    pub ramp: Option<Duration>,
    /// Timeout.
    pub timeout: Duration,
    /// Cap.
    pub max_in_flight: usize,
    /// Ok statuses.
    pub ok_status: Option<Vec<u16>>,
}
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Unsupported.
    #[error("unsupported: {0}")]
    Unsupported(String),
}
/// Summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadSummary {
    /// Scheduled.
    pub scheduled: u64,
    /// Sent.
    pub sent: u64,
    /// Missed.
    pub missed: u64,
}
/// Handle.
pub struct LoadHandle;
/// Start.
pub fn start(
    _cfg: LoadConfig,
    _clock: RunClock,
    _start_us: u64,
    _recording: Recording,
    _stop: CancellationToken,
) -> Result<LoadHandle, LoadError> {
    Ok(LoadHandle)
}
impl LoadHandle {
    /// Finish.
    pub async fn finish(self) -> LoadSummary {
        LoadSummary::default()
    }
}
impl LoadConfig {
    /// Validate.
    pub fn validate(&self) -> Result<(), LoadError> {
        Ok(())
    }
}
