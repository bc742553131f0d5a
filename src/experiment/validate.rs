//! Semantic checks of a parsed experiment: what serde cannot know (a fault after the end, a
//! duplicate name, a URL that is not http, a fault kind that needs a duration). All problems are
//! collected, not just the first, each with its location and field path. Nothing here touches
//! the environment: it runs before anything is applied.

use std::collections::HashMap;

use super::diagnostic::Diagnostic;
use super::located::Located;
use super::spec::{Experiment, HttpLoad};
use super::values::HumanDuration;

struct Collector(Vec<Diagnostic>);

impl Collector {
    fn at<T>(&mut self, loc: &Located<T>, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic {
            line: loc.line,
            column: loc.column,
            field: field.into(),
            message: message.into(),
            snippet: None,
        });
    }
}

/// Checks meaning; returns every problem found.
/// Longest experiment name: `<name>-<timestamp>` (report directory) and the journal's
/// `.<name>-<ms>-<pid>-<fault>.json.<pid>.tmp` must stay within NAME_MAX (255 bytes).
pub const MAX_NAME_BYTES: usize = 200;

pub fn validate(e: &Experiment) -> Result<(), Vec<Diagnostic>> {
    let mut c = Collector(Vec::new());
    if *e.version != 1 {
        c.at(
            &e.version,
            "version",
            format!(
                "unsupported version {}: this rattle reads version 1",
                *e.version
            ),
        );
    }
    let name = e.name.trim();
    if name.is_empty() {
        c.at(&e.name, "name", "must not be empty");
    } else if !name
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        || name.starts_with('.')
    {
        c.at(
            &e.name,
            "name",
            "may contain only letters, digits, '-', '_' and '.' (it names the report directory)",
        );
    } else if name.len() > MAX_NAME_BYTES {
        // Issue #19: found here, not by "File name too long" after faults were injected.
        c.at(
            &e.name,
            "name",
            format!(
                "is {} bytes long: at most {MAX_NAME_BYTES} (it names the report directory and \
                 the journal's files, which the file system limits to 255 bytes)",
                name.len()
            ),
        );
    }
    let duration = e.duration.value;
    if duration.get().is_zero() {
        c.at(&e.duration, "duration", "must be above zero");
    }

    if let Some(demo) = e.setup.as_ref().and_then(|s| s.demo.as_ref()) {
        if !(1..=64).contains(&*demo.replicas) {
            c.at(
                &demo.replicas,
                "setup.demo.replicas",
                "must be from 1 to 64",
            );
        }
        if demo.port == 0 {
            c.at(
                &demo.replicas,
                "setup.demo.port",
                "must be a fixed port (the load URL names it)",
            );
        }
    }

    if let Some(load) = &e.load {
        check_load(&mut c, &load.http);
    }

    let ss = &e.steady_state;
    if ss.hold.get().is_zero() {
        c.at(&ss.hold, "steady_state.hold", "must be above zero");
    }
    if *ss.warmup >= duration && !duration.get().is_zero() {
        c.at(
            &ss.warmup,
            "steady_state.warmup",
            format!(
                "warm-up {} is not shorter than the run's duration {}",
                *ss.warmup, duration
            ),
        );
    }
    if !ss.slo.is_empty() && e.load.is_none() {
        c.at(
            &e.name,
            "steady_state.slo",
            "an SLO is measured over the load's requests: add `load`",
        );
    }
    for (i, p) in ss.probes.iter().enumerate() {
        if let Err(msg) = p.spec.probe().validate() {
            c.at(
                &p.spec,
                format!("steady_state.probes[{i}].{}", p.spec.kind()),
                msg,
            );
        }
        if p.interval.get().is_zero() {
            c.at(
                &p.interval,
                format!("steady_state.probes[{i}].interval"),
                "must be above zero",
            );
        }
    }

    let stop = &e.stop_when;
    if e.load.is_none() && (stop.error_rate.is_some() || stop.p50.is_some() || stop.p99.is_some()) {
        c.at(
            &e.name,
            "stop_when",
            "error-rate and latency conditions are measured over the load's requests: add `load`",
        );
    }
    if stop.probe_failing.is_some() && ss.probes.is_empty() {
        c.at(
            &e.name,
            "stop_when.probe_failing",
            "there is no probe to watch: add `steady_state.probes`",
        );
    }

    for (at, field, message) in super::stop::validate_prometheus(stop) {
        c.at(at, field, message);
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, f) in e.faults.iter().enumerate() {
        let field = |k: &str| format!("faults[{i}].{k}");
        if f.name.trim().is_empty() {
            c.at(&f.name, field("name"), "must not be empty");
        } else if let Some(first) = names.insert(f.name.as_str(), i) {
            c.at(
                &f.name,
                field("name"),
                format!("duplicate fault name {:?} (also faults[{first}])", *f.name),
            );
        }
        let at = f.at.value;
        if at <= *ss.warmup {
            c.at(&f.at, field("at"), format!(
                "fault at {at} fires before the baseline is measured: it must come after steady_state.warmup ({})",
                *ss.warmup
            ));
        }
        if at >= duration {
            c.at(
                &f.at,
                field("at"),
                format!("fault at {at} is not before the end of the run (duration {duration})"),
            );
        }
        let fault = f.spec.fault();
        match (&f.duration, fault.needs_duration()) {
            (None, true) => c.at(
                &f.spec,
                field("duration"),
                format!(
                    "`{}` holds a state until it is reverted: add `duration`",
                    f.spec.kind()
                ),
            ),
            (Some(d), false) => c.at(
                d,
                field("duration"),
                format!("`{}` is instantaneous: remove `duration`", f.spec.kind()),
            ),
            (Some(d), true) => {
                if d.get().is_zero() {
                    c.at(d, field("duration"), "must be above zero");
                }
                let end = HumanDuration(at.get() + d.get());
                if end > duration {
                    c.at(
                        d,
                        field("duration"),
                        format!(
                            "fault ends at {end}, after the end of the run (duration {duration})"
                        ),
                    );
                }
            }
            (None, false) => {}
        }
        // Validated as the plan will hold it: with the entry's duration (Fault::set_duration).
        let mut planned = f.spec.value.clone();
        planned
            .fault_mut()
            .set_duration(f.duration.as_ref().map(|d| d.get()));
        if let Err(msg) = planned.fault().validate() {
            c.at(&f.spec, format!("faults[{i}].{}", f.spec.kind()), msg);
        }
    }

    c.0.extend(super::proxies::check(
        &e.proxies,
        e.faults.iter().map(|f| &f.spec),
    ));

    let fault_names: Vec<&str> = e.faults.iter().map(|f| f.name.as_str()).collect();
    let request_names: Vec<&str> = e
        .load
        .iter()
        .flat_map(|l| l.http.requests.iter())
        .map(|r| r.name.as_str())
        .collect();
    c.0.extend(super::gates::validate(
        &e.gates,
        &fault_names,
        &request_names,
        e.load.is_some(),
        &e.name,
    ));

    if c.0.is_empty() { Ok(()) } else { Err(c.0) }
}

