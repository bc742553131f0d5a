//! windows.csv: the load's windows, one line each (throwaway: proves the format recipe).

use std::fmt::Write as _;

use super::{Renderer, Report, ReportError};

/// windows.csv.
#[derive(Debug, Clone, Copy)]
pub struct Csv;

impl Renderer for Csv {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn file(&self) -> &'static str {
        "windows.csv"
    }
    fn label(&self) -> &'static str {
        "csv"
    }
    fn help(&self) -> &'static str {
        "windows.csv: the load's windows, one line each"
    }
    fn render(&self, r: &Report) -> Result<String, ReportError> {
        let mut s = String::from("t_ms,sent,ok,failed,missed,p50_ms,p99_ms\n");
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        for w in &r.windows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{}",
                w.t_ms,
                w.sent,
                w.ok,
                w.failed,
                w.missed,
                ms(w.p50_ms),
                ms(w.p99_ms)
            );
        }
        Ok(s)
    }
}
