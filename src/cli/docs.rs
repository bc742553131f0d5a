//! `rattle completions SHELL` and `rattle man`: shell completion scripts and man pages,
//! generated from the same clap definition that parses the arguments, so they can never
//! disagree with the binary. Hidden commands (the demo's internal `worker`) and clap's own
//! `help` subcommand get no page. Man pages are rendered in memory and written with
//! [`crate::fsutil::write_new_or_regular`]: a symlink at a page's path is refused, a full disk
//! leaves no torn page.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::outcome::Outcome;

/// `rattle completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install (one of):\n  \
    bash: rattle completions bash > ~/.local/share/bash-completion/completions/rattle\n  \
    zsh:  rattle completions zsh > \"${fpath[1]}/_rattle\"\n  \
    fish: rattle completions fish > ~/.config/fish/completions/rattle.fish\n  \
    powershell: rattle completions powershell >> $PROFILE\n  \
    elvish: rattle completions elvish >> ~/.config/elvish/rc.elv")]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `rattle man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    rattle man | man -l -            read the top page now\n  \
    rattle man run | man -l -        the page of `rattle run`\n  \
    rattle man --out /usr/local/share/man/man1   install every page")]
pub struct ManArgs {
    /// Write a page for rattle and for every subcommand (rattle.1, rattle-run.1,
    /// rattle-gameday-run.1, ...) into this directory, created if missing, instead of printing
    /// one page to standard output.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out: Option<PathBuf>,
    /// The subcommand whose page to print, like `run` or `gameday run` [default: rattle's own
    /// page].
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Writes the completion script to stdout. Rendered in memory first: clap_complete panics on
/// a failed write, and a closed stdout (`| head`) must not panic.
pub fn completions_cmd(args: CompletionsArgs) -> Outcome {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rattle", &mut buf);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf).and_then(|()| out.flush());
    Outcome::Pass
}

/// Every page: `(file name, roff)`, the top command first, then each visible subcommand,
/// depth first.
pub fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    collect(cmd, &mut out)?;
    Ok(out)
}

fn collect(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let man = clap_mangen::Man::new(cmd)
        .manual("rattle manual")
        .source(format!("rattle {}", super::VERSION));
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    out.push((man.get_filename(), roff));
    for s in subs {
        collect(s, out)?;
    }
    Ok(())
}

/// Runs `rattle man`: one page to stdout, or every page into `--out`.
pub fn man_cmd(args: ManArgs) -> anyhow::Result<Outcome> {
    let pages = pages()?;
    if let Some(dir) = &args.out {
        return Ok(write_pages(dir, &pages));
    }
    let name = if args.command.is_empty() {
        "rattle.1".to_string()
    } else {
        format!("rattle-{}.1", args.command.join("-"))
    };
    let Some((_, roff)) = pages.iter().find(|(n, _)| *n == name) else {
        let known: Vec<String> = pages
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("rattle-")?.strip_suffix(".1"))
            .map(|n| n.replace('-', " "))
            .collect();
        crate::errln!(
            "error: no manual page for `{}`; pages exist for: {}",
            args.command.join(" "),
            known.join(", ")
        );
        return Ok(Outcome::BadInput);
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(roff).and_then(|()| out.flush());
    Ok(Outcome::Pass)
}

fn write_pages(dir: &Path, pages: &[(String, Vec<u8>)]) -> Outcome {
    if let Err(e) = std::fs::create_dir_all(dir) {
        crate::errln!("error: {}: cannot create the directory: {e}", dir.display());
        return Outcome::BadInput;
    }
    for (name, roff) in pages {
        let path = dir.join(name);
        if let Err(e) = crate::fsutil::write_new_or_regular(&path, roff) {
            crate::errln!("error: {}: cannot write: {e}", path.display());
            return Outcome::BadInput;
        }
    }
    crate::outln!("wrote {} manual pages to {}", pages.len(), dir.display());
    Outcome::Pass
}
