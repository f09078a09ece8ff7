//! The WebAssembly boundary in a real browser (`wasm-pack test --headless --chrome`):
//! option validation, Promise results, error objects, timers, abort, the built-in
//! `refresh: { url }`, and no hang when the refresh function never settles.
#![cfg(target_arch = "wasm32")]

use gloo_timers::future::TimeoutFuture;
use js_sys::{Promise, Reflect};
use token_broker::TokenBroker;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function counter() { return { n: 0, expired: 0, events: [] }; }
// A fake refresh function: `kind` says how it behaves; it counts its calls in c.n.
export function refreshFn(c, kind, delay) {
  return ({ refreshToken, signal }) => {
    c.n++;
    c.lastRefreshToken = refreshToken;
    c.lastSignal = signal;
    if (kind === 'throw') throw new Error('sync boom');
    if (kind === 'hang') return new Promise(() => {});
    return new Promise((resolve, reject) => setTimeout(() => {
      if (kind === 'ok') resolve({ access_token: 'access-' + c.n, refresh_token: 'refresh-' + c.n, expires_in: 60 });
      else if (kind === 'camel') resolve({ accessToken: 'camel-' + c.n, expiresIn: 60 });
      else if (kind === 'invalid_grant') reject(Object.assign(new Error('400'), { response: { status: 400, data: { error: 'invalid_grant' } } }));
      else if (kind === 'network') reject(new TypeError('Failed to fetch'));
      else if (kind === 'garbage') resolve(42);
      else if (kind === 'no_access') resolve({ refresh_token: 'x' });
      else if (kind === 'coded') { const e = new Error('mine'); e.name = 'TokenBrokerError'; e.code = 'REFRESH_TIMEOUT'; reject(e); }
    }, delay));
  };
}
export function opts(refresh, extra) { return Object.assign({ refresh }, extra || {}); }
export function onExpired(c) { return () => { c.expired++; }; }
export function recorder(c) { return (ev) => c.events.push(ev.type + (ev.code ? ':' + ev.code : '')); }
export function catchErr(p) { return p.then(v => ({ ok: v }), e => ({ err: e })); }
export function signalPair() { const a = new AbortController(); return { ctrl: a, signal: a.signal }; }
export function abortWith(pair, reason) { pair.ctrl.abort(reason); }
export function mockFetch(status, body, headers) {
  const real = globalThis.fetch, seen = [];
  globalThis.fetch = async (req) => {
    seen.push({ method: req.method, url: req.url, type: req.headers.get('content-type'),
      credentials: req.credentials, extra: req.headers.get('x-client'), body: await req.text() });
    return new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: headers || {} });
  };
  return { seen, restore() { globalThis.fetch = real; } };
}
export function restoreFetch(m) { m.restore(); }
// A custom storage adapter: `mode` 'async' answers from a Map via promises, 'never' never answers.
export function memoryStore(mode, seed) {
  const data = new Map(seed ? [[seed[0], seed[1]]] : []);
  const answer = (v) => mode === 'never' ? new Promise(() => {}) : mode === 'async' ? Promise.resolve(v) : v;
  return { data, get: (k) => answer(data.get(k)), set: (k, v) => { data.set(k, v); return answer(); },
    remove: (k) => { data.delete(k); return answer(); } };
}
export function stored(store, key) { return store.data.get(key) ?? null; }
"#)]
extern "C" {
    fn counter() -> JsValue;
    #[wasm_bindgen(js_name = refreshFn)]
    fn refresh_fn(c: &JsValue, kind: &str, delay: u32) -> JsValue;
    fn opts(refresh: &JsValue, extra: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = onExpired)]
    fn on_expired(c: &JsValue) -> JsValue;
    fn recorder(c: &JsValue) -> js_sys::Function;
    #[wasm_bindgen(js_name = catchErr)]
    fn catch_err(p: &Promise) -> Promise;
    #[wasm_bindgen(js_name = signalPair)]
    fn signal_pair() -> JsValue;
    #[wasm_bindgen(js_name = abortWith)]
    fn abort_with(pair: &JsValue, reason: &JsValue);
    #[wasm_bindgen(js_name = mockFetch)]
    fn mock_fetch(status: u16, body: &JsValue, headers: &JsValue) -> JsValue;
    #[wasm_bindgen(js_name = restoreFetch)]
    fn restore_fetch(m: &JsValue);
    #[wasm_bindgen(js_name = memoryStore)]
    fn memory_store(mode: &str, seed: &JsValue) -> JsValue;
    fn stored(store: &JsValue, key: &str) -> JsValue;
}

