// The broker inside a hostile page (issue 10): injected HTML, redirects, prototype pollution,
// forged cross-tab messages, wrong argument types, old sessions, tiny token lifetimes. In Chromium
// against the reference server; every test failed on the code before the fix. Counts, not timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

const foreignCount = async () => (await h.control('foreign'));

// ---- tokens leaving the allowed origins ----

test('<base href> injected into the page: relative calls that now go elsewhere carry no token', T, async () => {
  await h.run(() => tb.start());
  const f0 = await foreignCount();
  const { delta, result } = await h.measure(() => h.run(async (foreign) => {
    const base = document.createElement('base');
    base.href = `${foreign}/`;
    document.head.prepend(base);
    try {
      return await Promise.all(['axios', 'fetch'].flatMap((c) => [
        tb.call(c, 'GET', '/statistics'), tb.call(c, 'GET', 'statistics'),
      ]));
    } finally {
      base.remove();
    }
  }, h.foreign));
  const f1 = await foreignCount();
  assert.equal(f1.requests - f0.requests, 4, 'the browser sent them to the injected base');
  assert.equal(delta.foreign_auth_headers, 0, JSON.stringify(result));
  assert.equal(f1.with_authorization - f0.with_authorization, 0);
});

test('<base href> and the built-in refresh: a relative refresh.url is fixed at creation, never moved', T, async () => {
  const out = await h.run(async (foreign) => {
    const base = document.createElement('base');
    base.href = `${foreign}/`;
    document.head.prepend(base);
    // Created while the injected base is in place: the URL would leave the allowed origins.
    const created = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' } }).then(() => 'created', (e) => e.code + ': ' + e.message);
    base.remove();
    return created;
  }, h.foreign);
  assert.match(out, /^INVALID_OPTIONS: .*refresh\.url goes to http:\/\/127\.0\.0\.1:\d+, which is not an allowed origin/);
  // Created before the injection: the refresh still goes to the page's own origin.
  const f0 = await foreignCount();
  const { delta, result } = await h.measure(() => h.run(async (foreign) => {
    await tb.start({ mode: 'known-expired' });
    const base = document.createElement('base');
    base.href = `${foreign}/`;
    document.head.prepend(base);
    try {
      return await window.t.broker.getAccessToken().then(() => 'ok', (e) => e.code);
    } finally {
      base.remove();
    }
  }, h.foreign));
  assert.equal(result, 'ok');
  assert.equal(delta.refresh_calls, 1);
  assert.equal((await foreignCount()).bodies_with_refresh_token - f0.bodies_with_refresh_token, 0);
});

for (const status of [307, 308]) {
  test(`the built-in refresh never follows a ${status} redirect with the refresh token in its body`, T, async () => {
    const f0 = await foreignCount();
    const { delta, result } = await h.measure(() => h.run(async ([foreign, status]) => {
      const url = `/__control/redirect?status=${status}&to=${encodeURIComponent(`${foreign}/auth/refresh-token`)}`;
      await tb.start({ mode: 'known-expired', broker: { refresh: { url }, refreshRetries: 0 } });
      return window.t.broker.getAccessToken().then(() => 'ok', (e) => e.code);
    }, [h.foreign, status]));
    assert.equal(result, 'REFRESH_FAILED');
    const f1 = await foreignCount();
    assert.equal(f1.requests - f0.requests, 0, 'nothing reached the other origin');
    assert.equal(f1.bodies_with_refresh_token - f0.bodies_with_refresh_token, 0);
    assert.equal(delta.refresh_calls, 0);
  });
}

test('refresh.url and revoke.url on an origin that is not allowed are refused at creation', T, async () => {
  const codes = await h.run(async (foreign) => Promise.all([
    { refresh: { url: `${foreign}/auth/refresh-token` } },
    { refresh: { url: '/auth/refresh-token' }, revoke: { url: `${foreign}/auth/revoke` } },
  ].map((o) => tb.createTokenBroker(o).then(() => 'created', (e) => e.code))), h.foreign);
  assert.deepEqual(codes, ['INVALID_OPTIONS', 'INVALID_OPTIONS']);
});

for (const client of ['axios', 'fetch']) {
  test(`${client}: a 401 that a same-origin redirect brought from another origin neither refreshes nor replays`, T, async () => {
    await h.run(() => tb.start());
    const { delta, result } = await h.measure(() => h.run(([c, foreign]) =>
      tb.call(c, 'GET', `/__control/redirect?status=302&to=${encodeURIComponent(`${foreign}/401`)}`), [client, h.foreign]));
    assert.equal(result.status, 401, JSON.stringify(result));
    assert.equal(delta.refresh_calls, 0, 'the 401 says nothing about our token');
    assert.equal(await h.run(() => window.t.events.filter((e) => e.type === 'refreshstart').length), 0);
  });
}

