//! Fault switches on the token endpoint and refreshes in flight.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn injected_invalid_grant_consumes_nothing() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "invalid_grant"})).await;
    let r = h.expect_grant_error(&p.refresh, "injected").await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    h.rotate(&p.refresh).await;
    assert_eq!(h.stat("refresh_errors").await, 1);
    assert_eq!(h.stat("faults_injected").await, 1);
}

#[tokio::test]
async fn injected_invalid_client_is_a_401() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "invalid_client"})).await;
    let r = h.refresh(&p.refresh).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid_client");
}

#[tokio::test]
async fn unavailable_answers_503_with_retry_after_for_n_calls() {
    let h = harness().await;
    let p = h.login().await;
    h.control(
        "/fault",
        json!({"kind": "unavailable", "count": 2, "retry_after": 2}),
    )
    .await;
    for _ in 0..2 {
        let r = read(
            h.http
                .post(h.url("/auth/refresh-token"))
                // The server's own origin: allowed by default, so the CORS headers are there.
                .header("origin", h.base.as_str())
                .json(&json!({ "refresh_token": p.refresh })),
        )
        .await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").as_deref(), Some("2"));
        assert!(r
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .contains("Retry-After"));
        assert!(r.body["error"].is_string());
    }
    h.rotate(&p.refresh).await;
}

#[tokio::test]
async fn rate_limited_and_server_error_faults() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "rate_limited", "retry_after": 1}))
        .await;
    h.control("/fault", json!({"kind": "server_error"})).await;
    let a = h.refresh(&p.refresh).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    let b = h.refresh(&p.refresh).await;
    assert_eq!(b.status, 500);
    assert_eq!(b.body["error"], "server_error");
    // Neither consumed the token nor any reuse budget.
    h.rotate(&p.refresh).await;
    assert_eq!(h.stat("reuse_detections").await, 0);
}

#[tokio::test]
async fn hang_never_answers_and_commits_nothing() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "hang"})).await;
    let err = h
        .http
        .post(h.url("/auth/refresh-token"))
        .timeout(Duration::from_millis(500))
        .json(&json!({ "refresh_token": p.refresh }))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    // Outcome unknown to the client; here nothing was rotated, so the retry works.
    h.rotate(&p.refresh).await;
    let log = h.control_get("/log").await;
    let hung = log
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["path"] == "/auth/refresh-token")
                .cloned()
        })
        .unwrap_or(Value::Null);
    assert_eq!(
        hung["status"], 0,
        "a hung request is logged without a status: {hung}"
    );
    assert!(hung["done_ms"].is_null());
}

#[tokio::test]
async fn hang_with_commit_rotates_before_going_silent() {
    let h = harness_with(|c| c.grace = 30.0).await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "hang", "commit": true, "ms": 100}))
        .await;
    let err = h
        .http
        .post(h.url("/auth/refresh-token"))
        .json(&json!({ "refresh_token": p.refresh }))
        .send()
        .await
        .expect_err("connection closed without an answer after the cap");
    assert!(!err.is_timeout(), "{err}");
    let retry = h.rotate(&p.refresh).await;
    assert_eq!(
        claims(&retry.access)["gen"],
        2,
        "the committed successor came back"
    );
}

async fn refresh_is_dropped(h: &Harness, rt: &str) {
    // A fresh client, so no pooled connection can retry the request on its own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let err = http
        .post(h.url("/auth/refresh-token"))
        .json(&json!({ "refresh_token": rt }))
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!err.is_timeout(), "dropped, not hung: {err}");
}

#[tokio::test]
async fn drop_after_commit_with_strict_rotation_ends_in_reuse_detection() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "drop"})).await;
    refresh_is_dropped(&h, &p.refresh).await;
    let fams = h.control_get("/families").await;
    assert_eq!(
        fams[0]["generation"], 2,
        "the rotation was committed before the drop"
    );
    // Retrying with the same token (broker rule 11) at grace 0 is a reuse.
    h.expect_grant_error(&p.refresh, "reuse_detected").await;
    let log = h.control_get("/log").await;
    let dropped = log
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["path"] == "/auth/refresh-token")
                .cloned()
        })
        .unwrap_or(Value::Null);
    assert_eq!(dropped["status"], 0);
    assert_eq!(dropped["issued_generation"], 2);
}

