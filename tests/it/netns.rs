//! The in-pod network faults' exact commands, executed for real inside network namespaces the
//! test creates, with their effect measured: the same container command an ephemeral container
//! would run (`iptables`/`ip6tables` through the batch script, `tc ... tbf`) runs in namespace
//! A ("the pod") of a veth pair to namespace B ("the peer"). This kernel has no netem, so
//! `pod-network-delay` and `pod-network-corrupt` are checked as argument vectors only (in the
//! library's unit tests).
//!
//! Needs root, `ip`, `iptables`, `tc`: skipped with a notice without them, failed when
//! `RATTLE_REQUIRE_NETNS=1` (CI). Every test makes its own pair with unique names, deleted by a
//! guard even on panic (and swept by the next run if the test process was SIGKILLed); traffic
//! goes only between the two namespaces, on link-local addresses. Sockets are opened in a namespace by a thread that entered it (`setns` affects only the
//! calling thread); a socket stays in its namespace wherever it is used from.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rattle::fault::k8s::pod_net::{BandwidthSpec, Commands, DnsFailureSpec, PartitionSpec, batch};
use serde_json::json;

use crate::support::run_bounded_cmd;

const IP_A: &str = "169.254.231.1";
const IP_B: &str = "169.254.231.2";

/// Two network namespaces joined by a veth pair (`va` in A, `vb` in B), deleted on drop.
struct Pair {
    a: String,
    b: String,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Deletes the pairs of test processes that died without their guards running (SIGKILL):
/// `rattle-<pid>-<n>-a|b` whose pid no longer exists.
fn sweep_dead_pairs() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("rattle-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

fn sh(args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    run_bounded_cmd(c, Duration::from_secs(30))
}

fn must(args: &[&str]) {
    let (code, out, err) = sh(args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
}

impl Pair {
    /// A new pair, or `None` (with a notice) where this machine cannot make one.
    fn new() -> Option<Pair> {
        let root = nix::unistd::Uid::effective().is_root();
        let tools = ["ip", "iptables", "ip6tables", "tc"].iter().all(|t| {
            Command::new(t)
                .arg("-V")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok()
        });
        if !root || !tools {
            assert!(
                std::env::var_os("RATTLE_REQUIRE_NETNS").is_none(),
                "RATTLE_REQUIRE_NETNS is set but the netns tests cannot run (root: {root}, \
                 ip/iptables/ip6tables/tc present: {tools})"
            );
            eprintln!("NOTICE: netns tests need root and ip, iptables, tc; skipping");
            return None;
        }
        sweep_dead_pairs();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = format!("rattle-{}-{n}", std::process::id());
        let p = Pair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        must(&["ip", "netns", "add", &p.a]);
        must(&["ip", "netns", "add", &p.b]);
        must(&[
            "ip", "-n", &p.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &p.b,
        ]);
        must(&[
            "ip",
            "-n",
            &p.a,
            "addr",
            "add",
            &format!("{IP_A}/30"),
            "dev",
            "va",
        ]);
        must(&[
            "ip",
            "-n",
            &p.b,
            "addr",
            "add",
            &format!("{IP_B}/30"),
            "dev",
            "vb",
        ]);
        for (ns, dev) in [(&p.a, "va"), (&p.b, "vb")] {
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        Some(p)
    }

    /// Runs `argv` in namespace `ns`, as the ephemeral container would in the pod's.
    fn exec(&self, ns: &str, argv: &[String]) -> (i32, String, String) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        run_bounded_cmd(c, Duration::from_secs(30))
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn within<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("netns file");
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns");
                f()
            })
            .join()
            .expect("thread in netns")
        })
    }

    fn inject(&self, c: &Commands) {
        let (code, out, err) = self.exec(&self.a, &batch(&c.inject, &[]));
        assert_eq!(code, 0, "inject: {out}{err}");
    }

    fn revert(&self, c: &Commands) {
        let (code, out, err) = self.exec(&self.a, &batch(&c.revert, &c.revert_ok));
        // One command runs as itself; its "already gone" code is the revert's to accept.
        let ok = code == 0 || (c.revert.len() == 1 && c.revert_ok.contains(&code));
        assert!(ok, "revert exited {code}: {out}{err}");
    }

    fn rules(&self) -> String {
        let (_, v4, _) = self.exec(&self.a, &["iptables".into(), "-S".into()]);
        let (_, v6, _) = self.exec(&self.a, &["ip6tables".into(), "-S".into()]);
        format!("{v4}{v6}")
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("addr")
}

