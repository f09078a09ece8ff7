//! The one `#[wasm_bindgen]` boundary: carries out the core's decisions with Promises,
//! timers and `fetch`, and turns core errors into real JS `Error`s.
//!
//! State lives in an `Rc<Inner>`; no `RefCell` borrow is held across an `.await` or while
//! JS code (listeners, the refresh function) runs, so JS may call back into the broker freely.

mod js;
mod options;
mod refresh;
mod tabs;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_channel::oneshot;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{AbortController, AbortSignal, EventTarget, RequestCredentials};

use crate::core::{self, Broker, BrokerError, Config, Effect, Event, Get};
use js::{get, invalid_option, js_error, now, own, promise, set, spawn, token_set, type_error, type_name, Timer};
use options::{check_keys, debug_sink, dpop_holder, number_option, origins, page_origin, refresh_source, revoke_endpoint, Endpoint, RefreshSource, OPTION_KEYS};
use refresh::run_attempt;

pub(crate) type Settled = Result<JsValue, JsValue>;
pub(crate) type Waiter = oneshot::Sender<Settled>;

pub(crate) struct Inner {
    core: RefCell<Broker<Waiter>>,
    source: RefreshSource,
    on_session_expired: Option<Function>,
    allowed_origins: Vec<String>,
    revoke: Option<Endpoint>,
    listeners: RefCell<Vec<(String, Function)>>,
    proactive: RefCell<Option<Timer>>,
    deadline: RefCell<Option<Timer>>,
    /// The attempt in progress: aborting it cancels the user's fetch; dropping the sender
    /// stops waiting for a refresh function that never settles.
    attempt: RefCell<Option<(AbortController, oneshot::Sender<()>)>>,
    wake_listener: RefCell<Option<Closure<dyn FnMut()>>>,
    /// The current token as a JS string, so the hot path does not re-encode it per call.
    token_js: RefCell<Option<(String, JsValue)>>,
    /// `broker.fastPath`: `{ t, w, m }`, the token and until when (`Date.now()` below `w` and
    /// `performance.now()` below `m`) the adapters may use it without calling in. Rewritten
    /// after every transition, before any JS runs; `t` is `undefined` when a call must ask.
    fast: Object,
    tabs: tabs::Tabs,
    /// `tokens` was given: it wins over whatever storage holds.
    has_initial_tokens: bool,
    /// The session snapshot `getSession()` returns, what it was made from, and its decoded claims:
    /// a new object only when something a view shows changed (React's `useSyncExternalStore` needs
    /// a stable identity); the claims are decoded again only when the token changed.
    session: RefCell<(SessionKey, JsValue, JsValue)>,
    subscribers: RefCell<Vec<Function>>,
    /// The `debug` sink; `None` (the default) costs one check per transition.
    debug: Option<Function>,
    /// The DPoP key holder (`dpop.js`) when `dpop` is on: every token set must be DPoP-bound.
    dpop: Option<JsValue>,
    /// The epoch the key holder last saw: another session's key must be read again.
    dpop_epoch: Cell<u64>,
}

/// What a session snapshot shows: status, generation, epoch, expiry and which token (by hash).
type SessionKey = (u8, u64, u64, u64, u64);

impl Inner {
    /// Tells the DPoP key holder `what` happened ("end": this session is over, delete its key;
    /// "forget": another session began, read the key again).
    fn dpop_note(&self, what: &str) {
        if let Some(h) = &self.dpop {
            let _ = js::call(h, what, &[]);
        }
    }

    /// A new epoch (login, logout, a session adopted from another tab) may have a new key.
    fn sync_dpop(&self) {
        if self.dpop.is_some() {
            let epoch = self.core.borrow().epoch();
            if self.dpop_epoch.replace(epoch) != epoch {
                self.dpop_note("forget");
            }
        }
    }

    /// The token as a JS string, encoded once per token rather than once per call. Keyed by the
    /// token itself: a set adopted from another tab may reuse a generation number.
    fn token_value(&self, token: &str) -> JsValue {
        let mut cache = self.token_js.borrow_mut();
        match &mut *cache {
            Some((t, v)) if t == token => v.clone(),
            slot => {
                if let Some((old, _)) = slot {
                    core::wipe(old);
                }
                let v = JsValue::from_str(token);
                *slot = Some((token.to_string(), v.clone()));
                v
            }
        }
    }

    fn session_key(&self) -> SessionKey {
        let c = self.core.borrow();
        let expires = c.expires_at_wall_ms().map_or(u64::MAX, f64::to_bits);
        let token = c.access_token().map_or(0, core::token_hash);
        (c.state() as u8 | (u8::from(c.is_authenticated()) << 4), c.generation(), c.epoch(), expires, token)
    }

