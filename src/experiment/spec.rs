//! The experiment file as written: serde structs with their defaults and documentation (which
//! becomes the JSON Schema's descriptions). No resolution happens here; see `plan`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::located::Located;
use super::stop::StopWhen;
use super::values::{DurationThreshold, HumanDuration, Percent, PercentThreshold, Rate};
use crate::fault::FaultSpec;
use crate::probe::ProbeSpec;

/// One experiment: load, a steady-state hypothesis, faults, and for how long.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Format version; must be 1.
    pub version: Located<u32>,
    /// Short name; used in the report directory's name.
    pub name: Located<String>,
    /// What the experiment shows, in a sentence or two.
    #[serde(default)]
    pub description: Option<String>,
    /// Things the run starts itself and stops at its end.
    #[serde(default)]
    pub setup: Option<Setup>,
    /// Fault proxies the run starts in setup (see `net-*` faults); load and probes point at
    /// their `listen` address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<super::proxies::ProxySpec>,
    /// The load driven at the service while the experiment runs.
    #[serde(default)]
    pub load: Option<Load>,
    /// The steady-state hypothesis: checked over the baseline, used to detect recovery, and
    /// checked again at the end.
    #[serde(default)]
    pub steady_state: SteadyState,
    /// Faults, each at an offset from the start of load.
    #[serde(default)]
    pub faults: Vec<FaultEntry>,
    /// Conditions that abort the run at once, reverting every fault (exit 3).
    #[serde(default)]
    pub stop_when: StopWhen,
    /// How long the run lasts, from the start of load. Recovery observation may extend it by up
    /// to `steady_state.recovery_timeout` when the last fault has not recovered yet.
    pub duration: Located<HumanDuration>,
    /// Thresholds over the run's figures that CI fails on (exit 1 when one is missed).
    #[serde(default, skip_serializing_if = "super::gates::Gates::is_empty")]
    pub gates: super::gates::Gates,
}

/// What the run starts itself.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The built-in demo service: worker processes behind a round-robin balancer.
    #[serde(default)]
    pub demo: Option<DemoSetup>,
}

/// The built-in demo service.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoSetup {
    /// Number of worker processes (1 to 64).
    #[serde(default = "defaults::replicas")]
    pub replicas: Located<u32>,
    /// Port of the balancer on 127.0.0.1.
    #[serde(default = "defaults::port")]
    pub port: u16,
    /// How long the supervisor waits before restarting a dead worker.
    #[serde(default = "defaults::restart_delay")]
    pub restart_delay: HumanDuration,
    /// Delay each worker adds to every response (to give latency a known size).
    #[serde(default)]
    pub latency: HumanDuration,
    /// Interval of the balancer's active health checks.
    #[serde(default = "defaults::health_interval")]
    pub health_interval: HumanDuration,
}

/// The load generator's configuration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// HTTP load in the open model: requests start at a constant rate whatever the responses do.
    pub http: HttpLoad,
}

/// HTTP load, open model.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpLoad {
    /// Target URL (http:// or https://).
    pub url: Located<String>,
    /// HTTP method.
    #[serde(default = "defaults::method")]
    pub method: Located<String>,
    /// Request headers. Values of Authorization, Cookie and *token*/*key*/*secret* headers are
    /// never written to reports or logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
    /// Arrival rate, e.g. `200/s`.
    pub rate: Rate,
    /// Optional linear ramp from 0 to `rate` at the start.
    #[serde(default)]
    pub ramp: Option<HumanDuration>,
    /// Per-request timeout.
    #[serde(default = "defaults::timeout")]
    pub timeout: HumanDuration,
    /// Cap on requests in flight; a request that cannot start within `timeout` of its intended
    /// start because of it is counted as missed.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: Located<u32>,
    /// Length of a report window.
    #[serde(default = "defaults::window")]
    pub window: Located<HumanDuration>,
    /// Status codes counted as success. Default: 200 to 399.
    #[serde(default)]
    pub ok_status: Option<Vec<u16>>,
    /// A mix of named requests sent at the section's rate, each ticket one of them in
    /// proportion to its weight (seeded: `--seed` replays the same sequence). Each request
    /// takes the section's `method`, `headers`, `body`, `ok_status` and `timeout` unless it
    /// sets its own, and its `url` may be a path on the section's `url`. Every figure of the
    /// report is also given per request name, and each request may have its own `slo`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<MixRequest>,
}

/// One named request of a load mix.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixRequest {
    /// Name in reports, SLOs and gates: letters, digits, `-` and `_`; unique.
    pub name: Located<String>,
    /// Relative share of the section's rate (above 0; at least 1/1000 of the total).
    #[serde(default = "defaults::weight")]
    pub weight: Located<f64>,
    /// An absolute URL, or a path (starting with `/`) on the section's `url`. Default: the
    /// section's `url`.
    #[serde(default)]
    pub url: Option<Located<String>>,
    /// HTTP method. Default: the section's.
    #[serde(default)]
    pub method: Option<Located<String>>,
    /// Headers added to the section's (the same name here replaces the section's value).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body. Default: the section's.
    #[serde(default)]
    pub body: Option<String>,
    /// Status codes counted as success. Default: the section's.
    #[serde(default)]
    pub ok_status: Option<Vec<u16>>,
    /// This request's timeout. Default: the section's. A ticket that cannot get an in-flight
    /// slot within the section's `timeout` is missed.
    #[serde(default)]
    pub timeout: Option<Located<HumanDuration>>,
    /// This request's own SLO, judged with the steady state's over this request's requests
    /// alone.
    #[serde(default, skip_serializing_if = "Slo::is_empty")]
    pub slo: Slo,
}

