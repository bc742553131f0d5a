//! `rattle compare OLD.json NEW.json`: the figures of two runs side by side, with the change
//! and whether it is a regression beyond its allowance, so CI can catch a release that heals
//! slower or hurts users more than the last one.
//!
//! Every figure knows which way is better. A figure regressed when it got worse by more than
//! its allowance: a share of the old value (`10%`), an absolute amount in the figure's unit
//! (`50ms`, `0.5pp`, `5`), or by default the larger of both defaults (see [`default_allowance`]).
//! A fault that no longer recovers counts as an infinite regression; a fault never felt has an
//! infinite time to impact (the best there is).

use std::fmt::Write as _;

use super::Report;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (latency, recovery time, error rate).
    Lower,
    /// Larger is better (availability, score, time to impact).
    Higher,
}

/// Unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Ms,
    /// Percent (0..=100).
    Percent,
    /// Score points.
    Points,
    /// A count of requests.
    Count,
}

impl Unit {
    fn show(self, v: f64) -> String {
        if v.is_infinite() {
            return if v > 0.0 { "∞".into() } else { "-∞".into() };
        }
        match self {
            Unit::Ms => format!("{v:.1} ms"),
            Unit::Percent => format!("{v:.3}%"),
            Unit::Points => format!("{v:.0}"),
            Unit::Count => format!("{v:.0}"),
        }
    }
    fn show_delta(self, v: f64) -> String {
        if v.is_infinite() || v.is_nan() {
            return "∞".into();
        }
        match self {
            Unit::Ms => format!("{v:+.1} ms"),
            Unit::Percent => format!("{v:+.3} pp"),
            Unit::Points | Unit::Count => format!("{v:+.0}"),
        }
    }
}

/// One figure of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Name, e.g. `p99`, `faults.kill-one.recovery_time`.
    pub name: String,
    /// Value; infinite for "never" (not recovered, never felt).
    pub value: f64,
    /// Unit.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
}

/// The figures of a report that compare holds against each other.
pub fn figures(r: &Report) -> Vec<Figure> {
    let mut out = Vec::new();
    let mut push = |name: String, v: Option<f64>, unit: Unit, better: Better| {
        if let Some(value) = v {
            out.push(Figure {
                name,
                value,
                unit,
                better,
            });
        }
    };
    push(
        "score".into(),
        r.score.as_ref().map(|s| f64::from(s.value)),
        Unit::Points,
        Better::Higher,
    );
    let t = &r.totals;
    push(
        "availability".into(),
        t.availability.map(|a| a * 100.0),
        Unit::Percent,
        Better::Higher,
    );
    push(
        "error_rate".into(),
        (t.requests > 0).then(|| t.failed as f64 / t.requests as f64 * 100.0),
        Unit::Percent,
        Better::Lower,
    );
    for (n, v) in [
        ("p50", t.p50_ms),
        ("p90", t.p90_ms),
        ("p99", t.p99_ms),
        ("max", t.max_ms),
    ] {
        push(n.into(), v, Unit::Ms, Better::Lower);
    }
    if let Some(p) = &r.phases {
        for (phase, s) in [
            ("baseline", &p.baseline),
            ("fault", &p.fault),
            ("recovery", &p.recovery),
        ] {
            let Some(s) = s else { continue };
            push(
                format!("{phase}.error_rate"),
                s.error_rate.map(|e| e * 100.0),
                Unit::Percent,
                Better::Lower,
            );
            push(format!("{phase}.p99"), s.p99_ms, Unit::Ms, Better::Lower);
        }
    }
    for f in &r.faults {
        let Some(rec) = &f.recovery else { continue };
        let n = |k: &str| format!("faults.{}.{k}", f.name);
        push(
            n("recovery_time"),
            Some(rec.time_to_recover_ms.unwrap_or(f64::INFINITY)),
            Unit::Ms,
            Better::Lower,
        );
        push(
            n("time_to_impact"),
            Some(rec.time_to_impact_ms.unwrap_or(f64::INFINITY)),
            Unit::Ms,
            Better::Higher,
        );
        push(
            n("availability"),
            rec.availability.map(|a| a * 100.0),
            Unit::Percent,
            Better::Higher,
        );
        push(
            n("failed_requests"),
            Some(rec.failed_requests as f64),
            Unit::Count,
            Better::Lower,
        );
    }
    out
}

/// How much worse a figure may get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// A share of the old value (0.1 = 10%).
    pub relative: f64,
    /// An amount in the figure's unit.
    pub absolute: f64,
}

