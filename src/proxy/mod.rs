//! The fault proxy: in-process TCP proxies whose connections pass through toxics (latency,
//! bandwidth, blackhole, reset...), managed through a [`Registry`].
//!
//! One registry serves both uses: an experiment's run (its proxies declared under `proxies:`,
//! its `net-*` faults adding and removing toxics through [`crate::fault::FaultEnv`]) and the
//! stand-alone `rattle proxy`, whose Toxiproxy-compatible HTTP API ([`api`]) is a thin layer
//! over the same calls. Proxies live and die with the rattle process: nothing survives a crash,
//! which is why a revert that finds no proxy counts as done.

pub mod accept;
pub mod api;
pub mod http;
pub mod link;
pub mod share;
pub mod toxic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use http::{HttpAction, HttpMatch, HttpRule};
pub use toxic::{ActiveToxic, Effect, Stream, Toxic};

/// How a proxy handles its connections.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Bytes, through TCP toxics (Toxiproxy's model).
    #[default]
    Tcp,
    /// HTTP/1.1 requests, through HTTP rules (abort, delay); keep-alive on both sides.
    Http,
}

impl Mode {
    /// As written in experiment files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        }
    }
}

/// Errors of the proxy registry. Each maps to one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No proxy has this name.
    #[error("proxy not found: {0}")]
    NotFound(String),
    /// A proxy with this name exists already.
    #[error("proxy already exists: {0}")]
    Exists(String),
    /// The proxy has no toxic with this name.
    #[error("toxic not found: {0}")]
    ToxicNotFound(String),
    /// The proxy has a toxic with this name already.
    #[error("toxic already exists: {0}")]
    ToxicExists(String),
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The request was refused before routing: it looks like a browser's (cross-site) or
    /// names a host other than this one.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The API requires a token (`--api-token-env`) and the request has not the right one.
    #[error("unauthorized: this API requires `Authorization: Bearer <token>`")]
    Unauthorized,
    /// The path is known, the method is not one of its methods.
    #[error("method {method} not allowed on {path} (allowed: {allow})")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path asked for.
        path: String,
        /// The methods the path has, as in an `Allow` header.
        allow: &'static str,
    },
    /// The body has a media type that is not JSON (what a browser's simple request sends).
    #[error("unsupported content type {0:?}: send JSON (application/json)")]
    UnsupportedMediaType(String),
    /// The request (head or body) did not arrive in time, or is too large.
    #[error("{0}")]
    Timeout(String),
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ProxyError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::NotFound(_) | ProxyError::ToxicNotFound(_) => 404,
            ProxyError::Exists(_) | ProxyError::ToxicExists(_) | ProxyError::Bind { .. } => 409,
            ProxyError::Invalid(_) => 400,
            ProxyError::Unauthorized => 401,
            ProxyError::Forbidden(_) => 403,
            ProxyError::MethodNotAllowed { .. } => 405,
            ProxyError::Timeout(_) => 408,
            ProxyError::UnsupportedMediaType(_) => 415,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;

/// A proxy as the Toxiproxy API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Unique name.
    pub name: String,
    /// The address it listens on (the actual port once bound).
    pub listen: String,
    /// Where it connects to.
    pub upstream: String,
    /// Listening and passing connections?
    pub enabled: bool,
    /// Its toxics, in the order added.
    pub toxics: Vec<Toxic>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Entry {
    listen: String,
    upstream: String,
    mode: Mode,
    running: Option<Running>,
    toxics: watch::Sender<Arc<Vec<ActiveToxic>>>,
    rules: watch::Sender<Arc<Vec<HttpRule>>>,
}

impl Entry {
    fn info(&self, name: &str) -> ProxyInfo {
        ProxyInfo {
            name: name.to_string(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.running.is_some(),
            toxics: self
                .toxics
                .borrow()
                .iter()
                .map(|a| a.toxic.clone())
                .collect(),
        }
    }

    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.cancel.cancel();
            let _ = r.task.await;
        }
    }
}

/// The proxies of one process, by name. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// What each toxic did, by proxy and toxic name, kept after its removal for the report.
    meters: Arc<std::sync::Mutex<BTreeMap<(String, String), Meter>>>,
}

/// A toxic's counters and window.
struct Meter {
    since: std::time::Instant,
    until: Option<std::time::Instant>,
    connections: share::Share,
    passed: share::Passed,
    /// An HTTP rule's meter (its counts are requests).
    requests: bool,
    asked_bytes_per_sec: Option<f64>,
    asked_latency_ms: Option<(f64, f64)>,
}