    /// Rebuilds the session snapshot if what it shows changed; `true` when it did.
    fn sync_session(&self) -> bool {
        let key = self.session_key();
        let (old_key, _, old_claims) = self.session.borrow().clone();
        if old_key == key {
            return false;
        }
        let (status, authenticated, generation, expires_at, new_token) = {
            let c = self.core.borrow();
            // Copied out only when the token changed: decoding runs page code (`atob`,
            // `JSON.parse`), never while the core is borrowed.
            let new_token = c.access_token().filter(|_| old_key.4 != key.4).map(String::from);
            (c.state().as_str(), c.is_authenticated(), c.generation(), c.expires_at_wall_ms(), new_token)
        };
        // The access token's JWT payload, decoded (never verified) once per token, or `null`.
        let claims = match (new_token, key.4) {
            (_, 0) => JsValue::NULL,
            (None, _) => old_claims,
            (Some(mut token), _) => {
                let claims = js::jwt_payload(&token).map_or(JsValue::NULL, |p| Object::freeze(&p).into());
                core::wipe(&mut token);
                claims
            }
        };
        let o = Object::new();
        set(&o, "status", &JsValue::from_str(status));
        set(&o, "isAuthenticated", &JsValue::from_bool(authenticated));
        set(&o, "generation", &JsValue::from_f64(generation as f64));
        set(&o, "expiresAt", &expires_at.map_or(JsValue::NULL, JsValue::from_f64));
        set(&o, "claims", &claims);
        *self.session.borrow_mut() = (key, Object::freeze(&o).into(), claims);
        true
    }

    fn notify_subscribers(&self) {
        let snapshot = self.session.borrow().1.clone();
        let targets: Vec<Function> = self.subscribers.borrow().clone();
        for f in targets {
            // A throwing subscriber must not break the broker or the others.
            let _ = f.call1(&JsValue::UNDEFINED, &snapshot);
        }
    }

    /// Where the next decision came from (a message of another tab), for the debug log.
    fn debug_note(&self, from: &str) {
        if let Some(sink) = &self.debug {
            let o = Object::new();
            set(&o, "event", &JsValue::from_str("token set adopted"));
            set(&o, "why", &JsValue::from_str(from));
            let (generation, waiting) = { let c = self.core.borrow(); (c.generation(), c.waiting()) };
            set(&o, "generation", &JsValue::from_f64(generation as f64));
            set(&o, "waiting", &JsValue::from_f64(waiting as f64));
            let _ = sink.call1(&JsValue::UNDEFINED, &o);
        }
    }

    /// One structured debug entry per decision; never a token.
    fn debug_entry(&self, ev: &Event, settled: usize) {
        let Some(sink) = &self.debug else { return };
        let o = Object::new();
        let (what, why) = match ev {
            Event::Tokens { .. } => ("tokens adopted", None),
            Event::RefreshStart { reason } => ("refresh started", Some(reason.as_str())),
            Event::RefreshEnd { error: None } => ("refresh succeeded", None),
            Event::RefreshEnd { error: Some(e) } => ("refresh failed", Some(e.code())),
            Event::Expired => ("session expired", None),
            Event::Stale401 => ("late 401 absorbed without a refresh", None),
            Event::Logout => ("logged out", None),
            Event::NonceRetry => ("refresh sent again with the token endpoint's DPoP nonce", None),
        };
        set(&o, "event", &JsValue::from_str(what));
        if let Some(w) = why {
            set(&o, "why", &JsValue::from_str(w));
        }
        let (generation, waiting) = { let c = self.core.borrow(); (c.generation(), c.waiting()) };
        set(&o, "generation", &JsValue::from_f64(generation as f64));
        set(&o, "waiting", &JsValue::from_f64(waiting as f64));
        if settled > 0 {
            set(&o, "settled", &JsValue::from_f64(settled as f64));
        }
        let _ = sink.call1(&JsValue::UNDEFINED, &o);
    }

    /// The proactive timer or a wake-up: requests served from the fast path count as activity
    /// (the adapters note their time in `fastPath.a`), then the core decides.
    fn tick(self: &Rc<Self>) {
        let t = now();
        if let Some(a) = js::own(&self.fast, "a").as_f64().filter(|a| a.is_finite() && *a <= t.mono_ms) {
            let at = core::Now { wall_ms: t.wall_ms - (t.mono_ms - a), mono_ms: a };
            let fx = self.core.borrow_mut().touch(at);
            apply(self, fx);
        }
        let fx = self.core.borrow_mut().tick(t);
        apply(self, fx);
    }

