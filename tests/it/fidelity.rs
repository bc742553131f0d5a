//! Faults do what they say (issue #22), at a few points, with bounds a busy shared machine always
//! meets: a rate is never *above* what was asked (the token bucket forbids it), a buffer never
//! holds more than its budget (a loaded machine only delays), shares are exact to one event; the
//! lower bounds on throughput are loose. The tight figures are benches/fidelity.sh's.

use std::time::Duration;

use rattle::proxy::link::BUFFER_MIN;
use rattle::proxy::{Registry, Stream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

use crate::support::{sender, toxic};

/// Bound on any single step.
const STEP: Duration = Duration::from_secs(20);

/// A server that reads each connection to its end and reports (bytes, first, last read).
async fn sink() -> (
    String,
    tokio::sync::mpsc::Receiver<(usize, Instant, Instant)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(read_timed(&mut s).await).await;
            });
        }
    });
    (addr, rx)
}

/// Reads to the end: (bytes, first read, last read); the first read is not counted in a rate.
async fn read_timed(s: &mut TcpStream) -> (usize, Instant, Instant) {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut first, mut last) = (0, None, Instant::now());
    let mut first_n = 0;
    loop {
        match timeout(STEP, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                last = Instant::now();
                if first.is_none() {
                    first = Some(last);
                    first_n = n;
                }
                total += n;
            }
        }
    }
    (total - first_n, first.unwrap_or(last), last)
}

fn kb_per_s((bytes, first, last): (usize, Instant, Instant)) -> f64 {
    bytes as f64 / (last - first).as_secs_f64().max(1e-6) / 1000.0
}

