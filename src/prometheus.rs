//! A small client of Prometheus's HTTP API: instant queries (`/api/v1/query`), range queries
//! (`/api/v1/query_range`) and the alerts firing (`/api/v1/alerts`), for the `prometheus` probe,
//! the Prometheus gates and the `stop_when` conditions on queries and alerts.
//!
//! Shaped as a client of resolved values ([`Connection`]: a URL, an `Authorization` value read
//! from the environment, TLS options, a timeout), so it knows nothing of experiment files; it sits
//! beside `load`, whose rustls configuration it reuses (bundled roots, `ca_file`, `insecure`).
//! Every call is bounded: one timeout covers connect, request and the body, and the body is read
//! up to a size cap, so an unreachable or stuck server is an error, never a hang. Prometheus's
//! own error (`errorType`, `error`) is passed on word for word: it is what a user needs to fix a
//! query. What a result *means* (one finite number, or a failure) is decided here too, in
//! [`single_value`], so the probe, the gates and the stop conditions agree that an empty result,
//! several series or NaN are failures, never a pass.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::load::tls::{self, ClientOptions};

/// The largest response body read (a range query over a long phase at a fine step is the
/// biggest thing asked for; a runaway query must not exhaust memory).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Errors of the Prometheus client.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The URL is not an http(s) URL with a host.
    #[error("bad Prometheus URL {url}: {reason}")]
    Url {
        /// The URL, credentials redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration could not be built (CA file).
    #[error("TLS for Prometheus")]
    Tls(#[from] tls::TlsError),
    /// An environment variable named for a credential is not set (or not valid in a header).
    #[error("environment variable {name} (named in `{field}`) {problem}")]
    Env {
        /// The variable's name.
        name: String,
        /// The field that names it.
        field: &'static str,
        /// `is not set`, `is empty`...
        problem: &'static str,
    },
    /// No answer within the timeout.
    #[error("Prometheus at {url} did not answer within {ms} ms")]
    Timeout {
        /// The server, credentials redacted.
        url: String,
        /// The timeout.
        ms: u128,
    },
    /// The server could not be reached or the connection failed.
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable {
        /// The server, credentials redacted.
        url: String,
        /// The connection error, one line.
        reason: String,
    },
    /// Prometheus answered with an error (a query it rejects: `bad_data`, `execution`...).
    #[error("Prometheus rejected the query {query:?}: {error_type}: {error}")]
    Rejected {
        /// The query sent.
        query: String,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error`, word for word.
        error: String,
    },
    /// The answer was not Prometheus's API (a proxy's HTML page, a wrong path, 401...).
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The server, credentials redacted.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// Credentials, already read from the environment. Never printed.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { .. } => f.write_str("Basic(<redacted>)"),
        }
    }
}

impl Auth {
    /// A bearer token from the environment variable `var`.
    pub fn bearer_from_env(var: &str) -> Result<Self, PromError> {
        Ok(Auth::Bearer(env_var(var, "bearer_token_env")?))
    }

    /// Basic credentials from the environment variables `user_var` and `password_var`.
    pub fn basic_from_env(user_var: &str, password_var: &str) -> Result<Self, PromError> {
        Ok(Auth::Basic {
            user: env_var(user_var, "basic_auth.username_env")?,
            password: env_var(password_var, "basic_auth.password_env")?,
        })
    }

    fn header(&self) -> Result<HeaderValue, PromError> {
        let text = match self {
            Auth::Bearer(t) => format!("Bearer {t}"),
            Auth::Basic { user, password } => {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
        };
        let mut v = HeaderValue::from_str(&text).map_err(|_| PromError::Env {
            name: "(credential)".into(),
            field: "auth",
            problem: "holds characters not allowed in an HTTP header",
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

fn env_var(name: &str, field: &'static str) -> Result<String, PromError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Err(PromError::Env {
            name: name.into(),
            field,
            problem: "is empty",
        }),
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Err(PromError::Env {
            name: name.into(),
            field,
            problem: "is not set",
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(PromError::Env {
            name: name.into(),
            field,
            problem: "is not valid UTF-8",
        }),
    }
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Where and how to reach one Prometheus server, resolved (credentials read).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Base URL, e.g. `http://prometheus:9090` or `https://host/prometheus` (the API paths are
    /// appended).
    pub url: String,
    /// Credentials, if any.
    pub auth: Option<Auth>,
    /// Extra trusted roots (PEM).
    pub ca_file: Option<PathBuf>,
    /// No certificate verification.
    pub insecure: bool,
    /// Bound of one call: connect, request and the whole body.
    pub timeout: Duration,
}

/// One series of an instant query: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels, as `{a="b"}` (empty braces for none).
    pub labels: String,
    /// The value (may be NaN or infinite: Prometheus's text forms are parsed).
    pub value: f64,
}

/// One series of a range query: its labels and (unix seconds, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels, as `{a="b"}`.
    pub labels: String,
    /// Points in time order.
    pub points: Vec<(f64, f64)>,
}

