//! DPoP (RFC 9449): proof checks (§4.3), key thumbprints (RFC 7638), server nonces (§8, §9)
//! and the `jti` replay cache, for the token endpoints (the AS) and the protected API (the RS).
//!
//! The proof's structure and signature are checked without the lock; nonce, `iat`, `jti`
//! and the counters in one locked step, so two copies of one proof cannot both pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::web::{error_json, json_response, no_store};

pub const HEADER: &str = "dpop";
pub const NONCE_HEADER: &str = "dpop-nonce";
/// Without a valid server nonce, `iat` must be this close to the server's clock (§11.1).
pub const IAT_WINDOW_MS: i64 = 60_000;
pub const MAX_JTI_LEN: usize = 128;
/// A P-256 proof is well under 1 KiB; refusing early bounds the work per request.
const MAX_PROOF_LEN: usize = 4 * 1024;
/// Replay-cache bound. Full, it first rotates the nonces (which forgets only what no longer
/// matters), then refuses new proofs rather than forget live ones: that would reopen the
/// replay window it exists to close.
const JTI_CACHE_CAP: usize = 100_000;

/// `--dpop`: `off` ignores `DPoP` headers (the server as it was), `optional` binds when a
/// proof comes along, `required` refuses token requests without one and bearer tokens at the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Off,
    Optional,
    Required,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Optional => "optional",
            Mode::Required => "required",
        }
    }

    pub fn parse(raw: &str) -> Result<Mode, String> {
        match raw.trim() {
            "off" => Ok(Mode::Off),
            "optional" => Ok(Mode::Optional),
            "required" => Ok(Mode::Required),
            other => Err(format!(
                "--dpop: '{other}' is not one of off, optional, required"
            )),
        }
    }

    /// Nonces are on by default exactly when DPoP is required: then every client meets the
    /// nonce dance from its first request, as with a strict production server.
    pub fn default_nonces(self) -> bool {
        self == Mode::Required
    }
}

/// Separate nonces for the authorization server and the resource server (§8, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    As,
    Rs,
}

impl Role {
    fn index(self) -> usize {
        match self {
            Role::As => 0,
            Role::Rs => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Role::As => "as",
            Role::Rs => "rs",
        }
    }
}

/// Why a proof was refused. `Iat` and `Nonce` are answered with `use_dpop_nonce` and a fresh
/// nonce, so a client with a skewed clock recovers in one retry (§11.1); the rest with
/// `invalid_dpop_proof`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    Missing,
    Malformed,
    Typ,
    Alg,
    Jwk,
    BadSignature,
    Htm,
    Htu,
    Iat,
    Nonce,
    JtiReplay,
    Ath,
    JktMismatch,
    JtiCacheFull,
}

impl Reject {
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Missing => "missing",
            Reject::Malformed => "malformed",
            Reject::Typ => "typ",
            Reject::Alg => "alg",
            Reject::Jwk => "jwk",
            Reject::BadSignature => "bad_signature",
            Reject::Htm => "htm",
            Reject::Htu => "htu",
            Reject::Iat => "iat",
            Reject::Nonce => "nonce",
            Reject::JtiReplay => "jti_replay",
            Reject::Ath => "ath",
            Reject::JktMismatch => "jkt_mismatch",
            Reject::JtiCacheFull => "jti_cache_full",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Reject::Missing => "DPoP proof required",
            Reject::Malformed => "malformed DPoP proof",
            Reject::Typ => "DPoP proof typ must be dpop+jwt",
            Reject::Alg => "DPoP proof alg must be ES256",
            Reject::Jwk => "DPoP proof jwk must be a public EC P-256 key",
            Reject::BadSignature => "DPoP proof signature invalid",
            Reject::Htm => "DPoP proof htm does not match the request method",
            Reject::Htu => "DPoP proof htu does not match the request URI",
            Reject::Iat => "DPoP proof iat outside the acceptable window; use the DPoP-Nonce",
            Reject::Nonce => "DPoP proof must carry the current DPoP-Nonce",
            Reject::JtiReplay => "DPoP proof jti already used",
            Reject::Ath => "DPoP proof ath does not match the access token",
            Reject::JktMismatch => "DPoP proof key does not match the access token binding",
            Reject::JtiCacheFull => "DPoP replay cache full; try again later",
        }
    }

    /// Answered with `use_dpop_nonce` (a retry with the nonce can pass) rather than a refusal.
    pub fn is_challenge(self) -> bool {
        matches!(self, Reject::Iat | Reject::Nonce)
    }

    /// The OAuth error code of the answer (RFC 9449 §5, §7.1, §8).
    pub fn error(self) -> &'static str {
        if self.is_challenge() {
            "use_dpop_nonce"
        } else {
            "invalid_dpop_proof"
        }
    }
}

