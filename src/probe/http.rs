//! The `http` steady-state probe: a request at an interval whose answer must meet every
//! expectation: a status among those listed, a body that contains a text, matches a regex, or
//! holds JSON values that pass comparisons (`$.status == "UP"`, `$.queue.depth < 100`), and a
//! latency under a limit. Owns its spec as written, the checks of every field (run before
//! anything starts: a bad regex, JSON path, header or CA file is exit 2), and the check itself.
//! A failing check says what it measured next to what was expected, since the report only keeps
//! that message.
//!
//! https goes through the load generator's rustls configuration (`load::tls`: bundled roots,
//! `ca_file`, `insecure`), one pooled client per distinct TLS setting, kept in [`ProbeEnv`]. JSON
//! paths are RFC 9535 JSONPath through `jsonpath-rust`, already in the tree through the kube
//! client (no second JSONPath crate). Header values are never shown: they are often credentials.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Probe, ProbeEnv, error_chain};
use crate::experiment::{HumanDuration, Located};
use crate::fault::BoxFuture;
use crate::load::tls::{self, ClientOptions};

/// Largest response body a check reads (1 MiB): a probe reads a health document, not a file.
const MAX_BODY: usize = 1024 * 1024;

/// How much of a body a failing check quotes.
const QUOTE: usize = 120;

/// An HTTP probe: a request whose answer must meet every expectation given.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// URL to request (http:// or https://).
    pub url: Located<String>,
    /// HTTP method (any token: GET, POST, HEAD, PURGE...).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers. Values are never written anywhere (they are often credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Expected status code, or a list of accepted codes.
    #[serde(default)]
    pub expect_status: ExpectStatus,
    /// The response body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The response body must match this regular expression (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<String>,
    /// JSON checks of the response body, each `<JSONPath> <op> <JSON value>` with op one of
    /// `==`, `!=`, `<`, `<=`, `>`, `>=` (e.g. `$.status == "UP"`, `$.queue.depth < 100`), or a
    /// bare JSONPath that must select something. Every node the path selects must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<String>,
    /// The answer (status and whole body) must arrive within this latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<HumanDuration>,
    /// PEM file of extra trusted root certificates (for https with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any server certificate (https without verification, like `curl -k`).
    #[serde(default)]
    pub insecure: bool,
    /// Timeout of one check.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// Accepted status codes: one, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ExpectStatus {
    /// One code.
    One(u16),
    /// Any of these codes.
    Any(Vec<u16>),
}

impl Default for ExpectStatus {
    fn default() -> Self {
        ExpectStatus::One(200)
    }
}

impl ExpectStatus {
    fn codes(&self) -> &[u16] {
        match self {
            ExpectStatus::One(c) => std::slice::from_ref(c),
            ExpectStatus::Any(v) => v,
        }
    }

    fn accepts(&self, code: u16) -> bool {
        self.codes().contains(&code)
    }
}

impl std::fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<String> = self.codes().iter().map(u16::to_string).collect();
        f.write_str(&codes.join(" or "))
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// A client of the `http` probes: http and https, one pool per TLS setting.
pub(crate) type Client =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What tells two `http` probes' clients apart: the CA file and `insecure`.
type TlsKey = (Option<std::path::PathBuf>, bool);

/// The clients of a run's `http` probes, by TLS setting (see [`ProbeEnv`]).
#[derive(Default)]
pub(crate) struct Clients(Mutex<HashMap<TlsKey, Arc<Client>>>);

impl Clients {
    fn get(&self, probe: &HttpProbe) -> Result<Arc<Client>, String> {
        let key = (probe.ca_file.clone(), probe.insecure);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(client(probe)?);
        map.insert(key, c.clone());
        Ok(c)
    }
}

fn tls_options(probe: &HttpProbe) -> ClientOptions {
    ClientOptions {
        insecure: probe.insecure,
        ca_file: probe.ca_file.clone(),
        ..ClientOptions::default()
    }
}

/// A new client for `probe`'s TLS setting: HTTP/1.1 (and h2 where ALPN settles it), no Nagle.
fn client(probe: &HttpProbe) -> Result<Client, String> {
    let config = tls::client_config(&tls_options(probe)).map_err(|e| error_chain(&e))?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector))
}

/// Parses a probe URL: http:// or https:// with a host.
pub fn probe_url(url: &str) -> Result<http::Uri, String> {
    crate::experiment::url::http_url(url, true)
}

