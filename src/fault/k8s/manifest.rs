//! `manifest`: applies any Kubernetes object for the entry's duration and deletes it on revert,
//! so that faults other tools inject through their own objects (a Chaos Mesh `IOChaos` or
//! `TimeChaos`, a Litmus `ChaosEngine`, a `NetworkPolicy` that isolates a service) are timed,
//! measured, gated and reverted like rattle's own.
//!
//! The object is applied with server-side apply (field manager `rattle`) through
//! `Api<DynamicObject>`: any kind works, the API server merges and validates it, and the fields
//! it sets are recorded as rattle's. Its resource (plural) and scope come from the API server's
//! discovery, or from `resource` / `cluster_scoped` when given (which also names the resource in
//! the RBAC that `kube_access` declares: irregular plurals like Chaos Mesh's `iochaos` are only
//! right there when written).
//!
//! rattle deletes what it applied, so it never takes over an object that already exists:
//! resolve refuses one (a `--dry-run` says so), and the revert deletes the object only while
//! rattle is still one of its field managers, so an object someone re-created since is left
//! alone. Protected namespaces are refused unless `allow_namespaces` lists them, before anything
//! is touched.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{is_not_found, kube_err, protected_namespaces};
use crate::fault::{
    BoxFuture, Fault, FaultEnv, FaultError, KubeAccess, KubeScope, Locality, ResolveCtx, Result,
    RevertToken, Target,
};

const KIND: &str = "manifest";

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "rattle";

/// The largest manifest file read.
const MAX_FILE: u64 = 1024 * 1024;

/// `manifest`: server-side applies one Kubernetes object (inline or from a file) when the fault
/// fires and deletes it when the fault ends. The object must not exist beforehand.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// The object, inline: a YAML mapping, or a string holding one YAML document. Give this or
    /// `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// A file holding the object (one YAML or JSON document), relative to the directory rattle
    /// runs in. Give this or `object`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The namespace of a namespaced object whose `metadata.namespace` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's resource (plural), e.g. `iochaos`: skips discovery, and names the resource
    /// in the RBAC rattle emits. Default: asked of the API server's discovery (and guessed from
    /// the kind for RBAC, which is wrong for irregular plurals like Chaos Mesh's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The kind is cluster-scoped (only read with `resource`; discovery says it otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scoped: bool,
    /// Protected namespaces (kube-system, ...) this entry may touch anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_namespaces: Vec<String>,
}

/// The object, read and checked.
#[derive(Debug, Clone)]
struct Object {
    gvk: GroupVersionKind,
    name: String,
    namespace: Option<String>,
    body: Value,
}

/// What the revert needs: where the object is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    api_version: String,
    kind: String,
    plural: String,
    namespace: Option<String>,
    name: String,
}

