//! What a run starts and must stop again: the demo service, the experiment's fault proxies, the
//! load, the probes and the progress line. One value, [`Setup`], starts them in order and
//! [`Setup::stop`] is the only way they are stopped, on every exit of `run` (normal end, a
//! failed setup step, a signal, a panic in the phases): the run has one teardown path, not one
//! per way of failing.
//!
//! Setup comes in two steps because the run's clock starts between them: the demo and the
//! proxies must be up before t = 0, the load and probes start at t = 0.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{EventKind, Phase, RunError, RunOptions, Shared, lock, progress};
use crate::demo::{Demo, DemoLog};
use crate::fault::FaultEnv;
use crate::load::{self, LoadHandle};
use crate::plan::Plan;
use crate::probe::{ProbeResult, Probes};

/// Everything the run started, so that it can all be stopped on one path.
#[derive(Default)]
pub(super) struct Setup {
    demo: Option<Demo>,
    /// Cancels the load, the probes and the progress line.
    load_stop: CancellationToken,
    load: Option<LoadHandle>,
    progress: Option<JoinHandle<()>>,
}

/// What stopping the run's services leaves for the analysis.
pub(super) struct Stopped {
    /// When the load stopped, µs since the run's start.
    pub load_end_us: u64,
    /// Every probe result of the run.
    pub probe_results: Vec<ProbeResult>,
}

impl Setup {
    /// Before the clock starts: the demo service (if the plan has one), then the experiment's
    /// fault proxies in the run's fault environment. Returns `Ok(false)` when `interrupt`
    /// fired meanwhile (the caller stops at once, touching nothing more). On an error, what
    /// was started so far is still in `self`: the caller stops it.
    pub async fn start_services(
        &mut self,
        plan: &mut Plan,
        opts: &RunOptions,
        env: &FaultEnv,
        printer: &progress::Printer,
        interrupt: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<bool, RunError> {
        if let Some(cfg) = plan.demo.as_mut() {
            cfg.exe = opts.demo_exe.clone();
            // The demo's lines (a worker down, restarted) above the progress line, not through it.
            let p = printer.clone();
            cfg.log = DemoLog::to(move |line| p.log(line));
            printer.log(&format!(
                "setup: starting the demo service ({} workers on 127.0.0.1:{})",
                cfg.replicas, cfg.port
            ));
            tokio::select! {
                d = Demo::start(cfg.clone()) => {
                    let d = d?;
                    printer.log(&format!(
                        "setup: demo ready at http://{} (workers {:?})",
                        d.addr(),
                        d.worker_pids()
                    ));
                    self.demo = Some(d);
                }
                // A half-started demo is dropped, which kills its workers.
                _ = interrupt.as_mut() => return Ok(false),
            }
        }
        for p in &plan.experiment.proxies {
            env.proxies()
                .create_mode(&p.name, &p.listen, &p.upstream, true, p.mode)
                .await?;
            printer.log(&format!(
                "setup: proxy {} on {} -> {}",
                *p.name, *p.listen, *p.upstream
            ));
        }
        Ok(true)
    }

    /// At t = 0: the load, the probes and the progress line.
    pub fn start_load(
        &mut self,
        s: &Arc<Shared>,
        phase: watch::Receiver<Phase>,
    ) -> Result<(), RunError> {
        if let Some(cfg) = s.plan.load.clone() {
            self.load = Some(load::start(
                cfg,
                s.clock,
                0,
                s.recording.clone(),
                self.load_stop.clone(),
            )?);
        }
        *lock(&s.probes) = Some(Probes::start(
            s.plan.probes.clone(),
            s.env.kube_context().map(str::to_string),
            s.clock,
            self.load_stop.clone(),
        ));
        self.progress = Some(progress::spawn(
            s.progress.clone(),
            s.recording.clone(),
            s.clock,
            phase,
            self.load_stop.clone(),
        ));
        Ok(())
    }

    /// Stops everything that was started, in reverse order: load, probes and the progress
    /// line, then the demo and the proxies. Never fails: a service that does not stop cleanly
    /// is an error event on the timeline, not a reason to skip the others.
    pub async fn stop(mut self, s: &Shared) -> Stopped {
        let load_end_us = s.clock.now_us();
        self.load_stop.cancel();
        if let Some(l) = self.load.take() {
            l.finish().await;
        }
        let probes = lock(&s.probes).take();
        let probe_results = match probes {
            Some(p) => p.finish().await,
            None => Vec::new(),
        };
        if let Some(t) = self.progress.take() {
            let _ = t.await;
        }
        self.stop_services(&s.env, |e| {
            s.event(EventKind::Error, format!("stopping the demo service: {e}"))
        })
        .await;
        s.progress.finish();
        Stopped {
            load_end_us,
            probe_results,
        }
    }

    /// Stops the demo and the proxies only: the path of a setup that failed before the clock
    /// started (there is no load, no probe and no timeline yet).
    pub async fn stop_before_start(mut self, env: &FaultEnv, printer: &progress::Printer) {
        self.load_stop.cancel();
        self.stop_services(env, |e| {
            printer.log(&format!("error: stopping the demo service: {e}"))
        })
        .await;
        printer.finish();
    }

    async fn stop_services(&mut self, env: &FaultEnv, on_error: impl Fn(String)) {
        if let Some(d) = self.demo.take()
            && let Err(e) = d.shutdown().await
        {
            on_error(e.to_string());
        }
        env.proxies().shutdown().await;
    }
}
