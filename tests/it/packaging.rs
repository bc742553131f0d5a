//! Packaging (issue #20): the container image (deploy/image/build.sh builds it from the binary
//! under test; podman runs it), the kustomize base in deploy/ (rendered by `kubectl kustomize`,
//! every object parsed into its k8s-openapi type and held to what `rattle schedule --emit
//! cronjob` prints) and the GitHub Action (action.yml's shell steps run here the way the
//! runner runs them, against the real binary).
//!
//! The tools come from the machine: a missing one skips its test with a notice, unless
//! RATTLE_REQUIRE_PODMAN=1 (buildah and podman) or RATTLE_REQUIRE_KUBECTL=1 is set (CI), where
//! that fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, PodSpec, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support::{rattle, rattle_bin, repo, run_bounded_cmd, write};

/// Whether `cmd args` runs; if not, a notice, or a failure when `require` is set.
fn have(cmd: &str, args: &[&str], require: &str) -> bool {
    let ok = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but `{cmd}` is not installed"
        );
        eprintln!("NOTICE: `{cmd}` is not installed; skipping (set {require}=1 to fail instead)");
    }
    ok
}

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .collect()
}

/// JSON without nulls and empty objects/arrays: what a typed round trip may drop harmlessly.
fn pruned(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| pruned(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(pruned).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other.clone()),
    }
}

/// A document as its k8s-openapi type, refusing any field the type does not know (a typo such
/// as `fsGroupp` would otherwise vanish silently): the type written back must equal the text.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &str) -> T {
    let raw: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    let t: T = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    let back = serde_json::to_value(&t).expect("serialize");
    assert_eq!(
        pruned(&back),
        pruned(&raw),
        "fields the Kubernetes type does not know, or a wrong type, in:\n{doc}"
    );
    t
}

/// Every object of a manifest stream, by kind.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    claims: Vec<PersistentVolumeClaim>,
    cron_jobs: Vec<CronJob>,
}

fn objects(yaml: &str) -> Objects {
    let mut o = Objects::default();
    for doc in documents(yaml) {
        let v: Value = serde_saphyr::from_str(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        match v["kind"].as_str().unwrap_or_default() {
            "Namespace" => o.namespaces.push(typed(&doc)),
            "ServiceAccount" => o.service_accounts.push(typed(&doc)),
            "ClusterRole" => o.cluster_roles.push(typed(&doc)),
            "ClusterRoleBinding" => o.cluster_role_bindings.push(typed(&doc)),
            "Role" => o.roles.push(typed(&doc)),
            "RoleBinding" => o.role_bindings.push(typed(&doc)),
            "ConfigMap" => o.config_maps.push(typed(&doc)),
            "PersistentVolumeClaim" => o.claims.push(typed(&doc)),
            "CronJob" => o.cron_jobs.push(typed(&doc)),
            other => panic!("unexpected kind {other:?} in:\n{doc}"),
        }
    }
    o
}

/// `kubectl kustomize deploy/`, or `None` (skipped) without kubectl.
fn render_base() -> Option<String> {
    if !have(
        "kubectl",
        &["version", "--client"],
        "RATTLE_REQUIRE_KUBECTL",
    ) {
        return None;
    }
    let mut cmd = Command::new("kubectl");
    cmd.arg("kustomize").arg(repo().join("deploy"));
    let (code, out, err) = run_bounded_cmd(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "kubectl kustomize deploy/ failed:\n{err}");
    Some(out)
}

fn name<
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    o: &T,
) -> (Option<String>, String) {
    let m = o.metadata();
    (m.namespace.clone(), m.name.clone().unwrap_or_default())
}

fn pod(c: &CronJob) -> PodSpec {
    c.spec
        .clone()
        .and_then(|s| s.job_template.spec)
        .and_then(|j| j.template.spec)
        .expect("a pod template")
}

