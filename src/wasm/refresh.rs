//! Running one refresh attempt: the user's refresh function or the built-in OAuth POST, and
//! the classification of what came back.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use futures_channel::oneshot;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, AbortSignal, Headers, Request, RequestCache, RequestCredentials, RequestInit, RequestRedirect, Response,
};

use super::js::{call, encode_uri_component, get, global_fetch, now, promise, seconds, set, token_set, Timer};
use super::options::{Endpoint, RefreshSource};
use super::{apply_with, Inner};
use crate::core::{self, Failure};

/// Classifies a rejection of the user's refresh function from the error itself (axios and
/// fetch conventions: `status` / `response.status`, `error` / `response.data.error`), and makes
/// the `cause` waiters see: the facts, not the error object, whose `config.data` (axios) holds
/// the refresh token the function just sent.
fn classify_js_error(err: &JsValue) -> (Failure, JsValue) {
    let response = get(err, "response");
    let name = get(err, "name").as_string();
    let code = get(err, "code").as_string();
    if name.as_deref() == Some("TokenBrokerError") {
        if let Some(e) = code.as_deref().and_then(core::BrokerError::from_code) {
            return (Failure::Coded(e), err.clone());
        }
    }
    let status = get(err, "status").as_f64().or_else(|| get(&response, "status").as_f64());
    let oauth = get(err, "error").as_string().or_else(|| get(&get(&response, "data"), "error").as_string());
    let headers = get(&response, "headers");
    let retry_after = seconds(&get(err, "retryAfter")).or_else(|| seconds(&get(&headers, "retry-after")));
    let failure = core::classify_failure(status, oauth.as_deref(), None, retry_after);
    // An Error with the original's name, message, status, OAuth error and code, and nothing else.
    let message = if err.is_object() { get(err, "message").as_string() } else { err.as_string() };
    let cause = js_sys::Error::new(&message.unwrap_or_default());
    cause.set_name(name.as_deref().filter(|n| !n.is_empty()).unwrap_or("Error"));
    for (k, v) in [("status", status.map(JsValue::from_f64)), ("error", oauth.map(|o| JsValue::from_str(&o))), ("code", code.map(|c| JsValue::from_str(&c)))] {
        if let Some(v) = v {
            set(&cause, k, &v);
        }
    }
    (failure, cause.into())
}

/// Resolves to `None` when `cancel` fires first (its sender dropped), so a refresh function
/// that never settles does not keep the broker alive.
pub(super) async fn until_cancelled<F: Future>(fut: F, cancel: &mut oneshot::Receiver<()>) -> Option<F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut *cancel).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// How long a tab that got the lock waits for a sibling's new tokens when that sibling said it
/// was spending the same refresh token (its broadcast may trail the lock release; or it died).
const PEER_GRACE_MS: u32 = 500;

type AttemptArgs = (Option<String>, AbortSignal, oneshot::Receiver<()>);

/// Runs refresh attempt `attempt` of `flight`: after its backoff delay, inside the cross-tab
/// lock when there is one, and only while the core still wants it.
pub(super) async fn run_attempt(inner: Rc<Inner>, flight: u64, attempt: u32, refresh_token: Option<String>, delay_ms: f64) {
    if delay_ms > 0.0 {
        TimeoutFuture::new(delay_ms as u32).await;
    }
    if !inner.core.borrow().attempt_is_current(flight, attempt) {
        return;
    }
    let Ok(ctrl) = AbortController::new() else { return };
    let signal = ctrl.signal();
    let (cancel_tx, cancel_rx) = oneshot::channel();
    *inner.attempt.borrow_mut() = Some((ctrl, cancel_tx));
    let args: Rc<RefCell<Option<AttemptArgs>>> = Rc::new(RefCell::new(Some((refresh_token, signal, cancel_rx))));

    // Bounded wait: a lock held by a frozen tab must not block this one forever. The callback
    // (which holds the broker) is made only when there is a lock manager to call it.
    let lock_wait = if inner.tabs.has_locks() { AbortController::new().ok() } else { None };
    let locked = lock_wait.as_ref().and_then(|lw| {
        let (inner2, args2) = (inner.clone(), args.clone());
        let callback = Closure::once_into_js(move |_lock: JsValue| -> Promise {
            let taken = args2.borrow_mut().take();
            promise(async move {
                if let Some(a) = taken {
                    attempt_body(inner2, flight, attempt, a, true).await;
                }
                Ok(JsValue::UNDEFINED)
            })
        });
        inner.tabs.request_lock(&lw.signal(), &callback)
    });
    if let (Some(promise), Some(lw)) = (locked, lock_wait) {
        let wait_ms = inner.core.borrow().config().refresh_timeout_ms / 2.0;
        let timer = Timer::new(wait_ms, move || lw.abort());
        let _ = JsFuture::from(promise).await;
        drop(timer);
    }
    // No Web Locks (insecure context, old browser) or the wait timed out: go on without it.
    let taken = args.borrow_mut().take();
    if let Some(a) = taken {
        attempt_body(inner, flight, attempt, a, false).await;
    }
}

