//! The token endpoints and the protected dashboard API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::app::{random_b64, App};
use crate::dpop::{self, Expect, Mode, Reject, Role, Verdict};
use crate::jwt::Claims;
use crate::store::{
    hash_prefix, hash_token, Binding, EndReason, FaultKind, Fresh, Grant, GrantKind, LogInfo,
    Presented, RefreshError,
};
use crate::web::{
    dropped, error_json, json_response, no_store, read_json_value, read_params, static_file,
    with_info,
};

pub const COOKIE_NAME: &str = "tb_refresh";
/// Test users; the password is the user name.
const USERS: [&str; 3] = ["demo", "alice", "bob"];
/// A hung request is answered (by dropping the connection) after at most this long.
const HANG_CAP_MS: u64 = 120_000;
/// The client a request belongs to when it names none, so tokens of clients that never heard
/// of `client_id` (the broker, the demo) stay bound to one client all the same.
pub const DEFAULT_CLIENT_ID: &str = "spa";
/// The scopes this server grants; a login that asks for none gets all of them. `admin`, the
/// scope `/scoped` demands, is deliberately never granted.
pub const GRANTABLE_SCOPES: [&str; 2] = ["read", "write"];
const MAX_CLIENT_ID_LEN: usize = 128;

fn server_error() -> Response {
    error_json(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "random number generator unavailable",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str, cause: &str) -> Response {
    no_store(json_response(
        status,
        json!({ "error": error, "error_description": description, "cause": cause }),
    ))
}

fn invalid_request(description: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        description,
        "invalid_request",
    )
}

/// Whole seconds stay integers in JSON (`60`), fractional ones stay floats (`1.5`).
fn expires_in_json(secs: f64) -> Value {
    if secs.fract() == 0.0 && (0.0..9.0e15).contains(&secs) {
        json!(secs as u64)
    } else {
        json!(secs)
    }
}

