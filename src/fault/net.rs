//! Network faults through the run's fault proxies (`proxies:` of the experiment): `net-latency`,
//! `net-bandwidth`, `net-reset` and `net-blackhole`, each one toxic added to a proxy for the
//! entry's duration.
//!
//! The target is the proxy, by name; the toxic's name is drawn from the fault's seeded generator
//! at resolve time and carried in the target's description, so that `revert_token` (journaled
//! first) and `inject` agree on it without shared state. Proxies live in the rattle process, so
//! a revert that finds no proxy or no toxic (after a crash, in `rattle recover`) has nothing left
//! to undo and succeeds.

use rand::RngExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    BoxFuture, Fault, FaultEnv, FaultError, Locality, ResolveCtx, Result, RevertToken, Target,
};
use crate::experiment::values::HumanDuration;
use crate::proxy::{ActiveToxic, Mode, ProxyError, Stream};

/// The `kind` of the targets this module resolves.
pub const TARGET_KIND: &str = "proxy";

/// Which way the affected bytes flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to upstream (requests).
    Upstream,
    /// Upstream to client (responses).
    #[default]
    Downstream,
}

impl From<Direction> for Stream {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Upstream => Stream::Upstream,
            Direction::Downstream => Stream::Downstream,
        }
    }
}

fn one() -> f32 {
    1.0
}

/// `net-latency`: delays the bytes of every connection through the proxy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// The proxy's name (under `proxies:`).
    pub proxy: String,
    /// Delay added to each chunk of data.
    pub latency: HumanDuration,
    /// Uniform jitter around `latency` (±).
    #[serde(default)]
    pub jitter: HumanDuration,
    /// Which way: `downstream` (responses, default) or `upstream` (requests).
    #[serde(default)]
    pub direction: Direction,
    /// Share of connections affected, 0 to 1 (rolled once per connection). Default 1.
    #[serde(default = "one")]
    pub toxicity: f32,
}

/// `net-bandwidth`: limits throughput of each connection.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BandwidthSpec {
    /// The proxy's name (under `proxies:`).
    pub proxy: String,
    /// Rate in KB/s (1 KB = 1000 bytes).
    pub rate: u64,
    /// Which way: `downstream` (default) or `upstream`.
    #[serde(default)]
    pub direction: Direction,
    /// Share of connections affected, 0 to 1. Default 1.
    #[serde(default = "one")]
    pub toxicity: f32,
}

/// `net-reset`: resets connections (TCP RST) after `after`, for the entry's duration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetSpec {
    /// The proxy's name (under `proxies:`).
    pub proxy: String,
    /// How long a connection lives before its reset. Default 0 (at once).
    #[serde(default)]
    pub after: HumanDuration,
    /// Which way: `downstream` (default) or `upstream`.
    #[serde(default)]
    pub direction: Direction,
    /// Share of connections affected, 0 to 1. Default 1.
    #[serde(default = "one")]
    pub toxicity: f32,
}

/// `net-blackhole`: data is dropped; connections close after `close_after` (0: held open
/// until the fault ends). Toxiproxy's `timeout` toxic.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSpec {
    /// The proxy's name (under `proxies:`).
    pub proxy: String,
    /// Close each connection this long after the blackhole reached it; 0 (default) never.
    #[serde(default)]
    pub close_after: HumanDuration,
    /// Which way: `downstream` (default) or `upstream`.
    #[serde(default)]
    pub direction: Direction,
    /// Share of connections affected, 0 to 1. Default 1.
    #[serde(default = "one")]
    pub toxicity: f32,
}

/// Which requests an HTTP fault applies to; every given condition must hold. None given: all.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path prefix, e.g. `/api/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Regular expression over the path (unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl RequestMatch {
    fn build(&self) -> std::result::Result<crate::proxy::HttpMatch, String> {
        let path_regex = match &self.path_regex {
            Some(r) => Some(regex::Regex::new(r).map_err(|e| format!("`match.path_regex`: {e}"))?),
            None => None,
        };
        Ok(crate::proxy::HttpMatch {
            method: self.method.clone(),
            path_prefix: self.path.clone(),
            path_regex,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        })
    }
}