async fn attempt_body(inner: Rc<Inner>, flight: u64, attempt: u32, args: AttemptArgs, locked: bool) {
    let (refresh_token, signal, mut cancel_rx) = args;
    let current = |inner: &Inner| inner.core.borrow().attempt_is_current(flight, attempt);
    if locked || inner.tabs.has_channel() {
        // Double-check inside the lock: let sibling messages queued meanwhile land, and re-read
        // shared storage; a newer generation ends this flight without a network call.
        TimeoutFuture::new(0).await;
        let stored = inner.tabs.reread_shared_store();
        if let Some(s) = stored {
            let t = now();
            let fx = inner.core.borrow_mut().adopt_shared(s, t);
            super::apply(&inner, fx);
        }
        if !current(&inner) {
            return;
        }
        let (epoch, generation) = { let c = inner.core.borrow(); (c.epoch(), c.generation()) };
        if inner.tabs.peer_is_refreshing(epoch, generation) {
            until_cancelled(TimeoutFuture::new(PEER_GRACE_MS), &mut cancel_rx).await;
            inner.tabs.clear_peer_refreshing();
            if !current(&inner) {
                return;
            }
        }
        inner.tabs.announce_refresh(epoch, generation);
    }
    if !current(&inner) {
        return;
    }
    let offset = inner.core.borrow().server_offset_ms();
    let work = async {
        match &inner.source {
            RefreshSource::Function(f) => call_refresh_function(&inner, f, refresh_token.as_deref(), &signal, offset).await,
            RefreshSource::Endpoint { endpoint, form, headers } => {
                post_refresh(&inner, endpoint, *form, headers, refresh_token.as_deref(), &signal).await
            }
        }
    };
    let Some((outcome, cause, detail)) = until_cancelled(work, &mut cancel_rx).await else { return };
    // Still ours? Then the attempt is over: nothing left to abort.
    if current(&inner) {
        drop(inner.attempt.borrow_mut().take());
    }
    // Adopted, stored and broadcast before the lock is released (we are still inside it).
    let t = now();
    let fx = inner.core.borrow_mut().attempt_finished(flight, attempt, outcome, t);
    apply_with(&inner, fx, &cause, detail.as_deref());
}

/// What an attempt ended with, the `cause` for waiters, and for a malformed answer what was wrong.
type Outcome = (Result<core::TokenSet, Failure>, JsValue, Option<String>);

fn parsed(inner: &Inner, v: &JsValue, offset: f64) -> Outcome {
    match token_set(v, offset, inner.dpop.is_some()) {
        Ok(set) => (Ok(set), JsValue::UNDEFINED, None),
        // Never the answer itself as the cause: it may hold a fresh refresh token.
        Err(detail) => (Err(Failure::Malformed), JsValue::UNDEFINED, Some(detail)),
    }
}

async fn call_refresh_function(inner: &Inner, f: &Function, refresh_token: Option<&str>, signal: &AbortSignal, offset: f64) -> Outcome {
    let ctx = Object::new();
    set(&ctx, "refreshToken", &refresh_token.map_or(JsValue::NULL, JsValue::from_str));
    set(&ctx, "signal", signal);
    if let Some(h) = &inner.dpop {
        // `(method, url) => Promise<string>`: the proof for the function's own token request.
        set(&ctx, "dpopProof", &get(h, "proof"));
    }
    let result = match f.call1(&JsValue::UNDEFINED, &ctx) {
        Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => parsed(inner, &v, offset),
        Err(e) => {
            if let Some(h) = &inner.dpop {
                // A `use_dpop_nonce` answer carries the nonce to retry with (`DPoP-Nonce`).
                let _ = call(h, "fromError", &[&e]);
            }
            let (failure, cause) = classify_js_error(&e);
            (Err(failure), cause, None)
        }
    }
}

