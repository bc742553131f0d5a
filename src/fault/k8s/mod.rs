//! Kubernetes faults through the kube crate: `pod-kill` (nothing to revert),
//! `deployment-scale` (scale down, restore the recorded replica count on revert) and
//! `rollout-restart` (nothing to revert) here; `pod-failure`, `node-drain` and
//! `pod-network-delay` in their own files.
//!
//! Every kind selects its objects the same way ([`Selector`]: namespaces, label selector, field
//! selector, names, then the seeded [`crate::fault::select::choose`] by mode), so the blast radius
//! rules live in one place: protected namespaces (`kube-system` and the rest of
//! [`protected_namespaces`]) are refused unless the entry lists them in `allow_namespaces`, and
//! are skipped silently when no namespace is named (all namespaces). The selector fields are
//! repeated in each spec through [`k8s_spec!`] rather than nested with `#[serde(flatten)]`,
//! because flatten would break `deny_unknown_fields` and error locations.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use rand::rngs::StdRng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, KubeScope, Locality, ResolveCtx, Result,
    RevertToken, Target, select,
};
use crate::experiment::{HumanDuration, Mode};

/// Namespaces refused unless an entry allows them, when `RATTLE_PROTECTED_NAMESPACES` does not
/// say otherwise.
pub const DEFAULT_PROTECTED: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// Environment variable holding the protected namespaces, comma-separated (replaces the
/// default list).
pub const PROTECTED_ENV: &str = "RATTLE_PROTECTED_NAMESPACES";

/// The protected namespaces in force.
pub fn protected_namespaces() -> BTreeSet<String> {
    match std::env::var(PROTECTED_ENV) {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Err(_) => DEFAULT_PROTECTED.iter().map(|s| s.to_string()).collect(),
    }
}

/// A kube error as a fault error.
pub(crate) fn kube_err(what: &str, e: kube::Error) -> FaultError {
    FaultError::Kube(format!("{what}: {e}"))
}

/// True for a 404 from the API server.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

/// A borrowed view of the selector fields every Kubernetes spec has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selector<'a> {
    pub namespace: Option<&'a str>,
    pub namespaces: &'a [String],
    pub labels: Option<&'a str>,
    pub fields: Option<&'a str>,
    pub names: &'a [String],
    pub mode: &'a Mode,
    pub allow_namespaces: &'a [String],
}

