//! Kubernetes faults and the `kubernetes` probe, end to end: the rattle binary (or the library's
//! fault calls) against the fake API server of `fake_k8s`, through the real kube client.
//!
//! Every run is bounded by a watchdog that kills the child by pid; the fake stops when dropped.
//! The only timing assertion is the ground-truth tolerance of issue #4: the recovery instant
//! measured by the probe must match the replacement pod's readiness, as recorded by the fake,
//! within 200 ms. A real-cluster check runs only when `RATTLE_REAL_KUBECONFIG` is set.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rattle::fault::{Fault, FaultEnv, ResolveCtx};
use serde_json::Value;

use crate::fake_k8s::{FakeK8s, Res};
use crate::support::{rattle, run_bounded_cmd, write};

/// Runs rattle with `args` and `KUBECONFIG=kubeconfig`, killed if it outlives `limit`.
fn run_k(kubeconfig: &Path, state: &Path, args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut cmd = rattle();
    cmd.env("KUBECONFIG", kubeconfig)
        .env("RATTLE_STATE_DIR", state)
        .env_remove("RATTLE_PROTECTED_NAMESPACES")
        .args(args);
    run_bounded_cmd(cmd, limit)
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report json")
}

struct Setup {
    fake: FakeK8s,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(create: u64, ready: u64) -> Setup {
        let fake = FakeK8s::start(Duration::from_millis(create), Duration::from_millis(ready));
        Setup {
            fake,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn run(&self, args: &[&str], limit: Duration) -> (i32, String, String) {
        run_k(&self.fake.kubeconfig, &self.path("state"), args, limit)
    }
}

const POD_KILL: &str = r#"
version: 1
name: k8s-pod-kill
steady_state:
  warmup: 500ms
  hold: 1s
  probes:
    - name: web-ready
      interval: 250ms
      kubernetes: { namespace: shop, deployment: web }
faults:
  - name: kill-one
    at: 1s
    pod-kill: { namespace: shop, labels: app=web, mode: one }
duration: 5s
"#;

#[test]
fn pod_kill_recovery_matches_the_replacements_readiness() {
    let s = Setup::new(400, 800);
    s.fake.add_deployment("shop", "web", 3);
    let before = s.fake.pod_names("shop");
    let file = write(s.dir.path(), "kill.yaml", POD_KILL);
    let out = s.path("out");
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--seed",
            "7",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let r = report(&out);
    let fault = &r["faults"][0];
    let killed = fault["targets"][0]["id"]
        .as_str()
        .expect("target id")
        .to_string();
    assert!(killed.starts_with("shop/web-"), "{killed}");
    let after = s.fake.pod_names("shop");
    assert_eq!(after.len(), 3);
    assert!(!after.contains(&killed.trim_start_matches("shop/").to_string()));
    assert!(before.iter().any(|b| format!("shop/{b}") == killed));
    let log = s.fake.log();
    assert!(
        log.iter()
            .any(|l| l == &format!("DELETE pods {killed} grace=0")),
        "{log:?}"
    );

    // Ground truth: the replacement's readiness instant, as the fake recorded it.
    let ready = s.fake.with(|st| st.ready_at.clone());
    assert_eq!(ready.len(), 1, "{ready:?}");
    let ready_unix_ms = ready[0]
        .1
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs_f64()
        * 1000.0;
    let start = r["started_at_unix_ms"]
        .as_f64()
        .expect("started_at_unix_ms");
    let recovered = fault["recovery"]["recovered_at_ms"]
        .as_f64()
        .expect("recovered_at_ms");
    let error_ms = (start + recovered - ready_unix_ms).abs();
    println!("recovery-vs-readiness error: {error_ms:.1} ms");
    assert!(
        error_ms < 200.0,
        "recovered at {recovered} ms, ready at {} ms: off by {error_ms} ms",
        ready_unix_ms - start
    );
    let ttr = fault["recovery"]["time_to_recover_ms"]
        .as_f64()
        .expect("ttr");
    assert!(
        ttr >= 1000.0,
        "the replacement needs create + ready delays: {ttr}"
    );
}

#[test]
fn deployment_scale_down_is_restored_and_journaled() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 3);
    let file = write(
        s.dir.path(),
        "scale.yaml",
        r#"
version: 1
name: k8s-scale
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: to-zero
    at: 300ms
    duration: 1s
    deployment-scale: { namespace: shop, names: [web], replicas: 0 }
duration: 2s
"#,
    );
    let out = s.path("out");
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let log = s.fake.log();
    let scales: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("PATCH deployments.apps/scale"))
        .collect();
    assert_eq!(scales.len(), 2, "{log:?}");
    assert!(scales[0].contains("\"replicas\":0"), "{scales:?}");
    assert!(scales[1].contains("\"replicas\":3"), "{scales:?}");
    let d = s
        .fake
        .get(Res::Deployments, "shop", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    // Journal emptied after the revert.
    let left: Vec<_> = std::fs::read_dir(s.path("state"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|e: &std::fs::DirEntry| !e.path().to_string_lossy().ends_with(".json")),
        "{left:?}"
    );
}

