#!/usr/bin/env bash
# Idempotent setup for a fresh machine: installs only what is missing, so `npm test`
# and `npm run demo` can call it every time (~3 s when everything is present).
# Versions are pinned to match Cargo.lock (see README "Building from source").
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130
WASM_PACK_VERSION=0.15.1
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '[setup] %s\n' "$*"; }

# 1. The wasm target for the machine's rustc.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# 2. wasm-pack from crates.io (the npm package downloads from GitHub, which is unreachable here).
if ! wasm-pack --version 2>/dev/null | grep -q "$WASM_PACK_VERSION"; then
  log "installing wasm-pack $WASM_PACK_VERSION"
  cargo install wasm-pack --version "$WASM_PACK_VERSION" --locked
fi

# 3. wasm-bindgen-cli equal to the crate version; without --locked (the mirror lags one dependency).
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# 4. Chromium + ChromeDriver from apt. Never Debian's binaryen: its wasm-opt breaks wasm-bindgen output.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# 5. npm dependencies (binaryen's wasm-opt, playwright-core, axios, typescript, ...).
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ] || \
   { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; }; then
  log "installing npm dependencies"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi
log "ok"
