//! What goes wrong with an input file, and where: a [`Diagnostic`] (line, column, field path,
//! message, snippet) per problem, and [`ExperimentError`], the error of loading a file. On the
//! ground floor of the module, so that every stage (parse, the checks of `validate`, `gates`
//! and `proxies`, game days) reports problems the same way without importing another stage.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in an input file (an experiment, a game day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// The field path, like `faults[1].at`; empty for the whole document.
    pub field: String,
    /// What is wrong, and where useful, what would be right.
    pub message: String,
    /// The source lines around the place, with a caret, when available.
    pub snippet: Option<String>,
}

/// Errors of loading an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the 1 MiB every input file is limited to.
    #[error("{}: file is {size} bytes; input files are limited to 1 MiB", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file was read but is not a valid experiment.
    #[error("{}", render(path, diagnostics))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found (at least one).
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push_str("\nerror: ");
        }
        out.push_str(&d.display_for(path).to_string());
    }
    out
}

impl Diagnostic {
    /// `file:line:column: field `x.y`: message`, then the snippet if any.
    pub fn display_for<'a>(&'a self, path: &'a Path) -> impl fmt::Display + 'a {
        DiagDisplay { d: self, path }
    }
}

struct DiagDisplay<'a> {
    d: &'a Diagnostic,
    path: &'a Path,
}

impl fmt::Display for DiagDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.d;
        write!(f, "{}", self.path.display())?;
        if d.line > 0 {
            write!(f, ":{}:{}", d.line, d.column)?;
        }
        if d.field.is_empty() {
            write!(f, ": {}", d.message)?;
        } else {
            write!(f, ": field `{}`: {}", d.field, d.message)?;
        }
        if let Some(snippet) = &d.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}
