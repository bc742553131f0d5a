//! Out to the dashboards: what a run tells the monitoring its users already watch, and what it
//! brings back from the cluster. `metrics.rs`: the run's figures in Prometheus's text format,
//! served at `--metrics-addr` while the run lasts; `push.rs`: the same pushed to a Pushgateway
//! at each window's close and at the end; `grafana.rs`: an annotation region per fault window;
//! `events.rs`: the cluster's Events and pod changes in the namespaces the run touches.
//!
//! Shape: [`prepare`] runs in the run's preflight (a listener that cannot bind, a token
//! variable that is not set, is bad input: exit 2 before anything is touched); [`Prepared::start`]
//! at t = 0 gives the [`Observer`] the runner calls at each injection and revert, and
//! [`Observer::finish`] at the end. Every output is best effort: a failure is a warning with
//! its time (kept for the report's timeline), never a change of verdict, and every call to the
//! outside is bounded by [`http::TIMEOUT`], so no output can hold a run or its reverts up. This
//! module knows nothing of the runner or the report: the runner converts what it returns.

pub mod events;
pub mod grafana;
pub mod http;
pub mod metrics;
pub mod push;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Recording, RunClock};
pub use events::ClusterEvent;
pub use metrics::Live;

/// The environment variable read for Grafana's token unless another is named.
pub const DEFAULT_GRAFANA_TOKEN_ENV: &str = "RATTLE_GRAFANA_TOKEN";

/// Longest the end of a run waits for the last pushes and annotation updates.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors found before the run touches anything.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// `--metrics-addr` cannot be bound (in use, not a local address).
    #[error("--metrics-addr {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Grafana token variable is unset or empty.
    #[error(
        "--grafana-url is set but the environment variable {0} (the Grafana service-account \
         token) is not: set it, or name another with --grafana-token-env"
    )]
    GrafanaToken(String),
    /// The Grafana token holds characters an HTTP header cannot carry.
    #[error(
        "the environment variable {0} (the Grafana token) holds control or non-ASCII characters: \
         check how it was set"
    )]
    GrafanaTokenInvalid(String),
    /// An output's URL cannot be used.
    #[error("{flag}: {message}")]
    Url {
        /// Which flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client for the outputs could not be built.
    #[error("the HTTP client for Grafana and the Pushgateway: {0}")]
    Client(String),
}

/// Where a run's figures and events go. Default: nowhere (cluster evidence is collected
/// whenever the run touches Kubernetes, unless `cluster_events` is false).
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve `/metrics` here while the run lasts.
    pub metrics_addr: Option<SocketAddr>,
    /// Push to this Pushgateway (base URL) at each window's close and at the end.
    pub pushgateway: Option<String>,
    /// Annotate fault windows in this Grafana (base URL).
    pub grafana_url: Option<String>,
    /// The environment variable holding Grafana's token.
    pub grafana_token_env: String,
    /// Annotate this dashboard only (UID).
    pub grafana_dashboard: Option<String>,
    /// Watch the cluster's events in a run that touches Kubernetes.
    pub cluster_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics_addr: None,
            pushgateway: None,
            grafana_url: None,
            grafana_token_env: DEFAULT_GRAFANA_TOKEN_ENV.into(),
            grafana_dashboard: None,
            cluster_events: true,
        }
    }
}

impl Config {
    /// The outputs named by the environment variables `rattle run`'s flags also read
    /// (`RATTLE_METRICS_ADDR`, `RATTLE_PUSHGATEWAY_URL`, `RATTLE_GRAFANA_URL`, and the token in
    /// `RATTLE_GRAFANA_TOKEN`): what a game day's runs use, having no flags of their own.
    /// Empty variables count as unset.
    pub fn from_env() -> Result<Self, ObserveError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let metrics_addr = var("RATTLE_METRICS_ADDR")
            .map(|a| {
                parse_addr(&a).map_err(|message| ObserveError::Url {
                    flag: "RATTLE_METRICS_ADDR",
                    message,
                })
            })
            .transpose()?;
        Ok(Config {
            metrics_addr,
            pushgateway: var("RATTLE_PUSHGATEWAY_URL"),
            grafana_url: var("RATTLE_GRAFANA_URL"),
            ..Config::default()
        })
    }
}

/// `ADDR` as `IP:PORT`, or `:PORT` for 127.0.0.1 (the default host: the figures stay on this
/// machine unless an address says otherwise).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let full = match s.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_string(),
    };
    full.parse().map_err(|_| {
        format!("{s:?} is not an address: give IP:PORT, e.g. 127.0.0.1:9464 (or :9464)")
    })
}

