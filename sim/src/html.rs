//! `report.html`: one self-contained file (no network) with SVG charts drawn with plotters —
//! throughput over time with fault windows shaded and leader changes marked, and write
//! latency percentiles per phase.

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

/// The whole HTML page. `extra` is appended (e.g. the checker's timeline when a check failed).
pub fn page(r: &Report, markdown: &str, extra: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} seed {}</title>\
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:1em}}</style>\
</head><body><h1>{} — seed {}</h1>\
<p>Faults are shaded red; black lines mark leader changes; the green line is the target.</p>{}{}\
<h2>Tables</h2><pre>{}</pre>{}</body></html>\n",
        esc(&r.scenario),
        r.seed,
        esc(&r.scenario),
        r.seed,
        throughput_svg(r),
        latency_svg(r),
        esc(markdown),
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
pub fn sweep_page(name: &str, reports: &[Report], markdown: &str) -> String {
    let ok = |r: &Report| r.checks.iter().all(|c| c.verdict == "pass");
    let series = |f: &dyn Fn(&Report) -> f64| -> Vec<(u64, f64, bool)> {
        reports.iter().map(|r| (r.seed, f(r), ok(r))).collect()
    };
    let wps = series(&|r| r.phases.first().map_or(0.0, |p| p.writes_per_sec));
    let p99 = series(&|r| r.phases.first().map_or(0.0, |p| p.writes.p99_ms));
    let un = series(&|r| {
        r.unavailability
            .iter()
            .filter_map(|u| u.unavailable_s)
            .fold(0.0, f64::max)
    });
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sweep of {0}</title>\
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:1em}}</style>\
</head><body><h1>Sweep of {0}: {1} seeds</h1>{2}{3}{4}<h2>Summary</h2><pre>{5}</pre></body></html>\n",
        esc(name),
        reports.len(),
        per_seed_svg("steady-phase acknowledged writes/s per seed", &wps),
        per_seed_svg("steady-phase write p99 (ms) per seed", &p99),
        per_seed_svg("longest unavailability after a fault (s) per seed", &un),
        esc(markdown)
    )
}
