//! The in-pod faults of issue #18 (pod-stress, container-kill, pod-network-partition,
//! -bandwidth, -corrupt, pod-dns-failure) end to end: the rattle binary against the fake API
//! server, through the real kube client. What a kubelet would do (start an ephemeral container,
//! run a helper pod, restart a killed container) is played by the fake (`ephemeral_state`) or
//! by a "kubelet" thread of the test that changes the fake's objects the way a kubelet reports
//! them. Every run is bounded and killed by pid; the fake stops when dropped.
//!
//! The parts that can run for real here do: the container-kill helper's script kills a
//! process found by its cgroup (root), and the pod-stress stop pattern signals exactly the
//! stress process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_k8s::{FakeK8s, Res};
use crate::support::{rattle, run_bounded_cmd, write};

struct Setup {
    fake: FakeK8s,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            fake: FakeK8s::start(Duration::from_millis(100), Duration::from_millis(100)),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self) -> Command {
        let mut cmd = rattle();
        cmd.env("KUBECONFIG", &self.fake.kubeconfig)
            .env("RATTLE_STATE_DIR", self.path("state"))
            .env_remove("RATTLE_PROTECTED_NAMESPACES");
        cmd
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_bounded_cmd(cmd, Duration::from_secs(60))
    }
    /// Runs experiment `yaml`; returns (exit code, output, report.json if written).
    fn experiment(&self, name: &str, yaml: &str) -> (i32, String, Option<Value>) {
        let file = write(self.dir.path(), name, yaml);
        let out = self.path(&format!("out-{name}"));
        let (code, stdout, stderr) = self.run(&[
            "run",
            file.to_str().unwrap_or(""),
            "--yes",
            "--seed",
            "1",
            "--progress",
            "plain",
            "--out",
            out.to_str().unwrap_or(""),
        ]);
        let report = std::fs::read_to_string(out.join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        (code, format!("{stdout}\n{stderr}"), report)
    }
    fn ephemeral(&self, ns: &str, pod: &str) -> Vec<Value> {
        self.fake
            .get(Res::Pods, ns, pod)
            .and_then(|p| p["spec"]["ephemeralContainers"].as_array().cloned())
            .unwrap_or_default()
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

const STRESS: &str = r#"
version: 1
name: k8s-stress
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: hog
    at: 300ms
    duration: 600ms
    pod-stress: { namespace: shop, labels: app=web, mode: all, cpu_workers: 2, cpu_load: 75%, memory: 64MiB }
duration: 1500ms
"#;

#[test]
fn pod_stress_runs_rattle_stress_beside_the_target_and_stops_it_on_revert() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 2);
    let (code, out, _) = s.experiment("stress.yaml", STRESS);
    assert_eq!(code, 0, "{out}");
    let want = [
        "rattle",
        "stress",
        "--cpu-workers",
        "2",
        "--cpu-load",
        "75",
        "--memory",
        "67108864",
        "--duration",
        "600ms",
    ];
    let pods = s.fake.pod_names("shop");
    assert_eq!(pods.len(), 2);
    for p in pods {
        let eph = s.ephemeral("shop", &p);
        assert_eq!(eph.len(), 2, "the stress and its stop: {eph:?}");
        assert_eq!(strs(&eph[0]["command"]), want);
        assert_eq!(eph[0]["targetContainerName"], "app");
        assert_eq!(
            eph[0]["image"],
            concat!("rattle:", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            eph[0]["securityContext"],
            Value::Null,
            "no capability added"
        );
        assert_eq!(
            strs(&eph[1]["command"]),
            [
                "pkill",
                "-TERM",
                "-f",
                "^rattle stress --cpu-workers 2 --cpu-load 75 --memory 67108864 --duration 600ms$"
            ]
        );
        assert_eq!(eph[1]["targetContainerName"], "app");
    }
}

#[test]
fn pod_stress_that_cannot_start_fails_the_run_and_names_the_reason() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    s.fake.with(|st| {
        st.ephemeral_state = json!({"waiting": {"reason": "ErrImagePull",
            "message": "pull access denied for rattle"}});
    });
    let (code, out, _) = s.experiment("stress.yaml", STRESS);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("cannot start: ErrImagePull: pull access denied for rattle"),
        "{out}"
    );
}

