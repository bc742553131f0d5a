//! Toxiproxy's HTTP control API over a [`Registry`], with Toxiproxy's paths and JSON shapes,
//! so that existing Toxiproxy clients drive rattle unchanged.
//!
//! Every error is a JSON body `{"error": ..., "status": ...}` with a 4xx status; a bad request
//! never touches the proxies it does not name, and the server keeps serving.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{ActiveToxic, ProxyError, Registry, Stream};

/// The version this API reports.
pub const VERSION: &str = concat!("2.12.0-rattle-", env!("CARGO_PKG_VERSION"));

/// Largest request body read.
const BODY_MAX: usize = 1 << 20;

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
    reg.create(&p.name, &listen, &p.upstream, p.enabled.unwrap_or(true))
        .await
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
        _ => Err(ProxyError::NotFound(format!("{method} {path}"))),
    }
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let (status, body) = match answer {
        Ok((s, b)) => (s, b),
        Err(e) => {
            let s = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
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
    r
}

async fn handle(
    reg: Registry,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), BODY_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(respond(Err(ProxyError::Invalid(format!(
                "reading the body: {e}"
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

/// Serves the API until `cancel` fires.
pub async fn serve(listener: TcpListener, reg: Registry, cancel: CancellationToken) {
    loop {
        let (sock, _): (_, SocketAddr) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let reg = reg.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(
                TokioIo::new(sock),
                service_fn(move |req| handle(reg.clone(), req)),
            );
            tokio::select! {
                _ = conn => {}
                _ = c.cancelled() => {}
            }
        });
    }
}
