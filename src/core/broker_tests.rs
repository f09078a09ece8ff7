//! One test per transition and per rule of the state machine (issue 2, security-rules.md).
//! Compiled only under `cfg(test)` (see the `mod tests` declaration in broker.rs).

#[cfg(test)]
use super::*;
use crate::core::{parse_token_set, Field};

type B = Broker<u32>;
type Fx = Vec<Effect<u32>>;

const T0: f64 = 1_000_000.0;

fn at(ms: f64) -> Now {
    Now::at(T0 + ms)
}

fn set(access: &str, refresh: Option<&str>, lifetime_s: Option<f64>) -> TokenSet {
    TokenSet { access: access.into(), refresh: refresh.map(Into::into), lifetime_ms: lifetime_s.map(|s| s * 1000.0) }
}

/// A broker holding `a1`/`r1` that live 60 s from t=0, leeway 10 s.
fn logged_in() -> B {
    let mut b = B::new(Config { leeway_ms: 10_000.0, ..Config::default() });
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    b
}

fn refreshes(fx: &Fx) -> Vec<(u64, u32, Option<String>, f64)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Refresh { flight, attempt, refresh_token, delay_ms } => {
                Some((*flight, *attempt, refresh_token.clone(), *delay_ms))
            }
            _ => None,
        })
        .collect()
}

fn resolved(fx: &Fx) -> Vec<(u32, String)> {
    fx.iter()
        .flat_map(|e| match e {
            Effect::Resolve { waiters, token } => waiters.iter().map(|w| (*w, token.clone())).collect(),
            _ => vec![],
        })
        .collect()
}

fn rejected(fx: &Fx) -> Vec<(u32, BrokerError)> {
    fx.iter()
        .flat_map(|e| match e {
            Effect::Reject { waiters, error } => waiters.iter().map(|w| (*w, *error)).collect(),
            _ => vec![],
        })
        .collect()
}

fn events(fx: &Fx) -> Vec<Event> {
    fx.iter().filter_map(|e| if let Effect::Emit(ev) = e { Some(ev.clone()) } else { None }).collect()
}

fn schedule(fx: &Fx) -> Option<Option<f64>> {
    fx.iter().rev().find_map(|e| if let Effect::Schedule(s) = e { Some(*s) } else { None })
}

/// Starts a refresh with waiter 0 at `t` (token expired by then); returns (flight, effects).
fn expire_and_wait(b: &mut B, t: f64) -> (u64, Fx) {
    let (get, fx) = b.get_token(at(t), || 0);
    assert!(matches!(get, Get::Wait(_)));
    let r = refreshes(&fx);
    assert_eq!(r.len(), 1);
    (r[0].0, fx)
}

fn transient() -> Failure {
    Failure::Transient { retry_after_s: None }
}

// ---- token requests ----

#[test]
fn no_tokens_is_not_authenticated() {
    let mut b = B::new(Config::default());
    assert_eq!(b.get_token(at(0.0), || 0).0, Get::Fail(BrokerError::NotAuthenticated));
    assert_eq!(b.state(), State::Anonymous);
}

#[test]
fn fresh_token_is_returned_at_once_without_effects() {
    let mut b = logged_in();
    let (get, fx) = b.get_token(at(1_000.0), || unreachable!("no waiter for a fresh token"));
    assert_eq!(get, Get::Ready("a1".into()));
    assert!(fx.is_empty());
    assert_eq!(b.state(), State::Valid);
}

#[test]
fn token_inside_leeway_starts_a_refresh_and_waits() {
    let mut b = logged_in();
    let (get, fx) = b.get_token(at(51_000.0), || 7);
    assert_eq!(get, Get::Wait(0));
    assert_eq!(refreshes(&fx), vec![(1, 0, Some("r1".into()), 0.0)]);
    assert!(fx.contains(&Effect::Deadline { flight: 1, ms: 10_000.0 }));
    assert_eq!(events(&fx), vec![Event::RefreshStart { reason: RefreshReason::Expiring }]);
    assert_eq!(b.state(), State::Refreshing);
}

#[test]
fn expired_token_starts_a_refresh() {
    let mut b = logged_in();
    let (_, fx) = expire_and_wait(&mut b, 120_000.0);
    assert_eq!(refreshes(&fx)[0].2.as_deref(), Some("r1"));
}

#[test]
fn five_hundred_concurrent_waiters_share_one_refresh() {
    let mut b = logged_in();
    let mut starts = 0;
    for i in 0..500u32 {
        let (get, fx) = b.get_token(at(70_000.0), || i);
        assert!(matches!(get, Get::Wait(_)));
        starts += refreshes(&fx).len();
    }
    assert_eq!(starts, 1);
    let fx = b.attempt_finished(1, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0));
    let got = resolved(&fx);
    assert_eq!(got.len(), 500);
    assert!(got.iter().all(|(_, t)| t == "a2"));
    let mut ids: Vec<u32> = got.iter().map(|(w, _)| *w).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 500, "every waiter settled exactly once");
}

// ---- refresh success ----

#[test]
fn success_adopts_atomically_and_schedules_the_next_refresh() {
    let mut b = logged_in();
    let g0 = b.generation();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_000.0));
    assert_eq!(b.generation(), g0 + 1);
    assert_eq!(b.access_token(), Some("a2"));
    assert_eq!(events(&fx), vec![Event::Tokens { generation: g0 + 1 }, Event::RefreshEnd { error: None }]);
    assert!(fx.contains(&Effect::EndFlight { flight }));
    assert_eq!(schedule(&fx), Some(Some(50_000.0)));
    assert_eq!(b.state(), State::Valid);
    // The next refresh presents the new refresh token.
    let (_, fx) = expire_and_wait(&mut b, 140_000.0);
    assert_eq!(refreshes(&fx)[0].2.as_deref(), Some("r2"));
}

