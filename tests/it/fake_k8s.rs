//! A stateful fake Kubernetes API server for the tests: plain HTTP/1.1 on 127.0.0.1, JSON
//! objects kept as `serde_json::Value`, and a kubeconfig pointing at it, so the real kube client
//! (in the rattle binary or in-process) talks to it exactly as to a cluster.
//!
//! It serves pods, deployments and statefulsets (+ `/scale`), replica sets, nodes, evictions (`pods/{name}/eviction`, 429
//! while a disruption budget refuses), ephemeral containers (`pods/{name}/ephemeralcontainers`),
//! list with label and field selectors, and watch (chunked JSON lines; a watch from a
//! resourceVersion first replays the history after it, so nothing between a list and its watch
//! is lost). 404 for a missing object, 409 for creating an existing one. A replica-set
//! controller keeps each deployment's pod count: a missing pod is created `create_delay` after
//! it went missing, and marked Ready `ready_delay` later; the instant of each readiness is
//! recorded as ground truth. Every mutating call is logged for assertions.
//!
//! It runs on its own runtime in a thread, so synchronous tests can use it; dropping it stops
//! the runtime.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A response body: either whole, or a stream of chunks (a watch).
pub enum Body {
    /// Whole.
    Full(Full<Bytes>),
    /// Chunks until the sender is dropped.
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(f) => Pin::new(f).poll_frame(cx),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// Resource kinds the fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Res {
    /// core/v1 Pod.
    Pods,
    /// apps/v1 Deployment.
    Deployments,
    /// apps/v1 StatefulSet.
    StatefulSets,
    /// apps/v1 ReplicaSet (one per deployment, kept in step with it; read-only).
    ReplicaSets,
    /// core/v1 Namespace (read for its Pod Security labels).
    Namespaces,
    /// core/v1 Node.
    Nodes,
    /// core/v1 Event (fed by the tests through [`FakeK8s::add_event`]).
    Events,
    /// discovery.k8s.io/v1 EndpointSlice (fed through [`FakeK8s::set_endpoints`]).
    EndpointSlices,
}

