//! `GET /ws` and `GET /events`: connections that end with their access token.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{harness, Harness};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Nothing in these tests waits longer than this for one message.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn ws_url(h: &Harness, query: &str) -> String {
    format!("{}/ws{query}", h.base.replacen("http://", "ws://", 1))
}

pub(crate) async fn connect(url: &str, protocols: Option<&str>) -> (Ws, Option<String>) {
    let mut req = url.into_client_request().expect("request");
    if let Some(p) = protocols {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(p).expect("header"),
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (ws, proto)
}

/// The next message: `Ok(json)` for text, `Err((code, reason))` for a close.
pub(crate) async fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no protocol error");
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).expect("json")),
            Message::Close(Some(f)) => {
                return Err((u16::from(f.code), f.reason.as_str().to_string()))
            }
            Message::Close(None) => return Err((1005, String::new())),
            _ => continue,
        }
    }
}

/// Skips ticks and echoes until the socket closes; returns its code and reason.
pub(crate) async fn closed(ws: &mut Ws) -> (u16, String) {
    for _ in 0..100 {
        if let Err(c) = next(ws).await {
            return c;
        }
    }
    panic!("the socket never closed");
}

#[tokio::test]
async fn ws_query_token_hello_echo_and_ticks() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, proto) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    assert_eq!(proto, None);
    let hello = next(&mut ws).await.expect("hello");
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["sub"], "demo");
    assert_eq!(hello["gen"], 1);
    assert_eq!(hello["via"], "query");
    ws.send(Message::text("ping me")).await.expect("send");
    let mut saw_echo = false;
    let mut ticks = 0;
    while !(saw_echo && ticks >= 2) {
        let m = next(&mut ws).await.expect("message");
        match m["type"].as_str() {
            Some("echo") => {
                assert_eq!(m["data"], "ping me");
                saw_echo = true;
            }
            Some("tick") => {
                ticks += 1;
                assert_eq!(m["n"], ticks);
                assert_eq!(m["gen"], 1);
            }
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["ws_connections"], 1, "{stats}");
    assert_eq!(stats["ws_open"], 1, "{stats}");
    ws.close(None).await.expect("close");
    // The gauge goes down once the server has seen the close.
    for _ in 0..50 {
        if h.stat("ws_open").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ws_open never went back to 0");
}

#[tokio::test]
async fn ws_subprotocol_token_echoes_bearer() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, proto) = connect(
        &ws_url(&h, ""),
        Some(&format!("bearer, {}, chat.v1", p.access)),
    )
    .await;
    assert_eq!(
        proto.as_deref(),
        Some("bearer"),
        "the server selects `bearer`, never the token"
    );
    let hello = next(&mut ws).await.expect("hello");
    assert_eq!(hello["via"], "protocol");
    // A forged token through the same channel closes with 4401.
    let (mut ws, _) = connect(&ws_url(&h, ""), Some("bearer, a.b.c")).await;
    assert_eq!(next(&mut ws).await.unwrap_err().0, 4401);
    // Offered protocols always get one selected (browsers fail the handshake otherwise): the
    // first one when there is no `bearer`, and `bearer` when the query parameter wins.
    let q = format!("?access_token={}", p.access);
    let (mut ws, proto) = connect(&ws_url(&h, &q), Some("chat.v1, chat.v2")).await;
    assert_eq!(proto.as_deref(), Some("chat.v1"));
    assert_eq!(next(&mut ws).await.expect("hello")["via"], "query");
    let (mut ws, proto) = connect(
        &ws_url(&h, "?access_token=forged"),
        Some(&format!("bearer, {}", p.access)),
    )
    .await;
    assert_eq!(proto.as_deref(), Some("bearer"));
    assert_eq!(
        next(&mut ws).await.unwrap_err(),
        (4401, "malformed access token".into()),
        "the query parameter wins"
    );
}

#[tokio::test]
async fn ws_first_message_token() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, _) = connect(&ws_url(&h, ""), None).await;
    ws.send(Message::text(
        json!({"type": "auth", "token": p.access}).to_string(),
    ))
    .await
    .expect("send");
    let hello = next(&mut ws).await.expect("hello");
    assert_eq!(hello["via"], "message");
    assert_eq!(hello["gen"], 1);
    // Anything else as the first message is refused.
    let (mut ws, _) = connect(&ws_url(&h, ""), None).await;
    ws.send(Message::text("hello?")).await.expect("send");
    let (code, reason) = next(&mut ws).await.unwrap_err();
    assert_eq!(code, 4401);
    assert!(reason.contains("auth"), "{reason}");
}

#[tokio::test]
async fn ws_bad_tokens_close_with_4401_at_connect() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, _) = connect(&ws_url(&h, "?access_token=garbage"), None).await;
    assert_eq!(
        next(&mut ws).await,
        Err((4401, "malformed access token".into()))
    );
    // An expired token at connect time is 4401 too (4001 is for expiry while connected).
    h.advance_clock(61_000).await;
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    assert_eq!(
        next(&mut ws).await,
        Err((4401, "access token expired".into()))
    );
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["ws_connections"], 2, "{stats}");
    assert_eq!(stats["ws_auth_failures"], 2, "{stats}");
    assert_eq!(stats["ws_expired_closes"], 0, "{stats}");
}