/// The stop pattern, run by the real `pkill`, signals the stress process of that command line
/// and nothing else; with nothing left it exits 1, which the revert accepts.
#[test]
fn pod_stress_stop_pattern_signals_exactly_the_stress() {
    let have = |b: &str| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !have("pkill") || !have("perl") {
        assert!(
            std::env::var_os("RATTLE_REQUIRE_NETNS").is_none(),
            "RATTLE_REQUIRE_NETNS is set but pkill or perl is missing"
        );
        eprintln!("NOTICE: pkill or perl missing; skipping the stop-pattern check");
        return;
    }
    // Processes whose command line is a stress's (perl rewrites its own with $0).
    let spawn = |line: &str| {
        crate::support::Guard(
            Command::new("perl")
                .arg("-e")
                .arg(format!("$0 = q{{{line}}}; sleep 60"))
                .spawn()
                .expect("perl"),
        )
    };
    let args: Vec<String> = [
        "rattle",
        "stress",
        "--memory",
        "1MiB",
        "--duration",
        "900ms",
    ]
    .map(String::from)
    .to_vec();
    let mut target = spawn(&args.join(" "));
    let mut other = spawn("rattle stress --memory 1MiB --duration 9000ms");
    let cmdline = |pid: u32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (cmdline(target.0.id()).starts_with(b"perl")
        || cmdline(other.0.id()).starts_with(b"perl"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stop = rattle::fault::k8s::pod_stress::stop_args(
        &rattle::fault::k8s::pod_stress::pkill_pattern(&args),
    );
    let status = Command::new(&stop[0])
        .args(&stop[1..])
        .status()
        .expect("pkill");
    assert_eq!(status.code(), Some(0));
    let st = target.0.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(15), "SIGTERM");
    assert!(
        other.0.try_wait().expect("try_wait").is_none(),
        "the other one runs on"
    );
    let again = Command::new(&stop[0])
        .args(&stop[1..])
        .status()
        .expect("pkill");
    assert_eq!(
        again.code(),
        Some(1),
        "nothing left: the revert's accepted code"
    );
    let _ = other.0.kill();
}

/// Gives each pod of `ns` a node and a running `app` container with an ID, as a kubelet reports.
fn schedule_pods(s: &Setup, ns: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, p) in s.fake.pod_names(ns).into_iter().enumerate() {
        let id = format!("{:064x}", 0xabc0 + i);
        let cid = id.clone();
        s.fake.update(Res::Pods, ns, &p, |o| {
            o["metadata"]["uid"] = json!(format!("uid-{i}-0000"));
            o["spec"]["nodeName"] = json!("node-a");
            o["status"]["containerStatuses"] = json!([{"name": "app", "image": "app",
                "imageID": "", "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{cid}"), "state": {"running": {}}}]);
        });
        out.push((p, id));
    }
    out
}

#[test]
fn container_kill_runs_a_host_pid_helper_and_sees_the_restart() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 2);
    s.fake.add_namespace(
        "shop",
        json!({"pod-security.kubernetes.io/enforce": "privileged"}),
    );
    let pods = schedule_pods(&s, "shop");
    let stop = AtomicBool::new(false);
    let helpers = std::sync::Mutex::new(Vec::<Value>::new());
    let (code, out, report) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for name in s.fake.pod_names("shop") {
                    if !name.starts_with("rattle-kill-") {
                        continue;
                    }
                    let Some(h) = s.fake.get(Res::Pods, "shop", &name) else {
                        continue;
                    };
                    if h["status"]["phase"] == "Succeeded" {
                        continue;
                    }
                    helpers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(h.clone());
                    let id = h["spec"]["containers"][0]["command"][4]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    for (p, pid) in &pods {
                        if *pid == id {
                            s.fake.update(Res::Pods, "shop", p, |o| {
                                let n = o["status"]["containerStatuses"][0]["restartCount"]
                                    .as_i64()
                                    .unwrap_or(0);
                                o["status"]["containerStatuses"][0]["restartCount"] = json!(n + 1);
                            });
                        }
                    }
                    s.fake.update(Res::Pods, "shop", &name, |o| {
                        o["status"]["phase"] = json!("Succeeded");
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = s.experiment(
            "kill.yaml",
            r#"
version: 1
name: k8s-container-kill
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-app
    at: 300ms
    container-kill: { namespace: shop, labels: app=web, mode: one, container: app }
duration: 1s
"#,
        );
        stop.store(true, Ordering::Relaxed);
        r
    });
    assert_eq!(code, 0, "{out}");
    let report = report.expect("report.json");
    let victim = report["faults"][0]["targets"][0]["id"]
        .as_str()
        .expect("target")
        .trim_start_matches("shop/")
        .to_string();
    let helpers = helpers.into_inner().unwrap_or_else(|p| p.into_inner());
    assert_eq!(helpers.len(), 1, "one helper pod: {helpers:?}");
    let h = &helpers[0];
    let (_, id) = pods
        .iter()
        .find(|(p, _)| *p == victim)
        .expect("the victim is one of the pods");
    assert_eq!(h["spec"]["hostPID"], true);
    assert_eq!(h["spec"]["nodeName"], "node-a");
    assert_eq!(h["spec"]["restartPolicy"], "Never");
    let c = &h["spec"]["containers"][0];
    assert_eq!(
        strs(&c["command"])[..2],
        ["sh".to_string(), "-c".to_string()]
    );
    assert_eq!(
        c["command"][4],
        json!(id),
        "the container ID is the script's argument"
    );
    assert_eq!(c["securityContext"]["capabilities"]["add"], json!(["KILL"]));
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    // The pod stayed (its container restarted); the helper is gone.
    let pod = s
        .fake
        .get(Res::Pods, "shop", &victim)
        .expect("the pod stayed");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 1);
    let log = s.fake.log();
    let helper_name = h["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        log.iter()
            .any(|l| l == &format!("POST pods shop/{helper_name}")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("DELETE pods shop/{helper_name}"))),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.starts_with(&format!("DELETE pods shop/{victim}"))),
        "the pod itself is never deleted: {log:?}"
    );
    assert!(s.fake.get(Res::Pods, "shop", helper_name).is_none());
}