async fn proxy_to(reg: &Registry, name: &str, upstream: &str) -> String {
    reg.create(name, "127.0.0.1:0", upstream, true)
        .await
        .unwrap()
        .listen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_holds_the_asked_rate_both_ways_and_is_never_above_it() {
    // (rate KB/s, seconds): a slow rate, and one the old per-piece sleeps could not reach
    // (they gave 0.23 of 100 MB/s: each 32 KB piece waited for a millisecond timer tick).
    for (rate, secs) in [(200u64, 2.0), (50_000, 1.5)] {
        let n = (rate as f64 * 1000.0 * secs) as usize;
        let reg = Registry::new();
        let down = proxy_to(&reg, "down", &sender(n).await).await;
        let (up_addr, mut got) = sink().await;
        let up = proxy_to(&reg, "up", &up_addr).await;
        for (p, s) in [("down", Stream::Downstream), ("up", Stream::Upstream)] {
            reg.add_toxic(p, toxic("bw", "bandwidth", s, 1.0, json!({ "rate": rate })))
                .await
                .unwrap();
        }
        let mut c = TcpStream::connect(&down).await.unwrap();
        let d = timeout(STEP, read_timed(&mut c)).await.unwrap();
        let mut c = TcpStream::connect(&up).await.unwrap();
        timeout(STEP, c.write_all(&vec![b'y'; n]))
            .await
            .unwrap()
            .unwrap();
        c.shutdown().await.unwrap();
        let u = timeout(STEP, got.recv()).await.unwrap().unwrap();
        for (dir, r) in [("downstream", d), ("upstream", u)] {
            let k = kb_per_s(r);
            eprintln!(
                "bandwidth {rate} KB/s {dir}: {k:.0} KB/s ({:.3})",
                k / rate as f64
            );
            assert!(r.0 + 64 * 1024 >= n, "{dir}: {} of {n} bytes", r.0);
            // Never above (the bucket's credit is 10 ms, its pieces 5 ms at the rate)...
            assert!(k <= rate as f64 * 1.05, "{dir}: {k} KB/s for {rate}");
            // ...and, even on a busy machine, not far below.
            assert!(k >= rate as f64 * 0.6, "{dir}: {k} KB/s for {rate}");
        }
        let m = reg.measured("down", "bw").unwrap();
        assert_eq!((m.connections, m.affected), (1, 1));
        // The rate while data waited (report.json's effect.busy_bytes_per_sec) is the link's:
        // never above the asked rate either, and close to what the reader saw.
        let busy = m.busy_bytes_per_sec().expect("busy time") / 1000.0;
        let seen = kb_per_s(d);
        eprintln!("bandwidth {rate} KB/s: busy rate {busy:.0} KB/s, reader {seen:.0} KB/s");
        assert!(busy <= rate as f64 * 1.05, "busy {busy} KB/s for {rate}");
        assert!(busy >= rate as f64 * 0.6, "busy {busy} KB/s for {rate}");
        assert_eq!(m.asked_bytes_per_sec, Some(rate as f64 * 1000.0));
        assert_eq!(
            m.bytes as usize, n,
            "the meter counts every byte passed: {m:?}"
        );
        reg.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_in_latency_reads_no_more_than_its_budget() {
    // The proxy reads at most BUFFER_MIN bytes ahead of what the toxic released, and releases
    // nothing before the latency: so before twice the latency, at most BUFFER_MIN bytes can
    // have arrived, however fast the sender (the old reader queued 8 MB).
    let lat = Duration::from_millis(400);
    let total = 3 * BUFFER_MIN;
    let reg = Registry::new();
    let addr = proxy_to(&reg, "hold", &sender(total).await).await;
    reg.add_toxic(
        "hold",
        toxic(
            "l",
            "latency",
            Stream::Downstream,
            1.0,
            json!({ "latency": lat.as_millis() as u64 }),
        ),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut early = 0;
    while let Ok(r) = tokio::time::timeout_at(t0 + lat * 2 - lat / 8, c.read(&mut buf)).await {
        match r.unwrap() {
            0 => break,
            n => early += n,
        }
    }
    eprintln!("before twice the latency: {early} bytes (budget {BUFFER_MIN})");
    assert!(
        early <= BUFFER_MIN,
        "{early} bytes arrived before {:?}",
        lat * 2
    );
    // Nothing is lost: removing the toxic lets the rest through.
    reg.remove_toxic("hold", "l").await.unwrap();
    let mut rest = Vec::new();
    timeout(STEP, c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(early + rest.len(), total);
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_hits_its_share_of_connections_within_one() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "tox", &sender(10).await).await;
    reg.add_toxic(
        "tox",
        toxic(
            "t",
            "latency",
            Stream::Downstream,
            0.3,
            json!({ "latency": 1 }),
        ),
    )
    .await
    .unwrap();
    let n = 200u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let a = addr.clone();
        tasks.spawn(async move {
            let mut c = TcpStream::connect(&a).await.unwrap();
            let mut v = Vec::new();
            timeout(STEP, c.read_to_end(&mut v)).await.unwrap().unwrap();
            v.len()
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), 10);
    }
    let m = reg.measured("tox", "t").unwrap();
    eprintln!(
        "toxicity 0.3: {} of {} connections",
        m.affected, m.connections
    );
    assert_eq!(m.connections, n);
    assert!(m.affected.abs_diff(60) <= 1, "{} of {n}", m.affected);
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_slower_than_asked_is_reported_as_a_shortfall() {
    // Ground truth: a reader that does not read for 1.5 s holds up a 50 MB/s link carrying
    // 16 MB (more than the sockets' buffers take), so data waits at the proxy for over a second
    // while at most 16 MB pass: a rate far below the one asked, which the meter must say.
    let rate = 50_000u64;
    let n = 16 << 20;
    let reg = Registry::new();
    let addr = proxy_to(&reg, "slow", &sender(n).await).await;
    reg.add_toxic(
        "slow",
        toxic(
            "bw",
            "bandwidth",
            Stream::Downstream,
            1.0,
            json!({ "rate": rate }),
        ),
    )
    .await
    .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let mut c = sock.connect(addr.parse().unwrap()).await.unwrap();
    let mut first = [0u8; 1];
    timeout(STEP, c.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rest = Vec::new();
    timeout(STEP, c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.len() + 1, n);
    let m = reg.measured("slow", "bw").unwrap();
    let busy = m.busy_bytes_per_sec().expect("busy time");
    eprintln!("held-up link: {m:?}, busy rate {:.0} KB/s", busy / 1000.0);
    assert!(m.busy_seconds >= 1.0, "{m:?}");
    assert!(busy < rate as f64 * 1000.0 * 0.5, "{busy} B/s");
    let words = m.shortfall().expect("a shortfall");
    assert!(words.contains("below the 50000.0 KB/s asked"), "{words}");

    // The same link with a reader that keeps up: no shortfall.
    let addr2 = proxy_to(&reg, "fast", &sender(1 << 20).await).await;
    reg.add_toxic(
        "fast",
        toxic(
            "bw",
            "bandwidth",
            Stream::Downstream,
            1.0,
            json!({ "rate": 1000 }),
        ),
    )
    .await
    .unwrap();
    let mut c = TcpStream::connect(&addr2).await.unwrap();
    let _ = timeout(STEP, read_timed(&mut c)).await.unwrap();
    let m = reg.measured("fast", "bw").unwrap();
    eprintln!("kept-up link: {m:?}");
    // A busy machine can make the link slower than asked (the report would say so), but a
    // 1 MB/s link with a reader waiting is far within what any machine carries.
    assert!(
        m.busy_bytes_per_sec().unwrap() <= 1000.0 * 1000.0 * 1.05,
        "{m:?}"
    );

    // Light, bursty traffic (180 bytes every 20 ms through a 10 KB/s link): most bursts go
    // through the bucket's credit at once, and what waits is paced; the busy rate counts only
    // that, so it is never above the rate asked (the first version read 28 KB/s here).
    let (sink_addr, mut got) = sink().await;
    let addr3 = proxy_to(&reg, "bursty", &sink_addr).await;
    reg.add_toxic(
        "bursty",
        toxic(
            "bw",
            "bandwidth",
            Stream::Upstream,
            1.0,
            json!({ "rate": 10 }),
        ),
    )
    .await
    .unwrap();
    let mut c = TcpStream::connect(&addr3).await.unwrap();
    c.set_nodelay(true).unwrap();
    for _ in 0..60 {
        c.write_all(&[b'z'; 180]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await.unwrap();
    let _ = timeout(STEP, got.recv()).await.unwrap();
    let m = reg.measured("bursty", "bw").unwrap();
    eprintln!("bursty link: {m:?} busy rate {:?}", m.busy_bytes_per_sec());
    assert_eq!(m.bytes, 60 * 180);
    if let Some(busy) = m.busy_bytes_per_sec() {
        assert!(busy <= 10_000.0 * 1.05, "{m:?}");
    }
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_toxic_meters_its_delays_and_how_late_they_went() {
    let reg = Registry::new();
    let addr = proxy_to(&reg, "lat", &sender(10).await).await;
    reg.add_toxic(
        "lat",
        toxic(
            "l",
            "latency",
            Stream::Downstream,
            1.0,
            json!({ "latency": 50, "jitter": 10 }),
        ),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let mut v = Vec::new();
        timeout(STEP, c.read_to_end(&mut v)).await.unwrap().unwrap();
        assert_eq!(v.len(), 10);
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
    }
    let m = reg.measured("lat", "l").unwrap();
    eprintln!("latency meter: {m:?}");
    assert_eq!(m.asked_latency_ms, Some((50.0, 10.0)));
    assert_eq!(m.delayed, 5, "one chunk per connection: {m:?}");
    assert!(
        m.late_max_ms >= m.late_mean_ms && m.late_mean_ms >= 0.0,
        "{m:?}"
    );
    reg.shutdown().await;
}
