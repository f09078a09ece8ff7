//! Running one refresh attempt: the user's refresh function or the built-in OAuth POST, and
//! the classification of what came back.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use futures_channel::oneshot;
use gloo_timers::callback::Timeout;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::{AbortController, AbortSignal, Headers, Request, RequestCache, RequestCredentials, RequestInit, Response};

use super::js::{encode_uri_component, get, global_fetch, now, seconds, set, token_set};
use super::options::RefreshSource;
use super::{apply, Inner};
use crate::core::{self, Failure};

/// Classifies a rejection of the user's refresh function from the error itself (axios and
/// fetch conventions: `status` / `response.status`, `error` / `response.data.error`).
fn classify_js_error(err: &JsValue) -> Failure {
    let response = get(err, "response");
    let code = if get(err, "name").as_string().as_deref() == Some("TokenBrokerError") {
        get(err, "code").as_string()
    } else {
        None
    };
    let status = get(err, "status").as_f64().or_else(|| get(&response, "status").as_f64());
    let oauth = get(err, "error").as_string().or_else(|| get(&get(&response, "data"), "error").as_string());
    let headers = get(&response, "headers");
    let retry_after = seconds(&get(err, "retryAfter")).or_else(|| seconds(&get(&headers, "retry-after")));
    core::classify_failure(status, oauth.as_deref(), code.as_deref(), retry_after)
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
            future_to_promise(async move {
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
        let timer = Timeout::new(wait_ms as u32, move || lw.abort());
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
            let fx = inner.core.borrow_mut().adopt_shared(s, now());
            apply(&inner, fx, &JsValue::UNDEFINED);
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
            RefreshSource::Function(f) => call_refresh_function(f, refresh_token.as_deref(), &signal, offset).await,
            RefreshSource::Endpoint { url, form, credentials, headers } => {
                post_refresh(&inner, url, *form, *credentials, headers, refresh_token.as_deref(), &signal).await
            }
        }
    };
    let Some((outcome, cause)) = until_cancelled(work, &mut cancel_rx).await else { return };
    // Still ours? Then the attempt is over: nothing left to abort.
    if current(&inner) {
        drop(inner.attempt.borrow_mut().take());
    }
    // Adopted, stored and broadcast before the lock is released (we are still inside it).
    let fx = inner.core.borrow_mut().attempt_finished(flight, attempt, outcome, now());
    apply(&inner, fx, &cause);
}

type Outcome = (Result<core::TokenSet, Failure>, JsValue);

fn parsed(v: &JsValue, offset: f64) -> Outcome {
    match token_set(v, offset) {
        Ok(set) => (Ok(set), JsValue::UNDEFINED),
        Err(_) => (Err(Failure::Malformed), v.clone()),
    }
}

async fn call_refresh_function(f: &Function, refresh_token: Option<&str>, signal: &AbortSignal, offset: f64) -> Outcome {
    let ctx = Object::new();
    set(&ctx, "refreshToken", &refresh_token.map_or(JsValue::NULL, JsValue::from_str));
    set(&ctx, "signal", signal);
    let result = match f.call1(&JsValue::UNDEFINED, &ctx) {
        Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => parsed(&v, offset),
        Err(e) => (Err(classify_js_error(&e)), e),
    }
}

/// The built-in refresh: an OAuth 2.0 `refresh_token` grant POSTed from Rust, so the refresh
/// token never passes through app code.
async fn post_refresh(
    inner: &Inner,
    url: &str,
    form: bool,
    credentials: RequestCredentials,
    extra_headers: &[(String, String)],
    refresh_token: Option<&str>,
    signal: &AbortSignal,
) -> Outcome {
    let failed = |e: JsValue| (Err(Failure::Transient { retry_after_s: None }), e);
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
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&body);
    init.set_credentials(credentials);
    init.set_cache(RequestCache::NoStore);
    init.set_signal(Some(signal));
    let request = match Request::new_with_str_and_init(url, &init) {
        Ok(r) => r,
        Err(e) => return (Err(Failure::Permanent), e),
    };
    let response: Response = match JsFuture::from(global_fetch(&request)).await {
        Ok(r) => r.unchecked_into(),
        Err(e) => return failed(e),
    };
    let status = response.status();
    let h = response.headers();
    if let Ok(Some(date)) = h.get("date") {
        let server = js_sys::Date::parse(&date);
        if server.is_finite() {
            inner.core.borrow_mut().set_server_offset_ms(server - js_sys::Date::now());
        }
    }
    let retry_after = h.get("retry-after").ok().flatten().and_then(|s| core::parse_seconds(&s));
    let json = match response.json() {
        Ok(p) => JsFuture::from(p).await.ok(),
        Err(_) => None,
    };
    let offset = inner.core.borrow().server_offset_ms();
    match json {
        Some(v) if (200..300).contains(&status) => parsed(&v, offset),
        _ if (200..300).contains(&status) => (Err(Failure::Malformed), response.into()),
        body => {
            let oauth = body.as_ref().and_then(|b| get(b, "error").as_string());
            let failure = core::classify_failure(Some(f64::from(status)), oauth.as_deref(), None, retry_after);
            (Err(failure), response.into())
        }
    }
}
