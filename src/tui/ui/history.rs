//! The History panel: sparklines of rps, replication lag and total WAL size.

use std::collections::VecDeque;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};

use super::format::{self, or_unknown};
use super::{label_style, panel_block};
use crate::tui::state::{App, Panel};

/// One charted series: its label, samples, value format and colour.
struct Series<'a> {
    name: &'a str,
    values: &'a VecDeque<Option<f64>>,
    show: fn(f64) -> String,
    color: Color,
}

/// Draws the panel.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let span = crate::duration::format(app.interval * crate::tui::state::HISTORY_LEN as u32);
    let block = panel_block(app, Panel::History, Line::raw(format!(" History (up to {span}) ")));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let history = &app.history;
    let series = [
        Series { name: "rps", values: &history.rps, show: format::rate, color: Color::Green },
        Series { name: "lag", values: &history.lag_ms, show: format::millis, color: Color::Yellow },
        Series {
            name: "WAL",
            values: &history.wal_bytes,
            show: |bytes| format::bytes(bytes as u64),
            color: Color::Magenta,
        },
    ];
    let rows = Layout::vertical([Constraint::Ratio(1, 3); 3]).split(inner);
    for (Series { name, values, show, color }, row) in series.into_iter().zip(rows.iter()) {
        let [label_row, chart_row] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(*row);
        let width = chart_row.width as usize;
        let recent: Vec<Option<f64>> = values.iter().skip(values.len().saturating_sub(width)).copied().collect();
        let peak = recent.iter().flatten().copied().fold(None, |max: Option<f64>, v| Some(max.map_or(v, |m| m.max(v))));
        let current = values.back().copied().flatten();
        let label = Line::from(vec![
            Span::styled(format!("{name:<4}"), label_style()),
            Span::raw(or_unknown(current, show)),
            Span::styled(format!("  peak {}", or_unknown(peak, show)), label_style()),
        ]);
        frame.render_widget(Paragraph::new(label), label_row);
        // Sparklines take integers: keep three decimals of precision.
        let data: Vec<Option<u64>> = recent.iter().map(|v| v.map(|v| (v.max(0.0) * 1000.0).round() as u64)).collect();
        frame.render_widget(Sparkline::default().data(&data).style(Style::new().fg(color)), chart_row);
    }
}
