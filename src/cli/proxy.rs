//! `rattle proxy`: the fault proxy stand-alone, controlled through Toxiproxy's HTTP API so that
//! existing Toxiproxy clients and test suites drive it unchanged.

use std::path::PathBuf;

use anyhow::Context;

use crate::outcome::Outcome;
use crate::proxy::{Registry, api};

/// `rattle proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// Address of the Toxiproxy-compatible HTTP API. Whoever reaches it can make rattle listen
    /// on any port and relay to any address this machine can reach: keep it on loopback (the
    /// default). Any other address prints a warning; use --api-token-env with it. Requests
    /// that look like a browser's (User-Agent `Mozilla/...`, a foreign Origin or Host) are
    /// refused with 403 whatever the address.
    #[arg(long, default_value = "127.0.0.1:8474", value_name = "ADDR")]
    pub api: String,
    /// Name of an environment variable holding a token: every API request must then carry
    /// `Authorization: Bearer <token>` (401 otherwise). Read from the environment so that it
    /// never shows in `ps`.
    #[arg(long, value_name = "NAME")]
    pub api_token_env: Option<String>,
    /// Proxies to create at start: Toxiproxy's config format, a JSON array of
    /// `{"name", "listen", "upstream", "enabled"}`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs `rattle proxy` until Ctrl-C or SIGTERM; returns the exit code (2 when the API address
/// or a configured proxy cannot be bound, or the config is unreadable).
pub async fn proxy_cmd(args: ProxyArgs) -> anyhow::Result<Outcome> {
    let configured: Vec<api::CreateProxy> = match &args.config {
        Some(path) => {
            // Bounded, regular files only (issue #19).
            let text = crate::fsutil::read_text_bounded(path, 16 * 1024 * 1024)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: not a Toxiproxy config (a JSON array of proxies)",
                    path.display()
                )
            })?
        }
        None => Vec::new(),
    };
    let token = match &args.api_token_env {
        Some(name) => match std::env::var(name) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => anyhow::bail!(
                "--api-token-env {name}: the environment variable {name} is unset or empty"
            ),
        },
        None => None,
    };
    let listener = api::bind(&args.api).await.context("the API address")?;
    let reg = Registry::new();
    for p in configured {
        let name = p.name.clone();
        if let Err(e) = api::create(&reg, p).await {
            reg.shutdown().await;
            return Err(e).with_context(|| format!("proxy {name:?} from the config"));
        }
    }
    let addr = listener.local_addr().context("the API address")?;
    for p in reg.list().await {
        crate::outln!("proxy {}: {} -> {}", p.name, p.listen, p.upstream);
    }
    crate::outln!("rattle proxy: Toxiproxy-compatible API on http://{addr}");
    if !addr.ip().is_loopback() {
        crate::errln!(
            "rattle proxy: warning: the API listens on {addr}, beyond loopback: anyone who \
             reaches it can open listeners and relay to any address this machine reaches{}",
            if token.is_some() {
                ""
            } else {
                "; set a token with --api-token-env"
            }
        );
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let guard = api::Guard { token };
    let server = tokio::spawn(api::serve_guarded(
        listener,
        reg.clone(),
        cancel.clone(),
        guard,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cancel.cancel();
    let _ = server.await;
    reg.shutdown().await;
    Ok(Outcome::Pass)
}
