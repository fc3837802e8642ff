//! The server-rendered pages: landing, sign-up, sign-in, dashboard, sign-out.
//!
//! Plain HTML forms that work without JavaScript (POST, then a 303 redirect),
//! errors shown next to their field, a CSRF token on every form, an HttpOnly
//! SameSite=Lax session cookie, and security headers on every response.

use std::sync::OnceLock;

use askama::Template;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::accounts::{self, FieldError};
use super::db::{DbError, SessionKind};
use super::extract::{CsrfField, CsrfForm, CsrfToken, SESSION_COOKIE, WebUser, cookie_header};
use super::state::{NewKey, UsersState, WEB_SESSION_LIFETIME, now};
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::extract::ClientAddress;
use crate::proto::Scope;

/// The stylesheet, embedded in the binary.
const STYLESHEET: &str = include_str!("../../../web/static/style.css");

/// Days shown in the dashboard's usage chart.
const CHART_DAYS: u32 = 14;

/// The web routes (the JSON `POST /signup` shares its path; see [`super::app`]).
pub fn router() -> Router<UsersState> {
    Router::new()
        .route("/", get(landing))
        .route("/signin", get(signin_page).post(signin_submit))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/apikeys", post(create_key))
        .route("/dashboard/apikeys/{id}/revoke", post(revoke_key))
        .route("/signout", get(signout_page).post(signout_submit))
        .route("/static/style.css", get(stylesheet))
        .merge(super::browser::router())
}

/// What the shared layout (`base.html`) shows.
pub struct Layout {
    /// Page title.
    pub title: &'static str,
    /// The signed-in user's name, if any.
    pub user: Option<String>,
    /// The CSRF token forms carry.
    pub csrf: String,
    /// Cache-busting version of the stylesheet.
    pub asset_version: &'static str,
}

impl Layout {
    pub(super) fn new(title: &'static str, user: Option<&WebUser>, csrf: &CsrfToken) -> Self {
        Self {
            title,
            user: user.map(|user| user.user.username.clone()),
            csrf: csrf.value.clone(),
            asset_version: asset_version(),
        }
    }
}

