//! `proxies:` of an experiment: fault proxies the run starts in setup and stops in teardown.
//! Load and probes point at a proxy's `listen` address; `net-*` and `http-*` faults name the
//! proxy.
//!
//! Kept in its own file so that the proxy feature touches the experiment's structs in one
//! line (`Experiment::proxies`) and its checks in one call (from `validate`). Which faults use
//! a proxy, and in which mode, each fault kind says itself ([`Locality::Proxy`]).

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostic::Diagnostic;
use super::located::Located;
use crate::fault::{FaultSpec, Locality};

/// One fault proxy the run starts.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Unique name; faults refer to the proxy by it.
    pub name: Located<String>,
    /// Address to listen on, `IP:port` (e.g. `127.0.0.1:18080`).
    pub listen: Located<String>,
    /// Where connections go, `host:port`.
    pub upstream: Located<String>,
    /// `tcp` (default): bytes through `net-*` faults. `http`: HTTP/1.1 requests through
    /// `http-abort` and `http-delay` faults, keep-alive kept on both sides.
    #[serde(default)]
    pub mode: crate::proxy::Mode,
}

/// Checks the proxies, and the faults (in the order of `faults:`) against the proxies they
/// name.
pub(super) fn check<'a>(
    proxies: &[ProxySpec],
    faults: impl IntoIterator<Item = &'a Located<FaultSpec>>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut at = |line: u64, column: u64, field: String, message: String| {
        out.push(Diagnostic {
            line,
            column,
            field,
            message,
            snippet: None,
        })
    };
    let mut seen = std::collections::HashSet::new();
    for (i, p) in proxies.iter().enumerate() {
        let name = p.name.trim();
        if name.is_empty() || name.contains('/') {
            at(
                p.name.line,
                p.name.column,
                format!("proxies[{i}].name"),
                "must be non-empty and contain no `/`".to_string(),
            );
        } else if !seen.insert(name.to_string()) {
            at(
                p.name.line,
                p.name.column,
                format!("proxies[{i}].name"),
                format!("duplicate proxy name {name:?}"),
            );
        }
        if p.listen.parse::<SocketAddr>().is_err() {
            at(
                p.listen.line,
                p.listen.column,
                format!("proxies[{i}].listen"),
                format!("{:?} is not an IP:port address", *p.listen),
            );
        }
        let up_ok = p
            .upstream
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
        if !up_ok {
            at(
                p.upstream.line,
                p.upstream.column,
                format!("proxies[{i}].upstream"),
                format!("{:?} is not a host:port address", *p.upstream),
            );
        }
    }
    for (i, spec) in faults.into_iter().enumerate() {
        if let Locality::Proxy { name: proxy, mode } = spec.fault().locality() {
            let msg = match proxies.iter().find(|p| p.name.as_str() == proxy) {
                None => format!("no proxy named {proxy:?} under `proxies:`"),
                Some(p) if p.mode != mode => format!(
                    "{} needs a proxy in {} mode; {proxy:?} is in {} mode",
                    spec.kind(),
                    mode.as_str(),
                    p.mode.as_str()
                ),
                Some(_) => continue,
            };
            at(
                spec.line,
                spec.column,
                format!("faults[{i}].{}.proxy", spec.kind()),
                msg,
            );
        }
    }
    out
}
