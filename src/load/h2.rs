//! The closed model's HTTP/2 connection (`rattle load --http2`): the `h2` crate driven
//! directly, one connection per loop, carrying up to `streams` requests in flight at once.
//!
//! Why not hyper's client: its HTTP/2 path hands every request to the connection's task through
//! a channel and gets the response back through another, boxes the body, and (the pooled client)
//! takes a lock per checkout. That cost a third of the throughput against h2load. Here the
//! request head is cloned from one template (no header parsing or boxing per request), the body is
//! a shared [`Bytes`] (a reference count, not a copy), and each stream loop calls `h2`'s
//! `SendRequest` itself, so a request is a few frame writes on the connection's buffer. The
//! connection itself runs as its own task on the thread's runtime.
//!
//! The classification of failures mirrors [`super::client::classify_error`]: `h2::Error` has no
//! `source()`, so it is read here (an I/O error by kind, a GOAWAY or RST_STREAM as Reset, anything
//! else a protocol failure, Other).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, Uri, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::client::{classify_error, classify_status};
use super::tls::{self, ClientOptions};
use super::{LoadConfig, LoadError};
use crate::metrics::Outcome;

/// Per-stream receive window: what hyper's client uses, so a large response body streams at
/// full speed instead of waiting on the 64 KiB default.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Per-connection receive window (hyper's default too).
const CONN_WINDOW: u32 = 5 * 1024 * 1024;

/// Why a connection or a request failed.
#[derive(thiserror::Error, Debug)]
pub(crate) enum H2Error {
    /// TCP connect (or the TLS handshake) failed.
    #[error("connect failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/2 protocol layer failed: handshake, send, response or body.
    #[error("HTTP/2 error: {0}")]
    Proto(#[from] h2::Error),
}

impl H2Error {
    /// The report's class for this failure.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Self::Connect(e) => classify_error(&**e),
            Self::Proto(e) => h2_outcome(e),
        }
    }

    /// The server closed the connection gracefully (GOAWAY, no error) before it took this
    /// request: it was never processed, and goes again on a new connection.
    pub(crate) fn never_processed(&self) -> bool {
        matches!(self, Self::Proto(e) if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR))
    }

    /// Only this request's stream failed (the server reset it); the connection still serves.
    pub(crate) fn stream_only(&self) -> bool {
        matches!(self, Self::Proto(e) if e.is_reset() && !e.is_go_away())
    }
}

/// The outcome of an `h2` failure.
fn h2_outcome(e: &h2::Error) -> Outcome {
    if let Some(io) = e.get_io() {
        return match classify_error(io) {
            // An I/O error of no telling kind on an established connection: it went away.
            Outcome::Other => Outcome::Reset,
            o => o,
        };
    }
    if e.is_go_away() || e.is_reset() {
        return Outcome::Reset;
    }
    Outcome::Other
}

/// How a connection is opened.
enum Dial {
    /// h2c with prior knowledge: TCP to this address.
    Plain(SocketAddr),
    /// TLS with ALPN h2, through the same rustls setup as the pooled client.
    Tls(HttpsConnector<HttpConnector>),
}

