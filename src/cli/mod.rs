//! Command-line interface: clap types and dispatch only. Every command returns an
//! [`ExitCode`]-like number; `main.rs` maps it to the process's exit status in one place.

mod docs;
mod gameday;
mod load;
pub mod logging;
mod observe;
pub mod output;
mod recover;
mod report;
mod stress;
pub mod style;
pub mod vars;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

mod proxy;
use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use crate::demo::{self, DemoConfig};
use crate::experiment::{self, ExperimentError, HumanDuration};
use crate::outcome::{Outcome, Verdict};
use crate::plan;
use crate::runner::{self, ProgressMode, RunOptions};

/// The version `--version` prints: the package version and the git commit it was built from
/// ("unknown" when built without git; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RATTLE_GIT_COMMIT"),
    ")"
);

/// rattle: drive load at a service, inject faults, measure impact and recovery, always revert.
#[derive(Debug, Parser)]
#[command(
    name = "rattle",
    version = VERSION,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 passed; 1 a hypothesis failed; 2 bad input or environment; \
                  3 stopped (all faults reverted); 4 a revert failed.\n\
                  Start with: rattle run experiments/quickstart.yaml"
)]
pub struct Cli {
    /// More diagnostics on stderr: -v what rattle decides (preflight, each inject and revert,
    /// probe failures, reports written), -vv debug, -vvv trace. Overrides RUST_LOG.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr, and no progress line from `run` unless `--progress plain` asks
    /// for one.
    /// Results on stdout are unchanged. Overrides RUST_LOG.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Format of the diagnostics on stderr: `json` writes one object per line (for in-cluster
    /// runs and log collectors).
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "RATTLE_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: logging::LogFormat,
    /// When to colour output: `auto` colours a terminal unless NO_COLOR is set or TERM=dumb.
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: style::ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment: load, faults, recovery measurement, reports.
    Run(RunArgs),
    /// Check experiment files without running them (exit 0 if all are valid, 2 otherwise).
    Validate {
        /// Experiment files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `--var` and `--var-file`.
        #[command(flatten)]
        vars: vars::VarArgs,
        /// Output: `text` (one line per file or problem), `json` (see the README, "CLI
        /// conventions"), `github` (workflow-command annotations on the lines at fault).
        #[arg(long, value_enum, default_value = "text")]
        format: output::ValidateFormat,
    },
    /// Print the JSON Schema of the experiment format (for editors' YAML language servers).
    Schema {
        /// Print the schema of report.json instead.
        #[arg(long, conflicts_with = "gameday")]
        report: bool,
        /// Print the schema of game-day files instead.
        #[arg(long)]
        gameday: bool,
    },
    /// Run the built-in demo service: worker processes behind a round-robin balancer.
    Demo(DemoArgs),
    /// Revert the faults that killed runs left behind (read from the journal).
    Recover(recover::RecoverArgs),
    /// Re-render an earlier run's report.json in any report format (see --format).
    Report(report::ReportArgs),
    /// Compare two runs' figures; exit 1 when one regressed beyond its allowance.
    Compare(report::CompareArgs),
    /// Load-test a URL on its own, like wrk or oha: closed model, or open model with --rate.
    Load(load::LoadArgs),
    /// Run the fault proxy stand-alone, with a Toxiproxy-compatible HTTP API.
    Proxy(proxy::ProxyArgs),
    /// Game days: several experiments in a row, with a combined report and a notification.
    #[command(subcommand)]
    Gameday(gameday::GamedayCmd),
    /// Run game days on their cron schedules (long-running), or print a Kubernetes CronJob
    /// that does (--emit cronjob).
    Schedule(gameday::ScheduleArgs),
    /// Burn CPU and hold memory for a while (what the `stress` and `pod-stress` faults run).
    Stress(stress::StressArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(docs::CompletionsArgs),
    /// Print a man page, or write every page into a directory (--out).
    Man(docs::ManArgs),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProgressArg {
    /// An updating line on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines every few seconds.
    Plain,
    /// Only the final result.
    Quiet,
}

/// `rattle run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The experiment file (YAML or JSON).
    pub file: PathBuf,
    /// Directory for the reports [default: reports/<name>-<UTC timestamp>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of every random choice (which targets); printed and recorded, so a run can be
    /// replayed [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Validate, resolve and print the plan (with the targets that would be chosen now); touch
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer yes to confirmation prompts, e.g. before faulting processes that this run did not
    /// start. Needed in non-interactive use for such experiments.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// State directory for the journal of active faults, read by `rattle recover` after a
    /// crash [default: $XDG_STATE_HOME/rattle or ~/.local/state/rattle].
    #[arg(long, env = "RATTLE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig context for Kubernetes faults [default: the current context, or the
    /// in-cluster configuration].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// `--var` and `--var-file`.
    #[command(flatten)]
    pub vars: vars::VarArgs,
    /// Outputs to dashboards.
    #[command(flatten)]
    pub outputs: observe::ObserveArgs,
    /// Output of --dry-run: `text` or `json` (the resolved plan; see the README).
    #[arg(long, value_enum, default_value = "text", requires = "dry_run")]
    pub format: output::Format,
}

/// `rattle demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Balancer port on 127.0.0.1.
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Delay before a dead worker is restarted.
    #[arg(long, default_value = "2s")]
    pub restart_delay: HumanDuration,
    /// Delay each worker adds to each response.
    #[arg(long, default_value = "0s")]
    pub latency: HumanDuration,
    /// Interval of the balancer's active health checks.
    #[arg(long, default_value = "250ms")]
    pub health_interval: HumanDuration,
    /// Internal: run one worker process (the supervisor starts these).
    #[command(subcommand)]
    pub worker: Option<DemoSub>,
}