    /// Publishes the core's fresh token and its deadlines to `fastPath`.
    fn sync_fast(&self) {
        let fresh = self.core.borrow().fresh().map(|f| (f.token.to_string(), f.until_wall_ms, f.until_mono_ms));
        match fresh {
            Some((mut token, w, m)) => {
                // Deadlines first: a reader that sees the new token must not see the old deadlines.
                set(&self.fast, "t", &JsValue::UNDEFINED);
                set(&self.fast, "w", &JsValue::from_f64(w));
                set(&self.fast, "m", &JsValue::from_f64(m));
                set(&self.fast, "t", &self.token_value(&token));
                core::wipe(&mut token);
            }
            None => set(&self.fast, "t", &JsValue::UNDEFINED),
        }
    }

    fn emit_kind(&self, kind: &str) {
        let obj = Object::new();
        set(&obj, "type", &JsValue::from_str(kind));
        set(&obj, "generation", &JsValue::from_f64(self.core.borrow().generation() as f64));
        self.dispatch(kind, &obj);
    }

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
            Event::NonceRetry => return, // for the debug log only: still the same refresh
        };
        set(&obj, "type", &JsValue::from_str(kind));
        let generation = generation.unwrap_or_else(|| self.core.borrow().generation());
        set(&obj, "generation", &JsValue::from_f64(generation as f64));
        self.dispatch(kind, &obj);
    }

    fn dispatch(&self, kind: &str, obj: &Object) {
        // Snapshot first: a listener may add or remove listeners.
        let targets: Vec<Function> =
            self.listeners.borrow().iter().filter(|(t, _)| t == kind).map(|(_, f)| f.clone()).collect();
        for f in targets {
            // A throwing listener must not break the broker or the other listeners.
            let _ = f.call1(&JsValue::UNDEFINED, obj);
        }
    }
}

/// Carries out the core's decisions. Called with no borrow of `core` held.
pub(crate) fn apply(inner: &Rc<Inner>, effects: Vec<Effect<Waiter>>) {
    apply_with(inner, effects, &JsValue::UNDEFINED, None);
}

