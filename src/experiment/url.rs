//! URLs as an experiment gives them (load, probes): parsed into `http::Uri` and checked here,
//! once, so that validation (which reports them) and the plan (which uses them) agree.

/// Parses a load URL: http:// or https:// (TLS through rustls), with a host.
pub fn load_url(url: &str) -> Result<http::Uri, String> {
    http_url(url, true)
}

/// Parses an http:// URL with a host; https:// too when `https` (where the client has TLS).
pub fn http_url(url: &str, https: bool) -> Result<http::Uri, String> {
    // Messages show the URL without its credentials (they reach stderr and CI logs).
    let uri: Result<http::Uri, _> = url.parse();
    let url = crate::redact::redact_url_loose(url);
    let uri: http::Uri = uri.map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if https => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported here yet; use http://"
            ));
        }
        _ => {
            return Err(format!(
                "{url:?}: expected an {} URL",
                if https {
                    "http:// or https://"
                } else {
                    "http://"
                }
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: the URL has no host"));
    }
    Ok(uri)
}
