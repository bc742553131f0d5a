//! Network faults inside pods, on the ephemeral-container path of `pod-network-delay`:
//! `pod-network-partition` (iptables DROP to/from peers chosen by labels, CIDR or port, in
//! one or both directions), `pod-network-bandwidth` (a `tbf` qdisc: rate, burst, limit),
//! `pod-network-corrupt` (netem `corrupt`) and `pod-dns-failure` (DNS queries, all of them or
//! those for named hosts, dropped or refused by iptables).
//!
//! An ephemeral container shares the pod's network namespace, and iptables rules and qdiscs
//! outlive the process that added them, so each fault is one short-lived container with
//! NET_ADMIN whose command is built here as argument vectors, and its revert is another
//! that deletes exactly what was added (`iptables -D` with the same rule, `tc qdisc del`). A
//! kind that needs several commands runs them in one container through [`batch`]: a constant
//! `sh` script that executes each vector passed to it as arguments, so no value is ever parsed
//! as shell text, and a pod collects one container per inject and one per revert, not one per
//! rule. A revert accepts the exit codes that mean "already gone" (`iptables -D` 1, `tc qdisc
//! del` 2), which makes it idempotent.
//!
//! Peers chosen by labels are resolved to their pod IPs when the fault resolves, and become
//! targets of kind `peer` next to the faulted pods: the dry run names them, and the revert
//! token, computed before the injection, deletes the very rules that were added.
//!
//! `pod-dns-failure` matches a name in the query's wire format (`|07|example|03|com|00|`)
//! with iptables' `string` match: the name and its subdomains fail; a short name the resolver
//! expands with the pod's search domains does not match (write the fully qualified name). It
//! acts on queries the pod sends to port 53 (the cluster DNS), both UDP and TCP, IPv4 and IPv6;
//! `refuse` rejects the query on
//! its way out, so the lookup fails at once (the resolver's send fails, or an ICMP port
//! unreachable or TCP reset answers it); `drop` lets the query leave and drops its answer (the
//! answer repeats the question, so the same match finds it), so the lookup times out as when
//! the DNS server is unreachable. Dropping the query itself would not: the kernel fails the
//! send of a packet dropped in OUTPUT at once (EPERM). Wrong answers (`answers`) cannot come
//! from iptables; they are lines added to the pod's `/etc/hosts` (one file, bind-mounted into
//! every container of the pod), reached through `/proc/1/root` of the target container's
//! process namespace (`container`, SYS_PTRACE to read another user's process root), and
//! removed by their marker on revert, rewriting the file in place. The C libraries (glibc,
//! musl), Go and the JVM read /etc/hosts before DNS; a client with its own DNS stack, or a
//! cache filled before the fault, does not see them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ephemeral::{Ephemeral, Ran};
use super::pod_stress::parse_size;
use super::{Selector, kube_err, split_id, target};
use crate::experiment::{Mode, Percent};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, KubeScope, Locality, ResolveCtx, Result,
    RevertToken, Target,
};

/// The default image: it ships `tc`, `iptables`, `ip6tables` and `sh`.
pub const DEFAULT_IMAGE: &str = super::netem::DEFAULT_IMAGE;

/// The comment every rule of rattle carries, so that `iptables -S` shows whose it is.
const COMMENT: &str = "rattle";

/// Most addresses one partition names (peer pod IPs, `cidrs`): each is a rule per direction.
pub const MAX_PEERS: usize = 256;

/// Separates the argument vectors given to [`BATCH_SCRIPT`].
pub const SEP: &str = ";";

/// Runs the argument vectors that follow `$0`, separated by `;`, one after the other. `$1` is
/// the list of exit codes accepted besides 0 (e.g. `"1"`). Only references to positional
/// parameters (`"${3}"`) are ever evaluated, never their values.
pub const BATCH_SCRIPT: &str = r#"ok=" 0 $1 "; shift
while [ $# -gt 0 ]; do
  n=0; refs=""
  for a; do [ "$a" = ";" ] && break; n=$((n+1)); refs="$refs \"\${$n}\""; done
  if [ "$n" -gt 0 ]; then
    eval "$refs"; rc=$?
    case "$ok" in *" $rc "*) ;; *) eval "echo $refs" >&2; echo "exited $rc" >&2; exit "$rc";; esac
  fi
  shift "$n"; [ $# -gt 0 ] && shift
done
exit 0"#;

/// The container command that runs `cmds` in order: the vector itself when there is one (the
/// caller then accepts the codes of `ok` from the container), else [`BATCH_SCRIPT`] with every
/// vector as arguments, which accepts `ok` itself and exits 0 or with the failing code.
pub fn batch(cmds: &[Vec<String>], ok: &[i32]) -> Vec<String> {
    if let [one] = cmds {
        return one.clone();
    }
    let mut a = vec![
        "sh".to_string(),
        "-c".into(),
        BATCH_SCRIPT.into(),
        "rattle-batch".into(),
        ok.iter().map(i32::to_string).collect::<Vec<_>>().join(" "),
    ];
    for (i, c) in cmds.iter().enumerate() {
        if i > 0 {
            a.push(SEP.into());
        }
        a.extend(c.iter().cloned());
    }
    a
}

/// What one network fault does in each pod: commands to inject, commands to revert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    /// Run in order to inject.
    pub inject: Vec<Vec<String>>,
    /// Run in order to revert.
    pub revert: Vec<Vec<String>>,
    /// Exit codes of a revert command that mean "already gone".
    pub revert_ok: Vec<i32>,
    /// The container whose process namespace the commands join (`targetContainerName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_container: Option<String>,
    /// Capabilities needed beside NET_ADMIN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_caps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    kind: String,
    pods: Vec<(String, String)>,
    image: String,
    commands: Commands,
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

fn check_device(dev: &str) -> std::result::Result<(), String> {
    if dev.is_empty()
        || dev.len() > 15
        || !dev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(format!("`device`: {dev:?} is not a device name"));
    }
    Ok(())
}

