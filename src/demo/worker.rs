//! The demo worker process: `rattle demo worker --port P --latency D`.
//!
//! It is deliberately tiny (one HTTP/1.1 keep-alive server, two kinds of answer) because it is
//! the thing experiments kill: what matters is that it is a real process, that it answers with
//! its pid (so tests and people can see which worker served a request), and that it never
//! outlives its supervisor. The last point is the kernel's job (parent-death signal), since a
//! supervisor killed by SIGKILL gets no chance to clean up.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::DemoError;

/// Environment variable through which the supervisor tells a worker its own pid, so the worker
/// can tell "my supervisor is alive" from "I was re-parented" even when the supervisor is pid 1
/// (a container) or a sub-reaper adopted the worker.
pub(super) const SUPERVISOR_PID_ENV: &str = "RATTLE_DEMO_SUPERVISOR_PID";

/// `rattle demo worker`: serve until killed.
///
/// `GET /health` answers 200 at once; any other request waits `latency`, then answers 200 with a
/// body naming this process's pid. Returns only on error (the port cannot be bound, or the
/// supervisor is already gone).
pub async fn run_worker(port: u16, latency: Duration) -> Result<(), DemoError> {
    tie_life_to_parent()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind { addr, source })?;
    let pid = std::process::id();
    let mut backoff = crate::proxy::accept::Backoff::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: pause rather than spin (#19); the
                // balancer sees refused or slow connections, a fair picture of such a worker.
                backoff.pause().await;
                continue;
            }
        };
        backoff.reset();
        // Small responses on keep-alive connections: Nagle would add delay for nothing.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, pid, latency));
            // A connection error only ends that connection.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Asks the kernel to SIGKILL this process when its parent dies, then checks the parent did not
/// die before that request took effect (the signal is not sent retroactively).
fn tie_life_to_parent() -> Result<(), DemoError> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|source| DemoError::ParentDeathSignal { source })?;
    let actual = nix::unistd::getppid().as_raw();
    let announced = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok());
    let orphaned = match announced {
        Some(expected) => actual != expected,
        // Started by hand, without a supervisor: only adoption by init is a sure sign.
        None => actual == 1,
    };
    if orphaned {
        return Err(DemoError::Orphaned {
            expected: announced.unwrap_or(1),
            actual,
        });
    }
    Ok(())
}

async fn answer(
    req: Request<Incoming>,
    pid: u32,
    latency: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/health" {
        // Health answers at once: it measures liveness, not the configured slowness.
        return Ok(text(StatusCode::OK, pid, Bytes::from_static(b"ok\n")));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = Bytes::from(format!("hello from rattle demo worker pid {pid}\n"));
    Ok(text(StatusCode::OK, pid, body))
}

fn text(status: StatusCode, pid: u32, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-rattle-worker-pid", http::HeaderValue::from(pid));
    resp
}
