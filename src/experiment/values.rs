//! Human-friendly value types of the experiment file: durations (`250ms`, `30s`, `2m`), rates
//! (`200/s`), percentages (`5%`) and thresholds (`"< 200ms"`, `">= 99.5%"`).
//!
//! Each parses from a string (numbers are accepted where unambiguous: a bare number is seconds
//! for a duration, per second for a rate), serializes back to its canonical string, and
//! describes itself in the JSON Schema as a string with a pattern, so editors can check it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value did not parse. The message is complete on its own; the caller adds the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n: f64 = s[..end].parse().ok()?;
    n.is_finite().then_some((n, s[end..].trim()))
}

/// A non-negative duration written like `250ms`, `1.5s`, `2m`, `1h`, `500us` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    /// From seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    /// Whole microseconds.
    pub fn as_micros(self) -> u64 {
        u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX)
    }
}

const DURATION_HELP: &str = "expected a duration like 250ms, 30s, 2m or 1m30s";

impl FromStr for HumanDuration {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let bad = || ValueError(format!("invalid duration {input:?}: {DURATION_HELP}"));
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        if rest.starts_with('-') {
            return Err(ValueError(format!(
                "invalid duration {input:?}: must not be negative"
            )));
        }
        let mut total = 0f64; // seconds
        while !rest.is_empty() {
            let (n, after) = split_number(rest).ok_or_else(bad)?;
            let unit_end = after
                .char_indices()
                .find(|(_, c)| !c.is_ascii_alphabetic() && *c != 'µ')
                .map(|(i, _)| i)
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_end);
            let scale = match unit {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                // A bare number means seconds, but only as the whole value ("30"), not "1m30".
                "" if total == 0.0 && next.trim().is_empty() => 1.0,
                _ => return Err(bad()),
            };
            total += n * scale;
            rest = next.trim_start();
        }
        if !total.is_finite() || total > 365.0 * 24.0 * 3600.0 {
            return Err(ValueError(format!(
                "invalid duration {input:?}: longer than a year"
            )));
        }
        Ok(Self(Duration::from_secs_f64(total)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            write!(f, "0s")
        } else if us % 60_000_000 == 0 {
            write!(f, "{}m", us / 60_000_000)
        } else if us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1_000 == 0 {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// A rate of requests written like `200/s`, `12000/m` or `5/ms`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate {
    per_sec: f64,
}

impl Rate {
    /// From requests per second (must be finite and > 0).
    pub fn per_second(per_sec: f64) -> Option<Self> {
        (per_sec.is_finite() && per_sec > 0.0).then_some(Self { per_sec })
    }
    /// Requests per second.
    pub fn per_sec(self) -> f64 {
        self.per_sec
    }
}

impl FromStr for Rate {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let bad = || {
            ValueError(format!(
                "invalid rate {input:?}: expected a rate like 200/s"
            ))
        };
        let (n, unit) = split_number(input).ok_or_else(bad)?;
        let per = match unit.trim() {
            "/s" | "" => 1.0,
            "/ms" => 1e-3,
            "/m" | "/min" => 60.0,
            "/h" => 3600.0,
            _ => return Err(bad()),
        };
        let per_sec = n / per;
        if per_sec <= 0.0 {
            return Err(ValueError(format!(
                "invalid rate {input:?}: must be above zero"
            )));
        }
        if per_sec > 10_000_000.0 {
            return Err(ValueError(format!(
                "invalid rate {input:?}: above 10,000,000/s"
            )));
        }
        Ok(Self { per_sec })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_sec)
    }
}

