// Single-flight refresh through the axios and fetch adapters, in Chromium, against the reference server.
// Assertions are counts from the server's /__control/stats, never timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const CLIENTS = ['axios', 'fetch'];
const DASH = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const T = { timeout: 60_000 }; // a hang fails the test instead of the run
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

const okAll = (results) => assert.ok(results.every((r) => r.ok), JSON.stringify(results));

for (const client of CLIENTS) {
  test(`${client}: dashboard, token expired on the server: 4 parallel calls → 1 refresh, 4 successes`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired' }));
    await h.control('config', { access_ttl: 30 });
    const { delta, result } = await h.measure(() =>
      h.run(([c, paths]) => Promise.all(paths.map((p) => tb.call(c, 'GET', p))), [client, DASH]));
    okAll(result);
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.unauthorized_sent, 4, 'each call got one 401 with the old token');
    assert.equal(delta.api_ok, 4, 'each call replayed exactly once');
  });

  test(`${client}: dashboard, token known to be expired: 4 parallel calls → 1 refresh first, no 401`, T, async () => {
    // The broker may start its refresh as soon as it holds an expired token: measure from its creation.
    const { delta, result } = await h.measure(async () => {
      await h.run(() => tb.start({ mode: 'known-expired' }));
      return h.run(([c, paths]) => Promise.all(paths.map((p) => tb.call(c, 'GET', p))), [client, DASH]);
    });
    okAll(result);
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.unauthorized_sent, 0);
    assert.equal(delta.api_ok, 4);
  });

  test(`${client}: 200 parallel calls with a server-expired token → 1 refresh, 200 successes`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired' }));
    await h.control('config', { access_ttl: 60 });
    const { delta, result } = await h.measure(() => h.run(([c, paths]) =>
      Promise.all(Array.from({ length: 200 }, (_, i) => tb.call(c, 'GET', paths[i % 4]))), [client, DASH]));
    assert.equal(result.filter((r) => r.ok).length, 200);
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.unauthorized_sent, 200);
    assert.equal(delta.api_ok, 200);
    assert.equal(delta.reuse_detections, 0);
  });

  test(`${client}: requests issued during a refresh wait for it and go out once, with the new token`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired' }));
    await h.control('config', { access_ttl: 30 });
    await h.control('latency', { path: '/auth/refresh-token', ms: 700 });
    const { delta, result } = await h.measure(() => h.run(async ([c, paths]) => {
      const started = tb.nextEvent('refreshstart');
      const first = tb.call(c, 'GET', '/statistics'); // 401 → starts the refresh
      await started;
      const during = paths.concat(paths).map((p) => tb.call(c, 'GET', p)); // 8 calls while refreshing
      const refreshing = window.t.broker.state;
      return { refreshing, results: await Promise.all([first, ...during]) };
    }, [client, DASH]));
    assert.equal(result.refreshing, 'refreshing');
    okAll(result.results);
    assert.equal(delta.refresh_calls, 1);
    // The old token is dead on the server: a stale send would show up as a second 401.
    assert.equal(delta.unauthorized_sent, 1, 'only the call that triggered the refresh saw a 401');
    assert.equal(delta.api_ok, 9, 'every call went out once with the new token');
    // The server's log: after the refresh arrived, every API request carried the generation it issued.
    const log = await h.log();
    const refresh = log.find((e) => e.path === '/auth/refresh-token');
    const later = log.filter((e) => DASH.includes(e.path) && e.t_ms >= refresh.t_ms);
    assert.equal(later.length, 9);
    assert.ok(later.every((e) => e.token_generation === refresh.issued_generation && e.status === 200),
      JSON.stringify(later.map((e) => [e.path, e.token_generation, e.status])));
  });

  test(`${client}: a late 401 for the old token after the refresh → replayed, no second refresh, family intact`, T, async () => {
    await h.control('config', { access_ttl: 30 });
    await h.run(() => tb.start({ mode: 'fresh' }));
    // Both calls go out with the current token. /other-statistics answers 401 at once (→ refresh);
    // /statistics answers 401 only after the refresh is over: a stale 401.
    await h.control('delay-next', { path: '/statistics', ms: 2000, status: 401 });
    await h.control('delay-next', { path: '/other-statistics', ms: 0, status: 401 });
    const { delta, result } = await h.measure(() => h.run(async (c) => {
      const late = tb.call(c, 'GET', '/statistics');
      const early = tb.call(c, 'GET', '/other-statistics');
      const results = await Promise.all([late, early]);
      const after = await tb.call(c, 'GET', '/final-statistics');
      return { results, after, stale: window.t.events.filter((e) => e.type === 'stale401').length };
    }, client));
    okAll([...result.results, result.after]);
    assert.equal(delta.refresh_calls, 1, 'the late 401 did not refresh again');
    assert.equal(delta.unauthorized_sent, 2);
    assert.equal(delta.api_ok, 3);
    assert.equal(delta.reuse_detections, 0);
    assert.equal(delta.revoked_families, 0);
    assert.equal(result.stale, 1, 'the broker reported the stale 401');
  });
}

test('proactive refresh: steady traffic over several token lifetimes → zero 401s', T, async () => {
  await h.run(() => tb.start({ mode: 'fresh' })); // access tokens live 2 s
  const { delta, result } = await h.measure(() => h.run(async () => {
    const results = [];
    const end = Date.now() + 7000;
    for (let i = 0; Date.now() < end; i++) {
      results.push(await tb.call(i % 2 ? 'fetch' : 'axios', 'GET', '/statistics'));
      await tb.sleep(100);
    }
    return results;
  }));
  okAll(result);
  assert.equal(delta.unauthorized_sent, 0);
  assert.ok(delta.refresh_calls >= 3, `refreshed ahead of expiry several times (${delta.refresh_calls})`);
  assert.equal(delta.refresh_errors, 0);
  assert.equal(delta.reuse_detections, 0);
});

test('two axios instances and a fetch wrapper on one broker share one refresh', T, async () => {
  await h.run(() => tb.start({ mode: 'server-expired' }));
  await h.control('config', { access_ttl: 30 });
  const { delta, result } = await h.measure(() => h.run((paths) => Promise.all(
    ['axios', 'axios2', 'fetch'].flatMap((c) => paths.slice(0, 2).map((p) => tb.call(c, 'GET', p)))), DASH));
  okAll(result);
  assert.equal(result.length, 6);
  assert.equal(delta.refresh_calls, 1);
  assert.equal(delta.api_ok, 6);
});
