//! The SVG drawings of the page: the timeline of one handoff (one lane per task, blocked /
//! runnable / holding spans, wakeup arrows from waker to wakee, the grant, a time axis in µs)
//! and the log2 histograms as bars.
//!
//! Invariants: pure string building; the structure the tests rely on is stable: `<figure
//! class="handoff" data-rank=N>`, one `<g class="lane" data-tid=TID>` per task of the handoff,
//! one `<line class="wakeup" data-from=TID data-to=TID>` per wakeup.
use std::fmt::Write;

use super::esc;
use crate::report::build::fmt_ns;
use crate::report::model::{Document, HandoffReport, HistBucket, SpanReport};

/// The tasks of a handoff, in lane order: releaser, waiters in block order, then the others.
pub(super) fn lane_tids(ho: &HandoffReport) -> Vec<u32> {
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

pub(super) fn comm_of(doc: &Document, ho: &HandoffReport, tid: u32) -> String {
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
pub(super) fn tick_step(range: f64, want: f64) -> f64 {
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
pub(super) fn axis_label(ns: f64, step: f64) -> String {
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
pub(super) fn signed_ns(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "+" };
    format!("{sign}{}", fmt_ns(v.unsigned_abs() as u64))
}

pub(super) struct Geometry {
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

pub(super) const SVG_W: f64 = 1000.0;
pub(super) const LABEL_W: f64 = 200.0;
pub(super) const LANE_H: f64 = 40.0;
pub(super) const BAR_H: f64 = 16.0;
pub(super) const TOP: f64 = 22.0;
pub(super) const AXIS_H: f64 = 34.0;

pub(super) fn handoff_figure(
    b: &mut String,
    doc: &Document,
    ho: &HandoffReport,
    rank: usize,
    id: &str,
) {
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

pub(super) fn timeline_svg(
    b: &mut String,
    doc: &Document,
    ho: &HandoffReport,
    rank: usize,
    id: &str,
) {
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

pub(super) fn span_rect(b: &mut String, g: &Geometry, s: &SpanReport, y: f64, comm: &str) {
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
pub(super) fn short_ns(ns: u64) -> String {
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

pub(super) fn histogram_svg(b: &mut String, title: &str, class: &str, buckets: &[HistBucket]) {
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

#[cfg(test)]
mod tests {
    use super::super::{Options, render};
    use super::*;
    use crate::report::model::{TaskReport, TimelineItem, WakeupReport};

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
}
