//! The Ring panel: one line per member with health, share, keys, WAL, disk and
//! (on wide terminals) anti-entropy progress; the title sums anti-entropy up
//! for the whole ring (oldest last sync, keys repaired).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::format::{self, UNKNOWN, fit, or_unknown};
use super::{health_span, panel_block};
use crate::tui::state::{App, Health, NodeView, Panel};

const NODE: usize = 10;
const STATE: usize = 5;
const SINCE: usize = 7;
const SHARE_TEXT: usize = 6;
const KEYS: usize = 9;
const WAL: usize = 9;
const DISK_MIN: usize = 8;
/// `120 rounds 3 fixed 4m12s ago`.
const SYNC: usize = 28;
/// File-system fill shown in red.
const DISK_ALARM: f64 = 0.9;

/// Rows the panel would like: borders, the column header, one per node and one per error.
pub fn wanted_height(app: &App) -> u16 {
    let errors = app.nodes.iter().filter(|node| node.health.error().is_some()).count();
    let notice = usize::from(app.nodes.is_empty() || cluster_notice(app).is_some());
    (3 + app.nodes.len() + errors + notice) as u16
}

/// Widths that depend on the panel's width: the share bar, the disk column if it
/// fits, and the anti-entropy column if it fits too.
struct Columns {
    bar: usize,
    disk: Option<usize>,
    sync: Option<usize>,
}

impl Columns {
    fn for_width(inner: usize) -> Self {
        let fixed = NODE + STATE + SINCE + SHARE_TEXT + KEYS + WAL + 6;
        let bar = inner.saturating_sub(fixed + 1 + DISK_MIN + 1).clamp(3, 10);
        let rest = inner.saturating_sub(fixed + 1 + bar);
        let sync = (rest > DISK_MIN + 1 + SYNC + 1).then_some(SYNC);
        let rest = rest - sync.map_or(0, |width| width + 1);
        Self { bar, disk: (rest > DISK_MIN).then(|| rest - 1), sync }
    }
}

/// The ring's anti-entropy in a few words: the oldest last full sync and the keys repaired, over
/// the nodes that run it (`None` when none reports it).
fn sync_summary(app: &App) -> Option<String> {
    let running: Vec<_> = app.nodes.iter().filter_map(|node| node.anti_entropy).filter(|sync| sync.enabled).collect();
    if running.is_empty() {
        return app.nodes.iter().any(|node| node.anti_entropy.is_some()).then(|| "anti-entropy off".to_string());
    }
    let repaired: u64 = running.iter().map(|sync| sync.keys_repaired).sum();
    let oldest = running.iter().map(|sync| sync.last_sync_age_secs).try_fold(0, |oldest, age| Some(oldest.max(age?)));
    let synced = match oldest {
        Some(age) => format!("synced ≤{} ago", format::age(age * 1000)),
        None => "not all synced yet".to_string(),
    };
    Some(format!("{synced}, {} repaired", format::count(repaired)))
}

/// One node's anti-entropy cell.
fn sync_cell(node: &NodeView) -> String {
    match node.anti_entropy {
        None => UNKNOWN.to_string(),
        Some(sync) if !sync.enabled => "off".to_string(),
        Some(sync) => {
            let age =
                sync.last_sync_age_secs.map_or_else(|| "never".to_string(), |age| format::age(age * 1000) + " ago");
            format!(
                "{} {} fixed {age}",
                crate::units::count_of(sync.rounds, "round", "rounds"),
                format::count(sync.keys_repaired)
            )
        }
    }
}

fn cluster_notice(app: &App) -> Option<String> {
    match (&app.gateway.cluster_error, &app.gateway.health) {
        (Some(error), Health::Up) => Some(format!("cannot read the gateway's /cluster: {error}")),
        (Some(_), _) if app.nodes.is_empty() => Some("gateway unreachable; ring members unknown".to_string()),
        _ => None,
    }
}

