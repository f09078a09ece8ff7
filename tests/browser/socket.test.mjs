// token-broker/socket (issue 12) against the reference server's /ws and /events: the token goes in
// as the caller chooses; an expired token (close 4001/4401, an error event, a 401 up front) joins
// the same single refresh as HTTP requests, and the connection comes back with the new token;
// logout, close() and an ended session stop it for good; a foreign origin never gets the token.
// Counts, not timings: every wait is "until a condition holds", bounded.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => {
  await h.fresh();
  // Tokens live 60 s here, so the broker's own proactive refresh stays out of the counts; expiry
  // is made by moving the server's clock (the broker keeps believing its token is valid).
  await h.control('config', { access_ttl: 60 });
  await h.run(setupPage);
});

const expireOnServer = () => h.control('clock', { advance_ms: 61_000 });

/** In the page: window.sk = { S (the module), open(), stream(), recs }. */
async function setupPage() {
  const S = await import('/pkg/socket.js');
  const recs = [];
  const plain = (e) => e && { name: e.name, code: e.code, message: String(e.message ?? e) };
  const track = (rec, handle) => {
    rec.handle = handle;
    handle.closed.then((r) => { rec.end = { why: r.why, code: r.code, reason: r.reason, error: plain(r.error) }; });
    recs.push(rec);
    return rec;
  };
  window.sk = {
    S,
    recs,
    plain,
    /** A socket whose hellos, other messages and closes are recorded. */
    open(options = {}, url = '/ws') {
      const rec = { kind: 'ws', hellos: [], echoes: [], ticks: 0, opens: 0, closes: [] };
      return track(rec, S.connectWebSocket(window.t.broker, url, {
        ...options,
        onOpen: () => { rec.opens++; },
        onMessage: (ev) => {
          const m = JSON.parse(ev.data);
          if (m.type === 'hello') rec.hellos.push(m);
          else if (m.type === 'tick') rec.ticks++;
          else if (m.type === 'echo') rec.echoes.push(m.data);
        },
        onClose: (ev, info) => rec.closes.push({ code: ev.code, reason: ev.reason, ...info }),
      }));
    },
    /** An event stream whose events and errors are recorded. */
    stream(options = {}, url = '/events') {
      const rec = { kind: 'sse', events: [], errors: [], opens: 0 };
      return track(rec, S.openEventStream(window.t.broker, url, {
        ...options,
        onOpen: () => { rec.opens++; },
        onEvent: (ev) => rec.events.push({ type: ev.type, id: ev.lastEventId, ...JSON.parse(ev.data) }),
        onError: (e, info) => rec.errors.push({ ...plain(e), ...info }),
      }));
    },
    /** The records as JSON (without the handles). */
    view: () => recs.map(({ handle, ...r }) => ({ ...r, readyState: handle.readyState })),
  };
}

test('(a) each auth mode connects and gets hello: query parameter, subprotocol, first message', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start();
    const modes = ['query', 'protocol', 'message'];
    const recs = modes.map((auth) => sk.open({ auth }));
    await tb.until(() => recs.every((r) => r.hellos.length === 1));
    recs[0].handle.send('over query');
    await tb.until(() => recs[0].echoes.length === 1);
    const protocol = recs[1].handle.socket.protocol;
    const url = new URL(recs[0].handle.socket.url);
    for (const r of recs) r.handle.close();
    const ends = await Promise.all(recs.map((r) => r.handle.closed));
    return { hellos: recs.map((r) => r.hellos[0]), echo: recs[0].echoes[0], protocol, url: { path: url.pathname, param: url.searchParams.has('access_token'), scheme: url.protocol }, ends: ends.map((e) => e.why), sendAfterClose: recs[0].handle.send('x') };
  }));
  assert.deepEqual(result.hellos.map((m) => m.via), ['query', 'protocol', 'message']);
  assert.ok(result.hellos.every((m) => m.sub === 'demo' && m.gen === 1), JSON.stringify(result.hellos));
  assert.equal(result.echo, 'over query');
  assert.equal(result.protocol, 'bearer', 'the server selected `bearer`, not the token');
  assert.deepEqual(result.url, { path: '/ws', param: true, scheme: 'ws:' }, 'a relative URL became ws: on the page origin');
  assert.deepEqual(result.ends, ['closed', 'closed', 'closed']);
  assert.equal(result.sendAfterClose, false);
  assert.equal(delta.ws_connections, 3);
  assert.equal(delta.ws_auth_failures, 0);
  assert.equal(delta.refresh_calls, 0);
  assert.deepEqual(h.pageErrors, []);
});

