//! Cluster evidence: while a run that touches Kubernetes lasts, watch the Events, the pods and the
//! EndpointSlices of the namespaces it touches and keep what the cluster did (restarts with their
//! reason, OOMKilled, readiness flips, evictions, failed scheduling, pods created and deleted, a
//! Service's ready endpoints changing), each at
//! the instant rattle saw it on the run's clock. The runner puts them on the report's timeline,
//! each under the fault whose window it fell in.
//!
//! Shape: one task per (resource, namespace) running list-then-watch from the list's
//! resourceVersion (what existed before the run is the baseline, not evidence) and re-listing
//! when a watch ends. Times are when the watch delivered the change, not the object's own
//! timestamps: those come from the cluster's clocks (seconds, skewed), while the fault windows
//! are on rattle's. A watch that fails (no permission, API down) is retried each second and
//! reported once as a warning: evidence is best effort and never changes a verdict. At most
//! [`MAX_EVENTS`] are kept, so a cluster in an event storm cannot grow the report without bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::RunClock;

/// What the watchers read, where a run's faults and probes reach (`scope`): list and watch on
/// Events, pods and EndpointSlices. The CronJob's Role (`rattle schedule --emit cronjob`)
/// grants it beside the kinds' own access, since every run that touches a cluster watches.
pub fn evidence_access(scope: crate::fault::KubeScope) -> Vec<crate::fault::KubeAccess> {
    [
        ("", "events"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .into_iter()
    .map(|(api_group, resource)| crate::fault::KubeAccess {
        scope: scope.clone(),
        api_group,
        resource,
        verbs: &["list", "watch"],
    })
    .collect()
}

/// Most cluster events kept per run; later ones are counted, not kept.
pub const MAX_EVENTS: usize = 2_000;

/// One thing the cluster did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// When rattle saw it, µs since the run's start.
    pub t_us: u64,
    /// Namespace.
    pub namespace: String,
    /// The object, `Kind/name`.
    pub object: String,
    /// Short reason: the Event's (`FailedScheduling`, `Evicted`, `Killing`, `BackOff`...) or
    /// one of the pod watcher's (`Restarted`, `OOMKilled`, `Ready`, `NotReady`, `PodCreated`,
    /// `PodDeleted`, `Evicted`; `EndpointsChanged` from the EndpointSlices).
    pub reason: String,
    /// `Warning` or `Normal`.
    pub severity: String,
    /// What happened, in the cluster's words.
    pub message: String,
    /// `event` (a Kubernetes Event), `pod` (seen in a pod's status) or `endpoints` (a
    /// Service's ready endpoints, from its EndpointSlices).
    pub source: &'static str,
}

/// What the watchers collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// The events kept, in the order seen.
    pub events: Vec<ClusterEvent>,
    /// Events seen beyond [`MAX_EVENTS`].
    pub dropped: u64,
}

type Sink = Arc<Mutex<Collected>>;
type Warn = Arc<dyn Fn(String) + Send + Sync>;

fn keep(sink: &Sink, e: ClusterEvent) {
    let mut c = sink.lock().unwrap_or_else(|p| p.into_inner());
    if c.events.len() < MAX_EVENTS {
        c.events.push(e);
    } else {
        c.dropped += 1;
    }
}

/// Event reasons of type `Normal` worth showing (every `Warning` is kept): those that say a pod
/// went away or came back, not the chatter of image pulls.
const NORMAL_REASONS: &[&str] = &[
    "Killing",
    "Preempted",
    "Preempting",
    "SuccessfulCreate",
    "SuccessfulDelete",
    "ScalingReplicaSet",
    "Evicted",
    "TaintManagerEviction",
    "NodeNotReady",
    "Scheduled",
];

