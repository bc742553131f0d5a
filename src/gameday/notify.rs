//! The game-day webhook: one JSON POST (with a Slack-compatible `text` field), retried with
//! exponential backoff on connection errors, timeouts, 429 and 5xx. Delivery never changes the
//! game day's outcome: what happened is returned and logged, nothing more. The URL may be a
//! secret (Slack's are): logs show only its scheme and host.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::spec::WebhookSpec;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Checks a webhook URL: http or https, with a host.
pub fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "has credentials (user:password@) in it: put them in `headers` (e.g. Authorization) \
             instead"
                .into(),
        );
    }
    Ok(uri)
}

/// `https://hooks.example.com/…`: what logs may show of a URL.
pub fn redacted(uri: &http::Uri) -> String {
    format!(
        "{}://{}/…",
        uri.scheme_str().unwrap_or("http"),
        uri.authority()
            .map(|a| a.as_str())
            .unwrap_or("?")
            .rsplit('@')
            .next()
            .unwrap_or("?")
    )
}

/// What became of a notification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Did an attempt get a 2xx answer?
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status received, if any.
    pub status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
}

impl Delivery {
    /// Nothing was sent, because of `error` (logged).
    fn not_sent(error: String, log: &(dyn Fn(&str) + Send + Sync)) -> Self {
        log(&format!("notify: {error}"));
        Delivery {
            delivered: false,
            attempts: 0,
            status: None,
            error: Some(error),
        }
    }
}

/// Sends `body` to the webhook, retrying as the spec says. `stop`: when cancelled, no further
/// retry is made (a game day being shut down still gets one attempt).
pub async fn send(
    spec: &WebhookSpec,
    body: &serde_json::Value,
    log: &(dyn Fn(&str) + Send + Sync),
    stop: &CancellationToken,
) -> Delivery {
    let url = match (&spec.url, &spec.url_env) {
        (Some(u), _) => u.value.clone(),
        (None, Some(var)) => match std::env::var(var.as_str()) {
            Ok(u) if !u.trim().is_empty() => u,
            _ => {
                return Delivery::not_sent(
                    format!(
                        "environment variable {} (notify.webhook.url_env) is not set: no \
                         notification sent",
                        var.as_str()
                    ),
                    log,
                );
            }
        },
        (None, None) => String::new(),
    };
    let uri = match check_url(url.trim()) {
        Ok(u) => u,
        Err(e) => return Delivery::not_sent(format!("webhook URL {e}: no notification sent"), log),
    };
    let shown = redacted(&uri);
    let tls = match crate::load::tls::client_config(&crate::load::ClientOptions::default()) {
        Ok(t) => t,
        Err(e) => return Delivery::not_sent(format!("TLS: {e}: no notification sent"), log),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(spec.timeout.get()));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    // The run's secret values (issue #15) never leave in a notification.
    let payload = serde_json::to_string(body).unwrap_or_default();
    let payload = Bytes::from(crate::redact::redact_secrets(&payload).into_owned());

    let attempts_max = 1 + *spec.retries;
    let mut wait = spec.backoff.get();
    let mut last = Delivery {
        delivered: false,
        attempts: 0,
        status: None,
        error: None,
    };
    for attempt in 1..=attempts_max {
        last.attempts = attempt;
        let mut req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("rattle/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = match req.body(Full::new(payload.clone())) {
            Ok(r) => r,
            Err(e) => {
                last.error = Some(format!("cannot build the request: {e}"));
                break;
            }
        };
        let outcome = tokio::time::timeout(spec.timeout.get(), async {
            let resp = client.request(req).await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (and drop) the body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        })
        .await;
        let (retryable, retry_after) = match outcome {
            Ok(Ok((status, retry_after))) => {
                last.status = Some(status.as_u16());
                if status.is_success() {
                    last.delivered = true;
                    last.error = None;
                    log(&format!(
                        "notify: webhook {shown} answered {} (attempt {attempt})",
                        status.as_u16()
                    ));
                    return last;
                }
                last.error = Some(format!("answered {status}"));
                (
                    status == http::StatusCode::TOO_MANY_REQUESTS
                        || status == http::StatusCode::REQUEST_TIMEOUT
                        || status.is_server_error(),
                    retry_after,
                )
            }
            Ok(Err(e)) => {
                last.status = None;
                last.error = Some(crate::probe::error_chain(&e));
                (true, None)
            }
            Err(_) => {
                last.status = None;
                last.error = Some(format!(
                    "no answer within {}",
                    crate::experiment::HumanDuration(spec.timeout.get())
                ));
                (true, None)
            }
        };
        let err = last.error.clone().unwrap_or_default();
        if !retryable {
            log(&format!(
                "notify: webhook {shown} {err} (attempt {attempt}); not retried: the receiver refuses this request"
            ));
            return last;
        }
        if attempt == attempts_max || stop.is_cancelled() {
            log(&format!(
                "notify: webhook {shown} {err} (attempt {attempt} of {attempts_max}); giving up"
            ));
            return last;
        }
        let pause = retry_after.unwrap_or(wait).min(MAX_BACKOFF);
        log(&format!(
            "notify: webhook {shown} {err} (attempt {attempt} of {attempts_max}); retrying in {}",
            crate::experiment::HumanDuration(pause)
        ));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => {}
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("hooks.slack.com").is_err());
        assert!(check_url("https://user:pw@hooks.example.com/x").is_err());
        let u = check_url("https://hooks.example.com:8443/secret/path?token=1").unwrap();
        assert_eq!(redacted(&u), "https://hooks.example.com:8443/…");
    }
}
