//! The run loop: setup, warm-up and baseline, fault windows, recovery observation, the rollback
//! guarantee, analysis and the report.
//!
//! Shape: the phases run in their own task, which owns the fault timeline; every injected fault
//! is put on the shared active list *before* anything else can happen to the run, and the
//! function that started the task reverts whatever is still on that list once the task ends,
//! however it ended: normally, with an error, stopped by a signal (the task is told to stop and
//! leaves at its next wait; an injection in progress completes and is recorded first), or by a
//! panic (the task's join error). Only the runner injects faults.

mod faults;
mod progress;
mod prom;
mod retention;
mod setup;
mod stop;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::analysis::{self, FaultSpan};
use crate::demo::DemoError;
use crate::fault::{FaultEnv, Target};
use crate::journal::{Journal, JournalError};
use crate::load::LoadError;
use crate::metrics::{self, Record, Recording, RunClock};
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::probe::{self, Probes};
use crate::report::{self, EventKind, Report, SteadyCheck, TimelineEvent, Totals, WindowReport};

pub use faults::DEBUG_PANIC_AFTER_INJECT;
use faults::{Active, inject_one, revert_all, revert_one};
pub use progress::ProgressMode;
use setup::Setup;

/// Errors that keep a run from starting at all (nothing was touched).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The demo service could not start.
    #[error("setup: the demo service did not start")]
    Demo(#[from] DemoError),
    /// A fault proxy of `proxies:` could not start (its listen address is in use...).
    #[error("setup: a fault proxy did not start")]
    Proxy(#[from] crate::proxy::ProxyError),
    /// The load generator rejected its configuration.
    #[error("load")]
    Load(#[from] LoadError),
    /// The report could not be written.
    #[error("writing the report")]
    Report(#[from] report::ReportError),
    /// Preflight: the report directory cannot be created or written (read-only, full, too long
    /// a name); found before anything was touched.
    #[error("the report directory cannot be written")]
    ReportDir(#[source] report::ReportError),
    /// The journal could not be opened: no fault may be applied without it.
    #[error("the journal of active faults")]
    Journal(#[from] JournalError),
    /// Preflight: a Prometheus server the experiment names is unreachable, or rejects a query
    /// (the message holds the query and Prometheus's own error); nothing was touched.
    #[error("Prometheus preflight: {0}")]
    Prometheus(String),
    /// An output to the dashboards cannot be used (`--metrics-addr` taken, Grafana's token
    /// unset); found before anything was touched.
    #[error("outputs")]
    Observe(#[from] crate::observe::ObserveError),
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Report directory; default `reports/<name>-<timestamp>/`.
    pub out_dir: Option<PathBuf>,
    /// Binary to re-execute for demo workers (tests); default the current executable.
    pub demo_exe: Option<PathBuf>,
    /// How to show progress.
    pub progress: ProgressMode,
    /// State directory (journal of active faults); default [`crate::journal::default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// Kubeconfig context for Kubernetes faults and probes; default the current context.
    pub kube_context: Option<String>,
    /// Outputs to the dashboards (`/metrics`, Pushgateway, Grafana) and cluster evidence.
    pub observe: crate::observe::Config,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// How it ended (verdict and exit code; after the gates were judged).
    pub outcome: Outcome,
    /// Where the reports went.
    pub report_dir: PathBuf,
    /// The report.
    pub report: Report,
    /// Why the report files could not be written (the run itself completed: its verdict stands
    /// and is printed; `outcome` is then at least [`Outcome::BadInput`], an environment error).
    pub write_error: Option<String>,
}

/// The phase of a run, for the progress line and the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starting what the experiment owns.
    Setup,
    /// Load running, figures not yet counted for the baseline.
    Warmup,
    /// Measuring the steady state before any fault.
    Baseline,
    /// Faults are being injected.
    Faults,
    /// Waiting for the system to recover.
    Recovery,
    /// Reverting and writing reports.
    Teardown,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Warmup => "warm-up",
            Phase::Baseline => "baseline",
            Phase::Faults => "faults",
            Phase::Recovery => "recovery",
            Phase::Teardown => "teardown",
        }
    }
}

/// What happened to each fault.
#[derive(Debug, Clone, Default)]
struct FaultState {
    targets: Vec<Target>,
    injected_us: Option<u64>,
    reverted_us: Option<u64>,
    error: Option<String>,
    revert_failed: bool,
    /// The fault's figures, once its recovery was decided during the run (final: more
    /// observation cannot change them), so its records could be forgotten.
    decided: Option<analysis::Recovery>,
    /// With it, each request of the load's mix's own figures for this fault (empty without a
    /// mix).
    decided_routes: Vec<analysis::Recovery>,
}

/// State shared between the phase task, the caller and the progress line.
struct Shared {
    clock: RunClock,
    plan: Plan,
    recording: Recording,
    active: Mutex<Vec<Active>>,
    faults: Mutex<Vec<FaultState>>,
    timeline: Mutex<Vec<TimelineEvent>>,
    phase: watch::Sender<Phase>,
    probes: Mutex<Option<Probes>>,
    progress: progress::Printer,
    journal: Journal,
    /// Handles the fault kinds share (clients, proxies).
    env: FaultEnv,
    /// Unique id of this run: `<experiment>-<start unix ms>-<pid>`.
    run_id: String,
    /// The outputs to the dashboards and the cluster watchers.
    observer: crate::observe::Observer,
    /// The baseline's SLO check, made when the baseline ended, so its records could be
    /// forgotten.
    before_slo: Mutex<Option<(analysis::SloCheck, Vec<report::RequestSloCheck>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The run's shared state, with its clock started now (t = 0).
    fn new(
        plan: Plan,
        env: FaultEnv,
        journal: Journal,
        printer: progress::Printer,
        outputs: crate::observe::Prepared,
    ) -> (Arc<Self>, watch::Receiver<Phase>) {
        let clock = RunClock::start_now();
        let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
        let run_id = format!(
            "{}-{}-{}",
            *plan.experiment.name,
            clock.start_unix_ms(),
            std::process::id()
        );
        let recording = Recording::with_routes(
            plan.window,
            true,
            plan.load.as_ref().map_or(0, |l| l.mix.len()),
        );
        let observer = outputs.start(crate::observe::RunInfo {
            experiment: plan.experiment.name.value.clone(),
            run_id: run_id.clone(),
            clock,
            recording: plan.load.as_ref().map(|_| recording.clone()),
            window: plan.window,
            kube_context: env.kube_context().map(str::to_string),
            kube_namespaces: kube_namespaces(&plan),
            log: {
                let p = printer.clone();
                Arc::new(move |line: &str| p.log(line))
            },
        });
        let shared = Arc::new(Shared {
            clock,
            recording,
            active: Mutex::new(Vec::new()),
            faults: Mutex::new(vec![FaultState::default(); plan.faults.len()]),
            timeline: Mutex::new(Vec::new()),
            phase: phase_tx,
            probes: Mutex::new(None),
            progress: printer,
            journal,
            env,
            run_id,
            observer,
            before_slo: Mutex::new(None),
            plan,
        });
        // Phase figures start at the end of warm-up: a cut there, before any request.
        let _ = shared.recording.cut_at(dur_us(shared.plan.warmup));
        (shared, phase_rx)
    }

    fn event(&self, event: EventKind, detail: impl Into<String>) {
        let detail = detail.into();
        let t_us = self.clock.now_us();
        // Every timeline event (inject, revert, stop, errors) as a diagnostic too, for -v and
        // for --log-format json in a cluster, where the progress lines are not collected.
        tracing::info!(event = event.as_str(), t_s = t_us as f64 / 1e6, "{detail}");
        self.progress.log(&format!(
            "[{:>8.3}s] {}: {detail}",
            t_us as f64 / 1e6,
            event.as_str()
        ));
        lock(&self.timeline).push(TimelineEvent {
            t_ms: analysis::us_to_ms(t_us),
            event,
            detail,
        });
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
        self.event(EventKind::Phase, phase.as_str());
    }

    /// Sleeps until `t` after the run's start; false if the run was stopped meanwhile.
    async fn sleep_until(&self, t: Duration, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(self.clock.origin() + t) => true,
            _ = stop.cancelled() => false,
        }
    }

    /// Each request of the load's mix's figures for the fault over `span`, from `sorted`
    /// (every request's records, sorted): over its own records, judged by its own SLO, or the
    /// steady state's when it has none. Empty without a mix.
    fn route_recoveries(
        &self,
        sorted: &[Record],
        span: analysis::FaultSpan,
    ) -> Vec<analysis::Recovery> {
        let Some(load) = &self.plan.load else {
            return Vec::new();
        };
        let requests = self
            .plan
            .experiment
            .load
            .as_ref()
            .map(|l| l.http.requests.as_slice())
            .unwrap_or_default();
        (0..load.mix.len())
            .map(|route| {
                let id = u16::try_from(route).unwrap_or(u16::MAX);
                let mine: Vec<Record> = sorted.iter().filter(|r| r.route == id).copied().collect();
                let slo = requests
                    .get(route)
                    .map(|r| &r.slo)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(self.plan.slo());
                analysis::fault_recovery(&mine, slo, span)
            })
            .collect()
    }

    fn sorted_records(&self) -> Vec<Record> {
        let mut r = self.recording.records();
        r.sort_by_key(|r| r.done_us);
        r
    }

    fn probe_results(&self) -> Vec<probe::ProbeResult> {
        lock(&self.probes)
            .as_ref()
            .map(|p| p.results())
            .unwrap_or_default()
    }
}

/// A stop condition that held long enough: what the local watcher (`stop.rs`) and the
/// Prometheus one (`prom.rs`) both return, so neither imports the other's.
#[derive(Debug, Clone)]
struct Trigger {
    /// The condition and the value that crossed it, in words.
    condition: String,
    /// When it triggered (µs since run start).
    at_us: u64,
}

/// How the phase task ended.
#[derive(Debug)]
enum Ending {
    /// All phases ran.
    Completed,
    /// The baseline did not hold; no fault was injected.
    NotSteady(String),
    /// Stopped from outside (signal).
    Stopped,
    /// A fault could not be resolved or injected.
    FaultError(String),
    /// The phases panicked (a bug in rattle); the rollback still ran.
    Panicked,
    /// A `stop_when` condition held.
    StopCondition(Trigger),
}

/// Runs a planned experiment to the end and writes its reports. `interrupt` resolves when the
/// run must stop (Ctrl-C, SIGTERM): faults are reverted, a partial report is written, exit 3.
///
/// Reads as the run's phases: preflight, setup, the phases (warm-up, baseline, fault timeline,
/// recovery observation) beside the stop conditions, the rollback guarantee, teardown, analysis
/// and the report.
pub async fn run(
    mut plan: Plan,
    opts: RunOptions,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let printer = progress::Printer::new(opts.progress);
    // The outputs first: a bad flag must leave nothing behind (not even a report directory).
    let outputs = crate::observe::prepare(&opts.observe).await?;
    let journal = preflight(&plan, &opts, &printer)?;
    prom::preflight(&plan).await.map_err(RunError::Prometheus)?;
    tokio::pin!(interrupt);

    // Setup before the clock: nothing has been touched before this.
    let env = FaultEnv::with_kube_context(opts.kube_context.clone());
    let mut setup = Setup::default();
    let interrupted = match setup
        .start_services(&mut plan, &opts, &env, &printer, &mut interrupt)
        .await
    {
        Ok(started) => !started,
        Err(e) => {
            setup.stop_before_start(&env, &printer).await;
            return Err(e);
        }
    };

    // t = 0: the clock, the load, the probes.
    let (shared, phase_rx) = Shared::new(plan, env, journal, printer, outputs);
    if !interrupted && let Err(e) = setup.start_load(&shared, phase_rx) {
        setup.stop(&shared).await;
        let failed = Outcome::BadInput;
        shared
            .observer
            .finish(failed.verdict().as_str(), failed.exit_code())
            .await;
        return Err(e);
    }

    let ending = if interrupted {
        shared.event(EventKind::Stop, "interrupted during setup");
        Ending::Stopped
    } else {
        drive(&shared, &mut interrupt).await
    };

    // Rollback guarantee: whatever happened above, revert what is still active.
    let (revert_failed, reverted_all_us) = rollback(&shared, &ending).await;
    let stopped = setup.stop(&shared).await;
    let cluster = shared.observer.cluster_evidence().await;

    let mut report = analyse(
        &shared,
        &ending,
        revert_failed,
        stopped.load_end_us,
        &stopped.probe_results,
    );
    report.stop = stop_report(&ending, reverted_all_us);
    let prom_gates = &shared.plan.experiment.gates;
    if !prom_gates.prometheus.is_empty() {
        // Measured now, over the finished run's phases; judged again with the other gates.
        report.gates = prom::evaluate_gates(&prom_gates.prometheus, &report).await;
        report::judge(&mut report, prom_gates);
    }
    add_evidence(&shared, &mut report, cluster).await;
    let report_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| report::default_dir(&report.experiment.name, report.started_at_unix_ms));
    // The run is over and its faults reverted: a report that cannot be written (disk full
    // since preflight) must not hide the verdict. It is returned beside it, and the exit code
    // says the environment failed (2) unless the run's own outcome is worse (3, 4).
    let write_error = report::write(&report, &report_dir)
        .err()
        .map(|e| crate::probe::error_chain(&e));
    match &write_error {
        None => tracing::info!(dir = %report_dir.display(), "reports written"),
        Some(e) => tracing::info!(dir = %report_dir.display(), error = %e, "reports not written"),
    }
    let outcome = match write_error {
        Some(_) => report.outcome().max(Outcome::BadInput),
        None => report.outcome(),
    };
    Ok(RunOutcome {
        outcome,
        report_dir,
        report,
        write_error,
    })
}

/// The namespaces a run touches in a cluster, from what its faults and probes declare they
/// need: `None` if it touches no cluster, `Some(None)` if it touches every namespace.
fn kube_namespaces(plan: &Plan) -> Option<Option<Vec<String>>> {
    use crate::fault::KubeScope;
    let access = plan
        .faults
        .iter()
        .flat_map(|f| f.spec.fault().kube_access())
        .chain(
            plan.probes
                .iter()
                .flat_map(|p| p.spec.probe().kube_access()),
        );
    let mut any = false;
    let mut namespaces = std::collections::BTreeSet::new();
    for a in access {
        any = true;
        match a.scope {
            KubeScope::Cluster => return Some(None),
            KubeScope::Namespaces(ns) => namespaces.extend(ns),
        }
    }
    any.then(|| Some(namespaces.into_iter().collect()))
}

/// The outputs' part of the report: the cluster's events under their faults and on the
/// timeline, then (the verdict being known) the last push and annotation updates, whose
/// warnings join the timeline too. Warnings never change the verdict.
async fn add_evidence(
    shared: &Shared,
    report: &mut Report,
    cluster: crate::observe::events::Collected,
) {
    let events = cluster
        .events
        .into_iter()
        .map(|e| report::ClusterEventReport {
            t_ms: analysis::us_to_ms(e.t_us),
            namespace: e.namespace,
            object: e.object,
            reason: e.reason,
            severity: e.severity,
            message: e.message,
            source: e.source.to_string(),
            fault: None,
        })
        .collect();
    report::cluster::attach(report, events);
    if cluster.dropped > 0 {
        report.timeline.push(TimelineEvent {
            t_ms: report.timeline.last().map_or(0.0, |e| e.t_ms),
            event: EventKind::Warning,
            detail: format!(
                "{} more cluster event(s) not kept (at most {} per run)",
                cluster.dropped,
                crate::observe::events::MAX_EVENTS
            ),
        });
    }
    let warnings = shared
        .observer
        .finish(report.verdict.as_str(), report.exit_code)
        .await;
    for (t_us, detail) in warnings {
        report.timeline.push(TimelineEvent {
            t_ms: analysis::us_to_ms(t_us),
            event: EventKind::Warning,
            detail,
        });
    }
    report.timeline.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
}

/// Before anything starts: the plan printed, the load's configuration checked, the journal
/// opened, trusted and writable (no fault may be applied without it), its leftovers mentioned,
/// and everything the run will write checked (issue #19): the report directory created and
/// writable, and the names of the report directory and journal entries within the file-name
/// limit. All of it before any fault, so that a run that could not record itself never starts.
fn preflight(
    plan: &Plan,
    opts: &RunOptions,
    printer: &progress::Printer,
) -> Result<Journal, RunError> {
    printer.log(&plan.render(None));
    if let Some(cfg) = plan.load.as_ref() {
        cfg.validate()?;
    }
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(crate::journal::default_state_dir);
    let journal = Journal::open(&state_dir)?;
    journal.check_writable()?;
    match journal.clean_stale_temps() {
        Ok(removed) if !removed.is_empty() => printer.log(&format!(
            "removed {} torn journal write(s) left by a crashed run in {}",
            removed.len(),
            journal.dir().display()
        )),
        Ok(_) => {}
        Err(e) => printer.log(&format!("warning: cannot clean the journal: {e}")),
    }
    journal.check_name(&plan.experiment.name)?;
    report::check_writable(opts.out_dir.as_deref(), &plan.experiment.name)
        .map_err(RunError::ReportDir)?;
    match journal.leftovers() {
        Ok(left) if !left.is_empty() => printer.log(&format!(
            "warning: the journal in {} holds {} fault(s) that earlier runs never reverted: \
             run `rattle recover` to revert them",
            journal.dir().display(),
            left.len()
        )),
        Ok(_) => {}
        Err(e) => printer.log(&format!("warning: cannot read the journal: {e}")),
    }
    tracing::info!(
        journal = %journal.dir().display(),
        faults = plan.faults.len(),
        "preflight passed: journal writable, report directory writable"
    );
    Ok(journal)
}

/// Runs analysis that reads every kept record (a copy and a sort: tens of milliseconds at high
/// rates), or a journal write (fsyncs), on tokio's blocking pool, not on the runtime the load's
/// sends share. On one core the
/// kernel still lets the runtime's thread preempt it at every send it wakes for; inline, it held
/// the runtime's only worker and every send due meanwhile went out late, at the instant a
/// fault's impact is measured. A panic in it stays a panic of the caller.
async fn off_the_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("analysis task cancelled: {e}"),
    }
}

