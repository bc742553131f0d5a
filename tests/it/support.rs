//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The rattle binary under test.
pub fn rattle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rattle"))
}

/// A `rattle` command with a clean environment for output (no colours, no terminal), and a
/// journal of its own: tests never read or write the user's state directory.
pub fn rattle() -> Command {
    let mut c = Command::new(rattle_bin());
    c.env("NO_COLOR", "1");
    c.env(
        "RATTLE_STATE_DIR",
        std::env::temp_dir().join(format!("rattle-test-state-{}", std::process::id())),
    );
    c
}

/// Writes `content` to `name` in `dir`, returning the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port on 127.0.0.1 for a server that something else (a `rattle` child, a demo, a proxy)
/// binds later, or for a "closed" port that nothing may answer on (issue #21).
///
/// Binding port 0 and dropping the listener hands out a port from the kernel's ephemeral
/// range, where anything may take it before it is used: another test's demo workers (which
/// bind port 0 too) or the source port of any outgoing connection; and a client whose source
/// port happens to equal a "closed" destination port connects to itself. So ports come from
/// a band outside `/proc/sys/net/ipv4/ip_local_port_range` instead, which the kernel never
/// hands out by itself; each is unique within this test process (a counter, started at a
/// random offset so that concurrent test processes rarely meet) and checked free by a bind
/// before it is handed out.
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = test_port_band();
    let span = u32::from(high - low) + 1;
    let next = NEXT.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AtomicU32::new((random % u64::from(span)) as u32)
    });
    for _ in 0..span {
        let port = low + (next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..={high}");
}

/// The band `free_port` draws from: below the kernel's ephemeral range when there is room
/// (from 10000, clear of the well-known and most registered server ports), else above it.
fn test_port_band() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let mut bounds = range
        .iter()
        .flat_map(|r| r.split_whitespace())
        .filter_map(|n| n.parse::<u16>().ok());
    let (eph_low, eph_high) = match (bounds.next(), bounds.next()) {
        (Some(l), Some(h)) => (l, h),
        // Linux's default.
        _ => (32768, 60999),
    };
    if eph_low > 12000 {
        (10000, eph_low - 1)
    } else {
        assert!(
            eph_high < 63000,
            "no room outside the ephemeral range {eph_low}-{eph_high}"
        );
        (eph_high + 1, 65535)
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `sleep 120` process whose argv[0] is `marker` (so `match: "^marker "` selects exactly it),
/// killed when dropped.
pub fn sleeper(marker: &str) -> Guard {
    Guard(
        Command::new("sleep")
            .arg0(marker)
            .arg("120")
            .spawn()
            .expect("spawn sleep"),
    )
}

/// The state letter of a process (R, S, D, T, Z, ...), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// Runs `cmd` (stdin closed, output captured), SIGKILLing it if it outlives `limit`. Returns
/// (exit code, stdout, stderr); the code is -1 when killed by a signal.
pub fn run_bounded_cmd(mut cmd: Command, limit: Duration) -> (i32, String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rattle");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > limit {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().expect("wait rattle");
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (bounded, 20 s) until process `pid` is in state `want`.
pub fn wait_for_state(pid: u32, want: char, what: &str) {
    let start = Instant::now();
    while proc_state(pid) != Some(want) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: state {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is process `pid` alive and not stopped?
pub fn resumed(pid: u32) -> bool {
    matches!(proc_state(pid), Some(c) if !matches!(c, 'T' | 't' | 'Z' | 'X'))
}

/// Waits (bounded) for the run to exit; returns (code, stdout, stderr).
pub fn wait_run(g: &mut Guard, limit: Duration) -> (i32, String, String) {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = g.0.try_wait() {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut s) = g.0.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = g.0.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            return (status.code().unwrap_or(-1), out, err);
        }
        assert!(
            start.elapsed() < limit,
            "rattle did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` to the process of `g`; a signal rattle handles (SIGINT, SIGTERM, ...) only once
/// rattle has installed its handler, since before that the default action kills it with no
/// report (a fixed sleep after the spawn is not enough on a busy machine: issue #21).
pub fn signal(g: &Guard, sig: Signal) {
    let pid = g.0.id();
    if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        wait_for_handler(pid, sig);
    }
    kill(Pid::from_raw(pid as i32), sig).expect("signal rattle");
}

/// Does process `pid` catch `sig` (its bit in the `SigCgt` mask of /proc/PID/status)?
pub fn catches(pid: u32, sig: Signal) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig as i32 - 1)) != 0)
}

/// Waits (bounded, 20 s) until process `pid` has a handler for `sig`: rattle installs its
/// SIGINT and SIGTERM handlers together when it starts waiting for them, so once both are
/// caught a signal reaches the code that reverts and reports.
pub fn wait_for_handler(pid: u32, sig: Signal) {
    let start = Instant::now();
    while !(catches(pid, sig) && catches(pid, Signal::SIGTERM)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "process {pid} never installed a handler for {sig:?} (state {:?})",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The DOM of a local HTML file as headless Chromium renders it; `None` (with a notice) when
/// Chromium is not installed, unless RATTLE_REQUIRE_CHROMIUM is set (CI), where that fails.
pub fn chromium_dump_dom(file: &Path) -> Option<String> {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    let Some(browser) = browser else {
        // CI installs chromium and sets this, so there the check can never silently skip.
        assert!(
            std::env::var_os("RATTLE_REQUIRE_CHROMIUM").is_none(),
            "RATTLE_REQUIRE_CHROMIUM is set but chromium is not installed"
        );
        eprintln!("NOTICE: chromium is not installed; skipping the browser check");
        return None;
    };
    let profile = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--dump-dom")
    .arg(format!("file://{}", file.display()));
    let (code, dom, err) = run_bounded_cmd(cmd, Duration::from_secs(60));
    assert_eq!(code, 0, "chromium failed: {err}");
    Some(dom)
}

/// `text` with `len` bytes at `pos` replaced by `insert` (both ends moved to char boundaries):
/// the mutation of the parsers' property tests.
pub fn mutate(text: &str, pos: usize, len: usize, insert: &str) -> String {
    let mut s = text.to_string();
    let pos = pos.min(s.len());
    let pos = (0..=pos)
        .rev()
        .find(|p| s.is_char_boundary(*p))
        .unwrap_or(0);
    let end = (pos + len).min(s.len());
    let end = (end..=s.len())
        .find(|p| s.is_char_boundary(*p))
        .unwrap_or(s.len());
    s.replace_range(pos..end, insert);
    s
}

/// A TCP echo server on 127.0.0.1 (a task per connection, `TCP_NODELAY`); returns its address.
pub async fn echo() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A server on 127.0.0.1 that writes `n` bytes to each connection, then closes it.
pub async fn sender(n: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&vec![b'x'; n]).await;
                let _ = s.shutdown().await;
                let mut sink = [0u8; 16];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    addr
}

/// A toxic from JSON attributes (a test's own, so a bad one is a test bug: it panics).
pub fn toxic(
    name: &str,
    kind: &str,
    stream: rattle::proxy::Stream,
    toxicity: f32,
    attrs: serde_json::Value,
) -> rattle::proxy::ActiveToxic {
    let m = attrs.as_object().cloned().unwrap_or_default();
    rattle::proxy::ActiveToxic::new(name.into(), kind, stream, toxicity, &m).unwrap()
}
