//! Small helpers for reading and building JS values, and the JS error every failure becomes.
//!
//! Values from outside (option bags, token responses, storage records, channel messages) are read
//! through [`own`]: own properties only, so `Object.prototype.accessToken = 'X'` or
//! `Object.prototype.allowedOrigins = [...]` planted by another script changes nothing.

use std::cell::Cell;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::Request;

use crate::core::{self, BrokerError, Field, JwtTimes, Now};

#[wasm_bindgen]
extern "C" {
    // `catch`: a page may replace these with functions that throw; the broker must not trap.
    #[wasm_bindgen(catch, js_namespace = performance, js_name = now)]
    fn perf_now() -> Result<f64, JsValue>;
    #[wasm_bindgen(catch, js_namespace = Date, js_name = now)]
    fn date_now() -> Result<f64, JsValue>;
    #[wasm_bindgen(js_name = fetch)]
    pub(crate) fn global_fetch(input: &Request) -> Promise;
    #[wasm_bindgen(js_name = encodeURIComponent)]
    pub(crate) fn encode_uri_component(s: &str) -> String;
    #[wasm_bindgen(catch)]
    fn atob(s: &str) -> Result<String, JsValue>;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(f: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

thread_local! {
    static LAST_NOW: Cell<Now> = const { Cell::new(Now { wall_ms: 0.0, mono_ms: 0.0 }) };
}

/// Both clocks. Read before any `RefCell` borrow: a page's `Date.now` may call back into the
/// broker. A clock that throws or returns garbage reads as the last good value.
pub(crate) fn now() -> Now {
    let last = LAST_NOW.with(Cell::get);
    let ok = |r: Result<f64, JsValue>, prev: f64| r.ok().filter(|v| v.is_finite()).unwrap_or(prev);
    let n = Now { wall_ms: ok(date_now(), last.wall_ms), mono_ms: ok(perf_now(), last.mono_ms) };
    LAST_NOW.with(|c| c.set(n));
    n
}

/// A `setTimeout` that, in Node, does not keep the process alive (`unref`), for timers that
/// only serve the future (the proactive refresh): a script that is done may exit.
pub(crate) struct Timer {
    id: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// A timer that keeps a Node process alive until it fires (deadlines, bounded waits).
    pub(crate) fn new(ms: f64, f: impl FnMut() + 'static) -> Timer {
        let callback = Closure::<dyn FnMut()>::new(f);
        // Hosts cap timers at 2^31-1 ms; longer waits re-arm when they fire.
        let id = set_timeout(callback.as_ref().unchecked_ref(), ms.clamp(0.0, 2_147_483_647.0));
        Timer { id, _callback: callback }
    }

    /// A timer that does not keep a Node process alive (`unref`).
    pub(crate) fn background(ms: f64, f: impl FnMut() + 'static) -> Timer {
        let t = Timer::new(ms, f);
        if let Ok(unref) = get(&t.id, "unref").dyn_into::<Function>() {
            let _ = unref.call0(&t.id);
        }
        t
    }
}

/// The one way a future becomes a Promise: a single instantiation of the executor glue instead of
/// one per call site (each costs about a kilobyte of wasm).
pub(crate) fn promise(f: impl std::future::Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = Result<JsValue, JsValue>>>> = Box::pin(f);
    wasm_bindgen_futures::future_to_promise(boxed)
}

/// Runs a future to completion in the background (through [`promise`]).
pub(crate) fn spawn(f: impl std::future::Future<Output = ()> + 'static) {
    let _ = promise(async move {
        f.await;
        Ok(JsValue::UNDEFINED)
    });
}

impl Drop for Timer {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}

/// A property of a platform object (`location`, a `Response`, an error): prototype getters count.
pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() || obj.is_function() {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// An own property of a value from outside; inherited ones read as `undefined`.
pub(crate) fn own(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() || obj.is_function() {
        let k = JsValue::from_str(key);
        if Object::has_own::<JsValue>(obj.unchecked_ref(), &k) {
            return Reflect::get(obj, &k).unwrap_or(JsValue::UNDEFINED);
        }
    }
    JsValue::UNDEFINED
}

pub(crate) fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// What a value is, for messages that must not show the value itself (it may be a token).
pub(crate) fn type_name(v: &JsValue) -> &'static str {
    if v.is_undefined() {
        "undefined"
    } else if v.is_null() {
        "null"
    } else if v.is_string() {
        "a string"
    } else if v.as_f64().is_some() {
        "a number"
    } else if v.as_bool().is_some() {
        "a boolean"
    } else if v.is_function() {
        "a function"
    } else if js_sys::Array::is_array(v) {
        "an array"
    } else if v.is_instance_of::<Promise>() {
        "a Promise"
    } else if v.is_object() {
        "an object"
    } else {
        "another type"
    }
}

/// Builds the JS error every failure becomes: `name = "TokenBrokerError"`, a stable `code`,
/// the code's message (with `detail` after it), and (when given) the original failure as
/// `cause`. Never a token in any of them.
pub(crate) fn js_error(e: BrokerError, detail: Option<&str>, cause: &JsValue) -> JsValue {
    let err = match detail {
        Some(d) => coded_error(e, &[e.message(), ": ", d]),
        None => coded_error(e, &[e.message()]),
    };
    if !cause.is_undefined() {
        set(&err, "cause", cause);
    }
    err
}

/// A `TokenBrokerError` whose whole message is `parts` joined (when the code's stock message
/// would say the wrong thing, e.g. "the refresh returned" for a `setTokens` call).
pub(crate) fn coded_error(e: BrokerError, parts: &[&str]) -> JsValue {
    let err = js_sys::Error::new(&parts.concat());
    err.set_name("TokenBrokerError");
    set(&err, "code", &JsValue::from_str(e.code()));
    err.into()
}

/// `INVALID_OPTIONS` with the parts of a message joined: `["refresh.url", " must be ..."]`.
pub(crate) fn invalid_option(parts: &[&str]) -> JsValue {
    js_error(BrokerError::InvalidOptions, Some(&parts.concat()), &JsValue::UNDEFINED)
}

/// A `TypeError` for a method called with the wrong kind of argument.
pub(crate) fn type_error(parts: &[&str]) -> JsValue {
    js_sys::TypeError::new(&parts.concat()).into()
}

pub(crate) fn field(v: JsValue) -> Field {
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
    let v = own(obj, a);
    if v.is_undefined() { own(obj, b) } else { v }
}

/// Reads a token set in either spelling: `{ accessToken, refreshToken?, expiresIn? }` or the
/// token endpoint's own `{ access_token, refresh_token?, expires_in? }`. The error says what
/// is wrong without showing any value.
pub(crate) fn token_set(v: &JsValue, server_offset_ms: f64, dpop: bool) -> Result<core::TokenSet, String> {
    if v.is_instance_of::<web_sys::Response>() {
        return Err("got a fetch Response: return `await response.json()` instead".into());
    }
    if !v.is_object() || js_sys::Array::is_array(v) {
        let mut d = String::from("expected { access_token, refresh_token?, expires_in? }, got ");
        d.push_str(type_name(v));
        return Err(d);
    }
    if ["data", "status", "headers"].iter().all(|k| !own(v, k).is_undefined()) {
        return Err("got an axios response: return `response.data` instead".into());
    }
    let access = first_present(v, "accessToken", "access_token");
    let jwt: JwtTimes = access.as_string().and_then(|t| jwt_payload(&t)).map(|p| jwt_times(&p));
    let set = core::parse_token_set(
        field(access),
        field(first_present(v, "refreshToken", "refresh_token")),
        field(first_present(v, "expiresIn", "expires_in")),
        jwt,
        now().wall_ms,
        server_offset_ms,
    )?;
    core::check_token_type(&field(first_present(v, "tokenType", "token_type")), dpop)?;
    Ok(set)
}

/// Calls `obj[name](...args)` with up to two arguments (a storage adapter, the DPoP key holder).
pub(crate) fn call(obj: &JsValue, name: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = get(obj, name).dyn_into()?;
    match args {
        [a] => f.call1(obj, a),
        [a, b] => f.call2(obj, a, b),
        _ => f.call0(obj),
    }
}

/// A JWT's payload decoded with the platform (`atob`, UTF-8, `JSON.parse`), not verified;
/// `None` for opaque tokens and anything that does not decode to a JSON object.
pub(crate) fn jwt_payload(token: &str) -> Option<Object> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.is_empty() {
        return None;
    }
    let mut b64: String = payload.chars().map(|c| match c { '-' => '+', '_' => '/', c => c }).collect();
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    // atob yields one char per byte; the payload is UTF-8 JSON.
    let bytes: Vec<u8> = atob(&b64).ok()?.chars().map(|c| c as u32 as u8).collect();
    let json = String::from_utf8(bytes).ok()?;
    let v = js_sys::JSON::parse(&json).ok()?;
    (v.is_object() && !js_sys::Array::is_array(&v)).then(|| v.unchecked_into())
}

fn jwt_times(payload: &Object) -> (Option<f64>, Option<f64>) {
    let num = |k| own(payload, k).as_f64().filter(|n| n.is_finite() && *n >= 0.0);
    (num("exp"), num("iat"))
}

pub(crate) fn seconds(v: &JsValue) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite() && *n >= 0.0).or_else(|| v.as_string().and_then(|s| core::parse_seconds(&s)))
}

/// `document.baseURI` where there is a document (what the browser resolves relative URLs
/// against, `<base href>` included), else `location.href` (workers), else nothing (Node).
pub(crate) fn base_uri() -> Option<String> {
    let g = js_sys::global();
    get(&get(&g, "document"), "baseURI").as_string().or_else(|| get(&get(&g, "location"), "href").as_string())
}

/// The absolute URL a `fetch` of `url` goes to, resolved as the browser will resolve it.
pub(crate) fn resolve_url(url: &str) -> Option<web_sys::Url> {
    match base_uri() {
        Some(base) => web_sys::Url::new_with_base(url, &base).ok(),
        None => web_sys::Url::new(url).ok(),
    }
}
