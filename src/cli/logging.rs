//! Diagnostics on stderr through `tracing`: what rattle decided and why (preflight, each
//! injection and revert, probe failures, reports written), apart from the results on stdout,
//! so `rattle ... > out.txt` or `--format json | jq` never mixes the two.
//!
//! Lower layers only emit events (`tracing::info!` and friends) and never install anything;
//! the subscriber is installed here, once, by `main` from the global flags. The filter is
//! `RUST_LOG` when set (full `tracing-subscriber` directive syntax), else the level of
//! `-q`/`-v`/`-vv`/`-vvv` for rattle's own events (warnings otherwise); explicit `-v` or `-q`
//! win over `RUST_LOG`. A `RUST_LOG` that does not parse is reported and ignored rather than
//! refused: `rattle recover` must work in an emergency whatever the environment says.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event (for in-cluster runs and log collectors).
    Json,
}

/// Errors of installing the subscriber.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// Another subscriber was installed first (only in tests that call [`init`] twice).
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// The filter directive of the verbosity flags: `-q` errors only; none rattle's warnings (and
/// other crates' errors only: their warnings are for those who ask, with `-v`); `-v` rattle's
/// info, `-vv` rattle's debug (and other crates' info), `-vvv` rattle's trace (others' debug).
pub fn directive(verbose: u8, quiet: bool) -> &'static str {
    match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "error,rattle=warn",
        (false, 1) => "warn,rattle=info",
        (false, 2) => "info,rattle=debug",
        (false, _) => "debug,rattle=trace",
    }
}

/// The filter: see the module comment for the precedence. Returns the filter and, when
/// `RUST_LOG` was set but unusable, why (to be reported once the subscriber is up).
pub fn filter(verbose: u8, quiet: bool, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let flags = EnvFilter::new(directive(verbose, quiet));
    if verbose > 0 || quiet {
        return (flags, None);
    }
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (flags, None),
        Some(spec) => match EnvFilter::try_new(spec) {
            Ok(f) => (f, None),
            Err(e) => (
                flags,
                Some(format!(
                    "RUST_LOG={:?} is not a valid filter ({e}); using the default level",
                    crate::text::terminal(spec)
                )),
            ),
        },
    }
}

/// stderr through [`crate::redact::redact_secrets`]: a log line never carries a value the run
/// marked secret (a `${env:...}` value, a `--var-file` secret), like every other output.
/// tracing's formatter hands over one whole event per `write`, so a secret is never split.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = crate::redact::redact_secrets(&text);
        std::io::stderr().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the subscriber for the process: events on stderr, in `format`, ANSI styles only
/// when `color` allows them and stderr is a terminal.
pub fn init(
    verbose: u8,
    quiet: bool,
    format: LogFormat,
    color: super::style::ColorChoice,
) -> Result<(), LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, problem) = filter(verbose, quiet, rust_log.as_deref());
    let ansi = color.enabled_for(std::io::stderr().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_target(true);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))?;
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_the_level() {
        assert_eq!(directive(0, false), "error,rattle=warn");
        assert_eq!(directive(1, false), "warn,rattle=info");
        assert_eq!(directive(2, false), "info,rattle=debug");
        assert_eq!(directive(9, false), "debug,rattle=trace");
        assert_eq!(directive(3, true), "error");
    }

    #[test]
    fn rust_log_applies_unless_flags_are_given() {
        let (f, p) = filter(0, false, Some("rattle=debug"));
        assert_eq!(f.to_string(), "rattle=debug");
        assert!(p.is_none());
        let (f, _) = filter(1, false, Some("rattle=trace"));
        assert_eq!(
            f.to_string(),
            EnvFilter::new("warn,rattle=info").to_string()
        );
        let (f, _) = filter(0, true, Some("trace"));
        assert_eq!(f.to_string(), "error");
    }

    #[test]
    fn bad_rust_log_is_reported_not_fatal() {
        let (f, p) = filter(0, false, Some("rattle=loud\u{1b}[2J"));
        assert_eq!(
            f.to_string(),
            EnvFilter::new("error,rattle=warn").to_string()
        );
        let p = p.unwrap();
        assert!(p.contains("RUST_LOG"), "{p}");
        assert!(!p.contains('\u{1b}'), "{p}");
    }
}
