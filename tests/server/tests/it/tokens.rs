//! Login, refresh, rotation, reuse detection, grace window, lifetimes, cookie mode.

use std::collections::HashSet;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn login_returns_a_bearer_pair_and_no_cookie() {
    let h = harness().await;
    let r = h
        .post_json(
            "/auth/login",
            json!({"username": "demo", "password": "demo"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], json!(60), "whole TTL is an integer");
    assert!(r.body["expires_in"].is_u64());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let rt = r.str("refresh_token");
    assert!(rt.len() >= 43, "32 random bytes, base64url");
    // JSON mode: the client holds the token, so no cookie could refresh behind its back.
    assert!(
        r.header("set-cookie").is_none(),
        "{:?}",
        r.header("set-cookie")
    );
    assert_eq!(r.body["scope"], "read write");
    let c = claims(&r.str("access_token"));
    for k in ["exp", "iat", "sub", "jti", "fam", "exp_ms", "gen"] {
        assert!(!c[k].is_null(), "claim {k} in {c}");
    }
    assert_eq!(c["sub"], "demo");
    assert_eq!(c["gen"], 1);
    let api = h.get("/statistics", Some(&r.str("access_token"))).await;
    assert_eq!(api.status, 200);
    assert_eq!(api.body["endpoint"], "statistics");
    assert_eq!(api.body["sub"], "demo");
    assert_eq!(h.stat("logins").await, 1);
}

#[tokio::test]
async fn login_with_wrong_credentials_is_invalid_client() {
    let h = harness().await;
    let r = h
        .post_json(
            "/auth/login",
            json!({"username": "demo", "password": "nope"}),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "invalid_client");
    assert!(r.body["error_description"].is_string());
    assert_eq!(h.stat("logins").await, 0);
}

#[tokio::test]
async fn login_cookie_only_keeps_refresh_token_out_of_json() {
    let h = harness().await;
    let r = h
        .post_json(
            "/auth/login",
            json!({"username": "demo", "password": "demo", "cookie_only": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("refresh_token").is_none(), "{}", r.text);
    let cookie = r.header("set-cookie").expect("cookie");
    assert!(cookie.starts_with("tb_refresh="), "{cookie}");
    for part in ["Path=/auth", "HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
}

#[tokio::test]
async fn refresh_rotates_and_keeps_the_previous_access_token_valid() {
    let h = harness_with(|c| c.access_ttl = 1.5).await;
    let first = h.login().await;
    let r = h.refresh(&first.refresh).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(
        r.body["expires_in"],
        json!(1.5),
        "fractional TTL stays a float"
    );
    assert_eq!(r.body["token_type"], "Bearer");
    let second = Pair {
        access: r.str("access_token"),
        refresh: r.str("refresh_token"),
    };
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(claims(&second.access)["gen"], 2);
    assert_eq!(claims(&second.access)["fam"], claims(&first.access)["fam"]);
    // The naive server of the original question broke exactly this.
    assert_eq!(h.get("/statistics", Some(&first.access)).await.status, 200);
    assert_eq!(
        h.get("/other-statistics", Some(&second.access))
            .await
            .status,
        200
    );
    let third = h.rotate(&second.refresh).await;
    assert_eq!(claims(&third.access)["gen"], 3);
    assert_eq!(h.stat("refresh_ok").await, 2);
}

#[tokio::test]
async fn refresh_accepts_form_and_json_bodies() {
    let h = harness().await;
    let p = h.login().await;
    let form = h
        .post_raw(
            "/auth/refresh-token",
            "application/x-www-form-urlencoded",
            format!("grant_type=refresh_token&refresh_token={}", p.refresh),
        )
        .await;
    assert_eq!(form.status, 200, "{}", form.text);
    let rt = form.str("refresh_token");
    let js = h
        .post_json(
            "/auth/refresh-token",
            json!({"grant_type": "refresh_token", "refresh_token": rt}),
        )
        .await;
    assert_eq!(js.status, 200, "{}", js.text);
    let bad_grant = h
        .post_json(
            "/auth/refresh-token",
            json!({"grant_type": "password", "refresh_token": js.str("refresh_token")}),
        )
        .await;
    assert_eq!(bad_grant.status, 400);
    assert_eq!(bad_grant.body["error"], "invalid_request");
    let missing = h.post_json("/auth/refresh-token", json!({})).await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "invalid_request");
    let missing_form = h
        .post_raw(
            "/auth/refresh-token",
            "application/x-www-form-urlencoded",
            "grant_type=refresh_token",
        )
        .await;
    assert_eq!(missing_form.status, 400);
    assert_eq!(missing_form.body["error"], "invalid_request");
    // The invalid_request answers consumed nothing.
    h.rotate(&js.str("refresh_token")).await;
}

#[tokio::test]
async fn unknown_refresh_token_is_invalid_grant() {
    let h = harness().await;
    let r = h.expect_grant_error("not-a-token", "unknown_token").await;
    assert_eq!(r.body["error_description"], "unknown refresh token");
}

#[tokio::test]
async fn sequential_reuse_revokes_the_whole_family() {
    let h = harness().await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    let reuse = h.expect_grant_error(&p1.refresh, "reuse_detected").await;
    let revoked = h.expect_grant_error(&p2.refresh, "family_revoked").await;
    assert_ne!(
        reuse.body["error_description"],
        revoked.body["error_description"]
    );
    let r = h.expect_invalid_token(&p2.access).await;
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("revoked"));
    h.expect_invalid_token(&p1.access).await;
    assert_eq!(h.stat("reuse_detections").await, 1);
    assert_eq!(h.stat("revoked_families").await, 1);
    // A new login starts a fresh, working family.
    let fresh = h.login().await;
    h.rotate(&fresh.refresh).await;
}

#[tokio::test]
async fn attacker_first_then_client_both_lose() {
    let h = harness().await;
    let stolen = h.login().await;
    let attacker = h.rotate(&stolen.refresh).await;
    h.expect_grant_error(&stolen.refresh, "reuse_detected")
        .await;
    h.expect_grant_error(&attacker.refresh, "family_revoked")
        .await;
    h.expect_invalid_token(&attacker.access).await;
}

async fn fire_concurrently(h: &Harness, rt: &str, n: usize) -> Vec<Resp> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let rb = h
            .http
            .post(h.url("/auth/refresh-token"))
            .json(&json!({ "refresh_token": rt }));
        set.spawn(read(rb));
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_strict_give_one_winner_and_a_dead_family() {
    let h = harness().await;
    let p = h.login().await;
    let results = fire_concurrently(&h, &p.refresh, 50).await;
    let ok: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one successor is minted");
    for r in results.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"], "invalid_grant");
    }
    let winner = Pair {
        access: ok[0].str("access_token"),
        refresh: ok[0].str("refresh_token"),
    };
    // Every token of the family is dead now, the winner's included.
    h.expect_grant_error(&winner.refresh, "family_revoked")
        .await;
    h.expect_grant_error(&p.refresh, "family_revoked").await;
    h.expect_invalid_token(&winner.access).await;
    h.expect_invalid_token(&p.access).await;
    assert_eq!(h.stat("reuse_detections").await, 1);
    let fams = h.control_get("/families").await;
    assert_eq!(fams.as_array().map(Vec::len), Some(1));
    assert_eq!(fams[0]["state"], "revoked");
    assert_eq!(fams[0]["reason"], "reuse_detected");
    assert_eq!(fams[0]["generation"], 2, "never two live branches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_in_grace_return_the_identical_successor() {
    let h = harness_with(|c| c.grace = 30.0).await;
    let p = h.login().await;
    let results = fire_concurrently(&h, &p.refresh, 50).await;
    let tokens: HashSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.str("refresh_token")
        })
        .collect();
    assert_eq!(tokens.len(), 1, "no forks");
    let successor = tokens.into_iter().next().unwrap_or_default();
    for r in &results {
        assert_eq!(claims(&r.str("access_token"))["gen"], 2);
    }
    assert_eq!(h.stat("grace_replays").await, 49);
    assert_eq!(h.stat("reuse_detections").await, 0);
    let next = h.rotate(&successor).await;
    assert_eq!(claims(&next.access)["gen"], 3);
}

