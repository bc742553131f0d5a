//! report.html: one self-contained page (inline CSS and SVG, no script, no network) that shows
//! what happened during a run: the verdict and score, throughput and errors over time, latency
//! p50/p99 over time (fault windows shaded, injections and recoveries marked), the gates and
//! hypothesis checks, a table per fault, latency by phase, the resolved plan and the timeline.
//! Readable on a laptop screen and on paper (print CSS).
//!
//! The layout is a minijinja template compiled into the binary (`templates/report.html.j2`),
//! auto-escaped as HTML; the charts are SVG strings from [`super::chart`] passed in as safe.

use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::chart::{self, Band, Marker, Series};
use super::{CheckStatus, Renderer, Report, ReportError, Verdict, checks, fmt_ms, fmt_pct};

const TEMPLATE: &str = include_str!("templates/report.html.j2");

/// report.html.
#[derive(Debug, Clone, Copy)]
pub struct Html;

impl Renderer for Html {
    fn name(&self) -> &'static str {
        "html"
    }
    fn file(&self) -> &'static str {
        "report.html"
    }
    fn label(&self) -> &'static str {
        "html"
    }
    fn help(&self) -> &'static str {
        "report.html: one self-contained page with charts"
    }
    fn render(&self, report: &Report) -> Result<String, ReportError> {
        html(report)
    }
}

#[derive(Serialize)]
struct Row {
    cells: Vec<String>,
    class: &'static str,
}

#[derive(Serialize)]
struct FaultView {
    name: String,
    kind: String,
    rows: Vec<(String, String)>,
    error: Option<String>,
    /// The measured effect differs from the one asked (`effect.shortfall`).
    warning: Option<String>,
    /// The cluster's events in this fault's window: [t, object, reason, message].
    cluster: Vec<[String; 4]>,
}

/// The cluster events under fault `fault` (`None`: outside every window), as table rows.
fn cluster_rows(r: &Report, fault: Option<&str>) -> Vec<[String; 4]> {
    r.cluster_events
        .iter()
        .filter(|e| e.fault.as_deref() == fault)
        .map(|e| {
            [
                secs(e.t_ms),
                format!("{} {}", e.namespace, e.object),
                format!("{} ({})", e.reason, e.severity),
                e.message.clone(),
            ]
        })
        .collect()
}

fn secs(ms: f64) -> String {
    format!("{:.3} s", ms / 1000.0)
}

/// Plain words: headless and printed pages may lack an emoji font; colour carries the rest.
fn status_text(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "pass",
        CheckStatus::Fail => "FAIL",
        CheckStatus::Skipped => "skipped",
    }
}

fn status_class(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "pass",
        CheckStatus::Fail => "fail",
        CheckStatus::Skipped => "skipped",
    }
}

/// The window length in seconds, from the spacing of the windows (1 s if unknown).
fn window_secs(r: &Report) -> f64 {
    r.windows
        .windows(2)
        .map(|w| w[1].t_ms.saturating_sub(w[0].t_ms))
        .filter(|d| *d > 0)
        .min()
        .map_or(1.0, |d| d as f64 / 1000.0)
}

