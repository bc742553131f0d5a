//! The load generator's own figures in words: send lag over the run and per window, tickets
//! left unsent, and whether rattle kept its schedule. One place, so summary.md, the HTML page
//! and the terminal say the same thing about who set the pace: the service or rattle.

use super::{Report, WindowReport, fmt_ms};

/// At most this many windows are listed one by one (the worst first) in the HTML table.
pub(crate) const MAX_WINDOW_ROWS: usize = 20;

/// Sentences about the generator, in reading order; empty for a report without load (or one
/// written before these figures existed).
pub(crate) fn lines(r: &Report) -> Vec<String> {
    let t = &r.totals;
    let Some(g) = &t.generator else {
        return Vec::new();
    };
    let l = &g.send_lag;
    let mut out = Vec::new();
    if !g.kept_schedule {
        out.push(format!(
            "Rattle fell behind its own schedule from {:.1} s ({}its own send lag stayed over \
             10 ms for up to {:.1} s): the figures measure rattle, not the service.",
            g.behind_since_ms.unwrap_or_default() / 1000.0,
            crate::metrics::behind_cause(g.cpu_saturated, g.runtime_stalled),
            g.longest_late_stretch_ms / 1000.0
        ));
    }
    out.push(format!(
        "Send lag (rattle's actual send minus each request's intended start): p50 {}, p99 {}, \
         max {}; {} of {} requests sent over 10 ms late.",
        fmt_ms(l.p50_ms),
        fmt_ms(l.p99_ms),
        fmt_ms(l.max_ms),
        l.over_10ms,
        l.count
    ));
    let late: Vec<&WindowReport> = late_windows(r);
    if let Some(worst) = late.first() {
        let wl = worst.send_lag.unwrap_or_default();
        out.push(format!(
            "Windows with requests sent over 10 ms late: {} of {} (worst at {:.1} s: p99 {}, \
             max {}).",
            late.len(),
            r.windows.len(),
            worst.t_ms as f64 / 1000.0,
            fmt_ms(wl.p99_ms),
            fmt_ms(wl.max_ms)
        ));
    }
    if t.unsent > 0 {
        out.push(format!(
            "{} request{} due when the load stopped and never sent: the run ended under \
             them (not counted as missed, nor in any window).",
            t.unsent,
            if t.unsent == 1 { " was" } else { "s were" },
        ));
    }
    out
}

/// Windows with at least one request sent over 10 ms late, worst p99 first.
pub(crate) fn late_windows(r: &Report) -> Vec<&WindowReport> {
    let mut late: Vec<&WindowReport> = r
        .windows
        .iter()
        .filter(|w| w.send_lag.is_some_and(|l| l.over_10ms > 0))
        .collect();
    let p99 = |w: &WindowReport| w.send_lag.and_then(|l| l.p99_ms).unwrap_or_default();
    late.sort_by(|a, b| p99(b).total_cmp(&p99(a)).then(a.t_ms.cmp(&b.t_ms)));
    late
}

/// Rows of the HTML table of late windows: start, sent, p50, p99, max, over 10 ms.
pub(crate) fn window_rows(r: &Report) -> Vec<Vec<String>> {
    late_windows(r)
        .into_iter()
        .take(MAX_WINDOW_ROWS)
        .map(|w| {
            let l = w.send_lag.unwrap_or_default();
            vec![
                format!("{:.1} s", w.t_ms as f64 / 1000.0),
                l.count.to_string(),
                fmt_ms(l.p50_ms),
                fmt_ms(l.p99_ms),
                fmt_ms(l.max_ms),
                l.over_10ms.to_string(),
            ]
        })
        .collect()
}
