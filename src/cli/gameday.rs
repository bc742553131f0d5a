//! `rattle gameday run|validate` and `rattle schedule`: game days now, on a schedule, or as a
//! Kubernetes CronJob.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::ProgressArg;
use crate::gameday::emit::{self, EmitSettings};
use crate::gameday::run::{self as gdrun, RunSettings};
use crate::gameday::schedule::{self, ScheduleSettings};
use crate::gameday::{self, GameDay};
use crate::outcome::Outcome;

/// `rattle gameday`.
#[derive(Debug, Subcommand)]
pub enum GamedayCmd {
    /// Run a game day now: its experiments one after another, a combined report, the
    /// notification. Exit code: the highest of its experiments' (0 only if all passed).
    Run(GamedayRunArgs),
    /// Check game-day files and every experiment they name, without running anything.
    Validate {
        /// Game-day files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `--var` and `--var-file`.
        #[command(flatten)]
        vars: super::vars::VarArgs,
    },
}

/// Options shared by `gameday run` and `schedule`.
#[derive(Debug, clap::Args)]
pub struct RunFlags {
    /// Seed of every random choice in every experiment [default: a new one per experiment,
    /// recorded in its report].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Confirm in advance that experiments may act on targets they did not start (processes,
    /// pods, nodes). Needed in non-interactive use for such game days.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How to show each experiment's progress.
    #[arg(long, value_enum, default_value = "plain")]
    pub progress: ProgressArg,
    /// State directory for the journal of active faults (see `rattle run --state-dir`).
    #[arg(long, env = "RATTLE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig context for Kubernetes faults and probes.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// `--var` and `--var-file`.
    #[command(flatten)]
    pub vars: super::vars::VarArgs,
}

/// `rattle gameday run`.
#[derive(Debug, clap::Args)]
pub struct GamedayRunArgs {
    /// The game-day file (YAML or JSON).
    pub file: PathBuf,
    /// Directory of the combined report (index.html, index.md, index.json) and of each
    /// experiment's reports [default: reports/gameday-<name>-<UTC timestamp>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run even outside the game day's allowed window.
    #[arg(long, conflicts_with = "skip_outside_window")]
    pub ignore_window: bool,
    /// Outside the allowed window, say so and exit 0 instead of refusing with exit 2 (what the
    /// emitted CronJob uses: a run outside the window is skipped, not a failed job).
    #[arg(long)]
    pub skip_outside_window: bool,
    /// Validate, show each experiment's plan and the schedule, touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// What `--emit` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmitKind {
    /// A Kubernetes CronJob, ServiceAccount, least-privilege Role(s) and RoleBinding(s), and a
    /// ConfigMap with the game-day and experiment files.
    Cronjob,
}

/// `rattle schedule`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    rattle schedule gameday.yaml --yes                  run on the file's schedule until stopped\n  \
    rattle schedule gameday.yaml --max-runs 1           run once at the next due time, then exit\n  \
    rattle schedule gameday.yaml --emit cronjob --image registry.example.com/rattle:0.1.0 \
    --namespace chaos | kubectl apply -f -")]
pub struct ScheduleArgs {
    /// Game-day files, each with a `schedule`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Exit after this many runs have finished.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_runs: Option<u32>,
    /// Directory of the runs (one subdirectory each) and of history.jsonl
    /// [default: reports/schedule/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print Kubernetes manifests that run the game day in a cluster instead of scheduling it
    /// here.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub emit: Option<EmitKind>,
    /// With --emit: the container image (with the rattle binary on its PATH).
    #[arg(long, value_name = "IMAGE", default_value = concat!("rattle:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// With --emit: the namespace of the CronJob, its ServiceAccount and ConfigMap.
    #[arg(long, value_name = "NS", default_value = "rattle")]
    pub namespace: String,
    #[command(flatten)]
    pub flags: RunFlags,
}

