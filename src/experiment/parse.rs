//! Reading an experiment file: syntax (serde-saphyr, with budgets against alias bombs and deep
//! nesting), shape (serde, unknown fields are errors), then meaning ([`validate`]). Every
//! problem becomes a [`Diagnostic`] naming file, line, column and the field path, so a user can
//! go straight to the place. JSON files are read by the same parser (JSON is YAML 1.2 flow
//! syntax), so they get the same locations.

use std::fmt;
use std::path::{Path, PathBuf};

use super::spec::Experiment;
use super::validate::validate;

/// Largest experiment file accepted (1 MiB): far above any real experiment, far below trouble.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One problem in an experiment file.
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
    /// The file is larger than [`MAX_FILE_BYTES`].
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

/// Parses a load URL: http:// or https:// (TLS through rustls), with a host.
pub fn load_url(url: &str) -> Result<http::Uri, String> {
    super::validate::check_http_url_impl(url, true)
}

/// Reads, parses and validates the experiment file at `path`.
pub fn load(path: &Path) -> Result<Experiment, ExperimentError> {
    let text = read_text(path)?;
    parse_str(&text).map_err(|diagnostics| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })
}

/// Reads an input file (experiment, game day) as UTF-8 text, refusing files above 1 MiB.
pub fn read_text(path: &Path) -> Result<String, ExperimentError> {
    let meta = std::fs::metadata(path).map_err(|source| ExperimentError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ExperimentError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| ExperimentError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line: 0,
            column: 0,
            field: String::new(),
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            snippet: None,
        }],
    })
}

/// Parses and validates an experiment from text.
pub fn parse_str(text: &str) -> Result<Experiment, Vec<Diagnostic>> {
    let experiment = parse_shape(text).map_err(|d| vec![d])?;
    validate(&experiment)?;
    Ok(experiment)
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // An experiment is small: refuse anything that looks like an attack long before it costs.
    budget.max_depth = 32;
    budget.max_aliases = 64;
    budget.max_anchors = 64;
    budget.max_nodes = 100_000;
    budget.max_events = 200_000;
    budget.max_total_scalar_bytes = 1024 * 1024;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Syntax and shape only.
fn parse_shape(text: &str) -> Result<Experiment, Diagnostic> {
    parse_yaml(text)
}

/// Syntax and shape of any input file format (experiment, game day): serde-saphyr with the
/// budgets above, unknown fields refused by the types, the error located by line, column and
/// field path.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Diagnostic> {
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let bare = e.without_snippet().to_string();
        let message = strip_location_prefix(&bare).to_string();
        let rendered = e.to_string();
        // The rendered form is "error: <msg>\n --> <input>:l:c\n<snippet>": keep the snippet.
        let snippet = rendered
            .split_once('\n')
            .and_then(|(_, rest)| rest.split_once('\n'))
            .map(|(_, snippet)| snippet.trim_end().to_string())
            .filter(|s| !s.is_empty());
        // `Located` reads through serde-saphyr's Spanned, whose synthesized map adds a `value`
        // segment to the path; no field of the format is named `value`.
        let field = field
            .split('.')
            .filter(|seg| *seg != "value")
            .collect::<Vec<_>>()
            .join(".");
        Diagnostic {
            line,
            column,
            field,
            message,
            snippet,
        }
    })
}

fn strip_location_prefix(msg: &str) -> &str {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    // "... at line 3, column 9" at the end repeats what the diagnostic already says.
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    };
    // "line 3 column 9: rest"
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest
            .split_once(": ")
            .is_some_and(|(loc, _)| loc.contains("column"))
    {
        return after;
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefix() {
        assert_eq!(strip_location_prefix("line 3 column 9: bad"), "bad");
        assert_eq!(
            strip_location_prefix("error: line 3 column 9: bad: x"),
            "bad: x"
        );
        assert_eq!(strip_location_prefix("bad"), "bad");
        assert_eq!(
            strip_location_prefix("bad thing at line 3, column 9"),
            "bad thing"
        );
    }
}