fn connects(from: &Pair, ns: &str, to: SocketAddr) -> bool {
    from.within(ns, || {
        TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_ok()
    })
}

/// Packets the rattle rules of `chain` in A dropped (iptables counters).
fn dropped(p: &Pair, chain: &str) -> u64 {
    let (_, out, _) = p.exec(
        &p.a,
        &["iptables", "-w", "5", "-L", chain, "-v", "-x", "-n"].map(String::from),
    );
    out.lines()
        .filter(|l| l.contains("rattle"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn partition_drops_the_peers_port_in_both_directions_and_reverts() {
    let Some(p) = Pair::new() else { return };
    // The peer serves 5432 (cut) and 8080 (not named: stays reachable).
    let (db, web) = p.within(&p.b, || {
        (
            TcpListener::bind(addr(IP_B, 5432)).expect("bind 5432"),
            TcpListener::bind(addr(IP_B, 8080)).expect("bind 8080"),
        )
    });
    assert!(connects(&p, &p.a, addr(IP_B, 5432)), "reachable before");
    let spec: PartitionSpec = serde_json::from_value(json!({"namespace": "shop",
        "direction": "both", "cidrs": [IP_B], "ports": [5432]}))
    .expect("spec");
    let c = spec.rules(&[IP_B.to_string()]).expect("rules");
    p.inject(&c);
    assert!(!connects(&p, &p.a, addr(IP_B, 5432)), "5432 is cut off");
    assert!(
        dropped(&p, "OUTPUT") > 0,
        "the OUTPUT rule dropped the SYNs"
    );
    assert!(connects(&p, &p.a, addr(IP_B, 8080)), "8080 is not");
    p.revert(&c);
    assert!(!p.rules().contains("rattle"), "{}", p.rules());
    assert!(
        connects(&p, &p.a, addr(IP_B, 5432)),
        "reachable after the revert"
    );
    p.revert(&c);
    drop((db, web));
}

#[test]
fn partition_in_drops_only_what_the_pod_receives() {
    let Some(p) = Pair::new() else { return };
    let spec: PartitionSpec = serde_json::from_value(json!({"namespace": "shop",
        "direction": "in", "cidrs": [format!("{IP_B}/32")]}))
    .expect("spec");
    let c = spec.rules(&[format!("{IP_B}/32")]).expect("rules");
    let sock_a = p.within(&p.a, || UdpSocket::bind(addr(IP_A, 7000)).expect("bind a"));
    let sock_b = p.within(&p.b, || UdpSocket::bind(addr(IP_B, 7000)).expect("bind b"));
    for s in [&sock_a, &sock_b] {
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .expect("timeout");
    }
    p.inject(&c);
    let mut buf = [0u8; 16];
    // A → B still arrives.
    sock_a.send_to(b"out", addr(IP_B, 7000)).expect("send");
    let (n, _) = sock_b.recv_from(&mut buf).expect("A's datagram reaches B");
    assert_eq!(&buf[..n], b"out");
    // B → A is dropped: nothing arrives, and the INPUT rule counted it.
    sock_b.send_to(b"in", addr(IP_A, 7000)).expect("send");
    let got = sock_a.recv_from(&mut buf);
    assert!(
        got.as_ref()
            .is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{got:?}"
    );
    assert_eq!(dropped(&p, "INPUT"), 1);
    p.revert(&c);
    sock_b.send_to(b"in", addr(IP_A, 7000)).expect("send");
    let (n, _) = sock_a
        .recv_from(&mut buf)
        .expect("after the revert it arrives");
    assert_eq!(&buf[..n], b"in");
}

#[test]
fn bandwidth_tbf_holds_the_rate_within_ten_percent() {
    let Some(p) = Pair::new() else { return };
    let spec: BandwidthSpec = serde_json::from_value(json!({"namespace": "shop",
        "rate": "8mbit", "burst": "16KiB", "limit": "64KiB", "device": "va"}))
    .expect("spec");
    let c = spec.tc().expect("tc");
    p.inject(&c);
    let (_, qdisc, _) = p.exec(
        &p.a,
        &["tc", "qdisc", "show", "dev", "va"].map(String::from),
    );
    assert!(
        qdisc.contains("tbf") && qdisc.contains("rate 8Mbit"),
        "{qdisc}"
    );

    let listener = p.within(&p.b, || TcpListener::bind(addr(IP_B, 9000)).expect("bind"));
    let total: usize = 3_000_000;
    let (received, secs) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut buf = vec![0u8; 64 << 10];
            let mut first: Option<(Instant, usize)> = None;
            let mut got = 0usize;
            let mut last = Instant::now();
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        got += n;
                        last = Instant::now();
                        if first.is_none() {
                            first = Some((last, n));
                        }
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
            let (t0, n0) = first.expect("data");
            // Measured from the first read: what it held came in the initial burst.
            (got - n0, last.duration_since(t0).as_secs_f64())
        });
        let mut conn = p.within(&p.a, || {
            TcpStream::connect_timeout(&addr(IP_B, 9000), Duration::from_secs(5)).expect("connect")
        });
        let chunk = vec![7u8; 64 << 10];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            conn.write_all(&chunk[..n]).expect("write");
            sent += n;
        }
        drop(conn);
        rx.join().expect("receiver")
    });
    // tbf counts whole frames: a full segment carries 1448 bytes of payload (TCP timestamps)
    // in a 1514-byte Ethernet frame.
    let expected = 1_000_000.0 * 1448.0 / 1514.0;
    let measured = received as f64 / secs;
    println!(
        "bandwidth: asked 8mbit = 1000000 B/s on the wire, expected payload {expected:.0} B/s, \
         measured {measured:.0} B/s over {secs:.2} s ({:+.1} %)",
        (measured / expected - 1.0) * 100.0
    );
    assert!(
        (measured / expected - 1.0).abs() < 0.10,
        "measured {measured:.0} B/s, expected {expected:.0} B/s ± 10 %"
    );
    p.revert(&c);
    let (_, qdisc, _) = p.exec(
        &p.a,
        &["tc", "qdisc", "show", "dev", "va"].map(String::from),
    );
    assert!(!qdisc.contains("tbf"), "{qdisc}");
    p.revert(&c);
}

