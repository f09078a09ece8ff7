//! RFC 7009 revocation, logout, and cookie requests from foreign origins.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn revoke_with_a_form_body_ends_the_whole_family() {
    let h = harness().await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    let r = h
        .post_raw(
            "/auth/revoke",
            FORM,
            format!("token={}&token_type_hint=refresh_token", p2.refresh),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({}), "RFC 7009 §2.2: an empty JSON object");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    // Every token of the family, the live one and the spent one, is dead.
    h.expect_grant_error(&p2.refresh, "family_revoked").await;
    h.expect_grant_error(&p1.refresh, "family_revoked").await;
    // Access tokens of the family are refused at once, not only once they expire.
    let api = h.expect_invalid_token(&p2.access).await;
    assert!(api.text.contains("family revoked"), "{}", api.text);
    h.expect_invalid_token(&p1.access).await;
    assert_eq!(h.stat("revocations").await, 1);
    assert_eq!(h.stat("revoke_calls").await, 1);
    assert_eq!(h.stat("revoked_families").await, 1);
    assert_eq!(
        h.stat("reuse_detections").await,
        0,
        "a revocation is not a reuse"
    );
    let fam = h.family_state().await;
    assert_eq!(fam["state"], "revoked");
    assert_eq!(fam["reason"], "revocation");
    // Revoking again is still a 200, and counts no second revocation.
    let again = h
        .post_raw("/auth/revoke", FORM, format!("token={}", p2.refresh))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, json!({}));
    assert_eq!(h.stat("revocations").await, 1);
    assert_eq!(h.stat("revoke_calls").await, 2);
    let log = h.control_get("/log").await;
    let outcomes: Vec<String> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["path"] == "/auth/revoke")
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(outcomes, ["revoked", "revoke_noop"]);
}

