//! Long-lived connections that end with their access token: `GET /ws` (WebSocket) and
//! `GET /events` (server-sent events). They make "the token expired mid-connection → one
//! refresh → reconnect with the new token" testable for clients.
//!
//! Expiry is judged on the server's clock (honouring `/__control/clock`), checked every
//! [`CHECK_EVERY`], so moving the clock forward ends a connection within that long.
//!
//! Tokens are judged by the API's rules ([`api::judge_credentials`]), DPoP included: `/events`
//! exactly as the API (`Authorization: DPoP` + `DPoP` proof). A browser's WebSocket handshake
//! cannot carry a `DPoP` header, so a DPoP-bound token is refused in `/ws`'s query parameter and
//! subprotocol and accepted only in the auth message, with the proof beside it:
//! `{"type":"auth","token":"…","dpop":"<proof>"}`, `htm` `GET`, `htu` `http://{Host}/ws`.
//!
//! The counters live here, not in the store; [`control_mw`] adds them to `GET /__control/stats`
//! and zeroes them on `POST /__control/reset`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

use crate::api::{self, log_info, Auth, Scheme};
use crate::app::App;
use crate::dpop::{self, Mode};
use crate::jwt::Claims;
use crate::store::AccessError;
use crate::web::{error_json, json_response, with_info};

/// How often a live connection's token is checked against the (test-shiftable) clock.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Period of the `tick` messages (WebSocket) and `data` events (SSE).
pub const TICK_EVERY: Duration = Duration::from_millis(500);
/// How long a socket without a token in the URL or the subprotocol waits for its auth message.
pub const AUTH_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server waits for the client's answer to its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Close code: the token was valid at connect time and has expired since.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: no usable token at connect time (missing, forged, expired, revoked, a DPoP-bound
/// token without its proof, a refused proof), or the session ended while connected (family
/// revoked, server reset).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: the auth message's DPoP proof lacks the current resource-server nonce (or its
/// `iat` is off): the reason is the nonce to retry with, as `DPoP-Nonce` would carry it. The
/// token is fine, so a refresh would not help.
pub const CLOSE_USE_DPOP_NONCE: u16 = 4402;
/// The subprotocol that announces a token: `Sec-WebSocket-Protocol: bearer, <token>`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// Counters of this module, shown in `/__control/stats`.
#[derive(Default)]
pub struct Counters {
    /// Every completed WebSocket upgrade, authenticated or not.
    pub ws_connections: AtomicU64,
    /// Sockets closed with 4401 because the token at connect time was missing or invalid.
    pub ws_auth_failures: AtomicU64,
    /// Sockets closed with 4001 because their token expired while connected.
    pub ws_expired_closes: AtomicU64,
    /// Sockets closed with 4401 because their session ended while connected.
    pub ws_revoked_closes: AtomicU64,
    /// Event streams started (authenticated `GET /events`).
    pub sse_streams: AtomicU64,
    /// Event streams ended with `event: error` / `token_expired`.
    pub sse_expired: AtomicU64,
    /// `GET /events` answered 401 up front.
    pub sse_auth_failures: AtomicU64,
    /// Gauges (not reset): sockets and streams open right now.
    pub ws_open: AtomicU64,
    pub sse_open: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn json(&self) -> Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "ws_connections": g(&self.ws_connections),
            "ws_auth_failures": g(&self.ws_auth_failures),
            "ws_expired_closes": g(&self.ws_expired_closes),
            "ws_revoked_closes": g(&self.ws_revoked_closes),
            "ws_open": g(&self.ws_open),
            "sse_streams": g(&self.sse_streams),
            "sse_expired": g(&self.sse_expired),
            "sse_auth_failures": g(&self.sse_auth_failures),
            "sse_open": g(&self.sse_open),
        })
    }

    fn reset(&self) {
        for c in [
            &self.ws_connections,
            &self.ws_auth_failures,
            &self.ws_expired_closes,
            &self.ws_revoked_closes,
            &self.sse_streams,
            &self.sse_expired,
            &self.sse_auth_failures,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The state of the two endpoints: the application and the counters.
pub struct Live {
    pub app: Arc<App>,
    pub counters: Counters,
}

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Live> {
        Arc::new(Live {
            app,
            counters: Counters::default(),
        })
    }
}

/// Decrements a gauge when a connection ends, however it ends (the client going away drops
/// the task or the stream).
struct Open(Arc<Live>, fn(&Counters) -> &AtomicU64);

impl Open {
    fn new(live: &Arc<Live>, gauge: fn(&Counters) -> &AtomicU64) -> Open {
        Counters::bump(gauge(&live.counters));
        Open(live.clone(), gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let _ =
            (self.1)(&self.0.counters).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
}

/// Adds this module's counters to `GET /__control/stats` and zeroes them after a successful
/// `POST /__control/reset`.
pub async fn control_mw(State(live): State<Arc<Live>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let stats = req.method() == Method::GET && path == "/__control/stats";
    let reset = req.method() == Method::POST && path == "/__control/reset";
    let resp = next.run(req).await;
    if reset && resp.status() == StatusCode::OK {
        live.counters.reset();
    }
    if !stats || resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if let (Some(obj), Value::Object(ours)) = (v.as_object_mut(), live.counters.json()) {
        obj.extend(ours);
    }
    let mut out = json_response(parts.status, v);
    for (k, val) in parts.headers.iter() {
        if k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), val.clone());
        }
    }
    out
}

