//! Token sets and the validation of whatever a refresh returned.

/// One field of a token response as the boundary found it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `undefined` or `null`.
    Absent,
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// Anything else (object, boolean, ...): always a malformed response.
    Other,
}

/// A validated token set. `lifetime_ms` counts from the local moment of receipt.
///
/// Its token bytes are overwritten when it is dropped (replaced, logout, dispose), so a later
/// read of the module's memory does not find them. Copies handed to JavaScript are JS strings,
/// which no code can wipe.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    /// The access token, sent as `Authorization: Bearer <access>`.
    pub access: String,
    /// The refresh token, when the server gave one (`None`: keep the previous one).
    pub refresh: Option<String>,
    /// How long the access token lives from receipt; `None` when unknown (then only a 401 refreshes).
    pub lifetime_ms: Option<f64>,
}

impl Drop for TokenSet {
    fn drop(&mut self) {
        wipe(&mut self.access);
        if let Some(r) = &mut self.refresh {
            wipe(r);
        }
    }
}

/// Overwrites a secret's bytes before its memory goes back to the allocator.
pub fn wipe(s: &mut String) {
    // Zero bytes keep the string valid UTF-8; volatile writes are not optimised away.
    // SAFETY: only ASCII NUL is written, so the String stays valid UTF-8.
    for b in unsafe { s.as_bytes_mut() } {
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    s.clear();
}

/// `exp` and `iat` (seconds) of a JWT access token's payload, as the boundary decoded it with
/// the platform (`atob` + `JSON.parse`); `None` for opaque tokens. Hints for scheduling only:
/// the client never verifies a JWT.
pub type JwtTimes = Option<(Option<f64>, Option<f64>)>;

/// What is wrong with a token response, in words that never contain the response's values.
pub type Invalid = &'static str;

/// Validates a token response. `expires_in` wins; without it, a JWT access token's
/// `exp - iat` gives the lifetime (immune to client clock skew); with `exp` alone, the
/// lifetime is `exp` against the client clock corrected by `server_offset_ms` (server minus
/// client), and a result in the past is treated as unknown rather than expired, so a client
/// clock running fast cannot cause a refresh storm.
pub fn parse_token_set(
    access: Field,
    refresh: Field,
    expires_in: Field,
    jwt: JwtTimes,
    client_wall_ms: f64,
    server_offset_ms: f64,
) -> Result<TokenSet, Invalid> {
    let access = match access {
        Field::Absent => return Err("access_token is missing"),
        Field::Str(s) if s.is_empty() => return Err("access_token is empty"),
        Field::Str(s) if is_header_safe(&s) => s,
        Field::Str(_) => return Err("access_token contains a space, a control or a non-ASCII character"),
        _ => return Err("access_token is not a string"),
    };
    let refresh = match refresh {
        Field::Absent => None,
        Field::Str(s) if s.is_empty() => None,
        Field::Str(s) if is_header_safe(&s) => Some(s),
        Field::Str(_) => return Err("refresh_token contains a space, a control or a non-ASCII character"),
        _ => return Err("refresh_token is not a string"),
    };
    let expires_in_s = match expires_in {
        Field::Absent => None,
        Field::Num(n) if n.is_finite() && n >= 0.0 => Some(n),
        Field::Str(s) => Some(parse_seconds(&s).ok_or("expires_in is not a number of seconds")?),
        _ => return Err("expires_in is not a non-negative number of seconds"),
    };
    let lifetime_ms = match expires_in_s {
        // expires_in: 0 is a broken server; refreshing on every call would be a storm.
        Some(s) if s > 0.0 => Some(s * 1000.0),
        Some(_) => None,
        None => match jwt {
            Some((Some(exp), Some(iat))) if exp > iat => Some((exp - iat) * 1000.0),
            Some((Some(exp), _)) => {
                let left = exp * 1000.0 - (client_wall_ms + server_offset_ms);
                if left > 0.0 { Some(left) } else { None }
            }
            _ => None,
        },
    };
    // Past f64's range (expires_in of 1.8e305 s, JWT claims as far apart) the lifetime is as good
    // as unknown, and an infinite expiry would not survive the trip to another tab.
    Ok(TokenSet { access, refresh, lifetime_ms: lifetime_ms.filter(|l| l.is_finite()) })
}

/// The largest generation or epoch a message or record may carry: 2^53, where JS numbers stop
/// being exact. Counters saturate there instead of wrapping (a forged message must not be able
/// to push them around the clock and make the next login look older).
pub const MAX_COUNT: u64 = 1 << 53;

/// A generation or epoch read from outside: a whole number from 0 to [`MAX_COUNT`].
pub fn parse_count(f: &Field) -> Option<u64> {
    match *f {
        Field::Num(n) if n >= 0.0 && n <= MAX_COUNT as f64 && n.fract() == 0.0 => Some(n as u64),
        _ => None,
    }
}

/// Validates a token set read from storage or another tab (`{ g, e, a, r, x }`): anything
/// malformed is `None` and gets ignored, never trusted and never a crash.
pub fn parse_shared(g: Field, e: Field, a: Field, r: Field, x: Field) -> Option<super::broker::Shared> {
    let (generation, epoch) = (parse_count(&g)?, parse_count(&e)?);
    let access = match a {
        Field::Str(s) if is_header_safe(&s) => s,
        _ => return None,
    };
    let refresh = match r {
        Field::Absent => None,
        Field::Str(s) if is_header_safe(&s) => Some(s),
        _ => return None,
    };
    let expires_at_wall_ms = match x {
        Field::Absent => None,
        Field::Num(n) if n.is_finite() => Some(n),
        _ => return None,
    };
    Some(super::broker::Shared { generation, epoch, access, refresh, expires_at_wall_ms })
}

/// Non-empty, visible ASCII only: anything else could split or corrupt the header it goes into.
fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Whole seconds from a string such as `"3600"` or a `Retry-After` value (HTTP dates: `None`).
pub fn parse_seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0.0, |acc, b| acc * 10.0 + f64::from(b - b'0')))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn s(v: &str) -> Field {
        Field::Str(v.into())
    }

    fn parse(a: Field, r: Field, e: Field) -> Result<TokenSet, Invalid> {
        parse_token_set(a, r, e, None, 0.0, 0.0)
    }

    #[test]
    fn expires_in_wins_and_counts_from_receipt() {
        let t = parse_token_set(s("a"), s("r"), Field::Num(300.0), Some((Some(9.0), Some(1.0))), 0.0, 0.0).unwrap();
        assert_eq!(t, TokenSet { access: "a".into(), refresh: Some("r".into()), lifetime_ms: Some(300_000.0) });
        let t = parse(s("a"), Field::Absent, s("60")).unwrap();
        assert_eq!((t.refresh.clone(), t.lifetime_ms), (None, Some(60_000.0)));
    }

    #[test]
    fn malformed_responses_are_described_without_their_values() {
        let bad = [
            (Field::Absent, Field::Absent, Field::Absent, "access_token is missing"),
            (s(""), Field::Absent, Field::Absent, "access_token is empty"),
            (Field::Num(1.0), Field::Absent, Field::Absent, "access_token is not a string"),
            (Field::Other, Field::Absent, Field::Absent, "access_token is not a string"),
            (s("a b"), Field::Absent, Field::Absent, "access_token contains a space"),
            (s("a\r\nX-Evil: 1"), Field::Absent, Field::Absent, "access_token contains a space"),
            (s("a"), Field::Num(5.0), Field::Absent, "refresh_token is not a string"),
            (s("a"), s("r\n"), Field::Absent, "refresh_token contains"),
            (s("a"), Field::Absent, Field::Num(-1.0), "expires_in is not"),
            (s("a"), Field::Absent, Field::Num(f64::NAN), "expires_in is not"),
            (s("a"), Field::Absent, s("soon"), "expires_in is not"),
            (s("a"), Field::Absent, Field::Other, "expires_in is not"),
        ];
        for (a, r, e, want) in bad {
            let got = parse(a, r, e).unwrap_err();
            assert!(got.starts_with(want), "{got}");
        }
    }

    #[test]
    fn zero_expires_in_means_unknown_not_expired() {
        let t = parse(s("a"), Field::Absent, Field::Num(0.0)).unwrap();
        assert_eq!(t.lifetime_ms, None);
    }

    #[test]
    fn jwt_exp_minus_iat_is_immune_to_client_clock() {
        // The client clock is 10 minutes fast: the lifetime is still 300 s.
        let t = parse_token_set(s("j"), Field::Absent, Field::Absent, Some((Some(1300.0), Some(1000.0))), 1_600_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
    }

    #[test]
    fn jwt_exp_alone_uses_server_offset_and_never_yields_expired() {
        let exp = Some((Some(1300.0), None));
        let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_000_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
        // Client 10 minutes fast, offset known: corrected.
        let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_600_000.0, -600_000.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
        // Client 10 minutes fast, offset unknown: unknown expiry, never "already expired".
        let t = parse_token_set(s("j"), Field::Absent, Field::Absent, exp, 1_600_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, None);
    }

    #[test]
    fn opaque_tokens_and_useless_claims_mean_unknown_expiry() {
        for jwt in [None, Some((None, None)), Some((None, Some(5.0))), Some((Some(1.0), Some(5.0)))] {
            let t = parse_token_set(s("t"), Field::Absent, Field::Absent, jwt, 10_000.0, 0.0).unwrap();
            assert_eq!(t.lifetime_ms, None, "{jwt:?}");
        }
    }

    #[test]
    fn counts_are_whole_numbers_up_to_two_to_the_53() {
        assert_eq!(parse_count(&Field::Num(7.0)), Some(7));
        assert_eq!(parse_count(&Field::Num(MAX_COUNT as f64)), Some(MAX_COUNT));
        for bad in [1e300, f64::INFINITY, f64::NAN, -1.0, 1.5, (MAX_COUNT as f64) * 2.0] {
            assert_eq!(parse_count(&Field::Num(bad)), None, "{bad}");
        }
        assert_eq!(parse_count(&Field::Str("1".into())), None);
    }

    #[test]
    fn wipe_zeroes_and_clears() {
        let mut secret = String::from("rt-123");
        wipe(&mut secret);
        assert!(secret.is_empty());
    }
}
