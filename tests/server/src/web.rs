//! HTTP plumbing: the accept loop (which can drop a connection on purpose), body reading
//! with a size limit, CORS, the request log, JSON error bodies, static files, and the
//! "foreign origin" listener.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Component, Path};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::app::App;
use crate::store::LogInfo;

pub const BODY_LIMIT: usize = 64 * 1024;
/// Oversized bodies are read and discarded up to here, so the client gets its 413 instead
/// of a reset connection; beyond it the connection is simply closed.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

pub const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, DPoP";

/// Marker in response extensions: close the connection instead of sending this response.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by test fault")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// Per-connection limits against slow or idle clients (see `Config`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnLimits {
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
}

impl ConnLimits {
    pub fn from_ms(header_ms: u64, body_ms: u64) -> ConnLimits {
        let d = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        ConnLimits {
            header_timeout: d(header_ms),
            body_timeout: d(body_ms),
        }
    }
}

/// The error a request body yields once its deadline has passed; `read_body` turns it into 408.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body with an absolute deadline. It bounds the whole body rather than the gap
/// between chunks, because a client trickling one byte just inside any per-chunk limit would
/// otherwise hold its connection (and a handler) forever.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn wrap_body(body: Incoming, limit: Option<Duration>) -> Body {
    match limit {
        Some(d) if !hyper::body::Body::is_end_stream(&body) => Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(d)),
        }),
        _ => Body::new(body),
    }
}

/// Serves HTTP/1.1 on `listener` until the task is aborted. hyper closes a connection
/// without writing anything when the service returns an error, which is exactly the "lost
/// response" fault; axum's own `serve` cannot do that because its service is infallible.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnLimits) {
    let keep_alive = limits
        .header_timeout
        .map(|d| d.as_secs())
        .filter(|s| *s >= 1)
        .and_then(|s| HeaderValue::from_str(&format!("timeout={s}")).ok());
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Typically EMFILE; back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let keep_alive = keep_alive.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut router = router.clone();
                let keep_alive = keep_alive.clone();
                async move {
                    let req = req.map(|b| wrap_body(b, limits.body_timeout));
                    let mut resp = match tower::Service::call(&mut router, req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    if resp.extensions().get::<DropConnection>().is_some() {
                        return Err(DroppedOnPurpose);
                    }
                    // Tells clients that honour it (undici, curl) when the server will close an
                    // idle connection, so they do not race the close with a new request.
                    if let Some(v) = keep_alive {
                        resp.headers_mut()
                            .insert(HeaderName::from_static("keep-alive"), v);
                    }
                    Ok::<_, DroppedOnPurpose>(resp)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // hyper arms this timer whenever it waits for a request head: on a new connection,
            // mid-head, and idle between keep-alive requests. So it bounds slowloris heads and
            // idle connections alike; on expiry it closes without writing anything.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            // with_upgrades: `GET /ws` hands the connection over to a WebSocket after its 101.
            let _ = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

// ---------- responses ----------

pub fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error_json(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({ "error": error, "error_description": description }),
    )
}

pub fn with_info(mut resp: Response, info: LogInfo) -> Response {
    resp.extensions_mut().insert(info);
    resp
}

pub fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

pub fn dropped(info: LogInfo) -> Response {
    let mut resp = with_info(Response::new(Body::empty()), info);
    resp.extensions_mut().insert(DropConnection);
    resp
}

// ---------- request bodies ----------

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Unreadable,
    UnsupportedType(String),
    BadJson(String),
    BadForm,
}

impl BodyError {
    pub fn response(&self) -> Response {
        match self {
            BodyError::TooLarge => error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body larger than 65536 bytes",
            ),
            BodyError::TimedOut => {
                let mut r = error_json(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    "request body not received in time",
                );
                // The rest of the body may still arrive; the connection cannot be reused.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            BodyError::Unreadable => error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "request body could not be read",
            ),
            BodyError::UnsupportedType(ct) => error_json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                &format!(
                    "unsupported content type '{ct}': use application/json or application/x-www-form-urlencoded"
                ),
            ),
            BodyError::BadJson(why) => error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("malformed JSON body: {why}"),
            ),
            BodyError::BadForm => error_json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "malformed form body",
            ),
        }
    }
}

