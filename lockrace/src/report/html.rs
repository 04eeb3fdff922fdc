//! The HTML report (`--html FILE`): one self-contained page rendered from the [`Document`], the
//! same model as the terminal and JSON reports (no second analysis). Top to bottom: the verdict,
//! the diagnosis, the workload's own account, a per-lock table, the whoops and their causes, an
//! SVG timeline of the worst handoffs (one lane per task, blocked/runnable/holding spans, wakeup
//! arrows from waker to wakee, the grant that followed, a time axis in µs), log2 histograms of
//! wait time and wake-to-run latency as SVG bars, and what is missing. [`render_comparison`]
//! puts several reports side by side with a chart of whoops per handoff (`lockrace compare
//! --html`).
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

use super::build::{fmt_ns, pct};
use super::model::{
    Document, HandoffReport, HistBucket, LockReport, Percentiles, Severity, SpanReport,
};
use crate::compare::{self, Checked, Identity, METRICS, Metrics};

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

impl Options {
    pub fn from_args(args: &crate::cli::HtmlArgs) -> Options {
        Options {
            handoffs: usize::try_from(args.html_handoffs).unwrap_or(DEFAULT_HANDOFFS),
        }
    }
}

/// `--html FILE`: render `doc` to FILE when asked (nothing otherwise).
pub fn write_if_asked(args: &crate::cli::HtmlArgs, doc: &Document) -> anyhow::Result<()> {
    match &args.html {
        Some(path) => write_report(path, doc, &Options::from_args(args)),
        None => Ok(()),
    }
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
    verdict_section(b, doc, id);
    diagnosis_section(b, doc, h);
    workload_section(b, doc, h);
    locks_section(b, doc, h);
    whoops_section(b, doc, h);
    handoffs_section(b, doc, opts, id, h);
    histograms_section(b, doc, h);
    completeness_section(b, doc, h);
}

fn verdict_section(b: &mut String, doc: &Document, id: &str) {
    let clean = doc.diagnosis.is_empty() && doc.complete;
    let _ = writeln!(
        b,
        "<section class=\"verdict{}\" id=\"{id}-verdict\">",
        if clean { " clean" } else { "" }
    );
    if doc.verdict.is_empty() {
        let _ = writeln!(
            b,
            "<p class=\"verdict-line\">No lock events were analysed.</p>"
        );
    }
    for line in &doc.verdict {
        let _ = writeln!(b, "<p class=\"verdict-line\">{}</p>", esc(line));
    }
    let badge = if doc.complete {
        "<span class=\"badge ok\">complete</span>"
    } else {
        "<span class=\"badge incomplete\">incomplete</span>"
    };
    let _ = writeln!(b, "<p class=\"note\">{badge}</p>\n</section>");
}

fn diagnosis_section(b: &mut String, doc: &Document, h: u8) {
    if doc.diagnosis.is_empty() {
        return;
    }
    let _ = writeln!(b, "<section class=\"diagnosis\">\n<h{h}>Diagnosis</h{h}>");
    let _ = writeln!(b, "<ul class=\"diagnosis\">");
    for d in &doc.diagnosis {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(
            b,
            "<li class=\"{sev}\"><span class=\"badge {sev}\">{sev}</span> <code>{}</code> {}</li>",
            esc(&d.code),
            esc(&d.message)
        );
    }
    let _ = writeln!(b, "</ul>\n</section>");
}

fn opt_ns(v: Option<u64>) -> String {
    v.map(fmt_ns).unwrap_or_else(|| "-".into())
}

fn workload_section(b: &mut String, doc: &Document, h: u8) {
    let Some(w) = &doc.workload else { return };
    if w.roles.is_empty() {
        return;
    }
    let _ = writeln!(
        b,
        "<section class=\"workload\">\n<h{h}>The workload's own account</h{h}>"
    );
    let _ = writeln!(
        b,
        "<table>\n<tr><th class=\"l\">role</th><th>pid</th><th>turns</th><th>acquisitions</th>\
         <th>whoops</th><th>whoops/turn</th><th>overlaps</th><th>elapsed</th>\
         <th>handoff p50</th><th>handoff p99</th></tr>"
    );
    for r in &w.roles {
        let per = if r.iterations > 0 {
            format!("{:.2}", r.whoops as f64 / r.iterations as f64)
        } else {
            "-".into()
        };
        let (p50, p99) = r
            .handoff_latency
            .as_ref()
            .map(|l| (opt_ns(l.p50_ns), opt_ns(l.p99_ns)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{per}</td>\
             <td{}>{}</td><td>{}</td><td>{p50}</td><td>{p99}</td></tr>",
            esc(&r.role),
            r.pid,
            r.iterations,
            r.acquisitions,
            r.whoops,
            if r.overlaps > 0 { " class=\"bad\"" } else { "" },
            r.overlaps,
            fmt_ns(r.elapsed_ns)
        );
    }
    let _ = writeln!(b, "</table>");
    if let Some(e) = &w.probe_effect {
        let ratio = e
            .ratio
            .map(|r| format!(" (ratio {r:.2})"))
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<p class=\"note\">Probe effect: whoops per handoff {:.2} untraced, {:.2} traced{ratio}.</p>",
            e.untraced_whoops_per_handoff, e.traced_whoops_per_handoff
        );
    }
    let _ = writeln!(b, "</section>");
}

/// Lock indices, most contended first (as the terminal orders them).
fn lock_order(doc: &Document) -> Vec<usize> {
    let mut order: Vec<usize> = (0..doc.locks.len()).collect();
    order.sort_by_key(|&i| {
        let l = &doc.locks[i];
        std::cmp::Reverse((l.blocks + l.overlapping_grants, l.grants))
    });
    order
}

/// The index of the lock the whoops are about (the run's memfd).
fn whoops_lock(doc: &Document) -> Option<usize> {
    doc.whoops.as_ref()?;
    let ino = doc
        .workload
        .as_ref()?
        .roles
        .iter()
        .map(|r| r.memfd_ino)
        .find(|&i| i != 0)?;
    doc.locks.iter().position(|l| l.ino == ino)
}

