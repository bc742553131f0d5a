//! `pod-failure`: the selected pods are made to fail for the entry's duration without being
//! deleted, by swapping their containers' images for one that does not serve (default the
//! pause image: the container runs but answers nothing, so readiness fails), then restoring the
//! recorded images on revert. A pod's container images are the one part of a running pod's
//! spec Kubernetes lets a client change, which is why this is the mechanism (as in Chaos Mesh).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Selector, is_not_found, kube_err, split_id, target};
use crate::experiment::Mode;
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, Locality, ResolveCtx, Result, RevertToken,
    Target,
};

const KIND: &str = "pod-failure";

/// The default image swapped in: runs forever, serves nothing.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/pause:3.10";

k8s_spec! {
    /// `pod-failure`: swaps the selected pods' container images for `image` (default the pause
    /// image) for the entry's `duration`; the original images are restored on revert.
    PodFailureSpec {
        /// The image that replaces every container's image during the fault.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image: Option<String>,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    namespace: String,
    name: String,
    /// (container, original image)
    containers: Vec<(String, String)>,
}

async fn set_images(
    client: &kube::Client,
    ns: &str,
    name: &str,
    images: &[(String, String)],
) -> Result<bool> {
    let containers: Vec<_> = images
        .iter()
        .map(|(c, i)| json!({"name": c, "image": i}))
        .collect();
    let patch = Patch::Strategic(json!({"spec": {"containers": containers}}));
    match Api::<Pod>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(kube_err(
            &format!("patching the images of pod {ns}/{name}"),
            e,
        )),
    }
}

impl Fault for PodFailureSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            let client = ctx.env.kube().await?;
            let chosen = self
                .selector()
                .choose::<Pod>(client, "pods", ctx.rng)
                .await?;
            Ok(chosen
                .iter()
                .map(|(ns, name, _)| target("pod", ns, name, "made to fail".into()))
                .collect())
        })
    }

    /// Reads each pod's container images now: the revert puts exactly these back.
    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let mut items = Vec::new();
            for t in targets {
                let (ns, name) = split_id(t)?;
                let pod = Api::<Pod>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| kube_err(&format!("reading pod {}", t.id), e))?;
                let containers = pod
                    .spec
                    .map(|s| {
                        s.containers
                            .into_iter()
                            .map(|c| (c.name, c.image.unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                items.push(Item {
                    namespace: ns.into(),
                    name: name.into(),
                    containers,
                });
            }
            Ok(Some(RevertToken::new(KIND, &items)?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let image = self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
            for t in targets {
                let (ns, name) = split_id(t)?;
                let pod = Api::<Pod>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(|e| kube_err(&format!("reading pod {}", t.id), e))?;
                let swapped: Vec<(String, String)> = pod
                    .spec
                    .map(|s| {
                        s.containers
                            .into_iter()
                            .map(|c| (c.name, image.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                if !set_images(client, ns, name, &swapped).await? {
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
        super::access(&self.selector(), &[("", "pods", &["get", "list", "patch"])])
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.image.as_deref().is_some_and(str::is_empty) {
            return Err("`image`: empty".into());
        }
        self.selector().validate()
    }
}

/// Restores the recorded images. Idempotent; a pod deleted since is skipped (its replacement
/// has the original images anyway).
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let items: Vec<Item> = token.data()?;
    let client = env.kube().await?;
    for it in &items {
        set_images(client, &it.namespace, &it.name, &it.containers).await?;
    }
    Ok(())
}
