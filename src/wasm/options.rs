//! Reading and validating the options object. Own properties only; unknown keys and wrong types
//! are `INVALID_OPTIONS` errors that name the option, what it must be and what it got (its type,
//! never a value that may be a token). Never a panic.

use js_sys::{Array, Function, Object};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::RequestCredentials;

use super::js::{get, invalid_option, own, resolve_url, type_name};

/// Where a token request goes: an absolute URL fixed at creation (a `<base href>` injected
/// later cannot move it), on an allowed origin.
pub(super) struct Endpoint {
    pub(super) url: String,
    pub(super) credentials: RequestCredentials,
}

pub(super) enum RefreshSource {
    Function(Function),
    Endpoint { endpoint: Endpoint, form: bool, headers: Vec<(String, String)> },
}

pub(super) const OPTION_KEYS: [&str; 14] = [
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
    "revoke",
    "debug",
    "idleTimeoutMs",
    "dpop",
];

/// Unknown keys are mistakes (a typo silently ignored is an hour lost).
pub(super) fn check_keys(v: &JsValue, owner: &str, known: &[&str], listed: &str) -> Result<(), JsValue> {
    for k in Object::keys::<JsValue>(v.unchecked_ref()).iter() {
        let k = k.as_string().unwrap_or_default();
        if !known.contains(&k.as_str()) {
            return Err(invalid_option(&[owner, "unknown option '", &k, "' (known: ", listed, ")"]));
        }
    }
    Ok(())
}

/// A number option: `range` is how the message states the bounds, e.g. "from 0 to 86400".
pub(super) fn number_option(options: &JsValue, key: &str, min: f64, max: f64, integer: bool, range: &str) -> Result<Option<f64>, JsValue> {
    let v = own(options, key);
    if v.is_undefined() {
        return Ok(None);
    }
    match v.as_f64() {
        Some(n) if n >= min && n <= max && (!integer || n.fract() == 0.0) => Ok(Some(n)),
        _ => {
            let what = if integer { " must be a whole number " } else { " must be a number " };
            let got = if v.as_f64().is_some() { "a number out of range" } else { type_name(&v) };
            Err(invalid_option(&[key, what, range, " (got ", got, ")"]))
        }
    }
}

/// `allowedOrigins`: each entry exactly an origin (`scheme://host[:port]`). A path or a missing
/// scheme would otherwise never match any request, and the token would silently never be sent.
pub(super) fn origins(v: &JsValue) -> Result<Vec<String>, JsValue> {
    if v.is_undefined() {
        return Ok(Vec::new());
    }
    let arr = v.dyn_ref::<Array>().ok_or_else(|| {
        invalid_option(&["allowedOrigins must be an array of origins like 'https://api.example.com' (got ", type_name(v), ")"])
    })?;
    let mut out = Vec::new();
    for o in arr.iter() {
        let Some(s) = o.as_string() else {
            return Err(invalid_option(&["allowedOrigins entries must be strings (got ", type_name(&o), ")"]));
        };
        match origin_of(&s) {
            Some(origin) if origin == s.strip_suffix('/').unwrap_or(&s) => out.push(origin),
            parsed => {
                let hint = parsed.or_else(|| origin_of(&["https://", &s].concat()));
                let mut parts = vec!["allowedOrigins entries must be origins (scheme://host[:port], no path): got '", &s, "'"];
                if let Some(h) = &hint {
                    parts.extend(["; did you mean '", h, "'?"]);
                }
                return Err(invalid_option(&parts));
            }
        }
    }
    Ok(out)
}

fn origin_of(s: &str) -> Option<String> {
    let o = web_sys::Url::new(s).ok()?.origin();
    (o != "null").then_some(o)
}

/// An endpoint URL option (`refresh.url`, `revoke.url`), resolved as the browser will send it and
/// checked against the allowed origins: a refresh token must never be POSTed elsewhere.
fn endpoint_url(v: &JsValue, key: &str, allowed: &[String]) -> Result<String, JsValue> {
    let Some(raw) = v.as_string().filter(|u| !u.is_empty()) else {
        return Err(invalid_option(&[key, " must be a non-empty string (got ", type_name(v), ")"]));
    };
    let Some(url) = resolve_url(&raw) else {
        return Err(invalid_option(&[key, " must be an absolute URL, or a path where there is a page to resolve it against (got '", &raw, "')"]));
    };
    let origin = url.origin();
    if !allowed.contains(&origin) {
        return Err(invalid_option(&[
            key, " goes to ", &origin, ", which is not an allowed origin: add it to allowedOrigins (the page's own origin is allowed by default)",
        ]));
    }
    Ok(url.href())
}

