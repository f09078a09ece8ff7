//! DPoP at `GET /events` and `GET /ws` (RFC 9449, issue 13). `/events` judges `Authorization`
//! and the `DPoP` header exactly as the API does. `/ws` cannot get a `DPoP` header from a
//! browser: a bound token is refused in the query and the subprotocol, and accepted only in the
//! auth message with a proof (`htm` GET, `htu` `http://{Host}/ws`); a nonce challenge is close
//! 4402 with the nonce as the reason.

use futures_util::SinkExt;
use serde_json::{json, Value};
use token_server::dpop::Mode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::dpop::{dpop_harness, now_s, Key};
use crate::realtime::{closed, connect, next, read_until, ws_url, Ws};

/// Logs in with a proof by `key`: a DPoP-bound access token.
async fn dpop_login(h: &Harness, key: &Key) -> String {
    crate::dpop::dpop_login(h, key).await.0
}

fn rs_nonce(d: &Value) -> String {
    d["rs_nonce"].as_str().expect("rs_nonce").to_string()
}

/// `GET /events` with `Authorization: <scheme> <at>` and the proof, if any.
async fn events(h: &Harness, scheme: &str, at: &str, proof: Option<&str>) -> Resp {
    events_at(h, "/events", scheme, at, proof).await
}

async fn events_at(h: &Harness, path: &str, scheme: &str, at: &str, proof: Option<&str>) -> Resp {
    let mut rb = h
        .http
        .get(h.url(path))
        .header("authorization", format!("{scheme} {at}"));
    if let Some(p) = proof {
        rb = rb.header("dpop", p);
    }
    // A 200 is a stream without end: read only its head.
    let r = rb.send().await.expect("answered");
    let (status, headers) = (r.status(), r.headers().clone());
    let text = if status == 200 {
        String::new()
    } else {
        r.text().await.expect("body")
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

fn assert_dpop_401(r: &Resp, error: &str) {
    assert_eq!(r.status, 401, "{}", r.text);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with(&format!("DPoP error=\"{error}\", error_description=\"")),
        "{www}"
    );
    assert_eq!(r.body["error"], error, "{}", r.text);
}

/// Opens `/ws` and sends the auth message with `dpop` (a string, or any JSON for broken ones).
async fn ws_auth(h: &Harness, at: &str, dpop: Option<Value>) -> Ws {
    let (mut ws, _) = connect(&ws_url(h, ""), None).await;
    let mut msg = json!({"type": "auth", "token": at});
    if let Some(p) = dpop {
        msg["dpop"] = p;
    }
    ws.send(Message::text(msg.to_string())).await.expect("send");
    ws
}

const DOWNGRADE: &str = "DPoP-bound access token presented as a bearer token";

// ---------- GET /events ----------

#[tokio::test]
async fn sse_streams_with_a_dpop_token_and_its_proof_until_it_expires() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    let proof = key.api_proof("GET", &h.url("/events"), Some(&at), json!({}));
    let mut res = h
        .http
        .get(h.url("/events"))
        .header("authorization", format!("DPoP {at}"))
        .header("dpop", proof)
        .send()
        .await
        .expect("answered");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    read_until(&mut res, &mut text, |t| t.contains("id: 1\n")).await;
    h.advance_clock(61_000).await;
    read_until(&mut res, &mut text, |t| t.contains("event: error")).await;
    assert!(text.contains("\"code\":\"token_expired\""), "{text}");
    let s = h.control_get("/stats").await;
    assert_eq!(s["sse_streams"], 1, "{s}");
    assert_eq!(s["sse_auth_failures"], 0, "{s}");
    assert_eq!(s["dpop_proofs_accepted"], 2, "login and stream: {s}");
    assert_eq!(s["dpop_proofs_rejected"], 0, "{s}");
}

