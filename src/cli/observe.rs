//! The flags of `rattle run` that send the run's figures and fault windows to the dashboards
//! (`--metrics-addr`, `--pushgateway`, `--grafana-*`), mapped onto [`crate::observe::Config`].
//! Flags rather than experiment keys: where a run reports to is the environment's business (a
//! laptop, CI, a game day in production), not the experiment's, and one file serves them all.

use std::net::SocketAddr;

use crate::observe::{Config, DEFAULT_GRAFANA_TOKEN_ENV};

/// Outputs to dashboards, for `rattle run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    /// Serve the run's figures at http://ADDR/metrics (Prometheus text format) while the run
    /// lasts: rattle_requests_total{outcome}, rattle_request_duration_seconds (histogram),
    /// rattle_active_faults, ... Use 127.0.0.1:PORT (the default host when only a port is
    /// given: `:9464`); a non-loopback address exposes it to the network.
    #[arg(long, env = "RATTLE_METRICS_ADDR", value_name = "ADDR", value_parser = crate::observe::parse_addr,
          help_heading = "Outputs")]
    pub metrics_addr: Option<SocketAddr>,
    /// Push the same figures to this Prometheus Pushgateway at each window's close and at the
    /// end (job="rattle", grouped by experiment and run_id; the last push adds
    /// rattle_run_verdict). Failures are warnings, never a change of verdict.
    #[arg(
        long,
        env = "RATTLE_PUSHGATEWAY_URL",
        value_name = "URL",
        help_heading = "Outputs"
    )]
    pub pushgateway: Option<String>,
    /// Annotate each fault's window in this Grafana (POST /api/annotations at injection, end
    /// time at revert, the verdict as a tag at the end; tags: rattle, experiment:<name>,
    /// fault:<name>, kind:<kind>, verdict:<verdict>). Needs a service-account token in the
    /// variable named by --grafana-token-env.
    #[arg(
        long,
        env = "RATTLE_GRAFANA_URL",
        value_name = "URL",
        help_heading = "Outputs"
    )]
    pub grafana_url: Option<String>,
    /// Environment variable holding Grafana's token (sent as a bearer token, never printed).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_GRAFANA_TOKEN_ENV,
          help_heading = "Outputs")]
    pub grafana_token_env: String,
    /// Put the annotations on this dashboard only (its UID) [default: organisation-wide
    /// annotations, shown by dashboards that query the tag `rattle`].
    #[arg(long, value_name = "UID", help_heading = "Outputs")]
    pub grafana_dashboard: Option<String>,
    /// Do not watch the cluster's Events and pods during a run that touches Kubernetes (the
    /// report's cluster evidence).
    #[arg(long, help_heading = "Outputs")]
    pub no_cluster_events: bool,
}

impl From<ObserveArgs> for Config {
    fn from(a: ObserveArgs) -> Self {
        Config {
            metrics_addr: a.metrics_addr,
            pushgateway: a.pushgateway.filter(|u| !u.trim().is_empty()),
            grafana_url: a.grafana_url.filter(|u| !u.trim().is_empty()),
            grafana_token_env: a.grafana_token_env,
            grafana_dashboard: a.grafana_dashboard,
            cluster_events: !a.no_cluster_events,
        }
    }
}
