//! The single-flight state machine.
//!
//! A `Broker<W>` owns the current token set and at most one refresh ("flight"). Callers that
//! need a token while a refresh is due or running become waiters of type `W` (the boundary uses
//! oneshot senders; tests use plain numbers). Every method returns the [`Effect`]s the boundary
//! must carry out; the broker itself never performs I/O and never reads a clock.
//!
//! Invariants:
//! - at most one flight exists; every waiter belongs to it and leaves it exactly once, through
//!   `Resolve`, `Reject` or `abort_waiter`;
//! - a flight's result is adopted only while that flight is current: logout, `setTokens`, a
//!   timeout or dispose end the flight, and its late result is discarded by id;
//! - generation grows by one with every token set adopted, epoch with every logout/`setTokens`;
//!   both saturate at 2^53 ([`MAX_COUNT`]) and never wrap; the epoch never decreases, and the
//!   generation never decreases within an epoch (a newer session adopted from another tab
//!   brings that tab's generation, which may be lower);
//! - a 401 for a token of an earlier epoch is never replayed: its waiter gets `LOGGED_OUT`,
//!   and so does a replay waiter whose epoch ended while it waited;
//! - refreshes that no 401 asked for (expiry, the proactive timer, cookie mode) start at most
//!   once per [`MIN_REFRESH_INTERVAL_MS`]; a 401 on the current token refreshes at once;
//! - [`Broker::fresh`] never promises a token for longer than [`Broker::get_token`] would hand
//!   it out without waiting.

use super::error::BrokerError;
use super::expiry::{self, Now};
use super::policy::{proactive_backoff_ms, retry_delay_ms, Failure};
use super::token::{wipe, TokenSet, MAX_COUNT};

/// The shortest time between two refreshes that no 401 asked for: a server that issues tokens
/// with a lifetime of a millisecond must not get a refresh per request.
pub const MIN_REFRESH_INTERVAL_MS: f64 = 1000.0;

/// How many access tokens of the current epoch the broker remembers (as hashes) to tell a late
/// 401 of this session from a 401 of an earlier one.
const SEEN_TOKENS: usize = 64;

/// A 64-bit FNV-1a hash: the broker remembers earlier tokens of the session without keeping them.
pub fn token_hash(token: &str) -> u64 {
    token.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Where a clock stops being fresh: below the returned value, `now - received` (rounded, as
/// [`Now::since`] computes it) stays below `usable`. `received + usable` itself can be a step
/// too late, because the difference rounds up to `usable` there.
fn fresh_until(received: f64, usable: f64) -> f64 {
    let mut until = received + usable;
    for _ in 0..4 {
        if !(until.is_finite() && next_down(until) - received >= usable) {
            return until;
        }
        // The difference rounds at the precision of `usable`, which is coarser than that of
        // `until` when a clock is near zero: step back by whichever is coarser.
        until -= ulp(until).max(ulp(usable));
    }
    // Unreachable by the rounding bounds; still, promise nothing past the moment of receipt.
    received
}

/// The largest f64 below a finite `x` (`f64::next_down` needs Rust 1.86).
fn next_down(x: f64) -> f64 {
    if x == 0.0 {
        -f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() - 1)
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

/// The gap from `|x|` to the next f64 up.
fn ulp(x: f64) -> f64 {
    let a = x.abs();
    f64::from_bits(a.to_bits() + 1) - a
}

fn bump(n: u64) -> u64 {
    n.saturating_add(1).min(MAX_COUNT)
}

/// Tunables, from the JS options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Refresh this long before expiry (capped at half the lifetime). JS: `leewaySeconds`.
    pub leeway_ms: f64,
    /// A refresh that does not settle within this rejects every waiter. JS: `refreshTimeoutMs`.
    pub refresh_timeout_ms: f64,
    /// Retries after a transient failure. JS: `refreshRetries`.
    pub refresh_retries: u32,
    /// A broker without tokens may still refresh (httpOnly refresh cookie, backend-for-frontend).
    pub refresh_when_anonymous: bool,
    /// No proactive refresh once this long has passed without a call or reported activity; the
    /// next call then refreshes on demand. JS: `idleTimeoutMs`.
    pub idle_timeout_ms: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config { leeway_ms: 30_000.0, refresh_timeout_ms: 10_000.0, refresh_retries: 2, refresh_when_anonymous: false, idle_timeout_ms: None }
    }
}

/// What the JS `state` property reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No tokens.
    Anonymous,
    /// Tokens held, no refresh running.
    Valid,
    /// A refresh is running.
    Refreshing,
    /// The refresh token was rejected; nothing works until new tokens are set.
    Expired,
}

