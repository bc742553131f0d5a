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

/// A mix request's URL: absolute (as [`load_url`]), or a path starting with `/` on the
/// section's URL `base` (its scheme and authority, this path and query).
pub fn request_url(base: &str, url: &str) -> Result<http::Uri, String> {
    if !url.starts_with('/') {
        return load_url(url);
    }
    let base = load_url(base)?;
    let path: http::uri::PathAndQuery = url.parse().map_err(|e| {
        format!(
            "{:?} is not a path: {e}",
            crate::redact::redact_url_loose(url)
        )
    })?;
    let mut parts = base.into_parts();
    parts.path_and_query = Some(path);
    http::Uri::from_parts(parts)
        .map_err(|e| format!("{url:?} cannot be joined to the load URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_path_joins_the_section_url() {
        let u = request_url("http://127.0.0.1:8080/base?x=1", "/search?q=a").expect("joined");
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/search?q=a");
        let abs = request_url("http://127.0.0.1:8080/", "https://other.example/x").expect("abs");
        assert_eq!(abs.to_string(), "https://other.example/x");
        assert!(request_url("http://127.0.0.1:8080/", "search").is_err());
        assert!(request_url("http://127.0.0.1:8080/", "/a b").is_err());
    }
}
