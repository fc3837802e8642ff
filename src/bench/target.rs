//! What a benchmark talks to, and how one put, get or delete is sent there.
//!
//! Everything a request needs is built before the run: one URL per key, the
//! value as [`Bytes`] (cloning it is a reference-count increment), the header
//! values. A request then costs one URL clone and the HTTP exchange itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};

use super::summary::ErrorKind;
use crate::hlc::Hlc;
use crate::proto::{API_KEY_HEADER, CLUSTER_SECRET_HEADER, CONSISTENCY_HEADER, VERSION_HEADER};

/// Where the load goes.
#[derive(Debug)]
pub enum Endpoint {
    /// The public API, `/v1/kv/{key}` on a gateway (two hops: gateway → nodes).
    Gateway {
        /// `X-API-Key`.
        api_key: HeaderValue,
        /// `X-Consistency`: `eventual` or `strong`.
        consistency: HeaderValue,
    },
    /// One storage node's internal `/store/{key}` (one hop).
    Node {
        /// `x-cluster-secret`.
        secret: HeaderValue,
        /// Issues the `x-version` of every put.
        clock: Hlc,
    },
    /// etcd's v3 HTTP/JSON gateway (`/v3/kv/put`, serializable `/v3/kv/range`, `/v3/kv/deleterange`), for comparisons.
    Etcd,
}

impl Endpoint {
    /// `gateway`, `node` or `etcd`.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Gateway { .. } => "gateway",
            Endpoint::Node { .. } => "node",
            Endpoint::Etcd => "etcd",
        }
    }
}

/// A prepared target: the endpoint plus every key's request URL and body.
#[derive(Debug)]
pub struct Target {
    /// The kind of endpoint and its credentials.
    pub endpoint: Endpoint,
    /// One URL per key for the key-addressed endpoints (gateway, node); etcd's three operation URLs.
    urls: Vec<Url>,
    /// The run's key prefix (keys are `{prefix}{index}`).
    prefix: String,
    /// Put bodies: one shared value (gateway, node) or one JSON document per key (etcd).
    put_bodies: Vec<Bytes>,
    /// Range bodies per key (etcd only).
    get_bodies: Vec<Bytes>,
    /// `POST /v1/batch` on the gateway, and the `ttl` its puts carry.
    batch_url: Option<Url>,
    ttl: Option<String>,
}

