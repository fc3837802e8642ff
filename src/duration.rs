//! The duration syntax of TTLs and flags: one or more `<integer><unit>` parts,
//! units `ms`, `s`, `m`, `h`, `d` — `30s`, `30m`, `1h`, `24h`, `1h30m`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty input.
    #[error("duration is empty; use a number with a unit, e.g. 30s, 5m, 1h30m")]
    Empty,
    /// Not of the form `<number><unit>…`.
    #[error("invalid duration {0:?}; use a number with a unit, e.g. 30s, 5m, 1h30m")]
    Malformed(String),
    /// Zero length.
    #[error("duration {0:?} is zero; it must be positive")]
    Zero(String),
    /// Larger than ydht accepts (100 years).
    #[error("duration {0:?} is too long; the maximum is 100 years")]
    TooLong(String),
}

const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a positive duration such as `1h30m`. Zero, negative, fractional,
/// unit-less or absurdly long values are errors, never silently ignored.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let input = text.trim();
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let mut total: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(malformed());
        }
        let number: u128 = rest[..digits].parse().map_err(|_| malformed())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let millis_per_unit: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        rest = &rest[unit_len..];
        total += number * millis_per_unit;
        if total > MAX.as_millis() {
            return Err(DurationError::TooLong(text.to_string()));
        }
    }
    if total == 0 {
        return Err(DurationError::Zero(text.to_string()));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Parses a flag that takes a duration, or `0` / `off` for "disabled"
/// (returned as zero).
pub fn parse_or_off(text: &str) -> Result<Duration, DurationError> {
    match text.trim() {
        "0" | "off" => Ok(Duration::ZERO),
        other => parse(other),
    }
}

/// Formats a duration compactly in the same syntax (`1h30m`, `45s`, `250ms`).
pub fn format(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn refuses_malformed_zero_negative_and_huge() {
        for bad in ["", " ", "1", "h", "-1h", "1.5h", "1x", "1h-", "abc", "1 h", "0s", "0h0m"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(matches!(parse("0s"), Err(DurationError::Zero(_))));
        assert!(matches!(parse("999999999999d"), Err(DurationError::TooLong(_))));
        assert!(matches!(parse("99999999999999999999s"), Err(DurationError::Malformed(_))));
    }

    #[test]
    fn format_round_trips() {
        for text in ["1h30m", "45s", "250ms", "2d", "1d1h1m1s1ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