#[test]
fn response_without_refresh_token_keeps_the_old_one() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", None, Some(60.0))), at(70_000.0));
    let (_, fx) = expire_and_wait(&mut b, 140_000.0);
    assert_eq!(refreshes(&fx)[0].2.as_deref(), Some("r1"));
}

// ---- 401s ----

#[test]
fn rejected_current_token_refreshes_once() {
    let mut b = logged_in();
    let (get, fx) = b.token_rejected("a1", at(1_000.0), || 1);
    assert_eq!(get, Get::Wait(0));
    assert_eq!(events(&fx), vec![Event::RefreshStart { reason: RefreshReason::Rejected }]);
    // Other 401s for the same token join the flight.
    for i in 2..10 {
        let (get, fx) = b.token_rejected("a1", at(1_100.0), || i);
        assert!(matches!(get, Get::Wait(_)));
        assert!(refreshes(&fx).is_empty());
    }
    // And so do new requests: the rejected token is never handed out again.
    let (get, fx) = b.get_token(at(1_200.0), || 99);
    assert!(matches!(get, Get::Wait(_)));
    assert!(refreshes(&fx).is_empty());
    let fx = b.attempt_finished(1, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(1_300.0));
    assert_eq!(resolved(&fx).len(), 10);
}

#[test]
fn late_401_with_an_older_token_never_refreshes() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0));
    // A request sent with a1 comes back 401 after the refresh finished.
    let (get, fx) = b.token_rejected("a1", at(70_200.0), || unreachable!());
    assert_eq!(get, Get::Ready("a2".into()));
    assert!(refreshes(&fx).is_empty());
    assert_eq!(events(&fx), vec![Event::Stale401]);
}

#[test]
fn late_401_during_a_refresh_joins_it() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0));
    let (_, fx) = b.token_rejected("a2", at(71_000.0), || 1);
    assert_eq!(refreshes(&fx).len(), 1);
    let (get, fx) = b.token_rejected("a1", at(71_000.0), || 2);
    assert!(matches!(get, Get::Wait(_)));
    assert!(refreshes(&fx).is_empty());
    assert_eq!(events(&fx), vec![Event::Stale401]);
}

// ---- refresh failures ----

#[test]
fn transient_failures_retry_with_backoff_then_fail_every_waiter_once() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.get_token(at(70_000.0), || 1);
    let fx = b.attempt_finished(flight, 0, Err(transient()), at(70_010.0));
    assert_eq!(refreshes(&fx), vec![(flight, 1, Some("r1".into()), 250.0)]);
    assert!(b.attempt_is_current(flight, 1) && !b.attempt_is_current(flight, 0));
    let fx = b.attempt_finished(flight, 1, Err(Failure::Transient { retry_after_s: Some(2.0) }), at(70_300.0));
    assert_eq!(refreshes(&fx), vec![(flight, 2, Some("r1".into()), 2_000.0)], "Retry-After honoured");
    let fx = b.attempt_finished(flight, 2, Err(transient()), at(72_400.0));
    assert!(refreshes(&fx).is_empty());
    let mut r = rejected(&fx);
    r.sort_unstable_by_key(|x| x.0);
    assert_eq!(r, vec![(0, BrokerError::RefreshFailed), (1, BrokerError::RefreshFailed)]);
    assert_eq!(b.state(), State::Valid, "a passing failure does not end the session");
    // A repeated report of the same attempt is ignored (nothing settles twice).
    assert!(b.attempt_finished(flight, 2, Err(transient()), at(72_500.0)).is_empty());
}

#[test]
fn failed_early_refresh_serves_waiters_the_still_valid_token() {
    let mut b = B::new(Config { refresh_retries: 0, leeway_ms: 10_000.0, ..Config::default() });
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    let (flight, _) = expire_and_wait(&mut b, 55_000.0); // inside the leeway, not expired
    let fx = b.attempt_finished(flight, 0, Err(transient()), at(55_100.0));
    assert_eq!(resolved(&fx), vec![(0, "a1".into())]);
}

#[test]
fn permanent_failure_is_not_retried() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Permanent), at(70_010.0));
    assert!(refreshes(&fx).is_empty());
    assert_eq!(rejected(&fx), vec![(0, BrokerError::RefreshFailed)]);
}

#[test]
fn terminal_failure_ends_the_session_once() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.get_token(at(70_000.0), || 1);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Terminal), at(70_010.0));
    assert_eq!(rejected(&fx).len(), 2);
    assert!(rejected(&fx).iter().all(|(_, e)| *e == BrokerError::SessionExpired));
    assert_eq!(events(&fx).iter().filter(|e| **e == Event::Expired).count(), 1);
    assert!(refreshes(&fx).is_empty(), "no retry after invalid_grant");
    assert_eq!(b.state(), State::Expired);
    assert_eq!(b.access_token(), None, "tokens cleared");
    assert_eq!(b.get_token(at(70_020.0), || 2).0, Get::Fail(BrokerError::SessionExpired));
    assert_eq!(b.token_rejected("a1", at(70_020.0), || 2).0, Get::Fail(BrokerError::SessionExpired));
    assert!(b.tick(at(80_000.0)).is_empty());
    // New tokens (a new login) revive it.
    b.set_tokens(set("b1", Some("s1"), Some(60.0)), at(90_000.0));
    assert_eq!(b.get_token(at(90_001.0), || 3).0, Get::Ready("b1".into()));
}

