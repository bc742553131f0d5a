//! Faults: what can be broken, and how it is put back.
//!
//! Each fault kind lives in one file of this module: its spec struct (as written in the
//! experiment file), how it resolves targets, how it injects, and how it reverts. Kinds are
//! registered in one list, [`fault_kinds!`] below; that list generates the [`FaultSpec`] enum
//! (which the experiment parser reads by key, e.g. `process-kill:`), the JSON Schema entries and
//! the dispatch to [`Fault`] and to [`revert`]. Each kind also declares what the rest of rattle
//! needs to know about it: where it acts ([`Fault::locality`]: local processes, a cluster, a
//! named proxy) and the Kubernetes access it needs ([`Fault::kube_access`]), so no code outside
//! this module lists kinds or reads their names.
//!
//! A fault computes its serializable [`RevertToken`] before injecting; the runner, not the
//! fault, journals it, then injects, and later calls [`revert`] with it. Revert must be idempotent: reverting twice, or reverting what
//! already healed, succeeds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

pub mod exec;
pub mod k8s;
pub mod net;
pub mod process;
pub mod select;
pub mod stress;

/// A boxed future, so that [`Fault`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of resolving, injecting or reverting a fault.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The selector matched nothing, or the mode selects nothing from what it matched.
    #[error("no target: {0}")]
    NoTarget(String),
    /// The selector or spec is invalid in a way only visible at resolve time.
    #[error("invalid target selection: {0}")]
    InvalidSelection(String),
    /// Reading the environment (e.g. /proc, a pid file) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed while injecting or reverting.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A revert token could not be read back (corrupt journal entry).
    #[error("unreadable revert token for {kind}: {source}")]
    BadToken {
        /// The fault kind named in the token.
        kind: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The token names a kind this build does not know.
    #[error("unknown fault kind {0:?} in revert token")]
    UnknownKind(String),
    /// The Kubernetes cluster could not be reached or refused a call.
    #[error("kubernetes: {0}")]
    Kube(String),
    /// The selection touches a protected namespace the experiment does not allow.
    #[error("refused: {0}")]
    Refused(String),
    /// A process the fault runs (an `exec` command, a `rattle stress` child) failed.
    #[error("{0}")]
    Command(String),
}

/// Result alias of this module.
pub type Result<T, E = FaultError> = std::result::Result<T, E>;

/// One concrete thing a fault acts on, as reported and journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// What kind of thing: `process`, later `pod`, `deployment`, `node`, `proxy`.
    pub kind: String,
    /// Its identity: a pid, `namespace/name`, a proxy name.
    pub id: String,
    /// A human description (a process's command line).
    pub description: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.kind, self.id, self.description)
    }
}

/// Process-wide handles that fault kinds share: what they need to reach their targets (a
/// Kubernetes client, the run's proxies, ...). One per process, built by the runner (or by
/// `rattle recover`), passed to every fault call; a kind that needs a handle adds a field here,
/// built lazily so that runs without that kind never pay for it.
#[derive(Default)]
pub struct FaultEnv {
    /// The Kubernetes client, built on first use.
    kube: tokio::sync::OnceCell<kube::Client>,
    /// The kubeconfig context to use instead of the current one (`--context`).
    kube_context: Option<String>,
    /// The run's fault proxies (`net-*` and `http-*` kinds); built on first use.
    proxies: std::sync::OnceLock<crate::proxy::Registry>,
}

impl fmt::Debug for FaultEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultEnv")
            .field("kube", &self.kube.initialized())
            .field("kube_context", &self.kube_context)
            .field("proxies", &self.proxies.get().is_some())
            .finish()
    }
}

impl FaultEnv {
    /// An environment with nothing built yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// An environment whose Kubernetes client uses kubeconfig context `context` (`None`: the
    /// current context, or the in-cluster configuration).
    pub fn with_kube_context(context: Option<String>) -> Self {
        Self {
            kube_context: context,
            ..Self::default()
        }
    }

    /// An environment with a Kubernetes client already built (tests, benchmarks).
    pub fn with_kube_client(client: kube::Client) -> Self {
        Self {
            kube: tokio::sync::OnceCell::new_with(Some(client)),
            ..Self::default()
        }
    }

    /// The kubeconfig context asked for, if any.
    pub fn kube_context(&self) -> Option<&str> {
        self.kube_context.as_deref()
    }

    /// The Kubernetes client, built on first call.
    pub async fn kube(&self) -> Result<&kube::Client> {
        self.kube
            .get_or_try_init(|| crate::kube_env::client(self.kube_context.as_deref()))
            .await
            .map_err(|e| FaultError::Kube(e.to_string()))
    }

