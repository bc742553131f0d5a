//! The HTTP side of the load generator: one pooled client (HTTP/1.1 and HTTP/2, plain or TLS
//! through rustls), one request per ticket, and the classifier that turns whatever came back
//! into an [`Outcome`].
//!
//! Kept apart from the scheduler so that pacing can be tested on a paused clock with fake
//! requests, and so that the classifier is a pure function over an error chain: hyper reports the
//! same failure in different shapes depending on where it struck (connect, write, read, body),
//! and the report's error classes are only as good as this one mapping.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::stats::StatusCounts;
use super::tls::{self, ClientOptions, HttpVersion};
use super::{LoadConfig, LoadError};
use crate::metrics::Outcome;

/// Builds and sends the configured request; cheap to clone (the pool is shared).
#[derive(Clone)]
pub(crate) struct HttpSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    method: Method,
    uri: Uri,
    headers: Arc<HeaderMap>,
    body: Bytes,
    ok_status: Option<Arc<[u16]>>,
    statuses: Option<Arc<StatusCounts>>,
}

impl HttpSender {
    /// A client for `cfg` with `opts`, keeping up to `max_idle` idle connections. `cfg` must
    /// already be valid. Needs no runtime until the first send.
    pub(crate) fn with_options(
        cfg: &LoadConfig,
        opts: &ClientOptions,
        max_idle: usize,
    ) -> Result<Self, LoadError> {
        let mut http = HttpConnector::new();
        // Small requests must not wait for Nagle; https is handled by the wrapping connector.
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(opts)?)
            .https_or_http();
        // The versions enabled here are the ones ALPN offers over TLS.
        let connector = match opts.version {
            HttpVersion::Auto => builder.enable_all_versions().wrap_connector(http),
            HttpVersion::Http1 => builder.enable_http1().wrap_connector(http),
            HttpVersion::Http2 => builder.enable_http2().wrap_connector(http),
        };
        let mut client = Client::builder(TokioExecutor::new());
        // Enough idle connections to serve a full in-flight set again without reconnecting.
        client.pool_max_idle_per_host(max_idle);
        if opts.version == HttpVersion::Http2 {
            // Prior knowledge: h2c over plain TCP, and no HTTP/1.1 fallback over TLS.
            client.http2_only(true);
        }
        let client = client.build(connector);
        let mut headers = HeaderMap::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            headers.append(name.clone(), value.clone());
        }
        let sender = Self {
            client,
            method: cfg.method.clone(),
            uri: cfg.url.clone(),
            headers: Arc::new(headers),
            body: cfg.body.clone(),
            ok_status: cfg.ok_status.as_ref().map(|v| Arc::from(v.as_slice())),
            statuses: None,
        };
        // Surface a request that cannot be built now, not as one `Other` per ticket.
        sender
            .request()
            .map_err(|source| LoadError::InvalidRequest { source })?;
        Ok(sender)
    }

    /// The same client's sender of another request of the mix (`cfg`, valid): its
    /// connections are shared.
    pub(crate) fn for_route(&self, cfg: &LoadConfig) -> Result<Self, LoadError> {
        let mut headers = HeaderMap::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            headers.append(name.clone(), value.clone());
        }
        let sender = Self {
            client: self.client.clone(),
            method: cfg.method.clone(),
            uri: cfg.url.clone(),
            headers: Arc::new(headers),
            body: cfg.body.clone(),
            ok_status: cfg.ok_status.as_ref().map(|v| Arc::from(v.as_slice())),
            statuses: self.statuses.clone(),
        };
        sender
            .request()
            .map_err(|source| LoadError::InvalidRequest { source })?;
        Ok(sender)
    }

    /// Counts every response's status in `statuses` from now on.
    pub(crate) fn count_statuses(mut self, statuses: Option<Arc<StatusCounts>>) -> Self {
        self.statuses = statuses;
        self
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .body(Full::new(self.body.clone()))?;
        if !self.headers.is_empty() {
            *req.headers_mut() = HeaderMap::clone(&self.headers);
        }
        Ok(req)
    }

    /// One request, to completion of the whole response body. Not bounded in time: the caller
    /// wraps it in the per-request timeout, and dropping the future drops the connection.
    pub(crate) fn send(&self) -> impl Future<Output = Outcome> + Send + use<> {
        let fut = self.send_with_status();
        async move { fut.await.0 }
    }

    /// [`HttpSender::send`], also giving the response's status when one arrived.
    pub(crate) fn send_with_status(
        &self,
    ) -> impl Future<Output = (Outcome, Option<u16>)> + Send + use<> {
        let req = self.request();
        let client = self.client.clone();
        let ok_status = self.ok_status.clone();
        let statuses = self.statuses.clone();
        async move {
            let req = match req {
                Ok(req) => req,
                Err(_) => return (Outcome::Other, None),
            };
            let resp = match client.request(req).await {
                Ok(resp) => resp,
                Err(e) => return (classify_error(&e), None),
            };
            let status = resp.status();
            if let Some(s) = &statuses {
                s.add(status.as_u16());
            }
            // Drain frame by frame rather than collecting: the body's bytes are not wanted, only
            // the instant it ended, and a large body must not cost memory per request.
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                if let Err(e) = frame {
                    return (classify_error(&e), Some(status.as_u16()));
                }
            }
            (
                classify_status(status, ok_status.as_deref()),
                Some(status.as_u16()),
            )
        }
    }
}