/// DPoP counters, flattened into `GET /__control/stats` (flat numbers, so the browser
/// harness's before/after deltas see each one).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DpopStats {
    pub dpop_proofs_accepted: u64,
    /// Every refused proof, challenges included; the per-reason counts below add up to it.
    pub dpop_proofs_rejected: u64,
    pub dpop_rejected_missing: u64,
    pub dpop_rejected_malformed: u64,
    pub dpop_rejected_typ: u64,
    pub dpop_rejected_alg: u64,
    pub dpop_rejected_jwk: u64,
    pub dpop_rejected_bad_signature: u64,
    pub dpop_rejected_htm: u64,
    pub dpop_rejected_htu: u64,
    pub dpop_rejected_iat: u64,
    pub dpop_rejected_nonce: u64,
    pub dpop_rejected_jti_replay: u64,
    pub dpop_rejected_ath: u64,
    pub dpop_rejected_jkt_mismatch: u64,
    pub dpop_rejected_jti_cache_full: u64,
    /// `use_dpop_nonce` answers (reasons `iat` and `nonce`) from the token endpoints.
    pub dpop_nonce_challenges_as: u64,
    /// `use_dpop_nonce` answers from the protected API.
    pub dpop_nonce_challenges_rs: u64,
    /// Refreshes of a DPoP-bound family refused with `invalid_grant`: no proof, another key.
    pub dpop_bound_refresh_refused_no_proof: u64,
    pub dpop_bound_refresh_refused_other_key: u64,
    /// DPoP-bound access tokens presented as `Bearer` and refused.
    pub dpop_bearer_downgrades: u64,
    /// Distinct key thumbprints among accepted proofs.
    pub dpop_jkts: u64,
}

impl DpopStats {
    fn reject(&mut self, r: Reject, role: Role) {
        self.dpop_proofs_rejected += 1;
        let c = match r {
            Reject::Missing => &mut self.dpop_rejected_missing,
            Reject::Malformed => &mut self.dpop_rejected_malformed,
            Reject::Typ => &mut self.dpop_rejected_typ,
            Reject::Alg => &mut self.dpop_rejected_alg,
            Reject::Jwk => &mut self.dpop_rejected_jwk,
            Reject::BadSignature => &mut self.dpop_rejected_bad_signature,
            Reject::Htm => &mut self.dpop_rejected_htm,
            Reject::Htu => &mut self.dpop_rejected_htu,
            Reject::Iat => &mut self.dpop_rejected_iat,
            Reject::Nonce => &mut self.dpop_rejected_nonce,
            Reject::JtiReplay => &mut self.dpop_rejected_jti_replay,
            Reject::Ath => &mut self.dpop_rejected_ath,
            Reject::JktMismatch => &mut self.dpop_rejected_jkt_mismatch,
            Reject::JtiCacheFull => &mut self.dpop_rejected_jti_cache_full,
        };
        *c += 1;
        if r.is_challenge() {
            match role {
                Role::As => self.dpop_nonce_challenges_as += 1,
                Role::Rs => self.dpop_nonce_challenges_rs += 1,
            }
        }
    }
}

// ---------- the proof itself ----------

/// A proof whose structure and signature are good; the request-bound checks come next.
#[derive(Clone, Debug)]
pub struct Proof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key, base64url.
    pub jkt: String,
    pub jti: String,
    pub htm: String,
    pub htu: String,
    pub iat_ms: i64,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct JoseHeader {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Value>,
}

