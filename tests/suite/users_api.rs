//! The users service's JSON API, success and error paths, on SQLite and on
//! PostgreSQL (`YDHT_TEST_POSTGRES_URL`): every test below runs once per backend.

use crate::users_support;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use users_support::{Ctx, assert_error};
use ydht::auth::jwt::{Claims, JwtKeys};

both_backends!(
    signup_and_its_bad_input,
    login_me_and_credentials,
    token_lifecycle,
    api_key_lifecycle,
    api_key_expiry_and_last_used,
    usage_batches_and_report,
    login_throttling_per_email,
    parallel_wrong_passwords_are_throttled_and_never_500,
    health_metrics_and_bad_requests,
    web_forms_csrf_and_headers,
);

async fn signup_and_its_bad_input(ctx: Ctx) {
    let s = ctx.start().await;
    let user = s.signup("Alice@Example.com", "alice", "password-123").await;
    assert_eq!(user["email"], "alice@example.com", "emails are stored lower-cased");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["is_active"], true);
    assert!(user["id"].as_i64().unwrap() > 0);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());

    let cases = [
        (
            json!({"email": "not-an-email", "username": "bob", "password": "password-123"}),
            StatusCode::BAD_REQUEST,
            "email",
        ),
        (
            json!({"email": "bob@example", "username": "bob", "password": "password-123"}),
            StatusCode::BAD_REQUEST,
            "email",
        ),
        (
            json!({"email": "bob@example.com", "username": "bo", "password": "password-123"}),
            StatusCode::BAD_REQUEST,
            "username",
        ),
        (
            json!({"email": "bob@example.com", "username": "b".repeat(33), "password": "password-123"}),
            StatusCode::BAD_REQUEST,
            "username",
        ),
        (
            json!({"email": "bob@example.com", "username": "bob smith", "password": "password-123"}),
            StatusCode::BAD_REQUEST,
            "username",
        ),
        (
            json!({"email": "bob@example.com", "username": "bob", "password": "short77"}),
            StatusCode::BAD_REQUEST,
            "password",
        ),
        (
            json!({"email": "ALICE@example.com", "username": "bob", "password": "password-123"}),
            StatusCode::CONFLICT,
            "email",
        ),
        (
            json!({"email": "bob@example.com", "username": "ALICE", "password": "password-123"}),
            StatusCode::CONFLICT,
            "username",
        ),
        (json!({"email": "bob@example.com", "password": "password-123"}), StatusCode::BAD_REQUEST, "username"),
        (
            json!({"email": "bob@example.com", "username": "bob", "password": 12345678}),
            StatusCode::BAD_REQUEST,
            "password",
        ),
        (json!(["bob@example.com"]), StatusCode::BAD_REQUEST, ""),
    ];
    for (body, status, mentions) in cases {
        let answer = s.post("/signup", body.clone(), None).await;
        assert_error(&answer, status);
        assert!(answer.error().contains(mentions), "{body}: {}", answer.error());
    }

    let not_json =
        s.send(s.request(Method::POST, "/signup", None).header("content-type", "application/json").body("{oops")).await;
    assert_error(&not_json, StatusCode::BAD_REQUEST);
    let no_type = s.send(s.request(Method::POST, "/signup", None).body(r#"{"email":"x@y.io"}"#)).await;
    assert_error(&no_type, StatusCode::BAD_REQUEST);
    assert!(no_type.error().contains("missing field `username`"), "{}", no_type.error());
    let text = s
        .send(
            s.request(Method::POST, "/signup", None).header("content-type", "text/plain").body(r#"{"email":"x@y.io"}"#),
        )
        .await;
    assert_error(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let empty = s.send(s.request(Method::POST, "/signup", None).header("content-type", "application/json")).await;
    assert_error(&empty, StatusCode::BAD_REQUEST);

    // Nothing was created by the refused requests: bob can still sign up.
    s.signup("bob@example.com", "bob", "password-123").await;
}

async fn login_me_and_credentials(ctx: Ctx) {
    let s = ctx.start().await;
    let user = s.signup("carol@example.com", "carol", "password-123").await;
    let tokens = s.login("CAROL@example.com", "password-123").await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["user"], user);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3, "a JWT");
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 32);

    let me = s.get("/me", Some(access)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json, user);

    let wrong_password =
        s.post("/login", json!({"email": "carol@example.com", "password": "password-124"}), None).await;
    let unknown_email =
        s.post("/login", json!({"email": "nobody@example.com", "password": "password-123"}), None).await;
    assert_error(&wrong_password, StatusCode::UNAUTHORIZED);
    assert_error(&unknown_email, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.text, unknown_email.text, "the same answer either way");
    let long_password =
        s.post("/login", json!({"email": "carol@example.com", "password": "p".repeat(2000)}), None).await;
    assert_eq!(long_password.text, unknown_email.text);
    let long_email = s.post("/login", json!({"email": "e".repeat(20_000), "password": "password-123"}), None).await;
    assert_eq!(long_email.text, unknown_email.text);
    assert_eq!(s.get("/metrics", None).await.json["login_failures"], 4);
    assert_error(&s.post("/login", json!({"email": "carol@example.com"}), None).await, StatusCode::BAD_REQUEST);
    let not_json =
        s.send(s.request(Method::POST, "/login", None).header("content-type", "application/json").body("x")).await;
    assert_error(&not_json, StatusCode::BAD_REQUEST);

    assert_error(&s.get("/me", None).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.get("/me", Some("garbage")).await, StatusCode::UNAUTHORIZED);
    let basic = s.send(s.request(Method::GET, "/me", None).basic_auth("carol", Some("password-123"))).await;
    assert_error(&basic, StatusCode::UNAUTHORIZED);
}