/// `s` as a `&'static str`, each distinct string leaked once: [`KubeAccess`] names resources
/// with static strings, and a manifest's kind is only known from the file.
fn intern(s: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(|| Mutex::new(BTreeSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(&found) = seen.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// Is `name` a name the API server could accept (a DNS subdomain)?
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

impl ManifestSpec {
    /// Reads and checks the object. Messages name the field.
    fn object(&self) -> std::result::Result<Object, String> {
        let (field, body) = match (&self.object, &self.file) {
            (Some(_), Some(_)) => {
                return Err("`object` and `file`: give one or the other, not both".into());
            }
            (None, None) => return Err("one of `object` or `file` is required".into()),
            (Some(Value::String(text)), None) => (
                "object",
                serde_saphyr::from_str::<Value>(text)
                    .map_err(|e| format!("`object`: not a YAML document: {e}"))?,
            ),
            (Some(v), None) => ("object", v.clone()),
            (None, Some(path)) => {
                let text = crate::fsutil::read_text_bounded(path, MAX_FILE)
                    .map_err(|e| format!("`file`: {}: {e}", path.display()))?;
                (
                    "file",
                    serde_saphyr::from_str::<Value>(&text).map_err(|e| {
                        format!("`file`: {}: not a YAML document: {e}", path.display())
                    })?,
                )
            }
        };
        if !body.is_object() {
            return Err(format!("`{field}`: not a mapping (a Kubernetes object)"));
        }
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let api_version =
            text("apiVersion").ok_or(format!("`{field}`: `apiVersion` is missing"))?;
        let kind = text("kind").ok_or(format!("`{field}`: `kind` is missing"))?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => (g, v),
            None => ("", api_version),
            _ => {
                return Err(format!(
                    "`{field}`: apiVersion {api_version:?} is not group/version"
                ));
            }
        };
        if kind.contains('/') || version.is_empty() {
            return Err(format!("`{field}`: kind {kind:?} is not a kind"));
        }
        let meta = body.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or(format!(
                "`{field}`: `metadata.name` is missing (generateName cannot be deleted on revert)"
            ))?;
        if !valid_name(name) {
            return Err(format!(
                "`{field}`: metadata.name {name:?} is not a valid name"
            ));
        }
        let meta_ns = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str);
        let namespace = match (meta_ns, self.namespace.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "`namespace`: {b} differs from the object's metadata.namespace {a}"
                ));
            }
            (Some(a), _) => Some(a.to_string()),
            (None, b) => b.map(str::to_string),
        };
        if namespace.as_deref().is_some_and(|n| !valid_name(n)) {
            return Err(format!(
                "`namespace`: {namespace:?} is not a valid namespace"
            ));
        }
        Ok(Object {
            gvk: GroupVersionKind::gvk(group, version, kind),
            name: name.to_string(),
            namespace,
            body,
        })
    }

    /// The resource and whether it is namespaced: as written, or from discovery.
    async fn resource(&self, client: &kube::Client, obj: &Object) -> Result<(ApiResource, bool)> {
        if let Some(plural) = &self.resource {
            return Ok((
                ApiResource::from_gvk_with_plural(&obj.gvk, plural),
                !self.cluster_scoped,
            ));
        }
        let (ar, caps) = kube::discovery::pinned_kind(client, &obj.gvk)
            .await
            .map_err(|e| {
                kube_err(
                    &format!(
                        "finding {} {} in the API server's discovery (is its CRD installed?)",
                        obj.gvk.kind,
                        obj.gvk.api_version()
                    ),
                    e,
                )
            })?;
        Ok((ar, caps.scope == Scope::Namespaced))
    }

    /// The API of the object, with its namespace checked against the scope.
    async fn api(
        &self,
        client: &kube::Client,
        obj: &Object,
    ) -> Result<(Api<DynamicObject>, ApiResource, Option<String>)> {
        let (ar, namespaced) = self.resource(client, obj).await?;
        let ns = match (namespaced, &obj.namespace) {
            (true, Some(ns)) => Some(ns.clone()),
            (true, None) => {
                return Err(FaultError::InvalidSelection(format!(
                    "{} is namespaced: set metadata.namespace or `namespace`",
                    obj.gvk.kind
                )));
            }
            (false, Some(ns)) => {
                return Err(FaultError::InvalidSelection(format!(
                    "{} is cluster-scoped, but a namespace ({ns}) is given",
                    obj.gvk.kind
                )));
            }
            (false, None) => None,
        };
        let api = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        Ok((api, ar, ns))
    }

    fn id(obj: &Object) -> String {
        match &obj.namespace {
            Some(ns) => format!("{ns}/{}", obj.name),
            None => obj.name.clone(),
        }
    }
}

impl Fault for ManifestSpec {
    /// The object to apply, after checking that it does not exist yet.
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::Refused)?;
            let obj = self.object().map_err(FaultError::InvalidSelection)?;
            let client = ctx.env.kube().await?;
            let (api, ar, _) = self.api(client, &obj).await?;
            match api.get_opt(&obj.name).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return Err(FaultError::Refused(format!(
                        "{} {} already exists: rattle deletes what it applies when the fault \
                         ends, so it does not take over an object it did not create (delete it, \
                         or give the fault's object another name)",
                        obj.gvk.kind,
                        Self::id(&obj)
                    )));
                }
                Err(e) => return Err(kube_err(&format!("reading {}", ar.plural), e)),
            }
            Ok(vec![Target {
                kind: obj.gvk.kind.clone(),
                id: Self::id(&obj),
                description: format!(
                    "{} ({}), server-side applied by {FIELD_MANAGER}, deleted on revert",
                    obj.gvk.api_version(),
                    ar.plural
                ),
            }])
        })
    }

    fn revert_token<'a>(
        &'a self,
        env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let obj = self.object().map_err(FaultError::InvalidSelection)?;
            let client = env.kube().await?;
            let (_, ar, namespace) = self.api(client, &obj).await?;
            let token = Token {
                api_version: ar.api_version,
                kind: ar.kind,
                plural: ar.plural,
                namespace,
                name: obj.name,
            };
            Ok(Some(RevertToken::new(KIND, &token)?))
        })
    }

    fn inject<'a>(
        &'a self,
        env: &'a FaultEnv,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::Refused)?;
            let obj = self.object().map_err(FaultError::InvalidSelection)?;
            let client = env.kube().await?;
            let (api, ar, _) = self.api(client, &obj).await?;
            let mut body = obj.body.clone();
            if let (Some(ns), Some(meta)) = (&obj.namespace, body.get_mut("metadata")) {
                meta["namespace"] = Value::String(ns.clone());
            }
            api.patch(
                &obj.name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| kube_err(&format!("applying {} {}", ar.plural, Self::id(&obj)), e))?;
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        true
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Cluster
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let obj = self.object()?;
        if let Some(r) = &self.resource
            && (r.is_empty() || r.contains('/') || r.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "`resource`: {r:?} is not a resource name (the lowercase plural, e.g. iochaos)"
            ));
        }
        if self.cluster_scoped && self.resource.is_none() {
            return Err(
                "`cluster_scoped`: only read with `resource` (discovery says it otherwise)".into(),
            );
        }
        if let Some(ns) = &obj.namespace
            && protected_namespaces().contains(ns)
            && !self.allow_namespaces.contains(ns)
        {
            return Err(format!(
                "`namespace`: {ns} is protected; list it in `allow_namespaces` to fault it"
            ));
        }
        Ok(())
    }

    /// Get (does it exist; is it still ours), patch (server-side apply) and delete, on the
    /// object's resource in its namespace (cluster-wide for a cluster-scoped object).
    fn kube_access(&self) -> Vec<KubeAccess> {
        let Ok(obj) = self.object() else {
            return Vec::new();
        };
        let plural = match &self.resource {
            Some(r) => r.clone(),
            None => ApiResource::from_gvk(&obj.gvk).plural,
        };
        let scope = match (&obj.namespace, self.cluster_scoped) {
            (Some(ns), false) => KubeScope::Namespaces(vec![ns.clone()]),
            _ => KubeScope::Cluster,
        };
        vec![KubeAccess {
            scope,
            api_group: intern(&obj.gvk.group),
            resource: intern(&plural),
            verbs: &["get", "create", "patch", "delete"],
        }]
    }
}

