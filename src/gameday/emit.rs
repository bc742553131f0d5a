//! `rattle schedule FILE --emit cronjob`: the manifests that run a game day inside a cluster,
//! built as k8s-openapi objects (so they are well-formed by construction) and printed as YAML:
//! a ServiceAccount, least-privilege RBAC computed from the faults and probes the game day
//! uses (a Role and RoleBinding per namespace it touches; a ClusterRole only for what cannot be
//! namespaced: nodes, selections over every namespace), a ConfigMap with the game-day file and
//! its experiments, a PersistentVolumeClaim for the journal and the reports, and the CronJob
//! (one run at a time, never retried).
//!
//! The pod is laid out like the image (deploy/image/build.sh, Dockerfile) and the kustomize base
//! in deploy/, which tests/it/packaging.rs holds to the same pod spec: ServiceAccount
//! [`SERVICE_ACCOUNT`], user [`RUN_AS`], one volume at [`DATA_DIR`] with the journal in
//! [`JOURNAL_STATE_DIR`] and each run's reports under [`REPORTS_DIR`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, ServiceAccount,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::GameDay;
use crate::fault::{KubeAccess, KubeScope, Locality};

/// Where the ConfigMap is mounted in the job's pod.
pub const CONFIG_DIR: &str = "/etc/rattle";
/// Where the data volume (journal and reports) is mounted, and the container's working
/// directory: the image's `/var/lib/rattle`.
pub const DATA_DIR: &str = "/var/lib/rattle";
/// Where the journal's volume is mounted (the data volume).
pub const STATE_DIR: &str = DATA_DIR;
/// Where each run's reports go: `reports/` under the working directory, where `rattle gameday
/// run` puts `gameday-<name>-<time>/` when given no `--out`, so runs do not overwrite each other.
pub const REPORTS_DIR: &str = "/var/lib/rattle/reports";
/// The ServiceAccount the job runs as: the same as deploy/rbac.yaml's, so the kustomize base and
/// emitted game days share one identity per namespace; each game day adds its own Roles and
/// bindings to it.
pub const SERVICE_ACCOUNT: &str = "rattle";
/// The user and group the pod runs as: the image's non-root `rattle` (distroless's `nonroot`).
pub const RUN_AS: i64 = 65532;
/// The state directory inside that volume: a directory rattle creates 0700 itself, since the
/// volume's root may be group- or world-writable (some provisioners make it 0777, an fsGroup
/// makes it group-writable), which the journal refuses (issue #19).
pub const JOURNAL_STATE_DIR: &str = "/var/lib/rattle/state";
/// Largest ConfigMap Kubernetes stores.
const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// Options of `--emit cronjob`.
#[derive(Debug, Clone)]
pub struct EmitSettings {
    /// Container image with the rattle binary on its PATH.
    pub image: String,
    /// Namespace of the CronJob, its ServiceAccount and ConfigMap.
    pub namespace: String,
}

/// Why no manifest can be emitted.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The game day has no schedule.
    #[error("{file}: has no `schedule`: a CronJob needs one")]
    NoSchedule {
        /// The game-day file.
        file: String,
    },
    /// The schedule cannot be expressed by a CronJob.
    #[error("{file}:{line}:{column}: field `schedule.cron`: {message}")]
    Schedule {
        /// The game-day file.
        file: String,
        /// Line.
        line: u64,
        /// Column.
        column: u64,
        /// Why.
        message: String,
    },
    /// An input file cannot be read again.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The files do not fit in a ConfigMap.
    #[error("the game day and its experiments take {size} bytes; a ConfigMap holds at most 1 MiB")]
    TooLarge {
        /// Their size.
        size: usize,
    },
    /// A namespace or name is not a valid Kubernetes name.
    #[error("{what} {value:?} is not a valid Kubernetes name (lower-case letters, digits and '-')")]
    BadName {
        /// Which.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// YAML serialization failed (a bug).
    #[error("writing YAML: {0}")]
    Yaml(String),
}

/// A DNS-1123 label from a game-day name: lower case, `_` and `.` become `-`, at most `max`.
fn k8s_name(s: &str, max: usize) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(max);
    out.trim_matches('-').to_string()
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Verbs per (API group, resource).
pub type Rules = BTreeMap<(String, String), BTreeSet<String>>;