/// The watchers of one run.
pub struct Watchers {
    sink: Sink,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Watchers {
    /// Starts watching Events and pods in `namespaces` (`None`: every namespace) with the
    /// client of kubeconfig context `context`.
    pub fn start(
        context: Option<String>,
        namespaces: Option<Vec<String>>,
        clock: RunClock,
        warn: Warn,
    ) -> Self {
        let sink: Sink = Arc::default();
        let stop = CancellationToken::new();
        let scopes: Vec<Option<String>> = match namespaces {
            Some(ns) => ns.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut tasks = Vec::new();
        for ns in scopes {
            for what in [Watched::Events, Watched::Pods, Watched::Endpoints] {
                let w = Watch {
                    context: context.clone(),
                    namespace: ns.clone(),
                    what,
                    clock,
                    sink: sink.clone(),
                    warn: warn.clone(),
                    stop: stop.clone(),
                };
                tasks.push(tokio::spawn(w.run()));
            }
        }
        Watchers { sink, stop, tasks }
    }

    /// Stops the watchers and returns what they saw.
    pub async fn finish(self) -> Collected {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        std::mem::take(&mut *self.sink.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Watched {
    Events,
    Pods,
    Endpoints,
}

impl Watched {
    fn as_str(self) -> &'static str {
        match self {
            Watched::Events => "events",
            Watched::Pods => "pods",
            Watched::Endpoints => "endpointslices",
        }
    }
}

struct Watch {
    context: Option<String>,
    namespace: Option<String>,
    what: Watched,
    clock: RunClock,
    sink: Sink,
    warn: Warn,
    stop: CancellationToken,
}

impl Watch {
    async fn run(self) {
        let mut warned = false;
        let mut pods = PodMemory::default();
        let mut endpoints = EndpointMemory::default();
        loop {
            let err = match crate::kube_env::client(self.context.as_deref()).await {
                Err(e) => e.to_string(),
                Ok(client) => match self.what {
                    Watched::Events => {
                        let api: Api<Event> = match &self.namespace {
                            Some(ns) => Api::namespaced(client, ns),
                            None => Api::all(client),
                        };
                        // What a list returns is the state before: only changes are evidence.
                        let on = |change, ev| {
                            if change != Change::Listed {
                                self.on_event(ev)
                            }
                        };
                        match self.watch(api, on).await {
                            None => return,
                            Some(e) => e,
                        }
                    }
                    Watched::Pods => {
                        let api: Api<Pod> = match &self.namespace {
                            Some(ns) => Api::namespaced(client, ns),
                            None => Api::all(client),
                        };
                        match self.watch(api, |kind, p| pods.on_pod(&self, kind, p)).await {
                            None => return,
                            Some(e) => e,
                        }
                    }
                    Watched::Endpoints => {
                        let api: Api<EndpointSlice> = match &self.namespace {
                            Some(ns) => Api::namespaced(client, ns),
                            None => Api::all(client),
                        };
                        let on = |kind, e| endpoints.on_slice(&self, kind, e);
                        match self.watch(api, on).await {
                            None => return,
                            Some(e) => e,
                        }
                    }
                },
            };
            if !warned {
                warned = true;
                (self.warn)(format!(
                    "cluster evidence: cannot watch {} in {}: {err} (retrying; the verdict \
                     does not depend on it)",
                    self.what.as_str(),
                    self.namespace.as_deref().unwrap_or("every namespace")
                ));
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// List (the state before: remembered, not reported), then watch from its
    /// resourceVersion, calling `on` for each change. `None` when stopped, else the error.
    async fn watch<K>(&self, api: Api<K>, mut on: impl FnMut(Change, K)) -> Option<String>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let lp = ListParams::default();
        let list = tokio::select! {
            _ = self.stop.cancelled() => return None,
            l = api.list(&lp) => match l {
                Ok(l) => l,
                Err(e) => return Some(format!("list: {e}")),
            },
        };
        let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
        for o in list.items {
            on(Change::Listed, o);
        }
        let wp = WatchParams::default().timeout(60);
        loop {
            let stream = tokio::select! {
                _ = self.stop.cancelled() => return None,
                s = api.watch(&wp, &rv) => match s {
                    Ok(s) => s,
                    Err(e) => return Some(format!("watch: {e}")),
                },
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                let ev = tokio::select! {
                    _ = self.stop.cancelled() => return None,
                    ev = stream.next() => ev,
                };
                let Some(ev) = ev else { break };
                let (kind, o) = match ev {
                    Ok(WatchEvent::Added(o)) => (Change::Added, o),
                    Ok(WatchEvent::Modified(o)) => (Change::Modified, o),
                    Ok(WatchEvent::Deleted(o)) => (Change::Deleted, o),
                    Ok(WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    // 410 Gone and the like: list again.
                    Ok(WatchEvent::Error(e)) => return Some(format!("watch: {}", e.message)),
                    Err(e) => return Some(format!("watch: {e}")),
                };
                if let Some(v) = o.meta().resource_version.clone() {
                    rv = v;
                }
                on(kind, o);
            }
        }
    }

    fn on_event(&self, ev: Event) {
        let severity = ev.type_.clone().unwrap_or_else(|| "Normal".into());
        let reason = ev.reason.clone().unwrap_or_default();
        if severity != "Warning" && !NORMAL_REASONS.contains(&reason.as_str()) {
            return;
        }
        let obj = &ev.involved_object;
        let count = ev.count.filter(|c| *c > 1);
        let mut message = ev.message.clone().unwrap_or_default().trim().to_string();
        if let Some(c) = count {
            message.push_str(&format!(" (×{c})"));
        }
        keep(
            &self.sink,
            ClusterEvent {
                t_us: self.clock.now_us(),
                namespace: ev
                    .metadata
                    .namespace
                    .clone()
                    .or_else(|| obj.namespace.clone())
                    .unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    obj.kind.as_deref().unwrap_or("?"),
                    obj.name.as_deref().unwrap_or("?")
                ),
                reason,
                severity,
                message,
                source: "event",
            },
        );
    }

    fn pod_event(&self, ns: &str, pod: &str, reason: &str, severity: &str, message: String) {
        keep(
            &self.sink,
            ClusterEvent {
                t_us: self.clock.now_us(),
                namespace: ns.to_string(),
                object: format!("Pod/{pod}"),
                reason: reason.to_string(),
                severity: severity.to_string(),
                message,
                source: "pod",
            },
        );
    }
}

/// The kind of change a watch delivered (or `Listed`: the state before the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Listed,
    Added,
    Modified,
    Deleted,
}

/// What a pod looked like last time: readiness, restarts per container, eviction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodState {
    ready: bool,
    restarts: BTreeMap<String, i32>,
    evicted: bool,
}

fn pod_state(p: &Pod) -> PodState {
    let status = p.status.as_ref();
    PodState {
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.name.clone(), c.restart_count))
                    .collect()
            })
            .unwrap_or_default(),
        evicted: status.and_then(|s| s.reason.as_deref()) == Some("Evicted"),
    }
}