#[test]
fn container_kill_that_restarts_nothing_is_an_error() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    schedule_pods(&s, "shop");
    let stop = AtomicBool::new(false);
    // A kubelet that runs the helper but never restarts the container.
    let (code, out, _) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for name in s.fake.pod_names("shop") {
                    if name.starts_with("rattle-kill-") {
                        s.fake.update(Res::Pods, "shop", &name, |o| {
                            o["status"]["phase"] = json!("Succeeded");
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = s.experiment(
            "kill.yaml",
            r#"
version: 1
name: k8s-container-kill
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-app
    at: 300ms
    container-kill: { namespace: shop, labels: app=web, container: app, restart_timeout: 1s }
duration: 1s
"#,
        );
        stop.store(true, Ordering::Relaxed);
        r
    });
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("its restartCount stayed 0 for 1s"), "{out}");
}

#[test]
fn container_kill_is_refused_where_pod_security_forbids_host_pid() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    s.fake.add_namespace(
        "shop",
        json!({"pod-security.kubernetes.io/enforce": "baseline"}),
    );
    schedule_pods(&s, "shop");
    let file = write(
        s.dir.path(),
        "kill.yaml",
        r#"
version: 1
name: k8s-container-kill
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: kill-app
    at: 300ms
    container-kill: { namespace: shop, labels: app=web, container: app }
duration: 1s
"#,
    );
    let (code, stdout, stderr) = s.run(&["run", file.to_str().unwrap_or(""), "--dry-run"]);
    let all = format!("{stdout}\n{stderr}");
    assert!(
        all.contains("whose Pod Security level is \"baseline\""),
        "the dry run names the refusal: {all}"
    );
    let (code2, stdout2, stderr2) = s.run(&["run", file.to_str().unwrap_or(""), "--yes"]);
    let all2 = format!("{stdout2}\n{stderr2}");
    assert_ne!(code2, 0, "{all2}");
    assert!(all2.contains("only \"privileged\" allows it"), "{all2}");
    assert!(
        !s.fake.log().iter().any(|l| l.starts_with("POST pods")),
        "nothing created: {:?}",
        s.fake.log()
    );
    let _ = code;
}

