//! Access tokens: HS256 JWTs signed with `JWT_SECRET` (or a secret generated
//! once into `<data-dir>/jwt.secret`), valid for `JWT_EXPIRATION` (default 1h).
//!
//! The token names its user (`sub`) and its session (`sid`); the service also
//! checks that the session was not revoked, so logout takes effect at once.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// File name of the generated JWT secret inside the data dir.
pub const JWT_SECRET_FILE: &str = "jwt.secret";

/// Default access-token lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a decimal string (JWT convention).
    pub sub: String,
    /// The session (refresh-token family) the token belongs to.
    pub sid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

impl Claims {
    /// The user id named by `sub`, if it is a number.
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token's lifetime is over.
    #[error("access token expired; refresh it or log in again")]
    Expired,
    /// Bad signature, wrong algorithm or malformed token.
    #[error("invalid access token")]
    Invalid,
}

/// Signs and verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("secret", &"<hidden>").field("lifetime", &self.lifetime).finish()
    }
}

impl JwtKeys {
    /// Keys for `secret`, issuing tokens valid for `lifetime`.
    pub fn new(secret: &Secret, lifetime: Duration) -> Self {
        let bytes = secret.expose().as_bytes();
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), lifetime }
    }

    /// How long issued tokens stay valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `user_id` in session `session`, issued now.
    pub fn issue(&self, user_id: i64, session: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            sub: user_id.to_string(),
            sid: session.to_string(),
            iat: now,
            exp: now + self.lifetime.as_secs() as i64,
        })
    }

    /// Signs arbitrary claims (tests use it to make expired tokens).
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|error| anyhow::anyhow!("cannot sign access token: {error}"))
    }

    /// Verifies signature, algorithm and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|data| data.claims).map_err(|error| {
            match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("test-secret"), DEFAULT_LIFETIME)
    }

    #[test]
    fn issued_tokens_verify() {
        let token = keys().issue(42, "abc").unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.user_id(), Some(42));
        assert_eq!(claims.sid, "abc");
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let expired = keys().sign(&Claims { sub: "1".into(), sid: "s".into(), iat: now - 7200, exp: now - 1 }).unwrap();
        assert_eq!(keys().verify(&expired), Err(TokenError::Expired));

        let token = keys().issue(1, "s").unwrap();
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys().verify(std::str::from_utf8(&tampered).unwrap()), Err(TokenError::Invalid));

        let foreign = JwtKeys::new(&Secret::new("other"), DEFAULT_LIFETIME).issue(1, "s").unwrap();
        assert_eq!(keys().verify(&foreign), Err(TokenError::Invalid));
        assert_eq!(keys().verify("not.a.jwt"), Err(TokenError::Invalid));
    }
}
