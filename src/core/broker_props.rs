//! Property tests of the single-flight state machine (issue 14, part 1).
//!
//! Random sequences of every input the core takes are driven through a model of the boundary:
//! waiters are `u32` ids allocated here, `Refresh` effects become attempts that later steps may
//! finish (or finish late, after their flight ended), and every effect is checked against what
//! the model knows. The module is a child of `broker` so that it can compare the model with the
//! broker's private flight (a waiter the broker dropped without an effect would otherwise be
//! invisible).
//!
//! Checked after every step: each waiter leaves once (resolve, reject or abort) and none is
//! left after dispose; one flight at a time, whose attempt is always out; retries only after a
//! transient failure and within `refresh_retries`; the refresh token presented is the current,
//! unspent one of the current session, and the same one goes out in a new flight only after
//! the previous flight failed; a late 401 never starts a refresh, a 401 of an earlier session
//! fails with `LOGGED_OUT` and does nothing; epoch and (within an epoch) generation never go
//! back nor past 2^53; nothing waiting at a logout is resolved, no token of an earlier session
//! (or one a 401 rejected) is handed out, replay waiters never cross sessions; refreshes no
//! 401 asked for are 1 s apart; `fresh()` never promises more than `get_token`.
//!
//! `PROPTEST_CASES=N` sets the number of sequences (default 256): proptest itself ignores the
//! variable once a test sets its case count, so `config` (in parsers_props.rs) reads it.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

type B = Broker<u32>;
type Fx = Vec<Effect<u32>>;

// One configuration for every property of the core (case count from PROPTEST_CASES, a fixed
// seed for the default run, no regression files in the source tree).
use crate::core::parsers_props::config;

// ---- inputs ----

/// A generation or epoch in a message: relative to the broker's own, or an absolute value
/// (including the saturation edge and numbers no JS number can hold).
#[derive(Debug, Clone, Copy)]
enum Count {
    Rel(i64),
    Abs(u64),
}

#[derive(Debug, Clone)]
enum Tok {
    Current,
    /// An earlier token of the current session (falls back to the current one).
    Older(usize),
    /// A token of an earlier session (falls back to an unknown one).
    Earlier(usize),
    Unknown(String),
}

#[derive(Debug, Clone, Copy)]
enum Pick {
    Current,
    /// A late report: an attempt of an ended flight, or an id that was never current.
    Stale(usize),
}

#[derive(Debug, Clone)]
enum Outcome {
    Ok { refresh: bool, life_s: Option<f64> },
    Err(Failure),
}

#[derive(Debug, Clone)]
enum Step {
    Get,
    Rejected(Tok),
    Finish(Pick, Outcome),
    TimedOut(Pick),
    Abort { live: bool, idx: usize, raw: u32 },
    Logout,
    SetTokens { refresh: bool, life_s: Option<f64> },
    Dispose,
    EndSession,
    Tick,
    Touch,
    Clock { wall: f64, mono: f64 },
    Adopt { epoch: Count, generation: Count, expires: Option<(bool, f64)>, refresh: bool },
    End { epoch: Count, generation: Count, logout: bool },
    Offset(f64),
}

fn life_s() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        Just(Some(0.001)),
        Just(Some(0.0013)),
        Just(Some(1e-9)),
        Just(Some(1.0)),
        Just(Some(2.0)),
        Just(Some(60.0)),
        Just(Some(3600.0)),
        (1e-6f64..1e6).prop_map(Some),
    ]
}

fn delta_ms() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => Just(0.0),
        6 => 0.0f64..5_000.0,
        2 => -5_000.0f64..0.0,
        2 => Just(3_600_000.0),
        2 => Just(-3_600_000.0),
        2 => 0.0f64..120_000.0,
        1 => prop::sample::select(vec![0.5, 1.0, 999.0, 1_000.0, 1_001.0, 30_000.0]),
    ]
}

fn count() -> impl Strategy<Value = Count> {
    prop_oneof![
        4 => (-2i64..=2).prop_map(Count::Rel),
        1 => prop::sample::select(vec![0, 1, MAX_COUNT - 1, MAX_COUNT, MAX_COUNT + 1, u64::MAX]).prop_map(Count::Abs),
        1 => any::<u64>().prop_map(Count::Abs),
    ]
}