impl Selector<'_> {
    /// Namespaces named, in order, without duplicates; empty means all namespaces.
    pub(crate) fn named_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for ns in self
            .namespace
            .into_iter()
            .chain(self.namespaces.iter().map(|s| s.as_str()))
        {
            if !out.iter().any(|o| o == ns) {
                out.push(ns.to_string());
            }
        }
        out
    }

    fn allowed(&self, ns: &str, protected: &BTreeSet<String>) -> bool {
        !protected.contains(ns) || self.allow_namespaces.iter().any(|a| a == ns)
    }

    /// Static checks: a protected namespace named without being allowed is refused here, before
    /// anything is touched.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let protected = protected_namespaces();
        for ns in self.named_namespaces() {
            if ns.is_empty() {
                return Err("`namespace`: empty".into());
            }
            if !self.allowed(&ns, &protected) {
                return Err(format!(
                    "`namespace`: {ns} is protected; list it in `allow_namespaces` to fault it"
                ));
            }
        }
        if self.names.iter().any(|n| n.is_empty()) {
            return Err("`names`: an empty name".into());
        }
        Ok(())
    }

    /// Lists the objects of type `K` matching the selector, as (namespace, name, object),
    /// sorted by namespace/name, with protected namespaces filtered out or refused.
    async fn candidates<K>(
        &self,
        client: &kube::Client,
        what: &str,
    ) -> Result<Vec<(String, String, K)>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        self.validate().map_err(FaultError::Refused)?;
        let protected = protected_namespaces();
        let mut lp = ListParams::default();
        if let Some(l) = self.labels {
            lp = lp.labels(l);
        }
        if let Some(f) = self.fields {
            lp = lp.fields(f);
        }
        let namespaces = self.named_namespaces();
        let apis: Vec<Api<K>> = if namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let mut out = Vec::new();
        for api in apis {
            let list = api
                .list(&lp)
                .await
                .map_err(|e| kube_err(&format!("listing {what}"), e))?;
            for obj in list.items {
                let meta = obj.meta();
                let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
                    continue;
                };
                if !self.allowed(&ns, &protected) {
                    continue;
                }
                if !self.names.is_empty() && !self.names.contains(&name) {
                    continue;
                }
                out.push((ns, name, obj));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    fn describe(&self, what: &str) -> String {
        let mut parts = vec![what.to_string()];
        let ns = self.named_namespaces();
        parts.push(if ns.is_empty() {
            "in all namespaces".into()
        } else {
            format!("in {}", ns.join(","))
        });
        if let Some(l) = self.labels {
            parts.push(format!("with labels {l}"));
        }
        if let Some(f) = self.fields {
            parts.push(format!("with fields {f}"));
        }
        if !self.names.is_empty() {
            parts.push(format!("named {}", self.names.join(",")));
        }
        parts.join(" ")
    }

    /// Lists and chooses: the seeded selection by mode, never empty.
    pub(crate) async fn choose<K>(
        &self,
        client: &kube::Client,
        what: &str,
        rng: &mut StdRng,
    ) -> Result<Vec<(String, String, K)>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let candidates = self.candidates::<K>(client, what).await?;
        select::choose(candidates, self.mode, rng)
            .map_err(|e| FaultError::NoTarget(format!("{}: {e}", self.describe(what))))
    }
}

/// Access rules for a selection: each `(api group, resource, verbs)` in the selector's
/// namespaces (cluster-wide when it names none).
pub(crate) fn access(
    sel: &Selector<'_>,
    rules: &[(&'static str, &'static str, &'static [&'static str])],
) -> Vec<KubeAccess> {
    let scope = KubeScope::of(sel.named_namespaces());
    rules
        .iter()
        .map(|&(api_group, resource, verbs)| KubeAccess {
            scope: scope.clone(),
            api_group,
            resource,
            verbs,
        })
        .collect()
}

/// Defines a Kubernetes fault spec: the shared selector fields, then the kind's own.
macro_rules! k8s_spec {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The namespace to select in.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub namespace: Option<String>,
            /// More namespaces to select in. With no namespace at all, every namespace is
            /// searched (protected ones skipped).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub namespaces: Vec<String>,
            /// A label selector, e.g. `app=checkout,tier!=db`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub labels: Option<String>,
            /// A field selector, e.g. `status.phase=Running`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub fields: Option<String>,
            /// Only objects with one of these names.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub names: Vec<String>,
            /// How many of the matching objects to act on. Default: one, chosen at random
            /// (seeded).
            #[serde(default)]
            pub mode: Mode,
            /// Protected namespaces (kube-system, ...) this entry may touch anyway.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub allow_namespaces: Vec<String>,
            $($(#[$fm])* pub $f: $t,)*
        }

        impl $name {
            pub(crate) fn selector(&self) -> Selector<'_> {
                Selector {
                    namespace: self.namespace.as_deref(),
                    namespaces: &self.namespaces,
                    labels: self.labels.as_deref(),
                    fields: self.fields.as_deref(),
                    names: &self.names,
                    mode: &self.mode,
                    allow_namespaces: &self.allow_namespaces,
                }
            }
        }
    };
}

pub mod manifest;
pub mod netem;
pub mod node;
pub mod pod_failure;
// In-pod faults (issue #18).
pub mod container_kill;
pub mod ephemeral;
pub mod pod_net;
pub mod pod_stress;