test('prototype pollution cannot widen the allowlist or plant a token', T, async () => {
  const f0 = await foreignCount();
  const { delta, result } = await h.measure(() => h.run(async (foreign) => {
    Object.prototype.allowedOrigins = [foreign];
    try {
      await tb.start();
      const calls = await Promise.all([tb.call('axios', 'GET', `${foreign}/x`), tb.call('fetch', 'GET', `${foreign}/x`)]);
      const allows = window.t.broker.allowsOrigin(foreign);
      return { calls, allows };
    } finally {
      delete Object.prototype.allowedOrigins;
    }
  }, h.foreign));
  assert.equal(result.allows, false);
  assert.equal(delta.foreign_auth_headers, 0);
  assert.equal((await foreignCount()).requests - f0.requests, 2);
  const planted = await h.run(async () => {
    Object.prototype.accessToken = 'PLANTED';
    Object.prototype.refreshToken = 'PLANTED';
    try {
      const b = window.t.broker;
      const fresh = await b.tokenRejected(await b.getAccessToken()); // a real refresh
      return { fresh, now: await b.getAccessToken() };
    } finally {
      delete Object.prototype.accessToken;
      delete Object.prototype.refreshToken;
    }
  });
  assert.notEqual(planted.fresh, 'PLANTED');
  assert.notEqual(planted.now, 'PLANTED');
  assert.ok(planted.now.split('.').length === 3, 'the server\'s JWT');
});

// ---- sessions that must stay dead ----

for (const client of ['axios', 'fetch']) {
  test(`${client}: a request of a session that ended is never replayed with the next session's token`, T, async () => {
    await h.run(() => tb.start());
    // A's request is in flight (the server holds it, then answers 401) while A logs out and B logs in.
    await h.control('delay-next', { path: '/statistics', ms: 800, status: 401 });
    const { delta, result } = await h.measure(() => h.run(async (c) => {
      const pending = tb.call(c, 'GET', '/statistics');
      await tb.sleep(150);
      await window.t.broker.logout();
      window.t.broker.setTokens(await tb.login());
      return pending;
    }, client));
    assert.equal(result.code, 'LOGGED_OUT', JSON.stringify(result));
    assert.equal(delta.refresh_calls, 0);
    assert.equal(delta.api_ok, 0, 'nothing was replayed as B');
  });
}

test('logout() revokes the refresh token at the server (RFC 7009) and resolves', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start({ broker: { revoke: { url: '/auth/revoke' } } });
    const spent = window.t.tokens.refresh_token;
    const settled = await window.t.broker.logout();
    const res = await fetch('/auth/refresh-token', { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: spent }) });
    return { settled, status: res.status, body: await res.json(), state: window.t.broker.state };
  }));
  assert.equal(result.settled, undefined);
  assert.equal(result.state, 'anonymous');
  assert.equal(delta.revocations, 1);
  assert.equal(result.status, 400);
  assert.equal(result.body.error, 'invalid_grant');
});

test('logout() with a revoke endpoint that never answers still settles (bounded by refreshTimeoutMs)', T, async () => {
  await h.control('latency', { path: '/auth/revoke', ms: 60_000 });
  const result = await h.run(async () => {
    await tb.start({ broker: { revoke: { url: '/auth/revoke' }, refreshTimeoutMs: 300 } });
    await window.t.broker.logout();
    return window.t.broker.state;
  });
  assert.equal(result, 'anonymous');
});

// ---- same-origin hostility: the channel and storage ----

async function openTab(options) {
  const page = await h.page.context().newPage();
  await page.goto(new URL('/index.html', h.base).href);
  await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15000 });
  await page.evaluate(async (options) => {
    window.b = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, crossTab: true, ...options });
  }, options);
  return page;
}

test('a forged channel message cannot push the epoch past 2^53 and make the next login look old', T, async () => {
  const tokens = await h.run(() => tb.login());
  const a = await openTab({ storage: 'session', tokens });
  const b = await openTab({ storage: 'session' });
  try {
    await a.evaluate(() => {
      const c = new BroadcastChannel('token-broker:default');
      for (const e of [1e300, 2 ** 64, 2 ** 53 + 2, Infinity, -1, 1.5]) c.postMessage({ t: 'end', e, g: e, l: true });
      c.close();
    });
    await h.run(() => tb.sleep(100));
    const login = await a.evaluate(async () => { window.b.setTokens(await tb.login()); await tb.sleep(200); return window.b.generation; });
    const seen = await b.evaluate(async () => ({ state: window.b.state, token: await window.b.getAccessToken() }));
    const own = await a.evaluate(() => window.b.getAccessToken());
    assert.equal(seen.state, 'valid', 'the sibling adopted the new login');
    assert.equal(seen.token, own);
    assert.ok(login >= 1);
  } finally {
    await a.close();
    await b.close();
  }
});

