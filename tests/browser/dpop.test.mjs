// DPoP (RFC 9449, issue 13) in real Chromium against the reference server in `--dpop required`
// mode (nonces on): the single refresh still holds with proofs, nonce challenges at both servers
// are answered by a retry (never a refresh), a late 401, two tabs sharing one key, logout deleting
// the key, a stolen token useless from another key, and a bearer downgrade refused. Security rules
// 13-14, server rule 9, adversarial cases 32-34. Counts, not timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 90_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => {
  await h.fresh();
  await h.control('reset', { dpop: 'required', access_ttl: 30 });
  await h.run(installDpopHelpers);
});

// Defined here, run in the page (serialised by `h.run`): `window.dp` logs in with a proof.
function installDpopHelpers() {
  /** `POST /auth/login` with a proof; a `use_dpop_nonce` answer is retried once with its nonce. */
  async function login(broker, { username = 'demo' } = {}) {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch('/auth/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json', DPoP: await broker.dpopProof('POST', '/auth/login') },
        body: JSON.stringify({ username, password: 'demo' }),
      });
      broker.dpopNonce('/auth/login', res.headers, { tokenEndpoint: true });
      const body = await res.json();
      if (res.ok) return body;
      if (body.error !== 'use_dpop_nonce' || attempt > 0) throw new Error(`login: ${res.status} ${JSON.stringify(body)}`);
    }
  }
  /** A DPoP broker, logged in, with axios and fetch attached: `window.t` as tb.start builds it. */
  async function start({ broker: options = {}, axios: axiosOptions = {}, fetch: fetchOptions = {} } = {}) {
    const t = { expired: [], events: [] };
    t.broker = await tb.createTokenBroker({
      refresh: { url: '/auth/refresh-token' },
      dpop: true,
      onSessionExpired: (err) => t.expired.push(err.code),
      ...options,
    });
    for (const type of ['tokens', 'refreshstart', 'refreshend', 'expired', 'stale401', 'logout']) {
      t.broker.addEventListener(type, (ev) => t.events.push({ type: ev.type, ok: ev.ok, code: ev.code }));
    }
    t.tokens = await login(t.broker);
    t.broker.setTokens(t.tokens);
    t.api = tb.axios.create();
    t.detach = tb.attachAxios(t.api, t.broker, axiosOptions);
    t.fetch = tb.createAuthFetch(t.broker, fetchOptions);
    window.t = t;
    return { tokenType: t.tokens.token_type };
  }
  /** How many keys IndexedDB holds for DPoP (0 or 1 per token family). */
  function storedKeys() {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open('token-broker-dpop', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('keys');
      open.onsuccess = () => {
        const req = open.result.transaction('keys').objectStore('keys').count();
        req.onsuccess = () => { open.result.close(); resolve(req.result); };
        req.onerror = () => reject(req.error);
      };
      open.onerror = () => reject(open.error);
    });
  }
  const b64u = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  /** A thief's request: valid proofs made with a key of its own, nonce dance included. */
  async function thief(url, init, accessToken) {
    let res;
    let nonce;
    for (let i = 0; i < 2; i++) {
      const headers = { ...init.headers, DPoP: await foreignProof(init.method ?? 'GET', url, accessToken, nonce) };
      res = await fetch(url, { ...init, headers });
      nonce = res.headers.get('DPoP-Nonce') ?? undefined;
      const challenged = res.status === 400 ? (await res.clone().json()).error === 'use_dpop_nonce'
        : /use_dpop_nonce/.test(res.headers.get('WWW-Authenticate') ?? '');
      if (!challenged) break;
    }
    return res;
  }
  /** A thief's proof: a valid DPoP proof, but made with a key of its own. */
  async function foreignProof(method, url, accessToken, nonce) {
    const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const { crv, kty, x, y } = await crypto.subtle.exportKey('jwk', keys.publicKey);
    const enc = new TextEncoder();
    const part = (o) => b64u(enc.encode(JSON.stringify(o)));
    const claims = { jti: crypto.randomUUID(), htm: method, htu: new URL(url, location.href).href.split(/[?#]/)[0], iat: Math.floor(Date.now() / 1000) };
    if (accessToken) claims.ath = b64u(await crypto.subtle.digest('SHA-256', enc.encode(accessToken)));
    if (nonce) claims.nonce = nonce;
    const input = `${part({ typ: 'dpop+jwt', alg: 'ES256', jwk: { crv, kty, x, y } })}.${part(claims)}`;
    return `${input}.${b64u(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, keys.privateKey, enc.encode(input)))}`;
  }
  window.dp = { login, start, storedKeys, thief };
}

const okAll = (results) => assert.ok(results.every((r) => r.ok && r.status === 200), JSON.stringify(results));

/** No proof the broker made was refused for anything but a nonce challenge. */
function proofsClean(delta) {
  for (const k of ['missing', 'malformed', 'typ', 'alg', 'jwk', 'bad_signature', 'htm', 'htu', 'jti_replay', 'ath', 'jkt_mismatch']) {
    assert.equal(delta[`dpop_rejected_${k}`] ?? 0, 0, `proofs refused for ${k}`);
  }
}

/** Moves the server past the access token's expiry (the broker still believes it is valid). */
const expireOnServer = () => h.control('clock', { advance_ms: 31_000 });

for (const client of ['axios', 'fetch']) {
  test(`${client}: a burst of 12 after expiry with DPoP → one refresh, every proof valid, one key`, T, async () => {
    assert.deepEqual(await h.run(() => dp.start()), { tokenType: 'DPoP' });
    await expireOnServer();
    const { delta, result } = await h.measure(() => h.run(async (c) => {
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => tb.call(c, 'GET', `/statistics?i=${i}`)));
      return { results, events: window.t.events };
    }, client));
    okAll(result.results);
    assert.equal(delta.refresh_calls, 1, 'one refresh for the burst');
    assert.equal(delta.api_ok, 12);
    assert.equal(delta.reuse_detections, 0);
    proofsClean(delta);
    assert.ok(delta.dpop_proofs_accepted >= 12 + 1, `the replays and the refresh carried accepted proofs (${delta.dpop_proofs_accepted})`);
    const dpop = await h.control('dpop');
    assert.equal(dpop.jkts.length, 1, 'one key for the login, the refresh and every request');
    assert.equal(result.events.filter((e) => e.type === 'refreshend').length, 1);
  });

  test(`${client}: nonce challenges at the API and at the token endpoint are retried once each, never a refresh`, T, async () => {
    await h.run(() => dp.start({ broker: { debug: (e) => (window.debugLog ??= []).push(e.event) } }));
    // A new API nonce: the next request meets 401 DPoP error="use_dpop_nonce" and goes again.
    await h.control('dpop', { rotate: 'rs' });
    const api = await h.measure(() => h.run((c) => tb.call(c, 'GET', '/statistics'), client));
    assert.equal(api.result.status, 200);
    assert.equal(api.delta.dpop_nonce_challenges_rs, 1);
    assert.equal(api.delta.refresh_calls, 0, 'a nonce challenge is not a refresh');
    assert.equal(api.delta.api_ok, 1);
    // A new token-endpoint nonce, then an expiry: the refresh meets 400 use_dpop_nonce and is made
    // again at once with the new nonce, as the same refresh (one refreshend, ok).
    await h.control('dpop', { rotate: 'as' });
    await expireOnServer();
    const refresh = await h.measure(() => h.run(async (c) => {
      const results = await Promise.all([1, 2, 3].map(() => tb.call(c, 'GET', '/statistics')));
      return { results, ends: window.t.events.filter((e) => e.type === 'refreshend') };
    }, client));
    okAll(refresh.result.results);
    assert.equal(refresh.delta.dpop_nonce_challenges_as, 1);
    assert.equal(refresh.delta.refresh_calls, 1, 'one refresh after the nonce retry');
    assert.deepEqual(refresh.result.ends, [{ type: 'refreshend', ok: true, code: undefined }]);
    const log = await h.run(() => window.debugLog);
    assert.equal(log.filter((e) => e === "refresh sent again with the token endpoint's DPoP nonce").length, 1, log.join(' | '));
    proofsClean({ ...api.delta, ...refresh.delta });
  });

  test(`${client}: a late 401 for the old token after a DPoP refresh → replayed with a fresh proof, no second refresh`, T, async () => {
    await h.run(() => dp.start());
    await h.control('delay-next', { path: '/statistics', ms: 2000, status: 401 });
    await h.control('delay-next', { path: '/other-statistics', ms: 0, status: 401 });
    const { delta, result } = await h.measure(() => h.run(async (c) => {
      const results = await Promise.all([tb.call(c, 'GET', '/statistics'), tb.call(c, 'GET', '/other-statistics')]);
      return { results, stale: window.t.events.filter((e) => e.type === 'stale401').length };
    }, client));
    okAll(result.results);
    assert.equal(delta.refresh_calls, 1);
    assert.equal(result.stale, 1);
    proofsClean(delta);
    assert.equal(delta.dpop_rejected_jti_replay ?? 0, 0, 'the replay carried a new proof');
  });
}