/// A percentage from 0 to 100, written like `5%`, `99.5%` (a bare number is accepted).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    /// From a value in 0..=100.
    pub fn new(p: f64) -> Option<Self> {
        (p.is_finite() && (0.0..=100.0).contains(&p)).then_some(Self(p))
    }
    /// The value in 0..=100.
    pub fn get(self) -> f64 {
        self.0
    }
    /// The value as a fraction in 0..=1.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let t = input.trim();
        if t.starts_with('-') {
            return Err(ValueError(format!(
                "invalid percentage {input:?}: must not be negative"
            )));
        }
        let (n, unit) = split_number(t).ok_or_else(|| {
            ValueError(format!(
                "invalid percentage {input:?}: expected a percentage like 5%"
            ))
        })?;
        if !(unit == "%" || unit.is_empty()) {
            return Err(ValueError(format!(
                "invalid percentage {input:?}: expected a percentage like 5%"
            )));
        }
        Percent::new(n).ok_or_else(|| {
            ValueError(format!(
                "invalid percentage {input:?}: must be between 0% and 100%"
            ))
        })
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// A comparison operator of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// Does `measured OP limit` hold?
    pub fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Cmp::Lt => measured < limit,
            Cmp::Le => measured <= limit,
            Cmp::Gt => measured > limit,
            Cmp::Ge => measured >= limit,
        }
    }
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

fn split_cmp(input: &str) -> Option<(Cmp, &str)> {
    let t = input.trim();
    for (tok, cmp) in [
        ("<=", Cmp::Le),
        (">=", Cmp::Ge),
        ("<", Cmp::Lt),
        (">", Cmp::Gt),
    ] {
        if let Some(rest) = t.strip_prefix(tok) {
            return Some((cmp, rest.trim()));
        }
    }
    None
}

/// A threshold over a duration, like `"< 200ms"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationThreshold {
    /// The operator.
    pub cmp: Cmp,
    /// The limit.
    pub limit: HumanDuration,
}

impl DurationThreshold {
    /// Does a measured value in µs satisfy it?
    pub fn holds_us(&self, measured_us: u64) -> bool {
        self.cmp
            .holds(measured_us as f64, self.limit.as_micros() as f64)
    }
}

impl FromStr for DurationThreshold {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let (cmp, rest) = split_cmp(input).ok_or_else(|| {
            ValueError(format!(
                "invalid threshold {input:?}: expected an operator and a duration, like \"< 200ms\""
            ))
        })?;
        let limit = rest
            .parse::<HumanDuration>()
            .map_err(|e| ValueError(format!("invalid threshold {input:?}: {}", e.0)))?;
        Ok(Self { cmp, limit })
    }
}

impl fmt::Display for DurationThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cmp.as_str(), self.limit)
    }
}

/// A threshold over a percentage, like `">= 99.5%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentThreshold {
    /// The operator.
    pub cmp: Cmp,
    /// The limit.
    pub limit: Percent,
}

impl PercentThreshold {
    /// Does a measured fraction (0..=1) satisfy it?
    pub fn holds_fraction(&self, measured: f64) -> bool {
        self.cmp.holds(measured * 100.0, self.limit.get())
    }
}

impl FromStr for PercentThreshold {
    type Err = ValueError;
    fn from_str(input: &str) -> Result<Self, ValueError> {
        let (cmp, rest) = split_cmp(input).ok_or_else(|| {
            ValueError(format!(
                "invalid threshold {input:?}: expected an operator and a percentage, like \">= 99.5%\""
            ))
        })?;
        let limit = rest
            .parse::<Percent>()
            .map_err(|e| ValueError(format!("invalid threshold {input:?}: {}", e.0)))?;
        Ok(Self { cmp, limit })
    }
}

impl fmt::Display for PercentThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cmp.as_str(), self.limit)
    }
}