fn get(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &k.into()).unwrap()
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

fn tokens(access: &str, refresh: &str, expires_in: f64) -> JsValue {
    obj(&[("accessToken", access.into()), ("refreshToken", refresh.into()), ("expiresIn", expires_in.into())])
}

/// Settles a promise into `Ok(value)` or `Err(error)`.
async fn settle(p: Promise) -> Result<JsValue, JsValue> {
    let r = JsFuture::from(catch_err(&p)).await.unwrap();
    let err = get(&r, "err");
    if err.is_undefined() { Ok(get(&r, "ok")) } else { Err(err) }
}

fn assert_broker_error(e: &JsValue, code: &str) {
    assert_eq!(get(e, "name").as_string().as_deref(), Some("TokenBrokerError"));
    assert_eq!(get(e, "code").as_string().as_deref(), Some(code), "{:?}", get(e, "message"));
    assert!(e.is_instance_of::<js_sys::Error>(), "a real Error");
}

fn n(c: &JsValue) -> f64 {
    get(c, "n").as_f64().unwrap()
}

fn none() -> JsValue {
    JsValue::UNDEFINED
}

/// A broker whose token `old` was just rejected by the server: a refresh is in flight and the
/// returned promise is the first waiter. (Tokens live 60 s, so no timer interferes.)
fn rejected_broker(c: &JsValue, kind: &str, delay: u32, extra: &JsValue) -> (TokenBroker, Promise) {
    let extra = if extra.is_undefined() { obj(&[]) } else { extra.clone() };
    Reflect::set(&extra, &"tokens".into(), &tokens("old", "r0", 60.0)).unwrap();
    let b = TokenBroker::new(opts(&refresh_fn(c, kind, delay), &extra)).unwrap();
    let first = b.token_rejected("old".into(), none());
    (b, first)
}

#[wasm_bindgen_test]
fn invalid_options_are_errors_naming_the_key() {
    let c = counter();
    let f = refresh_fn(&c, "ok", 0);
    let cases: Vec<(JsValue, &str)> = vec![
        (JsValue::from(5), "options must be an object"),
        (obj(&[]), "refresh"),
        (opts(&f, &obj(&[("leewaySecond", 1.into())])), "leewaySecond"),
        (opts(&f, &obj(&[("leewaySeconds", "30".into())])), "leewaySeconds"),
        (opts(&f, &obj(&[("refreshTimeoutMs", (-1).into())])), "refreshTimeoutMs"),
        (opts(&f, &obj(&[("refreshRetries", 1.5.into())])), "refreshRetries"),
        (opts(&f, &obj(&[("onSessionExpired", 1.into())])), "onSessionExpired"),
        (opts(&f, &obj(&[("allowedOrigins", "https://x".into())])), "allowedOrigins"),
        (opts(&f, &obj(&[("tokens", obj(&[("accessToken", 5.into())]))])), "tokens"),
        (opts(&obj(&[("url", 1.into())]), &none()), "refresh.url"),
        (opts(&obj(&[("url", "/t".into()), ("body", "xml".into())]), &none()), "refresh.body"),
        (opts(&obj(&[("url", "/t".into()), ("nope", 1.into())]), &none()), "unknown option 'nope'"),
    ];
    for (o, needle) in cases {
        let e = TokenBroker::new(o).err().expect("must fail");
        assert_broker_error(&e, "INVALID_OPTIONS");
        let msg = get(&e, "message").as_string().unwrap();
        assert!(msg.contains(needle), "{msg} should name {needle}");
    }
}