fn charts(r: &Report) -> (String, String) {
    let win = window_secs(r);
    let x_max = (r.duration_ms as f64 / 1000.0).max(
        r.windows
            .last()
            .map_or(0.0, |w| w.t_ms as f64 / 1000.0 + win),
    );
    let mid = |t_ms: u64| t_ms as f64 / 1000.0 + win / 2.0;
    let mut bands = Vec::new();
    let mut markers = Vec::new();
    for f in &r.faults {
        let Some(inj) = f.injected_at_ms else {
            continue;
        };
        let recovered = f.recovery.as_ref().and_then(|rec| rec.recovered_at_ms);
        let end = f
            .reverted_at_ms
            .unwrap_or(inj)
            .max(recovered.unwrap_or(inj));
        let end = if recovered.is_none() && f.recovery.is_some() {
            r.duration_ms as f64
        } else {
            end
        };
        bands.push(Band {
            from: inj / 1000.0,
            to: end / 1000.0,
            label: format!("{} ({})", f.name, f.kind),
        });
        markers.push(Marker {
            at: inj / 1000.0,
            label: format!("▼ {}", f.name),
            kind: "inject",
        });
        if let Some(rec) = recovered {
            markers.push(Marker {
                at: rec / 1000.0,
                label: format!("✓ {} recovered", f.name),
                kind: "recover",
            });
        }
    }
    // What the cluster did: thin markers whose text is their tooltip (a pod restart storm
    // would otherwise cover the chart in labels).
    for e in &r.cluster_events {
        markers.push(Marker {
            at: e.t_ms / 1000.0,
            label: e.summary(),
            kind: "cluster",
        });
    }
    // The last window may be cut short by the end of load: divide by the time it covered.
    let end_s = r.duration_ms as f64 / 1000.0;
    let covered = |t_ms: u64| {
        let start = t_ms as f64 / 1000.0;
        if start + win > end_s && end_s > start {
            end_s - start
        } else {
            win
        }
    };
    // A last window that covered less than half a window (the run ended just after it began)
    // would plot a handful of requests as a huge rate: leave it out of the rate chart; its
    // requests are still in every table and total.
    let full_enough = |w: &&crate::report::WindowReport| covered(w.t_ms) >= win / 2.0;
    let throughput = chart::render(
        "throughput",
        "Throughput and errors over time",
        "requests/s",
        x_max,
        &[
            Series {
                label: "ok/s",
                color: "#2b8a3e",
                points: r
                    .windows
                    .iter()
                    .filter(full_enough)
                    .map(|w| (mid(w.t_ms), Some(w.ok as f64 / covered(w.t_ms))))
                    .collect(),
                dashed: false,
            },
            Series {
                label: "errors/s",
                color: "#c92a2a",
                points: r
                    .windows
                    .iter()
                    .filter(full_enough)
                    .map(|w| (mid(w.t_ms), Some(w.failed as f64 / covered(w.t_ms))))
                    .collect(),
                dashed: false,
            },
        ],
        &bands,
        &markers,
    );
    // Successful requests' latency: what users who were served waited for. Failures are
    // counted in the throughput chart; their latency is drawn apart (dashed), so an outage
    // whose requests fail fast never reads as the service getting faster.
    let ok = |w: &crate::report::WindowReport| w.success_latency();
    let latency = chart::render(
        "latency",
        "Latency of successful requests (p50, p99) over time; failed requests' p50 dashed",
        "ms",
        x_max,
        &[
            Series {
                label: "p50",
                color: "#1c7ed6",
                points: r
                    .windows
                    .iter()
                    .map(|w| (mid(w.t_ms), ok(w).p50_ms))
                    .collect(),
                dashed: false,
            },
            Series {
                label: "p99",
                color: "#e8590c",
                points: r
                    .windows
                    .iter()
                    .map(|w| (mid(w.t_ms), ok(w).p99_ms))
                    .collect(),
                dashed: false,
            },
            Series {
                label: "failed p50",
                color: "#c92a2a",
                points: r
                    .windows
                    .iter()
                    .map(|w| (mid(w.t_ms), w.failed_latency.and_then(|l| l.p50_ms)))
                    .collect(),
                dashed: true,
            },
        ],
        &bands,
        &markers,
    );
    (throughput, latency)
}

