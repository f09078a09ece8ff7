// Cross-tab coordination and storage (issue 6), in Chromium: several pages of one browser
// context against the reference server at grace 0 (strict rotation). Assertions are counts from
// the server's /__control/stats and the brokers' state, never timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
// Tokens live TTL s; brokers refresh at expiry (leeway 0), so waiting EXPIRED ms crosses exactly
// one expiry: every count below is "per generation".
const TTL = 3;
const EXPIRED = 3300;
const DASH = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
let h;
let tabs = [];
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => {
  for (const t of tabs) await t.close().catch(() => {});
  tabs = [];
  await h.control('reset', { access_ttl: TTL, grace: 0 });
});

/**
 * Opens a tab of the app and creates its broker (window.b) with `options` (name 'xt', crossTab
 * on, sessionStorage, the built-in refresh). `init` runs before any page script (e.g. to seed
 * storage). A new tab's sessionStorage is empty: it asks its siblings (a 'memory' tab never
 * answers that question, see hostile.test.mjs).
 * `login: true` logs in first and passes the tokens.
 */
async function openTab({ login = false, options = {}, init } = {}) {
  const page = await h.page.context().newPage();
  page.on('pageerror', (e) => h.pageErrors.push(String(e)));
  if (init) await page.addInitScript(init.fn, init.arg);
  await page.goto(new URL('/index.html', h.base).href);
  await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15000 });
  await page.evaluate(async ([login, options]) => {
    const tokens = login ? await tb.login() : undefined;
    window.events = [];
    window.b = await tb.createTokenBroker({
      name: 'xt', crossTab: true, storage: 'session', refresh: { url: '/auth/refresh-token' }, tokens, leewaySeconds: 0,
      ...options,
    });
    for (const type of ['tokens', 'refreshstart', 'refreshend', 'expired', 'logout', 'storageerror']) {
      window.b.addEventListener(type, (ev) => window.events.push(ev.type + (ev.code ? ':' + ev.code : '')));
    }
    window.api = tb.createAuthFetch(window.b);
  }, [login, options]);
  tabs.push(page);
  return page;
}

/** Fires `n` dashboard calls in the tab; resolves with their statuses (or error codes). */
const fire = (page, n) => page.evaluate(([n, paths]) => Promise.all(Array.from({ length: n }, (_, i) =>
  window.api(paths[i % 4]).then((r) => r.status, (e) => e.code ?? String(e)))), [n, DASH]);