test('(b) expiry closes 3 sockets with 4001: one refresh shared with 5 parallel authFetch calls; all reconnect with the new token', T, async () => {
  // The refresh takes 300 ms, so the sockets' and the requests' rejections meet it in flight.
  await h.control('latency', { path: '/auth/refresh-token', ms: 300 });
  const before = await h.stats();
  await h.run(async () => {
    await tb.start();
    for (const auth of ['query', 'protocol', 'message']) sk.open({ auth });
    await tb.until(() => sk.recs.every((r) => r.hellos.length === 1));
  });
  await expireOnServer();
  const result = await h.run(async () => {
    const responses = await Promise.all(Array.from({ length: 5 }, () => tb.call('fetch', 'GET', '/statistics')));
    await tb.until(() => sk.recs.every((r) => r.hellos.length === 2));
    return { responses, recs: sk.view(), events: window.t.events.map((e) => e.type) };
  });
  const after = await h.stats();
  const d = (k) => after[k] - (before[k] ?? 0);
  assert.ok(result.responses.every((r) => r.ok && r.data.gen === 2), JSON.stringify(result.responses));
  for (const r of result.recs) {
    assert.deepEqual(r.hellos.map((m) => m.gen), [1, 2], 'reconnected with the new token');
    assert.deepEqual(r.closes, [{ code: 4001, reason: 'token expired', expired: true, willReconnect: true }]);
    assert.equal(r.end, undefined, 'still connected');
    assert.equal(r.readyState, 1);
  }
  assert.equal(d('refresh_calls'), 1, 'ONE refresh for 3 sockets and 5 requests');
  assert.equal(result.events.filter((e) => e === 'refreshstart').length, 1);
  assert.equal(d('ws_connections'), 6, '3 sockets + 3 reconnects, nothing else');
  assert.equal(d('ws_expired_closes'), 3);
  assert.equal(d('ws_auth_failures'), 0, 'no socket tried the expired token again');
  assert.equal(d('api_ok'), 5, 'each request replayed once');
  assert.deepEqual(h.pageErrors, []);
});

test('(c) logout closes every socket and stream; nothing reconnects', T, async () => {
  const before = await h.stats();
  const result = await h.run(async () => {
    await tb.start();
    for (const auth of ['query', 'protocol', 'message']) sk.open({ auth });
    sk.stream();
    await tb.until(() => sk.recs.every((r) => (r.kind === 'ws' ? r.hellos.length === 1 : r.events.length >= 1)));
    await window.t.broker.logout();
    await tb.until(() => sk.recs.every((r) => r.end));
    await tb.sleep(1500); // three tick periods: a reconnect would have happened by now
    return sk.view();
  });
  // The server has seen the sockets close once its ws_open gauge is 0.
  let after;
  for (let i = 0; i < 50; i++) {
    after = await h.stats();
    if (after.ws_open === 0 && after.sse_open === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const r of result) {
    assert.equal(r.end.why, 'logout', JSON.stringify(r));
    assert.equal(r.readyState, 3);
  }
  assert.ok(result.filter((r) => r.kind === 'ws').every((r) => r.closes.length === 0 && r.opens === 1));
  assert.equal(after.ws_open, 0);
  assert.equal(after.sse_open, 0);
  assert.equal(after.ws_connections - before.ws_connections, 3, 'no socket reconnected');
  assert.equal(after.sse_streams - before.sse_streams, 1, 'the stream did not reconnect');
  assert.equal(after.refresh_calls - before.refresh_calls, 0);
});

test('close() by the caller: a socket still waiting for its token is never opened; timers end', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start({ mode: 'known-expired' }); // the broker must refresh before it can hand out a token
    const rec = sk.open();
    rec.handle.close(4000, 'changed my mind');
    const end = await rec.handle.closed;
    await tb.sleep(1000);
    return { end, readyState: rec.handle.readyState, socket: rec.handle.socket };
  }));
  assert.deepEqual(result.end, { why: 'closed', code: 4000, reason: 'changed my mind' });
  assert.equal(result.readyState, 3);
  assert.equal(result.socket, null);
  assert.equal(delta.ws_connections, 0);
});

