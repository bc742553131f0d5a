//! Toxics as Toxiproxy writes them (`{name, type, stream, toxicity, attributes}`), and their
//! parsed, validated effect.
//!
//! The wire shape is kept verbatim so that the API can echo it to Toxiproxy clients; the
//! [`Effect`] is what the link code reads on its hot path, parsed once when the toxic is added
//! so that a bad attribute is a 400 at the API and never a surprise inside a connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::share::{Passed, Share};

/// Which way the bytes flow that a toxic acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client to upstream (requests).
    Upstream,
    /// Upstream to client (responses). Toxiproxy's default.
    #[default]
    Downstream,
}

impl Stream {
    /// The name Toxiproxy uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// The highest bandwidth rate accepted, KB/s (10 GB/s): beyond it no machine this proxy runs on
/// can pace one connection, and a toxic must not silently deliver less than it says.
pub const MAX_RATE: u64 = 10_000_000;

/// A toxic's effect, attributes parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Delay each chunk by `latency` ± a uniform sample of `jitter`.
    Latency {
        /// Base delay.
        latency: Duration,
        /// Spread of the uniform jitter.
        jitter: Duration,
    },
    /// Limit throughput to `rate` KB/s (1 KB = 1000 bytes, as in Toxiproxy); 0 means no
    /// limit, as in Toxiproxy.
    Bandwidth {
        /// KB/s, at most [`MAX_RATE`].
        rate: u64,
    },
    /// Delay the close of the connection by `delay` after the stream ends.
    SlowClose {
        /// The delay.
        delay: Duration,
    },
    /// Drop all data; close the connection after `timeout` (never when zero).
    Timeout {
        /// Time before the close; zero holds the connection until the toxic goes.
        timeout: Duration,
    },
    /// Reset the connection (TCP RST) after `timeout`.
    ResetPeer {
        /// Time before the reset.
        timeout: Duration,
    },
    /// Split data into slices of `average_size` ± `size_variation` bytes, `delay` apart.
    Slicer {
        /// Mean slice size in bytes.
        average_size: u64,
        /// Spread of the slice size.
        size_variation: u64,
        /// Gap between slices.
        delay: Duration,
    },
    /// Close the connection once `bytes` have passed.
    LimitData {
        /// The byte budget.
        bytes: u64,
    },
}

/// A toxic as the Toxiproxy API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Toxic {
    /// Unique within its proxy.
    pub name: String,
    /// `latency`, `bandwidth`, `slow_close`, `timeout`, `reset_peer`, `slicer`, `limit_data`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The direction it acts on.
    pub stream: Stream,
    /// Probability (0 to 1) that a connection is affected, rolled once per connection.
    pub toxicity: f32,
    /// Type-specific attributes, normalised (defaults filled in).
    pub attributes: Map<String, Value>,
}

/// A toxic plus its parsed effect: what a proxy holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveToxic {
    /// As shown.
    pub toxic: Toxic,
    /// As applied.
    pub effect: Effect,
    /// Which connections its `toxicity` hits: the proxy's connections share one tally, so the
    /// share affected stays within one connection of the toxicity ([`super::share`]).
    pub connections: Share,
    /// Bytes passed on the connections it hit, in its direction.
    pub passed: Passed,
}