#[tokio::test]
async fn drop_after_commit_inside_grace_returns_the_same_successor_on_retry() {
    let h = harness_with(|c| c.grace = 30.0).await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "drop"})).await;
    refresh_is_dropped(&h, &p.refresh).await;
    let retry = h.refresh(&p.refresh).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    let log = h.control_get("/log").await;
    let entries = log.as_array().cloned().unwrap_or_default();
    let refreshes: Vec<&Value> = entries
        .iter()
        .filter(|e| e["path"] == "/auth/refresh-token")
        .collect();
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[1]["outcome"], "grace_replay");
    assert_eq!(
        refreshes[0]["issued_refresh_hash_prefix"], refreshes[1]["issued_refresh_hash_prefix"],
        "the lost successor is the one handed out again"
    );
    h.rotate(&retry.str("refresh_token")).await;
}

#[tokio::test]
async fn drop_without_commit_consumes_nothing() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "drop", "commit": false}))
        .await;
    refresh_is_dropped(&h, &p.refresh).await;
    h.rotate(&p.refresh).await;
}

#[tokio::test]
async fn malformed_and_incomplete_success_responses() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/fault", json!({"kind": "malformed"})).await;
    h.control("/fault", json!({"kind": "no_access_token"}))
        .await;
    h.control("/fault", json!({"kind": "no_refresh_token"}))
        .await;
    let m = h.refresh(&p.refresh).await;
    assert_eq!(m.status, 200);
    assert!(
        serde_json::from_str::<Value>(&m.text).is_err(),
        "not JSON: {}",
        m.text
    );
    let n = h.refresh(&p.refresh).await;
    assert_eq!(n.status, 200);
    assert!(n.body.get("access_token").is_none());
    let k = h.refresh(&p.refresh).await;
    assert_eq!(k.status, 200);
    assert!(k.body.get("refresh_token").is_none(), "{}", k.text);
    assert_eq!(
        h.get("/statistics", Some(&k.str("access_token")))
            .await
            .status,
        200
    );
    // The old refresh token was kept and keeps working.
    h.rotate(&p.refresh).await;
}

#[tokio::test]
async fn fault_requests_are_validated_and_clearable() {
    let h = harness().await;
    let bad = h
        .post_json("/__control/fault", json!({"kind": "explode"}))
        .await;
    assert_eq!(bad.status, 400);
    let typo = h
        .post_json("/__control/fault", json!({"kind": "drop", "cuont": 2}))
        .await;
    assert_eq!(typo.status, 400);
    h.control("/fault", json!({"kind": "unavailable", "count": 5}))
        .await;
    let cleared = h.control("/fault", json!({"kind": "none"})).await;
    assert_eq!(cleared["faults"], json!([]));
    let p = h.login().await;
    h.rotate(&p.refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_in_flight_fails_when_its_family_is_revoked_meanwhile() {
    let h = harness().await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    // Hold the next refresh's answer back after it has committed generation 3.
    h.control(
        "/delay-next",
        json!({"path": "/auth/refresh-token", "ms": 4000}),
    )
    .await;
    let slow = tokio::spawn(read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .json(&json!({ "refresh_token": p2.refresh })),
    ));
    let mut committed = false;
    for _ in 0..300 {
        let fams = h.control_get("/families").await;
        if fams[0]["generation"] == 3 {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(committed, "the slow refresh committed");
    // An attacker replays the grandparent: the family dies while the refresh is in flight.
    h.expect_grant_error(&p1.refresh, "reuse_detected").await;
    let r = slow.await.expect("task");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_grant");
    assert_eq!(r.body["cause"], "revoked_in_flight");
}
