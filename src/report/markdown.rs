//! summary.md: the verdict, the score, the gates, the faults, the load, latency by phase and
//! the steady-state checks, as short tables. Sized for a CI step summary or a pull-request
//! comment: everything a reviewer needs to see why a pipeline failed, nothing more. Every
//! user-derived string (names, reasons, targets, errors, notes) goes through
//! [`crate::text::markdown_cell`] or, inside a code span, [`crate::text::markdown_code`]: a name
//! cannot break a table or inject HTML into the rendered summary.

use std::fmt::Write as _;

use crate::text::{markdown_cell as cell, markdown_code as code};

use super::{CheckStatus, Renderer, Report, ReportError, Verdict, fmt_ms, fmt_pct};

/// summary.md.
#[derive(Debug, Clone, Copy)]
pub struct Markdown;

impl Renderer for Markdown {
    fn name(&self) -> &'static str {
        "markdown"
    }
    fn file(&self) -> &'static str {
        "summary.md"
    }
    fn label(&self) -> &'static str {
        "summary"
    }
    fn help(&self) -> &'static str {
        "summary.md: tables for a CI step summary or a pull-request comment"
    }
    fn render(&self, report: &Report) -> Result<String, ReportError> {
        Ok(markdown(report))
    }
}

/// The word for a status in tables.
pub(crate) fn status_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "✅ pass",
        CheckStatus::Fail => "❌ **fail**",
        CheckStatus::Skipped => "⏭ skipped",
    }
}