/// Why a socket's token is refused: the close code and reason, with its claims when they verified.
struct Refusal {
    code: u16,
    reason: String,
    claims: Option<Box<Claims>>,
}

impl Refusal {
    fn plain(reason: &str) -> Refusal {
        Refusal {
            code: CLOSE_UNAUTHORIZED,
            reason: reason.into(),
            claims: None,
        }
    }
}

/// A socket's token judged now, by the API's rules. `proof`: the auth message's `dpop`, if
/// any; a token in the query or the subprotocol is a bearer token.
fn judge(app: &App, token: &str, proof: Option<&str>, htu: &str) -> Result<Claims, Refusal> {
    let mode = app.lock().rt.dpop;
    // With DPoP off a proof counts for nothing, as `Authorization: DPoP` does at the API.
    let scheme = if proof.is_some() && mode != Mode::Off {
        Scheme::Dpop
    } else {
        Scheme::Bearer
    };
    let creds = Some((scheme, token.to_string()));
    let (auth, _) = api::judge_credentials(app, mode, creds, "GET", htu.into(), |expect| {
        dpop::check_value(app, proof, expect)
    });
    let (code, reason, claims) = match auth {
        Auth::Ok(c) => return Ok(c),
        Auth::Proof("use_dpop_nonce", _, c) => {
            (CLOSE_USE_DPOP_NONCE, dpop::current_nonces(app).1, c)
        }
        Auth::Proof(_, d, c) | Auth::Invalid(d, c) => (CLOSE_UNAUTHORIZED, d.to_string(), c),
        Auth::Missing => (CLOSE_UNAUTHORIZED, "no access token".to_string(), None),
    };
    Err(Refusal {
        code,
        reason,
        claims: claims.map(Box::new),
    })
}

/// Whether a connection's token still holds: `Ok`, or the close code and reason.
fn still_valid(app: &App, claims: &Claims) -> Result<(), (u16, &'static str)> {
    match app.lock().check_access(claims) {
        Ok(()) => Ok(()),
        Err(AccessError::Expired) => Err((CLOSE_TOKEN_EXPIRED, "token expired")),
        Err(e) => Err((CLOSE_UNAUTHORIZED, e.description())),
    }
}

fn query_token(uri: &Uri) -> Option<String> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    params
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn offered_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn first_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    HeaderValue::from_str(offered_protocols(headers).first()?).ok()
}

/// `Sec-WebSocket-Protocol: bearer, <token>[, other…]`: the entry right after `bearer` (any
/// case) is the token. Returns the client's spelling of `bearer` (to echo) and the token. Read
/// from the headers in order (the upgrade extractor keeps the offered protocols as a set).
fn protocol_token(headers: &HeaderMap) -> Option<(HeaderValue, String)> {
    let offered = offered_protocols(headers);
    let i = offered
        .iter()
        .position(|p| p.eq_ignore_ascii_case(BEARER_PROTOCOL))?;
    let token = offered.get(i + 1)?.to_string();
    Some((HeaderValue::from_str(offered[i]).ok()?, token))
}

/// Where a socket's token came from.
#[derive(Clone, Copy)]
enum Via {
    Query,
    Protocol,
    Message,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Query => "query",
            Via::Protocol => "protocol",
            Via::Message => "message",
        }
    }
}