/// `http-abort`: answers a share of the matching requests with `status` at once, without
/// forwarding them. Needs a proxy with `mode: http`; client connections stay keep-alive.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpAbortSpec {
    /// The proxy's name (under `proxies:`, with `mode: http`).
    pub proxy: String,
    /// Status code of the injected answer (100 to 599), e.g. 503.
    pub status: u16,
    /// Share of matching requests aborted, 0 to 1, rolled per request. Default 1.
    #[serde(default = "one_f64")]
    pub share: f64,
    /// Which requests; default all.
    #[serde(default, rename = "match")]
    pub matcher: RequestMatch,
}

/// `http-delay`: delays a share of the matching requests by `delay` before forwarding them.
/// Needs a proxy with `mode: http`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDelaySpec {
    /// The proxy's name (under `proxies:`, with `mode: http`).
    pub proxy: String,
    /// Delay added to each affected request.
    pub delay: HumanDuration,
    /// Share of matching requests delayed, 0 to 1, rolled per request. Default 1.
    #[serde(default = "one_f64")]
    pub share: f64,
    /// Which requests; default all.
    #[serde(default, rename = "match")]
    pub matcher: RequestMatch,
}

fn one_f64() -> f64 {
    1.0
}

/// What a fault adds to its proxy.
enum Change {
    Toxic(ActiveToxic),
    Rule(crate::proxy::HttpRule),
}

fn share_ok(share: f64) -> std::result::Result<(), String> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(format!("`share` must be within 0 and 1, got {share}"))
    }
}

impl AsToxic for HttpAbortSpec {
    const KIND: &'static str = "http-abort";
    const MODE: Mode = Mode::Http;
    fn proxy(&self) -> &str {
        &self.proxy
    }
    fn change(&self, name: String) -> std::result::Result<Change, String> {
        share_ok(self.share)?;
        if !(100..=599).contains(&self.status) {
            return Err(format!(
                "`status` must be within 100 and 599, got {}",
                self.status
            ));
        }
        Ok(Change::Rule(crate::proxy::HttpRule {
            name,
            action: crate::proxy::HttpAction::Abort {
                status: self.status,
            },
            share: self.share,
            tally: Default::default(),
            matcher: self.matcher.build()?,
        }))
    }
}

impl AsToxic for HttpDelaySpec {
    const KIND: &'static str = "http-delay";
    const MODE: Mode = Mode::Http;
    fn proxy(&self) -> &str {
        &self.proxy
    }
    fn change(&self, name: String) -> std::result::Result<Change, String> {
        share_ok(self.share)?;
        Ok(Change::Rule(crate::proxy::HttpRule {
            name,
            action: crate::proxy::HttpAction::Delay {
                delay: self.delay.get(),
            },
            share: self.share,
            tally: Default::default(),
            matcher: self.matcher.build()?,
        }))
    }
}

/// What the kinds share: the proxy and the mode it must be in, and the toxic to add.
trait AsToxic {
    const KIND: &'static str;
    const MODE: Mode;
    fn proxy(&self) -> &str;
    /// What to add, named `name`; an error names the bad field.
    fn change(&self, name: String) -> std::result::Result<Change, String>;
}