    /// The run's fault proxies. Empty in a fresh environment (as in `rattle recover`, where
    /// the proxies died with the run).
    pub fn proxies(&self) -> &crate::proxy::Registry {
        self.proxies.get_or_init(crate::proxy::Registry::new)
    }
}

/// What a fault needs from the runner when it resolves its targets.
pub struct ResolveCtx<'a> {
    /// The fault's own seeded generator: derived from the run's seed and the fault's index, so
    /// a replay with `--seed` makes the same choices from the same candidates.
    pub rng: &'a mut StdRng,
    /// Shared handles.
    pub env: &'a FaultEnv,
}

/// Everything needed to undo an injection, serializable so the journal can keep it across a
/// crash of rattle itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevertToken {
    /// The fault kind's key, e.g. `process-pause`.
    pub kind: String,
    /// The kind's own data.
    pub data: serde_json::Value,
}

impl RevertToken {
    /// A token of kind `kind` carrying `data`.
    pub fn new<T: Serialize>(kind: &str, data: &T) -> Result<Self> {
        let data = serde_json::to_value(data).map_err(|source| FaultError::BadToken {
            kind: kind.to_string(),
            source,
        })?;
        Ok(Self {
            kind: kind.to_string(),
            data,
        })
    }

    /// The kind's own data, read back (a corrupt journal entry is `BadToken`).
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.data.clone()).map_err(|source| FaultError::BadToken {
            kind: self.kind.clone(),
            source,
        })
    }
}

/// A fault kind's behaviour. Implemented by each kind's spec struct.
pub trait Fault: Send + Sync + fmt::Debug {
    /// Finds the targets this fault would act on now (candidates filtered, then the selection
    /// mode applied with `ctx.rng`). An empty selection is an error, never a silent pass.
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>>;

    /// The token that reverts an injection on `targets`, computed *before* injecting, so the
    /// runner can journal it first: a crash between the injection and the journal write would
    /// otherwise leave damage no one knows about. `None` for instantaneous faults (a kill).
    /// Reverting with it must be safe even if the injection then fails or never happens.
    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>>;

    /// Applies the fault to `targets`.
    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>>;

    /// Does this kind need a `duration` (it holds a state that must be reverted at the end)?
    fn needs_duration(&self) -> bool;

    /// Where this fault acts. Required, with no default, so that a new kind says it: checks
    /// elsewhere (a proxy fault names a proxy of the right mode, a CronJob warns about local
    /// faults) read it instead of listing kinds or reading their names.
    fn locality(&self) -> Locality<'_>;

    /// Checks what can be checked without touching anything (regexes compile, files named
    /// exist, values are in range). Messages name the field; the caller adds the location.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The Kubernetes API access this fault needs: what `rattle schedule --emit cronjob` grants
    /// its service account, and nothing more. Empty for kinds that do not use the API.
    fn kube_access(&self) -> Vec<KubeAccess> {
        Vec::new()
    }

    /// Receives the entry's `duration` when the plan is built, before anything else is called.
    /// For kinds whose injected state must end by itself even if rattle dies before its revert
    /// (a `stress` process stops at this deadline); others ignore it.
    fn set_duration(&mut self, _duration: Option<std::time::Duration>) {}
}

/// Where a fault acts: what a run must provide for it, and where its effect lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality<'a> {
    /// The machine rattle runs on (its processes): inside an emitted CronJob, the job's own pod.
    Local,
    /// A Kubernetes cluster, through its API; what it needs there is [`Fault::kube_access`].
    Cluster,
    /// One of the run's fault proxies (`proxies:` of the experiment).
    Proxy {
        /// The proxy's name, as the entry gives it.
        name: &'a str,
        /// The mode the proxy must be in for this kind.
        mode: crate::proxy::Mode,
    },
}

/// One permission on the Kubernetes API: verbs on a resource of an API group, in some
/// namespaces or cluster-wide. Rendered into RBAC rules by `rattle schedule --emit cronjob`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeAccess {
    /// Where: the namespaces named (a Role in each), or cluster-wide (a ClusterRole) when the
    /// selection spans every namespace or the resource is cluster-scoped (nodes).
    pub scope: KubeScope,
    /// API group: `""` for the core group, `apps`, ...
    pub api_group: &'static str,
    /// Resource, with a subresource where one is used: `pods`, `deployments/scale`.
    pub resource: &'static str,
    /// Verbs: `get`, `list`, `watch`, `patch`, `delete`, `create`.
    pub verbs: &'static [&'static str],
}

/// Where a [`KubeAccess`] applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeScope {
    /// These namespaces only.
    Namespaces(Vec<String>),
    /// Every namespace, or a cluster-scoped resource.
    Cluster,
}

