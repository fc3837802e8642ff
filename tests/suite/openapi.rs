//! The hand-maintained OpenAPI documents stay honest: every public route of
//! the gateway and users routers is documented, `/openapi.json` serves the
//! document, and the real answers of a full flow use documented status codes
//! and match the documented schemas (types, required fields, nullability).

use crate::common;

use std::collections::BTreeSet;

use common::{create_key, signup_and_login, start_cluster};
use serde_json::{Value, json};

/// Routes that are deliberately not in the public documents: cluster-internal
/// (cluster secret), operator metrics, the web pages, and the empty-key guard.
const UNDOCUMENTED: &[&str] = &[
    "/cluster",
    "/metrics",
    "/internal/tenants/{user_id}/kv",
    "/internal/tenants/{user_id}/kv/{key}",
    "/v1/kv/",
    "/validate-key",
    "/membership",
    "/membership/seed",
    "/membership/join",
    "/membership/leave",
    "/membership/progress",
    "/",
    "/signin",
    "/signout",
    "/dashboard",
    "/dashboard/apikeys",
    "/dashboard/apikeys/{id}/revoke",
    "/dashboard/keys",
    "/dashboard/keys/view",
    "/dashboard/keys/delete",
    "/static/style.css",
];

/// The paths of every `.route("…"` in `source`, with `{*rest}` written `{rest}` as in OpenAPI.
fn routes_in(source: &str) -> BTreeSet<String> {
    source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|path| path.replace("{*", "{"))
        .collect()
}

fn documented(document: &Value) -> BTreeSet<String> {
    document["paths"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_public_route_is_documented_and_nothing_else() {
    let gateway: Value = serde_json::from_str(ydht::daemon::gateway::routes::OPENAPI).unwrap();
    let users: Value = serde_json::from_str(ydht::daemon::users::OPENAPI).unwrap();
    let sources = [
        (&gateway, routes_in(include_str!("../../src/daemon/gateway/routes.rs"))),
        (
            &users,
            [
                include_str!("../../src/daemon/users/mod.rs"),
                include_str!("../../src/daemon/users/web.rs"),
                include_str!("../../src/daemon/users/browser.rs"),
            ]
            .iter()
            .flat_map(|source| routes_in(source))
            .collect(),
        ),
    ];
    for (document, routes) in sources {
        assert_eq!(document["openapi"], "3.0.3");
        let public: BTreeSet<String> =
            routes.into_iter().filter(|path| !UNDOCUMENTED.contains(&path.as_str())).collect();
        assert!(public.len() >= 4, "route scan found too little: {public:?}");
        assert_eq!(public, documented(document), "{}", document["info"]["title"]);
    }
}

#[test]
fn bad_bodies_are_documented_as_400_never_422() {
    for document in [ydht::daemon::gateway::routes::OPENAPI, ydht::daemon::users::OPENAPI] {
        let document: Value = serde_json::from_str(document).unwrap();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(!responses.contains_key("422"), "{method} {path} lists 422; a bad body is a 400");
                if operation.get("requestBody").is_some() {
                    assert!(responses.contains_key("400"), "{method} {path} takes a body but lists no 400");
                }
            }
        }
    }
}

/// Resolves `#/components/…` references.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let mut target = document;
            for part in reference.trim_start_matches("#/").split('/') {
                target = &target[part];
            }
            resolve(document, target)
        }
        None => schema,
    }
}

