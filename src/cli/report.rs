//! `rattle report` (re-render an old run's report.json) and `rattle compare` (two runs' figures
//! side by side, exit 1 on a regression beyond its allowance). Both read only report.json
//! files; a report of an unknown schema version, or a file that is not a report, is exit 2.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::outcome::Outcome;
use crate::report::{self, Renderer, compare};

/// Output format of `rattle report`: one entry of [`report::FORMATS`], whose names and help
/// lines are clap's possible values.
#[derive(Debug, Clone, Copy)]
pub struct FormatArg(pub &'static dyn Renderer);

impl ValueEnum for FormatArg {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: LazyLock<Vec<FormatArg>> =
            LazyLock::new(|| report::FORMATS.iter().map(|f| FormatArg(*f)).collect());
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()).help(self.0.help()))
    }
}

/// `rattle report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A report.json written by `rattle run`.
    pub file: PathBuf,
    /// What to render.
    #[arg(long, value_enum, default_value = "markdown")]
    pub format: FormatArg,
    /// Write here instead of to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `rattle compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The earlier run's report.json (the reference).
    pub old: PathBuf,
    /// The later run's report.json.
    pub new: PathBuf,
    /// How much worse a figure may get: `[FIGURE=]AMOUNT`, repeatable. AMOUNT is a share of the
    /// old value (`10%`), a duration (`50ms`), percentage points (`0.5pp`) or a number in the
    /// figure's unit. FIGURE is a name from the table (`p99`, `faults.kill-one.recovery_time`)
    /// or its last part (`recovery_time`: every fault's); without it, every figure. Defaults:
    /// durations 20% or 10 ms, percentages 0.5pp, score 5 points, counts 20% or 5.
    #[arg(long = "max-regression", value_name = "[FIGURE=]AMOUNT")]
    pub max_regression: Vec<String>,
    /// Output: `text` (a Markdown table) or `json` (see the README, "CLI conventions").
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::output::Format,
}

fn read(path: &Path) -> Result<report::Report, Outcome> {
    report::read(path).map_err(|e| {
        crate::errln!("error: {e}");
        Outcome::BadInput
    })
}

/// Runs `rattle report`.
pub fn report_cmd(args: ReportArgs) -> anyhow::Result<Outcome> {
    let r = match read(&args.file) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let text = args.format.0.render(&r)?;
    match &args.out {
        Some(path) => {
            // Temporary file and rename (issue #19): a symlink at `--out` is refused, not
            // followed, and a full disk leaves no torn file.
            if let Err(e) = crate::fsutil::write_new_or_regular(path, text.as_bytes()) {
                crate::errln!("error: {}: cannot write: {e}", path.display());
                return Ok(Outcome::BadInput);
            }
        }
        None => crate::out!("{text}"),
    }
    Ok(Outcome::Pass)
}

/// Runs `rattle compare`.
pub fn compare_cmd(args: CompareArgs) -> anyhow::Result<Outcome> {
    let mut allowances = Vec::new();
    for a in &args.max_regression {
        match compare::parse_allowance(a) {
            Ok(a) => allowances.push(a),
            Err(e) => {
                crate::errln!("error: --max-regression {e}");
                return Ok(Outcome::BadInput);
            }
        }
    }
    let (old, new) = match (read(&args.old), read(&args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(c), _) | (_, Err(c)) => return Ok(c),
    };
    let deltas = match compare::compare(&old, &new, &allowances) {
        Ok(d) => d,
        Err(e) => {
            crate::errln!("error: {e}");
            return Ok(Outcome::BadInput);
        }
    };
    match args.format {
        super::output::Format::Text => crate::out!("{}", compare::render(&old, &new, &deltas)),
        super::output::Format::Json => super::output::print_json(&super::output::JsonCompare::new(
            (&args.old, &old),
            (&args.new, &new),
            &deltas,
        )),
    }
    // An inconclusive report's figures measure rattle, not the service (it fell behind its own
    // schedule): a regression, or the lack of one, against it is no finding either way.
    let inconclusive: Vec<&Path> = [(&args.old, &old), (&args.new, &new)]
        .into_iter()
        .filter(|(_, r)| r.verdict == report::Verdict::Inconclusive)
        .map(|(p, _)| p.as_path())
        .collect();
    if !inconclusive.is_empty() {
        for p in &inconclusive {
            crate::errln!(
                "warning: {} is inconclusive (rattle fell behind its own schedule, so its \
                 figures measure rattle, not the service): this comparison proves nothing \
                 (exit 5)",
                p.display()
            );
        }
        return Ok(Outcome::Inconclusive);
    }
    Ok(if deltas.iter().any(|d| d.regressed) {
        Outcome::Fail
    } else {
        Outcome::Pass
    })
}