fn pcts(p: &Percentiles) -> String {
    match (p.p50, p.p99) {
        (Some(a), Some(b)) => format!("{} / {}", fmt_ns(a), fmt_ns(b)),
        _ => "-".into(),
    }
}

fn locks_section(b: &mut String, doc: &Document, h: u8) {
    if doc.locks.is_empty() {
        return;
    }
    let wl = whoops_lock(doc);
    let order = lock_order(doc);
    let shown = &order[..order.len().min(LOCKS_SHOWN)];
    let bad = |n: u64| if n > 0 { " class=\"bad\"" } else { "" };
    let _ = writeln!(b, "<section class=\"locks\">\n<h{h}>Locks</h{h}>");
    let _ = writeln!(
        b,
        "<table class=\"locks\">\n<tr><th class=\"l\">#</th><th class=\"l\">lock</th>\
         <th class=\"l\">kind</th><th>owners</th><th>requests</th><th>blocked requests</th>\
         <th>blocks</th><th>grants</th><th>releases</th><th>errors</th><th>spurious wakes</th>\
         <th>wake inversions</th><th>overlapping grants</th></tr>"
    );
    for &i in shown {
        let l = &doc.locks[i];
        let path = l
            .path
            .as_deref()
            .map(|p| format!(" <span class=\"note\">{}</span>", esc(p)))
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{i}</td><td class=\"l\"><code>{}</code>{path}</td>\
             <td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td{}>{}</td></tr>",
            esc(&l.name),
            esc(&l.kind),
            l.owners.len(),
            l.requests,
            l.blocked_requests,
            l.blocks,
            l.grants,
            l.releases,
            l.errors,
            l.spurious_wakes,
            bad(l.wake_inversions),
            l.wake_inversions,
            bad(l.overlapping_grants),
            l.overlapping_grants
        );
    }
    let _ = writeln!(b, "</table>");
    let _ = writeln!(
        b,
        "<table class=\"handoff-classes\">\n<tr><th class=\"l\">#</th><th>handoffs</th>\
         <th>fifo</th><th>self_barge</th><th>newcomer_barge</th><th>waiter_reorder</th>\
         <th>unresolved</th><th>whoops</th><th>whoops causes: self_barge / peer_not_waiting / \
         no_exclusion</th><th>wait p50 / p99</th><th>wake-to-run p50 / p99</th></tr>"
    );
    for &i in shown {
        let l = &doc.locks[i];
        let hd = &l.handoffs;
        let all = hd.fifo + hd.self_barge + hd.newcomer_barge + hd.waiter_reorder + hd.unresolved;
        let (whoops, causes) = match (&doc.whoops, wl) {
            (Some(w), Some(j)) if j == i => (
                w.total.to_string(),
                format!(
                    "{} / {} / {}",
                    w.by_cause.self_barge, w.by_cause.peer_not_waiting, w.by_cause.no_exclusion
                ),
            ),
            _ => ("-".into(), "-".into()),
        };
        let share = |n: u64| {
            if all > 0 && n > 0 {
                format!(" <span class=\"note\">({})</span>", pct(n, all))
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{i}</td><td>{all}</td><td>{}{}</td><td{}>{}{}</td><td{}>{}{}</td>\
             <td{}>{}{}</td><td>{}</td><td>{whoops}</td><td>{causes}</td><td>{}</td><td>{}</td></tr>",
            hd.fifo,
            share(hd.fifo),
            bad(hd.self_barge),
            hd.self_barge,
            share(hd.self_barge),
            bad(hd.newcomer_barge),
            hd.newcomer_barge,
            share(hd.newcomer_barge),
            bad(hd.waiter_reorder),
            hd.waiter_reorder,
            share(hd.waiter_reorder),
            hd.unresolved,
            pcts(&l.wait_ns),
            pcts(&l.wake_to_run_ns)
        );
    }
    let _ = writeln!(b, "</table>");
    if doc.locks.len() > LOCKS_SHOWN {
        let _ = writeln!(
            b,
            "<p class=\"note\">... and {} more locks with less contention (see --json).</p>",
            doc.locks.len() - LOCKS_SHOWN
        );
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Handoffs are releases with waiters: <b>fifo</b> the longest-waiting \
         waiter got the lock next; <b>self_barge</b> the releaser took it back while a woken \
         waiter was pending; <b>newcomer_barge</b> a task that was not waiting got it; \
         <b>waiter_reorder</b> a later waiter was granted first; <b>unresolved</b> no grant \
         decided it. Whoops belong to the run's memfd.</p>\n</section>"
    );
}

fn whoops_section(b: &mut String, doc: &Document, h: u8) {
    let Some(w) = &doc.whoops else { return };
    let _ = writeln!(
        b,
        "<section class=\"whoops\">\n<h{h}>Whoops and their causes</h{h}>"
    );
    let _ = writeln!(
        b,
        "<table>\n<tr><th class=\"l\">role</th><th>tgid</th><th>acquisitions</th>\
         <th>kernel grants</th><th>whoops</th><th>explained</th><th>self_barge</th>\
         <th>peer_not_waiting</th><th>no_exclusion</th></tr>"
    );
    for r in &w.roles {
        let mismatch = if r.grants != r.acquisitions {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td{mismatch}>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.role),
            r.tgid,
            r.acquisitions,
            r.grants,
            r.whoops,
            r.explained,
            r.by_cause.self_barge,
            r.by_cause.peer_not_waiting,
            r.by_cause.no_exclusion
        );
    }
    let c = &w.by_cause;
    let _ = writeln!(
        b,
        "<tr><th class=\"l\">all</th><td></td><td></td><td></td><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th></tr>\n</table>",
        w.total, w.explained, c.self_barge, c.peer_not_waiting, c.no_exclusion
    );
    let p = &w.by_peer_state;
    let _ = writeln!(
        b,
        "<p class=\"note\">What the other side was doing at each whoops grant: waiting \
         (blocked {}, woken not yet running {}, running not yet retried {}); not waiting \
         (outside any lock request {}, in the syscall but not blocked yet {}); same lock owner \
         {}.</p>",
        p.blocked,
        p.woken_not_running,
        p.running_not_retried,
        p.not_in_request,
        p.in_request_not_blocked,
        p.shared_owner
    );
    for m in &w.mismatches {
        let _ = writeln!(b, "<p class=\"note\">Mismatch: {}</p>", esc(m));
    }
    let _ = writeln!(b, "</section>");
}

