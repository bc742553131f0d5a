//! Steady-state probes: checks that run for the whole run and feed the hypothesis. Each result
//! is kept with its time so analysis can judge the baseline and the end of the run; a probe
//! never fails the run by itself.
//!
//! Shaped like `fault`: each probe kind lives in one file of this module (its spec struct as
//! written in the experiment file, its checks, its tests) and implements [`Probe`]; kinds are
//! registered in one list, [`probe_kinds!`] below, which generates [`ProbeSpec`] (read by the
//! experiment parser by key, e.g. `http:`), the JSON Schema entries and the dispatch. Nothing
//! outside this module asks which kind a probe is: the runner, the CLI and the game day ask the
//! trait (or [`needs_cluster`], [`recovery_deciders`]) instead.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fault::{BoxFuture, KubeAccess};
use crate::metrics::RunClock;

pub mod exec;
pub mod http;
pub mod kubernetes;
pub mod prometheus;
mod recovery;
pub mod tcp;

pub use recovery::probe_recovery;

/// A probe kind's behaviour. Implemented by each kind's spec struct.
pub trait Probe: Send + Sync + fmt::Debug {
    /// What the probe checks, for the plan (`--dry-run`): the rest of the line after
    /// `probe <name>: `. `interval` is the entry's.
    fn describe(&self, interval: Duration) -> String;

    /// Checks what can be checked without touching anything (a URL parses, one of several
    /// fields is given). Messages name the field; the caller adds the location.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The Kubernetes API access this probe needs: what `rattle schedule --emit cronjob` grants
    /// its service account. Empty for kinds that do not use the API.
    fn kube_access(&self) -> Vec<KubeAccess> {
        Vec::new()
    }

    /// Does the probe need a Kubernetes cluster? A run refuses to start without one (exit 2),
    /// since a probe that cannot watch would read as an unsteady system.
    fn needs_cluster(&self) -> bool {
        !self.kube_access().is_empty()
    }

    /// Can this probe's results decide a fault's recovery when the experiment has no load?
    /// Only a probe that records a change the moment it happens can: its first passing result
    /// is the recovery instant (the replacement seen Ready), not a sample an interval late.
    fn decides_recovery(&self) -> bool {
        false
    }

    /// Checks against the outside world before anything is touched (a server reachable, a
    /// query it accepts): an error is exit 2 before any fault. Default: nothing to check.
    fn preflight(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// One check now: `Ok` when it passes, else what went wrong. Interval-driven kinds
    /// implement this and keep the default [`Probe::run`]; kinds that override `run` (watches)
    /// need not.
    fn check<'a>(&'a self, env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        let _ = env;
        Box::pin(async { Err("this probe kind has no single check".to_string()) })
    }

    /// Runs until `ctx.stop` is cancelled, pushing results to `ctx.results`. The default checks
    /// every `ctx.interval` (a check that overruns delays the next tick; a check in progress is
    /// dropped when stopped, recording nothing).
    fn run<'a>(&'a self, ctx: ProbeRun<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(ctx.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t_us = ctx.clock.now_us();
                let outcome = tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    r = self.check(ctx.env) => r,
                };
                ctx.results.push(t_us, outcome.is_ok(), outcome.err());
            }
        })
    }
}

/// Process-wide handles that probe kinds share, like `fault::FaultEnv`: one per run, passed to
/// every probe; a kind that needs a handle adds a field here, built lazily.
#[derive(Default)]
pub struct ProbeEnv {
    /// The kubeconfig context to use instead of the current one (`--context`).
    kube_context: Option<String>,
    /// The HTTP clients of the `http` probes (one pool per TLS setting); built on first use.
    http: http::Clients,
}

impl fmt::Debug for ProbeEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeEnv")
            .field("kube_context", &self.kube_context)
            .finish()
    }
}

impl ProbeEnv {
    /// An environment whose Kubernetes clients use kubeconfig context `context` (`None`: the
    /// current context, or the in-cluster configuration).
    pub fn new(kube_context: Option<String>) -> Self {
        Self {
            kube_context,
            ..Self::default()
        }
    }

    /// The kubeconfig context asked for, if any.
    pub fn kube_context(&self) -> Option<&str> {
        self.kube_context.as_deref()
    }

    /// The HTTP clients, each built on first use.
    pub(crate) fn http_clients(&self) -> &http::Clients {
        &self.http
    }
}

/// What a running probe needs: the shared handles, its timing, where its results go, and when
/// to stop.
pub struct ProbeRun<'a> {
    /// Shared handles.
    pub env: &'a ProbeEnv,
    /// The entry's interval.
    pub interval: Duration,
    /// The run's clock (result times are µs since its origin).
    pub clock: RunClock,
    /// Where this probe's results go.
    pub results: ResultSink,
    /// Cancelled when the run stops its probes.
    pub stop: CancellationToken,
}

/// The results of one probe, pushed to the run's shared list.
#[derive(Clone)]
pub struct ResultSink {
    probe: usize,
    results: Arc<Mutex<Vec<ProbeResult>>>,
}

