//! Toxiproxy's HTTP control API over a [`Registry`], with Toxiproxy's paths and JSON shapes,
//! so that existing Toxiproxy clients drive rattle unchanged.
//!
//! Every error is a JSON body `{"error": ..., "status": ...}` with a 4xx status; a bad request
//! never touches the proxies it does not name, and the server keeps serving.
//!
//! Who may drive it (#19): the API opens listeners and relays to any address, so a request a
//! web page can make must never reach [`route`]. Before routing, [`check`] refuses what only a
//! browser sends: a `User-Agent` starting with `Mozilla/` (Toxiproxy's own rule, 403), an
//! `Origin` or `Sec-Fetch-Site` naming another site (403), a `Host` that is not a loopback name
//! while the API listens on loopback (DNS rebinding, 403), and the bodies of a browser's simple
//! requests (`text/plain`, `multipart/form-data`: 415). `application/x-www-form-urlencoded` is
//! let through because `curl -d` sends it and Toxiproxy's documentation uses it; a browser
//! sending it is already refused by its `User-Agent` and `Origin`. An optional token
//! ([`Guard::token`]) is required as `Authorization: Bearer <token>` when set.
//!
//! Slow or hostile clients: a request head must arrive within [`HEAD_TIMEOUT`] and fit in
//! [`HEAD_MAX`], a body within [`BODY_TIMEOUT`] and [`BODY_MAX`]; accept errors back off
//! ([`super::accept::Backoff`]) instead of spinning.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{ActiveToxic, ProxyError, Registry, Stream};

/// The version this API reports.
pub const VERSION: &str = concat!("2.12.0-rattle-", env!("CARGO_PKG_VERSION"));

/// Largest request body read.
pub const BODY_MAX: usize = 1 << 20;
/// Time a client has to send a whole request head; then the connection is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a whole request body once its head arrived (408 after).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (hyper's read buffer; it answers 431 beyond).
pub const HEAD_MAX: usize = 64 * 1024;

