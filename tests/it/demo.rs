//! Integration tests of the built-in demo target, with real worker processes (the `rattle`
//! binary itself) and real sockets on 127.0.0.1.
//!
//! Every test binds port 0 so tests run in parallel, is bounded by `tokio::time::timeout`, and
//! kills what it started by pid even when it fails (the `Reaper` guard, on top of `Demo`'s own
//! `Drop`). The machine is shared and noisy, so assertions are about counts and ordering only;
//! the one timing assertion is a lower bound (configured latency).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rattle::demo::{Demo, DemoConfig, DemoError, DemoLog};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

/// Bound of any single test; far above what a healthy run needs.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rattle"))
}

fn config(replicas: u32) -> DemoConfig {
    DemoConfig {
        replicas,
        port: 0,
        restart_delay: Duration::from_secs(1),
        latency: Duration::ZERO,
        // Health-check timeout is min(interval, 500 ms): keep it roomy for a busy machine.
        health_interval: Duration::from_millis(500),
        exe: Some(exe()),
        log: DemoLog::default(),
    }
}

/// Runs a test body under the global time bound.
async fn bounded<F: Future<Output = ()>>(body: F) {
    if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// SIGKILLs, on drop, every tracked pid that still runs one of our processes. Checking the
/// command line first means a pid reaped and reused by someone else is never touched.
#[derive(Default)]
struct Reaper(Vec<u32>);

impl Reaper {
    fn track(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.0.extend(pids);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if cmdline(pid).is_some_and(|c| c.contains("rattle")) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// The process exists at all (a zombie counts: it was not reaped).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(c)
}

/// One GET; `Err` for a transport error or no answer in 5 s.
async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let exchange = async {
        let resp = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 5 s".into()))
}

/// The worker pid named in a `GET /` body ("... worker pid 1234").
fn pid_in(body: &str) -> Option<u32> {
    body.rsplit("pid ").next()?.trim().parse().ok()
}

/// GET / that must succeed; returns the serving worker's pid.
async fn served_by(client: &HttpClient, addr: SocketAddr) -> u32 {
    match get(client, addr, "/").await {
        Ok((200, body)) => pid_in(&body).unwrap_or_else(|| panic!("no pid in {body:?}")),
        other => panic!("GET / failed: {other:?}"),
    }
}

async fn start(cfg: DemoConfig, reaper: &mut Reaper) -> Demo {
    let demo = match Demo::start(cfg).await {
        Ok(d) => d,
        Err(e) => panic!("demo did not start: {e}"),
    };
    reaper.track(demo.worker_pids());
    demo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_over_all_workers() {
    let mut reaper = Reaper::default();
    bounded(async {
        let demo = start(config(3), &mut reaper).await;
        let pids: BTreeSet<u32> = demo.worker_pids().into_iter().collect();
        assert_eq!(pids.len(), 3);
        let client = client();
        let mut served: BTreeMap<u32, usize> = BTreeMap::new();
        for _ in 0..200 {
            *served
                .entry(served_by(&client, demo.addr()).await)
                .or_default() += 1;
        }
        assert_eq!(served.values().sum::<usize>(), 200);
        assert_eq!(served.keys().copied().collect::<BTreeSet<_>>(), pids);
        // Health answers directly, through the balancer too.
        assert_eq!(
            get(&client, demo.addr(), "/health").await,
            Ok((200, "ok\n".into()))
        );
        assert!(demo.shutdown().await.is_ok());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_costs_a_few_requests_and_comes_back() {
    let mut reaper = Reaper::default();
    bounded(async {
        let mut cfg = config(3);
        // A health check marks a worker down only after two consecutive failures, one interval
        // apart; the request sent right after the kill meets the dead worker first unless this
        // test is held up for a whole interval in between, which a busy machine can do to 1 s
        // but not reasonably to 3 s (issue #21). The restarted worker still comes back well
        // within the 15 s the test waits for it.
        cfg.health_interval = Duration::from_secs(3);
        // The demo's lines go to the sink it is given (a run's printer), none to stderr.
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        cfg.log = DemoLog::to(move |l| {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(l.to_string())
        });
        let demo = start(cfg, &mut reaper).await;
        let addr = demo.addr();
        let client = client();

        // Learn the rotation, then kill the worker whose turn is next, so the very next
        // request meets the dead worker before any health check can.
        let mut order = Vec::new();
        for _ in 0..6 {
            order.push(served_by(&client, addr).await);
        }
        let victim = order[order.len() - 3];
        assert!(demo.worker_pids().contains(&victim));
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL the victim");

        // ~200 requests/s for ~3 s, paced from intended start times.
        let mut failed = 0usize;
        let mut ok_by: BTreeMap<u32, usize> = BTreeMap::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(5));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..600 {
            ticker.tick().await;
            match get(&client, addr, "/").await {
                Ok((200, body)) => {
                    if let Some(pid) = pid_in(&body) {
                        *ok_by.entry(pid).or_default() += 1;
                    }
                }
                _ => failed += 1,
            }
        }
        eprintln!("kill test: {failed} failed, served {ok_by:?}");
        assert!(
            (1..=10).contains(&failed),
            "expected a few failed requests after the kill, got {failed}"
        );
        assert!(!ok_by.contains_key(&victim) || ok_by[&victim] == 0);

        // The supervisor restarts it once, on the same slot, with a new pid.
        assert!(
            eventually(Duration::from_secs(15), || demo.restarts() == 1
                && demo.worker_pids().len() == 3)
            .await,
            "no restart: restarts={} pids={:?}",
            demo.restarts(),
            demo.worker_pids()
        );
        let pids = demo.worker_pids();
        reaper.track(pids.clone());
        assert!(!pids.contains(&victim));
        let old: BTreeSet<u32> = order.iter().copied().collect();
        let fresh: Vec<u32> = pids.iter().copied().filter(|p| !old.contains(p)).collect();
        assert_eq!(fresh.len(), 1, "one new worker: {pids:?} vs {old:?}");
        let fresh = fresh[0];
        // Reaped by the supervisor, not left as a zombie.
        assert!(eventually(Duration::from_secs(5), || !exists(victim)).await);

        // Once a health check passed, the new worker is back in rotation.
        let mut back = ok_by.contains_key(&fresh);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !back && Instant::now() < deadline {
            if let Ok((200, body)) = get(&client, addr, "/").await {
                back = pid_in(&body) == Some(fresh);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(back, "restarted worker {fresh} never served a request");
        // And the service is whole again: all three serve, nothing fails.
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            seen.insert(served_by(&client, addr).await);
        }
        assert_eq!(seen, pids.iter().copied().collect());
        assert_eq!(demo.restarts(), 1);
        assert!(demo.shutdown().await.is_ok());
        let lines = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let has = |needle: &str| {
            lines
                .iter()
                .any(|l| l.starts_with("rattle demo: ") && l.contains(needle))
        };
        assert!(
            has(&format!("worker pid {victim} on port")) && has("restarting in"),
            "{lines:?}"
        );
        assert!(has("marked down") && has("is up"), "{lines:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_every_response() {
    let mut reaper = Reaper::default();
    bounded(async {
        let mut cfg = config(2);
        cfg.latency = Duration::from_millis(50);
        let demo = start(cfg, &mut reaper).await;
        let client = client();
        for _ in 0..6 {
            let t0 = Instant::now();
            served_by(&client, demo.addr()).await;
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(50), "answered in {took:?}");
        }
        assert!(demo.shutdown().await.is_ok());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_and_reaps_every_worker_and_frees_the_port() {
    let mut reaper = Reaper::default();
    bounded(async {
        let demo = start(config(3), &mut reaper).await;
        let addr = demo.addr();
        let pids = demo.worker_pids();
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&p| running(p)));
        assert!(demo.shutdown().await.is_ok());
        // Reaped, not merely killed: a zombie would still have a /proc entry.
        for pid in pids {
            assert!(!exists(pid), "worker {pid} still exists after shutdown");
        }
        let rebind = tokio::net::TcpListener::bind(addr).await;
        assert!(rebind.is_ok(), "port still taken: {rebind:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_demo_kills_its_workers() {
    let mut reaper = Reaper::default();
    bounded(async {
        let demo = start(config(2), &mut reaper).await;
        let pids = demo.worker_pids();
        drop(demo);
        assert!(
            eventually(Duration::from_secs(10), || pids.iter().all(|&p| !exists(p))).await,
            "workers left after drop: {pids:?}"
        );
    })
    .await;
}

/// A private copy of the binary's path (a symlink in a temp dir), so this test can find its own
/// workers by command line even with other tests running in parallel.
fn private_exe(dir: &Path) -> PathBuf {
    let link = dir.join("rattle");
    std::os::unix::fs::symlink(exe(), &link).expect("symlink the binary");
    link
}

fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| running(pid) && cmdline(pid).is_some_and(|c| c.contains(needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_an_error_and_leaves_nothing_running() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a port");
        let port = taken.local_addr().expect("local addr").port();
        let mut cfg = config(2);
        cfg.port = port;
        cfg.exe = Some(private_exe(dir.path()));
        match Demo::start(cfg).await {
            Err(e @ DemoError::PortInUse { .. }) => {
                assert!(e.to_string().contains(&port.to_string()), "{e}");
            }
            Err(e) => panic!("expected PortInUse, got {e}"),
            Ok(demo) => {
                let _ = demo.shutdown().await;
                panic!("started on a taken port");
            }
        }
        let needle = dir.path().to_string_lossy().into_owned();
        assert_eq!(processes_mentioning(&needle), Vec::<u32>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_binary_is_a_spawn_error() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(2);
        cfg.exe = Some(dir.path().join("no-such-binary"));
        match Demo::start(cfg).await {
            Err(DemoError::Spawn { .. }) => {}
            Err(e) => panic!("expected Spawn, got {e}"),
            Ok(demo) => {
                let _ = demo.shutdown().await;
                panic!("started without a binary");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_get_healthy_fail_start_and_are_killed() {
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("pids");
        // A "worker" that lives but never listens; it records its pid (kept across exec).
        let script = dir.path().join("fake-worker");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho $$ >> '{}'\nexec sleep 600\n",
                pid_file.display()
            ),
        )
        .expect("write script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod script");
        let mut cfg = config(2);
        cfg.exe = Some(script);
        let result = Demo::start(cfg).await;
        let pids: Vec<u32> = std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // Kill them by pid whatever happens below (the pid file holds only ours).
        let _reaper = Reaper(pids.clone());
        match result {
            Err(DemoError::Unhealthy { failing, .. }) => {
                assert!(failing.contains("127.0.0.1:"), "{failing}");
            }
            Err(e) => panic!("expected Unhealthy, got {e}"),
            Ok(demo) => {
                let _ = demo.shutdown().await;
                panic!("fake workers passed health checks");
            }
        }
        assert_eq!(pids.len(), 2, "both fake workers started once");
        for pid in pids {
            assert!(!exists(pid), "fake worker {pid} left behind");
        }
    })
    .await;
}

/// A `rattle demo` process as users run it, with what it printed on its first line.
struct Standalone {
    child: tokio::process::Child,
    addr: SocketAddr,
    workers: Vec<u32>,
    /// Kept open so the supervisor's later log lines never meet a closed pipe.
    _stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

async fn standalone(reaper: &mut Reaper) -> Standalone {
    let mut child = tokio::process::Command::new(exe())
        .args([
            "demo",
            "--port",
            "0",
            "--replicas",
            "2",
            "--health-interval",
            "500ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rattle demo");
    reaper.track(child.id());
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    // "rattle demo: listening on http://127.0.0.1:P/ (worker pids A, B); Ctrl-C stops"
    let line = loop {
        match lines.next_line().await {
            Ok(Some(l)) if l.contains("listening on http://") => break l,
            Ok(Some(_)) => continue,
            other => panic!("rattle demo ended before listening: {other:?}"),
        }
    };
    let addr = line
        .split_once("http://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .and_then(|(a, _)| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let workers: Vec<u32> = line
        .split_once("worker pids ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list.split(", ").filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default();
    reaper.track(workers.iter().copied());
    Standalone {
        child,
        addr,
        workers,
        _stderr: lines,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_and_stops_cleanly_on_sigint() {
    let mut reaper = Reaper::default();
    bounded(async {
        let mut demo = standalone(&mut reaper).await;
        assert_eq!(demo.workers.len(), 2);
        let client = client();
        let pid = served_by(&client, demo.addr).await;
        assert!(demo.workers.contains(&pid));
        let sup = demo.child.id().expect("supervisor pid");
        // The listening line comes before the supervisor starts waiting for Ctrl-C; a SIGINT
        // sent in between would kill it by the default action (issue #21).
        crate::support::wait_for_handler(sup, Signal::SIGINT);
        kill(Pid::from_raw(sup as i32), Signal::SIGINT).expect("SIGINT");
        let status = demo.child.wait().await.expect("wait supervisor");
        assert!(status.success(), "exit status {status}");
        // The supervisor reaped its workers before exiting.
        for pid in &demo.workers {
            assert!(!exists(*pid), "worker {pid} survived Ctrl-C");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_a_killed_supervisor() {
    let mut reaper = Reaper::default();
    bounded(async {
        let mut demo = standalone(&mut reaper).await;
        assert_eq!(demo.workers.len(), 2);
        assert!(demo.workers.iter().all(|&p| running(p)));
        demo.child.start_kill().expect("SIGKILL supervisor");
        let _ = demo.child.wait().await;
        // The kernel's parent-death signal kills them; their new parent may or may not reap
        // them, so only "no longer running" is asserted.
        let workers = demo.workers.clone();
        assert!(
            eventually(Duration::from_secs(10), || workers
                .iter()
                .all(|&p| !running(p)))
            .await,
            "workers outlived their supervisor: {workers:?}"
        );
    })
    .await;
}

/// Sends raw bytes on a fresh connection, then half-closes it if `hang_up`; returns the status
/// line (or what went wrong).
async fn raw_exchange(addr: SocketAddr, request: &[u8], hang_up: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(request).await.ok()?;
        if hang_up {
            s.shutdown().await.ok()?;
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().next().map(str::to_owned)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Some(line)) => line,
        Ok(None) => "no answer".into(),
        Err(_) => "timed out".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_never_mark_a_worker_down() {
    let mut reaper = Reaper::default();
    bounded(async {
        let demo = start(config(2), &mut reaper).await;
        let addr = demo.addr();
        let odd: [(&[u8], bool); 6] = [
            (b"GARBAGE\r\n\r\n", false),
            (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", false),
            (b"GET http://[::1]:1/elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", false),
            (b"GET //elsewhere/x HTTP/1.1\r\nHost: x\r\nConnection: x-a\r\nX-A: 1\r\n\r\n", false),
            // Body announced but never sent in full: the client hangs up.
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", true),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false),
        ];
        for (request, hang_up) in odd {
            let line = raw_exchange(addr, request, hang_up).await;
            assert!(!line.contains(" 502 ") && !line.contains(" 503 "), "{line}");
        }
        // Both workers still serve, in turn, and nothing fails.
        let client = client();
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(served_by(&client, addr).await);
        }
        assert_eq!(seen, demo.worker_pids().into_iter().collect());
        assert!(demo.shutdown().await.is_ok());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_outlive_the_thread_that_started_the_demo() {
    let mut reaper = Reaper::default();
    bounded(async {
        // Linux sends the parent-death signal when the *thread* that forked a child exits. Start
        // the demo from a short-lived thread: its workers must not die with that thread.
        let handle = tokio::runtime::Handle::current();
        let started = std::thread::spawn(move || handle.block_on(Demo::start(config(2))))
            .join()
            .expect("starter thread");
        let demo = match started {
            Ok(d) => d,
            Err(e) => panic!("demo did not start: {e}"),
        };
        let pids = demo.worker_pids();
        reaper.track(pids.clone());
        // Give a wrongly delivered SIGKILL time to land, then check nothing died.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(pids.iter().all(|&p| running(p)), "workers died: {pids:?}");
        assert_eq!(demo.restarts(), 0);
        let client = client();
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            seen.insert(served_by(&client, demo.addr()).await);
        }
        assert_eq!(seen, pids.iter().copied().collect());
        assert!(demo.shutdown().await.is_ok());
    })
    .await;
}
