//! One self-contained HTML page (inline SVG, no network) showing a failing partition: a
//! timeline per client with each operation's call→return bar, the longest linearizable
//! prefix (green, numbered in linearization order), the operation that could not be placed
//! (red), indeterminate operations (hatched to the end), and fault windows shaded.

use std::fmt::Write as _;

/// An operation to draw.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Client lane.
    pub client: u64,
    /// Call time.
    pub call: u64,
    /// Return time (None = indeterminate).
    pub ret: Option<u64>,
    /// Label.
    pub label: String,
    /// Position in the linearization, if linearized.
    pub order: Option<usize>,
    /// The operation that could not be placed.
    pub unplaced: bool,
}

/// A fault window to shade.
#[derive(Debug, Clone)]
pub struct Window {
    /// Label.
    pub label: String,
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
}

/// Largest number of operations drawn (the failing partition is drawn in full up to this).
pub const BARS_MAX: usize = 3000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of a timeline.
pub fn timeline_svg(title: &str, bars: &[Bar], windows: &[Window]) -> String {
    let bars = &bars[..bars.len().min(BARS_MAX)];
    let mut clients: Vec<u64> = bars.iter().map(|b| b.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let t0 = bars.iter().map(|b| b.call).min().unwrap_or(0);
    let t1 = bars
        .iter()
        .map(|b| b.ret.unwrap_or(b.call))
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let width = 1400.0;
    let lane = 26.0;
    let left = 70.0;
    let height = 40.0 + lane * clients.len() as f64;
    let x =
        |t: u64| left + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * (width - left - 10.0);
    let mut s = String::new();
    let _ = write!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"10\">");
    let _ = write!(
        s,
        "<text x=\"4\" y=\"14\" font-size=\"13\">{}</text>",
        esc(title)
    );
    for w in windows {
        if w.end < t0 || w.start > t1 {
            continue;
        }
        let (a, b) = (x(w.start.max(t0)), x(w.end.min(t1)));
        let _ = write!(
            s,
            "<rect x=\"{a:.1}\" y=\"20\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fcc\" opacity=\"0.5\"><title>{}</title></rect>",
            (b - a).max(1.0),
            height - 20.0,
            esc(&w.label)
        );
    }
    for (lane_i, c) in clients.iter().enumerate() {
        let y = 30.0 + lane * lane_i as f64;
        let _ = write!(s, "<text x=\"4\" y=\"{:.1}\">client {c}</text>", y + 12.0);
        for b in bars.iter().filter(|b| b.client == *c) {
            let (a, e) = (x(b.call), x(b.ret.unwrap_or(t1)));
            let fill = if b.unplaced {
                "#e33"
            } else if b.order.is_some() {
                "#6c6"
            } else if b.ret.is_none() {
                "#bbb"
            } else {
                "#9bd"
            };
            let dash = if b.ret.is_none() {
                " stroke-dasharray=\"3,2\" stroke=\"#666\""
            } else {
                ""
            };
            let order = b.order.map(|o| format!("#{o} ")).unwrap_or_default();
            let _ = write!(
                s,
                "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"18\" fill=\"{fill}\"{dash}><title>{}{}</title></rect>",
                (e - a).max(2.0),
                order,
                esc(&b.label)
            );
            if e - a > 40.0 {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}{}</text>",
                    a + 2.0,
                    y + 12.0,
                    order,
                    esc(&b
                        .label
                        .chars()
                        .take(((e - a) / 6.0) as usize)
                        .collect::<String>())
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// A whole page around one or more timelines.
pub fn page(title: &str, summary: &str, svgs: &[String]) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body style=\"font-family:sans-serif\">\
<h1>{}</h1><pre>{}</pre><p>Green: the longest linearizable prefix (numbered in order). Red: the operation that could not \
be placed after it. Grey dashed: indeterminate. Shaded: faults.</p>{}</body></html>\n",
        esc(title),
        esc(title),
        esc(summary),
        svgs.join("\n")
    )
}
