//! Extractors of the users service: the Bearer user of the API,
//! the signed-in user of the web pages and CSRF tokens.
//! Authentication happens here, before a handler runs — never inside one.

use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::db::{SessionKind, UserRow};
use super::state::{UsersState, now, token_hash};
use crate::auth::jwt::TokenError;
use crate::error::ApiError;

/// The account behind a valid `Authorization: Bearer <access token>` whose
/// session is still active; 401 otherwise.
#[derive(Debug, Clone)]
pub struct BearerUser {
    /// The account.
    pub user: UserRow,
    /// The session (refresh-token family) the token belongs to.
    pub session: String,
}

impl FromRequestParts<UsersState> for BearerUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &UsersState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "missing Authorization header; send `Authorization: Bearer <access_token>` from POST /login",
            )
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <access_token>`"))?;
        let claims = state.jwt.verify(token).map_err(|error| match error {
            TokenError::Expired => ApiError::unauthorized(error.to_string()),
            TokenError::Invalid => ApiError::unauthorized("invalid access token; log in again"),
        })?;
        let user_id = claims.user_id().ok_or_else(|| ApiError::unauthorized("invalid access token; log in again"))?;
        if !state.db.session_is_active(&claims.sid, user_id).await.map_err(internal)? {
            return Err(ApiError::unauthorized("session was logged out or revoked; log in again"));
        }
        let user =
            state.db.user_by_id(user_id).await.map_err(|_| ApiError::unauthorized("account no longer exists"))?;
        if !user.is_active {
            return Err(ApiError::unauthorized("account is disabled"));
        }
        Ok(BearerUser { user, session: claims.sid })
    }
}

/// Name of the web session cookie.
pub const SESSION_COOKIE: &str = "ydht_session";
/// Name of the CSRF cookie (double-submit: forms repeat its value).
pub const CSRF_COOKIE: &str = "ydht_csrf";

/// The value of cookie `name` in the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// The account signed in on the web pages (by session cookie). Without a
/// valid session, the request is redirected to `/signin`.
#[derive(Debug, Clone)]
pub struct WebUser {
    /// The account.
    pub user: UserRow,
    /// The web session's family id.
    pub session: String,
}

async fn web_user(parts: &Parts, state: &UsersState) -> Result<Option<WebUser>, ApiError> {
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Ok(None) };
    let Some(row) = state.db.session_by_hash(&token_hash(token)).await.map_err(internal)? else { return Ok(None) };
    if !row.is_kind(SessionKind::Web) || row.revoked_at.is_some() || row.rotated_at.is_some() || row.expires_at <= now()
    {
        return Ok(None);
    }
    match state.db.user_by_id(row.user_id).await {
        Ok(user) if user.is_active => Ok(Some(WebUser { user, session: row.family })),
        _ => Ok(None),
    }
}

impl FromRequestParts<UsersState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UsersState) -> Result<Self, Response> {
        match web_user(parts, state).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Redirect::to("/signin").into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

impl OptionalFromRequestParts<UsersState> for WebUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &UsersState) -> Result<Option<Self>, ApiError> {
        web_user(parts, state).await
    }
}

/// The CSRF token of this browser: the `ydht_csrf` cookie, or a new one
/// (then [`CsrfToken::set_cookie`] must be sent with the response).
#[derive(Debug, Clone)]
pub struct CsrfToken {
    /// The token forms must carry in their `csrf` field.
    pub value: String,
    /// Whether the cookie has to be set by this response.
    pub is_new: bool,
}

impl CsrfToken {
    /// The `Set-Cookie` value when the token is new.
    pub fn set_cookie(&self, secure: bool) -> Option<String> {
        self.is_new.then(|| cookie_header(CSRF_COOKIE, &self.value, None, secure))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(match cookie(&parts.headers, CSRF_COOKIE).filter(|value| value.len() == 64) {
            Some(value) => CsrfToken { value: value.to_string(), is_new: false },
            None => CsrfToken { value: crate::config::random_hex(32), is_new: true },
        })
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, optional Max-Age and Secure.
pub fn cookie_header(name: &str, value: &str, max_age_secs: Option<u64>, secure: bool) -> String {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_secs {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    text
}

/// A form that carries a `csrf` field.
pub trait CsrfField {
    /// The submitted CSRF token.
    fn csrf(&self) -> &str;
}

/// A URL-encoded form whose `csrf` field matches the CSRF cookie (compared in
/// constant time); 403 otherwise, before the handler runs.
pub struct CsrfForm<T>(pub T);

impl<T> FromRequest<UsersState> for CsrfForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &UsersState) -> Result<Self, Response> {
        let expected = cookie(request.headers(), CSRF_COOKIE).map(str::to_string);
        let axum::Form(form) = axum::Form::<T>::from_request(request, state).await.map_err(|rejection| {
            // A missing or mistyped field is a bad request like any other (axum says 422).
            let status = match rejection.status() {
                StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                status => status,
            };
            ApiError::new(status, format!("invalid form: {}", rejection.body_text())).into_response()
        })?;
        let valid = expected.is_some_and(|expected| {
            use subtle::ConstantTimeEq;
            !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(form.csrf().as_bytes()))
        });
        if valid { Ok(CsrfForm(form)) } else { Err(super::web::csrf_failure()) }
    }
}

/// A storage failure as an answer: an overloaded database (no pooled
/// connection free in time, SQLite busy or locked) is a 503 with
/// `Retry-After`, since the same request can succeed a moment later; anything
/// else is a logged 500.
pub fn storage(error: super::db::DbError) -> ApiError {
    use super::db::DbError;
    let overloaded = match &error {
        DbError::Sqlx(sqlx::Error::PoolTimedOut) => true,
        DbError::Sqlx(sqlx::Error::Database(database)) => {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
            database.code().and_then(|code| code.parse::<i64>().ok()).is_some_and(|code| matches!(code & 0xff, 5 | 6))
                && database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        }
        _ => false,
    };
    if overloaded {
        tracing::warn!(%error, "users: database overloaded");
        let mut answer = ApiError::unavailable("the users database is busy; retry in a moment");
        answer.retry_after = Some(1);
        answer
    } else {
        internal(error)
    }
}

/// Logs a storage failure and turns it into a 500 with a generic message.
pub fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal(error.to_string())
}