/// An alert of `/api/v1/alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `alertname`.
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    /// All labels, as `{a="b"}`.
    pub labels: String,
}

type HttpClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of one Prometheus server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: HttpClient,
    base: String,
    shown: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shown)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

/// Checks a Prometheus base URL: http(s) with a host, no query or fragment.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "must not hold credentials: name the variables that hold them in \
                    `bearer_token_env` or `basic_auth` instead"
                .into(),
        );
    }
    if uri.query().is_some() {
        return Err("must not have a query string (the API paths are appended)".into());
    }
    Ok(uri)
}

impl Client {
    /// A client for `conn`. Fails on a bad URL or TLS configuration; touches no network.
    pub fn new(conn: &Connection) -> Result<Self, PromError> {
        let shown = crate::redact::redact_url_loose(&conn.url);
        check_url(&conn.url).map_err(|reason| PromError::Url {
            url: shown.clone(),
            reason,
        })?;
        let opts = ClientOptions {
            insecure: conn.insecure,
            ca_file: conn.ca_file.clone(),
            ..ClientOptions::default()
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(conn.timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(&opts)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            base: conn.url.trim_end_matches('/').to_string(),
            shown,
            auth: conn.auth.as_ref().map(Auth::header).transpose()?,
            timeout: conn.timeout,
        })
    }

    /// The server's URL as it may be shown (credentials redacted).
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// An instant query evaluated now: one sample per series (a scalar result is one sample
    /// with no labels).
    pub async fn instant(&self, query: &str) -> Result<Vec<Sample>, PromError> {
        let body = format!("query={}", form_encode(query));
        let data = self.call("/api/v1/query", Some(body), query).await?;
        let kind = data
            .get("resultType")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let result = data
            .get("result")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        match kind {
            "vector" => result
                .as_array()
                .map(|a| a.iter().map(sample).collect::<Option<Vec<_>>>())
                .unwrap_or(None)
                .ok_or_else(|| self.protocol("a vector result without values")),
            "scalar" => point(&result)
                .map(|(_, v)| {
                    vec![Sample {
                        labels: "{}".into(),
                        value: v,
                    }]
                })
                .ok_or_else(|| self.protocol("a scalar result without a value")),
            other => Err(PromError::Protocol {
                url: self.shown.clone(),
                reason: format!(
                    "the query gives a {other} result, not a number (use an expression that \
                     gives one series, e.g. sum(...))"
                ),
            }),
        }
    }