/// What every connection of a run sends: built once, shared by all threads.
pub(crate) struct H2Target {
    dial: Dial,
    method: Method,
    /// The URL without any `user:password@` (the :authority pseudo-header must not carry it).
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    ok: Option<Arc<[u16]>>,
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2); `h2` refuses a request carrying one.
fn connection_specific(name: &header::HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

impl H2Target {
    /// The target of `cfg` (already validated). `addr` is the resolved address for `http://`;
    /// `https://` connects through rustls with `opts` and resolves on each connect.
    pub(crate) fn new(
        cfg: &LoadConfig,
        opts: &ClientOptions,
        addr: Option<SocketAddr>,
    ) -> Result<Self, LoadError> {
        let dial = match addr {
            Some(a) => Dial::Plain(a),
            None => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.enforce_http(false);
                let connector = HttpsConnectorBuilder::new()
                    .with_tls_config(tls::client_config(opts)?)
                    .https_or_http()
                    .enable_http2()
                    .wrap_connector(http);
                Dial::Tls(connector)
            }
        };
        let mut headers = HeaderMap::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            if !connection_specific(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let uri =
            without_userinfo(&cfg.url).map_err(|source| LoadError::InvalidRequest { source })?;
        Ok(Self {
            dial,
            method: cfg.method.clone(),
            uri,
            headers,
            body: cfg.body.clone(),
            ok: cfg.ok_status.as_deref().map(Arc::from),
        })
    }

    /// A new request head: clones of the template's parts, no parsing.
    fn head(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        if !self.headers.is_empty() {
            *req.headers_mut() = self.headers.clone();
        }
        req
    }

    /// Opens a connection and starts its task on the current `LocalSet` (the closed model's
    /// thread: the connection and its stream loops then share one task queue, with no hop
    /// through the runtime's); dropping the returned [`H2Conn`] ends it. Must be called inside
    /// a `LocalSet`.
    pub(crate) async fn connect(&self) -> Result<H2Conn, H2Error> {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW);
        let (send, driver) = match &self.dial {
            Dial::Plain(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| H2Error::Connect(e.into()))?;
                // Small frames must not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                let (send, conn) = builder.handshake(tcp).await?;
                (
                    send,
                    tokio::task::spawn_local(async move { drop(conn.await) }),
                )
            }
            Dial::Tls(connector) => {
                let mut connector = connector.clone();
                let io = connector
                    .call(self.uri.clone())
                    .await
                    .map_err(H2Error::Connect)?;
                let (send, conn) = builder.handshake(TokioIo::new(io)).await?;
                (
                    send,
                    tokio::task::spawn_local(async move { drop(conn.await) }),
                )
            }
        };
        Ok(H2Conn { send, driver })
    }

    /// One request on `send` (a clone of the connection's handle owned by one stream loop), to
    /// the end of the response body. Not bounded in time: the caller bounds it, and dropping the
    /// future resets the stream (the connection stays).
    pub(crate) async fn send(&self, send: &mut SendRequest<Bytes>) -> Result<Sent, Unsent> {
        // Wait for a free stream slot (the server's concurrent-stream limit).
        if let Err(e) = poll_fn(|cx| send.poll_ready(cx)).await {
            return Err(Unsent(e.into()));
        }
        let empty = self.body.is_empty();
        let (resp, mut stream) = match send.send_request(self.head(), empty) {
            Ok(pair) => pair,
            Err(e) => return Err(Unsent(e.into())),
        };
        if !empty {
            stream.reserve_capacity(self.body.len());
            if let Err(e) = stream.send_data(self.body.clone(), true) {
                return Ok(Sent::Failed(e.into(), None));
            }
        }
        let resp = match resp.await {
            Ok(r) => r,
            Err(e) => return Ok(Sent::Failed(e.into(), None)),
        };
        let status = resp.status();
        // Drain without keeping the bytes: only the instant the body ended matters.
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(c) => {
                    let _ = body.flow_control().release_capacity(c.len());
                }
                Err(e) => return Ok(Sent::Failed(e.into(), Some(status.as_u16()))),
            }
        }
        if !body.is_end_stream() {
            if let Err(e) = body.trailers().await {
                return Ok(Sent::Failed(e.into(), Some(status.as_u16())));
            }
        }
        Ok(Sent::Done(
            classify_status(status, self.ok.as_deref()),
            status.as_u16(),
        ))
    }
}

/// `uri` with any `user:password@` left out.
fn without_userinfo(uri: &Uri) -> Result<Uri, http::Error> {
    let Some(auth) = uri.authority() else {
        return Ok(uri.clone());
    };
    let s = auth.as_str();
    let Some((_, host)) = s.rsplit_once('@') else {
        return Ok(uri.clone());
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(host.parse()?);
    Ok(Uri::from_parts(parts)?)
}

/// A request that reached the connection.
pub(crate) enum Sent {
    /// A complete response: its outcome and status.
    Done(Outcome, u16),
    /// It failed after it was handed to the connection (the status if the head had arrived).
    Failed(H2Error, Option<u16>),
}

/// A request that could not be handed to the connection at all: it is closing (say after a
/// GOAWAY) or broken. Nothing went on the wire for it.
#[derive(Debug)]
pub(crate) struct Unsent(pub(crate) H2Error);

/// An open connection: the handle its stream loops clone, and its task, ended on drop.
pub(crate) struct H2Conn {
    /// The handle to send on; each stream loop takes a clone.
    pub(crate) send: SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn userinfo_is_left_out_of_the_authority() {
        let u: Uri = "http://u:secret@127.0.0.1:8080/p?q=1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let s = without_userinfo(&u).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.to_string(), "http://127.0.0.1:8080/p?q=1");
        let plain: Uri = "https://example.com/"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(without_userinfo(&plain).ok(), Some(plain));
    }

    #[test]
    fn h2_failures_are_classed() {
        // A reason made locally (not a RST_STREAM or GOAWAY the peer sent, which only the
        // connection can produce: tests/it/load_h2.rs drives those) is a protocol failure.
        let local = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
        assert!(!local.is_reset() && !local.is_go_away());
        assert_eq!(h2_outcome(&local), Outcome::Other);
        assert!(!H2Error::Proto(local).stream_only());
        let refused = H2Error::Connect(io::Error::from(io::ErrorKind::ConnectionRefused).into());
        assert_eq!(refused.outcome(), Outcome::Refused);
        assert!(!refused.stream_only());
    }
}