#[test]
fn kustomize_base_renders_into_valid_kubernetes_objects_that_refer_to_each_other() {
    let Some(yaml) = render_base() else { return };
    let o = objects(&yaml);
    assert_eq!(o.namespaces.len(), 1);
    let ns = o.namespaces[0]
        .metadata
        .name
        .clone()
        .expect("namespace name");
    assert_eq!(ns, "rattle");
    assert!(o.roles.is_empty() && o.role_bindings.is_empty());
    let (sas, crs, crbs, cms, claims, crons) = (
        &o.service_accounts,
        &o.cluster_roles,
        &o.cluster_role_bindings,
        &o.config_maps,
        &o.claims,
        &o.cron_jobs,
    );
    assert_eq!(
        (
            sas.len(),
            crs.len(),
            crbs.len(),
            cms.len(),
            claims.len(),
            crons.len()
        ),
        (1, 1, 1, 1, 1, 1),
        "{yaml}"
    );
    // Every namespaced object is in the base's namespace.
    let namespaced: Vec<(Option<String>, String)> = sas
        .iter()
        .map(name)
        .chain(cms.iter().map(name))
        .chain(claims.iter().map(name))
        .chain(crons.iter().map(name))
        .collect();
    for (n, what) in &namespaced {
        assert_eq!(n.as_deref(), Some(ns.as_str()), "{what}");
    }
    // The binding grants the ClusterRole to the ServiceAccount the CronJob runs as.
    let sa = name(&sas[0]);
    let crb = &crbs[0];
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&crb.role_ref.name), crs[0].metadata.name.as_ref());
    let subjects = crb.subjects.clone().expect("subjects");
    assert!(
        subjects
            .iter()
            .any(|s| s.kind == "ServiceAccount" && (s.namespace.clone(), s.name.clone()) == sa),
        "{subjects:?}"
    );
    let cron = &crons[0];
    let spec = cron.spec.clone().expect("spec");
    // Applying the base faults nothing until the user unsuspends it.
    assert_eq!(spec.suspend, Some(true));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let p = pod(cron);
    assert_eq!(p.service_account_name.as_deref(), Some(sa.1.as_str()));
    // Each volume is something the base makes; each mount names a volume.
    let volumes = p.volumes.clone().expect("volumes");
    for v in &volumes {
        if let Some(cm) = &v.config_map {
            assert_eq!(Some(&cm.name), cms[0].metadata.name.as_ref());
        } else if let Some(c) = &v.persistent_volume_claim {
            assert_eq!(Some(&c.claim_name), claims[0].metadata.name.as_ref());
        } else {
            panic!("volume {} is neither the ConfigMap nor the claim", v.name);
        }
    }
    let names: BTreeSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    for c in p
        .containers
        .iter()
        .chain(p.init_containers.iter().flatten())
    {
        assert_eq!(
            c.image.as_deref(),
            Some(concat!("rattle:", env!("CARGO_PKG_VERSION"))),
            "the image deploy/image/build.sh tags"
        );
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                names.contains(m.name.as_str()),
                "{} mounts {}",
                c.name,
                m.name
            );
        }
    }
    // The pod runs as the image's non-root user, which can write the claim.
    let sc = p.security_context.clone().expect("pod securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!((sc.run_as_user, sc.fs_group), (Some(65532), Some(65532)));

    // The ConfigMap holds a game day that validates on its own, as the pod reads it.
    let data = cms[0].data.clone().expect("data");
    assert!(data.contains_key("gameday.yaml"), "{:?}", data.keys());
    let dir = tempfile::tempdir().expect("tempdir");
    for (k, v) in &data {
        write(dir.path(), k, v);
    }
    let out = rattle()
        .args(["gameday", "validate"])
        .arg(dir.path().join("gameday.yaml"))
        .output()
        .expect("run rattle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn emitted_cronjob_agrees_with_the_kustomize_base() {
    let Some(base) = render_base() else { return };
    let base = objects(&base);
    let out = rattle()
        .arg("schedule")
        .arg(repo().join("deploy/gameday/gameday.yaml"))
        .args(["--emit", "cronjob", "--namespace", "rattle"])
        .output()
        .expect("run rattle");
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let emitted = objects(&yaml);

    // One identity: the ServiceAccount deploy/rbac.yaml binds.
    assert_eq!(
        name(&emitted.service_accounts[0]),
        name(&base.service_accounts[0])
    );
    // The same claim for the journal and the reports (no emptyDir anywhere).
    assert_eq!(name(&emitted.claims[0]), name(&base.claims[0]));
    assert_eq!(emitted.claims[0].spec, base.claims[0].spec);
    assert_eq!(name(&emitted.config_maps[0]), name(&base.config_maps[0]));
    assert_eq!(name(&emitted.cron_jobs[0]), name(&base.cron_jobs[0]));

    // The same pod, field for field: image, arguments, environment, volumes and mounts,
    // security contexts, resources, init container.
    let (e, b) = (&emitted.cron_jobs[0], &base.cron_jobs[0]);
    assert_eq!(
        pod(e),
        pod(b),
        "the emitted pod and deploy/cronjob.yaml differ:\n{yaml}"
    );
    assert!(
        pod(e)
            .volumes
            .iter()
            .flatten()
            .all(|v| v.empty_dir.is_none())
    );
    // And the same schedule and job policy; only `suspend` differs (the base ships suspended).
    let (mut es, bs) = (e.spec.clone().expect("spec"), b.spec.clone().expect("spec"));
    es.suspend = Some(true);
    es.job_template.metadata = None;
    let mut bs = bs;
    bs.job_template.metadata = None;
    let strip = |s: &mut k8s_openapi::api::batch::v1::CronJobSpec| {
        if let Some(j) = s.job_template.spec.as_mut() {
            j.template.metadata = None;
        }
    };
    strip(&mut es);
    strip(&mut bs);
    assert_eq!(es, bs, "CronJob specs differ");

    // What the game day's kinds declare (the emitted Roles) the base's ClusterRole grants.
    let grants: BTreeMap<(String, String), BTreeSet<String>> = base.cluster_roles[0]
        .rules
        .iter()
        .flatten()
        .flat_map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            let resources = r.resources.clone().unwrap_or_default();
            groups
                .into_iter()
                .flat_map(move |g| {
                    resources
                        .clone()
                        .into_iter()
                        .map(move |res| (g.clone(), res))
                })
                .map(|k| (k, r.verbs.iter().cloned().collect::<BTreeSet<_>>()))
                .collect::<Vec<_>>()
        })
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            m.entry(k).or_insert_with(BTreeSet::new).extend(v);
            m
        });
    assert!(!emitted.roles.is_empty(), "{yaml}");
    for role in &emitted.roles {
        for r in role.rules.iter().flatten() {
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    let have = grants
                        .get(&(g.clone(), res.clone()))
                        .cloned()
                        .unwrap_or_default();
                    for v in &r.verbs {
                        assert!(
                            have.contains(v),
                            "deploy/rbac.yaml does not grant {v} on {g}/{res}"
                        );
                    }
                }
            }
        }
    }
}

