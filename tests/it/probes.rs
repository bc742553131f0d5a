//! Issue #15: the http, exec and tcp probes passing and failing for real, against servers,
//! commands and ports the test controls: an https server whose certificate a test CA signed, a
//! JSON body that flips when the test says so, a server that sleeps a known time, a command
//! that exits 1 or outlives its timeout (its whole process group must die), a closed port.
//! Each failure must name the value measured next to the expectation. Then one `rattle run`
//! with all three kinds, read back from report.json.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rattle::probe::{Probe, ProbeEnv, exec::ExecProbe, http::HttpProbe, tcp::TcpProbe};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{free_port, proc_state, rattle, run_bounded_cmd, write};

/// How long the slow route sleeps before answering.
const SLOW: Duration = Duration::from_millis(300);

/// The test service: `/health` answers JSON that flips from UP to DOWN when `down` is set;
/// `/slow` sleeps [`SLOW`]; `/big` is 2 MiB; `/echo` is 200 only for `POST` with `x-probe: yes` and body
/// `ping` (else 400 naming what it saw).
async fn handle(
    req: Request<Incoming>,
    down: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/health" => {
            let body = if down.load(Ordering::SeqCst) {
                json!({"status": "DOWN", "queue": {"depth": 500}})
            } else {
                json!({"status": "UP", "queue": {"depth": 5}})
            };
            (StatusCode::OK, body.to_string())
        }
        "/big" => (StatusCode::OK, "x".repeat(2 * 1024 * 1024)),
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            (StatusCode::OK, "slow\n".to_string())
        }
        "/echo" => {
            let method = req.method().clone();
            let header = req
                .headers()
                .get("x-probe")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if method == http::Method::POST && header == "yes" && &body[..] == b"ping" {
                (StatusCode::OK, "pong".to_string())
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("{method} {header:?} {body:?}"),
                )
            }
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    Ok(resp)
}

async fn serve(l: TcpListener, down: Arc<AtomicBool>, tls: Option<tokio_rustls::TlsAcceptor>) {
    while let Ok((s, _)) = l.accept().await {
        let down = down.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, down.clone()));
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(s).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                }
            }
        });
    }
}

/// A plain HTTP test service on 127.0.0.1; `down` flips its health.
async fn http_server() -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let down = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve(l, down.clone(), None));
    (addr, down)
}

/// An https test service for `localhost` whose certificate a fresh test CA signed; returns
/// its address and the CA's PEM file.
async fn https_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rattle test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(serve(l, Arc::new(AtomicBool::new(false)), Some(acceptor)));
    (addr, ca_pem)
}

fn http_probe(v: Value) -> HttpProbe {
    let p: HttpProbe = serde_json::from_value(v).unwrap();
    p.validate().unwrap_or_else(|e| panic!("{e}"));
    p
}

#[tokio::test]
async fn issue15_https_trusts_the_ca_file_or_insecure_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca) = https_server(dir.path()).await;
    let url = format!("https://localhost:{}/health", addr.port());
    let env = ProbeEnv::default();
    let untrusted = http_probe(json!({"url": url, "timeout": "5s"}));
    let err = untrusted.check(&env).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let trusted = http_probe(json!({"url": url, "timeout": "5s", "ca_file": ca,
        "json": ["$.status == \"UP\""]}));
    assert_eq!(trusted.check(&env).await, Ok(()));
    let insecure = http_probe(json!({"url": url, "timeout": "5s", "insecure": true}));
    assert_eq!(insecure.check(&env).await, Ok(()));
    // A CA file that holds no certificate is refused before anything runs.
    let not_pem = write(dir.path(), "bad.pem", "not a certificate\n");
    let bad: HttpProbe = serde_json::from_value(json!({"url": url, "ca_file": not_pem})).unwrap();
    assert!(bad.validate().unwrap_err().starts_with("`ca_file`"));
}

#[tokio::test]
async fn issue15_json_checks_follow_a_body_that_flips() {
    let (addr, down) = http_server().await;
    let env = ProbeEnv::default();
    let p = http_probe(
        json!({"url": format!("http://{addr}/health"), "timeout": "5s",
        "json": ["$.status == \"UP\"", "$.queue.depth < 100"], "body_contains": "status"}),
    );
    assert_eq!(p.check(&env).await, Ok(()));
    down.store(true, Ordering::SeqCst);
    assert_eq!(
        p.check(&env).await,
        Err(
            "$.status is \"DOWN\", expected == \"UP\"; $.queue.depth is 500, expected < 100".into()
        )
    );
    down.store(false, Ordering::SeqCst);
    assert_eq!(p.check(&env).await, Ok(()));
    // Regex and substring failures quote the body they saw.
    let re = http_probe(
        json!({"url": format!("http://{addr}/health"), "timeout": "5s",
        "body_matches": "\"depth\":\\s*[0-4]\\b"}),
    );
    let err = re.check(&env).await.unwrap_err();
    assert!(
        err.contains("\"depth\\\":5") && err.contains("does not match"),
        "{err}"
    );
}