impl State {
    /// The string JS sees.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Anonymous => "anonymous",
            State::Valid => "valid",
            State::Refreshing => "refreshing",
            State::Expired => "expired",
        }
    }
}

/// Why a refresh started (reported in the `refreshstart` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshReason {
    /// A token was requested inside the leeway or after expiry.
    Expiring,
    /// A request sent with the current token came back 401.
    Rejected,
    /// The proactive timer fired.
    Proactive,
    /// No tokens yet, but the refresh can run without one (cookie mode).
    Anonymous,
}

impl RefreshReason {
    /// The string JS sees in `event.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::Expiring => "expiring",
            RefreshReason::Rejected => "rejected",
            RefreshReason::Proactive => "proactive",
            RefreshReason::Anonymous => "anonymous",
        }
    }
}

/// Events for `addEventListener`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A token set was adopted (refresh or `setTokens`).
    Tokens {
        /// The new generation.
        generation: u64,
    },
    /// A refresh started.
    RefreshStart {
        /// Why.
        reason: RefreshReason,
    },
    /// A refresh ended; `error` is `None` on success.
    RefreshEnd {
        /// The failure, if any.
        error: Option<BrokerError>,
    },
    /// The session ended (refresh token rejected). Also calls `onSessionExpired`, once.
    Expired,
    /// A 401 for an older token was absorbed without a refresh.
    Stale401,
    /// `logout()` was called.
    Logout,
    /// The token endpoint asked for a DPoP nonce: the refresh is sent again with it (debug log
    /// only; listeners see one refresh).
    NonceRetry,
}

/// A decision for the boundary to carry out, in order.
#[derive(Debug, PartialEq)]
pub enum Effect<W> {
    /// Run refresh attempt `attempt` of `flight` after `delay_ms`, then report it with
    /// [`Broker::attempt_finished`]. Before running, check [`Broker::attempt_is_current`].
    Refresh {
        /// The flight id.
        flight: u64,
        /// 0 for the first attempt.
        attempt: u32,
        /// The refresh token to present (may be `None`: cookie mode, or none was ever given).
        refresh_token: Option<String>,
        /// Wait this long first (backoff).
        delay_ms: f64,
    },
    /// Arm the flight's deadline; call [`Broker::flight_timed_out`] when it fires.
    Deadline {
        /// The flight id.
        flight: u64,
        /// Milliseconds from now.
        ms: f64,
    },
    /// The flight is over: abort its attempt in progress and cancel its deadline.
    EndFlight {
        /// The flight id.
        flight: u64,
    },
    /// Resolve these waiters with this token.
    Resolve {
        /// Waiters.
        waiters: Vec<W>,
        /// The access token.
        token: String,
    },
    /// Reject these waiters.
    Reject {
        /// Waiters.
        waiters: Vec<W>,
        /// Why.
        error: BrokerError,
    },
    /// Tell the listeners.
    Emit(Event),
    /// (Re)arm the proactive timer to call [`Broker::tick`] after this many ms; `None` disarms it.
    Schedule(Option<f64>),
    /// A token set was adopted here (refresh or `setTokens`): share it with other tabs and storage.
    Publish(Shared),
    /// The session ended here: tell other tabs and clear storage.
    PublishEnd {
        /// The epoch it ended in.
        epoch: u64,
        /// The generation it ended at.
        generation: u64,
        /// `true` for `logout()`, `false` for an expired session.
        logout: bool,
    },
}

/// A token set as tabs and storage exchange it: absolute expiry on the wall clock (all tabs of
/// one browser share it), plus the generation and epoch that order sets across tabs.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    /// The generation of this set.
    pub generation: u64,
    /// The session epoch of this set.
    pub epoch: u64,
    /// The access token.
    pub access: String,
    /// The refresh token, if any.
    pub refresh: Option<String>,
    /// When the access token expires, in wall-clock ms; `None` when unknown.
    pub expires_at_wall_ms: Option<f64>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        wipe(&mut self.access);
        if let Some(r) = &mut self.refresh {
            wipe(r);
        }
    }
}

/// The current token and until when it may be used without asking the broker: both clocks
/// must be before their deadline (see [`Broker::fresh`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Fresh<'a> {
    /// The access token.
    pub token: &'a str,
    /// Fresh while `Date.now()` is below this (infinite when the lifetime is unknown).
    pub until_wall_ms: f64,
    /// Fresh while `performance.now()` is below this.
    pub until_mono_ms: f64,
}