test('(d) a token refused at connect (4401) refreshes once and reconnects; after SESSION_EXPIRED nothing loops', T, async () => {
  await h.run(() => tb.start());
  await expireOnServer(); // the broker still believes its token is valid
  const first = await h.measure(() => h.run(async () => {
    const rec = sk.open();
    await tb.until(() => rec.hellos.length === 1);
    return sk.view()[0];
  }));
  assert.deepEqual(first.result.closes, [{ code: 4401, reason: 'access token expired', expired: true, willReconnect: true }]);
  assert.equal(first.result.hellos[0].gen, 2);
  assert.equal(first.delta.refresh_calls, 1);
  assert.equal(first.delta.ws_auth_failures, 1);
  assert.equal(first.delta.ws_connections, 2);

  // Now the refresh token is refused (invalid_grant): the session ends, and so does the socket.
  await h.control('fault', { kind: 'invalid_grant', count: 5 });
  await expireOnServer();
  const second = await h.measure(() => h.run(async () => {
    const rec = sk.recs[0];
    await tb.until(() => rec.end);
    await tb.sleep(1500);
    return { rec: sk.view()[0], expired: window.t.expired };
  }));
  assert.equal(second.result.rec.end.why, 'session');
  assert.equal(second.result.rec.end.error.code, 'SESSION_EXPIRED');
  assert.deepEqual(second.result.rec.closes.at(-1), { code: 4001, reason: 'token expired', expired: true, willReconnect: true });
  assert.deepEqual(second.result.expired, ['SESSION_EXPIRED']);
  assert.equal(second.delta.refresh_calls, 1, 'one refresh attempt, no loop');
  assert.equal(second.delta.ws_connections, 0, 'no reconnect after SESSION_EXPIRED');
  assert.equal(second.delta.ws_expired_closes, 1);
});

test('(d2) a server that refuses every token: one refresh, then bounded retries, then the end', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start();
    // A URL whose token the server never accepts: the query parameter is overwritten by a forged one.
    const rec = sk.open({ auth: 'protocol', reconnect: { retries: 2, baseMs: 50 } }, '/ws?access_token=forged');
    await tb.until(() => rec.end);
    return sk.view()[0];
  }));
  assert.equal(result.end.why, 'gave-up');
  assert.equal(result.end.code, 4401);
  assert.equal(delta.refresh_calls, 1, 'one refresh between two connections that proved their token');
  assert.equal(delta.ws_connections, 4, 'the first, the one after the refresh, then 2 retries');
  assert.equal(delta.ws_auth_failures, 4);
});

test('other closes: 1011 reconnects with backoff and the same token; an expired message refreshes; 1000 from the server ends it', T, async () => {
  const { delta, result } = await h.measure(() => h.run(async () => {
    await tb.start();
    const rec = sk.open({
      isExpiredMessage: (ev) => JSON.parse(ev.data).data === 'your token expired',
      reconnect: { baseMs: 50 },
    });
    await tb.until(() => rec.hellos.length === 1);
    rec.handle.send(JSON.stringify({ type: 'close', code: 1011, reason: 'overloaded' })); // the server's test hook
    await tb.until(() => rec.hellos.length === 2);
    rec.handle.send('your token expired'); // echoed back: a message that means "expired"
    await tb.until(() => rec.hellos.length === 3);
    rec.handle.send(JSON.stringify({ type: 'close', code: 1000, reason: 'bye' }));
    await tb.until(() => rec.end);
    return sk.view()[0];
  }));
  assert.deepEqual(result.hellos.map((m) => m.gen), [1, 1, 2], 'same token after 1011; the new one after the expired message');
  assert.deepEqual(result.closes, [
    { code: 1011, reason: 'overloaded', expired: false, willReconnect: true },
    { code: 1000, reason: 'token expired', expired: true, willReconnect: true },
    { code: 1000, reason: 'bye', expired: false, willReconnect: false },
  ]);
  assert.deepEqual(result.echoes, [], 'the expired message did not reach onMessage');
  assert.deepEqual(result.end, { why: 'server', code: 1000, reason: 'bye', error: undefined });
  assert.equal(delta.refresh_calls, 1);
  assert.equal(delta.ws_connections, 3);
});