/// Meters kept at most: a long-lived `rattle proxy` forgets the oldest removed toxics first.
const METERS: usize = 1024;

impl Registry {
    fn meters(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Meter>> {
        // The map is plain data: a panic elsewhere while it was held leaves it usable.
        self.meters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn meter_start(&self, proxy: &str, name: &str, meter: Meter) {
        let mut m = self.meters();
        if m.len() >= METERS {
            let oldest = m
                .iter()
                .filter_map(|(k, v)| v.until.map(|u| (u, k.clone())))
                .min()
                .map(|(_, k)| k);
            if let Some(k) = oldest {
                m.remove(&k);
            }
        }
        m.insert((proxy.to_string(), name.to_string()), meter);
    }

    fn meter_toxic(&self, proxy: &str, t: &ActiveToxic) {
        let (mut bw, mut lat) = (None, None);
        match t.effect {
            toxic::Effect::Bandwidth { rate } if rate > 0 => bw = Some(rate as f64 * 1000.0),
            toxic::Effect::Latency { latency, jitter } => {
                lat = Some((latency.as_secs_f64() * 1e3, jitter.as_secs_f64() * 1e3))
            }
            _ => {}
        }
        self.meter_start(
            proxy,
            &t.toxic.name,
            Meter {
                since: std::time::Instant::now(),
                until: None,
                connections: t.connections.clone(),
                passed: t.passed.clone(),
                requests: false,
                asked_bytes_per_sec: bw,
                asked_latency_ms: lat,
            },
        );
    }

    fn meter_stop(&self, proxy: &str, name: Option<&str>) {
        let now = std::time::Instant::now();
        for ((p, n), v) in self.meters().iter_mut() {
            if p == proxy && name.is_none_or(|x| x == n) && v.until.is_none() {
                v.until = Some(now);
            }
        }
    }

    /// What toxic `name` of `proxy` measurably did, while it holds or after its removal.
    pub fn measured(&self, proxy: &str, name: &str) -> Option<share::Measured> {
        let m = self.meters();
        let v = m.get(&(proxy.to_string(), name.to_string()))?;
        let seconds = v
            .until
            .unwrap_or_else(std::time::Instant::now)
            .duration_since(v.since)
            .as_secs_f64();
        Some(share::Measured {
            requests: v.requests,
            asked_bytes_per_sec: v.asked_bytes_per_sec,
            asked_latency_ms: v.asked_latency_ms,
            ..share::Measured::of(seconds, &v.passed, &v.connections)
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

/// Binds `listen` and spawns the accept loop. Nothing is left behind on error.
async fn start(
    listen: &str,
    upstream: String,
    mode: Mode,
    toxics: watch::Receiver<Arc<Vec<ActiveToxic>>>,
    rules: http::Rules,
) -> Result<(SocketAddr, Running)> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let up_arc: Arc<str> = Arc::from(upstream.as_str());
    let pool = http::client();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let mut backoff = accept::Backoff::new();
        loop {
            let accepted = tokio::select! {
                _ = c.cancelled() => break,
                a = listener.accept() => a,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let Ok((client, _)) = accepted else {
                // Out of file descriptors and the like: pause rather than spin (#19).
                tokio::select! {
                    _ = c.cancelled() => break,
                    _ = backoff.pause() => continue,
                }
            };
            backoff.reset();
            if mode == Mode::Http {
                let (up, rules, hc, cc) = (up_arc.clone(), rules.clone(), pool.clone(), c.clone());
                conns.spawn(http::serve(client, up, rules, hc, cc));
                continue;
            }
            let (up, toxics, cc) = (upstream.clone(), toxics.clone(), c.clone());
            conns.spawn(async move {
                let _ = client.set_nodelay(true);
                let upstream = tokio::select! {
                    _ = cc.cancelled() => return,
                    u = TcpStream::connect(up) => u,
                };
                // A refused upstream drops the client: it sees the close, as with Toxiproxy.
                let Ok(upstream) = upstream else { return };
                let _ = upstream.set_nodelay(true);
                link::serve(client, upstream, toxics, cc).await;
            });
        }
        drop(listener);
        conns.shutdown().await;
    });
    Ok((addr, Running { cancel, task }))
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a proxy and, when `enabled`, starts listening. The listen address is bound
    /// before anything is recorded, so a port in use leaves no trace.
    pub async fn create(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
        enabled: bool,
    ) -> Result<ProxyInfo> {
        self.create_mode(name, listen, upstream, enabled, Mode::Tcp)
            .await
    }

    /// [`Registry::create`] with a [`Mode`].
    pub async fn create_mode(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
        enabled: bool,
        mode: Mode,
    ) -> Result<ProxyInfo> {
        validate_name(name)?;
        if upstream.trim().is_empty() {
            return Err(ProxyError::Invalid("missing upstream".into()));
        }
        let mut map = self.inner.lock().await;
        if map.contains_key(name) {
            return Err(ProxyError::Exists(name.to_string()));
        }
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let (rules_tx, rules_rx) = watch::channel(Arc::new(Vec::new()));
        let (listen, running) = if enabled {
            let (addr, r) = start(listen, upstream.to_string(), mode, rx, rules_rx).await?;
            (addr.to_string(), Some(r))
        } else {
            (listen.to_string(), None)
        };
        let entry = Entry {
            listen,
            upstream: upstream.to_string(),
            mode,
            running,
            toxics: tx,
            rules: rules_tx,
        };
        let info = entry.info(name);
        map.insert(name.to_string(), entry);
        Ok(info)
    }

    /// All proxies.
    pub async fn list(&self) -> Vec<ProxyInfo> {
        self.inner
            .lock()
            .await
            .iter()
            .map(|(n, e)| e.info(n))
            .collect()
    }

    /// One proxy.
    pub async fn get(&self, name: &str) -> Result<ProxyInfo> {
        let map = self.inner.lock().await;
        map.get(name)
            .map(|e| e.info(name))
            .ok_or_else(|| ProxyError::NotFound(name.to_string()))
    }

    /// Changes listen address, upstream or enabled. Disabling closes every connection; a new
    /// address or upstream restarts the listener. On a bind error the proxy stays disabled.
    pub async fn update(
        &self,
        name: &str,
        listen: Option<&str>,
        upstream: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<ProxyInfo> {
        let mut map = self.inner.lock().await;
        let e = map
            .get_mut(name)
            .ok_or_else(|| ProxyError::NotFound(name.to_string()))?;
        let want = enabled.unwrap_or(e.running.is_some());
        let changed =
            listen.is_some_and(|l| l != e.listen) || upstream.is_some_and(|u| u != e.upstream);
        if let Some(u) = upstream {
            e.upstream = u.to_string();
        }
        if let Some(l) = listen {
            e.listen = l.to_string();
        }
        if !want || changed {
            e.stop().await;
        }
        if want && e.running.is_none() {
            let (addr, r) = start(
                &e.listen,
                e.upstream.clone(),
                e.mode,
                e.toxics.subscribe(),
                e.rules.subscribe(),
            )
            .await?;
            e.listen = addr.to_string();
            e.running = Some(r);
        }
        Ok(e.info(name))
    }

    /// Stops and removes a proxy.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let mut map = self.inner.lock().await;
        let mut e = map
            .remove(name)
            .ok_or_else(|| ProxyError::NotFound(name.to_string()))?;
        self.meter_stop(name, None);
        e.stop().await;
        Ok(())
    }

    /// Stops and removes every proxy (teardown).
    pub async fn shutdown(&self) {
        let mut map = self.inner.lock().await;
        for (_, mut e) in std::mem::take(&mut *map) {
            e.stop().await;
        }
    }

    /// Toxiproxy's reset: every proxy enabled, every toxic removed.
    pub async fn reset(&self) -> Result<()> {
        let mut map = self.inner.lock().await;
        for (name, e) in map.iter_mut() {
            self.meter_stop(name, None);
            e.toxics.send_replace(Arc::new(Vec::new()));
            e.rules.send_replace(Arc::new(Vec::new()));
            if e.running.is_none() {
                let (addr, r) = start(
                    &e.listen,
                    e.upstream.clone(),
                    e.mode,
                    e.toxics.subscribe(),
                    e.rules.subscribe(),
                )
                .await?;
                e.listen = addr.to_string();
                e.running = Some(r);
            }
        }
        Ok(())
    }

    /// The toxics of a proxy.
    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>> {
        Ok(self.get(proxy).await?.toxics)
    }

    /// One toxic.
    pub async fn toxic(&self, proxy: &str, name: &str) -> Result<Toxic> {
        self.toxics(proxy)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ProxyError::ToxicNotFound(name.to_string()))
    }

    /// Adds a toxic; it applies to existing connections at once.
    pub async fn add_toxic(&self, proxy: &str, toxic: ActiveToxic) -> Result<Toxic> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        let mut list = e.toxics.borrow().as_ref().clone();
        if list.iter().any(|a| a.toxic.name == toxic.toxic.name) {
            return Err(ProxyError::ToxicExists(toxic.toxic.name));
        }
        let shown = toxic.toxic.clone();
        self.meter_toxic(proxy, &toxic);
        list.push(toxic);
        e.toxics.send_replace(Arc::new(list));
        Ok(shown)
    }

    /// Replaces a toxic of the same name (its per-connection toxicity roll is kept).
    pub async fn update_toxic(&self, proxy: &str, toxic: ActiveToxic) -> Result<Toxic> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        let mut list = e.toxics.borrow().as_ref().clone();
        let slot = list
            .iter_mut()
            .find(|a| a.toxic.name == toxic.toxic.name)
            .ok_or_else(|| ProxyError::ToxicNotFound(toxic.toxic.name.clone()))?;
        let shown = toxic.toxic.clone();
        // The same toxic: its connections' tally goes on.
        let (connections, passed) = (slot.connections.clone(), slot.passed.clone());
        *slot = ActiveToxic {
            connections,
            passed,
            ..toxic
        };
        e.toxics.send_replace(Arc::new(list));
        Ok(shown)
    }

    /// Removes a toxic; existing connections lose it at once (queued bytes are released).
    pub async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<()> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        let mut list = e.toxics.borrow().as_ref().clone();
        let before = list.len();
        list.retain(|a| a.toxic.name != name);
        if list.len() == before {
            return Err(ProxyError::ToxicNotFound(name.to_string()));
        }
        self.meter_stop(proxy, Some(name));
        e.toxics.send_replace(Arc::new(list));
        Ok(())
    }
}

