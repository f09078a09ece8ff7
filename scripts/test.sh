#!/usr/bin/env bash
# `npm test`: setup, then every test ring. Fails on the first red ring.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

echo "== ring 1: host tests (cargo test: sans-IO core + reference server)"
cargo test --workspace --quiet 2>&1

echo "== ring 1b: src/core stays free of browser bindings"
if grep -rnE 'wasm_bindgen|js_sys|web_sys|gloo' src/core; then
  echo "src/core must be pure Rust" >&2; exit 1
fi

echo "== ring 2: the WebAssembly boundary in headless Chromium (wasm-pack test)"
wasm-pack test --headless --chrome 2>&1

echo "== ring 3: package build (and the reference server the browser tests start)"
node scripts/build.mjs
cargo build --release --quiet -p token-server

echo "== ring 3a: size budget (gzip -9 of everything shipped)"
node scripts/size-budget.mjs

echo "== ring 3b: the published package from the outside (tarball in a clean project; Node, Chromium, publint, attw)"
node --test --test-concurrency=1 tests/package/*.test.mjs

echo "== ring 4: JS tests in real Chromium (node --test)"
shopt -s nullglob
files=(tests/browser/*.test.mjs)
if [ ${#files[@]} -gt 0 ]; then
  node --test --test-concurrency=1 "${files[@]}"
fi
