//! The closed model's fast path: a minimal HTTP/1.1 client connection over plain TCP, one
//! request at a time, with the request bytes built once per run.
//!
//! It exists because the general client (hyper's pooled client) costs several microseconds of
//! CPU per request in pool checkout, header maps and task hand-offs, and a load generator that
//! competes with wrk on one core has about 8 µs per request in all, most of it the kernel's. So
//! this does what wrk does and no more: one `write` of pre-built bytes, then `read`s parsed with
//! `httparse` into a reused buffer until the response's framing (Content-Length, chunked, or
//! close-delimited; none for HEAD, 1xx, 204 and 304) says it is complete. The body is skipped,
//! never stored. Readiness comes from tokio's [`AsyncFd`]; after a short read the readiness is
//! cleared by hand (the socket is drained, and epoll is edge-triggered), which saves the extra
//! `read` returning `EAGAIN` per request that the generic `AsyncRead` path makes.
//!
//! A server answers the same request with the same head byte for byte, but for its `Date`
//! header, which changes once a second. Parsing that head was half of this client's
//! instructions per request (callgrind), so each connection keeps the last head it parsed, and a
//! response that starts with exactly those bytes reuses its parse: same bytes, same result, so
//! nothing is taken on trust. Any other head is parsed in full.
//!
//! Anything beyond plain HTTP/1.1 (TLS, HTTP/2) goes through [`super::client`] instead.

use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::io::unix::AsyncFd;

use super::client::{classify_error, classify_status};
use super::stats::StatusCounts;
use super::{LoadConfig, LoadError};
use crate::metrics::Outcome;

/// Largest response head accepted; a bigger one is a protocol error, not a reason to grow
/// without bound.
const MAX_HEAD: usize = 1 << 20;
/// Initial read buffer: a typical response, head and small body, in one read.
const BUF: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 64;
/// Longest head kept for reuse; a longer one is parsed every time.
const MAX_CACHED_HEAD: usize = 4096;

