// "Auth failure inside a 200" (issue 12): a GraphQL endpoint answers a rejected token with 200 and
// errors[].extensions.code UNAUTHENTICATED. With isAuthFailure, both adapters treat it as a 401 of
// the sent token: one shared refresh, one replay each. Counts, not timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

const QUERY = JSON.stringify({ query: '{ statistics { value } }' });

for (const client of ['axios', 'fetch']) {
  test(`${client}: UNAUTHENTICATED inside a 200 → one refresh for a burst of 5, each replayed once`, T, async () => {
    const { delta, result } = await h.measure(() => h.run(async ([c, body]) => {
      const unauthenticated = (data) => !!data?.errors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED');
      await tb.start({
        mode: 'server-expired',
        axios: { isAuthFailure: (res) => unauthenticated(res.data) },
        fetch: { isAuthFailure: async (res) => unauthenticated(await res.json()) },
      });
      const one = c === 'axios'
        ? () => window.t.api.post('/graphql', body, { headers: { 'content-type': 'application/json' } }).then((r) => r.data)
        : () => window.t.fetch('/graphql', { method: 'POST', body, headers: { 'content-type': 'application/json' } }).then((r) => r.json());
      return Promise.all(Array.from({ length: 5 }, one));
    }, [client, QUERY]));
    assert.ok(result.every((r) => r.data?.statistics?.value === 42), JSON.stringify(result));
    assert.equal(delta.refresh_calls, 1);
    assert.equal(delta.graphql_unauthenticated, 5, 'each request met the expired token once');
    assert.equal(delta.api_ok, 5, 'each was replayed once');
  });

  test(`${client}: without isAuthFailure the 200 goes to the caller as it is; a second UNAUTHENTICATED is not replayed again`, T, async () => {
    await h.run(() => tb.start({ mode: 'server-expired' }));
    const plain = await h.measure(() => h.run(async ([c, body]) => (c === 'axios'
      ? window.t.api.post('/graphql', body).then((r) => r.data)
      : window.t.fetch('/graphql', { method: 'POST', body }).then((r) => r.json())), [client, QUERY]));
    assert.equal(plain.result.errors[0].extensions.code, 'UNAUTHENTICATED');
    assert.equal(plain.delta.refresh_calls, 0);
    // An endpoint that always says UNAUTHENTICATED: one refresh, one replay, then the caller gets it.
    await h.control('always-401', { on: true });
    const always = await h.measure(() => h.run(async ([c, body]) => {
      await tb.start({ axios: { isAuthFailure: () => true }, fetch: { isAuthFailure: () => true } });
      return c === 'axios' ? window.t.api.post('/graphql', body).then((r) => r.data)
        : window.t.fetch('/graphql', { method: 'POST', body }).then((r) => r.json());
    }, [client, QUERY]));
    assert.equal(always.result.errors[0].extensions.code, 'UNAUTHENTICATED');
    assert.equal(always.delta.refresh_calls, 1);
    assert.equal(always.delta.graphql_unauthenticated, 2, 'sent, replayed once, no loop');
  });
}
