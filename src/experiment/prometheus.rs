//! Prometheus as the experiment file spells it: where a server is and how to reach it
//! ([`PromServer`], shared by the `prometheus` probe, `gates.prometheus` and
//! `stop_when.prometheus`/`stop_when.alerts`), and the expectation a query's value must meet
//! ([`Expectation`], `"< 0.01"`).
//!
//! Credentials are never written in the file: it names the environment variables that hold
//! them (`bearer_token_env`, `basic_auth.username_env`/`password_env`), read when the run
//! connects, so a committed experiment holds no secret and a missing variable is an error at
//! preflight (exit 2), before any fault. Each section that queries has its own `server:` object
//! rather than one global: a gate may read a long-term store while a probe reads the local
//! server; YAML anchors (`&prom` / `*prom`) avoid repeating it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::located::Located;
use super::values::{Cmp, HumanDuration, ValueError};
use crate::prometheus::{Auth, Client, Connection, PromError};

/// A Prometheus server and how to reach it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromServer {
    /// Base URL, e.g. `http://prometheus:9090` (the API paths `/api/v1/...` are appended).
    pub url: Located<String>,
    /// Name of the environment variable holding a bearer token (never the token itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// Basic authentication from two environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthEnv>,
    /// PEM file of extra trusted CA certificates (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (https), like `curl -k`.
    #[serde(default)]
    pub insecure: bool,
    /// Bound of one API call (connect, query, answer). An unreachable server is an error after
    /// it, never a hang.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// Basic authentication read from the environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthEnv {
    /// Name of the environment variable holding the user name.
    pub username_env: String,
    /// Name of the environment variable holding the password.
    pub password_env: String,
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl PromServer {
    /// Checks what needs no network: the URL, one kind of credentials, variable names, the
    /// timeout. Messages name the field (relative to the server object).
    pub fn validate(&self) -> Result<(), String> {
        crate::prometheus::check_url(&self.url)
            .map_err(|m| format!("`url` {}: {m}", crate::redact::redact_url_loose(&self.url)))?;
        if self.bearer_token_env.is_some() && self.basic_auth.is_some() {
            return Err("give `bearer_token_env` or `basic_auth`, not both".into());
        }
        let names = self
            .bearer_token_env
            .iter()
            .map(|n| ("bearer_token_env", n))
            .chain(self.basic_auth.iter().flat_map(|b| {
                [
                    ("basic_auth.username_env", &b.username_env),
                    ("basic_auth.password_env", &b.password_env),
                ]
            }));
        for (field, n) in names {
            if !env_name_ok(n) {
                return Err(format!(
                    "`{field}` names an environment variable (letters, digits, `_`), not a \
                     value: {:?} is not a variable name",
                    if n.len() > 40 {
                        "<long value>"
                    } else {
                        "<value>"
                    }
                ));
            }
        }
        if self.timeout.get().is_zero() || self.timeout.get() > MAX_INTERVAL {
            return Err("`timeout` must be above zero and at most 1 day".into());
        }
        Ok(())
    }

    /// A client, the credentials read from the environment now.
    pub fn connect(&self) -> Result<Client, PromError> {
        let auth = match (&self.bearer_token_env, &self.basic_auth) {
            (Some(var), _) => Some(Auth::bearer_from_env(var)?),
            (None, Some(b)) => Some(Auth::basic_from_env(&b.username_env, &b.password_env)?),
            (None, None) => None,
        };
        Client::new(&Connection {
            url: self.url.value.clone(),
            auth,
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            timeout: self.timeout.get(),
        })
    }

    /// The URL as it may be shown.
    pub fn shown_url(&self) -> String {
        crate::redact::redact_url_loose(&self.url)
    }
}

/// What a query's value must be, e.g. `"< 0.01"`, `">= 0.999"`, `"> 0"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// The operator.
    pub cmp: Cmp,
    /// The number compared with.
    pub value: f64,
}

impl Expectation {
    /// Does `measured` meet it? NaN never does.
    pub fn holds(&self, measured: f64) -> bool {
        !measured.is_nan() && self.cmp.holds(measured, self.value)
    }
}