#[derive(Deserialize)]
struct Payload {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

fn b64(part: &str) -> Result<Vec<u8>, Reject> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Reject::Malformed)
}

/// A required string claim; anything else is a malformed proof.
fn string_claim(v: Option<Value>) -> Result<String, Reject> {
    match v {
        Some(Value::String(s)) => Ok(s),
        _ => Err(Reject::Malformed),
    }
}

fn optional_string(v: Option<Value>) -> Result<Option<String>, Reject> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reject::Malformed),
    }
}

/// The public key of a `jwk` header: exactly an EC P-256 public key. A `d` member means the
/// client leaked its private key into the proof, so the key is refused outright.
fn public_key(jwk: &Value) -> Result<(VerifyingKey, String), Reject> {
    let obj = jwk.as_object().ok_or(Reject::Jwk)?;
    if obj.contains_key("d") {
        return Err(Reject::Jwk);
    }
    let field = |name: &str| obj.get(name).and_then(Value::as_str).ok_or(Reject::Jwk);
    if field("kty")? != "EC" || field("crv")? != "P-256" {
        return Err(Reject::Jwk);
    }
    let (x, y) = (field("x")?, field("y")?);
    let xb = URL_SAFE_NO_PAD.decode(x).map_err(|_| Reject::Jwk)?;
    let yb = URL_SAFE_NO_PAD.decode(y).map_err(|_| Reject::Jwk)?;
    if xb.len() != 32 || yb.len() != 32 {
        return Err(Reject::Jwk);
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&xb);
    sec1.extend_from_slice(&yb);
    // Rejects points off the curve, so an invalid-curve key never reaches verification.
    let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| Reject::Jwk)?;
    // The strict base64 decoder refuses non-canonical encodings, so `x` and `y` as sent are
    // the canonical members the thumbprint is defined over.
    Ok((key, thumbprint(x, y)))
}

/// RFC 7638 thumbprint of an EC key: SHA-256 over the required members in lexicographic order.
pub fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// `ath`: base64url SHA-256 of the access token (§4.2).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Structure, header and signature of a compact JWS proof (§4.3 checks 1–7).
pub fn parse(jws: &str) -> Result<Proof, Reject> {
    if jws.is_empty() || jws.len() > MAX_PROOF_LEN {
        return Err(Reject::Malformed);
    }
    let mut parts = jws.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(Reject::Malformed),
    };
    let header: JoseHeader = serde_json::from_slice(&b64(h)?).map_err(|_| Reject::Malformed)?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(Reject::Typ);
    }
    // Only ES256, what WebCrypto's non-extractable P-256 keys make: `none`, HS256 and friends
    // never get as far as a key.
    if header.alg.as_deref() != Some("ES256") {
        return Err(Reject::Alg);
    }
    let (key, jkt) = public_key(header.jwk.as_ref().ok_or(Reject::Jwk)?)?;
    // JWS ES256 signatures are raw r||s (64 bytes), as WebCrypto produces, not DER.
    let sig = Signature::from_slice(&b64(s)?).map_err(|_| Reject::BadSignature)?;
    let signing_input = &jws[..h.len() + 1 + p.len()];
    key.verify(signing_input.as_bytes(), &sig)
        .map_err(|_| Reject::BadSignature)?;
    let payload: Payload = serde_json::from_slice(&b64(p)?).map_err(|_| Reject::Malformed)?;
    let jti = string_claim(payload.jti)?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(Reject::Malformed);
    }
    // NumericDate: WebCrypto clients send whole seconds, but fractions are legal JWT.
    let iat = match payload.iat {
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite() && v.abs() < 1.0e13),
        _ => None,
    }
    .ok_or(Reject::Malformed)?;
    Ok(Proof {
        jkt,
        jti,
        htm: string_claim(payload.htm)?,
        htu: string_claim(payload.htu)?,
        iat_ms: (iat * 1000.0).round() as i64,
        ath: optional_string(payload.ath)?,
        nonce: optional_string(payload.nonce)?,
    })
}