fn broker_error() -> impl Strategy<Value = BrokerError> {
    prop::sample::select(vec![
        BrokerError::NotAuthenticated,
        BrokerError::SessionExpired,
        BrokerError::RefreshFailed,
        BrokerError::RefreshTimeout,
        BrokerError::Aborted,
        BrokerError::InvalidOptions,
        BrokerError::InvalidTokenResponse,
        BrokerError::LoggedOut,
        BrokerError::Disposed,
    ])
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let retry_after = prop_oneof![
        Just(None),
        (0.0f64..120.0).prop_map(Some),
        prop::sample::select(vec![0.0, -1.0, 1e9, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]).prop_map(Some),
    ];
    prop_oneof![
        5 => (any::<bool>(), life_s()).prop_map(|(refresh, life_s)| Outcome::Ok { refresh, life_s }),
        4 => retry_after.prop_map(|retry_after_s| Outcome::Err(Failure::Transient { retry_after_s })),
        1 => Just(Outcome::Err(Failure::Terminal)),
        1 => Just(Outcome::Err(Failure::Permanent)),
        1 => Just(Outcome::Err(Failure::Malformed)),
        1 => broker_error().prop_map(|e| Outcome::Err(Failure::Coded(e))),
        1 => Just(Outcome::Err(Failure::Nonce)),
    ]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![3 => Just(Pick::Current), 1 => any::<usize>().prop_map(Pick::Stale)]
}

fn step() -> impl Strategy<Value = Step> {
    let tok = prop_oneof![
        3 => Just(Tok::Current),
        2 => any::<usize>().prop_map(Tok::Older),
        2 => any::<usize>().prop_map(Tok::Earlier),
        1 => "[!-~]{1,12}".prop_map(Tok::Unknown),
    ];
    let expires = prop_oneof![
        1 => Just(None),
        // Relative to the wall clock: expired an hour ago ... valid for an hour.
        4 => prop_oneof![
            Just(-3_600_000.0), Just(-1.0), Just(0.0), Just(0.5), Just(1.0), Just(1e-6), Just(60_000.0),
            Just(3_600_000.0), -120_000.0f64..120_000.0,
        ].prop_map(|ms| Some((true, ms))),
        1 => prop::sample::select(vec![0.0, -1e300, 1e300, f64::MAX, f64::MIN]).prop_map(|x| Some((false, x))),
    ];
    prop_oneof![
        12 => Just(Step::Get),
        8 => tok.prop_map(Step::Rejected),
        12 => (pick(), outcome()).prop_map(|(p, o)| Step::Finish(p, o)),
        2 => pick().prop_map(Step::TimedOut),
        3 => (any::<bool>(), any::<usize>(), any::<u32>()).prop_map(|(live, idx, raw)| Step::Abort { live, idx, raw }),
        2 => Just(Step::Logout),
        3 => (any::<bool>(), life_s()).prop_map(|(refresh, life_s)| Step::SetTokens { refresh, life_s }),
        1 => Just(Step::Dispose),
        1 => Just(Step::EndSession),
        5 => Just(Step::Tick),
        2 => Just(Step::Touch),
        10 => (delta_ms(), delta_ms()).prop_map(|(wall, mono)| Step::Clock { wall, mono }),
        4 => (count(), count(), expires, any::<bool>())
            .prop_map(|(epoch, generation, expires, refresh)| Step::Adopt { epoch, generation, expires, refresh }),
        2 => (count(), count(), any::<bool>()).prop_map(|(epoch, generation, logout)| Step::End { epoch, generation, logout }),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -1e7f64..1e7].prop_map(Step::Offset),
    ]
}

fn broker_config() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec![0.0, 10_000.0, 30_000.0]),
        0u32..=3,
        any::<bool>(),
        prop::sample::select(vec![None, Some(5_000.0), Some(120_000.0)]),
    )
        .prop_map(|(leeway_ms, refresh_retries, refresh_when_anonymous, idle_timeout_ms)| Config {
            leeway_ms,
            refresh_timeout_ms: 10_000.0,
            refresh_retries,
            refresh_when_anonymous,
            idle_timeout_ms,
        })
}

fn start() -> impl Strategy<Value = Now> {
    (prop::sample::select(vec![1.7e12, 0.0, 86_400_000.0]), prop::sample::select(vec![0.0, 500.25, 1e9]))
        .prop_map(|(wall_ms, mono_ms)| Now { wall_ms, mono_ms })
}

// ---- the model of the boundary ----

#[derive(Debug)]
struct Waiter {
    broker_id: u32,
    /// Joined through `token_rejected`: a request of this session that will be replayed.
    replay: bool,
    session: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Running,
    /// The server said no, or no answer came in time: the refresh token may be presented again.
    Failed,
    Succeeded,
    /// Logout, setTokens, another tab, dispose.
    Superseded,
}

#[derive(Debug)]
struct FlightInfo {
    refresh_token: Option<String>,
    end: End,
}

#[derive(Debug, Clone, Copy)]
struct Minted {
    session: u64,
    epoch: u64,
}

