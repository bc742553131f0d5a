//! What every fault kind declares, held against what ships with it, so that a new kind cannot
//! ship without its example, its permissions or its locality: each registered kind has an
//! example under experiments/; the RBAC in deploy/ grants every Kubernetes access the examples'
//! faults and probes declare; the Role that `rattle schedule --emit cronjob` writes for a game
//! day of the examples grants exactly that; and the checks that read a kind's declared locality
//! (a proxy fault needs its proxy in the right mode, a CronJob warns about local faults) act on
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use rattle::experiment::Experiment;
use rattle::fault::{FAULT_KINDS, KubeAccess, KubeScope, Locality};

use crate::support::{rattle, repo, write};

/// Every example experiment (experiments/*.yaml; game days are in a subdirectory), loaded.
fn examples() -> Vec<(PathBuf, Experiment)> {
    let mut out: Vec<(PathBuf, Experiment)> = std::fs::read_dir(repo().join("experiments"))
        .expect("experiments/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let e = rattle::experiment::load(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, e)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty());
    out
}

/// The Kubernetes access an experiment's probes declare, each with the probe's kind.
fn probe_access(e: &Experiment) -> Vec<(&'static str, KubeAccess)> {
    e.steady_state
        .probes
        .iter()
        .flat_map(|p| {
            let kind = p.spec.kind();
            p.spec
                .probe()
                .kube_access()
                .into_iter()
                .map(move |a| (kind, a))
        })
        .collect()
}

/// What an experiment's faults and probes declare, each with what declared it.
fn declared(e: &Experiment) -> Vec<(String, KubeAccess)> {
    let faults = e.faults.iter().flat_map(|f| {
        f.spec
            .fault()
            .kube_access()
            .into_iter()
            .map(|a| (format!("fault {} ({})", *f.name, f.spec.kind()), a))
    });
    let probes = probe_access(e)
        .into_iter()
        .map(|(kind, a)| (format!("a {kind} probe"), a));
    faults.chain(probes).collect()
}

/// The YAML documents of a multi-document stream, each with its `kind`.
fn docs(yaml: &str) -> Vec<(String, String)> {
    yaml.split("\n---\n")
        .map(|d| {
            let v: serde_json::Value = serde_saphyr::from_str(d).expect("a YAML document");
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            (kind, d.to_string())
        })
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Does a rule of `rules` allow `verb` on `resource` of `group`? (`*` matches anything.)
fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    let has = |list: Option<&Vec<String>>, x: &str| {
        list.is_some_and(|l| l.iter().any(|v| v == x || v == "*"))
    };
    rules.iter().any(|r| {
        has(r.api_groups.as_ref(), group)
            && has(r.resources.as_ref(), resource)
            && has(Some(&r.verbs), verb)
    })
}

#[test]
fn every_fault_kind_has_an_example() {
    let examples = examples();
    let used: BTreeSet<&str> = examples
        .iter()
        .flat_map(|(_, e)| e.faults.iter().map(|f| f.spec.kind()))
        .collect();
    let missing: Vec<&&str> = FAULT_KINDS.iter().filter(|k| !used.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "fault kinds without an example experiment under experiments/: {missing:?}"
    );
}

#[test]
fn every_probe_kind_has_an_example() {
    let examples = examples();
    let used: BTreeSet<&str> = examples
        .iter()
        .flat_map(|(_, e)| e.steady_state.probes.iter().map(|p| p.spec.kind()))
        .collect();
    let missing: Vec<&&str> = rattle::probe::PROBE_KINDS
        .iter()
        .filter(|k| !used.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "probe kinds without an example experiment under experiments/: {missing:?}"
    );
}

#[test]
fn deploy_rbac_grants_what_every_example_declares() {
    let cluster_file = repo().join("deploy/rbac.yaml");
    let cluster: ClusterRole = docs(&read(&cluster_file))
        .iter()
        .filter(|(k, _)| k == "ClusterRole")
        .map(|(_, d)| serde_saphyr::from_str(d).expect("a ClusterRole"))
        .next()
        .expect("deploy/rbac.yaml has a ClusterRole");
    let cluster_rules = cluster.rules.unwrap_or_default();
    let ns_file = repo().join("deploy/rbac-namespaced.yaml");
    let role: Role = docs(&read(&ns_file))
        .iter()
        .filter(|(k, _)| k == "Role")
        .map(|(_, d)| serde_saphyr::from_str(d).expect("a Role"))
        .next()
        .expect("deploy/rbac-namespaced.yaml has a Role");
    let ns_rules = role.rules.unwrap_or_default();

    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, e) in examples() {
        for (who, a) in declared(&e) {
            for verb in a.verbs {
                checked += 1;
                let what = format!(
                    "{}: {who}: {verb} {} (apiGroup {:?})",
                    path.display(),
                    a.resource,
                    a.api_group
                );
                if !grants(&cluster_rules, a.api_group, a.resource, verb) {
                    missing.push(format!("{what} not granted by {}", cluster_file.display()));
                }
                // A Role grants only within its namespace: cluster-wide access (nodes, a
                // selection over every namespace) is what the namespaced setup gives up.
                if matches!(a.scope, KubeScope::Namespaces(_))
                    && !grants(&ns_rules, a.api_group, a.resource, verb)
                {
                    missing.push(format!("{what} not granted by {}", ns_file.display()));
                }
            }
        }
    }
    assert!(checked > 0, "no example declares any Kubernetes access");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// (API group, resource, verb).
type Grant = (String, String, String);

#[test]
fn the_emitted_role_grants_exactly_what_the_examples_declare() {
    let examples = examples();
    // What the examples declare, by namespace (None: cluster-wide).
    let mut want: BTreeMap<Option<String>, BTreeSet<Grant>> = BTreeMap::new();
    for (_, e) in &examples {
        for (_, a) in declared(e) {
            let scopes = match &a.scope {
                KubeScope::Cluster => vec![None],
                KubeScope::Namespaces(ns) => ns.iter().cloned().map(Some).collect(),
            };
            for scope in scopes {
                let grants = want.entry(scope).or_default();
                grants.extend(a.verbs.iter().map(|v| {
                    (
                        a.api_group.to_string(),
                        a.resource.to_string(),
                        v.to_string(),
                    )
                }));
                // Wherever a run reaches, it watches for cluster evidence.
                for (group, resource) in [
                    ("", "events"),
                    ("", "pods"),
                    ("discovery.k8s.io", "endpointslices"),
                ] {
                    for verb in ["list", "watch"] {
                        grants.insert((group.into(), resource.into(), verb.into()));
                    }
                }
            }
        }
    }
    // What the cluster-wide role grants is not repeated in a namespace's.
    let cluster = want.get(&None).cloned().unwrap_or_default();
    for (scope, grants) in want.iter_mut() {
        if scope.is_some() {
            grants.retain(|g| !cluster.contains(g));
        }
    }
    want.retain(|_, grants| !grants.is_empty());
    assert!(
        want.contains_key(&None) && want.len() > 1,
        "the examples should need both a ClusterRole and a Role: {want:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let list: Vec<String> = examples
        .iter()
        .map(|(p, _)| format!("{:?}", p.display().to_string()))
        .collect();
    let gd = write(
        dir.path(),
        "all.yaml",
        &format!(
            "version: 1\nname: every-example\nexperiments: [{}]\nschedule: {{ cron: \"@daily\" }}\n",
            list.join(", ")
        ),
    );
    let out = rattle()
        .arg("schedule")
        .arg(&gd)
        .args(["--emit", "cronjob", "--namespace", "chaos"])
        .output()
        .expect("run rattle");
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flatten = |rules: Option<Vec<PolicyRule>>| -> BTreeSet<Grant> {
        let mut set = BTreeSet::new();
        for r in rules.unwrap_or_default() {
            for g in r.api_groups.clone().unwrap_or_default() {
                for res in r.resources.clone().unwrap_or_default() {
                    for v in &r.verbs {
                        set.insert((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        set
    };
    let mut got: BTreeMap<Option<String>, BTreeSet<Grant>> = BTreeMap::new();
    for (kind, doc) in docs(&yaml) {
        match kind.as_str() {
            "Role" => {
                let role: Role = serde_saphyr::from_str(&doc).expect("a Role");
                let ns = role.metadata.namespace.clone().expect("a Role's namespace");
                got.entry(Some(ns)).or_default().extend(flatten(role.rules));
            }
            "ClusterRole" => {
                let role: ClusterRole = serde_saphyr::from_str(&doc).expect("a ClusterRole");
                got.entry(None).or_default().extend(flatten(role.rules));
            }
            _ => {}
        }
    }
    assert_eq!(got, want, "{yaml}");
}

#[test]
fn every_example_fault_declares_a_locality_consistent_with_its_access() {
    for (path, e) in examples() {
        for f in &e.faults {
            let fault = f.spec.fault();
            let what = format!("{}: {} ({})", path.display(), *f.name, f.spec.kind());
            let locality = fault.locality();
            assert_eq!(
                locality == Locality::Cluster,
                !fault.kube_access().is_empty(),
                "{what}: {locality:?}, yet declares {:?}",
                fault.kube_access()
            );
            if let Locality::Proxy { name, .. } = locality {
                assert!(
                    e.proxies.iter().any(|p| p.name.as_str() == name),
                    "{what}: names proxy {name:?}"
                );
            }
        }
    }
}

#[test]
fn a_proxy_fault_needs_its_proxy_in_the_mode_of_its_kind() {
    let text = r#"version: 1
name: proxies
proxies:
  - { name: tcp, listen: "127.0.0.1:18091", upstream: "127.0.0.1:18080" }
  - { name: web, listen: "127.0.0.1:18092", upstream: "127.0.0.1:18080", mode: http }
faults:
  - { name: a, at: 2s, duration: 1s, http-abort: { proxy: tcp, status: 503 } }
  - { name: b, at: 2s, duration: 1s, net-latency: { proxy: nowhere, latency: 10ms } }
  - { name: c, at: 2s, duration: 1s, http-delay: { proxy: web, delay: 10ms } }
  - { name: d, at: 2s, duration: 1s, net-reset: { proxy: tcp } }
duration: 5s
"#;
    let diags = rattle::experiment::parse_str(text).expect_err("invalid");
    let found: Vec<(&str, &str)> = diags
        .iter()
        .map(|d| (d.field.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "faults[0].http-abort.proxy",
                "http-abort needs a proxy in http mode; \"tcp\" is in tcp mode"
            ),
            (
                "faults[1].net-latency.proxy",
                "no proxy named \"nowhere\" under `proxies:`"
            ),
        ],
        "{diags:?}"
    );
    assert_eq!((diags[0].line, diags[1].line), (7, 8));
}

#[test]
fn a_cronjob_warns_about_local_faults_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "local.yaml",
        "version: 1\nname: local\nduration: 10s\nfaults:\n  - { name: k, at: 2s, process-kill: { match: \"nothing-matches-this\" } }\n",
    );
    write(
        dir.path(),
        "cluster.yaml",
        "version: 1\nname: cluster\nduration: 10s\nfaults:\n  - { name: p, at: 2s, pod-kill: { namespace: shop } }\n",
    );
    let gd = write(
        dir.path(),
        "gd.yaml",
        "version: 1\nname: mixed\nexperiments: [local.yaml, cluster.yaml]\nschedule: { cron: \"@daily\" }\n",
    );
    let out = rattle()
        .arg("schedule")
        .arg(&gd)
        .args(["--emit", "cronjob"])
        .output()
        .expect("run rattle");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("act on processes"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("local.yaml: process-kill act on processes of the job's own pod"),
        "{err}"
    );
}
