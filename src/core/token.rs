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

/// Checks a token response's `token_type` against the configuration (RFC 9449 §5): with DPoP
/// on, only `DPoP` (any case) is accepted, so a server that ignored the proof and issued a bearer
/// token is refused rather than silently used as one; without DPoP, a `DPoP` token is refused
/// (it cannot be used without the key). Anything else (`Bearer`, missing, odd) is a bearer token.
pub fn check_token_type(token_type: &Field, dpop: bool) -> Result<(), Invalid> {
    let is_dpop = matches!(token_type, Field::Str(t) if t.eq_ignore_ascii_case("dpop"));
    match (dpop, is_dpop) {
        (true, false) if *token_type == Field::Absent => {
            Err("token_type is missing; with dpop on it must be DPoP")
        }
        (true, false) => Err("token_type is not DPoP; with dpop on a bearer token is refused"),
        (false, true) => Err("token_type is DPoP; dpop is off"),
        _ => Ok(()),
    }
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
#[path = "token_tests.rs"]
mod tests;