/// The answer to a token request.
#[derive(Debug, PartialEq)]
pub enum Get {
    /// Use this token now.
    Ready(String),
    /// The caller became waiter `id` of the current flight; it settles through an effect.
    Wait(u32),
    /// Fail now.
    Fail(BrokerError),
}

#[derive(Debug)]
struct Current {
    set: TokenSet,
    received: Now,
    /// A request sent with this token came back 401: it must not be handed out again.
    rejected: bool,
}

#[derive(Debug)]
struct Flight<W> {
    id: u64,
    attempt: u32,
    refresh_token: Option<String>,
    /// The token endpoint asked for a DPoP nonce once already in this flight.
    nonce_retried: bool,
    /// `(id, waiter, session)`: the session is set for replay waiters (a 401 of that session's
    /// request), which must not be served with a later session's token.
    waiters: Vec<(u32, W, Option<u64>)>,
}

/// The broker state machine. See the module docs.
#[derive(Debug)]
pub struct Broker<W> {
    cfg: Config,
    current: Option<Current>,
    session_expired: bool,
    may_refresh_anonymous: bool,
    disposed: bool,
    generation: u64,
    epoch: u64,
    flight: Option<Flight<W>>,
    next_flight: u64,
    next_waiter: u32,
    proactive_failures: u32,
    server_offset_ms: f64,
    /// Hashes of the access tokens adopted in this epoch (the newest last, at most [`SEEN_TOKENS`]).
    seen: Vec<u64>,
    /// When the last refresh that no 401 asked for started.
    last_unasked: Option<Now>,
    /// The last call, login or activity the app reported (for `idle_timeout_ms`).
    last_activity: Option<Now>,
    /// The proactive timer was not re-armed because the session was idle.
    parked: bool,
    /// Changes with every new epoch, even once the epoch number has saturated at [`MAX_COUNT`]
    /// and no longer tells two sessions apart.
    session: u64,
}

impl<W> Broker<W> {
    /// A broker without tokens.
    pub fn new(cfg: Config) -> Self {
        Broker {
            cfg,
            current: None,
            session_expired: false,
            may_refresh_anonymous: cfg.refresh_when_anonymous,
            disposed: false,
            generation: 0,
            epoch: 0,
            flight: None,
            next_flight: 0,
            next_waiter: 0,
            proactive_failures: 0,
            server_offset_ms: 0.0,
            seen: Vec::new(),
            last_unasked: None,
            last_activity: None,
            parked: false,
            session: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// What JS sees as `state`.
    pub fn state(&self) -> State {
        if self.flight.is_some() {
            State::Refreshing
        } else if self.session_expired {
            State::Expired
        } else if self.current.is_some() {
            State::Valid
        } else {
            State::Anonymous
        }
    }

    /// Grows with every token set adopted.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Grows with every `logout()` and outside `setTokens()`.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The server clock minus the client clock, when the boundary learnt it (e.g. from a
    /// `Date` header); used only for JWTs that carry `exp` without `iat` or `expires_in`.
    pub fn server_offset_ms(&self) -> f64 {
        self.server_offset_ms
    }

    /// See [`Broker::server_offset_ms`].
    pub fn set_server_offset_ms(&mut self, ms: f64) {
        if ms.is_finite() {
            self.server_offset_ms = ms;
        }
    }

    /// The current access token, if any (whatever its age).
    pub fn access_token(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.set.access.as_str())
    }

    /// The current refresh token, if any (what a logout revokes at the server).
    pub fn refresh_token(&self) -> Option<&str> {
        self.current.as_ref().and_then(|c| c.set.refresh.as_deref())
    }

    /// When the current access token expires on the wall clock (ms), if its lifetime is known.
    pub fn expires_at_wall_ms(&self) -> Option<f64> {
        let c = self.current.as_ref()?;
        c.set.lifetime_ms.map(|l| c.received.wall_ms + l)
    }

    /// Whether there is a live session: tokens held, not expired, not disposed (a refresh may run).
    pub fn is_authenticated(&self) -> bool {
        self.current.is_some() && self.closed_error().is_none()
    }

    /// How many callers wait for the refresh in flight.
    pub fn waiting(&self) -> usize {
        self.flight.as_ref().map_or(0, |f| f.waiters.len())
    }

    /// Whether `dispose()` was called.
    pub fn is_disposed(&self) -> bool {
        self.disposed
    }

    /// The token [`Broker::get_token`] would return at once, and until when (on both clocks) it
    /// would keep doing so; `None` when a call would have to wait or fail. The boundary publishes
    /// this after every transition so the adapters can skip a call into the module.
    pub fn fresh(&self) -> Option<Fresh<'_>> {
        if self.closed_error().is_some() || self.flight.is_some() {
            return None;
        }
        let c = self.current.as_ref().filter(|c| !c.rejected)?;
        let (wall, mono) = match c.set.lifetime_ms {
            None => (f64::INFINITY, f64::INFINITY),
            Some(l) => {
                let usable = l - expiry::effective_leeway(self.cfg.leeway_ms, l);
                // A set that arrived expired: `get_token` refreshes it even with both clocks
                // set back before its receipt, so no deadline may promise it.
                if !(usable > 0.0) {
                    return None;
                }
                (fresh_until(c.received.wall_ms, usable), fresh_until(c.received.mono_ms, usable))
            }
        };
        Some(Fresh { token: &c.set.access, until_wall_ms: wall, until_mono_ms: mono })
    }

