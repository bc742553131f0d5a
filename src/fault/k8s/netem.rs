//! `pod-network-delay`: latency, jitter and loss on the selected pods' network, by `tc netem`
//! run in an ephemeral container with NET_ADMIN (image configurable). An ephemeral container
//! shares the pod's network namespace, and a qdisc outlives the process that added it, so the
//! container only runs `tc qdisc replace ...` and exits. Ephemeral containers cannot be
//! removed from a pod, so the revert adds another one that runs `tc qdisc del` (harmless when
//! the qdisc is already gone, which keeps the revert idempotent). `tc` is always given an
//! argument vector, never a shell string.

use k8s_openapi::api::core::v1::Pod;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Selector, split_id, target};
use crate::experiment::{HumanDuration, Mode, Percent};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, Locality, ResolveCtx, Result, RevertToken,
    Target,
};

const KIND: &str = "pod-network-delay";

/// The default image: it ships `tc` (iproute2).
pub const DEFAULT_IMAGE: &str = "docker.io/nicolaka/netshoot:v0.13";

k8s_spec! {
    /// `pod-network-delay`: adds `delay` (± `jitter`) and/or `loss` to the selected pods'
    /// egress on `device` for the entry's `duration`.
    PodNetemSpec {
        /// Delay added to every packet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delay: Option<HumanDuration>,
        /// Jitter around the delay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub jitter: Option<HumanDuration>,
        /// Share of packets dropped, e.g. `5%`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub loss: Option<Percent>,
        /// Network device inside the pod (default `eth0`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub device: Option<String>,
        /// Image of the ephemeral container; must contain `tc`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    pods: Vec<(String, String)>,
    device: String,
    image: String,
}

impl PodNetemSpec {
    fn device(&self) -> String {
        self.device.clone().unwrap_or_else(|| "eth0".into())
    }

    /// The argument vector of the injecting `tc`.
    pub fn tc_args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["tc", "qdisc", "replace", "dev"].map(String::from).to_vec();
        a.push(self.device());
        a.extend(["root", "netem"].map(String::from));
        if let Some(d) = self.delay {
            a.push("delay".into());
            a.push(format!("{}us", d.get().as_micros()));
            if let Some(j) = self.jitter {
                a.push(format!("{}us", j.get().as_micros()));
            }
        }
        if let Some(l) = self.loss {
            a.push("loss".into());
            a.push(format!("{}%", l.get()));
        }
        a
    }
}

/// The argument vector of the reverting `tc`.
pub fn tc_revert_args(device: &str) -> Vec<String> {
    ["tc", "qdisc", "del", "dev", device, "root"]
        .map(String::from)
        .to_vec()
}

/// Runs `args` in a new ephemeral container of `ns/pod` with NET_ADMIN and waits for it to
/// finish. `Ok(false)` if the pod is gone.
async fn add_ephemeral(
    client: &kube::Client,
    ns: &str,
    pod: &str,
    prefix: &str,
    image: &str,
    args: &[String],
) -> Result<bool> {
    let e = super::ephemeral::Ephemeral {
        prefix,
        image,
        command: args,
        caps: &["NET_ADMIN"],
        target_container: None,
        until_exit: true,
        ok_codes: &[],
    };
    Ok(e.run(client, ns, pod).await? != super::ephemeral::Ran::PodGone)
}

impl Fault for PodNetemSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let client = ctx.env.kube().await?;
            let chosen = self
                .selector()
                .choose::<Pod>(client, "pods", ctx.rng)
                .await?;
            Ok(chosen
                .iter()
                .map(|(ns, name, _)| target("pod", ns, name, self.tc_args().join(" ")))
                .collect())
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let mut pods = Vec::new();
            for t in targets {
                let (ns, name) = split_id(t)?;
                pods.push((ns.to_string(), name.to_string()));
            }
            let token = Token {
                pods,
                device: self.device(),
                image: self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into()),
            };
            Ok(Some(RevertToken::new(KIND, &token)?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let image = self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
            let name = "rattle-netem";
            let args = self.tc_args();
            for t in targets {
                let (ns, pod) = split_id(t)?;
                if !add_ephemeral(client, ns, pod, name, &image, &args).await? {
                    return Err(FaultError::NoTarget(format!("pod {} is gone", t.id)));
                }
            }
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        true
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
        if self.delay.is_none() && self.loss.is_none() {
            return Err("give `delay`, `loss` or both".into());
        }
        if self.jitter.is_some() && self.delay.is_none() {
            return Err("`jitter` needs a `delay`".into());
        }
        let dev = self.device();
        if dev.is_empty()
            || !dev
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
        {
            return Err(format!("`device`: {dev:?} is not a device name"));
        }
        self.selector().validate()
    }
}

/// Removes the qdisc by adding a reverting ephemeral container to each pod. Idempotent; a pod
/// gone since is skipped.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    let client = env.kube().await?;
    let name = "rattle-unnetem";
    let args = tc_revert_args(&t.device);
    for (ns, pod) in &t.pods {
        add_ephemeral(client, ns, pod, name, &t.image, &args).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tc_is_an_argument_vector() {
        let spec: PodNetemSpec = serde_json::from_value(json!({
            "namespace": "shop", "delay": "200ms", "jitter": "20ms", "loss": "1%"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            spec.tc_args().join(" "),
            "tc qdisc replace dev eth0 root netem delay 200000us 20000us loss 1%"
        );
        assert_eq!(
            tc_revert_args("eth0").join(" "),
            "tc qdisc del dev eth0 root"
        );
    }
}