/// The access the game day's experiments need, merged: namespace (`None`: cluster-wide) →
/// rules.
pub fn access(gd: &GameDay) -> BTreeMap<Option<String>, Rules> {
    let mut all: Vec<KubeAccess> = Vec::new();
    for e in &gd.experiments {
        for f in &e.experiment.faults {
            all.extend(f.spec.fault().kube_access());
        }
        for p in &e.experiment.steady_state.probes {
            all.extend(p.spec.probe().kube_access());
        }
    }
    // Every run that touches a cluster watches it for evidence where it reaches.
    let scopes: BTreeSet<KubeScope> = all.iter().map(|a| a.scope.clone()).collect();
    all.extend(
        scopes
            .into_iter()
            .flat_map(crate::observe::events::evidence_access),
    );
    let mut out: BTreeMap<Option<String>, Rules> = BTreeMap::new();
    for a in all {
        let scopes: Vec<Option<String>> = match &a.scope {
            KubeScope::Cluster => vec![None],
            KubeScope::Namespaces(ns) => ns.iter().cloned().map(Some).collect(),
        };
        for scope in scopes {
            out.entry(scope)
                .or_default()
                .entry((a.api_group.to_string(), a.resource.to_string()))
                .or_default()
                .extend(a.verbs.iter().map(|v| v.to_string()));
        }
    }
    // What the cluster-wide role grants need not be granted again per namespace.
    if let Some(cluster) = out.get(&None).cloned() {
        for (scope, rules) in out.iter_mut() {
            if scope.is_none() {
                continue;
            }
            for (key, verbs) in rules.iter_mut() {
                if let Some(cv) = cluster.get(key) {
                    verbs.retain(|v| !cv.contains(v));
                }
            }
            rules.retain(|_, verbs| !verbs.is_empty());
        }
        out.retain(|scope, rules| scope.is_none() || !rules.is_empty());
    }
    out
}

fn rules(map: &Rules) -> Vec<PolicyRule> {
    map.iter()
        .map(|((group, resource), verbs)| PolicyRule {
            api_groups: Some(vec![group.clone()]),
            resources: Some(vec![resource.clone()]),
            verbs: verbs.iter().cloned().collect(),
            ..Default::default()
        })
        .collect()
}

fn meta(name: &str, namespace: Option<&str>, instance: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "rattle".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                instance.to_string(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "rattle".to_string(),
            ),
        ])),
        ..Default::default()
    }
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, EmitError> {
    serde_saphyr::to_string(v).map_err(|e| EmitError::Yaml(e.to_string()))
}

/// The ConfigMap's file names: `gameday.yaml` and `NN-<file name>` per experiment (ConfigMap
/// keys allow letters, digits, `-`, `_` and `.`).
fn config_key(i: usize, path: &std::path::Path) -> String {
    let base = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "experiment.yaml".into());
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{:02}-{base}", i + 1)
}

/// Things to know about running this game day in a cluster, for stderr.
pub fn warnings(gd: &GameDay) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(w) = gd.spec.notify.as_ref().map(|n| &n.webhook) {
        if w.url.is_some() {
            out.push(
                "notify.webhook.url is written into the ConfigMap in plain text; for a secret \
                 URL use url_env (the CronJob reads it from a Secret)"
                    .to_string(),
            );
        }
        if !w.headers.is_empty() {
            out.push(
                "notify.webhook.headers are written into the ConfigMap in plain text".to_string(),
            );
        }
    }
    for e in &gd.experiments {
        let local: Vec<&str> = e
            .experiment
            .faults
            .iter()
            .filter(|f| f.spec.fault().locality() == Locality::Local)
            .map(|f| f.spec.kind())
            .collect();
        if !local.is_empty() && e.experiment.setup.as_ref().is_none_or(|s| s.demo.is_none()) {
            out.push(format!(
                "{}: {} act on processes of the job's own pod, not of the cluster's nodes",
                e.path.display(),
                local.join(", ")
            ));
        }
    }
    out
}

