//! The experiment resolved: concrete configurations for the demo, the load and the probes, the
//! seed, and the fault schedule with each fault's own seed. This is what `--dry-run` prints and
//! what the runner executes; building it touches nothing.
//!
//! Process targets are resolved when their fault fires (the demo's workers do not exist before
//! setup, and a restarted worker has a new pid), from a generator seeded per fault, so a replay
//! with the same `--seed` makes the same choice from the same candidates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::demo::DemoConfig;
use crate::experiment::{Experiment, Slo};
use crate::fault::{FaultEnv, FaultError, FaultSpec, ResolveCtx, Target};
use crate::load::LoadConfig;
use crate::probe::ProbeConfig;
pub use crate::redact::{is_secret_header, redact_url};

/// Errors of building a plan from a valid experiment.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A value that validation accepted could not be converted (should not happen).
    #[error("{field}: {message}")]
    Invalid {
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// One fault in the schedule.
#[derive(Debug, Clone)]
pub struct PlannedFault {
    /// Index in the experiment's `faults`.
    pub index: usize,
    /// Unique name.
    pub name: String,
    /// The spec.
    pub spec: FaultSpec,
    /// Offset from the start of load.
    pub at: Duration,
    /// How long it holds; `None` for instantaneous faults.
    pub duration: Option<Duration>,
    /// Seed of this fault's target choice.
    pub seed: u64,
}

impl PlannedFault {
    /// A fresh generator for this fault's choices.
    pub fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.seed)
    }

    /// Resolves the targets now, as the runner will when the fault fires.
    pub async fn resolve(&self, env: &FaultEnv) -> crate::fault::Result<Vec<Target>> {
        let mut rng = self.rng();
        self.spec
            .fault()
            .resolve(ResolveCtx { rng: &mut rng, env })
            .await
    }
}

/// The resolved run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The experiment as written.
    pub experiment: Experiment,
    /// The file it came from.
    pub file: PathBuf,
    /// The run's seed.
    pub seed: u64,
    /// The demo to start in setup.
    pub demo: Option<DemoConfig>,
    /// The load.
    pub load: Option<LoadConfig>,
    /// Window length of the load's figures.
    pub window: Duration,
    /// The probes.
    pub probes: Vec<ProbeConfig>,
    /// Faults, by `at`.
    pub faults: Vec<PlannedFault>,
    /// Run length.
    pub duration: Duration,
    /// Warm-up before the baseline.
    pub warmup: Duration,
    /// Hold period for recovery.
    pub hold: Duration,
    /// Longest extension to observe recovery.
    pub recovery_timeout: Duration,
}