/// `rattle demo worker` (internal).
#[derive(Debug, Subcommand)]
pub enum DemoSub {
    /// Run one demo worker on a port (started by the demo supervisor).
    #[command(hide = true)]
    Worker {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Delay added to each response.
        #[arg(long, default_value = "0s")]
        latency: HumanDuration,
        /// The balancer's port (informational: it lets an experiment select the workers of
        /// one demo by their command line).
        #[arg(long)]
        balancer_port: Option<u16>,
    },
}

/// Runs the parsed command; returns how it ended (`main` turns that into the exit code).
pub async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    style::set_choice(cli.color);
    match cli.command {
        Command::Run(mut args) => {
            // -q: no progress line, unless one was asked for by name.
            if cli.quiet && matches!(args.progress, ProgressArg::Auto) {
                args.progress = ProgressArg::Quiet;
            }
            run_cmd(args).await
        }
        Command::Validate {
            files,
            vars,
            format,
        } => Ok(output::validate_cmd(&files, &vars, format)),
        Command::Schema { report, gameday } => {
            let schema = if report {
                crate::report::json_schema()
            } else if gameday {
                crate::gameday::json_schema()
            } else {
                experiment::json_schema()
            };
            crate::outln!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(Outcome::Pass)
        }
        Command::Demo(args) => demo_cmd(args).await,
        Command::Recover(args) => recover::recover_cmd(args).await,
        Command::Report(args) => report::report_cmd(args),
        Command::Compare(args) => report::compare_cmd(args),
        Command::Load(args) => load::load_cmd(args).await,
        Command::Proxy(args) => proxy::proxy_cmd(args).await,
        Command::Gameday(cmd) => gameday::gameday_cmd(cmd).await,
        Command::Schedule(args) => gameday::schedule_cmd(args).await,
        Command::Stress(args) => stress::stress_cmd(args).await,
        Command::Completions(args) => Ok(docs::completions_cmd(args)),
        Command::Man(args) => docs::man_cmd(args),
    }
}

impl Cli {
    /// Installs the diagnostics subscriber these flags ask for (see [`logging`]); `main` calls
    /// it once, before [`dispatch`].
    pub fn init_logging(&self) -> Result<(), logging::LoggingError> {
        logging::init(self.verbose, self.quiet, self.log_format, self.color)
    }
}

fn print_experiment_error(e: &ExperimentError) {
    crate::errln!("error: {e}");
}

async fn run_cmd(args: RunArgs) -> anyhow::Result<Outcome> {
    let Some(vars) = args.vars.vars() else {
        return Ok(Outcome::BadInput);
    };
    let experiment = match experiment::load_with(&args.file, &vars) {
        Ok(e) => e,
        Err(e) => {
            print_experiment_error(&e);
            return Ok(Outcome::BadInput);
        }
    };
    let plan = plan::build(experiment, &args.file, args.seed)
        .with_context(|| format!("planning {}", args.file.display()))?;
    let env = crate::fault::FaultEnv::with_kube_context(args.context.clone());
    // A kubernetes probe with no cluster to watch is an environment error, not an unsteady
    // system: refuse before anything runs.
    if crate::probe::needs_cluster(&plan.probes)
        && let Err(e) = env.kube().await
    {
        crate::errln!("error: {e}");
        return Ok(Outcome::BadInput);
    }
    let resolved = plan.resolve_all(&env).await;
    if args.dry_run {
        match args.format {
            output::Format::Text => {
                crate::out!("{}", plan.render(Some(&resolved)));
                crate::outln!("dry run: nothing was touched");
            }
            output::Format::Json => output::print_json(&output::DryRun::new(&plan, &resolved)),
        }
        return Ok(Outcome::Pass);
    }
    // Targets that exist before the run (processes, pods, nodes) were not started by it:
    // faulting them needs a yes.
    let outside = plan.outside_targets(&resolved);
    if !outside.is_empty() && !args.yes && !confirm(&outside)? {
        crate::errln!("not confirmed: nothing was touched");
        return Ok(Outcome::BadInput);
    }
    let opts = RunOptions {
        out_dir: args.out,
        demo_exe: None,
        state_dir: args.state_dir,
        kube_context: args.context,
        progress: progress_mode(args.progress),
        observe: args.outputs.into(),
    };
    let outcome = runner::run(plan, opts, shutdown_signal()).await?;
    print_outcome(&outcome);
    Ok(outcome.outcome)
}