fn refresh_cookie(value: &str, max_age_secs: i64) -> Option<HeaderValue> {
    // No `Secure`: the test server speaks plain HTTP on loopback.
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/auth; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age_secs.max(0)
    ))
    .ok()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Ok(None)` = absent; a present non-string value is a client error (`Err` = its description).
fn string_param<'a>(params: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn invalid_scope(description: &str) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        description,
        "invalid_scope",
    )
}

/// A rejected request parameter; kept small so `Result`s stay cheap to pass around.
enum ParamError {
    Request(String),
    Scope(String),
}

impl ParamError {
    fn response(&self) -> Response {
        match self {
            ParamError::Request(d) => invalid_request(d),
            ParamError::Scope(d) => invalid_scope(d),
        }
    }
}

/// `client_id`: absent or empty = the default client; printable ASCII only (RFC 6749 A.1).
fn client_id_param(params: &Map<String, Value>) -> Result<Option<String>, ParamError> {
    match string_param(params, "client_id") {
        Ok(None | Some("")) => Ok(None),
        Ok(Some(c))
            if c.len() <= MAX_CLIENT_ID_LEN && c.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Ok(Some(c.to_string()))
        }
        Ok(Some(_)) => Err(ParamError::Request(
            "client_id must be 1 to 128 printable ASCII characters".into(),
        )),
        Err(d) => Err(ParamError::Request(d)),
    }
}

/// `scope`: space-separated scope-tokens (RFC 6749 §3.3), de-duplicated in order. Absent or
/// blank = `None`. A malformed token is `invalid_scope`, as RFC 6749 §5.2 defines it.
fn scope_param(params: &Map<String, Value>) -> Result<Option<Vec<String>>, ParamError> {
    let raw = match string_param(params, "scope") {
        Ok(None) => return Ok(None),
        Ok(Some(s)) => s,
        Err(d) => return Err(ParamError::Request(d)),
    };
    let mut out: Vec<String> = Vec::new();
    for tok in raw.split(' ').filter(|t| !t.is_empty()) {
        let ok = tok
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ParamError::Scope("malformed scope".into()));
        }
        if !out.iter().any(|t| t == tok) {
            out.push(tok.to_string());
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// A browser sends `Origin` on every POST. A cookie-authenticated request from a page outside
/// the allowlist is refused: SameSite=Strict does not help against another port on the same
/// host (same site, other origin), and a "simple" form POST needs no preflight, so without
/// this any local page could rotate, revoke or plant the refresh cookie.
fn foreign_origin(app: &App, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .is_some_and(|v| !app.origin_allowed(&String::from_utf8_lossy(v.as_bytes())))
}

fn origin_refused() -> Response {
    oauth_error(
        StatusCode::FORBIDDEN,
        "invalid_request",
        "the refresh cookie is only accepted from allowed origins",
        "origin_not_allowed",
    )
}

fn clear_cookie(resp: &mut Response) {
    if let Some(c) = refresh_cookie("", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
}

fn token_response(app: &App, grant: &Grant, include_refresh: bool) -> Response {
    let access = app.sign(&grant.claims);
    // RFC 9449 §5: a key-bound access token is of type DPoP, so a client can tell.
    let token_type = if grant.claims.cnf.is_some() {
        "DPoP"
    } else {
        "Bearer"
    };
    let mut body = json!({
        "access_token": access,
        "expires_in": expires_in_json(grant.expires_in),
        "token_type": token_type,
        "scope": grant.claims.scope,
    });
    if let (true, Some(rt), Some(obj)) = (
        include_refresh && !grant.cookie_mode,
        &grant.refresh_token,
        body.as_object_mut(),
    ) {
        obj.insert("refresh_token".into(), json!(rt));
    }
    let mut resp = no_store(json_response(StatusCode::OK, body));
    // Only cookie mode gets the cookie: a JSON-mode client holds its token itself, and a
    // cookie it never asked for would let any same-origin script refresh without the token.
    if let (true, Some(rt)) = (grant.cookie_mode, &grant.refresh_token) {
        let max_age = (grant.family_expires_ms - grant.now_ms) / 1000;
        if let Some(c) = refresh_cookie(rt, max_age) {
            resp.headers_mut().insert(header::SET_COOKIE, c);
        }
    }
    resp
}

fn grant_info(presented: Option<&str>, grant: &Grant) -> LogInfo {
    LogInfo {
        refresh_token_hash_prefix: presented.map(|t| hash_prefix(&hash_token(t))),
        token_family: Some(grant.claims.fam.clone()),
        outcome: Some(grant.kind.outcome().to_string()),
        issued_jti: Some(grant.claims.jti.clone()),
        issued_generation: Some(grant.claims.gen),
        issued_refresh_hash_prefix: grant.refresh_hash.as_ref().map(hash_prefix),
        ..LogInfo::default()
    }
}

// ---------- DPoP at the token endpoints ----------

/// The DPoP proof of a token request (RFC 9449 §5): `Ok(Some(jkt))` for a valid one, `Ok(None)`
/// for none where none is needed (or DPoP is off), `Err` for the refusal to answer with.
fn token_proof(app: &App, parts: &Parts) -> Result<Option<String>, Reject> {
    let mode = app.lock().rt.dpop;
    if mode == Mode::Off {
        return Ok(None);
    }
    let expect = Expect {
        role: Role::As,
        method: parts.method.as_str(),
        htu: dpop::expected_htu(&parts.headers, &parts.uri),
        access_token: None,
        bound_jkt: None,
    };
    match dpop::check(app, &parts.headers, &expect) {
        Verdict::Valid(p) => Ok(Some(p.jkt)),
        Verdict::Absent if mode == Mode::Required => {
            dpop::count_missing(app, Role::As);
            Err(Reject::Missing)
        }
        Verdict::Absent => Ok(None),
        Verdict::Refused(r) => Err(r),
    }
}

fn proof_refused(r: Reject) -> Response {
    let info = LogInfo {
        outcome: Some(format!("{}: {}", r.error(), r.reason())),
        ..LogInfo::default()
    };
    with_info(dpop::as_refusal(r), info)
}

// ---------- POST /auth/login ----------

pub async fn login(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let params = match read_params(&parts.headers, body).await {
        Ok(p) => p,
        Err(e) => return no_store(e.response()),
    };
    // Before the credentials: a challenged login is retried with the nonce, and must not
    // count as a failed one.
    let dpop_jkt = match token_proof(&app, &parts) {
        Ok(j) => j,
        Err(r) => return proof_refused(r),
    };
    let (user, pass) = match (
        string_param(&params, "username"),
        string_param(&params, "password"),
    ) {
        (Ok(Some(u)), Ok(Some(p))) => (u.to_string(), p.to_string()),
        (Err(d), _) | (_, Err(d)) => return invalid_request(&d),
        _ => return invalid_request("username and password are required"),
    };
    let cookie_only = matches!(params.get("cookie_only"), Some(Value::Bool(true)))
        || matches!(params.get("cookie_only"), Some(Value::String(s)) if s == "true" || s == "1");
    let client_id = match client_id_param(&params) {
        Ok(c) => c.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string()),
        Err(e) => return e.response(),
    };
    let scope = match scope_param(&params) {
        Ok(Some(asked)) => {
            if let Some(bad) = asked
                .iter()
                .find(|s| !GRANTABLE_SCOPES.contains(&s.as_str()))
            {
                return invalid_scope(&format!(
                    "unknown scope '{bad}': this server grants {}",
                    GRANTABLE_SCOPES.join(" and ")
                ));
            }
            asked
        }
        Ok(None) => GRANTABLE_SCOPES.iter().map(|s| s.to_string()).collect(),
        Err(e) => return e.response(),
    };
    if cookie_only && foreign_origin(&app, &parts.headers) {
        return origin_refused();
    }
    if !(USERS.contains(&user.as_str()) && user == pass) {
        app.lock().stats.login_failures += 1;
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid username or password",
            "bad_credentials",
        );
    }
    let (fresh, family) = match (Fresh::generate(), random_b64(12)) {
        (Ok(f), Ok(id)) => (f, id),
        _ => return server_error(),
    };
    let (grant, delay) = {
        let mut st = app.lock();
        let bind = Binding {
            client_id,
            scope,
            cookie_mode: cookie_only,
            dpop_jkt,
        };
        let grant = st.login(&user, family, fresh, bind);
        let delay = st
            .latency_for("/auth/login")
            .saturating_add(st.take_delay_next("/auth/login").map_or(0, |d| d.ms));
        (grant, delay)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let info = grant_info(None, &grant);
    with_info(token_response(&app, &grant, true), info)
}

// ---------- POST /auth/refresh-token ----------

fn refresh_failure(app: &App, resp: Response, info: LogInfo) -> Response {
    app.lock().stats.refresh_errors += 1;
    with_info(resp, info)
}

pub async fn refresh(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let params = read_params(&parts.headers, body).await;
    let proof = token_proof(&app, &parts);
    // A nonce challenge is half of one refresh, not a refresh of its own: it is counted in
    // `dpop_nonce_challenges_as` only, so "one refresh per burst" holds with nonces on.
    if let Err(r) = proof.as_ref() {
        if r.is_challenge() {
            return proof_refused(*r);
        }
    }
    app.lock().stats.refresh_calls += 1;
    let params = match params {
        Ok(p) => p,
        Err(e) => return refresh_failure(&app, no_store(e.response()), LogInfo::default()),
    };
    // A bound refresh token presented without a proof is `invalid_grant` in every mode (RFC 9449
    // §5, issue 13), decided by the family's binding once the token is known; an unbound one in
    // `required` mode is `invalid_dpop_proof`.
    let (dpop_jkt, proof_missing) = match proof {
        Ok(j) => (j, false),
        Err(Reject::Missing) => (None, true),
        Err(r) => {
            app.lock().stats.refresh_errors += 1;
            return proof_refused(r);
        }
    };
    match string_param(&params, "grant_type") {
        Ok(None) | Ok(Some("refresh_token")) => {}
        Ok(Some(_)) => {
            return refresh_failure(
                &app,
                invalid_request("unsupported grant_type: expected refresh_token"),
                LogInfo::default(),
            )
        }
        Err(d) => return refresh_failure(&app, invalid_request(&d), LogInfo::default()),
    }
    let mut from_cookie = false;
    let presented = match string_param(&params, "refresh_token") {
        Ok(Some(t)) if !t.is_empty() => t.to_string(),
        Ok(_) => match cookie_token(&parts.headers) {
            Some(t) => {
                from_cookie = true;
                t
            }
            None => {
                return refresh_failure(
                    &app,
                    invalid_request("missing refresh_token (body or tb_refresh cookie)"),
                    LogInfo::default(),
                )
            }
        },
        Err(d) => return refresh_failure(&app, invalid_request(&d), LogInfo::default()),
    };
    if from_cookie && foreign_origin(&app, &parts.headers) {
        return refresh_failure(&app, origin_refused(), LogInfo::default());
    }
    let client_id = match client_id_param(&params) {
        Ok(c) => c.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_string()),
        Err(e) => return refresh_failure(&app, e.response(), LogInfo::default()),
    };
    let scope = match scope_param(&params) {
        Ok(s) => s,
        Err(e) => return refresh_failure(&app, e.response(), LogInfo::default()),
    };
    let hash = hash_token(&presented);
    if proof_missing && !app.lock().is_dpop_bound(&hash) {
        app.lock().stats.refresh_errors += 1;
        return proof_refused(Reject::Missing);
    }
    let mut info = LogInfo {
        refresh_token_hash_prefix: Some(hash_prefix(&hash)),
        ..LogInfo::default()
    };

    let fault = app.lock().take_fault();
    let mut rotate = true;
    let mut after_commit: Option<(FaultKind, u64)> = None;
    if let Some(f) = fault {
        info.outcome = Some(format!("fault:{}", fault_name(f.kind)));
        let retry_after = HeaderValue::from_str(&f.retry_after.to_string()).ok();
        match f.kind {
            FaultKind::InvalidGrant => {
                return refresh_failure(
                    &app,
                    oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "injected fault: invalid_grant",
                        "injected",
                    ),
                    info,
                )
            }
            FaultKind::InvalidClient => {
                return refresh_failure(
                    &app,
                    oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "injected fault: invalid_client",
                        "injected",
                    ),
                    info,
                )
            }
            FaultKind::Unavailable | FaultKind::RateLimited => {
                let status = if f.kind == FaultKind::Unavailable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::TOO_MANY_REQUESTS
                };
                let mut r = oauth_error(
                    status,
                    "temporarily_unavailable",
                    "injected fault: try again later",
                    "injected",
                );
                if let Some(v) = retry_after {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return refresh_failure(&app, r, info);
            }
            FaultKind::ServerError => {
                // Fails before the rotation is stored, as a failed write would: nothing consumed.
                return refresh_failure(
                    &app,
                    oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "injected fault: storage failure, nothing consumed",
                        "injected",
                    ),
                    info,
                );
            }
            FaultKind::Hang if !f.commit => {
                tokio::time::sleep(Duration::from_millis(f.ms.min(HANG_CAP_MS))).await;
                return dropped(info);
            }
            FaultKind::Drop if !f.commit => return dropped(info),
            FaultKind::Hang => after_commit = Some((FaultKind::Hang, f.ms.min(HANG_CAP_MS))),
            FaultKind::Drop => after_commit = Some((FaultKind::Drop, 0)),
            FaultKind::Malformed => {
                let mut r = no_store(json_response(StatusCode::OK, Value::Null));
                *r.body_mut() = axum::body::Body::from("{\"access_token\": \"trunc");
                return refresh_failure(&app, r, info);
            }
            FaultKind::NoAccessToken => {
                return refresh_failure(
                    &app,
                    no_store(json_response(
                        StatusCode::OK,
                        json!({ "token_type": "Bearer", "expires_in": 60 }),
                    )),
                    info,
                )
            }
            FaultKind::NoRefreshToken => rotate = false,
        }
    }

    let fresh = match Fresh::generate() {
        Ok(f) => f,
        Err(_) => return refresh_failure(&app, server_error(), info),
    };
    let (result, delay) = {
        let mut st = app.lock();
        let req = Presented {
            client_id: &client_id,
            scope: scope.as_deref(),
            via_cookie: from_cookie,
            dpop_jkt: dpop_jkt.as_deref(),
        };
        let result = st.refresh(&hash, fresh, rotate, &req);
        let mut delay = st.latency_for(&path);
        if let Some(d) = st.take_delay_next(&path) {
            delay = delay.saturating_add(d.ms);
        }
        (result, delay)
    };
    let grant = match result {
        Ok(g) => g,
        Err(e) => {
            info.outcome = Some(e.cause().to_string());
            {
                let mut st = app.lock();
                let d = &mut st.stats.dpop;
                match e {
                    RefreshError::DpopProofRequired => d.dpop_bound_refresh_refused_no_proof += 1,
                    RefreshError::DpopKeyMismatch => d.dpop_bound_refresh_refused_other_key += 1,
                    _ => {}
                }
                info.token_family = st.family_of(&hash);
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            return refresh_failure(&app, refresh_error(e), info);
        }
    };
    let mut ginfo = grant_info(Some(&presented), &grant);
    if let Some(o) = &info.outcome {
        ginfo.outcome = Some(format!("{}+{}", grant.kind.outcome(), o));
    }
    let waited = delay > 0;
    if waited {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match after_commit {
        Some((FaultKind::Drop, _)) => return dropped(ginfo),
        Some((_, hang_ms)) => {
            tokio::time::sleep(Duration::from_millis(hang_ms)).await;
            return dropped(ginfo);
        }
        None => {}
    }
    // Without a delay the decision above was atomic; after one, a family revoked meanwhile
    // (reuse detected elsewhere, logout) must win over this already-committed rotation.
    if waited && !app.lock().still_active(&grant.claims.fam) {
        ginfo.outcome = Some(RefreshError::RevokedInFlight.cause().to_string());
        return refresh_failure(&app, refresh_error(RefreshError::RevokedInFlight), ginfo);
    }
    app.lock().stats.refresh_ok += 1;
    // A cookie-mode client must not see the refresh token: it travels only in the cookie
    // (`token_response` leaves it out for cookie-mode families).
    let include_refresh = grant.kind != GrantKind::AccessOnly;
    with_info(token_response(&app, &grant, include_refresh), ginfo)
}

fn refresh_error(e: RefreshError) -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        e.error(),
        e.description(),
        e.cause(),
    )
}

pub fn fault_name(k: FaultKind) -> &'static str {
    match k {
        FaultKind::InvalidGrant => "invalid_grant",
        FaultKind::InvalidClient => "invalid_client",
        FaultKind::Unavailable => "unavailable",
        FaultKind::RateLimited => "rate_limited",
        FaultKind::ServerError => "server_error",
        FaultKind::Hang => "hang",
        FaultKind::Drop => "drop",
        FaultKind::Malformed => "malformed",
        FaultKind::NoAccessToken => "no_access_token",
        FaultKind::NoRefreshToken => "no_refresh_token",
    }
}

// ---------- POST /auth/revoke, POST /auth/logout ----------

/// A token from the body (`token`, RFC 7009, or `refresh_token`), else the cookie.
/// `Ok(None)` = neither; the flag says whether the cookie supplied it.
fn presented_token(
    params: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<Option<(String, bool)>, ParamError> {
    for name in ["token", "refresh_token"] {
        match string_param(params, name) {
            Ok(Some(t)) if !t.is_empty() => return Ok(Some((t.to_string(), false))),
            Ok(_) => {}
            Err(d) => return Err(ParamError::Request(d)),
        }
    }
    Ok(cookie_token(headers).map(|t| (t, true)))
}

/// The family a token belongs to: a refresh token of any state, or an access token with a
/// valid signature (expired or not: it still names the session to end).
fn family_of_token(app: &App, token: &str, info: &mut LogInfo) -> Option<String> {
    let hash = hash_token(token);
    if let Some(f) = app.lock().family_of(&hash) {
        info.refresh_token_hash_prefix = Some(hash_prefix(&hash));
        return Some(f);
    }
    // Refresh tokens are base64url and never contain a dot; only try JWTs.
    if token.contains('.') {
        if let Ok(c) = app.verify(token) {
            info.token_jti = Some(c.jti);
            info.token_generation = Some(c.gen);
            return Some(c.fam);
        }
    }
    None
}

/// RFC 7009 token revocation. Revoking any token of a family, refresh or access, ends the
/// whole family: later refreshes with any of its tokens get `invalid_grant`, and its access
/// tokens are refused at the API at once (the family state is checked on every request
/// anyway, so this costs nothing). Unknown and invalid tokens get the same 200 as a success
/// (§2.2), so the answer reveals nothing about the token.
pub async fn revoke(State(app): State<Arc<App>>, req: Request) -> Response {
    app.lock().stats.revoke_calls += 1;
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let params = match read_params(&parts.headers, body).await {
        Ok(p) => p,
        Err(e) => return no_store(e.response()),
    };
    // The hint only speeds up the lookup in RFC 7009; both lookups are cheap here, so any
    // value is accepted and ignored (§2.1 says to search all token types anyway).
    if let Err(d) = string_param(&params, "token_type_hint") {
        return invalid_request(&d);
    }
    let client_id = match client_id_param(&params) {
        Ok(c) => c,
        Err(e) => return e.response(),
    };
    let (token, from_cookie) = match presented_token(&params, &parts.headers) {
        Ok(Some(t)) => t,
        Ok(None) => return invalid_request("missing token (body or tb_refresh cookie)"),
        Err(e) => return e.response(),
    };
    if from_cookie && foreign_origin(&app, &parts.headers) {
        return origin_refused();
    }
    let mut info = LogInfo::default();
    let fam = family_of_token(&app, &token, &mut info);
    info.token_family = fam.clone();
    let (outcome, delay) = {
        let mut st = app.lock();
        let owner = fam
            .as_ref()
            .and_then(|f| st.families.get(f))
            .map(|f| f.client_id.clone());
        // RFC 7009 §2.1: a token issued to another client is refused. Only checked when the
        // request names a client: possession alone already lets a holder end the family.
        let refused = matches!((&client_id, &owner), (Some(c), Some(o)) if c != o);
        let outcome = match (&fam, refused) {
            (_, true) => "revoke_refused",
            (Some(f), false) if st.revoke_family(f, EndReason::Revocation) => {
                st.stats.revocations += 1;
                "revoked"
            }
            _ => "revoke_noop",
        };
        let delay = st
            .latency_for(&path)
            .saturating_add(st.take_delay_next(&path).map_or(0, |d| d.ms));
        (outcome, delay)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    info.outcome = Some(outcome.to_string());
    let mut resp = if outcome == "revoke_refused" {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "token was issued to another client",
            "client_mismatch",
        )
    } else {
        no_store(json_response(StatusCode::OK, json!({})))
    };
    if from_cookie && outcome != "revoke_refused" {
        clear_cookie(&mut resp);
    }
    with_info(resp, info)
}

/// Revokes like `/auth/revoke` and always clears the cookie. Kept apart from it for its
/// older contract: `{"revoked": bool}`, 200 even without any token, and a Bearer access token
/// as a last way to name the family.
pub async fn logout(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let params = match read_params(&parts.headers, body).await {
        Ok(p) => p,
        Err(e) => return no_store(e.response()),
    };
    let presented = match presented_token(&params, &parts.headers) {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    if presented.as_ref().is_some_and(|(_, cookie)| *cookie) && foreign_origin(&app, &parts.headers)
    {
        return origin_refused();
    }
    let mut info = LogInfo::default();
    let fam = match &presented {
        Some((t, _)) => family_of_token(&app, t, &mut info),
        // Either scheme names the family: ending a session needs no proof of possession, as
        // `/auth/revoke` with any of the family's tokens shows.
        None => {
            credentials(&parts.headers, true).and_then(|(_, t)| app.verify(&t).ok().map(|c| c.fam))
        }
    };
    info.token_family = fam.clone();
    let revoked = {
        let mut st = app.lock();
        let revoked = fam
            .map(|f| st.revoke_family(&f, EndReason::Logout))
            .unwrap_or(false);
        if revoked {
            st.stats.logouts += 1;
        }
        revoked
    };
    info.outcome = Some(if revoked { "logout" } else { "logout_noop" }.to_string());
    let mut resp = no_store(json_response(StatusCode::OK, json!({ "revoked": revoked })));
    // Same attributes as when set, or the browser keeps the old cookie.
    clear_cookie(&mut resp);
    with_info(resp, info)
}

// ---------- protected API ----------

/// The authentication scheme of a request, and of the challenge that answers it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    Dpop,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::Dpop => "DPoP",
        }
    }
}

/// The scheme and token of the `Authorization` header. `DPoP` counts only while DPoP is on;
/// otherwise it is a scheme like any other unknown one, which RFC 6750 answers as for none.
fn credentials(headers: &HeaderMap, dpop_on: bool) -> Option<(Scheme, String)> {
    let raw = headers.get(header::AUTHORIZATION)?;
    let raw = String::from_utf8_lossy(raw.as_bytes());
    let raw = raw.trim();
    let (scheme, rest) = raw.split_once(' ').unwrap_or((raw, ""));
    let token = rest.trim().to_string();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if dpop_on && scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

pub(crate) enum Auth {
    Ok(Claims),
    Missing,
    /// `invalid_token`, with the token's claims when its signature held.
    Invalid(&'static str, Option<Claims>),
    /// A DPoP refusal: the OAuth error (`invalid_dpop_proof` or `use_dpop_nonce`) and why.
    Proof(&'static str, &'static str, Option<Claims>),
}

fn proof_auth(r: Reject, claims: Claims) -> Auth {
    Auth::Proof(r.error(), r.description(), Some(claims))
}

/// Judges the request's token; the scheme says how to challenge it: as it came, except that
/// with DPoP required every challenge is a DPoP one. `/events` is judged here too.
pub(crate) fn authenticate(app: &App, parts: &Parts) -> (Auth, Scheme) {
    let mode = app.lock().rt.dpop;
    let creds = credentials(&parts.headers, mode != Mode::Off);
    let htu = dpop::expected_htu(&parts.headers, &parts.uri);
    judge_credentials(app, mode, creds, parts.method.as_str(), htu, |expect| {
        dpop::check(app, &parts.headers, expect)
    })
}

/// The resource server's rules for a token presented in `scheme`, wherever it came from (the
/// API and `/events` take it from `Authorization`, `/ws` from its handshake or auth message).
/// `proof` checks the DPoP proof that came with it against what it is given.
pub(crate) fn judge_credentials(
    app: &App,
    mode: Mode,
    creds: Option<(Scheme, String)>,
    method: &str,
    htu: String,
    proof: impl FnOnce(&Expect) -> Verdict,
) -> (Auth, Scheme) {
    let default_scheme = if mode == Mode::Required {
        Scheme::Dpop
    } else {
        Scheme::Bearer
    };
    let Some((scheme, token)) = creds else {
        return (Auth::Missing, default_scheme);
    };
    let answer = if scheme == Scheme::Dpop {
        Scheme::Dpop
    } else {
        default_scheme
    };
    let claims = match app.verify(&token) {
        Ok(c) => c,
        Err(e) => return (Auth::Invalid(e.description(), None), answer),
    };
    let bound = claims.cnf.as_ref().map(|c| c.jkt.clone());
    match (scheme, bound) {
        // RFC 9449 §7.2: a bound token without its proof is refused in every mode, also
        // with DPoP off, so a stolen bound token is worth nothing as a bearer token. The
        // token itself is fine, so the answer is about the proof: a refresh would not help.
        (Scheme::Bearer, Some(_)) => {
            app.lock().stats.dpop.dpop_bearer_downgrades += 1;
            let desc = "DPoP-bound access token presented as a bearer token";
            return (
                Auth::Proof("invalid_dpop_proof", desc, Some(claims)),
                Scheme::Dpop,
            );
        }
        (Scheme::Bearer, None) if mode == Mode::Required => {
            let desc = "DPoP required: bearer access tokens are not accepted";
            return (Auth::Invalid(desc, Some(claims)), Scheme::Dpop);
        }
        (Scheme::Bearer, None) => {}
        (Scheme::Dpop, None) => {
            let desc = "access token is not DPoP-bound";
            return (Auth::Invalid(desc, Some(claims)), Scheme::Dpop);
        }
        (Scheme::Dpop, Some(jkt)) => {
            let expect = Expect {
                role: Role::Rs,
                method,
                htu,
                access_token: Some(&token),
                bound_jkt: Some(&jkt),
            };
            match proof(&expect) {
                Verdict::Valid(_) => {}
                Verdict::Absent => {
                    dpop::count_missing(app, Role::Rs);
                    return (proof_auth(Reject::Missing, claims), Scheme::Dpop);
                }
                Verdict::Refused(r) => return (proof_auth(r, claims), Scheme::Dpop),
            }
        }
    }
    let auth = match app.lock().check_access(&claims) {
        Ok(()) => Auth::Ok(claims),
        Err(e) => Auth::Invalid(e.description(), Some(claims)),
    };
    (auth, answer)
}

fn www_authenticate(resp: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
}

pub(crate) fn unauthorized(auth: &Auth, scheme: Scheme) -> Response {
    match auth {
        Auth::Invalid(desc, _) => {
            let mut r = error_json(StatusCode::UNAUTHORIZED, "invalid_token", desc);
            www_authenticate(
                &mut r,
                &format!(
                    "{} error=\"invalid_token\", error_description=\"{desc}\"",
                    scheme.name()
                ),
            );
            r
        }
        Auth::Proof(error, desc, _) => dpop::rs_refusal(error, desc),
        _ => {
            let mut r = error_json(StatusCode::UNAUTHORIZED, "unauthorized", "no access token");
            let challenge = match scheme {
                Scheme::Bearer => "Bearer",
                Scheme::Dpop => "DPoP algs=\"ES256\"",
            };
            www_authenticate(&mut r, challenge);
            r
        }
    }
}

pub(crate) fn auth_info(auth: &Auth) -> LogInfo {
    let (claims, outcome) = match auth {
        Auth::Ok(c) => (Some(c), "ok".to_string()),
        Auth::Missing => (None, "no_token".to_string()),
        Auth::Invalid(d, c) => (c.as_ref(), format!("invalid_token: {d}")),
        Auth::Proof(e, d, c) => (c.as_ref(), format!("{e}: {d}")),
    };
    log_info(claims, outcome)
}

/// The request log's view of a token (never the token itself) and what became of the request.
pub(crate) fn log_info(claims: Option<&Claims>, outcome: String) -> LogInfo {
    LogInfo {
        token_jti: claims.map(|c| c.jti.clone()),
        token_generation: claims.map(|c| c.gen),
        token_family: claims.map(|c| c.fam.clone()),
        outcome: Some(outcome),
        ..LogInfo::default()
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Stats(&'static str, i64),
    Orders,
    Scoped,
    /// A GraphQL-style endpoint: a rejected token is a 200 with `errors[].extensions.code =
    /// "UNAUTHENTICATED"`, as Apollo Server and most GraphQL servers answer.
    Graphql,
}