    /// A range query from `start` to `end` (unix seconds) every `step`.
    pub async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<Series>, PromError> {
        let body = format!(
            "query={}&start={start:.3}&end={end:.3}&step={:.3}",
            form_encode(query),
            step.as_secs_f64()
        );
        let data = self.call("/api/v1/query_range", Some(body), query).await?;
        let series = data
            .get("result")
            .and_then(|r| r.as_array())
            .ok_or_else(|| self.protocol("a range result without series"))?;
        series
            .iter()
            .map(|s| {
                let points = s
                    .get("values")?
                    .as_array()?
                    .iter()
                    .map(point)
                    .collect::<Option<Vec<_>>>()?;
                Some(Series {
                    labels: labels(s.get("metric")),
                    points,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.protocol("a series without values"))
    }

    /// The alerts Prometheus holds now (pending and firing).
    pub async fn alerts(&self) -> Result<Vec<Alert>, PromError> {
        let data = self.call("/api/v1/alerts", None, "").await?;
        let alerts = data
            .get("alerts")
            .and_then(|a| a.as_array())
            .ok_or_else(|| self.protocol("no alert list"))?;
        Ok(alerts
            .iter()
            .map(|a| Alert {
                name: a
                    .get("labels")
                    .and_then(|l| l.get("alertname"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("")
                    .to_string(),
                state: a
                    .get("state")
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_string(),
                labels: labels(a.get("labels")),
            })
            .collect())
    }

    fn protocol(&self, reason: &str) -> PromError {
        PromError::Protocol {
            url: self.shown.clone(),
            reason: reason.to_string(),
        }
    }

    /// One API call (POST with a form body, or GET), bounded by the timeout; returns `data`.
    async fn call(
        &self,
        path: &str,
        form: Option<String>,
        query: &str,
    ) -> Result<serde_json::Value, PromError> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().uri(&uri).method(if form.is_some() {
            Method::POST
        } else {
            Method::GET
        });
        if form.is_some() {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| PromError::Url {
                url: self.shown.clone(),
                reason: e.to_string(),
            })?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| PromError::Unreachable {
                    url: self.shown.clone(),
                    reason: crate::redact::redact_urls_in(&chain(&e)).into_owned(),
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| PromError::Unreachable {
                    url: self.shown.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, PromError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| PromError::Timeout {
                url: self.shown.clone(),
                ms: self.timeout.as_millis(),
            })??;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            let head = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
            self.protocol(&format!(
                "HTTP {status} with a body that is not Prometheus's JSON: {:?}",
                crate::text::terminal(&head)
            ))
        })?;
        match json.get("status").and_then(|s| s.as_str()) {
            Some("success") => Ok(json.get("data").cloned().unwrap_or_default()),
            Some("error") => Err(PromError::Rejected {
                query: query.to_string(),
                error_type: json
                    .get("errorType")
                    .and_then(|s| s.as_str())
                    .unwrap_or("error")
                    .to_string(),
                error: json
                    .get("error")
                    .and_then(|s| s.as_str())
                    .unwrap_or("")
                    .to_string(),
            }),
            _ => Err(self.protocol(&format!("HTTP {status} without a `status` field"))),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn labels(m: Option<&serde_json::Value>) -> String {
    let Some(m) = m.and_then(|m| m.as_object()) else {
        return "{}".into();
    };
    let inner: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// `[ts, "value"]` → (ts, value); Prometheus writes NaN and infinities as `NaN`, `+Inf`, `-Inf`.
fn point(v: &serde_json::Value) -> Option<(f64, f64)> {
    let a = v.as_array()?;
    let t = a.first()?.as_f64()?;
    let s = a.get(1)?.as_str()?;
    let value = match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().ok()?,
    };
    Some((t, value))
}

fn sample(v: &serde_json::Value) -> Option<Sample> {
    Some(Sample {
        labels: labels(v.get("metric")),
        value: point(v.get("value")?)?.1,
    })
}

/// The one number a result must be: exactly one series with a finite value. An empty result,
/// several series or NaN/infinity are failures with a message, never a pass.
pub fn single_value(samples: &[Sample]) -> Result<f64, String> {
    match samples {
        [] => Err("the query returned no series (an empty result is never a pass)".into()),
        [s] if s.value.is_nan() => Err(format!("the query returned NaN for {}", s.labels)),
        [s] if s.value.is_infinite() => {
            Err(format!("the query returned {} for {}", s.value, s.labels))
        }
        [s] => Ok(s.value),
        many => Err(format!(
            "the query returned {} series, not one number (aggregate it, e.g. sum(...) or \
             max(...)); first: {}",
            many.len(),
            many[0].labels
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_form_encoding() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        assert_eq!(
            form_encode("sum(rate(x{a=\"b c\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B1m%5D%29%29"
        );
    }

    #[test]
    fn one_finite_series_or_a_failure() {
        let s = |l: &str, v: f64| Sample {
            labels: l.into(),
            value: v,
        };
        assert_eq!(single_value(&[s("{}", 0.5)]), Ok(0.5));
        assert!(single_value(&[]).unwrap_err().contains("no series"));
        assert!(
            single_value(&[s("{}", f64::NAN)])
                .unwrap_err()
                .contains("NaN")
        );
        assert!(
            single_value(&[s("{a=\"1\"}", 1.0), s("{a=\"2\"}", 1.0)])
                .unwrap_err()
                .contains("2 series")
        );
        assert!(single_value(&[s("{}", f64::INFINITY)]).is_err());
    }

    #[test]
    fn points_read_prometheus_text_numbers() {
        let v: serde_json::Value = serde_json::json!([1.5, "NaN"]);
        assert!(point(&v).is_some_and(|(_, x)| x.is_nan()));
        let v: serde_json::Value = serde_json::json!([1.5, "+Inf"]);
        assert_eq!(point(&v), Some((1.5, f64::INFINITY)));
        let v: serde_json::Value = serde_json::json!([1.5, "0.25"]);
        assert_eq!(point(&v), Some((1.5, 0.25)));
        assert_eq!(point(&serde_json::json!([1.5, "x"])), None);
    }

    #[test]
    fn credentials_never_show() {
        let a = Auth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://x:9090/prom").is_ok());
        assert!(check_url("http://x:9090/?a=b").is_err());
        assert!(
            check_url("http://u:p@x:9090/")
                .unwrap_err()
                .contains("credentials")
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_within_the_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Client::new(&Connection {
            url: format!("http://127.0.0.1:{port}"),
            auth: None,
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        let e = c.instant("up").await.unwrap_err();
        assert!(matches!(e, PromError::Unreachable { .. }), "{e}");
    }

    #[tokio::test]
    async fn the_bearer_token_is_sent_and_the_query_form_encoded() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head and the small form body.
            while !String::from_utf8_lossy(&req).contains("query=") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            String::from_utf8_lossy(&req).into_owned()
        });
        let c = Client::new(&Connection {
            url: format!("http://127.0.0.1:{port}/"),
            auth: Some(Auth::Bearer("tok-123".into())),
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let got = c.instant("vector(2.5) > 1").await.unwrap();
        assert_eq!(single_value(&got), Ok(2.5));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /api/v1/query "), "{req}");
        assert!(
            req.to_lowercase().contains("authorization: bearer tok-123"),
            "{req}"
        );
        assert!(req.contains("query=vector%282.5%29+%3E+1"), "{req}");
    }
}
