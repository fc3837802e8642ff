//! The Gateway panel: traffic, latency, rate limiting, busiest tenants.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::format::{self, UNKNOWN, or_unknown};
use super::{health_span, label_style, panel_block};
use crate::tui::state::{App, Panel};

/// Draws the panel.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let view = &app.gateway;
    let block = panel_block(app, Panel::Gateway, Line::raw(" Gateway "));
    let label = |text: &'static str| Span::styled(format!("{text:<8}"), label_style());
    let mut lines = Vec::new();
    let mut status = vec![label("gateway"), health_span(&view.health)];
    if let Some(users) = &view.users {
        status.push(Span::styled("  users ", label_style()));
        status.push(health_span(users));
    }
    lines.push(Line::from(status));
    for (name, error) in [("gateway", view.health.error()), ("users", view.users.as_ref().and_then(|u| u.error()))] {
        if let Some(error) = error {
            lines.push(Line::styled(format!("└ {name}: {error}"), Style::new().fg(Color::Red)));
        }
    }
    lines.push(Line::from(vec![
        label("rps"),
        Span::raw(format!(
            "{}  total {}",
            or_unknown(view.rps, format::rate),
            or_unknown(view.total_requests, format::count)
        )),
    ]));
    lines.push(Line::from(vec![
        label("latency"),
        Span::raw(format!(
            "p50 {} p95 {} p99 {} ms",
            or_unknown(view.p50_ms, format::millis_number),
            or_unknown(view.p95_ms, format::millis_number),
            or_unknown(view.p99_ms, format::millis_number)
        )),
    ]));
    let limited_style = if app.alarms.rate_limit_storm { Style::new().fg(Color::Yellow) } else { Style::new() };
    lines.push(Line::from(vec![
        label("limited"),
        Span::styled(
            format!(
                "{}/s  total {}",
                or_unknown(view.rate_limit_per_sec, format::rate),
                or_unknown(view.rate_limit_hits, format::count)
            ),
            limited_style,
        ),
    ]));
    let tenants = if view.top_tenants.is_empty() {
        UNKNOWN.to_string()
    } else {
        view.top_tenants
            .iter()
            .map(|(user, rate)| format!("{user} {}/s", format::rate(*rate)))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    lines.push(Line::from(vec![label("tenants"), Span::raw(tenants)]));
    if !view.node_errors.is_empty() {
        let errors =
            view.node_errors.iter().map(|(node, count)| format!("{node} {count}")).collect::<Vec<_>>().join(" · ");
        lines.push(Line::from(vec![label("node err"), Span::styled(errors, Style::new().fg(Color::Red))]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