#[tokio::test]
async fn issue15_method_headers_body_and_status_lists() {
    let (addr, _) = http_server().await;
    let env = ProbeEnv::default();
    let url = format!("http://{addr}/echo");
    let post = http_probe(
        json!({"url": url, "method": "POST", "headers": {"x-probe": "yes"},
        "body": "ping", "timeout": "5s", "body_contains": "pong"}),
    );
    assert_eq!(post.check(&env).await, Ok(()));
    let get = http_probe(json!({"url": url, "timeout": "5s"}));
    assert_eq!(
        get.check(&env).await,
        Err("status 400, expected 200".into())
    );
    let either = http_probe(json!({"url": url, "timeout": "5s", "expect_status": [200, 400]}));
    assert_eq!(either.check(&env).await, Ok(()));
    // A body is read up to 1 MiB, never more.
    let big = http_probe(json!({"url": format!("http://{addr}/big"), "timeout": "10s"}));
    assert_eq!(
        big.check(&env).await,
        Err("status 200: body over 1024 KiB".into())
    );
    let missing = http_probe(
        json!({"url": format!("http://{addr}/nope"), "timeout": "5s",
        "expect_status": [200, 204]}),
    );
    assert_eq!(
        missing.check(&env).await,
        Err("status 404, expected 200 or 204".into())
    );
}