/// What the step that produced a batch of effects was, for judging them.
#[derive(Debug, Default)]
struct Ctx {
    /// The flight ended by this step ends this way.
    end: Option<End>,
    /// This step reported a transient failure of this attempt: a retry may follow.
    retry_of: Option<(u64, u32)>,
    /// That failure was a DPoP nonce challenge: the retry, if any, goes out at once.
    nonce: bool,
    /// A refresh succeeded: a set without a refresh token keeps the one presented.
    keep_refresh: bool,
    /// The refresh token this step's successful refresh rotated away.
    spends: Option<String>,
    /// A 401 for an older token of this session: it must not refresh on its own.
    older_401: bool,
    /// Why the flight this step started started (its `RefreshStart` precedes its `Refresh`).
    reason: Option<RefreshReason>,
}

struct Model {
    b: B,
    cfg: Config,
    now: Now,
    next_w: u32,
    live: BTreeMap<u32, Waiter>,
    left_ids: Vec<u32>,
    logged_out: BTreeSet<u32>,
    pending: Vec<(u64, u32)>,
    open: Option<u64>,
    last_flight: u64,
    flights: HashMap<u64, FlightInfo>,
    /// Flights that had their one DPoP nonce retry.
    nonce_retried: HashSet<u64>,
    /// The last flight that presented a refresh token in its first attempt, per
    /// (session, adoption count): counted by adoptions, not by the broker's generation, which
    /// stops growing at `MAX_COUNT`.
    presented: HashMap<(u64, u64), u64>,
    access: HashMap<String, Minted>,
    refresh: HashMap<String, u64>,
    adopted: Vec<String>,
    /// The offered set of this step: registered once the broker says it adopted it.
    offered: Option<(String, Option<String>)>,
    /// Bumped by logout, setTokens and a newer epoch from another tab: unlike the epoch number
    /// it still tells sessions apart once the epoch has saturated.
    session: u64,
    /// Token sets adopted so far.
    adoptions: u64,
    /// The refresh token the broker should present next (RFC 6749 §6: a refresh response
    /// without one keeps the previous one; a new session or another tab's set replaces it).
    rt_current: Option<String>,
    /// Refresh tokens a successful refresh replaced: presenting one again is reuse.
    spent: BTreeSet<String>,
    /// When the last refresh that no 401 asked for went out.
    last_unasked: Option<Now>,
    /// Access tokens a 401 rejected: never handed out again.
    rejected: BTreeSet<String>,
    generation: u64,
    epoch: u64,
    disposed: bool,
    minted: u64,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(TestCaseError::fail(format!($($fmt)+)));
        }
    };
}

impl Model {
    fn new(cfg: Config, now: Now) -> Self {
        Model {
            b: B::new(cfg),
            cfg,
            now,
            next_w: 0,
            live: BTreeMap::new(),
            left_ids: Vec::new(),
            logged_out: BTreeSet::new(),
            pending: Vec::new(),
            open: None,
            last_flight: 0,
            flights: HashMap::new(),
            nonce_retried: HashSet::new(),
            presented: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            adopted: Vec::new(),
            offered: None,
            session: 0,
            adoptions: 0,
            rt_current: None,
            spent: BTreeSet::new(),
            last_unasked: None,
            rejected: BTreeSet::new(),
            generation: 0,
            epoch: 0,
            disposed: false,
            minted: 0,
        }
    }

    fn mint(&mut self, prefix: &str, refresh: bool, lifetime_ms: Option<f64>) -> TokenSet {
        self.minted += 1;
        let access = format!("{prefix}{}", self.minted);
        let refresh = refresh.then(|| format!("r{prefix}{}", self.minted));
        self.offered = Some((access.clone(), refresh.clone()));
        TokenSet { access, refresh, lifetime_ms }
    }

    fn count(&self, c: Count, own: u64) -> u64 {
        match c {
            Count::Rel(d) => (i128::from(own) + i128::from(d)).clamp(0, i128::from(u64::MAX)) as u64,
            Count::Abs(x) => x,
        }
    }

    /// Calls `op` with a waiter factory and records the waiter if the broker kept it.
    fn join(&mut self, replay: bool, op: impl FnOnce(&mut B, Now, &dyn Fn() -> u32) -> (Get, Fx)) -> Result<(Get, Fx), TestCaseError> {
        let w = self.next_w;
        let called = Cell::new(false);
        let (get, fx) = op(&mut self.b, self.now, &|| {
            called.set(true);
            w
        });
        match &get {
            Get::Wait(id) => {
                ensure!(called.get(), "Wait without taking a waiter");
                ensure!(!self.live.values().any(|x| x.broker_id == *id), "waiter id {id} handed out twice");
                self.next_w += 1;
                self.live.insert(w, Waiter { broker_id: *id, replay, session: self.session });
            }
            Get::Ready(t) => {
                ensure!(!called.get(), "a waiter was taken for a Ready answer");
                ensure!(Some(t.as_str()) == self.b.access_token(), "Ready({t}) is not the current token");
                ensure!(!self.rejected.contains(t), "Ready({t}) after a 401 rejected it");
                ensure!(self.access.get(t).is_some_and(|m| m.session == self.session), "Ready({t}) from another session");
            }
            Get::Fail(_) => ensure!(!called.get(), "a waiter was taken for a failure"),
        }
        Ok((get, fx))
    }