#[tokio::test]
async fn sse_refuses_a_bound_token_sent_as_bearer_in_every_mode() {
    let h = dpop_harness(Mode::Optional).await;
    let at = dpop_login(&h, &Key::new()).await;
    let r = events(&h, "Bearer", &at, None).await;
    assert_dpop_401(&r, "invalid_dpop_proof");
    assert_eq!(r.body["error_description"], DOWNGRADE);
    // With DPoP off too: a stolen bound token is worth nothing as a bearer token.
    h.control("/config", json!({"dpop": "off"})).await;
    assert_dpop_401(&events(&h, "Bearer", &at, None).await, "invalid_dpop_proof");
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_bearer_downgrades"], 2, "{s}");
    assert_eq!(s["sse_auth_failures"], 2, "{s}");
    assert_eq!(s["sse_streams"], 0, "{s}");
    assert_eq!(s["unauthorized_sent"], 2, "{s}");
}

#[tokio::test]
async fn sse_checks_the_proof_as_the_api_does() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    let url = h.url("/events");
    let replayed = key.api_proof("GET", &url, Some(&at), json!({}));
    assert_eq!(events(&h, "DPoP", &at, Some(&replayed)).await.status, 200);
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing"),
        (Some(key.api_proof("GET", &url, None, json!({}))), "ath"),
        (
            Some(Key::new().api_proof("GET", &url, Some(&at), json!({}))),
            "jkt_mismatch",
        ),
        (Some(key.api_proof("POST", &url, Some(&at), json!({}))), "htm"),
        (
            Some(key.api_proof("GET", &h.url("/statistics"), Some(&at), json!({}))),
            "htu",
        ),
        (Some(replayed), "jti_replay"),
    ];
    for (proof, reason) in &cases {
        let counter = format!("dpop_rejected_{reason}");
        let before = h.stat(&counter).await;
        let r = events(&h, "DPoP", &at, proof.as_deref()).await;
        assert_dpop_401(&r, "invalid_dpop_proof");
        assert_eq!(h.stat(&counter).await, before + 1, "{reason}: {}", r.text);
    }
    // A query string is no part of `htu`.
    let p = key.api_proof("GET", &url, Some(&at), json!({}));
    let r = events_at(&h, "/events?room=1", "DPoP", &at, Some(&p)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(h.stat("sse_auth_failures").await, cases.len() as u64);
}

#[tokio::test]
async fn sse_answers_a_proof_without_the_nonce_with_use_dpop_nonce() {
    let h = dpop_harness(Mode::Required).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    let nonce = rs_nonce(&h.control_get("/dpop").await);
    let url = h.url("/events");
    let r = events(
        &h,
        "DPoP",
        &at,
        Some(&key.api_proof("GET", &url, Some(&at), json!({}))),
    )
    .await;
    assert_dpop_401(&r, "use_dpop_nonce");
    assert_eq!(r.header("dpop-nonce").as_deref(), Some(nonce.as_str()));
    let p = key.api_proof("GET", &url, Some(&at), json!({ "nonce": nonce }));
    let ok = events(&h, "DPoP", &at, Some(&p)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.header("dpop-nonce").as_deref(),
        Some(nonce.as_str()),
        "every /events answer carries the RS nonce while nonces are on"
    );
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_nonce_challenges_rs"], 1, "{s}");
    assert_eq!(
        s["unauthorized_sent"], 0,
        "a challenge is no verdict on the token: {s}"
    );
    assert_eq!(s["sse_streams"], 1, "{s}");
}

#[tokio::test]
async fn sse_expired_bound_token_is_invalid_token_in_the_dpop_scheme() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    h.advance_clock(61_000).await;
    // The proof's iat follows the server clock, so only the token is out of date.
    let p = key.api_proof(
        "GET",
        &h.url("/events"),
        Some(&at),
        json!({"iat": now_s() + 61}),
    );
    let r = events(&h, "DPoP", &at, Some(&p)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("DPoP error=\"invalid_token\", error_description=\"access token expired\"")
    );
}