const state = (page) => page.evaluate(() => ({ state: window.b.state, generation: window.b.generation }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

for (const n of [2, 5]) {
  test(`${n} tabs whose token expires at the same moment, 10 calls each → exactly one refresh`, T, async () => {
    const first = await openTab({ login: true });
    for (let i = 1; i < n; i++) await openTab(); // later tabs get the tokens from the first one
    const before = await h.stats();
    const gens = await Promise.all(tabs.map(state));
    assert.ok(gens.every((g) => g.state === 'valid' && g.generation === gens[0].generation), JSON.stringify(gens));
    await sleep(EXPIRED); // the token has expired in every tab
    const results = await Promise.all(tabs.map((t) => fire(t, 10)));
    const after = await h.stats();
    assert.deepEqual(results.flat(), Array(10 * n).fill(200));
    assert.equal(after.refresh_calls - before.refresh_calls, 1, 'one refresh across all tabs');
    assert.equal(after.reuse_detections, 0);
    assert.equal(after.revoked_families, 0, 'family intact');
    const end = await Promise.all(tabs.map(state));
    assert.ok(end.every((g) => g.generation === gens[0].generation + 1), JSON.stringify(end));
    assert.ok(first);
  });
}

for (const grace of [5, 0]) {
  test(`the tab holding the lock is closed mid-refresh (grace ${grace}) → the other settles, no hang`, T, async () => {
    await h.control('config', { access_ttl: 60, grace });
    const a = await openTab({ login: true });
    const b = await openTab();
    await h.control('latency', { path: '/auth/refresh-token', ms: 1500 });
    const before = await h.stats();
    // A starts a refresh (its token is "rejected") and holds the lock while the server is slow.
    await a.evaluate(async () => { window.b.tokenRejected(await window.b.getAccessToken()).catch(() => {}); });
    await sleep(300);
    // B now needs a refresh too: it queues for the lock.
    const bResult = b.evaluate(async () => {
      const tok = await window.b.getAccessToken();
      return window.b.tokenRejected(tok).then(() => 'ok', (e) => e.code);
    });
    await sleep(200);
    await a.close();
    const outcome = await bResult;
    const after = await h.stats();
    const calls = after.refresh_calls - before.refresh_calls;
    if (grace > 0) {
      assert.equal(outcome, 'ok', 'B recovers: the server returns the same successor inside the grace window');
      assert.equal(after.reuse_detections, 0);
      assert.ok(calls <= 2, `one more refresh at most (saw ${calls})`);
    } else {
      // Security rules case 4 at grace 0, exactly: the closed tab's rotation was committed (the
      // server commits, then waits) but never seen; B presents the spent refresh token once, the
      // server detects the reuse and ends the family; B ends the session cleanly, with no loop.
      assert.equal(outcome, 'SESSION_EXPIRED');
      assert.equal(calls, 2, 'the closed tab\'s refresh and B\'s one attempt');
      assert.equal(after.reuse_detections - before.reuse_detections, 1);
      const end = await b.evaluate(() => ({ state: window.b.state, events: window.events }));
      assert.equal(end.state, 'expired');
      assert.equal(end.events.filter((e) => e === 'expired').length, 1, JSON.stringify(end.events));
      await sleep(1500); // nothing retries afterwards
      assert.equal((await h.stats()).refresh_calls - before.refresh_calls, 2, 'no loop');
    }
  });
}

test('logout in one tab during another tab\'s refresh → every tab ends logged out', T, async () => {
  await h.control('config', { access_ttl: 60 });
  const a = await openTab({ login: true });
  const b = await openTab();
  await h.control('latency', { path: '/auth/refresh-token', ms: 800 });
  const pending = b.evaluate(async () => {
    const tok = await window.b.getAccessToken();
    return window.b.tokenRejected(tok).then(() => 'ok', (e) => e.code);
  });
  await sleep(200);
  await a.evaluate(() => window.b.logout());
  assert.equal(await pending, 'LOGGED_OUT');
  await sleep(1200); // the refresh's late answer has arrived by now
  const states = await Promise.all([a, b].map(state));
  assert.deepEqual(states.map((s) => s.state), ['anonymous', 'anonymous'], 'the late refresh revived nothing');
  const codes = await b.evaluate(() => window.b.getAccessToken().then(() => 'ok', (e) => e.code));
  assert.equal(codes, 'NOT_AUTHENTICATED');
});

test('a late-opened tab and a duplicated tab never present a stale refresh token', T, async () => {
  const a = await openTab({ login: true, options: { storage: 'session' } });
  const key = 'token-broker:xt';
  const stale = await a.evaluate((k) => sessionStorage.getItem(k), key); // generation 1
  assert.ok(stale && JSON.parse(stale).g >= 1, stale);
  // A rotates (its token is rejected once): generation 2, refresh token 1 is spent.
  await a.evaluate(async () => { await window.b.tokenRejected(await window.b.getAccessToken()); });
  // A duplicated tab: sessionStorage copied from before the rotation.
  const dup = await openTab({
    options: { storage: 'session' },
    init: { fn: ([k, v]) => { if (!sessionStorage.getItem(k)) sessionStorage.setItem(k, v); }, arg: [key, stale] },
  });
  const late = await openTab(); // empty sessionStorage: asks the others
  const before = await h.stats();
  await sleep(EXPIRED); // every tab's token expired
  const results = await Promise.all([dup, late, a].map((t) => fire(t, 4)));
  const after = await h.stats();
  assert.deepEqual(results.flat(), Array(12).fill(200));
  assert.equal(after.reuse_detections, 0, 'no stale refresh token presented');
  assert.equal(after.revoked_families, 0);
  assert.equal(after.refresh_calls - before.refresh_calls, 1);
  const gens = await Promise.all([a, dup, late].map(state));
  assert.ok(gens.every((g) => g.generation === gens[0].generation), JSON.stringify(gens));
});

test('garbage in storage is ignored, reported and removed, never a crash', T, async () => {
  for (const garbage of ['{not json', '{"g":-1,"e":1,"a":"x"}', '{"g":1,"e":1,"a":"bad token\\n"}', '42']) {
    const page = await openTab({
      options: { storage: 'local' },
      init: { fn: ([v]) => localStorage.setItem('token-broker:xt', v), arg: [garbage] },
    });
    await sleep(50);
    const r = await page.evaluate(() => ({
      state: window.b.state, events: window.events, stored: localStorage.getItem('token-broker:xt'),
    }));
    assert.equal(r.state, 'anonymous', garbage);
    assert.deepEqual(r.events, ['storageerror'], garbage);
    assert.equal(r.stored, null, 'removed');
    await page.close();
    tabs.pop();
  }
  assert.deepEqual(h.pageErrors, []);
});

test('local storage: tabs share tokens through it, one refresh, and a new tab starts from it', T, async () => {
  const a = await openTab({ login: true, options: { storage: 'local' } });
  const b = await openTab({ options: { storage: 'local' } });
  assert.deepEqual((await state(b)).state, 'valid');
  const before = await h.stats();
  await sleep(EXPIRED);
  const results = await Promise.all([a, b].map((t) => fire(t, 10)));
  const after = await h.stats();
  assert.deepEqual(results.flat(), Array(20).fill(200));
  assert.equal(after.refresh_calls - before.refresh_calls, 1);
  assert.equal(after.reuse_detections, 0);
  await a.evaluate(() => window.b.logout());
  await sleep(100);
  assert.equal((await state(b)).state, 'anonymous');
  assert.equal(await b.evaluate(() => localStorage.getItem('token-broker:xt')), null);
});

test('no navigator.locks: still one refresh per tab, nothing hangs', T, async () => {
  const noLocks = { fn: () => Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined }), arg: null };
  await h.control('config', { access_ttl: TTL, grace: 5 });
  const a = await openTab({ login: true, init: noLocks });
  const b = await openTab({ init: noLocks });
  assert.equal(await a.evaluate(() => navigator.locks), undefined);
  const before = await h.stats();
  await sleep(EXPIRED);
  const results = await Promise.all([a, b].map((t) => fire(t, 10)));
  const after = await h.stats();
  assert.equal(results.flat().length, 20, 'every call settled');
  assert.ok(results.flat().every((r) => r === 200), JSON.stringify(results));
  const calls = after.refresh_calls - before.refresh_calls;
  assert.ok(calls >= 1 && calls <= 2, `at most one refresh per tab (saw ${calls})`);
});