/// Why one request on a connection failed.
#[derive(thiserror::Error, Debug)]
pub enum H1Error {
    /// A socket error (connect, write or read).
    #[error("i/o error")]
    Io(#[from] io::Error),
    /// The server closed the connection before a complete response. `early` when not a byte
    /// of the response had arrived, which on a reused connection means it was closed while idle.
    #[error("connection closed before a complete response")]
    Closed {
        /// Nothing of the response had arrived.
        early: bool,
    },
    /// The response is not valid HTTP/1.x.
    #[error("invalid response: {0}")]
    Protocol(&'static str),
}

/// The request of a run, serialized once.
#[derive(Debug, Clone)]
pub struct H1Request {
    bytes: Vec<u8>,
    head: bool,
}

impl H1Request {
    /// Serializes `method uri` with a `Host` header (unless given), `headers` and `body`.
    pub fn new(
        method: &Method,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Self {
        let mut b = Vec::with_capacity(128 + body.len());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        b.extend_from_slice(method.as_str().as_bytes());
        b.push(b' ');
        b.extend_from_slice(path.as_bytes());
        b.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n == http::header::HOST) {
            // The authority without any user:password@ part.
            let host = uri
                .authority()
                .map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""));
            b.extend_from_slice(b"host: ");
            b.extend_from_slice(host.as_bytes());
            b.extend_from_slice(b"\r\n");
        }
        for (name, value) in headers {
            b.extend_from_slice(name.as_str().as_bytes());
            b.extend_from_slice(b": ");
            b.extend_from_slice(value.as_bytes());
            b.extend_from_slice(b"\r\n");
        }
        let has_length = headers
            .iter()
            .any(|(n, _)| n == http::header::CONTENT_LENGTH);
        let body_expected = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if !has_length && (!body.is_empty() || body_expected) {
            b.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(body);
        Self {
            bytes: b,
            head: *method == Method::HEAD,
        }
    }

    /// The bytes sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A complete response: its status and whether the connection must be closed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H1Response {
    /// The status code.
    pub status: u16,
    /// The server asked to close (or the body was delimited by the close).
    pub close: bool,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One keep-alive connection.
pub struct H1Conn {
    fd: AsyncFd<std::net::TcpStream>,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Responses completed on this connection.
    served: u64,
    /// The bytes of the last head parsed here (empty: none yet) and their parse.
    last_head: Vec<u8>,
    last_parsed: Option<Head>,
}

impl H1Conn {
    /// Connects to `addr` (TCP_NODELAY on). Must run inside a tokio runtime.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let std = stream.into_std()?;
        // SAFETY: the AsyncFd owns the stream, so the descriptor it registers stays open for as
        // long as the registration (both go when the AsyncFd is dropped).
        let fd = unsafe { AsyncFd::register(std) }?;
        Ok(Self {
            fd,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            served: 0,
            last_head: Vec::new(),
            last_parsed: None,
        })
    }

    /// True once a response has completed here: a failure with nothing received then most
    /// likely means the server closed the idle connection, and the request may be retried on a
    /// new one.
    pub fn reused(&self) -> bool {
        self.served > 0
    }

    /// Sends `req` and reads its whole response.
    pub async fn request(&mut self, req: &H1Request) -> Result<H1Response, H1Error> {
        self.write_all(req.as_bytes()).await?;
        let resp = self.read_response(req.head).await?;
        self.served += 1;
        Ok(resp)
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        // Write at once rather than ask tokio for readiness first: a request goes out on a
        // connection whose previous response was read, so the send buffer has room nearly
        // always, and the readiness check cost more than the rare EAGAIN.
        match (&mut self.fd.get_ref()).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| (&mut s.get_ref()).write(data)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Reads more bytes after `end`, making room first. Returns 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
        }
        loop {
            // The poll form keeps one waker slot per direction; `readable()` queues a waiter node
            // in a locked list and unlinks it again on every wake-up.
            let mut guard = std::future::poll_fn(|cx| self.fd.poll_read_ready(cx)).await?;
            let room = &mut self.buf[self.end..];
            let cap = room.len();
            match guard.try_io(|s| (&mut s.get_ref()).read(room)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < cap {
                        // A short read drained the socket; edge-triggered epoll reports the next
                        // arrival, so skip the read that would only say EAGAIN.
                        guard.clear_ready();
                    }
                    self.end += n;
                    return Ok(n);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// More bytes, or the right error at end of stream.
    async fn need_more(&mut self, got_any: bool) -> Result<(), H1Error> {
        if self.fill().await? == 0 {
            return Err(H1Error::Closed { early: !got_any });
        }
        Ok(())
    }

    async fn read_response(&mut self, head_request: bool) -> Result<H1Response, H1Error> {
        let mut got_any = self.start < self.end;
        loop {
            // The head.
            let parsed = loop {
                if self.start < self.end {
                    got_any = true;
                    if let Some(p) = self.head()? {
                        break p;
                    }
                }
                self.need_more(got_any).await?;
            };
            self.start += parsed.len;
            if (100..200).contains(&parsed.status) {
                if parsed.status == 101 {
                    return Err(H1Error::Protocol("unexpected protocol switch"));
                }
                // An interim response (100 Continue, 103 Early Hints): the real one follows.
                continue;
            }
            let framing = if head_request || parsed.status == 204 || parsed.status == 304 {
                Framing::None
            } else if parsed.chunked {
                Framing::Chunked
            } else if let Some(n) = parsed.length {
                Framing::Length(n)
            } else {
                Framing::UntilClose
            };
            let close = parsed.close || matches!(framing, Framing::UntilClose);
            match framing {
                Framing::None => {}
                Framing::Length(n) => self.skip(n).await?,
                Framing::Chunked => self.skip_chunked().await?,
                Framing::UntilClose => {
                    self.start = self.end;
                    while self.fill().await? > 0 {
                        self.start = self.end;
                    }
                }
            }
            return Ok(H1Response {
                status: parsed.status,
                close,
            });
        }
    }

    /// The head at `buf[start..end]`: the last one's parse when the bytes are the same, else
    /// parsed (and kept for the next response).
    fn head(&mut self) -> Result<Option<Head>, H1Error> {
        let data = &self.buf[self.start..self.end];
        if let Some(last) = self.last_parsed
            && data.starts_with(&self.last_head)
        {
            return Ok(Some(last));
        }
        let parsed = parse_head(data)?;
        if let Some(p) = parsed {
            self.last_head.clear();
            self.last_parsed = None;
            if p.len <= MAX_CACHED_HEAD {
                self.last_head.extend_from_slice(&data[..p.len]);
                self.last_parsed = Some(p);
            }
        }
        Ok(parsed)
    }

    /// Skips `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), H1Error> {
        loop {
            let avail = (self.end - self.start) as u64;
            let take = avail.min(n);
            // `take <= avail`, which is a usize.
            self.start += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.need_more(true).await?;
        }
    }

    /// Skips a chunked body, trailers included.
    async fn skip_chunked(&mut self) -> Result<(), H1Error> {
        loop {
            // Chunk size line.
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.need_more(true).await?,
                    Err(_) => return Err(H1Error::Protocol("invalid chunk size")),
                }
            };
            if size == 0 {
                break;
            }
            self.skip(size).await?;
            // The CRLF after the chunk's data.
            while self.end - self.start < 2 {
                self.need_more(true).await?;
            }
            if &self.buf[self.start..self.start + 2] != b"\r\n" {
                return Err(H1Error::Protocol("chunk not followed by CRLF"));
            }
            self.start += 2;
        }
        // Trailer lines, up to an empty line.
        loop {
            let line_end = self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n");
            match line_end {
                Some(0) => {
                    self.start += 2;
                    return Ok(());
                }
                Some(i) => self.start += i + 2,
                None => self.need_more(true).await?,
            }
        }
    }
}

