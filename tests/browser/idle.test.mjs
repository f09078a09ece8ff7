// Idle sessions (issue 12): with idleTimeoutMs, a session nobody uses is not kept alive by the
// proactive timer; activity (calls, touch()) keeps it alive; the next call after idleness
// refreshes on demand. Tokens live 2 s (the harness's TTL), the idle limit is 1 s. Counts only.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

test('an idle session is not refreshed in the background; the next call refreshes on demand', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start({ broker: { idleTimeoutMs: 1000, leewaySeconds: 1 } });
    await tb.sleep(3500); // two token lifetimes without a call
    const background = window.t.events.filter((e) => e.type === 'refreshstart').length;
    const call = await tb.call('fetch', 'GET', '/statistics');
    return { background, call, after: window.t.events.filter((e) => e.type === 'refreshstart').length };
  }));
  assert.equal(result.background, 0, 'no proactive refresh while idle');
  assert.equal(result.call.ok, true);
  assert.equal(result.after, 1, 'one refresh, on demand');
  assert.equal(delta.refresh_calls, 1);
});

test('reported activity (touch) and requests keep the session refreshed in the background', T, async () => {
  const { result } = await h.measure(() => h.run(async () => {
    await tb.start({ broker: { idleTimeoutMs: 1000, leewaySeconds: 1 } });
    for (let i = 0; i < 12; i++) { window.t.broker.touch(); await tb.sleep(300); }
    const proactive = window.t.broker.generation;
    // Requests through the adapters count as activity by themselves (fast path included).
    for (let i = 0; i < 12; i++) { await tb.call('fetch', 'GET', '/statistics'); await tb.sleep(300); }
    return { proactive, later: window.t.broker.generation };
  }));
  assert.ok(result.proactive >= 2, `refreshed while active (generation ${result.proactive})`);
  assert.ok(result.later > result.proactive, `refreshed while requests flow (generation ${result.later})`);
});
