//! Loading an experiment: its text read, its syntax and shape parsed, its meaning validated, in
//! that order, each stage reporting [`Diagnostic`]s. Above both stages, so that neither imports
//! the other.

use std::path::Path;

use super::diagnostic::{Diagnostic, ExperimentError};
use super::parse::{parse_yaml, read_text};
use super::spec::Experiment;
use super::validate::validate;

/// Reads, parses and validates the experiment file at `path`.
pub fn load(path: &Path) -> Result<Experiment, ExperimentError> {
    let text = read_text(path)?;
    parse_str(&text).map_err(|diagnostics| ExperimentError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    })
}

/// Parses and validates an experiment from text.
pub fn parse_str(text: &str) -> Result<Experiment, Vec<Diagnostic>> {
    // Every unknown key, not just the first, then the meaning checks (see tolerant.rs).
    let (parsed, mut problems) = super::tolerant::parse_collecting(text, parse_yaml);
    let Some(experiment) = parsed else {
        return Err(problems);
    };
    if let Err(meaning) = validate(&experiment) {
        problems.extend(meaning);
    }
    if problems.is_empty() {
        Ok(experiment)
    } else {
        Err(problems)
    }
}