// ---- DPoP (RFC 9449) ----

#[test]
fn a_dpop_nonce_challenge_at_the_token_endpoint_is_retried_at_once_and_is_not_a_failure() {
    let mut b = B::new(Config { refresh_retries: 0, ..Config::default() });
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Nonce), at(70_010.0));
    assert_eq!(refreshes(&fx), vec![(flight, 1, Some("r1".into()), 0.0)], "same refresh token, no backoff");
    assert_eq!(events(&fx), vec![Event::NonceRetry], "no refreshend: still the same refresh");
    assert!(rejected(&fx).is_empty() && resolved(&fx).is_empty());
    assert_eq!(b.state(), State::Refreshing);
    let fx = b.attempt_finished(flight, 1, Ok(set("a2", Some("r2"), Some(60.0))), at(70_050.0));
    assert_eq!(resolved(&fx), vec![(0, "a2".into())]);
    assert_eq!(events(&fx).iter().filter(|e| matches!(e, Event::RefreshEnd { error: None })).count(), 1);
}

#[test]
fn a_second_nonce_challenge_in_one_refresh_fails_it_without_ending_the_session() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Err(Failure::Nonce), at(70_010.0));
    let fx = b.attempt_finished(flight, 1, Err(Failure::Nonce), at(70_020.0));
    assert!(refreshes(&fx).is_empty(), "never a loop");
    assert_eq!(rejected(&fx), vec![(0, BrokerError::RefreshFailed)]);
    assert_eq!(b.state(), State::Valid);
    assert_eq!(b.refresh_token(), Some("r1"), "the refresh token is kept");
}

#[test]
fn a_nonce_retry_does_not_use_up_the_transient_retries_or_shift_their_backoff() {
    let mut b = logged_in(); // refresh_retries: 2
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Err(Failure::Nonce), at(70_010.0));
    let fx = b.attempt_finished(flight, 1, Err(transient()), at(70_020.0));
    assert_eq!(refreshes(&fx), vec![(flight, 2, Some("r1".into()), 250.0)]);
    let fx = b.attempt_finished(flight, 2, Err(transient()), at(70_300.0));
    assert_eq!(refreshes(&fx), vec![(flight, 3, Some("r1".into()), 500.0)]);
    let fx = b.attempt_finished(flight, 3, Err(transient()), at(70_900.0));
    assert!(refreshes(&fx).is_empty());
    assert_eq!(rejected(&fx), vec![(0, BrokerError::RefreshFailed)]);
}

#[test]
fn a_lost_dpop_key_ends_the_session_like_a_rejected_refresh_token() {
    let mut b = logged_in();
    let (_, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.end_session();
    assert_eq!(rejected(&fx), vec![(0, BrokerError::SessionExpired)]);
    assert_eq!(events(&fx).iter().filter(|e| **e == Event::Expired).count(), 1);
    assert!(fx.iter().any(|e| matches!(e, Effect::PublishEnd { logout: false, .. })), "every tab is told");
    assert_eq!(b.state(), State::Expired);
    assert_eq!(b.access_token(), None);
    assert!(b.end_session().is_empty(), "told once");
    let mut anonymous = B::new(Config::default());
    assert!(anonymous.end_session().is_empty(), "no session, nothing to end");
}

#[test]
fn coded_failure_from_the_refresh_function_keeps_its_code() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Coded(BrokerError::SessionExpired)), at(70_010.0));
    assert_eq!(rejected(&fx), vec![(0, BrokerError::SessionExpired)]);
    assert_eq!(b.state(), State::Expired);
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Coded(BrokerError::RefreshTimeout)), at(70_010.0));
    assert_eq!(rejected(&fx), vec![(0, BrokerError::RefreshTimeout)]);
}

#[test]
fn malformed_response_fails_and_keeps_the_old_refresh_token() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    // What the boundary does with a garbage body: the parser says InvalidTokenResponse.
    let parsed = parse_token_set(Field::Other, Field::Absent, Field::Absent, None, 0.0, 0.0)
        .map_err(|_| Failure::Coded(BrokerError::InvalidTokenResponse));
    let fx = b.attempt_finished(flight, 0, parsed, at(70_010.0));
    assert_eq!(rejected(&fx), vec![(0, BrokerError::InvalidTokenResponse)]);
    let fx = b.attempt_finished(1, 0, Err(Failure::Malformed), at(70_010.0));
    assert!(fx.is_empty(), "the flight is over");
    let (_, fx) = expire_and_wait(&mut b, 70_020.0);
    assert_eq!(refreshes(&fx)[0].2.as_deref(), Some("r1"));
}

// ---- timeout, logout, abort, dispose ----

#[test]
fn timeout_rejects_every_waiter_and_discards_the_late_result() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.get_token(at(70_000.0), || 1);
    let fx = b.flight_timed_out(flight, at(80_000.0));
    assert_eq!(rejected(&fx).len(), 2);
    assert!(rejected(&fx).iter().all(|(_, e)| *e == BrokerError::RefreshTimeout));
    assert!(fx.contains(&Effect::EndFlight { flight }));
    assert!(b.attempt_finished(flight, 0, Ok(set("late", Some("r-late"), Some(60.0))), at(81_000.0)).is_empty());
    assert_eq!(b.access_token(), Some("a1"));
    // A stale deadline for an ended flight does nothing.
    assert!(b.flight_timed_out(flight, at(82_000.0)).is_empty());
}