/// [`apply`], with the `cause` and the `detail` (what was wrong) for the errors it makes.
pub(crate) fn apply_with(inner: &Rc<Inner>, effects: Vec<Effect<Waiter>>, cause: &JsValue, detail: Option<&str>) {
    if effects.is_empty() {
        return;
    }
    // Every transition comes with effects: publish the fast path and the session snapshot
    // before any listener runs.
    inner.sync_fast();
    inner.sync_dpop();
    let changed = inner.sync_session();
    let settled = if inner.debug.is_some() {
        effects.iter().map(|e| match e { Effect::Resolve { waiters, .. } | Effect::Reject { waiters, .. } => waiters.len(), _ => 0 }).sum()
    } else {
        0
    };
    for effect in effects {
        match effect {
            Effect::Refresh { flight, attempt, refresh_token, delay_ms } => {
                spawn(run_attempt(inner.clone(), flight, attempt, refresh_token, delay_ms));
            }
            Effect::Deadline { flight, ms } => {
                let weak = Rc::downgrade(inner);
                let t = Timer::new(ms, move || {
                    if let Some(inner) = weak.upgrade() {
                        let t = now();
                        let fx = inner.core.borrow_mut().flight_timed_out(flight, t);
                        apply(&inner, fx);
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
            Effect::Resolve { waiters, mut token } => {
                let v = inner.token_value(&token);
                core::wipe(&mut token);
                for w in waiters {
                    let _ = w.send(Ok(v.clone()));
                }
            }
            Effect::Reject { waiters, error } => {
                let e = js_error(error, detail, cause);
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
            Effect::Emit(ev) => {
                inner.debug_entry(&ev, settled);
                inner.emit(&ev);
                if ev == Event::Expired {
                    if let Some(f) = &inner.on_session_expired {
                        let _ = f.call1(&JsValue::UNDEFINED, &js_error(BrokerError::SessionExpired, detail, cause));
                    }
                }
            }
            Effect::Schedule(delay) => {
                // Dropping the old timer clears it before a new one is armed.
                drop(inner.proactive.borrow_mut().take());
                let t = delay.map(|ms| {
                    let weak = Rc::downgrade(inner);
                    // Browsers cap setTimeout at 2^31-1 ms; later ticks re-arm.
                    Timer::background(ms.min(2_147_483_647.0), move || {
                        if let Some(inner) = weak.upgrade() {
                            inner.tick();
                        }
                    })
                });
                *inner.proactive.borrow_mut() = t;
            }
            Effect::Publish(shared) => inner.tabs.publish(&shared),
            Effect::PublishEnd { epoch, generation, logout } => {
                // Ended here (logout, expiry): the key of this grant goes with it (RFC 9449 §11.4).
                inner.dpop_note("end");
                inner.tabs.publish_end(epoch, generation, logout)
            }
        }
    }
    if changed {
        inner.notify_subscribers();
    }
}


/// A `WWW-Authenticate` argument: a string, or `null`/`undefined` when there was none.
fn challenge(v: &JsValue, who: &str) -> Result<core::Challenge, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(core::challenge_401(None));
    }
    match v.as_string() {
        Some(h) => Ok(core::challenge_401(Some(&h))),
        None => Err(type_error(&[who, "(header): header must be a string or null (got ", type_name(v), ")"])),
    }
}

/// Where the broker listens for "the page is back": the document becoming visible, the
/// network coming back.
const WAKE_EVENTS: [(&str, &str); 2] = [("document", "visibilitychange"), ("window", "online")];

fn wake_targets() -> impl Iterator<Item = (EventTarget, &'static str)> {
    WAKE_EVENTS
        .into_iter()
        .filter_map(|(owner, event)| get(&js_sys::global(), owner).dyn_into::<EventTarget>().ok().map(|t| (t, event)))
}

fn install_wake_listener(inner: &Rc<Inner>) {
    // Timers stall while a laptop sleeps or a tab is frozen: re-check on wake.
    let weak = Rc::downgrade(inner);
    let cb = Closure::<dyn FnMut()>::new(move || {
        if let Some(inner) = weak.upgrade() {
            inner.tick();
        }
    });
    for (target, event) in wake_targets() {
        let _ = target.add_event_listener_with_callback(event, cb.as_ref().unchecked_ref());
    }
    *inner.wake_listener.borrow_mut() = Some(cb);
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
        if !options.is_object() || options.is_function() || js_sys::Array::is_array(&options) {
            return Err(invalid_option(&["options must be an object { refresh, tokens?, ... } (got ", type_name(&options), ")"]));
        }
        check_keys(&options, "", &OPTION_KEYS, "refresh, tokens, allowedOrigins, storage, crossTab, name, revoke, leewaySeconds, refreshTimeoutMs, refreshRetries, idleTimeoutMs, onSessionExpired, debug, dpop")?;
        let dpop = dpop_holder(&own(&options, "dpop"))?;
        let mut allowed_origins = origins(&own(&options, "allowedOrigins"))?;
        match page_origin() {
            Some(page) => allowed_origins.push(page),
            // Without a page, no origin is allowed by default: every call would go out without a token.
            None if allowed_origins.is_empty() => {
                return Err(invalid_option(&[
                    "allowedOrigins is required where there is no page (Node, SSR): list the origins that may receive the token, e.g. ['https://api.example.com']",
                ]))
            }
            None => {}
        }
        let source = refresh_source(&own(&options, "refresh"), &allowed_origins)?;
        let revoke = revoke_endpoint(&own(&options, "revoke"), &source, &allowed_origins)?;
        let mut cfg = Config::default();
        if let Some(s) = number_option(&options, "leewaySeconds", 0.0, 86_400.0, false, "from 0 to 86400")? {
            cfg.leeway_ms = s * 1000.0;
        }
        if let Some(ms) = number_option(&options, "refreshTimeoutMs", 1.0, 2_147_483_647.0, false, "from 1 to 2147483647")? {
            cfg.refresh_timeout_ms = ms;
        }
        if let Some(n) = number_option(&options, "refreshRetries", 0.0, 10.0, true, "from 0 to 10")? {
            cfg.refresh_retries = n as u32;
        }
        cfg.idle_timeout_ms = number_option(&options, "idleTimeoutMs", 1000.0, 2_147_483_647.0, false, "from 1000 to 2147483647")?;
        cfg.refresh_when_anonymous = matches!(
            &source,
            RefreshSource::Endpoint { endpoint: Endpoint { credentials: RequestCredentials::Include, .. }, .. }
        );
        let on_session_expired = match own(&options, "onSessionExpired") {
            v if v.is_undefined() => None,
            v => Some(v.dyn_into::<Function>().map_err(|v| invalid_option(&["onSessionExpired must be a function (got ", type_name(&v), ")"]))?),
        };
        let name = match own(&options, "name") {
            v if v.is_undefined() => String::from("default"),
            v => v
                .as_string()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid_option(&["name must be a non-empty string (got ", type_name(&v), ")"]))?,
        };
        let storage = own(&options, "storage");
        let store = tabs::Store::from_option(&storage).map_err(|d| invalid_option(&[d]))?;
        let debug = debug_sink(&own(&options, "debug"))?;
        // Shared storage without coordination would let two tabs spend one refresh token.
        let cross_tab = match own(&options, "crossTab") {
            v if v.is_undefined() => store.as_ref().is_some() && storage.as_string().as_deref() == Some("local"),
            v => v.as_bool().ok_or_else(|| invalid_option(&["crossTab must be a boolean (got ", type_name(&v), ")"]))?,
        };
        if cross_tab && dpop.as_ref().is_some_and(|h| get(h, "shared").as_bool() != Some(true)) {
            return Err(invalid_option(&[
                "dpop: { store: 'memory' } keeps the key in this tab only, so it cannot serve a crossTab session: use store 'indexeddb' (the default) or crossTab: false",
            ]));
        }
        let mut broker = Broker::new(cfg);
        let tokens = own(&options, "tokens");
        let has_initial_tokens = !(tokens.is_undefined() || tokens.is_null());
        let initial = if has_initial_tokens {
            let set = token_set(&tokens, 0.0, dpop.is_some()).map_err(|d| invalid_option(&["tokens: ", &d]))?;
            broker.set_tokens(set, now())
        } else {
            Vec::new()
        };
        let inner = Rc::new(Inner {
            core: RefCell::new(broker),
            source,
            on_session_expired,
            allowed_origins,
            revoke,
            listeners: RefCell::new(Vec::new()),
            proactive: RefCell::new(None),
            deadline: RefCell::new(None),
            attempt: RefCell::new(None),
            wake_listener: RefCell::new(None),
            token_js: RefCell::new(None),
            fast: Object::new(),
            tabs: tabs::Tabs::new(&name, cross_tab, store),
            has_initial_tokens,
            session: RefCell::new(((u8::MAX, 0, 0, 0, 0), JsValue::NULL, JsValue::NULL)),
            subscribers: RefCell::new(Vec::new()),
            debug,
            dpop,
            dpop_epoch: Cell::new(0),
        });
        inner.sync_session();
        install_wake_listener(&inner);
        tabs::listen(&inner);
        apply(&inner, initial);
        Ok(TokenBroker { inner })
    }

    /// Creates a broker and restores its state: tokens from `storage`, and (with `crossTab`) the
    /// newest token set of the other tabs, waiting at most 100 ms for their answer.
    /// `createTokenBroker(options)` calls this after loading the module.
    #[wasm_bindgen(unchecked_return_type = "Promise<TokenBroker>")]
    pub fn create(options: JsValue) -> Promise {
        let broker = match TokenBroker::new(options) {
            Ok(b) => b,
            Err(e) => return Promise::reject(&e),
        };
        promise(async move {
            broker.restore().await;
            Ok(broker.into())
        })
    }

    /// Resolves with a valid access token: at once when the current one is fresh; otherwise
    /// after the single refresh all callers share. Rejects with a `TokenBrokerError`
    /// (`NOT_AUTHENTICATED`, `SESSION_EXPIRED`, `REFRESH_FAILED`, `REFRESH_TIMEOUT`, `ABORTED`,
    /// `LOGGED_OUT`, `DISPOSED`, ...). `options.signal` aborts only this caller's wait.
    #[wasm_bindgen(js_name = getAccessToken, unchecked_return_type = "Promise<string>")]
    pub fn get_access_token(&self, options: JsValue) -> Promise {
        let signal = match aborted_or_signal(&options) {
            Ok(s) => s,
            Err(p) => return p,
        };
        // The channel is made only when the caller has to wait: the hot path allocates nothing.
        let mut rx = None;
        let t = now();
        let (get, fx) = self.inner.core.borrow_mut().get_token(t, || waiter(&mut rx));
        self.settle(get, fx, rx, signal)
    }

    /// Call when the server answered 401 to a request sent with `token`. Resolves with the token
    /// to replay the request with: if `token` is older than the current one (a late 401), the
    /// current token, with no refresh; if it is the current one, the new token after a single
    /// shared refresh. A token of an earlier session (before the last `logout()` or
    /// `setTokens()`) rejects with `LOGGED_OUT`: that request must not be replayed.
    /// `options.signal` aborts only this caller's wait (`ABORTED`).
    #[wasm_bindgen(js_name = tokenRejected, unchecked_return_type = "Promise<string>")]
    pub fn token_rejected(&self, token: JsValue, options: JsValue) -> Promise {
        let Some(token) = token.as_string() else {
            return Promise::reject(&type_error(&["tokenRejected(token): token must be the string the request was sent with (got ", type_name(&token), ")"]));
        };
        // Even an aborted caller's 401 is news: the core hears it before the abort applies.
        let signal = own(&options, "signal").dyn_into::<AbortSignal>().ok();
        let mut rx = None;
        let t = now();
        let (get, fx) = self.inner.core.borrow_mut().token_rejected(&token, t, || waiter(&mut rx));
        self.settle(get, fx, rx, signal)
    }

    /// Whether a 401 with this `WWW-Authenticate` value deserves a refresh: yes for a bare
    /// challenge (or no header: CORS may hide it) and `error="invalid_token"`; no for
    /// `insufficient_scope` and other errors.
    #[wasm_bindgen(js_name = shouldRefreshOn401)]
    pub fn should_refresh_on_401(&self, www_authenticate: JsValue) -> Result<bool, JsValue> {
        Ok(challenge(&www_authenticate, "shouldRefreshOn401")? == core::Challenge::Refresh)
    }

    /// What a 401 with this `WWW-Authenticate` value asks for: `'refresh'` (as
    /// `shouldRefreshOn401`), `'nonce'` for a DPoP `use_dpop_nonce` challenge (send the request
    /// again once, with a new proof and the same token: no refresh), or `'none'` (the 401 is the
    /// answer: `insufficient_scope`, `invalid_dpop_proof`, ...).
    #[wasm_bindgen(js_name = authChallenge, unchecked_return_type = "'refresh' | 'nonce' | 'none'")]
    pub fn auth_challenge(&self, www_authenticate: JsValue) -> Result<JsValue, JsValue> {
        Ok(JsValue::from_str(match challenge(&www_authenticate, "authChallenge")? {
            core::Challenge::Refresh => "refresh",
            core::Challenge::Nonce => "nonce",
            core::Challenge::None => "none",
        }))
    }

    /// Whether requests to `origin` (e.g. `https://api.example.com`) may carry the token: the
    /// page's own origin and those listed in `allowedOrigins`.
    #[wasm_bindgen(js_name = allowsOrigin)]
    pub fn allows_origin(&self, origin: JsValue) -> Result<bool, JsValue> {
        match origin.as_string() {
            Some(o) => Ok(self.inner.allowed_origins.contains(&o)),
            None => Err(type_error(&["allowsOrigin(origin): origin must be a string (got ", type_name(&origin), ")"])),
        }
    }

    /// The origins that may receive the token: the page's own and `allowedOrigins`.
    #[wasm_bindgen(getter, js_name = allowedOrigins, unchecked_return_type = "string[]")]
    pub fn allowed_origins(&self) -> js_sys::Array {
        self.inner.allowed_origins.iter().map(|o| JsValue::from_str(o)).collect()
    }

    /// Adopts tokens from outside (e.g. after login). Starts a new session epoch: a refresh in
    /// flight is discarded, calls waiting for a token get these tokens, and 401s of requests sent
    /// with an earlier session's token reject with `LOGGED_OUT`. Throws `INVALID_TOKEN_RESPONSE`
    /// for a malformed token set (the message says which field), `DISPOSED` after `dispose()`.
    #[wasm_bindgen(js_name = setTokens)]
    pub fn set_tokens(&self, tokens: JsValue) -> Result<(), JsValue> {
        if self.inner.core.borrow().is_disposed() {
            return Err(js_error(BrokerError::Disposed, Some("setTokens after dispose()"), &JsValue::UNDEFINED));
        }
        let offset = self.inner.core.borrow().server_offset_ms();
        let set = token_set(&tokens, offset, self.inner.dpop.is_some())
            .map_err(|d| js::coded_error(BrokerError::InvalidTokenResponse, &["setTokens: not a usable token set: ", &d]))?;
        let t = now();
        let fx = self.inner.core.borrow_mut().set_tokens(set, t);
        apply(&self.inner, fx);
        Ok(())
    }

    /// Forgets the tokens. Waiting calls reject with `LOGGED_OUT`; a refresh in flight is
    /// discarded and can never revive the session. With `revoke: { url }`, the refresh token is
    /// then revoked at the server (RFC 7009); the returned Promise resolves when that is done or
    /// has given up (after `refreshTimeoutMs`). It never rejects.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn logout(&self) -> Promise {
        let refresh_token = self.inner.core.borrow().refresh_token().map(String::from);
        let fx = self.inner.core.borrow_mut().logout();
        apply(&self.inner, fx);
        if self.inner.revoke.is_none() {
            return Promise::resolve(&JsValue::UNDEFINED);
        }
        let inner = self.inner.clone();
        promise(async move {
            let timeout = inner.core.borrow().config().refresh_timeout_ms;
            if let Some(endpoint) = &inner.revoke {
                refresh::revoke(endpoint, refresh_token, timeout).await;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Stops the broker: waiting calls reject with `DISPOSED`, timers stop, later calls reject
    /// with `DISPOSED`. Call it when a Node script is done. Calling it twice is harmless.
    pub fn dispose(&self) {
        let fx = self.inner.core.borrow_mut().dispose();
        apply(&self.inner, fx);
        self.inner.sync_fast();
        self.inner.tabs.close();
        self.inner.dpop_note("close");
        if let Some(cb) = self.inner.wake_listener.borrow_mut().take() {
            for (target, event) in wake_targets() {
                let _ = target.remove_event_listener_with_callback(event, cb.as_ref().unchecked_ref());
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

    /// For the adapters: `{ t, w, m }`, the current token while `Date.now() < w` and
    /// `performance.now() < m`, so a request skips the call into the module. Updated by the
    /// broker after every change; `t` is `undefined` whenever a call must go through
    /// `getAccessToken`. Read-only by contract.
    #[wasm_bindgen(getter, js_name = fastPath, unchecked_return_type = "{ readonly t?: string; readonly w: number; readonly m: number }")]
    pub fn fast_path(&self) -> Object {
        self.inner.fast.clone()
    }

    /// Tells the broker the user is active (input, navigation), for `idleTimeoutMs`: an active
    /// session keeps being refreshed in the background; an idle one is not, and its next call
    /// refreshes on demand. Requests through the adapters count as activity by themselves.
    pub fn touch(&self) {
        let t = now();
        let fx = self.inner.core.borrow_mut().touch(t);
        apply(&self.inner, fx);
    }

    /// The session as a view shows it: `{ status, isAuthenticated, generation, expiresAt, claims }`,
    /// frozen. The same object until something in it changes, so it can be handed to React's
    /// `useSyncExternalStore` as is. `claims` is the access token's JWT payload, decoded but NOT
    /// verified (the client cannot verify it; never base an authorization decision on it), or
    /// `null` for opaque tokens. `expiresAt` is the access token's expiry (epoch ms) or `null`.
    #[wasm_bindgen(
        js_name = getSession,
        unchecked_return_type = "{ readonly status: 'anonymous' | 'valid' | 'refreshing' | 'expired'; readonly isAuthenticated: boolean; readonly generation: number; readonly expiresAt: number | null; readonly claims: Readonly<Record<string, unknown>> | null }"
    )]
    pub fn get_session(&self) -> JsValue {
        self.inner.session.borrow().1.clone()
    }

    /// Calls `listener(session)` whenever the session snapshot changes (see `getSession`).
    /// Returns a function that unsubscribes.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn subscribe(&self, listener: JsValue) -> Result<JsValue, JsValue> {
        let Ok(listener) = listener.clone().dyn_into::<Function>() else {
            return Err(type_error(&["subscribe(listener): listener must be a function (got ", type_name(&listener), ")"]));
        };
        self.inner.subscribers.borrow_mut().push(listener.clone());
        let weak = Rc::downgrade(&self.inner);
        let mut once = Some(listener);
        Ok(Closure::<dyn FnMut()>::new(move || {
            if let (Some(inner), Some(l)) = (weak.upgrade(), once.take()) {
                let mut subs = inner.subscribers.borrow_mut();
                if let Some(i) = subs.iter().position(|f| *f == l) {
                    subs.remove(i);
                }
            }
        })
        .into_js_value())
    }

    /// Listens to `'tokens'`, `'refreshstart'`, `'refreshend'`, `'expired'`, `'stale401'`,
    /// `'logout'` or `'storageerror'`. The listener gets `{ type, generation, reason?, ok?,
    /// code? }`, never a token. Returns a function that removes the listener.
    #[wasm_bindgen(js_name = addEventListener, unchecked_return_type = "() => void")]
    pub fn add_event_listener(&self, kind: JsValue, listener: JsValue) -> Result<JsValue, JsValue> {
        let (Some(kind), Ok(listener)) = (kind.as_string(), listener.clone().dyn_into::<Function>()) else {
            return Err(type_error(&["addEventListener(type, listener): type must be a string and listener a function (got ", type_name(&listener), ")"]));
        };
        {
            let mut l = self.inner.listeners.borrow_mut();
            if !l.iter().any(|(t, f)| *t == kind && *f == listener) {
                l.push((kind.clone(), listener.clone()));
            }
        }
        let weak = Rc::downgrade(&self.inner);
        Ok(Closure::<dyn FnMut()>::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.listeners.borrow_mut().retain(|(t, f)| !(*t == kind && *f == listener));
            }
        })
        .into_js_value())
    }

    /// Removes a listener added with `addEventListener`.
    #[wasm_bindgen(js_name = removeEventListener)]
    pub fn remove_event_listener(&self, kind: JsValue, listener: JsValue) {
        self.inner.listeners.borrow_mut().retain(|(t, f)| !(JsValue::from_str(t) == kind && JsValue::from(f.clone()) == listener));
    }
}

/// The caller's `signal`, or a rejected Promise when it already fired.
fn aborted_or_signal(options: &JsValue) -> Result<Option<AbortSignal>, Promise> {
    let signal = own(options, "signal").dyn_into::<AbortSignal>().ok();
    match &signal {
        Some(s) if s.aborted() => Err(Promise::reject(&js_error(BrokerError::Aborted, None, &s.reason()))),
        _ => Ok(signal),
    }
}

fn waiter(rx: &mut Option<oneshot::Receiver<Settled>>) -> Waiter {
    let (tx, r) = oneshot::channel();
    *rx = Some(r);
    tx
}

impl TokenBroker {
    async fn restore(&self) {
        let inner = &self.inner;
        if !inner.has_initial_tokens {
            // An async storage adapter that never answers must not hang createTokenBroker:
            // give it the refresh timeout, then start without stored tokens (and report it).
            let (give_up, mut gave_up) = oneshot::channel::<()>();
            let mut give_up = Some(give_up);
            let limit = inner.core.borrow().config().refresh_timeout_ms;
            let _timer = Timer::new(limit, move || drop(give_up.take()));
            let loaded = refresh::until_cancelled(inner.tabs.load(), &mut gave_up).await.unwrap_or(Err(()));
            match loaded {
                Ok(Some(shared)) => {
                    let t = now();
                    let fx = inner.core.borrow_mut().adopt_shared(shared, t);
                    apply(inner, fx);
                }
                Ok(None) => {}
                // Garbage in storage (removed) or no answer: reported once listeners can be attached.
                Err(()) => {
                    let weak = Rc::downgrade(inner);
                    spawn(async move {
                        TimeoutFuture::new(0).await;
                        if let Some(inner) = weak.upgrade() {
                            inner.emit_kind("storageerror");
                        }
                    });
                }
            }
        }
        // A new or duplicated tab asks its siblings, so it never starts from a stale refresh
        // token. localStorage is already shared: no need to wait.
        if inner.tabs.has_channel() && !inner.tabs.shared_store() {
            let (tx, rx) = oneshot::channel();
            *inner.tabs.adopted.borrow_mut() = Some(tx);
            inner.tabs.hello();
            let mut rx = rx;
            refresh::until_cancelled(TimeoutFuture::new(100), &mut rx).await;
            drop(inner.tabs.adopted.borrow_mut().take());
        }
        // A DPoP-bound session whose key is gone (storage cleared, `store: 'memory'` after a
        // reload) cannot be used or refreshed: it ends now, not at the first request.
        if let Some(h) = &inner.dpop {
            if get(h, "hasKey").as_bool() != Some(true) && inner.core.borrow().is_authenticated() {
                let fx = inner.core.borrow_mut().end_session();
                apply_with(inner, fx, &JsValue::UNDEFINED, Some("the DPoP key of this session is gone: log in again"));
            }
        }
    }

    fn settle(&self, get: Get, fx: Vec<Effect<Waiter>>, rx: Option<oneshot::Receiver<Settled>>, signal: Option<AbortSignal>) -> Promise {
        apply(&self.inner, fx);
        match get {
            Get::Ready(mut token) => {
                let v = self.inner.token_value(&token);
                core::wipe(&mut token);
                Promise::resolve(&v)
            }
            Get::Fail(e) => Promise::reject(&js_error(e, None, &JsValue::UNDEFINED)),
            Get::Wait(id) if signal.as_ref().is_some_and(AbortSignal::aborted) => {
                drop(self.inner.core.borrow_mut().abort_waiter(id));
                let reason = signal.map_or(JsValue::UNDEFINED, |s| s.reason());
                Promise::reject(&js_error(BrokerError::Aborted, None, &reason))
            }
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
                promise(async move {
                    // `Wait` always comes with the receiver made for it; `None` reads as a closed channel.
                    let result = match rx {
                        Some(rx) => rx.await,
                        None => Err(oneshot::Canceled),
                    };
                    if let Some((s, cb)) = abort {
                        let _ = s.remove_event_listener_with_callback("abort", cb.as_ref().unchecked_ref());
                    }
                    // A dropped sender means the broker itself is gone.
                    result.unwrap_or_else(|_| Err(js_error(BrokerError::Disposed, None, &JsValue::UNDEFINED)))
                })
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
