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
    let experiment: Experiment = parse_yaml(text).map_err(|d| vec![d])?;
    validate(&experiment)?;
    Ok(experiment)
}
