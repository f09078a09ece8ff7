//! Minimal HS256 JWTs. Hand-rolled on hmac/sha2 to keep the dependency tree small; the
//! verifier accepts nothing but `alg: HS256`, so "alg: none" and key-confusion tricks fail.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const ISSUER: &str = "token-server";
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// Anything longer is not one of ours, and refusing early bounds the work per request.
const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    /// Whole seconds, rounded up, for standard JWT tooling; the server judges by `exp_ms`.
    pub exp: i64,
    /// Exact expiry in epoch milliseconds, because test TTLs can be fractional seconds.
    pub exp_ms: i64,
    pub jti: String,
    /// Refresh-token family the token was issued under.
    pub fam: String,
    /// Generation of the refresh token it was issued with (1 = login).
    pub gen: u64,
    /// The client the family was issued to (RFC 9068 §2.2 claim name).
    pub client_id: String,
    /// Space-separated; may be narrower than the family's grant (RFC 6749 §6).
    pub scope: String,
    /// DPoP binding (RFC 9449 §6.1): only with a proof; absent from bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Cnf>,
}

/// RFC 7800 confirmation claim with the RFC 9449 key thumbprint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cnf {
    pub jkt: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    UnsupportedAlgorithm,
    BadSignature,
}

impl JwtError {
    pub fn description(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed access token",
            JwtError::UnsupportedAlgorithm => "unsupported token algorithm",
            JwtError::BadSignature => "access token signature invalid",
        }
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        // HMAC is defined for keys of every length, so this arm cannot be reached.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

pub fn sign(key: &[u8], claims: &Claims) -> String {
    // Serialising a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = m.finalize().into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

pub fn verify(key: &[u8], token: &str) -> Result<Claims, JwtError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err(JwtError::Malformed),
    };
    let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(key);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(JwtError::Malformed);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "demo".into(),
            iat: 1,
            exp: 2,
            exp_ms: 1500,
            jti: "j".into(),
            fam: "f".into(),
            gen: 1,
            client_id: "spa".into(),
            scope: "read write".into(),
            cnf: None,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let t = sign(b"k", &claims());
        assert_eq!(verify(b"k", &t), Ok(claims()));
        assert_eq!(verify(b"other", &t), Err(JwtError::BadSignature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        parts[0] = &none;
        assert_eq!(
            verify(b"k", &parts.join(".")),
            Err(JwtError::UnsupportedAlgorithm)
        );
        assert_eq!(verify(b"k", "a.b"), Err(JwtError::Malformed));
        assert_eq!(verify(b"k", "%%%.###.!!!"), Err(JwtError::Malformed));
    }
}