#[test]
fn logout_during_refresh_rejects_waiters_and_is_never_undone() {
    let mut b = logged_in();
    let e0 = b.epoch();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.logout();
    assert_eq!(rejected(&fx), vec![(0, BrokerError::LoggedOut)]);
    assert!(events(&fx).contains(&Event::Logout));
    assert_eq!(b.epoch(), e0 + 1);
    assert!(b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0)).is_empty());
    assert_eq!(b.state(), State::Anonymous);
    assert_eq!(b.get_token(at(70_200.0), || 1).0, Get::Fail(BrokerError::NotAuthenticated));
}

#[test]
fn abort_rejects_only_that_waiter() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let Get::Wait(id1) = b.get_token(at(70_000.0), || 1).0 else { panic!() };
    b.get_token(at(70_000.0), || 2);
    assert_eq!(b.abort_waiter(id1), Some(1));
    assert_eq!(b.abort_waiter(id1), None, "already gone");
    let fx = b.attempt_finished(flight, 0, Ok(set("a2", None, Some(60.0))), at(70_100.0));
    let mut got: Vec<u32> = resolved(&fx).into_iter().map(|x| x.0).collect();
    got.sort_unstable();
    assert_eq!(got, vec![0, 2]);
    assert_eq!(b.abort_waiter(0), None, "settled waiters cannot be aborted");
}

#[test]
fn refresh_goes_on_when_every_waiter_aborted() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    assert_eq!(b.abort_waiter(0), Some(0));
    let fx = b.attempt_finished(flight, 0, Ok(set("a2", None, Some(60.0))), at(70_100.0));
    assert!(resolved(&fx).is_empty());
    assert_eq!(b.access_token(), Some("a2"));
}

#[test]
fn set_tokens_during_refresh_serves_waiters_and_discards_the_refresh() {
    let mut b = logged_in();
    let e0 = b.epoch();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.set_tokens(set("x1", Some("y1"), Some(60.0)), at(70_050.0));
    assert_eq!(resolved(&fx), vec![(0, "x1".into())]);
    assert_eq!(b.epoch(), e0 + 1);
    assert!(b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0)).is_empty());
    assert_eq!(b.access_token(), Some("x1"));
}

#[test]
fn dispose_rejects_waiters_and_every_later_call() {
    let mut b = logged_in();
    expire_and_wait(&mut b, 70_000.0);
    let fx = b.dispose();
    assert_eq!(rejected(&fx), vec![(0, BrokerError::Disposed)]);
    assert_eq!(schedule(&fx), Some(None));
    assert_eq!(b.get_token(at(70_100.0), || 1).0, Get::Fail(BrokerError::Disposed));
    assert!(b.set_tokens(set("a", None, None), at(0.0)).is_empty());
    assert!(b.tick(at(0.0)).is_empty());
}

// ---- proactive refresh and clocks ----

#[test]
fn proactive_timer_refreshes_in_the_background() {
    let mut b = logged_in();
    assert_eq!(b.tick(at(10_000.0)), vec![Effect::Schedule(Some(40_000.0))], "early tick re-arms");
    let fx = b.tick(at(50_000.0));
    assert_eq!(refreshes(&fx).len(), 1);
    assert_eq!(events(&fx), vec![Event::RefreshStart { reason: RefreshReason::Proactive }]);
    let fx = b.attempt_finished(1, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(50_100.0));
    assert!(resolved(&fx).is_empty());
    assert_eq!(schedule(&fx), Some(Some(50_000.0)));
}

#[test]
fn failing_proactive_refresh_backs_off_instead_of_looping() {
    let mut b = B::new(Config { refresh_retries: 0, leeway_ms: 30_000.0, ..Config::default() });
    b.set_tokens(set("a1", Some("r1"), Some(300.0)), at(0.0));
    let mut t = 270_000.0;
    let mut delays = vec![];
    for _ in 0..4 {
        let fx = b.tick(at(t));
        let (flight, ..) = refreshes(&fx)[0].clone();
        let fx = b.attempt_finished(flight, 0, Err(transient()), at(t));
        let d = schedule(&fx).flatten().expect("re-armed while the token lives");
        delays.push(d);
        t += d;
    }
    assert_eq!(delays, vec![1_000.0, 2_000.0, 4_000.0, 8_000.0]);
    // Once expired, the timer stops; requests refresh on demand.
    let fx = b.tick(at(300_000.0));
    let (flight, ..) = refreshes(&fx)[0].clone();
    let fx = b.attempt_finished(flight, 0, Err(transient()), at(300_001.0));
    assert_eq!(schedule(&fx), Some(None));
}

#[test]
fn client_clock_ten_minutes_fast_causes_no_refresh_storm() {
    // Tokens live 5 minutes; the client's wall clock is 10 minutes ahead of the server's.
    let fast = 600_000.0;
    for use_jwt in [false, true] {
        let mut b = B::new(Config::default());
        let now = Now { wall_ms: T0 + fast, mono_ms: 0.0 };
        let (jwt, expires_in) = if use_jwt {
            let iat = T0 / 1000.0;
            (Some((Some(iat + 300.0), Some(iat))), Field::Absent)
        } else {
            (None, Field::Num(300.0))
        };
        let ts = parse_token_set(Field::Str("a1".into()), Field::Str("r1".into()), expires_in, jwt, now.wall_ms, 0.0).unwrap();
        b.set_tokens(ts, now);
        let mut flights = 0;
        for s in 0..300 {
            let t = Now { wall_ms: now.wall_ms + f64::from(s) * 1000.0, mono_ms: f64::from(s) * 1000.0 };
            let (get, fx) = b.get_token(t, || s);
            flights += refreshes(&fx).len();
            if let Get::Wait(_) = get {
                let f = refreshes(&fx).first().map(|r| r.0).unwrap_or(b.next_flight);
                b.attempt_finished(f, 0, Ok(set(&format!("a{s}"), None, Some(300.0))), t);
            }
        }
        // One refresh each 270 s (300 s minus the 30 s leeway), not one per call.
        assert_eq!(flights, 1, "jwt={use_jwt}");
    }
}