fn handoffs_section(b: &mut String, doc: &Document, opts: &Options, id: &str, h: u8) {
    if doc.worst_handoffs.is_empty() || opts.handoffs == 0 {
        return;
    }
    let shown = opts.handoffs.min(doc.worst_handoffs.len());
    let _ = writeln!(
        b,
        "<section class=\"handoffs\">\n<h{h}>Worst handoffs ({shown} of {})</h{h}>",
        doc.worst_handoffs.len()
    );
    let _ = writeln!(
        b,
        "<div class=\"legend\"><span style=\"--c: var(--blocked)\">blocked on the lock</span>\
         <span style=\"--c: var(--runnable)\">woken, waiting for a CPU</span>\
         <span style=\"--c: var(--woken)\">woken earlier (when it ran is not recorded)</span>\
         <span style=\"--c: var(--holding)\">holding the lock</span>\
         <span style=\"--c: var(--ink)\">wakeup, waker &#8594; wakee</span>\
         <span style=\"--c: var(--grant)\">grant</span></div>"
    );
    for (n, ho) in doc.worst_handoffs.iter().take(shown).enumerate() {
        handoff_figure(b, doc, ho, n + 1, id);
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Unfair outcomes first, then by how long the oldest waiter had \
         waited. Bars that reach the left edge began before the window (their full length is \
         in the tooltip); bars that reach the right edge lasted past the last recorded \
         event.</p>\n</section>"
    );
}

/// The tasks of a handoff, in lane order: releaser, waiters in block order, then the others.
fn lane_tids(ho: &HandoffReport) -> Vec<u32> {
    let mut tids = vec![ho.releaser.tid];
    let mut add = |t: u32| {
        if !tids.contains(&t) {
            tids.push(t);
        }
    };
    for w in &ho.waiters {
        add(w.tid);
    }
    if let Some(n) = &ho.next {
        add(n.tid);
    }
    for t in &ho.timeline {
        add(t.tid);
    }
    for w in &ho.wakeups {
        add(w.waker_tid);
        add(w.wakee_tid);
    }
    for s in &ho.spans {
        add(s.tid);
    }
    tids
}

fn comm_of(doc: &Document, ho: &HandoffReport, tid: u32) -> String {
    if ho.releaser.tid == tid {
        return ho.releaser.comm.clone();
    }
    if let Some(w) = ho.waiters.iter().find(|w| w.tid == tid) {
        return w.comm.clone();
    }
    if let Some(n) = ho.next.as_ref().filter(|n| n.tid == tid) {
        return n.comm.clone();
    }
    doc.tasks
        .iter()
        .find(|t| t.tid == tid)
        .map(|t| t.comm.clone())
        .unwrap_or_else(|| "?".into())
}

/// Ticks: a 1-2-5 step giving about `want` ticks over `range` ns.
fn tick_step(range: f64, want: f64) -> f64 {
    let raw = (range / want).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// `ns` as µs for the axis, with as many decimals as `step` needs.
fn axis_label(ns: f64, step: f64) -> String {
    let us = ns / 1e3;
    let decimals = if step >= 1000.0 {
        0
    } else if step >= 100.0 {
        1
    } else {
        2
    };
    let us = if us.abs() < 0.5 * 10f64.powi(-decimals) {
        0.0
    } else {
        us
    };
    format!("{us:.*} µs", decimals as usize)
}

/// Signed duration for tooltips: `+8.0 µs`, `-276.7 µs`.
fn signed_ns(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "+" };
    format!("{sign}{}", fmt_ns(v.unsigned_abs() as u64))
}

struct Geometry {
    /// Timestamp of relative 0 (the first timeline item, as the terminal's `+dt`).
    t0: u64,
    dmin: f64,
    dmax: f64,
    x0: f64,
    x1: f64,
}

impl Geometry {
    fn rel(&self, ts: u64) -> f64 {
        ts as f64 - self.t0 as f64
    }
    fn x(&self, rel: f64) -> f64 {
        let r = rel.clamp(self.dmin, self.dmax);
        self.x0 + (r - self.dmin) / (self.dmax - self.dmin) * (self.x1 - self.x0)
    }
}

const SVG_W: f64 = 1000.0;
const LABEL_W: f64 = 200.0;
const LANE_H: f64 = 40.0;
const BAR_H: f64 = 16.0;
const TOP: f64 = 22.0;
const AXIS_H: f64 = 34.0;

fn handoff_figure(b: &mut String, doc: &Document, ho: &HandoffReport, rank: usize, id: &str) {
    let lock = doc
        .locks
        .get(ho.lock)
        .map(|l| l.name.as_str())
        .unwrap_or("?");
    let _ = writeln!(
        b,
        "<figure class=\"handoff\" data-rank=\"{rank}\" data-outcome=\"{}\" id=\"{id}-handoff-{rank}\">",
        esc(&ho.outcome)
    );
    let _ = writeln!(
        b,
        "<figcaption>#{rank} <code>{}</code> on <code>{}</code>: {} ({}) released it with {} \
         waiter(s); the oldest had waited {}</figcaption>",
        esc(&ho.outcome),
        esc(lock),
        esc(&ho.releaser.comm),
        ho.releaser.tid,
        ho.waiters_total,
        fmt_ns(ho.oldest_wait_ns)
    );
    timeline_svg(b, doc, ho, rank, id);
    if !ho.timeline.is_empty() {
        let _ = writeln!(b, "<ol class=\"timeline\">");
        for t in &ho.timeline {
            let _ = writeln!(
                b,
                "<li class=\"{}\"><span class=\"dt mono\">+{}</span>{}</li>",
                esc(&t.event),
                fmt_ns(t.dt_ns),
                esc(&t.text)
            );
        }
        if ho.timeline_truncated {
            let _ = writeln!(b, "<li class=\"note\">... (more events, truncated)</li>");
        }
        let _ = writeln!(b, "</ol>");
    }
    let _ = writeln!(b, "</figure>");
}

