//! The resilience score: one number from 0 to 100 that says how much of what the experiment
//! asked held, so runs and releases can be compared at a glance. Defined in the README (section
//! "Resilience score"); kept deliberately simple so that a person can recompute it from the
//! report: the share of judged checks (hypothesis checks and gates) that passed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CheckStatus, Report, Verdict, checks};

/// The score and what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Score {
    /// 0 to 100: round(100 × passed / judged); 0 for an aborted or errored run.
    pub value: u32,
    /// Checks that passed (hypothesis checks and gates).
    pub passed: u32,
    /// Checks judged (passed or failed; skipped ones are not counted).
    pub judged: u32,
    /// Hypothesis checks that passed.
    pub hypotheses_passed: u32,
    /// Hypothesis checks judged.
    pub hypotheses_judged: u32,
    /// Gates that passed.
    pub gates_passed: u32,
    /// Gates judged.
    pub gates_judged: u32,
}

/// Computes the score of a report from its checks and verdict.
pub fn score(r: &Report) -> Score {
    let mut s = Score {
        value: 0,
        passed: 0,
        judged: 0,
        hypotheses_passed: 0,
        hypotheses_judged: 0,
        gates_passed: 0,
        gates_judged: 0,
    };
    for c in checks(r) {
        let (passed, judged) = if c.group == "gate" {
            (&mut s.gates_passed, &mut s.gates_judged)
        } else {
            (&mut s.hypotheses_passed, &mut s.hypotheses_judged)
        };
        match c.status {
            CheckStatus::Pass => {
                *passed += 1;
                *judged += 1;
            }
            CheckStatus::Fail => *judged += 1,
            CheckStatus::Skipped => {}
        }
    }
    s.passed = s.hypotheses_passed + s.gates_passed;
    s.judged = s.hypotheses_judged + s.gates_judged;
    s.value = match r.verdict {
        Verdict::Aborted | Verdict::Error | Verdict::Inconclusive => 0,
        Verdict::Pass | Verdict::Fail if s.judged == 0 => 0,
        Verdict::Pass | Verdict::Fail => {
            ((100.0 * f64::from(s.passed) / f64::from(s.judged)).round() as u32).min(100)
        }
    };
    s
}
