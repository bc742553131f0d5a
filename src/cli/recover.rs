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

use serde::Serialize;

use super::output::{Format, JSON_VERSION, print_json};
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
    /// Output: `text` or `json` (one document once done; see the README, "CLI conventions").
    /// Prompts and errors stay on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// One journal entry of `recover --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonLeftover {
    /// The entry's file in the journal.
    pub path: String,
    /// The experiment that injected it; `null` when the entry is unreadable.
    pub experiment: Option<String>,
    /// The fault's name.
    pub fault: Option<String>,
    /// The fault's kind.
    pub kind: Option<String>,
    /// When the entry was written.
    pub since: Option<String>,
    /// What it acted on.
    pub targets: Vec<crate::fault::Target>,
    /// `would_revert` (dry run), `reverted`, `failed`, `unreadable` (never reverted: inspect it
    /// by hand) or `not_confirmed`.
    pub status: &'static str,
    /// Why it failed or is unreadable.
    pub error: Option<String>,
}

/// The document of `recover --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct JsonRecover {
    /// The JSON shape's version.
    pub version: u32,
    /// The journal directory.
    pub journal: String,
    /// True for `--dry-run`: nothing was changed.
    pub dry_run: bool,
    /// Torn writes of crashed runs: removed, or with `--dry-run` that would be.
    pub torn_writes: Vec<String>,
    /// Entries that belong to runs still alive (they revert their own faults).
    pub in_progress: usize,
    /// Faults left by runs that are no longer alive.
    pub leftovers: Vec<JsonLeftover>,
}

/// Runs `rattle recover`; returns the exit code (0 all reverted or nothing to do, 2 not
/// confirmed or the journal unreadable, 4 a revert failed).
pub async fn recover_cmd(args: RecoverArgs) -> anyhow::Result<Outcome> {
    let text = args.format == Format::Text;
    // Text lines as they happen; with --format json, one document at the end instead.
    let say = |line: String| {
        if text {
            crate::outln!("{line}");
        }
    };
    let dir = args.state_dir.unwrap_or_else(journal::default_state_dir);
    let mut doc = JsonRecover {
        version: JSON_VERSION,
        // Where the journal lives (Journal::open and open_existing use this), even when absent.
        journal: dir.join("journal").display().to_string(),
        dry_run: args.dry_run,
        torn_writes: Vec::new(),
        in_progress: 0,
        leftovers: Vec::new(),
    };
    let finish = |doc: &JsonRecover, outcome: Outcome| {
        if !text {
            print_json(doc);
        }
        Ok(outcome)
    };
    let journal = if args.dry_run {
        match Journal::open_existing(&dir)? {
            Some(j) => j,
            None => {
                say(format!(
                    "nothing to recover: no journal in {}",
                    dir.display()
                ));
                say("dry run: nothing was reverted".into());
                return finish(&doc, Outcome::Pass);
            }
        }
    } else {
        Journal::open(&dir)?
    };
    doc.journal = journal.dir().display().to_string();
    if args.dry_run {
        for p in journal.stale_temps()? {
            say(format!(
                "  {}: torn write of a crashed run, would be removed",
                p.display()
            ));
            doc.torn_writes.push(p.display().to_string());
        }
    } else {
        for p in journal.clean_stale_temps()? {
            say(format!(
                "removed {}: torn write of a crashed run",
                p.display()
            ));
            doc.torn_writes.push(p.display().to_string());
        }
    }
    let left = journal.leftovers()?;
    let running = journal.list()?.len() - left.len();
    doc.in_progress = running;
    if left.is_empty() {
        say(format!("nothing to recover in {}", journal.dir().display()));
        if running > 0 {
            say(format!(
                "({running} entries belong to runs still in progress; they revert their own faults)"
            ));
        }
        return finish(&doc, Outcome::Pass);
    }
    tracing::info!(
        leftovers = left.len(),
        journal = %journal.dir().display(),
        "faults left by dead runs"
    );
    say(format!(
        "{} fault(s) left by runs that are no longer alive ({}):",
        left.len(),
        journal.dir().display()
    ));
    for f in &left {
        let status = if args.dry_run {
            "would_revert"
        } else {
            "not_confirmed"
        };
        match &f.entry {
            Ok(e) => {
                let targets = e
                    .targets
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                say(format!(
                    "  {} / {} ({}) since {}: {targets}",
                    e.experiment, e.fault, e.token.kind, e.written_at
                ));
                doc.leftovers.push(JsonLeftover {
                    path: f.path.display().to_string(),
                    experiment: Some(e.experiment.clone()),
                    fault: Some(e.fault.clone()),
                    kind: Some(e.token.kind.clone()),
                    since: Some(e.written_at.to_string()),
                    targets: e.targets.clone(),
                    status,
                    error: None,
                });
            }
            Err(why) => {
                say(format!(
                    "  {}: unreadable, will not be reverted: {why}",
                    f.path.display()
                ));
                doc.leftovers.push(JsonLeftover {
                    path: f.path.display().to_string(),
                    experiment: None,
                    fault: None,
                    kind: None,
                    since: None,
                    targets: Vec::new(),
                    status: "unreadable",
                    error: Some(why.to_string()),
                });
            }
        }
    }
    if args.dry_run {
        say("dry run: nothing was reverted".into());
        return finish(&doc, Outcome::Pass);
    }
    if !args.yes && !confirm()? {
        crate::errln!("not confirmed: nothing was reverted");
        return finish(&doc, Outcome::BadInput);
    }
    let env = fault::FaultEnv::with_kube_context(args.context.clone());
    let mut failed = 0;
    for (f, item) in left.iter().zip(doc.leftovers.iter_mut()) {
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
                tracing::info!(
                    experiment = %entry.experiment,
                    fault = %entry.fault,
                    kind = %entry.token.kind,
                    "reverted a leftover fault"
                );
                say(format!(
                    "reverted: {} / {} ({})",
                    entry.experiment, entry.fault, entry.token.kind
                ));
                item.status = "reverted";
            }
            Err(e) => {
                failed += 1;
                // Info, not error: the error itself is on stderr below, once.
                tracing::info!(
                    experiment = %entry.experiment,
                    fault = %entry.fault,
                    error = %e,
                    "revert of a leftover fault failed"
                );
                crate::errln!(
                    "revert of {} / {} failed: {e}; it stays in the journal",
                    entry.experiment,
                    entry.fault
                );
                item.status = "failed";
                item.error = Some(e.to_string());
            }
        }
    }
    finish(
        &doc,
        if failed == 0 {
            Outcome::Pass
        } else {
            Outcome::RevertFailed
        },
    )
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
