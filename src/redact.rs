//! What is never written to reports or logs: secret header values and the credentials of a
//! URL. On the ground floor so that every writer (the plan, the probes, the reports) applies the
//! same rules without importing one another.

/// Header names whose values are never written to reports or logs.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .contains(&n.as_str())
        || ["token", "secret", "key", "password", "auth"]
            .iter()
            .any(|s| n.contains(s))
}

/// A URL with any `user:password@` replaced by `<redacted>@`, for reports and logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("http://u:p@h:1/x?a=b@c"),
            "http://<redacted>@h:1/x?a=b@c"
        );
        assert_eq!(redact_url("http://h/x@y"), "http://h/x@y");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn secret_headers() {
        assert!(is_secret_header("Authorization"));
        assert!(is_secret_header("X-Api-Key"));
        assert!(is_secret_header("x-auth-token"));
        assert!(!is_secret_header("Accept"));
    }
}
