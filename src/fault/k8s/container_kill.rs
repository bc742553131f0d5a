//! `container-kill`: kills one named container of the selected pods so that the kubelet
//! restarts that container (its `restartCount` goes up), not the pod.
//!
//! How others do it: Chaos Mesh asks its chaos-daemon (a privileged DaemonSet) to stop the
//! container through the CRI (`ContainerKill`); Litmus starts a helper pod on the target's node
//! that runs `crictl`/`docker` against the runtime's socket. Both need a privileged foothold
//! on the node. From inside the pod there is none: an `exec` or an ephemeral container shares
//! the container's PID namespace, where the kernel ignores SIGKILL sent to the namespace's
//! PID 1.
//!
//! rattle's way needs no runtime socket and no installed agent: a short-lived helper pod on the
//! target's node (`nodeName`) with `hostPID: true`, running as root with only the `KILL`
//! capability, finds every process whose `/proc/<pid>/cgroup` names the container's ID (every
//! runtime and cgroup driver puts the ID in the path) and sends it SIGKILL from the host's PID
//! namespace, where the container's init is an ordinary process. The runtime reports the
//! container exited, and the kubelet restarts it under the pod's restart policy.
//!
//! `hostPID` is allowed only at the Pod Security "privileged" level, so the namespace the
//! helper runs in (the target pod's) is read first: one labelled
//! `pod-security.kubernetes.io/enforce` with another level is refused before anything is
//! created, and an admission refusal of the helper is reported as such. The helper is deleted
//! once it finished; its name is in the revert token, so a crash of rattle leaves nothing that
//! `rattle recover` does not delete. After the kill, the fault waits until the container's
//! `restartCount` went up: a kill that did not restart the container is an error.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Selector, is_not_found, kube_err, split_id, target};
use crate::experiment::{HumanDuration, Mode};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, Locality, ResolveCtx, Result, RevertToken,
    Target,
};

const KIND: &str = "container-kill";

/// The default helper image: it must have `sh`, `grep` and `kill`.
pub const DEFAULT_HELPER_IMAGE: &str = "docker.io/library/busybox:1.37";

/// The Pod Security label that decides whether the helper may use `hostPID`.
pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// How long the helper may take (image pull included).
const HELPER_LIMIT: Duration = Duration::from_secs(120);

/// The helper's script: constant, the container ID is its only argument (`$1`), never
/// spliced into the text. Exits non-zero when it killed nothing.
pub const KILL_SCRIPT: &str = r#"id="$1"; n=0
for f in /proc/[0-9]*/cgroup; do
  grep -qF "$id" "$f" 2>/dev/null || continue
  p="${f#/proc/}"; p="${p%/cgroup}"
  kill -KILL "$p" 2>/dev/null && n=$((n+1))
done
echo "killed $n process(es) of container $id"
[ "$n" -gt 0 ]"#;

k8s_spec! {
    /// `container-kill`: SIGKILL to every process of `container` in the selected pods, from a
    /// helper pod on the pod's node (`hostPID`; the namespace must allow the Pod Security
    /// "privileged" level); the kubelet restarts the container, not the pod. Instantaneous.
    ContainerKillSpec {
        /// The container to kill.
        pub container: String,
        /// Image of the helper pod: it must have `sh`, `grep` and `kill` (default busybox).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub helper_image: Option<String>,
        /// How long to wait for the container's restart to show in its `restartCount`
        /// (default 60s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub restart_timeout: Option<HumanDuration>,
    }
}

/// What one kill needs, read from the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// The container ID without its `runtime://` prefix.
    pub container_id: String,
    /// The node the pod runs on.
    pub node: String,
    /// The container's restart count before the kill.
    pub restarts: i32,
    /// The pod's UID.
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    /// (namespace, helper pod name)
    helpers: Vec<(String, String)>,
}