#[test]
fn sleep_and_wall_clock_jumps_count_as_elapsed_time() {
    let mut b = logged_in();
    // Laptop slept 2 minutes: the monotonic clock paused, the wall clock moved.
    let wake = Now { wall_ms: T0 + 120_000.0, mono_ms: T0 + 5_000.0 };
    assert_eq!(refreshes(&b.get_token(wake, || 0).1).len(), 1);
    // A user setting the wall clock back does not make an old token young.
    let mut b = logged_in();
    let back = Now { wall_ms: T0 - 7_200_000.0, mono_ms: T0 + 120_000.0 };
    assert_eq!(refreshes(&b.get_token(back, || 0).1).len(), 1);
}

#[test]
fn unknown_lifetime_trusts_the_token_until_a_401() {
    let mut b = B::new(Config::default());
    b.set_tokens(set("opaque", Some("r"), None), at(0.0));
    assert_eq!(b.get_token(at(1e12), || 0).0, Get::Ready("opaque".into()));
    assert_eq!(schedule(&b.tick(at(1e12))), Some(None));
    assert_eq!(refreshes(&b.token_rejected("opaque", at(1e12), || 0).1).len(), 1);
}

// ---- cookie mode, states, generations ----

#[test]
fn cookie_mode_refreshes_without_tokens_until_logout() {
    let mut b = B::new(Config { refresh_when_anonymous: true, ..Config::default() });
    let (get, fx) = b.get_token(at(0.0), || 0);
    assert!(matches!(get, Get::Wait(_)));
    assert_eq!(refreshes(&fx), vec![(1, 0, None, 0.0)]);
    assert_eq!(events(&fx)[0], Event::RefreshStart { reason: RefreshReason::Anonymous });
    let fx = b.attempt_finished(1, 0, Ok(set("a1", None, Some(60.0))), at(10.0));
    assert_eq!(resolved(&fx), vec![(0, "a1".into())]);
    b.logout();
    assert_eq!(b.get_token(at(20.0), || 1).0, Get::Fail(BrokerError::NotAuthenticated));
}

#[test]
fn states_and_generations_follow_the_transitions() {
    let mut b = B::new(Config::default());
    assert_eq!((b.state(), b.generation(), b.epoch()), (State::Anonymous, 0, 0));
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    assert_eq!((b.state(), b.generation(), b.epoch()), (State::Valid, 1, 1));
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    assert_eq!(b.state(), State::Refreshing);
    b.attempt_finished(flight, 0, Ok(set("a2", None, Some(60.0))), at(70_001.0));
    assert_eq!((b.state(), b.generation(), b.epoch()), (State::Valid, 2, 1), "a refresh is not a new epoch");
    let (flight, _) = expire_and_wait(&mut b, 140_000.0);
    b.attempt_finished(flight, 0, Err(Failure::Terminal), at(140_001.0));
    assert_eq!(b.state(), State::Expired);
    b.logout();
    assert_eq!((b.state(), b.epoch()), (State::Anonymous, 2));
    for (s, js) in [(State::Anonymous, "anonymous"), (State::Valid, "valid"), (State::Refreshing, "refreshing"), (State::Expired, "expired")] {
        assert_eq!(s.as_str(), js);
    }
}

#[test]
fn server_offset_is_kept_only_when_finite() {
    let mut b = B::new(Config::default());
    b.set_server_offset_ms(-5.0);
    b.set_server_offset_ms(f64::NAN);
    assert_eq!(b.server_offset_ms(), -5.0);
}

// ---- cross-tab protocol: generation and epoch rules ----

fn shared(generation: u64, epoch: u64, access: &str, refresh: &str, expires_at_ms: f64) -> Shared {
    Shared { generation, epoch, access: access.into(), refresh: Some(refresh.into()), expires_at_wall_ms: Some(T0 + expires_at_ms) }
}

fn published(fx: &Fx) -> Vec<Shared> {
    fx.iter().filter_map(|e| if let Effect::Publish(s) = e { Some(s.clone()) } else { None }).collect()
}

#[test]
fn local_adoptions_are_published_with_absolute_expiry() {
    let mut b = B::new(Config::default());
    let fx = b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(5_000.0));
    assert_eq!(published(&fx), vec![shared(1, 1, "a1", "r1", 65_000.0)]);
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_000.0));
    assert_eq!(published(&fx), vec![shared(2, 1, "a2", "r2", 130_000.0)]);
}

#[test]
fn a_newer_generation_from_another_tab_ends_the_local_refresh() {
    let mut b = logged_in(); // generation 1, epoch 1
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.adopt_shared(shared(2, 1, "a2", "r2", 130_000.0), at(70_010.0));
    assert_eq!(resolved(&fx), vec![(0, "a2".into())], "waiters served without a refresh here");
    assert!(fx.contains(&Effect::EndFlight { flight }));
    assert!(published(&fx).is_empty(), "adopted sets are not re-broadcast");
    assert_eq!((b.generation(), b.access_token()), (2, Some("a2")));
    // The local refresh's late result is discarded; the next refresh presents r2.
    assert!(b.attempt_finished(flight, 0, Ok(set("x", Some("y"), Some(60.0))), at(70_020.0)).is_empty());
    let (_, fx) = expire_and_wait(&mut b, 200_000.0);
    assert_eq!(refreshes(&fx)[0].2.as_deref(), Some("r2"));
}