impl H1Error {
    /// True for the failures of a request on a connection the server had already closed (while
    /// it was idle): nothing of a response arrived, or the write found the connection gone.
    pub fn stale(&self) -> bool {
        match self {
            H1Error::Closed { early } => *early,
            H1Error::Io(io) => matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            H1Error::Protocol(_) => false,
        }
    }

    /// The report's class of this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            H1Error::Io(io) => classify_error(io),
            H1Error::Closed { .. } => Outcome::Reset,
            H1Error::Protocol(_) => Outcome::Other,
        }
    }
}

/// The outcome of a response with `status`, given the accepted statuses (`None`: 200..=399).
pub fn status_outcome(status: u16, ok: Option<&[u16]>) -> Outcome {
    match StatusCode::from_u16(status) {
        Ok(s) => classify_status(s, ok),
        Err(_) => Outcome::Other,
    }
}

/// The open model's sender for plain HTTP/1.1 in `rattle load`: the run's request over a pool
/// of [`H1Conn`]s. The pacer's in-flight cap bounds the pool (a request takes an idle
/// connection or opens one, and gives it back when the response ended cleanly), so a backlog
/// after a stall drains at the speed of the closed model. A request dropped by its timeout
/// drops its connection with it, so a half-read connection is never reused.
#[derive(Clone)]
pub(crate) struct H1PoolSender {
    host: Arc<str>,
    port: u16,
    req: Arc<H1Request>,
    idle: Arc<Mutex<Vec<H1Conn>>>,
    ok: Option<Arc<[u16]>>,
    statuses: Option<Arc<StatusCounts>>,
}

