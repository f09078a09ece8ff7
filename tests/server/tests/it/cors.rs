//! CORS defaults: the server's own origins only, and a control API no other origin can use.

use serde_json::json;

use crate::common::*;

fn own_origins(h: &Harness) -> [String; 2] {
    let port = h.server.addr.port();
    [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ]
}

async fn preflight(h: &Harness, path: &str, origin: &str) -> Resp {
    read(
        h.http
            .request(reqwest::Method::OPTIONS, h.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type"),
    )
    .await
}

async fn refresh_from(h: &Harness, origin: &str) -> Resp {
    read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("origin", origin)
            .json(&json!({"refresh_token": "unknown"})),
    )
    .await
}

#[tokio::test]
async fn by_default_only_the_servers_own_origins_are_allowed() {
    let h = harness().await;
    assert_eq!(h.server.cors_origins(), own_origins(&h));
    // The browser tests load the page from localhost and call 127.0.0.1: both must pass.
    for origin in own_origins(&h) {
        let pre = preflight(&h, "/auth/refresh-token", &origin).await;
        assert_eq!(pre.status, 204, "{origin}: {}", pre.text);
        assert_eq!(
            pre.header("access-control-allow-origin").as_deref(),
            Some(origin.as_str())
        );
        assert_eq!(
            pre.header("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        let r = refresh_from(&h, &origin).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin.as_str())
        );
    }
    // Another port on the same host is another origin; so are look-alikes.
    for evil in [
        "http://127.0.0.1:1",
        "http://localhost:1",
        "http://evil.test",
        "null",
        &format!("https://127.0.0.1:{}", h.server.addr.port()),
    ] {
        let r = refresh_from(&h, evil).await;
        assert_eq!(r.status, 400, "{evil}: still processed, just not readable");
        assert!(r.header("access-control-allow-origin").is_none(), "{evil}");
        assert!(
            r.header("access-control-allow-credentials").is_none(),
            "{evil}"
        );
        assert!(r.header("vary").unwrap_or_default().contains("Origin"));
        let pre = preflight(&h, "/auth/refresh-token", evil).await;
        assert_eq!(pre.status, 403, "{evil}");
        assert!(pre.header("access-control-allow-origin").is_none());
    }
}

#[tokio::test]
async fn control_api_refuses_foreign_origins_and_sends_no_cors_headers() {
    let h = harness().await;
    let p = h.login().await;
    let evil = "http://127.0.0.1:1";
    let stats = read(h.http.get(h.url("/__control/stats")).header("origin", evil)).await;
    assert_eq!(stats.status, 403, "{}", stats.text);
    assert!(stats.header("access-control-allow-origin").is_none());
    // A "simple" cross-origin POST needs no preflight, so it must be refused before it acts.
    let csrf = read(
        h.http
            .post(h.url("/__control/revoke"))
            .header("origin", evil)
            .header("content-type", "text/plain")
            .body(r#"{"all":true}"#),
    )
    .await;
    assert_eq!(csrf.status, 403, "{}", csrf.text);
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
    // Own origins may use it (the demo page does), but never get CORS headers from it.
    for origin in own_origins(&h) {
        let r = read(
            h.http
                .get(h.url("/__control/stats"))
                .header("origin", &origin),
        )
        .await;
        assert_eq!(r.status, 200, "{origin}");
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let pre = preflight(&h, "/__control/reset", &origin).await;
        assert_eq!(pre.status, 403, "{origin}: no cross-origin control calls");
        assert!(pre.header("access-control-allow-origin").is_none());
    }
    // Non-browser clients (node fetch, curl, these tests) send no Origin.
    assert_eq!(h.stat("logins").await, 1);
}

#[tokio::test]
async fn cors_origin_flags_add_to_the_own_origins() {
    let extra = "http://app.test:5173";
    let h = harness_with(|c| c.cors = token_server::CorsPolicy::Origins(vec![extra.into()])).await;
    let mut expected = own_origins(&h).to_vec();
    expected.push(extra.to_string());
    assert_eq!(h.server.cors_origins(), expected.as_slice());
    for origin in &expected {
        let r = refresh_from(&h, origin).await;
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(origin.as_str())
        );
    }
    assert!(refresh_from(&h, "http://app.test:5174")
        .await
        .header("access-control-allow-origin")
        .is_none());
    // An operator-listed origin may call the control API (a dev proxy forwards its Origin),
    // still without CORS headers.
    let r = read(
        h.http
            .get(h.url("/__control/stats"))
            .header("origin", extra),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}
