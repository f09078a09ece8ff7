//! The protected API, WWW-Authenticate semantics, CORS, the foreign origin, test switches.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn no_token_gets_a_bare_bearer_challenge() {
    let h = harness().await;
    let r = h.get("/statistics", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(r.body.is_object(), "JSON body: {}", r.text);
    let basic = read(
        h.http
            .get(h.url("/final-statistics"))
            .header("authorization", "Basic ZGVtbzpkZW1v"),
    )
    .await;
    assert_eq!(basic.status, 401);
    assert_eq!(basic.header("www-authenticate").as_deref(), Some("Bearer"));
}

#[tokio::test]
async fn all_dashboard_endpoints_answer_with_a_valid_token() {
    let h = harness().await;
    let p = h.login().await;
    for name in [
        "statistics",
        "other-statistics",
        "event-more-statistics",
        "final-statistics",
    ] {
        let r = h.get(&format!("/{name}"), Some(&p.access)).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        assert_eq!(r.body["endpoint"], name);
        assert_eq!(r.body["sub"], "demo");
        assert!(r.body["value"].is_i64());
        assert!(r.body["at"].is_i64());
    }
    assert_eq!(h.stat("api_ok").await, 4);
}

#[tokio::test]
async fn garbage_and_forged_tokens_are_invalid_token() {
    let h = harness().await;
    let p = h.login().await;
    let mut parts: Vec<String> = p.access.split('.').map(str::to_string).collect();
    let forged_sig = {
        let mut s = parts.clone();
        s[2] = "AAAA".into();
        s.join(".")
    };
    parts[0] = "eyJhbGciOiJub25lIn0".into(); // {"alg":"none"}
    let alg_none = format!("{}.{}.", parts[0], parts[1]);
    for bad in [
        "garbage",
        "a.b.c",
        "....",
        forged_sig.as_str(),
        alg_none.as_str(),
        &"x".repeat(20_000),
        "",
    ] {
        let r = h.get("/statistics", Some(bad)).await;
        assert_eq!(r.status, 401, "{bad:.40}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_token");
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer error=\"invalid_token\", error_description=\""),
            "{www}"
        );
    }
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
}

#[tokio::test]
async fn insufficient_scope_and_forbidden_are_not_refresh_triggers() {
    let h = harness().await;
    let p = h.login().await;
    let r = h.get("/scoped", Some(&p.access)).await;
    assert_eq!(r.status, 401);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with("Bearer error=\"insufficient_scope\""),
        "{www}"
    );
    assert!(www.contains("scope=\"admin\""), "{www}");
    assert_eq!(r.body["error"], "insufficient_scope");
    let r403 = h.get("/scoped?status=403", Some(&p.access)).await;
    assert_eq!(r403.status, 403);
    assert!(r403
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("insufficient_scope"));
    assert_eq!(
        h.get("/scoped", None)
            .await
            .header("www-authenticate")
            .as_deref(),
        Some("Bearer")
    );
    let garbage = h.get("/scoped", Some("garbage")).await;
    assert!(garbage
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("invalid_token"));
    let f = h.get("/forbidden", Some(&p.access)).await;
    assert_eq!(f.status, 403);
    assert_eq!(f.body["error"], "forbidden");
    assert_eq!(h.stat("refresh_calls").await, 0);
}