/// Draws the panel.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let mut title = vec![Span::raw(" Ring ")];
    if !app.nodes.is_empty() {
        title.push(Span::raw(format!("· {}/{} UP ", app.nodes_up(), app.nodes.len())));
    }
    if let Some(replicas) = app.gateway.replicas {
        title.push(Span::raw(format!("· N={replicas} ")));
    }
    if let Some(vnodes) = app.gateway.vnodes {
        title.push(Span::raw(format!("· {vnodes} vnodes/node ")));
    }
    if let Some(summary) = sync_summary(app) {
        title.push(Span::raw(format!("· {summary} ")));
    }
    if let Some(rebalance) = app.gateway.rebalance.filter(|rebalance| !rebalance.settled) {
        let percent = (rebalance.arcs_done * 100).checked_div(rebalance.arcs_total).unwrap_or(0);
        let bar = crate::client::membership::progress_bar(rebalance.arcs_done, rebalance.arcs_total, 8);
        title.push(Span::styled(format!("· rebalancing {bar} {percent}% "), Style::new().fg(Color::Yellow)));
    }
    let block = panel_block(app, Panel::Ring, Line::from(title));
    let columns = Columns::for_width(block.inner(area).width as usize);

    let mut lines = Vec::new();
    if let Some(notice) = cluster_notice(app) {
        lines.push(Line::styled(notice, Style::new().fg(Color::Red)));
    } else if app.nodes.is_empty() {
        lines.push(Line::styled("waiting for the gateway's /cluster…", Style::new().fg(Color::Yellow)));
    }
    let mut header = format!(
        "{} {} {} {} {:>KEYS$} {:>WAL$}",
        fit("NODE", NODE),
        fit("STATE", STATE),
        fit("SINCE", SINCE),
        fit("SHARE", columns.bar + 1 + SHARE_TEXT),
        "KEYS",
        "WAL"
    );
    if let Some(width) = columns.sync {
        header.push(' ');
        header.push_str(&fit("ANTI-ENTROPY", width));
    }
    if columns.disk.is_some() {
        header.push_str(" DATA, FS USED");
    }
    if !app.nodes.is_empty() {
        lines.push(Line::styled(header, Style::new().fg(Color::DarkGray).add_modifier(Modifier::BOLD)));
    }
    let room = block.inner(area).height as usize;
    for (index, node) in app.nodes.iter().enumerate() {
        let error = node.health.error();
        let needed = 1 + usize::from(error.is_some());
        let after = app.nodes.len() - index - 1;
        if lines.len() + needed + usize::from(after > 0) > room {
            let hidden = app.nodes.len() - index;
            let more = format!("… {hidden} more node{} — z zooms", if hidden == 1 { "" } else { "s" });
            lines.push(Line::styled(more, Style::new().fg(Color::Yellow)));
            break;
        }
        lines.push(node_line(app, node, &columns));
        if let Some(error) = error {
            lines.push(Line::styled(format!("  └ {error}"), Style::new().fg(Color::Red)));
        }
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn node_line<'a>(app: &App, node: &NodeView, columns: &Columns) -> Line<'a> {
    let up = node.health.is_up();
    let value_style = if up { Style::new() } else { Style::new().fg(Color::DarkGray) };
    let since =
        node.since_ms.map_or_else(|| UNKNOWN.to_string(), |since| format::age(app.now_ms.saturating_sub(since)));
    let share = or_unknown(node.share, |share| format!("{:>5.1}%", share * 100.0));
    let bar = format::bar(node.share.unwrap_or(0.0), columns.bar);
    let mut spans = vec![
        Span::styled(fit(&node.id, NODE), Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" "),
        Span::styled(fit(node.health.label(), STATE), health_span(&node.health).style),
        Span::raw(" "),
        Span::raw(fit(&since, SINCE)),
        Span::raw(" "),
        Span::styled(bar, Style::new().fg(Color::Cyan)),
        Span::raw(" "),
        Span::raw(fit(&share, SHARE_TEXT)),
        Span::raw(" "),
        Span::styled(format!("{:>KEYS$}", fit_right(&or_unknown(node.key_count, format::count), KEYS)), value_style),
        Span::raw(" "),
        Span::styled(format!("{:>WAL$}", fit_right(&or_unknown(node.wal_size, format::bytes), WAL)), value_style),
    ];
    if let Some(width) = columns.sync {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(fit(&sync_cell(node), width), value_style));
    }
    if let Some(width) = columns.disk {
        let data = or_unknown(node.data_bytes, format::bytes);
        let fill = node.disk_fill();
        let disk = format!("{data} fs {}", or_unknown(fill, |fill| format!("{:.0}%", fill * 100.0)));
        let disk_style = match fill {
            Some(fill) if fill >= DISK_ALARM => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => value_style,
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(fit(&disk, width), disk_style));
    }
    Line::from(spans)
}

/// `text` cut to `width` characters (right-aligned columns keep their start).
fn fit_right(text: &str, width: usize) -> String {
    if text.chars().count() > width { fit(text, width) } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_every_width() {
        for inner in [55usize, 58, 78, 120, 300] {
            let columns = Columns::for_width(inner);
            let fixed = NODE + STATE + SINCE + SHARE_TEXT + KEYS + WAL + 6;
            let used =
                fixed + columns.bar + columns.disk.map_or(0, |disk| disk + 1) + columns.sync.map_or(0, |sync| sync + 1);
            assert!(used <= inner, "{inner}: {used}");
        }
        assert!(Columns::for_width(78).disk.is_some(), "80 columns show disk usage");
        assert!(Columns::for_width(78).sync.is_none(), "80 columns leave anti-entropy to the title");
        assert!(Columns::for_width(118).sync.is_some() && Columns::for_width(118).disk.is_some());
        assert!(Columns::for_width(58).disk.is_none());
    }
}
