//! The demo supervisor: starts one worker process per slot, watches each, and restarts a dead one
//! on the same port after a delay, until shutdown begins.
//!
//! One tokio task per slot owns that slot's `Child`, so waiting, killing and reaping a worker all
//! happen in one place and never race each other. The only state shared with the outside is the
//! pid table (for `worker_pids` and the synchronous kill in `Drop`), the restart counter, and a
//! cancellation token that means "stop respawning, kill and reap".
//!
//! Every worker is forked from one dedicated thread (the [`Spawner`]) because Linux ties a
//! child's parent-death signal to the *thread* that forked it, not to the process: forked from a
//! runtime thread that later exits (a `spawn_blocking` thread idling out, or a worker thread
//! turned blocking by `block_in_place`), a healthy worker would be killed for nothing. The
//! spawner thread lives exactly as long as someone can still ask for a worker, so workers die
//! when the supervisor is gone, and not before.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DemoError;
use super::worker::SUPERVISOR_PID_ENV;

/// How long `stop` waits for a slot task to kill and reap its worker before killing by pid
/// itself. Reaping a SIGKILLed process is near instant; this only bounds a pathological case.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Least pause between two failed attempts to spawn a worker.
const SPAWN_RETRY_MIN: Duration = Duration::from_millis(100);

/// What every worker is started with.
#[derive(Debug, Clone)]
pub(super) struct WorkerSpec {
    /// The binary to re-execute.
    pub exe: PathBuf,
    /// Passed to the worker as `--latency`.
    pub latency: Duration,
    /// Pause between a worker's death and its restart.
    pub restart_delay: Duration,
    /// The balancer's port, written on the worker's command line (`--balancer-port`) so an
    /// experiment can select the workers of one demo among several (tests run many at once).
    pub balancer_port: u16,
    /// Where exit and restart lines go.
    pub log: super::DemoLog,
}

/// State shared by the slot tasks and the owner.
#[derive(Debug, Default)]
struct Shared {
    /// Pid of each slot's live worker; `None` between a death and the restart.
    pids: Mutex<Vec<Option<u32>>>,
    restarts: AtomicU64,
    stop: CancellationToken,
}

impl Shared {
    fn set_pid(&self, slot: usize, pid: Option<u32>) {
        // A poisoned lock only means a panic elsewhere; the table itself is always consistent.
        let mut pids = self.pids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pids.get_mut(slot) {
            *p = pid;
        }
    }
}

/// Running workers and their watchers.
#[derive(Debug)]
pub(super) struct Supervisor {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts one worker per port. If one cannot be spawned, those already started are killed
    /// and reaped before the error is returned.
    pub(super) async fn start(spec: WorkerSpec, ports: &[u16]) -> Result<Supervisor, DemoError> {
        let spawner = Spawner::start(spec.clone())?;
        let mut children = Vec::with_capacity(ports.len());
        for &port in ports {
            match spawner.spawn(port).await {
                Ok(child) => children.push(child),
                Err(source) => {
                    for mut child in children {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                    return Err(DemoError::Spawn {
                        exe: spec.exe.clone(),
                        port,
                        source,
                    });
                }
            }
        }
        let shared = Arc::new(Shared {
            pids: Mutex::new(children.iter().map(Child::id).collect()),
            ..Shared::default()
        });
        let tasks = children
            .into_iter()
            .zip(ports)
            .enumerate()
            .map(|(slot, (child, &port))| {
                tokio::spawn(watch(
                    shared.clone(),
                    slot,
                    port,
                    spec.restart_delay,
                    spec.log.clone(),
                    spawner.clone(),
                    child,
                ))
            })
            .collect();
        Ok(Supervisor { shared, tasks })
    }

    /// Pids of the live workers.
    pub(super) fn pids(&self) -> Vec<u32> {
        let pids = self
            .shared
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pids.iter().flatten().copied().collect()
    }

    /// Restarts made so far.
    pub(super) fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Stops respawning, SIGKILLs and reaps every worker. Idempotent.
    pub(super) async fn stop(&mut self) {
        self.shared.stop.cancel();
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(REAP_TIMEOUT, task).await.is_err() {
                // Dropping the task drops its `Child`, whose kill_on_drop kills it; tokio's
                // orphan reaper then reaps it.
                abort.abort();
            }
        }
        // Whatever a stuck task left behind is killed by pid.
        self.kill_now();
    }

