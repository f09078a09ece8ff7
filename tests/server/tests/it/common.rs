#![allow(dead_code)]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use token_server::{start, Config, Server};

pub struct Harness {
    pub server: Server,
    pub base: String,
    pub http: Client,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("field {field} missing in {}", self.text))
            .to_string()
    }
}

pub struct Pair {
    pub access: String,
    pub refresh: String,
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub async fn harness_with(f: impl FnOnce(&mut Config)) -> Harness {
    let mut cfg = Config {
        test_controls: true,
        ..Config::default()
    };
    f(&mut cfg);
    let server = start(cfg).await.expect("server starts");
    let base = server.url();
    Harness {
        server,
        base,
        http: client(),
    }
}

/// The generous timeout only turns a server bug into a failure instead of a stuck test.
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A client that opens a new connection per request: tests with tiny connection timeouts must
/// not race a pooled keep-alive connection against the server closing it.
pub fn unpooled_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// The `name=value` part of a Set-Cookie header, ready to send back in `Cookie`.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub async fn read(rb: RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request answered");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

/// Claims of a JWT, decoded without verification (tests only).
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("three parts");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Resp {
        read(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        read(
            self.http
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut rb = self.http.get(self.url(path));
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        read(rb).await
    }

    pub async fn login(&self) -> Pair {
        let r = self
            .post_json(
                "/auth/login",
                json!({"username": "demo", "password": "demo"}),
            )
            .await;
        assert_eq!(r.status, 200, "login: {}", r.text);
        Pair {
            access: r.str("access_token"),
            refresh: r.str("refresh_token"),
        }
    }

    /// Logs in as demo/demo with extra fields (`client_id`, `scope`, `cookie_only`…).
    pub async fn login_with(&self, extra: Value) -> Resp {
        let mut body = json!({"username": "demo", "password": "demo"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.post_json("/auth/login", body).await
    }

    /// A cookie-mode login; returns the cookie pair and the access token.
    pub async fn cookie_login(&self) -> (String, String) {
        let r = self.login_with(json!({"cookie_only": true})).await;
        assert_eq!(r.status, 200, "login: {}", r.text);
        let cookie = cookie_pair(&r.header("set-cookie").expect("cookie mode sets the cookie"));
        (cookie, r.str("access_token"))
    }

    /// A refresh that carries only the cookie, as `fetch(url, {method:'POST', credentials})`.
    pub async fn cookie_refresh(&self, cookie: &str, origin: Option<&str>) -> Resp {
        let mut rb = self
            .http
            .post(self.url("/auth/refresh-token"))
            .header("cookie", cookie);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        read(rb).await
    }

    pub async fn family_state(&self) -> Value {
        let fams = self.control_get("/families").await;
        assert_eq!(fams.as_array().map(Vec::len), Some(1), "{fams}");
        fams[0].clone()
    }

    pub async fn refresh(&self, rt: &str) -> Resp {
        self.post_json("/auth/refresh-token", json!({ "refresh_token": rt }))
            .await
    }

    /// Refreshes and insists on success.
    pub async fn rotate(&self, rt: &str) -> Pair {
        let r = self.refresh(rt).await;
        assert_eq!(r.status, 200, "refresh: {}", r.text);
        Pair {
            access: r.str("access_token"),
            refresh: r.str("refresh_token"),
        }
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.post_json(&format!("/__control{path}"), body).await;
        assert_eq!(r.status, 200, "control {path}: {}", r.text);
        r.body
    }

    pub async fn control_get(&self, path: &str) -> Value {
        let r = self.get(&format!("/__control{path}"), None).await;
        assert_eq!(r.status, 200, "control {path}: {}", r.text);
        r.body
    }

    pub async fn stat(&self, name: &str) -> u64 {
        self.control_get("/stats").await[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no stat {name}"))
    }

    pub async fn advance_clock(&self, ms: i64) {
        self.control("/clock", json!({ "advance_ms": ms })).await;
    }

    /// Asserts a refresh failure with `invalid_grant` and the given cause.
    pub async fn expect_grant_error(&self, rt: &str, cause: &str) -> Resp {
        let r = self.refresh(rt).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"], "invalid_grant", "{}", r.text);
        assert_eq!(r.body["cause"], cause, "{}", r.text);
        r
    }

    pub async fn expect_invalid_token(&self, at: &str) -> Resp {
        let r = self.get("/statistics", Some(at)).await;
        assert_eq!(r.status, 401, "{}", r.text);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.contains("error=\"invalid_token\""), "{www}");
        assert_eq!(r.body["error"], "invalid_token");
        r
    }
}