/// The built-in refresh: an OAuth 2.0 `refresh_token` grant POSTed from Rust, so the refresh
/// token never passes through app code.
async fn post_refresh(
    inner: &Inner,
    endpoint: &Endpoint,
    form: bool,
    extra_headers: &[(String, String)],
    refresh_token: Option<&str>,
    signal: &AbortSignal,
) -> Outcome {
    let failed = |e: JsValue| (Err(Failure::Transient { retry_after_s: None }), e, None);
    let Ok(headers) = Headers::new() else { return failed(JsValue::UNDEFINED) };
    let body = if form {
        let _ = headers.set("Content-Type", "application/x-www-form-urlencoded");
        let mut b = String::from("grant_type=refresh_token");
        if let Some(rt) = refresh_token {
            b.push_str("&refresh_token=");
            b.push_str(&encode_uri_component(rt));
        }
        JsValue::from_str(&b)
    } else {
        let _ = headers.set("Content-Type", "application/json");
        let o = Object::new();
        set(&o, "grant_type", &JsValue::from_str("refresh_token"));
        if let Some(rt) = refresh_token {
            set(&o, "refresh_token", &JsValue::from_str(rt));
        }
        js_sys::JSON::stringify(&o).map(JsValue::from).unwrap_or(JsValue::UNDEFINED)
    };
    let _ = headers.set("Accept", "application/json");
    for (k, v) in extra_headers {
        let _ = headers.set(k, v);
    }
    let url = JsValue::from_str(&endpoint.url);
    if let Some(holder) = &inner.dpop {
        // A fresh proof per attempt (a nonce retry carries the nonce just received).
        let proof = match call(holder, "proof", &[&JsValue::from_str("POST"), &url]) {
            Ok(p) => JsFuture::from(Promise::resolve(&p)).await,
            Err(e) => Err(e),
        };
        match proof.map(|p| p.as_string()) {
            Ok(Some(p)) => {
                let _ = headers.set("DPoP", &p);
            }
            Ok(None) => return failed(JsValue::UNDEFINED),
            Err(e) => {
                let (failure, cause) = classify_js_error(&e);
                return (Err(failure), cause, None);
            }
        }
    }
    let response = match post(endpoint, &headers, &body, signal).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let status = response.status();
    let h = response.headers();
    if let Some(holder) = &inner.dpop {
        let _ = call(holder, "observe", &[&url, &h]);
    }
    if let Ok(Some(date)) = h.get("date") {
        let server = js_sys::Date::parse(&date);
        if server.is_finite() {
            let client = now().wall_ms;
            inner.core.borrow_mut().set_server_offset_ms(server - client);
        }
    }
    let retry_after = h.get("retry-after").ok().flatten().and_then(|s| core::parse_seconds(&s));
    let json = match response.json() {
        Ok(p) => JsFuture::from(p).await.ok(),
        Err(_) => None,
    };
    let offset = inner.core.borrow().server_offset_ms();
    match json {
        Some(v) if (200..300).contains(&status) => parsed(inner, &v, offset),
        _ if (200..300).contains(&status) => (Err(Failure::Malformed), response.into(), Some("the body is not JSON".into())),
        body => {
            let oauth = body.as_ref().and_then(|b| super::js::own(b, "error").as_string());
            let failure = core::classify_failure(Some(f64::from(status)), oauth.as_deref(), None, retry_after);
            (Err(failure), response.into(), None)
        }
    }
}

/// A POST that never follows a redirect: a 307/308 would re-send the body, refresh token and
/// all, to wherever it points.
async fn post(endpoint: &Endpoint, headers: &Headers, body: &JsValue, signal: &AbortSignal) -> Result<Response, JsValue> {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(headers);
    init.set_body(body);
    init.set_credentials(endpoint.credentials);
    init.set_cache(RequestCache::NoStore);
    init.set_redirect(RequestRedirect::Error);
    init.set_signal(Some(signal));
    let request = Request::new_with_str_and_init(&endpoint.url, &init)?;
    Ok(JsFuture::from(global_fetch(&request)).await?.unchecked_into())
}

/// Revokes a refresh token (RFC 7009) after a logout: best effort, bounded by `timeout_ms`;
/// its outcome changes nothing locally (the session is already over).
pub(super) async fn revoke(endpoint: &Endpoint, refresh_token: Option<String>, timeout_ms: f64) {
    let cookie = endpoint.credentials == RequestCredentials::Include;
    if refresh_token.is_none() && !cookie {
        return;
    }
    let Ok(headers) = Headers::new() else { return };
    let _ = headers.set("Content-Type", "application/x-www-form-urlencoded");
    let mut b = String::new();
    if let Some(mut rt) = refresh_token {
        b.push_str("token=");
        b.push_str(&encode_uri_component(&rt));
        b.push('&');
        core::wipe(&mut rt);
    }
    b.push_str("token_type_hint=refresh_token");
    let Ok(ctrl) = AbortController::new() else { return };
    let abort = ctrl.clone();
    let _timer = Timer::new(timeout_ms, move || abort.abort());
    if let Ok(r) = post(endpoint, &headers, &JsValue::from_str(&b), &ctrl.signal()).await {
        // Read the body so the connection is free; its content does not matter.
        if let Ok(p) = r.text() {
            let _ = JsFuture::from(p).await;
        }
    }
    core::wipe(&mut b);
}