fn timeline_svg(b: &mut String, doc: &Document, ho: &HandoffReport, rank: usize, id: &str) {
    let tids = lane_tids(ho);
    let mut stamps: Vec<u64> = ho.timeline.iter().map(|t| t.ts_ns).collect();
    stamps.push(ho.release_ts_ns);
    stamps.extend(ho.grant_ts_ns);
    stamps.extend(ho.wakeups.iter().map(|w| w.ts_ns));
    let t0 = ho
        .timeline
        .iter()
        .map(|t| t.ts_ns)
        .min()
        .unwrap_or(ho.release_ts_ns);
    let lo = stamps.iter().copied().min().unwrap_or(t0);
    let hi = stamps.iter().copied().max().unwrap_or(t0);
    let span = ((hi - lo) as f64).max(1_000.0);
    let pad = span * 0.08;
    let g = Geometry {
        t0,
        dmin: lo as f64 - t0 as f64 - pad,
        dmax: hi as f64 - t0 as f64 + pad,
        x0: LABEL_W + 10.0,
        x1: SVG_W - 16.0,
    };
    let height = TOP + LANE_H * tids.len() as f64 + AXIS_H;
    let lane_y = |tid: u32| -> f64 {
        let i = tids.iter().position(|&t| t == tid).unwrap_or(0);
        TOP + LANE_H * i as f64
    };
    let center = |tid: u32| lane_y(tid) + LANE_H / 2.0;
    let marker = format!("{id}-arrow-{rank}");
    let _ = writeln!(
        b,
        "<svg class=\"timeline\" viewBox=\"0 0 {SVG_W} {height:.0}\" role=\"img\" \
         aria-label=\"timeline of handoff {rank}\">"
    );
    let _ = writeln!(
        b,
        "<defs><marker id=\"{marker}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#1f2328\"/></marker></defs>"
    );
    // Grid and axis.
    let step = tick_step(g.dmax - g.dmin, 8.0);
    let axis_y = TOP + LANE_H * tids.len() as f64 + 4.0;
    let _ = writeln!(
        b,
        "<g class=\"axis-group\"><line class=\"axis\" x1=\"{:.1}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\"/>",
        g.x0, g.x1
    );
    let mut t = (g.dmin / step).ceil() * step;
    while t <= g.dmax + 1e-9 {
        let x = g.x(t);
        let _ = writeln!(
            b,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"/>\
             <line class=\"tick\" x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"small\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            axis_y + 5.0,
            axis_y + 18.0,
            esc(&axis_label(t, step))
        );
        t += step;
    }
    let _ = writeln!(
        b,
        "<text class=\"small\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">time since the first \
         event</text></g>",
        g.x0 - 8.0,
        axis_y + 18.0
    );
    // Lanes, with their spans and the marks of their own events.
    for (i, &tid) in tids.iter().enumerate() {
        let y = lane_y(tid);
        let comm = comm_of(doc, ho, tid);
        let mut roles = Vec::new();
        if tid == ho.releaser.tid {
            roles.push("released".to_string());
        }
        if let Some(k) = ho.waiters.iter().position(|w| w.tid == tid) {
            roles.push(format!("waiter #{}", k + 1));
        }
        if ho.next.as_ref().is_some_and(|n| n.tid == tid) {
            roles.push("got it next".to_string());
        }
        let _ = writeln!(b, "<g class=\"lane\" data-tid=\"{tid}\">");
        if i % 2 == 0 {
            let _ = writeln!(
                b,
                "<rect class=\"lane-bg\" x=\"0\" y=\"{y:.1}\" width=\"{SVG_W}\" height=\"{LANE_H}\"/>"
            );
        }
        let _ = writeln!(
            b,
            "<text x=\"8\" y=\"{:.1}\">{} ({tid})</text><text class=\"small\" x=\"8\" y=\"{:.1}\">{}</text>",
            y + 17.0,
            esc(&comm),
            y + 31.0,
            esc(&roles.join(", "))
        );
        for s in ho.spans.iter().filter(|s| s.tid == tid) {
            span_rect(b, &g, s, y + (LANE_H - BAR_H) / 2.0, &comm);
        }
        for t in ho.timeline.iter().filter(|t| t.tid == tid) {
            let x = g.x(g.rel(t.ts_ns));
            let cy = y + LANE_H / 2.0;
            let tip = format!("+{} {}", fmt_ns(t.dt_ns), t.text);
            match t.event.as_str() {
                "granted" => {
                    let near_right = x > g.x1 - 140.0;
                    let decided = ho.grant_ts_ns == Some(t.ts_ns)
                        && ho.next.as_ref().is_some_and(|n| n.tid == tid);
                    let _ = writeln!(
                        b,
                        "<path class=\"grant\" data-tid=\"{tid}\" d=\"M{x:.1},{:.1} l7,9 l-7,9 l-7,-9 z\">\
                         <title>{}</title></path><text class=\"small\" x=\"{:.1}\" y=\"{:.1}\"{}>{}</text>",
                        cy - 9.0,
                        esc(&tip),
                        if near_right { x - 9.0 } else { x + 9.0 },
                        y + 9.0,
                        if near_right {
                            " text-anchor=\"end\""
                        } else {
                            ""
                        },
                        if decided {
                            format!("granted ({})", esc(&ho.outcome))
                        } else {
                            "granted".to_string()
                        }
                    );
                }
                "released" => {
                    let _ = writeln!(
                        b,
                        "<line class=\"release-line\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{axis_y:.1}\"><title>{}</title></line>\
                         <text class=\"small\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">released</text>",
                        TOP,
                        esc(&tip),
                        x - 3.0,
                        y + 9.0
                    );
                }
                "ran" => {
                    let by = y + (LANE_H + BAR_H) / 2.0;
                    let _ = writeln!(
                        b,
                        "<path class=\"ran\" d=\"M{x:.1},{:.1} l5,7 l-10,0 z\"><title>{}</title></path>",
                        by,
                        esc(&tip)
                    );
                }
                "reblocked" | "failed" => {
                    let _ = writeln!(
                        b,
                        "<path class=\"{}\" d=\"M{:.1},{:.1} l8,8 m0,-8 l-8,8\"><title>{}</title></path>",
                        esc(&t.event),
                        x - 4.0,
                        cy - 4.0,
                        esc(&tip)
                    );
                }
                _ => {}
            }
        }
        let _ = writeln!(b, "</g>");
    }
    // Wakeup arrows, from the waker's lane to the wakee's bar.
    for w in &ho.wakeups {
        let x = g.x(g.rel(w.ts_ns));
        let (from, to) = (center(w.waker_tid), center(w.wakee_tid));
        let edge = BAR_H / 2.0 + 2.0;
        let y2 = if to > from { to - edge } else { to + edge };
        let tip = format!(
            "{} {} ({}) woke {} ({}) on cpu {}, aimed at cpu {}",
            signed_ns(w.ts_ns as i128 - g.t0 as i128),
            comm_of(doc, ho, w.waker_tid),
            w.waker_tid,
            comm_of(doc, ho, w.wakee_tid),
            w.wakee_tid,
            w.waker_cpu,
            w.target_cpu
        );
        let _ = writeln!(
            b,
            "<line class=\"wakeup\" data-from=\"{}\" data-to=\"{}\" x1=\"{x:.1}\" y1=\"{from:.1}\" \
             x2=\"{x:.1}\" y2=\"{y2:.1}\" marker-end=\"url(#{marker})\"><title>{}</title></line>\
             <text class=\"small\" x=\"{:.1}\" y=\"{:.1}\">woke</text>",
            w.waker_tid,
            w.wakee_tid,
            esc(&tip),
            x + 4.0,
            (from + y2) / 2.0 + 4.0
        );
    }
    let _ = writeln!(b, "</svg>");
}