    /// Whether stopping has begun (by `stop`, `kill_now` or a drop).
    pub(super) fn is_stopping(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// Synchronous best effort for `Drop`: stop respawning and SIGKILL every known pid. The slot
    /// tasks (if the runtime still runs) see the cancellation and reap; if it does not, each
    /// task's `Child` is dropped with the runtime and tokio's orphan reaper takes over.
    pub(super) fn kill_now(&self) {
        self.shared.stop.cancel();
        for pid in self.pids() {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            // Already dead or already reaped: nothing to do.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A request to the spawner thread: a port, and where to send the started child.
type SpawnRequest = (u16, oneshot::Sender<std::io::Result<Child>>);

/// Handle on the thread that forks every worker (see the module comment for why one thread).
/// The thread ends when the last handle is dropped, i.e. when the supervisor and all its slot
/// tasks are gone; the kernel then SIGKILLs any worker still alive.
#[derive(Debug, Clone)]
struct Spawner {
    requests: std::sync::mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    fn start(spec: WorkerSpec) -> Result<Spawner, DemoError> {
        // tokio's `Command::spawn` registers the child with the runtime's process driver, so the
        // thread enters the caller's runtime.
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("rattle-demo-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                while let Ok((port, reply)) = incoming.recv() {
                    // The asker may have given up (cancelled); the child is then dropped and
                    // killed by kill_on_drop.
                    let _ = reply.send(spawn_worker(&spec, port));
                }
            })
            .map_err(|source| DemoError::Io {
                what: "cannot start the demo's spawner thread".into(),
                source,
            })?;
        Ok(Spawner { requests })
    }

    async fn spawn(&self, port: u16) -> std::io::Result<Child> {
        let gone = || std::io::Error::other("the demo's spawner thread is gone");
        let (reply, answer) = oneshot::channel();
        self.requests.send((port, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Starts one worker. Its command line reads `<exe> demo worker --port P --latency D
/// --balancer-port B`, which is what a process-kill fault matches on (`rattle demo worker`, or
/// `rattle demo worker .*--balancer-port B` for one demo's workers). Runs on the spawner thread
/// only.
fn spawn_worker(spec: &WorkerSpec, port: u16) -> std::io::Result<Child> {
    let latency = if spec.latency.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", spec.latency.as_millis())
    } else {
        format!("{}us", spec.latency.as_micros())
    };
    let mut cmd = Command::new(&spec.exe);
    cmd.args([
        "demo",
        "worker",
        "--port",
        &port.to_string(),
        "--latency",
        &latency,
        "--balancer-port",
        &spec.balancer_port.to_string(),
    ])
    .env(SUPERVISOR_PID_ENV, std::process::id().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    // Workers print only on failure (e.g. cannot bind); that is worth seeing.
    .stderr(Stdio::inherit())
    // Own process group: Ctrl-C in a terminal reaches the supervisor only, which then stops
    // the workers in order, instead of every worker dying at once and being "restarted".
    .process_group(0)
    .kill_on_drop(true);
    cmd.spawn()
}

/// The life of one slot: wait for the worker to exit, then restart it after the delay, until
/// the stop token is cancelled; then kill and reap.
async fn watch(
    shared: Arc<Shared>,
    slot: usize,
    port: u16,
    restart_delay: Duration,
    log: super::DemoLog,
    spawner: Spawner,
    mut child: Child,
) {
    loop {
        let pid = child.id().unwrap_or(0);
        let status = tokio::select! {
            // Stop wins over an exit seen at the same moment, so nothing restarts after it.
            biased;
            () = shared.stop.cancelled() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                shared.set_pid(slot, None);
                return;
            }
            status = child.wait() => status,
        };
        shared.set_pid(slot, None);
        if shared.stop.is_cancelled() {
            return;
        }
        let how = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        note!(
            log,
            "worker pid {pid} on port {port} exited ({how}); restarting in {:?}",
            restart_delay
        );
        let mut delay = restart_delay;
        child = loop {
            tokio::select! {
                () = shared.stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            match spawner.spawn(port).await {
                Ok(child) => break child,
                Err(e) => {
                    // A floor, so a zero restart delay does not turn a failing spawn into a
                    // busy loop.
                    delay = delay.max(SPAWN_RETRY_MIN);
                    note!(
                        log,
                        "cannot restart worker on port {port}: {e}; retrying in {delay:?}"
                    );
                }
            }
        };
        shared.set_pid(slot, child.id());
        shared.restarts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Supervisor {
    /// Also covers a supervisor dropped before it was wrapped in a `Demo` (a cancelled start).
    fn drop(&mut self) {
        if !self.is_stopping() {
            self.kill_now();
        }
    }
}
