//! The `kubernetes` steady-state probe: a deployment or statefulset has all its replicas
//! ready, or the pods of a label selector are Ready. Watch-based: the state is re-evaluated on
//! every watch event, and a change is recorded at once with the instant it was seen, so the
//! probe's resolution is the watch latency, not its interval. The interval only adds periodic
//! results, so that a span with no change still holds evidence of the state.
//!
//! Also owns [`probe_recovery`], the pure function that finds a fault's recovery instant from
//! these results when the experiment has no load (the instant the replacement became Ready).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ProbeResult;
use crate::analysis::{Recovery, us_to_ms};
use crate::metrics::RunClock;

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
    /// Checks the one-of rule. Messages name the field.
    pub fn validate(&self) -> Result<(), String> {
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

    /// The API access the probe needs (list and watch, in its namespace).
    pub fn kube_access(&self) -> Vec<crate::fault::KubeAccess> {
        let resource = if self.deployment.is_some() {
            "deployments"
        } else if self.statefulset.is_some() {
            "statefulsets"
        } else {
            "pods"
        };
        let api_group = if resource == "pods" { "" } else { "apps" };
        vec![crate::fault::KubeAccess {
            scope: crate::fault::KubeScope::Namespaces(vec![self.namespace.clone()]),
            api_group,
            resource,
            verbs: &["get", "list", "watch"],
        }]
    }

    /// One line for the plan.
    pub fn describe(&self) -> String {
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

/// Runs probe `index` until `stop`: pushes a result on every change of state and every tick.
pub async fn run(
    index: usize,
    cfg: KubernetesProbe,
    context: Option<String>,
    interval: Duration,
    clock: RunClock,
    results: Arc<Mutex<Vec<ProbeResult>>>,
    stop: CancellationToken,
) {
    let (tx, mut rx) = tokio::sync::watch::channel::<(bool, Option<String>)>((
        false,
        Some("no state seen yet".into()),
    ));
    let push = {
        let results = results.clone();
        move |ok: bool, error: Option<String>, t_us: u64| {
            results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ProbeResult {
                    probe: index,
                    t_us,
                    ok,
                    error,
                });
        }
    };
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

/// A fault's recovery measured on probe results alone (experiments with no load), with the
/// same rules as the load-based analysis: impact is the first failing result at or after
/// `injected_us`; the recovery instant is the first instant at or after `from_us` (the
/// injection, or the revert for a fault with a duration) from which every probe in `probes`
/// keeps passing for `hold_us`: `from_us` itself if they pass there, else the first result
/// that makes them all pass again (the instant the replacement was seen Ready). Undecided
/// until `observed_until_us` is a hold past the candidate. A probe's state is its latest
/// result; a probe with no result since the injection counts as passing.
pub fn probe_recovery(
    results: &[ProbeResult],
    probes: &[usize],
    injected_us: u64,
    from_us: u64,
    hold_us: u64,
    observed_until_us: u64,
) -> Recovery {
    let mut rs: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| probes.contains(&r.probe) && r.t_us >= injected_us)
        .collect();
    rs.sort_by_key(|r| r.t_us);
    let total = rs.len() as u64;
    let failed = rs.iter().filter(|r| !r.ok).count() as u64;
    let mut out = Recovery {
        time_to_impact_ms: rs
            .iter()
            .find(|r| !r.ok)
            .map(|r| us_to_ms(r.t_us - injected_us)),
        time_to_recover_ms: None,
        recovered_at_ms: None,
        reason: None,
        requests: total,
        failed_requests: failed,
        availability: (total > 0).then(|| (total - failed) as f64 / total as f64),
    };
    let mut state: BTreeMap<usize, bool> = BTreeMap::new();
    let all_ok = |st: &BTreeMap<usize, bool>| st.values().all(|ok| *ok);
    let split = rs.partition_point(|r| r.t_us <= from_us);
    for r in &rs[..split] {
        state.insert(r.probe, r.ok);
    }
    let mut candidate = all_ok(&state).then_some(from_us);
    let mut decided = None;
    for r in &rs[split..] {
        if let Some(c) = candidate
            && r.t_us > c.saturating_add(hold_us)
        {
            decided = Some(c);
            break;
        }
        state.insert(r.probe, r.ok);
        match (all_ok(&state), candidate) {
            (false, _) => candidate = None,
            (true, None) => candidate = Some(r.t_us),
            (true, Some(_)) => {}
        }
    }
    let decided = decided.or(candidate.filter(|c| observed_until_us >= c.saturating_add(hold_us)));
    match (decided, candidate) {
        (Some(t), _) => {
            out.recovered_at_ms = Some(us_to_ms(t));
            out.time_to_recover_ms = Some(us_to_ms(t.saturating_sub(from_us)));
        }
        (None, Some(_)) => {
            out.reason = Some("not recovered: the probes passed, but not for the hold period before observation ended".into())
        }
        (None, None) => {
            out.reason = Some("not recovered: the probes were still failing when observation ended".into())
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t_us: u64, ok: bool) -> ProbeResult {
        ProbeResult {
            probe: 0,
            t_us,
            ok,
            error: None,
        }
    }

    #[test]
    fn recovery_is_the_first_pass_that_holds() {
        let rs = vec![
            r(0, true),
            r(1_000, false),
            r(1_500, true),
            r(1_600, false),
            r(3_000, true),
            r(9_000, true),
        ];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 9_000);
        assert_eq!(rec.recovered_at_ms, Some(3.0));
        assert_eq!(rec.time_to_recover_ms, Some(2.0));
        assert_eq!(rec.time_to_impact_ms, Some(0.0));
    }

    #[test]
    fn not_held_is_undecided_and_never_failing_is_recovered_at_once() {
        let rs = vec![r(1_000, false), r(3_000, true)];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 4_000);
        assert_eq!(rec.recovered_at_ms, None);
        assert!(rec.reason.is_some());
        let rs = vec![r(1_000, true), r(3_000, true)];
        let rec = probe_recovery(&rs, &[0], 1_000, 1_000, 5_000, 9_000);
        assert_eq!(rec.time_to_recover_ms, Some(0.0));
        assert_eq!(rec.time_to_impact_ms, None);
    }

    #[test]
    fn failures_during_a_faults_window_count_until_they_end() {
        // Failing from 2 ms, reverted at 5 ms, ready again at 7 ms.
        let rs = vec![
            r(2_000, false),
            r(4_000, false),
            r(7_000, true),
            r(20_000, true),
        ];
        let rec = probe_recovery(&rs, &[0], 1_000, 5_000, 5_000, 20_000);
        assert_eq!(rec.recovered_at_ms, Some(7.0));
        assert_eq!(rec.time_to_recover_ms, Some(2.0));
    }

    #[test]
    fn every_probe_must_pass() {
        let mut b = r(3_000, false);
        b.probe = 1;
        let mut b2 = r(6_000, true);
        b2.probe = 1;
        let rs = vec![r(2_000, false), b, r(4_000, true), b2, r(20_000, true)];
        let rec = probe_recovery(&rs, &[0, 1], 1_000, 1_000, 5_000, 20_000);
        assert_eq!(rec.recovered_at_ms, Some(6.0));
    }

    #[test]
    fn workload_readiness() {
        assert!(evaluate_workload(Some(3), Some(3), 1).0);
        assert!(!evaluate_workload(Some(3), Some(2), 1).0);
        assert!(!evaluate_workload(Some(0), None, 1).0);
    }
}