#[tokio::test]
async fn sse_required_mode_refuses_unbound_bearer_tokens() {
    let h = dpop_harness(Mode::Optional).await;
    let p = h.login().await;
    assert_eq!(events(&h, "Bearer", &p.access, None).await.status, 200);
    h.control("/config", json!({"dpop": "required"})).await;
    let r = events(&h, "Bearer", &p.access, None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .starts_with("DPoP error=\"invalid_token\""),
        "{:?}",
        r.header("www-authenticate")
    );
    assert!(r.header("dpop-nonce").is_some());
    let none = h.get("/events", None).await;
    assert_eq!(
        none.header("www-authenticate").as_deref(),
        Some("DPoP algs=\"ES256\"")
    );
}

// ---------- GET /ws ----------

#[tokio::test]
async fn ws_refuses_a_bound_token_in_the_query_and_the_subprotocol() {
    let h = dpop_harness(Mode::Optional).await;
    let at = dpop_login(&h, &Key::new()).await;
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={at}")), None).await;
    assert_eq!(next(&mut ws).await, Err((4401, DOWNGRADE.into())));
    let (mut ws, proto) = connect(&ws_url(&h, ""), Some(&format!("bearer, {at}"))).await;
    assert_eq!(proto.as_deref(), Some("bearer"));
    assert_eq!(next(&mut ws).await, Err((4401, DOWNGRADE.into())));
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_bearer_downgrades"], 2, "{s}");
    assert_eq!(s["ws_auth_failures"], 2, "{s}");
}

#[tokio::test]
async fn ws_accepts_a_bound_token_only_in_the_auth_message_with_a_proof() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    // Without a proof the message is a bearer presentation like the others.
    let mut ws = ws_auth(&h, &at, None).await;
    assert_eq!(next(&mut ws).await, Err((4401, DOWNGRADE.into())));
    // `htu` is the socket's URL as http:, without the query.
    let p = key.api_proof("GET", &h.url("/ws"), Some(&at), json!({}));
    let (mut ws, _) = connect(&ws_url(&h, "?room=1"), None).await;
    let msg = json!({"type": "auth", "token": at, "dpop": p});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    let hello = next(&mut ws).await.expect("hello");
    assert_eq!(
        (hello["via"].as_str(), hello["gen"].as_u64()),
        (Some("message"), Some(1))
    );
    // Bound for its whole life: it ends at expiry like any socket.
    h.advance_clock(61_000).await;
    assert_eq!(closed(&mut ws).await, (4001, "token expired".into()));
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_bearer_downgrades"], 1, "{s}");
    assert_eq!(s["ws_auth_failures"], 1, "{s}");
    assert_eq!(s["ws_expired_closes"], 1, "{s}");
    assert_eq!(s["dpop_proofs_accepted"], 2, "login and socket: {s}");
}

#[tokio::test]
async fn ws_auth_message_proofs_are_checked_as_the_api_checks_them() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    let url = h.url("/ws");
    let once = key.api_proof("GET", &url, Some(&at), json!({}));
    let mut ws = ws_auth(&h, &at, Some(json!(once))).await;
    next(&mut ws).await.expect("hello");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!(key.api_proof("GET", &ws_url(&h, ""), Some(&at), json!({}))),
            "htu",
        ),
        (
            json!(key.api_proof("GET", &h.url("/events"), Some(&at), json!({}))),
            "htu",
        ),
        (json!(key.api_proof("POST", &url, Some(&at), json!({}))), "htm"),
        (json!(key.api_proof("GET", &url, None, json!({}))), "ath"),
        (
            json!(Key::new().api_proof("GET", &url, Some(&at), json!({}))),
            "jkt_mismatch",
        ),
        (json!(once), "jti_replay"),
        (json!(42), "malformed"),
        (json!("a.b.c"), "malformed"),
    ];
    for (proof, reason) in cases {
        let counter = format!("dpop_rejected_{reason}");
        let before = h.stat(&counter).await;
        let mut ws = ws_auth(&h, &at, Some(proof)).await;
        let (code, why) = next(&mut ws).await.unwrap_err();
        assert_eq!(code, 4401, "{reason}: {why}");
        assert!(
            why.starts_with("DPoP proof") || why.starts_with("malformed DPoP"),
            "{reason}: {why}"
        );
        assert_eq!(h.stat(&counter).await, before + 1, "{reason}: {why}");
    }
}

