//! Integration tests over real HTTP on loopback; each test starts its own server on port 0.

mod common;

mod api;
mod binary;
mod binding;
mod cors;
mod dpop;
mod faults;
mod realtime;
mod realtime_dpop;
mod revocation;
mod robustness;
mod slow_clients;
mod tokens;