fn span_rect(b: &mut String, g: &Geometry, s: &SpanReport, y: f64, comm: &str) {
    let start = s.start_ts_ns.map(|t| g.rel(t));
    let end = s.end_ts_ns.map(|t| g.rel(t));
    let (rs, re) = (
        start.unwrap_or(f64::NEG_INFINITY),
        end.unwrap_or(f64::INFINITY),
    );
    if re < g.dmin || rs > g.dmax {
        return;
    }
    let (xs, xe) = (g.x(rs), g.x(re));
    let w = (xe - xs).max(1.5);
    let what = match s.state.as_str() {
        "blocked" => "blocked on the lock",
        "runnable" => "woken, waiting for a CPU",
        "woken" => "woken before the release",
        "holding" => "holding the lock",
        other => other,
    };
    let from = start
        .map(|r| signed_ns(r.round() as i128))
        .unwrap_or_else(|| "before the record".into());
    let to = end
        .map(|r| signed_ns(r.round() as i128))
        .unwrap_or_else(|| "after the record".into());
    let dur = match (s.start_ts_ns, s.end_ts_ns) {
        (Some(a), Some(e)) => format!(" for {}", fmt_ns(e.saturating_sub(a))),
        _ => String::new(),
    };
    let _ = writeln!(
        b,
        "<rect class=\"span {}\" x=\"{xs:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAR_H}\" rx=\"2\">\
         <title>{} {what}{dur}: from {from} to {to}</title></rect>",
        esc(&s.state),
        esc(comm)
    );
    let label = match (s.state.as_str(), s.start_ts_ns, s.end_ts_ns) {
        ("blocked", Some(a), Some(e)) => format!("blocked {}", fmt_ns(e.saturating_sub(a))),
        ("blocked", Some(a), None) if rs < g.dmin => {
            format!("blocked since {}", signed_ns(a as i128 - g.t0 as i128))
        }
        ("runnable", Some(a), Some(e)) => format!("runnable {}", fmt_ns(e.saturating_sub(a))),
        ("holding", _, _) => "holding".to_string(),
        (other, _, _) => other.to_string(),
    };
    // A label only where it fits (about 6 px per character).
    if w > label.chars().count() as f64 * 6.0 + 8.0 {
        let _ = writeln!(
            b,
            "<text class=\"on-bar\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            xs + if rs < g.dmin || s.state == "holding" {
                9.0
            } else {
                4.0
            },
            y + BAR_H - 4.0,
            esc(&label)
        );
    }
    if rs < g.dmin {
        // Began before the window: a notch at the left edge.
        let _ = writeln!(
            b,
            "<path class=\"cut\" d=\"M{:.1},{y:.1} l5,{:.1} l-5,{:.1} z\" fill=\"#fff\"/>",
            xs,
            BAR_H / 2.0,
            BAR_H / 2.0
        );
    }
}

