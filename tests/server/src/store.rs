//! In-memory token state. Every method runs with the `App` mutex held by the caller, so
//! each one is a single atomic step: rotation is a compare-and-set `active -> rotated`
//! together with the successor's issuance, and nothing here ever awaits.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::dpop::{DpopState, DpopStats, Mode};
use crate::jwt::{Claims, Cnf, ISSUER};

pub type Hash = [u8; 32];

pub fn hash_token(token: &str) -> Hash {
    Sha256::digest(token.as_bytes()).into()
}

/// Short hex prefix of a hash: enough to correlate log lines, useless to an attacker.
pub fn hash_prefix(h: &Hash) -> String {
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn secs_to_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// Settings that tests may change at run time through `/__control/config`.
#[derive(Clone, Debug, Serialize)]
pub struct Runtime {
    pub access_ttl: f64,
    pub grace: f64,
    pub grace_max_uses: u32,
    pub family_lifetime: f64,
    pub idle_timeout: Option<f64>,
    pub expose_www_authenticate: bool,
    pub expose_dpop_nonce: bool,
    pub dpop: Mode,
    /// Proofs must carry the current server nonce (RFC 9449 §8, §9).
    pub dpop_nonces: bool,
    /// Seconds after which a nonce rotates by itself (checked lazily); `None` = only on
    /// `POST /__control/dpop`.
    pub dpop_nonce_rotate: Option<f64>,
}

impl Runtime {
    pub fn from_config(c: &Config) -> Runtime {
        Runtime {
            access_ttl: c.access_ttl,
            grace: c.grace,
            grace_max_uses: c.grace_max_uses,
            family_lifetime: c.family_lifetime,
            idle_timeout: c.idle_timeout,
            expose_www_authenticate: c.expose_www_authenticate,
            expose_dpop_nonce: c.expose_dpop_nonce,
            dpop: c.dpop,
            dpop_nonces: c.dpop_nonces.unwrap_or(c.dpop.default_nonces()),
            dpop_nonce_rotate: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyState {
    Active,
    Revoked,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    ReuseDetected,
    Logout,
    /// `/auth/revoke` (RFC 7009).
    Revocation,
    Control,
    AbsoluteLifetime,
    IdleTimeout,
}

#[derive(Clone, Debug, Serialize)]
pub struct Family {
    pub id: String,
    pub sub: String,
    pub created_ms: i64,
    /// Fixed at login; rotation never moves it.
    pub expires_ms: i64,
    pub last_used_ms: i64,
    pub state: FamilyState,
    pub reason: Option<EndReason>,
    pub ended_ms: Option<i64>,
    /// Generation of the newest refresh token in the family.
    pub generation: u64,
    /// Every token of the family is bound to this client (RFC 6749 §6).
    pub client_id: String,
    /// The scope granted at login, space-separated. Refreshes may narrow the access token's
    /// scope, never this one: a rotated refresh token keeps the original grant (RFC 6749 §6).
    pub scope: String,
    /// Cookie mode: the refresh token travels only in the `tb_refresh` cookie, never in JSON.
    pub cookie_mode: bool,
    /// DPoP key thumbprint the family is bound to (RFC 9449 §5): set by a login with a proof,
    /// or by the first refresh with one; from then on every refresh needs a proof with it.
    pub dpop_jkt: Option<String>,
    #[serde(skip)]
    pub members: Vec<Hash>,
}

/// What a login binds its new family to.
#[derive(Clone, Debug)]
pub struct Binding {
    pub client_id: String,
    /// Already validated and de-duplicated.
    pub scope: Vec<String>,
    pub cookie_mode: bool,
    /// The thumbprint of the login's DPoP proof, if it had one.
    pub dpop_jkt: Option<String>,
}

/// The parts of a family an access token is stamped with (copied out of the map so the
/// state can be borrowed mutably again).
pub struct FamView {
    pub id: String,
    pub sub: String,
    pub client_id: String,
    pub generation: u64,
    pub expires_ms: i64,
    pub cookie_mode: bool,
}

impl FamView {
    fn of(f: &Family) -> FamView {
        FamView {
            id: f.id.clone(),
            sub: f.sub.clone(),
            client_id: f.client_id.clone(),
            generation: f.generation,
            expires_ms: f.expires_ms,
            cookie_mode: f.cookie_mode,
        }
    }
}

/// What a refresh request says about itself, checked against the family's `Binding`.
#[derive(Clone, Copy, Debug)]
pub struct Presented<'a> {
    pub client_id: &'a str,
    /// `None` = the scope originally granted.
    pub scope: Option<&'a [String]>,
    pub via_cookie: bool,
    /// The thumbprint of the request's valid DPoP proof, if it had one.
    pub dpop_jkt: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RtState {
    Active,
    Rotated,
    Revoked,
}

#[derive(Clone, Debug)]
pub struct RtRecord {
    pub family: String,
    pub parent: Option<Hash>,
    pub successor: Option<Hash>,
    pub state: RtState,
    pub generation: u64,
    pub issued_ms: i64,
    pub rotated_at: Option<i64>,
    /// End of this token's grace window, fixed when it was rotated.
    pub grace_until: Option<i64>,
    pub grace_uses: u32,
    /// The successor's plaintext, kept only while a grace replay could still return it.
    pub successor_plain: Option<String>,
}

/// Random material made before the lock is taken, so a failure to make it cannot leave a
/// half-done rotation behind.
pub struct Fresh {
    pub refresh: String,
    pub refresh_hash: Hash,
    pub jti: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantKind {
    Login,
    Rotated,
    GraceReplay,
    AccessOnly,
}

impl GrantKind {
    pub fn outcome(self) -> &'static str {
        match self {
            GrantKind::Login => "login",
            GrantKind::Rotated => "rotated",
            GrantKind::GraceReplay => "grace_replay",
            GrantKind::AccessOnly => "access_only",
        }
    }
}

pub struct Grant {
    pub kind: GrantKind,
    pub claims: Claims,
    pub refresh_token: Option<String>,
    pub refresh_hash: Option<Hash>,
    pub expires_in: f64,
    pub family_expires_ms: i64,
    pub now_ms: i64,
    /// Whether the refresh token goes into the cookie (and stays out of the JSON).
    pub cookie_mode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshError {
    Unknown,
    ClientMismatch,
    ChannelMismatch,
    ScopeNotGranted,
    ReuseDetected,
    FamilyRevoked,
    FamilyExpired,
    IdleTimeout,
    RevokedInFlight,
    /// A DPoP-bound family refreshed without a proof.
    DpopProofRequired,
    /// A DPoP-bound family refreshed with a proof by another key.
    DpopKeyMismatch,
}

impl RefreshError {
    /// The OAuth `error` code (RFC 6749 §5.2).
    pub fn error(self) -> &'static str {
        match self {
            RefreshError::ScopeNotGranted => "invalid_scope",
            _ => "invalid_grant",
        }
    }

    /// Machine-readable cause, also returned as `cause` in the error body.
    pub fn cause(self) -> &'static str {
        match self {
            RefreshError::Unknown => "unknown_token",
            RefreshError::ClientMismatch => "client_mismatch",
            RefreshError::ChannelMismatch => "channel_mismatch",
            RefreshError::ScopeNotGranted => "scope_not_granted",
            RefreshError::ReuseDetected => "reuse_detected",
            RefreshError::FamilyRevoked => "family_revoked",
            RefreshError::FamilyExpired => "family_expired",
            RefreshError::IdleTimeout => "idle_timeout",
            RefreshError::RevokedInFlight => "revoked_in_flight",
            RefreshError::DpopProofRequired => "dpop_proof_required",
            RefreshError::DpopKeyMismatch => "dpop_key_mismatch",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            RefreshError::Unknown => "unknown refresh token",
            RefreshError::ClientMismatch => "refresh token was issued to another client",
            RefreshError::ChannelMismatch => {
                "refresh token presented through the wrong channel (cookie-mode tokens only in the cookie, others only in the body)"
            }
            RefreshError::ScopeNotGranted => {
                "requested scope exceeds the scope originally granted"
            }
            RefreshError::ReuseDetected => {
                "refresh token reuse detected: the token family has been revoked"
            }
            RefreshError::FamilyRevoked => "refresh token family revoked",
            RefreshError::FamilyExpired => "refresh token family expired (absolute lifetime)",
            RefreshError::IdleTimeout => "refresh token family expired (idle timeout)",
            RefreshError::RevokedInFlight => {
                "refresh token family revoked while this refresh was in flight"
            }
            RefreshError::DpopProofRequired => {
                "refresh token is DPoP-bound: a DPoP proof with its key is required"
            }
            RefreshError::DpopKeyMismatch => {
                "refresh token is DPoP-bound to another key"
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    UnknownFamily,
    FamilyRevoked,
    Expired,
}

impl AccessError {
    pub fn description(self) -> &'static str {
        match self {
            AccessError::UnknownFamily => "access token from an unknown session",
            AccessError::FamilyRevoked => "access token family revoked",
            AccessError::Expired => "access token expired",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub logins: u64,
    pub login_failures: u64,
    pub refresh_calls: u64,
    pub refresh_ok: u64,
    pub refresh_errors: u64,
    pub reuse_detections: u64,
    pub revoked_families: u64,
    pub unauthorized_sent: u64,
    /// `/graphql` answers that carried an UNAUTHENTICATED error inside a 200.
    pub graphql_unauthenticated: u64,
    pub api_ok: u64,
    pub orders: u64,
    pub foreign_auth_headers: u64,
    pub grace_replays: u64,
    pub faults_injected: u64,
    pub logouts: u64,
    /// Families revoked through `/auth/revoke` (RFC 7009).
    pub revocations: u64,
    /// Every `/auth/revoke` request, including no-ops and refusals.
    pub revoke_calls: u64,
    #[serde(flatten)]
    pub dpop: DpopStats,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Foreign {
    pub requests: u64,
    pub preflights: u64,
    pub with_authorization: u64,
    pub last_authorization: Option<String>,
    pub last_path: Option<String>,
    /// Requests whose body mentions `refresh_token` (a token POST that followed a redirect here).
    pub bodies_with_refresh_token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    InvalidGrant,
    InvalidClient,
    Unavailable,
    RateLimited,
    ServerError,
    Hang,
    Drop,
    Malformed,
    NoAccessToken,
    NoRefreshToken,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub remaining: u32,
    pub retry_after: u64,
    /// Cap for `hang`.
    pub ms: u64,
    /// For `hang`/`drop`: rotate first, then fail to answer.
    pub commit: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DelayNext {
    pub ms: u64,
    pub status: Option<u16>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LogEntry {
    pub id: u64,
    /// Arrival, epoch ms (wall clock, not the test clock).
    pub t_ms: i64,
    pub done_ms: Option<i64>,
    pub method: String,
    pub path: String,
    /// 0 = no answer (yet): hanging, dropped, or abandoned by the client.
    pub status: u16,
    pub authorization_present: bool,
    pub token_jti: Option<String>,
    pub token_generation: Option<u64>,
    pub token_family: Option<String>,
    pub refresh_token_hash_prefix: Option<String>,
    pub outcome: Option<String>,
    pub issued_jti: Option<String>,
    pub issued_generation: Option<u64>,
    pub issued_refresh_hash_prefix: Option<String>,
    #[serde(skip)]
    pub hidden: bool,
}

/// What a handler tells the request log about itself (carried in response extensions).
#[derive(Clone, Debug, Default)]
pub struct LogInfo {
    pub token_jti: Option<String>,
    pub token_generation: Option<u64>,
    pub token_family: Option<String>,
    pub refresh_token_hash_prefix: Option<String>,
    pub outcome: Option<String>,
    pub issued_jti: Option<String>,
    pub issued_generation: Option<u64>,
    pub issued_refresh_hash_prefix: Option<String>,
    pub skip: bool,
}

const LOG_CAP: usize = 20_000;

pub struct State {
    pub rt: Runtime,
    pub clock_offset_ms: i64,
    pub families: HashMap<String, Family>,
    pub tokens: HashMap<Hash, RtRecord>,
    /// (expiry, token) pairs whose stored successor plaintext must be forgotten.
    plain_expiry: VecDeque<(i64, Hash)>,
    pub stats: Stats,
    pub foreign: Foreign,
    log: VecDeque<LogEntry>,
    next_log_id: u64,
    pub faults: VecDeque<Fault>,
    pub latency: HashMap<String, u64>,
    pub delay_next: HashMap<String, VecDeque<DelayNext>>,
    pub always_401: bool,
    pub orders_by_key: HashMap<String, Value>,
    pub next_order_id: u64,
    pub dpop: DpopState,
}

impl State {
    pub fn new(rt: Runtime) -> State {
        State {
            rt,
            clock_offset_ms: 0,
            families: HashMap::new(),
            tokens: HashMap::new(),
            plain_expiry: VecDeque::new(),
            stats: Stats::default(),
            foreign: Foreign::default(),
            log: VecDeque::new(),
            next_log_id: 1,
            faults: VecDeque::new(),
            latency: HashMap::new(),
            delay_next: HashMap::new(),
            always_401: false,
            orders_by_key: HashMap::new(),
            next_order_id: 1,
            dpop: DpopState::new([1, 1], wall_ms()),
        }
    }

    /// Forgets everything except the log id sequence, so requests still in flight across a
    /// reset cannot overwrite a new log entry, and the nonce generations, which move on so
    /// that no nonce from before the reset is valid after it.
    pub fn reset(&mut self, rt: Runtime) {
        let next = self.next_log_id;
        let gens = self.dpop.next_gens();
        *self = State::new(rt);
        self.next_log_id = next;
        self.dpop = DpopState::new(gens, self.now());
    }

    /// The server's notion of now: wall clock plus the test-controlled offset.
    pub fn now(&self) -> i64 {
        wall_ms().saturating_add(self.clock_offset_ms)
    }

    fn access_claims(
        &self,
        fam: &FamView,
        gen: u64,
        scope: &str,
        jti: String,
        now: i64,
        jkt: Option<&str>,
    ) -> (Claims, f64) {
        let ttl = self.rt.access_ttl;
        let exp_ms = now + secs_to_ms(ttl).max(1);
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: fam.sub.clone(),
            iat: now.div_euclid(1000),
            exp: (exp_ms + 999).div_euclid(1000),
            exp_ms,
            jti,
            fam: fam.id.clone(),
            gen,
            client_id: fam.client_id.clone(),
            scope: scope.to_string(),
            cnf: jkt.map(|j| Cnf { jkt: j.to_string() }),
        };
        (claims, ttl)
    }

    pub fn login(&mut self, sub: &str, family_id: String, fresh: Fresh, bind: Binding) -> Grant {
        let now = self.now();
        let expires_ms = now + secs_to_ms(self.rt.family_lifetime);
        self.tokens.insert(
            fresh.refresh_hash,
            RtRecord {
                family: family_id.clone(),
                parent: None,
                successor: None,
                state: RtState::Active,
                generation: 1,
                issued_ms: now,
                rotated_at: None,
                grace_until: None,
                grace_uses: 0,
                successor_plain: None,
            },
        );
        let scope = bind.scope.join(" ");
        let family = Family {
            id: family_id.clone(),
            sub: sub.to_string(),
            created_ms: now,
            expires_ms,
            last_used_ms: now,
            state: FamilyState::Active,
            reason: None,
            ended_ms: None,
            generation: 1,
            client_id: bind.client_id,
            scope: scope.clone(),
            cookie_mode: bind.cookie_mode,
            dpop_jkt: bind.dpop_jkt.clone(),
            members: vec![fresh.refresh_hash],
        };
        let view = FamView::of(&family);
        self.families.insert(family_id, family);
        self.stats.logins += 1;
        let (claims, ttl) =
            self.access_claims(&view, 1, &scope, fresh.jti, now, bind.dpop_jkt.as_deref());
        Grant {
            kind: GrantKind::Login,
            claims,
            refresh_token: Some(fresh.refresh),
            refresh_hash: Some(fresh.refresh_hash),
            expires_in: ttl,
            family_expires_ms: expires_ms,
            now_ms: now,
            cookie_mode: view.cookie_mode,
        }
    }

    fn forget_expired_plaintexts(&mut self, now: i64) {
        while let Some(&(until, h)) = self.plain_expiry.front() {
            if until >= now {
                break;
            }
            self.plain_expiry.pop_front();
            if let Some(r) = self.tokens.get_mut(&h) {
                if r.grace_until.is_some_and(|g| g < now) {
                    r.successor_plain = None;
                }
            }
        }
    }

    /// Checks the family of a presented refresh token; marks it expired when its time is up.
    fn family_usable(&mut self, fam_id: &str, now: i64) -> Result<(), RefreshError> {
        let idle = self.rt.idle_timeout.filter(|s| *s > 0.0).map(secs_to_ms);
        let fam = self.families.get_mut(fam_id).ok_or(RefreshError::Unknown)?;
        match (fam.state, fam.reason) {
            (FamilyState::Revoked, _) => return Err(RefreshError::FamilyRevoked),
            (FamilyState::Expired, Some(EndReason::IdleTimeout)) => {
                return Err(RefreshError::IdleTimeout)
            }
            (FamilyState::Expired, _) => return Err(RefreshError::FamilyExpired),
            (FamilyState::Active, _) => {}
        }
        let ended = if now >= fam.expires_ms {
            Some((EndReason::AbsoluteLifetime, RefreshError::FamilyExpired))
        } else if idle.is_some_and(|idle| now - fam.last_used_ms >= idle) {
            Some((EndReason::IdleTimeout, RefreshError::IdleTimeout))
        } else {
            None
        };
        if let Some((reason, err)) = ended {
            fam.state = FamilyState::Expired;
            fam.reason = Some(reason);
            fam.ended_ms = Some(now);
            let members = fam.members.clone();
            self.retire_members(&members);
            return Err(err);
        }
        Ok(())
    }

    fn retire_members(&mut self, members: &[Hash]) {
        for h in members {
            if let Some(r) = self.tokens.get_mut(h) {
                r.state = RtState::Revoked;
                r.successor_plain = None;
            }
        }
    }

    /// The binding checks run before the token's state is looked at, so a refusal here
    /// changes nothing: no rotation, no grace use, no reuse detection. RFC 6749 §5.2/§6 ask
    /// only for the refusal, and `client_id` is public: an attacker holding a spent token
    /// would simply send the right one and meet reuse detection as usual. Returns the scope
    /// of the access token to issue.
    fn check_binding(&self, fam_id: &str, req: &Presented) -> Result<String, RefreshError> {
        let fam = self.families.get(fam_id).ok_or(RefreshError::Unknown)?;
        if fam.client_id != req.client_id {
            return Err(RefreshError::ClientMismatch);
        }
        if fam.cookie_mode != req.via_cookie {
            return Err(RefreshError::ChannelMismatch);
        }
        // RFC 9449 §5: a bound refresh token is only good with a proof by its key. Refused
        // here, before the token's state, so a missing or foreign proof consumes nothing and
        // is no reuse (Keycloak #36475 let a bound token refresh without any proof).
        match (&fam.dpop_jkt, req.dpop_jkt) {
            (Some(_), None) => return Err(RefreshError::DpopProofRequired),
            (Some(bound), Some(k)) if bound != k => return Err(RefreshError::DpopKeyMismatch),
            _ => {}
        }
        match req.scope {
            None => Ok(fam.scope.clone()),
            Some(asked) => {
                let granted: Vec<&str> = fam.scope.split_whitespace().collect();
                if asked.iter().all(|s| granted.contains(&s.as_str())) {
                    Ok(asked.join(" "))
                } else {
                    Err(RefreshError::ScopeNotGranted)
                }
            }
        }
    }

    /// The rotation step. `rotate = false` serves the `no_refresh_token` fault: a new access
    /// token for a still-active refresh token, which stays valid.
    pub fn refresh(
        &mut self,
        hash: &Hash,
        fresh: Fresh,
        rotate: bool,
        req: &Presented,
    ) -> Result<Grant, RefreshError> {
        let grant = self.refresh_step(hash, fresh, rotate, req)?;
        // RFC 9449 §5: a refresh token issued to a public client that presented a proof is
        // bound to that key, so a family issued without DPoP is bound by its first refresh
        // with a proof. Bound families never come unbound.
        if let (Some(j), Some(f)) = (req.dpop_jkt, self.families.get_mut(&grant.claims.fam)) {
            f.dpop_jkt.get_or_insert_with(|| j.to_string());
        }
        Ok(grant)
    }

    fn refresh_step(
        &mut self,
        hash: &Hash,
        fresh: Fresh,
        rotate: bool,
        req: &Presented,
    ) -> Result<Grant, RefreshError> {
        let now = self.now();
        self.forget_expired_plaintexts(now);
        let (fam_id, state) = match self.tokens.get(hash) {
            Some(r) => (r.family.clone(), r.state),
            None => return Err(RefreshError::Unknown),
        };
        self.family_usable(&fam_id, now)?;
        let scope = self.check_binding(&fam_id, req)?;
        match state {
            RtState::Revoked => Err(RefreshError::FamilyRevoked),
            RtState::Active if !rotate => {
                let fam = self.touch_family(&fam_id, now, None)?;
                let (claims, ttl) =
                    self.access_claims(&fam, fam.generation, &scope, fresh.jti, now, req.dpop_jkt);
                Ok(Grant {
                    kind: GrantKind::AccessOnly,
                    claims,
                    refresh_token: None,
                    refresh_hash: None,
                    expires_in: ttl,
                    family_expires_ms: fam.expires_ms,
                    now_ms: now,
                    cookie_mode: fam.cookie_mode,
                })
            }
            RtState::Active => self.rotate(hash, &fam_id, fresh, now, &scope, req.dpop_jkt),
            RtState::Rotated => {
                if let Some((plain, succ_hash, succ_gen)) = self.grace_replay(hash, now) {
                    let fam = self.touch_family(&fam_id, now, None)?;
                    let (claims, ttl) =
                        self.access_claims(&fam, succ_gen, &scope, fresh.jti, now, req.dpop_jkt);
                    self.stats.grace_replays += 1;
                    Ok(Grant {
                        kind: GrantKind::GraceReplay,
                        claims,
                        refresh_token: Some(plain),
                        refresh_hash: Some(succ_hash),
                        expires_in: ttl,
                        family_expires_ms: fam.expires_ms,
                        now_ms: now,
                        cookie_mode: fam.cookie_mode,
                    })
                } else {
                    self.revoke_family(&fam_id, EndReason::ReuseDetected);
                    self.stats.reuse_detections += 1;
                    Err(RefreshError::ReuseDetected)
                }
            }
        }
    }

    /// Records use of the family and returns what an access token needs from it.
    fn touch_family(
        &mut self,
        fam_id: &str,
        now: i64,
        new_gen: Option<u64>,
    ) -> Result<FamView, RefreshError> {
        let fam = self.families.get_mut(fam_id).ok_or(RefreshError::Unknown)?;
        fam.last_used_ms = now;
        if let Some(g) = new_gen {
            fam.generation = g;
        }
        Ok(FamView::of(fam))
    }

    fn rotate(
        &mut self,
        hash: &Hash,
        fam_id: &str,
        fresh: Fresh,
        now: i64,
        scope: &str,
        jkt: Option<&str>,
    ) -> Result<Grant, RefreshError> {
        let grace_ms = secs_to_ms(self.rt.grace);
        let (gen, parent) = {
            let rec = self.tokens.get_mut(hash).ok_or(RefreshError::Unknown)?;
            rec.state = RtState::Rotated;
            rec.rotated_at = Some(now);
            rec.successor = Some(fresh.refresh_hash);
            if grace_ms > 0 {
                rec.grace_until = Some(now + grace_ms);
                rec.successor_plain = Some(fresh.refresh.clone());
            }
            (rec.generation + 1, rec.parent)
        };
        if grace_ms > 0 {
            self.plain_expiry.push_back((now + grace_ms, *hash));
        }
        // Using this token means its parent's successor is now used: no more replays there.
        if let Some(p) = parent {
            if let Some(pr) = self.tokens.get_mut(&p) {
                pr.successor_plain = None;
            }
        }
        self.tokens.insert(
            fresh.refresh_hash,
            RtRecord {
                family: fam_id.to_string(),
                parent: Some(*hash),
                successor: None,
                state: RtState::Active,
                generation: gen,
                issued_ms: now,
                rotated_at: None,
                grace_until: None,
                grace_uses: 0,
                successor_plain: None,
            },
        );
        if let Some(fam) = self.families.get_mut(fam_id) {
            fam.members.push(fresh.refresh_hash);
        }
        let fam = self.touch_family(fam_id, now, Some(gen))?;
        let (claims, ttl) = self.access_claims(&fam, gen, scope, fresh.jti, now, jkt);
        Ok(Grant {
            kind: GrantKind::Rotated,
            claims,
            refresh_token: Some(fresh.refresh),
            refresh_hash: Some(fresh.refresh_hash),
            expires_in: ttl,
            family_expires_ms: fam.expires_ms,
            now_ms: now,
            cookie_mode: fam.cookie_mode,
        })
    }

    /// Grace applies only to the immediate predecessor of the live token, only while that
    /// live token is unused, inside the window and within the use budget.
    fn grace_replay(&mut self, hash: &Hash, now: i64) -> Option<(String, Hash, u64)> {
        let max_uses = self.rt.grace_max_uses;
        let (succ, until, uses, plain) = {
            let rec = self.tokens.get(hash)?;
            (
                rec.successor?,
                rec.grace_until?,
                rec.grace_uses,
                rec.successor_plain.clone()?,
            )
        };
        if now > until || uses >= max_uses {
            return None;
        }
        let succ_rec = self.tokens.get(&succ)?;
        if succ_rec.state != RtState::Active {
            return None;
        }
        let succ_gen = succ_rec.generation;
        if let Some(rec) = self.tokens.get_mut(hash) {
            rec.grace_uses += 1;
        }
        Some((plain, succ, succ_gen))
    }

    /// Re-check right before answering a refresh that waited (injected delay).
    pub fn still_active(&self, fam_id: &str) -> bool {
        self.families
            .get(fam_id)
            .is_some_and(|f| f.state == FamilyState::Active)
    }

    pub fn revoke_family(&mut self, fam_id: &str, reason: EndReason) -> bool {
        let now = self.now();
        let members = match self.families.get_mut(fam_id) {
            Some(f) if f.state != FamilyState::Revoked => {
                f.state = FamilyState::Revoked;
                f.reason = Some(reason);
                f.ended_ms = Some(now);
                f.members.clone()
            }
            _ => return false,
        };
        self.retire_members(&members);
        self.stats.revoked_families += 1;
        true
    }

    pub fn revoke_all(&mut self) -> u64 {
        let ids: Vec<String> = self.families.keys().cloned().collect();
        ids.iter()
            .filter(|id| self.revoke_family(id, EndReason::Control))
            .count() as u64
    }

    pub fn family_of(&self, hash: &Hash) -> Option<String> {
        self.tokens.get(hash).map(|r| r.family.clone())
    }

    /// Whether this refresh token's family is bound to a DPoP key.
    pub fn is_dpop_bound(&self, hash: &Hash) -> bool {
        self.tokens.get(hash).and_then(|r| self.families.get(&r.family)).is_some_and(|f| f.dpop_jkt.is_some())
    }

    pub fn check_access(&self, claims: &Claims) -> Result<(), AccessError> {
        let fam = self
            .families
            .get(&claims.fam)
            .ok_or(AccessError::UnknownFamily)?;
        if fam.state == FamilyState::Revoked {
            return Err(AccessError::FamilyRevoked);
        }
        if self.now() >= claims.exp_ms {
            return Err(AccessError::Expired);
        }
        Ok(())
    }

    pub fn take_fault(&mut self) -> Option<Fault> {
        let f = self.faults.front_mut()?;
        let out = f.clone();
        f.remaining = f.remaining.saturating_sub(1);
        if f.remaining == 0 {
            self.faults.pop_front();
        }
        self.stats.faults_injected += 1;
        Some(out)
    }

    pub fn latency_for(&self, path: &str) -> u64 {
        self.latency
            .get(path)
            .or_else(|| self.latency.get("*"))
            .copied()
            .unwrap_or(0)
    }

    pub fn take_delay_next(&mut self, path: &str) -> Option<DelayNext> {
        for key in [path, "*"] {
            if let Some(q) = self.delay_next.get_mut(key) {
                if let Some(d) = q.pop_front() {
                    if q.is_empty() {
                        self.delay_next.remove(key);
                    }
                    return Some(d);
                }
            }
        }
        None
    }

    pub fn log_start(&mut self, method: String, path: String, authorization_present: bool) -> u64 {
        let id = self.next_log_id;
        self.next_log_id += 1;
        if self.log.len() >= LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            id,
            t_ms: wall_ms(),
            method,
            path,
            authorization_present,
            ..LogEntry::default()
        });
        id
    }

    pub fn log_finish(&mut self, id: u64, status: u16, info: Option<LogInfo>) {
        let first = match self.log.front() {
            Some(e) => e.id,
            None => return,
        };
        let Some(idx) = id.checked_sub(first).map(|i| i as usize) else {
            return;
        };
        let Some(e) = self.log.get_mut(idx) else {
            return;
        };
        e.status = status;
        e.done_ms = Some(wall_ms());
        if let Some(i) = info {
            e.hidden = i.skip;
            e.token_jti = i.token_jti;
            e.token_generation = i.token_generation;
            e.token_family = i.token_family;
            e.refresh_token_hash_prefix = i.refresh_token_hash_prefix;
            e.outcome = i.outcome;
            e.issued_jti = i.issued_jti;
            e.issued_generation = i.issued_generation;
            e.issued_refresh_hash_prefix = i.issued_refresh_hash_prefix;
        }
    }

    pub fn log_entries(&self, since: u64) -> Vec<LogEntry> {
        self.log
            .iter()
            .filter(|e| !e.hidden && e.id > since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(n: u8) -> Fresh {
        let refresh = format!("rt-{n}");
        Fresh {
            refresh_hash: hash_token(&refresh),
            refresh,
            jti: format!("jti-{n}"),
        }
    }

    fn bind() -> Binding {
        Binding {
            client_id: "spa".into(),
            scope: vec!["read".into(), "write".into()],
            cookie_mode: false,
            dpop_jkt: None,
        }
    }

    const BODY: Presented<'static> = Presented {
        client_id: "spa",
        scope: None,
        via_cookie: false,
        dpop_jkt: None,
    };

    fn state(grace: f64) -> State {
        let cfg = Config {
            grace,
            ..Config::default()
        };
        State::new(Runtime::from_config(&cfg))
    }

    #[test]
    fn rotation_then_reuse_revokes_family() {
        let mut s = state(0.0);
        let g = s.login("demo", "fam".into(), fresh(1), bind());
        assert_eq!(g.claims.gen, 1);
        let g2 = s
            .refresh(&hash_token("rt-1"), fresh(2), true, &BODY)
            .ok()
            .map(|g| g.claims.gen);
        assert_eq!(g2, Some(2));
        let reuse = s.refresh(&hash_token("rt-1"), fresh(3), true, &BODY).err();
        assert_eq!(reuse, Some(RefreshError::ReuseDetected));
        let after = s.refresh(&hash_token("rt-2"), fresh(4), true, &BODY).err();
        assert_eq!(after, Some(RefreshError::FamilyRevoked));
        assert_eq!(s.stats.reuse_detections, 1);
    }

    #[test]
    fn grace_returns_same_successor_until_successor_used() {
        let mut s = state(30.0);
        s.login("demo", "fam".into(), fresh(1), bind());
        let a = s
            .refresh(&hash_token("rt-1"), fresh(2), true, &BODY)
            .ok()
            .and_then(|g| g.refresh_token);
        let b = s
            .refresh(&hash_token("rt-1"), fresh(3), true, &BODY)
            .ok()
            .and_then(|g| g.refresh_token);
        assert_eq!(a.as_deref(), Some("rt-2"));
        assert_eq!(b.as_deref(), Some("rt-2"));
        assert!(s
            .refresh(&hash_token("rt-2"), fresh(4), true, &BODY)
            .is_ok());
        let late = s.refresh(&hash_token("rt-1"), fresh(5), true, &BODY).err();
        assert_eq!(late, Some(RefreshError::ReuseDetected));
    }
}
