//! The Replication panel: the replicator's queue, lag and outcomes.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::format::{self, UNKNOWN, or_unknown};
use super::{health_span, label_style, panel_block};
use crate::tui::state::{App, Health, Panel};

/// Draws the panel.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let view = &app.replication;
    let block = panel_block(app, Panel::Replication, Line::raw(" Replication "));
    let label = |text: &'static str| Span::styled(format!("{text:<8}"), label_style());
    let mut lines = Vec::new();
    let mut status = vec![label("replic."), health_span(&view.health)];
    if let (Some(since), false) = (view.since_ms, view.health == Health::Unknown) {
        status.push(Span::raw(format!(" for {}", format::age(app.now_ms.saturating_sub(since)))));
    }
    if view.url.is_none() {
        status.push(Span::styled(" URL not known yet", label_style()));
    }
    lines.push(Line::from(status));
    if let Some(error) = view.health.error() {
        lines.push(Line::styled(format!("└ {error}"), Style::new().fg(Color::Red)));
    }
    let queue_style = match view.queue_size {
        _ if view.queue_full() => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Some(queue) if queue >= crate::tui::update::QUEUE_ALARM_MIN => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    };
    let mut queue = vec![
        label("queue"),
        Span::styled(or_unknown(view.queue_size, |q| crate::units::count_of(q, "job", "jobs")), queue_style),
    ];
    if view.queue_full() {
        let capacity = view.queue_capacity.map_or_else(|| UNKNOWN.to_string(), format::count);
        queue.push(Span::styled(format!(" FULL (max {capacity}): new jobs refused"), queue_style));
    }
    queue.push(Span::raw(format!("  in {}/s", or_unknown(view.jobs_per_sec, format::rate))));
    lines.push(Line::from(queue));
    lines.push(Line::from(vec![
        label("lag"),
        Span::raw(format!(
            "max {}  avg ack {}",
            or_unknown(view.max_lag_ms, format::millis),
            or_unknown(view.average_ack_ms, format::millis)
        )),
    ]));
    let failures_style = match view.failures {
        Some(failures) if failures > 0 => Style::new().fg(Color::Red),
        _ => Style::new(),
    };
    lines.push(Line::from(vec![
        label("copies"),
        Span::raw(format!("{} ok  ", or_unknown(view.successes, format::count))),
        Span::styled(format!("{} failed", or_unknown(view.failures, format::count)), failures_style),
    ]));
    lines.push(Line::from(vec![
        label("retries"),
        Span::raw(format!(
            "{}  hinted {}",
            or_unknown(view.retries, format::count),
            view.hinted.map_or_else(|| UNKNOWN.to_string(), format::count)
        )),
    ]));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