#[tokio::test]
async fn ws_token_expiry_closes_with_4001_and_the_new_token_connects() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    next(&mut ws).await.expect("hello");
    let started = std::time::Instant::now();
    h.advance_clock(61_000).await;
    assert_eq!(closed(&mut ws).await, (4001, "token expired".into()));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed within a check period or so"
    );
    let next_pair = h.rotate(&p.refresh).await;
    let (mut ws, _) = connect(
        &ws_url(&h, &format!("?access_token={}", next_pair.access)),
        None,
    )
    .await;
    assert_eq!(next(&mut ws).await.expect("hello")["gen"], 2);
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["ws_connections"], 2, "{stats}");
    assert_eq!(stats["ws_expired_closes"], 1, "{stats}");
    assert_eq!(stats["ws_auth_failures"], 0, "{stats}");
}

#[tokio::test]
async fn ws_close_request_closes_with_the_asked_code() {
    let h = harness().await;
    let p = h.login().await;
    let url = ws_url(&h, &format!("?access_token={}", p.access));
    let (mut ws, _) = connect(&url, None).await;
    next(&mut ws).await.expect("hello");
    ws.send(Message::text(
        json!({"type": "close", "code": 1011, "reason": "overloaded"}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(closed(&mut ws).await, (1011, "overloaded".into()));
    // A code a server may not send is just echoed.
    let (mut ws, _) = connect(&url, None).await;
    next(&mut ws).await.expect("hello");
    let odd = json!({"type": "close", "code": 1005}).to_string();
    ws.send(Message::text(odd.clone())).await.expect("send");
    loop {
        let m = next(&mut ws).await.expect("still open");
        if m["type"] == "echo" {
            assert_eq!(m["data"], odd);
            break;
        }
    }
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["ws_expired_closes"], 0, "{stats}");
    assert_eq!(stats["ws_revoked_closes"], 0, "{stats}");
}

#[tokio::test]
async fn ws_revoked_session_closes_with_4401() {
    let h = harness().await;
    let p = h.login().await;
    let (mut ws, _) = connect(&ws_url(&h, &format!("?access_token={}", p.access)), None).await;
    next(&mut ws).await.expect("hello");
    h.post_json("/auth/logout", json!({ "refresh_token": p.refresh }))
        .await;
    assert_eq!(
        closed(&mut ws).await,
        (4401, "access token family revoked".into())
    );
    assert_eq!(h.stat("ws_revoked_closes").await, 1);
}

#[tokio::test]
async fn ws_refuses_foreign_origins_and_plain_requests() {
    let h = harness().await;
    let p = h.login().await;
    let mut req = ws_url(&h, &format!("?access_token={}", p.access))
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", HeaderValue::from_static("http://evil.example"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    let r = h.get("/ws", Some(&p.access)).await;
    assert_eq!(r.status, 426, "{}", r.text);
    assert_eq!(h.stat("ws_connections").await, 0);
}

#[tokio::test]
async fn control_reset_zeroes_the_counters() {
    let h = harness().await;
    let (mut ws, _) = connect(&ws_url(&h, "?access_token=x"), None).await;
    assert_eq!(next(&mut ws).await.unwrap_err().0, 4401);
    assert_eq!(h.stat("ws_auth_failures").await, 1);
    h.control("/reset", json!({})).await;
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["ws_connections"], 0, "{stats}");
    assert_eq!(stats["ws_auth_failures"], 0, "{stats}");
    assert_eq!(
        stats["logins"], 0,
        "the store's counters are still there: {stats}"
    );
}

// ---------- server-sent events ----------

/// Reads SSE text until `pred(all text so far)` holds (bounded by WAIT per chunk).
pub(crate) async fn read_until(
    res: &mut reqwest::Response,
    text: &mut String,
    pred: impl Fn(&str) -> bool,
) {
    while !pred(text) {
        let chunk = tokio::time::timeout(WAIT, res.chunk())
            .await
            .expect("a chunk in time")
            .expect("body readable")
            .unwrap_or_else(|| panic!("stream ended early: {text}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn sse_401_up_front_for_missing_or_bad_tokens() {
    let h = harness().await;
    let r = h.get("/events", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = h.get("/events", Some("garbage")).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("invalid_token"));
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["sse_auth_failures"], 2, "{stats}");
    assert_eq!(stats["sse_streams"], 0, "{stats}");
}

#[tokio::test]
async fn sse_streams_until_the_token_expires() {
    let h = harness().await;
    let p = h.login().await;
    let mut res = h
        .http
        .get(h.url("/events"))
        .bearer_auth(&p.access)
        .send()
        .await
        .expect("answered");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    read_until(&mut res, &mut text, |t| t.contains("id: 2\n")).await;
    assert!(
        text.starts_with("id: 1\ndata: {\"gen\":1,\"n\":1}\n\n"),
        "{text}"
    );
    h.advance_clock(61_000).await;
    read_until(&mut res, &mut text, |t| t.contains("event: error")).await;
    assert!(
        text.contains("event: error\ndata: {\"code\":\"token_expired\""),
        "{text}"
    );
    let end = tokio::time::timeout(WAIT, res.chunk())
        .await
        .expect("ends in time");
    assert!(
        matches!(end, Ok(None)),
        "the stream ends after the error event: {end:?}"
    );
    let stats = h.control_get("/stats").await;
    assert_eq!(stats["sse_streams"], 1, "{stats}");
    assert_eq!(stats["sse_expired"], 1, "{stats}");
}

#[tokio::test]
async fn sse_resumes_after_last_event_id() {
    let h = harness().await;
    let p = h.login().await;
    let mut res = h
        .http
        .get(h.url("/events"))
        .bearer_auth(&p.access)
        .header("last-event-id", "41")
        .send()
        .await
        .expect("answered");
    let mut text = String::new();
    read_until(&mut res, &mut text, |t| t.contains("\n\n")).await;
    assert!(text.starts_with("id: 42\n"), "{text}");
}