/// The TCP kinds: one toxic each.
trait TcpToxic {
    fn toxicity(&self) -> f32;
    fn direction(&self) -> Direction;
    /// Toxiproxy type and attributes.
    fn toxic(&self) -> (&'static str, Value);
    /// What the toxic's own parsing cannot say about the experiment's field.
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

macro_rules! tcp_kind {
    ($ty:ty, $key:literal) => {
        impl AsToxic for $ty {
            const KIND: &'static str = $key;
            const MODE: Mode = Mode::Tcp;
            fn proxy(&self) -> &str {
                &self.proxy
            }
            fn change(&self, name: String) -> std::result::Result<Change, String> {
                build(self, name).map(Change::Toxic)
            }
        }
    };
}
tcp_kind!(LatencySpec, "net-latency");
tcp_kind!(BandwidthSpec, "net-bandwidth");
tcp_kind!(ResetSpec, "net-reset");
tcp_kind!(BlackholeSpec, "net-blackhole");

fn ms(d: HumanDuration) -> u64 {
    d.get().as_millis().min(u64::MAX as u128) as u64
}

impl TcpToxic for LatencySpec {
    fn toxicity(&self) -> f32 {
        self.toxicity
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn toxic(&self) -> (&'static str, Value) {
        (
            "latency",
            json!({"latency": ms(self.latency), "jitter": ms(self.jitter)}),
        )
    }
}

impl TcpToxic for BandwidthSpec {
    fn toxicity(&self) -> f32 {
        self.toxicity
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn toxic(&self) -> (&'static str, Value) {
        ("bandwidth", json!({ "rate": self.rate }))
    }
    fn check(&self) -> std::result::Result<(), String> {
        // The toxic reads 0 as no limit (Toxiproxy's meaning); an experiment asking for 0
        // surely means something else.
        if self.rate == 0 {
            return Err(
                "`rate` must be at least 1 (KB/s); to stop traffic use net-blackhole".into(),
            );
        }
        Ok(())
    }
}

impl TcpToxic for ResetSpec {
    fn toxicity(&self) -> f32 {
        self.toxicity
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn toxic(&self) -> (&'static str, Value) {
        ("reset_peer", json!({ "timeout": ms(self.after) }))
    }
}

impl TcpToxic for BlackholeSpec {
    fn toxicity(&self) -> f32 {
        self.toxicity
    }
    fn direction(&self) -> Direction {
        self.direction
    }
    fn toxic(&self) -> (&'static str, Value) {
        ("timeout", json!({ "timeout": ms(self.close_after) }))
    }
}

fn build<T: TcpToxic>(spec: &T, name: String) -> std::result::Result<ActiveToxic, String> {
    spec.check()?;
    let (kind, attrs) = spec.toxic();
    let attrs: Map<String, Value> = match attrs {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    ActiveToxic::new(name, kind, spec.direction().into(), spec.toxicity(), &attrs)
}

/// The revert token's data.
#[derive(Debug, Serialize, Deserialize)]
struct Token {
    proxy: String,
    toxic: String,
}

fn proxy_err(e: ProxyError) -> FaultError {
    match e {
        ProxyError::NotFound(p) => FaultError::NoTarget(format!("no running proxy named {p:?}")),
        other => FaultError::InvalidSelection(other.to_string()),
    }
}

impl<T: AsToxic + Send + Sync + std::fmt::Debug> Fault for T {
    fn resolve<'a>(&'a self, ctx: ResolveCtx<'a>) -> BoxFuture<'a, Result<Vec<Target>>> {
        Box::pin(async move {
            self.validate().map_err(FaultError::InvalidSelection)?;
            let info = ctx
                .env
                .proxies()
                .get(self.proxy())
                .await
                .map_err(proxy_err)?;
            let toxic = format!("rattle-{}-{:08x}", T::KIND, ctx.rng.random::<u32>());
            Ok(vec![Target {
                kind: TARGET_KIND.to_string(),
                id: info.name,
                description: toxic,
            }])
        })
    }

    fn revert_token<'a>(
        &'a self,
        _env: &'a FaultEnv,
        targets: &'a [Target],
    ) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async move {
            let Some(t) = targets.first() else {
                return Ok(None);
            };
            Ok(Some(RevertToken::new(
                T::KIND,
                &Token {
                    proxy: t.id.clone(),
                    toxic: t.description.clone(),
                },
            )?))
        })
    }

    fn inject<'a>(&'a self, env: &'a FaultEnv, targets: &'a [Target]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for t in targets {
                let change = self
                    .change(t.description.clone())
                    .map_err(FaultError::InvalidSelection)?;
                let added = match change {
                    Change::Toxic(x) => env.proxies().add_toxic(&t.id, x).await.map(|_| ()),
                    Change::Rule(r) => env.proxies().add_rule(&t.id, r).await,
                };
                added.map_err(proxy_err)?;
            }
            Ok(())
        })
    }