impl H1PoolSender {
    /// For `cfg`, which must be valid and `http://`.
    pub(crate) fn new(
        cfg: &LoadConfig,
        statuses: Option<Arc<StatusCounts>>,
    ) -> Result<Self, LoadError> {
        let host = cfg.url.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            host: Arc::from(host),
            port: cfg.url.port_u16().unwrap_or(80),
            req: Arc::new(H1Request::new(
                &cfg.method,
                &cfg.url,
                &cfg.headers,
                &cfg.body,
            )),
            idle: Arc::new(Mutex::new(Vec::with_capacity(cfg.max_in_flight.min(1024)))),
            ok: cfg.ok_status.as_deref().map(Arc::from),
            statuses,
        })
    }

    /// The same pool's sender of another request of the mix: `cfg` (valid, `http://`). A
    /// request to the same host and port shares this one's idle connections.
    pub(crate) fn for_route(&self, cfg: &LoadConfig) -> Self {
        let host = cfg.url.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = cfg.url.port_u16().unwrap_or(80);
        let idle = if *self.host == *host && self.port == port {
            self.idle.clone()
        } else {
            Arc::new(Mutex::new(Vec::with_capacity(cfg.max_in_flight.min(1024))))
        };
        Self {
            host: Arc::from(host),
            port,
            req: Arc::new(H1Request::new(
                &cfg.method,
                &cfg.url,
                &cfg.headers,
                &cfg.body,
            )),
            idle,
            ok: cfg.ok_status.as_deref().map(Arc::from),
            statuses: self.statuses.clone(),
        }
    }

    fn take_idle(&self) -> Option<H1Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, conn: H1Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    /// One request to the end of its response; unbounded in time (the pacer adds the timeout).
    pub(crate) fn send(&self) -> impl Future<Output = Outcome> + Send + use<> {
        let this = self.clone();
        async move {
            loop {
                let (mut conn, reused) = match this.take_idle() {
                    Some(c) => (c, true),
                    None => match H1Conn::connect((&*this.host, this.port)).await {
                        Ok(c) => (c, false),
                        Err(e) => return classify_error(&e),
                    },
                };
                match conn.request(&this.req).await {
                    Ok(resp) => {
                        if let Some(s) = &this.statuses {
                            s.add(resp.status);
                        }
                        if !resp.close {
                            this.put_idle(conn);
                        }
                        return status_outcome(resp.status, this.ok.as_deref());
                    }
                    // Closed while idle in the pool: send again on a fresh connection.
                    Err(e) if reused && e.stale() => continue,
                    Err(e) => return e.outcome(),
                }
            }
        }
    }
}

/// What the head of a response says about framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    len: usize,
    status: u16,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// Parses a response head at the start of `data`; `None` when incomplete.
