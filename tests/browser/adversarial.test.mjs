// Adversarial refresh outcomes from security-rules.md §3 (cases 5, 6, 10, 13, 14), through the
// fetch adapter in Chromium against the reference server's fault switches. Counts, not timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const DASH = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

/**
 * Logs in with a token the broker knows expires within a millisecond and fires the four dashboard
 * calls right after it did (no extra page round trip), so they meet the refresh the broker starts
 * for that token, not a later one, and none goes out with the old token.
 */
const burst = (broker = {}) => h.measure(() => h.run(async ([b, paths]) => {
  await tb.start({ mode: 'known-expired', broker: b });
  await tb.sleep(5);
  return Promise.all(paths.map((p) => tb.call('fetch', 'GET', p)));
}, [broker, DASH]));
/** Four more calls after the current token was rejected once (forces the next refresh). */
const again = () => h.measure(() => h.run(async (paths) => {
  await window.t.broker.tokenRejected(await window.t.broker.getAccessToken()).catch(() => {});
  return Promise.all(paths.map((p) => tb.call('fetch', 'GET', p)));
}, DASH));
const okAll = (rs) => assert.ok(rs.every((r) => r.ok), JSON.stringify(rs));

test('refresh response lost after the server committed, grace window on → one retry gets the same successor', T, async () => {
  await h.control('config', { grace: 5 });
  await h.control('fault', { kind: 'drop', count: 1 });
  const { delta, result } = await burst();
  okAll(result);
  assert.equal(delta.refresh_calls, 2, 'the lost attempt and one retry with the same refresh token');
  assert.equal(delta.grace_replays, 1);
  assert.equal(delta.reuse_detections, 0);
});

test('refresh response lost after the server committed, grace 0 → a clean SESSION_EXPIRED, no loop', T, async () => {
  await h.control('fault', { kind: 'drop', count: 1 });
  const { delta, result } = await burst();
  assert.ok(result.every((r) => r.code === 'SESSION_EXPIRED'), JSON.stringify(result));
  assert.deepEqual(await h.run(() => window.t.expired), ['SESSION_EXPIRED'], 'onSessionExpired once');
  assert.equal(delta.refresh_calls, 2);
  assert.equal(delta.reuse_detections, 1, 'the server saw the spent token once, and revoked the family');
  assert.equal(await h.run(() => window.t.broker.state), 'expired');
});

test('token endpoint answers 401 invalid_client → every waiter rejected, no retry, no loop', T, async () => {
  await h.control('fault', { kind: 'invalid_client', count: 5 });
  const { delta, result } = await burst();
  assert.ok(result.every((r) => r.code === 'SESSION_EXPIRED'), JSON.stringify(result));
  assert.equal(delta.refresh_calls, 1);
  assert.equal(delta.api_ok + delta.unauthorized_sent, 0, 'no call went out');
});

test('a 200 without refresh_token keeps the old refresh token, which keeps working', T, async () => {
  await h.control('fault', { kind: 'no_refresh_token', count: 1 });
  const first = await burst();
  okAll(first.result);
  assert.equal(first.delta.refresh_calls, 1);
  const second = await again();
  okAll(second.result);
  assert.equal(second.delta.refresh_calls, 1);
  assert.equal(second.delta.refresh_ok, 1, 'the old refresh token was accepted');
  assert.equal(second.delta.reuse_detections, 0);
});

for (const kind of ['malformed', 'no_access_token']) {
  test(`a ${kind} token response → INVALID_TOKEN_RESPONSE, the old refresh token kept for the next refresh`, T, async () => {
    // Every refresh answers garbage until the fault is cleared.
    await h.control('fault', { kind, count: 100 });
    const first = await burst();
    assert.ok(first.result.every((r) => r.code === 'INVALID_TOKEN_RESPONSE'), JSON.stringify(first.result));
    assert.ok(first.delta.refresh_calls >= 1 && first.delta.refresh_calls <= 4, 'no retries within a refresh');
    await h.control('fault', { kind: 'none' });
    const second = await h.measure(() => h.run((paths) => Promise.all(paths.map((p) => tb.call('fetch', 'GET', p))), DASH));
    okAll(second.result);
    assert.equal(second.delta.refresh_calls, 1);
    assert.equal(second.delta.refresh_ok, 1);
    assert.equal(second.delta.reuse_detections, 0);
  });
}

test('client-side timeout while the server is slow → waiters get REFRESH_TIMEOUT; the next refresh follows rule 11', T, async () => {
  await h.control('config', { grace: 5 });
  await h.control('latency', { path: '/auth/refresh-token', ms: 1500 });
  const first = await burst({ refreshTimeoutMs: 600 });
  assert.ok(first.result.every((r) => r.code === 'REFRESH_TIMEOUT'), JSON.stringify(first.result));
  assert.equal(first.delta.refresh_calls, 1, 'no second, parallel refresh while the first was out');
  await h.control('latency', { path: '/auth/refresh-token', ms: 0 });
  const second = await h.measure(() => h.run((paths) => Promise.all(paths.map((p) => tb.call('fetch', 'GET', p))), DASH));
  okAll(second.result);
  assert.equal(second.delta.refresh_calls, 1, 'one retry with the same refresh token');
  assert.equal(second.delta.reuse_detections, 0, 'inside the grace window: the same successor');
});
