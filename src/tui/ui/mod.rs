//! Drawing the dashboard. Rendering reads the [`App`] and never changes it.
//!
//! Layout at 80×24 and up: a header line, the Ring panel, Replication and
//! Gateway side by side, History and Events side by side, a key-hint line.
//! Below [`MIN_WIDTH`]×[`MIN_HEIGHT`] only a "terminal too small" notice is drawn.

mod events;
pub mod format;
mod gateway;
mod help;
mod history;
mod replication;
mod ring;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph, Wrap};

use super::state::{App, Health, Panel};

/// Narrowest terminal the full dashboard is drawn in.
pub const MIN_WIDTH: u16 = 60;
/// Shortest terminal the full dashboard is drawn in.
pub const MIN_HEIGHT: u16 = 16;
/// Height of the Replication / Gateway row.
const MIDDLE_HEIGHT: u16 = 8;
/// The Ring panel's smallest height (borders, column header, two nodes).
const RING_MIN_HEIGHT: u16 = 5;
/// The History / Events row is drawn only when it gets at least this height.
const BOTTOM_MIN_HEIGHT: u16 = 6;

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        render_too_small(frame, area);
        return;
    }
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    render_header(app, frame, header);
    render_footer(frame, footer);
    if app.zoomed {
        render_panel(app, app.focus, frame, body);
    } else {
        render_overview(app, frame, body);
    }
    if app.show_help {
        help::render(frame, area);
    }
}

/// Every panel at once; History and Events only when the terminal is tall enough
/// (zooming reaches them otherwise).
fn render_overview(app: &App, frame: &mut Frame, body: Rect) {
    let full = body.height >= RING_MIN_HEIGHT + MIDDLE_HEIGHT + BOTTOM_MIN_HEIGHT;
    let ring_height = if full {
        ring::wanted_height(app).clamp(RING_MIN_HEIGHT, body.height - MIDDLE_HEIGHT - BOTTOM_MIN_HEIGHT)
    } else {
        body.height.saturating_sub(MIDDLE_HEIGHT)
    };
    let [ring_area, middle, bottom] =
        Layout::vertical([Constraint::Length(ring_height), Constraint::Length(MIDDLE_HEIGHT), Constraint::Min(0)])
            .areas(body);
    let halves = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]);
    let [replication_area, gateway_area] = halves.areas(middle);
    render_panel(app, Panel::Ring, frame, ring_area);
    render_panel(app, Panel::Replication, frame, replication_area);
    render_panel(app, Panel::Gateway, frame, gateway_area);
    if full {
        let [history_area, events_area] = halves.areas(bottom);
        render_panel(app, Panel::History, frame, history_area);
        render_panel(app, Panel::Events, frame, events_area);
    }
}

fn render_panel(app: &App, panel: Panel, frame: &mut Frame, area: Rect) {
    match panel {
        Panel::Ring => ring::render(app, frame, area),
        Panel::Replication => replication::render(app, frame, area),
        Panel::Gateway => gateway::render(app, frame, area),
        Panel::History => history::render(app, frame, area),
        Panel::Events => events::render(app, frame, area),
    }
}

/// The bordered block of `panel`, highlighted when focused, titled `title`.
fn panel_block<'a>(app: &App, panel: Panel, title: Line<'a>) -> Block<'a> {
    let focused = app.focus == panel;
    let border = if focused { Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD) } else { Style::new() };
    Block::bordered()
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .border_style(border)
        .title(title)
}

/// The colour of a health state.
fn health_style(health: &Health) -> Style {
    match health {
        Health::Up => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        Health::Down(_) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Health::Unknown => Style::new().fg(Color::Yellow),
    }
}

/// `UP` / `DOWN` / `?` in its colour.
fn health_span(health: &Health) -> Span<'static> {
    Span::styled(health.label(), health_style(health))
}

