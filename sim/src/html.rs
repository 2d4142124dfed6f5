//! `report.html`: one self-contained file (no network) with SVG charts drawn with plotters —
//! throughput over time with fault windows shaded and leader changes marked, every write's
//! latency over time (as Jepsen's latency plot), and write latency percentiles per phase —
//! and the report's tables as HTML tables.

use plotters::prelude::*;

use crate::report::{Report, BUCKET_MS};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Throughput chart as an SVG string.
pub fn throughput_svg(r: &Report) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let secs = r.throughput.len() as f64 * BUCKET_MS as f64 / 1000.0;
        let per_s: Vec<f64> = r
            .throughput
            .iter()
            .map(|c| *c as f64 * 1000.0 / BUCKET_MS as f64)
            .collect();
        let ymax = per_s
            .iter()
            .cloned()
            .fold(r.target_writes_per_sec as f64, f64::max)
            .max(10.0)
            * 1.1;
        let mut chart = match ChartBuilder::on(&root)
            .caption("acknowledged writes/s (100 ms buckets)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..secs.max(0.1), 0f64..ymax)
        {
            Ok(c) => c,
            Err(_) => return String::new(),
        };
        let _ = chart
            .configure_mesh()
            .x_desc("simulated s")
            .disable_x_mesh()
            .draw();
        for f in &r.faults {
            let _ = chart.draw_series(std::iter::once(Rectangle::new(
                [(f.start_s, 0.0), (f.end_s.max(f.start_s + 0.01), ymax)],
                RGBColor(255, 200, 200).mix(0.5).filled(),
            )));
        }
        let pts: Vec<(f64, f64)> = per_s
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * BUCKET_MS as f64 / 1000.0, *v))
            .collect();
        let _ = chart.draw_series(LineSeries::new(pts, &BLUE));
        if r.target_writes_per_sec > 0 {
            let t = r.target_writes_per_sec as f64;
            let _ = chart.draw_series(LineSeries::new(vec![(0.0, t), (secs, t)], &GREEN));
        }
        for (t, _) in r.leaders.iter().skip(1) {
            let _ = chart.draw_series(LineSeries::new(
                vec![(*t, 0.0), (*t, ymax)],
                BLACK.stroke_width(1),
            ));
        }
        let _ = root.present();
    }
    svg
}

/// Write-latency percentiles per phase as an SVG string (one line per percentile).
pub fn latency_svg(r: &Report) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let n = r.phases.len().max(1);
        let ymax = r
            .phases
            .iter()
            .map(|p| p.writes.p999_ms)
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = match ChartBuilder::on(&root)
            .caption(
                "write latency per phase, ms: p50 blue, p90 green, p99 red, p99.9 magenta",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        {
            Ok(c) => c,
            Err(_) => return String::new(),
        };
        let _ = chart
            .configure_mesh()
            .x_desc("phase (see table)")
            .disable_x_mesh()
            .draw();
        let colours = [BLUE, GREEN, RED, MAGENTA];
        let series: [fn(&crate::report::Latency) -> f64; 4] =
            [|l| l.p50_ms, |l| l.p90_ms, |l| l.p99_ms, |l| l.p999_ms];
        for (c, f) in colours.iter().zip(series) {
            let pts: Vec<(f64, f64)> = r
                .phases
                .iter()
                .enumerate()
                .map(|(i, p)| (i as f64 + 0.5, f(&p.writes)))
                .collect();
            let _ = chart.draw_series(LineSeries::new(pts.clone(), c));
            let _ = chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())));
        }
        let _ = root.present();
    }
    svg
}

/// One write of a run for the latency chart: when it was invoked (s), how long it took until
/// its answer or its client gave up (ms), and whether it was acknowledged.
pub type WritePoint = (f64, f64, bool);

