//! Drawing: `draw(frame, &app)`, one function per panel.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table};
use ratatui::Frame;

use vocabulary::{Priority, QueueRef};

use crate::app::{App, Connection, Panel};

const QUEUE_COLORS: [(QueueRef, Color); 6] = [
    (QueueRef::Main(Priority::High), Color::Red),
    (QueueRef::Main(Priority::Medium), Color::Yellow),
    (QueueRef::Main(Priority::Low), Color::Cyan),
    (QueueRef::DeadLetter(Priority::High), Color::Magenta),
    (QueueRef::DeadLetter(Priority::Medium), Color::LightMagenta),
    (QueueRef::DeadLetter(Priority::Low), Color::Gray),
];

pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(8), Constraint::Length(1)]).areas(frame.area());
    draw_header(frame, header, app);
    let [charts, tables] = Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
    let [queues, rates] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    let [latency, statuses, faults] = Layout::horizontal([
        Constraint::Percentage(40),
        Constraint::Percentage(30),
        Constraint::Percentage(30),
    ])
    .areas(tables);
    draw_queues(frame, queues, app);
    draw_rates(frame, rates, app);
    draw_latency(frame, latency, app);
    draw_statuses(frame, statuses, app);
    draw_faults(frame, faults, app);
    draw_footer(frame, footer, app);
    if app.show_help {
        draw_help(frame, frame.area());
    }
}