fn parse_head(data: &[u8]) -> Result<Option<Head>, H1Error> {
    // Uninitialized slots: httparse writes the ones it fills, so the 2 KiB array is not zeroed
    // for every response.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        data,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Protocol("too many headers"));
        }
        Err(_) => return Err(H1Error::Protocol("malformed response head")),
    };
    let status = resp.code.ok_or(H1Error::Protocol("no status"))?;
    let http10 = resp.version == Some(0);
    let mut head = Head {
        len,
        status,
        length: None,
        chunked: false,
        close: http10,
    };
    for h in resp.headers.iter() {
        // Dispatch on the name's length first: most headers (Date, Server, ETag...) are then
        // skipped without a case-insensitive compare.
        match h.name.len() {
            14 if h.name.eq_ignore_ascii_case("content-length") => {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(H1Error::Protocol("invalid content-length"))?;
                if head.length.is_some_and(|m| m != n) {
                    return Err(H1Error::Protocol("conflicting content-length"));
                }
                head.length = Some(n);
            }
            17 if h.name.eq_ignore_ascii_case("transfer-encoding") => {
                // Chunked must be the last coding; anything else leaves the body
                // close-delimited.
                let last = h.value.rsplit(|&c| c == b',').next().unwrap_or_default();
                head.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !head.chunked {
                    head.length = None;
                    head.close = true;
                }
            }
            10 if h.name.eq_ignore_ascii_case("connection") => {
                for token in h.value.split(|&c| c == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                        head.close = false;
                    }
                }
            }
            _ => {}
        }
    }
    if head.chunked {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        head.length = None;
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn request_bytes() {
        let uri: Uri = "http://u:p@example.com:8080/a?b=1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let h = vec![(
            HeaderName::from_static("x-k"),
            HeaderValue::from_static("v"),
        )];
        let r = H1Request::new(&Method::POST, &uri, &h, b"hi");
        assert_eq!(
            r.as_bytes(),
            b"POST /a?b=1 HTTP/1.1\r\nhost: example.com:8080\r\nx-k: v\r\ncontent-length: 2\r\n\r\nhi"
        );
        let r = H1Request::new(&Method::GET, &Uri::from_static("http://h"), &[], b"");
        assert_eq!(r.as_bytes(), b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }

    #[test]
    fn heads() {
        let h = |s: &str| parse_head(s.as_bytes());
        assert!(matches!(h("HTTP/1.1 200 OK\r\n"), Ok(None)));
        let p = h("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert!(matches!(
            p,
            Ok(Some(Head {
                status: 200,
                length: Some(5),
                chunked: false,
                close: false,
                ..
            }))
        ));
        let p =
            h("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n");
        assert!(matches!(
            p,
            Ok(Some(Head {
                length: None,
                chunked: true,
                ..
            }))
        ));
        let p = h("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(matches!(p, Ok(Some(Head { close: false, .. }))));
        let p = h("HTTP/1.1 503 x\r\nConnection: close\r\n\r\n");
        assert!(matches!(
            p,
            Ok(Some(Head {
                status: 503,
                close: true,
                ..
            }))
        ));
        assert!(h("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(h("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err());
        assert!(h("garbage\r\n\r\n").is_err());
    }

    /// A server that reads one request per scripted reply and writes the reply in pieces.
    async fn scripted(replies: Vec<Vec<&'static [u8]>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            for pieces in replies {
                if s.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                for p in pieces {
                    if s.write_all(p).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn framings_over_a_real_socket() {
        let addr = scripted(vec![
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\n\r\nhel",
                b"lo",
            ],
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                b"a;ext=1\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n",
            ],
            vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
            vec![b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
            vec![b"HTTP/1.1 200 OK\r\n\r\nuntil", b" the close"],
        ])
        .await;
        let req = H1Request::new(&Method::GET, &Uri::from_static("http://x/"), &[], b"");
        let mut c = H1Conn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        for _ in 0..5 {
            match c.request(&req).await {
                Ok(r) => got.push((r.status, r.close)),
                Err(e) => panic!("{e:?} after {got:?}"),
            }
        }
        assert_eq!(
            got,
            vec![
                (200, false),
                (201, false),
                (204, false),
                (404, false),
                (200, true)
            ]
        );
        assert!(c.reused());
    }

    #[tokio::test]
    async fn a_repeated_head_is_reused_and_a_different_one_parsed() {
        let a: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let addr = scripted(vec![
            vec![a],
            vec![a],
            // The same bytes up to the last header, then one more: not the cached head.
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"],
        ])
        .await;
        let req = H1Request::new(&Method::GET, &Uri::from_static("http://x/"), &[], b"");
        let mut c = H1Conn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        for _ in 0..3 {
            match c.request(&req).await {
                Ok(r) => got.push((r.status, r.close)),
                Err(e) => panic!("{e:?} after {got:?}"),
            }
        }
        assert_eq!(got, vec![(200, false), (200, false), (200, true)]);
        // Two bodies in one read after a cached head: each response still ends at its length.
        let addr = scripted(vec![
            vec![a],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 x\r\nContent-Length: 0\r\n\r\n"],
            vec![],
        ])
        .await;
        let mut c = H1Conn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        for _ in 0..3 {
            match c.request(&req).await {
                Ok(r) => got.push(r.status),
                Err(e) => panic!("{e:?} after {got:?}"),
            }
        }
        assert_eq!(got, vec![200, 200, 503]);
    }

    #[tokio::test]
    async fn cut_short_and_closed() {
        let addr = scripted(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel",
        ]])
        .await;
        let req = H1Request::new(&Method::GET, &Uri::from_static("http://x/"), &[], b"");
        let mut c = H1Conn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            c.request(&req).await,
            Err(H1Error::Closed { early: false })
        ));
        let addr = scripted(vec![]).await;
        let mut c = H1Conn::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        match c.request(&req).await {
            Err(H1Error::Closed { early: true }) | Err(H1Error::Io(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