#[test]
fn a_crashed_scale_is_reverted_by_recover() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 2);
    let file = write(
        s.dir.path(),
        "scale.yaml",
        r#"
version: 1
name: k8s-scale-crash
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: to-one
    at: 300ms
    duration: 10s
    deployment-scale: { namespace: shop, labels: app=web, replicas: 1 }
duration: 12s
"#,
    );
    // A real crash: SIGKILL right after the injection, then `rattle recover`.
    let mut child = rattle()
        .env("KUBECONFIG", &s.fake.kubeconfig)
        .env("RATTLE_STATE_DIR", s.path("state"))
        .args([
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--progress",
            "quiet",
            "--out",
        ])
        .arg(s.path("out2"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let d = s
            .fake
            .get(Res::Deployments, "shop", "web")
            .expect("deployment");
        if d["spec"]["replicas"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let d = s
        .fake
        .get(Res::Deployments, "shop", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 1, "scaled down, then killed");
    let (code, stdout, stderr) = s.run(&["recover", "--yes"], Duration::from_secs(30));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let d = s
        .fake
        .get(Res::Deployments, "shop", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 2, "recover restored the replicas");
}

#[test]
fn protected_namespace_is_refused_with_exit_2() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("kube-system", "dns", 2);
    let file = write(
        s.dir.path(),
        "sys.yaml",
        r#"
version: 1
name: k8s-protected
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-dns
    at: 300ms
    pod-kill: { namespace: kube-system, labels: app=dns }
duration: 1s
"#,
    );
    let (code, stdout, stderr) = s.run(
        &["run", file.to_str().unwrap_or(""), "--yes"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("protected"),
        "{stdout}{stderr}"
    );
    assert!(
        s.fake.log().is_empty(),
        "nothing touched: {:?}",
        s.fake.log()
    );
}

#[test]
fn all_namespaces_skip_protected_ones_and_empty_selection_is_an_error() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("kube-system", "dns", 2);
    let file = write(
        s.dir.path(),
        "none.yaml",
        r#"
version: 1
name: k8s-empty
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-dns
    at: 300ms
    pod-kill: { labels: app=dns }
duration: 1s
"#,
    );
    let (code, stdout, stderr) = s.run(
        &["run", file.to_str().unwrap_or(""), "--yes"],
        Duration::from_secs(30),
    );
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("no target"),
        "{stdout}{stderr}"
    );
    assert_eq!(s.fake.pod_names("kube-system").len(), 2);
    assert!(s.fake.log().is_empty(), "{:?}", s.fake.log());
}

#[test]
fn dry_run_names_the_pods_and_touches_nothing() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 4);
    let file = write(
        s.dir.path(),
        "dry.yaml",
        r#"
version: 1
name: k8s-dry
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-half
    at: 300ms
    pod-kill: { namespace: shop, labels: app=web, mode: { percent: 50 } }
duration: 1s
"#,
    );
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--dry-run",
            "--seed",
            "3",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let named = s
        .fake
        .pod_names("shop")
        .iter()
        .filter(|p| stdout.contains(&format!("pod shop/{p}")))
        .count();
    assert_eq!(named, 2, "{stdout}");
    assert!(s.fake.log().is_empty(), "{:?}", s.fake.log());
}