test('(e) a ws URL on a foreign origin is refused without connecting or sending the token', T, async () => {
  const foreignWs = `${h.foreign.replace('http://', 'ws://')}/ws`;
  const foreignBefore = await h.control('foreign');
  const { delta, result } = await h.measure(() => h.run(async ([url, page]) => {
    await tb.start();
    const tryOpen = (u, o) => { try { sk.S.connectWebSocket(window.t.broker, u, o); return 'connected'; } catch (e) { return sk.plain(e); } };
    const other = page.replace('127.0.0.1', 'localhost').replace('http://', 'ws://');
    const out = {
      foreign: tryOpen(url),
      wss: tryOpen(page.replace('http://', 'wss://')), // same host and port, but https's origin
      otherHost: tryOpen(`${other}/ws`),
      stream: (() => { try { sk.S.openEventStream(window.t.broker, url.replace('ws://', 'http://')); return 'opened'; } catch (e) { return sk.plain(e); } })(),
    };
    // A factory is checked at each connection: the handle ends with the same error.
    const rec = sk.open({}, () => url);
    await tb.until(() => rec.end);
    out.factory = rec.end;
    return out;
  }, [foreignWs, h.base]));
  for (const k of ['foreign', 'wss', 'otherHost', 'stream']) {
    assert.equal(result[k].name, 'TokenBrokerError', `${k}: ${JSON.stringify(result[k])}`);
    assert.equal(result[k].code, 'INVALID_OPTIONS', k);
  }
  assert.match(result.foreign.message, /not an allowed origin/);
  assert.equal(result.factory.why, 'error');
  assert.equal(result.factory.error.code, 'INVALID_OPTIONS');
  const foreignAfter = await h.control('foreign');
  assert.equal(foreignAfter.requests, foreignBefore.requests, 'nothing reached the foreign origin');
  assert.equal(delta.ws_connections, 0);
});

test('(f) event stream: expiry mid-stream → one refresh → the stream goes on with the new token, resuming after its last id', T, async () => {
  const before = await h.stats();
  await h.run(async () => {
    await tb.start();
    sk.stream();
    await tb.until(() => sk.recs[0].events.length >= 2);
  });
  await expireOnServer();
  const result = await h.run(async () => {
    const rec = sk.recs[0];
    await tb.until(() => rec.events.some((e) => e.gen === 2) && rec.events.at(-1).gen === 2 && rec.events.length >= 4);
    rec.handle.close();
    await rec.handle.closed;
    return { ...sk.view()[0], lastEventId: rec.handle.lastEventId };
  });
  const after = await h.stats();
  const ns = result.events.map((e) => e.n);
  assert.deepEqual(ns, ns.map((_, i) => i + 1), `ids continue without a gap or a repeat: ${ns}`);
  assert.ok(result.events.every((e) => e.type === 'message' && e.id === String(e.n)));
  const gens = result.events.map((e) => e.gen);
  assert.deepEqual(gens, [...gens].sort(), 'gen 1 until the expiry, gen 2 after');
  assert.equal(result.opens, 2);
  assert.deepEqual(result.errors, [], 'an expiry is not an error');
  assert.equal(result.end.why, 'closed');
  assert.equal(after.refresh_calls - before.refresh_calls, 1);
  assert.equal(after.sse_streams - before.sse_streams, 2);
  assert.equal(after.sse_expired - before.sse_expired, 1);
});

test('(f) event stream: a 401 up front → one refresh → connected', T, async () => {
  await h.run(() => tb.start());
  await expireOnServer();
  const { delta, result } = await h.measure(() => h.run(async () => {
    const rec = sk.stream();
    await tb.until(() => rec.events.length >= 1);
    rec.handle.close();
    return sk.view()[0];
  }));
  assert.equal(result.events[0].gen, 2);
  assert.equal(result.opens, 1);
  assert.deepEqual(result.errors, []);
  assert.equal(delta.refresh_calls, 1);
  assert.equal(delta.sse_auth_failures, 1);
  assert.equal(delta.sse_streams, 1);
});

