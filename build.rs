//! Build script: records the git commit the binary was built from, for `rattle --version`.
//! Never fails the build: without git, or outside a repository (a source tarball, a container
//! build that copies no `.git`), the commit is "unknown". `RATTLE_GIT_COMMIT` overrides it
//! (for builds from an exported tree that know their commit).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RATTLE_GIT_COMMIT");
    let commit = match std::env::var("RATTLE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
    };
    // Only characters that belong in a commit id reach the version string.
    let commit: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(40)
        .collect();
    let commit = if commit.is_empty() {
        "unknown".to_string()
    } else {
        commit
    };
    println!("cargo:rustc-env=RATTLE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points at (a commit),
    // and packed-refs. In a worktree `.git` is a file, so ask git where these live. Only paths
    // that exist are named: cargo reruns the script every build for a missing one.
    let mut watch = vec![PathBuf::from(".git/HEAD")];
    for p in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            watch.push(PathBuf::from(path));
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch.push(PathBuf::from(path));
    }
    for p in watch {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