/// In-process client on the fake's kubeconfig.
async fn client(fake: &FakeK8s) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&fake.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Benchmark of issue #4: choosing and killing 100 of 10,000 pods in percent mode. Ignored by
/// default (it is a figure, not a check); run with `cargo test -- --ignored bench_`.
#[test]
#[ignore]
fn bench_kill_100_of_10000_pods() {
    let fake = FakeK8s::start(Duration::from_secs(3600), Duration::from_secs(1));
    fake.with(|s| s.keep_history = false);
    fake.add_bare_pods("big", "many", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let env = FaultEnv::with_kube_client(client(&fake).await);
        let spec: rattle::fault::k8s::PodKillSpec = serde_json::from_value(serde_json::json!({
            "namespace": "big", "labels": "app=many", "mode": {"percent": 1}
        }))
        .expect("spec");
        let mut rng = StdRng::seed_from_u64(1);
        let start = Instant::now();
        let targets = spec
            .resolve(ResolveCtx {
                rng: &mut rng,
                env: &env,
            })
            .await
            .expect("resolve");
        let resolved = start.elapsed();
        spec.inject(&env, &targets).await.expect("inject");
        let total = start.elapsed();
        assert_eq!(targets.len(), 100);
        let server = fake.with(|s| s.server_time);
        println!(
            "bench: resolve {resolved:?}, resolve + kill 100 of 10000 {total:?}, of which the fake \
             server answering {server:?}: client-side {:?}",
            total.saturating_sub(server)
        );
    });
    assert_eq!(fake.pod_names("big").len(), 9_900);
    rt.shutdown_background();
}

/// Runs `yaml` to completion against `s`; asserts exit 0.
fn run_ok(s: &Setup, name: &str, yaml: &str) -> Value {
    let file = write(s.dir.path(), name, yaml);
    let out = s.path(&format!("out-{name}"));
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--seed",
            "1",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    report(&out)
}

#[test]
fn pod_failure_swaps_images_and_restores_them() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 2);
    run_ok(
        &s,
        "fail.yaml",
        r#"
version: 1
name: k8s-pod-failure
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: fail-all
    at: 300ms
    duration: 500ms
    pod-failure: { namespace: shop, labels: app=web, mode: all }
duration: 1500ms
"#,
    );
    let log = s.fake.log();
    let patches: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("PATCH pods shop/web-"))
        .collect();
    assert_eq!(patches.len(), 4, "two pods, swapped then restored: {log:?}");
    assert!(
        patches[..2]
            .iter()
            .all(|p| p.contains("registry.k8s.io/pause:3.10")),
        "{patches:?}"
    );
    assert!(
        patches[2..].iter().all(|p| p.contains("\"image\":\"app\"")),
        "{patches:?}"
    );
    for p in s.fake.pod_names("shop") {
        let pod = s.fake.get(Res::Pods, "shop", &p).expect("pod");
        assert_eq!(pod["spec"]["containers"][0]["image"], "app");
    }
}

#[test]
fn rollout_restart_stamps_the_template() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 1);
    run_ok(
        &s,
        "restart.yaml",
        r#"
version: 1
name: k8s-restart
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: restart
    at: 300ms
    rollout-restart: { namespace: shop, names: [web] }
duration: 800ms
"#,
    );
    let d = s
        .fake
        .get(Res::Deployments, "shop", "web")
        .expect("deployment");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
}