/// Reads what killing `container` of `pod` needs; the message says why it cannot be killed.
pub fn victim(pod: &Pod, container: &str) -> std::result::Result<Victim, String> {
    let names: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    if !names.contains(&container) {
        return Err(format!(
            "has no container {container:?} (it has: {})",
            names.join(", ")
        ));
    }
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .ok_or("is not scheduled on a node")?;
    let st = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|l| l.iter().find(|c| c.name == container))
        .ok_or_else(|| format!("reports no status for container {container:?}"))?;
    if st.state.as_ref().and_then(|s| s.running.as_ref()).is_none() {
        return Err(format!("container {container:?} is not running"));
    }
    let raw = st
        .container_id
        .as_deref()
        .ok_or_else(|| format!("container {container:?} has no containerID"))?;
    let id = raw.rsplit("://").next().unwrap_or(raw);
    if !(12..=128).contains(&id.len()) || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "container {container:?} has an ID rattle cannot match: {raw:?}"
        ));
    }
    Ok(Victim {
        container_id: id.to_string(),
        node,
        restarts: st.restart_count,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    })
}

/// The helper pod's name: derived from the pod's UID, the container and its restart count, so
/// the revert token (computed before the kill) and the kill name the same pod.
pub fn helper_name(v: &Victim, container: &str) -> String {
    let uid: String = v
        .uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect::<String>()
        .to_ascii_lowercase();
    let c: String = container.chars().take(20).collect();
    format!("rattle-kill-{uid}-{c}-{}", v.restarts)
        .trim_end_matches('-')
        .to_string()
}

/// The helper pod: on the victim's node, in the host's PID namespace, root with only KILL.
pub fn helper_pod(name: &str, ns: &str, image: &str, v: &Victim) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "rattle", "rattle.dev/fault": KIND},
        },
        "spec": {
            "nodeName": v.node,
            "hostPID": true,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "activeDeadlineSeconds": HELPER_LIMIT.as_secs(),
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "kill",
                "image": image,
                "command": ["sh", "-c", KILL_SCRIPT, "rattle-container-kill", v.container_id],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "runAsUser": 0,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["KILL"]},
                },
            }],
        },
    })
}

/// Refuses a namespace whose Pod Security level forbids `hostPID`. A namespace that cannot be
/// read because it does not exist passes (the pod's own lookup fails later).
async fn check_pod_security(client: &kube::Client, ns: &str) -> Result<()> {
    let n = match Api::<Namespace>::all(client.clone()).get(ns).await {
        Ok(n) => n,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(kube_err(&format!("reading namespace {ns}"), e)),
    };
    let level = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PSA_ENFORCE))
        .map(String::as_str);
    match level {
        None | Some("privileged") => Ok(()),
        Some(other) => Err(FaultError::Refused(format!(
            "container-kill needs a helper pod with hostPID in namespace {ns}, whose Pod \
             Security level is {other:?} ({PSA_ENFORCE}); only \"privileged\" allows it"
        ))),
    }
}

async fn get_pod(client: &kube::Client, ns: &str, name: &str) -> Result<Option<Pod>> {
    match Api::<Pod>::namespaced(client.clone(), ns).get(name).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(kube_err(&format!("reading pod {ns}/{name}"), e)),
    }
}

async fn delete_pod(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(&format!("deleting helper pod {ns}/{name}"), e)),
    }
}