fn check_image(image: &Option<String>) -> std::result::Result<(), String> {
    if let Some(i) = image
        && (i.trim().is_empty() || i.chars().any(char::is_whitespace))
    {
        return Err(format!("`image`: {i:?} is not an image reference"));
    }
    Ok(())
}

/// The part every network kind shares: pods chosen, then one container per pod.
async fn resolve_pods(
    sel: Selector<'_>,
    ctx: &mut ResolveCtx<'_>,
    describe: &str,
    check: fn(&Pod) -> std::result::Result<(), String>,
) -> Result<Vec<Target>> {
    let client = ctx.env.kube().await?;
    let chosen = sel.choose::<Pod>(client, "pods", ctx.rng).await?;
    chosen
        .iter()
        .map(|(ns, name, p)| {
            check(p).map_err(|e| FaultError::InvalidSelection(format!("pod {ns}/{name}: {e}")))?;
            Ok(target("pod", ns, name, describe.to_string()))
        })
        .collect()
}

/// Any pod will do.
fn any_pod(_: &Pod) -> std::result::Result<(), String> {
    Ok(())
}

/// `answers` reach /etc/hosts through PID 1 of the target container's process namespace,
/// which in a pod sharing one namespace is the pause container, without the pod's file.
pub fn hosts_reachable(p: &Pod) -> std::result::Result<(), String> {
    if p.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(true) {
        return Err(
            "it shares one process namespace (shareProcessNamespace), where PID 1 is \
                    the pause container: `answers` cannot reach its /etc/hosts"
                .into(),
        );
    }
    Ok(())
}

fn pods_of(targets: &[Target]) -> Result<Vec<(String, String)>> {
    targets
        .iter()
        .filter(|t| t.kind == "pod")
        .map(|t| split_id(t).map(|(n, p)| (n.to_string(), p.to_string())))
        .collect()
}

async fn token(kind: &str, image: &str, targets: &[Target], c: Commands) -> Result<RevertToken> {
    RevertToken::new(
        kind,
        &Token {
            kind: kind.to_string(),
            pods: pods_of(targets)?,
            image: image.to_string(),
            commands: c,
        },
    )
}

#[allow(clippy::too_many_arguments)]
async fn run_in_pods(
    env: &FaultEnv,
    pods: &[(String, String)],
    image: &str,
    command: &[String],
    ok: &[i32],
    prefix: &str,
    fail_if_gone: bool,
    c: &Commands,
) -> Result<()> {
    let client = env.kube().await?;
    let mut caps: Vec<&str> = vec!["NET_ADMIN"];
    caps.extend(c.extra_caps.iter().map(String::as_str));
    for (ns, pod) in pods {
        let e = Ephemeral {
            prefix,
            image,
            command,
            caps: &caps,
            target_container: c.target_container.as_deref(),
            until_exit: true,
            ok_codes: ok,
        };
        if e.run(client, ns, pod).await? == Ran::PodGone && fail_if_gone {
            return Err(FaultError::NoTarget(format!("pod {ns}/{pod} is gone")));
        }
    }
    Ok(())
}

async fn inject_commands(
    env: &FaultEnv,
    targets: &[Target],
    image: &str,
    c: &Commands,
) -> Result<()> {
    let pods = pods_of(targets)?;
    run_in_pods(
        env,
        &pods,
        image,
        &batch(&c.inject, &[]),
        &[],
        "rattle-net",
        true,
        c,
    )
    .await
}

/// Reverts any network kind of this file: the token carries the exact revert commands.
/// Idempotent; a pod gone since is skipped.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    let c = &t.commands;
    let ok = &c.revert_ok;
    let cmd = batch(&c.revert, ok);
    // A single command runs as itself: its "already gone" code arrives as the container's.
    let container_ok: &[i32] = if c.revert.len() == 1 { ok } else { &[] };
    run_in_pods(
        env,
        &t.pods,
        &t.image,
        &cmd,
        container_ok,
        "rattle-unnet",
        false,
        c,
    )
    .await
}

