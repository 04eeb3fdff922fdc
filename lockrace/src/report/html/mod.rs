//! The HTML report (`--html FILE`): one self-contained page rendered from the [`Document`], the
//! same model as the terminal and JSON reports (no second analysis). Top to bottom: the verdict,
//! the diagnosis, the workload's own account, a per-lock table, the whoops and their causes, an
//! SVG timeline of the worst handoffs (one lane per task, blocked/runnable/holding spans, wakeup
//! arrows from waker to wakee, the grant that followed, a time axis in µs), log2 histograms of
//! wait time and wake-to-run latency as SVG bars, and what is missing. [`render_comparison`]
//! puts several reports side by side with a chart of whoops per handoff (`lockrace compare
//! --html`). Here: the page and its header; `sections` the sections, `svg` the drawings,
//! [`compare`] the side-by-side page.
//!
//! Invariants: pure string building (only [`write`] touches the disk); self-contained: inline
//! CSS and SVG, no script, no font, no image, no external URL, and a Content-Security-Policy of
//! `default-src 'none'` so that a browser would refuse to fetch anything even if a URL slipped
//! in; every text from the document is escaped; the structure tests rely on is stable:
//! `<figure class="handoff" data-rank=N>`, one `<g class="lane" data-tid=TID>` per task of the
//! handoff, one `<line class="wakeup" data-from=TID data-to=TID>` per wakeup, and
//! `<p class="verdict-line">` per verdict sentence.
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use super::build::fmt_ns;
use super::model::Document;

pub mod compare;
mod sections;
mod svg;

pub use compare::{Compared, render_comparison};

/// Worst handoffs drawn by default (`--html-handoffs`).
pub const DEFAULT_HANDOFFS: usize = 5;
/// Lock rows in the table (the JSON has every lock).
const LOCKS_SHOWN: usize = 20;
/// Locks whose histograms are drawn.
const HISTOGRAM_LOCKS: usize = 3;

/// What to render.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worst handoffs drawn as timelines (the document keeps at most 8).
    pub handoffs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            handoffs: DEFAULT_HANDOFFS,
        }
    }
}

/// Escape text for HTML element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
:root { --blocked: #d64545; --runnable: #f0a202; --woken: #f6cf7a; --holding: #2b7bb9;
  --grant: #1d9a58; --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff;
  --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--ink); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.meta { color: var(--muted); margin: 0 0 12px; }
.verdict { background: #fff8e6; border: 1px solid #f0d58c; border-left: 6px solid var(--runnable);
  border-radius: 6px; padding: 12px 16px; }