/// Style of labels in key/value lines.
fn label_style() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    // Most important first, so a narrow terminal cuts only the least useful part.
    let mut spans =
        vec![Span::styled(" ydht top ", Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD))];
    if app.paused {
        spans.push(Span::styled(" PAUSED ", Style::new().fg(Color::Black).bg(Color::Yellow)));
    }
    if !app.nodes.is_empty() {
        let up = app.nodes_up();
        let style = if up == app.nodes.len() { Style::new().fg(Color::Green) } else { Style::new().fg(Color::Red) };
        spans.push(Span::styled(format!(" {up}/{} nodes UP", app.nodes.len()), style));
        spans.push(Span::raw(" ·"));
    }
    spans.push(Span::raw(format!(" {} · every {}", app.gateway_url, crate::duration::format(app.interval))));
    match app.last_poll_ms {
        Some(at) => spans.push(Span::raw(format!(" · {}", format::clock(at)))),
        None => spans.push(Span::styled(" · connecting…", Style::new().fg(Color::Yellow))),
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_footer(frame: &mut Frame, area: Rect) {
    let key = |text: &'static str| Span::styled(text, Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD));
    let line = Line::from(vec![
        key(" q"),
        Span::raw(" quit  "),
        key("Tab/←→"),
        Span::raw(" focus  "),
        key("z"),
        Span::raw(" zoom  "),
        key("p"),
        Span::raw(" pause  "),
        key("?"),
        Span::raw(" help"),
    ]);
    frame.render_widget(Paragraph::new(line).style(label_style()), area);
}

fn render_too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::styled("terminal too small", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
        Line::raw(format!("{}×{}; ydht top needs {MIN_WIDTH}×{MIN_HEIGHT}", area.width, area.height)),
        Line::raw("q quits"),
    ];
    let top = area.height.saturating_sub(3) / 2;
    let [_, middle] = Layout::vertical([Constraint::Length(top), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(text).alignment(Alignment::Center).wrap(Wrap { trim: true }), middle);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::poller::ProbeError;
    use crate::tui::update::Event;
    use crate::tui::update::tests::{healthy_snapshot, node_down_snapshot};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Duration;

    /// Draws `app` on a `width`×`height` test terminal and returns the screen as lines.
    fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| render(app, frame)).unwrap();
        let buffer = terminal.backend().buffer();
        let lines: Vec<String> = (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_string())
            .collect();
        // Shown with `--nocapture`, to look at the frames.
        println!("{}", lines.join("\n"));
        lines
    }

    fn line_with<'a>(screen: &'a [String], needle: &str) -> &'a str {
        screen.iter().find(|line| line.contains(needle)).unwrap_or_else(|| {
            panic!("no line contains {needle:?}; screen:\n{}", screen.join("\n"));
        })
    }

    fn polled(snapshots: Vec<crate::tui::poller::Snapshot>) -> App {
        let mut app = App::new("http://127.0.0.1:8080", Duration::from_secs(1));
        for snapshot in snapshots {
            app.update(Event::Polled(Box::new(snapshot)));
        }
        app
    }

    #[test]
    fn a_healthy_cluster_at_80_by_24() {
        let app = polled(vec![healthy_snapshot(10_000, 100, 0, 4), healthy_snapshot(11_000, 150, 0, 4)]);
        let screen = screen(&app, 80, 24);
        let text = screen.join("\n");
        assert!(text.contains("3/3 nodes UP"), "{text}");
        for node in ["node-1", "node-2", "node-3"] {
            let line = line_with(&screen, node);
            assert!(line.contains("UP"), "{line}");
        }
        let node_2 = line_with(&screen, "node-2");
        assert!(
            node_2.contains("33.0%")
                && node_2.contains("2,000")
                && node_2.contains("2.0MiB")
                && node_2.contains(" 4.0MiB fs 20%"),
            "{node_2}"
        );
        assert!(line_with(&screen, "NODE").contains("WAL"));
        assert!(line_with(&screen, "Ring").contains("synced ≤3s ago, 6 repaired"), "worst age, total repairs");
        assert!(line_with(&screen, "queue").contains("4 jobs"));
        assert!(line_with(&screen, "lag").contains("42.0 ms"));
        assert!(line_with(&screen, "rps").contains("50.0"));
        assert!(line_with(&screen, "latency").contains("p50 1.25 p95 4.50 p99 12.0 ms"));
        assert!(line_with(&screen, "tenants").contains("42 25.0/s"));
        for title in ["Ring", "Replication", "Gateway", "History", "Events"] {
            assert!(text.contains(title), "{title} missing:\n{text}");
        }
        assert!(!text.contains("DOWN"), "{text}");
    }

    #[test]
    fn a_full_replication_queue_is_marked_in_its_panel() {
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 10_000);
        let replicator = snapshot.replicator.as_mut().unwrap();
        replicator.metrics.as_mut().unwrap().as_mut().unwrap()["queue_capacity"] = serde_json::json!(10_000);
        let full = screen(&polled(vec![snapshot]), 100, 24);
        assert!(line_with(&full, "queue").contains("10,000 jobs FULL (max 10,000)"), "{}", full.join("\n"));
        let mut roomy = healthy_snapshot(10_000, 0, 0, 4);
        let replicator = roomy.replicator.as_mut().unwrap();
        replicator.metrics.as_mut().unwrap().as_mut().unwrap()["queue_capacity"] = serde_json::json!(10_000);
        let roomy = screen(&polled(vec![roomy]), 100, 24);
        assert!(!line_with(&roomy, "queue").contains("FULL"), "{}", roomy.join("\n"));
    }

    #[test]
    fn a_membership_change_shows_its_progress_in_the_ring_title() {
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        if let Ok(cluster) = &mut snapshot.cluster {
            cluster["rebalance"] = serde_json::json!({
                "version": 5, "settled": false, "arcs_done": 30, "arcs_total": 60, "nodes_done": 1, "nodes": 4
            });
        }
        let screen = screen(&polled(vec![snapshot]), 100, 24);
        assert!(line_with(&screen, "Ring").contains("rebalancing [====    ] 50%"), "{}", screen.join("\n"));
        let settled = screen_of_healthy_cluster();
        assert!(!settled.join("\n").contains("rebalancing"));
    }

    fn screen_of_healthy_cluster() -> Vec<String> {
        screen(&polled(vec![healthy_snapshot(10_000, 0, 0, 0)]), 100, 24)
    }

    #[test]
    fn a_wide_terminal_shows_each_nodes_anti_entropy() {
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        let metrics = snapshot.nodes[2].metrics.as_mut().unwrap();
        metrics["anti_entropy_last_sync_age_secs"] = serde_json::Value::Null;
        let app = polled(vec![snapshot]);
        let screen = screen(&app, 120, 30);
        assert!(line_with(&screen, "NODE").contains("ANTI-ENTROPY"));
        assert!(line_with(&screen, "node-2").contains("20 rounds 2 fixed 2s ago"));
        assert!(line_with(&screen, "node-3").contains("30 rounds 3 fixed never"));
        assert!(line_with(&screen, "Ring").contains("not all synced yet, 6 repaired"));
    }

    #[test]
    fn a_down_node_shows_down_with_its_error() {
        let app = polled(vec![healthy_snapshot(10_000, 0, 0, 0), node_down_snapshot(11_000, 0)]);
        let screen = screen(&app, 80, 24);
        let node_2 = line_with(&screen, "node-2");
        assert!(node_2.contains("DOWN"), "{node_2}");
        assert!(line_with(&screen, "node-1").contains("UP"));
        let text = screen.join("\n");
        assert!(text.contains("└ Connection refused"), "the error is shown under the node:\n{text}");
        assert!(text.contains("2/3 nodes UP"), "{text}");
        assert!(line_with(&screen, "node-2 went DOWN").contains("Connection"), "logged in Events");
    }

    #[test]
    fn an_unreachable_gateway_shows_down_without_data() {
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        snapshot.cluster = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.gateway_metrics = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.gateway_health = Err(ProbeError::Unreachable("Connection refused".into()));
        snapshot.nodes.clear();
        snapshot.replicator = None;
        snapshot.users = None;
        let app = polled(vec![snapshot]);
        let screen = screen(&app, 80, 24);
        let text = screen.join("\n");
        assert!(text.contains("gateway DOWN"), "{text}");
        assert!(text.contains("└ gateway: Connection refused"), "{text}");
        assert!(text.contains("gateway unreachable"), "{text}");
    }

    #[test]
    fn a_tiny_terminal_gets_a_notice_and_no_panic() {
        let app = polled(vec![healthy_snapshot(10_000, 0, 0, 0)]);
        let text = screen(&app, 40, 10).join("\n");
        assert!(text.contains("terminal too small"), "{text}");
        assert!(text.contains("40×10"), "{text}");
        assert!(!text.contains("node-1"));
        for (width, height) in [(1, 1), (0, 0), (59, 30), (200, 15), (60, 16), (300, 80)] {
            screen(&app, width, height);
        }
    }

    #[test]
    fn many_nodes_collapse_into_a_more_line_and_zoom_shows_them() {
        let mut snapshot = healthy_snapshot(10_000, 0, 0, 0);
        for n in 4..=9 {
            let mut probe = snapshot.nodes[0].clone();
            probe.id = format!("node-{n}");
            snapshot.nodes.push(probe);
        }
        let mut app = polled(vec![snapshot]);
        let text = screen(&app, 80, 24).join("\n");
        assert!(text.contains("more nodes — z zooms"), "{text}");
        assert!(text.contains("Events"), "the other panels keep their room:\n{text}");
        app.zoomed = true;
        let text = screen(&app, 80, 24).join("\n");
        assert!(text.contains("node-9") && !text.contains("more node"), "{text}");
    }

    #[test]
    fn a_short_terminal_drops_history_and_events_but_keeps_the_ring() {
        let app = polled(vec![healthy_snapshot(10_000, 0, 0, 0)]);
        let text = screen(&app, 60, 16).join("\n");
        assert!(text.contains("node-3") && text.contains("Gateway"), "{text}");
        assert!(!text.contains("History"), "{text}");
    }

    #[test]
    fn help_zoom_and_pause_are_visible() {
        let mut app = polled(vec![healthy_snapshot(10_000, 0, 0, 0)]);
        app.paused = true;
        app.show_help = true;
        let text = screen(&app, 80, 24).join("\n");
        assert!(text.contains("PAUSED"), "{text}");
        assert!(text.contains("focus the next panel"), "{text}");
        app.show_help = false;
        app.zoomed = true;
        app.focus = Panel::History;
        let text = screen(&app, 80, 24).join("\n");
        assert!(text.contains("History") && !text.contains("Replication"), "{text}");
    }
}
