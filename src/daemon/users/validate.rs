//! Input rules of the users service, shared by the JSON API and the web forms.
//! Each function returns the normalised value or a message naming the problem.

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
/// The scopes a key may carry.
pub const SCOPES: [&str; 3] = ["read", "write", "admin"];

/// A trimmed, lower-cased email address with one `@`, a non-empty local part
/// and a dotted domain, no spaces or control characters.
pub fn email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let invalid = || Err(format!("invalid email address {:?}; expected something like name@example.com", raw.trim()));
    if email.is_empty() {
        return Err("email is required".into());
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(format!("email is longer than {MAX_EMAIL_LEN} characters"));
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
pub fn username(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let count = name.chars().count();
    if !(3..=32).contains(&count) {
        return Err("username must be 3 to 32 characters long".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("username may only contain letters, digits, '_' and '-'".into());
    }
    Ok(name.to_string())
}

/// At least 8 characters, at most 1024 bytes.
pub fn password(raw: &str) -> Result<(), String> {
    if raw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("password must be at least {MIN_PASSWORD_CHARS} characters long"));
    }
    if raw.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password must be at most {MAX_PASSWORD_BYTES} bytes long"));
    }
    Ok(())
}

/// A trimmed key name of 1–100 characters without control characters.
pub fn key_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(format!("name must be at most {MAX_KEY_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(name.to_string())
}

/// A non-empty list of known scopes, deduplicated, in canonical order.
pub fn scopes(raw: &[String]) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err(format!("scopes must name at least one of {}", SCOPES.join(", ")));
    }
    if let Some(unknown) = raw.iter().find(|scope| !SCOPES.contains(&scope.as_str())) {
        return Err(format!("unknown scope {unknown:?}; use {}", SCOPES.join(", ")));
    }
    Ok(SCOPES.iter().filter(|scope| raw.iter().any(|given| given == *scope)).map(|s| s.to_string()).collect())
}

/// A key lifetime of 1–3650 days (absent means the key never expires).
pub fn expires_in_days(raw: Option<i64>) -> Result<Option<i64>, String> {
    match raw {
        None => Ok(None),
        Some(days) if (1..=MAX_KEY_DAYS).contains(&days) => Ok(Some(days)),
        Some(days) => Err(format!(
            "expires_in_days must be between 1 and {MAX_KEY_DAYS} (got {days}); omit it for a key that never expires"
        )),
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
        assert_eq!(scopes(&given).unwrap(), vec!["read", "write"]);
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