/// The outputs, checked and bound, not yet started.
#[derive(Debug, Default)]
pub struct Prepared {
    listener: Option<tokio::net::TcpListener>,
    pushgateway: Option<::http::Uri>,
    grafana: Option<grafana::Grafana>,
    client: Option<http::Client>,
    cluster_events: bool,
}

/// Checks and binds the outputs of `cfg` (preflight: nothing is touched yet).
pub async fn prepare(cfg: &Config) -> Result<Prepared, ObserveError> {
    let pushgateway = cfg
        .pushgateway
        .as_deref()
        .map(|u| {
            http::base_url(u).map_err(|message| ObserveError::Url {
                flag: "--pushgateway",
                message,
            })
        })
        .transpose()?;
    let grafana = match cfg.grafana_url.as_deref() {
        None => None,
        Some(u) => {
            let url = http::base_url(u).map_err(|message| ObserveError::Url {
                flag: "--grafana-url",
                message,
            })?;
            let token = std::env::var(&cfg.grafana_token_env)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ObserveError::GrafanaToken(cfg.grafana_token_env.clone()))?;
            if token.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
                return Err(ObserveError::GrafanaTokenInvalid(
                    cfg.grafana_token_env.clone(),
                ));
            }
            Some(grafana::Grafana {
                url,
                token,
                dashboard_uid: cfg.grafana_dashboard.clone(),
            })
        }
    };
    let client = if pushgateway.is_some() || grafana.is_some() {
        Some(http::Client::new().map_err(ObserveError::Client)?)
    } else {
        None
    };
    let listener = match cfg.metrics_addr {
        None => None,
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| ObserveError::Bind { addr, source })?,
        ),
    };
    Ok(Prepared {
        listener,
        pushgateway,
        grafana,
        client,
        cluster_events: cfg.cluster_events,
    })
}

/// What the run tells the observer about itself at t = 0.
pub struct RunInfo {
    /// Experiment name.
    pub experiment: String,
    /// Run id.
    pub run_id: String,
    /// The run's clock.
    pub clock: RunClock,
    /// The load's recording (`None` without load).
    pub recording: Option<Recording>,
    /// Window length (the push interval).
    pub window: Duration,
    /// Kubeconfig context.
    pub kube_context: Option<String>,
    /// The namespaces the run touches in a cluster: `None` if it touches none,
    /// `Some(None)` for every namespace.
    pub kube_namespaces: Option<Option<Vec<String>>>,
    /// Where to log a warning as it happens (above the progress line).
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// What the outputs left for the report.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Warnings, (µs since the run's start, text), in order.
    pub warnings: Vec<(u64, String)>,
    /// The cluster's events.
    pub cluster: events::Collected,
}

type Warnings = Arc<Mutex<Vec<(u64, String)>>>;

