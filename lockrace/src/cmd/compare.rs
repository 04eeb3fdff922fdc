//! `lockrace compare A.json B.json [--metric NAME --max-increase PCT]... [--html FILE]`: read
//! both reports, print the table of `report::compare`, write the side-by-side page of
//! `report::html::compare` when asked, exit with the comparison's status.
//!
//! Invariant: bad input is reported here as one line and exit status 2 (the contract of
//! `git bisect run` scripts), never as an error of `main` (which would exit 1).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::error::{hinted, render_error};
use crate::report::compare::{
    Checked, EXIT_BAD_INPUT, EXIT_REGRESSION, compare_texts, exit_code, extract, identity,
    parse_bounds, parse_report,
};
use crate::report::html::{self, compare::Compared};
use crate::report::model::Document;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The baseline report (`lockrace run --json`), e.g. from a known-good kernel.
    #[arg(value_name = "A.json")]
    pub a: PathBuf,
    /// The report to check against A.
    #[arg(value_name = "B.json")]
    pub b: PathBuf,
    /// A metric to bound (see the list below); repeatable, each with one --max-increase.
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,
    /// The largest increase of B over A, in percent, for the --metric at the same position.
    #[arg(long, value_name = "PCT")]
    pub max_increase: Vec<f64>,
    /// Also write both reports side by side, with a chart of whoops per handoff, to FILE (HTML).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Worst handoffs drawn per report in the HTML comparison.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub html_handoffs: u64,
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path.is_dir() {
        anyhow::bail!("{} is a directory, not a report", path.display());
    }
    std::fs::read_to_string(path).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", path.display()),
            "write a report with `lockrace run --json FILE`",
        )
    })
}

fn run(args: &CompareArgs) -> anyhow::Result<(String, Vec<Checked>)> {
    let bounds = parse_bounds(&args.metric, &args.max_increase)?;
    let (ta, tb) = (read(&args.a)?, read(&args.b)?);
    let (na, nb) = (args.a.display().to_string(), args.b.display().to_string());
    compare_texts((&na, &nb), (&ta, &tb), &bounds)
}

/// `lockrace compare`: prints the table; bad input is reported here (exit 2), not by `main`.
pub fn main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    match run(&args) {
        Ok((text, checked)) => {
            print!("{text}");
            if let Err(e) = write_comparison(&args, &checked) {
                eprintln!("lockrace: {}", render_error(&e));
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
            let code = exit_code(&checked);
            if code == EXIT_REGRESSION {
                let over: Vec<&str> = checked
                    .iter()
                    .filter(|c| c.exceeded)
                    .map(|c| c.bound.metric.name)
                    .collect();
                let bounds = if over.len() == 1 {
                    "its bound"
                } else {
                    "their bounds"
                };
                eprintln!("lockrace: regression: {} beyond {bounds}", over.join(", "));
            }
            Ok(ExitCode::from(code))
        }
        Err(e) => {
            eprintln!("lockrace: {}", render_error(&e));
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

/// `lockrace compare A.json B.json --html FILE`: both reports side by side (nothing when
/// `--html` was not given). The files were already read and checked by the comparison.
fn write_comparison(args: &CompareArgs, checked: &[Checked]) -> anyhow::Result<()> {
    let Some(out) = &args.html else {
        return Ok(());
    };
    let mut loaded = Vec::new();
    for path in [&args.a, &args.b] {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        let value = parse_report(&text, &name)?;
        // The comparison reads figures by field path; a report lacking fields the full model
        // needs still gets its column of figures, with a note instead of its details.
        let doc = serde_json::from_value::<Document>(value.clone()).map_err(|e| e.to_string());
        loaded.push((name, identity(&value), extract(&value), doc));
    }
    let items: Vec<Compared<'_>> = loaded
        .iter()
        .map(|(name, identity, metrics, doc)| Compared {
            name,
            doc: doc.as_ref().map_err(String::as_str),
            identity,
            metrics,
        })
        .collect();
    let opts = html::Options {
        handoffs: usize::try_from(args.html_handoffs).unwrap_or(html::DEFAULT_HANDOFFS),
    };
    html::write(out, &html::render_comparison(&items, checked, &opts))
}