test('(f) event stream: SESSION_EXPIRED ends it; onError says so once', T, async () => {
  await h.run(() => tb.start());
  await h.control('fault', { kind: 'invalid_grant', count: 5 });
  await expireOnServer();
  const { delta, result } = await h.measure(() => h.run(async () => {
    const rec = sk.stream();
    await tb.until(() => rec.end);
    await tb.sleep(1000);
    return sk.view()[0];
  }));
  assert.equal(result.end.why, 'session');
  assert.equal(result.end.error.code, 'SESSION_EXPIRED');
  assert.deepEqual(result.errors.map((e) => [e.code, e.willRetry]), [['SESSION_EXPIRED', false]]);
  assert.equal(delta.refresh_calls, 1);
  assert.equal(delta.sse_auth_failures, 1);
  assert.equal(delta.sse_streams, 0);
});

// ---------- DPoP (issue 13): the server in `--dpop required` mode, nonces on ----------

/** In the page: `window.t` for a `dpop: true` broker, logged in with a proof (as dpop.test.mjs does). */
async function startDpop() {
  const broker = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, dpop: true });
  let tokens;
  for (let attempt = 0; !tokens; attempt++) {
    const res = await fetch('/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', DPoP: await broker.dpopProof('POST', '/auth/login') },
      body: JSON.stringify({ username: 'demo', password: 'demo' }),
    });
    broker.dpopNonce('/auth/login', res.headers, { tokenEndpoint: true });
    const body = await res.json();
    if (res.ok) tokens = body;
    else if (body.error !== 'use_dpop_nonce' || attempt > 0) throw new Error(`login: ${res.status} ${JSON.stringify(body)}`);
  }
  broker.setTokens(tokens);
  window.t = { broker, tokens, expired: [], events: [] };
  return tokens.token_type;
}

const dpopRequired = async () => {
  await h.control('config', { dpop: 'required' });
  assert.equal(await h.run(startDpop), 'DPoP');
};

/** No proof the helpers made was refused for anything but a nonce challenge. */
function proofsClean(delta) {
  for (const k of ['missing', 'malformed', 'typ', 'alg', 'jwk', 'bad_signature', 'htm', 'htu', 'jti_replay', 'ath', 'jkt_mismatch']) {
    assert.equal(delta[`dpop_rejected_${k}`] ?? 0, 0, `proofs refused for ${k}`);
  }
  assert.equal(delta.dpop_bearer_downgrades, 0);
}

test('DPoP: an event stream goes with Authorization: DPoP + a proof (one nonce retry) and survives an expiry with one refresh', T, async () => {
  await dpopRequired();
  const before = await h.stats();
  await h.run(async () => {
    sk.stream();
    await tb.until(() => sk.recs[0].events.length >= 2);
  });
  await expireOnServer();
  const result = await h.run(async () => {
    const rec = sk.recs[0];
    await tb.until(() => rec.events.at(-1).gen === 2 && rec.events.length >= 4);
    rec.handle.close();
    await rec.handle.closed;
    return sk.view()[0];
  });
  const after = await h.stats();
  const d = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
  const ns = result.events.map((e) => e.n);
  assert.deepEqual(ns, ns.map((_, i) => i + 1), `ids continue without a gap or a repeat: ${ns}`);
  assert.deepEqual([...new Set(result.events.map((e) => e.gen))], [1, 2]);
  assert.equal(result.opens, 2);
  assert.deepEqual(result.errors, [], 'neither the nonce challenge nor the expiry is an error');
  assert.equal(d.refresh_calls, 1, 'one refresh');
  assert.equal(d.sse_streams, 2);
  assert.equal(d.sse_expired, 1);
  assert.equal(d.dpop_nonce_challenges_rs, 1, 'the first request met the API nonce, the rest carried it');
  assert.equal(d.sse_auth_failures, 1, 'only that challenge');
  assert.equal(d.unauthorized_sent, 0, 'a challenge is no verdict on the token');
  assert.equal(d.dpop_proofs_accepted, 3, 'two streams and the refresh');
  proofsClean(d);
  assert.deepEqual(h.pageErrors, []);
});

