//! Input rules of the users service, shared by the JSON API and the web forms.
//! Each function returns the normalised value or an [`Invalid`] naming the problem.

use crate::proto::Scope;

/// Maximum length of an email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Minimum password length in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Maximum password length in bytes (bounds the hashing work per request).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Maximum API key name length in characters.
pub const MAX_KEY_NAME_CHARS: usize = 100;
/// Longest API key lifetime in days (10 years).
pub const MAX_KEY_DAYS: i64 = 3650;

/// Why an input was refused; the text names the problem and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// No email given.
    #[error("email is required")]
    EmailMissing,
    /// An email longer than [`MAX_EMAIL_LEN`].
    #[error("email is longer than {MAX_EMAIL_LEN} characters")]
    EmailTooLong,
    /// Not an email address.
    #[error("invalid email address {0:?}; expected something like name@example.com")]
    Email(String),
    /// A username of the wrong length.
    #[error("username must be 3 to 32 characters long")]
    UsernameLength,
    /// A username with other characters.
    #[error("username may only contain letters, digits, '_' and '-'")]
    UsernameCharacters,
    /// A password shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters long")]
    PasswordTooShort,
    /// A password longer than [`MAX_PASSWORD_BYTES`].
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    PasswordTooLong,
    /// No key name given.
    #[error("name is required")]
    NameMissing,
    /// A key name longer than [`MAX_KEY_NAME_CHARS`].
    #[error("name must be at most {MAX_KEY_NAME_CHARS} characters")]
    NameTooLong,
    /// A key name with control characters.
    #[error("name must not contain control characters")]
    NameControl,
    /// No scope given.
    #[error("scopes must name at least one of read, write, admin")]
    NoScopes,
    /// A scope that does not exist.
    #[error(transparent)]
    Scope(#[from] crate::proto::UnknownScope),
    /// A key lifetime out of range.
    #[error("expires_in_days must be between 1 and {MAX_KEY_DAYS} (got {0}); omit it for a key that never expires")]
    Lifetime(i64),
}

/// A trimmed, lower-cased email address with one `@`, a non-empty local part
/// and a dotted domain, no spaces or control characters.
pub fn email(raw: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_lowercase();
    let invalid = || Err(Invalid::Email(raw.trim().to_string()));
    if email.is_empty() {
        return Err(Invalid::EmailMissing);
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(Invalid::EmailTooLong);
    }
    let Some((local, domain)) = email.split_once('@') else { return invalid() };
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"@<>()[]\\,;:\"".contains(c));
    if domain_ok && local_ok { Ok(email) } else { invalid() }
}

/// 3–32 characters of `[A-Za-z0-9_-]`.
pub fn username(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    let count = name.chars().count();
    if !(3..=32).contains(&count) {
        return Err(Invalid::UsernameLength);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Invalid::UsernameCharacters);
    }
    Ok(name.to_string())
}

/// At least 8 characters, at most 1024 bytes.
pub fn password(raw: &str) -> Result<(), Invalid> {
    if raw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Invalid::PasswordTooShort);
    }
    if raw.len() > MAX_PASSWORD_BYTES {
        return Err(Invalid::PasswordTooLong);
    }
    Ok(())
}

/// A trimmed key name of 1–100 characters without control characters.
pub fn key_name(raw: &str) -> Result<String, Invalid> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Invalid::NameMissing);
    }
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(Invalid::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid::NameControl);
    }
    Ok(name.to_string())
}

/// A non-empty list of known scopes, deduplicated, in canonical order.
pub fn scopes(raw: &[String]) -> Result<Vec<Scope>, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::NoScopes);
    }
    let given = raw.iter().map(|name| name.parse()).collect::<Result<Vec<Scope>, _>>()?;
    Ok(Scope::ALL.into_iter().filter(|scope| given.contains(scope)).collect())
}

/// A key lifetime of 1–3650 days (absent means the key never expires).
pub fn expires_in_days(raw: Option<i64>) -> Result<Option<i64>, Invalid> {
    match raw {
        None => Ok(None),
        Some(days) if (1..=MAX_KEY_DAYS).contains(&days) => Ok(Some(days)),
        Some(days) => Err(Invalid::Lifetime(days)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("  User@Example.COM ").unwrap(), "user@example.com");
        assert!(email("a.b+tag@sub.example.org").is_ok());
        for bad in
            ["", "plain", "@example.com", "a@", "a@b", "a@@b.com", "a b@c.com", "a@b..com", "a@-b.com", ".a@b.com"]
        {
            assert!(email(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn usernames() {
        assert_eq!(username("ab_c-9").unwrap(), "ab_c-9");
        assert!(username(&"x".repeat(32)).is_ok());
        for bad in ["ab", "", &"x".repeat(33), "has space", "dot.name", "ünï"] {
            assert!(username(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn scopes_and_lifetimes() {
        let given = vec!["write".to_string(), "read".to_string(), "write".to_string()];
        assert_eq!(scopes(&given).unwrap(), vec![Scope::Read, Scope::Write]);
        assert!(scopes(&[]).is_err());
        assert!(scopes(&["delete".to_string()]).is_err());
        assert_eq!(expires_in_days(None), Ok(None));
        assert_eq!(expires_in_days(Some(90)), Ok(Some(90)));
        assert!(expires_in_days(Some(0)).is_err());
        assert!(expires_in_days(Some(-1)).is_err());
        assert!(expires_in_days(Some(3651)).is_err());
        assert!(key_name("  ").is_err());
        assert_eq!(key_name(" prod ").unwrap(), "prod");
    }
}