/// `scheme://authority` lower-cased without a default port, and the path; `None` when the URI
/// has a query or fragment (which `htu` must not carry) or no scheme.
fn normalize_htu(uri: &str) -> Option<(String, String)> {
    if uri.contains(['?', '#']) {
        return None;
    }
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let mut authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if authority.ends_with(default_port) {
        authority.truncate(authority.len() - default_port.len());
    }
    Some((format!("{scheme}://{authority}"), path.to_string()))
}

/// The URI a client asked for, as it would write `htu`: `http://{Host}{path}`. The server
/// speaks plain HTTP; a proxy in front that terminates TLS says so with `X-Forwarded-Proto`.
pub fn expected_htu(headers: &HeaderMap, uri: &Uri) -> String {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}{}", uri.path())
}

fn htu_matches(claim: &str, expected: &str) -> bool {
    match (normalize_htu(claim), normalize_htu(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

// ---------- nonces and the replay cache (state under the App mutex) ----------

/// What a proof is checked against: the request it came with.
pub struct Expect<'a> {
    pub role: Role,
    pub method: &'a str,
    pub htu: String,
    /// At the RS: the access token the proof must hash in `ath`.
    pub access_token: Option<&'a str>,
    /// At the RS: the token's `cnf.jkt`, which the proof's key must match.
    pub bound_jkt: Option<&'a str>,
}

/// How long a remembered `jti` matters: until the proof's `iat` leaves the window, or, for a
/// proof accepted on a nonce, until that nonce is rotated away (then the proof fails anyway).
#[derive(Clone, Copy)]
enum Keep {
    Until(i64),
    Nonce(Role),
}

pub struct DpopState {
    /// Current nonce generation per role; the nonce itself is derived from the server key.
    gens: [u64; 2],
    /// When each generation began (server clock), for the optional rotation timer.
    since_ms: [i64; 2],
    jtis: HashMap<String, Keep>,
    /// Time-bound entries in arrival order (their deadlines are within two windows of each
    /// other, so pruning from the front is close enough to exact).
    by_time: VecDeque<(i64, String)>,
    /// Nonce-bound entries per role, dropped when that role's nonce rotates.
    by_nonce: [Vec<String>; 2],
    pub jkts: HashSet<String>,
    cap: usize,
}

impl DpopState {
    /// `gens` carries over across `/__control/reset`: a nonce handed out before a reset must
    /// not become valid again after it.
    pub fn new(gens: [u64; 2], now: i64) -> DpopState {
        DpopState {
            gens,
            since_ms: [now; 2],
            jtis: HashMap::new(),
            by_time: VecDeque::new(),
            by_nonce: [Vec::new(), Vec::new()],
            jkts: HashSet::new(),
            cap: JTI_CACHE_CAP,
        }
    }

    pub fn next_gens(&self) -> [u64; 2] {
        [self.gens[0] + 1, self.gens[1] + 1]
    }

    pub fn rotate(&mut self, role: Role, now: i64) {
        let i = role.index();
        self.gens[i] += 1;
        self.since_ms[i] = now;
        for key in std::mem::take(&mut self.by_nonce[i]) {
            self.jtis.remove(&key);
        }
    }

    /// The current generation, first rotating when the optional timer says so.
    pub fn generation(&mut self, role: Role, now: i64, every: Option<f64>) -> u64 {
        let i = role.index();
        if let Some(s) = every.filter(|s| *s > 0.0) {
            if now - self.since_ms[i] >= crate::store::secs_to_ms(s) {
                self.rotate(role, now);
            }
        }
        self.gens[i]
    }

    pub fn jti_cache_len(&self) -> usize {
        self.jtis.len()
    }

    fn prune(&mut self, now: i64) {
        while let Some((until, _)) = self.by_time.front() {
            if *until >= now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_front() {
                // Only if still time-bound: the same key may have been re-used under a nonce.
                if matches!(self.jtis.get(&key), Some(Keep::Until(u)) if *u < now) {
                    self.jtis.remove(&key);
                }
            }
        }
    }

    /// Remembers a `jti` (per key: two clients may pick the same one).
    fn remember(&mut self, key: String, keep: Keep, now: i64) -> Result<(), Reject> {
        self.prune(now);
        if self.jtis.contains_key(&key) {
            return Err(Reject::JtiReplay);
        }
        if self.jtis.len() >= self.cap {
            // Entries kept for a nonce live as long as it does, which without the timer is
            // forever. Rotating both nonces forgets them safely (their proofs now fail the
            // nonce check) at the price of one challenge per client.
            self.rotate(Role::As, now);
            self.rotate(Role::Rs, now);
        }
        if self.jtis.len() >= self.cap {
            return Err(Reject::JtiCacheFull);
        }
        match keep {
            Keep::Until(t) => self.by_time.push_back((t, key.clone())),
            Keep::Nonce(r) => self.by_nonce[r.index()].push(key.clone()),
        }
        self.jtis.insert(key, keep);
        Ok(())
    }
}

/// The nonce of a role's generation: an HMAC under the server key, so nothing random is
/// needed under the lock and no client can predict the next one.
pub fn derive_nonce(key: &[u8], role: Role, gen: u64) -> String {
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(b"dpop-nonce/");
    m.update(role.label().as_bytes());
    m.update(&gen.to_be_bytes());
    URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..24])
}

