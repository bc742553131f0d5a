//! `pod-stress`: CPU and memory pressure inside the selected pods, by an ephemeral container
//! running `rattle stress` from the rattle image with `targetContainerName` set to the target
//! container, so it shares that container's process namespace.
//!
//! The stress process is given its deadline (`--duration`, the entry's duration), so it stops by
//! itself even if rattle dies and nothing ever reverts it. An ephemeral container cannot be
//! removed or stopped through the API, so an early revert adds a second ephemeral container
//! (`stop_image`, default busybox) that joins the same process namespace and sends SIGTERM to
//! the stress process, found by its exact command line with `pkill -f`. `pkill` exits 1 when
//! nothing matched (the stress had already ended): that counts as reverted, which keeps the
//! revert idempotent.
//!
//! Where the load is accounted: an ephemeral container has no resources of its own, but it is a
//! container of the pod, so its CPU and memory land in its own container cgroup under the pod's
//! cgroup, not in the target container's. The pod's totals and the node's pressure are real;
//! the target container's own CPU/memory metrics and limits do not see it (see the README).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ephemeral::{Ephemeral, Ran};
use super::{Selector, is_not_found, kube_err, split_id, target};
use crate::experiment::{HumanDuration, Mode, Percent};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, Locality, ResolveCtx, Result, RevertToken,
    Target,
};

const KIND: &str = "pod-stress";

/// The default image: the rattle image, named as `rattle schedule --emit cronjob` names it.
pub const DEFAULT_IMAGE: &str = concat!("rattle:", env!("CARGO_PKG_VERSION"));

/// The default image of the stopping container: it must have `pkill`.
pub const DEFAULT_STOP_IMAGE: &str = "docker.io/library/busybox:1.37";

/// How long the stress runs when no duration was given to the plan (never in a run: the kind
/// needs a `duration`, which validation enforces).
const FALLBACK_DURATION: Duration = Duration::from_secs(60);

k8s_spec! {
    /// `pod-stress`: CPU workers (each at `cpu_load`) and/or `memory` held, inside the
    /// selected pods next to their `container`, for the entry's `duration`.
    PodStressSpec {
        /// The container whose process namespace the stress joins. Default: the pod's first
        /// container.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub container: Option<String>,
        /// CPU workers, each busy `cpu_load` of one core.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cpu_workers: Option<u32>,
        /// Load of each CPU worker, e.g. `80%` (default: the stress command's own, 100%).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub cpu_load: Option<Percent>,
        /// Memory held, e.g. `256MiB`, `1GiB`, `500MB`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub memory: Option<String>,
        /// Time over which the load rises to what is asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ramp: Option<HumanDuration>,
        /// Image of the stress container: it must have `rattle` on its PATH. Default: the
        /// rattle image of this version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
        /// Image of the container that stops the stress on an early revert: it must have
        /// `pkill`. Default: busybox.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub stop_image: Option<String>,
        /// The entry's duration, told by the plan (not written in the file).
        #[serde(skip)]
        #[schemars(skip)]
        pub duration: Option<HumanDuration>,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    /// (namespace, pod, container)
    pods: Vec<(String, String, String)>,
    stop_image: String,
    /// The `pkill -f` pattern: the stress command line.
    pattern: String,
}

/// Bytes of a size like `256MiB`, `1GiB`, `500MB`, `64K`, `1024` (bytes), with Kubernetes'
/// units: `K`, `M`, `G` are powers of 1000, `Ki`, `Mi`, `Gi` of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..end].parse().ok()?;
    let mult: u64 = match t[end..].trim() {
        "" | "B" => 1,
        "K" | "KB" | "k" | "kB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl PodStressSpec {
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())
    }

    fn stop_image(&self) -> String {
        self.stop_image
            .clone()
            .unwrap_or_else(|| DEFAULT_STOP_IMAGE.into())
    }

    /// The stress's argument vector: exactly
    /// `rattle stress [--cpu-workers N] [--cpu-load PCT] [--memory SIZE] [--ramp D] --duration D`.
    pub fn stress_args(&self) -> Vec<String> {
        let mut a = vec!["rattle".to_string(), "stress".into()];
        if let Some(n) = self.cpu_workers {
            a.push("--cpu-workers".into());
            a.push(n.to_string());
        }
        if let Some(p) = self.cpu_load {
            a.push("--cpu-load".into());
            a.push(format!("{}", p.get().round() as u32));
        }
        // In bytes: `rattle stress` reads `M` as MiB, Kubernetes as 10^6; a number is a number.
        if let Some(b) = self.memory.as_deref().and_then(parse_size) {
            a.push("--memory".into());
            a.push(b.to_string());
        }
        if let Some(r) = self.ramp {
            a.push("--ramp".into());
            a.push(format!("{}ms", r.as_millis()));
        }
        let d = self.duration.map(|d| d.get()).unwrap_or(FALLBACK_DURATION);
        a.push("--duration".into());
        a.push(format!("{}ms", d.as_millis()));
        a
    }
}

