//! Live progress: on a terminal one updating line (phase, elapsed, rate, errors, p99) with the
//! run's events printed above it; otherwise plain lines, one every few seconds, so CI logs stay
//! readable. Reads only the recording's last complete window and its send-lag summary: never
//! slows the load. When rattle falls behind its own schedule the line says so at once, since
//! from then on its figures measure rattle, not the service.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Phase;
use crate::metrics::{Outcome, Recording, RunClock};

/// How progress is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// An updating line on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines.
    Plain,
    /// Nothing but errors.
    Quiet,
}

/// Where progress and event lines go (stderr).
#[derive(Clone)]
pub struct Printer {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Printer {
    /// A printer for `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && tty).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Self {
            bar,
            quiet: mode == ProgressMode::Quiet,
        }
    }

    /// Prints a line (above the progress line on a terminal).
    pub fn log(&self, line: &str) {
        if self.quiet {
            return;
        }
        // Event lines carry names, reasons and target descriptions: never raw to a terminal.
        let line = crate::redact::redact_secrets(line.trim_end());
        let line = crate::text::terminal_lines(&line);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => crate::errln!("{line}"),
        }
    }

    fn status(&self, line: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(crate::text::terminal(&line).into_owned());
                bar.tick();
            }
            None if !self.quiet => crate::errln!("{line}"),
            None => {}
        }
    }

    fn is_live(&self) -> bool {
        self.bar.is_some()
    }

    /// Removes the progress line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The status line for the last complete window.
fn status_line(recording: &Recording, clock: RunClock, phase: Phase) -> String {
    let now = clock.now_us();
    let window_us = recording.window_us();
    let elapsed = now as f64 / 1e6;
    let last_complete = (now / window_us).checked_sub(1).map(|i| i * window_us);
    let w = last_complete.and_then(|t| recording.window_at(t));
    let totals = recording.totals();
    let lag = recording.send_lag();
    let last_lag = w.as_ref().and_then(|w| w.send_lag.p99_us);
    let (rate, err_pct, p99) = match w {
        Some(w) => {
            let rate = w.counts.total() as f64 / (window_us as f64 / 1e6);
            let err = if w.counts.total() > 0 {
                w.counts.failed() as f64 * 100.0 / w.counts.total() as f64
            } else {
                0.0
            };
            // The successful requests' p99: what users who were served waited for.
            let p99 = match w.ok_latency.p99_us {
                None => "–".to_string(),
                Some(v) => format!("{:.1}ms", v as f64 / 1000.0),
            };
            (rate, err, p99)
        }
        None => (0.0, 0.0, "–".into()),
    };
    let lag_text = match last_lag {
        Some(v) if v > crate::metrics::LAG_LATE_US => {
            format!("  send lag p99 {:.1}ms", v as f64 / 1000.0)
        }
        _ => String::new(),
    };
    let behind = if lag.behind.now {
        "  BEHIND: rattle cannot keep its schedule; figures measure rattle, not the service"
    } else if lag.behind.since_us.is_some() {
        "  (fell behind earlier: run inconclusive)"
    } else {
        ""
    };
    format!(
        "{:<9} {:>6.1}s  rate {:>7.1}/s  errors {:>5.1}% (total {}{})  p99 {}{lag_text}{behind}",
        phase.as_str(),
        elapsed,
        rate,
        err_pct,
        totals.failed(),
        match totals.get(Outcome::Missed) {
            0 => String::new(),
            m => format!(", {m} missed"),
        },
        p99
    )
}

/// Updates the progress line until `stop` is cancelled.
pub fn spawn(
    printer: Printer,
    recording: Recording,
    clock: RunClock,
    phase: watch::Receiver<Phase>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = if printer.is_live() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let p = *phase.borrow();
            printer.status(status_line(&recording, clock, p));
        }
    })
}
