//! Human-readable quantities shared by the CLI tables, `ydht top` and the web pages.

/// Bytes for people, in binary units: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A count with thousands separators: `2,088`, `142,700` (the CLI tables, `ydht top`, bench).
pub fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration in milliseconds for people, one format everywhere (`ydht status`, `ydht top`):
/// `0.42 ms`, `3.5 ms`, `120 ms`, `4.2 s`, `75 s`.
pub fn millis(value: f64) -> String {
    if value >= 100_000.0 {
        format!("{:.0} s", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1} s", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 1.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

/// `n` and the noun, singular for exactly one: `1 round`, `2 rounds`, `0 keys`
/// (`plural` is the noun's plural form).
pub fn count_of(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", group_thousands(n), if n == 1 { singular } else { plural })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_durations_and_plurals_are_human() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(2088), "2,088");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(millis(0.423), "0.42 ms");
        assert_eq!(millis(12.0), "12.0 ms");
        assert_eq!(millis(850.0), "850 ms");
        assert_eq!(millis(3770.0), "3.8 s");
        assert_eq!(millis(4200.0), "4.2 s");
        assert_eq!(millis(250_000.0), "250 s");
        assert_eq!(count_of(1, "round", "rounds"), "1 round");
        assert_eq!(count_of(2088, "key", "keys"), "2,088 keys");
        assert_eq!(count_of(0, "replica", "replicas"), "0 replicas");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }
}
