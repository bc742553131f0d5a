//! The `kubernetes` steady-state probe: a deployment or statefulset has all its replicas
//! ready, or the pods of a label selector are Ready. Watch-based: the state is re-evaluated on
//! every watch event, and a change is recorded at once with the instant it was seen, so the
//! probe's resolution is the watch latency, not its interval. The interval only adds periodic
//! results, so that a span with no change still holds evidence of the state. Because of that
//! resolution its results decide a fault's recovery when the experiment has no load (see
//! `super::probe_recovery`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Probe, ProbeRun};
use crate::fault::{BoxFuture, KubeAccess, KubeScope};

/// `kubernetes:` probe, as written: exactly one of `deployment`, `statefulset`, `labels`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesProbe {
    /// Namespace of the workload or pods.
    pub namespace: String,
    /// Holds when this deployment's ready replicas reach its desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Holds when this statefulset's ready replicas reach its desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    /// Holds when every pod matching this label selector is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// At least this many ready replicas or pods are also required (default 1).
    #[serde(default = "default_min_ready")]
    pub min_ready: u32,
}

fn default_min_ready() -> u32 {
    1
}

impl KubernetesProbe {
    /// The condition watched, in words.
    fn condition(&self) -> String {
        let what = if let Some(d) = &self.deployment {
            format!("deployment {}/{d} has all replicas ready", self.namespace)
        } else if let Some(s) = &self.statefulset {
            format!("statefulset {}/{s} has all replicas ready", self.namespace)
        } else {
            format!(
                "pods {} in {} are all Ready",
                self.labels.as_deref().unwrap_or(""),
                self.namespace
            )
        };
        format!("{what} (at least {})", self.min_ready)
    }
}

impl Probe for KubernetesProbe {
    fn describe(&self, _interval: Duration) -> String {
        format!("kubernetes: {} (watched)", self.condition())
    }

    /// The one-of rule. Messages name the field.
    fn validate(&self) -> Result<(), String> {
        let n = [
            self.deployment.is_some(),
            self.statefulset.is_some(),
            self.labels.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            return Err(
                "exactly one of `deployment`, `statefulset`, `labels` must be given".into(),
            );
        }
        if self.namespace.is_empty() {
            return Err("`namespace`: empty".into());
        }
        Ok(())
    }

    /// List and watch, in its namespace.
    fn kube_access(&self) -> Vec<KubeAccess> {
        let resource = if self.deployment.is_some() {
            "deployments"
        } else if self.statefulset.is_some() {
            "statefulsets"
        } else {
            "pods"
        };
        let api_group = if resource == "pods" { "" } else { "apps" };
        vec![KubeAccess {
            scope: KubeScope::Namespaces(vec![self.namespace.clone()]),
            api_group,
            resource,
            verbs: &["get", "list", "watch"],
        }]
    }

