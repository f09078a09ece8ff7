//! token-broker: exactly one token refresh for many parallel API calls.
//!
//! `core` is the sans-IO state machine (pure Rust, host-tested); `wasm` is the only
//! `#[wasm_bindgen]` boundary and carries out the core's decisions with Promises,
//! timers and `fetch`.
#![deny(missing_docs)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod wasm;

// talc instead of the default dlmalloc: about 3 KB less gzipped, O(1)-ish operations (binned free
// lists), and memory given back to its free lists stays flat over rounds of 10,000 waiters. Safe
// here: the module is single-threaded (no `atomics` target feature).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[cfg(target_arch = "wasm32")]
pub use wasm::TokenBroker;