/// A job for the analysis thread.
type Job = Box<dyn FnOnce() + Send>;

/// Analysis of the run's records (the baseline and final SLO checks, recovery decisions, the
/// retention step) on one thread of the lowest CPU priority (nice 19): copying and sorting
/// hundreds of thousands of records takes tens of milliseconds, and on a core shared with the
/// load's runtime (`taskset`, a one-CPU container) an ordinary thread would take turns with it,
/// sending requests late; at nice 19 the runtime's worker wins every wake-up and keeps ~98 % of
/// a contended core. Falls back to the blocking pool if the thread cannot be started. A panic
/// in `work` is resumed in the caller, as [`off_the_runtime`]'s is.
async fn in_background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    static THREAD: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    let sender = THREAD.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rattle-analysis".into())
            .spawn(move || {
                lower_priority();
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    let Some(sender) = sender else {
        return off_the_runtime(work).await;
    };
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = done.send(r);
    });
    // The sender is plain data: a poisoned lock still sends.
    let sent = sender.lock().unwrap_or_else(|e| e.into_inner()).send(job);
    match sent {
        Ok(()) => match result.await {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the analysis thread ended"),
        },
        // Unreachable in practice: the thread never ends (jobs catch their own panics).
        Err(std::sync::mpsc::SendError(_)) => panic!("the analysis thread ended"),
    }
}

