//! `/__control/...`: test-only switches (mounted only with `--test-controls`).

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::app::App;
use crate::config::check_seconds;
use crate::dpop::{self, Mode, Role};
use crate::store::{hash_token, DelayNext, EndReason, Fault, FaultKind, Runtime, State as Store};
use crate::web::{error_json, json_response, read_body};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/reset", post(reset))
        .route("/config", get(get_config).post(set_config))
        .route("/latency", get(get_faults).post(latency))
        .route("/fault", post(fault))
        .route("/faults", get(get_faults))
        .route("/delay-next", post(delay_next))
        .route("/always-401", post(always_401))
        .route("/revoke", post(revoke))
        .route("/stats", get(stats))
        .route("/log", get(log))
        .route("/foreign", get(foreign))
        .route("/families", get(families))
        .route("/clock", get(get_clock).post(set_clock))
        .route("/dpop", get(get_dpop).post(rotate_dpop))
        .route("/redirect", any(redirect))
}

/// `/__control/redirect?status=307&to=URL`: answers any method with that redirect, so browser
/// tests can check what a client does when a same-origin URL sends it elsewhere (a token POST
/// must not follow; a 401 reached through a redirect is not about the client's token).
async fn redirect(req: Request) -> Response {
    let query = req.uri().query().unwrap_or("");
    let (mut status, mut to) = (StatusCode::TEMPORARY_REDIRECT, None);
    let params: Vec<(String, String)> = match serde_urlencoded::from_str(query) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    for (k, v) in params {
        match k.as_str() {
            "status" => match v.parse::<u16>().ok().and_then(|s| StatusCode::from_u16(s).ok()) {
                Some(s) if s.is_redirection() => status = s,
                _ => return bad("status must be a 3xx code"),
            },
            "to" => to = Some(v),
            _ => return bad("unknown parameter (known: status, to)"),
        }
    }
    let Some(to) = to else { return bad("to is required") };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    match axum::http::HeaderValue::from_str(&to) {
        Ok(v) => {
            r.headers_mut().insert(axum::http::header::LOCATION, v);
            r
        }
        Err(_) => bad("to must be a valid header value"),
    }
}

/// Longest injected delay; longer ones would only outlive the tests that set them.
const MAX_DELAY_MS: u64 = 600_000;
/// About ±300 years: keeps every timestamp sum far inside i64.
const MAX_CLOCK_OFFSET_MS: i64 = 10_000_000_000_000;

fn bad(msg: impl std::fmt::Display) -> Response {
    error_json(StatusCode::BAD_REQUEST, "invalid_request", &msg.to_string())
}

/// Control bodies are strict JSON (unknown fields rejected, so a typo fails loudly);
/// an empty body means "all defaults".
async fn parse<T: DeserializeOwned + Default>(req: Request) -> Result<T, Response> {
    let (parts, body): (_, Body) = req.into_parts();
    let bytes = read_body(&parts.headers, body)
        .await
        .map_err(|e| e.response())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(bad)
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, v)
}

/// Lets `"idle_timeout": null` mean "switch off", distinct from leaving the field out.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    access_ttl: Option<f64>,
    grace: Option<f64>,
    grace_max_uses: Option<u32>,
    family_lifetime: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    idle_timeout: Option<Option<f64>>,
    expose_www_authenticate: Option<bool>,
    expose_dpop_nonce: Option<bool>,
    dpop: Option<Mode>,
    dpop_nonces: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    dpop_nonce_rotate: Option<Option<f64>>,
}

