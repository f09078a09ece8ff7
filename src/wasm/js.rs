//! Small helpers for reading and building JS values, and the JS error every failure becomes.

use js_sys::{Promise, Reflect};
use web_sys::Request;
use wasm_bindgen::prelude::*;

use crate::core::{self, BrokerError, Field, Now};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn perf_now() -> f64;
    #[wasm_bindgen(js_name = fetch)]
    pub(crate) fn global_fetch(input: &Request) -> Promise;
    #[wasm_bindgen(js_name = encodeURIComponent)]
    pub(crate) fn encode_uri_component(s: &str) -> String;
}

pub(crate) fn now() -> Now {
    Now { wall_ms: js_sys::Date::now(), mono_ms: perf_now() }
}

pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    if obj.is_object() || obj.is_function() {
        Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

pub(crate) fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// Builds the JS error every failure becomes: `name = "TokenBrokerError"`, a stable `code`,
/// and the original rejection as `cause`.
pub(crate) fn js_error(e: BrokerError, detail: Option<&str>, cause: &JsValue) -> JsValue {
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

pub(crate) fn invalid_option(detail: &str) -> JsValue {
    js_error(BrokerError::InvalidOptions, Some(detail), &JsValue::UNDEFINED)
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
    let v = get(obj, a);
    if v.is_undefined() { get(obj, b) } else { v }
}

/// Reads a token set in either spelling: `{ accessToken, refreshToken?, expiresIn? }` or the
/// token endpoint's own `{ access_token, refresh_token?, expires_in? }`.
pub(crate) fn token_set(v: &JsValue, server_offset_ms: f64) -> Result<core::TokenSet, BrokerError> {
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

pub(crate) fn seconds(v: &JsValue) -> Option<f64> {
    v.as_f64().or_else(|| v.as_string().and_then(|s| core::parse_seconds(&s)))
}
