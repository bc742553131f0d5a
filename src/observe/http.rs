//! The one small HTTP client the dashboard outputs share (Grafana's API, the Pushgateway):
//! http or https (rustls with the bundled roots), a connect timeout and a whole-request timeout,
//! so an output that does not answer costs at most [`TIMEOUT`] and never holds up a run.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest any one request to an output may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read from an output (Grafana's JSON, the Pushgateway's messages).
const BODY_MAX: usize = 1 << 20;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A pooled client for the outputs.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("observe::http::Client")
    }
}

impl Client {
    /// A client with the bundled web roots.
    pub fn new() -> Result<Self, String> {
        let tls = crate::load::tls::client_config(&crate::load::ClientOptions::default())
            .map_err(|e| format!("TLS: {e}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(TIMEOUT));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends one request and reads its answer, all within [`TIMEOUT`]. A non-2xx status is an
    /// error carrying the status and the start of the body (never the request's headers, which
    /// may hold a token).
    pub async fn send(
        &self,
        method: http::Method,
        uri: &http::Uri,
        headers: &[(http::HeaderName, String)],
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .header(
                http::header::USER_AGENT,
                concat!("rattle/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k, v.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), BODY_MAX)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("reading the answer: {e}"))?;
            if status.is_success() {
                Ok(body)
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                Err(format!("HTTP {status}: {}", text.trim()))
            }
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
}

/// Checks an output's base URL: http or https, a host, no credentials in it (they would be
/// printed with it), no query. Returns it without a trailing slash.
pub fn base_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .trim()
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "has credentials (user:password@) in it, which logs would show: not supported".into(),
        );
    }
    if uri.query().is_some() {
        return Err("must not have a query (?...)".into());
    }
    Ok(uri)
}

/// `base` + `path` (which starts with `/`).
pub fn join(base: &http::Uri, path: &str) -> Result<http::Uri, String> {
    let b = base.to_string();
    format!("{}{path}", b.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("not a valid URL: {e}"))
}

/// An error and its causes, `a: b: c` (hyper's top error alone says only "client error").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