pub async fn read_body(headers: &HeaderMap, mut body: Body) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut too_large = declared.is_some_and(|n| n > BODY_LIMIT as u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if caused_by_timeout(&e) {
                BodyError::TimedOut
            } else {
                BodyError::Unreadable
            }
        })?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > BODY_LIMIT {
                too_large = true;
            }
            if total > DRAIN_LIMIT {
                break;
            }
            if !too_large {
                buf.extend_from_slice(&data);
            }
        }
    }
    if too_large {
        Err(BodyError::TooLarge)
    } else {
        Ok(buf)
    }
}

fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    // Bounded: error chains are finite, and this one is two or three links deep.
    for _ in 0..16 {
        match cur {
            Some(err) if err.is::<BodyTimedOut>() => return true,
            Some(err) => cur = err.source(),
            None => break,
        }
    }
    false
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Parameters from a JSON object or a form body; an empty body gives an empty map. A body
/// without a content type is sniffed, since curl and hand-written fetches often omit it.
pub async fn read_params(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, BodyError> {
    let bytes = read_body(headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ct = content_type(headers);
    let is_json = if ct.is_empty() {
        bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    } else if ct == "application/json" || ct.ends_with("+json") {
        true
    } else if ct == "application/x-www-form-urlencoded" {
        false
    } else {
        return Err(BodyError::UnsupportedType(ct));
    };
    if is_json {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(BodyError::BadJson("expected a JSON object".into())),
            Err(e) => Err(BodyError::BadJson(e.to_string())),
        }
    } else {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| BodyError::BadForm)?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    }
}

/// A JSON body of any shape (used by `/orders`); empty → `null`.
pub async fn read_json_value(headers: &HeaderMap, body: Body) -> Result<Value, BodyError> {
    let bytes = read_body(headers, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let ct = content_type(headers);
    if !(ct.is_empty() || ct == "application/json" || ct.ends_with("+json")) {
        return Err(BodyError::UnsupportedType(ct));
    }
    serde_json::from_slice(&bytes).map_err(|e| BodyError::BadJson(e.to_string()))
}

// ---------- middleware ----------

fn api_path(path: &str) -> bool {
    !(path.starts_with("/auth/") || path.starts_with("/__control"))
}

/// Records every non-control request at arrival (status 0) and completes the entry when the
/// response leaves, so hung and dropped requests stay visible.
pub async fn log_mw(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/__control") {
        return next.run(req).await;
    }
    let auth = req.headers().contains_key(header::AUTHORIZATION);
    let id = app
        .lock()
        .log_start(req.method().to_string(), path.clone(), auth);
    let resp = next.run(req).await;
    let status = if resp.extensions().get::<DropConnection>().is_some() {
        0
    } else {
        resp.status().as_u16()
    };
    let info = resp.extensions().get::<LogInfo>().cloned();
    // A `use_dpop_nonce` challenge is no verdict on the token: it is counted apart
    // (`dpop_nonce_challenges_rs`), so "one 401 per call" keeps its meaning with nonces on.
    let challenge = info
        .as_ref()
        .and_then(|i| i.outcome.as_deref())
        .is_some_and(|o| o.starts_with("use_dpop_nonce"));
    let mut st = app.lock();
    if status == 401 && api_path(&path) && !challenge {
        st.stats.unauthorized_sent += 1;
    }
    st.log_finish(id, status, info);
    drop(st);
    resp
}

/// Gives every error a JSON body, including axum's own 404/405 and extractor rejections.
pub async fn json_errors_mw(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json || resp.extensions().get::<DropConnection>().is_some() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let error = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "invalid_request",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request",
    };
    let description = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({ "error": error, "error_description": description }).to_string();
    Response::from_parts(parts, Body::from(body))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn is_control_path(path: &str) -> bool {
    path == "/__control" || path.starts_with("/__control/")
}

