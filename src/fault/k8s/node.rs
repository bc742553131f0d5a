//! `node-drain`: cordons the selected nodes and (unless `evict: false`) evicts their pods
//! through the Eviction API, so disruption budgets are honoured: a 429 refusal is retried every
//! `retry_interval` until `timeout`. Revert uncordons the nodes that were schedulable before
//! (recorded in the token), so a node an operator had cordoned stays cordoned.
//!
//! Nodes are cluster-scoped, so this kind has its own selector (labels, fields, names, mode)
//! rather than the namespaced one; DaemonSet pods and mirror pods are not evicted, as
//! `kubectl drain` does not.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use rand::rngs::StdRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{is_not_found, kube_err};
use crate::experiment::{HumanDuration, Mode};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, KubeScope, Locality, ResolveCtx, Result,
    RevertToken, Target, select,
};

const KIND: &str = "node-drain";

/// `node-drain`: cordon the selected nodes for the entry's `duration` and evict their pods;
/// uncordon on revert.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDrainSpec {
    /// A label selector over nodes, e.g. `node-role.kubernetes.io/worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// A field selector over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    /// Only nodes with one of these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// How many of the matching nodes. Default: one, chosen at random (seeded).
    #[serde(default)]
    pub mode: Mode,
    /// Evict the nodes' pods (default true); false only cordons.
    #[serde(default = "yes")]
    pub evict: bool,
    /// Wait between retries of an eviction a disruption budget refused (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<HumanDuration>,
    /// Give up evicting after this long (default 2m); the node stays cordoned until revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    name: String,
    was_unschedulable: bool,
}

async fn set_unschedulable(client: &kube::Client, name: &str, value: bool) -> Result<bool> {
    let patch = Patch::Merge(json!({"spec": {"unschedulable": value}}));
    match Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(kube_err(
            &format!("setting node {name} unschedulable={value}"),
            e,
        )),
    }
}

fn is_daemon_or_mirror(p: &Pod) -> bool {
    let owned_by_ds = p
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    owned_by_ds || mirror
}

/// Environment variables naming rattle's own pod (set through the downward API by the emitted
/// CronJob): a drain must not evict the pod that is running it, or nothing would revert.
pub const OWN_POD_ENV: (&str, &str) = ("RATTLE_POD_NAMESPACE", "RATTLE_POD_NAME");

fn is_own_pod(p: &Pod) -> bool {
    let (Ok(ns), Ok(name)) = (std::env::var(OWN_POD_ENV.0), std::env::var(OWN_POD_ENV.1)) else {
        return false;
    };
    p.metadata.namespace.as_deref() == Some(ns.as_str())
        && p.metadata.name.as_deref() == Some(name.as_str())
}

impl NodeDrainSpec {
    async fn choose(&self, client: &kube::Client, rng: &mut StdRng) -> Result<Vec<Node>> {
        let mut lp = ListParams::default();
        if let Some(l) = &self.labels {
            lp = lp.labels(l);
        }
        if let Some(f) = &self.fields {
            lp = lp.fields(f);
        }
        let mut nodes: Vec<Node> = Api::<Node>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| kube_err("listing nodes", e))?
            .items
            .into_iter()
            .filter(|n| {
                self.names.is_empty()
                    || n.metadata
                        .name
                        .as_ref()
                        .is_some_and(|x| self.names.contains(x))
            })
            .collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        select::choose(nodes, &self.mode, rng)
            .map_err(|e| FaultError::NoTarget(format!("nodes: {e}")))
    }

    async fn evict_all(&self, client: &kube::Client, node: &str) -> Result<()> {
        let retry = self
            .retry_interval
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(1));
        let timeout = self
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(120));
        let deadline = tokio::time::Instant::now() + timeout;
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = Api::<Pod>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| kube_err(&format!("listing the pods of node {node}"), e))?;
        for p in pods
            .items
            .iter()
            .filter(|p| !is_daemon_or_mirror(p) && !is_own_pod(p))
        {
            let (Some(ns), Some(name)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
            else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            loop {
                match api.evict(name, &EvictParams::default()).await {
                    Ok(_) => break,
                    Err(e) if is_not_found(&e) => break,
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        if tokio::time::Instant::now() + retry > deadline {
                            return Err(FaultError::Kube(format!(
                                "evicting {ns}/{name} from {node}: still refused by its disruption budget after {}s",
                                timeout.as_secs()
                            )));
                        }
                        tokio::time::sleep(retry).await;
                    }
                    Err(e) => return Err(kube_err(&format!("evicting {ns}/{name}"), e)),
                }
            }
        }
        Ok(())
    }
}

impl Fault for NodeDrainSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            let client = ctx.env.kube().await?;
            Ok(self
                .choose(client, ctx.rng)
                .await?
                .into_iter()
                .map(|n| {
                    let cordoned = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false);
                    Target {
                        kind: "node".into(),
                        id: n.metadata.name.unwrap_or_default(),
                        description: if cordoned {
                            "already cordoned".into()
                        } else {
                            "schedulable".into()
                        },
                    }
                })
                .collect())
        })
    }

    /// Records whether each node was already cordoned, read now.
    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let api: Api<Node> = Api::all(client.clone());
            let mut items = Vec::new();
            for t in targets {
                let n = api
                    .get(&t.id)
                    .await
                    .map_err(|e| kube_err(&format!("reading node {}", t.id), e))?;
                items.push(Item {
                    name: t.id.clone(),
                    was_unschedulable: n.spec.and_then(|s| s.unschedulable).unwrap_or(false),
                });
            }
            Ok(Some(RevertToken::new(KIND, &items)?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            for t in targets {
                if !set_unschedulable(client, &t.id, true).await? {
                    return Err(FaultError::NoTarget(format!("node {} is gone", t.id)));
                }
            }
            if self.evict {
                for t in targets {
                    self.evict_all(client, &t.id).await?;
                }
            }
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        true
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Cluster
    }

    fn kube_access(&self) -> Vec<KubeAccess> {
        // Nodes are cluster-scoped, and their pods may live in any namespace.
        let rule = |api_group, resource, verbs| KubeAccess {
            scope: KubeScope::Cluster,
            api_group,
            resource,
            verbs,
        };
        let mut rules = vec![rule("", "nodes", &["get", "list", "patch"][..])];
        if self.evict {
            rules.push(rule("", "pods", &["list"]));
            rules.push(rule("", "pods/eviction", &["create"]));
        }
        rules
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.names.iter().any(|n| n.is_empty()) {
            return Err("`names`: an empty name".into());
        }
        if self.retry_interval.is_some_and(|d| d.get().is_zero()) {
            return Err("`retry_interval`: must be above zero".into());
        }
        Ok(())
    }
}

/// Uncordons the nodes that were schedulable before. Idempotent; a node gone since is skipped.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let items: Vec<Item> = token.data()?;
    let client = env.kube().await?;
    for it in items.iter().filter(|i| !i.was_unschedulable) {
        set_unschedulable(client, &it.name, false).await?;
    }
    Ok(())
}