/// Checks `value` against the subset of JSON Schema the documents use.
fn conforms(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(document, schema);
    if value.is_null() {
        return if schema["nullable"] == true { Ok(()) } else { Err(format!("{at}: null but not nullable")) };
    }
    let kind = schema["type"].as_str().unwrap_or("any");
    let fits = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !fits {
        return Err(format!("{at}: expected {kind}, got {value}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(required) = schema["required"].as_array() {
        for field in required {
            let field = field.as_str().unwrap();
            if value.get(field).is_none() {
                return Err(format!("{at}: required field {field} missing in {value}"));
            }
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
        for (name, property) in properties {
            if let Some(field) = object.get(name) {
                conforms(document, property, field, &format!("{at}.{name}"))?;
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            conforms(document, items, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// Sends `request`; checks that `path` + `method` documents the status, and that a JSON body matches it.
async fn check(document: &Value, path: &str, method: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let text = response.text().await.unwrap();
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let documented = resolve(document, &operation["responses"][status.to_string()]);
    assert!(documented.is_object(), "{method} {path} answered {status}, which is not documented: {text}");
    let body = if is_json { serde_json::from_str(&text).unwrap() } else { Value::String(text) };
    if let Some(schema) = documented["content"]["application/json"].get("schema") {
        assert!(is_json, "{method} {path} {status}: documented as JSON");
        if let Err(problem) = conforms(document, schema, &body, "body") {
            panic!("{method} {path} {status}: {problem}");
        }
    }
    (status, body)
}

#[tokio::test]
async fn real_answers_of_a_full_flow_match_the_documents() {
    let cluster = start_cluster();
    let http = common::http();
    let (users, gateway) = (&cluster.users, &cluster.gateway);
    let user_doc: Value = http.get(format!("{users}/openapi.json")).send().await.unwrap().json().await.unwrap();
    let gateway_doc: Value = http.get(format!("{gateway}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(user_doc, serde_json::from_str::<Value>(ydht::daemon::users::OPENAPI).unwrap());
    assert_eq!(gateway_doc, serde_json::from_str::<Value>(ydht::daemon::gateway::routes::OPENAPI).unwrap());
    let u = &user_doc;
    let g = &gateway_doc;

    // Users service.
    let signup = json!({"email": "doc@example.com", "username": "doc", "password": "securepass123"});
    check(u, "/signup", "post", http.post(format!("{users}/signup")).json(&signup)).await;
    check(u, "/signup", "post", http.post(format!("{users}/signup")).json(&signup)).await; // 409
    check(u, "/signup", "post", http.post(format!("{users}/signup")).json(&json!({"email": 1}))).await;
    let login = json!({"email": "doc@example.com", "password": "securepass123"});
    let (_, pair) = check(u, "/login", "post", http.post(format!("{users}/login")).json(&login)).await;
    let token = pair["access_token"].as_str().unwrap().to_string();
    let wrong = json!({"email": "doc@example.com", "password": "wrong-password"});
    check(u, "/login", "post", http.post(format!("{users}/login")).json(&wrong)).await;
    let refresh = json!({"refresh_token": pair["refresh_token"]});
    check(u, "/refresh", "post", http.post(format!("{users}/refresh")).json(&refresh)).await;
    check(u, "/refresh", "post", http.post(format!("{users}/refresh")).json(&json!({"refresh_token": "nope"}))).await;
    // Reuse of the spent refresh token revoked that session: log in again.
    let account = signup_and_login(&http, users, "doc2").await;
    let token2 = account.token.clone();
    check(u, "/me", "get", http.get(format!("{users}/me")).bearer_auth(&token2)).await;
    check(u, "/me", "get", http.get(format!("{users}/me")).bearer_auth(&token)).await; // 401: revoked family
    let create = json!({"name": "doc key", "scopes": ["read", "write"], "expires_in_days": 30});
    let (status, created) =
        check(u, "/apikeys", "post", http.post(format!("{users}/apikeys")).bearer_auth(&token2).json(&create)).await;
    assert_eq!(status, 201);
    check(u, "/apikeys", "post", http.post(format!("{users}/apikeys")).bearer_auth(&token2).json(&json!({"name": ""})))
        .await;
    let (_, key) = create_key(&http, users, &account, &["read", "write"]).await;
    check(u, "/apikeys", "get", http.get(format!("{users}/apikeys")).bearer_auth(&token2)).await;
    let id = created["id"].as_i64().unwrap();
    check(u, "/apikeys/{id}", "delete", http.delete(format!("{users}/apikeys/{id}")).bearer_auth(&token2)).await;
    check(u, "/apikeys/{id}", "delete", http.delete(format!("{users}/apikeys/{id}9")).bearer_auth(&token2)).await;
    check(u, "/apikeys/{id}", "delete", http.delete(format!("{users}/apikeys/abc")).bearer_auth(&token2)).await;
    check(u, "/health", "get", http.get(format!("{users}/health"))).await;

    // Gateway.
    let kv = |path: &str| format!("{gateway}/v1/kv/{path}");
    let (status, _) = check(g, "/v1/kv/{key}", "put", http.put(kv("a/b")).header("x-api-key", &key).body("v1")).await;
    assert_eq!(status, 200);
    check(g, "/v1/kv/{key}", "put", http.put(kv("t?ttl=1h")).header("x-api-key", &key).body("v2")).await;
    check(g, "/v1/kv/{key}", "put", http.put(kv("t?ttl=never")).header("x-api-key", &key).body("v2")).await;
    let strong = http.put(kv("s")).header("x-api-key", &key).header("x-consistency", "strong").body("v3");
    check(g, "/v1/kv/{key}", "put", strong).await;
    check(g, "/v1/kv/{key}", "put", http.put(kv("x")).header("x-api-key", "wrong").body("v")).await;
    check(g, "/v1/kv/{key}", "get", http.get(kv("a/b")).header("x-api-key", &key)).await;
    check(g, "/v1/kv/{key}", "get", http.get(kv("missing")).header("x-api-key", &key)).await;
    check(g, "/v1/kv/{key}", "get", http.get(kv("a/b")).header("x-api-key", &key).header("x-consistency", "no")).await;
    let (status, listing) =
        check(g, "/v1/kv", "get", http.get(format!("{gateway}/v1/kv")).header("x-api-key", &key)).await;
    assert_eq!((status, listing["keys"].as_array().unwrap().len()), (200, 3));
    check(g, "/v1/kv", "get", http.get(format!("{gateway}/v1/kv?limit=0")).header("x-api-key", &key)).await;
    check(g, "/v1/kv", "get", http.get(format!("{gateway}/v1/kv?limit=1&prefix=a")).header("x-api-key", &key)).await;
    check(g, "/v1/kv/{key}", "delete", http.delete(kv("a/b")).header("x-api-key", &key)).await;
    check(g, "/v1/kv/{key}", "delete", http.delete(kv("never-there")).header("x-api-key", &key)).await;
    let batch =
        |body: serde_json::Value| http.post(format!("{gateway}/v1/batch")).header("x-api-key", &key).json(&body);
    let mixed = serde_json::json!({"ops": [
        {"op": "put", "key": "b1", "value": "v", "ttl": "1h"},
        {"op": "put", "key": "b2", "value_base64": "AP8="},
        {"op": "get", "key": "b1"},
        {"op": "get", "key": "b2"},
        {"op": "get", "key": "nothing"},
        {"op": "put", "key": "b1", "value": "w", "if_match": 1},
        {"op": "put", "key": "", "value": "w"},
        {"op": "delete", "key": "b2"},
    ]});
    let (status, answer) = check(g, "/v1/batch", "post", batch(mixed)).await;
    assert_eq!((status, answer["results"].as_array().unwrap().len()), (200, 8));
    check(g, "/v1/batch", "post", batch(serde_json::json!({"ops": []}))).await;
    check(g, "/health", "get", http.get(format!("{gateway}/health"))).await;

    // The watch: refusals as JSON errors; a stream whose events carry documented WatchEvents.
    let watch = |query: &str| http.get(format!("{gateway}/v1/watch?{query}")).header("x-api-key", &key);
    check(g, "/v1/watch", "get", watch("prefix=a&key=b")).await;
    check(g, "/v1/watch", "get", http.get(format!("{gateway}/v1/watch"))).await;
    let mut stream = watch("prefix=w/&values=true").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let documented = &g["paths"]["/v1/watch"]["get"]["responses"]["200"]["content"];
    assert!(documented["text/event-stream"].is_object(), "the stream is documented as text/event-stream");
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    http.put(format!("{gateway}/v1/kv/w/doc")).header("x-api-key", &key).body("v").send().await.unwrap();
    let mut parser = ydht::client::watch::SseParser::default();
    let event = loop {
        let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
        if let Some(event) = parser.push(&chunk).unwrap().into_iter().next() {
            break event;
        }
    };
    assert_eq!(event.event, "put");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    let schema = json!({"$ref": "#/components/schemas/WatchEvent"});
    if let Err(problem) = conforms(g, &schema, &data, "event data") {
        panic!("GET /v1/watch event: {problem}");
    }
}