impl FromStr for Expectation {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let t = input.trim();
        let (cmp, rest) = [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ]
        .into_iter()
        .find_map(|(tok, cmp)| t.strip_prefix(tok).map(|r| (cmp, r)))
        .ok_or_else(|| {
            ValueError(format!(
                "{input:?} is not an expectation: write an operator (<, <=, >, >=) and a \
                 number, like \"< 0.01\""
            ))
        })?;
        let value: f64 = rest.trim().parse().map_err(|_| {
            ValueError(format!(
                "{input:?}: {:?} is not a number (like 0.01, 1e-3 or 250)",
                rest.trim()
            ))
        })?;
        if !value.is_finite() {
            return Err(ValueError(format!("{input:?}: the number must be finite")));
        }
        Ok(Self { cmp, value })
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cmp.as_str(), self.value)
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Expectation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an operator and a number, like \"< 0.01\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Expectation, E> {
                s.parse().map_err(|e: ValueError| E::custom(e.0))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Expectation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Expectation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Expectation")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "an operator and a number, like \"< 0.01\"",
            "type": "string",
            "pattern": r"^\s*(<=|>=|<|>)\s*\S+\s*$"
        })
    }
}

/// The phase of a run a Prometheus gate is evaluated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GatePhase {
    /// From the warm-up's end to the first injection.
    Baseline,
    /// From the first injection until every fault has recovered and held.
    Fault,
    /// From there to the end of the run.
    Recovery,
    /// The whole run.
    Run,
}

impl GatePhase {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            GatePhase::Baseline => "baseline",
            GatePhase::Fault => "fault",
            GatePhase::Recovery => "recovery",
            GatePhase::Run => "run",
        }
    }
}

/// A gate on a PromQL expression over a phase: after the run, a range query over the phase's
/// span at `step`; every point must meet `expect`. A query with no point in the phase, several
/// series or a NaN point misses the gate.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromGate {
    /// Name in reports (default: the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server.
    pub server: PromServer,
    /// PromQL giving one series, e.g. `sum(rate(errors[1m])) / sum(rate(requests[1m]))`.
    pub query: String,
    /// The phase: `baseline`, `fault`, `recovery` or `run`.
    pub phase: GatePhase,
    /// What every point must be, e.g. `"< 0.01"`.
    pub expect: Expectation,
    /// Resolution of the range query.
    #[serde(default = "default_step")]
    pub step: HumanDuration,
}

fn default_step() -> HumanDuration {
    HumanDuration::from_secs(1)
}

impl PromGate {
    /// The gate's name in reports.
    pub fn display_name(&self) -> String {
        format!(
            "prometheus.{}[{}]",
            self.phase.as_str(),
            self.name.clone().unwrap_or_else(|| self.query.clone())
        )
    }
}

/// Checks of a query common to every place one is written.
pub fn check_query(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("`query` must not be empty".into());
    }
    if query.len() > 64 * 1024 {
        return Err("`query` is longer than 64 KiB".into());
    }
    Ok(())
}

/// How often a Prometheus stop condition is evaluated, unless its `interval` says otherwise.
pub fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// A cap on intervals and steps: a day. Larger values are typos.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_and_judge() {
        let e: Expectation = "< 0.01".parse().unwrap();
        assert!(e.holds(0.0) && !e.holds(0.01) && !e.holds(f64::NAN));
        let e: Expectation = ">=1e-3".parse().unwrap();
        assert!(e.holds(0.001));
        assert_eq!(e.to_string(), ">= 0.001");
        assert!("0.01".parse::<Expectation>().is_err());
        assert!("< abc".parse::<Expectation>().is_err());
        assert!("< NaN".parse::<Expectation>().is_err());
        assert!("< inf".parse::<Expectation>().is_err());
    }

    #[test]
    fn env_names_are_names_not_secrets() {
        assert!(env_name_ok("PROM_TOKEN"));
        assert!(!env_name_ok("eyJhbGciOi.secret"));
        assert!(!env_name_ok("1A"));
        assert!(!env_name_ok(""));
    }
}
