//! HTTP mode of a proxy: requests are parsed (hyper), matched against the proxy's HTTP rules
//! and either answered at once with a status (abort) or delayed, then forwarded over a
//! keep-alive pool to the upstream.
//!
//! A TCP toxic cannot fail a share of *requests* on a keep-alive connection, nor match a path;
//! this layer can. Client connections stay keep-alive through an injected abort, so the fault
//! shows up as status codes, not as connection errors. Rules are re-read per request: removing
//! one takes effect on the next request, and a delay in progress ends at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::Regex;

use super::share::Share;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Time a client of an HTTP-mode listener has to send a request head, counted from when the
/// connection is ready for one (idle keep-alive included): then it is closed (#19). A minute,
/// like common servers' idle limits, so well-behaved keep-alive pools never notice.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpAction {
    /// Answer with this status without forwarding.
    Abort {
        /// The status code.
        status: u16,
    },
    /// Wait this long, then forward.
    Delay {
        /// The delay.
        delay: Duration,
    },
}

/// Which requests a rule applies to; every given condition must hold.
#[derive(Debug, Clone, Default)]
pub struct HttpMatch {
    /// Method, exactly (case-insensitive).
    pub method: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Path regex (unanchored).
    pub path_regex: Option<Regex>,
    /// Headers that must be present with exactly these values.
    pub headers: Vec<(String, String)>,
}

impl HttpMatch {
    fn matches<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        self.method
            .as_deref()
            .is_none_or(|m| req.method().as_str().eq_ignore_ascii_case(m))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self.path_regex.as_ref().is_none_or(|r| r.is_match(path))
            && self.headers.iter().all(|(k, v)| {
                req.headers()
                    .get_all(k.as_str())
                    .iter()
                    .any(|h| h.as_bytes() == v.as_bytes())
            })
    }
}

/// One HTTP fault on a proxy.
#[derive(Debug, Clone)]
pub struct HttpRule {
    /// Unique within the proxy (shared namespace with toxics).
    pub name: String,
    /// Abort or delay.
    pub action: HttpAction,
    /// Share of matching requests affected, 0 to 1: random which, within one request of the
    /// share over the proxy's requests ([`super::share`]).
    pub share: f64,
    /// Which requests.
    pub matcher: HttpMatch,
    /// The requests it met and hit, across the proxy's connections (clones share it).
    pub tally: Share,
}

/// The rule list a proxy publishes to its HTTP connections.
pub type Rules = watch::Receiver<Arc<Vec<HttpRule>>>;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// The keep-alive client one proxy forwards with.
pub fn client() -> Client<HttpConnector, Incoming> {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

async fn handle(
    mut req: Request<Incoming>,
    upstream: Arc<str>,
    mut rules: Rules,
    client: Client<HttpConnector, Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    loop {
        let list = rules.borrow_and_update().clone();
        let hit = list
            .iter()
            .find(|r| r.matcher.matches(&req) && r.tally.pick(r.share));
        match hit.map(|r| r.action.clone()) {
            Some(HttpAction::Abort { status }) => {
                let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(full(s, "rattle: injected fault\n"));
            }
            Some(HttpAction::Delay { delay }) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => break,
                    // A change (the rule removed) re-evaluates at once.
                    r = rules.changed() => if r.is_err() { break },
                }
            }
            None => break,
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let uri = match format!("http://{upstream}{pq}").parse::<hyper::Uri>() {
        Ok(u) => u,
        Err(_) => {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "rattle: bad request target\n",
            ));
        }
    };
    *req.uri_mut() = uri;
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(_) => Ok(full(
            StatusCode::BAD_GATEWAY,
            "rattle: upstream unreachable\n",
        )),
    }
}

/// Serves one accepted connection in HTTP mode until it closes or `cancel` fires.
pub async fn serve(
    client_sock: TcpStream,
    upstream: Arc<str>,
    rules: Rules,
    client: Client<HttpConnector, Incoming>,
    cancel: CancellationToken,
) {
    let _ = client_sock.set_nodelay(true);
    let svc = service_fn(move |req| handle(req, upstream.clone(), rules.clone(), client.clone()));
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(client_sock), svc);
    tokio::select! {
        _ = conn => {}
        _ = cancel.cancelled() => {}
    }
}