impl Res {
    fn kind(self) -> &'static str {
        match self {
            Res::Pods => "Pod",
            Res::Deployments => "Deployment",
            Res::StatefulSets => "StatefulSet",
            Res::ReplicaSets => "ReplicaSet",
            Res::Namespaces => "Namespace",
            Res::Nodes => "Node",
            Res::Events => "Event",
            Res::EndpointSlices => "EndpointSlice",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Res::Deployments | Res::StatefulSets | Res::ReplicaSets => "apps/v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
}

type Key = (Res, String, String);

struct Watcher {
    res: Res,
    ns: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// The server's state.
pub struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<(u64, Res, String, &'static str, Value)>,
    watchers: Vec<Watcher>,
    /// Replacement pods being created, by (namespace, deployment).
    pending: BTreeMap<(String, String), u32>,
    /// Evictions of (namespace, pod) refused with 429 this many more times.
    pub eviction_refusals: BTreeMap<(String, String), u32>,
    /// Mutating calls, e.g. `DELETE pods shop/web-0`.
    pub log: Vec<String>,
    /// Ground truth: (namespace/pod, when it became Ready).
    pub ready_at: Vec<(String, SystemTime)>,
    /// How long the controller waits before creating a missing pod.
    pub create_delay: Duration,
    /// How long a new pod takes to become Ready.
    pub ready_delay: Duration,
    /// Counter for generated pod names.
    seq: u64,
    /// The state the kubelet reports at once for each new ephemeral container (default: it
    /// ran and exited 0); a test sets `running`, a failing exit or a `waiting` pull error.
    pub ephemeral_state: Value,
    /// Keep history (disabled for very large setups to save memory).
    pub keep_history: bool,
    /// Time spent answering requests (for benchmarks: what is not client-side work).
    pub server_time: Duration,
    /// Objects of any other group (custom resources), applied server-side.
    pub generic: Generic,
}

/// The running fake.
pub struct FakeK8s {
    /// Its address.
    pub addr: SocketAddr,
    /// The kubeconfig file pointing at it (context `fake`).
    pub kubeconfig: PathBuf,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn lock(s: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeK8s {
    /// Starts an empty fake with the given controller delays.
    pub fn start(create_delay: Duration, ready_delay: Duration) -> FakeK8s {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake runtime");
        let state = Arc::new(Mutex::new(State {
            rv: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            pending: BTreeMap::new(),
            eviction_refusals: BTreeMap::new(),
            log: Vec::new(),
            ready_at: Vec::new(),
            create_delay,
            ready_delay,
            seq: 0,
            ephemeral_state: json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            keep_history: true,
            server_time: Duration::ZERO,
            generic: Generic::default(),
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move {
                            let t0 = std::time::Instant::now();
                            let resp = handle(st.clone(), req).await;
                            lock(&st).server_time += t0.elapsed();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\nusers:\n- name: fake\n  user:\n    token: fake-token\n"
            ),
        )
        .expect("kubeconfig");
        FakeK8s {
            addr,
            kubeconfig,
            state,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// Runs `f` on the state.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// The mutating calls so far.
    pub fn log(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }

    /// An object, if it exists.
    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.objects.get(&(res, ns.into(), name.into())).cloned())
    }

    /// Names of the pods in `ns`.
    pub fn pod_names(&self, ns: &str) -> Vec<String> {
        self.with(|s| {
            s.objects
                .keys()
                .filter(|(r, n, _)| *r == Res::Pods && n == ns)
                .map(|k| k.2.clone())
                .collect()
        })
    }

    /// Adds a deployment `name` in `ns` with `replicas` Ready pods labelled `app=<name>`, and
    /// its replica set.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: u32) {
        self.add_workload(Res::Deployments, ns, name, replicas);
    }

    /// Adds a statefulset `name` in `ns` with `replicas` Ready pods labelled `app=<name>`.
    pub fn add_statefulset(&self, ns: &str, name: &str, replicas: u32) {
        self.add_workload(Res::StatefulSets, ns, name, replicas);
    }

    fn add_workload(&self, res: Res, ns: &str, name: &str, replicas: u32) {
        let st = self.state.clone();
        let mut s = lock(&st);
        let d = json!({
            "apiVersion": "apps/v1", "kind": res.kind(),
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app"}]}}
            },
            "status": {}
        });
        s.put(res, ns, name, d, None);
        if res == Res::Deployments {
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-rs"), "namespace": ns, "labels": {"app": name},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": name, "controller": true}]},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
                "status": {}
            });
            s.put(Res::ReplicaSets, ns, &format!("{name}-rs"), rs, None);
        }
        for _ in 0..replicas {
            let pod = s.new_pod(ns, name, true);
            let pname = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            s.put(Res::Pods, ns, &pname, pod, None);
        }
        s.refresh_status(ns, name);
    }

    /// Adds `count` Ready pods labelled `app=<app>` with no controller.
    pub fn add_bare_pods(&self, ns: &str, app: &str, count: u32) {
        self.with(|s| {
            for _ in 0..count {
                let pod = s.new_pod(ns, app, true);
                let pname = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                s.put(Res::Pods, ns, &pname, pod, None);
            }
        })
    }

    /// Adds a node, with pods of deployment `app` in `ns` scheduled on it by name.
    pub fn add_node(&self, name: &str) {
        self.with(|s| {
            let n = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {}, "status": {}});
            s.put(Res::Nodes, "", name, n, None);
        })
    }

    /// Adds a namespace with these labels.
    pub fn add_namespace(&self, name: &str, labels: Value) {
        self.with(|s| {
            let n = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}, "spec": {}, "status": {}});
            s.put(Res::Namespaces, "", name, n, None);
        })
    }

    /// Changes an object in place (as a kubelet or controller would), emitting MODIFIED.
    /// False if it does not exist.
    pub fn update(&self, res: Res, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> bool {
        self.with(|s| {
            let Some(mut o) = s.objects.get(&(res, ns.into(), name.into())).cloned() else {
                return false;
            };
            f(&mut o);
            s.put(res, ns, name, o, Some("MODIFIED"));
            true
        })
    }

    /// Sets a pod's `spec.nodeName`.
    pub fn place_pod(&self, ns: &str, pod: &str, node: &str) {
        self.with(|s| {
            if let Some(p) = s.objects.get(&(Res::Pods, ns.into(), pod.into())).cloned() {
                let mut p = p;
                p["spec"]["nodeName"] = json!(node);
                s.put(Res::Pods, ns, pod, p, Some("MODIFIED"));
            }
        })
    }
}

