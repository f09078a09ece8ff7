// The debug log (issue 12): one structured entry per decision, never a token; `debug: true`
// writes to console.debug; an adoption from another tab says so. Counts and words, not timings.
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './harness.mjs';

const T = { timeout: 60_000 };
let h;
before(async () => { h = await startHarness(); });
after(async () => { await h?.close(); });
beforeEach(async () => { await h.fresh(); });

test('debug: refresh start and why, its end and how many waiters it settled, a late 401; never a token', T, async () => {
  const out = await h.run(async () => {
    const entries = [];
    await tb.start({ mode: 'known-expired', broker: { debug: (e) => entries.push(e) } });
    const b = window.t.broker;
    const fresh = await Promise.all([b.getAccessToken(), b.getAccessToken(), b.getAccessToken()]);
    await b.tokenRejected(window.t.tokens.access_token); // the login token: a late 401
    return { entries, secrets: [window.t.tokens.access_token, window.t.tokens.refresh_token, fresh[0]] };
  });
  const events = out.entries.map((e) => e.event);
  assert.ok(events.includes('refresh started'), JSON.stringify(events));
  const start = out.entries.find((e) => e.event === 'refresh started');
  assert.equal(start.why, 'expiring');
  const end = out.entries.find((e) => e.event === 'refresh succeeded');
  assert.equal(end.settled, 3, 'three waiters settled by the refresh');
  assert.ok(events.includes('late 401 absorbed without a refresh'), JSON.stringify(events));
  assert.ok(out.entries.every((e) => typeof e.generation === 'number' && typeof e.waiting === 'number'));
  const text = JSON.stringify(out.entries);
  for (const s of out.secrets) assert.ok(!text.includes(s), 'no token in the debug log');
});

test('debug: true logs to console.debug; off by default logs nothing', T, async () => {
  const lines = [];
  const listen = (m) => { if (m.type() === 'debug') lines.push(m.text()); };
  h.page.on('console', listen);
  try {
    await h.run(async () => {
      await tb.start({ mode: 'known-expired' });
      await window.t.broker.getAccessToken();
    });
    const quiet = lines.length;
    await h.run(async () => {
      await tb.start({ mode: 'known-expired', broker: { debug: true } });
      await window.t.broker.getAccessToken();
    });
    assert.equal(quiet, 0);
    assert.ok(lines.some((l) => l.startsWith('[token-broker]')), JSON.stringify(lines));
  } finally {
    h.page.off('console', listen);
  }
});

test('debug: a token set adopted from another tab says where it came from', T, async () => {
  const open = async (debug) => {
    const page = await h.page.context().newPage();
    await page.goto(new URL('/index.html', h.base).href);
    await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15000 });
    await page.evaluate(async (debug) => {
      window.entries = [];
      window.b = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, crossTab: true, storage: 'session',
        name: 'dbg', ...(debug ? { debug: (e) => window.entries.push(e) } : {}) });
    }, debug);
    return page;
  };
  const a = await open(false);
  const b = await open(true);
  try {
    await a.evaluate(async () => { window.b.setTokens(await tb.login()); });
    await b.waitForFunction(() => window.b.state === 'valid', null, { timeout: 10_000 });
    const entries = await b.evaluate(() => window.entries);
    assert.ok(entries.some((e) => e.event === 'token set adopted' && e.why === 'from another tab'), JSON.stringify(entries));
  } finally {
    await a.close();
    await b.close();
  }
});
