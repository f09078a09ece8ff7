//! Reading and validating the options object. Unknown keys and wrong types are
//! `INVALID_OPTIONS` errors naming the key, never panics.

use js_sys::{Array, Function, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::RequestCredentials;

use super::js::{get, invalid_option};

pub(super) enum RefreshSource {
    Function(Function),
    Endpoint { url: String, form: bool, credentials: RequestCredentials, headers: Vec<(String, String)> },
}


pub(super) const OPTION_KEYS: [&str; 10] = [
    "refresh",
    "tokens",
    "leewaySeconds",
    "refreshTimeoutMs",
    "refreshRetries",
    "onSessionExpired",
    "allowedOrigins",
    "name",
    "crossTab",
    "storage",
];

pub(super) fn number_option(options: &JsValue, key: &str, min: f64, max: f64, integer: bool) -> Result<Option<f64>, JsValue> {
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

pub(super) fn refresh_source(v: &JsValue) -> Result<RefreshSource, JsValue> {
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