    fn needs_duration(&self) -> bool {
        true
    }

    fn locality(&self) -> Locality<'_> {
        Locality::Proxy {
            name: self.proxy(),
            mode: T::MODE,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.change("check".to_string()).map(|_| ())
    }
}

/// What the toxic or HTTP rule of a `net-*`/`http-*` fault on `targets` measurably did; `None`
/// for other targets.
pub fn measured(env: &FaultEnv, targets: &[Target]) -> Option<crate::proxy::share::Measured> {
    let t = targets.first().filter(|t| t.kind == TARGET_KIND)?;
    env.proxies().measured(&t.id, &t.description)
}

/// Removes the toxic a `net-*` token names. Idempotent: a proxy or toxic that is gone (the
/// proxy died with an earlier rattle) counts as reverted.
pub async fn revert(env: &FaultEnv, token: &RevertToken) -> Result<()> {
    let t: Token = token.data()?;
    match env.proxies().remove_fault(&t.proxy, &t.toxic).await {
        Ok(()) | Err(ProxyError::NotFound(_)) | Err(ProxyError::ToxicNotFound(_)) => Ok(()),
        Err(e) => Err(FaultError::InvalidSelection(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[tokio::test]
    async fn inject_then_revert_twice_and_revert_without_proxy() {
        let env = FaultEnv::new();
        env.proxies()
            .create("p", "127.0.0.1:0", "127.0.0.1:9", true)
            .await
            .unwrap();
        let spec = LatencySpec {
            proxy: "p".into(),
            latency: HumanDuration::from_millis(100),
            jitter: HumanDuration::default(),
            direction: Direction::Downstream,
            toxicity: 1.0,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let targets = spec
            .resolve(ResolveCtx {
                rng: &mut rng,
                env: &env,
            })
            .await
            .unwrap();
        let token = spec.revert_token(&env, &targets).await.unwrap().unwrap();
        spec.inject(&env, &targets).await.unwrap();
        let toxics = env.proxies().toxics("p").await.unwrap();
        assert_eq!(toxics.len(), 1);
        assert_eq!(toxics[0].attributes["latency"], 100);
        super::super::revert(&env, &token).await.unwrap();
        super::super::revert(&env, &token).await.unwrap();
        assert!(env.proxies().toxics("p").await.unwrap().is_empty());
        // `rattle recover` after a crash: a fresh env has no proxies.
        super::super::revert(&FaultEnv::new(), &token)
            .await
            .unwrap();
        env.proxies().shutdown().await;
    }

    #[tokio::test]
    async fn missing_proxy_is_no_target() {
        let env = FaultEnv::new();
        let spec = ResetSpec {
            proxy: "nope".into(),
            after: HumanDuration::default(),
            direction: Direction::Upstream,
            toxicity: 1.0,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let e = spec
            .resolve(ResolveCtx {
                rng: &mut rng,
                env: &env,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, FaultError::NoTarget(_)), "{e}");
    }

    #[test]
    fn bandwidth_rate_zero_and_beyond_pacing_are_refused() {
        let spec = |rate| BandwidthSpec {
            proxy: "p".into(),
            rate,
            direction: Direction::Downstream,
            toxicity: 1.0,
        };
        assert!(spec(0).validate().unwrap_err().contains("at least 1"));
        assert!(spec(crate::proxy::toxic::MAX_RATE + 1).validate().is_err());
        assert!(spec(50).validate().is_ok());
    }
}
