//! Policy: which failures are worth a retry, which end the session, which 401s deserve a
//! refresh, and how long to back off.

use super::error::BrokerError;

/// Why a refresh attempt failed, as far as the broker cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// Might pass: network error, timeout, 5xx, 429. Retried with backoff.
    Transient {
        /// The server's `Retry-After`, in seconds, when it sent one.
        retry_after_s: Option<f64>,
    },
    /// The refresh token is dead (400/401, `invalid_grant`, `invalid_client`): the session ends.
    Terminal,
    /// An answer that will not change on retry (e.g. 403, 404): fail now with `REFRESH_FAILED`.
    Permanent,
    /// The answer was not a token set.
    Malformed,
    /// The user's refresh function threw a `TokenBrokerError`: its code is kept.
    Coded(BrokerError),
    /// The token endpoint asked for a DPoP nonce (`use_dpop_nonce`, RFC 9449 §8): the attempt
    /// is made again at once with the nonce it sent, once per refresh, and is not a failure.
    Nonce,
}

/// Classifies a rejected refresh from the error itself, the way users write refresh functions
/// with axios or fetch: an HTTP status (`err.status` / `err.response.status`), an OAuth `error`
/// (`err.error` / `err.response.data.error`), or the code of a `TokenBrokerError` it threw.
pub fn classify_failure(
    status: Option<f64>,
    oauth_error: Option<&str>,
    broker_code: Option<&str>,
    retry_after_s: Option<f64>,
) -> Failure {
    if let Some(e) = broker_code.and_then(BrokerError::from_code) {
        return Failure::Coded(e);
    }
    match oauth_error {
        Some("invalid_grant" | "invalid_client" | "unauthorized_client") => return Failure::Terminal,
        Some("use_dpop_nonce") => return Failure::Nonce,
        // The proof was refused, not the refresh token: the session is not over (RFC 9449 §5).
        Some("invalid_dpop_proof") => return Failure::Permanent,
        _ => {}
    }
    match status {
        None => Failure::Transient { retry_after_s },
        Some(s) if s == 400.0 || s == 401.0 => Failure::Terminal,
        Some(s) if s == 429.0 || s >= 500.0 => Failure::Transient { retry_after_s },
        // A 2xx that arrives here is a response we could not read as tokens.
        Some(s) if (200.0..300.0).contains(&s) => Failure::Malformed,
        Some(_) => Failure::Permanent,
    }
}

/// What a 401 asks of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// The token was refused: one shared refresh, then the replay.
    Refresh,
    /// `error="use_dpop_nonce"` (RFC 9449 §9): send the request again, once, with a fresh proof
    /// carrying the nonce the server just sent, and the same token. No refresh.
    Nonce,
    /// Anything else (`insufficient_scope`, `invalid_dpop_proof`, ...): the 401 is the answer.
    None,
}

/// Whether a 401 with this `WWW-Authenticate` header is worth a refresh.
pub fn refresh_on_401(www_authenticate: Option<&str>) -> bool {
    challenge_401(www_authenticate) == Challenge::Refresh
}

/// What a 401 with this `WWW-Authenticate` header asks for (RFC 6750 §3.1, RFC 9449 §7.1, §9,
/// security-rules.md rule 7): a refresh for a bare challenge or `error="invalid_token"`; a
/// nonce retry for `use_dpop_nonce`; nothing for `insufficient_scope`, `invalid_request`,
/// `invalid_dpop_proof` or any other error. A missing header (often hidden by CORS) counts as
/// bare.
pub fn challenge_401(www_authenticate: Option<&str>) -> Challenge {
    let Some(h) = www_authenticate else { return Challenge::Refresh };
    // Byte-level scan (no string slicing): keeps panics, and their formatting code, out of the .wasm.
    let b = h.as_bytes();
    let lower = |i: usize| b.get(i).map(u8::to_ascii_lowercase);
    let skip_spaces = |mut j: usize| {
        while lower(j) == Some(b' ') {
            j += 1;
        }
        j
    };
    let mut saw_error = false;
    let mut i = 0;
    while i < b.len() {
        let at = i;
        i += 1;
        let is_key = (0..5).all(|k| lower(at + k) == Some(b"error"[k]));
        let boundary = at == 0 || matches!(lower(at - 1), Some(b' ' | b',' | b'\t'));
        if !is_key || !boundary {
            continue;
        }
        let mut j = skip_spaces(at + 5);
        if lower(j) != Some(b'=') {
            continue; // error_description, error_uri
        }
        j = skip_spaces(j + 1);
        let quoted = lower(j) == Some(b'"');
        if quoted {
            j += 1;
        }
        let mut end = j;
        while let Some(c) = lower(end) {
            if (quoted && c == b'"') || (!quoted && (c == b',' || c == b' ')) {
                break;
            }
            end += 1;
        }
        let is = |word: &[u8]| end - j == word.len() && (0..word.len()).all(|k| lower(j + k) == Some(word[k]));
        if is(b"invalid_token") {
            return Challenge::Refresh;
        }
        if is(b"use_dpop_nonce") {
            return Challenge::Nonce;
        }
        saw_error = true;
        i = end + 1;
    }
    if saw_error { Challenge::None } else { Challenge::Refresh }
}

