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
mod stop;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::analysis::{self, FaultSpan};
use crate::cli::exit;
use crate::demo::{Demo, DemoError};
use crate::fault::{FaultEnv, Target};
use crate::journal::{Journal, JournalError};
use crate::load::{self, LoadError};
use crate::metrics::{Outcome, Record, Recording, RunClock};
use crate::plan::Plan;
use crate::probe::{self, Probes};
use crate::report::{
    self, EventKind, Report, SteadyCheck, TimelineEvent, Totals, Verdict, WindowReport,
};

pub use faults::DEBUG_PANIC_AFTER_INJECT;
use faults::{Active, inject_one, revert_all, revert_one};
pub use progress::ProgressMode;

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
    /// The journal could not be opened: no fault may be applied without it.
    #[error("the journal of active faults")]
    Journal(#[from] JournalError),
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
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The process exit code.
    pub exit_code: i32,
    /// Where the reports went.
    pub report_dir: PathBuf,
    /// The report.
    pub report: Report,
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn event(&self, event: EventKind, detail: impl Into<String>) {
        let detail = detail.into();
        let t_us = self.clock.now_us();
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
    StopCondition(stop::Trigger),
}

/// Runs a planned experiment to the end and writes its reports. `interrupt` resolves when the
/// run must stop (Ctrl-C, SIGTERM): faults are reverted, a partial report is written, exit 3.
pub async fn run(
    mut plan: Plan,
    opts: RunOptions,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<RunOutcome, RunError> {
    let printer = progress::Printer::new(opts.progress);
    printer.log(&plan.render(None));
    if let Some(cfg) = plan.load.as_ref() {
        cfg.validate()?;
    }
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(crate::journal::default_state_dir);
    let journal = Journal::open(&state_dir)?;
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
    tokio::pin!(interrupt);

    // Setup: the demo service, if any. Nothing has been touched before this. Interruptible: a
    // half-started demo is dropped, which kills its workers.
    let mut demo: Option<Demo> = None;
    let mut interrupted = false;
    if let Some(cfg) = plan.demo.as_mut() {
        cfg.exe = opts.demo_exe.clone();
        // The demo's lines (a worker down, restarted) above the progress line, not through it.
        let p = printer.clone();
        cfg.log = crate::demo::DemoLog::to(move |line| p.log(line));
        printer.log(&format!(
            "setup: starting the demo service ({} workers on 127.0.0.1:{})",
            cfg.replicas, cfg.port
        ));
        tokio::select! {
            d = Demo::start(cfg.clone()) => {
                let d = d?;
                printer.log(&format!("setup: demo ready at http://{} (workers {:?})", d.addr(), d.worker_pids()));
                demo = Some(d);
            }
            _ = &mut interrupt => interrupted = true,
        }
    }

    // Setup: the experiment's fault proxies, in the run's fault environment.
    let env = FaultEnv::with_kube_context(opts.kube_context.clone());
    if !interrupted {
        for p in &plan.experiment.proxies {
            if let Err(e) = env
                .proxies()
                .create_mode(&p.name, &p.listen, &p.upstream, true, p.mode)
                .await
            {
                env.proxies().shutdown().await;
                if let Some(d) = demo.take() {
                    let _ = d.shutdown().await;
                }
                return Err(e.into());
            }
            printer.log(&format!(
                "setup: proxy {} on {} -> {}",
                *p.name, *p.listen, *p.upstream
            ));
        }
    }

    let clock = RunClock::start_now();
    let recording = Recording::new(plan.window, true);
    let stop = CancellationToken::new();
    let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
    let faults = vec![FaultState::default(); plan.faults.len()];
    let run_id = format!(
        "{}-{}-{}",
        *plan.experiment.name,
        clock.start_unix_ms(),
        std::process::id()
    );
    let shared = Arc::new(Shared {
        clock,
        recording: recording.clone(),
        active: Mutex::new(Vec::new()),
        faults: Mutex::new(faults),
        timeline: Mutex::new(Vec::new()),
        phase: phase_tx,
        probes: Mutex::new(None),
        progress: printer.clone(),
        journal,
        env,
        run_id,
        plan,
    });

    let load_stop = CancellationToken::new();
    let load = match shared.plan.load.clone().filter(|_| !interrupted) {
        Some(cfg) => match load::start(cfg, clock, 0, recording.clone(), load_stop.clone()) {
            Ok(h) => Some(h),
            Err(e) => {
                if let Some(d) = demo.take() {
                    let _ = d.shutdown().await;
                }
                shared.env.proxies().shutdown().await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let probes = if interrupted {
        Vec::new()
    } else {
        shared.plan.probes.clone()
    };
    *lock(&shared.probes) = Some(Probes::start(
        probes,
        opts.kube_context.clone(),
        clock,
        load_stop.clone(),
    ));
    let progress_task = progress::spawn(
        shared.progress.clone(),
        recording.clone(),
        clock,
        phase_rx,
        load_stop.clone(),
    );

    let ending = if interrupted {
        shared.event(EventKind::Stop, "interrupted during setup");
        Ending::Stopped
    } else {
        // The phases, in their own task so that a panic in them still reaches the reverts
        // below; the stop conditions beside them.
        let task = tokio::spawn(phases(shared.clone(), stop.clone()));
        let watch_stop = CancellationToken::new();
        let watcher = tokio::spawn(stop::watch(shared.clone(), watch_stop.clone()));
        tokio::pin!(task);
        tokio::pin!(watcher);
        let mut cause = None;
        let joined = tokio::select! {
            j = &mut task => j,
            _ = &mut interrupt => {
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
    };

    // Rollback guarantee: whatever happened above, revert what is still active.
    shared.set_phase(Phase::Teardown);
    let revert_failed = revert_all(&shared).await;
    let reverted_all_us = clock.now_us();
    if let Ending::StopCondition(t) = &ending {
        shared.event(
            EventKind::Stop,
            format!(
                "every fault reverted {:.1} ms after the condition held",
                (reverted_all_us.saturating_sub(t.at_us)) as f64 / 1000.0
            ),
        );
    }
    let load_end_us = clock.now_us();
    load_stop.cancel();
    if let Some(l) = load {
        l.finish().await;
    }
    let probes = lock(&shared.probes).take();
    let probe_results = match probes {
        Some(p) => p.finish().await,
        None => Vec::new(),
    };
    let _ = progress_task.await;
    if let Some(d) = demo.take()
        && let Err(e) = d.shutdown().await
    {
        shared.event(EventKind::Error, format!("stopping the demo service: {e}"));
    }
    shared.env.proxies().shutdown().await;
    printer.finish();

    let stop_report = match &ending {
        Ending::StopCondition(t) => Some(report::StopReport {
            condition: t.condition.clone(),
            triggered_at_ms: analysis::us_to_ms(t.at_us),
            reverted_at_ms: analysis::us_to_ms(reverted_all_us),
            time_to_revert_ms: analysis::us_to_ms(reverted_all_us.saturating_sub(t.at_us)),
        }),
        _ => None,
    };
    let mut report = analyse(&shared, ending, revert_failed, load_end_us, &probe_results);
    report.stop = stop_report;
    let report_dir = opts.out_dir.clone().unwrap_or_else(|| {
        PathBuf::from("reports").join(report::dir_name(
            &report.experiment.name,
            report.started_at_unix_ms,
        ))
    });
    report::write(&report, &report_dir)?;
    Ok(RunOutcome {
        verdict: report.verdict,
        exit_code: report.exit_code,
        report_dir,
        report,
    })
}

/// The phases after setup. Returns how they ended; never reverts what is on the active list
/// except at a fault's planned end.
async fn phases(s: Arc<Shared>, stop: CancellationToken) -> Ending {
    let plan = &s.plan;
    s.set_phase(Phase::Warmup);
    if !s.sleep_until(plan.warmup, &stop).await {
        return Ending::Stopped;
    }
    s.set_phase(Phase::Baseline);
    let baseline_end = plan.baseline_end();
    if !s.sleep_until(baseline_end, &stop).await {
        return Ending::Stopped;
    }
    if !plan.faults.is_empty() {
        let before = steady_check(
            &s,
            &s.sorted_records(),
            &s.probe_results(),
            plan.warmup,
            baseline_end,
        );
        if !before.held {
            return Ending::NotSteady(describe_unsteady(&before));
        }
        s.event(EventKind::Baseline, "steady state held");
        s.set_phase(Phase::Faults);
    }

    // The fault timeline: injections and planned reverts, in time order.
    let mut events: Vec<(Duration, bool, usize)> = Vec::new(); // (t, is_revert, fault)
    for (i, f) in plan.faults.iter().enumerate() {
        events.push((f.at, false, i));
        if let Some(d) = f.duration {
            events.push((f.at + d, true, i));
        }
    }
    // Reverts before injections at the same instant.
    events.sort_by_key(|&(t, is_revert, i)| (t, !is_revert, i));
    for (t, is_revert, i) in events {
        if !s.sleep_until(t, &stop).await {
            return Ending::Stopped;
        }
        if is_revert {
            revert_one(&s, i).await;
        } else if let Err(e) = inject_one(&s, i).await {
            return Ending::FaultError(e);
        }
    }

    s.set_phase(Phase::Recovery);
    if !s.sleep_until(plan.duration, &stop).await {
        return Ending::Stopped;
    }
    // Keep observing while a fault's recovery is still undecided, up to the deadline.
    let deadline = plan.duration + plan.recovery_timeout;
    loop {
        let now_us = s.clock.now_us();
        if pending_recoveries(&s, now_us) == 0 || s.clock.origin().elapsed() >= deadline {
            break;
        }
        let next = s.clock.origin().elapsed() + Duration::from_millis(250);
        if !s.sleep_until(next.min(deadline), &stop).await {
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
    let records = s.sorted_records();
    let faults = lock(&s.faults).clone();
    faults
        .iter()
        .zip(&s.plan.faults)
        .filter(|(st, pf)| {
            let Some(span) = fault_span(&s.plan, pf, st, now_us) else {
                return false;
            };
            analysis::fault_recovery(&records, s.plan.slo(), span)
                .time_to_recover_ms
                .is_none()
        })
        .count()
}

/// Without load, faults whose recovery the `kubernetes` probes have not decided yet.
fn pending_probe_recoveries(s: &Shared, now_us: u64) -> usize {
    let kube_probes = kube_probe_indices(&s.plan);
    if kube_probes.is_empty() {
        return 0;
    }
    let results = s.probe_results();
    let faults = lock(&s.faults).clone();
    faults
        .iter()
        .zip(&s.plan.faults)
        .filter(|(st, pf)| {
            fault_span(&s.plan, pf, st, now_us).is_some_and(|span| {
                probe::kubernetes::probe_recovery(
                    &results,
                    &kube_probes,
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

/// Indices of the plan's `kubernetes` probes.
fn kube_probe_indices(plan: &Plan) -> Vec<usize> {
    plan.probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.kubernetes.as_ref().map(|_| i))
        .collect()
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

fn steady_check(
    s: &Shared,
    sorted: &[Record],
    probes: &[probe::ProbeResult],
    from: Duration,
    to: Duration,
) -> SteadyCheck {
    let (from_us, to_us) = (dur_us(from), dur_us(to));
    let slo = s.plan.load.as_ref().map(|_| {
        let lo = sorted.partition_point(|r| r.done_us < from_us);
        let hi = sorted.partition_point(|r| r.done_us < to_us);
        analysis::check_slo(&sorted[lo..hi], s.plan.slo())
    });
    let names: Vec<String> = s.plan.probes.iter().map(|p| p.name.clone()).collect();
    let probes = probe::summarize(&names, probes, from_us, to_us);
    let held = slo.as_ref().is_none_or(|c| c.held) && probes.iter().all(|p| p.failed == 0);
    SteadyCheck {
        held,
        from_ms: from_us / 1000,
        to_ms: to_us / 1000,
        slo: slo.as_ref().map(Into::into),
        probes: probes.iter().map(Into::into).collect(),
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
                missed: w.counts.get(Outcome::Missed),
                p50_ms: l.p50_us.map(analysis::us_to_ms),
                p90_ms: l.p90_us.map(analysis::us_to_ms),
                p99_ms: l.p99_us.map(analysis::us_to_ms),
                max_ms: l.max_us.map(analysis::us_to_ms),
                errors: errors_by_class(&w.counts),
            }
        })
        .collect()
}

fn errors_by_class(c: &crate::metrics::OutcomeCounts) -> std::collections::BTreeMap<String, u64> {
    Outcome::ALL
        .iter()
        .filter(|o| !o.is_ok() && c.get(**o) > 0)
        .map(|o| (o.as_str().to_string(), c.get(*o)))
        .collect()
}

fn totals(recording: &Recording, load_us: u64) -> Totals {
    let c = recording.totals();
    let h = recording.total_latency();
    let q = |q: f64| (!h.is_empty()).then(|| analysis::us_to_ms(h.value_at_quantile(q)));
    Totals {
        requests: c.total(),
        sent: c.sent(),
        ok: c.ok(),
        failed: c.failed(),
        missed: c.get(Outcome::Missed),
        availability: (c.total() > 0).then(|| c.ok() as f64 / c.total() as f64),
        rate_per_sec: (load_us > 0 && c.total() > 0)
            .then(|| c.sent() as f64 / (load_us as f64 / 1e6)),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: (!h.is_empty()).then(|| analysis::us_to_ms(h.max())),
        errors: errors_by_class(&c),
    }
}

fn analyse(
    s: &Shared,
    ending: Ending,
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
            let kube_probes = kube_probe_indices(plan);
            let recovery = if plan.load.is_some() {
                fault_span(plan, pf, st, load_end_us)
                    .map(|span| analysis::fault_recovery(&sorted, plan.slo(), span))
            } else if !kube_probes.is_empty() {
                // No load: the kubernetes probe decides (the replacement's readiness).
                fault_span(plan, pf, st, load_end_us).map(|span| {
                    probe::kubernetes::probe_recovery(
                        probes,
                        &kube_probes,
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
            }
        })
        .collect();

    let before = (!plan.faults.is_empty()).then(|| {
        steady_check(
            s,
            &sorted,
            probes,
            plan.warmup,
            plan.baseline_end().min(Duration::from_micros(load_end_us)),
        )
    });
    let after_from = Duration::from_micros(load_end_us).saturating_sub(plan.hold);
    let completed = matches!(ending, Ending::Completed);
    let after = completed.then(|| {
        steady_check(
            s,
            &sorted,
            probes,
            after_from,
            Duration::from_micros(load_end_us),
        )
    });

    let (verdict, exit_code, reason) = if revert_failed {
        (
            Verdict::Error,
            exit::REVERT_FAILED,
            "a revert failed: something may still be broken; see the faults' errors".to_string(),
        )
    } else {
        match ending {
            Ending::Stopped => (
                Verdict::Aborted,
                exit::ABORTED,
                "the run was stopped; every active fault was reverted".to_string(),
            ),
            Ending::FaultError(e) => (Verdict::Error, exit::BAD_INPUT, e),
            Ending::Panicked => (
                Verdict::Aborted,
                exit::ABORTED,
                "the run panicked (a bug in rattle: please report it); every active fault was reverted".to_string(),
            ),
            Ending::StopCondition(t) => (
                Verdict::Aborted,
                exit::ABORTED,
                format!("stopped by stop_when: {}; every active fault was reverted", t.condition),
            ),
            Ending::NotSteady(why) => (Verdict::Fail, exit::FAILED, why),
            Ending::Completed => {
                if let Some(why) = any_unrecovered {
                    (Verdict::Fail, exit::FAILED, why)
                } else if let Some(a) = after.as_ref().filter(|a| !a.held) {
                    (
                        Verdict::Fail,
                        exit::FAILED,
                        format!(
                            "steady state did not hold at the end: {}",
                            a.problems().join("; ")
                        ),
                    )
                } else if plan.faults.is_empty() {
                    (
                        Verdict::Pass,
                        exit::OK,
                        "no faults; the steady state held at the end".to_string(),
                    )
                } else {
                    (
                        Verdict::Pass,
                        exit::OK,
                        "every fault recovered and the steady state held before and after"
                            .to_string(),
                    )
                }
            }
        }
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
        verdict,
        reason,
        exit_code,
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
    };
    if plan.load.is_some() {
        let spans = report::phase_spans(&report);
        let stats = |span: Option<(u64, u64)>| {
            span.map(|(a, b)| (&analysis::span_stats(&sorted, a, b)).into())
        };
        report.phases = Some(report::Phases {
            baseline: stats(spans.baseline),
            fault: stats(spans.fault),
            recovery: stats(spans.recovery),
        });
    }
    // Gates judge the figures above; a missed gate turns a pass into a fail (exit 1).
    report::judge(&mut report, &e.gates);
    report
}