#[test]
fn partition_resolves_peer_ips_and_deletes_the_same_rules() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    s.fake.add_deployment("shop", "db", 2);
    for (i, p) in s.fake.pod_names("shop").into_iter().enumerate() {
        s.fake.update(Res::Pods, "shop", &p, |o| {
            o["status"]["podIP"] = json!(format!("10.9.0.{}", i + 1));
            o["status"]["podIPs"] = json!([{"ip": format!("10.9.0.{}", i + 1)}]);
        });
    }
    let dbs: Vec<String> = s
        .fake
        .pod_names("shop")
        .into_iter()
        .filter(|p| p.starts_with("db-"))
        .collect();
    let db_ips: Vec<String> = dbs
        .iter()
        .map(|p| {
            s.fake.get(Res::Pods, "shop", p).expect("db")["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let (code, out, report) = s.experiment(
        "part.yaml",
        r#"
version: 1
name: k8s-partition
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: cut
    at: 300ms
    duration: 500ms
    pod-network-partition: { namespace: shop, labels: app=web, direction: out, peers: { labels: app=db }, ports: [5432] }
duration: 1500ms
"#,
    );
    assert_eq!(code, 0, "{out}");
    let report = report.expect("report");
    let targets = report["faults"][0]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let peers: Vec<&str> = targets
        .iter()
        .filter(|t| t["kind"] == "peer")
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(peers, db_ips.iter().map(String::as_str).collect::<Vec<_>>());
    let web = s
        .fake
        .pod_names("shop")
        .into_iter()
        .find(|p| p.starts_with("web-"))
        .expect("web");
    let eph = s.ephemeral("shop", &web);
    assert_eq!(eph.len(), 2, "{eph:?}");
    let list = db_ips
        .iter()
        .map(|ip| format!("{ip}/32"))
        .collect::<Vec<_>>()
        .join(",");
    let rule = format!(
        "OUTPUT -d {list} -p tcp -m multiport --dports 5432 -m comment --comment rattle -j DROP"
    );
    assert_eq!(
        strs(&eph[0]["command"]).join(" "),
        format!("iptables -w 5 -I {rule}")
    );
    assert_eq!(
        eph[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN"])
    );
    // One command and "already gone" accepted: the revert runs `iptables -D` directly.
    assert_eq!(
        strs(&eph[1]["command"]).join(" "),
        format!("iptables -w 5 -D {rule}")
    );
    for db in &dbs {
        assert!(s.ephemeral("shop", db).is_empty(), "peers are not touched");
    }
}

#[test]
fn a_failed_rule_fails_the_run_with_the_container_message() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    s.fake.with(|st| {
        st.ephemeral_state = json!({"terminated": {"exitCode": 2, "reason": "Error",
            "message": "iptables v1.8.9: unknown option \"--dport\""}});
    });
    let (code, out, _) = s.experiment(
        "dns.yaml",
        r#"
version: 1
name: k8s-dns
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: dns
    at: 300ms
    duration: 500ms
    pod-dns-failure: { namespace: shop, labels: app=web, hosts: [db.example.com] }
duration: 1500ms
"#,
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("exited with code 2 (Error): iptables v1.8.9: unknown option"),
        "{out}"
    );
}

#[test]
fn bandwidth_and_corrupt_are_tc_in_ephemeral_containers() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    let (code, out, _) = s.experiment(
        "tc.yaml",
        r#"
version: 1
name: k8s-tc
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: narrow
    at: 300ms
    duration: 300ms
    pod-network-bandwidth: { namespace: shop, labels: app=web, rate: 2mbit, burst: 20KiB, limit: 40KiB, image: "example/tc:1" }
  - name: flip
    at: 700ms
    duration: 300ms
    pod-network-corrupt: { namespace: shop, labels: app=web, corrupt: 1.5%, device: eth1 }
duration: 1500ms
"#,
    );
    assert_eq!(code, 0, "{out}");
    let web = s.fake.pod_names("shop").pop().expect("web");
    let eph = s.ephemeral("shop", &web);
    let cmds: Vec<String> = eph.iter().map(|c| strs(&c["command"]).join(" ")).collect();
    assert_eq!(
        cmds,
        [
            "tc qdisc replace dev eth0 root tbf rate 2000000bit burst 20480 limit 40960",
            "tc qdisc del dev eth0 root",
            "tc qdisc replace dev eth1 root netem corrupt 1.5%",
            "tc qdisc del dev eth1 root",
        ]
    );
    assert_eq!(eph[0]["image"], "example/tc:1");
}

