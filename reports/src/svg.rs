//! Small, dependency-free SVG charts for the HTML report: time series with
//! fault windows shaded behind them, and grouped bars. Each chart scales to
//! its container through its `viewBox`, so it reads on a phone and in print.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;

/// Colour-blind-safe (Okabe–Ito) colours, in the order series take them.
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000",
];

/// Escapes text for HTML and SVG (both XML-ish; attributes included).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A shaded stretch of the x axis: a fault that was in force.
#[derive(Debug, Clone)]
pub struct Band {
    pub start: f64,
    pub end: f64,
    pub label: String,
}

/// A time-series chart; x is seconds since the run started.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub id: String,
    pub title: String,
    pub y_unit: String,
    pub x_max: f64,
    /// What x is, under the axis ("seconds since start").
    pub x_label: String,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
}

/// A step of 1, 2 or 5 × 10^k giving about `target` ticks up to `max`.
fn nice_step(max: f64, target: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The axis top: the data's maximum rounded up to a whole step.
fn nice_max(max: f64) -> (f64, f64) {
    let step = nice_step(max, 4.0);
    let top = (max / step).ceil().max(1.0) * step;
    (top, step)
}

/// A tick label: no decimals when the step is whole.
fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 || value == 0.0 {
        format_count(value)
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{value:.decimals$}")
    }
}

/// 1234567 → "1.2M", 12345 → "12k", 950 → "950".
pub fn format_count(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if abs >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - (v / self.y_max).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    }
}

fn open_svg(out: &mut String, id: &str, title: &str, description: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title {id}-desc" font-family="system-ui, sans-serif" font-size="12"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        escape(title),
        escape(description)
    );
}

fn legend(out: &mut String, entries: &[(&str, &str, bool)]) {
    let mut x = LEFT;
    for (name, color, dashed) in entries {
        let dash = if *dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="14" x2="{:.1}" y2="14" stroke="{color}" stroke-width="3"{dash}/><text x="{:.1}" y="18">{}</text>"#,
            x + 16.0,
            x + 20.0,
            escape(name)
        );
        x += 32.0 + 7.0 * name.chars().count() as f64;
    }
}

fn y_axis(out: &mut String, frame: &Frame, step: f64, unit: &str) {
    let mut value = 0.0;
    while value <= frame.y_max + step * 0.01 {
        let y = frame.y(value);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d4da" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(value, step)
        );
        value += step;
    }
    let _ = write!(
        out,
        r##"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle" fill="#444">{}</text>"##,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(unit)
    );
}

fn x_axis_line(out: &mut String) {
    let y = HEIGHT - BOTTOM;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#666"/>"##,
        WIDTH - RIGHT
    );
}

impl LineChart {
    pub fn to_svg(&self) -> String {
        let y_data_max = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let (y_max, y_step) = nice_max(y_data_max);
        let x_max = self.x_max.max(1.0);
        let frame = Frame { x_max, y_max };
        let mut out = String::with_capacity(8 * 1024);
        let description = format!(
            "{} against {} up to {:.0}; {}{}",
            self.y_unit,
            self.x_label,
            x_max,
            self.series
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if self.bands.is_empty() {
                String::new()
            } else {
                format!(
                    "; shaded: {}",
                    self.bands
                        .iter()
                        .map(|b| b.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        open_svg(&mut out, &self.id, &self.title, &description);

        for (index, band) in self.bands.iter().enumerate() {
            let (x0, x1) = (frame.x(band.start), frame.x(band.end.max(band.start)));
            let _ = write!(
                out,
                r##"<g class="fault"><title>{}: {:.0}–{:.0} s</title><rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#D55E00" fill-opacity="0.13" stroke="#D55E00" stroke-opacity="0.5" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" fill="#8a3a00" font-size="10">{}</text></g>"##,
                escape(&band.label),
                band.start,
                band.end,
                (x1 - x0).max(1.5),
                HEIGHT - TOP - BOTTOM,
                x0 + 3.0,
                TOP + 11.0 + 11.0 * (index % 3) as f64,
                escape(&band.label)
            );
        }
        y_axis(&mut out, &frame, y_step, &self.y_unit);
        let x_step = nice_step(x_max, 8.0);
        let mut t = 0.0;
        while t <= x_max + x_step * 0.01 {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
                frame.x(t),
                HEIGHT - BOTTOM + 16.0,
                tick_label(t, x_step)
            );
            t += x_step;
        }
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 4.0,
            escape(&self.x_label)
        );
        x_axis_line(&mut out);
        for series in &self.series {
            let points: Vec<String> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", frame.x(*x), frame.y(*y)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let dash = if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{dash} points="{}"><title>{}</title></polyline>"#,
                series.color,
                points.join(" "),
                escape(&series.name)
            );
        }
        if self.series.iter().all(|s| s.points.is_empty()) {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">no samples</text>"##,
                (LEFT + WIDTH - RIGHT) / 2.0,
                (TOP + HEIGHT - BOTTOM) / 2.0
            );
        }
        let entries: Vec<(&str, &str, bool)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.color, s.dashed))
            .collect();
        legend(&mut out, &entries);
        out.push_str("</svg>");
        out
    }
}