#[test]
fn shared_expiry_counts_from_the_wall_clock() {
    let mut b = logged_in();
    b.adopt_shared(shared(2, 1, "a2", "r2", 100_000.0), at(95_000.0));
    // 5 s left, leeway capped at half: fresh for 2.5 s.
    assert_eq!(b.get_token(at(96_000.0), || 0).0, Get::Ready("a2".into()));
    assert!(matches!(b.get_token(at(98_000.0), || 0).0, Get::Wait(_)));
}

#[test]
fn older_or_equal_generations_and_older_epochs_are_ignored() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_000.0)); // gen 2
    assert!(b.adopt_shared(shared(1, 1, "a1", "r1", 60_000.0), at(70_100.0)).is_empty(), "late message");
    assert!(b.adopt_shared(shared(2, 1, "other", "o", 60_000.0), at(70_100.0)).is_empty(), "same generation");
    b.logout(); // epoch 2
    assert!(b.adopt_shared(shared(9, 1, "zombie", "z", 999_000.0), at(70_200.0)).is_empty(), "from before the logout");
    assert_eq!(b.state(), State::Anonymous);
    // A login in another tab (newer epoch) is adopted, whatever its generation.
    b.adopt_shared(shared(3, 3, "b1", "s1", 200_000.0), at(70_300.0));
    assert_eq!((b.access_token(), b.epoch(), b.generation()), (Some("b1"), 3, 3));
}

#[test]
fn logout_elsewhere_wins_over_a_refresh_in_flight_here() {
    let mut b = logged_in(); // epoch 1
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.end_shared(2, 1, true);
    assert_eq!(rejected(&fx), vec![(0, BrokerError::LoggedOut)]);
    assert!(events(&fx).contains(&Event::Logout));
    assert!(!fx.iter().any(|e| matches!(e, Effect::PublishEnd { .. })), "not re-broadcast");
    assert!(b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_100.0)).is_empty());
    assert_eq!((b.state(), b.epoch()), (State::Anonymous, 2));
    // A stale logout (older epoch) changes nothing.
    b.set_tokens(set("c1", None, Some(60.0)), at(80_000.0)); // epoch 3
    assert!(b.end_shared(2, 1, true).is_empty());
    assert_eq!(b.access_token(), Some("c1"));
}

#[test]
fn local_logout_and_expiry_are_published() {
    let mut b = logged_in();
    let fx = b.logout();
    assert!(fx.contains(&Effect::PublishEnd { epoch: 2, generation: 1, logout: true }));
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    let fx = b.attempt_finished(flight, 0, Err(Failure::Terminal), at(70_001.0));
    assert!(fx.contains(&Effect::PublishEnd { epoch: 1, generation: 1, logout: false }));
}

#[test]
fn expiry_elsewhere_applies_to_the_same_or_newer_generation_only() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_000.0)); // gen 2
    assert!(b.end_shared(1, 1, false).is_empty(), "another tab's expiry of generation 1 says nothing about 2");
    let (_, _) = expire_and_wait(&mut b, 200_000.0);
    let fx = b.end_shared(1, 2, false);
    assert_eq!(rejected(&fx), vec![(0, BrokerError::SessionExpired)]);
    assert_eq!(events(&fx).iter().filter(|e| **e == Event::Expired).count(), 1);
    assert_eq!(b.state(), State::Expired);
    assert!(b.end_shared(1, 2, false).is_empty(), "told once");
}

#[test]
fn a_new_tab_answers_hello_with_its_current_state() {
    let mut b = logged_in();
    assert_eq!(b.shared(at(10_000.0)), Some(shared(1, 1, "a1", "r1", 60_000.0)));
    b.logout();
    assert_eq!(b.shared(at(10_000.0)), None);
}

#[test]
fn stored_or_broadcast_garbage_is_rejected() {
    use crate::core::parse_shared;
    let ok = parse_shared(Field::Num(2.0), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Num(5.0));
    assert_eq!(ok.map(|s| (s.generation, s.epoch)), Some((2, 1)));
    let bad = [
        (Field::Num(-1.0), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Absent),
        (Field::Num(1.5), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Absent),
        (Field::Str("1".into()), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Absent),
        (Field::Num(1.0), Field::Absent, Field::Str("a".into()), Field::Absent, Field::Absent),
        (Field::Num(1.0), Field::Num(1.0), Field::Other, Field::Absent, Field::Absent),
        (Field::Num(1.0), Field::Num(1.0), Field::Str("a b".into()), Field::Absent, Field::Absent),
        (Field::Num(1.0), Field::Num(1.0), Field::Str("a".into()), Field::Num(3.0), Field::Absent),
        (Field::Num(1.0), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Str("soon".into())),
        (Field::Num(f64::INFINITY), Field::Num(1.0), Field::Str("a".into()), Field::Absent, Field::Absent),
    ];
    for (g, e, a, r, x) in bad {
        assert_eq!(parse_shared(g, e, a, r, x), None);
    }
}

// ---- issue 10: sessions that stay dead, counters that never wrap, no refresh storm ----