/// Nice 19 for the calling thread (Linux: nice is per thread). Unprivileged callers may always
/// lower their priority; a failure only leaves the thread at its priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// The phases in their own task (so that a panic in them still reaches the rollback), with the
/// stop conditions watched beside them and `interrupt` raced against both. Returns how the run
/// ended; whatever that was, faults may still be active: the caller rolls back.
async fn drive(
    shared: &Arc<Shared>,
    interrupt: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Ending {
    let stop = CancellationToken::new();
    let task = tokio::spawn(phases(shared.clone(), stop.clone()));
    let watch_stop = CancellationToken::new();
    let watcher = tokio::spawn(stop::watch(shared.clone(), watch_stop.clone()));
    let retainer = tokio::spawn(retention::run(shared.clone(), watch_stop.clone()));
    tokio::pin!(task);
    tokio::pin!(watcher);
    let mut cause = None;
    let joined = tokio::select! {
        j = &mut task => j,
        _ = interrupt.as_mut() => {
            shared.event(EventKind::Stop, "interrupted: reverting every active fault");
            cause = Some(Ending::Stopped);
            stop.cancel();
            (&mut task).await
        }
        Ok(Some(trigger)) = &mut watcher => {
            shared.event(EventKind::Stop, format!("stop condition: {}: reverting every active fault", trigger.condition));
            cause = Some(Ending::StopCondition(trigger));
            stop.cancel();
            (&mut task).await
        }
    };
    watch_stop.cancel();
    let _ = retainer.await;
    let ending = match joined {
        Ok(e) => e,
        Err(_) => {
            shared.event(
                EventKind::Error,
                "the run panicked: reverting every active fault",
            );
            Ending::Panicked
        }
    };
    cause.unwrap_or(ending)
}

/// The rollback guarantee: reverts every fault still on the active list. Returns whether a
/// revert failed (its journal entry stays for `rattle recover`) and when the last one ended.
async fn rollback(shared: &Shared, ending: &Ending) -> (bool, u64) {
    shared.set_phase(Phase::Teardown);
    let revert_failed = revert_all(shared).await;
    let reverted_all_us = shared.clock.now_us();
    if let Ending::StopCondition(t) = ending {
        shared.event(
            EventKind::Stop,
            format!(
                "every fault reverted {:.1} ms after the condition held",
                (reverted_all_us.saturating_sub(t.at_us)) as f64 / 1000.0
            ),
        );
    }
    (revert_failed, reverted_all_us)
}

/// report.json's `stop`, when a stop condition ended the run.
fn stop_report(ending: &Ending, reverted_all_us: u64) -> Option<report::StopReport> {
    match ending {
        Ending::StopCondition(t) => Some(report::StopReport {
            condition: t.condition.clone(),
            triggered_at_ms: analysis::us_to_ms(t.at_us),
            reverted_at_ms: analysis::us_to_ms(reverted_all_us),
            time_to_revert_ms: analysis::us_to_ms(reverted_all_us.saturating_sub(t.at_us)),
        }),
        _ => None,
    }
}

/// The phases after setup: warm-up and baseline, the fault timeline, recovery observation.
/// Returns how they ended; never reverts what is on the active list except at a fault's
/// planned end.
async fn phases(s: Arc<Shared>, stop: CancellationToken) -> Ending {
    if let Some(ending) = baseline(&s, &stop).await {
        return ending;
    }
    if let Some(ending) = fault_timeline(&s, &stop).await {
        return ending;
    }
    observe_recovery(&s, &stop).await
}

/// Warm-up, then the baseline: when the experiment has faults, the steady state must hold over
/// it, else the run ends before any fault (`NotSteady`).
async fn baseline(s: &Arc<Shared>, stop: &CancellationToken) -> Option<Ending> {
    let plan = &s.plan;
    s.set_phase(Phase::Warmup);
    if !s.sleep_until(plan.warmup, stop).await {
        return Some(Ending::Stopped);
    }
    s.set_phase(Phase::Baseline);
    let baseline_end = plan.baseline_end();
    if !s.sleep_until(baseline_end, stop).await {
        return Some(Ending::Stopped);
    }
    if !plan.faults.is_empty() {
        let shared = s.clone();
        let warmup = plan.warmup;
        let before = in_background(move || {
            steady_check(
                &shared,
                &shared.sorted_records(),
                None,
                &shared.probe_results(),
                warmup,
                baseline_end,
            )
        })
        .await;
        if let Some(slo) = before.slo_check.clone() {
            *lock(&s.before_slo) = Some((slo, before.report.requests.clone()));
        }
        let before = before.report;
        if !before.held {
            return Some(Ending::NotSteady(describe_unsteady(&before)));
        }
        s.event(EventKind::Baseline, "steady state held");
        s.set_phase(Phase::Faults);
    }
    None
}

/// The fault timeline: injections and planned reverts, in time order (reverts before
/// injections at the same instant).
async fn fault_timeline(s: &Shared, stop: &CancellationToken) -> Option<Ending> {
    let mut events: Vec<(Duration, bool, usize)> = Vec::new(); // (t, is_revert, fault)
    for (i, f) in s.plan.faults.iter().enumerate() {
        events.push((f.at, false, i));
        if let Some(d) = f.duration {
            events.push((f.at + d, true, i));
        }
    }
    events.sort_by_key(|&(t, is_revert, i)| (t, !is_revert, i));
    for (t, is_revert, i) in events {
        if !s.sleep_until(t, stop).await {
            return Some(Ending::Stopped);
        }
        if is_revert {
            revert_one(s, i).await;
        } else if let Err(e) = inject_one(s, i).await {
            return Some(Ending::FaultError(e));
        }
    }
    None
}

/// Recovery observation: until `duration`, then on while a fault's recovery is still
/// undecided, up to `recovery_timeout` more.
async fn observe_recovery(s: &Arc<Shared>, stop: &CancellationToken) -> Ending {
    let plan = &s.plan;
    s.set_phase(Phase::Recovery);
    if !s.sleep_until(plan.duration, stop).await {
        return Ending::Stopped;
    }
    let deadline = plan.duration + plan.recovery_timeout;
    loop {
        let now_us = s.clock.now_us();
        let shared = s.clone();
        let pending = in_background(move || pending_recoveries(&shared, now_us)).await;
        if pending == 0 || s.clock.origin().elapsed() >= deadline {
            break;
        }
        let next = s.clock.origin().elapsed() + Duration::from_millis(250);
        if !s.sleep_until(next.min(deadline), stop).await {
            return Ending::Stopped;
        }
    }
    Ending::Completed
}

/// Faults whose recovery cannot be decided yet from what was observed up to `now_us`.
fn pending_recoveries(s: &Shared, now_us: u64) -> usize {
    if s.plan.load.is_none() {
        return pending_probe_recoveries(s, now_us);
    }
    // Sorted only when a fault is still undecided: a copy and sort of every kept record costs
    // tens of milliseconds at high rates, on the runtime the load's sends share.
    let mut records = None;
    let faults = lock(&s.faults).clone();
    faults
        .iter()
        .zip(&s.plan.faults)
        .filter(|(st, pf)| {
            if st.decided.is_some() {
                return false;
            }
            let Some(span) = fault_span(&s.plan, pf, st, now_us) else {
                return false;
            };
            let records = records.get_or_insert_with(|| s.sorted_records());
            analysis::fault_recovery(records, s.plan.slo(), span)
                .time_to_recover_ms
                .is_none()
        })
        .count()
}

/// Without load, faults whose recovery the probes that decide it have not decided yet.
fn pending_probe_recoveries(s: &Shared, now_us: u64) -> usize {
    let deciders = probe::recovery_deciders(&s.plan.probes);
    if deciders.is_empty() {
        return 0;
    }
    let results = s.probe_results();
    let faults = lock(&s.faults).clone();
    faults
        .iter()
        .zip(&s.plan.faults)
        .filter(|(st, pf)| {
            fault_span(&s.plan, pf, st, now_us).is_some_and(|span| {
                probe::probe_recovery(
                    &results,
                    &deciders,
                    span.injected_us,
                    span.from_us,
                    span.hold_us,
                    span.observed_until_us,
                )
                .time_to_recover_ms
                .is_none()
            })
        })
        .count()
}

fn fault_span(
    plan: &Plan,
    pf: &crate::plan::PlannedFault,
    st: &FaultState,
    observed_until_us: u64,
) -> Option<FaultSpan> {
    let injected_us = st.injected_us?;
    let from_us = match pf.duration {
        Some(_) => st
            .reverted_us
            .unwrap_or(injected_us + dur_us(pf.duration.unwrap_or_default())),
        None => injected_us,
    };
    Some(FaultSpan {
        injected_us,
        from_us,
        hold_us: dur_us(plan.hold),
        observed_until_us,
    })
}

fn dur_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A steady-state check, and the SLO check it made (kept so that the records it read can be
/// forgotten).
struct Steady {
    report: SteadyCheck,
    slo_check: Option<analysis::SloCheck>,
}

/// The steady-state check over `[from, to)`: the SLO over the requests completing then (and
/// each mix request's own SLO over its own), or `known`, the same checks made earlier over the
/// same span; and the probes.
fn steady_check(
    s: &Shared,
    sorted: &[Record],
    known: Option<(analysis::SloCheck, Vec<report::RequestSloCheck>)>,
    probes: &[probe::ProbeResult],
    from: Duration,
    to: Duration,
) -> Steady {
    let (from_us, to_us) = (dur_us(from), dur_us(to));
    let (slo, requests) = match (&s.plan.load, known) {
        (None, _) => (None, Vec::new()),
        (Some(_), Some((slo, requests))) => (Some(slo), requests),
        (Some(_), None) => {
            let lo = sorted.partition_point(|r| r.done_us < from_us);
            let hi = sorted.partition_point(|r| r.done_us < to_us);
            let span = &sorted[lo..hi];
            let requests = s
                .plan
                .request_slos()
                .map(|(route, name, slo)| {
                    let mine: Vec<Record> =
                        span.iter().filter(|r| r.route == route).copied().collect();
                    report::RequestSloCheck {
                        name: name.to_string(),
                        slo: (&analysis::check_slo(&mine, slo)).into(),
                    }
                })
                .collect();
            (Some(analysis::check_slo(span, s.plan.slo())), requests)
        }
    };
    let names: Vec<String> = s.plan.probes.iter().map(|p| p.name.clone()).collect();
    let probes = probe::summarize(&names, probes, from_us, to_us);
    let held = slo.as_ref().is_none_or(|c| c.held)
        && requests.iter().all(|r| r.slo.held)
        && probes.iter().all(|p| p.failed == 0);
    Steady {
        report: SteadyCheck {
            held,
            from_ms: from_us / 1000,
            to_ms: to_us / 1000,
            slo: slo.as_ref().map(Into::into),
            requests,
            probes: probes.iter().map(Into::into).collect(),
        },
        slo_check: slo,
    }
}

fn describe_unsteady(c: &SteadyCheck) -> String {
    format!(
        "system was not steady during the baseline: {}",
        c.problems().join("; ")
    )
}

fn window_reports(recording: &Recording) -> Vec<WindowReport> {
    recording
        .windows()
        .iter()
        .map(|w| {
            let l = &w.latency;
            WindowReport {
                t_ms: w.start_us / 1000,
                sent: w.counts.sent(),
                ok: w.counts.ok(),
                failed: w.counts.failed(),
                missed: w.counts.get(metrics::Outcome::Missed),
                p50_ms: l.p50_us.map(analysis::us_to_ms),
                p90_ms: l.p90_us.map(analysis::us_to_ms),
                p99_ms: l.p99_us.map(analysis::us_to_ms),
                max_ms: l.max_us.map(analysis::us_to_ms),
                errors: errors_by_class(&w.counts),
                ok_latency: Some((&w.ok_latency).into()),
                failed_latency: Some((&w.failed_latency).into()),
                send_lag: Some((&w.send_lag).into()),
            }
        })
        .collect()
}

fn errors_by_class(c: &crate::metrics::OutcomeCounts) -> std::collections::BTreeMap<String, u64> {
    metrics::Outcome::ALL
        .iter()
        .filter(|o| !o.is_ok() && c.get(**o) > 0)
        .map(|o| (o.as_str().to_string(), c.get(*o)))
        .collect()
}

fn totals(recording: &Recording, load_us: u64) -> Totals {
    let c = recording.totals();
    let h = recording.total_latency();
    let (ok, failed) = recording.total_latency_by_outcome();
    let q = |q: f64| (!h.is_empty()).then(|| analysis::us_to_ms(h.value_at_quantile(q)));
    Totals {
        requests: c.total(),
        sent: c.sent(),
        ok: c.ok(),
        failed: c.failed(),
        missed: c.get(metrics::Outcome::Missed),
        availability: (c.total() > 0).then(|| c.ok() as f64 / c.total() as f64),
        rate_per_sec: (load_us > 0 && c.total() > 0)
            .then(|| c.sent() as f64 / (load_us as f64 / 1e6)),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: (!h.is_empty()).then(|| analysis::us_to_ms(h.max())),
        errors: errors_by_class(&c),
        ok_latency: Some(report::LatencyReport::of_histogram(&ok)),
        failed_latency: Some(report::LatencyReport::of_histogram(&failed)),
        unsent: recording.unsent(),
        generator: Some(recording.send_lag())
            .filter(|l| l.run.count > 0 || c.total() > 0)
            .map(|l| (&l).into()),
    }
}

/// The figures of each request of the load's mix, from its own recording, as the whole's are
/// from the run's (the phases from its segments when both ends can be cut, else from the
/// records kept of it).
fn request_reports(
    s: &Shared,
    report: &Report,
    sorted: &[Record],
    load_end_us: u64,
) -> Vec<report::RequestReport> {
    let Some(load) = &s.plan.load else {
        return Vec::new();
    };
    let total_weight: f64 = load.mix.iter().map(|m| m.weight).sum();
    let spans = report::phase_spans(report);
    // Per fault, every request's recovery: decided during the run (its records may be gone
    // since), else from the records kept.
    let states = lock(&s.faults).clone();
    let per_fault: Vec<(String, Vec<analysis::Recovery>)> = s
        .plan
        .faults
        .iter()
        .zip(&states)
        .map(|(pf, st)| {
            let routes = if st.decided.is_some() {
                st.decided_routes.clone()
            } else {
                fault_span(&s.plan, pf, st, load_end_us)
                    .map(|span| s.route_recoveries(sorted, span))
                    .unwrap_or_default()
            };
            (pf.name.clone(), routes)
        })
        .collect();
    load.mix
        .iter()
        .zip(s.recording.routes())
        .enumerate()
        .map(|(route, (m, rec))| {
            let route = u16::try_from(route).unwrap_or(u16::MAX);
            let stats = |span: Option<(u64, u64)>| {
                span.map(|(a, b)| {
                    let cut = rec.cut_at(a).and(rec.cut_at(b));
                    let figures = cut.ok().and_then(|()| rec.span_figures(a, b));
                    let stats = match figures {
                        Some(f) => analysis::span_stats_of(&f, a, b),
                        None => {
                            let mine: Vec<Record> = sorted
                                .iter()
                                .filter(|r| r.route == route)
                                .copied()
                                .collect();
                            analysis::span_stats(&mine, a, b)
                        }
                    };
                    (&stats).into()
                })
            };
            let mut totals = totals(rec, load_end_us);
            totals.generator = None;
            let share = (report.totals.requests > 0)
                .then(|| totals.requests as f64 / report.totals.requests as f64);
            let faults = per_fault
                .iter()
                .map(|(fault, routes)| report::RequestFaultReport {
                    fault: fault.clone(),
                    recovery: routes.get(usize::from(route)).map(Into::into),
                })
                .collect();
            report::RequestReport {
                faults,
                name: m.name.clone(),
                weight: m.weight,
                share_asked: if total_weight > 0.0 {
                    m.weight / total_weight
                } else {
                    0.0
                },
                share,
                totals,
                windows: window_reports(rec),
                phases: Some(report::Phases {
                    baseline: stats(spans.baseline),
                    fault: stats(spans.fault),
                    recovery: stats(spans.recovery),
                }),
            }
        })
        .collect()
}

/// A pass or a fail whose figures rattle itself distorted becomes inconclusive (exit 5): when
/// rattle's own send lag stayed over 10 ms for a second, latencies and missed requests measure
/// the load generator, not the service. Aborted runs and errors keep their outcome.
fn unless_rattle_fell_behind(
    outcome: Outcome,
    reason: String,
    lag: &metrics::SendLag,
) -> (Outcome, String) {
    let Some(since_us) = lag.behind.since_us else {
        return (outcome, reason);
    };
    if !matches!(outcome, Outcome::Pass | Outcome::Fail) {
        return (outcome, reason);
    }
    let ms = |us: Option<u64>| us.map_or("-".to_string(), |v| format!("{}", analysis::us_to_ms(v)));
    (
        Outcome::Inconclusive,
        format!(
            "rattle fell behind its own schedule from {:.1}s ({}its own send lag stayed over \
             {} ms for up to {:.1}s; send lag p99 {} ms, max {} ms, {} of {} requests sent \
             over 10 ms late): the figures measure rattle, not the service. Lower the rate or \
             give rattle more CPU. Without that, the run would have said: {reason}",
            since_us as f64 / 1e6,
            metrics::behind_cause(lag.behind.cpu_saturated, lag.behind.runtime_stalled),
            metrics::LAG_LATE_US / 1000,
            lag.behind.longest_us as f64 / 1e6,
            ms(lag.run.p99_us),
            ms(lag.run.max_us),
            lag.run.over_10ms,
            lag.run.count,
        ),
    )
}

fn analyse(
    s: &Shared,
    ending: &Ending,
    revert_failed: bool,
    load_end_us: u64,
    probes: &[probe::ProbeResult],
) -> Report {
    let plan = &s.plan;
    let sorted = s.sorted_records();
    let states = lock(&s.faults).clone();
    let mut any_unrecovered = None;
    let faults: Vec<report::FaultReport> = plan
        .faults
        .iter()
        .zip(&states)
        .map(|(pf, st)| {
            let deciders = probe::recovery_deciders(&plan.probes);
            let recovery = if let Some(decided) = &st.decided {
                Some(decided.clone())
            } else if plan.load.is_some() {
                fault_span(plan, pf, st, load_end_us)
                    .map(|span| analysis::fault_recovery(&sorted, plan.slo(), span))
            } else if !deciders.is_empty() {
                // No load: the probes that decide recovery do (the replacement's readiness).
                fault_span(plan, pf, st, load_end_us).map(|span| {
                    probe::probe_recovery(
                        probes,
                        &deciders,
                        span.injected_us,
                        span.from_us,
                        span.hold_us,
                        span.observed_until_us,
                    )
                })
            } else {
                None
            };
            if let Some(r) = &recovery
                && r.time_to_recover_ms.is_none()
                && any_unrecovered.is_none()
            {
                any_unrecovered = Some(format!(
                    "fault {} did not recover: {}",
                    pf.name,
                    r.reason.clone().unwrap_or_default()
                ));
            }
            report::FaultReport {
                name: pf.name.clone(),
                kind: pf.spec.kind().to_string(),
                targets: st.targets.iter().map(Into::into).collect(),
                injected_at_ms: st.injected_us.map(analysis::us_to_ms),
                reverted_at_ms: st.reverted_us.map(analysis::us_to_ms),
                error: st.error.clone(),
                recovery: recovery.as_ref().map(Into::into),
                effect: crate::fault::net::measured(&s.env, &st.targets)
                    .as_ref()
                    .map(Into::into),
            }
        })
        .collect();

    let before = (!plan.faults.is_empty()).then(|| {
        let to = plan.baseline_end().min(Duration::from_micros(load_end_us));
        // The check made when the baseline ended covers the same span, if the run got there.
        let known = (to == plan.baseline_end())
            .then(|| lock(&s.before_slo).clone())
            .flatten();
        steady_check(s, &sorted, known, probes, plan.warmup, to).report
    });
    let after_from = Duration::from_micros(load_end_us).saturating_sub(plan.hold);
    let completed = matches!(ending, Ending::Completed);
    let after = completed.then(|| {
        steady_check(
            s,
            &sorted,
            None,
            probes,
            after_from,
            Duration::from_micros(load_end_us),
        )
        .report
    });

    let (outcome, reason) = if revert_failed {
        (
            Outcome::RevertFailed,
            "a revert failed: something may still be broken; see the faults' errors".to_string(),
        )
    } else {
        match ending {
            Ending::Stopped => (
                Outcome::Aborted,
                "the run was stopped; every active fault was reverted".to_string(),
            ),
            Ending::FaultError(e) => (Outcome::BadInput, e.clone()),
            Ending::Panicked => (
                Outcome::Aborted,
                "the run panicked (a bug in rattle: please report it); every active fault was reverted".to_string(),
            ),
            Ending::StopCondition(t) => (
                Outcome::Aborted,
                format!("stopped by stop_when: {}; every active fault was reverted", t.condition),
            ),
            Ending::NotSteady(why) => (Outcome::Fail, why.clone()),
            Ending::Completed => {
                if let Some(why) = any_unrecovered {
                    (Outcome::Fail, why)
                } else if let Some(a) = after.as_ref().filter(|a| !a.held) {
                    (
                        Outcome::Fail,
                        format!(
                            "steady state did not hold at the end: {}",
                            a.problems().join("; ")
                        ),
                    )
                } else if plan.faults.is_empty() {
                    (
                        Outcome::Pass,
                        "no faults; the steady state held at the end".to_string(),
                    )
                } else {
                    (
                        Outcome::Pass,
                        "every fault recovered and the steady state held before and after"
                            .to_string(),
                    )
                }
            }
        }
    };
    let (outcome, reason) = if plan.load.is_some() {
        unless_rattle_fell_behind(outcome, reason, &s.recording.send_lag())
    } else {
        (outcome, reason)
    };
    let e = &plan.experiment;
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        rattle_version: env!("CARGO_PKG_VERSION").to_string(),
        experiment: report::ExperimentRef {
            name: e.name.value.clone(),
            file: plan.file.display().to_string(),
            description: e.description.clone(),
        },
        seed: plan.seed,
        started_at: report::rfc3339_ms(s.clock.start_unix_ms()),
        started_at_unix_ms: s.clock.start_unix_ms(),
        duration_ms: load_end_us / 1000,
        verdict: outcome.verdict(),
        reason,
        exit_code: outcome.exit_code(),
        plan: Some((&plan.summary()).into()),
        faults,
        windows: window_reports(&s.recording),
        totals: totals(&s.recording, load_end_us),
        steady_state: report::SteadyState { before, after },
        timeline: lock(&s.timeline).clone(),
        stop: None,
        phases: None,
        gates: Vec::new(),
        score: None,
        cluster_events: Vec::new(),
        requests: Vec::new(),
    };
    if plan.load.is_some() {
        let spans = report::phase_spans(&report);
        // From the segments between cuts when both ends can be cut (records forgotten before
        // a phase began are only in the segments), else from the records kept.
        let stats = |span: Option<(u64, u64)>| {
            span.map(|(a, b)| {
                let cut = s.recording.cut_at(a).and(s.recording.cut_at(b));
                let figures = cut.ok().and_then(|()| s.recording.span_figures(a, b));
                let stats = match figures {
                    Some(f) => analysis::span_stats_of(&f, a, b),
                    None => analysis::span_stats(&sorted, a, b),
                };
                (&stats).into()
            })
        };
        report.phases = Some(report::Phases {
            baseline: stats(spans.baseline),
            fault: stats(spans.fault),
            recovery: stats(spans.recovery),
        });
    }
    report.requests = request_reports(s, &report, &sorted, load_end_us);
    // Gates judge the figures above; a missed gate turns a pass into a fail (exit 1).
    report::judge(&mut report, &e.gates);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_returns_its_value_at_the_lowest_priority_and_its_panic_resumes() {
        let nice = in_background(|| {
            // SAFETY: getpriority on the calling thread's own id.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
            }
            #[cfg(not(target_os = "linux"))]
            19
        })
        .await;
        assert_eq!(nice, 19);
        assert_eq!(in_background(|| 40 + 2).await, 42);
        let panicked = tokio::spawn(in_background(|| -> u32 { panic!("in analysis") })).await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        // The thread goes on after a job's panic.
        assert_eq!(in_background(|| 7).await, 7);
    }
}