    fn step(&mut self, s: &Step) -> Result<(), TestCaseError> {
        self.offered = None;
        let epoch_before = self.b.epoch();
        let was_disposed = self.disposed;
        let mut ctx = Ctx::default();
        let fx = match s {
            Step::Get => self.join(false, |b, now, w| b.get_token(now, w))?.1,
            Step::Rejected(kind) => {
                let marked = self.b.current.as_ref().map(|c| c.rejected);
                let (fx, older) = self.rejected(kind)?;
                if older {
                    ctx.older_401 = true;
                    ensure!(self.b.current.as_ref().map(|c| c.rejected) == marked, "a late 401 marked the current token");
                }
                fx
            }
            Step::Finish(p, outcome) => {
                let (flight, attempt, current) = self.pick(*p);
                let outcome = match outcome {
                    Outcome::Ok { refresh, life_s } => Ok(self.mint("a", *refresh, life_s.map(|s| s * 1000.0))),
                    Outcome::Err(f) => Err(*f),
                };
                if current {
                    ctx.end = Some(if outcome.is_ok() { End::Succeeded } else { End::Failed });
                    if let Ok(set) = &outcome {
                        ctx.keep_refresh = true;
                        ctx.spends = set.refresh.as_ref().and_then(|_| self.flights[&flight].refresh_token.clone());
                    }
                    if let Err(Failure::Transient { .. } | Failure::Nonce) = outcome {
                        ctx.retry_of = Some((flight, attempt));
                        ctx.nonce = matches!(outcome, Err(Failure::Nonce));
                    }
                }
                let g = self.b.generation();
                let fx = self.b.attempt_finished(flight, attempt, outcome, self.now);
                if !current {
                    ensure!(fx.is_empty() && self.b.generation() == g, "a late result changed something: {fx:?}");
                }
                fx
            }
            Step::TimedOut(p) => {
                let flight = match (p, &self.b.flight) {
                    (Pick::Current, Some(f)) => f.id,
                    _ => self.pick(Pick::Stale(match p {
                        Pick::Stale(i) => *i,
                        Pick::Current => 0,
                    }))
                    .0,
                };
                let current = self.b.flight.as_ref().is_some_and(|f| f.id == flight);
                ctx.end = Some(End::Failed);
                let fx = self.b.flight_timed_out(flight, self.now);
                ensure!(current || fx.is_empty(), "a stale deadline did something: {fx:?}");
                ensure!(self.b.flight.as_ref().is_none_or(|f| f.id != flight), "flight {flight} outlived its deadline");
                fx
            }
            Step::Abort { live, idx, raw } => {
                if *live && !self.live.is_empty() {
                    let (&w, info) = self.live.iter().nth(idx % self.live.len()).unwrap();
                    let id = info.broker_id;
                    let got = self.b.abort_waiter(id);
                    ensure!(got == Some(w), "abort of live waiter {w} (id {id}) returned {got:?}");
                    self.live.remove(&w);
                    self.left_ids.push(id);
                } else {
                    let id = if self.left_ids.is_empty() || !*live { *raw } else { self.left_ids[idx % self.left_ids.len()] };
                    if !self.live.values().any(|x| x.broker_id == id) {
                        let got = self.b.abort_waiter(id);
                        ensure!(got.is_none(), "abort of unknown id {id} returned {got:?}");
                    }
                }
                Vec::new()
            }
            Step::Logout => {
                let before: Vec<u32> = self.live.keys().copied().collect();
                let fx = self.b.logout();
                if !was_disposed {
                    self.session += 1;
                }
                self.logged_out.extend(before);
                fx
            }
            Step::SetTokens { refresh, life_s } => {
                let set = self.mint("s", *refresh, life_s.map(|s| s * 1000.0));
                let fx = self.b.set_tokens(set, self.now);
                if !was_disposed {
                    self.session += 1;
                }
                fx
            }
            Step::Dispose => {
                self.disposed = true;
                self.b.dispose()
            }
            Step::EndSession => {
                if self.open.is_some() {
                    ctx.end = Some(End::Failed);
                }
                self.b.end_session()
            }
            Step::Tick => self.b.tick(self.now),
            Step::Touch => self.b.touch(self.now),
            Step::Clock { wall, mono } => {
                self.now.wall_ms += wall;
                self.now.mono_ms += mono;
                Vec::new()
            }
            Step::Adopt { epoch, generation, expires, refresh } => {
                let (e, g) = (self.count(*epoch, self.b.epoch()), self.count(*generation, self.b.generation()));
                let expires_at_wall_ms = expires.map(|(rel, x)| if rel { self.now.wall_ms + x } else { x });
                let set = self.mint("x", *refresh, None);
                let (access, refresh) = (set.access.clone(), set.refresh.clone());
                let fx = self.b.adopt_shared(Shared { generation: g, epoch: e, access, refresh, expires_at_wall_ms }, self.now);
                if self.b.epoch() > epoch_before {
                    self.session += 1;
                }
                fx
            }
            Step::End { epoch, generation, logout } => {
                let (e, g) = (self.count(*epoch, self.b.epoch()), self.count(*generation, self.b.generation()));
                let before: Vec<u32> = self.live.keys().copied().collect();
                let fx = self.b.end_shared(e, g, *logout);
                if self.b.epoch() > epoch_before {
                    self.session += 1;
                }
                if *logout && !fx.is_empty() {
                    self.logged_out.extend(before);
                }
                fx
            }
            Step::Offset(x) => {
                let old = self.b.server_offset_ms();
                self.b.set_server_offset_ms(*x);
                let want = if x.is_finite() { *x } else { old };
                ensure!(self.b.server_offset_ms() == want, "server offset {} after {x}", self.b.server_offset_ms());
                Vec::new()
            }
        };
        if was_disposed {
            ensure!(fx.iter().all(|e| matches!(e, Effect::Schedule(None))), "a disposed broker acted: {fx:?}");
        }
        self.apply(fx, ctx)?;
        if matches!(s, Step::Logout) || matches!(s, Step::End { logout: true, .. }) {
            ensure!(self.live.keys().all(|w| !self.logged_out.contains(w)), "a waiter survived a logout");
        }
        self.check()?;
        self.check_fresh()
    }