/// The `pkill -f` pattern that matches exactly the process running `args` (anchored; every
/// character that means something to an extended regex escaped).
pub fn pkill_pattern(args: &[String]) -> String {
    let line = args.join(" ");
    let mut p = String::from("^");
    for c in line.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('$');
    p
}

/// The stopping container's argument vector.
pub fn stop_args(pattern: &str) -> Vec<String> {
    ["pkill", "-TERM", "-f", pattern].map(String::from).to_vec()
}

/// The container of `pod` to target: `want`, which must exist, or the first one.
fn pick_container(pod: &Pod, want: Option<&str>) -> std::result::Result<String, String> {
    let names: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    match want {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => Err(format!(
            "has no container {w:?} (it has: {})",
            names.join(", ")
        )),
        None => names
            .first()
            .map(|n| n.to_string())
            .ok_or_else(|| "has no container".to_string()),
    }
}

async fn container_of(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    want: Option<&str>,
) -> Result<Option<String>> {
    match Api::<Pod>::namespaced(client.clone(), ns).get(pod).await {
        Ok(p) => pick_container(&p, want)
            .map(Some)
            .map_err(|e| FaultError::InvalidSelection(format!("pod {ns}/{pod} {e}"))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(kube_err(&format!("reading pod {ns}/{pod}"), e)),
    }
}

impl Fault for PodStressSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let client = ctx.env.kube().await?;
            let chosen = self
                .selector()
                .choose::<Pod>(client, "pods", ctx.rng)
                .await?;
            let args = self.stress_args().join(" ");
            chosen
                .iter()
                .map(|(ns, name, p)| {
                    let c = pick_container(p, self.container.as_deref()).map_err(|e| {
                        FaultError::InvalidSelection(format!("pod {ns}/{name} {e}"))
                    })?;
                    Ok(target("pod", ns, name, format!("container {c}: {args}")))
                })
                .collect()
        })
    }

    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let mut pods = Vec::new();
            for t in targets {
                let (ns, name) = split_id(t)?;
                if let Some(c) = container_of(client, ns, name, self.container.as_deref()).await? {
                    pods.push((ns.to_string(), name.to_string(), c));
                }
            }
            let token = Token {
                pods,
                stop_image: self.stop_image(),
                pattern: pkill_pattern(&self.stress_args()),
            };
            Ok(Some(RevertToken::new(KIND, &token)?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let image = self.image();
            let args = self.stress_args();
            for t in targets {
                let (ns, pod) = split_id(t)?;
                let gone = || FaultError::NoTarget(format!("pod {} is gone", t.id));
                let c = container_of(client, ns, pod, self.container.as_deref())
                    .await?
                    .ok_or_else(gone)?;
                let e = Ephemeral {
                    prefix: "rattle-stress",
                    image: &image,
                    command: &args,
                    caps: &[],
                    target_container: Some(&c),
                    until_exit: false,
                    ok_codes: &[],
                };
                if e.run(client, ns, pod).await? == Ran::PodGone {
                    return Err(gone());
                }
            }
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        true
    }

    fn set_duration(&mut self, duration: Option<Duration>) {
        self.duration = duration.map(HumanDuration);
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Cluster
    }

    fn kube_access(&self) -> Vec<KubeAccess> {
        super::access(
            &self.selector(),
            &[
                ("", "pods", &["get", "list"]),
                ("", "pods/ephemeralcontainers", &["patch"]),
            ],
        )
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.cpu_workers.is_none() && self.memory.is_none() {
            return Err("give `cpu_workers`, `memory` or both".into());
        }
        if let Some(n) = self.cpu_workers
            && !(1..=1024).contains(&n)
        {
            return Err(format!("`cpu_workers`: {n} is not between 1 and 1024"));
        }
        if let Some(p) = self.cpu_load {
            if self.cpu_workers.is_none() {
                return Err("`cpu_load` needs `cpu_workers`".into());
            }
            if p.get() < 1.0 || p.get().fract() != 0.0 {
                return Err("`cpu_load`: a whole percent from 1% to 100%".into());
            }
        }
        if let Some(m) = &self.memory {
            match parse_size(m) {
                Some(0) | None => {
                    return Err(format!(
                        "`memory`: {m:?} is not a size like 256MiB, 1GiB or 500MB"
                    ));
                }
                Some(b) if b > 1 << 40 => {
                    return Err(format!("`memory`: {m:?} is more than 1TiB"));
                }
                Some(_) => {}
            }
        }
        if let Some(c) = &self.container
            && !super::is_dns_label(c)
        {
            return Err(format!("`container`: {c:?} is not a container name"));
        }
        for (field, v) in [("image", &self.image), ("stop_image", &self.stop_image)] {
            if let Some(i) = v
                && (i.trim().is_empty() || i.chars().any(char::is_whitespace))
            {
                return Err(format!("`{field}`: {i:?} is not an image reference"));
            }
        }
        self.selector().validate()
    }
}