test('a proof the server refuses (invalid_dpop_proof) never refreshes and never loops', T, async () => {
  await h.run(() => dp.start());
  const { delta, result } = await h.measure(() => h.run(async () => {
    const sign = crypto.subtle.sign;
    // Every signature now comes out wrong (one byte flipped).
    crypto.subtle.sign = async function (...args) {
      const sig = new Uint8Array(await sign.apply(this, args));
      sig[0] ^= 1;
      return sig.buffer;
    };
    try {
      return await Promise.all([tb.call('axios', 'GET', '/statistics'), tb.call('fetch', 'GET', '/statistics')]);
    } finally {
      crypto.subtle.sign = sign;
    }
  }));
  assert.deepEqual(result.map((r) => r.status), [401, 401]);
  assert.equal(delta.refresh_calls, 0);
  assert.equal(delta.dpop_rejected_bad_signature, 2, 'each request sent once');
});

test('a proof that cannot be made (WebCrypto refuses) is DPOP_FAILED: nothing is sent, the session stays', T, async () => {
  await h.run(() => dp.start());
  const { delta, result } = await h.measure(() => h.run(async () => {
    const sign = crypto.subtle.sign;
    crypto.subtle.sign = () => Promise.reject(new DOMException('the key is gone', 'InvalidAccessError'));
    try {
      const outcomes = await Promise.all([tb.call('axios', 'GET', '/statistics'), tb.call('fetch', 'GET', '/statistics')]);
      const direct = await window.t.broker.dpopProof('GET', '/statistics').then(() => null, (e) => [e.name, e.code, e.cause?.name]);
      return { codes: outcomes.map((o) => o.code), direct };
    } finally {
      crypto.subtle.sign = sign;
    }
  }));
  assert.deepEqual(result.codes, ['DPOP_FAILED', 'DPOP_FAILED']);
  assert.deepEqual(result.direct, ['TokenBrokerError', 'DPOP_FAILED', 'InvalidAccessError']);
  assert.equal(delta.api_ok + (delta.unauthorized_sent ?? 0), 0, 'nothing was sent');
  assert.equal(delta.refresh_calls, 0);
  assert.equal((await h.run(() => tb.call('fetch', 'GET', '/statistics'))).status, 200, 'the next request works');
});

