//! token-broker: exactly one token refresh for many parallel API calls.
//!
//! `core` is the sans-IO state machine (pure Rust, host-tested); `wasm` is the only
//! `#[wasm_bindgen]` boundary and carries out the core's decisions with Promises,
//! timers and `fetch`.
#![deny(missing_docs)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
pub use wasm::TokenBroker;
