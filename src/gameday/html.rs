//! index.html of a game day: one self-contained page (no script, no external resource) with
//! the verdict and a row per experiment linking to its own report.

use minijinja::value::Serde;
use minijinja::{Environment, context};

use super::index::{ExperimentStatus, GameDayReport};
use crate::report::{Renderer, html::Html, json::Json, markdown::Markdown};

const TEMPLATE: &str = include_str!("templates/index.html.j2");

/// The files of an experiment's report directory each row links to, with the link's text: the
/// page, the summary and the complete record. Their names come from the report formats.
const LINKS: [(&dyn Renderer, &str); 3] =
    [(&Html, "report"), (&Markdown, "summary"), (&Json, "json")];

/// Renders index.html; a template error (a bug) yields a plain page saying so.
pub fn render(r: &GameDayReport) -> String {
    let rows: Vec<serde_json::Value> = r
        .experiments
        .iter()
        .map(|e| {
            let (class, verdict) = match e.status {
                ExperimentStatus::Skipped => ("skipped".to_string(), "SKIPPED".to_string()),
                _ => {
                    let v = e.verdict.map_or("error", |v| v.as_str());
                    (v.to_string(), v.to_uppercase())
                }
            };
            serde_json::json!({
                "class": class,
                "verdict": verdict,
                "name": e.name,
                "file": e.file,
                "exit": e.exit_code.map_or("–".into(), |c| c.to_string()),
                "score": e.score.map_or("–".into(), |c| c.to_string()),
                "failed": e.failed_requests.map_or("–".into(), |c| c.to_string()),
                "recovery": e.max_recovery_ms.map_or("–".into(), |v| format!("{v:.1} ms")),
                "dir": e.report_dir,
                "reason": e.reason,
            })
        })
        .collect();
    let links: Vec<serde_json::Value> = LINKS
        .iter()
        .map(|(f, text)| serde_json::json!({ "file": f.file(), "text": text }))
        .collect();
    let mut env = Environment::new();
    env.set_formatter(crate::report::html::inert_formatter);
    let rendered = env.add_template("index.html", TEMPLATE).and_then(|()| {
        env.get_template("index.html")?.render(context! {
            r => Serde(r),
            rows => Serde(&rows),
            links => Serde(&links),
            verdict_upper => r.verdict.as_str().to_uppercase(),
        })
    });
    rendered.unwrap_or_else(|e| {
        let e = e.to_string().replace('&', "&amp;").replace('<', "&lt;");
        format!("<!DOCTYPE html><title>rattle game day</title><p>cannot render: {e}</p>")
    })
}