impl ConfigPatch {
    /// Validates everything before touching `rt`, so a bad field changes nothing.
    fn apply(&self, rt: &Runtime) -> Result<Runtime, String> {
        let mut out = rt.clone();
        if let Some(v) = self.access_ttl {
            out.access_ttl = check_seconds("access_ttl", v)?;
            if v < 0.001 {
                return Err("access_ttl: must be at least 0.001 seconds".into());
            }
        }
        if let Some(v) = self.grace {
            out.grace = check_seconds("grace", v)?;
        }
        if let Some(v) = self.grace_max_uses {
            out.grace_max_uses = v;
        }
        if let Some(v) = self.family_lifetime {
            out.family_lifetime = check_seconds("family_lifetime", v)?;
        }
        if let Some(v) = self.idle_timeout {
            out.idle_timeout = match v {
                Some(s) if check_seconds("idle_timeout", s)? > 0.0 => Some(s),
                _ => None,
            };
        }
        if let Some(v) = self.expose_www_authenticate {
            out.expose_www_authenticate = v;
        }
        if let Some(v) = self.expose_dpop_nonce {
            out.expose_dpop_nonce = v;
        }
        // A mode without a word about nonces brings the mode's default, as `--dpop` does.
        if let Some(m) = self.dpop {
            out.dpop = m;
            out.dpop_nonces = m.default_nonces();
        }
        if let Some(v) = self.dpop_nonces {
            out.dpop_nonces = v;
        }
        if let Some(v) = self.dpop_nonce_rotate {
            out.dpop_nonce_rotate = match v {
                Some(s) if check_seconds("dpop_nonce_rotate", s)? > 0.0 => Some(s),
                _ => None,
            };
        }
        Ok(out)
    }
}

fn config_json(rt: &Runtime) -> Value {
    json!(rt)
}

async fn reset(State(app): State<Arc<App>>, req: Request) -> Response {
    let patch: ConfigPatch = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let rt = match patch.apply(&Runtime::from_config(&app.cfg)) {
        Ok(rt) => rt,
        Err(e) => return bad(e),
    };
    let mut st = app.lock();
    st.reset(rt);
    ok(json!({ "ok": true, "config": config_json(&st.rt) }))
}

async fn get_config(State(app): State<Arc<App>>) -> Response {
    ok(config_json(&app.lock().rt))
}

async fn set_config(State(app): State<Arc<App>>, req: Request) -> Response {
    let patch: ConfigPatch = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    match patch.apply(&st.rt) {
        Ok(rt) => {
            st.rt = rt;
            ok(config_json(&st.rt))
        }
        Err(e) => bad(e),
    }
}