fn origin_forbidden(error: &str, description: &str) -> Response {
    let mut r = error_json(StatusCode::FORBIDDEN, error, description);
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// CORS for the main listener: only allowlisted origins (the server's own two plus every
/// `--cors-origin`) are reflected, with credentials; never `*`.
///
/// The control API gets no CORS headers at all, so no other origin can read it, and a
/// request from an origin outside the allowlist is refused before it runs: without that, a
/// page elsewhere on the machine could still fire "simple" cross-origin POSTs (no preflight)
/// that reset the server or revoke every family, even though it could not read the answers.
pub async fn cors_mw(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let allowed = origin
        .as_deref()
        .filter(|o| app.origin_allowed(o))
        .map(str::to_string);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_control_path(req.uri().path()) {
        if origin.is_some() && allowed.is_none() {
            return origin_forbidden(
                "origin_not_allowed",
                "the control API refuses requests from foreign origins",
            );
        }
        if preflight {
            return origin_forbidden(
                "origin_not_allowed",
                "the control API does not answer cross-origin requests",
            );
        }
        return next.run(req).await;
    }
    if preflight {
        let Some(origin) = allowed else {
            return origin_forbidden(
                "cors_origin_not_allowed",
                "origin not allowed (see --cors-origin)",
            );
        };
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &origin);
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        set(h, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        set(h, header::ACCESS_CONTROL_MAX_AGE, "600");
        set(
            h,
            header::VARY,
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // The answer depends on Origin whether or not it was allowed, so caches must key on it.
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        let (www, nonce) = {
            let st = app.lock();
            (st.rt.expose_www_authenticate, st.rt.expose_dpop_nonce)
        };
        // Cross-origin, a client sees neither challenges nor nonces unless they are exposed
        // (RFC 9449 §7.1, §8); each can be switched off to test a client without them.
        let expose = [
            www.then_some("WWW-Authenticate"),
            Some("Retry-After"),
            nonce.then_some("DPoP-Nonce"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let h = resp.headers_mut();
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &origin);
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        set(h, header::ACCESS_CONTROL_EXPOSE_HEADERS, &expose);
    }
    resp
}

// ---------- static files ----------

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "txt" | "md" | "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves `dir` with an index.html fallback for extension-less paths (client-side routes).
pub async fn static_file(dir: &Path, req_path: &str) -> Option<Response> {
    let rel = Path::new(req_path.trim_start_matches('/'));
    // Only plain names: no `..`, no roots, so nothing outside `dir` is reachable.
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut candidate = dir.join(rel);
    if candidate.is_dir() {
        candidate = candidate.join("index.html");
    }
    let file = match tokio::fs::read(&candidate).await {
        Ok(bytes) => Some((candidate, bytes)),
        Err(_) if rel.extension().is_none() => {
            let index = dir.join("index.html");
            tokio::fs::read(&index).await.ok().map(|b| (index, b))
        }
        Err(_) => None,
    }?;
    let (path, bytes) = file;
    let mut resp = Response::new(Body::from(bytes));
    let h = resp.headers_mut();
    set(h, header::CONTENT_TYPE, mime(&path));
    set(h, header::CACHE_CONTROL, "no-cache");
    Some(with_info(
        resp,
        LogInfo {
            skip: true,
            ..LogInfo::default()
        },
    ))
}

// ---------- foreign origin ----------

/// Any path, any method: answers 200 and records whether an Authorization header came along,
/// so tests can prove the broker never leaks tokens to origins outside its allowlist.
pub async fn foreign_handler(
    State(app): State<Arc<App>>,
    req: Request,
) -> Result<Response, Infallible> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = if req.method() == Method::OPTIONS {
        app.lock().foreign.preflights += 1;
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Authorization, Content-Type")
            .to_string();
        let h = r.headers_mut();
        set(h, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &requested);
        set(h, header::ACCESS_CONTROL_MAX_AGE, "600");
        r
    } else {
        let authz = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let path = req.uri().path().to_string();
        {
            let mut st = app.lock();
            st.foreign.requests += 1;
            st.foreign.last_path = Some(path.clone());
            if let Some(a) = &authz {
                st.foreign.with_authorization += 1;
                st.foreign.last_authorization = Some(a.clone());
                st.stats.foreign_auth_headers += 1;
            }
        }
        // Drain the body so keep-alive connections stay in a clean state.
        let body = read_body(&HeaderMap::new(), req.into_body()).await.unwrap_or_default();
        if body.windows(13).any(|w| w == b"refresh_token") {
            app.lock().foreign.bodies_with_refresh_token += 1;
        }
        // `/401` answers as an API whose token check failed: a client that reached it through a
        // redirect must not take it as a verdict on its own token.
        let status = if path == "/401" { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        let mut r = json_response(
            status,
            json!({ "foreign": true, "path": path, "authorization_present": authz.is_some() }),
        );
        if status == StatusCode::UNAUTHORIZED {
            set(r.headers_mut(), header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"");
            set(r.headers_mut(), header::ACCESS_CONTROL_EXPOSE_HEADERS, "WWW-Authenticate");
        }
        r
    };
    let h = resp.headers_mut();
    if let Some(o) = origin {
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &o);
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        set(h, header::VARY, "Origin");
    } else {
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    }
    Ok(resp)
}