k8s_spec! {
    /// `pod-kill`: deletes the selected pods (with a grace period, default 0s: a kill).
    /// Instantaneous: the pods' controller is expected to replace them; the `kubernetes` probe
    /// measures when it did.
    PodKillSpec {
        /// Grace period given to the pods (`0s` kills at once).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub grace_period: Option<HumanDuration>,
    }
}

/// A target of kind `kind` for object `ns/name`.
pub(crate) fn target(kind: &str, ns: &str, name: &str, description: String) -> Target {
    Target {
        kind: kind.to_string(),
        id: format!("{ns}/{name}"),
        description,
    }
}

/// Is `s` a DNS-1123 label (a container or namespace name)?
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Splits a `namespace/name` target id.
pub(crate) fn split_id(t: &Target) -> Result<(&str, &str)> {
    t.id.split_once('/').ok_or_else(|| {
        FaultError::InvalidSelection(format!("target id {:?} is not namespace/name", t.id))
    })
}

fn pod_description(p: &Pod) -> String {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    format!("{phase}{node}")
}

impl Fault for PodKillSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            let client = ctx.env.kube().await?;
            let chosen = self
                .selector()
                .choose::<Pod>(client, "pods", ctx.rng)
                .await?;
            Ok(chosen
                .iter()
                .map(|(ns, name, p)| target("pod", ns, name, pod_description(p)))
                .collect())
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async { Ok(None) })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let grace = self
                .grace_period
                .map(|g| u32::try_from(g.get().as_secs()).unwrap_or(u32::MAX))
                .unwrap_or(0);
            let dp = DeleteParams {
                grace_period_seconds: Some(grace),
                ..DeleteParams::default()
            };
            let calls = targets.iter().map(|t| {
                let dp = dp.clone();
                async move {
                    let (ns, name) = split_id(t)?;
                    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                    match api.delete(name, &dp).await {
                        Ok(_) => Ok(()),
                        // Already gone: the kill's effect holds.
                        Err(e) if is_not_found(&e) => Ok(()),
                        Err(e) => Err(kube_err(&format!("deleting pod {}", t.id), e)),
                    }
                }
            });
            join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<()>>>()?;
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
        access(
            &self.selector(),
            &[("", "pods", &["get", "list", "delete"])],
        )
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.selector().validate()
    }
}

/// A fault with nothing to revert has no tokens; a token naming it is reverted by doing nothing.
pub async fn revert_none(_env: &FaultEnv, _token: &RevertToken) -> Result<()> {
    Ok(())
}

/// Which workload kind a scale fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    #[default]
    Deployment,
    /// apps/v1 StatefulSet.
    Statefulset,
}

k8s_spec! {
    /// `deployment-scale`: scales the selected deployments (or statefulsets) to `replicas`
    /// (default 0) for the entry's `duration`, then restores the replica counts recorded before.
    ScaleSpec {
        /// `deployment` (default) or `statefulset`.
        #[serde(default)]
        pub kind: WorkloadKind,
        /// Replicas during the fault.
        #[serde(default)]
        pub replicas: u32,
    }
}

/// One workload's recorded replica count, in a scale revert token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScaleItem {
    namespace: String,
    name: String,
    replicas: i32,
}

/// The data of a `deployment-scale` revert token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScaleToken {
    kind: WorkloadKind,
    items: Vec<ScaleItem>,
}

const SCALE_KIND: &str = "deployment-scale";

async fn get_replicas(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
) -> Result<i32> {
    let scale = match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
        WorkloadKind::Statefulset => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
    }
    .map_err(|e| kube_err(&format!("reading the scale of {ns}/{name}"), e))?;
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// Sets the replicas of one workload; `Ok(false)` when it no longer exists.
async fn set_replicas(
    client: &kube::Client,
    kind: WorkloadKind,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<bool> {
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    let pp = PatchParams::default();
    let r = match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await
        }
        WorkloadKind::Statefulset => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await
        }
    };
    match r {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(kube_err(&format!("scaling {ns}/{name} to {replicas}"), e)),
    }
}