test('case 34: a client clock 10 minutes fast → iat refused, the nonce path recovers in one retry', T, async () => {
  // Nonces off: the server judges freshness by iat until it hands out a nonce in its challenge.
  await h.control('reset', { dpop: 'required', dpop_nonces: false, access_ttl: 30 });
  const { delta, result } = await h.measure(() => h.run(async () => {
    const realNow = Date.now;
    Date.now = () => realNow() + 600_000;
    await dp.start();
    const first = await tb.call('fetch', 'GET', '/statistics');
    const second = await tb.call('axios', 'GET', '/statistics');
    return { first, second, expired: window.t.expired };
  }));
  assert.equal(result.first.status, 200);
  assert.equal(result.second.status, 200);
  assert.deepEqual(result.expired, []);
  assert.equal(delta.dpop_rejected_iat, 2, 'the skewed iat was refused once at the token endpoint (login) and once at the API');
  assert.equal(delta.dpop_nonce_challenges_as + delta.dpop_nonce_challenges_rs, 2);
  assert.equal(delta.refresh_calls, 0, 'no refresh for a clock problem');
});

test('a refresh function gets context.dpopProof; its axios error carries the token endpoint nonce for the retry', T, async () => {
  await h.run(() => dp.start({
    broker: {
      refresh: async ({ refreshToken, signal, dpopProof }) => {
        const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken });
        const res = await tb.axios.post('/auth/refresh-token', body, { signal, headers: { DPoP: await dpopProof('POST', '/auth/refresh-token') } });
        return res.data;
      },
    },
  }));
  await h.control('dpop', { rotate: 'as' });
  await expireOnServer();
  const { delta, result } = await h.measure(() => h.run(async () => {
    const r = await tb.call('fetch', 'GET', '/statistics');
    return { r, ends: window.t.events.filter((e) => e.type === 'refreshend') };
  }));
  assert.equal(result.r.status, 200);
  assert.equal(delta.dpop_nonce_challenges_as, 1);
  assert.equal(delta.refresh_calls, 1);
  assert.deepEqual(result.ends.map((e) => e.ok), [true]);
});