#[tokio::test]
async fn grace_window_covers_only_the_predecessor_while_its_successor_is_unused() {
    let h = harness_with(|c| c.grace = 30.0).await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    // Lost response: the client retries with the old token and gets the same successor.
    let again = h.rotate(&p1.refresh).await;
    assert_eq!(again.refresh, p2.refresh);
    // Successor used: the predecessor is now a reuse.
    let p3 = h.rotate(&p2.refresh).await;
    h.expect_grant_error(&p1.refresh, "reuse_detected").await;
    h.expect_grant_error(&p3.refresh, "family_revoked").await;
}

#[tokio::test]
async fn grandparent_inside_the_grace_window_is_detected() {
    let h = harness_with(|c| c.grace = 30.0).await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    let p3 = h.rotate(&p2.refresh).await;
    h.expect_grant_error(&p1.refresh, "reuse_detected").await;
    h.expect_invalid_token(&p3.access).await;
}

#[tokio::test]
async fn predecessor_after_the_window_is_detected() {
    let h = harness_with(|c| c.grace = 5.0).await;
    let p1 = h.login().await;
    h.rotate(&p1.refresh).await;
    h.advance_clock(6_000).await;
    h.expect_grant_error(&p1.refresh, "reuse_detected").await;
}

#[tokio::test]
async fn grace_replays_are_bounded() {
    let h = harness_with(|c| {
        c.grace = 30.0;
        c.grace_max_uses = 2;
    })
    .await;
    let p1 = h.login().await;
    h.rotate(&p1.refresh).await;
    h.rotate(&p1.refresh).await;
    h.rotate(&p1.refresh).await;
    h.expect_grant_error(&p1.refresh, "reuse_detected").await;
}