/// A comparison of a JSON check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A JSON check as parsed: the path, and the comparison if any.
#[derive(Debug, Clone, PartialEq)]
struct JsonCheck {
    path: String,
    cmp: Option<(Op, serde_json::Value)>,
}

/// Parses `<JSONPath> [<op> <JSON value>]`. The operator is the first `=`, `!`, `<` or `>`
/// outside brackets and quotes: JSONPath uses those only inside filters, within brackets.
fn parse_json_check(s: &str) -> Result<JsonCheck, String> {
    let bytes = s.as_bytes();
    let (mut depth, mut quote) = (0i32, None::<u8>);
    let mut split = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q && bytes.get(i.wrapping_sub(1)) != Some(&b'\\') => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'[' | b'(') => depth += 1,
            (None, b']' | b')') => depth -= 1,
            (None, b'=' | b'!' | b'<' | b'>') if depth == 0 => {
                split = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (path, cmp) = match split {
        None => (s.trim(), None),
        Some(i) => {
            let two = s.get(i..i + 2).unwrap_or("");
            let (op, len) = match (two, bytes[i]) {
                ("==", _) => (Op::Eq, 2),
                ("!=", _) => (Op::Ne, 2),
                ("<=", _) => (Op::Le, 2),
                (">=", _) => (Op::Ge, 2),
                (_, b'<') => (Op::Lt, 1),
                (_, b'>') => (Op::Gt, 1),
                _ => {
                    return Err(format!(
                        "{s:?}: expected an operator ==, !=, <, <=, > or >= after the path"
                    ));
                }
            };
            let value = s[i + len..].trim();
            let v: serde_json::Value = serde_json::from_str(value).map_err(|_| {
                format!(
                    "{s:?}: {value:?} is not a JSON value (a string is written in double \
                     quotes: \"UP\")"
                )
            })?;
            if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && !(v.is_number() || v.is_string())
            {
                return Err(format!(
                    "{s:?}: {} compares numbers or strings, not {value}",
                    op.as_str()
                ));
            }
            (s[..i].trim(), Some((op, v)))
        }
    };
    if path.is_empty() {
        return Err(format!("{s:?}: no JSONPath before the operator"));
    }
    jsonpath_rust::parser::parse_json_path(path)
        .map_err(|e| format!("{s:?}: {path:?} is not a JSONPath: {e}"))?;
    Ok(JsonCheck {
        path: path.to_string(),
        cmp,
    })
}