/// A real crash (SIGKILL after the injection), then `rattle recover`: the journaled token
/// deletes the DNS rules in every pod.
#[test]
fn a_crashed_dns_failure_is_reverted_by_recover() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    let file = write(
        s.dir.path(),
        "dns.yaml",
        r#"
version: 1
name: k8s-dns-crash
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: dns
    at: 300ms
    duration: 30s
    pod-dns-failure: { namespace: shop, labels: app=web, action: drop }
duration: 40s
"#,
    );
    let web = s.fake.pod_names("shop").pop().expect("web");
    let mut cmd = s.cmd();
    cmd.args([
        "run",
        file.to_str().unwrap_or(""),
        "--yes",
        "--progress",
        "quiet",
        "--out",
    ])
    .arg(s.path("out"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = crate::support::Guard(cmd.spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.ephemeral("shop", &web).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert_eq!(s.ephemeral("shop", &web).len(), 1, "injected, then killed");
    let (code, stdout, stderr) = s.run(&["recover", "--yes"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let eph = s.ephemeral("shop", &web);
    assert_eq!(eph.len(), 2, "recover added the reverting container");
    let revert = strs(&eph[1]["command"]);
    assert_eq!(revert[..2], ["sh".to_string(), "-c".to_string()]);
    assert_eq!(revert[4], "1", "iptables -D's 'no such rule' is accepted");
    let text = revert.join(" ");
    assert_eq!(text.matches("-D INPUT -p").count(), 4, "{text}");
    assert!(!text.contains("-I "), "{text}");
}

/// The container-kill helper's script, run for real as root: it finds the process whose
/// cgroup path names the container ID and SIGKILLs it, and fails when it found none.
#[test]
fn container_kill_script_kills_the_processes_of_the_container_by_cgroup() {
    let base = Path::new("/sys/fs/cgroup/pids");
    let root = nix::unistd::Uid::effective().is_root();
    if !root || !base.join("cgroup.procs").exists() {
        assert!(
            std::env::var_os("RATTLE_REQUIRE_NETNS").is_none(),
            "RATTLE_REQUIRE_NETNS is set but cgroups cannot be made here (root: {root})"
        );
        eprintln!("NOTICE: not root or no pids cgroup; skipping the kill-script check");
        return;
    }
    let id = format!("{:016x}{:048x}", std::process::id(), rand::random::<u64>());
    let dir = base.join(format!("rattle-test-{id}"));
    std::fs::create_dir(&dir).expect("cgroup");
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let mut victim = crate::support::sleeper("rattle-kill-victim");
    let mut bystander = crate::support::sleeper("rattle-kill-bystander");
    std::fs::write(dir.join("cgroup.procs"), victim.0.id().to_string()).expect("join cgroup");
    let script = rattle::fault::k8s::container_kill::KILL_SCRIPT;
    let (code, out, err) = run_bounded_cmd(
        {
            let mut c = Command::new("sh");
            c.args(["-c", script, "rattle-container-kill", &id]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("killed 1 process(es)"), "{out}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(victim.0.wait().expect("wait").signal(), Some(9));
    assert!(bystander.0.try_wait().expect("try_wait").is_none());
    let (code, out, _) = run_bounded_cmd(
        {
            let mut c = Command::new("sh");
            c.args(["-c", script, "rattle-container-kill", &id]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "nothing left to kill is a failure: {out}");
}

/// `pod-dns-failure`'s `answers`, run by the real `sh` on a file standing for the pod's
/// /etc/hosts: the lines are added, then only they are removed, in place (the real file is a
/// bind mount: same inode), and a revert with nothing left to remove changes nothing.
#[test]
fn dns_answers_edit_the_hosts_file_in_place_and_remove_only_their_lines() {
    use rattle::fault::k8s::pod_net::{hosts_add_args, hosts_del_args};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let original = "127.0.0.1 localhost\n10.0.0.1 other # mine\n";
    let hosts = write(dir.path(), "hosts", original);
    let path = hosts.to_str().expect("utf-8 path");
    let ino = std::fs::metadata(&hosts).expect("meta").ino();
    let answers: std::collections::BTreeMap<String, String> = [
        ("payments.example.com".to_string(), "192.0.2.7".to_string()),
        ("db.example.com".to_string(), "2001:db8::1".to_string()),
    ]
    .into();
    let run = |argv: Vec<String>| {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        run_bounded_cmd(c, Duration::from_secs(30))
    };
    let (code, out, err) = run(hosts_add_args(path, &answers));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("read"),
        format!(
            "{original}2001:db8::1 db.example.com # rattle-dns-answer\n\
             192.0.2.7 payments.example.com # rattle-dns-answer\n"
        )
    );
    for _ in 0..2 {
        let (code, out, err) = run(hosts_del_args(path));
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(std::fs::read_to_string(&hosts).expect("read"), original);
    }
    assert_eq!(
        std::fs::metadata(&hosts).expect("meta").ino(),
        ino,
        "rewritten in place"
    );
    // A file that cannot be read is never replaced by an empty one.
    let missing = dir.path().join("absent");
    let (code, _, _) = run(hosts_del_args(missing.to_str().expect("utf-8")));
    assert_ne!(code, 0);
    assert!(!missing.exists());
}

#[test]
fn dns_answers_run_in_the_target_containers_process_namespace() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    let (code, out, report) = s.experiment(
        "answers.yaml",
        r#"
version: 1
name: k8s-dns-answers
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: wrong
    at: 300ms
    duration: 300ms
    pod-dns-failure: { namespace: shop, labels: app=web, container: app, answers: { payments.example.com: 192.0.2.7 } }
duration: 1s
"#,
    );
    assert_eq!(code, 0, "{out}");
    let report = report.expect("report");
    let desc = report["faults"][0]["targets"][0]["description"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(desc, "/etc/hosts answers payments.example.com -> 192.0.2.7");
    let web = s.fake.pod_names("shop").pop().expect("web");
    let eph = s.ephemeral("shop", &web);
    assert_eq!(eph.len(), 2, "{eph:?}");
    for c in &eph {
        assert_eq!(c["targetContainerName"], "app");
        assert_eq!(
            c["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "SYS_PTRACE"])
        );
    }
    let add = strs(&eph[0]["command"]);
    assert_eq!(
        add[3..],
        [
            "rattle-hosts",
            "/proc/1/root/etc/hosts",
            "rattle-dns-answer",
            "192.0.2.7",
            "payments.example.com"
        ]
    );
    assert_eq!(
        strs(&eph[1]["command"])[2],
        rattle::fault::k8s::pod_net::HOSTS_DEL_SCRIPT
    );
}

/// `--dry-run` names the exact pods and what each would get (the stress's whole command line
/// with its deadline, the peers' IPs) and touches nothing; a protected namespace is refused for
/// the new kinds as for the others (exit 2, before anything is touched).
#[test]
fn dry_run_names_targets_and_protected_namespaces_are_refused() {
    let s = Setup::new();
    s.fake.add_deployment("shop", "web", 1);
    s.fake.add_deployment("shop", "db", 1);
    for p in s.fake.pod_names("shop") {
        if p.starts_with("db-") {
            s.fake.update(Res::Pods, "shop", &p, |o| {
                o["status"]["podIP"] = json!("10.9.0.5");
            });
        }
    }
    let file = write(
        s.dir.path(),
        "dry.yaml",
        r#"
version: 1
name: k8s-dry
steady_state: { warmup: 200ms, hold: 200ms }
faults:
  - name: hog
    at: 300ms
    duration: 600ms
    pod-stress: { namespace: shop, labels: app=web, cpu_workers: 1, memory: 16MiB }
  - name: cut
    at: 300ms
    duration: 600ms
    pod-network-partition: { namespace: shop, labels: app=web, peers: { labels: app=db } }
duration: 1500ms
"#,
    );
    let (code, stdout, stderr) = s.run(&["run", file.to_str().unwrap_or(""), "--dry-run"]);
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(code, 0, "{all}");
    let web = s
        .fake
        .pod_names("shop")
        .into_iter()
        .find(|p| p.starts_with("web-"))
        .expect("web");
    assert!(all.contains(&format!("pod shop/{web}")), "{all}");
    assert!(
        all.contains("rattle stress --cpu-workers 1 --memory 16777216 --duration 600ms"),
        "{all}"
    );
    assert!(all.contains("peer 10.9.0.5"), "{all}");
    assert!(
        s.fake.log().is_empty(),
        "a dry run touches nothing: {:?}",
        s.fake.log()
    );

    for kind in [
        "pod-stress: { namespace: kube-system, cpu_workers: 1 }",
        "container-kill: { namespace: kube-system, container: app }",
        "pod-network-bandwidth: { namespace: kube-system, rate: 1mbit }",
        "pod-dns-failure: { namespace: kube-system }",
    ] {
        let file = write(
            s.dir.path(),
            "sys.yaml",
            &format!(
                "version: 1\nname: sys\nsteady_state: {{ warmup: 200ms, hold: 200ms }}\nfaults:\n  - name: f\n    at: 300ms\n    duration: 500ms\n    {kind}\nduration: 1s\n"
            ),
        );
        let (code, stdout, stderr) = s.run(&["validate", file.to_str().unwrap_or("")]);
        assert_eq!(code, 2, "{kind}: {stdout}{stderr}");
        assert!(
            stderr.contains("kube-system is protected"),
            "{kind}: {stderr}"
        );
    }
}