#[tokio::test]
async fn ws_nonce_challenge_closes_with_4402_and_the_nonce_as_the_reason() {
    let h = dpop_harness(Mode::Required).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    let url = h.url("/ws");
    let nonce = rs_nonce(&h.control_get("/dpop").await);
    let mut ws = ws_auth(
        &h,
        &at,
        Some(json!(key.api_proof("GET", &url, Some(&at), json!({})))),
    )
    .await;
    assert_eq!(next(&mut ws).await, Err((4402, nonce.clone())));
    let p = key.api_proof("GET", &url, Some(&at), json!({ "nonce": nonce }));
    let mut ws = ws_auth(&h, &at, Some(json!(p))).await;
    assert_eq!(next(&mut ws).await.expect("hello")["via"], "message");
    // A rotated nonce: challenged again, with the new one.
    let rotated = rs_nonce(&h.control("/dpop", json!({"rotate": "rs"})).await);
    let p = key.api_proof("GET", &url, Some(&at), json!({ "nonce": nonce }));
    let mut ws = ws_auth(&h, &at, Some(json!(p))).await;
    assert_eq!(next(&mut ws).await, Err((4402, rotated)));
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_nonce_challenges_rs"], 2, "{s}");
    assert_eq!(s["ws_auth_failures"], 0, "a challenge is no refusal: {s}");
    assert_eq!(s["ws_connections"], 3, "{s}");
}

#[tokio::test]
async fn ws_expired_bound_token_at_connect_closes_with_4401() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    h.advance_clock(61_000).await;
    let p = key.api_proof(
        "GET",
        &h.url("/ws"),
        Some(&at),
        json!({"iat": now_s() + 61}),
    );
    let mut ws = ws_auth(&h, &at, Some(json!(p))).await;
    assert_eq!(
        next(&mut ws).await,
        Err((4401, "access token expired".into()))
    );
}

#[tokio::test]
async fn ws_with_dpop_off_a_proof_counts_for_nothing() {
    let h = dpop_harness(Mode::Optional).await;
    let key = Key::new();
    let at = dpop_login(&h, &key).await;
    h.control("/config", json!({"dpop": "off"})).await;
    let p = key.api_proof("GET", &h.url("/ws"), Some(&at), json!({}));
    let mut ws = ws_auth(&h, &at, Some(json!(p))).await;
    assert_eq!(next(&mut ws).await, Err((4401, DOWNGRADE.into())));
    let s = h.control_get("/stats").await;
    assert_eq!(s["dpop_proofs_accepted"], 1, "only the login's: {s}");
    assert_eq!(s["dpop_bearer_downgrades"], 1, "{s}");
}

#[tokio::test]
async fn ws_unbound_tokens_follow_the_apis_rules() {
    let h = dpop_harness(Mode::Optional).await;
    let p = h.login().await;
    // Optional: as before, in every channel; a proof beside an unbound token is refused, as
    // `Authorization: DPoP` with one is at the API.
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    assert_eq!(next(&mut ws).await.expect("hello")["via"], "query");
    let mut ws = ws_auth(&h, &p.access, None).await;
    assert_eq!(next(&mut ws).await.expect("hello")["via"], "message");
    let proof = Key::new().api_proof("GET", &h.url("/ws"), Some(&p.access), json!({}));
    let mut ws = ws_auth(&h, &p.access, Some(json!(proof))).await;
    assert_eq!(
        next(&mut ws).await,
        Err((4401, "access token is not DPoP-bound".into()))
    );
    // Required: bearer tokens are refused, as at the API.
    h.control("/config", json!({"dpop": "required", "dpop_nonces": false}))
        .await;
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    assert_eq!(
        next(&mut ws).await,
        Err((
            4401,
            "DPoP required: bearer access tokens are not accepted".into()
        ))
    );
    assert_eq!(h.stat("dpop_bearer_downgrades").await, 0);
}
