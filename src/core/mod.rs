//! The sans-IO core: token state, single-flight refresh, expiry math, policy and error codes.
//!
//! Nothing here touches the browser. Time comes in as a [`Now`] value, inputs come in as
//! method calls and decisions go out as [`Effect`] values that the boundary carries out.

mod broker;
mod error;
mod expiry;
mod policy;
mod token;
// proptest is a host-only dev-dependency: not in the wasm-pack test build.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "parsers_props.rs"]
mod parsers_props;

pub use broker::{token_hash, Broker, Config, Effect, Event, Fresh, Get, RefreshReason, Shared, State, MIN_REFRESH_INTERVAL_MS};
pub use error::BrokerError;
pub use expiry::Now;
pub use policy::{challenge_401, classify_failure, refresh_on_401, Challenge, Failure};
pub use token::{check_token_type, parse_count, parse_seconds, parse_shared, parse_token_set, wipe, Field, Invalid, JwtTimes, TokenSet, MAX_COUNT};