/// The cluster's event stream, for the tests of the report's cluster evidence.
impl FakeK8s {
    /// Emits a core/v1 Event about `kind/name` in `ns` to the events' watchers (and list).
    pub fn add_event(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        self.with(|s| {
            s.seq += 1;
            let ev_name = format!("{name}.{:x}", s.seq);
            let e = json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": ev_name, "namespace": ns},
                "involvedObject": {"kind": kind, "name": name, "namespace": ns},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "lastTimestamp": jiff::Timestamp::now().to_string()});
            s.put(Res::Events, ns, &ev_name, e, Some("ADDED"));
        })
    }

    /// Sets the one EndpointSlice of Service `ns/service` to `ready` ready and `not_ready`
    /// unready endpoints (ADDED the first time, MODIFIED after).
    pub fn set_endpoints(&self, ns: &str, service: &str, ready: u32, not_ready: u32) {
        self.with(|s| {
            let name = format!("{service}-slice");
            let existed = s
                .objects
                .contains_key(&(Res::EndpointSlices, ns.into(), name.clone()));
            let eps: Vec<Value> = (0..ready + not_ready)
                .map(|i| {
                    json!({"addresses": [format!("10.0.0.{i}")],
                    "conditions": {"ready": i < ready}})
                })
                .collect();
            let e = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "namespace": ns,
                    "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": eps});
            s.put(
                Res::EndpointSlices,
                ns,
                &name,
                e,
                Some(if existed { "MODIFIED" } else { "ADDED" }),
            );
        })
    }

    /// Replaces pod `ns/name`'s status (a watch sees MODIFIED); false if there is no such pod.
    pub fn set_pod_status(&self, ns: &str, name: &str, status: Value) -> bool {
        self.with(|s| {
            let Some(mut p) = s.objects.get(&(Res::Pods, ns.into(), name.into())).cloned() else {
                return false;
            };
            p["status"] = status;
            s.put(Res::Pods, ns, name, p, Some("MODIFIED"));
            true
        })
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn new_pod(&mut self, ns: &str, app: &str, ready: bool) -> Value {
        self.seq += 1;
        let name = format!("{app}-{:05}", self.seq);
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                "creationTimestamp": jiff::Timestamp::now().to_string()},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        })
    }

    /// Stores an object with a new resourceVersion, emitting `event` to watchers if given.
    fn put(&mut self, res: Res, ns: &str, name: &str, mut obj: Value, event: Option<&'static str>) {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects
            .insert((res, ns.to_string(), name.to_string()), obj.clone());
        if let Some(ev) = event {
            self.emit(rv, res, ns, ev, obj);
        }
    }

    fn remove(&mut self, res: Res, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(res, ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.emit(rv, res, ns, "DELETED", obj.clone());
        Some(obj)
    }

    fn emit(&mut self, rv: u64, res: Res, ns: &str, ev: &'static str, obj: Value) {
        if self.keep_history {
            self.history
                .push((rv, res, ns.to_string(), ev, obj.clone()));
        }
        let line = Bytes::from(format!("{}\n", json!({"type": ev, "object": obj})));
        self.watchers.retain(|w| {
            if w.res != res
                || w.ns.as_deref().is_some_and(|n| n != ns)
                || !matches(&obj, w.labels.as_deref(), w.fields.as_deref())
            {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    /// The deployment or statefulset `ns/name`.
    fn workload_key(&self, ns: &str, name: &str) -> Option<Key> {
        [Res::Deployments, Res::StatefulSets]
            .into_iter()
            .map(|r| (r, ns.to_string(), name.to_string()))
            .find(|k| self.objects.contains_key(k))
    }

    /// Recomputes a workload's status (and its replica set's) from its pods; emits MODIFIED
    /// if it changed.
    fn refresh_status(&mut self, ns: &str, name: &str) {
        let Some(key) = self.workload_key(ns, name) else {
            return;
        };
        let Some(d) = self.objects.get(&key).cloned() else {
            return;
        };
        let rs_key = (Res::ReplicaSets, ns.to_string(), format!("{name}-rs"));
        if let Some(mut rs) = self.objects.get(&rs_key).cloned()
            && rs["spec"]["replicas"] != d["spec"]["replicas"]
        {
            rs["spec"]["replicas"] = d["spec"]["replicas"].clone();
            self.put(Res::ReplicaSets, ns, &rs_key.2, rs, Some("MODIFIED"));
        }
        let pods: Vec<&Value> = self.pods_of(ns, name);
        let total = pods.len();
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        let status = json!({"replicas": total, "readyReplicas": ready, "availableReplicas": ready,
            "updatedReplicas": total, "observedGeneration": d["metadata"]["generation"]});
        if d["status"] != status {
            let mut d = d;
            d["status"] = status;
            self.put(key.0, ns, name, d, Some("MODIFIED"));
        }
    }

    fn pods_of(&self, ns: &str, deploy: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), p)| {
                *r == Res::Pods && n == ns && p["metadata"]["labels"]["app"] == json!(deploy)
            })
            .map(|(_, p)| p)
            .collect()
    }
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The replica-set controller for one deployment: deletes extra pods at once, schedules
/// creation of missing ones.
fn reconcile(st: &Arc<Mutex<State>>, ns: &str, deploy: &str) {
    let mut s = lock(st);
    let Some(key) = s.workload_key(ns, deploy) else {
        return;
    };
    let Some(d) = s.objects.get(&key) else { return };
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let mut have: Vec<String> = s
        .pods_of(ns, deploy)
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    let pending = *s.pending.get(&(ns.into(), deploy.into())).unwrap_or(&0) as usize;
    while have.len() > want {
        if let Some(extra) = have.pop() {
            s.remove(Res::Pods, ns, &extra);
        }
    }
    let missing = want.saturating_sub(have.len() + pending);
    s.refresh_status(ns, deploy);
    if missing == 0 {
        return;
    }
    *s.pending.entry((ns.into(), deploy.into())).or_insert(0) += missing as u32;
    let (create, ready) = (s.create_delay, s.ready_delay);
    drop(s);
    for _ in 0..missing {
        let st = st.clone();
        let (ns, deploy) = (ns.to_string(), deploy.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(create).await;
            let name = {
                let mut s = lock(&st);
                if let Some(p) = s.pending.get_mut(&(ns.clone(), deploy.clone())) {
                    *p = p.saturating_sub(1);
                }
                let still_wanted = s
                    .workload_key(&ns, &deploy)
                    .and_then(|k| s.objects.get(&k))
                    .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(1) as usize)
                    .unwrap_or(0);
                if s.pods_of(&ns, &deploy).len() >= still_wanted {
                    return;
                }
                let pod = s.new_pod(&ns, &deploy, false);
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                s.put(Res::Pods, &ns, &name, pod, Some("ADDED"));
                s.refresh_status(&ns, &deploy);
                name
            };
            tokio::time::sleep(ready).await;
            let mut s = lock(&st);
            if let Some(mut p) = s
                .objects
                .get(&(Res::Pods, ns.clone(), name.clone()))
                .cloned()
            {
                p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
                s.ready_at.push((format!("{ns}/{name}"), SystemTime::now()));
                s.put(Res::Pods, &ns, &name, p, Some("MODIFIED"));
                s.refresh_status(&ns, &deploy);
            }
        });
    }
}