/// The claims inside a JWT (no verification: for building test tokens).
fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn token_lifecycle(ctx: Ctx) {
    let s = ctx.start().await;
    s.signup("dave@example.com", "dave", "password-123").await;
    let first = s.login("dave@example.com", "password-123").await;
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();

    // Expired: a token signed with the real secret whose lifetime is over.
    let keys = JwtKeys::new(&ctx.config.jwt_secret, ctx.config.jwt_lifetime);
    let now = chrono::Utc::now().timestamp();
    let expired = keys.sign(&Claims { iat: now - 7200, exp: now - 5, ..claims_of(access) }).unwrap();
    let answer = s.get("/me", Some(&expired)).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED);
    assert!(answer.error().contains("expired"), "{}", answer.error());

    // Tampered: same header and payload, another signature; and a payload naming another user.
    let (signed, signature) = access.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_error(&s.get("/me", Some(&tampered)).await, StatusCode::UNAUTHORIZED);
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&Claims { sub: "999".into(), ..claims_of(access) }).unwrap());
    let header = access.split('.').next().unwrap();
    assert_error(
        &s.get("/me", Some(&format!("{header}.{forged_payload}.{signature}"))).await,
        StatusCode::UNAUTHORIZED,
    );

    // Rotation: a new pair; the new access token works.
    let second = s.post("/refresh", json!({"refresh_token": refresh}), None).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let refresh2 = second.json["refresh_token"].as_str().unwrap().to_string();
    let access2 = second.json["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(second.json["token_type"], "Bearer");
    assert_eq!(s.get("/me", Some(&access2)).await.status, StatusCode::OK);

    // Reuse of the spent token revokes the whole session: every token of it stops working.
    let reuse = s.post("/refresh", json!({"refresh_token": refresh}), None).await;
    assert_error(&reuse, StatusCode::UNAUTHORIZED);
    assert!(reuse.error().contains("already used"), "{}", reuse.error());
    assert_error(&s.post("/refresh", json!({"refresh_token": refresh2}), None).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.get("/me", Some(&access2)).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.get("/me", Some(access)).await, StatusCode::UNAUTHORIZED);

    // Logout revokes a fresh session; other sessions are untouched.
    let session_a = s.login("dave@example.com", "password-123").await;
    let session_b = s.login("dave@example.com", "password-123").await;
    let access_a = session_a["access_token"].as_str().unwrap();
    assert_eq!(s.send(s.request(Method::POST, "/logout", Some(access_a))).await.status, StatusCode::NO_CONTENT);
    assert_error(&s.get("/me", Some(access_a)).await, StatusCode::UNAUTHORIZED);
    assert_error(
        &s.post("/refresh", json!({"refresh_token": session_a["refresh_token"]}), None).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(s.get("/me", Some(session_b["access_token"].as_str().unwrap())).await.status, StatusCode::OK);
    assert_error(&s.send(s.request(Method::POST, "/logout", Some(access_a))).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.send(s.request(Method::POST, "/logout", None)).await, StatusCode::UNAUTHORIZED);

    // Bad refresh requests.
    assert_error(&s.post("/refresh", json!({"refresh_token": "nope"}), None).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.post("/refresh", json!({}), None).await, StatusCode::BAD_REQUEST);
}

async fn api_key_lifecycle(ctx: Ctx) {
    let s = ctx.start().await;
    let (erin, token) = s.new_user("erin").await;
    let (_, other_token) = s.new_user("frank").await;

    let created = s
        .create_key(&token, json!({"name": "Production Key", "scopes": ["read", "write"], "expires_in_days": 90}))
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("ydht_") && key.len() >= 37, "{key}");
    assert_eq!(created["key_prefix"], key[..8]);
    assert_eq!(created["scopes"], json!(["read", "write"]));
    assert_eq!(created["is_active"], true);
    assert_eq!(created["name"], "Production Key");
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
    let in_days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&in_days), "{in_days}");
    let id = created["id"].as_i64().unwrap();

    let read_only = s.create_key(&token, json!({"name": "reader", "scopes": ["read"]})).await;
    assert!(read_only["expires_at"].is_null(), "no expiry requested");
    let defaults = s.create_key(&token, json!({"name": "defaults"})).await;
    assert_eq!(defaults["scopes"], json!(["read", "write"]));

    // Listing never contains the secret.
    let list = s.get("/apikeys", Some(&token)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json["count"], 3);
    assert!(!list.text.contains(&key) && !list.text.contains(read_only["key"].as_str().unwrap()));
    for entry in list.json["api_keys"].as_array().unwrap() {
        assert!(entry.get("key").is_none());
        assert!(entry.get("last_used_at").is_some());
        assert_eq!(entry["key_prefix"].as_str().unwrap().len(), 8);
    }
    assert_eq!(s.get("/apikeys", Some(&other_token)).await.json["count"], 0, "keys are per user");

    // Validation (internal).
    let valid = s.internal("/validate-key", json!({"key": key})).await;
    assert_eq!(valid.status, StatusCode::OK, "{}", valid.text);
    assert_eq!(valid.json, json!({"user_id": erin, "scopes": ["read", "write"]}));
    let scoped = s.internal("/validate-key", json!({"key": read_only["key"]})).await;
    assert_eq!(scoped.json["scopes"], json!(["read"]));
    let without_secret = s.post("/validate-key", json!({"key": key}), None).await;
    assert_error(&without_secret, StatusCode::UNAUTHORIZED);
    let wrong_secret = s
        .send(
            s.request(Method::POST, "/validate-key", None)
                .header("x-cluster-secret", "wrong")
                .json(&json!({"key": key})),
        )
        .await;
    assert_error(&wrong_secret, StatusCode::UNAUTHORIZED);
    let unknown = format!("ydht_{}", "0".repeat(40));
    assert_error(&s.internal("/validate-key", json!({"key": unknown})).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.internal("/validate-key", json!({"key": "nonsense"})).await, StatusCode::UNAUTHORIZED);
    assert_error(&s.internal("/validate-key", json!({"nokey": 1})).await, StatusCode::BAD_REQUEST);

    // Revocation: only by the owner, idempotent, effective at once.
    assert_error(&s.delete(&format!("/apikeys/{id}"), Some(&other_token)).await, StatusCode::NOT_FOUND);
    assert_eq!(s.internal("/validate-key", json!({"key": key})).await.status, StatusCode::OK);
    assert_eq!(s.delete(&format!("/apikeys/{id}"), Some(&token)).await.status, StatusCode::NO_CONTENT);
    let revoked = s.internal("/validate-key", json!({"key": key})).await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED);
    assert!(revoked.error().contains("revoked"), "{}", revoked.error());
    assert_eq!(s.delete(&format!("/apikeys/{id}"), Some(&token)).await.status, StatusCode::NO_CONTENT);
    let listed = s.get("/apikeys", Some(&token)).await.json;
    let entry = listed["api_keys"].as_array().unwrap().iter().find(|entry| entry["id"] == id).unwrap().clone();
    assert_eq!(entry["is_active"], false);
    assert_error(&s.delete("/apikeys/987654", Some(&token)).await, StatusCode::NOT_FOUND);
    assert_error(&s.delete("/apikeys/abc", Some(&token)).await, StatusCode::BAD_REQUEST);
    assert_error(&s.delete(&format!("/apikeys/{id}"), None).await, StatusCode::UNAUTHORIZED);

    // Bad create requests.
    let bad = [
        (json!({"name": "x", "scopes": ["delete"]}), "scope"),
        (json!({"name": "x", "scopes": []}), "scope"),
        (json!({"name": "x", "expires_in_days": 0}), "expires_in_days"),
        (json!({"name": "x", "expires_in_days": -3}), "expires_in_days"),
        (json!({"name": "x", "expires_in_days": 4000}), "expires_in_days"),
        (json!({"name": "   "}), "name"),
        (json!({"name": "n".repeat(101)}), "name"),
    ];
    for (body, mentions) in bad {
        let answer = s.post("/apikeys", body.clone(), Some(&token)).await;
        assert_error(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.error().contains(mentions), "{body}: {}", answer.error());
    }
    assert_error(&s.post("/apikeys", json!({"scopes": ["read"]}), Some(&token)).await, StatusCode::BAD_REQUEST);
    assert_error(&s.post("/apikeys", json!({"name": "x"}), None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/apikeys", Some(&token)).await.json["count"], 3, "refused requests created nothing");
}

async fn api_key_expiry_and_last_used(ctx: Ctx) {
    let s = ctx.start().await;
    let (_, token) = s.new_user("gina").await;
    let expiring = s.create_key(&token, json!({"name": "short", "expires_in_days": 1})).await;
    let lasting = s.create_key(&token, json!({"name": "long"})).await;
    assert_eq!(s.internal("/validate-key", json!({"key": expiring["key"]})).await.status, StatusCode::OK);

    ctx.expire_api_key(expiring["id"].as_i64().unwrap()).await;
    let expired = s.internal("/validate-key", json!({"key": expiring["key"]})).await;
    assert_error(&expired, StatusCode::UNAUTHORIZED);
    assert!(expired.error().contains("expired"), "{}", expired.error());
    let list = s.get("/apikeys", Some(&token)).await.json;
    let find = |list: &Value, id: &Value| {
        list["api_keys"].as_array().unwrap().iter().find(|e| e["id"] == *id).unwrap().clone()
    };
    assert_eq!(find(&list, &expiring["id"])["is_active"], false);
    assert!(find(&list, &lasting["id"])["last_used_at"].is_null(), "never validated yet");

    // A validation shows in the listing at once, and reaches the database
    // (written in batches) so a restarted service still knows it.
    assert_eq!(s.internal("/validate-key", json!({"key": lasting["key"]})).await.status, StatusCode::OK);
    let list = s.get("/apikeys", Some(&token)).await.json;
    let used = find(&list, &lasting["id"])["last_used_at"].clone();
    assert!(used.is_string(), "{list}");
    ctx.stop_all().await;
    let restarted = ctx.start().await;
    let list = restarted.get("/apikeys", Some(&token)).await.json;
    assert_eq!(find(&list, &lasting["id"])["last_used_at"], used, "{list}");
}

async fn usage_batches_and_report(ctx: Ctx) {
    let s = ctx.start().await;
    let (hana, token) = s.new_user("hana").await;
    let (ivan, ivan_token) = s.new_user("ivan").await;
    let batch = json!({"records": [
        {"user_id": hana, "operation": "put", "requests": 3, "bytes_in": 300, "bytes_out": 10},
        {"user_id": hana, "operation": "get", "requests": 5, "bytes_in": 0, "bytes_out": 500},
        {"user_id": ivan, "operation": "get", "requests": 1, "bytes_in": 0, "bytes_out": 7},
        {"user_id": 424242, "operation": "get", "requests": 1, "bytes_in": 0, "bytes_out": 7},
    ]});
    assert_eq!(s.internal("/usage", batch.clone()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.internal("/usage", batch).await.status, StatusCode::NO_CONTENT, "batches add up");
    assert_eq!(s.internal("/usage", json!({"records": []})).await.status, StatusCode::NO_CONTENT);

    let report = s.get("/usage?days=7", Some(&token)).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(report.json["to"], today);
    let days = report.json["days"].as_array().unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["day"], today);
    assert_eq!(days[0]["requests"], 16);
    assert_eq!(days[0]["bytes_in"], 600);
    assert_eq!(days[0]["bytes_out"], 1020);
    let put = days[0]["operations"].as_array().unwrap().iter().find(|op| op["operation"] == "put").unwrap().clone();
    assert_eq!((put["requests"].as_i64(), put["bytes_in"].as_i64()), (Some(6), Some(600)));
    assert_eq!(report.json["total"]["requests"], 16);
    let ivans = s.get("/usage", Some(&ivan_token)).await;
    assert_eq!(ivans.json["total"]["requests"], 2, "each user sees only their own usage");

    let rejected = [
        json!({"records": [{"user_id": hana, "operation": "", "requests": 1, "bytes_in": 0, "bytes_out": 0}]}),
        json!({"records": [{"user_id": hana, "operation": "drop table", "requests": 1, "bytes_in": 0, "bytes_out": 0}]}),
        json!({"records": [{"user_id": hana, "operation": "put", "requests": u64::MAX, "bytes_in": 0, "bytes_out": 0}]}),
    ];
    for body in rejected {
        assert_error(&s.internal("/usage", body).await, StatusCode::BAD_REQUEST);
    }
    assert_error(&s.internal("/usage", json!({"records": [{"user_id": hana}]})).await, StatusCode::BAD_REQUEST);
    assert_error(
        &s.internal(
            "/usage",
            json!({"records": [{"user_id": hana, "operation": "put", "requests": -1, "bytes_in": 0, "bytes_out": 0}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(&s.post("/usage", json!({"records": []}), None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/usage", Some(&token)).await.json["total"]["requests"], 16, "refused batches changed nothing");

    assert_error(&s.get("/usage?days=0", Some(&token)).await, StatusCode::BAD_REQUEST);
    assert_error(&s.get("/usage?days=1000", Some(&token)).await, StatusCode::BAD_REQUEST);
    assert_error(&s.get("/usage?days=abc", Some(&token)).await, StatusCode::BAD_REQUEST);
    assert_error(&s.get("/usage", None).await, StatusCode::UNAUTHORIZED);
}

async fn login_throttling_per_email(ctx: Ctx) {
    let s = ctx.start().await;
    s.signup("jack@example.com", "jack", "password-123").await;
    let limit = ctx.config.throttle.per_email;
    for _ in 0..limit {
        let answer = s.post("/login", json!({"email": "jack@example.com", "password": "wrong-password"}), None).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused while throttled.
    let throttled = s.post("/login", json!({"email": "jack@example.com", "password": "password-123"}), None).await;
    assert_error(&throttled, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = throttled.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry_after > 0 && retry_after <= ctx.config.throttle.window.as_secs(), "{retry_after}");
    // Another account from the same address is not affected by jack's limit.
    s.signup("kate@example.com", "kate", "password-123").await;
    s.login("kate@example.com", "password-123").await;
    let metrics = s.get("/metrics", None).await.json;
    assert_eq!(metrics["logins_throttled"], 1);
    assert_eq!(metrics["login_failures"], limit as u64);
}

/// Failures are counted before the password is verified, atomically with the
/// check: 60 parallel guesses for one email get exactly the limit of 401s, the
/// rest 429, and none a 500.
async fn parallel_wrong_passwords_are_throttled_and_never_500(ctx: Ctx) {
    let s = ctx.start().await;
    s.signup("mia@example.com", "mia", "password-123").await;
    let guesses = (0..60)
        .map(|n| s.post("/login", json!({"email": "mia@example.com", "password": format!("wrong-{n:03}")}), None));
    let answers = futures_util::future::join_all(guesses).await;
    let count = |status: StatusCode| answers.iter().filter(|answer| answer.status == status).count();
    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status.as_u16()).collect();
    assert_eq!(count(StatusCode::UNAUTHORIZED), ctx.config.throttle.per_email, "{statuses:?}");
    assert_eq!(count(StatusCode::TOO_MANY_REQUESTS), 60 - ctx.config.throttle.per_email, "{statuses:?}");
    let metrics = s.get("/metrics", None).await.json;
    assert_eq!(metrics["login_failures"], ctx.config.throttle.per_email as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_per_address_sqlite() {
    per_address(users_support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_per_address_postgres() {
    per_address(users_support::Backend::Postgres).await;
}

async fn per_address(backend: users_support::Backend) {
    let tweak = |config: &mut ydht::daemon::users::UsersConfig| config.throttle.per_address = 3;
    users_support::run_with(backend, "login_throttling_per_address", tweak, |ctx| async move {
        let s = ctx.start().await;
        s.signup("lena@example.com", "lena", "password-123").await;
        for n in 0..3 {
            let body = json!({"email": format!("guess{n}@example.com"), "password": "password-123"});
            assert_error(&s.post("/login", body, None).await, StatusCode::UNAUTHORIZED);
        }
        // Three different emails failed from this address: the address is throttled.
        let answer = s.post("/login", json!({"email": "lena@example.com", "password": "password-123"}), None).await;
        assert_error(&answer, StatusCode::TOO_MANY_REQUESTS);
        assert!(answer.header("retry-after").is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_and_hashing_are_bounded_sqlite() {
    signups_and_hashing_are_bounded(users_support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_and_hashing_are_bounded_postgres() {
    signups_and_hashing_are_bounded(users_support::Backend::Postgres).await;
}

/// Sign-ups are limited per client address; password hashing runs on one slot
/// here, and a request that cannot get it in time is a 503 with Retry-After
/// (never a 500) that does not count as a failed login.
async fn signups_and_hashing_are_bounded(backend: users_support::Backend) {
    let tweak = |config: &mut ydht::daemon::users::UsersConfig| {
        config.signups_per_hour = 3;
        config.hashing_slots = 1;
        config.hashing_queue_deadline = std::time::Duration::from_millis(1);
        config.throttle.per_address = 1000;
    };
    users_support::run_with(backend, "signups_and_hashing_are_bounded", tweak, |ctx| async move {
        let s = ctx.start().await;
        for name in ["nina", "omar", "pia"] {
            s.signup(&format!("{name}@example.com"), name, "password-123").await;
        }
        let refused = s
            .post("/signup", json!({"email": "quin@example.com", "username": "quin", "password": "password-123"}), None)
            .await;
        assert_error(&refused, StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry_after > 3500 && retry_after <= 3600, "{retry_after}");
        assert!(refused.error().contains("sign-ups"), "{}", refused.error());
        let invalid =
            s.post("/signup", json!({"email": "bad", "username": "quin", "password": "password-123"}), None).await;
        assert_error(&invalid, StatusCode::BAD_REQUEST);

        let guesses = (0..30).map(|n| {
            s.post("/login", json!({"email": format!("guess{n}@example.com"), "password": "password-123"}), None)
        });
        let answers = futures_util::future::join_all(guesses).await;
        let statuses: Vec<u16> = answers.iter().map(|answer| answer.status.as_u16()).collect();
        assert!(statuses.iter().all(|status| matches!(status, 401 | 503)), "{statuses:?}");
        let busy: Vec<_> = answers.iter().filter(|answer| answer.status == StatusCode::SERVICE_UNAVAILABLE).collect();
        assert!(!busy.is_empty(), "one hashing slot and a 1 ms queue: some logins must be refused: {statuses:?}");
        assert!(busy.iter().all(|answer| answer.header("retry-after") == Some("1")), "{busy:?}");
        let metrics = s.get("/metrics", None).await.json;
        assert_eq!(metrics["users"], 3, "the refused sign-up created nothing");
        assert_eq!(metrics["signups_throttled"], 1);
        assert_eq!(metrics["hashing_busy"], busy.len() as u64);
        assert_eq!(metrics["login_failures"], (30 - busy.len()) as u64, "a refused login is not a failed one");
        s.login("nina@example.com", "password-123").await;
    })
    .await;
}

async fn health_metrics_and_bad_requests(ctx: Ctx) {
    let s = ctx.start().await;
    let health = s.get("/health", None).await;
    assert_eq!(health.json, json!({"status": "healthy", "service": "users"}));
    let metrics = s.get("/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(metrics.json["service"], "users");
    let backend = match ctx.backend {
        users_support::Backend::Sqlite => "sqlite",
        users_support::Backend::Postgres => "postgres",
    };
    assert_eq!(metrics.json["database"], backend);
    assert_error(&s.get("/no/such/endpoint", None).await, StatusCode::NOT_FOUND);
    let huge = json!({"email": "x@y.io", "username": "xyz", "password": "p".repeat(100 * 1024)});
    assert_error(&s.post("/signup", huge, None).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.get("/metrics", None).await.json["users"], 0, "nothing was created");
    assert_error(&s.send(s.request(Method::PUT, "/apikeys", None)).await, StatusCode::METHOD_NOT_ALLOWED);
}

/// Cookies set by an answer, as `name=value` pairs.
fn set_cookies(answer: &users_support::Answer) -> Vec<(String, String)> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .map(|cookie| {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// The value of the hidden `csrf` field of a page.
fn csrf_field(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("page has a CSRF field") + r#"name="csrf" value=""#.len();
    html[start..start + 64].to_string()
}

async fn web_forms_csrf_and_headers(ctx: Ctx) {
    let s = ctx.start().await;
    let form = |path: &str, cookie: &str, fields: &[(&str, &str)]| {
        s.request(Method::POST, path, None).header("cookie", cookie).form(fields)
    };

    // Every page carries the security headers; the first visit sets the CSRF cookie.
    let page = s.get("/signup", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let set = page.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");
    let (_, csrf) = set_cookies(&page).into_iter().find(|(name, _)| name == "ydht_csrf").unwrap();
    assert_eq!(csrf_field(&page.text), csrf);
    let jar = format!("ydht_csrf={csrf}");
    assert!(s.get("/", None).await.text.contains("Quick start"));

    // CSRF: missing or wrong token → 403, and nothing is created.
    let fields = [("email", "mia@example.com"), ("username", "mia"), ("password", "password-123")];
    let no_token = s.send(form("/signup", &jar, &fields)).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert!(no_token.text.contains("Form expired"));
    let mut with_wrong = fields.to_vec();
    with_wrong.push(("csrf", "f00d"));
    assert_eq!(s.send(form("/signup", &jar, &with_wrong)).await.status, StatusCode::FORBIDDEN);
    let mut with_token = fields.to_vec();
    with_token.push(("csrf", &csrf));
    assert_eq!(s.send(form("/signup", "other=1", &with_token)).await.status, StatusCode::FORBIDDEN, "no cookie");

    // Errors are shown next to the field, values kept (never the password).
    let bad = [("email", "mia@"), ("username", "mia"), ("password", "password-123"), ("csrf", &csrf)];
    let answer = s.send(form("/signup", &jar, &bad)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text.contains(r#"id="email-error""#) && answer.text.contains("invalid email"), "{}", answer.text);
    assert!(answer.text.contains(r#"value="mia""#));
    assert!(!answer.text.contains("password-123"));

    // Sign up → sign in → dashboard.
    let created = s.send(form("/signup", &jar, &with_token)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.text);
    assert_eq!(created.header("location"), Some("/signin?registered=1"));
    let duplicate = s.send(form("/signup", &jar, &with_token)).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert!(duplicate.text.contains("email-error"));

    let wrong = [("email", "mia@example.com"), ("password", "nope-nope"), ("csrf", &csrf)];
    let refused = s.send(form("/signin", &jar, &wrong)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.text.contains("invalid email or password"));
    let right = [("email", "mia@example.com"), ("password", "password-123"), ("csrf", &csrf)];
    let signed_in = s.send(form("/signin", &jar, &right)).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.header("location"), Some("/dashboard"));
    let session_cookie = signed_in.header("set-cookie").unwrap().to_string();
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));
    let (_, session) = set_cookies(&signed_in).into_iter().find(|(name, _)| name == "ydht_session").unwrap();
    let jar = format!("ydht_csrf={csrf}; ydht_session={session}");
    let dashboard = |jar: String| s.send(s.request(Method::GET, "/dashboard", None).header("cookie", jar));
    let page = dashboard(jar.clone()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(r#"id="account-username">mia<"#));
    assert!(page.text.contains("no-keys"));

    // Create a key: shown exactly once, then listed by prefix only.
    let bad_key = [("name", "web key"), ("expires_in_days", "soon"), ("scope_read", "on"), ("csrf", &csrf)];
    let answer = s.send(form("/dashboard/apikeys", &jar, &bad_key)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text.contains(r#"id="days-error""#));
    let no_scope = [("name", "web key"), ("csrf", &csrf)];
    assert!(s.send(form("/dashboard/apikeys", &jar, &no_scope)).await.text.contains(r#"id="scopes-error""#));
    let good_key = [("name", "web key"), ("expires_in_days", "30"), ("scope_read", "on"), ("csrf", &csrf)];
    let answer = s.send(form("/dashboard/apikeys", &jar, &good_key)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let page = dashboard(jar.clone()).await.text;
    let start = page.find(r#"id="new-api-key""#).expect("new key shown");
    let value_at = page[start..].find("value=\"").unwrap() + start + 7;
    let key = &page[value_at..value_at + 45];
    assert!(key.starts_with("ydht_"), "{key}");
    let valid = s.internal("/validate-key", json!({"key": key})).await;
    assert_eq!(valid.json["scopes"], json!(["read"]));
    let again = dashboard(jar.clone()).await.text;
    assert!(!again.contains(key) && again.contains(&key[..8]), "shown once, then only the prefix");

    // Revoke through the form.
    assert_eq!(s.get("/metrics", None).await.json["active_api_keys"], 1);
    let action_at = again.find("/dashboard/apikeys/").unwrap();
    let action: String = again[action_at..].chars().take_while(|c| *c != '"').collect();
    let answer = s.send(form(&action, &jar, &[("csrf", &csrf)])).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{action}");
    assert_error(&s.internal("/validate-key", json!({"key": key})).await, StatusCode::UNAUTHORIZED);
    assert!(dashboard(jar.clone()).await.text.contains(r#"class="badge revoked""#));
    assert_eq!(
        s.send(form("/dashboard/apikeys/99999/revoke", &jar, &[("csrf", &csrf)])).await.status,
        StatusCode::NOT_FOUND
    );

    // Sign out: the session cookie stops working.
    assert_eq!(s.send(form("/signout", &jar, &[("csrf", "bad")])).await.status, StatusCode::FORBIDDEN);
    let out = s.send(form("/signout", &jar, &[("csrf", &csrf)])).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = dashboard(jar.clone()).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.header("location"), Some("/signin"));
    assert_eq!(dashboard(format!("ydht_csrf={csrf}")).await.header("location"), Some("/signin"));

    // The stylesheet is cached and revalidated.
    let css = s.get("/static/style.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.text.contains("prefers-color-scheme: dark"));
    assert!(css.header("cache-control").unwrap().contains("max-age"));
    let etag = css.header("etag").unwrap().to_string();
    let cached = s.send(s.request(Method::GET, "/static/style.css", None).header("if-none-match", etag)).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
}