#[test]
fn node_drain_cordons_evicts_through_refusals_and_uncordons() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 2);
    s.fake.add_node("node-a");
    s.fake.add_node("node-b");
    let pods = s.fake.pod_names("shop");
    s.fake.place_pod("shop", &pods[0], "node-a");
    s.fake.place_pod("shop", &pods[1], "node-b");
    s.fake.with(|st| {
        st.eviction_refusals
            .insert(("shop".into(), pods[0].clone()), 2);
    });
    run_ok(
        &s,
        "drain.yaml",
        r#"
version: 1
name: k8s-drain
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: drain-a
    at: 300ms
    duration: 1500ms
    node-drain: { names: [node-a], retry_interval: 100ms, timeout: 10s }
duration: 2500ms
"#,
    );
    let log = s.fake.log();
    let refused = log
        .iter()
        .filter(|l| l.starts_with("EVICT-REFUSED"))
        .count();
    assert_eq!(refused, 2, "{log:?}");
    assert!(
        log.iter()
            .any(|l| l == &format!("EVICT pods shop/{}", pods[0])),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l == &format!("EVICT pods shop/{}", pods[1])),
        "only node-a's pod: {log:?}"
    );
    let cordons: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("PATCH nodes /node-a"))
        .collect();
    assert_eq!(cordons.len(), 2, "{log:?}");
    assert!(
        cordons[0].contains("\"unschedulable\":true")
            && cordons[1].contains("\"unschedulable\":false")
    );
    let n = s.fake.get(Res::Nodes, "", "node-a").expect("node");
    assert_eq!(n["spec"]["unschedulable"], false);
}

#[test]
fn netem_runs_tc_in_ephemeral_containers_and_reverts() {
    let s = Setup::new(100, 100);
    s.fake.add_deployment("shop", "web", 2);
    run_ok(
        &s,
        "netem.yaml",
        r#"
version: 1
name: k8s-netem
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: slow
    at: 300ms
    duration: 500ms
    pod-network-delay: { namespace: shop, labels: app=web, mode: all, delay: 200ms, jitter: 20ms, loss: 1%, image: "example/tc:1" }
duration: 1500ms
"#,
    );
    for p in s.fake.pod_names("shop") {
        let pod = s.fake.get(Res::Pods, "shop", &p).expect("pod");
        let eph = pod["spec"]["ephemeralContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(eph.len(), 2, "inject and revert containers: {eph:?}");
        assert_eq!(
            eph[0]["command"],
            serde_json::json!([
                "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "200000us",
                "20000us", "loss", "1%"
            ])
        );
        assert_eq!(
            eph[0]["securityContext"]["capabilities"]["add"][0],
            "NET_ADMIN"
        );
        assert_eq!(eph[0]["image"], "example/tc:1");
        assert_eq!(
            eph[1]["command"],
            serde_json::json!(["tc", "qdisc", "del", "dev", "eth0", "root"])
        );
    }
}

/// The real-cluster suite: runs only when `KUBECONFIG` is set (kind or k3d; see the README),
/// and is skipped with a notice otherwise. It creates a namespace of its own, a 3-replica
/// deployment of the pause image, kills one pod through the rattle binary and checks that the
/// probe saw the recovery; the namespace is deleted at the end.
#[test]
fn real_cluster_pod_kill() {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG") else {
        println!("notice: KUBECONFIG is not set: the real-cluster suite is skipped");
        return;
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    let ns = format!("rattle-e2e-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    });
    rt.block_on(async {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{Api, PostParams};
        let nsobj: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &nsobj)
            .await
            .expect("create namespace");
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}}
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = POD_KILL
        .replace("namespace: shop", &format!("namespace: {ns}"))
        .replace("warmup: 500ms", "warmup: 60s")
        .replace("at: 1s", "at: 61s")
        .replace("duration: 5s", "duration: 120s");
    let file = write(dir.path(), "kill.yaml", &yaml);
    let out = dir.path().join("out");
    let (code, stdout, stderr) = run_k(
        &kubeconfig,
        &dir.path().join("state"),
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ],
        Duration::from_secs(300),
    );
    rt.block_on(async {
        use k8s_openapi::api::core::v1::Namespace;
        let _ = kube::api::Api::<Namespace>::all(client.clone())
            .delete(&ns, &Default::default())
            .await;
    });
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let r = report(&out);
    assert!(
        r["faults"][0]["recovery"]["recovered_at_ms"].is_number(),
        "{r}"
    );
    rt.shutdown_background();
}