/// The outcome of a complete response with `status`. `ok` lists the statuses counted as
/// success; `None` means 200..=399. A status outside `ok` is `Status4xx`/`Status5xx` by class,
/// and `Other` otherwise (say a 302 when only 200 is accepted).
pub fn classify_status(status: StatusCode, ok: Option<&[u16]>) -> Outcome {
    let code = status.as_u16();
    let accepted = match ok {
        Some(list) => list.contains(&code),
        None => (200..=399).contains(&code),
    };
    if accepted {
        Outcome::Ok
    } else if status.is_client_error() {
        Outcome::Status4xx
    } else if status.is_server_error() {
        Outcome::Status5xx
    } else {
        Outcome::Other
    }
}

/// The outcome of a request that failed with `err`, found by walking its `source()` chain.
///
/// The chain matters because the interesting part is nested. What hyper-util 0.1 / hyper 1
/// yield on 127.0.0.1 (see `tests/load.rs`):
/// - refused: `Error(Connect, ConnectError("tcp connect error", io ConnectionRefused))`;
/// - accepted, then closed before answering: `Error(Canceled, hyper Canceled(IncompleteMessage))`,
///   or (about one in ten, when the close wins the race with the send)
///   `Error(Canceled, hyper Canceled("connection was not ready"))`;
/// - closed after the request was read: `Error(SendRequest, hyper Io(ConnectionReset))`;
/// - body cut short: `hyper Body(io UnexpectedEof)`, from the body stream, not the request;
/// - garbage instead of a response: `Error(Canceled, hyper Canceled(UnexpectedMessage))`;
/// - DNS failure: `Error(Connect, ConnectError("dns error", io Uncategorized))`.
///
/// The first link that says something decides: an I/O error kind (refused; reset, aborted,
/// broken pipe, unexpected EOF), hyper's "incomplete message" (the peer closed the connection
/// before a full response), any other hyper error without a cause (a protocol error: `Other`),
/// a tokio timeout, or a message reading "connection closed". A chain that only says "canceled"
/// is Reset; anything else is `Other`.
pub fn classify_error(err: &(dyn StdError + 'static)) -> Outcome {
    // hyper reports a request that died with its connection as `Canceled`, wrapping why: the
    // connection's own error (which decides, below), or only a message such as "connection was
    // not ready" (the connection closed between checkout and send), or nothing. Without a more
    // telling cause, a cancellation is the connection going away: Reset.
    let mut canceled = false;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        match classify_one(e) {
            Link::Decides(outcome) => return outcome,
            Link::Canceled => canceled = true,
            Link::Silent => {}
        }
        cur = e.source();
    }
    if canceled {
        Outcome::Reset
    } else {
        Outcome::Other
    }
}