/// Grouped vertical bars: one group per category, one bar per measure.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub id: String,
    pub title: String,
    pub y_unit: String,
    /// Names of the bars within each group, e.g. p50, p95, p99.
    pub measures: Vec<String>,
    /// Category name and one value per measure.
    pub groups: Vec<(String, Vec<f64>)>,
}

impl BarChart {
    pub fn to_svg(&self) -> String {
        let y_data_max = self
            .groups
            .iter()
            .flat_map(|(_, values)| values.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let (y_max, y_step) = nice_max(y_data_max);
        let frame = Frame { x_max: 1.0, y_max };
        let mut out = String::with_capacity(4 * 1024);
        let description = self
            .groups
            .iter()
            .map(|(name, values)| {
                let parts: Vec<String> = self
                    .measures
                    .iter()
                    .zip(values)
                    .map(|(m, v)| format!("{m} {v:.0}"))
                    .collect();
                format!("{name}: {}", parts.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        open_svg(
            &mut out,
            &self.id,
            &self.title,
            &format!("{} ({})", description, self.y_unit),
        );
        y_axis(&mut out, &frame, y_step, &self.y_unit);
        let plot_width = WIDTH - LEFT - RIGHT;
        let group_width = plot_width / self.groups.len().max(1) as f64;
        let bar_width = (group_width * 0.8) / self.measures.len().max(1) as f64;
        for (g, (name, values)) in self.groups.iter().enumerate() {
            let group_x = LEFT + g as f64 * group_width + group_width * 0.1;
            for (m, value) in values.iter().enumerate() {
                let x = group_x + m as f64 * bar_width;
                let y = frame.y(*value);
                let color = PALETTE[m % PALETTE.len()];
                let _ = write!(
                    out,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {value:.1} {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#222">{}</text>"##,
                    (bar_width - 2.0).max(1.0),
                    (HEIGHT - BOTTOM - y).max(0.0),
                    escape(name),
                    escape(&self.measures[m]),
                    escape(&self.y_unit),
                    x + bar_width / 2.0 - 1.0,
                    (y - 3.0).max(TOP - 2.0),
                    format_count(*value)
                );
            }
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#222" font-weight="600">{}</text>"##,
                LEFT + (g as f64 + 0.5) * group_width,
                HEIGHT - BOTTOM + 18.0,
                escape(name)
            );
        }
        x_axis_line(&mut out);
        let entries: Vec<(&str, &str, bool)> = self
            .measures
            .iter()
            .enumerate()
            .map(|(i, m)| (m.as_str(), PALETTE[i % PALETTE.len()], false))
            .collect();
        legend(&mut out, &entries);
        out.push_str("</svg>");
        out
    }
}

/// One measure of a [`PanelChart`]: a value per x, or none where it was not measured.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub color: &'static str,
    pub values: Vec<Option<f64>>,
}

/// Several measures against one x, stacked in one figure that shares the x
/// axis (small multiples): each measure keeps its own unit and scale. Points
/// are filled where `held[i]` and hollow where not (a sweep's objectives).
#[derive(Debug, Clone)]
pub struct PanelChart {
    pub id: String,
    pub title: String,
    pub x_label: String,
    /// One tick and one point per x.
    pub xs: Vec<f64>,
    pub held: Vec<bool>,
    pub panels: Vec<Panel>,
}

const PANEL_HEIGHT: f64 = 130.0;
const PANEL_GAP: f64 = 26.0;

impl PanelChart {
    pub fn to_svg(&self) -> String {
        let height = TOP + self.panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) + BOTTOM - PANEL_GAP;
        // From the least x to the greatest: a sweep's values need not start at 0.
        let x_min = self.xs.iter().copied().fold(f64::INFINITY, f64::min);
        let x_max = self.xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = (x_max - x_min).max(1e-9);
        let x = |v: f64| {
            let share = if x_max > x_min { (v - x_min) / span } else { 0.5 };
            LEFT + 20.0 + share.clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT - 40.0)
        };
        let mut out = String::with_capacity(8 * 1024);
        let description = format!(
            "{} against {} ({}); hollow points: an objective did not hold",
            self.panels
                .iter()
                .map(|p| p.title.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.x_label,
            self.xs.iter().map(|v| format_number(*v)).collect::<Vec<_>>().join(", ")
        );
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-labelledby="{0}-title {0}-desc" font-family="system-ui, sans-serif" font-size="12"><title id="{0}-title">{}</title><desc id="{0}-desc">{}</desc>"#,
            self.id,
            escape(&self.title),
            escape(&description)
        );
        for (index, panel) in self.panels.iter().enumerate() {
            let top = TOP + index as f64 * (PANEL_HEIGHT + PANEL_GAP);
            self.panel(&mut out, panel, top, &x);
        }
        let axis_y = height - BOTTOM;
        for v in &self.xs {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
                x(*v),
                axis_y + 16.0,
                format_number(*v)
            );
        }
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text></svg>"##,
            (LEFT + WIDTH - RIGHT) / 2.0,
            height - 4.0,
            escape(&self.x_label)
        );
        out
    }

    fn panel(&self, out: &mut String, panel: &Panel, top: f64, x: &dyn Fn(f64) -> f64) {
        let data_max = panel
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let (y_max, step) = nice_max(data_max);
        let y = |v: f64| top + PANEL_HEIGHT - (v / y_max).clamp(0.0, 1.0) * PANEL_HEIGHT;
        let _ = write!(
            out,
            r##"<text x="{LEFT}" y="{:.1}" font-weight="600" fill="#222">{} ({})</text>"##,
            top - 6.0,
            escape(&panel.title),
            escape(&panel.unit)
        );
        let mut value = 0.0;
        while value <= y_max + step * 0.01 {
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#d0d4da"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#444">{4}</text>"##,
                y(value),
                WIDTH - RIGHT,
                LEFT - 6.0,
                y(value) + 4.0,
                tick_label(value, step)
            );
            value += step;
        }
        let points: Vec<(f64, f64, bool)> = self
            .xs
            .iter()
            .zip(&panel.values)
            .zip(&self.held)
            .filter_map(|((xv, v), held)| Some((*xv, (*v)?, *held)))
            .filter(|(_, v, _)| v.is_finite())
            .collect();
        let line: Vec<String> = points
            .iter()
            .map(|(xv, v, _)| format!("{:.1},{:.1}", x(*xv), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            panel.color,
            line.join(" ")
        );
        for (xv, v, held) in points {
            let fill = if held { panel.color } else { "#fff" };
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{fill}" stroke="{}" stroke-width="2"><title>{}: {} {}</title></circle>"#,
                x(xv),
                y(v),
                panel.color,
                format_number(xv),
                format_number(v),
                escape(&panel.unit)
            );
        }
    }
}