fn credentials(v: &JsValue, key: &str) -> Result<RequestCredentials, JsValue> {
    Ok(match v.as_string().as_deref() {
        None if v.is_undefined() => RequestCredentials::SameOrigin,
        Some("same-origin") => RequestCredentials::SameOrigin,
        Some("include") => RequestCredentials::Include,
        Some("omit") => RequestCredentials::Omit,
        _ => return Err(invalid_option(&[key, " must be 'omit', 'same-origin' or 'include'"])),
    })
}

pub(super) fn refresh_source(v: &JsValue, allowed: &[String]) -> Result<RefreshSource, JsValue> {
    if let Some(f) = v.dyn_ref::<Function>() {
        return Ok(RefreshSource::Function(f.clone()));
    }
    if !v.is_object() {
        return Err(invalid_option(&[
            "refresh must be a function ({ refreshToken, signal }) => Promise<tokens>, or { url } for the built-in OAuth refresh (got ",
            type_name(v),
            ")",
        ]));
    }
    check_keys(v, "refresh: ", &["url", "body", "credentials", "headers"], "url, body, credentials, headers")?;
    let url = endpoint_url(&own(v, "url"), "refresh.url", allowed)?;
    let body = own(v, "body");
    let form = match body.as_string().as_deref() {
        None if body.is_undefined() => true,
        Some("form") => true,
        Some("json") => false,
        _ => return Err(invalid_option(&["refresh.body must be 'json' or 'form'"])),
    };
    let credentials = credentials(&own(v, "credentials"), "refresh.credentials")?;
    let h = own(v, "headers");
    let mut headers = Vec::new();
    if !h.is_undefined() {
        if !h.is_object() {
            return Err(invalid_option(&["refresh.headers must be an object of strings (got ", type_name(&h), ")"]));
        }
        for entry in Object::entries(h.unchecked_ref()).iter() {
            let pair: Array = entry.unchecked_into();
            match (pair.get(0).as_string(), pair.get(1).as_string()) {
                (Some(k), Some(v)) => headers.push((k, v)),
                _ => return Err(invalid_option(&["refresh.headers must be an object of strings"])),
            }
        }
    }
    Ok(RefreshSource::Endpoint { endpoint: Endpoint { url, credentials }, form, headers })
}

/// `revoke: { url }` (RFC 7009). Cookie mode follows the refresh endpoint's credentials.
pub(super) fn revoke_endpoint(v: &JsValue, source: &RefreshSource, allowed: &[String]) -> Result<Option<Endpoint>, JsValue> {
    if v.is_undefined() {
        return Ok(None);
    }
    if !v.is_object() || v.is_function() {
        return Err(invalid_option(&["revoke must be { url } (got ", type_name(v), ")"]));
    }
    check_keys(v, "revoke: ", &["url"], "url")?;
    let url = endpoint_url(&own(v, "url"), "revoke.url", allowed)?;
    let credentials = match source {
        RefreshSource::Endpoint { endpoint, .. } => endpoint.credentials,
        RefreshSource::Function(_) => RequestCredentials::SameOrigin,
    };
    Ok(Some(Endpoint { url, credentials }))
}

/// The page's origin, when there is a page (or a worker with a location).
pub(super) fn page_origin() -> Option<String> {
    get(&get(&js_sys::global(), "location"), "origin").as_string().filter(|o| o != "null")
}

/// `debug: true` (console.debug) or a function that receives each entry; off by default.
pub(super) fn debug_sink(v: &JsValue) -> Result<Option<Function>, JsValue> {
    if v.is_undefined() || v.as_bool() == Some(false) {
        return Ok(None);
    }
    if v.as_bool() == Some(true) {
        let console = get(&js_sys::global(), "console");
        return Ok(get(&console, "debug").dyn_into::<Function>().ok().map(|f| JsValue::from(f.bind1(&console, &JsValue::from_str("[token-broker]"))).unchecked_into::<Function>()));
    }
    v.clone().dyn_into::<Function>().map(Some).map_err(|_| invalid_option(&["debug must be true, false or a function (entry) => void (got ", type_name(v), ")"]))
}

/// `dpop`: the key holder `createTokenBroker` made from `dpop: true | { store }` (key, proofs,
/// nonces: WebCrypto and IndexedDB live in `dpop.js`, loaded only by the apps that use DPoP).
pub(super) fn dpop_holder(v: &JsValue) -> Result<Option<JsValue>, JsValue> {
    if v.is_undefined() || v.as_bool() == Some(false) {
        return Ok(None);
    }
    if own(v, "proof").is_function() {
        return Ok(Some(v.clone()));
    }
    Err(invalid_option(&[
        "dpop is set up by createTokenBroker(options) from 'token-broker': pass dpop: true or { store: 'indexeddb' | 'memory' } to it (got ",
        type_name(v),
        " here)",
    ]))
}
