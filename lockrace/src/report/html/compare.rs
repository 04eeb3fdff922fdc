//! Several reports on one page (`lockrace compare A.json B.json --html FILE`): who they are, a
//! chart of whoops per handoff and of the self_barge share, the metric table with B - A and
//! the bounds checked, then each full report in its own column.
//!
//! Invariant: the figures come from `report::compare` (read by field path, so an older report
//! still gets its column); a report the full model cannot read gets a note instead of its
//! details, never an error.
use std::fmt::Write;

use super::{Options, esc, facts, page, report_body};
use crate::report::compare::{self, Checked, Identity, METRICS, Metrics};
use crate::report::model::Document;

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
    use crate::report::model::Document;

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