    /// Returns the effects and whether the token was an older one of this session.
    fn rejected(&mut self, kind: &Tok) -> Result<(Fx, bool), TestCaseError> {
        let current = self.b.access_token().map(str::to_owned);
        let older: Vec<&String> =
            self.adopted.iter().filter(|t| self.access[*t].session == self.session && Some(*t) != current.as_ref()).collect();
        let earlier: Vec<&String> = self.adopted.iter().filter(|t| self.access[*t].session < self.session).collect();
        let unknown = |s: &str| format!("unknown-{s}");
        let is_older = matches!(kind, Tok::Older(_)) && !older.is_empty();
        let (token, dead) = match kind {
            Tok::Current => match &current {
                Some(t) => (t.clone(), false),
                None => (unknown("none"), true),
            },
            Tok::Older(i) if !older.is_empty() => (older[i % older.len()].clone(), false),
            Tok::Older(_) => (current.clone().unwrap_or_else(|| unknown("none")), current.is_none()),
            Tok::Earlier(i) if !earlier.is_empty() => (earlier[i % earlier.len()].clone(), true),
            Tok::Earlier(_) | Tok::Unknown(_) => (unknown(if let Tok::Unknown(s) = kind { s } else { "e" }), true),
        };
        let closed = self.b.closed_error();
        let (get, fx) = self.join(true, |b, now, w| b.token_rejected(&token, now, w))?;
        if matches!(kind, Tok::Current) && closed.is_none() {
            self.rejected.insert(token.clone());
        }
        if dead {
            // A 401 of no live session: never replayed, never a refresh, nothing to publish.
            let want = Get::Fail(closed.unwrap_or(BrokerError::LoggedOut));
            ensure!(get == want && fx.is_empty(), "401 for dead token {token}: {get:?} {fx:?}");
        }
        Ok((fx, is_older))
    }

    /// The (flight, attempt) a finish or timeout reports, and whether it is the current one.
    fn pick(&mut self, p: Pick) -> (u64, u32, bool) {
        let current = self.pending.iter().position(|&(f, a)| self.b.attempt_is_current(f, a));
        match (p, current) {
            (Pick::Current, Some(i)) => {
                let (f, a) = self.pending.remove(i);
                (f, a, true)
            }
            (Pick::Current, None) => (self.last_flight, 0, false),
            (Pick::Stale(i), _) => {
                let stale: Vec<usize> = (0..self.pending.len()).filter(|&j| Some(j) != current).collect();
                let (f, a) = self.b.flight.as_ref().map_or((self.last_flight, 0), |f| (f.id, f.attempt));
                let made_up = [(f, a.wrapping_add(1)), (f.wrapping_add(1), 0), (0, 0), (u64::MAX, u32::MAX)];
                let k = i % (stale.len() + made_up.len());
                if k < stale.len() {
                    let (f, a) = self.pending.remove(stale[k]);
                    (f, a, false)
                } else {
                    let (f, a) = made_up[k - stale.len()];
                    (f, a, false)
                }
            }
        }
    }