/// Does `actual` pass `op expected`?
fn compare(actual: &serde_json::Value, op: Op, expected: &serde_json::Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (actual, expected) {
        (serde_json::Value::Number(a), serde_json::Value::Number(b)) => {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => None,
            }
        }
        (serde_json::Value::String(a), serde_json::Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match op {
        Op::Eq => ord.map_or(actual == expected, |o| o == Ordering::Equal),
        Op::Ne => ord.map_or(actual != expected, |o| o != Ordering::Equal),
        Op::Lt => ord == Some(Ordering::Less),
        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ord == Some(Ordering::Greater),
        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

impl JsonCheck {
    /// `Ok` when the check passes on `doc`, else the value measured next to the expectation.
    fn eval(&self, doc: &serde_json::Value) -> Result<(), String> {
        let parsed = jsonpath_rust::parser::parse_json_path(&self.path)
            .map_err(|e| format!("{}: {e}", self.path))?;
        let nodes = jsonpath_rust::query::js_path_process(&parsed, doc)
            .map_err(|e| format!("{}: {e}", self.path))?;
        if nodes.is_empty() {
            return Err(format!("{} selects nothing in the body", self.path));
        }
        let Some((op, expected)) = &self.cmp else {
            return Ok(());
        };
        for node in nodes {
            if !compare(node.val, *op, expected) {
                return Err(format!(
                    "{} is {}, expected {} {}",
                    self.path,
                    quote_json(node.val),
                    op.as_str(),
                    expected
                ));
            }
        }
        Ok(())
    }
}

fn quote_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > QUOTE {
        format!("{}...", truncate(&s, QUOTE))
    } else {
        s
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn quote_body(body: &str) -> String {
    if body.len() > QUOTE {
        format!("{:?}...", truncate(body, QUOTE))
    } else {
        format!("{body:?}")
    }
}

impl HttpProbe {
    fn json_checks(&self) -> Result<Vec<JsonCheck>, String> {
        self.json.iter().map(|s| parse_json_check(s)).collect()
    }
}

impl Probe for HttpProbe {
    fn describe(&self, interval: Duration) -> String {
        // As the client will send it (`http://h:1` becomes `http://h:1/`).
        let url = probe_url(&self.url).map_or_else(|_| self.url.value.clone(), |u| u.to_string());
        let mut expects = vec![format!("status {}", self.expect_status)];
        if let Some(s) = &self.body_contains {
            expects.push(format!("body contains {s:?}"));
        }
        if let Some(r) = &self.body_matches {
            expects.push(format!("body matches /{r}/"));
        }
        expects.extend(self.json.iter().cloned());
        if let Some(l) = &self.max_latency {
            expects.push(format!("latency < {}ms", l.get().as_millis()));
        }
        let mut line = format!("{} {}", self.method, crate::redact::redact_url(&url),);
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
            line.push_str(&format!(" (headers: {})", names.join(", ")));
        }
        if self.insecure {
            line.push_str(" (certificate not verified)");
        }
        format!(
            "{line} expects {} every {}ms",
            expects.join(", "),
            interval.as_millis()
        )
    }

    fn validate(&self) -> Result<(), String> {
        probe_url(&self.url).map_err(|m| format!("`url`: {m}"))?;
        http::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("`method`: {:?} is not an HTTP method", self.method))?;
        for (k, v) in &self.headers {
            http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`headers.{k}`: not a valid header name"))?;
            http::HeaderValue::from_str(v)
                .map_err(|_| format!("`headers.{k}`: not a valid header value"))?;
        }
        if self.expect_status.codes().is_empty() {
            return Err("`expect_status`: lists no status code".into());
        }
        if let Some(c) = self
            .expect_status
            .codes()
            .iter()
            .find(|c| !(100..=599).contains(*c))
        {
            return Err(format!(
                "`expect_status`: {c} is not an HTTP status (100 to 599)"
            ));
        }
        if let Some(r) = &self.body_matches {
            regex::RegexBuilder::new(r)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("`body_matches`: not a valid regex: {e}"))?;
        }
        for (i, s) in self.json.iter().enumerate() {
            parse_json_check(s).map_err(|m| format!("`json[{i}]`: {m}"))?;
        }
        if self.timeout.get().is_zero() {
            return Err("`timeout`: must be above zero".into());
        }
        if let Some(l) = &self.max_latency
            && l.get().is_zero()
        {
            return Err("`max_latency`: must be above zero".into());
        }
        if self.insecure && self.ca_file.is_some() {
            return Err(
                "`insecure` and `ca_file` exclude each other: with `insecure` no \
                        certificate is checked"
                    .into(),
            );
        }
        if self.ca_file.is_some() {
            // Read now, so a missing or malformed CA file stops the run before it starts.
            tls::client_config(&tls_options(self))
                .map_err(|e| format!("`ca_file`: {}", error_chain(&e)))?;
        }
        Ok(())
    }

    fn check<'a>(&'a self, env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let client = env.http_clients().get(self)?;
            check(self, &client).await
        })
    }
}