/// Every write's latency over time as an SVG string: one dot per write on a log scale
/// (acknowledged blue, failed or indeterminate red), fault windows shaded. Writes that land
/// on the same pixel are drawn once, so the file stays small however long the run.
pub fn latency_scatter_svg(r: &Report, points: &[WritePoint]) -> String {
    const W: u32 = 900;
    const H: u32 = 320;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let secs = points
            .iter()
            .map(|p| p.0)
            .fold(r.sim_seconds, f64::max)
            .max(0.1);
        let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
        let ymin = points
            .iter()
            .map(|p| p.1)
            .fold(ymax, f64::min)
            .clamp(0.01, 1.0)
            / 1.5;
        let mut chart = match ChartBuilder::on(&root)
            .caption(
                "every write's latency, ms (log scale): acknowledged blue, failed or indeterminate red",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..secs, (ymin..ymax).log_scale())
        {
            Ok(c) => c,
            Err(_) => return String::new(),
        };
        let _ = chart
            .configure_mesh()
            .x_desc("s since the load began")
            .disable_x_mesh()
            .draw();
        for f in &r.faults {
            let _ = chart.draw_series(std::iter::once(Rectangle::new(
                [(f.start_s, ymin), (f.end_s.max(f.start_s + 0.01), ymax)],
                RGBColor(255, 200, 200).mix(0.5).filled(),
            )));
        }
        // One dot per occupied pixel and colour, in a fixed order (reproducible files).
        let (lmin, lmax) = (ymin.ln(), ymax.ln());
        let mut pixels = std::collections::BTreeMap::new();
        for &(t, ms, ok) in points {
            let x = ((t / secs) * f64::from(W)) as u32;
            let y = (((ms.max(ymin).ln() - lmin) / (lmax - lmin)) * f64::from(H)) as u32;
            pixels.entry((!ok, x, y)).or_insert((t, ms.max(ymin)));
        }
        for ((failed, _, _), at) in pixels {
            let colour = if failed { RED } else { BLUE };
            let _ = chart.draw_series(std::iter::once(Circle::new(at, 1, colour.filled())));
        }
        let _ = root.present();
    }
    svg
}

/// A report's Markdown as HTML: headings, tables (as `<table>`), list items and paragraphs,
/// with `**bold**` and `` `code` `` spans. Only the subset `report::markdown` writes.
pub fn markdown_html(md: &str) -> String {
    fn inline(s: &str) -> String {
        let mut out = String::new();
        let (mut bold, mut code) = (false, false);
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("**") && !code {
                out.push_str(if bold { "</b>" } else { "<b>" });
                bold = !bold;
                rest = &rest[2..];
                continue;
            }
            if c == '`' {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            } else {
                out.push_str(&esc(&c.to_string()));
            }
            rest = &rest[c.len_utf8()..];
        }
        if code {
            out.push_str("</code>");
        }
        if bold {
            out.push_str("</b>");
        }
        out
    }
    fn cells(line: &str) -> Vec<&str> {
        let t = line.trim().trim_start_matches('|').trim_end_matches('|');
        t.split('|').map(str::trim).collect()
    }
    let mut out = String::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    let mut in_list = false;
    while i < lines.len() {
        let line = lines[i];
        let is_item = line.starts_with("- ");
        if in_list && !is_item {
            out.push_str("</ul>\n");
            in_list = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            out.push_str(&format!("<h2>{}</h2>\n", inline(h)));
        } else if line.starts_with('|') {
            out.push_str("<table>\n");
            let head = cells(line);
            out.push_str("<tr>");
            for c in head {
                out.push_str(&format!("<th>{}</th>", inline(c)));
            }
            out.push_str("</tr>\n");
            i += 1;
            if lines
                .get(i)
                .is_some_and(|l| l.starts_with("|-") || l.starts_with("| -"))
            {
                i += 1;
            }
            while let Some(l) = lines.get(i).filter(|l| l.starts_with('|')) {
                out.push_str("<tr>");
                for c in cells(l) {
                    out.push_str(&format!("<td>{}</td>", inline(c)));
                }
                out.push_str("</tr>\n");
                i += 1;
            }
            out.push_str("</table>\n");
            continue;
        } else if let Some(item) = line.strip_prefix("- ") {
            if !in_list {
                out.push_str("<ul>\n");
                in_list = true;
            }
            out.push_str(&format!("<li>{}</li>\n", inline(item)));
        } else if !line.trim().is_empty() {
            out.push_str(&format!("<p>{}</p>\n", inline(line)));
        }
        i += 1;
    }
    if in_list {
        out.push_str("</ul>\n");
    }
    out
}

/// The Markdown without its first line (its `# title`, which the page's `<h1>` already shows).
fn without_title(markdown: &str) -> &str {
    markdown.split_once('\n').map_or(markdown, |(_, rest)| rest)
}

