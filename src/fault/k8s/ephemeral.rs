//! The ephemeral-container path every in-pod fault shares: add an ephemeral container running
//! one argument vector (never a shell string) with the capabilities it needs, then wait until
//! the kubelet reports it running or finished, and fail with its exit code and message when it
//! failed. Ephemeral containers cannot be removed from a pod, so an in-pod fault is reverted by
//! adding another one that undoes what the first did (a qdisc deleted, a rule deleted, a
//! process signalled); [`Ephemeral::run`] is the one call for both.
//!
//! Waiting is what makes a fault honest: without it a typo in an image name or a `tc` that
//! refused its arguments would be reported as injected. The wait polls the pod (a GET every
//! 200 ms, bounded by [`WAIT_LIMIT`]: image pulls can be slow) rather than watching, so that it
//! needs no permission beyond the `get` every pod fault already declares.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{is_not_found, kube_err};
use crate::fault::{FaultError, Result};

/// How long an ephemeral container may take to start (image pull included) or, for a one-shot
/// command, to finish.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// One ephemeral container to add.
#[derive(Debug, Clone)]
pub struct Ephemeral<'a> {
    /// Name prefix; a unique suffix is appended.
    pub prefix: &'a str,
    /// Its image.
    pub image: &'a str,
    /// The argument vector it runs (`command`, so the image's entrypoint is bypassed).
    pub command: &'a [String],
    /// Linux capabilities added (e.g. `NET_ADMIN`).
    pub caps: &'a [&'a str],
    /// The container whose process namespace it joins (`targetContainerName`), if any.
    pub target_container: Option<&'a str>,
    /// Wait until it has exited (a one-shot command), not only started.
    pub until_exit: bool,
    /// Exit codes that count as success (beside 0).
    pub ok_codes: &'a [i32],
}

/// What happened to an ephemeral container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// The pod no longer exists: nothing was added.
    PodGone,
    /// Running, or finished with an accepted exit code.
    Done {
        /// The container's name.
        name: String,
        /// Its exit code if it finished.
        exit_code: Option<i32>,
    },
}

/// A name unique within this process and over time: `prefix-<ms>-<n>`, at most 63 characters.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut p: String = prefix.chars().take(40).collect();
    p.push_str(&format!(
        "-{}-{n}",
        jiff::Timestamp::now().as_millisecond() % 10_000_000_000
    ));
    p
}

/// The JSON of the container, as patched into `spec.ephemeralContainers`.
pub fn container_json(name: &str, e: &Ephemeral<'_>) -> Value {
    let mut c = json!({
        "name": name,
        "image": e.image,
        "command": e.command,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    if !e.caps.is_empty() {
        c["securityContext"] = json!({"capabilities": {"add": e.caps}});
    }
    if let Some(t) = e.target_container {
        c["targetContainerName"] = json!(t);
    }
    c
}

impl Ephemeral<'_> {
    /// Adds the container to `ns/pod` and waits for it (see the module's comment).
    pub async fn run(&self, client: &kube::Client, ns: &str, pod: &str) -> Result<Ran> {
        let name = unique(self.prefix);
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let patch = Patch::Strategic(json!({"spec": {"ephemeralContainers": [
            container_json(&name, self)
        ]}}));
        match api
            .patch_ephemeral_containers(pod, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Ran::PodGone),
            Err(e) => {
                return Err(kube_err(
                    &format!("adding ephemeral container {name} to {ns}/{pod}"),
                    e,
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let p = match api.get(pod).await {
                Ok(p) => p,
                Err(e) if is_not_found(&e) => return Ok(Ran::PodGone),
                Err(e) => return Err(kube_err(&format!("reading pod {ns}/{pod}"), e)),
            };
            if let Some(done) = self.state_of(&p, &name, ns, pod)? {
                return Ok(done);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(FaultError::Kube(format!(
                    "ephemeral container {name} in {ns}/{pod} did not {} within {}s (image {:?})",
                    if self.until_exit { "finish" } else { "start" },
                    WAIT_LIMIT.as_secs(),
                    self.image
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The outcome if the pod's status says the container is far enough along.
    fn state_of(&self, p: &Pod, name: &str, ns: &str, pod: &str) -> Result<Option<Ran>> {
        let Some(st) = p
            .status
            .as_ref()
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .and_then(|l| l.iter().find(|c| c.name == name))
        else {
            return Ok(None);
        };
        let Some(state) = st.state.as_ref() else {
            return Ok(None);
        };
        if let Some(t) = &state.terminated {
            if t.exit_code == 0 || self.ok_codes.contains(&t.exit_code) {
                return Ok(Some(Ran::Done {
                    name: name.to_string(),
                    exit_code: Some(t.exit_code),
                }));
            }
            let msg = t.message.as_deref().unwrap_or("").trim();
            let msg: String = msg.chars().take(500).collect();
            return Err(FaultError::Kube(format!(
                "ephemeral container {name} in {ns}/{pod} ({}) exited with code {}{}{}",
                self.command.join(" "),
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                }
            )));
        }
        if state.running.is_some() && !self.until_exit {
            return Ok(Some(Ran::Done {
                name: name.to_string(),
                exit_code: None,
            }));
        }
        if let Some(w) = &state.waiting {
            // A pull that cannot succeed is final; say so instead of waiting out the limit.
            let reason = w.reason.as_deref().unwrap_or("");
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "CreateContainerError"
            ) {
                return Err(FaultError::Kube(format!(
                    "ephemeral container {name} in {ns}/{pod} cannot start: {reason}: {}",
                    w.message.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique("rattle-netem");
        let b = unique("rattle-netem");
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn the_container_carries_caps_and_target() {
        let cmd = vec!["tc".to_string(), "qdisc".into()];
        let e = Ephemeral {
            prefix: "x",
            image: "img",
            command: &cmd,
            caps: &["NET_ADMIN"],
            target_container: Some("app"),
            until_exit: true,
            ok_codes: &[],
        };
        let c = container_json("x-1", &e);
        assert_eq!(c["command"], json!(["tc", "qdisc"]));
        assert_eq!(
            c["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN"])
        );
        assert_eq!(c["targetContainerName"], "app");
    }
}
