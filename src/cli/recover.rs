//! `rattle recover`: reverts what killed runs left in the journal (resumes paused processes;
//! later also restores scale, uncordons, removes netem, ...), says what it did, and is
//! idempotent: a second call finds nothing to do.
//!
//! It reverts only what it can trust (issue #19): a journal directory someone else could write
//! is refused before anything is read, and an entry file that is a symlink, another uid's, or
//! writable by others is listed with the reason and never reverted. `--dry-run` creates nothing
//! and removes nothing; a real recover also removes the `.tmp` litter of crashed entry writes.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::fault;
use crate::journal::{self, Journal};
use crate::outcome::Outcome;

/// `rattle recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Revert without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only list what would be reverted.
    #[arg(long)]
    pub dry_run: bool,
    /// State directory holding the journal [default: $XDG_STATE_HOME/rattle or
    /// ~/.local/state/rattle].
    #[arg(long, env = "RATTLE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig context for Kubernetes faults [default: the current context, or the
    /// in-cluster configuration].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Runs `rattle recover`; returns the exit code (0 all reverted or nothing to do, 2 not
/// confirmed or the journal unreadable, 4 a revert failed).
pub async fn recover_cmd(args: RecoverArgs) -> anyhow::Result<Outcome> {
    let dir = args.state_dir.unwrap_or_else(journal::default_state_dir);
    let journal = if args.dry_run {
        match Journal::open_existing(&dir)? {
            Some(j) => j,
            None => {
                crate::outln!("nothing to recover: no journal in {}", dir.display());
                crate::outln!("dry run: nothing was reverted");
                return Ok(Outcome::Pass);
            }
        }
    } else {
        Journal::open(&dir)?
    };
    if args.dry_run {
        for p in journal.stale_temps()? {
            crate::outln!(
                "  {}: torn write of a crashed run, would be removed",
                p.display()
            );
        }
    } else {
        for p in journal.clean_stale_temps()? {
            crate::outln!("removed {}: torn write of a crashed run", p.display());
        }
    }
    let left = journal.leftovers()?;
    let running = journal.list()?.len() - left.len();
    if left.is_empty() {
        crate::outln!("nothing to recover in {}", journal.dir().display());
        if running > 0 {
            crate::outln!(
                "({running} entries belong to runs still in progress; they revert their own faults)"
            );
        }
        return Ok(Outcome::Pass);
    }
    crate::outln!(
        "{} fault(s) left by runs that are no longer alive ({}):",
        left.len(),
        journal.dir().display()
    );
    for f in &left {
        match &f.entry {
            Ok(e) => {
                let targets = e
                    .targets
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                crate::outln!(
                    "  {} / {} ({}) since {}: {targets}",
                    e.experiment,
                    e.fault,
                    e.token.kind,
                    e.written_at
                );
            }
            Err(why) => crate::outln!(
                "  {}: unreadable, will not be reverted: {why}",
                f.path.display()
            ),
        }
    }
    if args.dry_run {
        crate::outln!("dry run: nothing was reverted");
        return Ok(Outcome::Pass);
    }
    if !args.yes && !confirm()? {
        crate::errln!("not confirmed: nothing was reverted");
        return Ok(Outcome::BadInput);
    }
    let env = fault::FaultEnv::with_kube_context(args.context.clone());
    let mut failed = 0;
    for f in &left {
        let entry = match &f.entry {
            Ok(e) => e,
            Err(why) => {
                failed += 1;
                crate::errln!(
                    "cannot revert {}: unreadable or untrusted entry ({why}); inspect and remove \
                     it by hand",
                    f.path.display()
                );
                continue;
            }
        };
        match fault::revert(&env, &entry.token).await {
            Ok(()) => {
                journal.remove(&f.path)?;
                crate::outln!(
                    "reverted: {} / {} ({})",
                    entry.experiment,
                    entry.fault,
                    entry.token.kind
                );
            }
            Err(e) => {
                failed += 1;
                crate::errln!(
                    "revert of {} / {} failed: {e}; it stays in the journal",
                    entry.experiment,
                    entry.fault
                );
            }
        }
    }
    Ok(if failed == 0 {
        Outcome::Pass
    } else {
        Outcome::RevertFailed
    })
}

fn confirm() -> anyhow::Result<bool> {
    let mut err = std::io::stderr();
    if !std::io::stdin().is_terminal() {
        writeln!(
            err,
            "refusing without confirmation: pass --yes to revert in non-interactive use"
        )?;
        return Ok(false);
    }
    write!(err, "Revert them now? [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