/// `GET /ws`. The token comes from `?access_token=`, else from the subprotocol pair
/// `bearer, <token>` (the server then selects `bearer`), else from a first message
/// `{"type":"auth","token":"…"}`. See the README for the whole protocol.
pub async fn ws(
    State(live): State<Arc<Live>>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Browsers do not apply CORS to WebSockets; the server has to look at Origin itself.
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !live
            .app
            .origin_allowed(&String::from_utf8_lossy(origin.as_bytes()))
        {
            return error_json(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "WebSocket connections are only accepted from allowed origins",
            );
        }
    }
    let mut upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => {
            let mut r = error_json(
                StatusCode::UPGRADE_REQUIRED,
                "invalid_request",
                "GET /ws is a WebSocket endpoint (Upgrade: websocket)",
            );
            r.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            return r;
        }
    };
    let from_protocol = protocol_token(&headers);
    // A browser fails the handshake when it offered subprotocols and none is selected, so one
    // always is: `bearer` when offered (whichever token wins), else the first one offered.
    if let Some((echo, _)) = &from_protocol {
        upgrade.set_selected_protocol(echo.clone());
    } else if let Some(first) = first_protocol(&headers) {
        upgrade.set_selected_protocol(first);
    }
    let given = match (query_token(&uri), from_protocol) {
        (Some(t), _) => Some((Via::Query, t)),
        (None, Some((_, t))) => Some((Via::Protocol, t)),
        (None, None) => None,
    };
    // The `htu` an auth message's proof must name: this URL as http(s), without the query.
    let htu = dpop::expected_htu(&headers, &uri);
    let judged = given
        .as_ref()
        .map(|(via, t)| (*via, judge(&live.app, t, None, &htu)));
    let info = match &judged {
        None => log_info(None, "ws_upgrade: awaiting auth message".into()),
        Some((_, Ok(c))) => log_info(Some(c), "ws_upgrade: ok".into()),
        Some((_, Err(r))) => log_info(
            r.claims.as_deref(),
            format!("ws_upgrade: invalid_token: {}", r.reason),
        ),
    };
    let resp = upgrade.on_upgrade(move |socket| session(live, socket, judged, htu));
    with_info(resp, info)
}

type Judged = Option<(Via, Result<Claims, Refusal>)>;

async fn session(live: Arc<Live>, mut socket: WebSocket, judged: Judged, htu: String) {
    let _open = Open::new(&live, |c| &c.ws_open);
    Counters::bump(&live.counters.ws_connections);
    let (via, judged) = match judged {
        Some(j) => j,
        None => (
            Via::Message,
            auth_message(&live.app, &mut socket, &htu).await,
        ),
    };
    let claims = match judged {
        Ok(c) => c,
        Err(r) => {
            // A nonce challenge is no verdict on the token (as `unauthorized_sent` at the API).
            if r.code == CLOSE_UNAUTHORIZED {
                Counters::bump(&live.counters.ws_auth_failures);
            }
            close(&mut socket, r.code, &r.reason).await;
            return;
        }
    };
    let hello = json!({
        "type": "hello",
        "sub": claims.sub,
        "gen": claims.gen,
        "via": via.as_str(),
        "exp_ms": claims.exp_ms,
    });
    if socket.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK_EVERY, TICK_EVERY);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = check.tick() => {
                if let Err((code, reason)) = still_valid(&live.app, &claims) {
                    let c = &live.counters;
                    Counters::bump(if code == CLOSE_TOKEN_EXPIRED { &c.ws_expired_closes } else { &c.ws_revoked_closes });
                    close(&mut socket, code, reason).await;
                    return;
                }
            }
            _ = tick.tick() => {
                n += 1;
                let msg = json!({ "type": "tick", "n": n, "gen": claims.gen });
                if socket.send(Message::text(msg.to_string())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => {
                let reply = match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some((code, reason)) = close_request(t.as_str()) {
                            close(&mut socket, code, &reason).await;
                            return;
                        }
                        Message::text(json!({ "type": "echo", "data": t.as_str() }).to_string())
                    }
                    Some(Ok(Message::Binary(b))) => Message::Binary(b),
                    Some(Ok(_)) => continue, // ping/pong are answered by the library
                    // The client closed (its close frame was answered) or went away.
                    Some(Err(_)) | None => return,
                };
                if socket.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits for `{"type":"auth","token":"…"}` (with `"dpop":"<proof>"` for a DPoP-bound token) as
/// the first message.
async fn auth_message(app: &App, socket: &mut WebSocket, htu: &str) -> Result<Claims, Refusal> {
    let first = tokio::time::timeout(AUTH_MESSAGE_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(t))) => return Some(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let text = match first {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Refusal::plain("expected an auth message first")),
        Err(_) => return Err(Refusal::plain("no auth message in time")),
    };
    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
    // A `dpop` that is not a string is a proof all the same: a malformed one.
    let proof = match v.get("dpop") {
        None | Some(Value::Null) => None,
        Some(p) => Some(p.as_str().unwrap_or("")),
    };
    match (v["type"].as_str(), v["token"].as_str()) {
        (Some("auth"), Some(token)) => judge(app, token, proof, htu),
        _ => Err(Refusal::plain(
            "expected {\"type\":\"auth\",\"token\":…} first",
        )),
    }
}