impl Fault for ScaleSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            let client = ctx.env.kube().await?;
            let sel = self.selector();
            Ok(match self.kind {
                WorkloadKind::Deployment => sel
                    .choose::<Deployment>(client, "deployments", ctx.rng)
                    .await?
                    .iter()
                    .map(|(ns, name, d)| {
                        let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        target("deployment", ns, name, format!("{r} replicas"))
                    })
                    .collect(),
                WorkloadKind::Statefulset => sel
                    .choose::<StatefulSet>(client, "statefulsets", ctx.rng)
                    .await?
                    .iter()
                    .map(|(ns, name, d)| {
                        let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        target("statefulset", ns, name, format!("{r} replicas"))
                    })
                    .collect(),
            })
        })
    }

    /// Records each target's replica count now, read through the scale subresource.
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
                let replicas = get_replicas(client, self.kind, ns, name).await?;
                items.push(ScaleItem {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    replicas,
                });
            }
            Ok(Some(RevertToken::new(
                SCALE_KIND,
                &ScaleToken {
                    kind: self.kind,
                    items,
                },
            )?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let replicas = i32::try_from(self.replicas).unwrap_or(i32::MAX);
            for t in targets {
                let (ns, name) = split_id(t)?;
                if !set_replicas(client, self.kind, ns, name, replicas).await? {
                    return Err(FaultError::NoTarget(format!("{} {} is gone", t.kind, t.id)));
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
        let (objects, scale) = match self.kind {
            WorkloadKind::Deployment => ("deployments", "deployments/scale"),
            WorkloadKind::Statefulset => ("statefulsets", "statefulsets/scale"),
        };
        access(
            &self.selector(),
            &[
                ("apps", objects, &["get", "list"]),
                ("apps", scale, &["get", "patch"]),
            ],
        )
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.selector().validate()
    }
}

/// Restores the recorded replica counts. Idempotent; a workload deleted since is skipped.
pub async fn revert_scale(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let data: ScaleToken = token.data()?;
    let client = env.kube().await?;
    for item in &data.items {
        set_replicas(
            client,
            data.kind,
            &item.namespace,
            &item.name,
            item.replicas,
        )
        .await?;
    }
    Ok(())
}

k8s_spec! {
    /// `rollout-restart`: restarts the selected deployments (or statefulsets) the way
    /// `kubectl rollout restart` does, by stamping the pod template with the current time.
    /// Instantaneous: the rollout replaces every pod; nothing to revert.
    RestartSpec {
        /// `deployment` (default) or `statefulset`.
        #[serde(default)]
        pub kind: WorkloadKind,
    }
}

impl Fault for RestartSpec {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        let scale = ScaleSpec {
            namespace: self.namespace.clone(),
            namespaces: self.namespaces.clone(),
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            names: self.names.clone(),
            mode: self.mode,
            allow_namespaces: self.allow_namespaces.clone(),
            kind: self.kind,
            replicas: 0,
        };
        Box::pin(async move { scale.resolve(ctx).await })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async { Ok(None) })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = env.kube().await?;
            let now = jiff::Timestamp::now().to_string();
            let patch = Patch::Merge(serde_json::json!({"spec": {"template": {"metadata": {
                "annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}));
            let pp = PatchParams::default();
            for t in targets {
                let (ns, name) = split_id(t)?;
                let r = match self.kind {
                    WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
                        .patch(name, &pp, &patch)
                        .await
                        .map(|_| ()),
                    WorkloadKind::Statefulset => Api::<StatefulSet>::namespaced(client.clone(), ns)
                        .patch(name, &pp, &patch)
                        .await
                        .map(|_| ()),
                };
                r.map_err(|e| kube_err(&format!("restarting {}", t.id), e))?;
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
        let objects = match self.kind {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::Statefulset => "statefulsets",
        };
        access(
            &self.selector(),
            &[("apps", objects, &["get", "list", "patch"])],
        )
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.selector().validate()
    }
}