impl Allowance {
    /// The larger of both, for an old value.
    fn amount(&self, old: f64) -> f64 {
        (self.relative * old.abs()).max(self.absolute)
    }
    fn describe(&self, unit: Unit) -> String {
        let abs = |v: f64| match unit {
            Unit::Percent => format!("{v} pp"),
            _ => unit.show(v),
        };
        match (self.relative > 0.0, self.absolute > 0.0) {
            (true, true) => format!("{}% or {}", self.relative * 100.0, unit.show(self.absolute)),
            (true, false) => format!("{}%", self.relative * 100.0),
            (false, _) => abs(self.absolute),
        }
    }
}

/// The default allowance of a unit: durations 20% or 10 ms (whichever is larger), percentages
/// 0.5 percentage points, the score 5 points, counts 20% or 5.
pub fn default_allowance(unit: Unit) -> Allowance {
    match unit {
        Unit::Ms => Allowance {
            relative: 0.2,
            absolute: 10.0,
        },
        Unit::Percent => Allowance {
            relative: 0.0,
            absolute: 0.5,
        },
        Unit::Points => Allowance {
            relative: 0.0,
            absolute: 5.0,
        },
        Unit::Count => Allowance {
            relative: 0.2,
            absolute: 5.0,
        },
    }
}

/// An allowance as given on the command line: `[FIGURE=]AMOUNT`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowanceArg {
    /// The figure (a full name, or its last part, e.g. `recovery_time` for every fault's);
    /// `None` for every figure.
    pub figure: Option<String>,
    /// `N%`: relative.
    pub relative: Option<f64>,
    /// An absolute amount: `50ms`/`2s` (durations), `0.5pp` (percentages), or a bare number in
    /// the figure's unit.
    pub absolute: Option<f64>,
}

/// Parses `[FIGURE=]AMOUNT`, e.g. `10%`, `p99=20ms`, `availability=0.1pp`, `score=3`.
pub fn parse_allowance(s: &str) -> Result<AllowanceArg, String> {
    let (figure, amount) = match s.split_once('=') {
        Some((f, a)) if !f.trim().is_empty() => (Some(f.trim().to_string()), a.trim()),
        Some(_) => return Err(format!("{s:?}: the figure before `=` is empty")),
        None => (None, s.trim()),
    };
    let bad = || {
        format!(
            "{s:?}: expected [FIGURE=]AMOUNT, where AMOUNT is a share like 10%, a duration like \
             50ms, percentage points like 0.5pp, or a number in the figure's unit"
        )
    };
    let num = |t: &str| -> Result<f64, String> {
        let v: f64 = t.trim().parse().map_err(|_| bad())?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(bad())
        }
    };
    let (relative, absolute) = if let Some(p) = amount.strip_suffix('%') {
        (Some(num(p)? / 100.0), None)
    } else if let Some(p) = amount.strip_suffix("pp") {
        (None, Some(num(p)?))
    } else if amount.ends_with('s') {
        let d: crate::experiment::HumanDuration = amount.parse().map_err(|_| bad())?;
        (None, Some(d.get().as_secs_f64() * 1000.0))
    } else {
        (None, Some(num(amount)?))
    };
    Ok(AllowanceArg {
        figure,
        relative,
        absolute,
    })
}

fn allowance_for(fig: &Figure, args: &[AllowanceArg]) -> Allowance {
    // The most specific wins: an exact name, then a last part, then a global one, then the
    // default.
    let last = fig.name.rsplit('.').next().unwrap_or(&fig.name);
    let pick = |a: &AllowanceArg| Allowance {
        relative: a.relative.unwrap_or(0.0),
        absolute: a.absolute.unwrap_or(0.0),
    };
    args.iter()
        .rev()
        .find(|a| a.figure.as_deref() == Some(fig.name.as_str()))
        .or_else(|| {
            args.iter()
                .rev()
                .find(|a| a.figure.as_deref() == Some(last))
        })
        .or_else(|| args.iter().rev().find(|a| a.figure.is_none()))
        .map(pick)
        .unwrap_or_else(|| default_allowance(fig.unit))
}

/// One figure compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Figure name.
    pub name: String,
    /// In the old run; `None` if it did not have it.
    pub old: Option<f64>,
    /// In the new run.
    pub new: Option<f64>,
    /// Unit.
    pub unit: Unit,
    /// How much worse it got (positive) or better (negative), in the unit.
    pub worse_by: Option<f64>,
    /// The allowance, in words.
    pub allowed: String,
    /// Worse beyond the allowance.
    pub regressed: bool,
}