fn load_all(files: &[PathBuf], vars: &super::vars::VarArgs) -> Option<Vec<GameDay>> {
    let vars = vars.vars()?;
    let mut out = Vec::new();
    let mut ok = true;
    for f in files {
        match gameday::load_with(f, &vars) {
            Ok(g) => out.push(g),
            Err(e) => {
                crate::errln!("error: {e}");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn settings(flags: &RunFlags, out_dir: PathBuf) -> RunSettings {
    RunSettings {
        out_dir,
        seed: flags.seed,
        yes: flags.yes,
        ignore_window: false,
        progress: super::progress_mode(flags.progress),
        state_dir: flags.state_dir.clone(),
        kube_context: flags.context.clone(),
        demo_exe: None,
    }
}

fn log_line(s: &str) {
    crate::errln!("{s}");
}

/// Warns about a webhook URL taken from an unset environment variable.
fn warn_webhook_env(gd: &GameDay) {
    if let Some(var) = gd
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook.url_env.as_ref())
        && std::env::var_os(var.as_str()).is_none()
    {
        crate::errln!(
            "warning: {}: notify.webhook.url_env names {}, which is not set: no notification \
             will be sent",
            gd.file.display(),
            var.as_str()
        );
    }
}

/// Asks once for every outside target of the game days (chosen with `seed`, as the run will),
/// unless `--yes`.
async fn confirm_targets(gds: &[GameDay], flags: &RunFlags, seed: u64) -> anyhow::Result<bool> {
    if flags.yes {
        return Ok(true);
    }
    let mut outside = Vec::new();
    for gd in gds {
        outside.extend(gdrun::outside_targets(gd, seed, flags.context.clone()).await);
    }
    Ok(outside.is_empty() || super::confirm(&outside)?)
}

/// `rattle gameday ...`.
pub async fn gameday_cmd(cmd: GamedayCmd) -> anyhow::Result<Outcome> {
    match cmd {
        GamedayCmd::Validate { files, vars } => {
            let Some(gds) = load_all(&files, &vars) else {
                return Ok(Outcome::BadInput);
            };
            for gd in gds {
                crate::outln!(
                    "ok: {} ({}, {} experiment(s){})",
                    gd.file.display(),
                    gd.name(),
                    gd.experiments.len(),
                    gd.schedule
                        .as_ref()
                        .map(|s| format!(", cron \"{}\" in {}", s.expr, s.tz.name()))
                        .unwrap_or_default()
                );
            }
            Ok(Outcome::Pass)
        }
        GamedayCmd::Run(args) => run_cmd(args).await,
    }
}

async fn run_cmd(args: GamedayRunArgs) -> anyhow::Result<Outcome> {
    let Some(mut gds) = load_all(std::slice::from_ref(&args.file), &args.flags.vars) else {
        return Ok(Outcome::BadInput);
    };
    let Some(gd) = gds.pop() else {
        return Ok(Outcome::BadInput);
    };
    if args.dry_run {
        return dry_run(&gd, &args).await;
    }
    if let Err(e) = gdrun::check_window(&gd, args.ignore_window, chrono::Utc::now()) {
        if args.skip_outside_window {
            crate::outln!("skipped: {}: {e}", gd.file.display());
            return Ok(Outcome::Pass);
        }
        crate::errln!("error: {}: {e}", gd.file.display());
        return Ok(Outcome::BadInput);
    }
    warn_webhook_env(&gd);
    // One seed for every experiment of this game day, chosen now: the targets confirmed are
    // the targets faulted, and `--seed` replays the whole game day.
    let seed = args.flags.seed.unwrap_or_else(rand::random);
    log_line(&format!(
        "game day {}: seed {seed} (replay with --seed {seed})",
        gd.name()
    ));
    if !confirm_targets(std::slice::from_ref(&gd), &args.flags, seed).await? {
        crate::errln!("not confirmed: nothing was touched");
        return Ok(Outcome::BadInput);
    }
    let out = args.out.clone().unwrap_or_else(|| {
        crate::report::default_dir(
            &format!("gameday-{}", gd.name()),
            chrono::Utc::now().timestamp_millis(),
        )
    });
    let mut s = settings(&args.flags, out.clone());
    s.yes = true; // confirmed above
    s.seed = Some(seed);
    s.ignore_window = args.ignore_window;
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        crate::errln!("stopping: reverting the running experiment's faults; the rest are skipped");
        signal_stop.cancel();
    });
    let report = gdrun::run(&gd, &s, stop, &log_line).await?;
    super::style::verdict_line(
        &report.verdict.as_str().to_uppercase(),
        &format!(": game day {} — {}", report.name, report.reason),
        super::style::stdout_color(),
    );
    for e in &report.experiments {
        crate::outln!(
            "  {}: {}{}",
            e.name,
            match e.status {
                gdrun::ExperimentStatus::Skipped => "skipped".to_string(),
                _ => e.verdict.map_or("–", |v| v.as_str()).to_string(),
            },
            e.exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default()
        );
    }
    crate::outln!("  report: {}", out.join("index.html").display());
    crate::outln!("  summary: {}", out.join("index.md").display());
    Ok(report.outcome())
}

async fn dry_run(gd: &GameDay, args: &GamedayRunArgs) -> anyhow::Result<Outcome> {
    crate::outln!(
        "game day {} ({}): {} experiment(s), pause {}, halt on failure: {}",
        gd.name(),
        gd.file.display(),
        gd.experiments.len(),
        crate::experiment::HumanDuration(gd.pause()),
        if gd.spec.halt_on_failure { "yes" } else { "no" }
    );
    let now = chrono::Utc::now();
    for line in schedule::describe(std::slice::from_ref(gd), now, 3) {
        crate::outln!("  {line}");
    }
    if let Some(w) = &gd.window {
        crate::outln!(
            "  allowed window {w}: {}",
            if w.contains(now) {
                "open now".to_string()
            } else {
                format!(
                    "closed now{}",
                    w.next_open(now)
                        .map(|t| format!(", opens {}", gameday::when::local(t, w.tz)))
                        .unwrap_or_default()
                )
            }
        );
    }
    let env = crate::fault::FaultEnv::with_kube_context(args.flags.context.clone());
    for (i, e) in gd.experiments.iter().enumerate() {
        crate::outln!("\n{}. {}", i + 1, e.path.display());
        match crate::plan::build(e.experiment.clone(), &e.path, args.flags.seed) {
            Ok(plan) => {
                let resolved = plan.resolve_all(&env).await;
                crate::out!("{}", plan.render(Some(&resolved)));
            }
            Err(err) => crate::outln!("  cannot plan: {err}"),
        }
    }
    crate::outln!("\ndry run: nothing was touched");
    Ok(Outcome::Pass)
}

/// `rattle schedule`.
pub async fn schedule_cmd(args: ScheduleArgs) -> anyhow::Result<Outcome> {
    let Some(gds) = load_all(&args.files, &args.flags.vars) else {
        return Ok(Outcome::BadInput);
    };
    if let Some(EmitKind::Cronjob) = args.emit {
        let s = EmitSettings {
            image: args.image.clone(),
            namespace: args.namespace.clone(),
        };
        let mut docs = Vec::new();
        for gd in &gds {
            for w in emit::warnings(gd) {
                crate::errln!("warning: {}: {w}", gd.file.display());
            }
            match emit::cronjob(gd, &s) {
                Ok(d) => docs.push(d),
                Err(e) => {
                    crate::errln!("error: {e}");
                    return Ok(Outcome::BadInput);
                }
            }
        }
        crate::out!("{}", docs.join("---\n"));
        return Ok(Outcome::Pass);
    }
    for gd in &gds {
        if gd.schedule.is_none() {
            crate::errln!(
                "error: {}: has no `schedule`: add one (cron and time zone) or run it once with \
                 `rattle gameday run`",
                gd.file.display()
            );
            return Ok(Outcome::BadInput);
        }
        warn_webhook_env(gd);
    }
    // The scheduler runs unattended: what the experiments would act on is confirmed now, once
    // (or in advance with --yes), for every run.
    let seed = args.flags.seed.unwrap_or_else(rand::random);
    if !confirm_targets(&gds, &args.flags, seed).await? {
        crate::errln!("not confirmed: nothing was scheduled");
        return Ok(Outcome::BadInput);
    }
    for line in schedule::describe(&gds, chrono::Utc::now(), 3) {
        crate::outln!("{line}");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join("schedule"));
    let settings = ScheduleSettings {
        out_dir: out,
        max_runs: args.max_runs,
        run: RunSettings {
            yes: true,
            ..settings(&args.flags, PathBuf::new())
        },
    };
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        crate::errln!("scheduler: stop requested");
        signal_stop.cancel();
    });
    let log: schedule::Log = Arc::new(|s: &str| crate::errln!("{s}"));
    Ok(schedule::run_scheduler(gds, settings, stop, log).await?)
}
