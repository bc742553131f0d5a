//! Injecting and reverting, journal first. For a fault that holds a state, the order is always:
//! resolve targets → compute the revert token → write the journal entry (fsynced) → put it on
//! the active list → inject. A revert takes the fault off the list, reverts, and removes the
//! entry only once the revert succeeded; a failed revert keeps its entry for `rattle recover`.

use std::path::PathBuf;

use super::{Shared, lock};
use crate::fault::{self, RevertToken};
use crate::journal::{self, Entry};
use crate::report::EventKind;

/// A fault that was injected (or is being injected) and holds a state until reverted.
#[derive(Debug, Clone)]
pub(super) struct Active {
    /// Index in the plan's faults.
    pub fault: usize,
    /// How to revert it.
    pub token: RevertToken,
    /// Its journal entry.
    pub journal: PathBuf,
}

/// Resolves, journals and injects fault `i`. An error aborts the run (exit 2); whatever was
/// journaled is on the active list, so the caller's rollback reverts it.
pub(super) async fn inject_one(s: &Shared, i: usize) -> Result<(), String> {
    let pf = &s.plan.faults[i];
    let fail = |msg: String, detail: String| {
        lock(&s.faults)[i].error = Some(detail);
        s.event(EventKind::Error, msg.clone());
        Err(msg)
    };
    let targets = match pf.resolve(&s.env).await {
        Ok(t) => t,
        Err(e) => return fail(format!("fault {}: {e}", pf.name), e.to_string()),
    };
    let token = match pf.spec.fault().revert_token(&s.env, &targets).await {
        Ok(t) => t,
        Err(e) => {
            return fail(
                format!("fault {}: cannot prepare its revert: {e}", pf.name),
                e.to_string(),
            );
        }
    };
    if let Some(token) = token {
        let entry = Entry {
            version: 1,
            run_id: s.run_id.clone(),
            experiment: s.plan.experiment.name.value.clone(),
            file: s.plan.file.display().to_string(),
            fault: pf.name.clone(),
            targets: targets.clone(),
            token: token.clone(),
            written_at: crate::report::rfc3339_ms(jiff::Timestamp::now().as_millisecond()),
            owner_pid: std::process::id(),
            owner_starttime: journal::process_starttime(std::process::id()).unwrap_or(0),
        };
        let key = format!("{}-{}", s.run_id, i);
        // Two fsyncs (the entry and its directory): off the load's runtime, which on a core of
        // its own has one worker. The phases task awaits it to the end (it is never aborted), so
        // the order journal → active list → inject holds.
        let journal = s.journal.clone();
        match super::off_the_runtime(move || journal.record(&key, &entry)).await {
            Ok(path) => lock(&s.active).push(Active {
                fault: i,
                token,
                journal: path,
            }),
            Err(e) => {
                return fail(
                    format!(
                        "fault {}: not injected: the journal cannot be written: {e}",
                        pf.name
                    ),
                    e.to_string(),
                );
            }
        }
    }
    let list = targets
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    tracing::debug!(fault = %pf.name, kind = pf.spec.kind(), targets = %list, "journaled; injecting");
    let result = pf.spec.fault().inject(&s.env, &targets).await;
    let now = s.clock.now_us();
    {
        let mut st = lock(&s.faults);
        st[i].targets = targets;
        st[i].injected_us = Some(now);
    }
    if let Err(e) = result {
        return fail(
            format!("fault {}: injection failed: {e}", pf.name),
            e.to_string(),
        );
    }
    s.event(
        EventKind::Inject,
        format!("{} ({}) on {list}", pf.name, pf.spec.kind()),
    );
    s.observer
        .fault_injected(i, &pf.name, pf.spec.kind(), lock(&s.active).len());
    if std::env::var_os(DEBUG_PANIC_AFTER_INJECT).is_some() {
        // A test hook: proves that a panic in the run still reverts what was injected.
        panic!(
            "{DEBUG_PANIC_AFTER_INJECT} is set: panicking after injecting {}",
            pf.name
        );
    }
    Ok(())
}

/// Environment variable that makes the run panic right after its first injection. Only for the
/// tests of the rollback guarantee.
pub const DEBUG_PANIC_AFTER_INJECT: &str = "RATTLE_DEBUG_PANIC_AFTER_INJECT";

/// Reverts fault `i` if it is active. Returns false if the revert failed.
pub(super) async fn revert_one(s: &Shared, i: usize) -> bool {
    let taken: Vec<Active> = {
        let mut active = lock(&s.active);
        let (mine, rest): (Vec<_>, Vec<_>) = active.drain(..).partition(|a| a.fault == i);
        *active = rest;
        mine
    };
    let mut ok = true;
    for a in taken {
        let name = &s.plan.faults[a.fault].name;
        match fault::revert(&s.env, &a.token).await {
            Ok(()) => {
                lock(&s.faults)[a.fault].reverted_us = Some(s.clock.now_us());
                s.event(EventKind::Revert, name.clone());
                s.observer.fault_reverted(a.fault, lock(&s.active).len());
                let (journal, path) = (s.journal.clone(), a.journal.clone());
                if let Err(e) = super::off_the_runtime(move || journal.remove(&path)).await {
                    // Reverted, but the entry stays: `recover` will find it and revert again,
                    // which is harmless (reverts are idempotent).
                    s.event(
                        EventKind::Warning,
                        format!("{name} reverted but its journal entry stays: {e}"),
                    );
                }
            }
            Err(e) => {
                ok = false;
                {
                    let mut st = lock(&s.faults);
                    st[a.fault].revert_failed = true;
                    st[a.fault].error = Some(format!("revert failed: {e}"));
                }
                s.event(
                    EventKind::Error,
                    format!(
                        "revert of {name} failed: {e}; it stays in the journal ({}): run `rattle recover`",
                        a.journal.display()
                    ),
                );
            }
        }
    }
    ok
}

/// Reverts every active fault. Returns true if any revert failed.
pub(super) async fn revert_all(s: &Shared) -> bool {
    let mut pending: Vec<usize> = lock(&s.active).iter().map(|a| a.fault).collect();
    pending.dedup();
    let mut failed = false;
    for i in pending {
        if !revert_one(s, i).await {
            failed = true;
        }
    }
    failed
}