test('two tabs: one key (IndexedDB), one refresh for bursts in both', T, async () => {
  const pageB = await h.page.context().newPage();
  try {
    await h.run(() => dp.start({ broker: { storage: 'local' } }));
    await pageB.goto(new URL('/index.html', h.base).href);
    await pageB.waitForFunction(() => window.tbReady === true);
    await pageB.evaluate(async () => {
      const t = { events: [] };
      t.broker = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, dpop: true, storage: 'local' });
      t.fetch = tb.createAuthFetch(t.broker);
      window.t = t;
    });
    await expireOnServer();
    const { delta, result } = await h.measure(async () => {
      const burst = (p) => p.evaluate(() => Promise.all([1, 2, 3, 4, 5].map(() => tb.outcome(window.t.fetch('/statistics')))));
      return Promise.all([burst(h.page), burst(pageB)]);
    });
    okAll(result.flat());
    assert.equal(delta.refresh_calls, 1, 'one refresh across both tabs');
    proofsClean(delta);
    assert.equal((await h.control('dpop')).jkts.length, 1, 'both tabs sign with the one key');
    // One nonce store: the API nonce tab A met in a challenge reaches tab B without one.
    await h.control('dpop', { rotate: 'rs' });
    const a = await h.measure(() => h.run(() => tb.outcome(window.t.fetch('/statistics'))));
    assert.equal(a.delta.dpop_nonce_challenges_rs, 1);
    await h.run(() => tb.sleep(50)); // the channel delivers asynchronously
    const b = await h.measure(() => pageB.evaluate(() => tb.outcome(window.t.fetch('/statistics'))));
    assert.equal(b.result.status, 200);
    assert.equal(b.delta.dpop_nonce_challenges_rs, 0, 'tab B already had the nonce');
  } finally {
    await pageB.close();
  }
});

test('logout deletes the key; the next login makes a new one (one key per grant)', T, async () => {
  const result = await h.run(async () => {
    await dp.start();
    const before = await dp.storedKeys();
    await window.t.broker.logout();
    await tb.sleep(50); // the delete is an IndexedDB transaction of its own
    const afterLogout = await dp.storedKeys();
    window.t.broker.setTokens(await dp.login(window.t.broker));
    const ok = await tb.call('fetch', 'GET', '/statistics');
    return { before, afterLogout, after: await dp.storedKeys(), status: ok.status };
  });
  assert.deepEqual(result, { before: 1, afterLogout: 0, after: 1, status: 200 });
  assert.equal((await h.control('dpop')).jkts.length, 2, 'the second grant is bound to a new key');
});

test('an expired session deletes its key too; store: memory keeps the key out of IndexedDB', T, async () => {
  const expiry = await h.run(async () => {
    await dp.start();
    const before = await dp.storedKeys();
    await fetch('/__control/revoke', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ all: true }) });
    await fetch('/__control/clock', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ advance_ms: 31_000 }) });
    const call = await tb.call('fetch', 'GET', '/statistics');
    await tb.sleep(50);
    return { before, code: call.code, expired: window.t.expired, after: await dp.storedKeys() };
  });
  assert.deepEqual(expiry, { before: 1, code: 'SESSION_EXPIRED', expired: ['SESSION_EXPIRED'], after: 0 });
  const memory = await h.measure(() => h.run(async () => {
    await dp.start({ broker: { dpop: { store: 'memory' } } });
    const ok = await tb.call('axios', 'GET', '/statistics');
    return { status: ok.status, stored: await dp.storedKeys() };
  }));
  assert.deepEqual(memory.result, { status: 200, stored: 0 });
  proofsClean(memory.delta);
});

test('a stored DPoP session whose key is gone ends with SESSION_EXPIRED at creation', T, async () => {
  await h.run(() => dp.start({ broker: { storage: 'session' } }));
  await h.page.reload();
  await h.page.waitForFunction(() => window.tbReady === true);
  const result = await h.run(async () => {
    await new Promise((resolve) => { const r = indexedDB.deleteDatabase('token-broker-dpop'); r.onsuccess = r.onerror = r.onblocked = resolve; });
    const expired = [];
    const broker = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, dpop: true, storage: 'session', onSessionExpired: (e) => expired.push(e.code) });
    const token = await broker.getAccessToken().then(() => 'token', (e) => e.code);
    return { state: broker.state, expired, token, stored: sessionStorage.length };
  });
  assert.deepEqual(result, { state: 'expired', expired: ['SESSION_EXPIRED'], token: 'SESSION_EXPIRED', stored: 0 });
});