impl KubeScope {
    /// The scope of a selection over `namespaces` (empty: every namespace).
    pub fn of(namespaces: Vec<String>) -> Self {
        if namespaces.is_empty() {
            KubeScope::Cluster
        } else {
            KubeScope::Namespaces(namespaces)
        }
    }
}

macro_rules! fault_kinds {
    ($( $key:literal => $variant:ident($ty:ty), revert: $revert:path; )*) => {
        /// The fault of one experiment entry, by kind. Generated from the registry list.
        #[derive(Debug, Clone, Serialize)]
        pub enum FaultSpec {
            $(
                #[doc = concat!("`", $key, "`")]
                #[serde(rename = $key)]
                $variant($ty),
            )*
        }

        /// The keys of all registered fault kinds, as written in experiment files.
        pub const FAULT_KINDS: &[&str] = &[$($key),*];

        impl FaultSpec {
            /// The kind's key.
            pub fn kind(&self) -> &'static str {
                match self { $(FaultSpec::$variant(_) => $key,)* }
            }

            /// The kind's behaviour.
            pub fn fault(&self) -> &dyn Fault {
                match self { $(FaultSpec::$variant(s) => s,)* }
            }

            /// The kind's behaviour, mutable (for [`Fault::set_duration`]).
            pub fn fault_mut(&mut self) -> &mut dyn Fault {
                match self { $(FaultSpec::$variant(s) => s,)* }
            }
        }

        // How an experiment file's fault entry reads its kind key (experiment/entry.rs).
        $crate::experiment::entry::entry_kinds!(FaultSpec, "fault", FAULT_KINDS, $($key => $variant($ty)),*);

        /// Reverts what a token describes. Idempotent.
        pub fn revert<'a>(env: &'a FaultEnv, token: &'a RevertToken) -> BoxFuture<'a, Result<()>> {
            match token.kind.as_str() {
                $($key => Box::pin($revert(env, token)),)*
                other => {
                    let kind = other.to_string();
                    Box::pin(async move { Err(FaultError::UnknownKind(kind)) })
                }
            }
        }
    };
}

// The registry: one line per fault kind.
fault_kinds! {
    "process-kill" => ProcessKill(process::KillSpec), revert: process::revert_kill;
    "process-pause" => ProcessPause(process::PauseSpec), revert: process::revert_pause;
    "pod-kill" => PodKill(k8s::PodKillSpec), revert: k8s::revert_none;
    "deployment-scale" => DeploymentScale(k8s::ScaleSpec), revert: k8s::revert_scale;
    "rollout-restart" => RolloutRestart(k8s::RestartSpec), revert: k8s::revert_none;
    "pod-failure" => PodFailure(k8s::pod_failure::PodFailureSpec), revert: k8s::pod_failure::revert;
    "node-drain" => NodeDrain(k8s::node::NodeDrainSpec), revert: k8s::node::revert;
    "pod-network-delay" => PodNetworkDelay(k8s::netem::PodNetemSpec), revert: k8s::netem::revert;
    "pod-stress" => PodStress(k8s::pod_stress::PodStressSpec), revert: k8s::pod_stress::revert;
    "container-kill" => ContainerKill(k8s::container_kill::ContainerKillSpec), revert: k8s::container_kill::revert;
    "pod-network-partition" => PodNetworkPartition(k8s::pod_net::PartitionSpec), revert: k8s::pod_net::revert;
    "pod-network-bandwidth" => PodNetworkBandwidth(k8s::pod_net::BandwidthSpec), revert: k8s::pod_net::revert;
    "pod-network-corrupt" => PodNetworkCorrupt(k8s::pod_net::CorruptSpec), revert: k8s::pod_net::revert;
    "pod-dns-failure" => PodDnsFailure(k8s::pod_net::DnsFailureSpec), revert: k8s::pod_net::revert;
    "net-latency" => NetLatency(net::LatencySpec), revert: net::revert;
    "net-bandwidth" => NetBandwidth(net::BandwidthSpec), revert: net::revert;
    "net-reset" => NetReset(net::ResetSpec), revert: net::revert;
    "net-blackhole" => NetBlackhole(net::BlackholeSpec), revert: net::revert;
    "http-abort" => HttpAbort(net::HttpAbortSpec), revert: net::revert;
    "http-delay" => HttpDelay(net::HttpDelaySpec), revert: net::revert;
    "stress" => Stress(stress::StressSpec), revert: stress::revert;
    "exec" => Exec(exec::ExecSpec), revert: exec::revert;
    "manifest" => Manifest(k8s::manifest::ManifestSpec), revert: k8s::manifest::revert;
}