    fn apply(&mut self, fx: Fx, mut ctx: Ctx) -> Result<(), TestCaseError> {
        for e in fx {
            match e {
                Effect::Refresh { flight, attempt, refresh_token, delay_ms } => {
                    ensure!(delay_ms.is_finite() && (0.0..=60_000.0).contains(&delay_ms), "delay {delay_ms}");
                    if let Some(rt) = &refresh_token {
                        ensure!(self.refresh.get(rt) == Some(&self.session), "refresh token {rt} of another session presented");
                    }
                    if attempt == 0 {
                        ensure!(self.open.is_none(), "flight {flight} started while {:?} is open", self.open);
                        ensure!(refresh_token == self.rt_current, "presented {refresh_token:?}, not {:?}", self.rt_current);
                        if let Some(rt) = &refresh_token {
                            ensure!(!self.spent.contains(rt), "spent refresh token {rt} presented again");
                        }
                        match ctx.reason.take() {
                            None => return Err(TestCaseError::fail(format!("flight {flight} without RefreshStart"))),
                            Some(RefreshReason::Rejected) => ensure!(delay_ms == 0.0, "a 401 refresh waits {delay_ms}"),
                            Some(_) => {
                                // Refreshes no 401 asked for go out at most once per interval.
                                if let Some(last) = self.last_unasked {
                                    let gap = self.now.since(last) + delay_ms;
                                    ensure!(gap >= MIN_REFRESH_INTERVAL_MS - 1e-6, "unasked refreshes {gap} ms apart");
                                }
                                let d = delay_ms;
                                self.last_unasked = Some(Now { wall_ms: self.now.wall_ms + d, mono_ms: self.now.mono_ms + d });
                            }
                        }
                        ensure!(flight > self.last_flight, "flight ids must grow: {flight} after {}", self.last_flight);
                        self.open = Some(flight);
                        self.last_flight = flight;
                        if refresh_token.is_some() {
                            // The same refresh token goes out again only after the flight that
                            // presented it failed (the server said no, or its answer was lost);
                            // never after a success, never while it is still in flight.
                            let key = (self.session, self.adoptions);
                            if let Some(prev) = self.presented.get(&key) {
                                let end = self.flights[prev].end;
                                ensure!(end == End::Failed, "refresh token presented again after flight {prev} ended {end:?}");
                            }
                            self.presented.insert(key, flight);
                        }
                        self.flights.insert(flight, FlightInfo { refresh_token: refresh_token.clone(), end: End::Running });
                    } else {
                        ensure!(self.open == Some(flight), "retry of flight {flight}, open is {:?}", self.open);
                        ensure!(ctx.retry_of == Some((flight, attempt - 1)), "retry {attempt} not after a transient failure");
                        if ctx.nonce {
                            ensure!(delay_ms == 0.0, "a nonce retry waited {delay_ms} ms");
                            ensure!(self.nonce_retried.insert(flight), "a second nonce retry in flight {flight}");
                        }
                        let bound = self.cfg.refresh_retries + u32::from(self.nonce_retried.contains(&flight));
                        ensure!(attempt <= bound, "retry {attempt} beyond {bound}");
                        ensure!(self.flights[&flight].refresh_token == refresh_token, "a retry changed the refresh token");
                    }
                    self.pending.push((flight, attempt));
                }
                Effect::Deadline { flight, ms } => {
                    ensure!(ms.is_finite() && ms >= 0.0, "deadline {ms}");
                    ensure!(flight > self.last_flight, "deadline for old flight {flight}");
                }
                Effect::EndFlight { flight } => {
                    ensure!(self.open == Some(flight), "EndFlight {flight}, open is {:?}", self.open);
                    self.open = None;
                    let end = ctx.end.unwrap_or(End::Superseded);
                    self.flights.get_mut(&flight).unwrap().end = end;
                }
                Effect::Resolve { waiters, token } => {
                    let Some(m) = self.access.get(&token).copied() else {
                        return Err(TestCaseError::fail(format!("resolved with unknown token {token}")));
                    };
                    ensure!(Some(token.as_str()) == self.b.access_token(), "resolved with {token}, not the current token");
                    ensure!(!self.rejected.contains(&token), "resolved with {token} after a 401 rejected it");
                    ensure!(m.session == self.session && m.epoch == self.b.epoch(), "resolved with {token} of an earlier epoch");
                    for w in waiters {
                        ensure!(!self.logged_out.contains(&w), "waiter {w} resolved after a logout");
                        let info = self.leave(w)?;
                        ensure!(!info.replay || info.session == m.session, "replay waiter {w} of session {} got {token} of session {}", info.session, m.session);
                    }
                }
                Effect::Reject { waiters, error: _ } => {
                    for w in waiters {
                        self.leave(w)?;
                    }
                }
                Effect::Emit(Event::Tokens { generation }) => {
                    self.adoptions += 1;
                    ensure!(generation == self.b.generation(), "Tokens event for {generation}");
                    let (a, r) = self.offered.take().expect("a Tokens event without an offered set");
                    self.rt_current = if ctx.keep_refresh { r.clone().or(self.rt_current.take()) } else { r.clone() };
                    self.spent.extend(ctx.spends.take());
                    self.access.insert(a.clone(), Minted { session: self.session, epoch: self.b.epoch() });
                    self.adopted.push(a);
                    if let Some(r) = r {
                        self.refresh.insert(r, self.session);
                    }
                }
                Effect::Emit(Event::RefreshStart { reason }) => {
                    ensure!(!(ctx.older_401 && reason == RefreshReason::Rejected), "a late 401 started a refresh");
                    ctx.reason = Some(reason);
                }
                Effect::Emit(_) => {}
                Effect::Schedule(s) => ensure!(s.is_none_or(|ms| ms.is_finite() && ms >= 0.0), "schedule {s:?}"),
                Effect::Publish(s) => {
                    ensure!(Some(s.access.as_str()) == self.b.access_token(), "published a token that is not current");
                    ensure!(s.generation == self.b.generation() && s.epoch == self.b.epoch(), "published wrong counters");
                }
                Effect::PublishEnd { epoch, generation, .. } => {
                    ensure!(epoch <= MAX_COUNT && generation <= MAX_COUNT, "PublishEnd {epoch} {generation}");
                }
            }
        }
        Ok(())
    }

