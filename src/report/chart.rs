//! SVG line charts of a run, written directly (no charting crate: plotters' defaults link
//! fontconfig and freetype, and a few polylines do not need them). Fault windows are shaded,
//! injections and recoveries are marked with vertical lines, so the shape of an incident can be
//! seen at a glance. Text uses the page's font; the SVG scales to its container's width.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// CSS colour.
    pub color: &'a str,
    /// Points (x in seconds, y); `None` leaves a gap.
    pub points: Vec<(f64, Option<f64>)>,
    /// Drawn dashed (a secondary series, such as the failures' latency).
    pub dashed: bool,
}

/// A shaded span (seconds) with a label.
pub struct Band {
    /// Start (s).
    pub from: f64,
    /// End (s).
    pub to: f64,
    /// Label at its top.
    pub label: String,
}

/// A vertical marker (seconds).
pub struct Marker {
    /// Instant (s).
    pub at: f64,
    /// Label.
    pub label: String,
    /// `inject` or `recover`: drawn in red or green; `cluster` (an event in the cluster):
    /// a thin orange line, its label in a tooltip only.
    pub kind: &'static str,
}

const W: f64 = 900.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 34.0;

fn esc(s: &str) -> String {
    // Control characters of a name shown escaped, as everywhere user text is shown.
    crate::text::terminal_lines(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step for about `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders a chart. `id` names it in the DOM (`data-chart`), `y_unit` labels the y axis.
pub fn render(
    id: &str,
    title: &str,
    y_unit: &str,
    x_max: f64,
    series: &[Series<'_>],
    bands: &[Band],
    markers: &[Marker],
) -> String {
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let y_data = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(if y_data > 0.0 { y_data } else { 1.0 }, 4.0);
    let y_max = ((y_data / y_step).ceil().max(1.0)) * y_step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v / x_max).clamp(0.0, 1.0) * pw;
    let y = |v: f64| TOP + ph - (v / y_max).clamp(0.0, 1.0) * ph;

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" data-chart="{id}" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    // Fault windows first, under everything.
    for b in bands {
        let (x0, x1) = (x(b.from), x(b.to.max(b.from)));
        let w = (x1 - x0).max(4.0);
        let _ = write!(
            s,
            r#"<rect class="fault-window" x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{ph}"><title>{l}</title></rect>"#,
            l = esc(&b.label)
        );
    }
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let yy = y(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_tick(v)
        );
        v += y_step;
    }
    let x_step = nice_step(x_max, 8.0);
    let mut t = 0.0;
    while t <= x_max + x_step / 100.0 {
        let xx = x(t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}"/><text class="tick" x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph,
            TOP + ph + 16.0,
            fmt_tick(t)
        );
        t += x_step;
    }
    let _ = write!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">time (s)</text><text class="axis" x="4" y="14">{}</text>"#,
        W - RIGHT,
        H - 2.0,
        esc(y_unit)
    );
    // Lines, split at gaps.
    for se in series {
        // Each run keeps its data values too (`data-values="t:v ..."`), so what the chart
        // shows can be read back from the page, not only seen.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(px, py) in &se.points {
            match py {
                Some(py) => {
                    if let Some(last) = runs.last_mut() {
                        last.push((px, py));
                    }
                }
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let pts = run
                .iter()
                .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
                .collect::<Vec<_>>()
                .join(" ");
            let values = run
                .iter()
                .map(|(a, b)| format!("{a:.3}:{b:.3}"))
                .collect::<Vec<_>>()
                .join(" ");
            if let [(a, b)] = run.as_slice() {
                // A lone point (one window with failures, say) draws no line: a dot instead.
                let _ = write!(
                    s,
                    r#"<circle class="series" data-series="{l}" data-values="{values}" cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    x(*a),
                    y(*b),
                    l = esc(se.label),
                    c = se.color,
                );
                continue;
            }
            let _ = write!(
                s,
                r#"<polyline class="series" data-series="{l}" data-values="{values}" fill="none" stroke="{c}" stroke-width="1.8"{dash} points="{pts}"/>"#,
                l = esc(se.label),
                c = se.color,
                dash = if se.dashed {
                    r#" stroke-dasharray="5 4""#
                } else {
                    ""
                }
            );
        }
    }
    // Markers on top.
    for m in markers {
        let xx = x(m.at);
        if m.kind == "cluster" {
            let _ = write!(
                s,
                r#"<line class="marker cluster" x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}"><title>{l}</title></line>"#,
                TOP + ph,
                l = esc(&m.label)
            );
            continue;
        }
        let _ = write!(
            s,
            r#"<line class="marker {k}" x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}"><title>{l}</title></line><text class="marker-label {k}" x="{:.1}" y="{:.1}">{l}</text>"#,
            TOP + ph,
            xx + 3.0,
            if m.kind == "inject" {
                TOP - 14.0
            } else {
                TOP - 3.0
            },
            k = m.kind,
            l = esc(&m.label)
        );
    }
    // Legend.
    let mut lx = LEFT + 4.0;
    for se in series {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{c}"/><text class="legend" x="{:.1}" y="{:.1}">{l}</text>"#,
            TOP + 4.0,
            lx + 14.0,
            TOP + 13.0,
            c = se.color,
            l = esc(se.label)
        );
        lx += 24.0 + 7.0 * se.label.chars().count() as f64;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_escaping() {
        assert_eq!(nice_step(30.0, 8.0), 5.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
        let svg = render(
            "c",
            "a<b",
            "ms",
            10.0,
            &[Series {
                label: "p99",
                color: "#000",
                points: vec![(0.0, Some(1.0)), (1.0, None), (2.0, Some(3.0))],
                dashed: false,
            }],
            &[Band {
                from: 2.0,
                to: 4.0,
                label: "f".into(),
            }],
            &[Marker {
                at: 2.0,
                label: "inject f".into(),
                kind: "inject",
            }],
        );
        assert!(svg.contains("a&lt;b"));
        // Split at the gap into two runs of one point each: a lone point is drawn as a dot.
        assert_eq!(svg.matches(r#"class="series""#).count(), 2);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(r#"data-values="0.000:1.000""#));
        assert!(svg.contains("fault-window"));
    }
}