test('a stolen token is useless from another key: the API refuses it, and the refresh token too (invalid_grant)', T, async () => {
  await h.run(() => dp.start());
  const { delta, result } = await h.measure(() => h.run(async () => {
    const { access_token: at, refresh_token: rt } = window.t.tokens;
    const api = await dp.thief('/statistics', { headers: { Authorization: `DPoP ${at}` } }, at);
    const bearer = await fetch('/statistics', { headers: { Authorization: `Bearer ${at}` } });
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt });
    const stolen = await dp.thief('/auth/refresh-token', { method: 'POST', body: form });
    const noProof = await fetch('/auth/refresh-token', { method: 'POST', body: form });
    // The owner's session is untouched: its next refresh still works.
    await fetch('/__control/clock', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ advance_ms: 31_000 }) });
    const owner = await tb.call('fetch', 'GET', '/statistics');
    return {
      api: [api.status, api.headers.get('WWW-Authenticate')],
      bearer: bearer.status,
      stolen: [stolen.status, (await stolen.json()).error],
      noProof: [noProof.status, (await noProof.json()).error],
      owner: owner.status,
    };
  }));
  assert.equal(result.api[0], 401);
  assert.match(result.api[1], /^DPoP .*error="invalid_dpop_proof"/);
  assert.equal(result.bearer, 401, 'a DPoP-bound token is refused as Bearer');
  assert.deepEqual(result.stolen, [400, 'invalid_grant']);
  assert.deepEqual(result.noProof, [400, 'invalid_grant']);
  assert.equal(result.owner, 200);
  assert.equal(delta.dpop_bearer_downgrades, 1);
  assert.equal(delta.dpop_bound_refresh_refused_other_key, 1);
  assert.equal(delta.dpop_bound_refresh_refused_no_proof, 1);
  assert.equal(delta.reuse_detections, 0, 'the refused refreshes did not burn the family');
});

test('a bearer downgrade is refused: a server that ignores DPoP gets INVALID_TOKEN_RESPONSE, never a Bearer header', T, async () => {
  await h.control('reset', { dpop: 'off' });
  const result = await h.run(async () => {
    const broker = await tb.createTokenBroker({
      dpop: true,
      refresh: async () => ({ access_token: 'bearer-token', token_type: 'Bearer', expires_in: 60 }),
    });
    const out = {};
    // The login of a server without DPoP answers token_type "Bearer".
    const res = await fetch('/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', DPoP: await broker.dpopProof('POST', '/auth/login') },
      body: JSON.stringify({ username: 'demo', password: 'demo' }),
    });
    const tokens = await res.json();
    out.tokenType = tokens.token_type;
    try { broker.setTokens(tokens); } catch (e) { out.setTokens = [e.code, e.message]; }
    // A refresh that answers Bearer: refused, and the request is not sent with a Bearer header.
    broker.setTokens({ ...tokens, token_type: 'DPoP', expires_in: 0.001 });
    const sent = [];
    const authFetch = tb.createAuthFetch(broker, { fetch: (u, init) => { sent.push(new Headers(init.headers).get('Authorization')); return fetch(u, init); } });
    await tb.sleep(1100);
    out.request = (await tb.outcome(authFetch('/statistics'))).code;
    out.sent = sent;
    out.state = broker.state;
    return out;
  });
  assert.equal(result.tokenType, 'Bearer');
  assert.equal(result.setTokens[0], 'INVALID_TOKEN_RESPONSE');
  assert.match(result.setTokens[1], /token_type is not DPoP/);
  assert.equal(result.request, 'INVALID_TOKEN_RESPONSE');
  assert.deepEqual(result.sent, [], 'nothing went out with a bearer header');
  assert.equal(result.state, 'valid', 'the session is kept (the refresh token is not discarded)');
});

test('dpop option errors are INVALID_OPTIONS that say what to do', T, async () => {
  const result = await h.run(async () => {
    const code = (p) => p.then(() => 'ok', (e) => `${e.code ?? e.name}: ${e.message}`);
    return {
      store: await code(tb.createTokenBroker({ refresh: { url: '/x' }, dpop: { store: 'disk' } })),
      type: await code(tb.createTokenBroker({ refresh: { url: '/x' }, dpop: 'yes' })),
      memoryCrossTab: await code(tb.createTokenBroker({ refresh: { url: '/x' }, dpop: { store: 'memory' }, crossTab: true })),
      noDpop: await code((await tb.createTokenBroker({ refresh: { url: '/x' } })).dpopProof('GET', '/x')),
    };
  });
  assert.match(result.store, /^INVALID_OPTIONS: Invalid options: dpop\.store must be 'indexeddb' or 'memory'/);
  assert.match(result.type, /^INVALID_OPTIONS: Invalid options: dpop must be true or \{ store/);
  assert.match(result.memoryCrossTab, /^INVALID_OPTIONS: Invalid options: dpop: \{ store: 'memory' \} keeps the key in this tab only/);
  assert.match(result.noDpop, /^INVALID_OPTIONS: dpopProof: this broker was created without dpop/);
});