#[wasm_bindgen_test]
async fn fresh_token_resolves_at_once_and_anonymous_rejects() {
    let c = counter();
    let b = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &obj(&[("tokens", tokens("t1", "r1", 60.0))]))).unwrap();
    assert_eq!(settle(b.get_access_token(none())).await.unwrap().as_string().as_deref(), Some("t1"));
    assert_eq!(b.state(), "valid");
    assert_eq!(n(&c), 0.0);
    let anon = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &none())).unwrap();
    assert_broker_error(&settle(anon.get_access_token(none())).await.unwrap_err(), "NOT_AUTHENTICATED");
    assert_eq!(anon.state(), "anonymous");
}

#[wasm_bindgen_test]
async fn fifty_parallel_callers_share_one_refresh() {
    let c = counter();
    let rec = recorder(&c);
    let b = TokenBroker::new(opts(&refresh_fn(&c, "ok", 20), &obj(&[("tokens", tokens("old", "r0", 60.0))]))).unwrap();
    for t in ["tokens", "refreshstart", "refreshend"] {
        b.add_event_listener(t.into(), rec.clone().into()).unwrap();
    }
    let mut promises: Vec<Promise> = vec![b.token_rejected("old".into(), none())];
    promises.extend((0..49).map(|_| b.get_access_token(none())));
    assert_eq!(b.state(), "refreshing");
    for p in promises {
        assert_eq!(settle(p).await.unwrap().as_string().as_deref(), Some("access-1"));
    }
    assert_eq!(n(&c), 1.0);
    assert_eq!(get(&c, "lastRefreshToken").as_string().as_deref(), Some("r0"));
    assert_eq!(b.generation(), 2.0);
    let events: Vec<String> = js_sys::Array::from(&get(&c, "events")).iter().filter_map(|v| v.as_string()).collect();
    assert_eq!(events, vec!["refreshstart", "tokens", "refreshend"]);
    // A late 401 for the old token: the current token, no second refresh.
    assert_eq!(settle(b.token_rejected("old".into(), none())).await.unwrap().as_string().as_deref(), Some("access-1"));
    assert_eq!(n(&c), 1.0);
}

#[wasm_bindgen_test]
async fn camel_case_token_sets_are_accepted() {
    let c = counter();
    let (_b, p) = rejected_broker(&c, "camel", 0, &none());
    assert_eq!(settle(p).await.unwrap().as_string().as_deref(), Some("camel-1"));
}

#[wasm_bindgen_test]
async fn invalid_grant_ends_the_session_once_with_cause() {
    let c = counter();
    let (b, p1) = rejected_broker(&c, "invalid_grant", 0, &obj(&[("onSessionExpired", on_expired(&c))]));
    let p2 = b.get_access_token(none());
    for p in [p1, p2] {
        let e = settle(p).await.unwrap_err();
        assert_broker_error(&e, "SESSION_EXPIRED");
        // The cause keeps the facts (status, OAuth error), not the error object: axios keeps the
        // request body, refresh token included, in `config.data`.
        let cause = get(&e, "cause");
        assert_eq!(get(&cause, "error").as_string().as_deref(), Some("invalid_grant"));
        assert_eq!(get(&cause, "status").as_f64(), Some(400.0));
        assert!(get(&cause, "response").is_undefined());
    }
    assert_eq!(get(&c, "expired").as_f64(), Some(1.0));
    assert_eq!(b.state(), "expired");
    assert_eq!(n(&c), 1.0, "no retry after invalid_grant");
    assert_broker_error(&settle(b.get_access_token(none())).await.unwrap_err(), "SESSION_EXPIRED");
}

#[wasm_bindgen_test]
async fn network_errors_are_retried_then_fail_with_cause() {
    let c = counter();
    let (_b, p) = rejected_broker(&c, "network", 0, &obj(&[("refreshRetries", 1.into())]));
    let e = settle(p).await.unwrap_err();
    assert_broker_error(&e, "REFRESH_FAILED");
    assert_eq!(get(&get(&e, "cause"), "name").as_string().as_deref(), Some("TypeError"));
    assert_eq!(n(&c), 2.0, "first try + 1 retry");
}

