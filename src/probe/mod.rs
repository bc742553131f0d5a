//! Steady-state probes: HTTP checks run at an interval for the whole run. Each result is kept
//! with its time so analysis can judge the baseline and the end of the run; a probe never
//! fails the run by itself, it only feeds the hypothesis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::RunClock;

pub mod kubernetes;

/// One probe to run.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Name in reports.
    pub name: String,
    /// URL to GET.
    pub url: http::Uri,
    /// Expected status.
    pub expect_status: u16,
    /// Interval between checks.
    pub interval: Duration,
    /// Timeout of one check.
    pub timeout: Duration,
    /// A Kubernetes probe instead of HTTP (`url` is then unused).
    pub kubernetes: Option<kubernetes::KubernetesProbe>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Index of the probe in the experiment.
    pub probe: usize,
    /// When the check started, µs since run start.
    pub t_us: u64,
    /// Did it pass?
    pub ok: bool,
    /// What went wrong, if it did not pass.
    pub error: Option<String>,
}

/// The probes of a run, running.
pub struct Probes {
    results: Arc<Mutex<Vec<ProbeResult>>>,
    tasks: JoinSet<()>,
}

impl Probes {
    /// Starts every probe now; they run until `stop` is cancelled.
    pub fn start(
        probes: Vec<ProbeConfig>,
        kube_context: Option<String>,
        clock: RunClock,
        stop: CancellationToken,
    ) -> Self {
        let results = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        for (index, cfg) in probes.into_iter().enumerate() {
            let results = results.clone();
            let stop = stop.clone();
            let client = client.clone();
            if let Some(k) = cfg.kubernetes.clone() {
                tasks.spawn(kubernetes::run(
                    index,
                    k,
                    kube_context.clone(),
                    cfg.interval,
                    clock,
                    results,
                    stop,
                ));
                continue;
            }
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(cfg.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let t_us = clock.now_us();
                    let error = tokio::select! {
                        _ = stop.cancelled() => return,
                        e = check(&client, &cfg) => e,
                    };
                    let result = ProbeResult {
                        probe: index,
                        t_us,
                        ok: error.is_none(),
                        error,
                    };
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(result);
                }
            });
        }
        Self { results, tasks }
    }

    /// Results so far.
    pub fn results(&self) -> Vec<ProbeResult> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the probe tasks to end (after `stop` was cancelled) and returns all results.
    pub async fn finish(mut self) -> Vec<ProbeResult> {
        while self.tasks.join_next().await.is_some() {}
        self.results()
    }
}

async fn check(client: &Client<HttpConnector, Empty<Bytes>>, cfg: &ProbeConfig) -> Option<String> {
    let req = match http::Request::get(cfg.url.clone()).body(Empty::new()) {
        Ok(r) => r,
        Err(e) => return Some(format!("bad request: {e}")),
    };
    let fut = async {
        let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(cfg.timeout, fut).await {
        Err(_) => Some(format!("timed out after {}ms", cfg.timeout.as_millis())),
        Ok(Err(e)) => Some(e),
        Ok(Ok(status)) if status == cfg.expect_status => None,
        Ok(Ok(status)) => Some(format!("status {status}, expected {}", cfg.expect_status)),
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Summary of probe results over a span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSummary {
    /// Probe name.
    pub name: String,
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// The last failure's message, if any.
    pub last_error: Option<String>,
}

/// Summarizes each probe's results that started in `[from_us, to_us)`.
pub fn summarize(
    names: &[String],
    results: &[ProbeResult],
    from_us: u64,
    to_us: u64,
) -> Vec<ProbeSummary> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut s = ProbeSummary {
                name: name.clone(),
                passed: 0,
                failed: 0,
                last_error: None,
            };
            for r in results
                .iter()
                .filter(|r| r.probe == i && (from_us..to_us).contains(&r.t_us))
            {
                if r.ok {
                    s.passed += 1;
                } else {
                    s.failed += 1;
                    s.last_error = r.error.clone();
                }
            }
            s
        })
        .collect()
}