/// Polls `ns/name` every 200 ms until `done` says it is decided, or `limit` passes.
async fn poll<T>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    limit: Duration,
    mut done: impl FnMut(Option<&Pod>) -> Option<Result<T>>,
) -> Option<Result<T>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let p = match get_pod(client, ns, name).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if let Some(r) = done(p.as_ref()) {
            return Some(r);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl ContainerKillSpec {
    fn helper_image(&self) -> String {
        self.helper_image
            .clone()
            .unwrap_or_else(|| DEFAULT_HELPER_IMAGE.into())
    }

    fn restart_timeout(&self) -> Duration {
        self.restart_timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(60))
    }

    /// Kills the container of one pod and waits for its restart.
    async fn kill_one(&self, client: &kube::Client, ns: &str, pod: &str) -> Result<()> {
        let gone = || FaultError::NoTarget(format!("pod {ns}/{pod} is gone"));
        let p = get_pod(client, ns, pod).await?.ok_or_else(gone)?;
        let v = victim(&p, &self.container)
            .map_err(|e| FaultError::NoTarget(format!("pod {ns}/{pod} {e}")))?;
        let name = helper_name(&v, &self.container);
        let helper: Pod =
            serde_json::from_value(helper_pod(&name, ns, &self.helper_image(), &v))
                .map_err(|e| FaultError::Kube(format!("building helper pod {name}: {e}")))?;
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        // A helper left by an earlier crash under the same name is replaced.
        delete_pod(client, ns, &name).await?;
        if let Err(e) = api.create(&PostParams::default(), &helper).await {
            return Err(match e {
                kube::Error::Api(s) if s.code == 403 => FaultError::Refused(format!(
                    "creating helper pod {ns}/{name} (hostPID, on node {}): {} (container-kill \
                     needs the Pod Security \"privileged\" level in {ns} and RBAC to create pods)",
                    v.node, s.message
                )),
                e => kube_err(&format!("creating helper pod {ns}/{name}"), e),
            });
        }
        let finished = poll(client, ns, &name, HELPER_LIMIT, |h| {
            let Some(h) = h else {
                return Some(Err(FaultError::Kube(format!(
                    "helper pod {ns}/{name} disappeared before it finished"
                ))));
            };
            let status = h.status.as_ref()?;
            match status.phase.as_deref() {
                Some("Succeeded") => Some(Ok(())),
                Some("Failed") => {
                    let msg = status
                        .container_statuses
                        .as_ref()
                        .and_then(|l| l.first())
                        .and_then(|c| c.state.as_ref())
                        .and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.message.clone())
                        .or_else(|| status.message.clone())
                        .unwrap_or_default();
                    Some(Err(FaultError::Kube(format!(
                        "helper pod {ns}/{name} failed to kill container {} of {ns}/{pod}: {}",
                        self.container,
                        msg.trim()
                    ))))
                }
                _ => None,
            }
        })
        .await;
        let cleanup = delete_pod(client, ns, &name).await;
        match finished {
            Some(r) => r?,
            None => {
                return Err(FaultError::Kube(format!(
                    "helper pod {ns}/{name} did not finish within {}s",
                    HELPER_LIMIT.as_secs()
                )));
            }
        }
        cleanup?;
        let container = self.container.as_str();
        let restarted = poll(client, ns, pod, self.restart_timeout(), |p| {
            let Some(p) = p else {
                return Some(Err(FaultError::Kube(format!(
                    "pod {ns}/{pod} was deleted after its container {container} was killed \
                     (the pod, not the container, was replaced)"
                ))));
            };
            let now = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|l| l.iter().find(|c| c.name == container))
                .map(|c| c.restart_count)?;
            (now > v.restarts).then_some(Ok(()))
        })
        .await;
        match restarted {
            Some(r) => r,
            None => Err(FaultError::Kube(format!(
                "container {container} of {ns}/{pod} was killed but its restartCount stayed \
                 {} for {}s",
                v.restarts,
                self.restart_timeout().as_secs()
            ))),
        }
    }
}