    /// Whether the flight's attempt is still the one to run (not ended by logout, timeout, ...).
    pub fn attempt_is_current(&self, flight: u64, attempt: u32) -> bool {
        matches!(&self.flight, Some(f) if f.id == flight && f.attempt == attempt)
    }

    /// `getAccessToken()`: the current token if it is fresh, else a wait on the (new or running)
    /// refresh. `waiter` is called only when the caller has to wait.
    pub fn get_token(&mut self, now: Now, waiter: impl FnOnce() -> W) -> (Get, Vec<Effect<W>>) {
        self.token_for(now, waiter, None)
    }

    /// [`Broker::get_token`] for a plain call (`replay: None`) or for the replay of a request of
    /// session `replay` (a late 401), whose waiter must not be served another session's token.
    fn token_for(&mut self, now: Now, waiter: impl FnOnce() -> W, replay: Option<u64>) -> (Get, Vec<Effect<W>>) {
        let mut fx = Vec::new();
        if let Some(e) = self.closed_error() {
            return (Get::Fail(e), fx);
        }
        self.note_activity(now, &mut fx);
        if self.flight.is_some() {
            return (self.join(waiter, replay), fx);
        }
        let cooling = self.cooldown_ms(now) > 0.0;
        let reason = match &self.current {
            None if self.may_refresh_anonymous => RefreshReason::Anonymous,
            None => return (Get::Fail(BrokerError::NotAuthenticated), fx),
            Some(c) if !c.rejected && self.is_fresh(c, now) => return (Get::Ready(c.set.access.clone()), fx),
            // Right after a refresh, a token inside its leeway but not expired still serves.
            Some(c) if !c.rejected && cooling && !self.is_expired(c, now) => {
                return (Get::Ready(c.set.access.clone()), fx)
            }
            Some(_) => RefreshReason::Expiring,
        };
        self.start_flight(reason, now, &mut fx);
        (self.join(waiter, replay), fx)
    }

    /// `tokenRejected(token)`: a request sent with `token` came back 401. An older token is a
    /// late 401: answered with the current token (or the running refresh), never a new refresh,
    /// because a second refresh would present a spent rotating refresh token. The current token
    /// is marked rejected and refreshed (single flight).
    pub fn token_rejected(&mut self, token: &str, now: Now, waiter: impl FnOnce() -> W) -> (Get, Vec<Effect<W>>) {
        if let Some(e) = self.closed_error() {
            return (Get::Fail(e), Vec::new());
        }
        let session = self.session;
        match &mut self.current {
            Some(c) if c.set.access == token => {
                c.rejected = true;
                let mut fx = Vec::new();
                if self.flight.is_none() {
                    self.start_flight(RefreshReason::Rejected, now, &mut fx);
                }
                (self.join(waiter, Some(session)), fx)
            }
            // A token of an earlier session (before a logout, setTokens or a login elsewhere), or
            // one this broker never handed out: the request belongs to no live session.
            _ if !self.seen.contains(&token_hash(token)) => (Get::Fail(BrokerError::LoggedOut), Vec::new()),
            // An earlier token of this session: a late 401, served without a new refresh.
            _ => {
                let (get, mut fx) = self.token_for(now, waiter, Some(session));
                fx.insert(0, Effect::Emit(Event::Stale401));
                (get, fx)
            }
        }
    }

    /// The caller's `AbortSignal` fired: its waiter leaves the flight (the refresh goes on for
    /// the others). Returns the waiter to reject with `ABORTED`, or `None` if it already settled.
    pub fn abort_waiter(&mut self, id: u32) -> Option<W> {
        let f = self.flight.as_mut()?;
        let pos = f.waiters.iter().position(|w| w.0 == id)?;
        Some(f.waiters.swap_remove(pos).1)
    }