#[tokio::test]
async fn issue15_a_latency_limit_reports_the_latency_measured() {
    let (addr, _) = http_server().await;
    let env = ProbeEnv::default();
    let p = http_probe(
        json!({"url": format!("http://{addr}/slow"), "timeout": "10s",
        "max_latency": "100ms"}),
    );
    let err = p.check(&env).await.unwrap_err();
    // "latency <N>ms, expected < 100ms": the server slept 300 ms, so N is at least that (no
    // upper bound: the machine is shared).
    let n: u64 = err
        .strip_prefix("latency ")
        .and_then(|r| r.split_once("ms, expected < 100ms"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(n >= SLOW.as_millis() as u64, "{err}");
    let generous = http_probe(
        json!({"url": format!("http://{addr}/slow"), "timeout": "10s",
        "max_latency": "10s"}),
    );
    assert_eq!(generous.check(&env).await, Ok(()));
}

#[tokio::test]
async fn issue15_exec_exit_code_output_and_timeout_kill_the_group() {
    let env = ProbeEnv::default();
    let exit1: ExecProbe =
        serde_json::from_value(json!({"command": ["sh", "-c", "echo bad >&2; exit 1"]})).unwrap();
    assert_eq!(
        exit1.check(&env).await,
        Err("exit code 1, expected 0 (stderr: \"bad\")".into())
    );
    let ok: ExecProbe = serde_json::from_value(json!({"command": ["echo", "queue=3"],
        "stdout_matches": "queue=[0-9]$"}))
    .unwrap();
    assert_eq!(ok.check(&env).await, Ok(()));

    // A command that outlives its timeout, with a child in the background: both must die.
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 60 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; sleep 60",
        p = pids.display()
    );
    let slow: ExecProbe = serde_json::from_value(json!({"command": script, "shell": true,
        "timeout": "3s"}))
    .unwrap();
    let err = slow.check(&env).await.unwrap_err();
    assert_eq!(err, "timed out after 3000ms (killed)");
    let text =
        std::fs::read_to_string(&pids).expect("the script wrote its pids before the timeout");
    let pids: Vec<u32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    let start = Instant::now();
    for pid in pids {
        // Gone, or a zombie its reaper has not collected yet: not running either way.
        while !matches!(proc_state(pid), None | Some('Z')) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "process {pid} survived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn issue15_tcp_open_and_closed_ports() {
    let env = ProbeEnv::default();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open: TcpProbe =
        serde_json::from_value(json!({"address": l.local_addr().unwrap().to_string()})).unwrap();
    assert_eq!(open.check(&env).await, Ok(()));
    let closed: TcpProbe =
        serde_json::from_value(json!({"address": format!("127.0.0.1:{}", free_port())})).unwrap();
    let err = closed.check(&env).await.unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

/// Runs `rattle validate` on `content`; returns (exit code, stderr).
fn validate(content: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "exp.yaml", content);
    let mut cmd = rattle();
    cmd.arg("validate").arg(&path).current_dir(dir.path());
    let (code, _, err) = run_bounded_cmd(cmd, Duration::from_secs(30));
    (code, err)
}

const PROBE_ONLY: &str =
    "version: 1\nname: p\nsteady_state:\n  probes:\n    - name: x\n      interval: 500ms\n";

#[test]
fn issue15_bad_probe_fields_are_located_exit_2() {
    let cases: &[(&str, &str)] = &[
        (
            "      http: { url: \"http://127.0.0.1:1/\", body_matches: \"(\" }\n",
            "`body_matches`: not a valid regex",
        ),
        (
            "      http: { url: \"http://127.0.0.1:1/\", json: [\"$.a == UP\"] }\n",
            "`json[0]`",
        ),
        (
            "      http: { url: \"http://127.0.0.1:1/\", json: [\"$[ == 1\"] }\n",
            "is not a JSONPath",
        ),
        (
            "      http: { url: \"http://127.0.0.1:1/\", method: \"G T\" }\n",
            "`method`",
        ),
        (
            "      http: { url: \"http://127.0.0.1:1/\", ca_file: /nonexistent/ca.pem }\n",
            "`ca_file`",
        ),
        (
            "      exec: { command: [\"no-such-program-rattle-9\"] }\n",
            "not an executable file on PATH",
        ),
        ("      exec: { command: \"true | true\" }\n", "shell: true"),
        (
            "      exec: { command: [\"true\"], stdout_matches: \"[\" }\n",
            "`stdout_matches`",
        ),
        (
            "      tcp: { address: \"127.0.0.1\" }\n",
            "expected host:port",
        ),
        (
            "      tcp: { address: \"127.0.0.1:1\", timeot: 1s }\n",
            "unknown field `timeot`",
        ),
    ];
    for (entry, want) in cases {
        let (code, err) = validate(&format!("{PROBE_ONLY}{entry}duration: 5s\n"));
        assert_eq!(code, 2, "{entry}: {err}");
        assert!(err.contains("exp.yaml:7:"), "{entry}: not located: {err}");
        assert!(err.contains(want), "{entry}: {err}");
    }
}

#[tokio::test]
async fn issue15_a_run_reports_each_probe_kind_with_what_it_measured() {
    let (addr, down) = http_server().await;
    down.store(true, Ordering::SeqCst);
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let exp = format!(
        "version: 1\nname: probes\nsteady_state:\n  probes:\n\
         \x20   - name: json\n      interval: 200ms\n      http: {{ url: \"http://{addr}/health\", json: ['$.status == \"UP\"'] }}\n\
         \x20   - name: port\n      interval: 200ms\n      tcp: {{ address: \"127.0.0.1:{closed}\" }}\n\
         \x20   - name: cmd\n      interval: 200ms\n      exec: {{ command: [\"false\"] }}\n\
         \x20   - name: fine\n      interval: 200ms\n      exec: {{ command: [\"true\"] }}\n\
         duration: 2s\n"
    );
    let path = write(dir.path(), "exp.yaml", &exp);
    let out = dir.path().join("out");
    let mut cmd = rattle();
    cmd.arg("run")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .args(["--progress", "quiet"]);
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded_cmd(cmd, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(code == 0 || code == 1, "{code}\n{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let text = report.to_string();
    for want in [
        r#"$.status is \"DOWN\", expected == \"UP\""#,
        "Connection refused",
        "exit code 1, expected 0",
    ] {
        assert!(text.contains(want), "{want} not in report.json: {text}");
    }
    // The passing probe passed: find its summary anywhere in the report.
    let mut fine_passed = false;
    find(&report, &mut |v| {
        if v["name"] == "fine" && v["passed"].as_u64().is_some_and(|n| n > 0) && v["failed"] == 0 {
            fine_passed = true;
        }
    });
    assert!(fine_passed, "{text}");
}

fn find(v: &Value, f: &mut dyn FnMut(&Value)) {
    f(v);
    match v {
        Value::Array(a) => a.iter().for_each(|x| find(x, f)),
        Value::Object(o) => o.values().for_each(|x| find(x, f)),
        _ => {}
    }
}