/// Implements Deserialize (from a string, or a number where `$num` allows), Serialize (the
/// canonical string) and JsonSchema (a string with a pattern) for a `FromStr + Display` type.
macro_rules! string_value {
    ($ty:ty, $name:literal, $expecting:literal, $pattern:literal, numbers: $num:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        s.parse().map_err(|e: ValueError| E::custom(e.0))
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<$ty, E> {
                        if $num {
                            self.visit_str(&n.to_string())
                        } else {
                            Err(E::invalid_type(de::Unexpected::Unsigned(n), &self))
                        }
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<$ty, E> {
                        if $num {
                            self.visit_str(&n.to_string())
                        } else {
                            Err(E::invalid_type(de::Unexpected::Signed(n), &self))
                        }
                    }
                    fn visit_f64<E: de::Error>(self, n: f64) -> Result<$ty, E> {
                        if $num {
                            self.visit_str(&n.to_string())
                        } else {
                            Err(E::invalid_type(de::Unexpected::Float(n), &self))
                        }
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                if $num {
                    json_schema!({
                        "description": $expecting,
                        "anyOf": [
                            { "type": "string", "pattern": $pattern },
                            { "type": "number", "minimum": 0 }
                        ]
                    })
                } else {
                    json_schema!({
                        "description": $expecting,
                        "type": "string",
                        "pattern": $pattern
                    })
                }
            }
        }
    };
}

string_value!(HumanDuration, "Duration", "a duration like 250ms, 30s, 2m or 1m30s",
    r"^\s*(\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|min|h)\s*)+$|^\s*\d+(\.\d+)?\s*$", numbers: true);
string_value!(Rate, "Rate", "a rate like 200/s (also /ms, /m, /h)",
    r"^\s*\d+(\.\d+)?\s*(/(s|ms|m|min|h))?\s*$", numbers: true);
string_value!(Percent, "Percent", "a percentage like 5% or 99.5%",
    r"^\s*\d+(\.\d+)?\s*%?\s*$", numbers: true);
string_value!(DurationThreshold, "DurationThreshold", "a comparison with a duration, like \"< 200ms\"",
    r"^\s*(<=|>=|<|>)\s*\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|min|h)?.*$", numbers: false);
string_value!(PercentThreshold, "PercentThreshold", "a comparison with a percentage, like \">= 99.5%\"",
    r"^\s*(<=|>=|<|>)\s*\d+(\.\d+)?\s*%?\s*$", numbers: false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |s: &str| {
            s.parse::<HumanDuration>()
                .map(|d| d.get().as_secs_f64() * 1e3)
        };
        assert_eq!(ms("250ms"), Ok(250.0));
        assert_eq!(ms("1.5s"), Ok(1500.0));
        assert_eq!(ms("2m"), Ok(120_000.0));
        assert_eq!(ms("1m30s"), Ok(90_000.0));
        assert_eq!(ms("30"), Ok(30_000.0));
        assert_eq!(ms("0"), Ok(0.0));
        assert!(ms("-1s").is_err());
        assert!(ms("1m30").is_err());
        assert!(ms("fast").is_err());
        assert!(ms("10 parsecs").is_err());
        assert!(ms("").is_err());
        assert!(ms("1e400s").is_err());
        assert!(ms("9999999999h").is_err());
        assert_eq!(HumanDuration::from_millis(250).to_string(), "250ms");
        assert_eq!(HumanDuration::from_secs(120).to_string(), "2m");
    }

    #[test]
    fn rates_percents_thresholds() {
        assert_eq!("200/s".parse::<Rate>().map(Rate::per_sec), Ok(200.0));
        assert_eq!("120/m".parse::<Rate>().map(Rate::per_sec), Ok(2.0));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!("99.5%".parse::<Percent>().map(Percent::get), Ok(99.5));
        assert!("101%".parse::<Percent>().is_err());
        assert!("-1%".parse::<Percent>().is_err());
        let t: DurationThreshold = "< 200ms".parse().expect("valid");
        assert!(t.holds_us(199_999));
        assert!(!t.holds_us(200_000));
        let p: PercentThreshold = ">= 99.5%".parse().expect("valid");
        assert!(p.holds_fraction(0.995));
        assert!(!p.holds_fraction(0.99));
        assert!("200ms".parse::<DurationThreshold>().is_err());
        assert!("< 20".parse::<PercentThreshold>().is_ok());
        assert!("< 200".parse::<PercentThreshold>().is_err());
        assert!("=< 2".parse::<PercentThreshold>().is_err());
    }
}