fn fault_views(r: &Report) -> Vec<FaultView> {
    r.faults
        .iter()
        .map(|f| {
            let mut rows = vec![
                (
                    "targets".to_string(),
                    if f.targets.is_empty() {
                        "–".to_string()
                    } else {
                        f.targets
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    },
                ),
                (
                    "injected at".into(),
                    f.injected_at_ms.map_or("not fired".into(), secs),
                ),
                (
                    "reverted at".into(),
                    f.reverted_at_ms.map_or("–".into(), secs),
                ),
            ];
            if let Some(rec) = &f.recovery {
                rows.push((
                    "time to impact".into(),
                    rec.time_to_impact_ms
                        .map_or("never felt".into(), |v| fmt_ms(Some(v))),
                ));
                rows.push((
                    "time to recover".into(),
                    rec.time_to_recover_ms.map_or_else(
                        || format!("not recovered ({})", rec.reason.clone().unwrap_or_default()),
                        |v| fmt_ms(Some(v)),
                    ),
                ));
                rows.push((
                    "recovered at".into(),
                    rec.recovered_at_ms.map_or("–".into(), secs),
                ));
                rows.push((
                    "failed requests".into(),
                    format!("{} of {}", rec.failed_requests, rec.requests),
                ));
                rows.push(("availability".into(), fmt_pct(rec.availability)));
            }
            if let Some(e) = &f.effect {
                rows.push(("measured effect".into(), e.words()));
            }
            FaultView {
                name: f.name.clone(),
                kind: f.kind.clone(),
                rows,
                error: f.error.clone(),
                warning: f.effect.as_ref().and_then(|e| e.shortfall.clone()),
                cluster: cluster_rows(r, Some(&f.name)),
            }
        })
        .collect()
}

fn check_rows(r: &Report, group: &str) -> Vec<Row> {
    checks(r)
        .into_iter()
        .filter(|c| c.group == group)
        .map(|c| Row {
            cells: vec![c.name.clone(), status_text(c.status).into(), c.message],
            class: status_class(c.status),
        })
        .collect()
}

fn gate_rows(r: &Report) -> Vec<Row> {
    r.gates
        .iter()
        .map(|g| Row {
            cells: vec![
                g.name.clone(),
                g.threshold.clone(),
                g.measured_text.clone(),
                status_text(g.status).into(),
            ],
            class: status_class(g.status),
        })
        .collect()
}

fn phase_rows(r: &Report) -> Vec<Row> {
    let Some(p) = &r.phases else {
        return Vec::new();
    };
    [
        ("baseline", &p.baseline),
        ("fault", &p.fault),
        ("recovery", &p.recovery),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.as_ref().map(|s| (n, s)))
    .map(|(n, s)| {
        let l = s.success_latency();
        Row {
            cells: vec![
                n.to_string(),
                format!("{:.1}–{:.1} s", s.from_ms / 1000.0, s.to_ms / 1000.0),
                s.requests.to_string(),
                fmt_pct(s.error_rate),
                fmt_ms(l.p50_ms),
                fmt_ms(l.p90_ms),
                fmt_ms(l.p99_ms),
                fmt_ms(l.max_ms),
            ],
            class: "",
        }
    })
    .collect()
}

/// The load's mix, a row per request (see the markdown's "Requests").
fn request_rows(r: &Report) -> Vec<Row> {
    r.requests
        .iter()
        .map(|q| {
            let t = &q.totals;
            let l = t.success_latency();
            let fault = q.phases.as_ref().and_then(|p| p.fault.as_ref());
            Row {
                cells: vec![
                    q.name.clone(),
                    format!("{} ({})", fmt_pct(q.share), fmt_pct(Some(q.share_asked))),
                    t.requests.to_string(),
                    t.failed.to_string(),
                    t.missed.to_string(),
                    fmt_pct(t.availability),
                    fmt_ms(l.p50_ms),
                    fmt_ms(l.p99_ms),
                    fmt_ms(fault.and_then(|f| f.success_latency().p99_ms)),
                    fmt_pct(fault.and_then(|f| f.error_rate)),
                    q.by_fault(),
                ],
                class: "",
            }
        })
        .collect()
}

/// A JSON object without its null members (unset thresholds), for display.
fn without_nulls(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    v
}

/// minijinja's HTML escaping, with the control characters of user-derived strings shown
/// escaped ([`crate::text::terminal_lines`]): a name cannot put an ESC into a file someone may
/// `cat`. Values marked safe (rendered JSON) pass as they are; ordinary text is unchanged.
pub fn inert_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if !value.is_safe()
        && let Some(s) = value.as_str()
        && let std::borrow::Cow::Owned(clean) = crate::text::terminal_lines(s)
    {
        return minijinja::escape_formatter(out, state, &Value::from(clean));
    }
    minijinja::escape_formatter(out, state, value)
}