#[tokio::test]
async fn revoke_accepts_json_and_any_token_of_the_family() {
    let h = harness().await;
    let p1 = h.login().await;
    let p2 = h.rotate(&p1.refresh).await;
    // A spent token still names its family; presenting it here is no reuse.
    let r = h
        .post_json(
            "/auth/revoke",
            json!({"token": p1.refresh, "token_type_hint": "refresh_token"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({}));
    h.expect_grant_error(&p2.refresh, "family_revoked").await;
    assert_eq!(h.stat("reuse_detections").await, 0);
    assert_eq!(h.stat("revocations").await, 1);
}

#[tokio::test]
async fn revoke_by_access_token_ends_its_family() {
    let h = harness().await;
    let mine = h.login().await;
    let other = h.login().await;
    let r = h
        .post_raw(
            "/auth/revoke",
            FORM,
            format!("token={}&token_type_hint=access_token", mine.access),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    h.expect_invalid_token(&mine.access).await;
    h.expect_grant_error(&mine.refresh, "family_revoked").await;
    // A wrong hint only costs a second lookup (RFC 7009 §2.1).
    let wrong_hint = h
        .post_json(
            "/auth/revoke",
            json!({"token": other.refresh, "token_type_hint": "access_token"}),
        )
        .await;
    assert_eq!(wrong_hint.status, 200);
    h.expect_grant_error(&other.refresh, "family_revoked").await;
    assert_eq!(h.stat("revocations").await, 2);
}

#[tokio::test]
async fn revoke_answers_200_for_unknown_tokens_and_400_without_one() {
    let h = harness().await;
    let p = h.login().await;
    let mut forged = p.access.clone();
    forged.push('x');
    for junk in ["nope", "a.b.c", forged.as_str(), "ünïcödé"] {
        let r = h.post_json("/auth/revoke", json!({ "token": junk })).await;
        assert_eq!(r.status, 200, "{junk}: {}", r.text);
        assert_eq!(r.body, json!({}));
    }
    for body in [
        json!({}),
        json!({"token": ""}),
        json!({"token_type_hint": "refresh_token"}),
    ] {
        let r = h.post_json("/auth/revoke", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_request");
    }
    let empty = read(h.http.post(h.url("/auth/revoke"))).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["error"], "invalid_request");
    for body in [
        json!({"token": 5}),
        json!({"token": p.refresh, "token_type_hint": 1}),
    ] {
        let r = h.post_json("/auth/revoke", body).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"], "invalid_request");
    }
    assert_eq!(h.stat("revocations").await, 0);
    assert_eq!(h.stat("revoke_calls").await, 10);
    h.rotate(&p.refresh).await;
}

#[tokio::test]
async fn revoke_naming_another_client_is_refused() {
    let h = harness().await;
    let r = h.login_with(json!({"client_id": "app-a"})).await;
    let rt = r.str("refresh_token");
    let refused = h
        .post_json("/auth/revoke", json!({"token": rt, "client_id": "app-b"}))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "unauthorized_client");
    assert_eq!(h.family_state().await["state"], "active");
    let ok = h
        .post_json("/auth/revoke", json!({"token": rt, "client_id": "app-a"}))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(h.family_state().await["state"], "revoked");
}

#[tokio::test]
async fn cookie_mode_revoke_takes_the_cookie_and_clears_it() {
    let h = harness().await;
    let (cookie, access) = h.cookie_login().await;
    let r = read(
        h.http
            .post(h.url("/auth/revoke"))
            .header("cookie", &cookie)
            .header("origin", h.base.as_str()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({}));
    let cleared = r.header("set-cookie").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = h.cookie_refresh(&cookie, None).await;
    assert_eq!(after.status, 400);
    assert_eq!(after.body["cause"], "family_revoked");
    h.expect_invalid_token(&access).await;
    assert_eq!(h.stat("revocations").await, 1);
}

#[tokio::test]
async fn cookie_mode_logout_revokes_and_clears_the_cookie_with_the_same_attributes() {
    let h = harness().await;
    let login = h.login_with(json!({"cookie_only": true})).await;
    let set = login.header("set-cookie").expect("cookie");
    let cookie = cookie_pair(&set);
    let r = read(
        h.http
            .post(h.url("/auth/logout"))
            .header("cookie", &cookie)
            .header(
                "origin",
                format!("http://localhost:{}", h.server.addr.port()),
            ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"], true);
    let cleared = r.header("set-cookie").expect("cookie cleared");
    // A browser only replaces a cookie whose name, path and domain match.
    assert_eq!(
        cleared,
        "tb_refresh=; Path=/auth; HttpOnly; SameSite=Strict; Max-Age=0"
    );
    for attr in ["Path=/auth", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(attr), "set with {attr}: {set}");
    }
    let after = h.cookie_refresh(&cookie, None).await;
    assert_eq!(after.status, 400);
    assert_eq!(after.body["cause"], "family_revoked");
    assert_eq!(h.stat("logouts").await, 1);
    assert_eq!(h.family_state().await["reason"], "logout");
}

#[tokio::test]
async fn logout_accepts_the_rfc7009_token_parameter() {
    let h = harness().await;
    let p = h.login().await;
    let r = h
        .post_raw("/auth/logout", FORM, format!("token={}", p.refresh))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"], true);
    assert!(r
        .header("set-cookie")
        .unwrap_or_default()
        .contains("Max-Age=0"));
    h.expect_grant_error(&p.refresh, "family_revoked").await;
    // Without any token, logout stays the lenient no-op it always was.
    let none = read(h.http.post(h.url("/auth/logout"))).await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body["revoked"], false);
}

#[tokio::test]
async fn cookie_requests_from_a_foreign_origin_are_refused() {
    let h = harness().await;
    let evil = "http://127.0.0.1:1";
    let (cookie, _) = h.cookie_login().await;
    let r = h.cookie_refresh(&cookie, Some(evil)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["cause"], "origin_not_allowed");
    for path in ["/auth/revoke", "/auth/logout"] {
        let r = read(
            h.http
                .post(h.url(path))
                .header("cookie", &cookie)
                .header("origin", evil),
        )
        .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    let plant = read(
        h.http
            .post(h.url("/auth/login"))
            .header("origin", evil)
            .header("content-type", FORM)
            .body("username=demo&password=demo&cookie_only=true"),
    )
    .await;
    assert_eq!(plant.status, 403, "login CSRF: {}", plant.text);
    assert!(plant.header("set-cookie").is_none());
    // Nothing was consumed or revoked: the cookie still works from the page's own origin.
    let ok = h.cookie_refresh(&cookie, Some(h.base.as_str())).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(h.stat("revoked_families").await, 0);
    // Body tokens are the client's own proof; they are judged as before, whatever the origin.
    let p = h.login().await;
    let body = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("origin", evil)
            .json(&json!({ "refresh_token": p.refresh })),
    )
    .await;
    assert_eq!(body.status, 200, "{}", body.text);
    assert!(body.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn revoke_during_a_delayed_refresh_fails_it_in_flight() {
    let h = harness().await;
    let p = h.login().await;
    h.control(
        "/delay-next",
        json!({"path": "/auth/refresh-token", "ms": 1500}),
    )
    .await;
    let rb = h
        .http
        .post(h.url("/auth/refresh-token"))
        .json(&json!({ "refresh_token": p.refresh }));
    let pending = tokio::spawn(read(rb));
    // Wait (bounded) until the rotation is committed and its answer is being held back.
    let mut committed = false;
    for _ in 0..100 {
        if h.family_state().await["generation"] == 2 {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(committed, "the refresh rotated within a second");
    let r = h
        .post_json("/auth/revoke", json!({ "token": p.refresh }))
        .await;
    assert_eq!(r.status, 200);
    let late = pending.await.expect("join");
    assert_eq!(late.status, 400, "{}", late.text);
    assert_eq!(late.body["cause"], "revoked_in_flight");
}