/// Errors of a form, by field (`""` for the form as a whole).
#[derive(Debug, Default)]
pub struct FormErrors(Vec<(&'static str, String)>);

impl FormErrors {
    /// The message for `field`, if any.
    pub fn of(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(name, _)| *name == field).map(|(_, message)| message.as_str())
    }

    fn one(field: &'static str, message: impl Into<String>) -> Self {
        Self(vec![(field, message.into())])
    }
}

/// Renders every page: the template with its status, `no-store`, and the
/// CSRF cookie when this browser did not have one yet.
pub(super) fn page<T: Template>(status: StatusCode, csrf: &CsrfToken, secure: bool, template: T) -> Response {
    match template.render() {
        Ok(html) => {
            let mut response = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
                html,
            )
                .into_response();
            if let Some(value) = csrf.set_cookie(secure).and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => ApiError::internal(format!("cannot render page: {error}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "landing.html")]
struct LandingPage {
    layout: Layout,
    /// The gateway's URL for the quick start's examples.
    gateway_url: String,
}

async fn landing(State(state): State<UsersState>, user: Option<WebUser>, csrf: CsrfToken) -> Response {
    let layout = Layout::new("A replicated key-value store", user.as_ref(), &csrf);
    page(
        StatusCode::OK,
        &csrf,
        state.secure_cookies,
        LandingPage { layout, gateway_url: state.gateway.url().to_string() },
    )
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    layout: Layout,
    email: String,
    username: String,
    errors: FormErrors,
}

/// `GET /signup`: the sign-up form (or the dashboard when signed in).
pub async fn signup_page(State(state): State<UsersState>, user: Option<WebUser>, csrf: CsrfToken) -> Response {
    if user.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    let template = SignupPage {
        layout: Layout::new("Sign up", None, &csrf),
        email: String::new(),
        username: String::new(),
        errors: FormErrors::default(),
    };
    page(StatusCode::OK, &csrf, state.secure_cookies, template)
}

/// The sign-up form's fields.
#[derive(Debug, Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

impl CsrfField for SignupForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /signup` from the form: create the account, then go to sign-in.
pub async fn signup_submit(
    State(state): State<UsersState>,
    ClientAddress(address): ClientAddress,
    csrf: CsrfToken,
    CsrfForm(form): CsrfForm<SignupForm>,
) -> Response {
    match accounts::sign_up(&state, &form.email, &form.username, &form.password, &address).await {
        Ok(_) => Redirect::to("/signin?registered=1").into_response(),
        Err(FieldError { field, error }) => {
            let template = SignupPage {
                layout: Layout::new("Sign up", None, &csrf),
                email: form.email,
                username: form.username,
                errors: FormErrors::one(field, error.message),
            };
            let mut response = page(error.status, &csrf, state.secure_cookies, template);
            if let Some(secs) = error.retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    layout: Layout,
    email: String,
    notice: Option<&'static str>,
    errors: FormErrors,
}

async fn signin_page(
    State(state): State<UsersState>,
    user: Option<WebUser>,
    csrf: CsrfToken,
    RawQuery(query): RawQuery,
) -> Response {
    if user.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    let registered = query.is_some_and(|query| query.split('&').any(|pair| pair == "registered=1"));
    let template = SigninPage {
        layout: Layout::new("Sign in", None, &csrf),
        email: String::new(),
        notice: registered.then_some("Your account is ready. Sign in to create your first API key."),
        errors: FormErrors::default(),
    };
    page(StatusCode::OK, &csrf, state.secure_cookies, template)
}

#[derive(Debug, Deserialize)]
struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

impl CsrfField for SigninForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn signin_submit(
    State(state): State<UsersState>,
    ClientAddress(address): ClientAddress,
    csrf: CsrfToken,
    CsrfForm(form): CsrfForm<SigninForm>,
) -> Response {
    let failed = |error: ApiError, email: String| {
        let template = SigninPage {
            layout: Layout::new("Sign in", None, &csrf),
            email,
            notice: None,
            errors: FormErrors::one("", error.message.clone()),
        };
        let mut response = page(error.status, &csrf, state.secure_cookies, template);
        if let Some(secs) = error.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    };
    let user = match accounts::authenticate(&state, &form.email, &form.password, &address).await {
        Ok(user) => user,
        Err(error) => return failed(error, form.email),
    };
    match accounts::open_session(&state, user.id, SessionKind::Web, None).await {
        Ok((_, token)) => {
            let cookie =
                cookie_header(SESSION_COOKIE, &token, Some(WEB_SESSION_LIFETIME.as_secs()), state.secure_cookies);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// The create-key form's values, echoed back when it has errors.
struct KeyFormValues {
    name: String,
    read: bool,
    write: bool,
    admin: bool,
    days: String,
}

impl Default for KeyFormValues {
    fn default() -> Self {
        Self { name: String::new(), read: true, write: true, admin: false, days: String::new() }
    }
}

struct AccountView {
    id: i64,
    username: String,
    email: String,
    created: String,
}

struct KeyRowView {
    id: i64,
    name: String,
    prefix: String,
    scopes: String,
    created: String,
    expires: String,
    last_used: String,
    status: &'static str,
}

struct DayBar {
    label: String,
    requests: i64,
    summary: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    account: AccountView,
    new_key: Option<NewKey>,
    keys: Vec<KeyRowView>,
    form: KeyFormValues,
    errors: FormErrors,
    usage_days: Vec<DayBar>,
    usage_max: i64,
    usage_total: String,
    /// The gateway's URL, for the new key's example request.
    gateway_url: String,
}

fn day(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d").to_string()
}

pub(super) fn minute(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A count for people, with thousands separators: `12,345`.
pub(super) fn grouped(count: i64) -> String {
    let digits = count.unsigned_abs().to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if count < 0 {
        text.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A byte count from the database (never negative) for people: `1.5 KiB`.
pub(super) fn bytes(count: i64) -> String {
    crate::units::bytes(u64::try_from(count).unwrap_or(0))
}

async fn render_dashboard(
    state: &UsersState,
    user: &WebUser,
    csrf: &CsrfToken,
    status: StatusCode,
    form: KeyFormValues,
    errors: FormErrors,
) -> Response {
    let keys = match accounts::list_keys(state, user.user.id).await {
        Ok(keys) => keys,
        Err(error) => return error.into_response(),
    };
    let usage = match accounts::usage(state, user.user.id, CHART_DAYS).await {
        Ok(usage) => usage,
        Err(error) => return error.into_response(),
    };
    let keys = keys
        .into_iter()
        .map(|key| KeyRowView {
            status: if key.revoked_at.is_some() {
                "revoked"
            } else if key.is_active {
                "active"
            } else {
                "expired"
            },
            id: key.id,
            name: key.name,
            prefix: key.key_prefix,
            scopes: Scope::join(&key.scopes, ", "),
            created: day(key.created_at),
            expires: key.expires_at.map_or_else(|| "never".to_string(), day),
            last_used: key.last_used_at.map_or_else(|| "never".to_string(), minute),
        })
        .collect();
    let usage_days: Vec<DayBar> = (0..CHART_DAYS)
        .map(|back| usage.to - ChronoDuration::days(i64::from(back)))
        .map(|date| match usage.days.iter().find(|entry| entry.day == date) {
            Some(entry) => DayBar {
                label: date.format("%b %d").to_string(),
                requests: entry.requests,
                summary: format!(
                    "{} requests · {} in · {} out",
                    grouped(entry.requests),
                    bytes(entry.bytes_in),
                    bytes(entry.bytes_out)
                ),
            },
            None => DayBar { label: date.format("%b %d").to_string(), requests: 0, summary: "no requests".into() },
        })
        .collect();
    let usage_max = usage_days.iter().map(|bar| bar.requests).max().unwrap_or(0).max(1);
    let usage_total = format!(
        "{} requests, {} in, {} out since {}",
        grouped(usage.total.requests),
        bytes(usage.total.bytes_in),
        bytes(usage.total.bytes_out),
        usage.from
    );
    let template = DashboardPage {
        layout: Layout::new("Dashboard", Some(user), csrf),
        account: AccountView {
            id: user.user.id,
            username: user.user.username.clone(),
            email: user.user.email.clone(),
            created: day(user.user.created_at),
        },
        new_key: state.flash.take(&user.session),
        keys,
        form,
        errors,
        usage_days,
        usage_max,
        usage_total,
        gateway_url: state.gateway.url().to_string(),
    };
    page(status, csrf, state.secure_cookies, template)
}

async fn dashboard(State(state): State<UsersState>, user: WebUser, csrf: CsrfToken) -> Response {
    render_dashboard(&state, &user, &csrf, StatusCode::OK, KeyFormValues::default(), FormErrors::default()).await
}

#[derive(Debug, Deserialize)]
struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    scope_read: Option<String>,
    scope_write: Option<String>,
    scope_admin: Option<String>,
    #[serde(default)]
    expires_in_days: String,
}

impl CsrfField for CreateKeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn create_key(
    State(state): State<UsersState>,
    user: WebUser,
    csrf: CsrfToken,
    CsrfForm(form): CsrfForm<CreateKeyForm>,
) -> Response {
    let values = KeyFormValues {
        name: form.name.clone(),
        read: form.scope_read.is_some(),
        write: form.scope_write.is_some(),
        admin: form.scope_admin.is_some(),
        days: form.expires_in_days.trim().to_string(),
    };
    let days = if values.days.is_empty() {
        None
    } else {
        match values.days.parse::<i64>() {
            Ok(days) => Some(days),
            Err(_) => {
                let errors = FormErrors::one("expires_in_days", "enter a whole number of days, or leave it empty");
                return render_dashboard(&state, &user, &csrf, StatusCode::BAD_REQUEST, values, errors).await;
            }
        }
    };
    let scopes: Vec<String> = [("read", values.read), ("write", values.write), ("admin", values.admin)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(scope, _)| scope.to_string())
        .collect();
    match accounts::create_key(&state, user.user.id, &values.name, &scopes, days).await {
        Ok(created) => {
            state.flash.put(&user.session, NewKey { name: created.row.name, key: created.key });
            Redirect::to("/dashboard#new-key").into_response()
        }
        Err(FieldError { field, error }) => {
            let status = error.status;
            render_dashboard(&state, &user, &csrf, status, values, FormErrors::one(field, error.message)).await
        }
    }
}

/// A form with only the CSRF field.
#[derive(Debug, Deserialize)]
struct PlainForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfField for PlainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn revoke_key(
    State(state): State<UsersState>,
    user: WebUser,
    csrf: CsrfToken,
    ApiPath(id): ApiPath<i64>,
    CsrfForm(_): CsrfForm<PlainForm>,
) -> Response {
    match state.db.revoke_api_key(user.user.id, id, now()).await {
        Ok(()) => Redirect::to("/dashboard").into_response(),
        Err(DbError::NotFound) => message_page(
            StatusCode::NOT_FOUND,
            &csrf,
            state.secure_cookies,
            Some(&user),
            "Key not found",
            "That API key does not exist or is not yours.",
        ),
        Err(error) => ApiError::internal(error.to_string()).into_response(),
    }
}

#[derive(Template)]
#[template(path = "signout.html")]
struct SignoutPage {
    layout: Layout,
}

async fn signout_page(State(state): State<UsersState>, user: Option<WebUser>, csrf: CsrfToken) -> Response {
    match user {
        Some(user) => {
            let layout = Layout::new("Sign out", Some(&user), &csrf);
            page(StatusCode::OK, &csrf, state.secure_cookies, SignoutPage { layout })
        }
        None => Redirect::to("/").into_response(),
    }
}

async fn signout_submit(
    State(state): State<UsersState>,
    user: Option<WebUser>,
    CsrfForm(_): CsrfForm<PlainForm>,
) -> Response {
    if let Some(user) = user {
        if let Err(error) = state.db.revoke_session(&user.session, now()).await {
            return ApiError::internal(error.to_string()).into_response();
        }
    }
    let cleared = cookie_header(SESSION_COOKIE, "", Some(0), state.secure_cookies);
    ([(header::SET_COOKIE, cleared)], Redirect::to("/")).into_response()
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    layout: Layout,
    heading: &'static str,
    message: &'static str,
}

fn message_page(
    status: StatusCode,
    csrf: &CsrfToken,
    secure: bool,
    user: Option<&WebUser>,
    heading: &'static str,
    message: &'static str,
) -> Response {
    let layout = Layout::new(heading, user, csrf);
    page(status, csrf, secure, MessagePage { layout, heading, message })
}

/// The 403 page of a form whose CSRF token is missing or wrong.
pub fn csrf_failure() -> Response {
    let csrf = CsrfToken { value: String::new(), is_new: false };
    message_page(
        StatusCode::FORBIDDEN,
        &csrf,
        false,
        None,
        "Form expired",
        "This form has expired or was sent from another site. Go back, reload the page and try again.",
    )
}

/// Unknown paths: a JSON 404 for API clients, an HTML page for browsers.
pub async fn not_found(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        let csrf = CsrfToken { value: String::new(), is_new: false };
        message_page(StatusCode::NOT_FOUND, &csrf, false, None, "Page not found", "There is nothing at this address.")
    } else {
        ApiError::not_found("no such endpoint; see the users service section of the README").into_response()
    }
}

/// Short hash of the stylesheet, used as its ETag and cache-busting version.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| hex::encode(&Sha256::digest(STYLESHEET.as_bytes())[..6]))
}

async fn stylesheet(headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", asset_version());
    let cache = [(header::CACHE_CONTROL, "public, max-age=86400"), (header::ETAG, etag.as_str())];
    if headers.get(header::IF_NONE_MATCH).and_then(|value| value.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/css; charset=utf-8")], cache, STYLESHEET).into_response()
}

/// Security headers on every response; `no-store` unless a handler chose caching.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders() {
        let csrf = CsrfToken { value: "c".repeat(64), is_new: true };
        let layout = || Layout::new("t", None, &csrf);
        let html = LandingPage { layout: layout(), gateway_url: "https://kv.example:9443".into() }.render().unwrap();
        assert!(html.contains("Quick start"));
        assert!(html.contains("https://kv.example:9443/v1/kv/user:123"), "the configured gateway: {html}");
        assert!(!html.contains("localhost:8080"), "{html}");
        let errors = FormErrors::one("email", "bad <email>");
        let html =
            SignupPage { layout: layout(), email: "x\"y".into(), username: String::new(), errors }.render().unwrap();
        assert!(html.contains("bad &#60;email&#62;") || html.contains("bad &lt;email&gt;"), "escaped: {html}");
        assert!(html.contains(&"c".repeat(64)), "the form carries the CSRF token");
        assert!(!html.contains("x\"y"), "attribute values are escaped");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-12_345), "-12,345");
    }
}