/// A podman/buildah storage of the test's own (vfs: no overlay mounts to leave behind).
struct Storage {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Storage {
    fn new() -> Storage {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                dir.path().join("run").display(),
                dir.path().join("root").display()
            ),
        )
        .expect("storage.conf");
        Storage { _dir: dir, conf }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_STORAGE_CONF", &self.conf);
        c
    }
}

/// Removes a container by name (its processes with it) when dropped: a podman client killed
/// on a timeout leaves its container running.
struct Container<'a> {
    storage: &'a Storage,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let mut c = self.storage.cmd("podman");
        c.args(["rm", "--force", "--ignore", &self.name]);
        let _ = run_bounded_cmd(c, Duration::from_secs(60));
    }
}

/// `podman run` with what this kind of machine needs: `--runtime runc` where runc is installed
/// (crun 1.8 refuses a host whose cgroups are in hybrid mode, v1 controllers beside a cgroup2
/// mount with controllers: "cgroups in hybrid mode not supported, drop all controllers from
/// cgroupv2"), and file and process limits no higher than the caller's (rootful podman asks
/// for RLIMIT_NOFILE 1048576 and RLIMIT_NPROC 4194304, which a sandbox without
/// CAP_SYS_RESOURCE may not raise: setrlimit fails with EPERM).
fn podman_run(storage: &Storage, name: &str) -> Command {
    let mut c = storage.cmd("podman");
    c.args([
        "run",
        "--rm",
        "--name",
        name,
        "--pull",
        "never",
        "--network",
        "none",
    ]);
    c.args([
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ]);
    let runc = [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if runc {
        c.args(["--runtime", "runc"]);
    }
    c
}

/// Makes `dir` and its files readable by the image's non-root user, whatever the umask.
fn readable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let path = e.expect("entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

#[test]
fn image_builds_from_the_binary_and_runs_an_experiment_and_the_emitted_pod_in_podman() {
    const REQUIRE: &str = "RATTLE_REQUIRE_PODMAN";
    if !have("buildah", &["--version"], REQUIRE) || !have("podman", &["--version"], REQUIRE) {
        return;
    }
    let storage = Storage::new();
    let tag = format!(
        "localhost/rattle-test-{}:{}",
        std::process::id(),
        env!("CARGO_PKG_VERSION")
    );
    let mut build = storage.cmd("bash");
    build
        .arg(repo().join("deploy/image/build.sh"))
        .arg("--binary")
        .arg(rattle_bin())
        .args(["--tag", &tag]);
    let (code, out, err) = run_bounded_cmd(build, Duration::from_secs(300));
    assert_eq!(code, 0, "build.sh failed:\n{out}\n{err}");

    // The image as configured: entrypoint, non-root user, working directory, volumes, env.
    let mut inspect = storage.cmd("podman");
    inspect.args(["image", "inspect", &tag]);
    let (code, out, err) = run_bounded_cmd(inspect, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let image: Value = serde_json::from_str(out.trim()).expect("image inspect JSON");
    let config = &image[0]["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/rattle"])
    );
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["WorkingDir"], "/var/lib/rattle");
    let volumes: BTreeSet<&str> = config["Volumes"]
        .as_object()
        .expect("volumes")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        volumes,
        BTreeSet::from(["/var/lib/rattle/reports", "/var/lib/rattle/state"])
    );
    assert!(
        config["Env"]
            .as_array()
            .expect("env")
            .contains(&Value::from("RATTLE_STATE_DIR=/var/lib/rattle/state"))
    );
    // Nothing but the binary and its libraries: at most a few MB more than the binary.
    let mut size = storage.cmd("podman");
    size.args(["image", "inspect", "--format", "{{.Size}}", &tag]);
    let (code, out, err) = run_bounded_cmd(size, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let image_bytes: u64 = out.trim().parse().expect("a size in bytes");
    let binary_bytes = std::fs::metadata(rattle_bin()).expect("binary").len();
    eprintln!("image {tag}: {image_bytes} bytes; binary {binary_bytes} bytes");
    assert!(
        (binary_bytes..binary_bytes + 20 * 1024 * 1024).contains(&image_bytes),
        "image {image_bytes} bytes for a binary of {binary_bytes}"
    );
    // --strip-debug: the same image without the debug info (what the experiment below runs).
    let stripped = format!("{tag}-stripped");
    let mut build = storage.cmd("bash");
    build
        .arg(repo().join("deploy/image/build.sh"))
        .arg("--binary")
        .arg(rattle_bin())
        .args(["--tag", &stripped, "--strip-debug"]);
    let (code, out, err) = run_bounded_cmd(build, Duration::from_secs(300));
    assert_eq!(code, 0, "build.sh --strip-debug failed:\n{out}\n{err}");
    let mut size = storage.cmd("podman");
    size.args(["image", "inspect", "--format", "{{.Size}}", &stripped]);
    let (code, out, err) = run_bounded_cmd(size, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let stripped_bytes: u64 = out.trim().parse().expect("a size in bytes");
    eprintln!("image {stripped}: {stripped_bytes} bytes");
    assert!(
        stripped_bytes < image_bytes / 2,
        "{stripped_bytes} of {image_bytes}"
    );

    // Run it. Exit 125/126 is podman or the OCI runtime failing to start a container at all
    // (this machine, not the image); anything else is the image's answer.
    let ctr = format!("rattle-test-{}-version", std::process::id());
    let _gone = Container {
        storage: &storage,
        name: ctr.clone(),
    };
    let mut run = podman_run(&storage, &ctr);
    run.arg(&tag).arg("--version");
    let (code, out, err) = run_bounded_cmd(run, Duration::from_secs(120));
    // (A failure to exec the image's own entrypoint also exits 126, but names it: that one is
    // the image's.)
    if (code == 125 || code == 126) && !err.contains("/usr/local/bin/rattle") {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but podman cannot start a container here:\n{err}"
        );
        eprintln!(
            "NOTICE: podman cannot start a container on this machine, so the image was built and \
             inspected but not run (set {REQUIRE}=1 to fail instead). podman said:\n{err}"
        );
        return;
    }
    assert_eq!(code, 0, "rattle --version in the image:\n{out}\n{err}");
    assert!(
        out.starts_with(&format!("rattle {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );

    // A short experiment inside the image: the built-in demo on the container's own loopback,
    // a worker killed, the journal in the image's state volume (a fresh anonymous volume, which
    // must come up owned by the non-root user and private), the reports in the reports volume
    // (here a directory of the test's, written through the working directory's `reports/`).
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    write(
        &work,
        "exp.yaml",
        r#"version: 1
name: in-a-container
setup:
  demo: { replicas: 2, port: 18080, restart_delay: 500ms, health_interval: 200ms }
load:
  http: { url: "http://127.0.0.1:18080/", rate: 50/s, timeout: 2s }
steady_state:
  warmup: 1s
  hold: 1s
  slo: { success_rate: ">= 20%" }
faults:
  - name: kill-one
    at: 2s
    process-kill: { match: "rattle demo worker", mode: one }
duration: 5s
"#,
    );
    readable_by_all(&work);
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).expect("mkdir");
    std::os::unix::fs::chown(&reports, Some(65532), Some(65532))
        .expect("chown the reports directory to the image's user");
    let ctr = format!("rattle-test-{}-run", std::process::id());
    let _gone_too = Container {
        storage: &storage,
        name: ctr.clone(),
    };
    let mut run = podman_run(&storage, &ctr);
    run.arg("--volume")
        .arg(format!("{}:/work:ro", work.display()))
        .arg("--volume")
        .arg(format!("{}:/var/lib/rattle/reports", reports.display()))
        .arg(&stripped)
        .args([
            "run",
            "/work/exp.yaml",
            "--yes",
            "--seed",
            "7",
            "--progress",
            "plain",
        ]);
    let (code, out, err) = run_bounded_cmd(run, Duration::from_secs(180));
    // Pass or fail is the demo's business on a loaded machine (the SLO is loose so that the
    // baseline holds and the fault is applied); a run that could not start (2), was stopped (3)
    // or failed to revert (4) is the image's.
    assert!(code == 0 || code == 1, "exit {code}:\n{out}\n{err}");
    let runs: Vec<PathBuf> = std::fs::read_dir(&reports)
        .expect("reports")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(runs.len(), 1, "one run directory under reports/: {runs:?}");
    let text = std::fs::read_to_string(runs[0].join("report.json")).expect("report.json");
    let r: Value = serde_json::from_str(&text).expect("report JSON");
    let f = &r["faults"][0];
    assert_eq!(f["kind"], "process-kill");
    assert!(f["injected_at_ms"].is_number(), "{f:#}");
    assert!(
        f["targets"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("rattle demo worker")),
        "{f:#}"
    );
    assert!(r["totals"]["requests"].as_u64().is_some_and(|n| n > 0));
    for file in ["summary.md", "junit.xml", "report.html"] {
        assert!(runs[0].join(file).is_file(), "{file} missing");
    }

    run_emitted_pod(&storage, &stripped, &work, dir.path());
}

/// The pod `--emit cronjob` prints for a game day of `work/exp.yaml`, run in `image` the way
/// its spec says; what it leaves on the claim (a directory under `dir`) checked.
fn run_emitted_pod(storage: &Storage, image: &str, work: &Path, dir: &Path) {
    // The pod `--emit cronjob` prints, run in this image the way its spec says: init container
    // then main container, read-only root, no capabilities, no privilege escalation, as
    // runAsUser with fsGroup on the claim (a directory owned by root and the group, 2775, as
    // kubelet leaves a volume), the ConfigMap as files, working directory and environment as
    // written; the image's own VOLUMEs ignored, as Kubernetes ignores them.
    write(
        work,
        "gd.yaml",
        "version: 1\nname: in-a-pod\nexperiments: [exp.yaml]\n\
         schedule: { cron: \"0 3 * * *\", timezone: UTC }\n",
    );
    let out = rattle()
        .arg("schedule")
        .arg(work.join("gd.yaml"))
        .args(["--emit", "cronjob", "--image", image])
        .output()
        .expect("run rattle");
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let emitted = objects(&yaml);
    let spec = pod(&emitted.cron_jobs[0]);
    let config = dir.join("config");
    std::fs::create_dir(&config).expect("mkdir");
    for (k, v) in emitted.config_maps[0].data.clone().expect("data") {
        write(&config, &k, &v);
    }
    readable_by_all(&config);
    let claim = dir.join("claim");
    std::fs::create_dir(&claim).expect("mkdir");
    let psc = spec.security_context.clone().expect("pod securityContext");
    let fs_group = psc.fs_group.expect("fsGroup");
    std::os::unix::fs::chown(&claim, Some(0), u32::try_from(fs_group).ok()).expect("chown");
    std::fs::set_permissions(&claim, std::os::unix::fs::PermissionsExt::from_mode(0o2775))
        .expect("chmod");
    let host_path = |volume: &str| -> PathBuf {
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .unwrap_or_else(|| panic!("no volume {volume}"));
        if v.config_map.is_some() {
            config.clone()
        } else if v.persistent_volume_claim.is_some() {
            claim.clone()
        } else {
            panic!("the test does not know volume {volume}'s kind")
        }
    };
    let containers: Vec<_> = spec
        .init_containers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(spec.containers.clone())
        .collect();
    assert_eq!(containers.len(), 2, "an init container and the game day");
    for c in &containers {
        let ctr = format!("rattle-test-{}-pod-{}", std::process::id(), c.name);
        let _gone = Container {
            storage,
            name: ctr.clone(),
        };
        let mut run = podman_run(storage, &ctr);
        run.args(["--image-volume", "ignore"]);
        run.arg("--user").arg(format!(
            "{}:{}",
            psc.run_as_user.expect("runAsUser"),
            psc.run_as_group.expect("runAsGroup")
        ));
        run.arg("--group-add").arg(fs_group.to_string());
        let sc = c.security_context.clone().expect("securityContext");
        if sc.read_only_root_filesystem == Some(true) {
            run.arg("--read-only");
        }
        if sc.allow_privilege_escalation == Some(false) {
            run.args(["--security-opt", "no-new-privileges"]);
        }
        for cap in sc.capabilities.and_then(|c| c.drop).unwrap_or_default() {
            run.arg("--cap-drop").arg(cap.to_lowercase());
        }
        if let Some(w) = &c.working_dir {
            run.arg("--workdir").arg(w);
        }
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("metadata.namespace") => "rattle".to_string(),
                        Some("metadata.name") => ctr.clone(),
                        other => panic!("the test does not know env {} from {other:?}", e.name),
                    }
                }
                (None, None) => String::new(),
            };
            run.arg("--env").arg(format!("{}={value}", e.name));
        }
        for m in c.volume_mounts.iter().flatten() {
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            run.arg("--volume").arg(format!(
                "{}:{}{ro}",
                host_path(&m.name).display(),
                m.mount_path
            ));
        }
        run.arg(c.image.clone().expect("image"));
        run.args(c.args.clone().unwrap_or_default());
        let (code, out, err) = run_bounded_cmd(run, Duration::from_secs(180));
        assert!(
            code == 0 || (c.name != "recover" && code == 1),
            "container {} exited {code}:\n{out}\n{err}",
            c.name
        );
    }
    // The journal went to a private directory rattle made on the claim; the reports beside it.
    let state = claim.join("state");
    let meta = std::fs::metadata(&state).expect("the state directory on the claim");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    let runs: Vec<PathBuf> = std::fs::read_dir(claim.join("reports"))
        .expect("reports on the claim")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].join("index.json").is_file(), "{:?}", runs[0]);
}