/// Implements [`Fault`] for a kind whose commands come from `commands(&self, &targets)`.
macro_rules! net_fault {
    ($ty:ty, $kind:literal) => {
        impl Fault for $ty {
            fn resolve<'a>(
                &'a self,
                mut ctx: ResolveCtx<'a>,
            ) -> BoxFuture<'a, Result<Vec<Target>>> {
                Box::pin(async move {
                    self.validate().map_err(FaultError::InvalidSelection)?;
                    self.resolve_targets(&mut ctx).await
                })
            }

            fn revert_token<'a>(
                &'a self,
                _env: &'a FaultEnv,
                targets: &'a [Target],
            ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
                Box::pin(async move {
                    let c = self.commands(targets)?;
                    Ok(Some(token($kind, &self.image(), targets, c).await?))
                })
            }

            fn inject<'a>(
                &'a self,
                env: &'a FaultEnv,
                targets: &'a [Target],
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    let c = self.commands(targets)?;
                    inject_commands(env, targets, &self.image(), &c).await
                })
            }

            fn needs_duration(&self) -> bool {
                true
            }

            fn locality(&self) -> Locality<'_> {
                Locality::Cluster
            }

            fn kube_access(&self) -> Vec<KubeAccess> {
                self.access()
            }

            fn validate(&self) -> std::result::Result<(), String> {
                self.check()?;
                check_image(&self.image)?;
                self.selector().validate()
            }
        }
    };
}

fn pod_access(sel: &Selector<'_>) -> Vec<KubeAccess> {
    super::access(
        sel,
        &[
            ("", "pods", &["get", "list"]),
            ("", "pods/ephemeralcontainers", &["patch"]),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// pod-network-partition

/// Which packets a partition drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets the pod sends to the peers.
    Out,
    /// Packets the pod receives from the peers.
    In,
    /// Both.
    #[default]
    Both,
}

/// A transport protocol for port rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Peer pods, chosen by labels; their pod IPs are read when the fault fires.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    /// The peers' namespace (default: each faulted pod's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A label selector, e.g. `app=db`.
    pub labels: String,
}

k8s_spec! {
    /// `pod-network-partition`: the selected pods lose their traffic to and/or from the peers
    /// (pods chosen by labels, CIDRs, ports) for the entry's `duration`, by iptables DROP
    /// rules in the pods' network namespace.
    PartitionSpec {
        /// `out` (what the pod sends), `in` (what it receives) or `both` (default).
        #[serde(default)]
        pub direction: Direction,
        /// Peer pods by labels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peers: Option<Peers>,
        /// Peer addresses or networks, e.g. `10.96.0.0/12`, `2001:db8::/64`, `10.0.0.7`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub cidrs: Vec<String>,
        /// The peers' ports (at most 15): `out` drops packets to them, `in` packets from them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ports: Vec<u16>,
        /// Protocol of `ports`: `tcp` (default) or `udp`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<Protocol>,
        /// Image of the ephemeral container; must contain `iptables`, `ip6tables` and `sh`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

/// A normalised CIDR (`10.0.0.7` → `10.0.0.7/32`) and whether it is IPv6, or why not.
pub fn parse_cidr(s: &str) -> std::result::Result<(String, bool), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
    let max = if ip.is_ipv6() { 128 } else { 32 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        None => max,
    };
    Ok((format!("{ip}/{len}"), ip.is_ipv6()))
}

impl PartitionSpec {
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.peers.is_none() && self.cidrs.is_empty() && self.ports.is_empty() {
            return Err("give `peers`, `cidrs` or `ports`: whom to cut off".into());
        }
        if self.cidrs.len() > MAX_PEERS {
            return Err(format!("`cidrs`: at most {MAX_PEERS}"));
        }
        for c in &self.cidrs {
            parse_cidr(c).map_err(|e| format!("`cidrs`: {e}"))?;
        }
        if self.ports.len() > 15 {
            return Err("`ports`: at most 15 (one iptables multiport rule)".into());
        }
        if self.ports.contains(&0) {
            return Err("`ports`: 0 is not a port".into());
        }
        if self.protocol.is_some() && self.ports.is_empty() {
            return Err("`protocol` applies to `ports`; give `ports` too".into());
        }
        if let Some(p) = &self.peers {
            if p.labels.trim().is_empty() {
                return Err("`peers.labels`: empty".into());
            }
            if let Some(ns) = &p.namespace
                && !super::is_dns_label(ns)
            {
                return Err(format!("`peers.namespace`: {ns:?} is not a namespace name"));
            }
        }
        Ok(())
    }

    fn access(&self) -> Vec<KubeAccess> {
        let mut a = pod_access(&self.selector());
        if let Some(p) = &self.peers {
            let scope = match &p.namespace {
                Some(ns) => KubeScope::Namespaces(vec![ns.clone()]),
                None => KubeScope::of(self.selector().named_namespaces()),
            };
            a.push(KubeAccess {
                scope,
                api_group: "",
                resource: "pods",
                verbs: &["list"],
            });
        }
        a
    }

    async fn resolve_targets(&self, ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        let mut out = resolve_pods(self.selector(), ctx, "partitioned", any_pod).await?;
        let Some(peers) = &self.peers else {
            return Ok(out);
        };
        let client = ctx.env.kube().await?;
        let mut namespaces: Vec<String> = match &peers.namespace {
            Some(ns) => vec![ns.clone()],
            None => out
                .iter()
                .filter_map(|t| split_id(t).ok().map(|(ns, _)| ns.to_string()))
                .collect(),
        };
        namespaces.sort();
        namespaces.dedup();
        let mut ips: Vec<(IpAddr, String)> = Vec::new();
        for ns in &namespaces {
            let list = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default().labels(&peers.labels))
                .await
                .map_err(|e| kube_err(&format!("listing peer pods in {ns}"), e))?;
            for p in list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let st = p.status.as_ref();
                let mut addrs: Vec<String> = st
                    .and_then(|s| s.pod_ips.as_ref())
                    .map(|l| l.iter().map(|i| i.ip.clone()).collect())
                    .unwrap_or_default();
                if addrs.is_empty()
                    && let Some(ip) = st.and_then(|s| s.pod_ip.clone())
                {
                    addrs.push(ip);
                }
                for a in addrs {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        ips.push((ip, format!("peer pod {ns}/{name}")));
                    }
                }
            }
        }
        ips.sort();
        ips.dedup_by(|a, b| a.0 == b.0);
        if ips.len() > MAX_PEERS {
            return Err(FaultError::InvalidSelection(format!(
                "`peers`: {} matches {} pod IPs; at most {MAX_PEERS} (narrow the labels, or \
                 give their network in `cidrs`)",
                peers.labels,
                ips.len()
            )));
        }
        if ips.is_empty() && self.cidrs.is_empty() {
            return Err(FaultError::NoTarget(format!(
                "no peer pod with labels {} has an IP in {}",
                peers.labels,
                namespaces.join(",")
            )));
        }
        out.extend(ips.into_iter().map(|(ip, what)| Target {
            kind: "peer".into(),
            id: ip.to_string(),
            description: format!("{what} (not faulted: cut off from the pods)"),
        }));
        Ok(out)
    }

    /// The iptables vectors for peers `addrs` (normalised CIDRs): inject (`-I`) and revert
    /// (`-D`) per family and direction.
    pub fn rules(&self, addrs: &[String]) -> std::result::Result<Commands, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for a in addrs {
            let (c, six) = parse_cidr(a)?;
            if six { v6.push(c) } else { v4.push(c) }
        }
        let families: Vec<(&str, Vec<String>)> = if addrs.is_empty() {
            // Ports only: every peer, both families.
            vec![("iptables", vec![]), ("ip6tables", vec![])]
        } else {
            [("iptables", v4), ("ip6tables", v6)]
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .collect()
        };
        let dirs: &[(&str, &str, &str)] = match self.direction {
            Direction::Out => &[("OUTPUT", "-d", "--dports")],
            Direction::In => &[("INPUT", "-s", "--sports")],
            Direction::Both => &[("OUTPUT", "-d", "--dports"), ("INPUT", "-s", "--sports")],
        };
        let mut inject = Vec::new();
        let mut revert = Vec::new();
        for (bin, list) in &families {
            for (chain, addr_flag, port_flag) in dirs {
                let mut rule = words(&[chain]);
                if !list.is_empty() {
                    rule.push(addr_flag.to_string());
                    rule.push(list.join(","));
                }
                if !self.ports.is_empty() {
                    let proto = self.protocol.unwrap_or_default().as_str();
                    rule.extend(words(&["-p", proto, "-m", "multiport", port_flag]));
                    rule.push(
                        self.ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                rule.extend(words(&[
                    "-m",
                    "comment",
                    "--comment",
                    COMMENT,
                    "-j",
                    "DROP",
                ]));
                for (op, out) in [("-I", &mut inject), ("-D", &mut revert)] {
                    let mut c = words(&[bin, "-w", "5", op]);
                    c.extend(rule.iter().cloned());
                    out.push(c);
                }
            }
        }
        Ok(Commands {
            inject,
            revert,
            revert_ok: vec![1],
            target_container: None,
            extra_caps: Vec::new(),
        })
    }

    fn commands(&self, targets: &[Target]) -> Result<Commands> {
        let mut addrs: Vec<String> = self.cidrs.clone();
        addrs.extend(
            targets
                .iter()
                .filter(|t| t.kind == "peer")
                .map(|t| t.id.clone()),
        );
        self.rules(&addrs).map_err(FaultError::InvalidSelection)
    }
}