/// The paths of the protected API (the DPoP resource server).
pub fn is_protected(path: &str) -> bool {
    endpoint_for(path).is_some()
}

fn endpoint_for(path: &str) -> Option<Endpoint> {
    Some(match path {
        "/statistics" => Endpoint::Stats("statistics", 42),
        "/other-statistics" => Endpoint::Stats("other-statistics", 7),
        "/event-more-statistics" => Endpoint::Stats("event-more-statistics", 13),
        "/final-statistics" => Endpoint::Stats("final-statistics", 99),
        "/orders" => Endpoint::Orders,
        "/scoped" => Endpoint::Scoped,
        "/graphql" => Endpoint::Graphql,
        _ => return None,
    })
}

/// All protected endpoints: the token is judged at arrival, the answer may be held back by
/// injected latency, so a test can receive a 401 "late", after a refresh has finished.
pub async fn protected(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let Some(endpoint) = endpoint_for(&path) else {
        return error_json(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let (parts, body) = req.into_parts();
    let (mut auth, scheme) = authenticate(&app, &parts);
    let (delay, forced) = {
        let mut st = app.lock();
        let next = st.take_delay_next(&path);
        let forced = st.always_401 || next.as_ref().and_then(|d| d.status) == Some(401);
        (
            st.latency_for(&path)
                .saturating_add(next.map_or(0, |d| d.ms)),
            forced,
        )
    };
    if forced {
        let claims = match auth {
            Auth::Ok(c) | Auth::Invalid(_, Some(c)) | Auth::Proof(_, _, Some(c)) => Some(c),
            _ => None,
        };
        auth = Auth::Invalid("rejected by test control", claims);
    }
    let mut info = auth_info(&auth);
    let resp = match (&auth, endpoint) {
        (Auth::Ok(c), Endpoint::Stats(name, value)) => {
            app.lock().stats.api_ok += 1;
            json_response(
                StatusCode::OK,
                json!({ "endpoint": name, "value": value, "sub": c.sub, "gen": c.gen, "at": crate::store::wall_ms() }),
            )
        }
        (Auth::Ok(c), Endpoint::Orders) => {
            let body = match read_json_value(&parts.headers, body).await {
                Ok(v) => v,
                Err(e) => return with_info(e.response(), info),
            };
            let key = parts
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut st = app.lock();
            let recorded = key.as_ref().and_then(|k| st.orders_by_key.get(k).cloned());
            let out = match recorded {
                Some(mut prev) => {
                    // Same Idempotency-Key: the side effect happened once already.
                    if let Some(o) = prev.as_object_mut() {
                        o.insert("replayed".into(), json!(true));
                    }
                    info.outcome = Some("order_replayed".into());
                    prev
                }
                None => {
                    let id = st.next_order_id;
                    st.next_order_id += 1;
                    st.stats.orders += 1;
                    let v = json!({ "order": body, "id": id, "sub": c.sub });
                    if let Some(k) = key {
                        st.orders_by_key.insert(k, v.clone());
                    }
                    info.outcome = Some("order_recorded".into());
                    v
                }
            };
            st.stats.api_ok += 1;
            json_response(StatusCode::OK, out)
        }
        (Auth::Ok(_), Endpoint::Scoped) => {
            let status = if query.split('&').any(|kv| kv == "status=403") {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            info.outcome = Some("insufficient_scope".into());
            let mut r = json_response(
                status,
                json!({ "error": "insufficient_scope", "error_description": "requires scope admin", "scope": "admin" }),
            );
            www_authenticate(
                &mut r,
                &format!(
                    "{} error=\"insufficient_scope\", error_description=\"requires scope admin\", scope=\"admin\"",
                    scheme.name()
                ),
            );
            r
        }
        (Auth::Ok(c), Endpoint::Graphql) => {
            app.lock().stats.api_ok += 1;
            json_response(StatusCode::OK, json!({ "data": { "statistics": { "value": 42, "sub": c.sub, "gen": c.gen } } }))
        }
        // A proof problem is an HTTP-level challenge the client's DPoP layer must see (a
        // nonce to retry with), so GraphQL gets the 401 too; token problems stay GraphQL's.
        (Auth::Proof(..), _) => unauthorized(&auth, scheme),
        (_, Endpoint::Graphql) => {
            app.lock().stats.graphql_unauthenticated += 1;
            info.outcome = Some("graphql_unauthenticated".into());
            json_response(
                StatusCode::OK,
                json!({ "data": null, "errors": [{ "message": "the access token is missing, expired or invalid", "extensions": { "code": "UNAUTHENTICATED" } }] }),
            )
        }
        _ => unauthorized(&auth, scheme),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    with_info(resp, info)
}

pub async fn forbidden() -> Response {
    error_json(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this endpoint always refuses",
    )
}

/// Unknown paths: static files when `--static` is given, JSON 404 otherwise.
pub async fn fallback(State(app): State<Arc<App>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if let Some(dir) = &app.cfg.static_dir {
        let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
        if is_read && !path.starts_with("/__control") {
            if let Some(r) = static_file(dir, &path).await {
                return r;
            }
        }
    }
    error_json(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {path}"),
    )
}
