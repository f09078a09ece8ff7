//! Adversarial case 25: a refresh token is bound to its client and to the scope of its grant,
//! and to its channel: JSON-mode tokens travel in bodies, cookie-mode tokens only in the cookie.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::*;

fn scope_set(s: &serde_json::Value) -> BTreeSet<String> {
    s.as_str()
        .unwrap_or_default()
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

async fn refresh_with(h: &Harness, rt: &str, extra: serde_json::Value) -> Resp {
    let mut body = json!({ "refresh_token": rt });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    h.post_json("/auth/refresh-token", body).await
}

#[tokio::test]
async fn another_clients_refresh_token_is_invalid_grant_and_changes_nothing() {
    let h = harness().await;
    let login = h.login_with(json!({"client_id": "app-a"})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(claims(&login.str("access_token"))["client_id"], "app-a");
    let rt = login.str("refresh_token");
    for other in [json!({"client_id": "app-b"}), json!({})] {
        let r = refresh_with(&h, &rt, other.clone()).await;
        assert_eq!(r.status, 400, "{other}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_grant");
        assert_eq!(r.body["cause"], "client_mismatch");
    }
    // Not consumed, not counted as reuse, family intact: the rightful client carries on.
    assert_eq!(h.stat("reuse_detections").await, 0);
    assert_eq!(h.family_state().await["state"], "active");
    let ok = refresh_with(&h, &rt, json!({"client_id": "app-a"})).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(claims(&ok.str("access_token"))["client_id"], "app-a");
    // A spent token shown by the wrong client is refused the same way; shown by its own
    // client it is the reuse it always was.
    let spent_wrong = refresh_with(&h, &rt, json!({"client_id": "app-b"})).await;
    assert_eq!(spent_wrong.body["cause"], "client_mismatch");
    assert_eq!(h.stat("reuse_detections").await, 0);
    let spent_own = refresh_with(&h, &rt, json!({"client_id": "app-a"})).await;
    assert_eq!(spent_own.body["cause"], "reuse_detected");
}

#[tokio::test]
async fn a_request_naming_no_client_is_the_default_client() {
    let h = harness().await;
    let p = h.login().await;
    assert_eq!(claims(&p.access)["client_id"], "spa");
    let a = refresh_with(&h, &p.refresh, json!({"client_id": "spa"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let b = h.rotate(&a.str("refresh_token")).await;
    let form = h
        .post_raw(
            "/auth/refresh-token",
            "application/x-www-form-urlencoded",
            format!(
                "grant_type=refresh_token&refresh_token={}&client_id=other",
                b.refresh
            ),
        )
        .await;
    assert_eq!(form.status, 400);
    assert_eq!(form.body["cause"], "client_mismatch");
}

#[tokio::test]
async fn refresh_scope_may_narrow_but_never_widen() {
    let h = harness().await;
    let login = h.login().await;
    assert_eq!(claims(&login.access)["scope"], "read write");
    let wide = refresh_with(&h, &login.refresh, json!({"scope": "read write admin"})).await;
    assert_eq!(wide.status, 400, "{}", wide.text);
    assert_eq!(wide.body["error"], "invalid_scope");
    assert_eq!(h.stat("reuse_detections").await, 0);
    let equal = refresh_with(&h, &login.refresh, json!({"scope": "write read"})).await;
    assert_eq!(
        equal.status, 200,
        "not consumed by the refusal: {}",
        equal.text
    );
    assert_eq!(
        scope_set(&equal.body["scope"]),
        scope_set(&json!("read write"))
    );
    let narrow = h
        .post_raw(
            "/auth/refresh-token",
            "application/x-www-form-urlencoded",
            format!(
                "grant_type=refresh_token&refresh_token={}&scope=read",
                equal.str("refresh_token")
            ),
        )
        .await;
    assert_eq!(narrow.status, 200, "{}", narrow.text);
    assert_eq!(narrow.body["scope"], "read");
    assert_eq!(claims(&narrow.str("access_token"))["scope"], "read");
    // The rotated refresh token keeps the original grant (RFC 6749 §6), so the narrowing
    // applied to that access token only.
    let back = h.refresh(&narrow.str("refresh_token")).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.body["scope"], "read write");
    let blank = refresh_with(&h, &back.str("refresh_token"), json!({"scope": ""})).await;
    assert_eq!(blank.body["scope"], "read write", "blank = omitted");
}

#[tokio::test]
async fn login_scope_is_limited_to_what_the_server_grants() {
    let h = harness().await;
    let login = h.login_with(json!({"scope": "read"})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["scope"], "read");
    let wider = refresh_with(
        &h,
        &login.str("refresh_token"),
        json!({"scope": "read write"}),
    )
    .await;
    assert_eq!(wider.status, 400);
    assert_eq!(wider.body["error"], "invalid_scope");
    for scope in ["admin", "read \"x\"", "read\\x"] {
        let r = h.login_with(json!({ "scope": scope })).await;
        assert_eq!(r.status, 400, "{scope}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_scope");
    }
    for bad in [
        json!({"client_id": 5}),
        json!({"client_id": "a\u{1}b"}),
        json!({"scope": 1}),
    ] {
        let r = h.login_with(bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_request");
    }
    assert_eq!(h.stat("logins").await, 1);
    let fams = h.control_get("/families").await;
    assert_eq!(fams[0]["client_id"], "spa");
    assert_eq!(fams[0]["scope"], "read");
    assert_eq!(fams[0]["cookie_mode"], false);
}

#[tokio::test]
async fn json_mode_sets_no_cookie_so_a_bare_refresh_fails() {
    let h = harness().await;
    let r = h.login_with(json!({})).await;
    assert!(
        r.header("set-cookie").is_none(),
        "{:?}",
        r.header("set-cookie")
    );
    let rt = r.str("refresh_token");
    // What `fetch('/auth/refresh-token', {method:'POST'})` sends after a JSON-mode login.
    let bare = read(
        h.http
            .post(h.url("/auth/refresh-token"))
            .header("origin", h.base.as_str()),
    )
    .await;
    assert_eq!(bare.status, 400, "{}", bare.text);
    assert_eq!(bare.body["error"], "invalid_request");
    // Even a JSON-mode token planted in the cookie is refused, and not consumed.
    let planted = h.cookie_refresh(&format!("tb_refresh={rt}"), None).await;
    assert_eq!(planted.status, 400, "{}", planted.text);
    assert_eq!(planted.body["error"], "invalid_grant");
    assert_eq!(planted.body["cause"], "channel_mismatch");
    let next = h.rotate(&rt).await;
    let refreshed = h.refresh(&next.refresh).await;
    assert!(refreshed.header("set-cookie").is_none());
    assert_eq!(h.stat("reuse_detections").await, 0);
}

#[tokio::test]
async fn cookie_mode_token_in_a_body_is_refused_and_not_consumed() {
    let h = harness().await;
    let (cookie, _) = h.cookie_login().await;
    let rt = cookie.trim_start_matches("tb_refresh=").to_string();
    let r = h.refresh(&rt).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["cause"], "channel_mismatch");
    let ok = h.cookie_refresh(&cookie, Some(h.base.as_str())).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.body.get("refresh_token").is_none());
    assert!(ok.header("set-cookie").is_some());
}
