//! Issue #14: the load engine tells the truth about itself. A run whose rate is far above what
//! this machine can send is never `pass`: its send lag is reported and the verdict says the
//! figures measure rattle, not the service.

use std::time::Duration;

use serde_json::Value;

use crate::support::{free_port, rattle, run_bounded_cmd, write};

/// Nothing listens on the port, so every request is refused at once and costs the target
/// nothing: the only thing that can fall behind is rattle. The SLO accepts any success rate,
/// so without the generator's own check the run would pass, as it did in the issue.
#[test]
fn a_rate_beyond_the_machine_is_inconclusive_and_reports_its_lag() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = write(
        dir.path(),
        "flood.yaml",
        &format!(
            r#"version: 1
name: flood
load:
  http: {{ url: "http://127.0.0.1:{port}/", rate: 200000/s, timeout: 1s, max_in_flight: 20000 }}
steady_state:
  warmup: 0s
  hold: 1s
  slo: {{ success_rate: ">= 0%" }}
duration: 6s
"#
        ),
    );
    let out = dir.path().join("out");
    let mut cmd = rattle();
    cmd.args([
        "run",
        exp.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--progress",
        "plain",
    ]);
    let (code, stdout, stderr) = run_bounded_cmd(cmd, Duration::from_secs(90));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(code, 5, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(report["verdict"], "inconclusive");
    assert_eq!(report["exit_code"], 5);
    let reason = report["reason"].as_str().expect("reason");
    assert!(
        reason.contains("the figures measure rattle, not the service"),
        "{reason}"
    );
    assert!(stdout.contains("INCONCLUSIVE"), "{stdout}");
    // The lag itself, over the run: far beyond 10 ms, and most sends late.
    let g = &report["totals"]["generator"];
    assert_eq!(g["kept_schedule"], false, "{g:#}");
    let lag = &g["send_lag"];
    let p99 = lag["p99_ms"].as_f64().expect("p99");
    let max = lag["max_ms"].as_f64().expect("max");
    let (late, sent) = (
        lag["over_10ms"].as_u64().expect("over"),
        lag["count"].as_u64().expect("count"),
    );
    eprintln!("flood: send lag p99 {p99} ms, max {max} ms, {late} of {sent} sent over 10 ms late");
    assert!(p99 > 10.0 && max >= p99, "{lag:#}");
    assert!(late > 0 && late <= sent, "{lag:#}");
    assert_eq!(sent, report["totals"]["sent"].as_u64().expect("sent"));
    // Which rule caught it depends on where the machine's time went: a second of sends late by
    // rattle's own doing, a saturated CPU, or a runtime waking its tasks late (the requests
    // that hold the in-flight permits are rattle's own, waiting to be polled). One did.
    assert!(
        g["longest_late_stretch_ms"].as_f64() >= Some(1000.0)
            || g["cpu_saturated"] == true
            || g["runtime_stalled"] == true,
        "{g:#}"
    );
    // ... and per window: the windows' lag counts add up to the run's.
    let windows = report["windows"].as_array().expect("windows");
    let per_window: u64 = windows
        .iter()
        .map(|w| w["send_lag"]["count"].as_u64().expect("window send_lag"))
        .sum();
    assert_eq!(per_window, sent);
    // Said plainly in every format, and live.
    let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(summary.contains("INCONCLUSIVE"), "{summary}");
    assert!(
        summary.contains("measure rattle, not the service"),
        "{summary}"
    );
    assert!(summary.contains("Send lag"), "{summary}");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("measure rattle, not the service"));
    assert!(html.contains("send lag p99"));
    // The plain progress line comes every 5 s (so the run lasts 6 s): it caught the generator
    // behind, or after.
    assert!(
        stderr.contains("BEHIND: rattle cannot keep its schedule")
            || stderr.contains("fell behind earlier: run inconclusive"),
        "{stderr}"
    );
}