test('security rules case 11 across two tabs: invalid_grant clears every tab, once, with no retry', T, async () => {
  await h.control('config', { access_ttl: 60 });
  const a = await openTab({ login: true });
  const b = await openTab();
  assert.equal((await state(b)).state, 'valid', 'B joined the session');
  await h.control('fault', { kind: 'invalid_grant', count: 5 });
  const before = await h.stats();
  // A's token is rejected: A refreshes, the server says invalid_grant.
  const aCode = await a.evaluate(async () => window.b.tokenRejected(await window.b.getAccessToken()).then(() => 'ok', (e) => e.code));
  await sleep(300); // the broadcast has reached B
  const bOut = await b.evaluate(async () => ({
    state: window.b.state,
    code: await window.b.getAccessToken().then(() => 'ok', (e) => e.code),
    expired: window.events.filter((e) => e === 'expired').length,
  }));
  const aOut = await a.evaluate(() => ({ state: window.b.state, expired: window.events.filter((e) => e === 'expired').length }));
  const after = await h.stats();
  assert.equal(aCode, 'SESSION_EXPIRED');
  assert.deepEqual(bOut, { state: 'expired', code: 'SESSION_EXPIRED', expired: 1 });
  assert.deepEqual(aOut, { state: 'expired', expired: 1 });
  assert.equal(after.refresh_calls - before.refresh_calls, 1, 'one attempt, no retry in any tab');
  const stored = await Promise.all([a, b].map((t) => t.evaluate(() => sessionStorage.getItem('token-broker:xt'))));
  assert.deepEqual(stored, [null, null], 'tokens cleared in every tab');
});
