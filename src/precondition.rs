//! HTTP preconditions on keys: `ETag`, `If-Match` and `If-None-Match`
//! (RFC 9110 §13) over record versions.
//!
//! A key's entity tag is its record's version in decimal, quoted: `"1733390000000065536"`.
//! Tags are strong (a version names exactly one record), so `If-Match` uses the
//! strong comparison (a weak `W/"…"` tag never matches) and `If-None-Match` the
//! weak one (`W/"5"` matches version 5), as RFC 9110 prescribes.
//!
//! - On `PUT` / `DELETE`: `If-Match: "<v>"[, "<w>"…]` holds when the key is live
//!   (present, not deleted, not expired) at one of those versions; `If-Match: *`
//!   when it is live at all; `If-None-Match: *` (PUT only) when it is not. The
//!   two headers together, an `If-None-Match` other than `*` on a write, or a
//!   value that is neither `*` nor a list of quoted versions is a client error.
//! - On `GET`: `If-None-Match: "<v>"…` or `*` turns an unchanged answer into 304.

use thiserror::Error;

/// The `ETag` header value of a record at `version`.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Why a precondition header was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PreconditionError {
    /// A header's value is not `*` or a list of entity tags.
    #[error("{header} must be * or a quoted version such as \"1733390000000065536\" (as ETag sends it), not {value:?}")]
    Malformed {
        /// The header's name.
        header: &'static str,
        /// What it held (cut to 64 characters).
        value: String,
    },
    /// If-Match and If-None-Match on one request.
    #[error("send If-Match or If-None-Match, not both")]
    Both,
    /// `If-None-Match` with tags on a write (only `*` means "create only").
    #[error("on a write If-None-Match can only be * (create only if absent); use If-Match to update a version")]
    TagsOnWrite,
    /// `If-None-Match` on a DELETE (it could only delete a key that does not exist).
    #[error("If-None-Match does not apply to a DELETE; use If-Match: \"<version>\" or * to delete only what you saw")]
    NoneMatchOnDelete,
    /// A precondition on a request that takes none (a listing).
    #[error("{header} applies to one key, not to a listing")]
    NotApplicable {
        /// The header's name.
        header: &'static str,
    },
}

/// One entity tag of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    version: u64,
    weak: bool,
}

/// What `If-Match` or `If-None-Match` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    /// `*`: any current record.
    Any,
    /// A list of versions (weak tags kept apart: they never match `If-Match`).
    Versions(Vec<(u64, bool)>),
}

impl Tags {
    /// Parses a header value: `*` or a comma-separated list of `"<version>"` / `W/"<version>"`.
    pub fn parse(header: &'static str, value: &str) -> Result<Self, PreconditionError> {
        let malformed = || PreconditionError::Malformed { header, value: value.chars().take(64).collect() };
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let tags = value
            .split(',')
            .map(|item| {
                let item = item.trim();
                let (weak, quoted) = match item.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, item),
                };
                let digits = quoted.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).ok_or_else(malformed)?;
                if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(malformed());
                }
                let version = digits.parse::<u64>().map_err(|_| malformed())?;
                Ok(Tag { version, weak })
            })
            .collect::<Result<Vec<Tag>, _>>()?;
        Ok(Self::Versions(tags.into_iter().map(|tag| (tag.version, tag.weak)).collect()))
    }

    /// Strong comparison (If-Match): a live record at one of the strong tags.
    fn matches_strongly(&self, live: Option<u64>) -> bool {
        match (self, live) {
            (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::Versions(tags), Some(version)) => tags.iter().any(|&(tag, weak)| !weak && tag == version),
        }
    }

    /// Weak comparison (If-None-Match): a live record at one of the tags.
    fn matches_weakly(&self, live: Option<u64>) -> bool {
        match (self, live) {
            (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::Versions(tags), Some(version)) => tags.iter().any(|&(tag, _)| tag == version),
        }
    }
}

/// A write's precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `If-Match`: the key is live at one of these versions (`*`: at any).
    IfMatch(Tags),
    /// `If-None-Match: *`: the key is not live (absent, deleted or expired).
    IfAbsent,
}