/// Does `obj` match a label selector and a field selector (the subset rattle uses: `k=v`,
/// `k==v`, `k!=v`, `k`, `!k`, comma-separated)?
pub fn matches(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label = |k: &str| obj["metadata"]["labels"][k].as_str().map(String::from);
    let field = |k: &str| -> Option<String> {
        let mut v = obj;
        for part in k.split('.') {
            v = &v[part];
        }
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let check = |sel: &str, get: &dyn Fn(&str) -> Option<String>| {
        sel.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .all(|term| {
                if let Some((k, v)) = term.split_once("!=") {
                    get(k.trim()).as_deref() != Some(v.trim())
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    get(k.trim()).as_deref() == Some(v.trim())
                } else if let Some(k) = term.strip_prefix('!') {
                    get(k.trim()).is_none()
                } else {
                    get(term).is_some()
                }
            })
    };
    labels.is_none_or(|l| check(l, &label)) && fields.is_none_or(|f| check(f, &field))
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code.is_success() {"Success"} else {"Failure"},
        "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, body)
}

fn json_response(code: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(Body::Full(Full::new(Bytes::from(body.to_string()))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found(what: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{what} \"{name}\" not found"),
    )
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(h, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed request path.
struct Route {
    res: Res,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", "apps", "v1", rest @ ..] => rest,
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => rest,
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let res = match *rest.first()? {
        "pods" => Res::Pods,
        "deployments" => Res::Deployments,
        "statefulsets" => Res::StatefulSets,
        "replicasets" => Res::ReplicaSets,
        "namespaces" => Res::Namespaces,
        "nodes" => Res::Nodes,
        "events" => Res::Events,
        "endpointslices" => Res::EndpointSlices,
        _ => return None,
    };
    Some(Route {
        res,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

async fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(r) = route(&path) else {
        if let Some(resp) = generic_handle(&st, &method, &path, &q, &content_type, &body) {
            return resp;
        }
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route {path}"),
        );
    };
    let ns = r.ns.clone().unwrap_or_default();
    let what = match r.res {
        Res::Pods => "pods",
        Res::Deployments => "deployments.apps",
        Res::StatefulSets => "statefulsets.apps",
        Res::ReplicaSets => "replicasets.apps",
        Res::Namespaces => "namespaces",
        Res::Nodes => "nodes",
        Res::Events => "events",
        Res::EndpointSlices => "endpointslices.discovery.k8s.io",
    };
    match (&method, r.name.as_deref(), r.sub.as_deref()) {
        (&Method::GET, None, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let from: u64 = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (tx, rx) = mpsc::unbounded_channel();
            let mut s = lock(&st);
            for (rv, res, ons, ev, obj) in &s.history {
                if *rv > from
                    && *res == r.res
                    && r.ns.as_deref().is_none_or(|n| n == ons)
                    && matches(
                        obj,
                        q.get("labelSelector").map(|s| s.as_str()),
                        q.get("fieldSelector").map(|s| s.as_str()),
                    )
                {
                    let _ = tx.send(Bytes::from(format!(
                        "{}\n",
                        json!({"type": ev, "object": obj})
                    )));
                }
            }
            s.watchers.push(Watcher {
                res: r.res,
                ns: r.ns.clone(),
                labels: q.get("labelSelector").cloned(),
                fields: q.get("fieldSelector").cloned(),
                tx,
            });
            let mut resp = Response::new(Body::Stream(rx));
            resp.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        (&Method::GET, None, None) => {
            let s = lock(&st);
            let items: Vec<&Value> = s
                .objects
                .iter()
                .filter(|((res, ons, _), obj)| {
                    *res == r.res
                        && r.ns.as_deref().is_none_or(|n| n == ons)
                        && matches(
                            obj,
                            q.get("labelSelector").map(|s| s.as_str()),
                            q.get("fieldSelector").map(|s| s.as_str()),
                        )
                })
                .map(|(_, v)| v)
                .collect();
            json_response(
                StatusCode::OK,
                json!({"apiVersion": r.res.api_version(), "kind": format!("{}List", r.res.kind()),
                    "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        (&Method::POST, None, None) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut s = lock(&st);
            if s.objects.contains_key(&(r.res, ns.clone(), name.clone())) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{what} \"{name}\" already exists"),
                );
            }
            s.log.push(format!("POST {what} {ns}/{name}"));
            s.put(r.res, &ns, &name, body.clone(), Some("ADDED"));
            json_response(StatusCode::CREATED, body)
        }
        (&Method::GET, Some(name), None) => {
            match lock(&st).objects.get(&(r.res, ns.clone(), name.into())) {
                Some(o) => json_response(StatusCode::OK, o.clone()),
                None => not_found(what, name),
            }
        }
        (&Method::DELETE, Some(name), None) => {
            let removed = {
                let mut s = lock(&st);
                let grace = body["gracePeriodSeconds"]
                    .as_i64()
                    .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
                s.log.push(format!(
                    "DELETE {what} {ns}/{name} grace={}",
                    grace.map(|g| g.to_string()).unwrap_or_default()
                ));
                s.remove(r.res, &ns, name)
            };
            match removed {
                Some(obj) => {
                    if r.res == Res::Pods
                        && let Some(app) = obj["metadata"]["labels"]["app"].as_str()
                    {
                        reconcile(&st, &ns, app);
                    }
                    json_response(StatusCode::OK, obj)
                }
                None => not_found(what, name),
            }
        }
        (&Method::PATCH, Some(name), None) => {
            let mut s = lock(&st);
            let Some(mut obj) = s.objects.get(&(r.res, ns.clone(), name.into())).cloned() else {
                return not_found(what, name);
            };
            s.log.push(format!("PATCH {what} {ns}/{name} {body}"));
            merge(&mut obj, &body);
            s.put(r.res, &ns, name, obj.clone(), Some("MODIFIED"));
            json_response(StatusCode::OK, obj)
        }
        (&Method::GET, Some(name), Some("scale")) | (&Method::PATCH, Some(name), Some("scale"))
            if matches!(r.res, Res::Deployments | Res::StatefulSets) =>
        {
            let obj = {
                let mut s = lock(&st);
                let Some(mut obj) = s.objects.get(&(r.res, ns.clone(), name.into())).cloned()
                else {
                    return not_found(what, name);
                };
                if method == Method::PATCH {
                    s.log.push(format!("PATCH {what}/scale {ns}/{name} {body}"));
                    if let Some(n) = body["spec"]["replicas"].as_u64() {
                        obj["spec"]["replicas"] = json!(n);
                        s.put(r.res, &ns, name, obj.clone(), Some("MODIFIED"));
                    }
                }
                obj
            };
            if method == Method::PATCH {
                reconcile(&st, &ns, name);
            }
            json_response(
                StatusCode::OK,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": name, "namespace": ns, "resourceVersion": obj["metadata"]["resourceVersion"]},
                    "spec": {"replicas": obj["spec"]["replicas"]},
                    "status": {"replicas": obj["status"]["replicas"].as_u64().unwrap_or(0), "selector": format!("app={name}")}}),
            )
        }
        (&Method::POST, Some(name), Some("eviction")) if r.res == Res::Pods => {
            let removed = {
                let mut s = lock(&st);
                if !s
                    .objects
                    .contains_key(&(Res::Pods, ns.clone(), name.into()))
                {
                    return not_found(what, name);
                }
                let key = (ns.clone(), name.to_string());
                if let Some(n) = s.eviction_refusals.get_mut(&key)
                    && *n > 0
                {
                    *n -= 1;
                    s.log.push(format!("EVICT-REFUSED pods {ns}/{name}"));
                    return status(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    );
                }
                s.log.push(format!("EVICT pods {ns}/{name}"));
                s.remove(Res::Pods, &ns, name)
            };
            if let Some(app) = removed
                .as_ref()
                .and_then(|o| o["metadata"]["labels"]["app"].as_str())
            {
                reconcile(&st, &ns, app);
            }
            status(StatusCode::CREATED, "", String::new())
        }
        (&Method::PATCH, Some(name), Some("ephemeralcontainers")) if r.res == Res::Pods => {
            let mut s = lock(&st);
            let Some(mut obj) = s
                .objects
                .get(&(Res::Pods, ns.clone(), name.into()))
                .cloned()
            else {
                return not_found(what, name);
            };
            s.log.push(format!("EPHEMERAL pods {ns}/{name} {body}"));
            let mut list: Vec<Value> = obj["spec"]["ephemeralContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in body["spec"]["ephemeralContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                if list.iter().any(|o| o["name"] == c["name"]) {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("ephemeral container {} exists", c["name"]),
                    );
                }
                let mut statuses = obj["status"]["ephemeralContainerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                statuses.push(
                    json!({"name": c["name"], "image": c["image"], "imageID": "",
                    "ready": false, "restartCount": 0, "state": s.ephemeral_state.clone()}),
                );
                obj["status"]["ephemeralContainerStatuses"] = Value::Array(statuses);
                list.push(c);
            }
            obj["spec"]["ephemeralContainers"] = Value::Array(list);
            s.put(Res::Pods, &ns, name, obj.clone(), Some("MODIFIED"));
            json_response(StatusCode::OK, obj)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path} is not supported by the fake"),
        ),
    }
}

/// A kind of another API group the fake serves (discovery, server-side apply, get, delete).
#[derive(Debug, Clone)]
pub struct GenericKind {
    /// `group/version`.
    pub group_version: String,
    /// The kind, e.g. `IOChaos`.
    pub kind: String,
    /// The resource, e.g. `iochaos`.
    pub plural: String,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
}

/// Objects of other groups: what a `manifest` fault applies.
#[derive(Debug, Default)]
pub struct Generic {
    /// The kinds served.
    pub kinds: Vec<GenericKind>,
    /// Objects by (group/version, plural, namespace or "", name).
    pub objects: BTreeMap<(String, String, String, String), Value>,
}

impl FakeK8s {
    /// Serves a kind of another group (as if its CRD were installed).
    pub fn add_kind(&self, group_version: &str, kind: &str, plural: &str, namespaced: bool) {
        self.with(|s| {
            s.generic.kinds.push(GenericKind {
                group_version: group_version.into(),
                kind: kind.into(),
                plural: plural.into(),
                namespaced,
            })
        });
    }

    /// An object of another group, if it exists.
    pub fn get_generic(
        &self,
        group_version: &str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        self.with(|s| {
            s.generic
                .objects
                .get(&(group_version.into(), plural.into(), ns.into(), name.into()))
                .cloned()
        })
    }

    /// Puts an object of another group in place (as if someone else created it).
    pub fn put_generic(&self, group_version: &str, plural: &str, ns: &str, name: &str, obj: Value) {
        self.with(|s| {
            s.generic.objects.insert(
                (group_version.into(), plural.into(), ns.into(), name.into()),
                obj,
            )
        });
    }
}

/// Discovery (`GET /apis/<group>/<version>`), server-side apply (`PATCH` with
/// `application/apply-patch+yaml` and a `fieldManager`), `GET` and `DELETE` for the kinds of
/// [`Generic`]. `None` for paths it does not serve.
fn generic_handle(
    st: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &Value,
) -> Option<Response<Body>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", group, version, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let gv = format!("{group}/{version}");
    let mut s = lock(st);
    let kinds: Vec<GenericKind> = s
        .generic
        .kinds
        .iter()
        .filter(|k| k.group_version == gv)
        .cloned()
        .collect();
    if kinds.is_empty() {
        return None;
    }
    if rest.is_empty() && method == Method::GET {
        let resources: Vec<Value> = kinds
            .iter()
            .map(|k| {
                json!({"name": k.plural, "singularName": k.kind.to_lowercase(),
                    "namespaced": k.namespaced, "kind": k.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        return Some(json_response(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": resources}),
        ));
    }
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural, name] => (ns.to_string(), *plural, *name),
        [plural, name] => (String::new(), *plural, *name),
        _ => return None,
    };
    let kind = kinds.iter().find(|k| k.plural == plural)?.clone();
    if kind.namespaced == ns.is_empty() {
        return Some(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{plural} is {}namespaced",
                if kind.namespaced { "" } else { "not " }
            ),
        ));
    }
    let key = (gv.clone(), plural.to_string(), ns.clone(), name.to_string());
    let shown = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    Some(match *method {
        Method::GET => match s.generic.objects.get(&key) {
            Some(o) => json_response(StatusCode::OK, o.clone()),
            None => not_found(plural, name),
        },
        Method::DELETE => match s.generic.objects.remove(&key) {
            Some(_) => {
                s.log.push(format!("DELETE {plural} {shown}"));
                status(StatusCode::OK, "", format!("{plural} {shown} deleted"))
            }
            None => not_found(plural, name),
        },
        Method::PATCH => {
            if content_type != "application/apply-patch+yaml" {
                return Some(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!(
                        "the fake serves {plural} by server-side apply only, not {content_type}"
                    ),
                ));
            }
            let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                return Some(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "fieldManager is required for apply requests".into(),
                ));
            };
            let named = body["metadata"]["name"].as_str() == Some(name);
            let typed = body["kind"].as_str() == Some(kind.kind.as_str())
                && body["apiVersion"].as_str() == Some(gv.as_str());
            if !named || !typed {
                return Some(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("the object is not {} {gv} named {name}", kind.kind),
                ));
            }
            let rv = s.next_rv();
            let existed = s.generic.objects.contains_key(&key);
            let mut obj = body.clone();
            if !ns.is_empty() {
                obj["metadata"]["namespace"] = json!(ns);
            }
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
            obj["metadata"]["managedFields"] = json!([{
                "manager": manager, "operation": "Apply", "apiVersion": gv,
                "fieldsType": "FieldsV1", "fieldsV1": {}
            }]);
            s.log
                .push(format!("APPLY {plural} {shown} fieldManager={manager}"));
            s.generic.objects.insert(key, obj.clone());
            json_response(
                if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                obj,
            )
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path} is not supported by the fake"),
        ),
    })
}
