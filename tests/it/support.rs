//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The rattle binary under test.
pub fn rattle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rattle"))
}

/// A `rattle` command with a clean environment for output (no colours, no terminal), and a
/// journal of its own: tests never read or write the user's state directory.
pub fn rattle() -> Command {
    let mut c = Command::new(rattle_bin());
    c.env("NO_COLOR", "1");
    c.env(
        "RATTLE_STATE_DIR",
        std::env::temp_dir().join(format!("rattle-test-state-{}", std::process::id())),
    );
    c
}

/// Writes `content` to `name` in `dir`, returning the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
