//! The `?` overlay listing the keys.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

/// The keys and what they do.
pub const KEYS: [(&str, &str); 7] = [
    ("q, Esc, Ctrl-C", "quit (Esc first closes help / zoom)"),
    ("Tab, →, ↓", "focus the next panel"),
    ("Shift-Tab, ←, ↑", "focus the previous panel"),
    ("z, Enter", "zoom the focused panel"),
    ("p, Space", "pause / resume updates"),
    ("?", "show / hide this help"),
    ("", "data refreshes every --interval"),
];

/// Draws the overlay centred in `area`.
pub fn render(frame: &mut Frame, area: Rect) {
    let width = 58.min(area.width);
    let height = (KEYS.len() as u16 + 2).min(area.height);
    let [row] = Layout::vertical([Constraint::Length(height)]).flex(Flex::Center).areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(width)]).flex(Flex::Center).areas(row);
    let key_style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(keys, action)| Line::from(vec![Span::styled(format!(" {keys:<16} "), key_style), Span::raw(*action)]))
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Keys ").border_style(key_style)), popup);
}