/// Who may use the API, beyond the browser checks that always apply.
#[derive(Clone, Default)]
pub struct Guard {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log.
        f.debug_struct("Guard")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A proxy in a create or populate request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProxy {
    /// Name.
    pub name: String,
    /// Listen address; default 127.0.0.1:0 (any free port).
    #[serde(default)]
    pub listen: Option<String>,
    /// Upstream address.
    pub upstream: String,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct UpdateProxy {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CreateToxic {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: Option<Stream>,
    #[serde(default)]
    toxicity: Option<f32>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct UpdateToxic {
    #[serde(default)]
    toxicity: Option<f32>,
    #[serde(default)]
    stream: Option<Stream>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

/// An API answer before it becomes an HTTP response.
type Answer = Result<(StatusCode, Option<Value>), ProxyError>;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ProxyError> {
    serde_json::from_slice(body).map_err(|e| ProxyError::Invalid(format!("bad JSON: {e}")))
}

/// Creates (or, for populate, replaces when different) one proxy.
pub async fn create(reg: &Registry, p: CreateProxy) -> Result<super::ProxyInfo, ProxyError> {
    let listen = p.listen.unwrap_or_else(|| "127.0.0.1:0".to_string());
    let info = reg
        .create(&p.name, &listen, &p.upstream, p.enabled.unwrap_or(true))
        .await?;
    warn_if_exposed(&info);
    Ok(info)
}

/// Is `listen` (an `ip:port` as bound) reachable only from this machine? Unparsable counts as
/// not (it was bound by name, whatever it resolved to).
pub fn is_loopback_listen(listen: &str) -> bool {
    listen
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// A proxy listening beyond loopback relays whatever it can reach to other machines: allowed
/// (Toxiproxy allows it, containers need it) but never silently (#19).
fn warn_if_exposed(info: &super::ProxyInfo) {
    if info.enabled && !is_loopback_listen(&info.listen) {
        crate::errln!(
            "rattle proxy: warning: proxy {:?} listens on {}, reachable from other machines; \
             it relays to {:?}",
            info.name,
            info.listen,
            info.upstream
        );
    }
}

async fn populate(reg: &Registry, list: Vec<CreateProxy>) -> Answer {
    let mut out = Vec::new();
    for p in list {
        if let Ok(cur) = reg.get(&p.name).await {
            let same_listen = p.listen.as_deref().is_none_or(|l| l == cur.listen);
            if same_listen && p.upstream == cur.upstream {
                out.push(serde_json::to_value(cur).unwrap_or(Value::Null));
                continue;
            }
            reg.delete(&p.name).await?;
        }
        out.push(serde_json::to_value(create(reg, p).await?).unwrap_or(Value::Null));
    }
    Ok((StatusCode::CREATED, Some(json!({ "proxies": out }))))
}

/// Answers one request. Public for tests that bypass the socket.
pub async fn route(reg: &Registry, method: &Method, path: &str, body: &[u8]) -> Answer {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["version"]) => Ok((StatusCode::OK, Some(json!({ "version": VERSION })))),
        (&Method::POST, ["reset"]) => {
            reg.reset().await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        (&Method::GET, ["proxies"]) => {
            let mut m = Map::new();
            for p in reg.list().await {
                m.insert(
                    p.name.clone(),
                    serde_json::to_value(p).unwrap_or(Value::Null),
                );
            }
            Ok((StatusCode::OK, Some(Value::Object(m))))
        }
        (&Method::POST, ["proxies"]) => {
            let p: CreateProxy = parse(body)?;
            let info = create(reg, p).await?;
            Ok((
                StatusCode::CREATED,
                Some(serde_json::to_value(info).unwrap_or(Value::Null)),
            ))
        }
        (&Method::POST, ["populate"]) => populate(reg, parse(body)?).await,
        (&Method::GET, ["proxies", name]) => Ok((
            StatusCode::OK,
            Some(serde_json::to_value(reg.get(name).await?).unwrap_or(Value::Null)),
        )),
        (&Method::POST | &Method::PATCH, ["proxies", name]) => {
            let u: UpdateProxy = parse(body)?;
            let info = reg
                .update(name, u.listen.as_deref(), u.upstream.as_deref(), u.enabled)
                .await?;
            if u.listen.is_some() {
                warn_if_exposed(&info);
            }
            Ok((
                StatusCode::OK,
                Some(serde_json::to_value(info).unwrap_or(Value::Null)),
            ))
        }
        (&Method::DELETE, ["proxies", name]) => {
            reg.delete(name).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        (&Method::GET, ["proxies", name, "toxics"]) => Ok((
            StatusCode::OK,
            Some(serde_json::to_value(reg.toxics(name).await?).unwrap_or(Value::Null)),
        )),
        (&Method::POST, ["proxies", name, "toxics"]) => {
            let t: CreateToxic = parse(body)?;
            let stream = t.stream.unwrap_or_default();
            let tname = t
                .name
                .unwrap_or_else(|| format!("{}_{}", t.kind, stream.as_str()));
            let a = ActiveToxic::new(
                tname,
                &t.kind,
                stream,
                t.toxicity.unwrap_or(1.0),
                &t.attributes.unwrap_or_default(),
            )
            .map_err(ProxyError::Invalid)?;
            let shown = reg.add_toxic(name, a).await?;
            Ok((
                StatusCode::OK,
                Some(serde_json::to_value(shown).unwrap_or(Value::Null)),
            ))
        }
        (&Method::GET, ["proxies", name, "toxics", toxic]) => Ok((
            StatusCode::OK,
            Some(serde_json::to_value(reg.toxic(name, toxic).await?).unwrap_or(Value::Null)),
        )),
        (&Method::POST | &Method::PATCH, ["proxies", name, "toxics", toxic]) => {
            let u: UpdateToxic = parse(body)?;
            let cur = reg.toxic(name, toxic).await?;
            let mut attrs = cur.attributes.clone();
            for (k, v) in u.attributes.unwrap_or_default() {
                attrs.insert(k, v);
            }
            let a = ActiveToxic::new(
                cur.name.clone(),
                &cur.kind,
                u.stream.unwrap_or(cur.stream),
                u.toxicity.unwrap_or(cur.toxicity),
                &attrs,
            )
            .map_err(ProxyError::Invalid)?;
            let shown = reg.update_toxic(name, a).await?;
            Ok((
                StatusCode::OK,
                Some(serde_json::to_value(shown).unwrap_or(Value::Null)),
            ))
        }
        (&Method::DELETE, ["proxies", name, "toxics", toxic]) => {
            reg.remove_toxic(name, toxic).await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        _ => Err(match allowed(parts.as_slice()) {
            Some(allow) => ProxyError::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_string(),
                allow,
            },
            None => ProxyError::NotFound(format!("{method} {path}")),
        }),
    }
}

/// The methods of a known path, as in an `Allow` header; `None` for an unknown path.
fn allowed(parts: &[&str]) -> Option<&'static str> {
    match parts {
        ["version"] => Some("GET"),
        ["reset"] | ["populate"] => Some("POST"),
        ["proxies"] | ["proxies", _, "toxics"] => Some("GET, POST"),
        ["proxies", _] | ["proxies", _, "toxics", _] => Some("GET, POST, PATCH, DELETE"),
        _ => None,
    }
}

/// Is this `Host` (or `Origin` host) a name only this machine answers to: `localhost`, a
/// `.localhost` name, or a loopback address? Ports are ignored.
fn is_local_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            // One colon: name:port. More: a bare v6 address.
            Some((h, _)) if !h.contains(':') => h,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `Origin` (`scheme://host[:port]`), if it has one.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Constant-time comparison, so the token cannot be found a byte at a time by timing.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks made on every request before it is routed (see the module comment). `local` is
/// the address the connection came in on. Public for tests.
pub fn check<B>(req: &Request<B>, local: SocketAddr, guard: &Guard) -> Result<(), ProxyError> {
    let h = req.headers();
    let text = |name: hyper::header::HeaderName| {
        h.get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if text(hyper::header::USER_AGENT).is_some_and(|ua| ua.starts_with("Mozilla/")) {
        return Err(ProxyError::Forbidden(
            "browser User-Agent not allowed (a web page must not drive this API)".into(),
        ));
    }
    if let Some(site) = h.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site != b"none" && site != b"same-origin" {
            return Err(ProxyError::Forbidden(
                "cross-site request not allowed".into(),
            ));
        }
    }
    if let Some(origin) = text(hyper::header::ORIGIN)
        && !origin_host(&origin).is_some_and(is_local_host)
    {
        return Err(ProxyError::Forbidden(format!(
            "requests from origin {origin:?} not allowed"
        )));
    }
    // On loopback only loopback names: a page whose name resolves to 127.0.0.1 (DNS
    // rebinding) sends its own name. Beyond loopback the API is reachable by any name anyway.
    if local.ip().is_loopback()
        && let Some(host) = text(hyper::header::HOST)
        && !is_local_host(&host)
    {
        return Err(ProxyError::Forbidden(format!(
            "host {host:?} not allowed: this API answers to localhost and loopback addresses"
        )));
    }
    if let Some(token) = &guard.token {
        let ok = h
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let v = v.as_bytes();
                (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
            })
            .is_some_and(|got| same_secret(got.trim_ascii(), token.as_bytes()));
        if !ok {
            return Err(ProxyError::Unauthorized);
        }
    }
    if let Some(ct) = text(hyper::header::CONTENT_TYPE) {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media == "text/plain" || media == "multipart/form-data" {
            return Err(ProxyError::UnsupportedMediaType(media));
        }
    }
    Ok(())
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut extra = None;
    let (status, body) = match answer {
        Ok((s, b)) => (s, b),
        Err(e) => {
            let s = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            extra = match &e {
                ProxyError::MethodNotAllowed { allow, .. } => Some((
                    hyper::header::ALLOW,
                    hyper::header::HeaderValue::from_static(allow),
                )),
                ProxyError::Unauthorized => Some((
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                )),
                _ => None,
            };
            (
                s,
                Some(json!({ "error": e.to_string(), "status": s.as_u16() })),
            )
        }
    };
    let mut r = Response::new(Full::new(match body {
        Some(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        None => Bytes::new(),
    }));
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    if let Some((k, v)) = extra {
        r.headers_mut().insert(k, v);
    }
    r
}

async fn handle(
    reg: Registry,
    guard: &Guard,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(e) = check(&req, local, guard) {
        return Ok(respond(Err(e)));
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let collect = Limited::new(req.into_body(), BODY_MAX).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Ok(respond(Err(ProxyError::Invalid(format!(
                "reading the body: {e}"
            )))));
        }
        Err(_) => {
            return Ok(respond(Err(ProxyError::Timeout(format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            )))));
        }
    };
    Ok(respond(route(&reg, &method, &path, &body).await))
}

/// Binds the API address. Separate from [`serve`] so a caller can report a bind error first.
pub async fn bind(addr: &str) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves the API until `cancel` fires, with the browser checks and no token.
pub async fn serve(listener: TcpListener, reg: Registry, cancel: CancellationToken) {
    serve_guarded(listener, reg, cancel, Guard::default()).await
}

/// Serves the API until `cancel` fires; every request passes [`check`] with `guard` first.
pub async fn serve_guarded(
    listener: TcpListener,
    reg: Registry,
    cancel: CancellationToken,
    guard: Guard,
) {
    let guard = std::sync::Arc::new(guard);
    let mut backoff = super::accept::Backoff::new();
    loop {
        let (sock, _): (_, SocketAddr) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors and the like: pause rather than spin (#19).
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = backoff.pause() => continue,
                    }
                }
            },
        };
        backoff.reset();
        let Ok(local) = sock.local_addr() else {
            continue;
        };
        let reg = reg.clone();
        let guard = guard.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(HEAD_MAX)
                .serve_connection(
                    TokioIo::new(sock),
                    service_fn(move |req| {
                        let (reg, guard) = (reg.clone(), guard.clone());
                        async move { handle(reg, &guard, local, req).await }
                    }),
                );
            tokio::select! {
                _ = conn => {}
                _ = c.cancelled() => {}
            }
        });
    }
}