/// The value every put writes: `size` printable bytes.
pub fn value_of_size(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// `base` with `segments` appended as percent-encoded path segments ([`crate::urlpath`]).
fn join(base: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    Ok(crate::urlpath::join(base, segments)?)
}

impl Target {
    /// Prepares `keys` keys named `{prefix}{index}` on `base`, with `value` as the value;
    /// `ttl` (gateway only) is sent as `?ttl=`.
    pub fn new(
        endpoint: Endpoint,
        base: &Url,
        prefix: &str,
        keys: u64,
        value: Bytes,
        ttl: Option<&str>,
    ) -> anyhow::Result<Target> {
        let name = |index: u64| format!("{prefix}{index}");
        let (urls, put_bodies, get_bodies) = match &endpoint {
            Endpoint::Gateway { .. } | Endpoint::Node { .. } => {
                let route: &[&str] =
                    if matches!(endpoint, Endpoint::Gateway { .. }) { &["v1", "kv"] } else { &["store"] };
                let mut urls = Vec::with_capacity(keys as usize);
                for index in 0..keys {
                    let key = name(index);
                    let mut segments = route.to_vec();
                    segments.push(&key);
                    let mut url = join(base, &segments)?;
                    if let Some(ttl) = ttl {
                        url.query_pairs_mut().append_pair("ttl", ttl);
                    }
                    urls.push(url);
                }
                (urls, vec![value], Vec::new())
            }
            Endpoint::Etcd => {
                let urls = vec![
                    join(base, &["v3", "kv", "put"])?,
                    join(base, &["v3", "kv", "range"])?,
                    join(base, &["v3", "kv", "deleterange"])?,
                ];
                let value = BASE64.encode(&value);
                let mut puts = Vec::with_capacity(keys as usize);
                let mut gets = Vec::with_capacity(keys as usize);
                for index in 0..keys {
                    let key = BASE64.encode(name(index));
                    puts.push(Bytes::from(format!(r#"{{"key":"{key}","value":"{value}"}}"#)));
                    gets.push(Bytes::from(format!(r#"{{"key":"{key}","serializable":true}}"#)));
                }
                (urls, puts, gets)
            }
        };
        let batch_url = match endpoint {
            Endpoint::Gateway { .. } => Some(join(base, &["v1", "batch"])?),
            _ => None,
        };
        let ttl = ttl.map(str::to_string);
        Ok(Target { endpoint, urls, prefix: prefix.to_string(), put_bodies, get_bodies, batch_url, ttl })
    }

    /// The `POST /v1/batch` body writing the keys `indices`.
    fn batch_body(&self, indices: &[u64]) -> Vec<u8> {
        // The value is printable ASCII (value_of_size): it goes as text.
        let value = std::str::from_utf8(&self.put_bodies[0]).unwrap_or_default();
        let ops: Vec<serde_json::Value> = indices
            .iter()
            .map(|index| {
                let mut op = serde_json::json!({"op": "put", "key": format!("{}{index}", self.prefix), "value": value});
                if let Some(ttl) = &self.ttl {
                    op["ttl"] = serde_json::json!(ttl);
                }
                op
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "ops": ops })).expect("JSON of strings")
    }

    /// Writes the keys `indices` in one `POST /v1/batch` (gateway only); an error when the request
    /// or any of its operations failed (the first failed operation's status).
    pub async fn put_batch(&self, client: &Client, indices: &[u64]) -> Result<(), ErrorKind> {
        let (Endpoint::Gateway { api_key, consistency }, Some(url)) = (&self.endpoint, &self.batch_url) else {
            unreachable!("the plan refuses --batch for other targets")
        };
        let request = client
            .request(Method::POST, url.clone())
            .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone())
            .header(HeaderName::from_static(CONSISTENCY_HEADER), consistency.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(self.batch_body(indices));
        let response = request.send().await.map_err(|error| ErrorKind::of(&error))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| ErrorKind::of(&error))?;
        if !status.is_success() {
            return Err(ErrorKind::Status(status.as_u16()));
        }
        let answer: crate::proto::BatchResponse =
            serde_json::from_slice(&body).map_err(|_| ErrorKind::Status(status.as_u16()))?;
        match answer.results.iter().find(|result| result.status != 200) {
            Some(failed) => Err(ErrorKind::Status(failed.status)),
            None => Ok(()),
        }
    }

    /// Writes key `index`.
    pub async fn put(&self, client: &Client, index: u64) -> Result<(), ErrorKind> {
        let index = index as usize;
        let request = match &self.endpoint {
            Endpoint::Gateway { api_key, consistency } => client
                .request(Method::PUT, self.urls[index].clone())
                .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone())
                .header(HeaderName::from_static(CONSISTENCY_HEADER), consistency.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
                .body(self.put_bodies[0].clone()),
            Endpoint::Node { secret, clock } => client
                .request(Method::PUT, self.urls[index].clone())
                .header(HeaderName::from_static(CLUSTER_SECRET_HEADER), secret.clone())
                .header(HeaderName::from_static(VERSION_HEADER), HeaderValue::from(clock.now()))
                .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
                .body(self.put_bodies[0].clone()),
            Endpoint::Etcd => client
                .request(Method::POST, self.urls[0].clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(self.put_bodies[index].clone()),
        };
        exchange(request).await
    }

    /// Writes key `index` only if it is still at the version this client last saw (`etags`; a
    /// read learns it the first time). A 200 or a 412 answers the key's current ETag, which the
    /// next conditional write of the key sends; a 412 is an error of its own kind (`http_412`).
    pub async fn cas(
        &self,
        client: &Client,
        index: u64,
        etags: &mut std::collections::HashMap<u64, HeaderValue>,
    ) -> Result<(), ErrorKind> {
        let Endpoint::Gateway { api_key, consistency } = &self.endpoint else {
            unreachable!("the plan refuses --op cas for other targets")
        };
        let seen = match etags.get(&index) {
            Some(seen) => seen.clone(),
            None => {
                // The first write of a key learns its version with a read (the keys exist: the run created them).
                let read = client
                    .request(Method::GET, self.urls[index as usize].clone())
                    .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone());
                let response = read.send().await.map_err(|error| ErrorKind::of(&error))?;
                let seen = response.headers().get(reqwest::header::ETAG).cloned();
                response.bytes().await.map_err(|error| ErrorKind::of(&error))?;
                seen.unwrap_or_else(|| HeaderValue::from_static("*"))
            }
        };
        let request = client
            .request(Method::PUT, self.urls[index as usize].clone())
            .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone())
            .header(HeaderName::from_static(CONSISTENCY_HEADER), consistency.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
            .header(reqwest::header::IF_MATCH, seen)
            .body(self.put_bodies[0].clone());
        let response = request.send().await.map_err(|error| ErrorKind::of(&error))?;
        let status = response.status();
        if let Some(etag) = response.headers().get(reqwest::header::ETAG) {
            etags.insert(index, etag.clone());
        }
        response.bytes().await.map_err(|error| ErrorKind::of(&error))?;
        if status.is_success() { Ok(()) } else { Err(ErrorKind::Status(status.as_u16())) }
    }

    /// Reads key `index`.
    pub async fn get(&self, client: &Client, index: u64) -> Result<(), ErrorKind> {
        let index = index as usize;
        let request = match &self.endpoint {
            Endpoint::Gateway { api_key, consistency } => client
                .request(Method::GET, self.urls[index].clone())
                .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone())
                .header(HeaderName::from_static(CONSISTENCY_HEADER), consistency.clone()),
            Endpoint::Node { secret, .. } => client
                .request(Method::GET, self.urls[index].clone())
                .header(HeaderName::from_static(CLUSTER_SECRET_HEADER), secret.clone()),
            Endpoint::Etcd => client
                .request(Method::POST, self.urls[1].clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(self.get_bodies[index].clone()),
        };
        exchange(request).await
    }

    /// Deletes key `index` (cleaning up after a run); a key that was never written is no error.
    pub async fn delete(&self, client: &Client, index: u64) -> Result<(), ErrorKind> {
        let key_url = || {
            let mut url = self.urls[index as usize].clone();
            url.set_query(None);
            url
        };
        let request = match &self.endpoint {
            Endpoint::Gateway { api_key, consistency } => client
                .request(Method::DELETE, key_url())
                .header(HeaderName::from_static(API_KEY_HEADER), api_key.clone())
                .header(HeaderName::from_static(CONSISTENCY_HEADER), consistency.clone()),
            Endpoint::Node { secret, clock } => client
                .request(Method::DELETE, key_url())
                .header(HeaderName::from_static(CLUSTER_SECRET_HEADER), secret.clone())
                .header(HeaderName::from_static(VERSION_HEADER), HeaderValue::from(clock.now())),
            Endpoint::Etcd => {
                let key = BASE64.encode(format!("{}{index}", self.prefix));
                client
                    .request(Method::POST, self.urls[2].clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(format!(r#"{{"key":"{key}"}}"#))
            }
        };
        match exchange(request).await {
            Err(ErrorKind::Status(404)) => Ok(()),
            other => other,
        }
    }
}

/// Sends a request and reads the whole answer (so the connection goes back to the pool).
async fn exchange(request: reqwest::RequestBuilder) -> Result<(), ErrorKind> {
    let response = request.send().await.map_err(|error| ErrorKind::of(&error))?;
    let status = response.status();
    response.bytes().await.map_err(|error| ErrorKind::of(&error))?;
    if status.is_success() { Ok(()) } else { Err(ErrorKind::Status(status.as_u16())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:8080").unwrap()
    }

    #[test]
    fn gateway_urls_carry_the_key_as_one_segment_and_the_ttl() {
        let endpoint = Endpoint::Gateway {
            api_key: HeaderValue::from_static("k"),
            consistency: HeaderValue::from_static("strong"),
        };
        let target = Target::new(endpoint, &base(), "bench/ab12/", 3, value_of_size(4), Some("1h")).unwrap();
        assert_eq!(target.urls.len(), 3);
        assert_eq!(target.urls[2].as_str(), "http://127.0.0.1:8080/v1/kv/bench%2Fab12%2F2?ttl=1h");
        assert_eq!(&target.put_bodies[0][..], b"abcd");
        let body: serde_json::Value = serde_json::from_slice(&target.batch_body(&[0, 2])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"ops": [
                {"op": "put", "key": "bench/ab12/0", "value": "abcd", "ttl": "1h"},
                {"op": "put", "key": "bench/ab12/2", "value": "abcd", "ttl": "1h"},
            ]})
        );
    }

    #[test]
    fn node_urls_address_the_store() {
        let endpoint = Endpoint::Node { secret: HeaderValue::from_static("s"), clock: Hlc::new() };
        let target = Target::new(endpoint, &base(), "bench/x/", 1, value_of_size(1), None).unwrap();
        assert_eq!(target.urls[0].as_str(), "http://127.0.0.1:8080/store/bench%2Fx%2F0");
    }

    #[test]
    fn etcd_bodies_are_base64_json() {
        let target = Target::new(Endpoint::Etcd, &base(), "b/", 2, value_of_size(3), None).unwrap();
        assert_eq!(target.urls[0].path(), "/v3/kv/put");
        assert_eq!(target.urls[1].path(), "/v3/kv/range");
        let put: serde_json::Value = serde_json::from_slice(&target.put_bodies[1]).unwrap();
        assert_eq!(put["key"], BASE64.encode("b/1"));
        assert_eq!(put["value"], BASE64.encode("abc"));
        let get: serde_json::Value = serde_json::from_slice(&target.get_bodies[0]).unwrap();
        assert_eq!(get["serializable"], true);
    }
}