/// Why container `name` of `p` last terminated: (reason, exit code).
fn last_termination(p: &Pod, name: &str) -> Option<(String, i32)> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?;
    let c = cs.iter().find(|c| c.name == name)?;
    let t = c.last_state.as_ref()?.terminated.as_ref()?;
    Some((t.reason.clone().unwrap_or_default(), t.exit_code))
}

/// The pods of one watch, by `namespace/name`, to turn status changes into events.
#[derive(Default)]
struct PodMemory {
    pods: BTreeMap<(String, String), PodState>,
}

impl PodMemory {
    fn on_pod(&mut self, w: &Watch, change: Change, p: Pod) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let key = (ns.clone(), name.clone());
        let now = pod_state(&p);
        match change {
            Change::Listed => {
                self.pods.insert(key, now);
            }
            Change::Deleted => {
                self.pods.remove(&key);
                w.pod_event(&ns, &name, "PodDeleted", "Normal", "pod deleted".into());
            }
            Change::Added | Change::Modified => {
                let before = self.pods.insert(key, now.clone());
                let Some(before) = before else {
                    w.pod_event(&ns, &name, "PodCreated", "Normal", "pod created".into());
                    if now.ready {
                        w.pod_event(&ns, &name, "Ready", "Normal", "pod became Ready".into());
                    }
                    return;
                };
                for (container, n) in &now.restarts {
                    let was = before.restarts.get(container).copied().unwrap_or(0);
                    if *n > was {
                        let (why, code) =
                            last_termination(&p, container).unwrap_or_else(|| (String::new(), 0));
                        let reason = if why == "OOMKilled" {
                            "OOMKilled"
                        } else {
                            "Restarted"
                        };
                        let why = if why.is_empty() {
                            "unknown reason".into()
                        } else {
                            why
                        };
                        w.pod_event(
                            &ns,
                            &name,
                            reason,
                            "Warning",
                            format!(
                                "container {container} restarted ({why}, exit code {code}); \
                                 {n} restart(s) in all"
                            ),
                        );
                    }
                }
                if now.evicted && !before.evicted {
                    let msg = p
                        .status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_else(|| "pod evicted".into());
                    w.pod_event(&ns, &name, "Evicted", "Warning", msg);
                }
                if now.ready != before.ready {
                    if now.ready {
                        w.pod_event(&ns, &name, "Ready", "Normal", "pod became Ready".into());
                    } else {
                        w.pod_event(
                            &ns,
                            &name,
                            "NotReady",
                            "Warning",
                            "pod is no longer Ready".into(),
                        );
                    }
                }
            }
        }
    }
}

