//! report.json: the [`Report`] itself, pretty-printed, with a final newline. The canonical
//! record of a run; the other formats render from it.

use super::{Renderer, Report, ReportError};

/// report.json.
#[derive(Debug, Clone, Copy)]
pub struct Json;

impl Renderer for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn file(&self) -> &'static str {
        "report.json"
    }
    fn label(&self) -> &'static str {
        "report"
    }
    fn help(&self) -> &'static str {
        "report.json, re-serialized (with the score filled in for older reports)"
    }
    fn render(&self, report: &Report) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(report)? + "\n")
    }
}