impl Condition {
    /// The precondition of a `PUT` (`allow_absent`) or `DELETE` from its
    /// `If-Match` and `If-None-Match` values; `None` for an unconditional write.
    pub fn of_write(
        if_match: Option<&str>,
        if_none_match: Option<&str>,
        allow_absent: bool,
    ) -> Result<Option<Self>, PreconditionError> {
        match (if_match, if_none_match) {
            (Some(_), Some(_)) => Err(PreconditionError::Both),
            (Some(value), None) => Tags::parse("If-Match", value).map(|tags| Some(Self::IfMatch(tags))),
            (None, Some(value)) => match Tags::parse("If-None-Match", value)? {
                Tags::Any if allow_absent => Ok(Some(Self::IfAbsent)),
                Tags::Any => Err(PreconditionError::NoneMatchOnDelete),
                Tags::Versions(_) => Err(PreconditionError::TagsOnWrite),
            },
            (None, None) => Ok(None),
        }
    }

    /// Whether the precondition holds given the key's live version (`None`
    /// when the key is absent, deleted or expired).
    pub fn holds(&self, live: Option<u64>) -> bool {
        match self {
            Self::IfMatch(tags) => tags.matches_strongly(live),
            Self::IfAbsent => live.is_none(),
        }
    }
}

/// Whether a `GET` with `If-None-Match: value` is answered 304 for the key's
/// live version.
pub fn not_modified(if_none_match: &str, live: Option<u64>) -> Result<bool, PreconditionError> {
    Ok(Tags::parse("If-None-Match", if_none_match)?.matches_weakly(live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_parse_their_preconditions() {
        assert_eq!(Condition::of_write(None, None, true), Ok(None));
        assert_eq!(
            Condition::of_write(Some("\"5\""), None, true),
            Ok(Some(Condition::IfMatch(Tags::Versions(vec![(5, false)]))))
        );
        assert_eq!(Condition::of_write(Some("*"), None, false), Ok(Some(Condition::IfMatch(Tags::Any))));
        assert_eq!(Condition::of_write(None, Some("*"), true), Ok(Some(Condition::IfAbsent)));
        assert_eq!(Condition::of_write(None, Some("*"), false), Err(PreconditionError::NoneMatchOnDelete));
        assert_eq!(Condition::of_write(Some("*"), Some("*"), true), Err(PreconditionError::Both));
        assert_eq!(Condition::of_write(None, Some("\"5\""), true), Err(PreconditionError::TagsOnWrite));
        for bad in ["not-an-etag", "5", "\"\"", "\"-1\"", "\"5", "\"5\",", "\"18446744073709551616\"", "\"1 2\""] {
            let error = Condition::of_write(Some(bad), None, true).unwrap_err();
            assert!(matches!(error, PreconditionError::Malformed { header: "If-Match", .. }), "{bad}: {error:?}");
            assert!(error.to_string().contains("quoted version"), "{error}");
        }
    }

    #[test]
    fn conditions_hold_on_live_versions_only() {
        let exact = Condition::of_write(Some("\"7\", \"9\""), None, true).unwrap().unwrap();
        assert!(exact.holds(Some(9)));
        assert!(!exact.holds(Some(8)));
        assert!(!exact.holds(None), "a deleted or expired key matches no version");
        let weak = Condition::of_write(Some("W/\"7\""), None, true).unwrap().unwrap();
        assert!(!weak.holds(Some(7)), "If-Match compares strongly");
        let any = Condition::of_write(Some("*"), None, true).unwrap().unwrap();
        assert!(any.holds(Some(1)) && !any.holds(None));
        assert!(Condition::IfAbsent.holds(None) && !Condition::IfAbsent.holds(Some(3)));
    }

    #[test]
    fn reads_compare_weakly() {
        assert_eq!(not_modified("\"7\"", Some(7)), Ok(true));
        assert_eq!(not_modified("W/\"7\"", Some(7)), Ok(true));
        assert_eq!(not_modified("\"6\"", Some(7)), Ok(false));
        assert_eq!(not_modified("*", Some(7)), Ok(true));
        assert_eq!(not_modified("*", None), Ok(false));
        assert!(not_modified("seven", Some(7)).is_err());
    }

    proptest! {
        #[test]
        fn an_etag_always_parses_back_to_its_version(version in any::<u64>()) {
            let condition = Condition::of_write(Some(&etag(version)), None, true).unwrap().unwrap();
            prop_assert!(condition.holds(Some(version)));
            prop_assert!(!condition.holds(Some(version.wrapping_add(1))));
        }

        #[test]
        fn any_header_value_parses_or_is_named_in_a_clear_error(value in ".{0,80}") {
            match Tags::parse("If-Match", &value) {
                Ok(Tags::Any) => prop_assert_eq!(value.trim(), "*"),
                Ok(Tags::Versions(tags)) => prop_assert!(!tags.is_empty() && value.contains('"')),
                Err(error) => prop_assert!(error.to_string().starts_with("If-Match must be")),
            }
        }
    }
}
