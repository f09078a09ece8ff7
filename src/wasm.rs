//! The one `#[wasm_bindgen]` boundary: carries out the core's decisions with Promises,
//! timers and `fetch`, and turns core errors into real JS `Error`s.
//!
//! State lives in an `Rc<Inner>`; no `RefCell` borrow is held across an `.await` or while
//! JS code (listeners, the refresh function) runs, so JS may call back into the broker freely.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use futures_channel::oneshot;
use gloo_timers::callback::Timeout;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, spawn_local, JsFuture};
use web_sys::{AbortController, AbortSignal, EventTarget, Headers, Request, RequestCache, RequestCredentials, RequestInit, Response};

use crate::core::{self, Broker, BrokerError, Config, Effect, Event, Failure, Field, Get, Now};

type Settled = Result<JsValue, JsValue>;
type Waiter = oneshot::Sender<Settled>;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn perf_now() -> f64;
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(input: &Request) -> Promise;
    #[wasm_bindgen(js_name = encodeURIComponent)]
    fn encode_uri_component(s: &str) -> String;
}

fn now() -> Now {
    Now { wall_ms: js_sys::Date::now(), mono_ms: perf_now() }
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() || obj.is_function() {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// Builds the JS error every failure becomes: `name = "TokenBrokerError"`, a stable `code`,
/// and the original rejection as `cause`.
fn js_error(e: BrokerError, detail: Option<&str>, cause: &JsValue) -> JsValue {
    let mut msg = String::from(e.message());
    if let Some(d) = detail {
        msg.push_str(": ");
        msg.push_str(d);
    }
    let err = js_sys::Error::new(&msg);
    err.set_name("TokenBrokerError");
    set(&err, "code", &JsValue::from_str(e.code()));
    if !cause.is_undefined() {
        set(&err, "cause", cause);
    }
    err.into()
}

fn invalid_option(detail: &str) -> JsValue {
    js_error(BrokerError::InvalidOptions, Some(detail), &JsValue::UNDEFINED)
}

fn field(v: JsValue) -> Field {
    if v.is_undefined() || v.is_null() {
        Field::Absent
    } else if let Some(s) = v.as_string() {
        Field::Str(s)
    } else if let Some(n) = v.as_f64() {
        Field::Num(n)
    } else {
        Field::Other
    }
}

fn first_present(obj: &JsValue, a: &str, b: &str) -> JsValue {
    let v = get(obj, a);
    if v.is_undefined() { get(obj, b) } else { v }
}

/// Reads a token set in either spelling: `{ accessToken, refreshToken?, expiresIn? }` or the
/// token endpoint's own `{ access_token, refresh_token?, expires_in? }`.
fn token_set(v: &JsValue, server_offset_ms: f64) -> Result<core::TokenSet, BrokerError> {
    if !v.is_object() {
        return Err(BrokerError::InvalidTokenResponse);
    }
    core::parse_token_set(
        field(first_present(v, "accessToken", "access_token")),
        field(first_present(v, "refreshToken", "refresh_token")),
        field(first_present(v, "expiresIn", "expires_in")),
        js_sys::Date::now(),
        server_offset_ms,
    )
}

fn seconds(v: &JsValue) -> Option<f64> {
    v.as_f64().or_else(|| v.as_string().and_then(|s| core::parse_seconds(&s)))
}

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

enum RefreshSource {
    Function(Function),
    Endpoint { url: String, form: bool, credentials: RequestCredentials, headers: Vec<(String, String)> },
}

struct Inner {
    core: RefCell<Broker<Waiter>>,
    source: RefreshSource,
    on_session_expired: Option<Function>,
    allowed_origins: Vec<String>,
    listeners: RefCell<Vec<(String, Function)>>,
    proactive: RefCell<Option<Timeout>>,
    deadline: RefCell<Option<Timeout>>,
    /// The attempt in progress: aborting it cancels the user's fetch; dropping the sender
    /// stops waiting for a refresh function that never settles.
    attempt: RefCell<Option<(AbortController, oneshot::Sender<()>)>>,
    wake_listener: RefCell<Option<Closure<dyn FnMut()>>>,
    /// The current token as a JS string, so the hot path does not re-encode it per call.
    token_js: RefCell<Option<(u64, JsValue)>>,
}

impl Inner {
    fn emit(&self, ev: &Event) {
        let obj = Object::new();
        let (kind, generation) = match ev {
            Event::Tokens { generation } => ("tokens", Some(*generation)),
            Event::RefreshStart { reason } => {
                set(&obj, "reason", &JsValue::from_str(reason.as_str()));
                ("refreshstart", None)
            }
            Event::RefreshEnd { error } => {
                set(&obj, "ok", &JsValue::from_bool(error.is_none()));
                if let Some(e) = error {
                    set(&obj, "code", &JsValue::from_str(e.code()));
                }
                ("refreshend", None)
            }
            Event::Expired => ("expired", None),
            Event::Stale401 => ("stale401", None),
            Event::Logout => ("logout", None),
        };
        set(&obj, "type", &JsValue::from_str(kind));
        let generation = generation.unwrap_or_else(|| self.core.borrow().generation());
        set(&obj, "generation", &JsValue::from_f64(generation as f64));
        // Snapshot first: a listener may add or remove listeners.
        let targets: Vec<Function> =
            self.listeners.borrow().iter().filter(|(t, _)| t == kind).map(|(_, f)| f.clone()).collect();
        for f in targets {
            // A throwing listener must not break the broker or the other listeners.
            let _ = f.call1(&JsValue::UNDEFINED, &obj);
        }
    }
}

/// Carries out the core's decisions. Called with no borrow of `core` held.
fn apply(inner: &Rc<Inner>, effects: Vec<Effect<Waiter>>, cause: &JsValue) {
    for effect in effects {
        match effect {
            Effect::Refresh { flight, attempt, refresh_token, delay_ms } => {
                spawn_local(run_attempt(inner.clone(), flight, attempt, refresh_token, delay_ms));
            }
            Effect::Deadline { flight, ms } => {
                let weak = Rc::downgrade(inner);
                let t = Timeout::new(ms as u32, move || {
                    if let Some(inner) = weak.upgrade() {
                        let fx = inner.core.borrow_mut().flight_timed_out(flight, now());
                        apply(&inner, fx, &JsValue::UNDEFINED);
                    }
                });
                *inner.deadline.borrow_mut() = Some(t);
            }
            Effect::EndFlight { .. } => {
                drop(inner.deadline.borrow_mut().take());
                let attempt = inner.attempt.borrow_mut().take();
                if let Some((ctrl, _cancel)) = attempt {
                    ctrl.abort();
                }
            }
            Effect::Resolve { waiters, token } => {
                let v = JsValue::from_str(&token);
                for w in waiters {
                    let _ = w.send(Ok(v.clone()));
                }
            }
            Effect::Reject { waiters, error } => {
                let e = js_error(error, None, cause);
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
            Effect::Emit(ev) => {
                inner.emit(&ev);
                if ev == Event::Expired {
                    if let Some(f) = &inner.on_session_expired {
                        let _ = f.call1(&JsValue::UNDEFINED, &js_error(BrokerError::SessionExpired, None, cause));
                    }
                }
            }
            Effect::Schedule(delay) => {
                let t = delay.map(|ms| {
                    let weak = Rc::downgrade(inner);
                    // Browsers cap setTimeout at 2^31-1 ms; later ticks re-arm.
                    Timeout::new(ms.min(2_147_483_647.0) as u32, move || {
                        if let Some(inner) = weak.upgrade() {
                            let fx = inner.core.borrow_mut().tick(now());
                            apply(&inner, fx, &JsValue::UNDEFINED);
                        }
                    })
                });
                *inner.proactive.borrow_mut() = t;
            }
        }
    }
}

/// Resolves to `None` when `cancel` fires first (its sender dropped), so a refresh function
/// that never settles does not keep the broker alive.
async fn until_cancelled<F: Future>(fut: F, mut cancel: oneshot::Receiver<()>) -> Option<F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut cancel).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

async fn run_attempt(inner: Rc<Inner>, flight: u64, attempt: u32, refresh_token: Option<String>, delay_ms: f64) {
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
    let offset = inner.core.borrow().server_offset_ms();
    let work = async {
        match &inner.source {
            RefreshSource::Function(f) => call_refresh_function(f, refresh_token.as_deref(), &signal, offset).await,
            RefreshSource::Endpoint { url, form, credentials, headers } => {
                post_refresh(&inner, url, *form, *credentials, headers, refresh_token.as_deref(), &signal).await
            }
        }
    };
    let Some((outcome, cause)) = until_cancelled(work, cancel_rx).await else { return };
    // Still ours? Then the attempt is over: nothing left to abort.
    if inner.core.borrow().attempt_is_current(flight, attempt) {
        drop(inner.attempt.borrow_mut().take());
    }
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

fn install_wake_listener(inner: &Rc<Inner>) {
    // Timers stall while a laptop sleeps or a tab is frozen: re-check on wake.
    let Some(target) = get(&js_sys::global(), "document").dyn_into::<EventTarget>().ok() else { return };
    let weak = Rc::downgrade(inner);
    let cb = Closure::<dyn FnMut()>::new(move || {
        if let Some(inner) = weak.upgrade() {
            let fx = inner.core.borrow_mut().tick(now());
            apply(&inner, fx, &JsValue::UNDEFINED);
        }
    });
    let _ = target.add_event_listener_with_callback("visibilitychange", cb.as_ref().unchecked_ref());
    *inner.wake_listener.borrow_mut() = Some(cb);
}

const OPTION_KEYS: [&str; 7] =
    ["refresh", "tokens", "leewaySeconds", "refreshTimeoutMs", "refreshRetries", "onSessionExpired", "allowedOrigins"];

fn number_option(options: &JsValue, key: &str, min: f64, max: f64, integer: bool) -> Result<Option<f64>, JsValue> {
    let v = get(options, key);
    if v.is_undefined() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(n) if n >= min && n <= max && (!integer || n.fract() == 0.0) => Ok(Some(n)),
        _ => {
            let mut d = String::from(key);
            d.push_str(if integer { " must be a whole number in range" } else { " must be a finite number in range" });
            Err(invalid_option(&d))
        }
    }
}

fn refresh_source(v: &JsValue) -> Result<RefreshSource, JsValue> {
    if let Some(f) = v.dyn_ref::<Function>() {
        return Ok(RefreshSource::Function(f.clone()));
    }
    let bad = |d: &str| Err(invalid_option(d));
    if !v.is_object() {
        return bad("refresh must be a function ({ refreshToken, signal }) => Promise<TokenSet>, or { url }");
    }
    for k in Object::keys::<JsValue>(v.unchecked_ref()).iter() {
        if !matches!(k.as_string().as_deref(), Some("url" | "body" | "credentials" | "headers")) {
            return bad("refresh: unknown key (known: url, body, credentials, headers)");
        }
    }
    let Some(url) = get(v, "url").as_string().filter(|u| !u.is_empty()) else {
        return bad("refresh.url must be a non-empty string");
    };
    let form = match get(v, "body").as_string().as_deref() {
        None if get(v, "body").is_undefined() => true,
        Some("form") => true,
        Some("json") => false,
        _ => return bad("refresh.body must be 'json' or 'form'"),
    };
    let credentials = match get(v, "credentials").as_string().as_deref() {
        None if get(v, "credentials").is_undefined() => RequestCredentials::SameOrigin,
        Some("same-origin") => RequestCredentials::SameOrigin,
        Some("include") => RequestCredentials::Include,
        Some("omit") => RequestCredentials::Omit,
        _ => return bad("refresh.credentials must be 'omit', 'same-origin' or 'include'"),
    };
    let h = get(v, "headers");
    let mut headers = Vec::new();
    if !h.is_undefined() {
        if !h.is_object() {
            return bad("refresh.headers must be an object of strings");
        }
        for entry in Object::entries(h.unchecked_ref()).iter() {
            let pair: Array = entry.unchecked_into();
            match (pair.get(0).as_string(), pair.get(1).as_string()) {
                (Some(k), Some(v)) => headers.push((k, v)),
                _ => return bad("refresh.headers must be an object of strings"),
            }
        }
    }
    Ok(RefreshSource::Endpoint { url, form, credentials, headers })
}

/// A token broker: one refresh for any number of parallel requests. Create it with
/// `createTokenBroker(options)` from `token-broker` (which loads the WebAssembly module first).
#[wasm_bindgen]
pub struct TokenBroker {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl TokenBroker {
    /// Prefer `createTokenBroker(options)`, which loads the module first. Throws a
    /// `TokenBrokerError` with code `INVALID_OPTIONS` naming the offending option.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<TokenBroker, JsValue> {
        if !options.is_object() {
            return Err(invalid_option("options must be an object"));
        }
        for k in Object::keys::<JsValue>(options.unchecked_ref()).iter() {
            let k = k.as_string().unwrap_or_default();
            if !OPTION_KEYS.contains(&k.as_str()) {
                let mut d = String::from("unknown option ");
                d.push_str(&k);
                return Err(invalid_option(&d));
            }
        }
        let source = refresh_source(&get(&options, "refresh"))?;
        let mut cfg = Config::default();
        if let Some(s) = number_option(&options, "leewaySeconds", 0.0, 86_400.0, false)? {
            cfg.leeway_ms = s * 1000.0;
        }
        if let Some(ms) = number_option(&options, "refreshTimeoutMs", 1.0, 2_147_483_647.0, false)? {
            cfg.refresh_timeout_ms = ms;
        }
        if let Some(n) = number_option(&options, "refreshRetries", 0.0, 10.0, true)? {
            cfg.refresh_retries = n as u32;
        }
        cfg.refresh_when_anonymous =
            matches!(source, RefreshSource::Endpoint { credentials: RequestCredentials::Include, .. });
        let on_session_expired = match get(&options, "onSessionExpired") {
            v if v.is_undefined() => None,
            v => Some(v.dyn_into::<Function>().map_err(|_| invalid_option("onSessionExpired must be a function"))?),
        };
        let mut allowed_origins = Vec::new();
        let ao = get(&options, "allowedOrigins");
        if !ao.is_undefined() {
            let arr = ao.dyn_into::<Array>().map_err(|_| invalid_option("allowedOrigins must be an array of origins"))?;
            for o in arr.iter() {
                let s = o.as_string().ok_or_else(|| invalid_option("allowedOrigins must be an array of origins"))?;
                allowed_origins.push(s.trim_end_matches('/').to_string());
            }
        }
        if let Some(page) = get(&get(&js_sys::global(), "location"), "origin").as_string() {
            allowed_origins.push(page);
        }
        let mut broker = Broker::new(cfg);
        let tokens = get(&options, "tokens");
        let initial = if tokens.is_undefined() || tokens.is_null() {
            Vec::new()
        } else {
            let set = token_set(&tokens, 0.0)
                .map_err(|_| invalid_option("tokens must be { accessToken, refreshToken?, expiresIn? }"))?;
            broker.set_tokens(set, now())
        };
        let inner = Rc::new(Inner {
            core: RefCell::new(broker),
            source,
            on_session_expired,
            allowed_origins,
            listeners: RefCell::new(Vec::new()),
            proactive: RefCell::new(None),
            deadline: RefCell::new(None),
            attempt: RefCell::new(None),
            wake_listener: RefCell::new(None),
            token_js: RefCell::new(None),
        });
        install_wake_listener(&inner);
        apply(&inner, initial, &JsValue::UNDEFINED);
        Ok(TokenBroker { inner })
    }

    /// Resolves with a valid access token: at once when the current one is fresh; otherwise
    /// after the single refresh all callers share. Rejects with a `TokenBrokerError`
    /// (`NOT_AUTHENTICATED`, `SESSION_EXPIRED`, `REFRESH_FAILED`, `REFRESH_TIMEOUT`, `ABORTED`,
    /// `LOGGED_OUT`, ...). `options.signal` aborts only this caller's wait.
    #[wasm_bindgen(js_name = getAccessToken, unchecked_return_type = "Promise<string>")]
    pub fn get_access_token(&self, options: JsValue) -> Promise {
        let signal = get(&options, "signal").dyn_into::<AbortSignal>().ok();
        if let Some(s) = &signal {
            if s.aborted() {
                return Promise::reject(&js_error(BrokerError::Aborted, None, &s.reason()));
            }
        }
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let (get, fx) = self.inner.core.borrow_mut().get_token(now(), || tx.take().expect_waiter());
        self.settle(get, fx, rx, signal)
    }

    /// Call when the server answered 401 to a request sent with `token`. Resolves with the token
    /// to replay the request with: if `token` is older than the current one (a late 401), the
    /// current token, with no refresh; if it is the current one, the new token after a single
    /// shared refresh.
    #[wasm_bindgen(js_name = tokenRejected, unchecked_return_type = "Promise<string>")]
    pub fn token_rejected(&self, token: &str) -> Promise {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let (get, fx) = self.inner.core.borrow_mut().token_rejected(token, now(), || tx.take().expect_waiter());
        self.settle(get, fx, rx, None)
    }

    /// Whether a 401 with this `WWW-Authenticate` value deserves a refresh: yes for a bare
    /// challenge (or no header: CORS may hide it) and `error="invalid_token"`; no for
    /// `insufficient_scope` and other errors.
    #[wasm_bindgen(js_name = shouldRefreshOn401)]
    pub fn should_refresh_on_401(&self, www_authenticate: Option<String>) -> bool {
        core::refresh_on_401(www_authenticate.as_deref())
    }

    /// Whether requests to `origin` (e.g. `https://api.example.com`) may carry the token: the
    /// page's own origin and those listed in `allowedOrigins`.
    #[wasm_bindgen(js_name = allowsOrigin)]
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.inner.allowed_origins.iter().any(|o| o == origin)
    }

    /// Adopts tokens from outside (e.g. after login). Starts a new session epoch: a refresh in
    /// flight is discarded and its waiters get these tokens. Throws `INVALID_TOKEN_RESPONSE`
    /// for a malformed token set.
    #[wasm_bindgen(js_name = setTokens)]
    pub fn set_tokens(&self, tokens: JsValue) -> Result<(), JsValue> {
        let offset = self.inner.core.borrow().server_offset_ms();
        let set = token_set(&tokens, offset)
            .map_err(|e| js_error(e, Some("expected { accessToken, refreshToken?, expiresIn? }"), &tokens))?;
        let fx = self.inner.core.borrow_mut().set_tokens(set, now());
        apply(&self.inner, fx, &JsValue::UNDEFINED);
        Ok(())
    }

    /// Forgets the tokens. Waiting calls reject with `LOGGED_OUT`; a refresh in flight is
    /// discarded and can never revive the session.
    pub fn logout(&self) {
        let fx = self.inner.core.borrow_mut().logout();
        apply(&self.inner, fx, &JsValue::UNDEFINED);
    }

    /// Stops the broker: waiting calls reject with `DISPOSED`, timers stop, later calls reject.
    pub fn dispose(&self) {
        let fx = self.inner.core.borrow_mut().dispose();
        apply(&self.inner, fx, &JsValue::UNDEFINED);
        drop(self.inner.deadline.borrow_mut().take());
        if let Some(cb) = self.inner.wake_listener.borrow_mut().take() {
            if let Some(t) = get(&js_sys::global(), "document").dyn_ref::<EventTarget>() {
                let _ = t.remove_event_listener_with_callback("visibilitychange", cb.as_ref().unchecked_ref());
            }
        }
    }

    /// `'anonymous'` (no tokens), `'valid'`, `'refreshing'` or `'expired'` (log in again).
    #[wasm_bindgen(getter, unchecked_return_type = "'anonymous' | 'valid' | 'refreshing' | 'expired'")]
    pub fn state(&self) -> String {
        self.inner.core.borrow().state().as_str().into()
    }

    /// Grows by one with every token set adopted (refresh or `setTokens`).
    #[wasm_bindgen(getter)]
    pub fn generation(&self) -> f64 {
        self.inner.core.borrow().generation() as f64
    }

    /// Listens to `'tokens'`, `'refreshstart'`, `'refreshend'`, `'expired'`, `'stale401'` or
    /// `'logout'`. The listener gets `{ type, generation, reason?, ok?, code? }`.
    #[wasm_bindgen(js_name = addEventListener)]
    pub fn add_event_listener(&self, kind: String, listener: Function) {
        let mut l = self.inner.listeners.borrow_mut();
        if !l.iter().any(|(t, f)| *t == kind && *f == listener) {
            l.push((kind, listener));
        }
    }

    /// Removes a listener added with `addEventListener`.
    #[wasm_bindgen(js_name = removeEventListener)]
    pub fn remove_event_listener(&self, kind: String, listener: Function) {
        self.inner.listeners.borrow_mut().retain(|(t, f)| !(*t == kind && *f == listener));
    }
}

trait ExpectWaiter {
    fn expect_waiter(self) -> Waiter;
}

impl ExpectWaiter for Option<Waiter> {
    /// The core asks for the waiter at most once per call; a second request would be a bug in
    /// the core, answered with a closed channel (the caller then sees `DISPOSED`, not a hang).
    fn expect_waiter(self) -> Waiter {
        self.unwrap_or_else(|| oneshot::channel().0)
    }
}

impl TokenBroker {
    fn settle(&self, get: Get, fx: Vec<Effect<Waiter>>, rx: oneshot::Receiver<Settled>, signal: Option<AbortSignal>) -> Promise {
        apply(&self.inner, fx, &JsValue::UNDEFINED);
        match get {
            Get::Ready(token) => Promise::resolve(&self.token_value(token)),
            Get::Fail(e) => Promise::reject(&js_error(e, None, &JsValue::UNDEFINED)),
            Get::Wait(id) => {
                // Listen before returning: the caller may abort synchronously, before the
                // future below is first polled.
                let abort = signal.map(|s| {
                    let weak = Rc::downgrade(&self.inner);
                    let target = s.clone();
                    let cb = Closure::<dyn FnMut()>::new(move || {
                        let Some(inner) = weak.upgrade() else { return };
                        let w = inner.core.borrow_mut().abort_waiter(id);
                        if let Some(w) = w {
                            let _ = w.send(Err(js_error(BrokerError::Aborted, None, &target.reason())));
                        }
                    });
                    let _ = s.add_event_listener_with_callback("abort", cb.as_ref().unchecked_ref());
                    (s, cb)
                });
                future_to_promise(async move {
                    let result = rx.await;
                    if let Some((s, cb)) = abort {
                        let _ = s.remove_event_listener_with_callback("abort", cb.as_ref().unchecked_ref());
                    }
                    // A dropped sender means the broker itself is gone.
                    result.unwrap_or_else(|_| Err(js_error(BrokerError::Disposed, None, &JsValue::UNDEFINED)))
                })
            }
        }
    }

    fn token_value(&self, token: String) -> JsValue {
        let generation = self.inner.core.borrow().generation();
        let mut cache = self.inner.token_js.borrow_mut();
        match &*cache {
            Some((g, v)) if *g == generation => v.clone(),
            _ => {
                let v = JsValue::from_str(&token);
                *cache = Some((generation, v.clone()));
                v
            }
        }
    }
}

impl Drop for TokenBroker {
    /// `free()` settles every waiter too: nothing is left hanging.
    fn drop(&mut self) {
        self.dispose();
    }
}
