//! The one error type of the package. Codes are stable strings, documented in the README.

/// Every way a broker call can fail. [`BrokerError::code`] is the stable string JS sees as `err.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerError {
    /// No tokens: nobody logged in (or `setTokens` was never called).
    NotAuthenticated,
    /// The refresh token is dead (400 `invalid_grant`, 401 from the token endpoint): log in again.
    SessionExpired,
    /// The refresh failed for a reason that may pass (network, 5xx, 429) after all retries.
    RefreshFailed,
    /// The refresh did not settle within `refreshTimeoutMs`.
    RefreshTimeout,
    /// The caller's `AbortSignal` fired while it waited.
    Aborted,
    /// An option has the wrong type or is unknown.
    InvalidOptions,
    /// The token endpoint (or refresh function) answered something that is not a token set.
    InvalidTokenResponse,
    /// `logout()` was called while this call waited.
    LoggedOut,
    /// The broker was disposed (`dispose()` / `free()`) while this call waited, or is called after.
    Disposed,
    /// The WebAssembly module could not be loaded (made by the JS loader, which runs before it).
    LoadFailed,
    /// A DPoP proof could not be made: the key could not be made, read or used (IndexedDB
    /// blocked or failing, WebCrypto refusing). Made by `dpop.js`.
    DpopFailed,
}

impl BrokerError {
    /// The stable code, e.g. `"SESSION_EXPIRED"`.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAuthenticated => "NOT_AUTHENTICATED",
            Self::SessionExpired => "SESSION_EXPIRED",
            Self::RefreshFailed => "REFRESH_FAILED",
            Self::RefreshTimeout => "REFRESH_TIMEOUT",
            Self::Aborted => "ABORTED",
            Self::InvalidOptions => "INVALID_OPTIONS",
            Self::InvalidTokenResponse => "INVALID_TOKEN_RESPONSE",
            Self::LoggedOut => "LOGGED_OUT",
            Self::Disposed => "DISPOSED",
            Self::LoadFailed => "LOAD_FAILED",
            Self::DpopFailed => "DPOP_FAILED",
        }
    }

    /// A short English message for humans; the code is what programs should match on.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotAuthenticated => "No tokens: log in first (pass `tokens` or call setTokens)",
            Self::SessionExpired => "The session has expired: the refresh token was rejected; log in again",
            Self::RefreshFailed => "The token refresh failed after its retries",
            Self::RefreshTimeout => "The token refresh did not finish within refreshTimeoutMs",
            Self::Aborted => "The request was aborted while it waited for a token",
            Self::InvalidOptions => "Invalid options",
            Self::InvalidTokenResponse => "The refresh returned no usable token set",
            Self::LoggedOut => "logout() was called while the request waited for a token",
            Self::Disposed => "The broker was disposed",
            Self::LoadFailed => "The WebAssembly module could not be loaded",
            Self::DpopFailed => "A DPoP proof could not be made",
        }
    }

    /// The error a `TokenBrokerError` thrown by a user's refresh function stands for.
    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::NotAuthenticated,
            Self::SessionExpired,
            Self::RefreshFailed,
            Self::RefreshTimeout,
            Self::Aborted,
            Self::InvalidOptions,
            Self::InvalidTokenResponse,
            Self::LoggedOut,
            Self::Disposed,
            Self::LoadFailed,
            Self::DpopFailed,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let all = [
            "NOT_AUTHENTICATED", "SESSION_EXPIRED", "REFRESH_FAILED", "REFRESH_TIMEOUT", "ABORTED",
            "INVALID_OPTIONS", "INVALID_TOKEN_RESPONSE", "LOGGED_OUT", "DISPOSED", "LOAD_FAILED",
            "DPOP_FAILED",
        ];
        for code in all {
            let e = BrokerError::from_code(code);
            assert_eq!(e.map(BrokerError::code), Some(code));
            assert!(e.is_some_and(|e| !e.message().is_empty()));
        }
        assert_eq!(BrokerError::from_code("NOPE"), None);
    }
}