#[tokio::test]
async fn cors_preflight_and_expose_headers() {
    let origin = "http://app.localhost:5173";
    let h = harness_with(|c| c.cors = token_server::CorsPolicy::Origins(vec![origin.into()])).await;
    let pre = read(
        h.http
            .request(reqwest::Method::OPTIONS, h.url("/statistics"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, idempotency-key",
            ),
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    assert_eq!(
        pre.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let allow_headers = pre
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for hname in ["Authorization", "Content-Type", "Idempotency-Key"] {
        assert!(allow_headers.contains(hname), "{allow_headers}");
    }
    let methods = pre
        .header("access-control-allow-methods")
        .unwrap_or_default();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let r = read(h.http.get(h.url("/statistics")).header("origin", origin)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        expose.contains("WWW-Authenticate") && expose.contains("Retry-After"),
        "{expose}"
    );
    // Switch off at run time, as the browser test of a "bare 401 cross-origin" does.
    h.control("/config", json!({"expose_www_authenticate": false}))
        .await;
    let r = read(h.http.get(h.url("/statistics")).header("origin", origin)).await;
    let expose = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        !expose.contains("WWW-Authenticate") && expose.contains("Retry-After"),
        "{expose}"
    );
}

#[tokio::test]
async fn cors_flag_switches_and_origin_list() {
    let h = harness_with(|c| {
        c.expose_www_authenticate = false;
        c.cors = token_server::CorsPolicy::Origins(vec!["http://good.test".into()]);
    })
    .await;
    let good = read(
        h.http
            .get(h.url("/statistics"))
            .header("origin", "http://good.test"),
    )
    .await;
    assert_eq!(
        good.header("access-control-allow-origin").as_deref(),
        Some("http://good.test")
    );
    assert!(!good
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .contains("WWW-Authenticate"));
    let evil = read(
        h.http
            .get(h.url("/statistics"))
            .header("origin", "http://evil.test"),
    )
    .await;
    assert!(evil.header("access-control-allow-origin").is_none());
    let pre = read(
        h.http
            .request(reqwest::Method::OPTIONS, h.url("/auth/refresh-token"))
            .header("origin", "http://evil.test")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(pre.status, 403);
    assert!(pre.header("access-control-allow-origin").is_none());
}

#[test]
fn cors_origin_flag_parsing() {
    use token_server::{Command, Config, CorsPolicy};
    let Ok(Command::Run(c)) =
        Config::from_args(["--cors-origin", "http://a", "--cors-origin=http://b"])
    else {
        panic!("parses");
    };
    assert_eq!(
        c.cors,
        CorsPolicy::Origins(vec!["http://a".into(), "http://b".into()])
    );
    // '*' with credentials would let every page on the machine in; it is refused outright.
    assert!(Config::from_args(["--cors-origin", "*"]).is_err());
    for bad in [
        "http://a/",
        "http://a/path",
        "ftp://a",
        "null",
        "http://",
        "a.test",
    ] {
        assert!(Config::from_args(["--cors-origin", bad]).is_err(), "{bad}");
    }
    let Ok(Command::Run(c)) = Config::from_args(["--cors-origin", "HTTP://App.Test:5173"]) else {
        panic!("parses");
    };
    assert_eq!(
        c.cors,
        CorsPolicy::Origins(vec!["http://app.test:5173".into()]),
        "stored as browsers serialize origins"
    );
    let Ok(Command::Run(c)) = Config::from_args(Vec::<String>::new()) else {
        panic!("parses");
    };
    assert_eq!(c.cors, CorsPolicy::OwnOnly);
    let Ok(Command::Run(c)) = Config::from_args([
        "--port",
        "0",
        "--foreign-port",
        "0",
        "--access-ttl",
        "1.5",
        "--grace",
        "30",
        "--family-lifetime",
        "600",
        "--idle-timeout",
        "60",
        "--no-expose-www-authenticate",
        "--test-controls",
        "--static",
        "/tmp",
    ]) else {
        panic!("parses");
    };
    assert_eq!(c.access_ttl, 1.5);
    assert_eq!(c.grace, 30.0);
    assert_eq!(c.idle_timeout, Some(60.0));
    assert!(!c.expose_www_authenticate && c.test_controls && c.static_dir.is_some());
    assert!(Config::from_args(["--access-ttl", "-1"]).is_err());
    assert!(Config::from_args(["--access-ttl", "abc"]).is_err());
    assert!(Config::from_args(["--port"]).is_err());
    assert!(Config::from_args(["--what"]).is_err());
}

#[tokio::test]
async fn every_response_has_a_date_header() {
    let h = harness().await;
    let p = h.login().await;
    let big = vec![b'{'; 70 * 1024];
    let responses = vec![
        h.get("/statistics", Some(&p.access)).await,
        h.get("/statistics", None).await,
        h.get("/nowhere", None).await,
        h.post_raw("/auth/login", "application/json", big).await,
        h.refresh("nope").await,
        read(
            h.http
                .request(reqwest::Method::OPTIONS, h.url("/statistics"))
                .header("origin", "http://x.test")
                .header("access-control-request-method", "GET"),
        )
        .await,
        read(h.http.get(h.server.foreign_url())).await,
    ];
    for r in responses {
        assert!(r.header("date").is_some(), "status {}: no Date", r.status);
    }
}

#[tokio::test]
async fn orders_are_recorded_once_per_idempotency_key() {
    let h = harness().await;
    let p = h.login().await;
    let post = |key: Option<&str>| {
        let mut rb = h
            .http
            .post(h.url("/orders"))
            .bearer_auth(&p.access)
            .json(&json!({"item": "book", "qty": 2}));
        if let Some(k) = key {
            rb = rb.header("idempotency-key", k);
        }
        read(rb)
    };
    let a = post(Some("k-1")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["order"], json!({"item": "book", "qty": 2}));
    assert_eq!(a.body["id"], 1);
    let again = post(Some("k-1")).await;
    assert_eq!(again.body["id"], 1);
    assert_eq!(again.body["replayed"], true);
    let b = post(None).await;
    assert_eq!(b.body["id"], 2);
    assert_eq!(h.stat("orders").await, 2);
    let unauth = read(h.http.post(h.url("/orders")).json(&json!({}))).await;
    assert_eq!(unauth.status, 401);
    assert_eq!(
        h.stat("orders").await,
        2,
        "no side effect without a valid token"
    );
}

#[tokio::test]
async fn always_401_rejects_fresh_tokens_until_switched_off() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/always-401", json!({"on": true})).await;
    h.expect_invalid_token(&p.access).await;
    let fresh = h.rotate(&p.refresh).await;
    h.expect_invalid_token(&fresh.access).await;
    h.control("/always-401", json!({"on": false})).await;
    assert_eq!(h.get("/statistics", Some(&fresh.access)).await.status, 200);
    assert_eq!(h.stat("unauthorized_sent").await, 2);
}

#[tokio::test]
async fn delay_next_produces_a_late_401_for_one_request() {
    let h = harness().await;
    let p = h.login().await;
    h.control(
        "/delay-next",
        json!({"path": "/statistics", "ms": 300, "status": 401}),
    )
    .await;
    let late = h.expect_invalid_token(&p.access).await;
    assert!(late.text.contains("test control"));
    assert_eq!(
        h.get("/statistics", Some(&p.access)).await.status,
        200,
        "only the next one"
    );
    let log = h.control_get("/log").await;
    let entries = log.as_array().cloned().unwrap_or_default();
    let first = entries
        .iter()
        .find(|e| e["path"] == "/statistics")
        .cloned()
        .unwrap_or_default();
    assert_eq!(first["status"], 401);
    assert_eq!(first["token_generation"], 1);
    assert_eq!(first["authorization_present"], true);
    assert!(first["token_jti"].is_string());
}

#[tokio::test]
async fn delayed_requests_are_judged_at_arrival() {
    let h = harness_with(|c| c.access_ttl = 1.0).await;
    let p = h.login().await;
    h.control("/delay-next", json!({"path": "/statistics", "ms": 1500}))
        .await;
    // The token expires while the answer is held back; arrival decides.
    let r = h.get("/statistics", Some(&p.access)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    h.expect_invalid_token(&p.access).await;
}

#[tokio::test]
async fn latency_applies_per_path() {
    let h = harness().await;
    let p = h.login().await;
    let set = h
        .control("/latency", json!({"path": "/statistics", "ms": 200}))
        .await;
    assert_eq!(set["latency"]["/statistics"], 200);
    let t = std::time::Instant::now();
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    h.control("/latency", json!({"path": "/statistics", "ms": 0}))
        .await;
    let faults = h.control_get("/faults").await;
    assert_eq!(faults["latency"], json!({}));
}

#[tokio::test]
async fn foreign_origin_records_authorization_headers() {
    let h = harness().await;
    let foreign = h.server.foreign_url();
    let plain = read(
        h.http
            .get(format!("{foreign}/any/path"))
            .header("origin", "http://app.test"),
    )
    .await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body["foreign"], true);
    assert_eq!(
        plain.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    let pre = read(
        h.http
            .request(reqwest::Method::OPTIONS, format!("{foreign}/x"))
            .header("origin", "http://app.test")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, x-custom"),
    )
    .await;
    assert_eq!(pre.status, 204);
    assert!(pre
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .contains("x-custom"));
    let leaked = read(
        h.http
            .post(format!("{foreign}/leak"))
            .header("authorization", "Bearer leaked"),
    )
    .await;
    assert_eq!(leaked.body["authorization_present"], true);
    let f = h.control_get("/foreign").await;
    assert_eq!(f["requests"], 2);
    assert_eq!(f["with_authorization"], 1);
    assert_eq!(f["last_authorization"], "Bearer leaked");
    assert_eq!(h.stat("foreign_auth_headers").await, 1);
}

#[tokio::test]
async fn controls_are_absent_without_the_flag() {
    let h = harness_with(|c| c.test_controls = false).await;
    let r = h.post_json("/__control/reset", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "not_found");
}

#[tokio::test]
async fn static_files_are_served_with_an_index_fallback() {
    let dir = std::env::temp_dir().join(format!("token-server-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).expect("dir");
    std::fs::write(dir.join("index.html"), "<h1>demo</h1>").expect("write");
    std::fs::write(dir.join("assets/app.js"), "export {}").expect("write");
    std::fs::write(dir.join("assets/m.wasm"), b"\0asm").expect("write");
    let d = dir.clone();
    let h = harness_with(move |c| c.static_dir = Some(d)).await;
    let index = h.get("/", None).await;
    assert_eq!(index.status, 200);
    assert!(index.text.contains("demo"));
    assert!(index
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    let js = h.get("/assets/app.js", None).await;
    assert!(js
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/javascript"));
    let wasm = h.get("/assets/m.wasm", None).await;
    assert_eq!(
        wasm.header("content-type").as_deref(),
        Some("application/wasm")
    );
    let route = h.get("/dashboard/today", None).await;
    assert!(
        route.text.contains("demo"),
        "client-side route falls back to index.html"
    );
    let missing = h.get("/assets/missing.js", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"], "not_found");
    let api = h.get("/statistics", None).await;
    assert_eq!(api.status, 401, "API routes win over static files");
    // Static files stay out of the request log.
    let log = h.control_get("/log").await;
    assert!(log
        .as_array()
        .is_some_and(|l| l.iter().all(|e| e["path"] != "/")));
    let _ = std::fs::remove_dir_all(dir);
}