/// The running outputs of one run.
pub struct Observer {
    live: Arc<Live>,
    clock: RunClock,
    warnings: Warnings,
    grafana: Mutex<Option<mpsc::UnboundedSender<grafana::Note>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pusher: Mutex<Option<JoinHandle<()>>>,
    push: Option<(push::Pushgateway, http::Client)>,
    watchers: Mutex<Option<events::Watchers>>,
    stop: CancellationToken,
    log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Prepared {
    /// Starts the outputs at t = 0.
    pub fn start(self, info: RunInfo) -> Observer {
        let live = Arc::new(Live::new(
            info.experiment.clone(),
            info.run_id.clone(),
            info.clock,
            info.recording,
        ));
        let warnings: Warnings = Arc::default();
        let warn = {
            let (w, log, clock) = (warnings.clone(), info.log.clone(), info.clock);
            Arc::new(move |msg: String| {
                log(&format!("warning: {msg}"));
                w.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((clock.now_us(), msg));
            })
        };
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(l) = self.listener {
            if let Ok(a) = l.local_addr() {
                (info.log)(&format!("serving the run's figures at http://{a}/metrics"));
            }
            tasks.push(tokio::spawn(metrics::serve(l, live.clone(), stop.clone())));
        }
        let grafana = match (self.grafana, &self.client) {
            (Some(g), Some(c)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let w = warn.clone();
                tasks.push(tokio::spawn(grafana::run(
                    g,
                    c.clone(),
                    info.experiment.clone(),
                    info.run_id.clone(),
                    rx,
                    move |m| w(m),
                )));
                Some(tx)
            }
            _ => None,
        };
        let mut push = None;
        if let (Some(base), Some(c)) = (&self.pushgateway, &self.client) {
            match push::Pushgateway::new(base, &info.experiment, &info.run_id) {
                Ok(p) => push = Some((p, c.clone())),
                Err(e) => warn(format!("Pushgateway: {e}")),
            }
        }
        let pusher = push.clone().map(|(p, c)| {
            tokio::spawn(push_each_window(
                p,
                c,
                live.clone(),
                info.clock,
                info.window,
                stop.clone(),
                warn.clone(),
            ))
        });
        let watchers = match info.kube_namespaces {
            Some(ns) if self.cluster_events => Some(events::Watchers::start(
                info.kube_context.clone(),
                ns,
                info.clock,
                warn.clone(),
            )),
            _ => None,
        };
        Observer {
            live,
            clock: info.clock,
            warnings,
            grafana: Mutex::new(grafana),
            tasks: Mutex::new(tasks),
            pusher: Mutex::new(pusher),
            push,
            watchers: Mutex::new(watchers),
            stop,
            log: info.log,
        }
    }
}

/// Pushes at the close of each window (t = k × window) until `stop`. A failed push is one
/// warning per run, not one per window: a Pushgateway that is down would otherwise flood the log.
async fn push_each_window(
    p: push::Pushgateway,
    client: http::Client,
    live: Arc<Live>,
    clock: RunClock,
    window: Duration,
    stop: CancellationToken,
    warn: Arc<dyn Fn(String) + Send + Sync>,
) {
    let window = window.max(Duration::from_millis(100));
    let mut k: u32 = 1;
    let mut warned = false;
    loop {
        let Some(at) = window.checked_mul(k) else {
            return;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(clock.origin() + at) => {}
        }
        k = k.saturating_add(1);
        if let Err(e) = p.push(&client, metrics::render(&live)).await
            && !warned
        {
            warned = true;
            warn(format!(
                "Pushgateway: push failed: {e} (further failures of this run not repeated)"
            ));
        }
    }
}

impl Observer {
    /// The figures the outputs expose.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Fault `fault` (`name`, `kind`) was injected now; `active`: faults holding a state now.
    pub fn fault_injected(&self, fault: usize, name: &str, kind: &str, active: usize) {
        self.live.injected(active);
        if let Some(tx) = &*self.grafana.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(grafana::Note::Injected {
                fault,
                name: name.to_string(),
                kind: kind.to_string(),
                unix_ms: self.unix_ms_now(),
            });
        }
    }

    /// Fault `fault` was reverted now; `active`: faults still holding a state.
    pub fn fault_reverted(&self, fault: usize, active: usize) {
        self.live.reverted(active);
        if let Some(tx) = &*self.grafana.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(grafana::Note::Reverted {
                fault,
                unix_ms: self.unix_ms_now(),
            });
        }
    }

    fn unix_ms_now(&self) -> i64 {
        self.clock
            .start_unix_ms()
            .saturating_add(i64::try_from(self.clock.now_us() / 1000).unwrap_or(i64::MAX))
    }

    /// Stops watching the cluster and returns what was seen (call once the faults are
    /// reverted and the load stopped, before the report is built).
    pub async fn cluster_evidence(&self) -> events::Collected {
        let w = self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match w {
            Some(w) => w.finish().await,
            None => events::Collected::default(),
        }
    }

    /// The end: the verdict tagged on the annotations, the last push (with the verdict), the
    /// server stopped. Bounded by [`FINISH_TIMEOUT`] in all. Returns every warning of the run.
    pub async fn finish(&self, verdict: &str, exit_code: i32) -> Vec<(u64, String)> {
        self.live.set_verdict(verdict, exit_code);
        let pusher = self.pusher.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.stop.cancel();
        if let Some(p) = pusher {
            let _ = p.await;
        }
        let grafana = self
            .grafana
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = grafana {
            let _ = tx.send(grafana::Note::Verdict(verdict.to_string()));
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let last_push = async {
            if let Some((p, c)) = &self.push
                && let Err(e) = p.push(c, metrics::render(&self.live)).await
            {
                self.warn(format!("Pushgateway: the final push failed: {e}"));
            }
        };
        let work = async {
            last_push.await;
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(FINISH_TIMEOUT, work).await.is_err() {
            self.warn(format!(
                "the dashboard outputs did not finish within {} s: left behind",
                FINISH_TIMEOUT.as_secs()
            ));
        }
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn warn(&self, msg: String) {
        (self.log)(&format!("warning: {msg}"));
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.clock.now_us(), msg));
    }
}

/// An observer that outputs nothing (for runs that never reach t = 0 with outputs).
pub fn none(info: RunInfo) -> Observer {
    Prepared::default().start(info)
}