#[test]
fn a_401_for_a_token_of_an_earlier_epoch_is_never_replayed() {
    let mut b = logged_in();
    // Logged in as A; logout; logged in as B; A's request comes back 401.
    b.logout();
    b.set_tokens(set("b1", Some("rb1"), Some(60.0)), at(1_000.0));
    let (get, fx) = b.token_rejected("a1", at(1_100.0), || 0);
    assert_eq!(get, Get::Fail(BrokerError::LoggedOut));
    assert!(refreshes(&fx).is_empty() && fx.is_empty(), "no refresh, nothing published");
    // setTokens alone (no logout) starts a new epoch too.
    b.set_tokens(set("c1", Some("rc1"), Some(60.0)), at(1_200.0));
    assert_eq!(b.token_rejected("b1", at(1_300.0), || 1).0, Get::Fail(BrokerError::LoggedOut));
    // A token the broker never handed out belongs to no live session either.
    assert_eq!(b.token_rejected("never-seen", at(1_300.0), || 2).0, Get::Fail(BrokerError::LoggedOut));
    assert_eq!(b.access_token(), Some("c1"), "the current session is untouched");
}

#[test]
fn a_late_401_of_the_current_epoch_is_still_absorbed() {
    let mut b = logged_in();
    let (flight, _) = expire_and_wait(&mut b, 70_000.0);
    b.attempt_finished(flight, 0, Ok(set("a2", Some("r2"), Some(60.0))), at(70_010.0));
    let (get, fx) = b.token_rejected("a1", at(70_020.0), || 1);
    assert_eq!(get, Get::Ready("a2".into()));
    assert_eq!(events(&fx), vec![Event::Stale401]);
}

#[test]
fn a_replay_waiter_whose_session_ended_gets_logged_out_not_the_next_token() {
    let mut b = logged_in();
    // Request 7 (sent with a1) came back 401 and waits for the refresh; a plain caller 8 waits too.
    let (get, _) = b.token_rejected("a1", at(1_000.0), || 7);
    assert!(matches!(get, Get::Wait(_)));
    assert!(matches!(b.get_token(at(1_001.0), || 8).0, Get::Wait(_)));
    // Another user logs in before the refresh answers.
    let fx = b.set_tokens(set("b1", Some("rb1"), Some(60.0)), at(1_010.0));
    assert_eq!(rejected(&fx), vec![(7, BrokerError::LoggedOut)], "A's request is not replayed as B");
    assert_eq!(resolved(&fx), vec![(8, "b1".into())], "a call that sent nothing yet gets B's token");
}

#[test]
fn a_newer_epoch_from_another_tab_also_ends_replay_waiters() {
    let mut b = logged_in();
    assert!(matches!(b.token_rejected("a1", at(1_000.0), || 7).0, Get::Wait(_)));
    let e = b.epoch();
    let fx = b.adopt_shared(shared(9, e + 1, "z1", "rz1", T0 + 60_000.0), at(1_010.0));
    assert_eq!(rejected(&fx), vec![(7, BrokerError::LoggedOut)]);
    assert_eq!(b.token_rejected("a1", at(1_020.0), || 8).0, Get::Fail(BrokerError::LoggedOut));
}

#[test]
fn counters_saturate_at_two_to_the_53_and_never_wrap() {
    let mut b = logged_in();
    // A forged channel message with a huge epoch (the boundary caps what it reads; the core caps again).
    b.end_shared(u64::MAX, u64::MAX, true);
    assert_eq!(b.epoch(), MAX_COUNT);
    b.set_tokens(set("n1", Some("rn1"), Some(60.0)), at(1_000.0));
    assert_eq!(b.epoch(), MAX_COUNT, "saturated, not wrapped to 0");
    assert!(b.generation() <= MAX_COUNT);
    // A sibling's login at the same saturated epoch with a higher generation is still adopted.
    let g = b.generation();
    let fx = b.adopt_shared(shared(g.saturating_add(1).min(MAX_COUNT), MAX_COUNT, "s1", "rs1", T0 + 60_000.0), at(1_100.0));
    assert!(g == MAX_COUNT || !fx.is_empty());
    let fx = b.adopt_shared(shared(u64::MAX, u64::MAX, "s2", "rs2", T0 + 60_000.0), at(1_200.0));
    assert!(b.epoch() <= MAX_COUNT && b.generation() <= MAX_COUNT, "{fx:?}");
}

#[test]
fn a_tiny_lifetime_refreshes_at_most_once_a_second_but_a_401_refreshes_at_once() {
    let mut b = B::new(Config::default());
    b.set_tokens(set("t0", Some("r0"), Some(0.001)), at(0.0));
    let mut starts = Vec::new();
    let mut t = 0.0;
    // 2 s of calls every 5 ms, each refresh answering at once with another 1 ms token.
    while t < 2_000.0 {
        t += 5.0;
        let (get, fx) = b.get_token(at(t), || 0);
        for (flight, attempt, _, delay) in refreshes(&fx) {
            starts.push(t + delay);
            b.attempt_finished(flight, attempt, Ok(set(&format!("t{t}"), Some("r"), Some(0.001))), at(t + delay));
        }
        let _ = get;
    }
    assert!(starts.len() <= 3, "{starts:?}");
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= MIN_REFRESH_INTERVAL_MS, "{starts:?}");
    }
    // A 401 on the current token does not wait for the interval.
    let tok = b.access_token().unwrap().to_string();
    let (_, fx) = b.token_rejected(&tok, at(t + 1.0), || 1);
    assert_eq!(refreshes(&fx).iter().map(|r| r.3).collect::<Vec<_>>(), vec![0.0]);
}

#[test]
fn the_proactive_timer_waits_out_the_interval_too() {
    let mut b = B::new(Config::default());
    b.set_tokens(set("t0", Some("r0"), Some(0.001)), at(0.0));
    let fx = b.tick(at(1.0));
    let (flight, attempt, _, _) = refreshes(&fx)[0];
    b.attempt_finished(flight, attempt, Ok(set("t1", Some("r1"), Some(0.001))), at(2.0));
    let fx = b.tick(at(3.0));
    assert!(refreshes(&fx).is_empty());
    let wait = schedule(&fx).flatten().expect("re-armed");
    assert!(wait > 0.0 && wait <= MIN_REFRESH_INTERVAL_MS);
}

