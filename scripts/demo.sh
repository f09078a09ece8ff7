#!/usr/bin/env bash
# `npm run demo [-- --port N]`: the dashboard from the original question, live, against the
# reference token server. Installs what is missing (scripts/setup.sh), builds the package when
# its sources changed, then hands over to scripts/demo.mjs (pack, install into the examples,
# Vite builds, server). Ctrl-C stops the server. PORT=N works too (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

# Build pkg/ unless it is newer than everything it is made from.
if [ ! -f pkg/package.json ] || [ ! -f pkg/token_broker_bg.wasm ] || \
   [ -n "$(find src js pkg-template Cargo.toml Cargo.lock README.md -newer pkg/package.json -print -quit 2>/dev/null)" ]; then
  echo "[demo] building the package (node scripts/build.mjs)"
  node scripts/build.mjs
else
  echo "[demo] pkg/ is up to date"
fi

# exec: node receives Ctrl-C itself and stops the server (its own process group) before exiting.
exec node scripts/demo.mjs "$@"
