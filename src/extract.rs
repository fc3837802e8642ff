//! Request extractors shared by every service, whose rejections are the JSON
//! [`ApiError`] shape: a JSON body, path parameters and a query string; and the
//! client's address, with the key per-address limits count it under. A
//! malformed or incomplete input is always a 400 naming the problem (never
//! axum's plain-text 422).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::proto::{DEFAULT_CONTENT_TYPE, MAX_CONTENT_TYPE_BYTES};

/// Largest JSON body [`ApiJson`] reads unless a route names another limit.
pub const DEFAULT_JSON_LIMIT: usize = 64 * 1024;

/// A JSON body of at most `LIMIT` bytes, parsed into `T`.
///
/// - not JSON, the wrong shape, a missing or mistyped field → 400 with serde's
///   description (`missing field `username` at line 1 column 40`);
/// - a `Content-Type` other than `application/json` (or `…+json`) → 415; no
///   `Content-Type` at all is read as JSON;
/// - more than `LIMIT` bytes → 413; a body slower than [`crate::server::BODY_TIME`] → 408.
pub struct ApiJson<T, const LIMIT: usize = DEFAULT_JSON_LIMIT>(pub T);

impl<T, S, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        if let Some(value) = parts.headers.get(header::CONTENT_TYPE) {
            let text = value.to_str().unwrap_or("");
            if !is_json_content_type(text) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("the body must be JSON; send `Content-Type: application/json` (got {text:?})"),
                ));
            }
        }
        let bytes =
            crate::server::read_limited_body(&parts.headers, body, LIMIT, "the JSON body").await.map_err(|error| {
                match error.status {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::too_large(format!("the JSON body is over {LIMIT} bytes"))
                    }
                    _ => error,
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body; any failure is a 400 naming it (empty body, syntax, missing field, wrong type).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; send a JSON object"));
    }
    // The path names the field at fault (`password: invalid type: integer …`), which serde alone does not.
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        match path.as_str() {
            "." | "" => ApiError::bad_request(format!("invalid JSON body: {error}")),
            _ => ApiError::bad_request(format!("invalid JSON body: {path}: {error}")),
        }
    })?;
    deserializer.end().map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?;
    Ok(value)
}

fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Path parameters whose rejections are JSON 400s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string whose rejections are JSON 400s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The client's address (the TCP peer; `unknown` when not served over TCP).
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

impl ClientAddress {
    /// The peer address of a request.
    pub fn of(parts: &Parts) -> Self {
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        ClientAddress(address.unwrap_or_else(|| "unknown".to_string()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// The key a client address is counted under: the address itself for IPv4
/// (also IPv4-mapped IPv6), its /64 for IPv6 (one host usually holds a whole
/// /64, so counting single IPv6 addresses would limit nothing); anything else as is.
pub fn address_key(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => address.to_string(),
    }
}

/// The `Content-Type` a write stores its value with, the same rule at the gateway, the replicator
/// and the nodes: absent or empty is [`DEFAULT_CONTENT_TYPE`]; not visible ASCII, or longer than
/// [`MAX_CONTENT_TYPE_BYTES`], is a 400.
pub fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    const WHAT: &str = "the Content-Type header";
    let text = headers
        .get(header::CONTENT_TYPE)
        .map(|value| {
            value.to_str().map_err(|_| ApiError::bad_request(format!("{WHAT} must be visible ASCII, e.g. text/plain")))
        })
        .transpose()?;
    content_type_text(WHAT, text)
}

/// [`content_type`]'s rule for a content type given as text (`what` names where it came from, for
/// the error): absent or empty is the default; longer than the limit, or not visible ASCII, is a 400.
pub fn content_type_text(what: &str, text: Option<&str>) -> Result<String, ApiError> {
    let Some(text) = text.filter(|text| !text.is_empty()) else { return Ok(DEFAULT_CONTENT_TYPE.to_string()) };
    if text.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes long; the maximum is {MAX_CONTENT_TYPE_BYTES} bytes",
            text.len()
        )));
    }
    if !text.bytes().all(|byte| byte == b'\t' || (0x20..0x7f).contains(&byte)) {
        return Err(ApiError::bad_request(format!("{what} must be visible ASCII, e.g. text/plain")));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[derive(Debug, serde::Deserialize)]
    struct Login {
        email: String,
        password: String,
    }

    async fn extract(content_type: Option<&str>, body: &str) -> Result<Login, ApiError> {
        let mut request = Request::builder().method("POST").uri("/login");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        ApiJson::<Login, 64>::from_request(request, &()).await.map(|ApiJson(login)| login)
    }

    #[tokio::test]
    async fn every_bad_body_is_a_400_naming_the_problem() {
        let json = Some("application/json");
        let missing = extract(json, r#"{"email":"a@b.io"}"#).await.unwrap_err();
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert!(missing.message.contains("missing field `password`"), "{}", missing.message);
        let mistyped = extract(json, r#"{"email":"a@b.io","password":1}"#).await.unwrap_err();
        assert_eq!(mistyped.status, StatusCode::BAD_REQUEST);
        assert!(mistyped.message.contains("password: invalid type"), "{}", mistyped.message);
        for body in ["", "{oops", "[1]", "null", r#"{"email":"a@b.io","password":"p"} trailing"#] {
            assert_eq!(extract(json, body).await.unwrap_err().status, StatusCode::BAD_REQUEST, "{body:?}");
        }
        assert!(extract(json, "").await.unwrap_err().message.contains("empty"));
    }

    #[tokio::test]
    async fn content_type_and_size() {
        let body = r#"{"email":"a@b.io","password":"p"}"#;
        let login = extract(None, body).await.expect("no Content-Type is read as JSON");
        assert_eq!((login.email.as_str(), login.password.as_str()), ("a@b.io", "p"));
        assert!(extract(Some("application/json; charset=utf-8"), body).await.is_ok());
        assert!(extract(Some("application/merge-patch+json"), body).await.is_ok());
        let text = extract(Some("text/plain"), body).await.unwrap_err();
        assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(text.message.contains("application/json"), "{}", text.message);
        let large = extract(None, &format!(r#"{{"email":"{}","password":"p"}}"#, "a".repeat(64))).await.unwrap_err();
        assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(large.message.contains("64 bytes"), "{}", large.message);
    }

    #[test]
    fn addresses_are_keyed_per_ipv4_and_per_ipv6_64() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
        assert_eq!(address_key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key("10.0.0.1"), "10.0.0.1");
        assert_eq!(address_key("unknown"), "unknown");
    }
}
