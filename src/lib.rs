//! rattle: chaos engineering and resilience testing.
//!
//! See ARCHITECTURE.md for the map of modules and the flow of one run.
#![deny(missing_docs)]

/// `println!` that never panics: when stdout is closed (`rattle ... | head`), the output is
/// lost and the command carries on (a run still reverts its faults and writes its reports).
/// Control characters other than newline and tab are shown escaped ([`crate::text::terminal_lines`]):
/// user-derived text never reaches a terminal raw.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", $crate::text::terminal_lines(&$crate::redact::redact_secrets(&text)));
    }};
}

/// `print!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "{}", $crate::text::terminal_lines(&$crate::redact::redact_secrets(&text)));
        let _ = o.flush();
    }};
}

/// `eprintln!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", $crate::text::terminal_lines(&$crate::redact::redact_secrets(&text)));
    }};
}

pub mod analysis;
pub mod cli;
pub mod demo;
pub mod experiment;
pub mod fault;
pub mod fsutil;
pub mod gameday;
pub mod journal;
pub mod kube_env;
pub mod load;
pub mod metrics;
pub mod observe;
pub mod outcome;
pub mod plan;
pub mod probe;
pub mod prometheus;
pub mod proxy;
pub mod redact;
pub mod report;
pub mod runner;
pub mod stress;
pub mod text;