/// Deletes the object a token names, if it is still there and still rattle's (it lists the
/// `rattle` field manager). Idempotent: a missing object is a success.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    if !valid_name(&t.name) || t.plural.is_empty() || t.kind.is_empty() {
        return Err(FaultError::InvalidSelection(format!(
            "manifest revert token names no object: {t:?}"
        )));
    }
    let (group, version) = match t.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", t.api_version.as_str()),
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &t.kind),
        &t.plural,
    );
    let client = env.kube().await?;
    let api: Api<DynamicObject> = match &t.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let id = match &t.namespace {
        Some(ns) => format!("{ns}/{}", t.name),
        None => t.name.clone(),
    };
    let current = match api.get_opt(&t.name).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(()),
        Err(e) => return Err(kube_err(&format!("reading {} {id}", t.plural), e)),
    };
    let ours = current
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER));
    if !ours {
        // Re-created by someone else since: not rattle's to delete.
        return Ok(());
    }
    match api.delete(&t.name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(kube_err(&format!("deleting {} {id}", t.plural), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ManifestSpec {
        serde_saphyr::from_str::<ManifestSpec>(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    const IOCHAOS: &str = "{ resource: iochaos, object: { apiVersion: chaos-mesh.org/v1alpha1, \
        kind: IOChaos, metadata: { name: io-latency, namespace: shop }, spec: { action: latency } } }";

    #[test]
    fn reads_the_object_and_declares_its_access() {
        let s = spec(IOCHAOS);
        assert_eq!(s.validate(), Ok(()));
        let access = s.kube_access();
        assert_eq!(access.len(), 1);
        assert_eq!(access[0].api_group, "chaos-mesh.org");
        assert_eq!(access[0].resource, "iochaos");
        assert_eq!(access[0].scope, KubeScope::Namespaces(vec!["shop".into()]));
        let inline = spec(
            "{ namespace: shop, object: \"apiVersion: v1\\nkind: ConfigMap\\nmetadata: { name: x }\\n\" }",
        );
        assert_eq!(inline.validate(), Ok(()));
        assert_eq!(inline.kube_access()[0].resource, "configmaps");
        assert_eq!(inline.kube_access()[0].api_group, "");
    }

    #[test]
    fn validation_names_the_field() {
        let err = |y: &str| spec(y).validate().err().unwrap_or_default();
        assert!(err("{}").contains("`object` or `file`"));
        assert!(err("{ object: [1] }").starts_with("`object`"));
        assert!(err("{ object: { kind: X, metadata: { name: a } } }").contains("apiVersion"));
        assert!(err("{ object: { apiVersion: v1, metadata: { name: a } } }").contains("kind"));
        assert!(err("{ object: { apiVersion: v1, kind: X } }").contains("metadata.name"));
        assert!(
            err("{ object: { apiVersion: v1, kind: X, metadata: { name: Bad_Name } } }")
                .contains("not a valid name")
        );
        assert!(
            err("{ namespace: a, object: { apiVersion: v1, kind: X, metadata: { name: x, namespace: b } } }")
                .starts_with("`namespace`")
        );
        assert!(
            err("{ object: { apiVersion: v1, kind: X, metadata: { name: x, namespace: kube-system } } }")
                .contains("protected")
        );
        assert!(err("{ file: /nonexistent/chaos.yaml }").starts_with("`file`"));
        assert!(err("{ file: /dev/zero }").starts_with("`file`"));
        assert!(err("{ object: \"a: [\" }").starts_with("`object`"));
        assert!(
            err(
                "{ resource: IOChaos, object: { apiVersion: v1, kind: X, metadata: { name: x } } }"
            )
            .starts_with("`resource`")
        );
        let allowed = spec(
            "{ allow_namespaces: [kube-system], object: { apiVersion: v1, kind: X, metadata: { name: x, namespace: kube-system } } }",
        );
        assert_eq!(allowed.validate(), Ok(()));
    }

    #[test]
    fn interned_strings_are_shared() {
        let a = intern("iochaos");
        let b = intern(&String::from("iochaos"));
        assert!(std::ptr::eq(a, b));
    }
}
