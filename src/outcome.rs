//! How a command ended: one type, [`Outcome`], that knows both its verdict (what report.json
//! and index.json say) and its exit code (what CI sees). The runner, the report's judge, game
//! days and every CLI command produce an `Outcome`; only `main.rs` turns it into the process's
//! exit status.
//!
//! It lives on the ground floor so that no lower module has to import the CLI for an exit code,
//! and so that pass/fail is decided once: the verdict and the code of a run can never disagree.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a run (or a command) ended. Ordered by severity: the worst of several outcomes (a game
/// day's experiments) is their maximum. Exit codes 0 to 4 follow that order; 5, inconclusive
/// (added later, so that no existing code changed meaning), sits between fail and bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Everything passed (exit 0).
    Pass,
    /// A hypothesis or gate failed (exit 1).
    Fail,
    /// Rattle could not keep its own schedule (its send lag stayed over 10 ms for a second):
    /// the figures measure rattle, not the service, so the run neither passes nor fails
    /// (exit 5). Worse than a fail, since no finding stands; not as bad as a broken
    /// environment.
    Inconclusive,
    /// The input or the environment is wrong: bad file, no cluster, target not found; nothing
    /// was left broken (exit 2).
    BadInput,
    /// The run was stopped (stop condition, Ctrl-C, SIGTERM, a panic in rattle) and every fault
    /// was reverted (exit 3).
    Aborted,
    /// A revert failed: something may still be broken, run `rattle recover` (exit 4).
    RevertFailed,
}

impl Outcome {
    /// Every outcome, in order of severity.
    pub const ALL: [Outcome; 6] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Inconclusive,
        Outcome::BadInput,
        Outcome::Aborted,
        Outcome::RevertFailed,
    ];

    /// The process exit code (design: 0 passed, 1 a hypothesis or gate failed, 2 bad input or
    /// environment, 3 stopped with all faults reverted, 4 a revert failed, 5 inconclusive:
    /// rattle fell behind its own schedule).
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Pass => 0,
            Outcome::Fail => 1,
            Outcome::BadInput => 2,
            Outcome::Aborted => 3,
            Outcome::RevertFailed => 4,
            Outcome::Inconclusive => 5,
        }
    }

    /// The outcome an exit code stands for (reading a report back); `None` for a code rattle
    /// never uses.
    pub fn from_exit_code(code: i32) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.exit_code() == code)
    }

    /// The verdict reports show: bad input and a failed revert are both `error`.
    pub fn verdict(self) -> Verdict {
        match self {
            Outcome::Pass => Verdict::Pass,
            Outcome::Fail => Verdict::Fail,
            Outcome::Inconclusive => Verdict::Inconclusive,
            Outcome::Aborted => Verdict::Aborted,
            Outcome::BadInput | Outcome::RevertFailed => Verdict::Error,
        }
    }

    /// True for [`Outcome::Pass`].
    pub fn passed(self) -> bool {
        self == Outcome::Pass
    }
}

/// The word reports use for how a run ended (report.json's and index.json's `verdict`). Derived
/// from an [`Outcome`]; never decided on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The hypothesis held and every fault recovered.
    Pass,
    /// The hypothesis failed (not steady before, not recovered, not steady after).
    Fail,
    /// The run was stopped; every fault was reverted.
    Aborted,
    /// The environment or a fault went wrong (target not found, setup failed, revert failed).
    Error,
    /// Rattle fell behind its own schedule: the figures measure rattle, not the service.
    Inconclusive,
}

impl Verdict {
    /// The word report.json uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Aborted => "aborted",
            Verdict::Error => "error",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_order_by_severity() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_exit_code(o.exit_code()), Some(o));
        }
        assert_eq!(Outcome::from_exit_code(5), Some(Outcome::Inconclusive));
        assert_eq!(Outcome::from_exit_code(6), None);
        assert!(Outcome::Inconclusive > Outcome::Fail);
        assert!(Outcome::Inconclusive < Outcome::BadInput);
        let mut sorted = Outcome::ALL;
        sorted.sort();
        assert_eq!(sorted, Outcome::ALL);
        assert!(Outcome::RevertFailed > Outcome::Aborted);
        assert_eq!(Outcome::RevertFailed.verdict(), Verdict::Error);
        assert_eq!(Outcome::BadInput.verdict(), Verdict::Error);
    }
}