/// `{"type":"close","code":N,"reason":"…"}`: a test hook that makes the server close this
/// socket with that code, so clients can be tested against any close (1011, 1000, 4001…).
/// Codes a server may send: 1000, 1001, 1008, 1011–1013 and 3000–4999; the reason is cut at
/// 123 bytes. Anything else is echoed like any message.
fn close_request(text: &str) -> Option<(u16, String)> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v["type"] != "close" {
        return None;
    }
    let code = u16::try_from(v["code"].as_u64()?).ok()?;
    if !matches!(code, 1000 | 1001 | 1008 | 1011..=1013 | 3000..=4999) {
        return None;
    }
    let mut reason = v["reason"].as_str().unwrap_or("").to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Some((code, reason))
}

/// Sends the close frame and waits (bounded) for the client's answer, so the client sees the
/// code and reason rather than an abnormal 1006.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

// ---------- server-sent events ----------

/// `GET /events` (`Authorization: Bearer …`, or `DPoP …` with a `DPoP` proof, judged and
/// answered as the API does): `id: n` + `data: {"n":n,"gen":g}` at once and every
/// [`TICK_EVERY`]; `Last-Event-ID: k` resumes at `k + 1`. When the token expires the stream
/// ends with `event: error` / `data: {"code":"token_expired"}`.
pub async fn events(State(live): State<Arc<Live>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let headers = &parts.headers;
    let c = &live.counters;
    let claims = match api::authenticate(&live.app, &parts) {
        (Auth::Ok(claims), _) => claims,
        (auth, scheme) => {
            Counters::bump(&c.sse_auth_failures);
            return with_info(api::unauthorized(&auth, scheme), api::auth_info(&auth));
        }
    };
    let next_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(1, |k| k.saturating_add(1));
    Counters::bump(&c.sse_streams);
    let info = log_info(Some(&claims), "sse_stream".into());
    let stream = EventStream {
        open: Open::new(&live, |c| &c.sse_open),
        live,
        claims,
        next_id,
        check: None,
        ended: false,
        since_tick: None,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, EventStream::next));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_info(resp, info)
}

struct EventStream {
    #[allow(dead_code)] // held for its Drop: the gauge goes down when the client goes away
    open: Open,
    live: Arc<Live>,
    claims: Claims,
    next_id: u64,
    check: Option<tokio::time::Interval>,
    ended: bool,
    /// When the last data event went out (`None` before the first).
    since_tick: Option<tokio::time::Instant>,
}

impl EventStream {
    async fn next(mut self) -> Option<(Result<String, Infallible>, EventStream)> {
        if self.ended {
            return None;
        }
        let check = self
            .check
            .get_or_insert_with(|| tokio::time::interval(CHECK_EVERY));
        loop {
            if let Err((code, reason)) = still_valid(&self.live.app, &self.claims) {
                self.ended = true;
                let code = if code == CLOSE_TOKEN_EXPIRED {
                    Counters::bump(&self.live.counters.sse_expired);
                    "token_expired"
                } else {
                    "invalid_token"
                };
                let data = json!({ "code": code, "error_description": reason });
                return Some((Ok(format!("event: error\ndata: {data}\n\n")), self));
            }
            let due = self.since_tick.is_none_or(|t| t.elapsed() >= TICK_EVERY);
            if due {
                self.since_tick = Some(tokio::time::Instant::now());
                let (id, gen) = (self.next_id, self.claims.gen);
                self.next_id += 1;
                let data = json!({ "n": id, "gen": gen });
                return Some((Ok(format!("id: {id}\ndata: {data}\n\n")), self));
            }
            check.tick().await;
        }
    }
}