/// A DNS query for `name` (id 0x1234, type A), as a resolver sends it.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[test]
fn dns_failure_refuses_the_named_hosts_only() {
    let Some(p) = Pair::new() else { return };
    // A "DNS server" in B that echoes every query back.
    let server = p.within(&p.b, || UdpSocket::bind(addr(IP_B, 53)).expect("bind 53"));
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let spec: DnsFailureSpec = serde_json::from_value(json!({"namespace": "shop",
        "hosts": ["payments.example.com"], "action": "refuse"}))
    .expect("spec");
    let c = spec.rules().expect("rules");
    // Stops the server however the test ends, so a failed assertion cannot hang the scope.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..n], from);
                }
            }
        });
        // A fresh socket per lookup, as a stub resolver uses: an ICMP error that arrives after
        // one lookup failed must not fail the next.
        let ask = |name: &str| -> std::io::Result<usize> {
            let client = p.within(&p.a, || UdpSocket::bind(addr(IP_A, 0)).expect("bind"));
            client.connect(addr(IP_B, 53))?;
            client.set_read_timeout(Some(Duration::from_secs(2)))?;
            client.send(&query(name))?;
            let mut buf = [0u8; 512];
            client.recv(&mut buf)
        };
        assert!(ask("payments.example.com").is_ok(), "answered before");
        p.inject(&c);
        // Refused on the way out: the send fails (EPERM) or an ICMP unreachable answers.
        for name in [
            "payments.example.com",
            "api.payments.example.com",
            "PAYMENTS.Example.COM",
        ] {
            let r = ask(name);
            assert!(
                r.as_ref().is_err_and(|e| matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::PermissionDenied
                )),
                "{name}: {r:?}"
            );
        }
        assert!(ask("example.com").is_ok(), "another name still resolves");
        assert!(
            ask("notpayments.example.com").is_ok(),
            "a longer label is another name"
        );
        p.revert(&c);
        assert!(!p.rules().contains("rattle"), "{}", p.rules());
        assert!(
            ask("payments.example.com").is_ok(),
            "answered after the revert"
        );

        // `drop`: the query leaves, its answer never arrives (a timeout, not an error).
        let drop: DnsFailureSpec = serde_json::from_value(json!({"namespace": "shop",
            "hosts": ["payments.example.com"], "action": "drop"}))
        .expect("spec");
        let d = drop.rules().expect("rules");
        p.inject(&d);
        let r = ask("payments.example.com");
        assert!(
            r.as_ref()
                .is_err_and(|e| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "{r:?}"
        );
        let other = ask("example.com");
        assert!(other.is_ok(), "another name still resolves: {other:?}");
        assert_eq!(dropped(&p, "INPUT"), 1, "the one answer was dropped");
        p.revert(&d);
        assert!(!p.rules().contains("rattle"), "{}", p.rules());
    });
}