/// The manifests, as one multi-document YAML stream.
pub fn cronjob(gd: &GameDay, settings: &EmitSettings) -> Result<String, EmitError> {
    let file = gd.file.display().to_string();
    let schedule = gd
        .schedule
        .as_ref()
        .ok_or_else(|| EmitError::NoSchedule { file: file.clone() })?;
    if let Err(message) = schedule.kubernetes_compatible() {
        let (line, column) = gd
            .spec
            .schedule
            .as_ref()
            .map(|s| (s.cron.line, s.cron.column))
            .unwrap_or((0, 0));
        return Err(EmitError::Schedule {
            file,
            line,
            column,
            message,
        });
    }
    if !valid_label(&settings.namespace) {
        return Err(EmitError::BadName {
            what: "namespace",
            value: settings.namespace.clone(),
        });
    }
    // CronJob names are limited to 52 characters (the controller appends a suffix).
    let short = k8s_name(gd.name(), 45);
    if short.is_empty() {
        return Err(EmitError::BadName {
            what: "game day name",
            value: gd.name().to_string(),
        });
    }
    let name = format!("rattle-{short}");
    let instance = k8s_name(gd.name(), 63);
    let ns = settings.namespace.as_str();
    // Objects outside `ns` (Roles in the target namespaces, the ClusterRole) carry `ns` in
    // their name: the same game day emitted for two namespaces must not share a binding.
    let rbac_name = format!("rattle-{ns}-{short}");

    // The ConfigMap: every experiment's file as written, and the game-day file pointing at
    // them by their keys.
    let mut data = BTreeMap::new();
    let mut spec = gd.spec.clone();
    let mut entries = Vec::new();
    for (i, e) in gd.experiments.iter().enumerate() {
        let key = config_key(i, &e.path);
        // Bounded and regular files only (issue #19), like every input file.
        let text = crate::fsutil::read_text_bounded(&e.path, 1024 * 1024).map_err(|source| {
            EmitError::Read {
                file: e.path.display().to_string(),
                source,
            }
        })?;
        data.insert(key.clone(), text);
        entries.push(crate::experiment::Located::new(key));
    }
    spec.experiments = crate::experiment::Located::new(entries);
    // Inside the cluster the CronJob is the scheduler; the window is still checked by
    // `rattle gameday run` at start. The window read its time zone from the schedule when it
    // named none: write it out, or it would silently become UTC.
    if let (Some(w), Some(parsed)) = (spec.window.as_mut(), gd.window.as_ref())
        && w.timezone.is_none()
    {
        w.timezone = Some(crate::experiment::Located::new(
            parsed.tz.name().to_string(),
        ));
    }
    spec.schedule = None;
    let gameday_yaml = format!(
        "# Generated by `rattle schedule --emit cronjob` from {file}; experiments are the other \
         keys of this ConfigMap.\n{}",
        yaml(&spec)?
    );
    data.insert("gameday.yaml".to_string(), gameday_yaml);
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_CONFIGMAP_BYTES {
        return Err(EmitError::TooLarge { size });
    }
    let config_map = ConfigMap {
        metadata: meta(&name, Some(ns), &instance),
        data: Some(data),
        ..Default::default()
    };

    let service_account = ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT, Some(ns), &instance),
        ..Default::default()
    };
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(ns.to_string()),
        ..Default::default()
    };

    let mut docs: Vec<String> = vec![format!(
        "# rattle game day {:?} from {file}, as a Kubernetes CronJob.\n\
             # Apply with: kubectl apply -f <this file>   (namespace {ns} must exist)\n\
             # The image must have the rattle binary on its PATH (deploy/image/build.sh or the Dockerfile).\n\
             # ServiceAccount {SERVICE_ACCOUNT} is shared with deploy/ and other game days in {ns}: to remove\n\
             # this game day, delete its CronJob, ConfigMap, Roles and bindings, not the ServiceAccount.\n{}",
        gd.name(),
        yaml(&service_account)?
    )];
    let access = access(gd);
    if access.is_empty() {
        docs[0].insert_str(
            0,
            "# No Role: the game day's faults and probes do not use the Kubernetes API.\n",
        );
    }
    for (scope, map) in &access {
        match scope {
            Some(target_ns) => {
                let role = Role {
                    metadata: meta(&rbac_name, Some(target_ns), &instance),
                    rules: Some(rules(map)),
                };
                let binding = RoleBinding {
                    metadata: meta(&rbac_name, Some(target_ns), &instance),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: rbac_name.clone(),
                    },
                    subjects: Some(vec![subject.clone()]),
                };
                docs.push(format!(
                    "# What the game day's faults and probes need in namespace {target_ns}.\n{}",
                    yaml(&role)?
                ));
                docs.push(yaml(&binding)?);
            }
            None => {
                let role = ClusterRole {
                    metadata: meta(&rbac_name, None, &instance),
                    rules: Some(rules(map)),
                    ..Default::default()
                };
                let binding = ClusterRoleBinding {
                    metadata: meta(&rbac_name, None, &instance),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "ClusterRole".into(),
                        name: rbac_name.clone(),
                    },
                    subjects: Some(vec![subject.clone()]),
                };
                docs.push(format!(
                    "# Cluster-wide: nodes are cluster-scoped, and selections naming no namespace \
                     span them all.\n# Name namespaces in the experiments to replace this with \
                     namespaced Roles.\n{}",
                    yaml(&role)?
                ));
                docs.push(yaml(&binding)?);
            }
        }
    }
    docs.push(yaml(&config_map)?);

    // The journal of active faults outlives each job's pod, so the next job reverts what a
    // killed one left (its init container runs `rattle recover`); so do the reports.
    let claim = format!("{name}-data");
    let pvc = PersistentVolumeClaim {
        metadata: meta(&claim, Some(ns), &instance),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    docs.push(format!(
        "# The journal of active faults (RATTLE_STATE_DIR, {JOURNAL_STATE_DIR}), kept across jobs: if a\n\
         # job's pod is killed outright, the next job's init container reverts what it left (rattle\n\
         # recover). Each run's reports stay beside it in {REPORTS_DIR}/ (nothing prunes them).\n\
         # Uses the cluster's default StorageClass.\n{}",
        yaml(&pvc)?
    ));

    // The container: the game day run once, its journal and reports on the claim.
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (own_ns, own_name) = crate::fault::k8s::node::OWN_POD_ENV;
    let mut env = vec![
        EnvVar {
            name: "RATTLE_STATE_DIR".into(),
            value: Some(JOURNAL_STATE_DIR.into()),
            ..Default::default()
        },
        // node-drain never evicts the pod running it.
        field_env(own_ns, "metadata.namespace"),
        field_env(own_name, "metadata.name"),
    ];
    if let Some(var) = gd
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook.url_env.as_ref())
    {
        env.push(EnvVar {
            name: var.value.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: format!("{name}-webhook"),
                    key: "url".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let container = Container {
        name: "rattle".into(),
        image: Some(settings.image.clone()),
        args: Some(
            [
                "gameday",
                "run",
                &format!("{CONFIG_DIR}/gameday.yaml"),
                "--yes",
                "--skip-outside-window",
                "--progress",
                "plain",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        env: Some(env),
        // Reports go to reports/ here, on the claim.
        working_dir: Some(DATA_DIR.into()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "gameday".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("512Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deadline = i64::try_from(gd.longest().as_secs()).unwrap_or(i64::MAX);
    // Before the game day: revert what an earlier job left in the journal if its pod was
    // killed outright (memory limit, node loss), with the same image and permissions.
    let recover = Container {
        name: "recover".into(),
        image: Some(settings.image.clone()),
        args: Some(
            ["recover", "--yes", "--state-dir", JOURNAL_STATE_DIR]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        working_dir: Some(DATA_DIR.into()),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        }]),
        security_context: container.security_context.clone(),
        ..Default::default()
    };
    let pod = PodSpec {
        init_containers: Some(vec![recover]),
        service_account_name: Some(SERVICE_ACCOUNT.into()),
        // The image's non-root user; fsGroup makes the claim writable by it.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: Some("Never".into()),
        // Time for rattle to revert its faults when the job is stopped.
        termination_grace_period_seconds: Some(120),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "gameday".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let cron = CronJob {
        metadata: meta(&name, Some(ns), &instance),
        spec: Some(CronJobSpec {
            schedule: schedule.expr.clone(),
            time_zone: Some(schedule.tz.name().to_string()),
            // One run at a time: a run due while another is in progress is skipped.
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(300),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(meta(&name, None, &instance)),
                spec: Some(JobSpec {
                    // A failed game day is a finding, not a flake: never re-run it.
                    backoff_limit: Some(0),
                    active_deadline_seconds: Some(deadline),
                    template: PodTemplateSpec {
                        metadata: Some(meta(&name, None, &instance)),
                        spec: Some(pod),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut cron_doc = String::from(
        "# One run at a time (concurrencyPolicy Forbid), never retried (backoffLimit 0); the \
         deadline covers every experiment's duration, recovery timeout and pause.\n",
    );
    if let Some(var) = gd
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook.url_env.as_ref())
    {
        cron_doc.push_str(&format!(
            "# The webhook URL comes from Secret {name}-webhook, key url (env {}):\n\
             #   kubectl -n {ns} create secret generic {name}-webhook --from-literal=url=https://...\n",
            var.value
        ));
    }
    cron_doc.push_str(&yaml(&cron)?);
    docs.push(cron_doc);
    Ok(docs
        .iter()
        .map(|d| d.trim_end().to_string() + "\n")
        .collect::<Vec<_>>()
        .join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(k8s_name("Weekly_Game.Day", 45), "weekly-game-day");
        assert!(valid_label("rattle"));
        assert!(!valid_label("Rattle"));
        assert!(!valid_label("-x"));
        assert_eq!(
            config_key(0, std::path::Path::new("a/b c.yaml")),
            "01-b-c.yaml"
        );
    }
}
