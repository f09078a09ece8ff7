//! Malformed requests get a 4xx with a JSON error, and the server keeps serving.

use serde_json::{json, Value};

use crate::common::*;

fn assert_json_4xx(r: &Resp, status: u16) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .contains("application/json"),
        "{:?}",
        r.header("content-type")
    );
    assert!(r.body["error"].is_string(), "JSON error body: {}", r.text);
}

#[tokio::test]
async fn malformed_bodies_are_rejected_with_json_errors() {
    let h = harness().await;
    let p = h.login().await;
    for path in ["/auth/login", "/auth/refresh-token", "/auth/logout"] {
        assert_json_4xx(
            &h.post_raw(path, "application/json", "{not json").await,
            400,
        );
        assert_json_4xx(&h.post_raw(path, "application/json", "[1,2]").await, 400);
        assert_json_4xx(&h.post_raw(path, "application/json", "\"str\"").await, 400);
        assert_json_4xx(
            &h.post_raw(path, "text/plain", "refresh_token=x").await,
            415,
        );
        assert_json_4xx(&h.post_raw(path, "application/xml", "<a/>").await, 415);
        assert_json_4xx(
            &h.post_raw(path, "application/json", vec![b' '; 100 * 1024])
                .await,
            413,
        );
        assert_json_4xx(
            &h.post_raw(
                path,
                "application/x-www-form-urlencoded",
                "a".repeat(70 * 1024),
            )
            .await,
            413,
        );
    }
    assert_json_4xx(
        &h.post_json("/auth/login", json!({"username": "demo"}))
            .await,
        400,
    );
    assert_json_4xx(
        &h.post_json("/auth/login", json!({"username": 1, "password": 2}))
            .await,
        400,
    );
    assert_json_4xx(
        &h.post_json("/auth/refresh-token", json!({"refresh_token": 42}))
            .await,
        400,
    );
    assert_json_4xx(
        &h.post_json("/auth/refresh-token", json!({"refresh_token": null}))
            .await,
        400,
    );
    let orders = |ct: &'static str, body: Vec<u8>| {
        read(
            h.http
                .post(h.url("/orders"))
                .bearer_auth(&p.access)
                .header("content-type", ct)
                .body(body),
        )
    };
    assert_json_4xx(&orders("application/json", b"{oops".to_vec()).await, 400);
    assert_json_4xx(&orders("text/plain", b"{}".to_vec()).await, 415);
    assert_json_4xx(
        &orders("application/json", vec![b'1'; 65 * 1024]).await,
        413,
    );
    // Still alive and correct.
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
    h.rotate(&p.refresh).await;
}

#[tokio::test]
async fn garbage_refresh_tokens_are_unknown() {
    let h = harness().await;
    for junk in [
        "x".to_string(),
        "ünïcödé 🎟️".to_string(),
        "a".repeat(60_000),
        "....".to_string(),
        "\u{0}\u{1}".to_string(),
    ] {
        let r = h.refresh(&junk).await;
        assert_json_4xx(&r, 400);
        assert_eq!(r.body["error"], "invalid_grant");
        assert_eq!(r.body["cause"], "unknown_token");
    }
    let odd_cookie = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("cookie", "tb_refresh=; other=; ;;=; tb_refresh"),
    )
    .await;
    assert_json_4xx(&odd_cookie, 400);
    assert_eq!(h.stat("reuse_detections").await, 0);
}

#[tokio::test]
async fn odd_authorization_headers_never_crash() {
    let h = harness().await;
    let p = h.login().await;
    let values: Vec<reqwest::header::HeaderValue> = vec![
        reqwest::header::HeaderValue::from_static("Bearer"),
        reqwest::header::HeaderValue::from_static("Bearer    "),
        reqwest::header::HeaderValue::from_static("bearer a.b"),
        reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe.\x80").expect("opaque bytes"),
        reqwest::header::HeaderValue::from_static("Bearer eyJ9.eyJ9.eyJ9"),
    ];
    for v in values {
        let r = read(h.http.get(h.url("/statistics")).header("authorization", v)).await;
        assert_json_4xx(&r, 401);
        assert!(r
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer"));
    }
    // Lower-case scheme, as in the accepted answer of the original question.
    let ok = read(
        h.http
            .get(h.url("/statistics"))
            .header("authorization", format!("bearer {}", p.access)),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json() {
    let h = harness().await;
    assert_json_4xx(&h.get("/nope", None).await, 404);
    assert_json_4xx(&read(h.http.delete(h.url("/statistics"))).await, 405);
    assert_json_4xx(&read(h.http.get(h.url("/auth/refresh-token"))).await, 405);
    let bad_control = h
        .post_raw("/__control/latency", "application/json", "{bad")
        .await;
    assert_json_4xx(&bad_control, 400);
    let body: Value = h.control_get("/stats").await;
    assert!(body.is_object());
}