/// The result of looking at a request's `DPoP` header.
pub enum Verdict {
    Absent,
    Valid(Proof),
    Refused(Reject),
}

/// §4.3 in full. Counts the outcome; an absent header is left to the caller, which alone
/// knows whether a proof was required.
pub fn check(app: &App, headers: &HeaderMap, expect: &Expect) -> Verdict {
    settle(app, judge(app, headers, expect), expect.role)
}

/// [`check`] for a proof that cannot come as a header: a browser's WebSocket handshake carries
/// none, so `/ws` takes it from the auth message.
pub fn check_value(app: &App, proof: Option<&str>, expect: &Expect) -> Verdict {
    let result = proof.map(|p| parse(p).and_then(|p| request_bound(app, p, expect)));
    settle(app, result, expect.role)
}

fn settle(app: &App, result: Option<Result<Proof, Reject>>, role: Role) -> Verdict {
    let mut st = app.lock();
    match result {
        None => Verdict::Absent,
        Some(Ok(p)) => {
            st.stats.dpop.dpop_proofs_accepted += 1;
            if st.dpop.jkts.insert(p.jkt.clone()) {
                st.stats.dpop.dpop_jkts = st.dpop.jkts.len() as u64;
            }
            Verdict::Valid(p)
        }
        Some(Err(r)) => {
            st.stats.dpop.reject(r, role);
            Verdict::Refused(r)
        }
    }
}

/// Counts a proof that was required and not sent.
pub fn count_missing(app: &App, role: Role) {
    app.lock().stats.dpop.reject(Reject::Missing, role);
}

fn judge(app: &App, headers: &HeaderMap, expect: &Expect) -> Option<Result<Proof, Reject>> {
    let mut values = headers.get_all(HEADER).iter();
    let first = values.next()?;
    // Exactly one header (§4.3 check 1): two could smuggle a second proof past a proxy.
    if values.next().is_some() {
        return Some(Err(Reject::Malformed));
    }
    Some(
        first
            .to_str()
            .map_err(|_| Reject::Malformed)
            .and_then(parse)
            .and_then(|p| request_bound(app, p, expect)),
    )
}