/// Ready endpoints of a slice: `conditions.ready` unset counts as ready (the API's rule).
fn ready_endpoints(e: &EndpointSlice) -> usize {
    e.endpoints
        .iter()
        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count()
}

/// The EndpointSlices of one watch, to report each Service's count of ready endpoints when it
/// changes (a Service is the sum of its slices, labelled `kubernetes.io/service-name`).
#[derive(Default)]
struct EndpointMemory {
    /// (namespace, slice) → (service, ready endpoints).
    slices: BTreeMap<(String, String), (String, usize)>,
}

impl EndpointMemory {
    fn service_ready(&self, ns: &str, service: &str) -> usize {
        self.slices
            .iter()
            .filter(|((n, _), (svc, _))| n == ns && svc == service)
            .map(|(_, (_, r))| r)
            .sum()
    }

    fn on_slice(&mut self, w: &Watch, change: Change, e: EndpointSlice) {
        let ns = e.metadata.namespace.clone().unwrap_or_default();
        let slice = e.metadata.name.clone().unwrap_or_default();
        let Some(service) = e
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
        else {
            return;
        };
        let before = self.service_ready(&ns, &service);
        let key = (ns.clone(), slice);
        match change {
            Change::Deleted => {
                self.slices.remove(&key);
            }
            _ => {
                self.slices
                    .insert(key, (service.clone(), ready_endpoints(&e)));
            }
        }
        if change == Change::Listed {
            return;
        }
        let now = self.service_ready(&ns, &service);
        if now != before {
            keep(
                &w.sink,
                ClusterEvent {
                    t_us: w.clock.now_us(),
                    namespace: ns,
                    object: format!("Service/{service}"),
                    reason: "EndpointsChanged".into(),
                    severity: if now < before { "Warning" } else { "Normal" }.into(),
                    message: format!("{now} ready endpoint(s), was {before}"),
                    source: "endpoints",
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            context: None,
            namespace: Some("shop".into()),
            what: Watched::Pods,
            clock: RunClock::start_now(),
            sink: Arc::default(),
            warn: Arc::new(|_| {}),
            stop: CancellationToken::new(),
        }
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "status": status,
        }))
        .expect("pod")
    }

    fn reasons(w: &Watch) -> Vec<(String, String)> {
        w.sink
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| (e.reason.clone(), e.message.clone()))
            .collect()
    }

    #[test]
    fn pod_changes_become_restarts_oomkills_evictions_and_readiness_flips() {
        let w = watch();
        let mut m = PodMemory::default();
        let ready = |r: bool| serde_json::json!([{"type": "Ready", "status": if r {"True"} else {"False"}}]);
        // The state before the run: remembered, not reported.
        m.on_pod(&w, Change::Listed, pod(serde_json::json!({"conditions": ready(true),
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2, "image": "a", "imageID": ""}]})));
        assert!(reasons(&w).is_empty());
        // Restarted by the OOM killer, no longer ready.
        m.on_pod(&w, Change::Modified, pod(serde_json::json!({"conditions": ready(false),
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 3, "image": "a", "imageID": "",
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})));
        // Crashed with an error, ready again.
        m.on_pod(&w, Change::Modified, pod(serde_json::json!({"conditions": ready(true),
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 4, "image": "a", "imageID": "",
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]})));
        // Evicted.
        m.on_pod(&w, Change::Modified, pod(serde_json::json!({"reason": "Evicted",
            "message": "The node was low on resource: memory.", "conditions": ready(false),
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 4, "image": "a", "imageID": ""}]})));
        m.on_pod(&w, Change::Deleted, pod(serde_json::json!({})));
        let got: Vec<String> = reasons(&w).into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            got,
            [
                "OOMKilled",
                "NotReady",
                "Restarted",
                "Ready",
                "Evicted",
                "NotReady",
                "PodDeleted"
            ]
        );
        let all = reasons(&w);
        assert_eq!(
            all[0].1,
            "container app restarted (OOMKilled, exit code 137); 3 restart(s) in all"
        );
        assert_eq!(all[4].1, "The node was low on resource: memory.");
    }

    #[test]
    fn events_are_capped() {
        let w = watch();
        for i in 0..MAX_EVENTS + 5 {
            w.pod_event(
                "shop",
                &format!("p{i}"),
                "PodCreated",
                "Normal",
                String::new(),
            );
        }
        let c = w.sink.lock().unwrap();
        assert_eq!(c.events.len(), MAX_EVENTS);
        assert_eq!(c.dropped, 5);
    }
}
