//! Token sets and the validation of whatever a refresh returned.

use super::error::BrokerError;

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
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    /// The access token, sent as `Authorization: Bearer <access>`.
    pub access: String,
    /// The refresh token, when the server gave one (`None`: keep the previous one).
    pub refresh: Option<String>,
    /// How long the access token lives from receipt; `None` when unknown (then only a 401 refreshes).
    pub lifetime_ms: Option<f64>,
}

/// Validates a token response. `expires_in` wins; without it, a JWT access token's
/// `exp - iat` gives the lifetime (immune to client clock skew); with `exp` alone, the
/// lifetime is `exp` against the client clock corrected by `server_offset_ms` (server minus
/// client), and a result in the past is treated as unknown rather than expired, so a client
/// clock running fast cannot cause a refresh storm.
pub fn parse_token_set(
    access: Field,
    refresh: Field,
    expires_in: Field,
    client_wall_ms: f64,
    server_offset_ms: f64,
) -> Result<TokenSet, BrokerError> {
    let access = match access {
        Field::Str(s) if is_header_safe(&s) => s,
        _ => return Err(BrokerError::InvalidTokenResponse),
    };
    let refresh = match refresh {
        Field::Absent => None,
        Field::Str(s) if s.is_empty() => None,
        Field::Str(s) if is_header_safe(&s) => Some(s),
        _ => return Err(BrokerError::InvalidTokenResponse),
    };
    let expires_in_s = match expires_in {
        Field::Absent => None,
        Field::Num(n) if n.is_finite() && n >= 0.0 => Some(n),
        Field::Str(s) => Some(parse_seconds(&s).ok_or(BrokerError::InvalidTokenResponse)?),
        _ => return Err(BrokerError::InvalidTokenResponse),
    };
    let lifetime_ms = match expires_in_s {
        // expires_in: 0 is a broken server; refreshing on every call would be a storm.
        Some(s) if s > 0.0 => Some(s * 1000.0),
        Some(_) => None,
        None => match jwt_times(&access) {
            Some((Some(exp), Some(iat))) if exp > iat => Some((exp - iat) * 1000.0),
            Some((Some(exp), _)) => {
                let left = exp * 1000.0 - (client_wall_ms + server_offset_ms);
                if left > 0.0 { Some(left) } else { None }
            }
            _ => None,
        },
    };
    Ok(TokenSet { access, refresh, lifetime_ms })
}