/// The steady-state hypothesis and its timing.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// Load runs this long before the baseline starts counting.
    #[serde(default = "defaults::warmup")]
    pub warmup: Located<HumanDuration>,
    /// The SLO must hold continuously this long after a fault for it to count as recovered;
    /// the after-check covers this long at the end of the run.
    #[serde(default = "defaults::hold")]
    pub hold: Located<HumanDuration>,
    /// How long the run may be extended past `duration` to observe a recovery.
    #[serde(default = "defaults::recovery_timeout")]
    pub recovery_timeout: HumanDuration,
    /// Thresholds over the load's requests.
    #[serde(default)]
    pub slo: Slo,
    /// Probes run at an interval during the whole run.
    #[serde(default)]
    pub probes: Vec<ProbeEntry>,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            warmup: defaults::warmup(),
            hold: defaults::hold(),
            recovery_timeout: defaults::recovery_timeout(),
            slo: Slo::default(),
            probes: Vec::new(),
        }
    }
}

/// Service-level objective over the load's requests. Every threshold given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Share of successful requests, e.g. `">= 99.5%"`.
    #[serde(default)]
    pub success_rate: Option<PercentThreshold>,
    /// Median latency, e.g. `"< 50ms"`.
    #[serde(default)]
    pub p50: Option<DurationThreshold>,
    /// 90th percentile latency.
    #[serde(default)]
    pub p90: Option<DurationThreshold>,
    /// 99th percentile latency, e.g. `"< 200ms"`.
    #[serde(default)]
    pub p99: Option<DurationThreshold>,
    /// Maximum latency.
    #[serde(default)]
    pub max: Option<DurationThreshold>,
}

impl Slo {
    /// True when no threshold is set.
    pub fn is_empty(&self) -> bool {
        self.success_rate.is_none()
            && self.p50.is_none()
            && self.p90.is_none()
            && self.p99.is_none()
            && self.max.is_none()
    }
}

/// A probe of the hypothesis: an optional name, an interval, and exactly one probe kind key
/// (`http: {...}`, `kubernetes: {...}`). Deserialized by hand in `entry`, like [`FaultEntry`].
#[derive(Debug, Clone, Serialize)]
pub struct ProbeEntry {
    /// Name in reports; defaults to `probe-<index>`.
    pub name: Option<String>,
    /// Interval between checks.
    pub interval: Located<HumanDuration>,
    /// The probe kind and its spec.
    #[serde(flatten)]
    pub spec: Located<ProbeSpec>,
}

/// One fault of the experiment: a name, when, for how long, and exactly one fault kind key
/// (e.g. `process-kill: {...}`). Deserialized by hand in `parse` so the kind key stays a plain
/// key of the entry while unknown keys are still errors with their location.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEntry {
    /// Unique name within the experiment.
    pub name: Located<String>,
    /// Offset from the start of load.
    pub at: Located<HumanDuration>,
    /// How long the fault holds before it is reverted; required by kinds that hold a state.
    pub duration: Option<Located<HumanDuration>>,
    /// The fault kind and its spec.
    pub spec: Located<FaultSpec>,
}

/// Which choice of the matching targets a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One target, chosen at random (seeded).
    #[default]
    One,
    /// Every matching target.
    All,
    /// Exactly N targets, chosen at random; an error if fewer match.
    Fixed(u32),
    /// floor(P% of the matching targets), at least one.
    Percent(Percent),
    /// A random number from 1 to floor(P% of the matching targets), at least one.
    MaxPercent(Percent),
}

pub(crate) mod defaults {
    use super::*;
    pub fn replicas() -> Located<u32> {
        Located::new(3)
    }
    pub fn port() -> u16 {
        18080
    }
    pub fn restart_delay() -> HumanDuration {
        HumanDuration::from_secs(2)
    }
    pub fn health_interval() -> HumanDuration {
        HumanDuration::from_millis(250)
    }
    pub fn method() -> Located<String> {
        Located::new("GET".to_string())
    }
    pub fn timeout() -> HumanDuration {
        HumanDuration::from_secs(2)
    }
    pub fn weight() -> Located<f64> {
        Located::new(1.0)
    }
    pub fn max_in_flight() -> Located<u32> {
        Located::new(1000)
    }
    pub fn window() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(1))
    }
    pub fn warmup() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(1))
    }
    pub fn hold() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(5))
    }
    pub fn recovery_timeout() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn probe_interval() -> Located<HumanDuration> {
        Located::new(HumanDuration::from_secs(1))
    }
}