test('hello: a memory broker never answers; a stored session answers at most once per 100 ms', T, async () => {
  const tokens = await h.run(() => tb.login());
  const mem = await openTab({ storage: 'memory', tokens, name: 'mem' });
  const ses = await openTab({ storage: 'session', tokens, name: 'ses' });
  try {
    const answers = await h.run(async () => {
      const listen = (name) => {
        const c = new BroadcastChannel(`token-broker:${name}`);
        const got = [];
        c.onmessage = (ev) => { if (ev.data?.t === 'tokens') got.push(ev.data); };
        return { c, got };
      };
      const m = listen('mem');
      const s = listen('ses');
      for (let i = 0; i < 50; i++) { m.c.postMessage({ t: 'hello' }); s.c.postMessage({ t: 'hello' }); }
      await tb.sleep(300);
      m.c.close();
      s.c.close();
      return { memory: m.got.length, session: s.got.length };
    });
    assert.equal(answers.memory, 0, 'the refresh token stays in the memory tab');
    assert.ok(answers.session >= 1 && answers.session <= 2, `rate-limited (saw ${answers.session})`);
  } finally {
    await mem.close();
    await ses.close();
  }
});

test('a flood of 100,000 forged messages changes nothing and the tab keeps working', T, async () => {
  await h.control('config', { access_ttl: 60 }); // no real refresh during the flood
  const tokens = await h.run(() => tb.login());
  const a = await openTab({ storage: 'session', tokens });
  try {
    const out = await h.run(async () => {
      const c = new BroadcastChannel('token-broker:default');
      for (let i = 0; i < 100_000; i++) {
        const m = i % 4;
        c.postMessage(m === 0 ? { t: 'tokens', g: 0, e: 0, a: 'FORGED', r: 'FORGED' }
          : m === 1 ? { t: 'refreshing', g: i, e: 1e300 } : m === 2 ? { t: 'hello' } : { t: 'end', e: 'x', g: null });
      }
      c.close();
      return true;
    });
    assert.ok(out);
    const seen = await a.evaluate(async () => { await tb.sleep(500); return { state: window.b.state, token: await window.b.getAccessToken() }; });
    assert.equal(seen.state, 'valid');
    assert.equal(seen.token, tokens.access_token);
  } finally {
    await a.close();
  }
});

// ---- errors and wrong arguments ----

test('no error carries a token: setTokens and a malformed refresh answer describe what is wrong', T, async () => {
  await h.run(() => tb.start());
  const out = await h.run(async () => {
    const b = window.t.broker;
    const describe = (e) => ({ code: e.code, message: e.message, text: JSON.stringify({ m: e.message, c: e.cause, s: String(e.cause ?? '') }) });
    let bad;
    try { b.setTokens({ access_token: 'has space', refresh_token: 'SECRET-RT-1' }); } catch (e) { bad = describe(e); }
    let garbage;
    try { b.setTokens('SECRET-STRING-TOKEN'); } catch (e) { garbage = describe(e); }
    // A refresh function whose answer has a refresh token but no access token, and one whose
    // axios-style error holds the refresh token in config.data.
    const r1 = await tb.createTokenBroker({ tokens: window.t.tokens, refreshRetries: 0,
      refresh: async () => ({ refresh_token: 'SECRET-RT-2', expires_in: 60 }) });
    const e1 = await r1.tokenRejected(window.t.tokens.access_token).catch(describe);
    const r2 = await tb.createTokenBroker({ tokens: window.t.tokens, refreshRetries: 0, refresh: async ({ refreshToken }) => {
      throw Object.assign(new Error('Request failed with status code 400'), { config: { data: `refresh_token=${refreshToken}` },
        response: { status: 400, data: { error: 'invalid_grant' } } });
    } });
    const e2 = await r2.tokenRejected(window.t.tokens.access_token).catch(describe);
    return { bad, garbage, e1, e2, rt: window.t.tokens.refresh_token };
  });
  assert.equal(out.bad.code, 'INVALID_TOKEN_RESPONSE');
  assert.match(out.bad.message, /access_token contains a space/);
  assert.match(out.garbage.message, /got a string/);
  assert.equal(out.e1.code, 'INVALID_TOKEN_RESPONSE');
  assert.match(out.e1.message, /access_token is missing/);
  assert.equal(out.e2.code, 'SESSION_EXPIRED');
  for (const e of [out.bad, out.garbage, out.e1, out.e2]) {
    for (const secret of ['SECRET-RT-1', 'SECRET-STRING-TOKEN', 'SECRET-RT-2', out.rt]) {
      assert.ok(!e.text.includes(secret), `${e.code} leaks ${secret}: ${e.text}`);
    }
  }
});

