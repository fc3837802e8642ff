//! The dashboard's key browser, as a browser without JavaScript uses it:
//! sign in with the form, list (with a prefix filter and paging), view, delete.

use crate::common;

use common::{http, start_cluster, tenant};

/// A cookie-less client that follows no redirects, so the test sees each 303.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `name=value` part of the `Set-Cookie` header for `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .map(|value| value.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn key_browser_lists_filters_pages_views_and_deletes_own_keys() {
    let cluster = start_cluster();
    let client = http();
    let (_, key) = tenant(&client, &cluster.users, "lena").await;
    let (_, other_key) = tenant(&client, &cluster.users, "mona").await;
    for i in 0..55 {
        let response = client
            .put(format!("{}/v1/kv/user:{i:02}", cluster.gateway))
            .header("X-API-Key", &key)
            .header("content-type", "text/plain")
            .body(format!("<b>value {i}</b>"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response =
        client.put(format!("{}/v1/kv/blob", cluster.gateway)).header("X-API-Key", &key).body(vec![0xff, 0xfe, 0x00]);
    assert_eq!(response.send().await.unwrap().status(), 200);
    let response =
        client.put(format!("{}/v1/kv/mona-secret", cluster.gateway)).header("X-API-Key", &other_key).body("hers");
    assert_eq!(response.send().await.unwrap().status(), 200);

    // Sign in through the form (double-submit CSRF cookie).
    let web = browser();
    let users = &cluster.users;
    let response = web.get(format!("{users}/signin")).send().await.unwrap();
    let csrf_cookie = set_cookie(&response, "ydht_csrf").expect("a CSRF cookie");
    let csrf = csrf_cookie.split_once('=').unwrap().1.to_string();
    let response = web
        .post(format!("{users}/signin"))
        .header("cookie", &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("email", "lena@example.com"), ("password", "securepass123")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let session = set_cookie(&response, "ydht_session").expect("a session cookie");
    let cookies = format!("{csrf_cookie}; {session}");
    let page = |path: String| {
        let (web, cookies) = (web.clone(), cookies.clone());
        async move {
            let response = web.get(format!("{users}{path}")).header("cookie", cookies).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // The dashboard links to the browser; without a session the browser is not shown.
    assert!(page("/dashboard".into()).await.1.contains("/dashboard/keys"));
    let anonymous = web.get(format!("{users}/dashboard/keys")).send().await.unwrap();
    assert_ne!(anonymous.status(), 200);

    // Pages of at most 50 of lena's keys, ascending, never mona's, linked by "Next page".
    let (status, html) = page("/dashboard/keys".into()).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"next-page\""), "56 keys need a second page");
    let mut listed: Vec<String> = Vec::new();
    let mut html = html;
    for _ in 0..20 {
        assert!(!html.contains("mona-secret"));
        let rows: Vec<String> = html
            .split("<code>")
            .skip(1)
            .filter_map(|cell| cell.split_once("</code></a>"))
            .map(|(key, _)| key.to_string())
            .collect();
        assert!(rows.len() <= 50);
        listed.extend(rows);
        let Some((before, _)) = html.split_once("id=\"next-page\"") else { break };
        let next = before.rsplit("href=\"").next().unwrap().split('"').next().unwrap();
        html = page(next.replace("&#38;", "&").replace("&amp;", "&")).await.1;
    }
    let mut expected: Vec<String> = (0..55).map(|i| format!("user:{i:02}")).collect();
    expected.insert(0, "blob".to_string());
    assert_eq!(listed, expected);

    // The prefix filter.
    let (_, filtered) = page("/dashboard/keys?prefix=user%3A5".into()).await;
    assert_eq!(filtered.matches("/dashboard/keys/view?key=").count(), 5, "{filtered}");
    assert!(filtered.contains("<code>user:54</code>") && !filtered.contains("<code>user:49</code>"));

    // Viewing a text value shows it escaped; a binary one is described, not dumped.
    let (status, view) = page("/dashboard/keys/view?key=user%3A07".into()).await;
    assert_eq!(status, 200);
    assert!(view.contains("&#60;b&#62;value 7&#60;/b&#62;") && view.contains("text/plain"), "{view}");
    assert!(!view.contains("<b>value"), "the value must be escaped");
    let (_, binary) = page("/dashboard/keys/view?key=blob".into()).await;
    assert!(binary.contains("id=\"binary-value\""), "{binary}");
    // Another tenant's key is simply not there.
    let (status, _) = page("/dashboard/keys/view?key=mona-secret".into()).await;
    assert_eq!(status, 404);

    // Deleting needs the CSRF token, then the key is gone at the gateway too.
    let forged = web
        .post(format!("{users}/dashboard/keys/delete"))
        .header("cookie", &cookies)
        .form(&[("csrf", "forged"), ("key", "user:07"), ("prefix", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let response = web
        .post(format!("{users}/dashboard/keys/delete"))
        .header("cookie", &cookies)
        .form(&[("csrf", csrf.as_str()), ("key", "user:07"), ("prefix", "user:")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/dashboard/keys?prefix=user%3A");
    let gone = client.get(format!("{}/v1/kv/user:07", cluster.gateway)).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let (_, after) = page("/dashboard/keys?prefix=user%3A0".into()).await;
    assert_eq!(after.matches("/dashboard/keys/view?key=").count(), 9, "{after}");

    // A delete applies only to the version the page showed (If-Match): changed meanwhile, the
    // value stays and the page says why; the version shown again deletes it.
    let version_in = |html: &str, key: &str| -> String {
        let form = html.split(&format!("name=\"key\" value=\"{key}\"")).nth(1).expect("a delete form for the key");
        form.split("name=\"version\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string()
    };
    let shown = version_in(&after, "user:08");
    assert!(shown.parse::<u64>().unwrap() > 0, "{shown}");
    let changed = client
        .put(format!("{}/v1/kv/user:08", cluster.gateway))
        .header("X-API-Key", &key)
        .header("X-Consistency", "strong")
        .body("changed");
    let changed = changed.send().await.unwrap();
    assert_eq!(changed.status(), 200);
    let new_version = changed.json::<serde_json::Value>().await.unwrap()["version"].as_u64().unwrap().to_string();
    let delete = |version: String| {
        web.post(format!("{users}/dashboard/keys/delete")).header("cookie", &cookies).form(&[
            ("csrf", csrf.clone()),
            ("key", "user:08".to_string()),
            ("prefix", String::new()),
            ("version", version),
        ])
    };
    let refused = delete(shown).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("changed since this page was shown"));
    let still = client.get(format!("{}/v1/kv/user:08", cluster.gateway)).header("X-API-Key", &key).send().await;
    assert_eq!(still.unwrap().text().await.unwrap(), "changed");
    // The view page reads one replica: wait until it shows the new version (eventual reads).
    let mut shown_now = String::new();
    for _ in 0..100 {
        shown_now = version_in(&page("/dashboard/keys/view?key=user%3A08".into()).await.1, "user:08");
        if shown_now == new_version {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(shown_now, new_version);
    assert_eq!(delete(shown_now).send().await.unwrap().status(), 303);
    let gone = client.get(format!("{}/v1/kv/user:08", cluster.gateway)).header("X-API-Key", &key).send().await;
    assert_eq!(gone.unwrap().status(), 404);
}