    fn decides_recovery(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: ProbeRun<'a>) -> BoxFuture<'a, ()> {
        Box::pin(run(self, ctx))
    }
}

/// Where the probe's state comes from, evaluated on the objects the watch holds.
fn evaluate_workload(desired: Option<i32>, ready: Option<i32>, min: u32) -> (bool, Option<String>) {
    let desired = desired.unwrap_or(1);
    let ready = ready.unwrap_or(0);
    let min = i32::try_from(min).unwrap_or(i32::MAX);
    if ready >= desired && ready >= min {
        (true, None)
    } else {
        (false, Some(format!("{ready} of {desired} replicas ready")))
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Runs the probe until `ctx.stop`: pushes a result on every change of state and every tick.
async fn run(probe: &KubernetesProbe, ctx: ProbeRun<'_>) {
    let ProbeRun {
        env,
        interval,
        clock,
        results,
        stop,
    } = ctx;
    let cfg = probe.clone();
    let context = env.kube_context().map(str::to_owned);
    let (tx, mut rx) = tokio::sync::watch::channel::<(bool, Option<String>)>((
        false,
        Some("no state seen yet".into()),
    ));
    let push = |ok: bool, error: Option<String>, t_us: u64| results.push(t_us, ok, error);
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let client = match crate::kube_env::client(context.as_deref()).await {
                    Ok(c) => c,
                    Err(e) => {
                        tx.send_replace((false, Some(e.to_string())));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
                let ns = cfg.namespace.clone();
                let min = cfg.min_ready;
                let err = if let Some(name) = &cfg.deployment {
                    let field = format!("metadata.name={name}");
                    watch_loop::<Deployment, _>(
                        Api::namespaced(client, &ns),
                        None,
                        Some(&field),
                        |m| match m.values().next() {
                            None => (false, Some("deployment not found".into())),
                            Some(d) => evaluate_workload(
                                d.spec.as_ref().and_then(|s| s.replicas),
                                d.status.as_ref().and_then(|s| s.ready_replicas),
                                min,
                            ),
                        },
                        &tx,
                        &stop,
                    )
                    .await
                } else if let Some(name) = &cfg.statefulset {
                    let field = format!("metadata.name={name}");
                    watch_loop::<StatefulSet, _>(
                        Api::namespaced(client, &ns),
                        None,
                        Some(&field),
                        |m| match m.values().next() {
                            None => (false, Some("statefulset not found".into())),
                            Some(d) => evaluate_workload(
                                d.spec.as_ref().and_then(|s| s.replicas),
                                d.status.as_ref().and_then(|s| s.ready_replicas),
                                min,
                            ),
                        },
                        &tx,
                        &stop,
                    )
                    .await
                } else {
                    watch_loop::<Pod, _>(
                        Api::namespaced(client, &ns),
                        cfg.labels.as_deref(),
                        None,
                        |m| {
                            let total = m.len();
                            let ready = m.values().filter(|p| pod_ready(p)).count();
                            let min = usize::try_from(min).unwrap_or(usize::MAX);
                            if ready == total && ready >= min {
                                (true, None)
                            } else {
                                (false, Some(format!("{ready} of {total} pods Ready")))
                            }
                        },
                        &tx,
                        &stop,
                    )
                    .await
                };
                match err {
                    None => return,
                    Some(e) => {
                        tx.send_replace((false, Some(e)));
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        })
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let (ok, error) = rx.borrow_and_update().clone();
                push(ok, error, clock.now_us());
            }
            _ = tick.tick() => {
                let (ok, error) = rx.borrow().clone();
                push(ok, error, clock.now_us());
            }
        }
    }
    watcher.abort();
}

/// Lists, then watches from the list's resourceVersion, re-evaluating on every event; re-lists
/// when the watch ends. Returns `None` when stopped, or the error that broke it.
async fn watch_loop<K, F>(
    api: Api<K>,
    labels: Option<&str>,
    fields: Option<&str>,
    eval: F,
    tx: &tokio::sync::watch::Sender<(bool, Option<String>)>,
    stop: &CancellationToken,
) -> Option<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&BTreeMap<String, K>) -> (bool, Option<String>),
{
    let mut lp = ListParams::default();
    let mut wp = WatchParams::default().timeout(60);
    if let Some(l) = labels {
        lp = lp.labels(l);
        wp = wp.labels(l);
    }
    if let Some(f) = fields {
        lp = lp.fields(f);
        wp = wp.fields(f);
    }
    let publish = |m: &BTreeMap<String, K>| {
        let state = eval(m);
        tx.send_if_modified(|cur| {
            if *cur != state {
                *cur = state.clone();
                true
            } else {
                false
            }
        });
    };
    loop {
        let list = match api.list(&lp).await {
            Ok(l) => l,
            Err(e) => return Some(format!("list: {e}")),
        };
        let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
        let mut objects: BTreeMap<String, K> = list
            .items
            .into_iter()
            .filter_map(|o| o.meta().name.clone().map(|n| (n, o)))
            .collect();
        publish(&objects);
        loop {
            let stream = match api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) => return Some(format!("watch: {e}")),
            };
            let mut stream = std::pin::pin!(stream);
            let mut relist = false;
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return None,
                    ev = stream.next() => ev,
                };
                let Some(ev) = ev else { break };
                match ev {
                    Ok(WatchEvent::Added(o)) | Ok(WatchEvent::Modified(o)) => {
                        if let Some(v) = o.meta().resource_version.clone() {
                            rv = v;
                        }
                        if let Some(n) = o.meta().name.clone() {
                            objects.insert(n, o);
                        }
                    }
                    Ok(WatchEvent::Deleted(o)) => {
                        if let Some(v) = o.meta().resource_version.clone() {
                            rv = v;
                        }
                        if let Some(n) = &o.meta().name {
                            objects.remove(n);
                        }
                    }
                    Ok(WatchEvent::Bookmark(b)) => rv = b.metadata.resource_version,
                    Ok(WatchEvent::Error(_)) | Err(_) => {
                        relist = true;
                        break;
                    }
                }
                publish(&objects);
            }
            if relist {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> KubernetesProbe {
        KubernetesProbe {
            namespace: "shop".into(),
            deployment: Some("web".into()),
            statefulset: None,
            labels: None,
            min_ready: 1,
        }
    }

    #[test]
    fn the_plan_line_and_what_it_needs() {
        let p = deployment();
        assert_eq!(
            p.describe(Duration::from_secs(1)),
            "kubernetes: deployment shop/web has all replicas ready (at least 1) (watched)"
        );
        assert!(p.needs_cluster());
        assert!(p.decides_recovery());
        assert_eq!(p.kube_access()[0].resource, "deployments");
        let both = KubernetesProbe {
            labels: Some("app=web".into()),
            ..deployment()
        };
        assert!(both.validate().unwrap_err().contains("exactly one of"));
    }

    #[test]
    fn workload_readiness() {
        assert!(evaluate_workload(Some(3), Some(3), 1).0);
        assert!(!evaluate_workload(Some(3), Some(2), 1).0);
        assert!(!evaluate_workload(Some(0), None, 1).0);
    }
}