fn panel<'a>(title: &'a str, app: &App, which: Panel) -> Block<'a> {
    let style = if app.selected == which {
        Style::default().fg(Color::White).add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::default().borders(Borders::ALL).border_style(style).title(title)
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let state = match &app.connection {
        Connection::Waiting => Span::styled("● waiting for first reading", Style::default().fg(Color::Yellow)),
        Connection::Connected => Span::styled("● connected", Style::default().fg(Color::Green)),
        Connection::Lost { error, failures } => Span::styled(
            format!("✗ not answering ({failures} tries): {error} — reconnecting"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let mut spans = vec![
        Span::styled("Courier ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{}  ", app.target)),
        state,
    ];
    if app.paused {
        spans.push(Span::styled(
            "  ⏸ PAUSED",
            Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn time_bounds(app: &App) -> [f64; 2] {
    let start = app.history.front().map(|p| p.t).unwrap_or(0.0);
    let end = app.history.back().map(|p| p.t).unwrap_or(0.0);
    [start, end.max(start + 1.0)]
}

fn axis_labels(bounds: [f64; 2], unit: &str) -> Vec<Span<'static>> {
    vec![
        Span::raw(format!("{:.0}{unit}", bounds[0])),
        Span::raw(format!("{:.0}{unit}", (bounds[0] + bounds[1]) / 2.0)),
        Span::raw(format!("{:.0}{unit}", bounds[1])),
    ]
}

/// One line of a chart: its legend name, colour and (t, value) points.
type Series = (String, Color, Vec<(f64, f64)>);

fn draw_line_chart(frame: &mut Frame, area: Rect, block: Block, series: Vec<Series>, app: &App) {
    let x = time_bounds(app);
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let datasets: Vec<Dataset> = series
        .iter()
        .map(|(name, color, points)| {
            Dataset::default()
                .name(name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(*color))
                .data(points)
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(Axis::default().bounds(x).labels(axis_labels(x, "s")))
        .y_axis(Axis::default().bounds([0.0, top]).labels(axis_labels([0.0, top], "")));
    frame.render_widget(chart, area);
}

fn draw_queues(frame: &mut Frame, area: Rect, app: &App) {
    let series = QUEUE_COLORS
        .iter()
        .filter(|(queue, _)| app.history.iter().any(|p| p.depths.contains_key(queue)))
        .map(|(queue, color)| {
            let points = app
                .history
                .iter()
                .map(|p| (p.t, p.depths.get(queue).copied().unwrap_or(0.0)))
                .collect();
            (queue.to_string(), *color, points)
        })
        .collect();
    let latest = app.history.back();
    let now: Vec<String> = QUEUE_COLORS
        .iter()
        .filter_map(|(q, _)| latest.and_then(|p| p.depths.get(q)).map(|d| format!("{q} {d:.0}")))
        .collect();
    let title = format!(" Queue depth (visible + in flight): {} ", now.join("  "));
    draw_line_chart(frame, area, panel(&title, app, Panel::Queues), series, app);
}

fn draw_rates(frame: &mut Frame, area: Rect, app: &App) {
    let pick = |f: fn(&crate::app::Point) -> f64| app.history.iter().map(|p| (p.t, f(p))).collect::<Vec<_>>();
    let latest = app.history.back();
    let title = format!(
        " Delivery: sent {:.1}/s  errors {:.1}/s  retries {:.1}/s ",
        latest.map(|p| p.sent_per_sec).unwrap_or(0.0),
        latest.map(|p| p.errors_per_sec).unwrap_or(0.0),
        latest.map(|p| p.retries_per_sec).unwrap_or(0.0)
    );
    let series = vec![
        ("sent/s".to_string(), Color::Green, pick(|p| p.sent_per_sec)),
        ("errors/s".to_string(), Color::Red, pick(|p| p.errors_per_sec)),
        ("retries/s".to_string(), Color::Yellow, pick(|p| p.retries_per_sec)),
    ];
    draw_line_chart(frame, area, panel(&title, app, Panel::Rates), series, app);
}

fn draw_latency(frame: &mut Frame, area: Rect, app: &App) {
    let rows = Priority::ALL.iter().map(|&priority| {
        let latest = app.latest.as_ref();
        let latency = latest.map(|s| s.latency[priority]).unwrap_or_default();
        let sent = latest.map_or(0, |s| s.by_priority[priority].sent);
        Row::new(vec![
            Cell::from(priority.to_string()),
            Cell::from(sent.to_string()),
            Cell::from(format!("{:.0}", latency.p50)),
            Cell::from(format!("{:.0}", latency.p95)),
            Cell::from(format!("{:.0}", latency.p99)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec!["priority", "sent", "p50 ms", "p95 ms", "p99 ms"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(panel(" Accepted→SENT latency ", app, Panel::Latency));
    frame.render_widget(table, area);
}

fn draw_statuses(frame: &mut Frame, area: Rect, app: &App) {
    let s = app.latest.clone().unwrap_or_default();
    let ingest = app.history.back().map_or(0.0, |p| p.ingest_rows_per_sec);
    let lines = vec![
        Line::from(format!(
            "batches        {:>8.0} {ingest:>6.0} rows/s",
            s.ingest.batches_in_progress
        )),
        Line::from(format!("accepted       {:>8.0}", s.accepted)),
        Line::from(format!("in pipeline    {:>8.0}", s.in_pipeline())),
        Line::from(Span::styled(
            format!("SENT           {:>8.0}", s.total(|c| c.sent)),
            Style::default().fg(Color::Green),
        )),
        Line::from(Span::styled(
            format!("ERROR          {:>8.0}", s.total(|c| c.errors)),
            Style::default().fg(Color::Red),
        )),
        Line::from(format!("retried        {:>8.0}", s.total(|c| c.retries))),
        Line::from(format!("dead-lettered  {:>8.0}", s.total(|c| c.dead_lettered))),
        Line::from(budget_line(&s.budget)),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(panel(" Messages by status ", app, Panel::Statuses)),
        area,
    );
}

/// The senders' send budget in a few words.
fn budget_line(budget: &vocabulary::stats::Budget) -> String {
    match (budget.paused_for_secs, budget.rate_per_sec, budget.ceiling_per_sec) {
        (Some(secs), _, _) => format!("send budget    paused {secs:.0} s (daily quota)"),
        (None, Some(rate), Some(ceiling)) => format!("send budget    {rate:>6.1}/s of {ceiling:.1}"),
        _ => "send budget    unpaced".to_string(),
    }
}

fn draw_faults(frame: &mut Frame, area: Rect, app: &App) {
    let s = app.latest.clone().unwrap_or_default();
    let mut lines: Vec<Line> = if s.active_faults.is_empty() {
        vec![Line::from(Span::styled(
            "no faults in force",
            Style::default().fg(Color::DarkGray),
        ))]
    } else {
        s.active_faults
            .iter()
            .map(|f| Line::from(Span::styled(format!("⚡ {f}"), Style::default().fg(Color::Yellow))))
            .collect()
    };
    if !s.slo.is_empty() {
        lines.push(Line::from(""));
        for slo in &s.slo {
            let (mark, color) = if slo.met {
                ("✓", Color::Green)
            } else {
                ("✗", Color::Red)
            };
            lines.push(Line::from(Span::styled(
                format!("{mark} {}", slo.name),
                Style::default().fg(color),
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(lines).block(panel(" Faults and SLOs ", app, Panel::Faults)),
        area,
    );
}

fn draw_footer(frame: &mut Frame, area: Rect, _app: &App) {
    let keys = "q quit  p pause  tab/←→ panels  ? help";
    frame.render_widget(
        Paragraph::new(Span::styled(keys, Style::default().fg(Color::DarkGray))),
        area,
    );
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = 52.min(area.width);
    let height = 11.min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let text = vec![
        Line::from("q          quit"),
        Line::from("p / space  pause or resume the view"),
        Line::from("tab, →     next panel"),
        Line::from("shift-tab, ← previous panel"),
        Line::from("?          this help (any key closes it)"),
        Line::from(""),
        Line::from("Rates are per second between readings; a"),
        Line::from("target that stops answering is retried."),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Help ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Key;
    use crate::Snapshot;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use vocabulary::stats::{Counters, Depth, Latency, SloSoFar};

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let area = buffer.area;
        let mut text = String::new();
        for y in 0..area.height {
            for x in 0..area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn fixed_app() -> App {
        let mut app = App::new("http://127.0.0.1:8080");
        for (i, (sent, low)) in [(0, 300), (50, 260), (120, 190)].into_iter().enumerate() {
            let mut s = Snapshot {
                accepted: 400,
                ingest: vocabulary::stats::Ingest {
                    rows: 500 * i as u64,
                    batches_in_progress: 1,
                },
                ..Snapshot::default()
            };
            s.by_priority[Priority::Low] = Counters {
                sent,
                errors: 2,
                retries: 4,
                dead_lettered: 1,
                enqueued: 400,
            };
            s.latency[Priority::High] = Latency {
                count: 10,
                p50: 42.0,
                p95: 120.0,
                p99: 180.0,
            };
            let depth = |visible, in_flight| Depth {
                visible,
                in_flight,
                delayed: 0,
            };
            s.queues.insert(QueueRef::Main(Priority::Low), depth(low, 10));
            s.queues.insert(QueueRef::DeadLetter(Priority::Low), depth(1, 0));
            s.active_faults = vec!["ses_throttle#1".into()];
            s.budget = vocabulary::stats::Budget {
                rate_per_sec: Some(13.6),
                ceiling_per_sec: Some(19.4),
                throttles: 2,
                paused_for_secs: None,
            };
            let slo = |name: &str, met| SloSoFar { name: name.into(), met };
            s.slo = vec![slo("lost ≤ 0", true), slo("p99 high ≤ 500 ms", false)];
            app.on_snapshot(i as f64, s);
        }
        app
    }

    #[test]
    fn every_panel_shows_its_figures() {
        let text = screen(&fixed_app(), 140, 32);
        assert!(text.contains("Courier http://127.0.0.1:8080"), "{text}");
        assert!(text.contains("● connected"));
        assert!(
            text.contains("Queue depth (visible + in flight): low 200  low-dlq 1"),
            "{text}"
        );
        assert!(text.contains("sent 70.0/s"), "{text}");
        assert!(text.contains("high     0        42       120      180"), "{text}");
        assert!(text.contains("low      120      0        0        0"), "{text}");
        assert!(text.contains("accepted            400"), "{text}");
        assert!(text.contains("batches               1    500 rows/s"), "{text}");
        assert!(text.contains("in pipeline         278"), "{text}");
        assert!(text.contains("SENT                120"));
        assert!(text.contains("dead-lettered         1"));
        assert!(text.contains("send budget      13.6/s of 19.4"), "{text}");
        assert!(text.contains("ses_throttle#1"), "{text}");
        assert!(text.contains("✓ lost ≤ 0") && text.contains("✗ p99 high ≤ 500 ms"));
        assert!(text.contains("q quit  p pause"));
    }

    #[test]
    fn a_lost_target_and_a_pause_are_shown_in_the_header() {
        let mut app = fixed_app();
        app.on_error("connection refused");
        app.on_key(Key::Char('p'));
        let text = screen(&app, 140, 32);
        assert!(
            text.contains("✗ not answering (1 tries): connection refused — reconnecting"),
            "{text}"
        );
        assert!(text.contains("⏸ PAUSED"));
        assert!(text.contains("low 200"), "the last figures stay on screen");
    }

    #[test]
    fn help_opens_over_the_view_and_a_small_terminal_does_not_panic() {
        let mut app = fixed_app();
        app.on_key(Key::Char('?'));
        let text = screen(&app, 100, 30);
        assert!(text.contains(" Help ") && text.contains("pause or resume the view"));
        let _ = screen(&app, 20, 5);
        let _ = screen(&App::new("empty"), 80, 24);
    }
}