/// Stops the stress early: a stopping container per pod, in the same process namespace, sends
/// SIGTERM to the stress process. Idempotent (nothing left to stop is success); a pod gone since
/// is skipped.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    let client = env.kube().await?;
    let args = stop_args(&t.pattern);
    for (ns, pod, container) in &t.pods {
        Ephemeral {
            prefix: "rattle-unstress",
            image: &t.stop_image,
            command: &args,
            caps: &[],
            target_container: Some(container),
            until_exit: true,
            ok_codes: &[1],
        }
        .run(client, ns, pod)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodStressSpec {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_stress_is_exactly_this_argument_vector() {
        let mut s = spec(
            json!({"namespace": "shop", "cpu_workers": 2, "cpu_load": "80%",
            "memory": "256MiB", "ramp": "5s"}),
        );
        s.set_duration(Some(Duration::from_secs(30)));
        assert_eq!(
            s.stress_args().join(" "),
            "rattle stress --cpu-workers 2 --cpu-load 80 --memory 268435456 --ramp 5000ms --duration 30000ms"
        );
        let mut s = spec(json!({"namespace": "shop", "memory": "1GiB"}));
        s.set_duration(Some(Duration::from_millis(1500)));
        assert_eq!(
            s.stress_args().join(" "),
            "rattle stress --memory 1073741824 --duration 1500ms"
        );
    }

    #[test]
    fn the_stop_matches_that_command_line_only() {
        let args: Vec<String> = ["rattle", "stress", "--cpu-load", "12.5", "--duration", "1s"]
            .map(String::from)
            .to_vec();
        let p = pkill_pattern(&args);
        assert_eq!(p, r"^rattle stress --cpu-load 12\.5 --duration 1s$");
        assert_eq!(stop_args(&p)[..3], ["pkill", "-TERM", "-f"]);
    }

    #[test]
    fn bad_values_are_refused_with_the_field() {
        let cases = [
            (json!({"namespace": "shop"}), "give `cpu_workers`"),
            (
                json!({"namespace": "shop", "cpu_workers": 0}),
                "`cpu_workers`",
            ),
            (
                json!({"namespace": "shop", "cpu_load": "50%", "memory": "1Mi"}),
                "`cpu_load` needs",
            ),
            (
                json!({"namespace": "shop", "cpu_workers": 1, "cpu_load": "12.5%"}),
                "whole percent",
            ),
            (json!({"namespace": "shop", "memory": "lots"}), "`memory`"),
            (
                json!({"namespace": "shop", "memory": "99999999999999GiB"}),
                "`memory`",
            ),
            (
                json!({"namespace": "shop", "memory": "2048GiB"}),
                "more than 1TiB",
            ),
            (
                json!({"namespace": "shop", "memory": "1Mi", "container": "a b"}),
                "`container`",
            ),
            (
                json!({"namespace": "shop", "memory": "1Mi", "image": " "}),
                "`image`",
            ),
        ];
        for (v, want) in cases {
            let e = spec(v.clone()).validate().expect_err("invalid");
            assert!(e.contains(want), "{v}: {e}");
        }
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
    }
}