fn request_bound(app: &App, p: Proof, expect: &Expect) -> Result<Proof, Reject> {
    if p.htm != expect.method {
        return Err(Reject::Htm);
    }
    if !htu_matches(&p.htu, &expect.htu) {
        return Err(Reject::Htu);
    }
    if let Some(token) = expect.access_token {
        if p.ath.as_deref() != Some(ath(token).as_str()) {
            return Err(Reject::Ath);
        }
    }
    if expect.bound_jkt.is_some_and(|j| j != p.jkt) {
        return Err(Reject::JktMismatch);
    }
    let mut st = app.lock();
    let now = st.now();
    let every = st.rt.dpop_nonce_rotate;
    let gen = st.dpop.generation(expect.role, now, every);
    let keep = match &p.nonce {
        // A nonce is judged whether or not nonces are switched on: the `iat` challenge hands
        // one out even then, and a stale one must not pass as fresh.
        Some(n) if *n == app.nonce(expect.role, gen) => Keep::Nonce(expect.role),
        Some(_) => return Err(Reject::Nonce),
        None if st.rt.dpop_nonces => return Err(Reject::Nonce),
        // With a valid nonce freshness comes from the nonce, so a client clock that is
        // minutes off still passes on the retry (§11.1, adversarial case 34).
        None if (p.iat_ms - now).abs() > IAT_WINDOW_MS => return Err(Reject::Iat),
        None => Keep::Until(p.iat_ms.max(now) + IAT_WINDOW_MS),
    };
    st.dpop
        .remember(format!("{}.{}", p.jkt, p.jti), keep, now)?;
    Ok(p)
}

// ---------- answers ----------

/// Marks a `use_dpop_nonce` answer, so [`nonce_mw`] attaches the nonce even with nonces off.
#[derive(Clone, Copy, Debug)]
pub struct Challenge;

/// The token endpoint's answer to a refused proof (§5, §8): 400 `invalid_dpop_proof` or
/// `use_dpop_nonce`, with `cause: "dpop_<reason>"` like the server's other token errors.
pub fn as_refusal(r: Reject) -> Response {
    let mut resp = no_store(json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "error": r.error(),
            "error_description": r.description(),
            "cause": format!("dpop_{}", r.reason()),
        }),
    ));
    if r.is_challenge() {
        resp.extensions_mut().insert(Challenge);
    }
    resp
}

/// The API's answer (§7.1, §9): 401 `WWW-Authenticate: DPoP error="…", error_description="…"`.
pub fn rs_refusal(error: &str, description: &str) -> Response {
    let mut resp = error_json(StatusCode::UNAUTHORIZED, error, description);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "DPoP error=\"{error}\", error_description=\"{description}\""
    )) {
        resp.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, v);
    }
    if error == "use_dpop_nonce" {
        resp.extensions_mut().insert(Challenge);
    }
    resp
}

/// Which nonce a path's answers carry: the token endpoints the AS nonce, the protected API and
/// `/events` the RS nonce. `/ws` gets none here: a browser cannot read a handshake's headers, so
/// its nonce goes in the close that challenges the proof (see `realtime`).
fn role_for(path: &str) -> Option<Role> {
    match path {
        "/auth/login" | "/auth/refresh-token" => Some(Role::As),
        "/events" => Some(Role::Rs),
        p if crate::api::is_protected(p) => Some(Role::Rs),
        _ => None,
    }
}

