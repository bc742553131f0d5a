//! The `tcp` steady-state probe: a TCP connection to an address must open within a timeout
//! (a database, a queue, anything that is healthy when it accepts). Owns its spec as written,
//! the address's rules, and the check: the name is resolved at each check (an address that
//! moves is followed), every address it resolves to is tried in turn, and the connection is
//! closed at once.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Probe, ProbeEnv};
use crate::experiment::HumanDuration;
use crate::fault::BoxFuture;

/// A tcp probe: a connection must open within the timeout.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// `host:port` (`127.0.0.1:5432`, `db.internal:5432`, `[::1]:6379`).
    pub address: String,
    /// Timeout of one check (name resolution and connection).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// Splits `host:port`, refusing a missing host, a port that is not 1 to 65535, a URL.
fn split_address(address: &str) -> Result<(&str, u16), String> {
    if address.contains("://") {
        return Err(format!(
            "{address:?} is a URL: give host:port (an http probe checks URLs)"
        ));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?}: expected host:port"))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h
            .strip_suffix(']')
            .ok_or_else(|| format!("{address:?}: an IPv6 address is written [addr]:port"))?,
        None if host.contains(':') => {
            return Err(format!(
                "{address:?}: an IPv6 address is written [addr]:port"
            ));
        }
        None => host,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{address:?}: no host before the port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("{address:?}: the port must be 1 to 65535")),
    }
}

impl Probe for TcpProbe {
    fn describe(&self, interval: Duration) -> String {
        format!(
            "connect to {} within {}ms every {}ms",
            self.address,
            self.timeout.get().as_millis(),
            interval.as_millis()
        )
    }

    fn validate(&self) -> Result<(), String> {
        split_address(&self.address).map_err(|m| format!("`address`: {m}"))?;
        if self.timeout.get().is_zero() {
            return Err("`timeout`: must be above zero".into());
        }
        Ok(())
    }

    fn check<'a>(&'a self, _env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(check(self))
    }
}

async fn check(probe: &TcpProbe) -> Result<(), String> {
    let (host, port) = split_address(&probe.address)?;
    let timeout = probe.timeout.get();
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let mut last = format!("{host} resolves to no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_stream) => return Ok(()),
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no connection to {} within {}ms",
            probe.address,
            timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(split_address("127.0.0.1:80"), Ok(("127.0.0.1", 80)));
        assert_eq!(split_address("[::1]:6379"), Ok(("::1", 6379)));
        assert_eq!(split_address("db.internal:5432"), Ok(("db.internal", 5432)));
        assert!(
            split_address("127.0.0.1")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(split_address(":80").unwrap_err().contains("no host"));
        assert!(split_address("h:0").unwrap_err().contains("1 to 65535"));
        assert!(split_address("h:99999").unwrap_err().contains("1 to 65535"));
        assert!(split_address("::1:80").unwrap_err().contains("[addr]:port"));
        assert!(split_address("http://h:80").unwrap_err().contains("URL"));
    }

    #[tokio::test]
    async fn an_open_port_passes_and_a_closed_one_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let p = |a: String| TcpProbe {
            address: a,
            timeout: HumanDuration::from_millis(2000),
        };
        let env = ProbeEnv::default();
        assert_eq!(p(open.to_string()).check(&env).await, Ok(()));
        drop(listener);
        let err = p(open.to_string()).check(&env).await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}