/// summary.md: short, tables; fits a CI step summary or a pull-request comment.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let icon = match r.verdict {
        Verdict::Pass => "✅ PASS",
        Verdict::Fail => "❌ FAIL",
        Verdict::Aborted => "⏹ ABORTED",
        Verdict::Error => "⚠️ ERROR",
        Verdict::Inconclusive => "❔ INCONCLUSIVE",
    };
    let _ = writeln!(s, "# rattle: {} — {}\n", cell(&r.experiment.name), icon);
    let _ = writeln!(s, "{}\n", cell(&r.reason));
    let _ = writeln!(
        s,
        "Started {} · ran {:.1} s · seed `{}` · exit code {}\n",
        r.started_at,
        r.duration_ms as f64 / 1000.0,
        r.seed,
        r.exit_code
    );
    if let Some(sc) = &r.score {
        let _ = writeln!(
            s,
            "**Resilience score: {}/100** ({} of {} checks passed)\n",
            sc.value, sc.passed, sc.judged
        );
    }
    if !r.gates.is_empty() {
        let _ = writeln!(s, "## Gates\n");
        let _ = writeln!(s, "| gate | threshold | measured | result |");
        let _ = writeln!(s, "|---|---|---|---|");
        for g in &r.gates {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} |",
                code(&g.name),
                code(&g.threshold),
                cell(&g.measured_text),
                status_word(g.status)
            );
        }
        let _ = writeln!(s);
    }
    if !r.faults.is_empty() {
        let _ = writeln!(s, "## Faults\n");
        let _ = writeln!(
            s,
            "| fault | kind | targets | injected | time to impact | time to recover | failed | availability |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for f in &r.faults {
            let targets = f
                .targets
                .iter()
                .map(|t| cell(&t.id))
                .collect::<Vec<_>>()
                .join(", ");
            let (tti, ttr, failed, avail) = match &f.recovery {
                Some(rec) => (
                    fmt_ms(rec.time_to_impact_ms),
                    rec.time_to_recover_ms
                        .map(|v| format!("{v:.1} ms"))
                        .unwrap_or_else(|| "not recovered".into()),
                    rec.failed_requests.to_string(),
                    fmt_pct(rec.availability),
                ),
                None => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            let injected = f.injected_at_ms.map(|t| format!("{:.3} s", t / 1000.0));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&f.name),
                cell(&f.kind),
                if targets.is_empty() {
                    "–".into()
                } else {
                    targets
                },
                injected.unwrap_or_else(|| "not fired".into()),
                tti,
                ttr,
                failed,
                avail
            );
            if let Some(e) = &f.error {
                let _ = writeln!(s, "\n> **{}**: {}\n", cell(&f.name), cell(e));
            }
        }
        let _ = writeln!(s);
        for f in r.faults.iter() {
            if let Some(e) = &f.effect {
                let _ = writeln!(s, "Measured effect of {}: {}.\n", cell(&f.name), e.words());
                if let Some(w) = &e.shortfall {
                    let _ = writeln!(s, "> **Warning**: {} {}.\n", cell(&f.name), cell(w));
                }
            }
        }
    }
    cluster_events(&mut s, r);
    let t = &r.totals;
    let tl = t.success_latency();
    let _ = writeln!(s, "## Load\n");
    let _ = writeln!(
        s,
        "| requests | ok | failed | missed | availability | rate | p50 | p90 | p99 | max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        t.requests,
        t.ok,
        t.failed,
        t.missed,
        fmt_pct(t.availability),
        t.rate_per_sec
            .map(|v| format!("{v:.1}/s"))
            .unwrap_or_else(|| "–".into()),
        fmt_ms(tl.p50_ms),
        fmt_ms(tl.p90_ms),
        fmt_ms(tl.p99_ms),
        fmt_ms(tl.max_ms)
    );
    if t.ok_latency.is_some() {
        let _ = writeln!(
            s,
            "Latency: successful requests, from their intended start{}.\n",
            t.failed_latency
                .filter(|l| l.count > 0)
                .map(|l| format!(
                    "; the {} failed request{} sent: p50 {}, p99 {}",
                    l.count,
                    if l.count == 1 { "" } else { "s" },
                    fmt_ms(l.p50_ms),
                    fmt_ms(l.p99_ms)
                ))
                .unwrap_or_default()
        );
    }
    for line in super::lag::lines(r) {
        let _ = writeln!(s, "{line}\n");
    }
    if !t.errors.is_empty() {
        let errs = t
            .errors
            .iter()
            .map(|(k, v)| format!("{}: {v}", cell(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "Errors by class: {errs}\n");
    }
    requests(&mut s, r);
    if let Some(p) = &r.phases {
        let _ = writeln!(s, "## Latency by phase\n");
        let _ = writeln!(
            s,
            "| phase | span | requests | error rate | p50 | p90 | p99 | max |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (name, st) in [
            ("baseline", &p.baseline),
            ("fault", &p.fault),
            ("recovery", &p.recovery),
        ] {
            if let Some(st) = st {
                let l = st.success_latency();
                let _ = writeln!(
                    s,
                    "| {name} | {:.1}–{:.1} s | {} | {} | {} | {} | {} | {} |",
                    st.from_ms / 1000.0,
                    st.to_ms / 1000.0,
                    st.requests,
                    fmt_pct(st.error_rate),
                    fmt_ms(l.p50_ms),
                    fmt_ms(l.p90_ms),
                    fmt_ms(l.p99_ms),
                    fmt_ms(l.max_ms)
                );
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Steady state\n");
    let _ = writeln!(s, "| check | span | held | success rate | p99 | notes |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (name, c) in [
        ("before", &r.steady_state.before),
        ("after", &r.steady_state.after),
    ] {
        match c {
            None => {
                let _ = writeln!(s, "| {name} | – | not checked | – | – | |");
            }
            Some(c) => {
                let notes = c.problems();
                let _ = writeln!(
                    s,
                    "| {name} | {:.1}–{:.1} s | {} | {} | {} | {} |",
                    c.from_ms as f64 / 1000.0,
                    c.to_ms as f64 / 1000.0,
                    if c.held { "yes" } else { "**no**" },
                    fmt_pct(c.slo.as_ref().and_then(|s| s.success_rate)),
                    fmt_ms(c.slo.as_ref().and_then(|s| s.p99_ms)),
                    cell(&notes.join("; "))
                );
            }
        }
    }
    s
}

/// The load's mix, a row per request: its share (asked), counts and latency over the run and
/// during the faults. Absent without a mix.
fn requests(s: &mut String, r: &Report) {
    if r.requests.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Requests\n");
    let _ = writeln!(
        s,
        "| request | share (asked) | requests | failed | missed | availability | p50 | p99 | p99 in faults | error rate in faults | by fault |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for q in &r.requests {
        let t = &q.totals;
        let l = t.success_latency();
        let fault = q.phases.as_ref().and_then(|p| p.fault.as_ref());
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&q.name),
            fmt_pct(q.share),
            fmt_pct(Some(q.share_asked)),
            t.requests,
            t.failed,
            t.missed,
            fmt_pct(t.availability),
            fmt_ms(l.p50_ms),
            fmt_ms(l.p99_ms),
            fmt_ms(fault.and_then(|f| f.success_latency().p99_ms)),
            fmt_pct(fault.and_then(|f| f.error_rate)),
            cell(&q.by_fault()),
        );
    }
    let _ = writeln!(s);
}

/// Most cluster events listed in summary.md (report.json and report.html have them all).
const CLUSTER_ROWS: usize = 30;

/// What the cluster did, by fault: a table, absent when the run saw nothing.
fn cluster_events(s: &mut String, r: &Report) {
    if r.cluster_events.is_empty() {
        return;
    }
    let _ = writeln!(s, "## What the cluster did\n");
    let _ = writeln!(s, "| t | during | object | reason | message |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for e in r.cluster_events.iter().take(CLUSTER_ROWS) {
        let _ = writeln!(
            s,
            "| {:.3} s | {} | {} {} | {} | {} |",
            e.t_ms / 1000.0,
            e.fault.as_deref().map_or("–".into(), cell),
            cell(&e.namespace),
            cell(&e.object),
            cell(&e.reason),
            cell(&e.message)
        );
    }
    if r.cluster_events.len() > CLUSTER_ROWS {
        let _ = writeln!(
            s,
            "\n{} more in report.json and report.html.",
            r.cluster_events.len() - CLUSTER_ROWS
        );
    }
    let _ = writeln!(s);
}
