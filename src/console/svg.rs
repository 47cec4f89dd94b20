//! Inline SVG line charts for the console: drift share, the champion's metric (realised and
//! estimated) and deploys over time, a training run's losses per epoch. Each series is told
//! apart by its line pattern and its legend text as well as its colour, and every chart
//! carries a title and a description for screen readers.
//!
//! Pure: points in, markup out; no store, no clock.

use maud::{Markup, html};

/// How a series is drawn (never by colour alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Solid,
    Dashed,
    Dotted,
}

impl Style {
    fn class(self) -> &'static str {
        match self {
            Style::Solid => "s-solid",
            Style::Dashed => "s-dashed",
            Style::Dotted => "s-dotted",
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub style: Style,
    /// (x, y) in data units; points with a non-finite value are left out.
    pub points: Vec<(f64, f64)>,
}

/// A vertical mark at `x` (a deploy or a rollback), labelled.
#[derive(Debug, Clone)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// What a chart shows.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// Labels under the x axis's two ends.
    pub x_ends: (String, String),
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// Fixed y range (a share is 0–1); the data's own range otherwise.
    pub y_range: Option<(f64, f64)>,
}

/// A series as drawn: its class, name, the polyline's points, and a dot when it has a
/// single point (a polyline of one point shows nothing).
struct Line<'a> {
    class: &'static str,
    name: &'a str,
    points: String,
    dot: Option<(String, String)>,
}

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The range of the finite values, widened when it is a single point.
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    match (lo.is_finite(), hi > lo) {
        (false, _) => None,
        (true, true) => Some((lo, hi)),
        (true, false) => Some((lo - 0.5, hi + 0.5)),
    }
}

/// A value's position on an axis of `length` from `start`.
fn scale((lo, hi): (f64, f64), v: f64, start: f64, length: f64) -> f64 {
    start + (v - lo) / (hi - lo) * length
}

/// Compact tick text.
fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

impl Chart {
    /// The chart as inline SVG, or a sentence when there is nothing to draw.
    pub fn render(&self) -> Markup {
        let drawn = || {
            self.series.iter().flat_map(|s| {
                s.points
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
            })
        };
        let xs = drawn().map(|p| p.0).chain(self.markers.iter().map(|m| m.x));
        let ys = drawn().map(|p| p.1);
        let (Some(xr), Some(yr)) = (range(xs), self.y_range.or_else(|| range(ys))) else {
            return html! { p.empty { (self.title) ": nothing recorded yet." } };
        };
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let x = |v: f64| scale(xr, v, LEFT, plot_w);
        let y = |v: f64| scale(yr, v, TOP + plot_h, -plot_h);
        let summary: Vec<String> = self
            .series
            .iter()
            .map(|s| format!("{}: {} points", s.name, s.points.len()))
            .chain((!self.markers.is_empty()).then(|| format!("{} marks", self.markers.len())))
            .collect();
        let lines: Vec<Line> = self
            .series
            .iter()
            .map(|s| {
                let pts: Vec<(String, String)> = s
                    .points
                    .iter()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .map(|p| {
                        (
                            format!("{:.1}", x(p.0)),
                            format!("{:.1}", y(p.1.clamp(yr.0, yr.1))),
                        )
                    })
                    .collect();
                let dot = match pts.as_slice() {
                    [one] => Some(one.clone()),
                    _ => None,
                };
                let joined = pts
                    .iter()
                    .map(|(a, b)| format!("{a},{b}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                Line {
                    class: s.style.class(),
                    name: &s.name,
                    points: joined,
                    dot,
                }
            })
            .collect();
        html! {
            figure.chart {
                svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(self.title) {
                    title { (self.title) }
                    desc { (summary.join("; ")) }
                    line.axis x1=(LEFT) y1=(TOP + plot_h) x2=(W - RIGHT) y2=(TOP + plot_h) {}
                    line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) {}
                    text.tick x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (tick(yr.1)) }
                    text.tick x=(LEFT - 4.0) y=(TOP + plot_h) text-anchor="end" { (tick(yr.0)) }
                    text.tick x=(LEFT) y=(H - 8.0) { (self.x_ends.0) }
                    text.tick x=(W - RIGHT) y=(H - 8.0) text-anchor="end" { (self.x_ends.1) }
                    @for m in &self.markers {
                        line.marker x1=(x(m.x)) y1=(TOP) x2=(x(m.x)) y2=(TOP + plot_h) {
                            title { (m.label) }
                        }
                    }
                    @for l in &lines {
                        polyline class=(l.class) points=(l.points) {
                            title { (l.name) }
                        }
                        @if let Some((px, py)) = &l.dot {
                            circle class=(l.class) cx=(px) cy=(py) r="3" {}
                        }
                    }
                }
                figcaption {
                    (self.title) ": "
                    @for s in &self.series {
                        span class={ "key " (s.style.class()) } { (s.name) " (" (style_word(s.style)) ")" } " "
                    }
                    @if !self.markers.is_empty() {
                        span.key.marker { "deploys and rollbacks (vertical lines)" }
                    }
                }
            }
        }
    }
}

fn style_word(s: Style) -> &'static str {
    match s {
        Style::Solid => "solid line",
        Style::Dashed => "dashed line",
        Style::Dotted => "dotted line",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_inside_the_plot_and_labels_are_escaped() {
        let chart = Chart {
            title: "drift <share>".into(),
            x_ends: ("2026-01-01".into(), "2026-01-03".into()),
            series: vec![Series {
                name: "share".into(),
                style: Style::Solid,
                points: vec![(0.0, 0.0), (1.0, 0.5), (2.0, 1.0), (3.0, f64::NAN)],
            }],
            markers: vec![Marker {
                x: 1.0,
                label: "v2 <deployed>".into(),
            }],
            y_range: Some((0.0, 1.0)),
        };
        let svg = chart.render().into_string();
        assert!(
            svg.contains(r#"points="48.0,152.0 338.0,82.0 628.0,12.0""#),
            "{svg}"
        );
        assert!(svg.contains("drift &lt;share&gt;"), "{svg}");
        assert!(svg.contains("v2 &lt;deployed&gt;"), "{svg}");
        assert!(svg.contains("share (solid line)"), "{svg}");
    }

    #[test]
    fn an_empty_chart_says_so() {
        let chart = Chart {
            title: "losses".into(),
            x_ends: (String::new(), String::new()),
            series: vec![],
            markers: vec![],
            y_range: None,
        };
        assert_eq!(
            chart.render().into_string(),
            r#"<p class="empty">losses: nothing recorded yet.</p>"#
        );
    }
}