/// Delay before retry `attempt` (1-based) of a transient failure: the server's `Retry-After`
/// when given (capped at 60 s), else 250 ms, 500 ms, 1 s, ... capped at 8 s.
pub fn retry_delay_ms(attempt: u32, retry_after_s: Option<f64>) -> f64 {
    match retry_after_s {
        Some(s) if s.is_finite() && s >= 0.0 => (s * 1000.0).min(60_000.0),
        _ => (250.0 * f64::from(1u32 << attempt.saturating_sub(1).min(5))).min(8_000.0),
    }
}

/// Delay before the proactive timer tries again after `failures` failed background refreshes:
/// 1 s, 2 s, 4 s, ... capped at 60 s, so a dead token endpoint never becomes a tight loop.
pub fn proactive_backoff_ms(failures: u32) -> f64 {
    (1000.0 * f64::from(1u32 << failures.saturating_sub(1).min(6))).min(60_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        use Failure::*;
        let t = |retry_after_s| Transient { retry_after_s };
        let cases: &[(Option<f64>, Option<&str>, Option<&str>, Option<f64>, Failure)] = &[
            (None, None, None, None, t(None)),                       // network error
            (Some(503.0), None, None, Some(2.0), t(Some(2.0))),      // 503 + Retry-After
            (Some(500.0), None, None, None, t(None)),
            (Some(429.0), None, None, Some(1.0), t(Some(1.0))),
            (Some(400.0), None, None, None, Terminal),
            (Some(401.0), None, None, None, Terminal),
            (None, Some("invalid_grant"), None, None, Terminal),
            (Some(500.0), Some("invalid_grant"), None, None, Terminal),
            (Some(401.0), Some("invalid_client"), None, None, Terminal),
            (Some(403.0), None, None, None, Permanent),
            (Some(404.0), Some("not_found"), None, None, Permanent),
            (Some(200.0), None, None, None, Malformed),
            (Some(500.0), None, Some("SESSION_EXPIRED"), None, Coded(BrokerError::SessionExpired)),
            (None, None, Some("REFRESH_TIMEOUT"), None, Coded(BrokerError::RefreshTimeout)),
            (None, None, Some("SOMETHING_ELSE"), None, t(None)),
            (Some(400.0), Some("use_dpop_nonce"), None, None, Nonce),
            (Some(401.0), Some("use_dpop_nonce"), None, None, Nonce),
            (Some(400.0), Some("invalid_dpop_proof"), None, None, Permanent),
            (Some(400.0), Some("use_dpop_nonce"), Some("SESSION_EXPIRED"), None, Coded(BrokerError::SessionExpired)),
        ];
        for &(status, err, code, ra, want) in cases {
            assert_eq!(classify_failure(status, err, code, ra), want, "{status:?} {err:?} {code:?}");
        }
    }

    #[test]
    fn which_401s_refresh() {
        let yes = [
            None,
            Some(""),
            Some("Bearer"),
            Some(r#"Bearer realm="api""#),
            Some(r#"Bearer error="invalid_token", error_description="The access token expired""#),
            Some(r#"Bearer realm="x", error=invalid_token"#),
            Some(r#"Bearer ERROR="INVALID_TOKEN""#),
            Some(r#"Bearer error_description="error=insufficient_scope is not it", error="invalid_token""#),
        ];
        let no = [
            Some(r#"Bearer error="insufficient_scope", scope="admin""#),
            Some(r#"Bearer error="invalid_request""#),
            Some(r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce""#),
            Some(r#"DPoP error="invalid_dpop_proof""#),
        ];
        for h in yes {
            assert!(refresh_on_401(h), "{h:?}");
        }
        for h in no {
            assert!(!refresh_on_401(h), "{h:?}");
        }
    }

    #[test]
    fn a_dpop_nonce_challenge_asks_for_a_retry_not_a_refresh() {
        let nonce = [
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
            r#"DPoP algs="ES256", error=use_dpop_nonce"#,
            r#"Bearer realm="x", DPoP error="USE_DPOP_NONCE""#,
        ];
        for h in nonce {
            assert_eq!(challenge_401(Some(h)), Challenge::Nonce, "{h}");
        }
        assert_eq!(challenge_401(Some(r#"DPoP error="invalid_token""#)), Challenge::Refresh);
        assert_eq!(challenge_401(Some("DPoP")), Challenge::Refresh);
        assert_eq!(challenge_401(None), Challenge::Refresh);
        assert_eq!(challenge_401(Some(r#"DPoP error="invalid_dpop_proof""#)), Challenge::None);
        assert_eq!(challenge_401(Some(r#"DPoP error="use_dpop_nonces""#)), Challenge::None);
    }

    #[test]
    fn backoffs_are_bounded() {
        assert_eq!(retry_delay_ms(1, None), 250.0);
        assert_eq!(retry_delay_ms(2, None), 500.0);
        assert_eq!(retry_delay_ms(30, None), 8_000.0);
        assert_eq!(retry_delay_ms(1, Some(2.0)), 2_000.0);
        assert_eq!(retry_delay_ms(1, Some(1e9)), 60_000.0);
        assert_eq!(proactive_backoff_ms(1), 1_000.0);
        assert_eq!(proactive_backoff_ms(3), 4_000.0);
        assert_eq!(proactive_backoff_ms(100), 60_000.0);
    }
}