/// What one link of an error chain says.
enum Link {
    Decides(Outcome),
    /// hyper's `Canceled`: Reset unless a later link says otherwise.
    Canceled,
    Silent,
}

fn classify_one(e: &(dyn StdError + 'static)) -> Link {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => return Link::Decides(Outcome::Refused),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => return Link::Decides(Outcome::Reset),
            io::ErrorKind::TimedOut => return Link::Decides(Outcome::Timeout),
            // Other kinds may wrap a more telling error. `io::Error::source` skips the error it
            // wraps (it returns that error's source), so look at the wrapped one here.
            _ => {
                if let Some(inner) = io.get_ref() {
                    let outcome = classify_error(inner);
                    if outcome != Outcome::Other {
                        return Link::Decides(outcome);
                    }
                }
            }
        }
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_incomplete_message() {
            return Link::Decides(Outcome::Reset);
        }
        if h.is_canceled() {
            return Link::Canceled;
        }
        if h.is_timeout() {
            return Link::Decides(Outcome::Timeout);
        }
        // A hyper error with no cause of its own (parse error, unexpected message) is the
        // server speaking something other than HTTP: a protocol failure, not a reset.
        if h.source().is_none() {
            return Link::Decides(Outcome::Other);
        }
    }
    if e.is::<tokio::time::error::Elapsed>() {
        return Link::Decides(Outcome::Timeout);
    }
    if e.to_string().contains("connection closed") {
        return Link::Decides(Outcome::Reset);
    }
    Link::Silent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with an explicit source, to build chains like hyper-util's.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    fn wrapped(kind: io::ErrorKind) -> Wrap {
        Wrap(
            "client error (Connect)",
            Box::new(Wrap("tcp connect error", Box::new(io::Error::from(kind)))),
        )
    }

    #[test]
    fn io_kinds_deep_in_the_chain_decide() {
        use io::ErrorKind::*;
        assert_eq!(
            classify_error(&wrapped(ConnectionRefused)),
            Outcome::Refused
        );
        for kind in [
            ConnectionReset,
            ConnectionAborted,
            BrokenPipe,
            UnexpectedEof,
        ] {
            assert_eq!(classify_error(&wrapped(kind)), Outcome::Reset, "{kind:?}");
        }
        assert_eq!(classify_error(&wrapped(TimedOut)), Outcome::Timeout);
        assert_eq!(classify_error(&wrapped(PermissionDenied)), Outcome::Other);
    }

    #[test]
    fn an_io_error_wrapping_a_message_is_read_too() {
        let e = io::Error::other("connection closed before message completed");
        assert_eq!(classify_error(&e), Outcome::Reset);
        let e = io::Error::other("dns error: no such host");
        assert_eq!(classify_error(&e), Outcome::Other);
    }

    #[test]
    fn an_io_error_wrapping_a_chain_is_walked() {
        let e = io::Error::other(wrapped(io::ErrorKind::ConnectionReset));
        assert_eq!(classify_error(&e), Outcome::Reset);
    }

    /// The error hyper's HTTP/1 client gives when the server end of an in-memory pipe does
    /// `server` after the request was written.
    async fn hyper_error_when<F, Fut>(server: F) -> hyper::Error
    where
        F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use tokio::io::AsyncReadExt;
        let (client_end, mut server_end) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server_end.read(&mut buf).await;
            server(server_end).await;
        });
        let io = hyper_util::rt::TokioIo::new(client_end);
        let (mut send, conn) = match hyper::client::conn::http1::handshake(io).await {
            Ok(pair) => pair,
            Err(e) => panic!("handshake: {e}"),
        };
        tokio::spawn(conn);
        let req = match Request::get("/").body(Full::new(Bytes::new())) {
            Ok(r) => r,
            Err(e) => panic!("request: {e}"),
        };
        match send.send_request(req).await {
            Ok(resp) => match resp.into_body().collect().await {
                Ok(_) => panic!("the request succeeded"),
                Err(e) => e,
            },
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn real_hyper_errors_are_classed() {
        use tokio::io::AsyncWriteExt;
        let closed = hyper_error_when(|s| async move { drop(s) }).await;
        assert!(closed.is_incomplete_message(), "{closed:?}");
        assert_eq!(classify_error(&closed), Outcome::Reset);

        let garbage = hyper_error_when(|mut s| async move {
            let _ = s.write_all(b"garbage\r\n\r\n").await;
        })
        .await;
        assert_eq!(classify_error(&garbage), Outcome::Other, "{garbage:?}");

        let cut = hyper_error_when(|mut s| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                .await;
        })
        .await;
        assert_eq!(classify_error(&cut), Outcome::Reset, "{cut:?}");
    }

    #[tokio::test]
    async fn a_request_on_a_closed_connection_is_reset() {
        let (client_end, server_end) = tokio::io::duplex(4096);
        drop(server_end);
        let io = hyper_util::rt::TokioIo::new(client_end);
        let (mut send, conn) = match hyper::client::conn::http1::handshake(io).await {
            Ok(pair) => pair,
            Err(e) => panic!("handshake: {e}"),
        };
        // Let the connection see the close and end, as a pooled connection can between
        // checkout and send.
        let _ = conn.await;
        let req = match Request::get("/").body(Full::new(Bytes::new())) {
            Ok(r) => r,
            Err(e) => panic!("request: {e}"),
        };
        match send.send_request(req).await {
            Ok(_) => panic!("sent on a closed connection"),
            Err(e) => {
                assert!(e.is_canceled(), "{e:?}");
                assert_eq!(classify_error(&e), Outcome::Reset, "{e:?}");
            }
        }
    }

    #[test]
    fn message_fallback_and_unknown_errors() {
        let e = Wrap("outer", Box::new(io::Error::other("connection closed")));
        assert_eq!(classify_error(&e), Outcome::Reset);
        let e = Wrap(
            "invalid HTTP version parsed",
            Box::new(io::Error::other("x")),
        );
        assert_eq!(classify_error(&e), Outcome::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_timeout_is_timeout() {
        let elapsed = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            std::future::pending::<()>(),
        )
        .await;
        match elapsed {
            Err(e) => {
                assert_eq!(classify_error(&e), Outcome::Timeout);
                let w = Wrap("outer", Box::new(e));
                assert_eq!(classify_error(&w), Outcome::Timeout);
            }
            Ok(()) => panic!("pending future completed"),
        }
    }

    #[test]
    fn statuses_by_class_and_by_list() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap_or(StatusCode::IM_A_TEAPOT);
        assert_eq!(classify_status(s(200), None), Outcome::Ok);
        assert_eq!(classify_status(s(302), None), Outcome::Ok);
        assert_eq!(classify_status(s(404), None), Outcome::Status4xx);
        assert_eq!(classify_status(s(503), None), Outcome::Status5xx);
        assert_eq!(classify_status(s(101), None), Outcome::Other);
        let only = [200, 404];
        assert_eq!(classify_status(s(404), Some(&only)), Outcome::Ok);
        assert_eq!(classify_status(s(201), Some(&only)), Outcome::Other);
        assert_eq!(classify_status(s(302), Some(&only)), Outcome::Other);
        assert_eq!(classify_status(s(500), Some(&only)), Outcome::Status5xx);
        assert_eq!(classify_status(s(429), Some(&only)), Outcome::Status4xx);
    }
}