#[tokio::test]
async fn family_lifetime_is_absolute_and_not_extended_by_rotation() {
    let h = harness_with(|c| c.family_lifetime = 100.0).await;
    let mut p = h.login().await;
    for _ in 0..3 {
        h.advance_clock(30_000).await;
        p = h.rotate(&p.refresh).await;
    }
    // 90 s in: still alive; 101 s in: dead although the last rotation was 11 s ago.
    h.advance_clock(11_000).await;
    let r = h.expect_grant_error(&p.refresh, "family_expired").await;
    assert!(r.text.contains("absolute"));
    let fams = h.control_get("/families").await;
    assert_eq!(fams[0]["state"], "expired");
}

#[tokio::test]
async fn idle_timeout_ends_an_unused_family() {
    let h = harness_with(|c| c.idle_timeout = Some(10.0)).await;
    let p1 = h.login().await;
    h.advance_clock(8_000).await;
    let p2 = h.rotate(&p1.refresh).await;
    h.advance_clock(8_000).await;
    let p3 = h.rotate(&p2.refresh).await;
    h.advance_clock(10_500).await;
    h.expect_grant_error(&p3.refresh, "idle_timeout").await;
}

#[tokio::test]
async fn cookie_mode_refreshes_from_the_cookie_only() {
    let h = harness().await;
    let login = h
        .post_json(
            "/auth/login",
            json!({"username": "demo", "password": "demo", "cookie_only": true}),
        )
        .await;
    let cookie = login.header("set-cookie").expect("cookie");
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    let r = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("cookie", &pair),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body.get("refresh_token").is_none(),
        "cookie mode keeps the RT out of JSON"
    );
    assert!(!r.str("access_token").is_empty());
    let next = r.header("set-cookie").expect("cookie re-set");
    let next_pair = next.split(';').next().unwrap_or_default().to_string();
    assert_ne!(next_pair, pair);
    let r2 = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("cookie", format!("other=1; {next_pair}")),
    )
    .await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    // The spent cookie is a reuse.
    let stale = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("cookie", &pair),
    )
    .await;
    assert_eq!(stale.status, 400);
    assert_eq!(stale.body["cause"], "reuse_detected");
    // No cookie and no body: invalid_request.
    let none = read(h.http.post(h.url("/auth/refresh-token"))).await;
    assert_eq!(none.status, 400);
    assert_eq!(none.body["error"], "invalid_request");
}

#[tokio::test]
async fn access_token_expires_after_its_ttl() {
    let h = harness_with(|c| c.access_ttl = 1.0).await;
    let p = h.login().await;
    assert_eq!(h.get("/statistics", Some(&p.access)).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = h.expect_invalid_token(&p.access).await;
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("expired"));
    // Refreshing recovers.
    let fresh = h.rotate(&p.refresh).await;
    assert_eq!(h.get("/statistics", Some(&fresh.access)).await.status, 200);
}

#[tokio::test]
async fn runtime_config_changes_the_ttl() {
    let h = harness().await;
    let cfg = h
        .control("/config", json!({"access_ttl": 2, "grace": 0}))
        .await;
    assert_eq!(cfg["access_ttl"], json!(2.0));
    let r = h
        .post_json(
            "/auth/login",
            json!({"username": "demo", "password": "demo"}),
        )
        .await;
    assert_eq!(r.body["expires_in"], json!(2));
    let got = h.control_get("/config").await;
    assert_eq!(got["grace"], json!(0.0));
    let bad = h
        .post_json("/__control/config", json!({"acces_ttl": 2}))
        .await;
    assert_eq!(bad.status, 400, "typos are rejected");
    let reset = h.control("/reset", json!({"access_ttl": 1.5})).await;
    assert_eq!(reset["config"]["access_ttl"], json!(1.5));
    assert_eq!(h.stat("logins").await, 0, "reset forgets counters");
}

#[tokio::test]
async fn reset_forgets_families() {
    let h = harness().await;
    let p = h.login().await;
    h.control("/reset", json!({})).await;
    h.expect_grant_error(&p.refresh, "unknown_token").await;
    h.expect_invalid_token(&p.access).await;
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let h = harness().await;
    let p = h.login().await;
    let r = h
        .post_json("/auth/logout", json!({ "refresh_token": p.refresh }))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["revoked"], true);
    assert!(r
        .header("set-cookie")
        .unwrap_or_default()
        .contains("Max-Age=0"));
    h.expect_grant_error(&p.refresh, "family_revoked").await;
    h.expect_invalid_token(&p.access).await;
    let again = h
        .post_json("/auth/logout", json!({ "refresh_token": p.refresh }))
        .await;
    assert_eq!(again.body["revoked"], false);
}

#[tokio::test]
async fn control_revoke_kills_access_tokens_of_the_family() {
    let h = harness().await;
    let a = h.login().await;
    let b = h.login().await;
    let fam = claims(&a.access)["fam"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = h.control("/revoke", json!({ "family": fam })).await;
    assert_eq!(r["revoked"], 1);
    h.expect_invalid_token(&a.access).await;
    h.expect_grant_error(&a.refresh, "family_revoked").await;
    assert_eq!(h.get("/statistics", Some(&b.access)).await.status, 200);
    let all = h.control("/revoke", json!({ "all": true })).await;
    assert_eq!(all["revoked"], 1);
    h.expect_invalid_token(&b.access).await;
}