/// Largest duration attribute, in milliseconds: 365 days. Far beyond any useful fault, far
/// below what `Instant` arithmetic can overflow on; a connection never sees a bigger one.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;
/// Largest byte count or rate attribute: Toxiproxy's own range (a Go `int64`).
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// An integer attribute within `0..=max`; absent or null is 0. Errors name the field.
fn attr_u64(attrs: &Map<String, Value>, key: &str, max: u64) -> Result<u64, String> {
    let n = match attrs.get(key) {
        None | Some(Value::Null) => return Ok(0),
        Some(v) => {
            if let Some(n) = v.as_u64() {
                n
            } else if let Some(f) = v.as_f64().filter(|f| *f >= 0.0 && f.is_finite()) {
                // Saturates above u64::MAX; the range check below then refuses it.
                f as u64
            } else {
                return Err(format!(
                    "attribute `{key}` must be a non-negative number, got {v}"
                ));
            }
        }
    };
    if n > max {
        return Err(format!("attribute `{key}` must be at most {max}, got {n}"));
    }
    Ok(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl ActiveToxic {
    /// Parses and normalises a toxic. Errors name the field.
    pub fn new(
        name: String,
        kind: &str,
        stream: Stream,
        toxicity: f32,
        attributes: &Map<String, Value>,
    ) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&toxicity) || !toxicity.is_finite() {
            return Err(format!("toxicity must be within 0 and 1, got {toxicity}"));
        }
        if name.is_empty() || name.contains('/') {
            return Err("toxic name must be non-empty and contain no `/`".into());
        }
        let a = attributes;
        let (effect, attrs) = match kind {
            "latency" => {
                let (l, j) = (
                    attr_u64(a, "latency", MAX_DURATION_MS)?,
                    attr_u64(a, "jitter", MAX_DURATION_MS)?,
                );
                (
                    Effect::Latency {
                        latency: ms(l),
                        jitter: ms(j),
                    },
                    json!({"latency": l, "jitter": j}),
                )
            }
            "bandwidth" => {
                let rate = attr_u64(a, "rate", MAX_COUNT)?;
                if rate > MAX_RATE {
                    return Err(format!(
                        "attribute `rate` is {rate} KB/s: beyond what the proxy can pace (at \
                         most {MAX_RATE} KB/s, 10 GB/s; a 2-core machine carries about 1.7 GB/s \
                         through it, and the report's fault.effect shows the rate delivered)"
                    ));
                }
                (Effect::Bandwidth { rate }, json!({ "rate": rate }))
            }
            "slow_close" => {
                let d = attr_u64(a, "delay", MAX_DURATION_MS)?;
                (Effect::SlowClose { delay: ms(d) }, json!({ "delay": d }))
            }
            "timeout" => {
                let t = attr_u64(a, "timeout", MAX_DURATION_MS)?;
                (Effect::Timeout { timeout: ms(t) }, json!({ "timeout": t }))
            }
            "reset_peer" => {
                let t = attr_u64(a, "timeout", MAX_DURATION_MS)?;
                (
                    Effect::ResetPeer { timeout: ms(t) },
                    json!({ "timeout": t }),
                )
            }
            "slicer" => {
                let (s, v, d) = (
                    attr_u64(a, "average_size", MAX_COUNT)?,
                    attr_u64(a, "size_variation", MAX_COUNT)?,
                    // Microseconds, as in Toxiproxy.
                    attr_u64(a, "delay", MAX_DURATION_MS.saturating_mul(1000))?,
                );
                if s == 0 {
                    return Err("attribute `average_size` must be at least 1".into());
                }
                if v >= s {
                    return Err("attribute `size_variation` must be below `average_size`".into());
                }
                (
                    Effect::Slicer {
                        average_size: s,
                        size_variation: v,
                        delay: Duration::from_micros(d),
                    },
                    json!({"average_size": s, "size_variation": v, "delay": d}),
                )
            }
            "limit_data" => {
                let b = attr_u64(a, "bytes", MAX_COUNT)?;
                (Effect::LimitData { bytes: b }, json!({ "bytes": b }))
            }
            other => return Err(format!("unknown toxic type {other:?}")),
        };
        let attributes = match attrs {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Ok(Self {
            toxic: Toxic {
                name,
                kind: kind.to_string(),
                stream,
                toxicity,
                attributes,
            },
            effect,
            connections: Share::new(),
            passed: Passed::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let t = ActiveToxic::new(
            "l".into(),
            "latency",
            Stream::Downstream,
            1.0,
            &json!({"latency": 100})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(t.toxic.attributes["jitter"], 0);
        assert!(ActiveToxic::new("x".into(), "nope", Stream::Upstream, 1.0, &Map::new()).is_err());
        assert!(
            ActiveToxic::new("x".into(), "latency", Stream::Upstream, 2.0, &Map::new()).is_err()
        );
        let bad = json!({"latency": "soon"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(ActiveToxic::new("x".into(), "latency", Stream::Upstream, 1.0, &bad).is_err());
    }

    #[test]
    fn bandwidth_beyond_what_can_be_paced_is_refused_and_zero_is_no_limit() {
        let rate = |r: u64| {
            let a = json!({ "rate": r })
                .as_object()
                .cloned()
                .unwrap_or_default();
            ActiveToxic::new("b".into(), "bandwidth", Stream::Downstream, 1.0, &a)
        };
        assert!(rate(MAX_RATE).is_ok());
        let e = rate(MAX_RATE + 1).unwrap_err();
        assert!(e.contains("beyond what the proxy can pace"), "{e}");
        assert_eq!(rate(0).unwrap().effect, Effect::Bandwidth { rate: 0 });
    }
}