/// Proves the boundary's fast path safe: whenever both clocks are before the published
/// deadlines, `get_token` hands out that same token at once, with no effects.
#[test]
fn the_published_fresh_deadline_never_promises_more_than_the_core() {
    let lifetimes = [None, Some(0.001), Some(1.0), Some(2.0), Some(60.0), Some(3600.0)];
    let offsets = [-5_000.0, -1.0, 0.0, 1.0, 499.0, 999.0, 1_000.0, 1_001.0, 29_999.0, 50_000.0, 3_600_000.0];
    for lifetime in lifetimes {
        for leeway in [0.0, 10_000.0, 30_000.0] {
            for dw in offsets {
                for dm in offsets {
                    let mut b = B::new(Config { leeway_ms: leeway, ..Config::default() });
                    let t0 = Now { wall_ms: T0, mono_ms: 500.0 };
                    b.set_tokens(set("f1", Some("r1"), lifetime), t0);
                    let now = Now { wall_ms: T0 + dw, mono_ms: 500.0 + dm };
                    let fresh = b.fresh().map(|f| (f.token.to_string(), f.until_wall_ms, f.until_mono_ms));
                    let (token, w, m) = fresh.expect("a new token set is published");
                    if now.wall_ms < w && now.mono_ms < m {
                        let (get, fx) = b.get_token(now, || 0);
                        assert_eq!((get, fx.len()), (Get::Ready(token), 0), "{lifetime:?} {leeway} {dw} {dm}");
                    }
                }
            }
        }
    }
}

#[test]
fn nothing_is_published_while_a_call_would_wait() {
    let mut b = logged_in();
    assert!(b.fresh().is_some());
    b.token_rejected("a1", at(1.0), || 0);
    assert_eq!(b.fresh(), None, "rejected token, refresh running");
    let mut b = logged_in();
    b.logout();
    assert_eq!(b.fresh(), None);
    let mut b = logged_in();
    b.dispose();
    assert_eq!(b.fresh(), None);
}

#[test]
fn session_facts_follow_the_transitions() {
    let mut b = B::new(Config::default());
    assert!(!b.is_authenticated());
    assert_eq!(b.expires_at_wall_ms(), None);
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    assert!(b.is_authenticated());
    assert_eq!(b.expires_at_wall_ms(), Some(T0 + 60_000.0));
    b.token_rejected("a1", at(1.0), || 0);
    b.get_token(at(2.0), || 1);
    assert_eq!((b.state(), b.is_authenticated(), b.waiting()), (State::Refreshing, true, 2));
    let f = b.next_flight;
    b.attempt_finished(f, 0, Err(Failure::Terminal), at(3.0));
    assert_eq!((b.state(), b.is_authenticated(), b.waiting()), (State::Expired, false, 0));
    b.set_tokens(set("a2", None, None), at(4.0));
    assert_eq!((b.is_authenticated(), b.expires_at_wall_ms()), (true, None));
    b.dispose();
    assert!(!b.is_authenticated());
}

// ---- idle sessions (idle_timeout_ms) ----

fn idle_broker() -> B {
    let mut b = B::new(Config { leeway_ms: 10_000.0, idle_timeout_ms: Some(120_000.0), ..Config::default() });
    b.set_tokens(set("a1", Some("r1"), Some(60.0)), at(0.0));
    b
}

#[test]
fn an_idle_session_is_not_refreshed_in_the_background() {
    let mut b = idle_broker();
    // Active until t=10 s; the proactive timer fires at 50 s: still active → refresh.
    b.get_token(at(10_000.0), || 0);
    let fx = b.tick(at(50_000.0));
    let (flight, attempt, _, _) = refreshes(&fx)[0];
    b.attempt_finished(flight, attempt, Ok(set("a2", Some("r2"), Some(60.0))), at(50_010.0));
    // No call since t=10 s: at 130 s (120 s of silence) the timer parks instead of refreshing.
    let fx = b.tick(at(130_000.0));
    assert!(refreshes(&fx).is_empty());
    assert_eq!(schedule(&fx), Some(None), "disarmed");
    assert_eq!(b.state(), State::Valid);
    // The next call refreshes on demand.
    let (get, fx) = b.get_token(at(200_000.0), || 1);
    assert!(matches!(get, Get::Wait(_)));
    assert_eq!(refreshes(&fx).len(), 1);
}

#[test]
fn reported_activity_keeps_the_session_alive_and_re_arms_a_parked_timer() {
    let mut b = idle_broker();
    let fx = b.tick(at(130_000.0));
    assert_eq!(schedule(&fx), Some(None), "parked after 130 s without activity");
    // The user moves the mouse (or the fast path served a request) at 140 s: re-armed.
    let fx = b.touch(at(140_000.0));
    assert_eq!(schedule(&fx), Some(Some(0.0)), "the token is due: tick at once");
    let fx = b.tick(at(140_001.0));
    assert_eq!(refreshes(&fx).len(), 1, "active again: the background refresh runs");
}

#[test]
fn without_idle_timeout_activity_is_not_tracked() {
    let mut b = logged_in();
    assert!(b.touch(at(1.0)).is_empty());
    let fx = b.tick(at(1_000_000.0));
    assert_eq!(refreshes(&fx).len(), 1, "always refreshed in the background");
}