#[wasm_bindgen_test]
async fn throwing_garbage_and_coded_refresh_functions_are_errors_not_panics() {
    for (kind, code) in [
        ("throw", "REFRESH_FAILED"),
        ("garbage", "INVALID_TOKEN_RESPONSE"),
        ("no_access", "INVALID_TOKEN_RESPONSE"),
        ("coded", "REFRESH_TIMEOUT"),
    ] {
        let c = counter();
        let (b, p) = rejected_broker(&c, kind, 0, &obj(&[("refreshRetries", 0.into())]));
        assert_broker_error(&settle(p).await.unwrap_err(), code);
        // The module still works afterwards.
        b.set_tokens(tokens("t2", "r2", 60.0)).unwrap();
        assert_eq!(settle(b.get_access_token(none())).await.unwrap().as_string().as_deref(), Some("t2"));
    }
}

#[wasm_bindgen_test]
async fn a_refresh_that_never_settles_times_out_every_waiter() {
    let c = counter();
    let (b, p1) = rejected_broker(&c, "hang", 0, &obj(&[("refreshTimeoutMs", 50.into())]));
    let p2 = b.get_access_token(none());
    assert_broker_error(&settle(p1).await.unwrap_err(), "REFRESH_TIMEOUT");
    assert_broker_error(&settle(p2).await.unwrap_err(), "REFRESH_TIMEOUT");
    let signal: web_sys::AbortSignal = get(&c, "lastSignal").into();
    assert!(signal.aborted(), "the attempt's signal is aborted on timeout");
}

#[wasm_bindgen_test]
async fn abort_rejects_only_that_caller() {
    let c = counter();
    let (b, first) = rejected_broker(&c, "ok", 30, &none());
    let pair = signal_pair();
    let aborted = b.get_access_token(obj(&[("signal", get(&pair, "signal"))]));
    let other = b.get_access_token(none());
    abort_with(&pair, &"user left".into());
    let e = settle(aborted).await.unwrap_err();
    assert_broker_error(&e, "ABORTED");
    assert_eq!(get(&e, "cause").as_string().as_deref(), Some("user left"));
    assert_eq!(settle(other).await.unwrap().as_string().as_deref(), Some("access-1"));
    assert_eq!(settle(first).await.unwrap().as_string().as_deref(), Some("access-1"));
    // An already-aborted signal rejects at once.
    let e = settle(b.get_access_token(obj(&[("signal", get(&pair, "signal"))]))).await.unwrap_err();
    assert_broker_error(&e, "ABORTED");
}

#[wasm_bindgen_test]
async fn logout_during_refresh_is_never_undone() {
    let c = counter();
    let (b, p) = rejected_broker(&c, "ok", 30, &none());
    b.logout();
    assert_broker_error(&settle(p).await.unwrap_err(), "LOGGED_OUT");
    TimeoutFuture::new(60).await; // the refresh's late result arrives now
    assert_eq!(b.state(), "anonymous");
    assert_broker_error(&settle(b.get_access_token(none())).await.unwrap_err(), "NOT_AUTHENTICATED");
}

#[wasm_bindgen_test]
async fn dispose_and_free_settle_waiters() {
    let c = counter();
    let (b, p) = rejected_broker(&c, "hang", 0, &none());
    b.dispose();
    assert_broker_error(&settle(p).await.unwrap_err(), "DISPOSED");
    let (b, p) = rejected_broker(&c, "hang", 0, &none());
    drop(b); // what JS free() does
    assert_broker_error(&settle(p).await.unwrap_err(), "DISPOSED");
}

#[wasm_bindgen_test]
async fn proactive_timer_refreshes_before_expiry_without_any_call() {
    let c = counter();
    let b = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &obj(&[("tokens", tokens("t1", "r1", 0.1))]))).unwrap();
    for _ in 0..100 {
        if n(&c) >= 1.0 {
            break;
        }
        TimeoutFuture::new(10).await;
    }
    assert!(n(&c) >= 1.0, "the timer refreshed");
    assert_eq!(get(&c, "lastRefreshToken").as_string().as_deref(), Some("r1"));
    b.dispose();
}