#[test]
fn observation_extends_past_duration_until_the_probe_recovers() {
    let s = Setup::new(400, 800);
    s.fake.add_deployment("shop", "web", 2);
    let yaml = POD_KILL.replace("duration: 5s", "duration: 1500ms");
    let r = run_ok(&s, "extend.yaml", &yaml);
    let fault = &r["faults"][0];
    let recovered = fault["recovery"]["recovered_at_ms"]
        .as_f64()
        .expect("recovered_at_ms");
    assert!(
        recovered > 1500.0,
        "recovered after the nominal end: {recovered}"
    );
    let ready = s.fake.with(|st| st.ready_at.clone());
    assert_eq!(ready.len(), 1, "{ready:?}");
    let ready_unix_ms = ready[0]
        .1
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs_f64()
        * 1000.0;
    let start = r["started_at_unix_ms"].as_f64().expect("start");
    assert!((start + recovered - ready_unix_ms).abs() < 200.0);
}

#[test]
fn statefulset_scale_and_context_flag() {
    let s = Setup::new(100, 100);
    s.fake.add_statefulset("db", "pg", 3);
    let yaml = r#"
version: 1
name: k8s-sts
steady_state:
  warmup: 300ms
  hold: 300ms
  probes:
    - kubernetes: { namespace: db, statefulset: pg }
      interval: 100ms
faults:
  - name: down
    at: 400ms
    duration: 500ms
    deployment-scale: { namespace: db, names: [pg], kind: statefulset, replicas: 1 }
duration: 1500ms
"#;
    let file = write(s.dir.path(), "sts.yaml", yaml);
    // An unknown context is an environment error: exit 2, nothing touched.
    let bad = s.path("out-bad");
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--context",
            "nope",
            "--progress",
            "plain",
            "--out",
            bad.to_str().unwrap_or(""),
        ],
        Duration::from_secs(60),
    );
    println!("unknown context: exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("nope"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(s.fake.log().is_empty(), "{:?}", s.fake.log());
    let out = s.path("out-sts");
    let (code, stdout, stderr) = s.run(
        &[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--context",
            "fake",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let d = s.fake.get(Res::StatefulSets, "db", "pg").expect("sts");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(s.fake.pod_names("db").len(), 3);
    let r = report(&out);
    assert!(
        r["faults"][0]["recovery"]["recovered_at_ms"].is_number(),
        "{}",
        r["faults"][0]
    );
}

#[test]
fn labels_probe_and_allowed_protected_namespace() {
    let s = Setup::new(200, 300);
    s.fake.add_deployment("kube-system", "dns", 3);
    let r = run_ok(
        &s,
        "dns.yaml",
        r#"
version: 1
name: k8s-allowed
steady_state:
  warmup: 500ms
  hold: 500ms
  probes:
    - kubernetes: { namespace: kube-system, labels: app=dns, min_ready: 3 }
      interval: 200ms
faults:
  - name: kill-dns
    at: 700ms
    pod-kill: { namespace: kube-system, labels: app=dns, allow_namespaces: [kube-system] }
duration: 2s
"#,
    );
    let log = s.fake.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("DELETE pods kube-system/"))
            .count(),
        1,
        "{log:?}"
    );
    let fault = &r["faults"][0];
    let recovered = fault["recovery"]["recovered_at_ms"]
        .as_f64()
        .expect("recovered");
    let ready = s.fake.with(|st| st.ready_at.clone());
    assert_eq!(ready.len(), 1);
    let ready_unix_ms = ready[0]
        .1
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs_f64()
        * 1000.0;
    let start = r["started_at_unix_ms"].as_f64().expect("start");
    let err = (start + recovered - ready_unix_ms).abs();
    println!("labels probe: recovery-vs-readiness error {err:.1} ms");
    assert!(err < 200.0, "{err}");
}
