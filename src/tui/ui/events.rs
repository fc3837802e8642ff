//! The Events panel: the newest changes first.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::format;
use super::{label_style, panel_block};
use crate::tui::state::{App, Panel, Severity};

/// Draws the panel.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let block = panel_block(app, Panel::Events, Line::raw(format!(" Events ({}) ", app.events.len())));
    let lines: Vec<Line> = if app.events.is_empty() {
        vec![Line::styled("nothing happened yet", label_style())]
    } else {
        let visible = block.inner(area).height as usize;
        app.events
            .iter()
            .rev()
            .take(visible)
            .map(|entry| {
                let color = match entry.severity {
                    Severity::Info => Color::Green,
                    Severity::Warning => Color::Yellow,
                    Severity::Alert => Color::Red,
                };
                Line::from(vec![
                    Span::styled(format!("{} ", format::clock(entry.at_ms)), label_style()),
                    Span::styled(entry.text.clone(), Style::new().fg(color)),
                ])
            })
            .collect()
    };
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}