net_fault!(PartitionSpec, "pod-network-partition");

// ---------------------------------------------------------------------------------------------
// pod-network-bandwidth

/// Bits per second of a rate like `1mbit`, `500kbit`, `2mbps` (bytes: ×8), as `tc` reads
/// them (k = 1000).
pub fn parse_rate(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..end].parse().ok()?;
    let mult: u64 = match &t[end..] {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        "bps" => 8,
        "kbps" => 8_000,
        "mbps" => 8_000_000,
        "gbps" => 8_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

k8s_spec! {
    /// `pod-network-bandwidth`: the selected pods' egress on `device` is limited to `rate` by
    /// a token bucket (`tc qdisc replace ... tbf`) for the entry's `duration`.
    BandwidthSpec {
        /// The rate, e.g. `1mbit`, `500kbit`, `2mbps` (bytes per second); k = 1000.
        pub rate: String,
        /// Bucket size, e.g. `32KiB`: what may pass at full speed at once. Default: 10 ms of
        /// `rate`, at least 16 KiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub burst: Option<String>,
        /// Queue size, e.g. `64KiB`: what waits for tokens before packets are dropped.
        /// Default: the burst plus 100 ms of `rate`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub limit: Option<String>,
        /// Network device inside the pod (default `eth0`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub device: Option<String>,
        /// Image of the ephemeral container; must contain `tc`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

impl BandwidthSpec {
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())
    }

    fn device(&self) -> String {
        self.device.clone().unwrap_or_else(|| "eth0".into())
    }

    /// (rate bits/s, burst bytes, limit bytes), or why not.
    pub fn figures(&self) -> std::result::Result<(u64, u64, u64), String> {
        let rate = parse_rate(&self.rate)
            .filter(|r| (8..=400_000_000_000).contains(r))
            .ok_or_else(|| {
                format!(
                    "`rate`: {:?} is not a rate like 1mbit, 500kbit or 2mbps (8bit to 400gbit)",
                    self.rate
                )
            })?;
        let bytes_per_s = rate / 8;
        let size = |field: &str, v: &Option<String>| -> std::result::Result<Option<u64>, String> {
            v.as_ref()
                .map(|s| {
                    parse_size(s)
                        .filter(|b| (1..=1 << 32).contains(b))
                        .ok_or_else(|| {
                            format!("`{field}`: {s:?} is not a size like 32KiB (up to 4GiB)")
                        })
                })
                .transpose()
        };
        let burst = size("burst", &self.burst)?.unwrap_or((bytes_per_s / 100).max(16 << 10));
        let limit = size("limit", &self.limit)?.unwrap_or(burst + bytes_per_s / 10);
        Ok((rate, burst, limit))
    }

    /// The `tc` vectors.
    pub fn tc(&self) -> std::result::Result<Commands, String> {
        let (rate, burst, limit) = self.figures()?;
        let dev = self.device();
        Ok(Commands {
            inject: vec![words(&[
                "tc",
                "qdisc",
                "replace",
                "dev",
                &dev,
                "root",
                "tbf",
                "rate",
                &format!("{rate}bit"),
                "burst",
                &burst.to_string(),
                "limit",
                &limit.to_string(),
            ])],
            revert: vec![words(&["tc", "qdisc", "del", "dev", &dev, "root"])],
            revert_ok: vec![2],
            target_container: None,
            extra_caps: Vec::new(),
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.figures()?;
        check_device(&self.device())
    }

    fn access(&self) -> Vec<KubeAccess> {
        pod_access(&self.selector())
    }

    async fn resolve_targets(&self, ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        let d = self
            .tc()
            .map(|c| c.inject[0].join(" "))
            .map_err(FaultError::InvalidSelection)?;
        resolve_pods(self.selector(), ctx, &d, any_pod).await
    }

    fn commands(&self, _targets: &[Target]) -> Result<Commands> {
        self.tc().map_err(FaultError::InvalidSelection)
    }
}

net_fault!(BandwidthSpec, "pod-network-bandwidth");

// ---------------------------------------------------------------------------------------------
// pod-network-corrupt

k8s_spec! {
    /// `pod-network-corrupt`: a share of the selected pods' egress packets on `device` get a
    /// flipped bit (`tc ... netem corrupt`) for the entry's `duration`.
    CorruptSpec {
        /// Share of packets corrupted, e.g. `5%`.
        pub corrupt: Percent,
        /// Correlation with the previous packet's fate, e.g. `25%`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub correlation: Option<Percent>,
        /// Network device inside the pod (default `eth0`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub device: Option<String>,
        /// Image of the ephemeral container; must contain `tc`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

impl CorruptSpec {
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())
    }

    fn device(&self) -> String {
        self.device.clone().unwrap_or_else(|| "eth0".into())
    }

    /// The `tc` vectors.
    pub fn tc(&self) -> Commands {
        let dev = self.device();
        let mut inject = words(&["tc", "qdisc", "replace", "dev", &dev, "root", "netem"]);
        inject.push("corrupt".into());
        inject.push(format!("{}%", self.corrupt.get()));
        if let Some(c) = self.correlation {
            inject.push(format!("{}%", c.get()));
        }
        Commands {
            inject: vec![inject],
            revert: vec![words(&["tc", "qdisc", "del", "dev", &dev, "root"])],
            revert_ok: vec![2],
            target_container: None,
            extra_caps: Vec::new(),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.corrupt.get() <= 0.0 {
            return Err("`corrupt`: must be above 0%".into());
        }
        check_device(&self.device())
    }

    fn access(&self) -> Vec<KubeAccess> {
        pod_access(&self.selector())
    }

    async fn resolve_targets(&self, ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        resolve_pods(
            self.selector(),
            ctx,
            &self.tc().inject[0].join(" "),
            any_pod,
        )
        .await
    }

    fn commands(&self, _targets: &[Target]) -> Result<Commands> {
        Ok(self.tc())
    }
}

net_fault!(CorruptSpec, "pod-network-corrupt");

// ---------------------------------------------------------------------------------------------
// pod-dns-failure

/// What happens to a matching DNS query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsAction {
    /// Rejected on the way out: lookups fail at once.
    #[default]
    Refuse,
    /// Answers dropped on the way in: lookups time out (the resolver's timeout and retries).
    Drop,
}

k8s_spec! {
    /// `pod-dns-failure`: the selected pods' DNS queries (all, or those for `hosts` and their
    /// subdomains) are refused or dropped for the entry's `duration`, by iptables rules on
    /// port 53 in the pods' network namespace.
    DnsFailureSpec {
        /// Fully qualified names whose lookups fail (with their subdomains); empty: every
        /// lookup.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub hosts: Vec<String>,
        /// `refuse` (default: fail at once) or `drop` (time out).
        #[serde(default)]
        pub action: DnsAction,
        /// Wrong answers: host name → address, written into the pod's `/etc/hosts` (every
        /// container of a pod shares that file) and removed on revert. With `answers` and no
        /// `hosts`, no lookup fails.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub answers: BTreeMap<String, String>,
        /// The container through whose process namespace `/etc/hosts` is reached (needed with
        /// `answers`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub container: Option<String>,
        /// Image of the ephemeral container; must contain `iptables`, `ip6tables` and `sh`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

/// Where the target container's `/etc/hosts` is seen from an ephemeral container that shares
/// its process namespace.
pub const HOSTS_PATH: &str = "/proc/1/root/etc/hosts";

/// The marker ending each line `answers` adds to `/etc/hosts`.
pub const HOSTS_MARKER: &str = "rattle-dns-answer";

/// Appends `address name # marker` lines to the file `$1`; the pairs follow `$2` (the marker).
pub const HOSTS_ADD_SCRIPT: &str = r#"f="$1"; m="$2"; shift 2
while [ $# -ge 2 ]; do
  printf '%s %s # %s\n' "$1" "$2" "$m" >> "$f" || exit 1
  shift 2
done"#;

/// Removes the lines ending with `# $2` from the file `$1`, in place (the file is a bind
/// mount: it is rewritten, never replaced); a file it cannot read is left untouched.
pub const HOSTS_DEL_SCRIPT: &str = r##"f="$1"; m="$2"; t=$(mktemp) || exit 1
grep -vF "# $m" "$f" > "$t"; rc=$?
if [ "$rc" -gt 1 ]; then rm -f "$t"; exit "$rc"; fi
cat "$t" > "$f"; rc=$?; rm -f "$t"; exit "$rc""##;

/// The vector that adds `answers` to the hosts file at `path`.
pub fn hosts_add_args(path: &str, answers: &BTreeMap<String, String>) -> Vec<String> {
    let mut a = words(&[
        "sh",
        "-c",
        HOSTS_ADD_SCRIPT,
        "rattle-hosts",
        path,
        HOSTS_MARKER,
    ]);
    for (host, addr) in answers {
        a.push(addr.trim().to_string());
        a.push(host.trim().trim_end_matches('.').to_ascii_lowercase());
    }
    a
}

/// The vector that removes every line rattle added to the hosts file at `path`.
pub fn hosts_del_args(path: &str) -> Vec<String> {
    words(&[
        "sh",
        "-c",
        HOSTS_DEL_SCRIPT,
        "rattle-hosts",
        path,
        HOSTS_MARKER,
    ])
}

/// A host name in DNS wire format, as iptables' `--hex-string` takes it:
/// `example.com` → `|076578616d706c6503636f6d00|`. Lower case (the match ignores case).
pub fn qname_hex(host: &str) -> std::result::Result<String, String> {
    let h = host.trim().trim_end_matches('.');
    if h.is_empty() || h.len() > 253 {
        return Err(format!("{host:?} is not a host name"));
    }
    let mut out = String::from("|");
    for label in h.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("{host:?} is not a host name"));
        }
        out.push_str(&format!("{:02x}", label.len()));
        for b in label.to_ascii_lowercase().bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out.push_str("00|");
    Ok(out)
}

impl DnsFailureSpec {
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())
    }

    /// The iptables vectors, then the `/etc/hosts` edit of `answers`.
    pub fn rules(&self) -> std::result::Result<Commands, String> {
        let names: Vec<Option<String>> = if self.hosts.is_empty() && !self.answers.is_empty() {
            Vec::new()
        } else if self.hosts.is_empty() {
            vec![None]
        } else {
            self.hosts
                .iter()
                .map(|h| qname_hex(h).map(Some).map_err(|e| format!("`hosts`: {e}")))
                .collect::<std::result::Result<_, _>>()?
        };
        let mut inject = Vec::new();
        let mut revert = Vec::new();
        for bin in ["iptables", "ip6tables"] {
            for proto in ["udp", "tcp"] {
                for name in &names {
                    // Refused queries never leave; dropped ones leave, and their answers
                    // (which repeat the question) are dropped on the way in.
                    let mut rule = match self.action {
                        DnsAction::Refuse => words(&["OUTPUT", "-p", proto, "--dport", "53"]),
                        DnsAction::Drop => words(&["INPUT", "-p", proto, "--sport", "53"]),
                    };
                    if let Some(hex) = name {
                        rule.extend(words(&["-m", "string", "--algo", "bm", "--icase"]));
                        rule.push("--hex-string".into());
                        rule.push(hex.clone());
                    }
                    rule.extend(words(&["-m", "comment", "--comment", COMMENT, "-j"]));
                    match (self.action, proto) {
                        (DnsAction::Drop, _) => rule.push("DROP".into()),
                        (DnsAction::Refuse, "tcp") => {
                            rule.extend(words(&["REJECT", "--reject-with", "tcp-reset"]))
                        }
                        (DnsAction::Refuse, _) => rule.push("REJECT".into()),
                    }
                    for (op, out) in [("-I", &mut inject), ("-D", &mut revert)] {
                        let mut c = words(&[bin, "-w", "5", op]);
                        c.extend(rule.iter().cloned());
                        out.push(c);
                    }
                }
            }
        }
        let mut c = Commands {
            inject,
            revert,
            revert_ok: vec![1],
            target_container: None,
            extra_caps: Vec::new(),
        };
        if !self.answers.is_empty() {
            c.inject.push(hosts_add_args(HOSTS_PATH, &self.answers));
            c.revert.push(hosts_del_args(HOSTS_PATH));
            c.target_container = self.container.clone();
            // To reach /proc/1/root of a process that may run as another user.
            c.extra_caps.push("SYS_PTRACE".into());
        }
        Ok(c)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.hosts.len() > 20 {
            return Err("`hosts`: at most 20".into());
        }
        if self.answers.len() > 20 {
            return Err("`answers`: at most 20".into());
        }
        for (host, addr) in &self.answers {
            qname_hex(host).map_err(|e| format!("`answers`: {e}"))?;
            addr.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("`answers.{host}`: {addr:?} is not an IP address"))?;
        }
        match (&self.container, self.answers.is_empty()) {
            (None, false) => {
                return Err("`answers` needs `container`: the container whose process \
                            namespace reaches the pod's /etc/hosts"
                    .into());
            }
            (Some(c), _) if !super::is_dns_label(c) => {
                return Err(format!("`container`: {c:?} is not a container name"));
            }
            _ => {}
        }
        self.rules().map(|_| ())
    }

    fn access(&self) -> Vec<KubeAccess> {
        pod_access(&self.selector())
    }

    async fn resolve_targets(&self, ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        let verb = match self.action {
            DnsAction::Refuse => "refused",
            DnsAction::Drop => "dropped",
        };
        let mut what = Vec::new();
        if self.hosts.is_empty() && self.answers.is_empty() {
            what.push(format!("every DNS lookup {verb}"));
        } else if !self.hosts.is_empty() {
            what.push(format!("DNS lookups of {} {verb}", self.hosts.join(", ")));
        }
        if !self.answers.is_empty() {
            let list: Vec<String> = self
                .answers
                .iter()
                .map(|(h, a)| format!("{h} -> {a}"))
                .collect();
            what.push(format!("/etc/hosts answers {}", list.join(", ")));
        }
        let check = if self.answers.is_empty() {
            any_pod
        } else {
            hosts_reachable
        };
        resolve_pods(self.selector(), ctx, &what.join("; "), check).await
    }

    fn commands(&self, _targets: &[Target]) -> Result<Commands> {
        self.rules().map_err(FaultError::InvalidSelection)
    }
}

net_fault!(DnsFailureSpec, "pod-dns-failure");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(c: &[String]) -> String {
        c.join(" ")
    }

    #[test]
    fn partition_rules_are_exact_vectors() {
        let s: PartitionSpec = serde_json::from_value(json!({"namespace": "shop",
            "direction": "both", "ports": [5432, 6432]}))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = s
            .rules(&["10.0.0.7".into(), "10.1.0.0/16".into(), "fd00::1".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let inject: Vec<String> = c.inject.iter().map(|v| j(v)).collect();
        assert_eq!(
            inject,
            [
                "iptables -w 5 -I OUTPUT -d 10.0.0.7/32,10.1.0.0/16 -p tcp -m multiport --dports 5432,6432 -m comment --comment rattle -j DROP",
                "iptables -w 5 -I INPUT -s 10.0.0.7/32,10.1.0.0/16 -p tcp -m multiport --sports 5432,6432 -m comment --comment rattle -j DROP",
                "ip6tables -w 5 -I OUTPUT -d fd00::1/128 -p tcp -m multiport --dports 5432,6432 -m comment --comment rattle -j DROP",
                "ip6tables -w 5 -I INPUT -s fd00::1/128 -p tcp -m multiport --sports 5432,6432 -m comment --comment rattle -j DROP",
            ]
        );
        assert_eq!(
            j(&c.revert[0]),
            "iptables -w 5 -D OUTPUT -d 10.0.0.7/32,10.1.0.0/16 -p tcp -m multiport --dports 5432,6432 -m comment --comment rattle -j DROP"
        );
        assert_eq!(c.revert_ok, [1]);
        let out: PartitionSpec = serde_json::from_value(json!({"namespace": "shop",
            "direction": "out", "cidrs": ["10.0.0.0/8"]}))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = out
            .rules(&["10.0.0.0/8".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.inject.iter().map(|v| j(v)).collect::<Vec<_>>(),
            ["iptables -w 5 -I OUTPUT -d 10.0.0.0/8 -m comment --comment rattle -j DROP"]
        );
    }

    #[test]
    fn partition_refuses_what_it_cannot_do() {
        for (v, want) in [
            (json!({"namespace": "shop"}), "give `peers`"),
            (
                json!({"namespace": "shop", "cidrs": ["10.0.0.0/33"]}),
                "prefix length",
            ),
            (json!({"namespace": "shop", "cidrs": ["nope"]}), "`cidrs`"),
            (
                json!({"namespace": "shop", "ports": [0]}),
                "0 is not a port",
            ),
            (
                json!({"namespace": "shop", "cidrs": ["10.0.0.1"], "protocol": "udp"}),
                "`protocol`",
            ),
            (
                json!({"namespace": "shop", "peers": {"labels": " "}}),
                "`peers.labels`",
            ),
            (
                json!({"namespace": "shop", "ports": (1..=16).collect::<Vec<u16>>()}),
                "at most 15",
            ),
        ] {
            let s: PartitionSpec =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
            let e = s.validate().expect_err("invalid");
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn bandwidth_is_a_tbf() {
        let s: BandwidthSpec = serde_json::from_value(json!({"namespace": "shop",
            "rate": "1mbit", "burst": "32KiB", "limit": "64KiB"}))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = s.tc().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            j(&c.inject[0]),
            "tc qdisc replace dev eth0 root tbf rate 1000000bit burst 32768 limit 65536"
        );
        assert_eq!(j(&c.revert[0]), "tc qdisc del dev eth0 root");
        let d: BandwidthSpec =
            serde_json::from_value(json!({"namespace": "shop", "rate": "8mbps"}))
                .unwrap_or_else(|e| panic!("{e}"));
        // 64 Mbit/s = 8 MB/s: burst 10 ms = 80 000 B, limit + 100 ms = 880 000 B.
        assert_eq!(d.figures(), Ok((64_000_000, 80_000, 880_000)));
        for bad in ["fast", "0mbit", "1 furlong", "99999999999999999999gbit"] {
            let s: BandwidthSpec =
                serde_json::from_value(json!({"namespace": "shop", "rate": bad}))
                    .unwrap_or_else(|e| panic!("{e}"));
            assert!(s.validate().is_err_and(|e| e.contains("`rate`")), "{bad}");
        }
    }

    #[test]
    fn corrupt_is_netem_corrupt() {
        let s: CorruptSpec = serde_json::from_value(json!({"namespace": "shop",
            "corrupt": "5%", "correlation": "25%", "device": "eth1"}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            j(&s.tc().inject[0]),
            "tc qdisc replace dev eth1 root netem corrupt 5% 25%"
        );
        assert_eq!(j(&s.tc().revert[0]), "tc qdisc del dev eth1 root");
    }

    #[test]
    fn dns_rules_match_the_wire_name() {
        assert_eq!(
            qname_hex("Example.com."),
            Ok("|076578616d706c6503636f6d00|".to_string())
        );
        assert!(qname_hex("a..b").is_err());
        assert!(qname_hex("a b").is_err());
        let s: DnsFailureSpec = serde_json::from_value(json!({"namespace": "shop",
            "hosts": ["db.example.com"]}))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = s.rules().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.inject.len(), 4);
        assert_eq!(
            j(&c.inject[0]),
            "iptables -w 5 -I OUTPUT -p udp --dport 53 -m string --algo bm --icase --hex-string |026462076578616d706c6503636f6d00| -m comment --comment rattle -j REJECT"
        );
        assert!(j(&c.inject[1]).ends_with("-j REJECT --reject-with tcp-reset"));
        let all: DnsFailureSpec =
            serde_json::from_value(json!({"namespace": "shop", "action": "drop"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            j(&all.rules().unwrap_or_else(|e| panic!("{e}")).revert[0]),
            "iptables -w 5 -D INPUT -p udp --sport 53 -m comment --comment rattle -j DROP"
        );
    }

    #[test]
    fn dns_answers_edit_the_hosts_file_through_the_target_container() {
        let s: DnsFailureSpec = serde_json::from_value(json!({"namespace": "shop",
            "answers": {"Payments.example.com.": "192.0.2.7"}, "container": "app"}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.validate(), Ok(()));
        let c = s.rules().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.inject.len(), 1, "answers only: no lookup fails");
        assert_eq!(
            c.inject[0][3..],
            words(&[
                "rattle-hosts",
                HOSTS_PATH,
                HOSTS_MARKER,
                "192.0.2.7",
                "payments.example.com"
            ])
        );
        assert_eq!(
            c.revert[0][3..],
            words(&["rattle-hosts", HOSTS_PATH, HOSTS_MARKER])
        );
        assert_eq!(c.target_container.as_deref(), Some("app"));
        assert_eq!(c.extra_caps, ["SYS_PTRACE"]);
        let shared: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"shareProcessNamespace": true, "containers": [{"name": "app"}]}}))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(hosts_reachable(&shared).is_err_and(|e| e.contains("shareProcessNamespace")));
        for (v, want) in [
            (
                json!({"namespace": "shop", "answers": {"a.b": "1.2.3.4"}}),
                "needs `container`",
            ),
            (
                json!({"namespace": "shop", "answers": {"a.b": "nope"}, "container": "app"}),
                "not an IP",
            ),
            (
                json!({"namespace": "shop", "answers": {"a b": "1.2.3.4"}, "container": "app"}),
                "`answers`",
            ),
        ] {
            let s: DnsFailureSpec =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
            let e = s.validate().expect_err("invalid");
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn one_command_runs_as_itself_several_through_the_batch() {
        let one = vec![words(&["tc", "qdisc", "del"])];
        assert_eq!(batch(&one, &[2]), one[0]);
        let two = vec![words(&["a", "1"]), words(&["b"])];
        assert_eq!(
            batch(&two, &[1])[3..],
            words(&["rattle-batch", "1", "a", "1", ";", "b"])
        );
    }
}
