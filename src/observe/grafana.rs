//! Grafana annotations: one region per fault window. At injection, `POST /api/annotations`
//! (time = the injection, tags `rattle`, `experiment:<name>`, `fault:<name>`, `kind:<kind>`);
//! at revert, `PATCH /api/annotations/<id>` with `timeEnd`; at the end of the run, a `PATCH`
//! adding the tag `verdict:<verdict>` to each. The token (a Grafana service-account token) is
//! sent as `Authorization: Bearer` and read from an environment variable, never from a file or
//! a flag, so it stays out of shell history, process lists and reports.
//!
//! Calls go through one task in order, fed by a channel: the runner's injection never waits on
//! Grafana, and a revert's PATCH always follows its POST (it needs the id the POST returned).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::http::{Client, join};

/// What the annotation task is told.
#[derive(Debug)]
pub enum Note {
    /// Fault `fault` (its index) was injected at `unix_ms`.
    Injected {
        /// Index in the plan.
        fault: usize,
        /// Its name.
        name: String,
        /// Its kind.
        kind: String,
        /// When, ms since the Unix epoch.
        unix_ms: i64,
    },
    /// Fault `fault` was reverted at `unix_ms`.
    Reverted {
        /// Index in the plan.
        fault: usize,
        /// When, ms since the Unix epoch.
        unix_ms: i64,
    },
    /// The run ended with this verdict.
    Verdict(String),
}

/// Where annotations go.
#[derive(Clone)]
pub struct Grafana {
    /// Grafana's base URL.
    pub url: http::Uri,
    /// The bearer token.
    pub token: String,
    /// Put the annotations on this dashboard only (its UID); default: organisation-wide, shown
    /// on every dashboard whose annotation query matches the tags.
    pub dashboard_uid: Option<String>,
}

impl std::fmt::Debug for Grafana {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grafana")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("dashboard_uid", &self.dashboard_uid)
            .finish()
    }
}

struct Posted {
    id: u64,
    tags: Vec<String>,
}

/// Runs the annotation task until the channel closes. `warn` receives each failure (the run
/// goes on; annotations are best effort).
pub async fn run(
    g: Grafana,
    client: Client,
    experiment: String,
    run_id: String,
    mut rx: mpsc::UnboundedReceiver<Note>,
    warn: impl Fn(String),
) {
    let auth = vec![(http::header::AUTHORIZATION, format!("Bearer {}", g.token))];
    let mut posted: BTreeMap<usize, Posted> = BTreeMap::new();
    let Ok(collection) = join(&g.url, "/api/annotations") else {
        return;
    };
    while let Some(note) = rx.recv().await {
        match note {
            Note::Injected {
                fault,
                name,
                kind,
                unix_ms,
            } => {
                let tags = vec![
                    "rattle".to_string(),
                    format!("experiment:{experiment}"),
                    format!("fault:{name}"),
                    format!("kind:{kind}"),
                ];
                let mut body = json!({
                    "time": unix_ms,
                    "tags": tags,
                    "text": format!("rattle: fault {name} ({kind}) of experiment {experiment}, run {run_id}"),
                });
                if let Some(uid) = &g.dashboard_uid {
                    body["dashboardUID"] = json!(uid);
                }
                let answer = client
                    .send(
                        http::Method::POST,
                        &collection,
                        &auth,
                        "application/json",
                        Bytes::from(body.to_string()),
                    )
                    .await;
                match answer.and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| v["id"].as_u64())
                        .ok_or_else(|| "the answer has no annotation id".to_string())
                }) {
                    Ok(id) => {
                        posted.insert(fault, Posted { id, tags });
                    }
                    Err(e) => warn(format!("Grafana: annotating fault {name}: {e}")),
                }
            }
            Note::Reverted { fault, unix_ms } => {
                let Some(p) = posted.get(&fault) else {
                    continue;
                };
                if let Err(e) = patch(&client, &g, &auth, p.id, json!({"timeEnd": unix_ms})).await {
                    warn(format!("Grafana: closing annotation {}: {e}", p.id));
                }
            }
            Note::Verdict(v) => {
                for p in posted.values() {
                    let mut tags = p.tags.clone();
                    tags.push(format!("verdict:{v}"));
                    if let Err(e) = patch(&client, &g, &auth, p.id, json!({"tags": tags})).await {
                        warn(format!(
                            "Grafana: tagging annotation {} with the verdict: {e}",
                            p.id
                        ));
                    }
                }
            }
        }
    }
}

async fn patch(
    client: &Client,
    g: &Grafana,
    auth: &[(http::HeaderName, String)],
    id: u64,
    body: serde_json::Value,
) -> Result<(), String> {
    let uri = join(&g.url, &format!("/api/annotations/{id}"))?;
    client
        .send(
            http::Method::PATCH,
            &uri,
            auth,
            "application/json",
            Bytes::from(body.to_string()),
        )
        .await
        .map(|_| ())
}
