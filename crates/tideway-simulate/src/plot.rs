//! `--plot`: demand, capacity and replicas over time as an SVG, one panel per policy, ideal rule first.

use std::fmt::Write;
use std::time::Duration;

use crate::figures::Sample;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 180.0;
const MARGIN: f64 = 40.0;

/// A line of a panel: its colour, the value it draws, and the value at the top of the panel.
type Series = (&'static str, fn(&Sample) -> f64, f64);

/// An SVG of `runs` (a title and its samples each) over `[0, horizon]`.
pub fn svg(runs: &[(String, Vec<Sample>)], horizon: Duration) -> String {
    let top = runs
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(|s| s.demand.max(s.capacity)))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let peak = runs
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(|s| s.replicas))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let length = horizon.as_secs_f64().max(0.001);
    let height = runs.len() as f64 * (PANEL + MARGIN) + MARGIN;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (index, (title, samples)) in runs.iter().enumerate() {
        let y0 = MARGIN + index as f64 * (PANEL + MARGIN);
        let x = |at: Duration| MARGIN + at.as_secs_f64() / length * (WIDTH - 2.0 * MARGIN);
        let y = |value: f64, scale: f64| y0 + PANEL - value / scale * PANEL;
        let _ = writeln!(
            out,
            "<text x=\"{MARGIN}\" y=\"{}\">{} — demand (blue, connections), capacity (green, seats), replicas (orange, right axis, peak {peak})</text>",
            y0 - 8.0,
            escape(title)
        );
        let _ = writeln!(
            out,
            "<rect x=\"{MARGIN}\" y=\"{y0}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>",
            WIDTH - 2.0 * MARGIN
        );
        let series: [Series; 3] = [
            ("#1f77b4", |s| s.demand as f64, top),
            ("#2ca02c", |s| s.capacity as f64, top),
            ("#ff7f0e", |s| f64::from(s.replicas), peak),
        ];
        for (colour, value, scale) in series {
            let mut points = String::new();
            let mut last: Option<f64> = None;
            for sample in samples {
                let (px, py) = (x(sample.at), y(value(sample), scale));
                if let Some(before) = last {
                    let _ = write!(points, "{px:.1},{before:.1} ");
                }
                let _ = write!(points, "{px:.1},{py:.1} ");
                last = Some(py);
            }
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                points.trim_end()
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0} s</text>",
            WIDTH - MARGIN,
            y0 + PANEL + 14.0,
            length
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{top:.0}</text>",
            MARGIN - 4.0,
            y0 + 10.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