/// A `${{ ... }}` expression of action.yml, from the few contexts it may use.
fn expand(
    text: &str,
    inputs: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed ${{") + start;
        let expr = rest[start + 3..end].trim();
        let value = if let Some(k) = expr.strip_prefix("inputs.") {
            inputs
                .get(k)
                .unwrap_or_else(|| panic!("no input {k:?}"))
                .clone()
        } else if let Some(k) = expr.strip_prefix("steps.") {
            outputs.get(k).cloned().unwrap_or_default()
        } else if expr == "github.action_path" {
            repo().display().to_string()
        } else {
            panic!("the test does not know the expression {expr:?}")
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// What running action.yml left: the final exit code, the step summary, the step outputs
/// (`id.outputs.key`) and each `uses:` step's `with`, expanded.
struct ActionRun {
    code: i32,
    summary: String,
    outputs: BTreeMap<String, String>,
    uses: Vec<(String, BTreeMap<String, String>)>,
}

/// Runs action.yml's `run` steps as the runner does (`bash --noprofile --norc -eo pipefail`,
/// a GITHUB_OUTPUT file per step, one GITHUB_STEP_SUMMARY), in order, a step without
/// `always()` only while all before it succeeded; `uses:` steps are recorded, not run.
fn run_action(workspace: &Path, given: &[(&str, &str)]) -> ActionRun {
    let text = std::fs::read_to_string(repo().join("action.yml")).expect("action.yml");
    let action: Value = serde_saphyr::from_str(&text).expect("action.yml parses");
    assert_eq!(action["runs"]["using"], "composite");
    let mut inputs = BTreeMap::new();
    for (k, v) in action["inputs"].as_object().expect("inputs") {
        inputs.insert(
            k.clone(),
            v["default"].as_str().unwrap_or_default().to_string(),
        );
    }
    for (k, v) in given {
        assert!(inputs.contains_key(*k), "action.yml has no input {k}");
        inputs.insert(k.to_string(), v.to_string());
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let summary = temp.path().join("summary");
    std::fs::write(&summary, "").expect("summary");
    let mut outputs = BTreeMap::new();
    let mut uses = Vec::new();
    let mut code = 0;
    for (i, step) in action["runs"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        let always = step["if"].as_str().is_some_and(|c| c.contains("always()"));
        if code != 0 && !always {
            continue;
        }
        let with = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let s = v
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string());
                            (k.clone(), expand(&s, &inputs, &outputs))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(u) = step["uses"].as_str() {
            uses.push((u.to_string(), with(&step["with"])));
            continue;
        }
        let script = step["run"]
            .as_str()
            .unwrap_or_else(|| panic!("step {i}: no run"));
        assert_eq!(
            step["shell"], "bash",
            "step {i}: composite steps must name their shell"
        );
        let file = temp.path().join(format!("step-{i}.sh"));
        std::fs::write(&file, script).expect("script");
        let out_file = temp.path().join(format!("output-{i}"));
        std::fs::write(&out_file, "").expect("output");
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&file);
        let cwd = step["working-directory"]
            .as_str()
            .map(|d| workspace.join(expand(d, &inputs, &outputs)))
            .unwrap_or_else(|| workspace.to_path_buf());
        cmd.current_dir(cwd)
            .env("GITHUB_OUTPUT", &out_file)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_WORKSPACE", workspace)
            .env("RUNNER_TEMP", temp.path())
            .env("NO_COLOR", "1");
        for (k, v) in with(&step["env"]) {
            cmd.env(k, v);
        }
        let (c, out, err) = run_bounded_cmd(cmd, Duration::from_secs(180));
        eprintln!("step {i} ({}): exit {c}\n{out}{err}", step["name"]);
        let written = std::fs::read_to_string(&out_file).expect("outputs");
        if let Some(id) = step["id"].as_str() {
            for line in written.lines() {
                let (k, v) = line.split_once('=').expect("key=value");
                outputs.insert(format!("{id}.outputs.{k}"), v.to_string());
            }
        }
        if c != 0 {
            code = c;
        }
    }
    ActionRun {
        code,
        summary: std::fs::read_to_string(&summary).expect("summary"),
        outputs,
        uses,
    }
}

#[test]
fn action_runs_rattle_reports_and_exits_with_its_code() {
    let ws = tempfile::tempdir().expect("tempdir");
    // Not steady by construction (20 ms of latency against a 5 ms p99): exit 1, every time.
    write(
        ws.path(),
        "unsteady.yaml",
        &format!(
            r#"version: 1
name: unsteady
setup:
  demo: {{ replicas: 1, port: {port}, latency: 20ms }}
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 50/s }}
steady_state:
  warmup: 500ms
  slo: {{ p99: "< 5ms" }}
faults:
  - name: kill
    at: 2s
    process-kill: {{ match: "rattle demo worker .*--balancer-port {port}$", mode: all }}
duration: 4s
"#,
            port = crate::support::free_port()
        ),
    );
    let bin = rattle_bin().display().to_string();
    let run = run_action(
        ws.path(),
        &[
            ("experiment", "unsteady.yaml"),
            ("binary", &bin),
            ("args", "--seed 7"),
        ],
    );
    assert_eq!(run.code, 1, "the action ends with rattle's exit code");
    assert_eq!(run.outputs["run.outputs.exit-code"], "1");
    let dir = PathBuf::from(&run.outputs["run.outputs.report-dir"]);
    assert_eq!(
        dir,
        ws.path().join("rattle-report").canonicalize().expect("dir")
    );
    let summary = std::fs::read_to_string(dir.join("summary.md")).expect("summary.md");
    assert!(run.summary.contains(summary.trim()), "{}", run.summary);
    // The upload and the test results point at what rattle wrote.
    let with = |action: &str| {
        run.uses
            .iter()
            .find(|(u, _)| u.starts_with(action))
            .unwrap_or_else(|| panic!("no step uses {action}"))
            .1
            .clone()
    };
    assert_eq!(
        with("actions/upload-artifact@")["path"],
        dir.display().to_string()
    );
    let junit = PathBuf::from(&with("mikepenz/action-junit-report@")["report_paths"]);
    assert!(junit.is_file(), "{}", junit.display());

    // Bad arguments: rattle's exit 2 comes through, and the summary says no report was written.
    let run = run_action(
        ws.path(),
        &[
            ("experiment", "unsteady.yaml"),
            ("binary", &bin),
            ("args", "--no-such-flag"),
            ("out", "bad"),
        ],
    );
    assert_eq!(run.code, 2);
    assert!(run.summary.contains("no summary.md"), "{}", run.summary);
}

#[test]
fn example_workflow_runs_the_real_cluster_suite_and_the_action() {
    let text = std::fs::read_to_string(repo().join(".github/workflows/resilience.yml"))
        .expect("the example workflow");
    let wf: Value = serde_saphyr::from_str(&text).expect("the workflow parses");
    let steps = wf["jobs"]["kind"]["steps"].as_array().expect("steps");
    let runs: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // The real-cluster test it names exists.
    let filter = "k8s::real_cluster";
    assert!(runs.contains(filter), "{runs}");
    let k8s = std::fs::read_to_string(repo().join("tests/it/k8s.rs")).expect("k8s.rs");
    assert!(k8s.contains("fn real_cluster"), "no test matches {filter}");
    assert!(runs.contains("deploy/image/build.sh") && runs.contains("kubectl apply -k deploy/"));
    // It uses this repository's action with inputs the action has.
    let action: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("action.yml")).expect("action"),
    )
    .expect("action.yml parses");
    let own = steps
        .iter()
        .find(|s| s["uses"] == "./")
        .expect("a step that uses ./ (action.yml)");
    for k in own["with"].as_object().expect("with").keys() {
        assert!(
            action["inputs"][k].is_object(),
            "action.yml has no input {k}"
        );
    }
    // The experiment it gates on validates.
    let exp = own["with"]["experiment"].as_str().expect("experiment");
    let out = rattle()
        .arg("validate")
        .arg(repo().join(exp))
        .output()
        .expect("run rattle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