test("DPoP: a WebSocket with auth: 'message' sends the proof in the auth message, answers close 4402 with the nonce, and reconnects after expiry with one refresh", T, async () => {
  await dpopRequired();
  const before = await h.stats();
  await h.run(async () => {
    const rec = sk.open({ auth: 'message' });
    await tb.until(() => rec.hellos.length === 1);
  });
  await expireOnServer();
  const result = await h.run(async () => {
    const rec = sk.recs[0];
    await tb.until(() => rec.hellos.length === 2);
    rec.handle.close();
    return sk.view()[0];
  });
  const after = await h.stats();
  const d = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
  const { rs_nonce: nonce } = await h.control('dpop');
  assert.deepEqual(result.hellos.map((m) => [m.via, m.gen]), [['message', 1], ['message', 2]]);
  assert.deepEqual(result.closes, [
    { code: 4402, reason: nonce, expired: false, willReconnect: true },
    { code: 4001, reason: 'token expired', expired: true, willReconnect: true },
  ]);
  assert.equal(d.refresh_calls, 1, 'one refresh, and none for the nonce');
  assert.equal(d.ws_connections, 3, 'the nonce round, the first socket, the one after the refresh');
  assert.equal(d.ws_expired_closes, 1);
  assert.equal(d.ws_auth_failures, 0);
  assert.equal(d.dpop_nonce_challenges_rs, 1);
  assert.equal(d.dpop_proofs_accepted, 3, 'two sockets and the refresh');
  proofsClean(d);
  assert.deepEqual(h.pageErrors, []);
});

test("DPoP: a custom authMessage gets the proof as its second argument", T, async () => {
  await dpopRequired();
  const result = await h.run(async () => {
    const seen = [];
    const rec = sk.open({
      auth: 'message',
      authMessage: (token, { dpop }) => {
        seen.push(dpop.split('.').length);
        return JSON.stringify({ type: 'auth', token, dpop });
      },
    });
    await tb.until(() => rec.hellos.length === 1);
    rec.handle.close();
    return { seen, via: rec.hellos[0].via };
  });
  assert.deepEqual(result, { seen: [3, 3], via: 'message' }, 'a proof per socket (the first met the nonce)');
});

test("DPoP: auth 'query', 'protocol' and the default are INVALID_OPTIONS at call time; nothing connects", T, async () => {
  await dpopRequired();
  const { delta, result } = await h.measure(() => h.run(() => [{ auth: 'query' }, { auth: 'protocol' }, {}].map((o) => {
    try {
      sk.S.connectWebSocket(window.t.broker, '/ws', o);
      return 'connected';
    } catch (e) {
      return sk.plain(e);
    }
  })));
  for (const r of result) {
    assert.equal(r.code, 'INVALID_OPTIONS', JSON.stringify(r));
    assert.match(r.message, /DPoP-bound token cannot go in a URL or a subprotocol.*auth: 'message'/);
  }
  assert.equal(delta.ws_connections, 0);
});

test('DPoP: a bound token sent as Bearer to /events and in the /ws query is refused', T, async () => {
  await dpopRequired();
  const { delta, result } = await h.measure(() => h.run(async () => {
    const at = window.t.tokens.access_token;
    const res = await fetch('/events', { headers: { Authorization: `Bearer ${at}` } });
    const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/ws?access_token=${at}`);
    const close = await new Promise((resolve) => { ws.onclose = (ev) => resolve({ code: ev.code, reason: ev.reason }); });
    return { status: res.status, www: res.headers.get('WWW-Authenticate'), error: (await res.json()).error, close };
  }));
  assert.equal(result.status, 401);
  assert.match(result.www, /^DPoP error="invalid_dpop_proof"/);
  assert.equal(result.error, 'invalid_dpop_proof');
  assert.deepEqual(result.close, { code: 4401, reason: 'DPoP-bound access token presented as a bearer token' });
  assert.equal(delta.dpop_bearer_downgrades, 2);
  assert.equal(delta.sse_streams, 0);
  assert.equal(delta.ws_auth_failures, 1);
});