/// Renders report.html.
pub fn html(r: &Report) -> Result<String, ReportError> {
    let mut env = Environment::new();
    env.set_formatter(inert_formatter);
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| ReportError::Html(e.to_string()))?;
    let tmpl = env
        .get_template("report.html")
        .map_err(|e| ReportError::Html(e.to_string()))?;
    let (throughput, latency) = charts(r);
    let verdict = match r.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Aborted => "aborted",
        Verdict::Error => "error",
        Verdict::Inconclusive => "inconclusive",
    };
    let t = &r.totals;
    let tl = t.success_latency();
    let totals = vec![
        t.requests.to_string(),
        t.ok.to_string(),
        t.failed.to_string(),
        t.missed.to_string(),
        fmt_pct(t.availability),
        t.rate_per_sec.map_or("–".into(), |v| format!("{v:.1}/s")),
        fmt_ms(tl.p50_ms),
        fmt_ms(tl.p90_ms),
        fmt_ms(tl.p99_ms),
        fmt_ms(tl.max_ms),
    ];
    let errors = t
        .errors
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let plan = r.plan.as_ref().map(|p| {
        let faults: Vec<Vec<String>> = p
            .faults
            .iter()
            .map(|f| {
                let get = |k: &str| f.get(k).cloned().unwrap_or(serde_json::Value::Null);
                let ms = |k: &str| {
                    get(k)
                        .as_f64()
                        .map_or("–".into(), |v| format!("{:.3} s", v / 1000.0))
                };
                vec![
                    get("name").as_str().unwrap_or("").to_string(),
                    get("kind").as_str().unwrap_or("").to_string(),
                    ms("at_ms"),
                    ms("duration_ms"),
                    get("spec").to_string(),
                ]
            })
            .collect();
        context! {
            seed => Serde(&p.seed.to_string()),
            duration => Serde(&secs(p.duration_ms as f64)),
            warmup => Serde(&secs(p.warmup_ms as f64)),
            hold => Serde(&secs(p.hold_ms as f64)),
            slo => Serde(&without_nulls(serde_json::to_value(&p.slo).unwrap_or_default()).to_string()),
            load => Serde(&p.load.as_ref().map(|l| serde_json::to_string_pretty(l).unwrap_or_default())),
            faults => Serde(&faults),
        }
    });
    let timeline: Vec<Vec<String>> = r
        .timeline
        .iter()
        .map(|e| vec![secs(e.t_ms), e.event.as_str().to_string(), e.detail.clone()])
        .collect();
    let ctx = context! {
        name => Serde(&r.experiment.name),
        description => Serde(&r.experiment.description),
        file => Serde(&r.experiment.file),
        verdict => Serde(&verdict),
        verdict_upper => Serde(&verdict.to_uppercase()),
        reason => Serde(&r.reason),
        exit_code => Serde(&r.exit_code),
        started_at => Serde(&r.started_at),
        duration => Serde(&secs(r.duration_ms as f64)),
        seed => Serde(&r.seed.to_string()),
        version => Serde(&r.rattle_version),
        score => Serde(&r.score),
        throughput_svg => Value::from_safe_string(throughput),
        latency_svg => Value::from_safe_string(latency),
        gates => Value::from(Serde(gate_rows(r))),
        hypotheses => Value::from(Serde(check_rows(r, "hypothesis"))),
        faults => Value::from(Serde(fault_views(r))),
        totals => Serde(&totals),
        errors => Serde(&errors),
        phases => Value::from(Serde(phase_rows(r))),
        requests => Value::from(Serde(request_rows(r))),
        plan => plan.unwrap_or(Value::UNDEFINED),
        timeline => Serde(&timeline),
        cluster_outside => Serde(&cluster_rows(r, None)),
        generator => Serde(&super::lag::lines(r)),
        late_windows => Serde(&super::lag::window_rows(r)),
    };
    tmpl.render(ctx)
        .map_err(|e| ReportError::Html(e.to_string()))
}