.verdict.clean { background: #eefaf2; border-color: #a6e3bd; border-left-color: var(--grant); }
.verdict-line { margin: 4px 0; }
.verdict-line:first-child { font-size: 16px; font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; vertical-align: 1px; }
.badge.error { background: var(--blocked); } .badge.warning { background: #c77c02; }
.badge.info { background: var(--muted); } .badge.ok { background: var(--grant); }
.badge.incomplete { background: var(--blocked); }
ul.diagnosis { list-style: none; padding: 0; margin: 0; }
ul.diagnosis li { margin: 6px 0; padding: 8px 12px; background: var(--panel); border-radius: 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.l, th.l { text-align: left; }
td.bad { color: var(--blocked); font-weight: 600; }
.note { color: var(--muted); font-size: 13px; }
figure.handoff { margin: 14px 0 26px; padding: 10px 12px; border: 1px solid var(--line); border-radius: 8px; }
figcaption { font-weight: 600; margin-bottom: 6px; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--ink); }
svg text.small { font-size: 10.5px; fill: var(--muted); }
svg text.on-bar { font-size: 10.5px; fill: #fff; }
svg .span.blocked { fill: var(--blocked); } svg .span.runnable { fill: var(--runnable); }
svg .span.woken { fill: var(--woken); } svg .span.holding { fill: var(--holding); }
svg .lane-bg { fill: var(--panel); }
svg .axis, svg .tick { stroke: #8c959f; stroke-width: 1; }
svg .grid { stroke: #e6e9ec; stroke-width: 1; }
svg .release-line { stroke: var(--holding); stroke-width: 1; stroke-dasharray: 4 3; }
svg .wakeup { stroke: var(--ink); stroke-width: 1.6; }
svg .grant { fill: var(--grant); stroke: #fff; stroke-width: 1; }
svg .ran { fill: var(--ink); }
svg .reblocked, svg .failed { stroke: var(--ink); stroke-width: 1.8; }
svg .bar { fill: var(--holding); } svg .bar.wait { fill: var(--blocked); }
svg .bar.w2r { fill: var(--runnable); }
.legend { display: flex; gap: 16px; flex-wrap: wrap; margin: 4px 0 8px; color: var(--muted); font-size: 12.5px; }
.legend span::before { content: ""; display: inline-block; width: 14px; height: 10px;
  margin-right: 5px; vertical-align: 0; border-radius: 2px; background: var(--c); }
ol.timeline { margin: 6px 0 0; padding-left: 0; list-style: none; font-size: 12.5px; }
ol.timeline li { margin: 1px 0; }
ol.timeline .dt { display: inline-block; min-width: 84px; color: var(--muted); }
.hists { display: flex; gap: 24px; flex-wrap: wrap; }
.hists > div { flex: 1 1 420px; max-width: 560px; }
.hist-title { margin: 4px 0 2px; font-size: 13px; }
.columns { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 24px; }
.columns > section { min-width: 0; }
.columns table { font-size: 12px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"#;

/// A whole page around `body`.
fn page(title: &str, body: &str) -> String {
    let mut o = String::with_capacity(body.len() + CSS.len() + 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n",
    );
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        o,
        "<meta name=\"generator\" content=\"lockrace {}\">",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(o, "<title>{}</title>", esc(title));
    let _ = writeln!(o, "<style>{CSS}</style>\n</head>\n<body>");
    o.push_str(body);
    let _ = writeln!(
        o,
        "<footer>Written by lockrace {}: one self-contained file (inline CSS and SVG, nothing \
         fetched). The same document as <code>--json</code>; field meanings in \
         docs/REPORT-SCHEMA.md.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    o
}

/// The page for one report.
pub fn render(doc: &Document, opts: &Options) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<header>\n<h1>lockrace report</h1>");
    let _ = writeln!(b, "<p class=\"meta\">{}</p>\n</header>", esc(&facts(doc)));
    report_body(&mut b, doc, opts, "r", 2);
    page(&title(doc), &b)
}

/// Write `html` to `path`.
pub fn write(path: &Path, html: &str) -> anyhow::Result<()> {
    std::fs::write(path, html)
        .with_context(|| format!("cannot write the HTML report {}", path.display()))
}

/// Render `doc` and write it to `path`.
pub fn write_report(path: &Path, doc: &Document, opts: &Options) -> anyhow::Result<()> {
    write(path, &render(doc, opts))
}

fn title(doc: &Document) -> String {
    match &doc.workload {
        Some(w) if w.sync.is_some() => {
            format!("lockrace: --sync {}", w.sync.as_deref().unwrap_or_default())
        }
        Some(w) => format!("lockrace: {}/{}", w.lock, w.share),
        None => "lockrace report".to_string(),
    }
}

/// One line of facts: kernel, workload, events, duration, version.
fn facts(doc: &Document) -> String {
    let mut f = vec![format!("kernel {}", doc.kernel.release)];
    if let Some(w) = &doc.workload {
        let what = match (&w.sync, &w.scenario) {
            (Some(s), _) => format!("--sync {s}"),
            (None, Some(s)) => format!("--scenario {s}, {} lock, {} share", w.lock, w.share),
            (None, None) => format!("{} lock, {} share", w.lock, w.share),
        };
        f.push(format!("{what}, {} iterations", w.iterations));
    }
    if let Some(c) = &doc.capture {
        f.push(format!(
            "{} events captured, {} dropped",
            c.events, c.dropped
        ));
    }
    if let Some(a) = &doc.analysis {
        f.push(format!(
            "{} analysed over {}",
            a.events,
            fmt_ns(a.duration_ns)
        ));
    }
    f.push(format!("lockrace {}", doc.lockrace_version));
    f.join(" · ")
}

/// Everything of one report below its header; `id` prefixes element ids (unique per page),
/// `h` is the heading level of its sections.
fn report_body(b: &mut String, doc: &Document, opts: &Options, id: &str, h: u8) {
    use sections::*;
    verdict_section(b, doc, id);
    diagnosis_section(b, doc, h);
    workload_section(b, doc, h);
    locks_section(b, doc, h);
    whoops_section(b, doc, h);
    handoffs_section(b, doc, opts, id, h);
    histograms_section(b, doc, h);
    completeness_section(b, doc, h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