/// Validates a token set read from storage or another tab (`{ g, e, a, r, x }`): anything
/// malformed is `None` and gets ignored, never trusted and never a crash.
pub fn parse_shared(g: Field, e: Field, a: Field, r: Field, x: Field) -> Option<super::broker::Shared> {
    let count = |f: Field| match f {
        Field::Num(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n < 9.0e15 => Some(n as u64),
        _ => None,
    };
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
    Some(super::broker::Shared { generation: count(g)?, epoch: count(e)?, access, refresh, expires_at_wall_ms })
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

/// `(exp, iat)` in seconds from a JWT's payload, without verifying it (the client only uses
/// them as hints for scheduling). `None` when the token is not a JWT or the payload is not JSON.
pub(crate) fn jwt_times(token: &str) -> Option<(Option<f64>, Option<f64>)> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = base64url_decode(payload)?;
    scan_top_level_numbers(&json)
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Finds the numeric `exp` and `iat` members of a top-level JSON object. A tiny scanner,
/// not a parser: it tracks strings and nesting depth so nested `exp` keys are ignored.
fn scan_top_level_numbers(json: &[u8]) -> Option<(Option<f64>, Option<f64>)> {
    let skip_ws = |mut i: usize| {
        while json.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    let (mut exp, mut iat) = (None, None);
    let mut depth = 0usize;
    let mut expect_key = false;
    while let Some(&c) = json.get(i) {
        i += 1;
        match c {
            b'{' | b'[' => {
                depth += 1;
                expect_key = c == b'{' && depth == 1;
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' => expect_key = depth == 1,
            b'"' => {
                let start = i;
                while let Some(&q) = json.get(i) {
                    if q == b'"' {
                        break;
                    }
                    i += if q == b'\\' { 2 } else { 1 };
                }
                let key = json.get(start..i)?;
                i += 1;
                if expect_key {
                    expect_key = false;
                    i = skip_ws(i);
                    if json.get(i) != Some(&b':') {
                        return None;
                    }
                    i = skip_ws(i + 1);
                    if key == b"exp" || key == b"iat" {
                        let n = parse_json_number(json, &mut i);
                        if key == b"exp" { exp = n } else { iat = n }
                    }
                }
            }
            _ => {}
        }
    }
    Some((exp, iat))
}

/// A non-negative JSON number in seconds (integer part, optional fraction; exponents refused).
fn parse_json_number(json: &[u8], i: &mut usize) -> Option<f64> {
    let (mut n, mut digits, mut scale, mut frac) = (0.0f64, 0, 1.0f64, false);
    while let Some(&b) = json.get(*i) {
        match b {
            b'0'..=b'9' => {
                let d = f64::from(b - b'0');
                if frac {
                    scale /= 10.0;
                    n += d * scale;
                } else {
                    n = n * 10.0 + d;
                }
                digits += 1;
            }
            b'.' if !frac => frac = true,
            _ => break,
        }
        *i += 1;
    }
    if digits == 0 || digits > 20 { None } else { Some(n) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (k, &b)| acc | (u32::from(b) << (16 - 8 * k)));
            for k in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * k)) & 63) as usize] as char);
            }
        }
        out
    }

    /// An unsigned JWT with the given payload (the client never verifies signatures).
    pub(crate) fn jwt(payload: &str) -> String {
        format!("{}.{}.sig", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(payload))
    }

    fn s(v: &str) -> Field {
        Field::Str(v.into())
    }

    #[test]
    fn expires_in_wins_and_counts_from_receipt() {
        let t = parse_token_set(s("a"), s("r"), Field::Num(300.0), 0.0, 0.0).unwrap();
        assert_eq!(t, TokenSet { access: "a".into(), refresh: Some("r".into()), lifetime_ms: Some(300_000.0) });
        let t = parse_token_set(s("a"), Field::Absent, s("60"), 0.0, 0.0).unwrap();
        assert_eq!((t.refresh, t.lifetime_ms), (None, Some(60_000.0)));
    }

    #[test]
    fn malformed_responses_are_errors() {
        let bad = [
            (Field::Absent, Field::Absent, Field::Absent),
            (s(""), Field::Absent, Field::Absent),
            (Field::Num(1.0), Field::Absent, Field::Absent),
            (Field::Other, Field::Absent, Field::Absent),
            (s("a b"), Field::Absent, Field::Absent),
            (s("a\r\nX-Evil: 1"), Field::Absent, Field::Absent),
            (s("a"), Field::Num(5.0), Field::Absent),
            (s("a"), s("r\n"), Field::Absent),
            (s("a"), Field::Absent, Field::Num(-1.0)),
            (s("a"), Field::Absent, Field::Num(f64::NAN)),
            (s("a"), Field::Absent, s("soon")),
            (s("a"), Field::Absent, Field::Other),
        ];
        for (a, r, e) in bad {
            assert_eq!(parse_token_set(a, r, e, 0.0, 0.0), Err(BrokerError::InvalidTokenResponse));
        }
    }

    #[test]
    fn zero_expires_in_means_unknown_not_expired() {
        let t = parse_token_set(s("a"), Field::Absent, Field::Num(0.0), 0.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, None);
    }

    #[test]
    fn jwt_exp_minus_iat_is_immune_to_client_clock() {
        let tok = jwt(r#"{"sub":"u","iat":1000,"exp":1300,"nested":{"exp":1}}"#);
        // The client clock is 10 minutes fast: the lifetime is still 300 s.
        let t = parse_token_set(Field::Str(tok), Field::Absent, Field::Absent, 1_600_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
    }

    #[test]
    fn jwt_exp_alone_uses_server_offset_and_never_yields_expired() {
        let tok = jwt(r#"{"exp":1300}"#);
        let t = parse_token_set(Field::Str(tok.clone()), Field::Absent, Field::Absent, 1_000_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
        // Client 10 minutes fast, offset known: corrected.
        let t = parse_token_set(Field::Str(tok.clone()), Field::Absent, Field::Absent, 1_600_000.0, -600_000.0).unwrap();
        assert_eq!(t.lifetime_ms, Some(300_000.0));
        // Client 10 minutes fast, offset unknown: unknown expiry, never "already expired".
        let t = parse_token_set(Field::Str(tok), Field::Absent, Field::Absent, 1_600_000.0, 0.0).unwrap();
        assert_eq!(t.lifetime_ms, None);
    }

    #[test]
    fn malformed_jwts_mean_unknown_expiry_not_errors() {
        for tok in ["opaque-token", "a.b", "a.!!!.c", "a.b.c.d", &jwt("[1,2]"), &jwt(r#"{"exp":"x"}"#), &jwt("{\"exp\"")] {
            let t = parse_token_set(s(tok), Field::Absent, Field::Absent, 0.0, 0.0).unwrap();
            assert_eq!(t.lifetime_ms, None, "{tok}");
        }
        assert_eq!(jwt_times(&jwt(r#"{"exp":12.5,"iat":2}"#)), Some((Some(12.5), Some(2.0))));
    }
}
