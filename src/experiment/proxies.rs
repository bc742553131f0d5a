//! `proxies:` of an experiment: fault proxies the run starts in setup and stops in teardown.
//! Load and probes point at a proxy's `listen` address; `net-*` faults name the proxy.
//!
//! Kept in its own file so that the proxy feature touches the experiment's structs in one
//! line (`Experiment::proxies`) and its checks in one call (from `validate`).

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;
use super::spec::Experiment;
use crate::fault::Locality;

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

/// Checks the proxies and the faults naming them: `(line, column, field, message)` each.
pub(super) fn check(e: &Experiment) -> Vec<(u64, u64, String, String)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in e.proxies.iter().enumerate() {
        let name = p.name.trim();
        if name.is_empty() || name.contains('/') {
            out.push((
                p.name.line,
                p.name.column,
                format!("proxies[{i}].name"),
                "must be non-empty and contain no `/`".to_string(),
            ));
        } else if !seen.insert(name.to_string()) {
            out.push((
                p.name.line,
                p.name.column,
                format!("proxies[{i}].name"),
                format!("duplicate proxy name {name:?}"),
            ));
        }
        if p.listen.parse::<SocketAddr>().is_err() {
            out.push((
                p.listen.line,
                p.listen.column,
                format!("proxies[{i}].listen"),
                format!("{:?} is not an IP:port address", *p.listen),
            ));
        }
        let up_ok = p
            .upstream
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
        if !up_ok {
            out.push((
                p.upstream.line,
                p.upstream.column,
                format!("proxies[{i}].upstream"),
                format!("{:?} is not a host:port address", *p.upstream),
            ));
        }
    }
    for (i, f) in e.faults.iter().enumerate() {
        if let Locality::Proxy { name: proxy, mode } = f.spec.fault().locality() {
            let msg = match e.proxies.iter().find(|p| p.name.as_str() == proxy) {
                None => format!("no proxy named {proxy:?} under `proxies:`"),
                Some(p) if p.mode != mode => format!(
                    "{} needs a proxy in {} mode; {proxy:?} is in {} mode",
                    f.spec.kind(),
                    mode.as_str(),
                    p.mode.as_str()
                ),
                Some(_) => continue,
            };
            out.push((
                f.spec.line,
                f.spec.column,
                format!("faults[{i}].{}.proxy", f.spec.kind()),
                msg,
            ));
        }
    }
    out
}