#[wasm_bindgen_test]
async fn builtin_refresh_posts_an_oauth_form_grant() {
    let m = mock_fetch(200, &obj(&[("access_token", "from-url".into()), ("expires_in", 60.into())]), &none());
    let b = TokenBroker::new(obj(&[
        ("refresh", obj(&[("url", "/auth/refresh-token".into()), ("headers", obj(&[("X-Client", "t".into())]))])),
        ("tokens", tokens("old", "r/0+=", 60.0)),
    ]))
    .unwrap();
    let got = settle(b.token_rejected("old".into(), none())).await;
    restore_fetch(&m);
    assert_eq!(got.unwrap().as_string().as_deref(), Some("from-url"));
    let seen = js_sys::Array::from(&get(&m, "seen"));
    assert_eq!(seen.length(), 1);
    let req = seen.get(0);
    assert_eq!(get(&req, "method").as_string().as_deref(), Some("POST"));
    assert!(get(&req, "url").as_string().unwrap().ends_with("/auth/refresh-token"));
    assert_eq!(get(&req, "type").as_string().as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(get(&req, "extra").as_string().as_deref(), Some("t"));
    assert_eq!(get(&req, "body").as_string().as_deref(), Some("grant_type=refresh_token&refresh_token=r%2F0%2B%3D"));
}

#[wasm_bindgen_test]
async fn builtin_refresh_json_body_and_invalid_grant() {
    let m = mock_fetch(400, &obj(&[("error", "invalid_grant".into())]), &none());
    let c = counter();
    let b = TokenBroker::new(obj(&[
        ("refresh", obj(&[("url", "/t".into()), ("body", "json".into()), ("credentials", "include".into())])),
        ("tokens", tokens("old", "r0", 60.0)),
        ("onSessionExpired", on_expired(&c)),
    ]))
    .unwrap();
    let e = settle(b.token_rejected("old".into(), none())).await.unwrap_err();
    restore_fetch(&m);
    assert_broker_error(&e, "SESSION_EXPIRED");
    assert_eq!(get(&get(&e, "cause"), "status").as_f64(), Some(400.0), "cause is the Response");
    let req = js_sys::Array::from(&get(&m, "seen")).get(0);
    assert_eq!(get(&req, "body").as_string().as_deref(), Some(r#"{"grant_type":"refresh_token","refresh_token":"r0"}"#));
    assert_eq!(get(&req, "credentials").as_string().as_deref(), Some("include"));
    assert_eq!(get(&c, "expired").as_f64(), Some(1.0));
}

#[wasm_bindgen_test]
async fn builtin_refresh_503_is_retried_and_malformed_json_is_an_error() {
    let m = mock_fetch(503, &"oops".into(), &obj(&[("Retry-After", "0".into())]));
    let b = TokenBroker::new(obj(&[("refresh", obj(&[("url", "/t".into())])), ("tokens", tokens("old", "r0", 60.0))])).unwrap();
    let e = settle(b.token_rejected("old".into(), none())).await.unwrap_err();
    restore_fetch(&m);
    assert_broker_error(&e, "REFRESH_FAILED");
    assert_eq!(js_sys::Array::from(&get(&m, "seen")).length(), 3, "1 + 2 retries");
    let m = mock_fetch(200, &"not json".into(), &none());
    let e = settle(b.get_access_token(none())).await.unwrap_err();
    restore_fetch(&m);
    assert_broker_error(&e, "INVALID_TOKEN_RESPONSE");
}

#[wasm_bindgen_test]
fn policy_helpers() {
    let c = counter();
    let b = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &obj(&[("allowedOrigins", js_sys::Array::of1(&"https://api.example.com/".into()).into())]))).unwrap();
    assert!(b.should_refresh_on_401(JsValue::NULL).unwrap());
    assert!(b.should_refresh_on_401(r#"Bearer error="invalid_token""#.into()).unwrap());
    assert!(!b.should_refresh_on_401(r#"Bearer error="insufficient_scope""#.into()).unwrap());
    assert!(b.allows_origin("https://api.example.com".into()).unwrap());
    assert!(!b.allows_origin("https://evil.example.com".into()).unwrap());
    let page = web_sys::window().unwrap().location().origin().unwrap();
    assert!(b.allows_origin(page.clone().into()).unwrap());
}

#[wasm_bindgen_test]
async fn custom_async_storage_persists_and_restores_tokens() {
    let c = counter();
    let store = memory_store("async", &JsValue::NULL);
    let opts1 = opts(&refresh_fn(&c, "ok", 0), &obj(&[("name", "s1".into()), ("storage", store.clone()), ("tokens", tokens("t1", "r1", 60.0))]));
    let first = JsFuture::from(TokenBroker::create(opts1)).await.unwrap();
    let saved = stored(&store, "token-broker:s1").as_string().expect("written on setTokens");
    assert!(saved.contains("\"a\":\"t1\"") && saved.contains("\"r\":\"r1\""), "{saved}");
    // A second broker (a reload) starts from storage.
    let opts2 = opts(&refresh_fn(&c, "ok", 0), &obj(&[("name", "s1".into()), ("storage", store.clone())]));
    let second = JsFuture::from(TokenBroker::create(opts2)).await.unwrap();
    assert_eq!(get(&second, "state").as_string().as_deref(), Some("valid"));
    let token = JsFuture::from(Reflect::get(&second, &"getAccessToken".into()).unwrap().unchecked_into::<js_sys::Function>().call0(&second).unwrap().unchecked_into::<Promise>()).await.unwrap();
    assert_eq!(token.as_string().as_deref(), Some("t1"));
    // Logout clears it.
    Reflect::get(&first, &"logout".into()).unwrap().unchecked_into::<js_sys::Function>().call0(&first).unwrap();
    assert!(stored(&store, "token-broker:s1").is_null());
}

#[wasm_bindgen_test]
async fn a_storage_that_never_answers_does_not_hang_creation() {
    let c = counter();
    let store = memory_store("never", &JsValue::NULL);
    let o = opts(&refresh_fn(&c, "ok", 0), &obj(&[("storage", store), ("refreshTimeoutMs", 50.into())]));
    let b = JsFuture::from(TokenBroker::create(o)).await.unwrap();
    assert_eq!(get(&b, "state").as_string().as_deref(), Some("anonymous"));
}

#[wasm_bindgen_test]
async fn invalid_storage_and_cross_tab_options_are_errors() {
    let c = counter();
    for (extra, needle) in [
        (obj(&[("storage", "cookies".into())]), "storage"),
        (obj(&[("storage", obj(&[("get", 1.into())]))]), "storage"),
        (obj(&[("crossTab", "yes".into())]), "crossTab"),
        (obj(&[("name", "".into())]), "name"),
    ] {
        let e = settle(TokenBroker::create(opts(&refresh_fn(&c, "ok", 0), &extra))).await.unwrap_err();
        assert_broker_error(&e, "INVALID_OPTIONS");
        assert!(get(&e, "message").as_string().unwrap().contains(needle));
    }
}

#[wasm_bindgen_test]
async fn a_sibling_login_with_the_same_generation_number_replaces_the_cached_token() {
    // Two brokers of one name in one page talk over BroadcastChannel like two tabs.
    let c = counter();
    let cross = |t: JsValue| obj(&[("name", "gen".into()), ("crossTab", true.into()), ("tokens", t)]);
    let a = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &cross(tokens("a1", "ra1", 60.0)))).unwrap();
    // A refreshes once: generation 2, epoch 1; its token is now cached for the hot path.
    assert_eq!(settle(a.token_rejected("a1".into(), none())).await.unwrap().as_string().as_deref(), Some("access-1"));
    assert_eq!(settle(a.get_access_token(none())).await.unwrap().as_string().as_deref(), Some("access-1"));
    // Another "tab" logs in (epoch 1 → ignored by A), then logs in again: generation 2, epoch 2.
    let b = TokenBroker::new(opts(&refresh_fn(&c, "ok", 0), &cross(tokens("b1", "rb1", 60.0)))).unwrap();
    b.set_tokens(tokens("b2", "rb2", 60.0)).unwrap();
    TimeoutFuture::new(30).await;
    assert_eq!(a.generation(), 2.0, "same generation number, newer epoch");
    assert_eq!(settle(a.get_access_token(none())).await.unwrap().as_string().as_deref(), Some("b2"));
    a.dispose();
    b.dispose();
}
