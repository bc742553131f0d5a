//! The `prometheus` steady-state probe: a PromQL instant query at the probe's interval whose one
//! value must meet an expectation (`expect: "< 0.01"`), e.g. the service's error ratio as its
//! SLO dashboards compute it.
//!
//! Owns its spec as written (`prometheus: { server, query, expect }`) and the check; the HTTP
//! API is `crate::prometheus`. A result that is not one finite number (no series, several, NaN)
//! is a failure with a message, never a pass; so is a server that does not answer within its
//! timeout, so a run never hangs on its monitoring. Before the run, [`Probe::preflight`] sends
//! the query once: a server that cannot be reached, or a query it rejects, is an error (exit 2)
//! before any fault, with Prometheus's own message.
//!
//! It decides recovery when the experiment has no load (a game day against production
//! traffic): its results time a fault's impact and recovery with the rules of the load
//! analysis. The resolution is the probe's interval, which is its query step: the value seen at
//! a check reflects the latest scrape, so a recovery is timed at most one scrape interval plus
//! one interval late.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Probe, ProbeEnv, ProbeRun};
use crate::experiment::prometheus::{Expectation, PromServer, check_query};
use crate::fault::BoxFuture;
use crate::prometheus::{Client, single_value};

/// A Prometheus probe: a PromQL expression whose value must meet `expect` at every check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProbe {
    /// The server.
    pub server: PromServer,
    /// PromQL giving one series, e.g. `sum(rate(http_errors_total[1m])) /
    /// sum(rate(http_requests_total[1m]))`.
    pub query: String,
    /// What its value must be, e.g. `"< 0.01"`.
    pub expect: Expectation,
}

impl PrometheusProbe {
    async fn check_with(&self, client: &Client) -> Result<(), String> {
        let samples = client
            .instant(&self.query)
            .await
            .map_err(|e| e.to_string())?;
        let v = single_value(&samples)?;
        if self.expect.holds(v) {
            Ok(())
        } else {
            Err(format!("{} = {v}, expected {}", self.query, self.expect))
        }
    }
}

impl Probe for PrometheusProbe {
    fn describe(&self, interval: Duration) -> String {
        format!(
            "PromQL {} {} on {} every {}ms",
            self.query,
            self.expect,
            self.server.shown_url(),
            interval.as_millis()
        )
    }

    fn validate(&self) -> Result<(), String> {
        self.server.validate().map_err(|m| format!("server: {m}"))?;
        check_query(&self.query)
    }

    fn decides_recovery(&self) -> bool {
        true
    }

    fn preflight(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(preflight_query(&self.server, &self.query))
    }

    fn check<'a>(&'a self, _env: &'a ProbeEnv) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let client = self.server.connect().map_err(|e| e.to_string())?;
            self.check_with(&client).await
        })
    }

    /// The default loop, with one client (and its connection pool) for the whole run.
    fn run<'a>(&'a self, ctx: ProbeRun<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let client = self.server.connect().map_err(|e| e.to_string());
            let mut tick = tokio::time::interval(ctx.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t_us = ctx.clock.now_us();
                let outcome = match &client {
                    Err(e) => Err(e.clone()),
                    Ok(c) => tokio::select! {
                        _ = ctx.stop.cancelled() => return,
                        r = self.check_with(c) => r,
                    },
                };
                ctx.results.push(t_us, outcome.is_ok(), outcome.err());
            }
        })
    }
}

/// Sends `query` once to `server`: reachable, credentials present, and the query accepted and
/// giving a number-shaped result (a vector or a scalar). Its value is not judged: the
/// baseline does that.
pub async fn preflight_query(server: &PromServer, query: &str) -> Result<(), String> {
    let client = server.connect().map_err(|e| e.to_string())?;
    client
        .instant(query)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