/// Short bucket label: `16 µs`, `2.0 µs`, `512 ns`.
fn short_ns(ns: u64) -> String {
    let f = ns as f64;
    let (v, unit) = if ns < 1_000 {
        return format!("{ns} ns");
    } else if ns < 1_000_000 {
        (f / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        (f / 1e6, "ms")
    } else {
        (f / 1e9, "s")
    };
    if v >= 10.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

fn histogram_svg(b: &mut String, title: &str, class: &str, buckets: &[HistBucket]) {
    let (w, h) = (520.0, 210.0);
    let (left, right, top, bottom) = (44.0, 10.0, 14.0, 52.0);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    let n = buckets.len().max(1) as f64;
    let slot = (w - left - right) / n;
    let plot_h = h - top - bottom;
    let _ = writeln!(
        b,
        "<p class=\"hist-title\">{}</p>\n<svg class=\"histogram {class}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    let base = top + plot_h;
    let _ = writeln!(
        b,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\"/>\
         <text class=\"small\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max}</text>\
         <text class=\"small\" x=\"{:.1}\" y=\"{base:.1}\" text-anchor=\"end\">0</text>",
        w - right,
        left - 4.0,
        top + 8.0,
        left - 4.0
    );
    let every = if buckets.len() > 12 { 2 } else { 1 };
    for (i, bk) in buckets.iter().enumerate() {
        let bh = if bk.count == 0 {
            0.0
        } else {
            (bk.count as f64 / max as f64 * plot_h).max(1.0)
        };
        let x = left + slot * i as f64 + slot * 0.1;
        let bw = slot * 0.8;
        let _ = writeln!(
            b,
            "<rect class=\"bar {class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\">\
             <title>{} .. {}: {}</title></rect>",
            base - bh,
            esc(&fmt_ns(bk.lo_ns)),
            esc(&fmt_ns(bk.hi_ns.saturating_add(1))),
            bk.count
        );
        if bk.count > 0 && bw >= 14.0 {
            let _ = writeln!(
                b,
                "<text class=\"small\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                base - bh - 3.0,
                bk.count
            );
        }
        if i % every == 0 {
            let lx = x + bw / 2.0;
            let ly = base + 12.0;
            let _ = writeln!(
                b,
                "<text class=\"small\" x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" \
                 transform=\"rotate(-40 {lx:.1} {ly:.1})\">{}</text>",
                esc(&short_ns(bk.lo_ns))
            );
        }
    }
    let _ = writeln!(b, "</svg>");
}

fn histograms_section(b: &mut String, doc: &Document, h: u8) {
    let locks: Vec<(usize, &LockReport)> = lock_order(doc)
        .into_iter()
        .map(|i| (i, &doc.locks[i]))
        .filter(|(_, l)| !l.wait_histogram.is_empty() || !l.wake_to_run_histogram.is_empty())
        .take(HISTOGRAM_LOCKS)
        .collect();
    if locks.is_empty() {
        return;
    }
    let _ = writeln!(
        b,
        "<section class=\"histograms\">\n<h{h}>Wait time and wake-to-run latency</h{h}>"
    );
    for (i, l) in locks {
        let _ = writeln!(
            b,
            "<h{} class=\"lock\">[{i}] <code>{}</code></h{}>\n<div class=\"hists\">",
            h + 1,
            esc(&l.name),
            h + 1
        );
        if !l.wait_histogram.is_empty() {
            let _ = writeln!(b, "<div>");
            histogram_svg(
                b,
                &format!(
                    "wait time, first block -> decision (n={}, p50 {})",
                    l.wait_ns.count,
                    opt_ns(l.wait_ns.p50)
                ),
                "wait",
                &l.wait_histogram,
            );
            let _ = writeln!(b, "</div>");
        }
        if !l.wake_to_run_histogram.is_empty() {
            let same = if l.wake_to_run_ns.count > 0 {
                format!(
                    ", on the waker's CPU {}",
                    pct(l.wakes_same_cpu, l.wake_to_run_ns.count)
                )
            } else {
                String::new()
            };
            let _ = writeln!(b, "<div>");
            histogram_svg(
                b,
                &format!(
                    "wake-to-run, sched_waking -> switched in (n={}, p50 {}{same})",
                    l.wake_to_run_ns.count,
                    opt_ns(l.wake_to_run_ns.p50)
                ),
                "w2r",
                &l.wake_to_run_histogram,
            );
            let _ = writeln!(b, "</div>");
        }
        let _ = writeln!(b, "</div>");
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Power-of-two buckets; each bar's tooltip gives its range and \
         count.</p>\n</section>"
    );
}

fn completeness_section(b: &mut String, doc: &Document, h: u8) {
    let _ = writeln!(
        b,
        "<section class=\"completeness\">\n<h{h}>Completeness</h{h}>"
    );
    if doc.complete {
        let _ = writeln!(
            b,
            "<p>Nothing is missing: no event was dropped or cut, and every request ended.</p>"
        );
    } else {
        let _ = writeln!(b, "<ul>");
        for r in &doc.incomplete_reasons {
            let _ = writeln!(b, "<li>{}</li>", esc(r));
        }
        let _ = writeln!(b, "</ul>");
    }
    if let Some(a) = &doc.analysis {
        let _ = writeln!(
            b,
            "<p class=\"note\">{} events ({} lock, {} sched, {} syscall) over {}; {} reordered, \
             {} out of order, {} raced releases, {} unattributed wakes, {} unfinished requests.</p>",
            a.events,
            a.lock_events,
            a.sched_events,
            a.syscall_events,
            fmt_ns(a.duration_ns),
            a.reordered,
            a.out_of_order,
            a.raced_releases,
            a.unattributed_wakes,
            a.unfinished_requests
        );
    }
    let _ = writeln!(b, "</section>");
}

/// One report of a comparison.
pub struct Compared<'a> {
    /// As given on the command line.
    pub name: &'a str,
    /// The full document, or why it could not be read as one.
    pub doc: Result<&'a Document, &'a str>,
    pub identity: &'a Identity,
    pub metrics: &'a Metrics,
}

fn identity_line(c: &Compared<'_>) -> String {
    let mut s = format!("kernel {}", c.identity.kernel);
    if !c.identity.workload.is_empty() {
        s.push_str(&format!(", {}", c.identity.workload));
    }
    if !c.identity.complete {
        s.push_str(", INCOMPLETE");
    }
    s
}

/// Horizontal bars, one per report, of one metric (`fmt` labels the values).
fn metric_chart(
    b: &mut String,
    title: &str,
    items: &[(String, Option<f64>)],
    fmt: &dyn Fn(f64) -> String,
) {
    let (w, left, right, row) = (900.0, 260.0, 90.0, 30.0);
    let h = 30.0 + row * items.len() as f64 + 8.0;
    let max = items
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let _ = writeln!(
        b,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h:.0}\" role=\"img\" aria-label=\"{}\" \
        ><text x=\"0\" y=\"16\">{}</text>",
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let _ = writeln!(
            b,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 15.0,
            esc(label)
        );
        match v {
            Some(v) => {
                let bw = (v / max * (w - left - right)).max(1.0);
                let _ = writeln!(
                    b,
                    "<rect class=\"bar\" data-value=\"{v}\" x=\"{left}\" y=\"{y:.1}\" width=\"{bw:.1}\" \
                     height=\"20\"><title>{}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    esc(label),
                    esc(&fmt(*v)),
                    left + bw + 6.0,
                    y + 15.0,
                    esc(&fmt(*v))
                );
            }
            None => {
                let _ = writeln!(
                    b,
                    "<text class=\"small\" x=\"{left}\" y=\"{:.1}\">not in this report</text>",
                    y + 15.0
                );
            }
        }
    }
    let _ = writeln!(b, "</svg>");
}

/// Several reports side by side (`lockrace compare A.json B.json --html FILE`): who they are,
/// a chart of whoops per handoff and of the self_barge share, the metric table with B - A and
/// the bounds checked, then each full report in its own column.
pub fn render_comparison(items: &[Compared<'_>], checked: &[Checked], opts: &Options) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<header>\n<h1>lockrace compare</h1>\n<ul class=\"meta\">"
    );
    for (i, c) in items.iter().enumerate() {
        let _ = writeln!(
            b,
            "<li><b>{}</b>: <code>{}</code> ({})</li>",
            tag(i),
            esc(c.name),
            esc(&identity_line(c))
        );
    }
    let _ = writeln!(b, "</ul>\n</header>");
    if items
        .windows(2)
        .any(|p| p[0].identity.workload != p[1].identity.workload)
    {
        let _ = writeln!(
            b,
            "<p class=\"note\">The reports ran different workloads; their figures are not \
             comparable.</p>"
        );
    }
    let label = |i: usize, c: &Compared<'_>| {
        let k = if c.identity.kernel.is_empty() {
            "?"
        } else {
            c.identity.kernel.as_str()
        };
        format!("{}: {k}", tag(i))
    };
    let _ = writeln!(
        b,
        "<section class=\"charts\">\n<h2>Whoops and self-barges</h2>"
    );
    let whoops: Vec<(String, Option<f64>)> = items
        .iter()
        .enumerate()
        .map(|(i, c)| (label(i, c), c.metrics.get("whoops_per_handoff")))
        .collect();
    metric_chart(
        &mut b,
        "whoops per handoff (all whoops / all completed turns)",
        &whoops,
        &|v| format!("{v:.2}"),
    );
    let barge: Vec<(String, Option<f64>)> = items
        .iter()
        .enumerate()
        .map(|(i, c)| (label(i, c), c.metrics.get("self_barge_share")))
        .collect();
    metric_chart(
        &mut b,
        "self_barge share of decided handoffs",
        &barge,
        &|v| format!("{:.1}%", v * 100.0),
    );
    let _ = writeln!(b, "</section>");

    let _ = writeln!(
        b,
        "<section class=\"metrics\">\n<h2>Metrics</h2>\n<table>\n<tr><th class=\"l\">metric</th>"
    );
    for i in 0..items.len() {
        let _ = write!(b, "<th>{}</th>", tag(i));
    }
    if items.len() == 2 {
        let _ = write!(b, "<th class=\"l\">B - A</th>");
    }
    let _ = writeln!(b, "</tr>");
    for (k, def) in METRICS.iter().enumerate() {
        let _ = write!(b, "<tr><td class=\"l\">{}</td>", esc(def.label));
        for c in items {
            let v = c.metrics.values.get(k).copied().flatten();
            let _ = write!(b, "<td>{}</td>", esc(&compare::fmt_value(def.unit, v)));
        }
        if let [a, bb] = items {
            let (va, vb) = (
                a.metrics.values.get(k).copied().flatten(),
                bb.metrics.values.get(k).copied().flatten(),
            );
            let _ = write!(
                b,
                "<td class=\"l\">{}</td>",
                esc(&compare::fmt_delta(def, va, vb))
            );
        }
        let _ = writeln!(b, "</tr>");
    }
    let _ = writeln!(b, "</table>");
    for c in checked {
        let _ = writeln!(
            b,
            "<p class=\"{}\"><span class=\"badge {}\">{}</span> <code>{}</code>: {} -&gt; {}, \
             bound +{}%</p>",
            if c.exceeded { "regression" } else { "bound-ok" },
            if c.exceeded { "error" } else { "ok" },
            if c.exceeded { "REGRESSION" } else { "ok" },
            c.bound.metric.name,
            esc(&compare::fmt_value(c.bound.metric.unit, Some(c.a))),
            esc(&compare::fmt_value(c.bound.metric.unit, Some(c.b))),
            c.bound.max_increase_pct
        );
    }
    let _ = writeln!(b, "</section>");

    let _ = writeln!(
        b,
        "<div class=\"columns\" style=\"--n: {}\">",
        items.len().max(1)
    );
    for (i, c) in items.iter().enumerate() {
        let _ = writeln!(
            b,
            "<section class=\"report\" data-report=\"{}\">\n<h2>{}: <code>{}</code></h2>",
            tag(i),
            tag(i),
            esc(c.name)
        );
        match c.doc {
            Ok(doc) => {
                let _ = writeln!(b, "<p class=\"meta\">{}</p>", esc(&facts(doc)));
                report_body(&mut b, doc, opts, &format!("r{i}"), 3);
            }
            Err(why) => {
                let _ = writeln!(
                    b,
                    "<p class=\"note\">Only the figures above: this report lacks what the \
                     full view needs ({}).</p>",
                    esc(why)
                );
            }
        }
        let _ = writeln!(b, "</section>");
    }
    let _ = writeln!(b, "</div>");
    let names: Vec<&str> = items.iter().map(|c| c.name).collect();
    page(&format!("lockrace compare {}", names.join(" ")), &b)
}

