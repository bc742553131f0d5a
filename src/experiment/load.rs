//! Loading an experiment: its text read, its syntax and shape parsed, its meaning validated, in
//! that order, each stage reporting [`Diagnostic`]s. Above both stages, so that neither imports
//! the other.

use std::path::Path;

use super::diagnostic::{Diagnostic, ExperimentError};
use super::parse::{parse_yaml, read_text};
use super::spec::Experiment;
use super::validate::validate;
use super::vars::Vars;

/// Reads, parses and validates the experiment file at `path` (`${env:NAME}` read from the
/// environment; no `--var`).
pub fn load(path: &Path) -> Result<Experiment, ExperimentError> {
    load_with(path, &Vars::new())
}

/// Reads, substitutes `vars` into, parses and validates the experiment file at `path`.
pub fn load_with(path: &Path, vars: &Vars) -> Result<Experiment, ExperimentError> {
    let text = read_text(path)?;
    parse_str_with(&text, vars).map_err(|diagnostics| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })
}

/// Parses and validates an experiment from text.
pub fn parse_str(text: &str) -> Result<Experiment, Vec<Diagnostic>> {
    parse_str_with(text, &Vars::new())
}

/// Substitutes `vars` into the text, then parses and validates it; every diagnostic points
/// at the text as written. Every unknown key, not just the first, then the meaning checks
/// (see tolerant.rs).
pub fn parse_str_with(text: &str, vars: &Vars) -> Result<Experiment, Vec<Diagnostic>> {
    let substituted = vars.substitute(text)?;
    let locate = |ds: Vec<Diagnostic>| -> Vec<Diagnostic> {
        ds.into_iter().map(|d| substituted.locate(d)).collect()
    };
    let (parsed, mut problems) = super::tolerant::parse_collecting(&substituted.text, parse_yaml);
    let Some(experiment) = parsed else {
        return Err(locate(problems));
    };
    if let Err(meaning) = validate(&experiment) {
        problems.extend(meaning);
    }
    if problems.is_empty() {
        Ok(experiment)
    } else {
        Err(locate(problems))
    }
}
