// Start-up: from the evaluation of 'token-broker' (it starts fetching and compiling the .wasm)
// to `await createTokenBroker(...)` resolving, created at once or `?delay=MS` after the import.
// Module order: the imported module evaluates first, so this module's first line runs right
// after it. With `&driven=1` the page calls `window.benchWaiting()` after the delay and waits
// until scripts/bench.mjs calls `window.go()`, so that it can read the main thread's CPU time
// around the create.
import { createTokenBroker } from 'token-broker';

const importedAt = performance.now();
let finished; let created;
window.startDone = new Promise((r) => { finished = r; });
window.created = new Promise((r) => { created = r; }); // the first create settled
const params = new URLSearchParams(location.search);
const delay = Number(params.get('delay') ?? 0);
if (delay > 0) await new Promise((r) => { setTimeout(r, delay); });
if (params.get('driven')) await new Promise((r) => { window.go = r; window.benchWaiting(); });
const calledAt = performance.now();
let error = null;
let doneAt;
try {
  const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
  doneAt = performance.now();
  created();
  broker.dispose();
} catch (e) {
  doneAt = performance.now();
  created();
  error = String(e?.message ?? e);
}
// A second create on the same page: what a create costs once everything ran once.
let againMs = null;
if (!error) {
  const t = performance.now();
  const again = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
  againMs = performance.now() - t;
  again.dispose();
}
const wasm = performance.getEntriesByType('resource').find((e) => e.name.endsWith('.wasm'));
window.startResult = {
  delay,
  error,
  importedAt, // since navigation start
  calledAfterImportMs: calledAt - importedAt,
  createMs: doneAt - calledAt,
  sinceImportMs: doneAt - importedAt,
  againMs,
  // The .wasm's own fetch: transferSize 0 would mean it came from a cache.
  wasm: wasm ? { startMs: wasm.startTime - importedAt, responseEndMs: wasm.responseEnd - importedAt,
    transferSize: wasm.transferSize, encodedBodySize: wasm.encodedBodySize } : null,
};
finished();
