//! Expiry math. A token's life is measured from its local time of receipt, never by comparing
//! server timestamps with the client's wall clock (security-rules.md rule 12): a client clock
//! ten minutes fast must not make every fresh token look expired.

/// A moment as the boundary sees it: the wall clock (`Date.now()`) and a monotonic clock
/// (`performance.now()`), both in milliseconds. Elapsed time is the larger of the two
/// differences, so a laptop that slept (monotonic clock paused on some platforms) or a wall
/// clock set forward both count as time passing, and a wall clock set back does not undo it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Now {
    /// Milliseconds since the Unix epoch, as the client believes.
    pub wall_ms: f64,
    /// Milliseconds on a monotonic clock with an arbitrary origin.
    pub mono_ms: f64,
}

impl Now {
    /// Both clocks at the given milliseconds (handy in tests).
    pub fn at(ms: f64) -> Self {
        Now { wall_ms: ms, mono_ms: ms }
    }

    /// Milliseconds from `earlier` to `self`, never negative.
    pub fn since(self, earlier: Now) -> f64 {
        let wall = self.wall_ms - earlier.wall_ms;
        let mono = self.mono_ms - earlier.mono_ms;
        let e = if wall > mono { wall } else { mono };
        if e > 0.0 { e } else { 0.0 }
    }
}

/// The leeway actually applied: the configured one, but at most half the token's lifetime, so
/// short-lived tokens (seconds, in tests) are still used for half their life instead of being
/// refreshed the moment they arrive (a refresh storm).
pub fn effective_leeway(leeway_ms: f64, lifetime_ms: f64) -> f64 {
    let half = lifetime_ms / 2.0;
    if leeway_ms < half { leeway_ms } else { half }
}

/// Milliseconds until a token received at `received` with `lifetime_ms` should be refreshed
/// (0 when it is due already). `None` when the lifetime is unknown: then only a 401 refreshes.
pub fn refresh_due_in(received: Now, lifetime_ms: Option<f64>, leeway_ms: f64, now: Now) -> Option<f64> {
    let lifetime = lifetime_ms?;
    let left = lifetime - effective_leeway(leeway_ms, lifetime) - now.since(received);
    Some(if left > 0.0 { left } else { 0.0 })
}

/// Milliseconds the token is still valid for (0 when expired); `None` when unknown.
pub fn remaining(received: Now, lifetime_ms: Option<f64>, now: Now) -> Option<f64> {
    let left = lifetime_ms? - now.since(received);
    Some(if left > 0.0 { left } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_takes_the_larger_clock() {
        let t0 = Now { wall_ms: 1_000.0, mono_ms: 50.0 };
        // Monotonic clock paused during sleep, wall clock moved: wall wins.
        assert_eq!(Now { wall_ms: 61_000.0, mono_ms: 60.0 }.since(t0), 60_000.0);
        // Wall clock set back by the user: monotonic still counts.
        assert_eq!(Now { wall_ms: 0.0, mono_ms: 5_050.0 }.since(t0), 5_000.0);
        // Both backwards (impossible, but never negative).
        assert_eq!(Now { wall_ms: 0.0, mono_ms: 0.0 }.since(t0), 0.0);
    }

    #[test]
    fn leeway_is_capped_at_half_the_lifetime() {
        assert_eq!(effective_leeway(30_000.0, 300_000.0), 30_000.0);
        assert_eq!(effective_leeway(30_000.0, 2_000.0), 1_000.0);
    }

    #[test]
    fn due_and_remaining() {
        let t0 = Now::at(0.0);
        assert_eq!(refresh_due_in(t0, Some(60_000.0), 10_000.0, Now::at(20_000.0)), Some(30_000.0));
        assert_eq!(refresh_due_in(t0, Some(60_000.0), 10_000.0, Now::at(59_000.0)), Some(0.0));
        assert_eq!(refresh_due_in(t0, None, 10_000.0, Now::at(1.0)), None);
        assert_eq!(remaining(t0, Some(60_000.0), Now::at(70_000.0)), Some(0.0));
        assert_eq!(remaining(t0, Some(60_000.0), Now::at(10_000.0)), Some(50_000.0));
    }
}
