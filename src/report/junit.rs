//! junit.xml: every hypothesis check (steady state before and after, each fault's recovery)
//! and every gate is one test case, so a CI system lists them like tests and a failure's
//! message shows the measured value against the threshold. Two suites, `hypothesis` and
//! `gates`, under one report named after the experiment. Written with quick-junit, which
//! escapes what it must.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use super::{CheckStatus, Renderer, Report, ReportError, checks};

/// junit.xml.
#[derive(Debug, Clone, Copy)]
pub struct Junit;

impl Renderer for Junit {
    fn name(&self) -> &'static str {
        "junit"
    }
    fn file(&self) -> &'static str {
        "junit.xml"
    }
    fn label(&self) -> &'static str {
        "junit"
    }
    fn help(&self) -> &'static str {
        "junit.xml: every hypothesis check and gate as a test case"
    }
    fn render(&self, report: &Report) -> Result<String, ReportError> {
        junit(report)
    }
}

/// Renders junit.xml.
pub fn junit(r: &Report) -> Result<String, ReportError> {
    let mut report = quick_junit::Report::new(format!("rattle {}", r.experiment.name));
    report.set_time(Duration::from_millis(r.duration_ms));
    let all = checks(r);
    for group in ["hypothesis", "gate"] {
        let mut suite = TestSuite::new(match group {
            "gate" => "gates",
            _ => "hypothesis",
        });
        suite.set_time(Duration::from_millis(r.duration_ms));
        suite.add_property(Property::new("experiment", r.experiment.name.as_str()));
        suite.add_property(Property::new("file", r.experiment.file.as_str()));
        suite.add_property(Property::new("started_at", r.started_at.as_str()));
        suite.add_property(Property::new("seed", r.seed.to_string()));
        suite.add_property(Property::new("verdict", r.verdict.as_str()));
        if let Some(s) = &r.score {
            suite.add_property(Property::new("score", s.value.to_string()));
        }
        for c in all.iter().filter(|c| c.group == group) {
            let status = match c.status {
                CheckStatus::Pass => TestCaseStatus::success(),
                CheckStatus::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(c.message.as_str());
                    s.set_type(group);
                    s.set_description(format!("{}: {}", c.name, c.message));
                    s
                }
                CheckStatus::Skipped => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(c.message.as_str());
                    s
                }
            };
            let mut case = TestCase::new(c.name.as_str(), status);
            case.set_classname(format!("rattle.{}.{group}", r.experiment.name));
            if c.status == CheckStatus::Pass {
                case.set_system_out(c.message.as_str());
            }
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    fn fixture() -> Report {
        serde_json::from_str(include_str!("../../tests/it/fixtures/report-v1-old.json"))
            .expect("fixture")
    }

    #[test]
    fn an_inconclusive_run_is_not_green_in_junit() {
        let mut r = fixture();
        r.verdict = Verdict::Pass;
        let xml = junit(&r).expect("junit");
        assert!(!xml.contains("load generator kept its schedule"), "{xml}");
        r.verdict = Verdict::Inconclusive;
        r.exit_code = 5;
        r.reason = "rattle fell behind its own schedule from 1.0s".into();
        let xml = junit(&r).expect("junit");
        let case = xml
            .split("<testcase ")
            .find(|c| c.contains("load generator kept its schedule"))
            .unwrap_or_else(|| panic!("no case for the generator's schedule: {xml}"));
        assert!(case.contains("<failure"), "{case}");
        assert!(case.contains("fell behind its own schedule"), "{case}");
    }
}