    fn leave(&mut self, w: u32) -> Result<Waiter, TestCaseError> {
        let Some(info) = self.live.remove(&w) else {
            return Err(TestCaseError::fail(format!("waiter {w} settled twice or never waited")));
        };
        self.left_ids.push(info.broker_id);
        Ok(info)
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let (g, e) = (self.b.generation(), self.b.epoch());
        // Sets are ordered by (epoch, generation): a login in another tab is adopted with that
        // tab's generation, which may be lower than ours (see `adopt_shared`), so the generation
        // alone only grows within an epoch.
        ensure!(e >= self.epoch, "epoch went back: {e} after {}", self.epoch);
        ensure!(e > self.epoch || g >= self.generation, "generation went back: {g} after {} in epoch {e}", self.generation);
        ensure!(g <= MAX_COUNT && e <= MAX_COUNT, "counters beyond 2^53: {g}/{e}");
        (self.generation, self.epoch) = (g, e);
        if self.b.access_token().is_none() {
            self.rt_current = None;
        }
        // The model's live waiters are exactly the flight's: none dropped without an effect.
        let inside: BTreeSet<(u32, u32)> =
            self.b.flight.iter().flat_map(|f| f.waiters.iter().map(|(id, w, _)| (*w, *id))).collect();
        let outside: BTreeSet<(u32, u32)> = self.live.iter().map(|(w, i)| (*w, i.broker_id)).collect();
        ensure!(inside == outside, "broker waiters {inside:?} != live {outside:?}");
        ensure!(self.open == self.b.flight.as_ref().map(|f| f.id), "open flight {:?} != broker's", self.open);
        ensure!((self.b.state() == State::Refreshing) == self.b.flight.is_some(), "state {:?}", self.b.state());
        let current = self.pending.iter().filter(|&&(f, a)| self.b.attempt_is_current(f, a)).count();
        ensure!(current <= 1, "{current} attempts are current");
        // A flight always has its attempt out: nothing waits on a refresh nobody runs.
        ensure!(self.b.flight.is_none() || current == 1, "flight without a running attempt");
        if self.disposed {
            ensure!(self.live.is_empty() && self.b.fresh().is_none(), "waiters or a token after dispose");
        }
        Ok(())
    }