/// `lockrace compare A.json B.json --html FILE`: both reports side by side (nothing when
/// `--html` was not given). The files were already read and checked by the comparison.
pub fn write_comparison(args: &crate::cli::CompareArgs, checked: &[Checked]) -> anyhow::Result<()> {
    let Some(out) = &args.html else {
        return Ok(());
    };
    let mut loaded = Vec::new();
    for path in [&args.a, &args.b] {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        let value = compare::parse_report(&text, &name)?;
        // The comparison reads figures by field path; a report lacking fields the full model
        // needs still gets its column of figures, with a note instead of its details.
        let doc = serde_json::from_value::<Document>(value.clone()).map_err(|e| e.to_string());
        loaded.push((
            name,
            compare::identity(&value),
            compare::extract(&value),
            doc,
        ));
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
    let opts = Options {
        handoffs: usize::try_from(args.html_handoffs).unwrap_or(DEFAULT_HANDOFFS),
    };
    write(out, &render_comparison(&items, checked, &opts))
}

/// `A`, `B`, ... `Z`, then `R27`.
fn tag(i: usize) -> String {
    if i < 26 {
        char::from(b'A' + i as u8).to_string()
    } else {
        format!("R{}", i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{TaskReport, TimelineItem, WakeupReport};

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ticks_are_round_and_axis_labels_are_microseconds() {
        assert_eq!(tick_step(16_000.0, 8.0), 2_000.0);
        assert_eq!(tick_step(900.0, 8.0), 200.0);
        assert_eq!(tick_step(3_000_000.0, 8.0), 500_000.0);
        assert_eq!(axis_label(4_000.0, 2_000.0), "4 µs");
        assert_eq!(axis_label(-200.0, 200.0), "-0.2 µs");
        assert_eq!(axis_label(0.0, 50.0), "0.00 µs");
        assert_eq!(short_ns(16_384), "16 µs");
        assert_eq!(short_ns(2_048), "2.0 µs");
        assert_eq!(short_ns(512), "512 ns");
    }

    fn handoff() -> HandoffReport {
        let task = |tid: u32| TaskReport {
            tid,
            tgid: tid,
            comm: format!("t<{tid}>"),
        };
        HandoffReport {
            lock: 0,
            release_ts_ns: 10_000,
            releaser: task(1),
            outcome: "self_barge".into(),
            waiters_total: 1,
            next: Some(task(1)),
            grant_ts_ns: Some(12_000),
            timeline: vec![
                TimelineItem {
                    ts_ns: 10_000,
                    tid: 1,
                    event: "released".into(),
                    text: "t<1> (1) released the lock".into(),
                    ..Default::default()
                },
                TimelineItem {
                    ts_ns: 12_000,
                    dt_ns: 2_000,
                    tid: 1,
                    event: "granted".into(),
                    text: "t<1> (1) got the lock".into(),
                    ..Default::default()
                },
            ],
            spans: vec![
                SpanReport {
                    tid: 1,
                    state: "holding".into(),
                    start_ts_ns: None,
                    end_ts_ns: Some(10_000),
                },
                SpanReport {
                    tid: 2,
                    state: "blocked".into(),
                    start_ts_ns: Some(1_000),
                    end_ts_ns: Some(10_500),
                },
            ],
            wakeups: vec![WakeupReport {
                ts_ns: 10_500,
                waker_tid: 1,
                wakee_tid: 2,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_handoff_has_a_lane_per_task_and_an_arrow_per_wakeup() {
        let mut doc = Document::new("6.1.0".into());
        doc.verdict = vec!["Linux woke <your> waiters.".into()];
        doc.worst_handoffs = vec![handoff(), handoff()];
        let html = render(&doc, &Options { handoffs: 1 });
        assert!(html.contains("<p class=\"verdict-line\">Linux woke &lt;your&gt; waiters.</p>"));
        assert_eq!(html.matches("<figure class=\"handoff\"").count(), 1);
        assert_eq!(html.matches("<g class=\"lane\"").count(), 2);
        assert!(html.contains("<g class=\"lane\" data-tid=\"2\">"));
        assert_eq!(
            html.matches("<line class=\"wakeup\" data-from=\"1\" data-to=\"2\"")
                .count(),
            1
        );
        assert!(html.contains("t&lt;1&gt; (1)"), "comm escaped");
        assert!(!html.contains("t<1>"));
        assert!(html.contains("µs</text>"), "a time axis in µs");
        assert!(!html.contains("<script"));
        assert!(!html.contains("https://"));
    }

    #[test]
    fn a_comparison_charts_every_report() {
        let a = Document::new("6.1.0".into());
        let id = |k: &str| Identity {
            kernel: k.into(),
            workload: "posix/reopen, 10 iterations".into(),
            complete: true,
        };
        let (ia, ib) = (id("6.1.0"), id("6.18.0"));
        let mut values = vec![None; METRICS.len()];
        values[0] = Some(0.5);
        let (ma, mb) = (
            Metrics {
                values: values.clone(),
            },
            Metrics { values },
        );
        let items = [
            Compared {
                name: "a.json",
                doc: Ok(&a),
                identity: &ia,
                metrics: &ma,
            },
            Compared {
                name: "b.json",
                doc: Err("missing field `name`"),
                identity: &ib,
                metrics: &mb,
            },
        ];
        let html = render_comparison(&items, &[], &Options::default());
        assert_eq!(html.matches("<section class=\"report\"").count(), 2);
        assert_eq!(html.matches("<section class=\"verdict").count(), 1);
        assert!(html.contains("lacks what the full view needs (missing field `name`)"));
        assert_eq!(html.matches("data-value=\"0.5\"").count(), 2);
        assert!(html.contains("B: 6.18.0"));
        assert!(html.contains("not in this report"));
    }
}
