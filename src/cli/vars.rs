//! `--var NAME=VALUE` and `--var-file FILE`: the flags of every command that loads experiment or
//! game-day files, gathered into [`crate::experiment::Vars`] (issue #15). One flattened struct,
//! so each command gains both flags and the same help with one line.

use std::path::PathBuf;

use crate::experiment::Vars;

/// The variable flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VarArgs {
    /// Set `${var:NAME}` in the files to VALUE (repeatable; later wins). A name containing
    /// token, key, secret, password or auth marks a secret: never written to reports or logs.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub var: Vec<String>,
    /// Read variables from a YAML or JSON mapping of NAME: VALUE (repeatable; --var wins);
    /// `NAME: { secret: VALUE }` marks a secret. `${env:NAME}` needs no flag: it reads the
    /// environment, and its values are always secret.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_file: Vec<PathBuf>,
}

impl VarArgs {
    /// The variables, or the error (printed) that makes the command exit 2.
    pub fn vars(&self) -> Option<Vars> {
        let mut vars = Vars::new();
        for f in &self.var_file {
            if let Err(e) = vars.load_file(f) {
                crate::errln!("error: {e}");
                return None;
            }
        }
        for v in &self.var {
            if let Err(e) = vars.set_flag(v) {
                crate::errln!("error: {e}");
                return None;
            }
        }
        Some(vars)
    }
}
