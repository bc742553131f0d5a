//! Pushes to a Prometheus Pushgateway: the exposition of [`super::metrics::render`] with `PUT`
//! (replacing the group's previous push) under `job="rattle"`, grouped by experiment and run
//! id. Grouping values are sent base64url-encoded (the Pushgateway's `label@base64` form), so
//! an experiment name with a `/` or any other character still makes one valid path segment.

use bytes::Bytes;

use super::http::{Client, join};

/// Where pushes go for one run.
#[derive(Debug, Clone)]
pub struct Pushgateway {
    url: http::Uri,
}

impl Pushgateway {
    /// The group `job=rattle, experiment=<experiment>, run_id=<run_id>` on the Pushgateway at
    /// `base`.
    pub fn new(base: &http::Uri, experiment: &str, run_id: &str) -> Result<Self, String> {
        let path = format!(
            "/metrics/job/rattle/experiment@base64/{}/run_id@base64/{}",
            b64url(experiment.as_bytes()),
            b64url(run_id.as_bytes())
        );
        Ok(Pushgateway {
            url: join(base, &path)?,
        })
    }

    /// The group's URL (what a test or a user deletes it with).
    pub fn url(&self) -> &http::Uri {
        &self.url
    }

    /// Pushes `exposition`, replacing what the group held.
    pub async fn push(&self, client: &Client, exposition: String) -> Result<(), String> {
        client
            .send(
                http::Method::PUT,
                &self.url,
                &[],
                super::metrics::CONTENT_TYPE,
                Bytes::from(exposition),
            )
            .await
            .map(|_| ())
    }
}

/// Base64url without padding (RFC 4648 §5), as the Pushgateway reads `@base64` values. An
/// empty value is `=`, its spelling for the empty string.
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if bytes.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(b64url(b""), "=");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(b"fooba"), "Zm9vYmE");
        assert_eq!(b64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
