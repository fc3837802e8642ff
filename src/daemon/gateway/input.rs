//! Checks on what clients send to `/v1`: keys, the consistency level, TTLs, content types.
//! Each returns a 400-ready message naming the problem and the fix.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::proto::CONSISTENCY_HEADER;

/// Longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// How many copies must acknowledge a write, and how many are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// One durable copy before answering; the replicator copies the rest.
    Eventual,
    /// A majority of the N copies before answering; reads consult a majority.
    Strong,
}

impl Consistency {
    /// Parses `X-Consistency` (absent → eventual); anything but `eventual`/`strong` is a 400.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(CONSISTENCY_HEADER) else {
            return Ok(Self::Eventual);
        };
        let text = value.to_str().unwrap_or("").trim();
        if text.eq_ignore_ascii_case("eventual") {
            Ok(Self::Eventual)
        } else if text.eq_ignore_ascii_case("strong") {
            Ok(Self::Strong)
        } else {
            Err(ApiError::bad_request(format!(
                "invalid X-Consistency {:?}; use eventual or strong",
                String::from_utf8_lossy(value.as_bytes())
            )))
        }
    }
}

/// Checks a client key: 1–1024 bytes of UTF-8 without control characters, not `.` or `..`
/// (which no URL can carry, [`crate::urlpath`]; `%2E%2E` arrives here decoded as `..`).
pub fn validate_key(key: &str) -> Result<(), ApiError> {
    match crate::proto::check_key(key, MAX_KEY_BYTES) {
        Err(crate::proto::KeyError::Empty) => {
            return Err(ApiError::bad_request("key is empty; name it in the path: /v1/kv/{key}"));
        }
        Err(error) => return Err(ApiError::bad_request(error.to_string())),
        Ok(()) => {}
    }
    if crate::urlpath::is_dot_segment(key) {
        return Err(ApiError::bad_request(crate::urlpath::DOT_KEY_PROBLEM));
    }
    Ok(())
}

/// Parses the `ttl` query parameter (`30s`, `1h30m`, …); malformed or zero is a 400.
pub fn parse_ttl(ttl: Option<&str>) -> Result<Option<Duration>, ApiError> {
    match ttl {
        None => Ok(None),
        Some(text) => crate::duration::parse(text)
            .map(Some)
            .map_err(|error| ApiError::bad_request(format!("invalid ttl: {error}"))),
    }
}

pub use crate::extract::content_type;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{DEFAULT_CONTENT_TYPE, MAX_CONTENT_TYPE_BYTES};
    use axum::http::{HeaderValue, header};

    #[test]
    fn keys_are_checked_for_length_and_control_characters() {
        assert!(validate_key("user:123").is_ok());
        assert!(validate_key("a/b/c d é").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        for bad in ["", "tab\there", "new\nline", "nul\0", "del\u{7f}"] {
            assert_eq!(validate_key(bad).unwrap_err().status, 400, "{bad:?}");
        }
        let long = validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(long.message.contains("1025 bytes"), "{}", long.message);
        // 1024 bytes of multi-byte characters is fine; one more byte is not.
        assert!(validate_key(&"é".repeat(MAX_KEY_BYTES / 2)).is_ok());
        assert!(validate_key(&format!("{}x", "é".repeat(MAX_KEY_BYTES / 2))).is_err());
    }

    #[test]
    fn dot_keys_are_refused_and_dots_between_slashes_are_fine() {
        for dots in [".", ".."] {
            let error = validate_key(dots).unwrap_err();
            assert_eq!(error.status, 400, "{dots:?}");
            assert!(error.message.contains("not allowed"), "{}", error.message);
        }
        for fine in ["...", "a/../b", "./x", "x/.", ".hidden"] {
            assert!(validate_key(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn consistency_defaults_to_eventual_and_refuses_unknown_levels() {
        let mut headers = HeaderMap::new();
        assert_eq!(Consistency::from_headers(&headers).unwrap(), Consistency::Eventual);
        headers.insert(CONSISTENCY_HEADER, HeaderValue::from_static("strong"));
        assert_eq!(Consistency::from_headers(&headers).unwrap(), Consistency::Strong);
        headers.insert(CONSISTENCY_HEADER, HeaderValue::from_static("Eventual"));
        assert_eq!(Consistency::from_headers(&headers).unwrap(), Consistency::Eventual);
        for bad in ["quorum", "", "strongest"] {
            headers.insert(CONSISTENCY_HEADER, HeaderValue::from_str(bad).unwrap());
            let error = Consistency::from_headers(&headers).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(error.message.contains("eventual or strong"));
        }
    }

    #[test]
    fn content_types_are_bounded_by_the_nodes_limit() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_type(&headers).unwrap(), DEFAULT_CONTENT_TYPE);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(""));
        assert_eq!(content_type(&headers).unwrap(), DEFAULT_CONTENT_TYPE);
        let longest = format!("text/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES - 5));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&longest).unwrap());
        assert_eq!(content_type(&headers).unwrap(), longest);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&format!("{longest}x")).unwrap());
        let error = content_type(&headers).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.message.contains("256 bytes"), "{}", error.message);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_bytes(b"text/\xff").unwrap());
        assert_eq!(content_type(&headers).unwrap_err().status, 400);
    }

    #[test]
    fn ttl_must_be_a_positive_duration() {
        assert_eq!(parse_ttl(None).unwrap(), None);
        assert_eq!(parse_ttl(Some("1h30m")).unwrap(), Some(Duration::from_secs(5400)));
        for bad in ["", "0s", "-1h", "soon", "1.5h", "10"] {
            assert_eq!(parse_ttl(Some(bad)).unwrap_err().status, 400, "{bad:?}");
        }
    }
}