impl ResultSink {
    /// Records a check of this probe that started at `t_us`.
    pub fn push(&self, t_us: u64, ok: bool, error: Option<String>) {
        if !ok {
            tracing::info!(
                probe = self.probe,
                t_s = t_us as f64 / 1e6,
                error = error.as_deref().unwrap_or(""),
                "probe check failed"
            );
        }
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ProbeResult {
                probe: self.probe,
                t_us,
                ok,
                error,
            });
    }
}

macro_rules! probe_kinds {
    ($( $key:literal => $variant:ident($ty:ty); )*) => {
        /// The probe of one experiment entry, by kind. Generated from the registry list.
        #[derive(Debug, Clone, Serialize)]
        pub enum ProbeSpec {
            $(
                #[doc = concat!("`", $key, "`")]
                #[serde(rename = $key)]
                $variant($ty),
            )*
        }

        /// The keys of all registered probe kinds, as written in experiment files.
        pub const PROBE_KINDS: &[&str] = &[$($key),*];

        impl ProbeSpec {
            /// The kind's key.
            pub fn kind(&self) -> &'static str {
                match self { $(ProbeSpec::$variant(_) => $key,)* }
            }

            /// The kind's behaviour.
            pub fn probe(&self) -> &dyn Probe {
                match self { $(ProbeSpec::$variant(s) => s,)* }
            }
        }

        // How an experiment file's probe entry reads its kind key (experiment/entry.rs).
        $crate::experiment::entry::entry_kinds!(ProbeSpec, "probe", PROBE_KINDS, $($key => $variant($ty)),*);
    };
}

// The registry: one line per probe kind.
probe_kinds! {
    "http" => Http(http::HttpProbe);
    "kubernetes" => Kubernetes(kubernetes::KubernetesProbe);
    "prometheus" => Prometheus(prometheus::PrometheusProbe);
    "exec" => Exec(exec::ExecProbe);
    "tcp" => Tcp(tcp::TcpProbe);
}

/// One probe to run: an experiment entry resolved.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Name in reports.
    pub name: String,
    /// Interval between checks.
    pub interval: Duration,
    /// The kind and its spec.
    pub spec: ProbeSpec,
}

/// Do any of `probes` need a Kubernetes cluster?
pub fn needs_cluster(probes: &[ProbeConfig]) -> bool {
    probes.iter().any(|p| p.spec.probe().needs_cluster())
}

/// Indices of the `probes` whose results decide a fault's recovery when there is no load (see
/// [`Probe::decides_recovery`] and [`probe_recovery`]).
pub fn recovery_deciders(probes: &[ProbeConfig]) -> Vec<usize> {
    probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.spec.probe().decides_recovery().then_some(i))
        .collect()
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Index of the probe in the experiment.
    pub probe: usize,
    /// When the check started, µs since run start.
    pub t_us: u64,
    /// Did it pass?
    pub ok: bool,
    /// What went wrong, if it did not pass.
    pub error: Option<String>,
}

/// The probes of a run, running.
pub struct Probes {
    results: Arc<Mutex<Vec<ProbeResult>>>,
    tasks: JoinSet<()>,
}

impl Probes {
    /// Starts every probe now; they run until `stop` is cancelled.
    pub fn start(
        probes: Vec<ProbeConfig>,
        kube_context: Option<String>,
        clock: RunClock,
        stop: CancellationToken,
    ) -> Self {
        let results = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let env = Arc::new(ProbeEnv::new(kube_context));
        for (index, cfg) in probes.into_iter().enumerate() {
            let env = env.clone();
            let sink = ResultSink {
                probe: index,
                results: results.clone(),
            };
            let stop = stop.clone();
            tasks.spawn(async move {
                let ctx = ProbeRun {
                    env: &env,
                    interval: cfg.interval,
                    clock,
                    results: sink,
                    stop,
                };
                cfg.spec.probe().run(ctx).await;
            });
        }
        Self { results, tasks }
    }

    /// Results so far.
    pub fn results(&self) -> Vec<ProbeResult> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the probe tasks to end (after `stop` was cancelled) and returns all results.
    pub async fn finish(mut self) -> Vec<ProbeResult> {
        while self.tasks.join_next().await.is_some() {}
        self.results()
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Summary of probe results over a span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSummary {
    /// Probe name.
    pub name: String,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// The last failure's message, if any.
    pub last_error: Option<String>,
}

/// Summarizes each probe's results that started in `[from_us, to_us)`.
pub fn summarize(
    names: &[String],
    results: &[ProbeResult],
    from_us: u64,
    to_us: u64,
) -> Vec<ProbeSummary> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut s = ProbeSummary {
                name: name.clone(),
                passed: 0,
                failed: 0,
                last_error: None,
            };
            for r in results
                .iter()
                .filter(|r| r.probe == i && (from_us..to_us).contains(&r.t_us))
            {
                if r.ok {
                    s.passed += 1;
                } else {
                    s.failed += 1;
                    s.last_error = r.error.clone();
                }
            }
            s
        })
        .collect()
}
