//! TLS end to end: a private CA and a server certificate generated here, a
//! whole `ydht serve all` cluster serving HTTPS (users, gateway, nodes,
//! replicator all talk https to each other, trusting the CA via YDHT_CA_FILE),
//! the CLI client with `--ca-file`, plain HTTP refused cleanly, and bad
//! certificate paths as one-line usage errors.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Service, create_key, signup_and_login, start_cluster_with};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of a test CA and of a server certificate it signed for localhost / 127.0.0.1.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn generate_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ydht test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        _dir: dir,
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, server_cert.pem()).unwrap();
    std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
    pki
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An HTTPS client that trusts the test CA.
fn trusting(ca: &Path) -> reqwest::Client {
    let certificate = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().add_root_certificate(certificate).timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test]
async fn a_whole_cluster_serves_https_with_a_private_ca_and_refuses_plain_http() {
    let pki = generate_pki();
    let cluster = start_cluster_with(&[
        ("YDHT_TLS_CERT", path(&pki.cert)),
        ("YDHT_TLS_KEY", path(&pki.key)),
        ("YDHT_CA_FILE", path(&pki.ca)),
    ]);
    for url in [&cluster.gateway, &cluster.users, &cluster.replicator, &cluster.nodes[0]] {
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    }
    let client = trusting(&pki.ca);

    // Account, API key and a quorum write: users, gateway → users, gateway → nodes and replicator, all over https.
    let account = signup_and_login(&client, &cluster.users, "tlsuser").await;
    let (_, key) = create_key(&client, &cluster.users, &account, &["read", "write"]).await;
    let response = client
        .put(format!("{}/v1/kv/greeting", cluster.gateway))
        .header("x-api-key", &key)
        .header("x-consistency", "strong")
        .body("hello over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response =
        client.get(format!("{}/v1/kv/greeting", cluster.gateway)).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello over tls");

    // Every replica gets the value (the replicator writes to the nodes over https too).
    let stored_key = format!("{}/greeting", account.user_id);
    let secret = cluster.secret();
    for node in &cluster.nodes {
        let url = reqwest::Url::parse(node).unwrap().join("store/").unwrap().join(&stored_key).unwrap();
        let converged = common::eventually(Duration::from_secs(20), || {
            let request = client.get(url.clone()).header("x-cluster-secret", &secret);
            async move {
                match request.send().await {
                    Ok(response) if response.status() == 200 => response.text().await.unwrap() == "hello over tls",
                    _ => false,
                }
            }
        })
        .await;
        assert!(converged, "{node} never held the value");
    }

    // The CLI client over https: trusts the CA only when told to.
    let cli = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ydht"));
        command
            .args(extra)
            .args(["--gateway", &cluster.gateway, "--api-key", &key, "kv", "get", "greeting"])
            .env_remove("YDHT_CA_FILE")
            .env("YDHT_CONFIG_DIR", cluster.data_dir.path().join("client"));
        command.output().unwrap()
    };
    let trusted = cli(&["--ca-file", path(&pki.ca)]);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim_end(), "hello over tls");
    let untrusted = cli(&[]);
    assert_eq!(untrusted.status.code(), Some(4), "{untrusted:?}");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    // A client that does not trust the CA is refused by certificate verification.
    let plain_client = common::http();
    let error = plain_client.get(format!("{}/health", cluster.gateway)).send().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");

    // Plain HTTP to the TLS port fails (no HTTP answer), promptly; the service keeps serving https.
    for service in [&cluster.gateway, &cluster.users] {
        let plain = service.replacen("https://", "http://", 1);
        let outcome = plain_client.get(format!("{plain}/health")).timeout(Duration::from_secs(20)).send().await;
        match outcome {
            Ok(response) => panic!("plain HTTP got an answer: {}", response.status()),
            Err(error) => assert!(!error.is_timeout(), "plain HTTP hung: {error:?}"),
        }
        let response = client.get(format!("{service}/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[test]
fn a_bad_certificate_path_is_a_one_line_usage_error() {
    let pki = generate_pki();
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("missing-cert.pem");
    for (service, args) in [
        ("gateway", vec!["--tls-cert", path(&missing), "--tls-key", path(&pki.key)]),
        ("users", vec!["--tls-cert", path(&pki.cert), "--tls-key", path(&missing)]),
        ("gateway", vec!["--tls-cert", path(&pki.cert)]),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ydht"))
            .args(["serve", service, "--port", "0", "--data-dir", path(data.path())])
            .args(&args)
            .env_remove("YDHT_TLS_CERT")
            .env_remove("YDHT_TLS_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{service} {args:?}: {stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains("--tls-"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output =
        Command::new(env!("CARGO_BIN_EXE_ydht")).args(["--ca-file", path(&missing), "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--ca-file") && stderr.trim_end().lines().count() == 1, "{stderr}");
}

/// A lone TLS service (not `serve all`) announces https and answers its health check.
#[tokio::test]
async fn a_single_users_service_announces_https() {
    let pki = generate_pki();
    let data = tempfile::tempdir().unwrap();
    let (_users, url) = Service::spawn_one(
        &["serve", "users", "--port", "0", "--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)],
        &[("YDHT_DATA_DIR", path(data.path()))],
    );
    assert!(url.starts_with("https://"), "{url}");
    let response = trusting(&pki.ca).get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}