fn faults_json(st: &Store) -> Value {
    json!({
        "faults": st.faults,
        "latency": st.latency,
        "delay_next": st.delay_next,
        "always_401": st.always_401,
    })
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    ok(faults_json(&app.lock()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LatencyReq {
    path: Option<String>,
    ms: Option<u64>,
    clear: Option<bool>,
}

async fn latency(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: LatencyReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    if r.clear == Some(true) {
        st.latency.clear();
    } else {
        let Some(path) = r.path else {
            return bad("path is required (an exact path, or \"*\" for all)");
        };
        match r.ms.unwrap_or(0).min(MAX_DELAY_MS) {
            0 => st.latency.remove(&path),
            ms => st.latency.insert(path, ms),
        };
    }
    ok(json!({ "ok": true, "latency": st.latency }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FaultReq {
    kind: Option<String>,
    count: Option<u32>,
    retry_after: Option<u64>,
    ms: Option<u64>,
    commit: Option<bool>,
    clear: Option<bool>,
}

async fn fault(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: FaultReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    if r.clear == Some(true) || r.kind.as_deref() == Some("none") {
        st.faults.clear();
        return ok(json!({ "ok": true, "faults": st.faults }));
    }
    let Some(kind) = r.kind else {
        return bad("kind is required");
    };
    let kind: FaultKind = match serde_json::from_value(Value::String(kind.clone())) {
        Ok(k) => k,
        Err(_) => {
            return bad(format!(
                "unknown fault kind '{kind}'; one of invalid_grant, invalid_client, unavailable, rate_limited, server_error, hang, drop, malformed, no_access_token, no_refresh_token, none"
            ))
        }
    };
    let count = r.count.unwrap_or(1);
    if count == 0 {
        return bad("count must be at least 1");
    }
    st.faults.push_back(Fault {
        kind,
        remaining: count,
        retry_after: r.retry_after.unwrap_or(2),
        ms: r.ms.unwrap_or(120_000).min(MAX_DELAY_MS),
        commit: r.commit.unwrap_or(kind == FaultKind::Drop),
    });
    ok(json!({ "ok": true, "faults": st.faults }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DelayReq {
    path: Option<String>,
    ms: Option<u64>,
    status: Option<u16>,
}

async fn delay_next(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: DelayReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(path) = r.path else {
        return bad("path is required");
    };
    if r.status.is_some_and(|s| s != 401) {
        return bad("status: only 401 is supported");
    }
    let mut st = app.lock();
    st.delay_next
        .entry(path)
        .or_insert_with(VecDeque::new)
        .push_back(DelayNext {
            ms: r.ms.unwrap_or(0).min(MAX_DELAY_MS),
            status: r.status,
        });
    ok(json!({ "ok": true, "delay_next": st.delay_next }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OnReq {
    on: Option<bool>,
}

async fn always_401(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: OnReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    st.always_401 = r.on.unwrap_or(true);
    ok(json!({ "ok": true, "always_401": st.always_401 }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeReq {
    family: Option<String>,
    refresh_token: Option<String>,
    all: Option<bool>,
}

async fn revoke(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: RevokeReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    let revoked = if r.all == Some(true) {
        st.revoke_all()
    } else {
        let fam = match (r.family, r.refresh_token) {
            (Some(f), _) => Some(f),
            (None, Some(t)) => st.family_of(&hash_token(&t)),
            (None, None) => return bad("give family, refresh_token or all:true"),
        };
        fam.map(|f| st.revoke_family(&f, EndReason::Control) as u64)
            .unwrap_or(0)
    };
    ok(json!({ "ok": true, "revoked": revoked }))
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    ok(json!(app.lock().stats))
}

async fn log(State(app): State<Arc<App>>, req: Request) -> Response {
    let since = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    ok(json!(app.lock().log_entries(since)))
}

async fn foreign(State(app): State<Arc<App>>) -> Response {
    ok(json!(app.lock().foreign))
}

async fn families(State(app): State<Arc<App>>) -> Response {
    let st = app.lock();
    let mut fams: Vec<_> = st.families.values().cloned().collect();
    fams.sort_by_key(|f| f.created_ms);
    ok(json!(fams))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    advance_ms: Option<i64>,
    offset_ms: Option<i64>,
}

fn clock_json(st: &Store) -> Value {
    json!({ "offset_ms": st.clock_offset_ms, "now_ms": st.now() })
}

async fn get_clock(State(app): State<Arc<App>>) -> Response {
    ok(clock_json(&app.lock()))
}

async fn set_clock(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: ClockReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut st = app.lock();
    if let Some(o) = r.offset_ms {
        st.clock_offset_ms = o;
    }
    if let Some(a) = r.advance_ms {
        st.clock_offset_ms = st.clock_offset_ms.saturating_add(a);
    }
    st.clock_offset_ms = st
        .clock_offset_ms
        .clamp(-MAX_CLOCK_OFFSET_MS, MAX_CLOCK_OFFSET_MS);
    ok(clock_json(&st))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DpopReq {
    rotate: Option<String>,
}

fn dpop_json(app: &App) -> Value {
    let (as_nonce, rs_nonce) = dpop::current_nonces(app);
    let st = app.lock();
    let mut jkts: Vec<&String> = st.dpop.jkts.iter().collect();
    jkts.sort();
    json!({
        "mode": st.rt.dpop,
        "nonces": st.rt.dpop_nonces,
        "nonce_rotate": st.rt.dpop_nonce_rotate,
        "as_nonce": as_nonce,
        "rs_nonce": rs_nonce,
        "jkts": jkts,
        "jti_cache": st.dpop.jti_cache_len(),
    })
}

/// `GET /__control/dpop`: the mode, the current nonces (so a test can build a proof that
/// passes at once) and the key thumbprints seen.
async fn get_dpop(State(app): State<Arc<App>>) -> Response {
    ok(dpop_json(&app))
}

/// `POST /__control/dpop {"rotate":"as"|"rs"|"both"}`: a new nonce now. The old one stops
/// at once, so the next proof that carries it gets `use_dpop_nonce`.
async fn rotate_dpop(State(app): State<Arc<App>>, req: Request) -> Response {
    let r: DpopReq = match parse(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let roles: &[Role] = match r.rotate.as_deref().unwrap_or("both") {
        "as" => &[Role::As],
        "rs" => &[Role::Rs],
        "both" => &[Role::As, Role::Rs],
        other => return bad(format!("rotate: '{other}' is not one of as, rs, both")),
    };
    {
        let mut st = app.lock();
        let now = st.now();
        for role in roles {
            st.dpop.rotate(*role, now);
        }
    }
    let mut v = dpop_json(&app);
    if let Some(o) = v.as_object_mut() {
        o.insert("ok".into(), json!(true));
    }
    ok(v)
}
