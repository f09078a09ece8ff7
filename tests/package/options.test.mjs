// The package from the outside, in Node: misconfiguration fails at once with a message that says
// what is wrong (issue #11, traps 4–6). The package and axios are imported from a clean project
// that installed the packed tarball (through a tiny entry module there, so that every specifier
// resolves as it would for a user).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeProject } from './project.mjs';

let p;
let tb; // { createTokenBroker, TokenBrokerError, isTokenBrokerError, attachAxios, createAuthFetch, axios }
before(async () => {
  p = makeProject('options', { axios: true });
  p.write('entry.mjs', `export * from 'token-broker';
export { attachAxios } from 'token-broker/axios';
export { createAuthFetch } from 'token-broker/fetch';
export { default as axios } from 'axios';
`);
  tb = await p.import('entry.mjs');
});
after(() => p?.remove());

const API = 'https://api.example.com';
const TOKENS = { access_token: 'a', refresh_token: 'r', expires_in: 3600 };
const base = (extra = {}) => ({ refresh: { url: `${API}/auth/refresh-token` }, allowedOrigins: [API], tokens: TOKENS, ...extra });

/** Asserts a TokenBrokerError with `code` whose message matches every pattern (strings: literally). */
function expectError(e, code, ...patterns) {
  assert.ok(tb.isTokenBrokerError(e) && e instanceof tb.TokenBrokerError && e instanceof Error,
    `expected a TokenBrokerError, got ${e?.name}: ${e?.message}`);
  assert.equal(e.code, code, e.message);
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(e.message.includes(p), `message lacks ${JSON.stringify(p)}: ${e.message}`);
    else assert.match(e.message, p);
  }
  return true;
}

const rejectsWith = (promise, code, ...patterns) => assert.rejects(promise, (e) => expectError(e, code, ...patterns));

describe('trap 4: misconfiguration fails at creation (Node)', () => {
  test('no allowedOrigins where there is no page: INVALID_OPTIONS, not tokens silently never sent', async () => {
    await rejectsWith(tb.createTokenBroker({ refresh: { url: `${API}/auth/refresh-token` }, tokens: TOKENS }),
      'INVALID_OPTIONS', 'allowedOrigins is required', 'Node');
    await rejectsWith(tb.createTokenBroker({ refresh: async () => TOKENS, tokens: TOKENS }),
      'INVALID_OPTIONS', 'allowedOrigins is required');
  });

  test('an allowedOrigins entry with a path names it and suggests the origin', async () => {
    await rejectsWith(tb.createTokenBroker(base({ allowedOrigins: ['https://api.x.com/v1/'] })), 'INVALID_OPTIONS',
      "got 'https://api.x.com/v1/'", "did you mean 'https://api.x.com'?");
  });

  test('an allowedOrigins entry without a scheme names it and suggests the origin', async () => {
    await rejectsWith(tb.createTokenBroker(base({ allowedOrigins: ['api.x.com'] })), 'INVALID_OPTIONS',
      "got 'api.x.com'", "did you mean 'https://api.x.com'?");
  });

  test('a relative refresh.url in Node fails at creation, not at the first refresh', async () => {
    await rejectsWith(tb.createTokenBroker(base({ refresh: { url: '/auth/refresh-token' } })), 'INVALID_OPTIONS',
      'refresh.url must be an absolute URL', "'/auth/refresh-token'");
  });

  test('an invalid refresh.url fails at creation', async () => {
    await rejectsWith(tb.createTokenBroker(base({ refresh: { url: 'http://' } })), 'INVALID_OPTIONS', 'refresh.url', "'http://'");
  });

  test('a refresh.url outside the allowed origins fails at creation', async () => {
    await rejectsWith(tb.createTokenBroker(base({ refresh: { url: 'https://auth.example.com/token' } })), 'INVALID_OPTIONS',
      'https://auth.example.com', 'not an allowed origin', 'allowedOrigins');
  });
});