impl Fault for ContainerKillSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let client = ctx.env.kube().await?;
            let chosen = self
                .selector()
                .choose::<Pod>(client, "pods", ctx.rng)
                .await?;
            let mut checked: Vec<&str> = Vec::new();
            let mut out = Vec::new();
            for (ns, name, p) in &chosen {
                if !checked.contains(&ns.as_str()) {
                    check_pod_security(client, ns).await?;
                    checked.push(ns);
                }
                let v = victim(p, &self.container)
                    .map_err(|e| FaultError::NoTarget(format!("pod {ns}/{name} {e}")))?;
                out.push(target(
                    "pod",
                    ns,
                    name,
                    format!(
                        "container {} on node {} (restarts {})",
                        self.container, v.node, v.restarts
                    ),
                ));
            }
            Ok(out)
        })
    }

    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let mut helpers = Vec::new();
            for t in targets {
                let (ns, name) = split_id(t)?;
                if let Some(p) = get_pod(client, ns, name).await?
                    && let Ok(v) = victim(&p, &self.container)
                {
                    helpers.push((ns.to_string(), helper_name(&v, &self.container)));
                }
            }
            Ok(Some(RevertToken::new(KIND, &Token { helpers })?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            for t in targets {
                let (ns, pod) = split_id(t)?;
                self.kill_one(client, ns, pod).await?;
            }
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        false
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Cluster
    }

    fn kube_access(&self) -> Vec<KubeAccess> {
        super::access(
            &self.selector(),
            &[
                ("", "pods", &["get", "list", "create", "delete"]),
                ("", "namespaces", &["get"]),
            ],
        )
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !super::is_dns_label(&self.container) {
            return Err(format!(
                "`container`: {:?} is not a container name",
                self.container
            ));
        }
        if let Some(i) = &self.helper_image
            && (i.trim().is_empty() || i.chars().any(char::is_whitespace))
        {
            return Err(format!("`helper_image`: {i:?} is not an image reference"));
        }
        if let Some(t) = self.restart_timeout
            && (t.get().is_zero() || t.get() > Duration::from_secs(3600))
        {
            return Err("`restart_timeout`: must be between 1ms and 1h".into());
        }
        self.selector().validate()
    }
}

/// Deletes the helper pods a kill may have left behind (a crash mid-kill). Idempotent.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    let client = env.kube().await?;
    for (ns, name) in &t.helpers {
        delete_pod(client, ns, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn running(id: &str, restarts: i32) -> Pod {
        pod(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "1f2e3d4c-aaaa-bbbb"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "proxy"}]},
            "status": {"containerStatuses": [
                {"name": "app", "image": "a", "imageID": "", "ready": true, "restartCount": restarts,
                 "containerID": id, "state": {"running": {}}}
            ]}
        }))
    }

    #[test]
    fn the_victim_is_read_from_the_pod_status() {
        let id = "a".repeat(64);
        let v = victim(&running(&format!("containerd://{id}"), 3), "app")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.container_id, id);
        assert_eq!((v.node.as_str(), v.restarts), ("node-a", 3));
        assert_eq!(helper_name(&v, "app"), "rattle-kill-1f2e3d4caa-app-3");

        let e = victim(&running(&format!("containerd://{id}"), 0), "db").expect_err("no db");
        assert!(
            e.contains("has no container \"db\" (it has: app, proxy)"),
            "{e}"
        );
        let e = victim(&running(&format!("containerd://{id}"), 0), "proxy").expect_err("no status");
        assert!(e.contains("no status"), "{e}");
        let e = victim(&running("containerd://x;rm -rf /", 0), "app").expect_err("bad id");
        assert!(e.contains("ID rattle cannot match"), "{e}");
    }

    #[test]
    fn the_helper_is_host_pid_with_only_kill_and_the_id_as_an_argument() {
        let v = Victim {
            container_id: "b".repeat(64),
            node: "node-a".into(),
            restarts: 0,
            uid: "u".into(),
        };
        let p = helper_pod("h", "shop", "busybox", &v);
        assert_eq!(p["spec"]["hostPID"], true);
        assert_eq!(p["spec"]["nodeName"], "node-a");
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["securityContext"]["capabilities"]["add"], json!(["KILL"]));
        assert_eq!(c["command"][0], "sh");
        assert_eq!(c["command"][2], KILL_SCRIPT);
        assert_eq!(c["command"][4], "b".repeat(64));
        assert!(!KILL_SCRIPT.contains(&"b".repeat(64)));
    }
}