test('wrong argument types are TypeErrors, hostile clocks do not wedge it, and free() leaves a disposed broker', T, async () => {
  await h.run(() => tb.start());
  const out = await h.run(async () => {
    const b = window.t.broker;
    const kind = (f) => { try { f(); return 'returned'; } catch (e) { return e instanceof TypeError ? 'TypeError' : `${e.name}:${e.code ?? e.message}`; } };
    const akind = (p) => p.then(() => 'resolved', (e) => (e instanceof TypeError ? 'TypeError' : `${e.name}:${e.code ?? e.message}`));
    const huge = { length: 4e9 };
    const sync = {
      allowsOrigin42: kind(() => b.allowsOrigin(42)),
      allowsOriginHuge: kind(() => b.allowsOrigin(huge)),
      should401Obj: kind(() => b.shouldRefreshOn401({})),
      should401Huge: kind(() => b.shouldRefreshOn401(huge)),
      listener: kind(() => b.addEventListener(1, 2)),
      setTokensHuge: kind(() => b.setTokens(huge)),
    };
    const asyncs = {
      rejectedTrue: await akind(b.tokenRejected(true)),
      rejectedHuge: await akind(b.tokenRejected(huge)),
    };
    // A page's clocks that throw, or that call back into the broker while it works.
    const realNow = Date.now;
    const realPerf = performance.now;
    Date.now = () => { void b.state; throw new Error('clock'); };
    performance.now = () => b.generation;
    let clocks;
    try {
      clocks = await akind(b.getAccessToken());
    } finally {
      Date.now = realNow;
      performance.now = realPerf;
    }
    const afterClocks = await akind(b.getAccessToken());
    b.free();
    const freed = {
      get: await akind(b.getAccessToken()),
      rejected: await akind(b.tokenRejected('x')),
      set: kind(() => b.setTokens(window.t.tokens)),
      state: b.state,
    };
    return { sync, asyncs, clocks, afterClocks, freed };
  });
  const { setTokensHuge, ...typeErrors } = out.sync;
  for (const [k, v] of Object.entries(typeErrors)) assert.equal(v, 'TypeError', k);
  assert.equal(setTokensHuge, 'TokenBrokerError:INVALID_TOKEN_RESPONSE');
  for (const [k, v] of Object.entries(out.asyncs)) assert.equal(v, 'TypeError', k);
  assert.equal(out.clocks, 'resolved');
  assert.equal(out.afterClocks, 'resolved');
  assert.deepEqual(out.freed, { get: 'TokenBrokerError:DISPOSED', rejected: 'TokenBrokerError:DISPOSED', set: 'TokenBrokerError:DISPOSED', state: 'anonymous' });
  assert.deepEqual(h.pageErrors, []);
});

// ---- refresh storms ----

test('a token lifetime of a millisecond gives at most one refresh a second, not one per call', T, async () => {
  const { result } = await h.measure(() => h.run(async () => {
    // The server's answers, told to the broker as lasting 1 ms.
    const refresh = async ({ refreshToken, signal }) => {
      const res = await fetch('/auth/refresh-token', { method: 'POST', signal,
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }) });
      if (!res.ok) throw Object.assign(new Error(`refresh ${res.status}`), { status: res.status });
      return { ...(await res.json()), expires_in: 0.001 };
    };
    await tb.start({ mode: 'known-expired', broker: { refresh } });
    const start = performance.now();
    let calls = 0;
    while (performance.now() - start < 2200) {
      await window.t.broker.getAccessToken();
      calls++;
    }
    return { calls, refreshes: window.t.events.filter((e) => e.type === 'refreshstart').length };
  }));
  assert.ok(result.calls >= 2, JSON.stringify(result));
  assert.ok(result.refreshes <= 4, `at most one a second (saw ${result.refreshes} for ${result.calls} calls)`);
});

test('a 401 on the current token still refreshes at once, even right after a refresh', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start({ mode: 'known-expired' });
    const first = await window.t.broker.getAccessToken(); // refresh 1
    const second = await window.t.broker.tokenRejected(first); // refresh 2, no 1 s wait
    return first !== second;
  }));
  assert.equal(result, true);
  assert.equal(delta.refresh_calls, 2);
});

test('[Symbol.dispose]() (`using broker = ...`) leaves a disposed broker too, never a freed one', T, async () => {
  await h.run(() => tb.start());
  const out = await h.run(async () => {
    const b = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens: window.t.tokens });
    if (typeof Symbol.dispose !== 'symbol') return 'no Symbol.dispose';
    b[Symbol.dispose]();
    return b.getAccessToken().then(() => 'resolved', (e) => `${e.name}:${e.code ?? e.message}`);
  });
  assert.ok(out === 'TokenBrokerError:DISPOSED' || out === 'no Symbol.dispose', out);
});