/// Splits a seed per fault so faults' choices are independent but reproducible.
fn fault_seed(seed: u64, index: usize) -> u64 {
    // SplitMix64 step: distinct, well-mixed seeds for consecutive indices.
    let mut z = seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The load mix's seed: the run's, spread so it is not the first fault's.
fn mix_seed(seed: u64) -> u64 {
    fault_seed(seed ^ 0x6D69_785F_7365_6564, usize::MAX - 1)
}

/// Headers for the load, secret ones marked sensitive (hyper then keeps them out of debug
/// output and HPACK tables).
fn load_headers(
    headers: &std::collections::BTreeMap<String, String>,
    field: &str,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, PlanError> {
    let invalid = |message: String| PlanError::Invalid {
        field: field.into(),
        message,
    };
    let mut out = Vec::new();
    for (k, v) in headers {
        let name =
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut value = http::HeaderValue::from_str(v).map_err(|e| invalid(e.to_string()))?;
        value.set_sensitive(is_secret_header(k));
        out.push((name, value));
    }
    Ok(out)
}

/// Builds the plan of a validated experiment. `seed`: from `--seed`, else random.
pub fn build(experiment: Experiment, file: &Path, seed: Option<u64>) -> Result<Plan, PlanError> {
    let seed = seed.unwrap_or_else(rand::random);
    let invalid = |field: &str, message: String| PlanError::Invalid {
        field: field.into(),
        message,
    };
    let demo = experiment
        .setup
        .as_ref()
        .and_then(|s| s.demo.as_ref())
        .map(|d| DemoConfig {
            replicas: *d.replicas,
            port: d.port,
            restart_delay: d.restart_delay.get(),
            latency: d.latency.get(),
            health_interval: d.health_interval.get(),
            exe: None,
            log: crate::demo::DemoLog::default(),
        });
    let mut window = Duration::from_secs(1);
    let load = match &experiment.load {
        None => None,
        Some(l) => {
            let h = &l.http;
            window = h.window.get();
            let url = crate::experiment::url::load_url(&h.url)
                .map_err(|m| invalid("load.http.url", m))?;
            let method = http::Method::from_bytes(h.method.as_bytes())
                .map_err(|e| invalid("load.http.method", e.to_string()))?;
            let headers = load_headers(&h.headers, "load.http.headers")?;
            let mut mix = Vec::new();
            for (i, r) in h.requests.iter().enumerate() {
                let field = |f: &str| format!("load.http.requests[{i}].{f}");
                let url = match &r.url {
                    None => url.clone(),
                    Some(u) => crate::experiment::url::request_url(&h.url, u)
                        .map_err(|m| invalid(&field("url"), m))?,
                };
                let method = match &r.method {
                    None => method.clone(),
                    Some(m) => http::Method::from_bytes(m.as_bytes())
                        .map_err(|e| invalid(&field("method"), e.to_string()))?,
                };
                // The section's headers, each replaced by this request's of the same name.
                let mut merged = h.headers.clone();
                for (k, v) in &r.headers {
                    merged.retain(|name, _| !name.eq_ignore_ascii_case(k));
                    merged.insert(k.clone(), v.clone());
                }
                mix.push(crate::load::MixRequest {
                    name: r.name.value.clone(),
                    weight: *r.weight,
                    url,
                    method,
                    headers: load_headers(&merged, &field("headers"))?,
                    body: r
                        .body
                        .clone()
                        .or_else(|| h.body.clone())
                        .map(bytes::Bytes::from)
                        .unwrap_or_default(),
                    timeout: r.timeout.as_ref().map_or(h.timeout.get(), |t| t.get()),
                    ok_status: r.ok_status.clone().or_else(|| h.ok_status.clone()),
                });
            }
            Some(LoadConfig {
                url,
                method,
                headers,
                body: h.body.clone().map(bytes::Bytes::from).unwrap_or_default(),
                rate_per_sec: h.rate.per_sec(),
                ramp: h.ramp.map(|r| r.get()),
                timeout: h.timeout.get(),
                max_in_flight: *h.max_in_flight as usize,
                ok_status: h.ok_status.clone(),
                mix,
                seed: mix_seed(seed),
            })
        }
    };
    let mut probes = Vec::new();
    for (i, p) in experiment.steady_state.probes.iter().enumerate() {
        let spec = &p.spec.value;
        spec.probe()
            .validate()
            .map_err(|m| invalid(&format!("steady_state.probes.{}", spec.kind()), m))?;
        probes.push(ProbeConfig {
            name: p.name.clone().unwrap_or_else(|| format!("probe-{i}")),
            interval: p.interval.get(),
            spec: spec.clone(),
        });
    }
    let mut faults: Vec<PlannedFault> = experiment
        .faults
        .iter()
        .enumerate()
        .map(|(index, f)| PlannedFault {
            index,
            name: f.name.value.clone(),
            spec: {
                let mut spec = f.spec.value.clone();
                spec.fault_mut()
                    .set_duration(f.duration.as_ref().map(|d| d.get()));
                spec
            },
            at: f.at.get(),
            duration: f.duration.as_ref().map(|d| d.get()),
            seed: fault_seed(seed, index),
        })
        .collect();
    faults.sort_by_key(|f| (f.at, f.index));
    let ss = &experiment.steady_state;
    Ok(Plan {
        seed,
        demo,
        load,
        window,
        probes,
        faults,
        duration: experiment.duration.get(),
        warmup: ss.warmup.get(),
        hold: ss.hold.get(),
        recovery_timeout: ss.recovery_timeout.get(),
        file: file.to_path_buf(),
        experiment,
    })
}

/// The SLO in words: `success_rate >= 99%, p99 < 100ms`.
pub fn describe_slo(slo: &Slo) -> String {
    if slo.is_empty() {
        return "none (no request may fail)".to_string();
    }
    let mut parts = Vec::new();
    if let Some(t) = &slo.success_rate {
        parts.push(format!("success_rate {t}"));
    }
    for (name, t) in [
        ("p50", &slo.p50),
        ("p90", &slo.p90),
        ("p99", &slo.p99),
        ("max", &slo.max),
    ] {
        if let Some(t) = t {
            parts.push(format!("{name} {t}"));
        }
    }
    parts.join(", ")
}

/// The plan as recorded in report.json (see `report::PlanReport`).
#[derive(Debug, Clone)]
pub struct PlanSummary {
    /// Seed.
    pub seed: u64,
    /// Run length (ms).
    pub duration_ms: u64,
    /// Warm-up (ms).
    pub warmup_ms: u64,
    /// Hold period (ms).
    pub hold_ms: u64,
    /// Load, with secret header values redacted.
    pub load: Option<serde_json::Value>,
    /// The SLO.
    pub slo: Slo,
    /// Faults in firing order.
    pub faults: Vec<serde_json::Value>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Plan {
    /// The SLO of the hypothesis.
    pub fn slo(&self) -> &Slo {
        &self.experiment.steady_state.slo
    }

    /// Each mix request with an SLO of its own: its route, name and SLO.
    pub fn request_slos(&self) -> impl Iterator<Item = (u16, &str, &Slo)> {
        self.experiment
            .load
            .iter()
            .flat_map(|l| l.http.requests.iter())
            .enumerate()
            .filter(|(_, r)| !r.slo.is_empty())
            .map(|(i, r)| {
                (
                    u16::try_from(i).unwrap_or(u16::MAX),
                    r.name.as_str(),
                    &r.slo,
                )
            })
    }

    /// When the baseline ends: the first fault, or the end of the run.
    pub fn baseline_end(&self) -> Duration {
        self.faults.first().map(|f| f.at).unwrap_or(self.duration)
    }

    /// For report.json.
    pub fn summary(&self) -> PlanSummary {
        let load = self.experiment.load.as_ref().map(|l| {
            let mut v = serde_json::to_value(&l.http).unwrap_or_default();
            if let Some(url) = v.get_mut("url") {
                *url = serde_json::Value::String(redact_url(url.as_str().unwrap_or_default()));
            }
            if let Some(headers) = v.get_mut("headers").and_then(|h| h.as_object_mut()) {
                for (k, val) in headers.iter_mut() {
                    if is_secret_header(k) {
                        *val = serde_json::Value::String("<redacted>".into());
                    }
                }
            }
            v
        });
        PlanSummary {
            seed: self.seed,
            duration_ms: ms(self.duration),
            warmup_ms: ms(self.warmup),
            hold_ms: ms(self.hold),
            load,
            slo: self.slo().clone(),
            faults: self
                .faults
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "name": f.name,
                        "kind": f.spec.kind(),
                        "at_ms": ms(f.at),
                        "duration_ms": f.duration.map(ms),
                        "spec": serde_json::to_value(&f.spec).ok()
                            .and_then(|v| v.get(f.spec.kind()).cloned()),
                    })
                })
                .collect(),
        }
    }

    /// Each fault's targets as they would be chosen now (in plan order), for `--dry-run`.
    pub async fn resolve_all(&self, env: &FaultEnv) -> Vec<Result<Vec<Target>, FaultError>> {
        let mut out = Vec::with_capacity(self.faults.len());
        for f in &self.faults {
            out.push(f.resolve(env).await);
        }
        out
    }

    /// The targets of `resolved` (from [`Plan::resolve_all`]) that exist before the run, so it
    /// did not start them (processes, pods, nodes): faulting them needs a confirmation. One
    /// line each, `fault: target`.
    pub fn outside_targets(&self, resolved: &[Result<Vec<Target>, FaultError>]) -> Vec<String> {
        self.faults
            .iter()
            .zip(resolved)
            .filter_map(|(f, r)| r.as_ref().ok().map(|t| (f, t)))
            .flat_map(|(f, targets)| targets.iter().map(move |t| format!("{}: {t}", f.name)))
            .collect()
    }

    /// Human-readable plan for `--dry-run` and the start of a run. With `resolved` (from
    /// [`Plan::resolve_all`]), each fault's targets as they would be chosen now are listed (or
    /// why there are none yet).
    pub fn render(&self, resolved: Option<&[Result<Vec<Target>, FaultError>]>) -> String {
        let e = &self.experiment;
        let mut s = String::new();
        let _ = writeln!(s, "experiment {} ({})", *e.name, self.file.display());
        if let Some(d) = &e.description {
            let _ = writeln!(s, "  {}", d.trim());
        }
        let _ = writeln!(s, "seed {}  (replay with --seed {})", self.seed, self.seed);
        if let Some(d) = &self.demo {
            let _ = writeln!(
                s,
                "setup: demo service, {} workers behind http://127.0.0.1:{}/ (restart after {}ms)",
                d.replicas,
                d.port,
                d.restart_delay.as_millis()
            );
        }
        match &self.load {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "load: {} {} at {}/s{}, timeout {}ms, at most {} in flight",
                    l.method,
                    redact_url(&l.url.to_string()),
                    l.rate_per_sec,
                    l.ramp
                        .map(|r| format!(" (ramp {}ms)", r.as_millis()))
                        .unwrap_or_default(),
                    l.timeout.as_millis(),
                    l.max_in_flight
                );
            }
            None => {
                let _ = writeln!(s, "load: none");
            }
        }
        let _ = writeln!(
            s,
            "steady state: warm-up {}ms, baseline until {}ms, hold {}ms, SLO {}",
            self.warmup.as_millis(),
            self.baseline_end().as_millis(),
            self.hold.as_millis(),
            describe_slo(self.slo())
        );
        for p in &self.probes {
            let _ = writeln!(
                s,
                "probe {}: {}",
                p.name,
                p.spec.probe().describe(p.interval)
            );
        }
        for (i, f) in self.faults.iter().enumerate() {
            let when = match f.duration {
                Some(d) => format!("at {}ms for {}ms", f.at.as_millis(), d.as_millis()),
                None => format!("at {}ms", f.at.as_millis()),
            };
            let spec = serde_json::to_value(&f.spec)
                .ok()
                .and_then(|v| v.get(f.spec.kind()).cloned())
                .map(|v| v.to_string())
                .unwrap_or_default();
            let _ = writeln!(s, "fault {}: {} {} {}", f.name, f.spec.kind(), when, spec);
            if let Some(resolved) = resolved.and_then(|r| r.get(i)) {
                match resolved {
                    Ok(targets) => {
                        for t in targets {
                            let _ = writeln!(s, "    would act on {t}");
                        }
                    }
                    Err(e) if self.demo.is_some() => {
                        let _ = writeln!(
                            s,
                            "    targets now: {e} (the demo's workers start in setup; targets are chosen when the fault fires)"
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(s, "    targets now: {e}");
                    }
                }
            }
        }
        let _ = writeln!(
            s,
            "duration {}ms (+ up to {}ms to observe recovery)",
            self.duration.as_millis(),
            self.recovery_timeout.as_millis()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_seeds_differ_and_repeat() {
        assert_eq!(fault_seed(7, 0), fault_seed(7, 0));
        assert_ne!(fault_seed(7, 0), fault_seed(7, 1));
        assert_ne!(fault_seed(7, 0), fault_seed(8, 0));
    }
}
