// Refresh failures, non-refreshing 401/403, loops, aborts and logout through both adapters.
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

const codes = (results) => results.map((r) => r.code);

for (const client of CLIENTS) {
  test(`${client}: refresh answers invalid_grant → every call rejects SESSION_EXPIRED, onSessionExpired once`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired' }));
    await h.control('fault', { kind: 'invalid_grant', count: 1 });
    const { delta, result } = await h.measure(() => h.run(async ([c, paths]) => {
      const results = await Promise.all(paths.map((p) => tb.call(c, 'GET', p)));
      const later = await tb.call(c, 'GET', '/statistics');
      return { results, later, expired: window.t.expired, state: window.t.broker.state };
    }, [client, DASH]));
    assert.deepEqual(codes(result.results), Array(4).fill('SESSION_EXPIRED'), JSON.stringify(result.results));
    assert.ok(result.results.every((r) => r.tbe && r.inst), 'TokenBrokerError, instanceof works');
    assert.equal(result.later.ok, false);
    assert.ok(['SESSION_EXPIRED', 'NOT_AUTHENTICATED'].includes(result.later.code), JSON.stringify(result.later));
    assert.deepEqual(result.expired, ['SESSION_EXPIRED'], 'onSessionExpired called once');
    assert.equal(result.state, 'expired');
    assert.equal(delta.refresh_calls, 1, 'invalid_grant is not retried');
    assert.equal(delta.api_ok, 0);
    assert.equal(delta.unauthorized_sent, 4, 'nothing was sent after the session ended');
  });

  test(`${client}: refresh endpoint hangs → every call settles within the refresh timeout`, T, async () => {
    await h.control('fault', { kind: 'hang', count: 10 });
    const { delta, result } = await h.measure(async () => {
      const t0 = Date.now();
      await h.run(() => tb.start({ mode: 'known-expired', broker: { refreshTimeoutMs: 1500 } }));
      const results = await h.run(([c, paths]) => Promise.all(paths.map((p) => tb.call(c, 'GET', p))), [client, DASH]);
      return { results, ms: Date.now() - t0 };
    });
    assert.ok(result.results.every((r) => !r.ok && ['REFRESH_TIMEOUT', 'REFRESH_FAILED'].includes(r.code)),
      JSON.stringify(result.results));
    assert.ok(result.ms < 1500 + 5000, `settled in ${Math.round(result.ms)} ms (timeout 1500 ms + slack)`);
    assert.ok(delta.refresh_calls >= 1);
    assert.equal(delta.api_ok + delta.unauthorized_sent, 0, 'no call went out without a token');
  });

  test(`${client}: refresh answers 503 once → retried, every call succeeds`, T, async () => {
    await h.control('fault', { kind: 'unavailable', count: 1, retry_after: 1 });
    const { delta, result } = await h.measure(async () => {
      await h.run(() => tb.start({ mode: 'known-expired' }));
      return h.run(([c, paths]) => Promise.all(paths.map((p) => tb.call(c, 'GET', p))), [client, DASH]);
    });
    assert.ok(result.every((r) => r.ok), JSON.stringify(result));
    assert.equal(delta.refresh_calls, 2);
    assert.equal(delta.refresh_ok, 1);
    assert.equal(delta.api_ok, 4);
  });

  test(`${client}: 401 insufficient_scope and 403 → no refresh, no replay`, T, async () => {
    await h.run(() => tb.start({ mode: 'fresh' }));
    const { delta, result } = await h.measure(() => h.run(async (c) => ({
      scoped: await tb.call(c, 'GET', '/scoped'),
      forbidden: await tb.call(c, 'GET', '/forbidden'),
      generation: window.t.broker.generation,
    }), client));
    assert.equal(result.scoped.status, 401);
    assert.equal(result.forbidden.status, 403);
    // Security rules case 7: the caller gets the server's answer as its client types it (an
    // AxiosError with the response; a Response from fetch), never a broker error.
    if (client === 'fetch') {
      assert.equal(result.scoped.ok, false);
      assert.equal(result.scoped.code, undefined);
    } else {
      for (const r of [result.scoped, result.forbidden]) {
        assert.equal(r.name, 'AxiosError', JSON.stringify(r));
        assert.equal(r.code, 'ERR_BAD_REQUEST');
      }
    }
    assert.equal(delta.refresh_calls, 0);
    assert.equal(delta.unauthorized_sent, 1, '/scoped was sent once');
  });

  test(`${client}: the server answers 401 to everything → one refresh, one replay each, no loop`, T, async () => {
    await h.run(() => tb.start({ mode: 'fresh' }));
    await h.control('always-401', { on: true });
    const { delta, result } = await h.measure(() => h.run(([c, paths]) =>
      Promise.all(paths.slice(0, 3).map((p) => tb.call(c, 'GET', p))), [client, DASH]));
    assert.deepEqual(result.map((r) => r.status), [401, 401, 401], JSON.stringify(result));
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.unauthorized_sent, 6, 'each call sent twice: original + one replay');
    const again = await h.measure(() => h.run((c) => tb.call(c, 'GET', '/statistics'), client));
    assert.equal(again.result.status, 401);
    assert.ok(again.delta.refresh_calls <= 1, 'at most one refresh per call');
    assert.equal(again.delta.unauthorized_sent, 2);
  });

  test(`${client}: aborting one waiting call rejects only it; the refresh serves the others`, T, async () => {
    await h.control('latency', { path: '/auth/refresh-token', ms: 800 });
    const { delta, result } = await h.measure(async () => {
      await h.run(() => tb.start({ mode: 'known-expired' }));
      return h.run(async (c) => {
        const ctl = new AbortController();
        const calls = [
          tb.call(c, 'GET', '/statistics'),
          tb.call(c, 'GET', '/other-statistics', { signal: ctl.signal }),
          tb.call(c, 'GET', '/final-statistics'),
        ];
        await tb.until(() => window.t.broker.state === 'refreshing');
        ctl.abort();
        return Promise.all(calls);
      }, client);
    });
    assert.equal(result[0].ok, true);
    assert.equal(result[2].ok, true);
    assert.equal(result[1].ok, false);
    assert.equal(result[1].code, 'ABORTED', JSON.stringify(result[1]));
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.api_ok, 2, 'the aborted call never went out');
  });

  test(`${client}: aborting a call while its replay waits for the refresh → ABORTED, never replayed`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired', spy: true }));
    await h.control('config', { access_ttl: 30 });
    await h.control('latency', { path: '/auth/refresh-token', ms: 1000 });
    const { delta, result } = await h.measure(() => h.run(async (c) => {
      const ctl = new AbortController();
      const calls = [tb.call(c, 'GET', '/statistics'), tb.call(c, 'GET', '/other-statistics', { signal: ctl.signal })];
      await tb.until(() => window.t.calls.tokenRejected === 2); // both got their 401; both wait for the refresh
      const refreshing = window.t.broker.state;
      ctl.abort();
      return [...(await Promise.all(calls)), refreshing];
    }, client));
    assert.equal(result[2], 'refreshing', 'aborted while the refresh was in flight');
    assert.equal(result[0].ok, true, JSON.stringify(result[0]));
    assert.equal(result[1].ok, false);
    assert.equal(result[1].code, 'ABORTED', JSON.stringify(result[1]));
    assert.ok(result[1].tbe && result[1].inst, 'a TokenBrokerError');
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.unauthorized_sent, 2);
    assert.equal(delta.api_ok, 1, 'the aborted call was not replayed');
  });

  test(`${client}: logout during a refresh → waiters reject, the session stays ended`, T, async () => {
    await h.control('latency', { path: '/auth/refresh-token', ms: 800 });
    await h.run(() => tb.start({ mode: 'known-expired' }));
    const { delta, result } = await h.measure(() => h.run(async ([c, paths]) => {
      const calls = paths.map((p) => tb.call(c, 'GET', p));
      await tb.until(() => window.t.broker.state === 'refreshing');
      window.t.broker.logout();
      const results = await Promise.all(calls);
      await tb.sleep(1200); // the refresh answer arrives meanwhile; it must not revive the session
      return { results, state: window.t.broker.state, later: await tb.call(c, 'GET', '/statistics') };
    }, [client, DASH]));
    assert.ok(result.results.every((r) => r.code === 'LOGGED_OUT'), JSON.stringify(result.results));
    assert.notEqual(result.state, 'valid');
    assert.equal(result.later.ok, false);
    assert.ok(['NOT_AUTHENTICATED', 'LOGGED_OUT'].includes(result.later.code), JSON.stringify(result.later));
    assert.equal(delta.api_ok, 0);
    assert.equal(delta.unauthorized_sent, 0);
  });
}

for (const client of CLIENTS) {
  test(`${client}: security rules case 16, client clock 10 minutes slow → the 401 path covers it with one refresh`, T, async () => {
    const { delta, result } = await h.measure(() => h.run(async ([c, paths]) => {
      // The page's clock runs 10 minutes behind; the server has already expired the token the
      // broker still believes valid (its proactive refresh would come late).
      const real = Date.now;
      Date.now = () => real() - 600_000;
      try {
        await tb.start({ mode: 'server-expired' });
        return await Promise.all(paths.map((p) => tb.call(c, 'GET', p)));
      } finally {
        Date.now = real;
      }
    }, [client, DASH]));
    assert.ok(result.every((r) => r.ok), JSON.stringify(result));
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.api_ok, 4);
  });
}
