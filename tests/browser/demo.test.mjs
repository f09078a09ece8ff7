// The `npm run demo` apps in real Chromium against the reference server: the Vue + axios dashboard
// (token-broker vs the naive interceptor) and the React + fetch example. Builds what it needs with
// scripts/demo.mjs (pack pkg/, install the tarball into the examples, vite build), so run
// `node scripts/build.mjs` first. Asserts counts only (server counters and the page's own), never timings.
// Saves screenshots under test-results/; with TB_UPDATE_DOCS=1 it also refreshes docs/timeline.png.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, buildDemoSite, startDemoServer } from '../../scripts/demo.mjs';

const ROUNDS = 3; // burst ×3 = 12 parallel calls
const CALLS = ROUNDS * 4;
const RESULTS = path.join(ROOT, 'test-results');

let server;
let browser;
let page;
const pageErrors = [];

async function control(name, body) {
  const res = await fetch(`${server.url}/__control/${name}`, body === undefined
    ? {}
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`control ${name}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Server counters changed by `fn` (after − before). */
async function serverDelta(fn) {
  const before = await control('stats');
  await fn();
  const after = await control('stats');
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
}

const runCount = async () => Number(await page.getAttribute('.app', 'data-run-count'));
/** Clicks `selector` and waits until the dashboard finished the run it started. */
async function clickAndWaitRun(selector) {
  const n = await runCount();
  await page.click(selector);
  await page.waitForFunction((prev) => {
    const app = document.querySelector('.app');
    return Number(app.dataset.runCount) > prev && app.dataset.busy === 'false';
  }, n, { timeout: 30000 });
}
const counter = async (name) => Number(await page.getAttribute(`[data-testid=counter-${name}]`, 'data-value'));
const panelStates = () => page.$$eval('[data-testid=panel]', (els) => els.map((e) => e.dataset.state));
const rows = (svg, filter = '') => page.locator(`svg[data-testid=${svg}] g[data-testid=tl-row]${filter}`).count();

before(async () => {
  const site = buildDemoSite();
  server = await startDemoServer({ port: 0, staticDir: site, quiet: true });
  browser = await chromium.launch({
    executablePath: process.env.TB_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  fs.mkdirSync(RESULTS, { recursive: true });
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

test('the examples run the package just built, installed by name from its tarball', () => {
  for (const dir of ['examples/dashboard', 'examples/react']) {
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8'));
    assert.match(manifest.dependencies['token-broker'], /^file:.*token-broker-[\d.]+\.tgz$/, `${dir} depends on the tarball`);
    for (const f of ['package.json', 'index.js', 'axios.js', 'fetch.js', 'token_broker.js', 'token_broker_bg.wasm']) {
      assert.ok(fs.readFileSync(path.join(ROOT, dir, 'node_modules/token-broker', f)).equals(fs.readFileSync(path.join(ROOT, 'pkg', f))),
        `${dir}/node_modules/token-broker/${f} equals pkg/${f}`);
    }
  }
});

test('token-broker: a burst after expiry makes one refresh, replays every call, fills every panel', async () => {
  await control('reset', {});
  await page.goto(`${server.url}/`);
  await page.click('[data-testid=mode-broker]');
  const login = await serverDelta(async () => {
    await page.click('[data-testid=login-submit]');
    await page.waitForSelector('.app[data-phase=dashboard][data-run-count="1"][data-busy=false]', { timeout: 30000 });
  });
  assert.equal(login.logins, 1);
  assert.deepEqual(await panelStates(), ['ok', 'ok', 'ok', 'ok']);

  // A shorter lifetime for the next tokens, through the UI and the server's control API.
  await page.fill('[data-testid=ttl-input]', '20');
  await page.click('[data-testid=ttl-apply]');
  await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).access_ttl === 20);

  // The grace-window switch reaches the server (and is left off: strict rotation).
  await page.click('[data-testid=grace-toggle]');
  await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).grace === 10);
  await page.click('[data-testid=grace-toggle]');
  await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).grace === 0);

  // Expire the current token for the server (its clock jumps); the browser is not told.
  await page.click('[data-testid=expire-now]');
  await page.waitForFunction(async () => (await (await fetch('/__control/clock')).json()).offset_ms > 0);

  await page.fill('[data-testid=burst-n]', String(ROUNDS));
  const d = await serverDelta(() => clickAndWaitRun('[data-testid=burst]'));

  // Server: every call came back 401 once, exactly one refresh, no reuse, every replay succeeded.
  assert.equal(d.unauthorized_sent, CALLS, 'each call sent once with the expired token');
  assert.equal(d.refresh_calls, 1, 'one refresh for the whole burst');
  assert.equal(d.refresh_ok, 1);
  assert.equal(d.reuse_detections, 0);
  assert.equal(d.revoked_families, 0);
  assert.equal(d.api_ok, CALLS, 'every replay succeeded');

  // Page: panels, counters, session, timeline.
  assert.deepEqual(await panelStates(), ['ok', 'ok', 'ok', 'ok']);
  assert.equal(await counter('requests'), 2 * CALLS);
  assert.equal(await counter('unauthorized'), CALLS);
  assert.equal(await counter('refreshes'), 1);
  assert.equal(await counter('replays'), CALLS);
  assert.equal(await counter('failures'), 0);
  assert.equal(await page.textContent('[data-testid=session-state]'), 'valid');
  assert.equal(await rows('timeline'), 2 * CALLS + 1);
  assert.equal(await rows('timeline', '[data-kind=refresh][data-status="200"]'), 1);
  assert.equal(await rows('timeline', '[data-kind=api][data-status="401"]'), CALLS);
  assert.equal(await rows('timeline', '[data-kind=api][data-status="200"][data-attempt="2"]'), CALLS);
  assert.equal(await page.locator('svg[data-testid=timeline] path.arrow').count(), CALLS, 'one replay arrow per call');
  const events = await page.textContent('[data-testid=events]');
  assert.match(events, /refreshstart refresh started \(rejected\)/);
  assert.match(events, /refreshend refresh ok/);
  assert.equal(await page.getAttribute('[data-testid=token-expiry]', 'data-expired'), 'false');

  await page.locator('.timeline-card').screenshot({ path: path.join(RESULTS, 'demo-broker-timeline.png') });
  assert.deepEqual(pageErrors, []);
});

test('naive interceptor: the same burst after real expiry makes many refreshes, a revoked family, a dead session', async () => {
  // Short-lived tokens, strict rotation; switching the client logs out and in again (new family).
  await page.fill('[data-testid=ttl-input]', '2');
  await page.click('[data-testid=ttl-apply]');
  await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).access_ttl === 2);
  assert.equal(await page.isChecked('[data-testid=grace-toggle]'), false);
  assert.equal((await control('config')).grace, 0);
  const n = await runCount();
  await page.click('[data-testid=mode-naive]');
  await page.waitForFunction((prev) => {
    const app = document.querySelector('.app');
    return app.dataset.mode === 'naive' && Number(app.dataset.runCount) > prev && app.dataset.busy === 'false';
  }, n, { timeout: 30000 });
  assert.deepEqual(await panelStates(), ['ok', 'ok', 'ok', 'ok']);
  assert.equal(await page.textContent('[data-testid=session-state]'), 'valid');

  // Wait for the real expiry of the 2 s token (as the browser sees it; the server saw it first).
  await page.waitForSelector('[data-testid=token-expiry][data-expired=true]', { timeout: 30000 });

  const d = await serverDelta(() => clickAndWaitRun('[data-testid=burst]'));
  assert.ok(d.refresh_calls > 1, `several refreshes for one expiry (got ${d.refresh_calls})`);
  assert.ok(d.reuse_detections >= 1, 'a spent refresh token was presented again');
  assert.ok(d.revoked_families >= 1, 'the token family was revoked');

  assert.ok(await counter('refreshes') > 1);
  assert.equal(await counter('refreshes'), d.refresh_calls, 'the page recorded every refresh the server saw');
  assert.ok(await counter('failures') > 0);
  assert.ok(await rows('timeline', '[data-kind=refresh]') > 1);
  assert.equal(await page.textContent('[data-testid=session-state]'), 'expired');
  await page.waitForSelector('[data-testid=session-ended]');
  assert.ok((await panelStates()).some((s) => s !== 'ok'), 'some panels are left without data');

  // Both last bursts side by side: the picture for the README.
  assert.equal(await rows('compare-timeline-broker', '[data-kind=refresh]'), 1);
  assert.ok(await rows('compare-timeline-naive', '[data-kind=refresh]') > 1);
  await page.locator('.timeline-card').screenshot({ path: path.join(RESULTS, 'demo-naive-timeline.png') });
  const compare = page.locator('[data-testid=compare]');
  await compare.scrollIntoViewIfNeeded();
  await compare.screenshot({ path: path.join(RESULTS, 'timeline.png') });
  await page.screenshot({ path: path.join(RESULTS, 'demo-page.png'), fullPage: true });
  // The README's picture: refreshed on request (TB_UPDATE_DOCS=1), so a test run leaves the tree clean.
  if (process.env.TB_UPDATE_DOCS === '1' || !fs.existsSync(path.join(ROOT, 'docs/timeline.png'))) {
    fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
    fs.copyFileSync(path.join(RESULTS, 'timeline.png'), path.join(ROOT, 'docs/timeline.png'));
  }
  assert.deepEqual(pageErrors, []);
});

test('React example: login, four panels through createAuthFetch, one refresh after expiry', async () => {
  await control('reset', {});
  const react = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  react.on('pageerror', (e) => errors.push(String(e)));
  const panels = () => react.$$eval('[data-testid=panel]', (els) => els.map((e) => e.dataset.state));
  const allOk = (round) => react.waitForFunction((r) => {
    const els = [...document.querySelectorAll('[data-testid=panel]')];
    return els.length === 4 && els.every((e) => e.dataset.state === 'ok' && e.dataset.round === String(r));
  }, round, { timeout: 30000 });
  try {
    await react.goto(`${server.url}/react/`);
    const first = await serverDelta(async () => {
      await react.click('[data-testid=login-submit]');
      await allOk(0);
    });
    assert.equal(first.logins, 1);
    assert.equal(first.api_ok, 4);
    assert.equal(first.unauthorized_sent, 0);
    assert.deepEqual(await panels(), ['ok', 'ok', 'ok', 'ok']);

    await control('clock', { advance_ms: 61_000 }); // the token expires for the server
    const reload = await serverDelta(async () => {
      await react.click('[data-testid=reload]');
      await allOk(1);
    });
    assert.equal(reload.unauthorized_sent, 4);
    assert.equal(reload.refresh_calls, 1, 'one refresh for the four parallel fetches');
    assert.equal(reload.api_ok, 4);
    assert.equal(await react.textContent('[data-testid=session-state]'), 'valid');
    await react.screenshot({ path: path.join(RESULTS, 'demo-react.png') });
    assert.deepEqual(errors, []);
  } finally {
    await react.close();
  }
});