    /// The outcome of refresh attempt `attempt` of `flight`. Ignored (no effects) when that flight
    /// or attempt is no longer current: its late result must not undo a logout or a timeout.
    pub fn attempt_finished(
        &mut self,
        flight: u64,
        attempt: u32,
        outcome: Result<TokenSet, Failure>,
        now: Now,
    ) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if !self.attempt_is_current(flight, attempt) {
            return fx;
        }
        let error = match outcome {
            Ok(set) => {
                let Some(f) = self.flight.take() else { return fx };
                self.proactive_failures = 0;
                self.adopt(set, now, &mut fx);
                fx.push(Effect::Emit(Event::RefreshEnd { error: None }));
                self.settle(f, &mut fx);
                return fx;
            }
            // The nonce retry is not one of the `refresh_retries`.
            Err(Failure::Nonce) if self.flight.as_ref().is_some_and(|f| !f.nonce_retried) => {
                let mut fx = self.retry_attempt(flight, 0.0, true);
                fx.push(Effect::Emit(Event::NonceRetry));
                return fx;
            }
            Err(Failure::Transient { retry_after_s }) if attempt.saturating_sub(self.nonce_retries()) < self.cfg.refresh_retries => {
                let delay = retry_delay_ms((attempt + 1).saturating_sub(self.nonce_retries()), retry_after_s);
                return self.retry_attempt(flight, delay, false);
            }
            // A second nonce challenge in one refresh: the server is not taking our nonces.
            Err(Failure::Transient { .. } | Failure::Permanent | Failure::Nonce) => BrokerError::RefreshFailed,
            Err(Failure::Terminal) => BrokerError::SessionExpired,
            Err(Failure::Malformed) => BrokerError::InvalidTokenResponse,
            Err(Failure::Coded(e)) => e,
        };
        self.fail_flight(error, now, &mut fx);
        fx
    }

    /// How many of the current flight's attempts were nonce retries (0 or 1).
    fn nonce_retries(&self) -> u32 {
        u32::from(self.flight.as_ref().is_some_and(|f| f.nonce_retried))
    }

    /// Starts the next attempt of the current flight after `delay_ms`.
    fn retry_attempt(&mut self, flight: u64, delay_ms: f64, nonce: bool) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if let Some(f) = self.flight.as_mut() {
            f.attempt += 1;
            f.nonce_retried |= nonce;
            fx.push(Effect::Refresh { flight, attempt: f.attempt, refresh_token: f.refresh_token.clone(), delay_ms });
        }
        fx
    }

    /// The session's tokens can no longer be used, though no server said so: a DPoP-bound
    /// session whose key is gone (storage cleared, another browser profile). It ends exactly as
    /// if the refresh token had been rejected: `SESSION_EXPIRED`, every tab told once.
    pub fn end_session(&mut self) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if self.closed_error().is_some() || self.current.is_none() {
            return fx;
        }
        self.reject_flight(BrokerError::SessionExpired, &mut fx);
        self.expire(Vec::new(), &mut fx);
        fx
    }

    /// The flight's deadline fired: every waiter gets `REFRESH_TIMEOUT` and the late result of
    /// the attempt in progress will be discarded.
    pub fn flight_timed_out(&mut self, flight: u64, now: Now) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if matches!(&self.flight, Some(f) if f.id == flight) {
            self.fail_flight(BrokerError::RefreshTimeout, now, &mut fx);
        }
        fx
    }

    /// The app reports user activity (`broker.touch()`), or the adapters served a request from
    /// the fast path at `at`: the session is not idle. Re-arms a timer parked by idleness.
    pub fn touch(&mut self, at: Now) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if self.closed_error().is_none() {
            self.note_activity(at, &mut fx);
        }
        fx
    }

    /// The proactive timer fired (or the page became visible / came online): refresh in the
    /// background if the token is due, else re-arm the timer. An idle session is not kept
    /// alive: the timer parks, and the next call refreshes on demand.
    pub fn tick(&mut self, now: Now) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if self.closed_error().is_some() || self.flight.is_some() {
            return fx;
        }
        let Some(c) = &self.current else { return fx };
        let idle = match (self.cfg.idle_timeout_ms, self.last_activity) {
            (Some(limit), Some(last)) => now.since(last) >= limit,
            _ => false,
        };
        if idle && !c.rejected {
            self.parked = true;
            fx.push(Effect::Schedule(None));
            return fx;
        }
        let cooldown = self.cooldown_ms(now);
        if !c.rejected && !self.is_fresh(c, now) && cooldown > 0.0 {
            fx.push(Effect::Schedule(Some(cooldown)));
        } else if c.rejected || !self.is_fresh(c, now) {
            self.start_flight(RefreshReason::Proactive, now, &mut fx);
        } else {
            fx.push(Effect::Schedule(self.due_in(now)));
        }
        fx
    }

    /// `setTokens()` from outside (e.g. after login): adopted at once, a new epoch begins, a
    /// running refresh is discarded and its waiters get the new token.
    pub fn set_tokens(&mut self, set: TokenSet, now: Now) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if self.disposed {
            return fx;
        }
        self.new_epoch(bump(self.epoch));
        self.session_expired = false;
        self.proactive_failures = 0;
        // A login is activity.
        self.last_activity = Some(now);
        self.parked = false;
        // Keep the refresh token only within one session: a set without one starts afresh.
        self.current = None;
        self.adopt(set, now, &mut fx);
        if let Some(f) = self.flight.take() {
            fx.push(Effect::Emit(Event::RefreshEnd { error: None }));
            self.settle(f, &mut fx);
        }
        fx
    }

    /// `logout()`: tokens cleared, a new epoch, waiters rejected with `LOGGED_OUT`, and a running
    /// refresh discarded so that it can never revive the session.
    pub fn logout(&mut self) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        if self.disposed {
            return fx;
        }
        self.new_epoch(bump(self.epoch));
        self.current = None;
        self.session_expired = false;
        self.may_refresh_anonymous = false;
        self.reject_flight(BrokerError::LoggedOut, &mut fx);
        fx.push(Effect::Emit(Event::Logout));
        fx.push(Effect::Schedule(None));
        fx.push(Effect::PublishEnd { epoch: self.epoch, generation: self.generation, logout: true });
        fx
    }

    /// A token set from another tab or from storage. Adopted only when it is newer: a later epoch
    /// (a login or logout elsewhere), or the same epoch and a higher generation. A running
    /// refresh then ends and its waiters get the new token, so a tab never refreshes a
    /// generation another tab already refreshed. Older sets (a late message, a duplicated
    /// tab's copy of storage) are ignored. Returns no effects when ignored.
    pub fn adopt_shared(&mut self, shared: Shared, now: Now) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        let (epoch, generation) = (shared.epoch.min(MAX_COUNT), shared.generation.min(MAX_COUNT));
        let newer = epoch > self.epoch || (epoch == self.epoch && generation > self.generation);
        if self.disposed || !newer {
            return fx;
        }
        if epoch != self.epoch {
            self.new_epoch(epoch);
        }
        self.generation = generation;
        self.proactive_failures = 0;
        let lifetime_ms = shared.expires_at_wall_ms.map(|x| (x - now.wall_ms).max(0.0));
        let mut shared = shared;
        let set = TokenSet {
            access: std::mem::take(&mut shared.access),
            refresh: shared.refresh.take(),
            lifetime_ms,
        };
        self.install(set, now, &mut fx);
        if let Some(f) = self.flight.take() {
            fx.push(Effect::Emit(Event::RefreshEnd { error: None }));
            self.settle(f, &mut fx);
        }
        fx
    }

    /// Another tab ended the session. A logout wins over anything of its epoch or older,
    /// including a refresh in flight here; an expiry applies to the same session at the same or
    /// a newer generation (an expiry of an older generation says nothing about newer tokens).
    pub fn end_shared(&mut self, epoch: u64, generation: u64, logout: bool) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        let (epoch, generation) = (epoch.min(MAX_COUNT), generation.min(MAX_COUNT));
        if self.disposed || epoch < self.epoch {
            return fx;
        }
        if logout {
            if epoch != self.epoch {
                self.new_epoch(epoch);
            }
            self.current = None;
            self.session_expired = false;
            self.may_refresh_anonymous = false;
            self.reject_flight(BrokerError::LoggedOut, &mut fx);
            fx.push(Effect::Emit(Event::Logout));
        } else {
            if epoch == self.epoch && generation < self.generation {
                return fx;
            }
            if self.session_expired && epoch == self.epoch {
                return fx; // already told
            }
            if epoch != self.epoch {
                self.new_epoch(epoch);
            }
            self.generation = self.generation.max(generation);
            self.current = None;
            self.session_expired = true;
            self.reject_flight(BrokerError::SessionExpired, &mut fx);
            fx.push(Effect::Emit(Event::Expired));
        }
        fx.push(Effect::Schedule(None));
        fx
    }

    /// The current state as other tabs should see it (answering a new tab's hello).
    pub fn shared(&self, now: Now) -> Option<Shared> {
        let c = self.current.as_ref()?;
        Some(Shared {
            generation: self.generation,
            epoch: self.epoch,
            access: c.set.access.clone(),
            refresh: c.set.refresh.clone(),
            expires_at_wall_ms: expiry::remaining(c.received, c.set.lifetime_ms, now).map(|r| now.wall_ms + r),
        })
    }

    /// `dispose()`: every waiter rejected with `DISPOSED`; later calls fail with `DISPOSED`.
    pub fn dispose(&mut self) -> Vec<Effect<W>> {
        let mut fx = Vec::new();
        self.disposed = true;
        self.current = None;
        self.reject_flight(BrokerError::Disposed, &mut fx);
        fx.push(Effect::Schedule(None));
        fx
    }

    // ---- internals ----

    fn closed_error(&self) -> Option<BrokerError> {
        if self.disposed {
            Some(BrokerError::Disposed)
        } else if self.session_expired {
            Some(BrokerError::SessionExpired)
        } else {
            None
        }
    }

    /// Records activity at `at` (never moving it back); a timer parked by idleness re-arms.
    fn note_activity(&mut self, at: Now, fx: &mut Vec<Effect<W>>) {
        if self.cfg.idle_timeout_ms.is_none() {
            return;
        }
        let later = self.last_activity.is_none_or(|last| at.since(last) > 0.0);
        if later {
            self.last_activity = Some(at);
        }
        if self.parked {
            self.parked = false;
            if self.flight.is_none() && self.current.is_some() {
                fx.push(Effect::Schedule(self.due_in(at)));
            }
        }
    }

    /// A new session epoch: the tokens of the earlier one are forgotten.
    fn new_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.session = self.session.wrapping_add(1);
        self.seen.clear();
    }

    /// Milliseconds until a refresh that no 401 asked for may start (0: now).
    fn cooldown_ms(&self, now: Now) -> f64 {
        let left = self.last_unasked.map_or(0.0, |t| MIN_REFRESH_INTERVAL_MS - now.since(t));
        if left > 0.0 { left } else { 0.0 }
    }

    fn is_expired(&self, c: &Current, now: Now) -> bool {
        expiry::remaining(c.received, c.set.lifetime_ms, now).is_some_and(|r| r <= 0.0)
    }

    fn is_fresh(&self, c: &Current, now: Now) -> bool {
        // Unknown lifetime: trust the token until a 401 says otherwise.
        expiry::refresh_due_in(c.received, c.set.lifetime_ms, self.cfg.leeway_ms, now).is_none_or(|d| d > 0.0)
    }

    fn due_in(&self, now: Now) -> Option<f64> {
        let c = self.current.as_ref()?;
        expiry::refresh_due_in(c.received, c.set.lifetime_ms, self.cfg.leeway_ms, now)
    }

    fn join(&mut self, waiter: impl FnOnce() -> W, replay_epoch: Option<u64>) -> Get {
        let Some(f) = self.flight.as_mut() else { return Get::Fail(BrokerError::RefreshFailed) };
        let id = self.next_waiter;
        self.next_waiter = self.next_waiter.wrapping_add(1);
        f.waiters.push((id, waiter(), replay_epoch));
        Get::Wait(id)
    }

    fn start_flight(&mut self, reason: RefreshReason, now: Now, fx: &mut Vec<Effect<W>>) {
        self.next_flight += 1;
        let id = self.next_flight;
        let delay_ms = if reason == RefreshReason::Rejected { 0.0 } else { self.cooldown_ms(now) };
        if reason != RefreshReason::Rejected {
            // The interval counts from when the attempt will really go out.
            self.last_unasked = Some(Now { wall_ms: now.wall_ms + delay_ms, mono_ms: now.mono_ms + delay_ms });
        }
        let refresh_token = self.current.as_ref().and_then(|c| c.set.refresh.clone());
        fx.push(Effect::Emit(Event::RefreshStart { reason }));
        fx.push(Effect::Schedule(None));
        fx.push(Effect::Deadline { flight: id, ms: self.cfg.refresh_timeout_ms + delay_ms });
        fx.push(Effect::Refresh { flight: id, attempt: 0, refresh_token: refresh_token.clone(), delay_ms });
        self.flight = Some(Flight { id, attempt: 0, refresh_token, nonce_retried: false, waiters: Vec::new() });
    }

    /// Adopts a token set atomically: access, refresh, expiry and generation change together.
    /// A set without a refresh token keeps the previous one (RFC 6749 §6).
    fn adopt(&mut self, mut set: TokenSet, now: Now, fx: &mut Vec<Effect<W>>) {
        if set.refresh.is_none() {
            set.refresh = self.current.take().and_then(|mut c| c.set.refresh.take());
        }
        self.generation = bump(self.generation);
        fx.push(Effect::Publish(Shared {
            generation: self.generation,
            epoch: self.epoch,
            access: set.access.clone(),
            refresh: set.refresh.clone(),
            expires_at_wall_ms: set.lifetime_ms.map(|l| now.wall_ms + l),
        }));
        self.install(set, now, fx);
    }

    fn install(&mut self, set: TokenSet, now: Now, fx: &mut Vec<Effect<W>>) {
        if self.seen.len() >= SEEN_TOKENS {
            self.seen.remove(0);
        }
        self.seen.push(token_hash(&set.access));
        self.current = Some(Current { set, received: now, rejected: false });
        self.parked = false;
        self.session_expired = false;
        self.may_refresh_anonymous = self.cfg.refresh_when_anonymous;
        fx.push(Effect::Emit(Event::Tokens { generation: self.generation }));
        fx.push(Effect::Schedule(self.due_in(now)));
    }

    /// Ends the flight successfully: every waiter gets the current token.
    fn settle(&mut self, f: Flight<W>, fx: &mut Vec<Effect<W>>) {
        fx.push(Effect::EndFlight { flight: f.id });
        // A request of an earlier session is never replayed with this session's token.
        let session = self.session;
        let (stale, waiters): (Vec<_>, Vec<_>) = f.waiters.into_iter().partition(|w| w.2.is_some_and(|s| s != session));
        if !stale.is_empty() {
            fx.push(Effect::Reject { waiters: stale.into_iter().map(|w| w.1).collect(), error: BrokerError::LoggedOut });
        }
        let waiters = waiters.into_iter().map(|w| w.1).collect::<Vec<_>>();
        match &self.current {
            Some(c) if !waiters.is_empty() => fx.push(Effect::Resolve { waiters, token: c.set.access.clone() }),
            Some(_) => {}
            None => fx.push(Effect::Reject { waiters, error: BrokerError::NotAuthenticated }),
        }
    }

    fn reject_flight(&mut self, error: BrokerError, fx: &mut Vec<Effect<W>>) {
        if let Some(f) = self.flight.take() {
            fx.push(Effect::EndFlight { flight: f.id });
            fx.push(Effect::Emit(Event::RefreshEnd { error: Some(error) }));
            let waiters: Vec<W> = f.waiters.into_iter().map(|w| w.1).collect();
            if !waiters.is_empty() {
                fx.push(Effect::Reject { waiters, error });
            }
        }
    }

    /// The refresh token is dead: clear everything, tell everyone once.
    fn expire(&mut self, waiters: Vec<W>, fx: &mut Vec<Effect<W>>) {
        self.current = None;
        self.session_expired = true;
        if !waiters.is_empty() {
            fx.push(Effect::Reject { waiters, error: BrokerError::SessionExpired });
        }
        fx.push(Effect::Emit(Event::Expired));
        fx.push(Effect::Schedule(None));
        fx.push(Effect::PublishEnd { epoch: self.epoch, generation: self.generation, logout: false });
    }

    fn fail_flight(&mut self, error: BrokerError, now: Now, fx: &mut Vec<Effect<W>>) {
        let Some(f) = self.flight.take() else { return };
        fx.push(Effect::EndFlight { flight: f.id });
        fx.push(Effect::Emit(Event::RefreshEnd { error: Some(error) }));
        let waiters: Vec<W> = f.waiters.into_iter().map(|w| w.1).collect();
        if error == BrokerError::SessionExpired {
            self.expire(waiters, fx);
            return;
        }
        // A passing failure: a token that has not expired and was not rejected still serves
        // the waiters (a failed early refresh must not fail requests that would succeed).
        let usable = self.current.as_ref().filter(|c| {
            !c.rejected && expiry::remaining(c.received, c.set.lifetime_ms, now).is_none_or(|r| r > 0.0)
        });
        match usable {
            Some(c) if !waiters.is_empty() => fx.push(Effect::Resolve { waiters, token: c.set.access.clone() }),
            Some(_) => {}
            None if !waiters.is_empty() => fx.push(Effect::Reject { waiters, error }),
            None => {}
        }
        // Background retries back off (1 s, 2 s, ... 60 s) until the token expires; after that
        // the next request refreshes. Never a tight loop.
        self.proactive_failures += 1;
        let left = self.current.as_ref().and_then(|c| expiry::remaining(c.received, c.set.lifetime_ms, now));
        let next = match left {
            Some(l) if l > 0.0 => Some(proactive_backoff_ms(self.proactive_failures).min(l)),
            _ => None,
        };
        fx.push(Effect::Schedule(next));
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
// proptest is a host-only dev-dependency: not in the wasm-pack test build.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "broker_props.rs"]
mod props;