/// Adds `DPoP-Nonce: <current>` to every AS and RS answer, 200s and errors alike, while
/// nonces are on (§8.2: clients pick up new nonces from any response), and to every
/// `use_dpop_nonce` answer in any case.
pub async fn nonce_mw(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let role = role_for(req.uri().path());
    let mut resp = next.run(req).await;
    let Some(role) = role else { return resp };
    let name = HeaderName::from_static(NONCE_HEADER);
    if resp.headers().contains_key(&name) {
        return resp;
    }
    let challenged = resp.extensions().get::<Challenge>().is_some();
    let gen = {
        let mut st = app.lock();
        if st.rt.dpop == Mode::Off || !(st.rt.dpop_nonces || challenged) {
            return resp;
        }
        let (now, every) = (st.now(), st.rt.dpop_nonce_rotate);
        st.dpop.generation(role, now, every)
    };
    if let Ok(v) = HeaderValue::from_str(&app.nonce(role, gen)) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// The current nonces, for `GET /__control/dpop`.
pub fn current_nonces(app: &App) -> (String, String) {
    let (a, r) = {
        let mut st = app.lock();
        let (now, every) = (st.now(), st.rt.dpop_nonce_rotate);
        (
            st.dpop.generation(Role::As, now, every),
            st.dpop.generation(Role::Rs, now, every),
        )
    };
    (app.nonce(Role::As, a), app.nonce(Role::Rs, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 32]).expect("valid scalar")
    }

    fn jwk(k: &SigningKey) -> Value {
        let p = k.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(p.x().expect("x")),
            "y": URL_SAFE_NO_PAD.encode(p.y().expect("y")),
        })
    }

    fn signing_input(k: &SigningKey) -> String {
        let h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk(k)});
        let p = json!({"jti": "j1", "htm": "GET", "htu": "http://h/x", "iat": 1});
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(p.to_string())
        )
    }

    #[test]
    fn high_s_signatures_verify_as_webcrypto_makes_them() {
        // WebCrypto does not normalise s; a verifier that insists on low-S would refuse about
        // half of all browser proofs.
        let k = key();
        let input = signing_input(&k);
        let sig: Signature = k.sign(input.as_bytes());
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(*r, -*s).expect("n - s is a valid scalar");
        for sig in [sig, high] {
            let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
            assert!(parse(&jws).is_ok());
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example_shape() {
        // Independent of member order in the proof: the canonical JSON is fixed.
        let k = key();
        let j = jwk(&k);
        let t = thumbprint(j["x"].as_str().unwrap_or(""), j["y"].as_str().unwrap_or(""));
        assert_eq!(t.len(), 43);
    }

    #[test]
    fn htu_compares_scheme_and_host_case_insensitively_and_drops_default_ports() {
        assert!(htu_matches(
            "HTTP://Example.test:80/a",
            "http://example.test/a"
        ));
        assert!(!htu_matches(
            "http://example.test/a?q=1",
            "http://example.test/a"
        ));
        assert!(!htu_matches(
            "http://example.test/A",
            "http://example.test/a"
        ));
        assert!(!htu_matches(
            "https://example.test/a",
            "http://example.test/a"
        ));
        assert!(!htu_matches(
            "http://example.test:8080/a",
            "http://example.test/a"
        ));
    }

    #[test]
    fn the_replay_cache_forgets_only_what_can_no_longer_pass() {
        let mut d = DpopState::new([1, 1], 0);
        d.cap = 3;
        let until = |k: &str, t| (k.to_string(), Keep::Until(t));
        for (key, keep) in [until("a", 100), until("b", 200)] {
            assert_eq!(d.remember(key, keep, 0), Ok(()));
        }
        assert_eq!(
            d.remember("a".into(), Keep::Until(100), 50),
            Err(Reject::JtiReplay)
        );
        // Past its deadline an entry goes: its proof fails the iat check by then.
        assert_eq!(d.remember("a".into(), Keep::Until(300), 150), Ok(()));
        assert_eq!(d.remember("n".into(), Keep::Nonce(Role::Rs), 150), Ok(()));
        // Full: the nonces rotate, which drops "n"; the time-bound ones stay.
        assert_eq!(d.remember("c".into(), Keep::Until(400), 150), Ok(()));
        assert_eq!(d.gens, [2, 2]);
        assert_eq!(
            d.remember("b".into(), Keep::Until(400), 160),
            Err(Reject::JtiReplay)
        );
        assert_eq!(
            d.remember("d".into(), Keep::Until(400), 160),
            Err(Reject::JtiCacheFull)
        );
        // A rotation by hand drops that role's nonce-bound entries only.
        let mut d = DpopState::new([1, 1], 0);
        d.remember("x".into(), Keep::Nonce(Role::As), 0).ok();
        d.remember("y".into(), Keep::Nonce(Role::Rs), 0).ok();
        d.rotate(Role::As, 1);
        assert_eq!(d.jti_cache_len(), 1);
        assert_eq!(
            d.remember("y".into(), Keep::Nonce(Role::Rs), 2),
            Err(Reject::JtiReplay)
        );
    }

    #[test]
    fn nonces_differ_per_role_and_generation() {
        let a = derive_nonce(b"k", Role::As, 1);
        assert_ne!(a, derive_nonce(b"k", Role::Rs, 1));
        assert_ne!(a, derive_nonce(b"k", Role::As, 2));
        assert_eq!(a, derive_nonce(b"k", Role::As, 1));
    }
}
