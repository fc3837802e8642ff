//! Keys in URL paths: the one way every client (CLI, key browser, bench) puts
//! a key into a URL. A key is one percent-encoded path segment, so `/`, `%`,
//! `?` and spaces travel intact (`a/../b` is sent as `a%2F..%2Fb`).
//!
//! The keys `.` and `..` cannot travel in a URL path at all: they are dot
//! segments, which every URL parser removes before sending — also when they are
//! percent-encoded, since `%2E` is a dot to the WHATWG URL standard (browsers,
//! reqwest) and to RFC 3986 normalisation (proxies). `GET /v1/kv/..` would read
//! `GET /v1/kv` (the key listing). So these two keys are refused everywhere, as
//! Google Cloud Storage refuses the object names `.` and `..`; every other key,
//! including ones with `.`/`..` between slashes, is fine.

use reqwest::Url;

/// Why a path could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlPathError {
    /// The key is `.` or `..`.
    #[error("{DOT_KEY_PROBLEM}")]
    DotSegment,
    /// The base URL has no path to append to (`mailto:`, `data:`).
    #[error("{0} cannot be a base URL")]
    NotABase(String),
}

/// The one-line explanation shared by the gateway's 400 and the clients' errors.
pub const DOT_KEY_PROBLEM: &str =
    "the keys \".\" and \"..\" are not allowed: URLs treat them as path steps; choose another name";

/// Whether `segment` is `.` or `..`, which no URL path can carry.
pub fn is_dot_segment(segment: &str) -> bool {
    matches!(segment, "." | "..")
}

/// Appends `segments` to `url`'s path, each as one percent-encoded segment; a
/// trailing empty segment of the base (`http://host/`) is dropped first.
/// Refuses a segment that is `.` or `..` instead of letting it vanish.
pub fn push_segments(url: &mut Url, segments: &[&str]) -> Result<(), UrlPathError> {
    if segments.iter().any(|segment| is_dot_segment(segment)) {
        return Err(UrlPathError::DotSegment);
    }
    let base = url.to_string();
    url.path_segments_mut().map_err(|()| UrlPathError::NotABase(base))?.pop_if_empty().extend(segments);
    Ok(())
}

/// `base` with `segments` appended (see [`push_segments`]).
pub fn join(base: &Url, segments: &[&str]) -> Result<Url, UrlPathError> {
    let mut url = base.clone();
    push_segments(&mut url, segments)?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:8080/").unwrap()
    }

    #[test]
    fn keys_are_one_segment_whatever_they_contain() {
        for (key, path) in [
            ("a/b c?d", "/v1/kv/a%2Fb%20c%3Fd"),
            ("a/../b", "/v1/kv/a%2F..%2Fb"),
            ("./x", "/v1/kv/.%2Fx"),
            ("x/..", "/v1/kv/x%2F.."),
            ("...", "/v1/kv/..."),
            ("100%", "/v1/kv/100%25"),
        ] {
            let url = join(&base(), &["v1", "kv", key]).unwrap();
            assert_eq!(url.path(), path, "{key:?}");
            // The URL survives being parsed again (as reqwest and proxies do).
            assert_eq!(Url::parse(url.as_str()).unwrap().path(), path, "{key:?}");
        }
    }

    #[test]
    fn dot_keys_are_refused_not_dropped() {
        for key in [".", ".."] {
            assert_eq!(join(&base(), &["v1", "kv", key]), Err(UrlPathError::DotSegment), "{key:?}");
        }
        // Why: percent-encoding does not help, URL parsers treat %2E as a dot.
        assert_eq!(Url::parse("http://h/v1/kv/%2E%2E").unwrap().path(), "/v1/");
    }

    #[test]
    fn a_base_path_is_kept() {
        let prefixed = Url::parse("https://example.com/ydht/").unwrap();
        assert_eq!(join(&prefixed, &["health"]).unwrap().as_str(), "https://example.com/ydht/health");
        let opaque = Url::parse("mailto:x@y").unwrap();
        assert!(matches!(join(&opaque, &["a"]), Err(UrlPathError::NotABase(_))));
    }
}