fn progress_mode(p: ProgressArg) -> ProgressMode {
    match p {
        ProgressArg::Auto => ProgressMode::Auto,
        ProgressArg::Plain => ProgressMode::Plain,
        ProgressArg::Quiet => ProgressMode::Quiet,
    }
}

fn confirm(targets: &[String]) -> anyhow::Result<bool> {
    let mut err = std::io::stderr();
    writeln!(
        err,
        "This experiment will act on targets this run did not start:"
    )?;
    for t in targets {
        // A target's description may be a process command line: shown, never obeyed.
        writeln!(
            err,
            "  {}",
            crate::text::terminal(&crate::redact::redact_secrets(t))
        )?;
    }
    if !std::io::stdin().is_terminal() {
        writeln!(
            err,
            "refusing without confirmation: pass --yes to confirm in non-interactive use"
        )?;
        return Ok(false);
    }
    write!(err, "Continue? [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn print_outcome(o: &runner::RunOutcome) {
    let r = &o.report;
    // The run's own verdict, even when its report could not be written (`o.outcome` then says
    // so in the exit code).
    let verdict = match r.outcome().verdict() {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Aborted => "ABORTED",
        Verdict::Error => "ERROR",
        Verdict::Inconclusive => "INCONCLUSIVE",
    };
    style::verdict_line(
        verdict,
        &format!(": {} — {}", r.experiment.name, r.reason),
        style::stdout_color(),
    );
    for f in &r.faults {
        let figures = match &f.recovery {
            Some(rec) => format!(
                "impact after {}, failed requests {}, availability {}, recovered {}",
                rec.time_to_impact_ms
                    .map(|v| format!("{v:.1} ms"))
                    .unwrap_or_else(|| "none".into()),
                rec.failed_requests,
                rec.availability
                    .map(|a| format!("{:.3}%", a * 100.0))
                    .unwrap_or_else(|| "–".into()),
                rec.time_to_recover_ms
                    .map(|v| format!("after {v:.1} ms"))
                    .unwrap_or_else(|| format!(
                        "never ({})",
                        rec.reason.clone().unwrap_or_default()
                    )),
            ),
            None => f.error.clone().unwrap_or_else(|| "not fired".into()),
        };
        crate::outln!("  fault {} ({}): {figures}", f.name, f.kind);
        if let Some(w) = f.effect.as_ref().and_then(|e| e.shortfall.as_ref()) {
            crate::errln!("warning: fault {}: {w}", f.name);
        }
    }
    let t = &r.totals;
    // The successful requests' latency: what users who were served waited for (#23).
    let l = t.success_latency();
    crate::outln!(
        "  load: {} requests, {} failed ({} missed), p50 {} p99 {} max {}",
        t.requests,
        t.failed,
        t.missed,
        l.p50_ms
            .map(|v| format!("{v:.2}ms"))
            .unwrap_or_else(|| "–".into()),
        l.p99_ms
            .map(|v| format!("{v:.2}ms"))
            .unwrap_or_else(|| "–".into()),
        l.max_ms
            .map(|v| format!("{v:.2}ms"))
            .unwrap_or_else(|| "–".into()),
    );
    match &o.write_error {
        Some(e) => crate::errln!("error: the run completed but its report was not written: {e}"),
        None => {
            for f in crate::report::FORMATS {
                crate::outln!("  {}: {}", f.label(), o.report_dir.join(f.file()).display());
            }
        }
    }
    if let Some(s) = &r.score {
        crate::outln!("  resilience score: {}/100", s.value);
    }
}

async fn demo_cmd(args: DemoArgs) -> anyhow::Result<Outcome> {
    if let Some(DemoSub::Worker { port, latency, .. }) = args.worker {
        demo::run_worker(port, latency.get()).await?;
        return Ok(Outcome::Pass);
    }
    let cfg = DemoConfig {
        replicas: args.replicas,
        port: args.port,
        restart_delay: args.restart_delay.get(),
        latency: args.latency.get(),
        health_interval: args.health_interval.get(),
        exe: None,
        log: demo::DemoLog::default(),
    };
    crate::errln!(
        "rattle demo: starting {} workers behind http://127.0.0.1:{}/",
        cfg.replicas,
        cfg.port
    );
    demo::run_standalone(cfg, shutdown_signal()).await?;
    Ok(Outcome::Pass)
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers, wait forever: the process still dies on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
}