/// The page's style: tables readable without a stylesheet of their own.
const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}\
pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}\
table{border-collapse:collapse;margin:0.5em 0;font-size:90%}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}\
th{background:#eee}td:not(:first-child){font-variant-numeric:tabular-nums}";

/// The whole HTML page. `extra` is appended (e.g. the checker's timeline when a check failed).
pub fn page(r: &Report, markdown: &str, extra: &str, writes: &[WritePoint]) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} seed {}</title>\
<style>{STYLE}</style>\
</head><body><h1>{} — seed {}</h1>\
<p>Faults are shaded red; black lines mark leader changes; the green line is the target.</p>{}{}{}\
{}{}</body></html>\n",
        esc(&r.scenario),
        r.seed,
        esc(&r.scenario),
        r.seed,
        throughput_svg(r),
        latency_scatter_svg(r, writes),
        latency_svg(r),
        markdown_html(without_title(markdown)),
        extra
    )
}

/// One value per seed as an SVG bar chart (seeds in order, failed seeds in red).
fn per_seed_svg(title: &str, seeds: &[(u64, f64, bool)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 260)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let ymax = seeds.iter().map(|s| s.1).fold(1e-9, f64::max) * 1.15;
        let n = seeds.len().max(1);
        let mut chart = match ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        {
            Ok(c) => c,
            Err(_) => return String::new(),
        };
        let _ = chart
            .configure_mesh()
            .x_desc("seed (in sweep order)")
            .disable_x_mesh()
            .draw();
        let _ = chart.draw_series(seeds.iter().enumerate().map(|(i, (_, v, ok))| {
            let colour = if *ok { BLUE.mix(0.6) } else { RED.mix(0.8) };
            Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, *v)],
                colour.filled(),
            )
        }));
        let _ = root.present();
    }
    svg
}

/// `sweep.html`: the distribution over the seeds of steady throughput, steady write p99 and
/// the longest unavailability, one bar per seed (failed seeds red), with the summary table.
pub fn sweep_page(name: &str, rows: &[crate::shards::SeedRow], markdown: &str) -> String {
    let series = |f: &dyn Fn(&crate::shards::SeedRow) -> f64| -> Vec<(u64, f64, bool)> {
        rows.iter().map(|r| (r.seed, f(r), r.passed)).collect()
    };
    let wps = series(&|r| r.steady_writes_per_sec.unwrap_or(0.0));
    let p99 = series(&|r| r.steady_write_p99_ms.unwrap_or(0.0));
    let un = series(&|r| r.max_unavailable_s);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sweep of {0}</title>\
<style>{STYLE}</style>\
</head><body><h1>Sweep of {0}: {1} seeds</h1>{2}{3}{4}<h2>Summary</h2>{5}</body></html>\n",
        esc(name),
        rows.len(),
        per_seed_svg("steady-phase acknowledged writes/s per seed", &wps),
        per_seed_svg("steady-phase write p99 (ms) per seed", &p99),
        per_seed_svg("longest unavailability after a fault (s) per seed", &un),
        markdown_html(without_title(markdown))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_tables_become_html_tables() {
        let md = "# title\n\nHistory `abc`; **2x** faster.\n\n| a | b |\n|---|---|\n| 1 | x<y |\n| 2 | `z` |\n\n- one\n- two\n";
        let html = markdown_html(md);
        assert!(html.contains("<h2>title</h2>"), "{html}");
        assert!(
            html.contains("<p>History <code>abc</code>; <b>2x</b> faster.</p>"),
            "{html}"
        );
        assert!(
            html.contains("<table>\n<tr><th>a</th><th>b</th></tr>\n<tr><td>1</td><td>x&lt;y</td></tr>\n<tr><td>2</td><td><code>z</code></td></tr>\n</table>"),
            "{html}"
        );
        assert!(
            html.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
            "{html}"
        );
        assert!(!html.contains('|'), "{html}");
    }

    #[test]
    fn the_latency_chart_draws_a_dot_per_occupied_pixel() {
        let r = Report {
            sim_seconds: 10.0,
            ..Report::default()
        };
        // 10,000 writes on two pixels' worth of times and latencies, and one failed write.
        let mut pts: Vec<WritePoint> = (0..10_000)
            .map(|i| (1.0 + (i % 2) as f64 * 5.0, 2.0, true))
            .collect();
        pts.push((3.0, 200.0, false));
        let svg = latency_scatter_svg(&r, &pts);
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        // The same points give the same file.
        assert_eq!(svg, latency_scatter_svg(&r, &pts));
    }
}