async fn check(probe: &HttpProbe, client: &Client) -> Result<(), String> {
    let uri = probe_url(&probe.url)?;
    let method = http::Method::from_bytes(probe.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", probe.method))?;
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in &probe.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let body = probe.body.clone().map(Bytes::from).unwrap_or_default();
    let req = req
        .body(Full::new(body))
        .map_err(|_| "the request cannot be built from the probe's fields".to_string())?;
    let start = tokio::time::Instant::now();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("status {status}: body over {} KiB", MAX_BODY / 1024)
                } else {
                    format!("status {status}: {e}")
                }
            })?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let timeout = probe.timeout.get();
    let (status, body) = match tokio::time::timeout(timeout, fut).await {
        Err(_) => return Err(format!("timed out after {}ms", timeout.as_millis())),
        Ok(r) => r?,
    };
    let latency = start.elapsed();
    let mut failures = Vec::new();
    if !probe.expect_status.accepts(status) {
        failures.push(format!("status {status}, expected {}", probe.expect_status));
    }
    if let Some(limit) = &probe.max_latency
        && latency > limit.get()
    {
        failures.push(format!(
            "latency {}ms, expected < {}ms",
            latency.as_millis(),
            limit.get().as_millis()
        ));
    }
    let text = String::from_utf8_lossy(&body);
    if let Some(s) = &probe.body_contains
        && !text.contains(s.as_str())
    {
        failures.push(format!("body {} does not contain {s:?}", quote_body(&text)));
    }
    if let Some(r) = &probe.body_matches {
        let re = regex::RegexBuilder::new(r)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("body_matches: {e}"))?;
        if !re.is_match(&text) {
            failures.push(format!("body {} does not match /{r}/", quote_body(&text)));
        }
    }
    let checks = probe.json_checks()?;
    if !checks.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Err(e) => failures.push(format!("body {} is not JSON: {e}", quote_body(&text))),
            Ok(doc) => {
                for c in &checks {
                    if let Err(m) = c.eval(&doc) {
                        failures.push(m);
                    }
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(url: &str) -> HttpProbe {
        serde_json::from_value(serde_json::json!({ "url": url, "timeout": "500ms" })).unwrap()
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert!(probe_url("http://127.0.0.1:8080/health").is_ok());
        assert!(probe_url("https://x/").is_ok());
        assert!(probe_url("ftp://x/").unwrap_err().contains("http://"));
        assert!(
            probe("not a url")
                .validate()
                .unwrap_err()
                .starts_with("`url`: ")
        );
    }

    #[test]
    fn the_plan_line_redacts_credentials_and_header_values() {
        let mut p = probe("http://u:p@127.0.0.1:1");
        p.headers
            .insert("Authorization".into(), "Bearer hunter2".into());
        let line = p.describe(Duration::from_millis(250));
        assert_eq!(
            line,
            "GET http://<redacted>@127.0.0.1:1/ (headers: Authorization) expects status 200 \
             every 250ms"
        );
    }

    #[test]
    fn json_checks_parse_and_compare() {
        let doc = serde_json::json!({"status": "UP", "queue": {"depth": 42}, "items": [1, 5]});
        let ok = |s: &str| parse_json_check(s).unwrap().eval(&doc);
        assert_eq!(ok(r#"$.status == "UP""#), Ok(()));
        assert_eq!(ok("$.queue.depth < 100"), Ok(()));
        assert_eq!(ok("$.queue.depth<=42"), Ok(()));
        assert_eq!(ok("$.queue.depth == 42.0"), Ok(()));
        assert_eq!(ok("$.queue"), Ok(()));
        assert_eq!(
            ok("$.queue.depth > 50"),
            Err("$.queue.depth is 42, expected > 50".into())
        );
        assert_eq!(
            ok(r#"$.status != "UP""#),
            Err(r#"$.status is "UP", expected != "UP""#.into())
        );
        assert_eq!(
            ok("$.items[*] < 5"),
            Err("$.items[*] is 5, expected < 5".into())
        );
        assert_eq!(
            ok("$.missing == 1"),
            Err("$.missing selects nothing in the body".into())
        );
        assert_eq!(ok("$.items[?@ > 4] == 5"), Ok(()));
        assert!(
            parse_json_check("$.status == UP")
                .unwrap_err()
                .contains("double quotes")
        );
        assert!(
            parse_json_check("$.a = 1")
                .unwrap_err()
                .contains("operator")
        );
        assert!(
            parse_json_check("$.a < true")
                .unwrap_err()
                .contains("compares")
        );
        assert!(parse_json_check("$[ == 1").is_err());
        assert!(
            parse_json_check("== 1")
                .unwrap_err()
                .contains("no JSONPath")
        );
    }

    #[test]
    fn every_field_is_checked() {
        let bad = |f: &dyn Fn(&mut HttpProbe)| {
            let mut p = probe("http://127.0.0.1:1/");
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(&|p| p.method = "GE T".into()).starts_with("`method`"));
        assert!(
            bad(&|p| {
                p.headers.insert("bad name".into(), "x".into());
            })
            .starts_with("`headers.bad name`")
        );
        assert!(bad(&|p| p.body_matches = Some("(".into())).starts_with("`body_matches`"));
        assert!(bad(&|p| p.json = vec!["$.a == nope".into()]).starts_with("`json[0]`"));
        assert!(bad(&|p| p.expect_status = ExpectStatus::Any(vec![])).contains("no status"));
        assert!(bad(&|p| p.expect_status = ExpectStatus::One(42)).contains("100 to 599"));
        assert!(bad(&|p| p.ca_file = Some("/nonexistent/ca.pem".into())).starts_with("`ca_file`"));
    }

    #[tokio::test]
    async fn a_check_passes_on_the_expected_status_and_names_the_wrong_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if n == 0 { "200 OK" } else { "503 Unavailable" };
                n += 1;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let env = ProbeEnv::default();
        let p = probe(&format!("http://{addr}/"));
        assert_eq!(p.check(&env).await, Ok(()));
        assert_eq!(
            p.check(&env).await,
            Err("status 503, expected 200".to_string())
        );
    }
}