    /// `fresh()` never promises more than `get_token`: probed at the model's clock, just below
    /// both deadlines, and with both clocks an hour back.
    fn check_fresh(&mut self) -> Result<(), TestCaseError> {
        let Some(f) = self.b.fresh() else { return Ok(()) };
        let (token, uw, um) = (f.token.to_owned(), f.until_wall_ms, f.until_mono_ms);
        ensure!(!uw.is_nan() && !um.is_nan(), "NaN fresh deadline");
        ensure!(!self.rejected.contains(&token), "fresh() offers {token} after a 401 rejected it");
        let n = self.now;
        let below = |until: f64, or: f64| if until.is_finite() { next_down(until) } else { or };
        let probes = [
            n,
            Now { wall_ms: below(uw, n.wall_ms), mono_ms: below(um, n.mono_ms) },
            Now { wall_ms: below(uw, n.wall_ms), mono_ms: n.mono_ms },
            Now { wall_ms: n.wall_ms, mono_ms: below(um, n.mono_ms) },
            Now { wall_ms: n.wall_ms - 3_600_000.0, mono_ms: n.mono_ms - 3_600_000.0 },
        ];
        for p in probes {
            if p.wall_ms < uw && p.mono_ms < um {
                let (get, fx) = self.b.get_token(p, || u32::MAX);
                ensure!(
                    // Only a timer re-armed by the activity (idle_timeout_ms) may come with it.
                    get == Get::Ready(token.clone()) && fx.iter().all(|e| matches!(e, Effect::Schedule(Some(_)))),
                    "fresh() promised {token} until {uw}/{um}, get_token at {p:?} gave {get:?} {fx:?}"
                );
            }
        }
        Ok(())
    }
}

fn run(cfg: Config, start: Now, login: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut m = Model::new(cfg, start);
    if login {
        m.step(&Step::SetTokens { refresh: true, life_s: Some(60.0) })?;
    }
    for s in steps {
        m.step(s)?;
    }
    m.step(&Step::Dispose)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn props_every_sequence_keeps_the_invariants(
        cfg in broker_config(),
        start in start(),
        login in prop::bool::weighted(0.8),
        steps in vec(step(), 0..=60),
    ) {
        run(cfg, start, login, &steps)?;
    }
}

// ---- counterexamples the properties found, kept as plain tests ----

/// At the saturated epoch a `setTokens` (a new session) cannot raise the epoch number, so a
/// waiter replaying a 401 of the old session was served the new session's token.
#[test]
fn a_replay_waiter_never_crosses_into_a_new_session_at_the_saturated_epoch() {
    let mut b = B::new(Config::default());
    let now = Now::at(1.7e12);
    let old = Shared { generation: 0, epoch: MAX_COUNT, access: "x1".into(), refresh: None, expires_at_wall_ms: None };
    b.adopt_shared(old, now);
    assert!(matches!(b.token_rejected("x1", now, || 7).0, Get::Wait(_)));
    let fx = b.set_tokens(TokenSet { access: "s2".into(), refresh: None, lifetime_ms: None }, now);
    assert_eq!(b.epoch(), MAX_COUNT);
    assert!(fx.contains(&Effect::Reject { waiters: vec![7], error: BrokerError::LoggedOut }), "{fx:?}");
    assert!(!fx.iter().any(|e| matches!(e, Effect::Resolve { .. })), "{fx:?}");
}

/// A set from another tab that expired on arrival has a lifetime of 0. `fresh()` published its
/// moment of receipt as the deadline, so with both clocks set back it promised a token that
/// `get_token` would not hand out (it refreshes instead).
#[test]
fn fresh_promises_nothing_for_a_set_that_arrived_expired() {
    let mut b = B::new(Config { leeway_ms: 0.0, ..Config::default() });
    let t = Now { wall_ms: 1.7e12, mono_ms: 0.0 };
    let expired = Shared { generation: 1, epoch: 0, access: "x1".into(), refresh: None, expires_at_wall_ms: Some(1.7e12 + 1e-6) };
    b.adopt_shared(expired, t);
    let back = Now { wall_ms: t.wall_ms - 1.0, mono_ms: t.mono_ms - 1.0 };
    let promised = b.fresh().is_some_and(|f| back.wall_ms < f.until_wall_ms && back.mono_ms < f.until_mono_ms);
    let (get, _) = b.get_token(back, || 0);
    assert!(!promised || get == Get::Ready("x1".into()), "promised, then {get:?}");
}

/// `received + usable` rounds: one step below it, `now - received` could round up to the whole
/// usable time, and `get_token` refreshed where `fresh()` had promised the token. Near zero (a
/// clock set back past its origin) the difference rounds far more coarsely than the deadline.
#[test]
fn fresh_deadlines_allow_for_rounding() {
    for (mono_ms, lifetime_ms) in [(1.8476268953157948, 39.421143248025146), (-3_600_000.0, 3_600_000.0)] {
        let mut b = B::new(Config { leeway_ms: 0.0, ..Config::default() });
        let t = Now { wall_ms: 1.7e12, mono_ms };
        b.set_tokens(TokenSet { access: "s1".into(), refresh: None, lifetime_ms: Some(lifetime_ms) }, t);
        let until = b.fresh().expect("fresh").until_mono_ms;
        let (get, fx) = b.get_token(Now { wall_ms: t.wall_ms, mono_ms: next_down(until) }, || 0);
        assert_eq!((get, fx.len()), (Get::Ready("s1".into()), 0), "{mono_ms} {lifetime_ms}");
    }
}