/// A value for a label: whole numbers as they are, others to three figures.
pub fn format_number(value: f64) -> String {
    let whole = value.fract() == 0.0 && value.abs() < 1e15;
    if whole || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(100.0, 4.0), 50.0);
        assert_eq!(nice_step(37.0, 4.0), 10.0);
        assert_eq!(nice_step(0.9, 4.0), 0.5);
        assert_eq!(nice_max(37.0), (40.0, 10.0));
        assert_eq!(nice_max(0.0), (1.0, 1.0));
    }

    #[test]
    fn text_is_escaped_so_a_hostile_label_cannot_break_out() {
        let chart = LineChart {
            id: "c".into(),
            title: "<script>alert(1)</script>".into(),
            y_unit: "msg/s".into(),
            x_max: 10.0,
            x_label: "seconds since start".into(),
            series: vec![Series {
                name: "a\"b".into(),
                color: PALETTE[0],
                points: vec![(0.0, 1.0), (10.0, 2.0)],
                dashed: false,
            }],
            bands: vec![],
        };
        let svg = chart.to_svg();
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;") && svg.contains("a&quot;b"));
    }

    #[test]
    fn a_panel_chart_shares_one_x_axis_and_marks_where_objectives_failed() {
        let chart = PanelChart {
            id: "sweep".into(),
            title: "workers".into(),
            x_label: "sender workers".into(),
            xs: vec![1.0, 2.0, 4.0],
            held: vec![false, true, true],
            panels: vec![
                Panel {
                    title: "end to end".into(),
                    unit: "s".into(),
                    color: PALETTE[0],
                    values: vec![Some(300.0), Some(150.0), Some(80.0)],
                },
                Panel {
                    title: "reminders p99".into(),
                    unit: "ms".into(),
                    color: PALETTE[1],
                    values: vec![Some(900.0), None, Some(120.0)],
                },
            ],
        };
        let svg = chart.to_svg();
        // One tick per x, once: the panels share the axis.
        assert_eq!(svg.matches(">4</text>").count(), 1, "{svg}");
        // Five points (one value missing); one per panel hollow at x = 1.
        assert_eq!(svg.matches("<circle").count(), 5);
        assert_eq!(svg.matches(r##"fill="#fff""##).count(), 2);
    }

    #[test]
    fn counts_are_shortened_for_axes() {
        assert_eq!(format_count(950.0), "950");
        assert_eq!(format_count(12_345.0), "12k");
        assert_eq!(format_count(1_234_567.0), "1.2M");
    }
}