/// Compares every figure of `old` with `new`. Unknown figure names in `args` are an error, so
/// a typo cannot silently loosen a gate.
pub fn compare(old: &Report, new: &Report, args: &[AllowanceArg]) -> Result<Vec<Delta>, String> {
    let old_f = figures(old);
    let new_f = figures(new);
    for a in args {
        if let Some(name) = &a.figure {
            let known = old_f
                .iter()
                .chain(&new_f)
                .any(|f| f.name == *name || f.name.rsplit('.').next() == Some(name.as_str()));
            if !known {
                let mut names: Vec<&str> = old_f.iter().map(|f| f.name.as_str()).collect();
                names.dedup();
                return Err(format!(
                    "--max-regression {name}=…: no such figure; figures are: {}",
                    names.join(", ")
                ));
            }
        }
    }
    let mut out = Vec::new();
    for nf in &new_f {
        let of = old_f.iter().find(|f| f.name == nf.name);
        let allowance = allowance_for(nf, args);
        let (worse_by, regressed) = match of {
            Some(of) => {
                let worse = match nf.better {
                    Better::Lower => nf.value - of.value,
                    Better::Higher => of.value - nf.value,
                };
                let worse = if worse.is_nan() { 0.0 } else { worse };
                (Some(worse), worse > allowance.amount(of.value) + 1e-9)
            }
            None => (None, false),
        };
        out.push(Delta {
            name: nf.name.clone(),
            old: of.map(|f| f.value),
            new: Some(nf.value),
            unit: nf.unit,
            worse_by,
            allowed: allowance.describe(nf.unit),
            regressed,
        });
    }
    for of in old_f
        .iter()
        .filter(|o| !new_f.iter().any(|n| n.name == o.name))
    {
        out.push(Delta {
            name: of.name.clone(),
            old: Some(of.value),
            new: None,
            unit: of.unit,
            worse_by: None,
            allowed: String::new(),
            regressed: false,
        });
    }
    Ok(out)
}

/// The comparison as a Markdown table (readable in a terminal, pastable into a pull request).
pub fn render(old: &Report, new: &Report, deltas: &[Delta]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# rattle compare: {} ({}) → {} ({})\n",
        crate::text::markdown_cell(&old.experiment.name),
        old.started_at,
        crate::text::markdown_cell(&new.experiment.name),
        new.started_at
    );
    let _ = writeln!(s, "| figure | old | new | change | allowed | result |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for d in deltas {
        let show = |v: Option<f64>| v.map_or("–".into(), |v| d.unit.show(v));
        let change = match (d.old, d.new) {
            (Some(o), Some(n)) if o.is_infinite() && n.is_infinite() => "=".into(),
            (Some(o), Some(n)) => d.unit.show_delta(n - o),
            _ => "–".into(),
        };
        let result = match (d.regressed, d.worse_by, d.old, d.new) {
            (true, _, _, _) => "❌ **regressed**",
            (_, _, None, _) => "new",
            (_, _, _, None) => "gone",
            (false, Some(w), _, _) if w < 0.0 => "better",
            _ => "ok",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            // Figure names carry fault names from the file.
            crate::text::markdown_cell(&d.name),
            show(d.old),
            show(d.new),
            change,
            d.allowed,
            result
        );
    }
    let n = deltas.iter().filter(|d| d.regressed).count();
    let _ = writeln!(
        s,
        "\n{}",
        match n {
            0 => "No figure regressed beyond its allowance.".to_string(),
            1 => "1 figure regressed beyond its allowance.".to_string(),
            n => format!("{n} figures regressed beyond their allowance."),
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_parse() {
        let a = parse_allowance("10%").expect("valid");
        assert_eq!((a.figure, a.relative, a.absolute), (None, Some(0.1), None));
        let a = parse_allowance("p99=20ms").expect("valid");
        assert_eq!(a.figure.as_deref(), Some("p99"));
        assert_eq!(a.absolute, Some(20.0));
        assert_eq!(
            parse_allowance("recovery_time=1.5s")
                .expect("valid")
                .absolute,
            Some(1500.0)
        );
        assert_eq!(
            parse_allowance("availability=0.1pp")
                .expect("valid")
                .absolute,
            Some(0.1)
        );
        assert!(parse_allowance("p99=fast").is_err());
        assert!(parse_allowance("=5").is_err());
        assert!(parse_allowance("-5%").is_err());
    }

    #[test]
    fn allowance_amount_is_the_larger() {
        let a = default_allowance(Unit::Ms);
        assert_eq!(a.amount(10.0), 10.0);
        assert_eq!(a.amount(1000.0), 200.0);
    }
}
