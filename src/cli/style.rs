//! Colour on the terminal: the `--color` choice, `NO_COLOR`, `TERM=dumb` and whether the
//! stream is a terminal, decided in one place, and the one styled word rattle prints (the
//! verdict). Colour is decoration only: every coloured word is also spelt out, and output that
//! is piped or redirected carries no escape sequence unless `--color always` asks for it.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;

/// `--color`: when to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (to anything but empty) or TERM is `dumb`.
    #[default]
    Auto,
    /// Always, even when piped (NO_COLOR is then ignored: the flag is the more specific ask).
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour a stream that `is_terminal` or not, in this environment.
    pub fn enabled_for(self, is_terminal: bool) -> bool {
        self.decide(
            is_terminal,
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            std::env::var_os("TERM").is_some_and(|t| t == "dumb"),
        )
    }

    /// The rule, apart from the environment so it can be tested.
    pub fn decide(self, is_terminal: bool, no_color: bool, dumb_term: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && !no_color && !dumb_term,
        }
    }

    /// Whether to colour standard output.
    pub fn stdout(self) -> bool {
        self.enabled_for(std::io::stdout().is_terminal())
    }
}

impl ColorChoice {
    /// clap's equivalent, for its own help and usage errors.
    pub fn to_clap(self) -> clap::ColorChoice {
        match self {
            ColorChoice::Auto => clap::ColorChoice::Auto,
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
        }
    }

    /// The `--color` of a command line, read before clap parses it, so that clap's own help
    /// and usage errors follow it too. The last one wins; `--` ends the options; a value clap
    /// will refuse counts as `auto` here.
    pub fn from_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Self {
        let mut choice = ColorChoice::Auto;
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            let value = match a.to_str() {
                Some("--") => break,
                Some("--color") => args.next(),
                Some(s) => match s.strip_prefix("--color=") {
                    Some(v) => Some(v.into()),
                    None => continue,
                },
                None => continue,
            };
            choice = match value.as_ref().and_then(|v| v.to_str()) {
                Some("always") => ColorChoice::Always,
                Some("never") => ColorChoice::Never,
                _ => ColorChoice::Auto,
            };
        }
        choice
    }
}

static CHOICE: std::sync::OnceLock<ColorChoice> = std::sync::OnceLock::new();

/// Records the process's `--color` choice (the first call wins; `main` makes it, once).
pub fn set_choice(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

/// Whether standard output is coloured, by the recorded choice ([`ColorChoice::Auto`] when
/// none was recorded).
pub fn stdout_color() -> bool {
    CHOICE.get().copied().unwrap_or_default().stdout()
}

/// The SGR colour of a verdict word: green PASS, red FAIL and ERROR, yellow ABORTED.
fn sgr(word: &str) -> Option<&'static str> {
    match word {
        "PASS" => Some("1;32"),
        "FAIL" | "ERROR" => Some("1;31"),
        "ABORTED" => Some("1;33"),
        _ => None,
    }
}

/// `word`, bold and coloured when `color`, else as is.
pub fn verdict(word: &str, color: bool) -> String {
    match sgr(word) {
        Some(code) if color => format!("\u{1b}[{code}m{word}\u{1b}[0m"),
        _ => word.to_string(),
    }
}

/// Prints a line to stdout that starts with a verdict word (coloured when `color`); the rest
/// is user-derived text and goes through the same escaping as [`crate::outln!`], so only
/// rattle's own style codes reach the terminal. Never panics on a closed stdout.
pub fn verdict_line(word: &str, rest: &str, color: bool) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "{}{}",
        verdict(word, color),
        crate::text::terminal_lines(&crate::redact::redact_secrets(rest))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_respects_terminal_no_color_and_dumb() {
        assert!(ColorChoice::Auto.decide(true, false, false));
        assert!(!ColorChoice::Auto.decide(false, false, false));
        assert!(!ColorChoice::Auto.decide(true, true, false));
        assert!(!ColorChoice::Auto.decide(true, false, true));
        assert!(ColorChoice::Always.decide(false, true, true));
        assert!(!ColorChoice::Never.decide(true, false, false));
    }

    #[test]
    fn color_flag_is_read_before_parsing() {
        let read = |a: &[&str]| ColorChoice::from_args(a.iter().map(|s| s.into()));
        assert_eq!(read(&["rattle", "run", "x"]), ColorChoice::Auto);
        assert_eq!(
            read(&["rattle", "--color", "never", "run"]),
            ColorChoice::Never
        );
        assert_eq!(
            read(&["rattle", "run", "--color=always"]),
            ColorChoice::Always
        );
        assert_eq!(
            read(&["rattle", "--color=never", "--color", "always"]),
            ColorChoice::Always
        );
        assert_eq!(read(&["rattle", "--", "--color=never"]), ColorChoice::Auto);
        assert_eq!(read(&["rattle", "--color"]), ColorChoice::Auto);
    }

    #[test]
    fn verdict_is_plain_without_color() {
        assert_eq!(verdict("PASS", false), "PASS");
        assert_eq!(verdict("FAIL", true), "\u{1b}[1;31mFAIL\u{1b}[0m");
        assert_eq!(verdict("other", true), "other");
    }
}
