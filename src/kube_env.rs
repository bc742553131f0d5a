//! Cluster access: builds the one `kube::Client` a process uses, from the kubeconfig's current
//! context (or `--context`), or from the in-cluster service account when run inside a pod.
//!
//! Kept apart from the fault kinds so that faults, the `kubernetes` probe and `rattle recover`
//! all reach the cluster the same way, and so that a run with no Kubernetes in it never reads a
//! kubeconfig at all (the client is built lazily, on first use).

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Errors of reaching a cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeEnvError {
    /// No kubeconfig and no in-cluster environment, or a broken one.
    #[error("no Kubernetes cluster configuration: {0}")]
    Config(String),
    /// The configuration was read but a client could not be built from it.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
}

/// Builds a client. With `context`, that context of the kubeconfig (`KUBECONFIG` or
/// `~/.kube/config`) is used; without, the kubeconfig's current context, falling back to the
/// in-cluster service account (what `kube::Config::infer` does).
pub async fn client(context: Option<&str>) -> Result<kube::Client, KubeEnvError> {
    let config = match context {
        Some(ctx) => {
            let kc = Kubeconfig::read().map_err(|e| KubeEnvError::Config(e.to_string()))?;
            let opts = KubeConfigOptions {
                context: Some(ctx.to_string()),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| KubeEnvError::Config(format!("context {ctx:?}: {e}")))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeEnvError::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| KubeEnvError::Client(e.to_string()))
}