fn check_load(c: &mut Collector, h: &HttpLoad) {
    if let Err(msg) = super::url::load_url(&h.url) {
        c.at(&h.url, "load.http.url", msg);
    }
    if http::Method::from_bytes(h.method.as_bytes()).is_err() {
        c.at(
            &h.method,
            "load.http.method",
            format!("{:?} is not an HTTP method", *h.method),
        );
    }
    for (k, v) in &h.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            c.at(
                &h.url,
                format!("load.http.headers.{k}"),
                "not a valid header name",
            );
        } else if http::HeaderValue::from_str(v).is_err() {
            c.at(
                &h.url,
                format!("load.http.headers.{k}"),
                "not a valid header value",
            );
        }
    }
    if *h.max_in_flight == 0 {
        c.at(
            &h.max_in_flight,
            "load.http.max_in_flight",
            "must be at least 1",
        );
    }
    if h.window.get() < std::time::Duration::from_millis(10) {
        c.at(&h.window, "load.http.window", "must be at least 10ms");
    }
    if h.timeout.get().is_zero() {
        c.at(&h.url, "load.http.timeout", "must be above zero");
    }
    if let Some(codes) = &h.ok_status
        && let Some(bad) = codes.iter().find(|s| !(100..=599).contains(*s))
    {
        c.at(
            &h.url,
            "load.http.ok_status",
            format!("{bad} is not an HTTP status code"),
        );
    }
    check_mix(c, h);
}

/// The request mix: names, weights and each request's own fields.
fn check_mix(c: &mut Collector, h: &HttpLoad) {
    if h.requests.len() > crate::load::mix::MAX_ROUTES {
        c.at(
            &h.url,
            "load.http.requests",
            format!(
                "{} requests; at most {} are allowed",
                h.requests.len(),
                crate::load::mix::MAX_ROUTES
            ),
        );
        return;
    }
    let total: f64 = h
        .requests
        .iter()
        .map(|r| *r.weight)
        .filter(|w| w.is_finite() && *w > 0.0)
        .sum();
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in h.requests.iter().enumerate() {
        let f = |name: &str| format!("load.http.requests[{i}].{name}");
        let name = r.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            c.at(
                &r.name,
                f("name"),
                format!("{:?}: use letters, digits, '-' and '_'", *r.name),
            );
        } else if !seen.insert(name.to_string()) {
            c.at(
                &r.name,
                f("name"),
                format!("{name:?} is used by an earlier request"),
            );
        }
        let w = *r.weight;
        if !(w.is_finite() && w > 0.0) {
            c.at(
                &r.weight,
                f("weight"),
                format!("must be a number above 0, got {w}"),
            );
        } else if total.is_finite() && w * (crate::load::mix::BLOCK as f64) < total {
            c.at(
                &r.weight,
                f("weight"),
                format!(
                    "{w} is below 1/{} of the total weight ({total}): the request would never be sent",
                    crate::load::mix::BLOCK
                ),
            );
        }
        if !total.is_finite() {
            c.at(
                &r.weight,
                f("weight"),
                "the weights add up to more than a number can hold",
            );
        }
        if let Some(u) = &r.url
            && let Err(msg) = super::url::request_url(&h.url, u)
        {
            c.at(u, f("url"), msg);
        }
        if let Some(m) = &r.method
            && http::Method::from_bytes(m.as_bytes()).is_err()
        {
            c.at(m, f("method"), format!("{:?} is not an HTTP method", **m));
        }
        for (k, v) in &r.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                c.at(
                    &r.name,
                    f(&format!("headers.{k}")),
                    "not a valid header name",
                );
            } else if http::HeaderValue::from_str(v).is_err() {
                c.at(
                    &r.name,
                    f(&format!("headers.{k}")),
                    "not a valid header value",
                );
            }
        }
        if let Some(t) = &r.timeout
            && t.get().is_zero()
        {
            c.at(t, f("timeout"), "must be above zero");
        }
        if let Some(codes) = &r.ok_status
            && let Some(bad) = codes.iter().find(|s| !(100..=599).contains(*s))
        {
            c.at(
                &r.name,
                f("ok_status"),
                format!("{bad} is not an HTTP status code"),
            );
        }
    }
}
