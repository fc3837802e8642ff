//! Compact text forms of the numbers the panels show.

use chrono::TimeZone;

/// Placeholder for an unknown value.
pub const UNKNOWN: &str = "–";

/// `1.5MiB`, `512B`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if value < 1024 {
        return format!("{value}B");
    }
    let mut size = value as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if size >= 100.0 { format!("{size:.0}{}", UNITS[unit]) } else { format!("{size:.1}{}", UNITS[unit]) }
}

/// `12,345` (the same as `ydht status`, [`crate::units::group_thousands`]).
pub use crate::units::group_thousands as count;

/// `0.42 ms`, `3.5 ms`, `120 ms`, `2.5 s` (the same as `ydht status`, [`crate::units::millis`]).
pub use crate::units::millis;

/// A number of milliseconds in at most four characters where possible, no unit: `0.42`, `3.50`, `12.0`, `120`.
pub fn millis_number(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// `12.3` per second (no unit).
pub fn rate(value: f64) -> String {
    if value >= 1000.0 { format!("{value:.0}") } else { format!("{value:.1}") }
}

/// A duration in its two largest units: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn age(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// Local wall-clock time `HH:MM:SS` of a Unix-ms instant.
pub fn clock(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
        .map_or_else(|| UNKNOWN.to_string(), |time| time.format("%H:%M:%S").to_string())
}

/// A bar of `width` cells filled to `fraction` (0..=1), with eighth-cell resolution.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let mut out: String = "█".repeat(eighths / 8);
    if eighths / 8 < width && eighths % 8 > 0 {
        out.push(PARTIAL[eighths % 8]);
    }
    while out.chars().count() < width {
        out.push('·');
    }
    out
}

/// `text` cut to `width` characters (with `…` when cut) and padded to it.
pub fn fit(text: &str, width: usize) -> String {
    let length = text.chars().count();
    if length > width {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        if width > 0 {
            cut.push('…');
        }
        cut
    } else {
        format!("{text}{}", " ".repeat(width - length))
    }
}

/// An optional value formatted with `f`, or [`UNKNOWN`].
pub fn or_unknown<T>(value: Option<T>, f: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| UNKNOWN.to_string(), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_compact() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1_048_576), "1.0MiB");
        assert_eq!(bytes(10_737_418_240), "10.0GiB");
        assert_eq!(bytes(300 * 1024), "300KiB");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(millis(0.5), "0.50 ms");
        assert_eq!(millis(12.0), "12.0 ms");
        assert_eq!(millis(25_000.0), "25.0 s");
        assert_eq!(millis_number(0.423), "0.42");
        assert_eq!(millis_number(12.0), "12.0");
        assert_eq!(millis_number(1234.4), "1234");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(90_061_000), "1d1h");
    }

    #[test]
    fn bars_and_fitting_keep_their_width() {
        assert_eq!(bar(0.5, 4), "██··");
        assert_eq!(bar(0.0625, 4), "▎···");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.0, 3), "···");
        for fraction in [0.0, 0.13, 0.333, 0.5, 0.99, 1.0, 7.0, -1.0] {
            assert_eq!(bar(fraction, 10).chars().count(), 10, "{fraction}");
        }
        assert_eq!(fit("node-1", 8), "node-1  ");
        assert_eq!(fit("a-very-long-node-name", 8), "a-very-…");
    }
}