describe('trap 6: messages say what was wrong', () => {
  test('an unknown option names the key and lists the known ones', async () => {
    await rejectsWith(tb.createTokenBroker(base({ leewaySecond: 5 })), 'INVALID_OPTIONS',
      "unknown option 'leewaySecond'", 'leewaySeconds', 'refreshTimeoutMs');
  });

  test('a wrong type or an out-of-range number names the option, the range and what it got', async () => {
    await rejectsWith(tb.createTokenBroker(base({ leewaySeconds: '5' })), 'INVALID_OPTIONS', 'leewaySeconds', '0 to 86400', 'string');
    await rejectsWith(tb.createTokenBroker(base({ leewaySeconds: 1e9 })), 'INVALID_OPTIONS', 'leewaySeconds', '0 to 86400', 'out of range');
    await rejectsWith(tb.createTokenBroker(base({ refreshRetries: 11 })), 'INVALID_OPTIONS', 'refreshRetries', '0 to 10');
    await rejectsWith(tb.createTokenBroker(base({ refreshRetries: 1.5 })), 'INVALID_OPTIONS', 'refreshRetries', 'whole number');
    await rejectsWith(tb.createTokenBroker(base({ refreshTimeoutMs: -1 })), 'INVALID_OPTIONS', 'refreshTimeoutMs');
  });

  test('a missing refresh says what it must be', async () => {
    await rejectsWith(tb.createTokenBroker({ allowedOrigins: [API], tokens: TOKENS }), 'INVALID_OPTIONS', 'refresh must be', '{ url }');
  });

  test('a refresh function returning a fetch Response (forgot .json()) says so', async () => {
    const b = await tb.createTokenBroker(base({
      refresh: async () => new Response(JSON.stringify({ access_token: 'b', expires_in: 3600 }),
        { headers: { 'content-type': 'application/json' } }),
    }));
    try {
      await rejectsWith(b.tokenRejected('a'), 'INVALID_TOKEN_RESPONSE', 'fetch Response', '.json()');
    } finally {
      b.dispose();
    }
  });

  test('a refresh function returning an axios response (forgot .data) says so', async () => {
    const b = await tb.createTokenBroker(base({
      refresh: async () => ({ data: { access_token: 'b', expires_in: 3600 }, status: 200, statusText: 'OK', headers: {}, config: {} }),
    }));
    try {
      await rejectsWith(b.tokenRejected('a'), 'INVALID_TOKEN_RESPONSE', 'axios response', 'response.data');
    } finally {
      b.dispose();
    }
  });

  test("setTokens('garbage') throws INVALID_TOKEN_RESPONSE saying what it got; the old tokens stay", async () => {
    const b = await tb.createTokenBroker(base());
    try {
      assert.throws(() => b.setTokens('garbage'), (e) => expectError(e, 'INVALID_TOKEN_RESPONSE', 'setTokens', 'got a string'));
      assert.throws(() => b.setTokens({}), (e) => expectError(e, 'INVALID_TOKEN_RESPONSE', 'setTokens', 'access_token'));
      assert.equal(await b.getAccessToken(), 'a');
    } finally {
      b.dispose();
    }
  });

  test('setTokens after dispose() throws DISPOSED instead of being accepted', async () => {
    const b = await tb.createTokenBroker(base());
    b.dispose();
    assert.throws(() => b.setTokens(TOKENS), (e) => expectError(e, 'DISPOSED', 'setTokens'));
    await rejectsWith(b.getAccessToken(), 'DISPOSED');
  });
});

describe('trap 5: the adapters check what they are given, at attach time', () => {
  const PROMISE = /pass the broker, not the promise: `const broker = await createTokenBroker\(\.\.\.\)`/;
  const NOT_A_BROKER = /expected a TokenBroker from createTokenBroker\(\) \(with getAccessToken, tokenRejected, shouldRefreshOn401, allowsOrigin\); got /;

  test('attachAxios(api, createTokenBroker(...)) without await throws a TypeError that says so', async () => {
    const pending = tb.createTokenBroker(base());
    try {
      assert.throws(() => tb.attachAxios(tb.axios.create(), pending), (e) => e instanceof TypeError && /^attachAxios: /.test(e.message) && PROMISE.test(e.message));
    } finally {
      (await pending).dispose();
    }
  });

  test('attachAxios with null or {} throws a TypeError naming what is missing', () => {
    assert.throws(() => tb.attachAxios(tb.axios.create(), null), (e) => e instanceof TypeError && NOT_A_BROKER.test(e.message) && /got null$/.test(e.message));
    assert.throws(() => tb.attachAxios(tb.axios.create(), {}), (e) => e instanceof TypeError && NOT_A_BROKER.test(e.message)
      && /without getAccessToken, tokenRejected, shouldRefreshOn401, allowsOrigin/.test(e.message));
  });

  test('attachAxios with something that is not an axios instance throws a TypeError', async () => {
    const b = await tb.createTokenBroker(base());
    try {
      assert.throws(() => tb.attachAxios({}, b), (e) => e instanceof TypeError && /axios instance/.test(e.message));
    } finally {
      b.dispose();
    }
  });

  test('createAuthFetch given a Promise, null or {} throws a TypeError that says so', async () => {
    const pending = tb.createTokenBroker(base());
    try {
      assert.throws(() => tb.createAuthFetch(pending), (e) => e instanceof TypeError && /^createAuthFetch: /.test(e.message) && PROMISE.test(e.message));
      assert.throws(() => tb.createAuthFetch(null), (e) => e instanceof TypeError && NOT_A_BROKER.test(e.message));
      assert.throws(() => tb.createAuthFetch({}), (e) => e instanceof TypeError && NOT_A_BROKER.test(e.message));
    } finally {
      (await pending).dispose();
    }
  });

  test('unknown or malformed adapter options are INVALID_OPTIONS naming the key', async () => {
    const b = await tb.createTokenBroker(base());
    try {
      assert.throws(() => tb.attachAxios(tb.axios.create(), b, { allowedOrigin: [API] }),
        (e) => expectError(e, 'INVALID_OPTIONS', 'attachAxios', "unknown option 'allowedOrigin'"));
      assert.throws(() => tb.createAuthFetch(b, { replay: 'sometimes' }),
        (e) => expectError(e, 'INVALID_OPTIONS', 'createAuthFetch', 'replay'));
      assert.throws(() => tb.createAuthFetch(b, { allowedOrigins: ['https://api.x.com/v1/'] }),
        (e) => expectError(e, 'INVALID_OPTIONS', 'createAuthFetch', "did you mean 'https://api.x.com'?"));
    } finally {
      b.dispose();
    }
  });
});
