//! The `http` steady-state probe: a GET at an interval whose status must be the expected one.
//! Owns its spec as written (`http: { url, expect_status, timeout }`), the URL's rules (http://
//! with a host: the probe client has no TLS yet), and the check; the interval loop is the
//! [`Probe`] trait's default.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Probe, ProbeEnv, error_chain};
use crate::experiment::{HumanDuration, Located};
use crate::fault::BoxFuture;

/// An HTTP probe: a GET whose status must be the expected one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// URL to GET (http://).
    pub url: Located<String>,
    /// Expected status code.
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// Timeout of one check.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_expect_status() -> u16 {
    200
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// The client the `http` probes share (see [`ProbeEnv`]).
pub(crate) type Client = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

/// A new client: plain HTTP, no Nagle delay.
pub(crate) fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// Parses a probe URL: http:// with a host (the probe client has no TLS yet).
pub fn probe_url(url: &str) -> Result<http::Uri, String> {
    crate::experiment::url::http_url(url, false)
}

impl Probe for HttpProbe {
    fn describe(&self, interval: Duration) -> String {
        // As the client will send it (`http://h:1` becomes `http://h:1/`).
        let url = probe_url(&self.url).map_or_else(|_| self.url.value.clone(), |u| u.to_string());
        format!(
            "GET {} expects {} every {}ms",
            crate::redact::redact_url(&url),
            self.expect_status,
            interval.as_millis()
        )
    }

    fn validate(&self) -> Result<(), String> {
        probe_url(&self.url).map_err(|m| format!("`url`: {m}"))?;
        Ok(())
    }

    fn check<'a>(&'a self, env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(check(self, env.http_client()))
    }
}

async fn check(probe: &HttpProbe, client: &Client) -> Result<(), String> {
    let uri = probe_url(&probe.url)?;
    let req = http::Request::get(uri)
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok::<u16, String>(status)
    };
    let timeout = probe.timeout.get();
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(format!("timed out after {}ms", timeout.as_millis())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status == probe.expect_status => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}, expected {}", probe.expect_status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(url: &str) -> HttpProbe {
        HttpProbe {
            url: Located::new(url.to_string()),
            expect_status: 200,
            timeout: HumanDuration::from_millis(500),
        }
    }

    #[test]
    fn urls_are_http_with_a_host() {
        assert!(probe_url("http://127.0.0.1:8080/health").is_ok());
        assert!(
            probe_url("https://x/")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(probe_url("ftp://x/").unwrap_err().contains("http://"));
        assert!(
            probe("not a url")
                .validate()
                .unwrap_err()
                .starts_with("`url`: ")
        );
    }

    #[test]
    fn the_plan_line_redacts_credentials() {
        let line = probe("http://u:p@127.0.0.1:1").describe(Duration::from_millis(250));
        assert_eq!(
            line,
            "GET http://<redacted>@127.0.0.1:1/ expects 200 every 250ms"
        );
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
