//! `stop_when`: conditions that abort the run at once (every fault reverted, verdict aborted,
//! exit 3) when they hold for a sustained time, e.g. `error_rate: "> 50% for 5s"`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::located::Located;
use super::prometheus::{Expectation, MAX_INTERVAL, PromServer, check_query};
use super::values::{DurationThreshold, HumanDuration, PercentThreshold, ValueError};

/// Conditions watched live. Each is evaluated every 100 ms over the requests that completed in
/// the trailing second; it triggers once it has held at every evaluation for its `for` time.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopWhen {
    /// Share of failed requests, e.g. `"> 50% for 5s"`.
    #[serde(default)]
    pub error_rate: Option<Sustained<PercentThreshold>>,
    /// Median latency, e.g. `"> 500ms for 5s"`.
    #[serde(default)]
    pub p50: Option<Sustained<DurationThreshold>>,
    /// 99th percentile latency, e.g. `"> 2s for 5s"`.
    #[serde(default)]
    pub p99: Option<Sustained<DurationThreshold>>,
    /// Any probe failing every check for this long, e.g. `10s`.
    #[serde(default)]
    pub probe_failing: Option<HumanDuration>,
    /// PromQL conditions, each evaluated at its own interval, e.g. `{ server: { url:
    /// "http://prometheus:9090" }, query: "sum(rate(errors[1m]))", when: "> 5 for 30s" }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<PromStop>,
    /// Alerts that stop the run as soon as Prometheus reports one of them firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertStop>,
}

/// A `stop_when` condition on a PromQL expression. A query that cannot be evaluated (server
/// unreachable, no series, NaN) counts as holding: a run that cannot see its guard stops,
/// once that has lasted the condition's `for` time.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromStop {
    /// The server.
    pub server: PromServer,
    /// PromQL giving one series.
    pub query: String,
    /// When to stop: an expectation on the value and how long it must hold, e.g.
    /// `"> 0.05 for 30s"`.
    pub when: Sustained<Expectation>,
    /// How often the query is sent.
    #[serde(default = "super::prometheus::default_interval")]
    pub interval: HumanDuration,
}

/// A `stop_when` condition on Prometheus alerts (`/api/v1/alerts`): the run stops as soon as one
/// of `names` is firing (pending alerts do not count; their rule's `for` is the hold time). A
/// server that cannot be reached counts as firing once `unreachable_for` has passed.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertStop {
    /// The server.
    pub server: PromServer,
    /// Alert names (`alertname`), e.g. `[HighErrorRate, SLOBurn]`.
    pub names: Vec<String>,
    /// How often the alerts are read.
    #[serde(default = "super::prometheus::default_interval")]
    pub interval: HumanDuration,
    /// How long Prometheus may be unreachable before the run stops.
    #[serde(default = "default_unreachable_for")]
    pub unreachable_for: HumanDuration,
}

fn default_unreachable_for() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Checks of the Prometheus conditions (servers, queries, names, intervals).
pub(super) fn validate_prometheus(when: &StopWhen) -> Vec<(&Located<String>, String, String)> {
    let mut out = Vec::new();
    for (i, p) in when.prometheus.iter().enumerate() {
        let field = format!("stop_when.prometheus[{i}]");
        if let Err(m) = p.server.validate() {
            out.push((&p.server.url, format!("{field}.server"), m));
        }
        if let Err(m) = check_query(&p.query) {
            out.push((&p.server.url, field.clone(), m));
        }
        if p.interval.get().is_zero() || p.interval.get() > MAX_INTERVAL {
            out.push((
                &p.server.url,
                format!("{field}.interval"),
                "must be above zero and at most 1 day".into(),
            ));
        }
    }
    if let Some(a) = &when.alerts {
        if let Err(m) = a.server.validate() {
            out.push((&a.server.url, "stop_when.alerts.server".into(), m));
        }
        if a.names.is_empty() || a.names.iter().any(|n| n.trim().is_empty()) {
            out.push((
                &a.server.url,
                "stop_when.alerts.names".into(),
                "name at least one alert, and no empty name".into(),
            ));
        }
        if a.interval.get().is_zero() || a.interval.get() > MAX_INTERVAL {
            out.push((
                &a.server.url,
                "stop_when.alerts.interval".into(),
                "must be above zero and at most 1 day".into(),
            ));
        }
    }
    out
}

impl StopWhen {
    /// True when no condition is set.
    pub fn is_empty(&self) -> bool {
        self.error_rate.is_none()
            && self.p50.is_none()
            && self.p99.is_none()
            && self.probe_failing.is_none()
            && self.prometheus.is_empty()
            && self.alerts.is_none()
    }
}

/// A threshold that must hold continuously for a time: `"> 50% for 5s"`. Without `for`, the
/// condition triggers at the first evaluation where it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sustained<T> {
    /// The threshold.
    pub threshold: T,
    /// How long it must hold.
    pub for_: HumanDuration,
}

impl<T: FromStr<Err = ValueError>> FromStr for Sustained<T> {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let (threshold, for_) = match input.split_once(" for ") {
            Some((t, f)) => (t, f.parse::<HumanDuration>()?),
            None => (input, HumanDuration::default()),
        };
        Ok(Self {
            threshold: threshold.parse()?,
            for_,
        })
    }
}

impl<T: fmt::Display> fmt::Display for Sustained<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.for_.get().is_zero() {
            write!(f, "{}", self.threshold)
        } else {
            write!(f, "{} for {}", self.threshold, self.for_)
        }
    }
}

impl<'de, T: FromStr<Err = ValueError>> Deserialize<'de> for Sustained<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromStr<Err = ValueError>> Visitor<'_> for V<T> {
            type Value = Sustained<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a threshold and how long it must hold, like \"> 50% for 5s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Sustained<T>, E> {
                s.parse().map_err(|e: ValueError| E::custom(e.0))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<T: fmt::Display> Serialize for Sustained<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<T> JsonSchema for Sustained<T> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("SustainedThreshold")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "a threshold and how long it must hold, like \"> 50% for 5s\"",
            "type": "string",
            "pattern": r"^\s*(<=|>=|<|>)\s*\d+(\.\d+)?\s*[a-zµ%]*\s*( for .+)?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sustained_thresholds() {
        let s: Sustained<PercentThreshold> = "> 50% for 5s".parse().expect("valid");
        assert_eq!(s.for_, HumanDuration::from_secs(5));
        assert!(s.threshold.holds_fraction(0.6));
        assert_eq!(s.to_string(), "> 50% for 5s");
        let s: Sustained<DurationThreshold> = "> 2s".parse().expect("valid");
        assert!(s.for_.get().is_zero());
        assert!(
            "> 50% for ever"
                .parse::<Sustained<PercentThreshold>>()
                .is_err()
        );
        assert!("50% for 5s".parse::<Sustained<PercentThreshold>>().is_err());
    }
}