impl Registry {
    /// Adds an HTTP rule to an HTTP-mode proxy; it applies from the next request on.
    pub async fn add_rule(&self, proxy: &str, rule: HttpRule) -> Result<()> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        if e.mode != Mode::Http {
            return Err(ProxyError::Invalid(format!(
                "proxy {proxy:?} is not in HTTP mode (`mode: http`)"
            )));
        }
        let mut list = e.rules.borrow().as_ref().clone();
        if list.iter().any(|r| r.name == rule.name) {
            return Err(ProxyError::ToxicExists(rule.name));
        }
        self.meter_start(
            proxy,
            &rule.name,
            Meter {
                since: std::time::Instant::now(),
                until: None,
                connections: rule.tally.clone(),
                passed: share::Passed::default(),
                requests: true,
                asked_bytes_per_sec: None,
                asked_latency_ms: None,
            },
        );
        list.push(rule);
        e.rules.send_replace(Arc::new(list));
        Ok(())
    }

    /// The names of a proxy's HTTP rules.
    pub async fn rules(&self, proxy: &str) -> Result<Vec<String>> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        Ok(e.rules.borrow().iter().map(|r| r.name.clone()).collect())
    }

    /// Removes a toxic or an HTTP rule by name (what a fault's revert does).
    pub async fn remove_fault(&self, proxy: &str, name: &str) -> Result<()> {
        let map = self.inner.lock().await;
        let e = map
            .get(proxy)
            .ok_or_else(|| ProxyError::NotFound(proxy.to_string()))?;
        let mut removed = false;
        e.rules.send_if_modified(|list| {
            let kept: Vec<HttpRule> = list.iter().filter(|r| r.name != name).cloned().collect();
            let changed = kept.len() != list.len();
            if changed {
                *list = Arc::new(kept);
            }
            removed |= changed;
            changed
        });
        e.toxics.send_if_modified(|list| {
            let kept: Vec<ActiveToxic> = list
                .iter()
                .filter(|a| a.toxic.name != name)
                .cloned()
                .collect();
            let changed = kept.len() != list.len();
            if changed {
                *list = Arc::new(kept);
            }
            removed |= changed;
            changed
        });
        if removed {
            self.meter_stop(proxy, Some(name));
            Ok(())
        } else {
            Err(ProxyError::ToxicNotFound(name.to_string()))
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(ProxyError::Invalid(
            "proxy name must be 1 to 200 characters, without `/`".into(),
        ));
    }
    Ok(())
}
