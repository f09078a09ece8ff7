// The `npm run demo` apps in real Chromium against the reference server, as a new user meets them,
// at 1280 px and at 390 px wide: the comparison on first load (token-broker vs the naive
// interceptor), "Try it yourself" (Vue + axios, token-broker/vue) and its DPoP switch (RFC 9449: the
// demo server runs with --dpop optional and nonces on), the two-tabs panel (crossTab), the
// WebSocket panel (token-broker/socket) and the React + fetch example (token-broker/react), with
// its DPoP switch too. Builds what it needs with scripts/demo.mjs (pack
// pkg/, install the tarball into the examples, vite build unless cached), so run
// `node scripts/build.mjs` first. Asserts counts and words only (server counters, the page's own
// counters, labels, no horizontal overflow), never timings.
// Saves screenshots under test-results/demo/; with TB_UPDATE_DOCS=1 it also refreshes docs/timeline.png.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ROOT, buildDemoSite, startDemoServer } from '../../scripts/demo.mjs';

const ROUNDS = 3; // burst ×3 = 12 parallel calls
const CALLS = ROUNDS * 4;
const SHOTS = path.join(ROOT, 'test-results/demo');
const WIDTHS = [1280, 390];

let server;
let browser;
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

async function newPage(width, context) {
  const page = await (context ?? browser).newPage({ viewport: { width, height: 900 } });
  page.on('pageerror', (e) => pageErrors.push(`${width}px ${page.url()}: ${e}`));
  return page;
}

/** The page is no wider than the window (nothing cut off, no sideways scrolling). */
async function assertNoOverflow(page, where) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  assert.ok(scroll <= inner, `${where}: the page is ${scroll} px wide in a ${inner} px window`);
  // Every element's right edge inside the window (a clipped toggle would not widen the page).
  const outside = await page.evaluate(() => [...document.querySelectorAll('button, input, h1, h2, .badge, a')]
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > innerWidth + 0.5)
    .map((e) => `${e.tagName.toLowerCase()} "${e.textContent.trim().slice(0, 30)}"`));
  assert.deepEqual(outside, [], `${where}: elements reach past the right edge`);
}

const text = (page, sel) => page.innerText(sel).then((t) => t.replace(/\s+/g, ' ').trim());
const attr = (page, sel, name) => page.getAttribute(sel, name);
const counter = async (page, name) => Number(await attr(page, `[data-testid=counter-${name}]`, 'data-value'));
const rows = (page, svg, filter = '') => page.locator(`svg[data-testid=${svg}] g[data-testid=tl-row]${filter}`).count();
const panelStates = (page) => page.$$eval('[data-testid=panel]', (els) => els.map((e) => e.dataset.state));
const shot = (locator, name) => locator.screenshot({ path: path.join(SHOTS, name) });

/** Clicks `selector` and waits until the section `scope` finished the run it started. */
async function clickAndWaitRun(page, selector, scope = '.playground') {
  const n = Number(await attr(page, scope, 'data-run-count'));
  await page.click(selector);
  await page.waitForFunction(([s, prev]) => {
    const el = document.querySelector(s);
    return Number(el.dataset.runCount) > prev && el.dataset.busy === 'false';
  }, [scope, n], { timeout: 30000 });
}

before(async () => {
  const { site } = buildDemoSite();
  server = await startDemoServer({ port: 0, staticDir: site, quiet: true });
  browser = await chromium.launch({
    executablePath: process.env.TB_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  fs.mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

test('the examples run the package just built, installed by name from its tarball', () => {
  for (const dir of ['examples/dashboard', 'examples/react']) {
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8'));
    assert.match(manifest.dependencies['token-broker'], /^file:.*token-broker-[\d.]+\.tgz$/, `${dir} depends on the tarball`);
    for (const f of ['package.json', 'index.js', 'axios.js', 'fetch.js', 'react.js', 'vue.js', 'socket.js', 'token_broker.js', 'token_broker_bg.wasm']) {
      assert.ok(fs.readFileSync(path.join(ROOT, dir, 'node_modules/token-broker', f)).equals(fs.readFileSync(path.join(ROOT, 'pkg', f))),
        `${dir}/node_modules/token-broker/${f} equals pkg/${f}`);
    }
  }
});

test('the builds are cached: the same sources and package build nothing the second time', () => {
  const again = buildDemoSite();
  assert.deepEqual(again.built, [], 'no vite build when neither the example sources, examples/shared nor the tarball changed');
  assert.ok(fs.existsSync(path.join(again.site, 'index.html')));
  assert.ok(fs.existsSync(path.join(again.site, 'react/index.html')));
});

for (const width of WIDTHS) {
  const W = `${width} px`;

  test(`${W}: first load, "Run the comparison": token-broker makes 1 refresh, the naive interceptor many, each with its own login and counters`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/`);
      await page.waitForSelector('[data-testid=run-comparison]');
      assert.equal(await text(page, '[data-testid=run-comparison]'), 'Run the comparison');
      await assertNoOverflow(page, `${W} first load`);
      await page.screenshot({ path: path.join(SHOTS, `first-load-${width}.png`) });

      const d = await serverDelta(async () => {
        await page.click('[data-testid=run-comparison]');
        await page.waitForSelector('[data-testid=comparison][data-runs="1"][data-running=false]', { timeout: 30000 });
      });
      const broker = '[data-testid=compare-broker]';
      const naive = '[data-testid=compare-naive]';
      assert.equal(await attr(page, broker, 'data-phase'), 'done');
      assert.equal(await attr(page, naive, 'data-phase'), 'done');

      // Each side: its own login, its own counters.
      assert.equal(d.logins, 2, 'a fresh login for each client');
      const brokerRefreshes = Number(await attr(page, broker, 'data-refreshes'));
      const naiveRefreshes = Number(await attr(page, naive, 'data-refreshes'));
      assert.equal(brokerRefreshes, 1, 'token-broker: one refresh');
      assert.ok(naiveRefreshes > 1, `naive interceptor: several refreshes (got ${naiveRefreshes})`);
      assert.equal(d.refresh_calls, brokerRefreshes + naiveRefreshes, 'the two columns split the server\'s refreshes between them');
      assert.equal(d.reuse_detections, 1, 'only the naive run presented a spent refresh token');

      // Words a new user reads.
      assert.equal(await text(page, `${broker} [data-testid=refresh-count]`), '1 refresh at the server');
      assert.equal(await text(page, `${naive} [data-testid=refresh-count]`), `${naiveRefreshes} refreshes at the server`);
      assert.match(await text(page, broker), new RegExp(`${CALLS}/${CALLS} calls answered`));
      assert.match(await text(page, broker), /12 replays/);
      assert.match(await text(page, naive), /1 reuse detection\b/);
      assert.match(await text(page, naive), /\bexpired\b.*session after/);
      const all = await text(page, '[data-testid=comparison]');
      assert.doesNotMatch(all, /\b1 (refreshes|replays|calls|401s)\b/, 'singular after 1');
      assert.doesNotMatch(all, /rejected\)/, 'no "refresh (rejected)"');

      // The two timelines.
      assert.equal(await rows(page, 'compare-timeline-broker', '[data-kind=refresh]'), 1);
      assert.equal(await rows(page, 'compare-timeline-broker', '[data-kind=api][data-status="401"]'), CALLS);
      assert.equal(await rows(page, 'compare-timeline-broker', '[data-kind=api][data-status="200"][data-attempt="2"]'), CALLS);
      assert.equal(await rows(page, 'compare-timeline-naive', '[data-kind=refresh]'), naiveRefreshes);
      assert.equal(await rows(page, 'compare-timeline-broker', '[data-waited=true]'), 0, 'nobody waited: every call went out at once');
      const label = await page.locator('svg[data-testid=compare-timeline-broker] [data-kind=refresh] .tl-label').textContent();
      assert.match(label, /^refresh \((after a 401|401)\)$/);

      await assertNoOverflow(page, `${W} after the comparison`);
      const card = page.locator('[data-testid=comparison]');
      await shot(card, `comparison-${width}.png`);
      if (width === 1280) {
        // The README's picture (the two columns and the legend): refreshed on request
        // (TB_UPDATE_DOCS=1), so a test run leaves the tree clean.
        await shot(page.locator('[data-testid=compare-result]'), 'timeline.png');
        if (process.env.TB_UPDATE_DOCS === '1' || !fs.existsSync(path.join(ROOT, 'docs/timeline.png'))) {
          fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
          fs.copyFileSync(path.join(SHOTS, 'timeline.png'), path.join(ROOT, 'docs/timeline.png'));
        }
      }
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: try it yourself: token-broker and then the naive interceptor, labels, token card and counters per mode`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/`);
      await page.click('[data-testid=mode-broker]');
      const login = await serverDelta(() => clickAndWaitRun(page, '[data-testid=login-submit]'));
      assert.equal(login.logins, 1);
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      assert.equal(await counter(page, 'requests'), 4);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '0 refreshes');

      // The grace-window switch reaches the server (and is left off: strict rotation).
      await page.click('details.more summary');
      await page.click('[data-testid=grace-toggle]');
      await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).grace === 10);
      await page.click('[data-testid=grace-toggle]');
      await page.waitForFunction(async () => (await (await fetch('/__control/config')).json()).grace === 0);

      // Expire now: expired for the server, not for the browser; the card says both.
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('[data-testid=token-server-view][data-expired=true]');
      assert.equal(await attr(page, '[data-testid=token-expiry]', 'data-expired'), 'false');
      assert.match(await text(page, '[data-testid=token-server-view]'), /expired \d+ s ago/);
      assert.match(await text(page, '[data-testid=token-expiry]'), /valid, expires in \d+ s/);

      await page.fill('[data-testid=burst-n]', String(ROUNDS));
      const d = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]'));
      assert.equal(d.unauthorized_sent, CALLS, 'each call sent once with the expired token');
      assert.equal(d.refresh_calls, 1, 'one refresh for the whole burst');
      assert.equal(d.reuse_detections, 0);
      assert.equal(d.api_ok, CALLS, 'every replay succeeded');

      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      assert.equal(await counter(page, 'requests'), 2 * CALLS);
      assert.equal(await counter(page, 'unauthorized'), CALLS);
      assert.equal(await counter(page, 'replays'), CALLS);
      assert.equal(await counter(page, 'failures'), 0);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh', 'singular after 1');
      assert.equal(await text(page, '[data-testid=counter-replays]'), `${CALLS} replays`);
      assert.equal(await text(page, '[data-testid=counter-failures]'), '0 failed calls');
      assert.equal(await rows(page, 'timeline', '[data-kind=refresh][data-status="200"]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="200"][data-attempt="2"]'), CALLS);
      assert.equal(await rows(page, 'timeline', '[data-waited=true]'), 0, 'no "waiting" drawn: every call was sent at once');
      assert.equal(await page.locator('svg[data-testid=timeline] path.tl-arrow').count(), CALLS, 'one replay arrow per call');
      assert.match(await page.locator('svg[data-testid=timeline] [data-kind=refresh] .tl-label').textContent(), /^refresh \((after a 401|401)\)$/);
      const events = await text(page, '[data-testid=events]');
      assert.match(events, /refreshstart refresh started: a request got 401/);
      assert.match(events, /refreshend refresh ok/);
      assert.doesNotMatch(events, /\(rejected\)/);
      // The login entry is one list item like the others (the login form's CSS does not reach it).
      assert.equal(await page.$eval('[data-testid=events] li.ev-login', (li) => getComputedStyle(li).display), 'list-item');
      assert.equal(await page.locator('[data-testid=events] li.login').count(), 0);
      assert.equal(await text(page, '[data-testid=server-last-refresh_calls]'), '1');
      assert.equal(await text(page, '[data-testid=server-session-refresh_calls]'), '1');
      assert.equal(await text(page, '[data-testid=server-last-unauthorized_sent]'), String(CALLS));
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      assert.equal(await attr(page, '[data-testid=token-server-view]', 'data-expired'), 'false', 'the new token is valid for the server');
      await assertNoOverflow(page, `${W} token-broker burst`);
      await shot(page.locator('#try'), `try-broker-${width}.png`);

      // The naive interceptor: its own login (the counters start again), the same expiry and burst.
      const n = Number(await attr(page, '.playground', 'data-run-count'));
      await page.click('[data-testid=mode-naive]');
      await page.waitForFunction((prev) => {
        const el = document.querySelector('.playground');
        return el.dataset.mode === 'naive' && Number(el.dataset.runCount) > prev && el.dataset.busy === 'false';
      }, n, { timeout: 30000 });
      assert.equal(await text(page, '[data-testid=server-session-refresh_calls]'), '0', 'the new mode\'s counters start at 0');
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('[data-testid=token-server-view][data-expired=true]');
      const dn = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]'));
      assert.ok(dn.refresh_calls > 1, `several refreshes for one expiry (got ${dn.refresh_calls})`);
      assert.ok(dn.reuse_detections >= 1, 'a spent refresh token was presented again');
      assert.ok(dn.revoked_families >= 1, 'the token family was revoked');
      assert.equal(await counter(page, 'refreshes'), dn.refresh_calls, 'the page recorded every refresh the server saw');
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), `${dn.refresh_calls} refreshes`);
      assert.equal(await text(page, '[data-testid=server-last-refresh_calls]'), String(dn.refresh_calls));
      assert.equal(await text(page, '[data-testid=server-session-refresh_calls]'), String(dn.refresh_calls), 'per mode: the broker\'s refresh is not added');
      assert.ok(await counter(page, 'failures') > 0);
      assert.equal(await rows(page, 'timeline', '[data-waited=true]'), 0, 'the naive client never holds a call');
      assert.equal(await text(page, '[data-testid=session-state]'), 'expired');
      await page.waitForSelector('[data-testid=session-ended]');
      assert.ok((await panelStates(page)).some((s) => s !== 'ok'), 'some panels are left without data');
      // The token card after the session ended: no "expires in" for a dead session.
      assert.equal(await attr(page, '[data-testid=token-card]', 'data-state'), 'ended');
      assert.doesNotMatch(await text(page, '[data-testid=token-card]'), /expires in/);
      assert.match(await text(page, '[data-testid=token-expiry]'), /none, session ended/);
      await assertNoOverflow(page, `${W} naive burst`);
      await shot(page.locator('#try'), `try-naive-${width}.png`);
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: the DPoP switch: one refresh for a burst after expiry, every proof valid and made with one key; a nonce rotation is answered by sending again, never by a refresh; switched off, bearer as before`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/`);
      assert.equal(await page.isChecked('[data-testid=dpop-toggle]'), false, 'the switch starts off');
      const bearerLogin = await serverDelta(() => clickAndWaitRun(page, '[data-testid=login-submit]'));
      assert.equal(bearerLogin.logins, 1);
      assert.equal(bearerLogin.dpop_proofs_accepted, 0, 'switched off, nothing carries a proof');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-scheme=Bearer]'), 4, 'each call badged Bearer');
      assert.equal(await page.locator('[data-testid=counter-nonces]').count(), 0, 'no nonce counter while DPoP is off');

      // Switched on: the page logs out, makes a broker with `dpop: true` and logs in again with a proof.
      const n = Number(await attr(page, '.playground', 'data-run-count'));
      const on = await serverDelta(async () => {
        await page.click('[data-testid=dpop-toggle]');
        await page.waitForFunction((prev) => {
          const el = document.querySelector('.playground');
          return el.dataset.dpop === 'true' && Number(el.dataset.runCount) > prev && el.dataset.busy === 'false';
        }, n, { timeout: 30000 });
      });
      assert.equal(on.logouts, 1, 'the bearer session was ended at the server');
      assert.equal(on.logins, 1, 'and a new one started');
      assert.equal(on.dpop_jkts, 1, 'with a key of its own');
      assert.equal(on.dpop_nonce_challenges_as, 1, 'the login met the token endpoint\'s nonce challenge and was sent once more');
      assert.equal(on.unauthorized_sent, 0);
      assert.equal(on.api_ok, 4);
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      assert.equal(await attr(page, '[data-testid=token-binding]', 'data-bound'), 'true', 'the token names its key (cnf.jkt)');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-scheme=Bearer]'), 0);
      assert.equal(await rows(page, 'timeline', '[data-kind=api]'), await rows(page, 'timeline', '[data-kind=api][data-scheme=DPoP]'), 'every call badged DPoP');
      assert.equal(await counter(page, 'nonces'), on.dpop_nonce_challenges_rs, 'the page saw each nonce challenge of the API');
      assert.match(await text(page, '[data-testid=events]'), /login: 400 use_dpop_nonce, sent once more/);

      // Expire now, burst: one refresh with a proof, every call replayed once.
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('[data-testid=token-server-view][data-expired=true]');
      await page.fill('[data-testid=burst-n]', String(ROUNDS));
      const d = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]'));
      assert.equal(d.refresh_calls, 1, 'one refresh for the whole burst');
      assert.equal(d.refresh_ok, 1);
      assert.equal(d.unauthorized_sent, CALLS, 'each call sent once with the expired token');
      assert.equal(d.api_ok, CALLS);
      assert.equal(d.reuse_detections, 0);
      assert.equal(d.dpop_bound_refresh_refused_no_proof + d.dpop_bound_refresh_refused_other_key, 0);
      assert.equal(d.dpop_proofs_rejected, d.dpop_nonce_challenges_rs + d.dpop_nonce_challenges_as, 'no proof refused but for a nonce');
      const withProof = await rows(page, 'timeline', '[data-scheme=DPoP]');
      const challenged = await rows(page, 'timeline', '[data-challenge=nonce]');
      assert.equal(d.dpop_proofs_accepted, withProof - challenged, 'the server accepted every proof the page sent but the nonce-challenged ones');
      assert.equal((await control('stats')).dpop_jkts, 1, 'one key since the reset: every proof of the session');
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh');
      assert.equal(await counter(page, 'unauthorized'), CALLS);
      assert.equal(await counter(page, 'replays'), CALLS);
      assert.equal(await counter(page, 'failures'), 0);
      assert.equal(await rows(page, 'timeline', '[data-kind=refresh][data-status="200"]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="200"][data-retry=replay]'), CALLS);
      assert.equal(await rows(page, 'timeline', '[data-kind=token][data-scheme=DPoP]'), 1 + d.dpop_nonce_challenges_as, 'the refresh\'s own request, with its proof');
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      assert.equal(await text(page, '[data-testid=server-last-refresh_calls]'), '1');
      assert.equal(await text(page, '[data-testid=server-dpop-refused]'), '0');

      // Rotate the nonces: the next calls meet use_dpop_nonce and are sent once more; no refresh.
      // (How many of the four parallel calls still carry the old nonce depends on timing: a proof
      // made after the first challenge came back already has the new one. At least one does.)
      await page.click('[data-testid=rotate-nonces]');
      await page.waitForSelector('[data-testid=events] li.ev-control:has-text("new DPoP nonces")');
      const r = await serverDelta(() => clickAndWaitRun(page, '[data-testid=reload]'));
      assert.ok(r.dpop_nonce_challenges_rs >= 1, 'the calls met the new nonce');
      assert.equal(r.dpop_proofs_rejected, r.dpop_nonce_challenges_rs, 'no proof refused but for the nonce');
      assert.equal(r.refresh_calls, 0, 'a nonce challenge is no reason to refresh');
      assert.equal(r.unauthorized_sent, 0);
      assert.equal(r.api_ok, 4);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="401"][data-challenge=nonce]'), r.dpop_nonce_challenges_rs, 'each challenge drawn');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="200"][data-retry=nonce]'), r.dpop_nonce_challenges_rs, 'each sent once more and answered');
      assert.equal(await page.locator('svg[data-testid=timeline] path.tl-arrow.nonce').count(), r.dpop_nonce_challenges_rs, 'an arrow from each challenge to its retry');
      assert.equal(await counter(page, 'nonces'), r.dpop_nonce_challenges_rs);
      assert.equal(await counter(page, 'refreshes'), 0);
      assert.equal(await counter(page, 'unauthorized'), 0, 'a nonce challenge is not counted as a 401 of the token');
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);

      // Rotate, expire and burst: challenges at the API and at the token endpoint, still ONE refresh.
      await page.click('[data-testid=rotate-nonces]');
      await page.locator('[data-testid=events] li.ev-control', { hasText: 'new DPoP nonces' }).nth(1).waitFor();
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('[data-testid=token-server-view][data-expired=true]');
      // Each call: the old nonce (401 use_dpop_nonce), once more with the new one (401: the token
      // expired), one refresh for all (400 use_dpop_nonce at the token endpoint, once more: 200),
      // the replay (200). A call whose retry goes out after the refresh ended carries the new
      // token at once (200, nothing to replay): timing decides how many, the counts must agree.
      const b = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]'));
      const rs = b.dpop_nonce_challenges_rs;
      assert.equal(b.refresh_calls, 1, 'still one refresh');
      assert.ok(rs >= 1, 'the calls met the API\'s new nonce');
      assert.equal(b.dpop_nonce_challenges_as, 1, 'the refresh met the token endpoint\'s new nonce');
      assert.ok(b.unauthorized_sent >= 1 && b.unauthorized_sent <= CALLS);
      assert.equal(b.api_ok, CALLS);
      assert.equal(b.dpop_proofs_rejected, rs + 1, 'no proof refused but for the nonce');
      assert.equal(b.dpop_jkts, 0, 'no new key');
      assert.equal(await rows(page, 'timeline', '[data-kind=refresh]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=token][data-status="400"][data-challenge=nonce]'), 1, 'the token endpoint\'s challenge, drawn');
      assert.equal(await rows(page, 'timeline', '[data-kind=token][data-status="200"][data-retry=nonce]'), 1, 'and the refresh sent once more');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-challenge=nonce]'), rs);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-retry=nonce]'), rs, 'each challenged call sent once more');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="401"]:not([data-challenge=nonce])'), b.unauthorized_sent);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-retry=replay][data-status="200"]'), b.unauthorized_sent, 'each 401 of the token replayed once');
      assert.equal(await page.locator('svg[data-testid=timeline] path.tl-arrow.nonce').count(), rs + 1);
      assert.equal(await counter(page, 'nonces'), rs + 1);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh');
      assert.equal(await counter(page, 'unauthorized'), b.unauthorized_sent);
      assert.equal(await counter(page, 'replays'), b.unauthorized_sent);
      assert.equal(await counter(page, 'failures'), 0);
      assert.equal(await text(page, '[data-testid=server-last-dpop_nonce_challenges_as]'), '1');
      assert.equal(await text(page, '[data-testid=server-last-dpop_nonce_challenges_rs]'), String(rs));
      const sent = CALLS + rs + b.unauthorized_sent;
      assert.match(await text(page, '[data-testid=dpop-summary]'),
        new RegExp(`^${sent} of ${sent} API requests sent as DPoP .*: ${rs} at the API, 1 at the token endpoint; 1 refresh\\.$`));
      assert.match(await text(page, '.playground .tl-legend'), /use_dpop_nonce: sent again with the new nonce/);
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      await assertNoOverflow(page, `${W} DPoP burst`);
      await shot(page.locator('#try'), `try-dpop-${width}.png`);

      // Switched off again: a bearer broker, a bearer login, and the burst as before.
      const m = Number(await attr(page, '.playground', 'data-run-count'));
      const toBearer = await serverDelta(async () => {
        await page.click('[data-testid=dpop-toggle]');
        await page.waitForFunction((prev) => {
          const el = document.querySelector('.playground');
          return el.dataset.dpop === 'false' && Number(el.dataset.runCount) > prev && el.dataset.busy === 'false';
        }, m, { timeout: 30000 });
      });
      assert.equal(toBearer.logouts, 1, 'the DPoP session was ended at the server');
      assert.equal(toBearer.logins, 1);
      assert.equal(toBearer.dpop_proofs_accepted + toBearer.dpop_proofs_rejected, 0, 'the bearer login and calls carry no proof');
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      assert.equal(await page.locator('[data-testid=rotate-nonces]').count(), 0);
      assert.equal(await page.locator('[data-testid=token-binding]').count(), 0);
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('[data-testid=token-server-view][data-expired=true]');
      const off = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]'));
      assert.equal(off.refresh_calls, 1);
      assert.equal(off.unauthorized_sent, CALLS);
      assert.equal(off.api_ok, CALLS);
      assert.equal(off.dpop_proofs_accepted + off.dpop_proofs_rejected, 0, 'no proof sent');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-scheme=Bearer]'), 2 * CALLS);
      assert.equal(await rows(page, 'timeline', '[data-scheme=DPoP]'), 0);
      assert.equal(await rows(page, 'timeline', '[data-kind=token]'), 0);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh');
      assert.equal(await counter(page, 'replays'), CALLS);
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: two tabs with a cross-tab broker: a burst in both makes one refresh in total`, async () => {
    await control('reset', {});
    const context = await browser.newContext({ viewport: { width, height: 900 } });
    try {
      const page = await newPage(width, context);
      await page.goto(`${server.url}/#two-tabs`);
      await page.waitForSelector('[data-testid=two-tabs-open]');
      const [second] = await Promise.all([context.waitForEvent('page'), page.click('[data-testid=two-tabs-open]')]);
      second.on('pageerror', (e) => pageErrors.push(`${width}px second tab: ${e}`));
      await second.waitForSelector('[data-testid=second-tab][data-ready=true][data-status=valid]', { timeout: 30000 });
      await page.waitForSelector('[data-testid=two-tabs][data-tabs="2"]', { timeout: 30000 });
      assert.equal(await text(page, '[data-testid=two-tabs-count]'), '2 tabs open');

      const d = await serverDelta(async () => {
        await page.click('[data-testid=two-tabs-burst]');
        await page.waitForSelector('[data-testid=two-tabs-refreshes]', { timeout: 30000 });
        await page.waitForSelector('[data-testid=two-tabs][data-busy=false]', { timeout: 30000 });
      });
      assert.equal(d.unauthorized_sent, 8, 'four calls in each tab, all with the expired token');
      assert.equal(d.refresh_calls, 1, 'one refresh for both tabs');
      assert.equal(d.reuse_detections, 0);
      assert.equal(d.api_ok, 8, 'every call of both tabs was answered');
      assert.equal(await attr(page, '[data-testid=two-tabs-refreshes]', 'data-value'), '1');
      assert.match(await text(page, '[data-testid=two-tabs-refreshes]'), /^1 refresh at the server for 2 tabs and 8 × 401\.$/);
      const sent = await page.$$eval('[data-testid=two-tabs-row]', (trs) => trs.map((tr) => [tr.dataset.role, tr.lastElementChild.textContent.trim()]));
      assert.equal(sent.length, 2);
      assert.deepEqual(sent.map(([, n]) => Number(n)).sort(), [0, 1], 'exactly one tab sent the refresh');
      // The second tab shows the same outcome.
      await second.waitForSelector('[data-testid=two-tabs-refreshes][data-value="1"]', { timeout: 30000 });
      await assertNoOverflow(page, `${W} two tabs`);
      await assertNoOverflow(second, `${W} second tab`);
      await shot(page.locator('#two-tabs'), `two-tabs-${width}.png`);
      await second.screenshot({ path: path.join(SHOTS, `second-tab-${width}.png`), fullPage: true });
    } finally {
      await context.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: a WebSocket (token-broker/socket) and four calls meet one expired token: one refresh, the socket comes back`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/#live`);
      const login = await serverDelta(async () => {
        await page.click('[data-testid=ws-connect]');
        await page.waitForSelector('[data-testid=ws][data-phase=open][data-sockets="1"]', { timeout: 30000 });
      });
      assert.equal(login.logins, 1);
      assert.equal(login.ws_connections, 1);
      await page.waitForFunction(() => /message/.test(document.querySelector('[data-testid=ws-status]').textContent));

      const d = await serverDelta(async () => {
        await page.click('[data-testid=ws-expire]');
        await page.waitForSelector('[data-testid=ws][data-run-count="1"][data-busy=false]', { timeout: 30000 });
      });
      assert.equal(d.refresh_calls, 1, 'one refresh for the socket and the four calls');
      assert.equal(d.ws_expired_closes, 1, 'the server closed the socket: token expired');
      assert.equal(d.ws_connections, 1, 'the socket reconnected once');
      assert.equal(d.unauthorized_sent, 4);
      assert.equal(d.api_ok, 4);
      assert.equal(await attr(page, '[data-testid=ws]', 'data-phase'), 'open');
      assert.equal(await attr(page, '[data-testid=ws]', 'data-sockets'), '2');
      assert.equal(await attr(page, '[data-testid=ws-refreshes]', 'data-value'), '1');
      assert.match(await text(page, '[data-testid=ws-refreshes]'), /^1 refresh at the server for the socket and 4 calls: the server closed 1 socket \(token expired\), 4 calls answered/);
      assert.match(await text(page, '[data-testid=ws-status]'), /socket open · socket #2, token generation 2/);
      assert.equal(await rows(page, 'ws-timeline', '[data-kind=socket]'), 2);
      assert.equal(await rows(page, 'ws-timeline', '[data-kind=socket][data-status="4001"]'), 1);
      assert.equal(await rows(page, 'ws-timeline', '[data-kind=refresh]'), 1);
      await assertNoOverflow(page, `${W} WebSocket`);
      await shot(page.locator('#live'), `websocket-${width}.png`);
      await page.click('[data-testid=ws-connect]'); // disconnect
      await page.waitForSelector('[data-testid=ws][data-phase=idle]');
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: React example (token-broker/react, fetch): login, Expire now, burst: one refresh, the same timeline`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/react/`);
      await assertNoOverflow(page, `${W} React login`);
      const first = await serverDelta(() => clickAndWaitRun(page, '[data-testid=login-submit]', '.app'));
      assert.equal(first.logins, 1);
      assert.equal(first.api_ok, 4);
      assert.equal(first.unauthorized_sent, 0);
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');

      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('p.hint:has-text("expired for the server")');
      await page.fill('[data-testid=burst-n]', String(ROUNDS));
      const d = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]', '.app'));
      assert.equal(d.unauthorized_sent, CALLS);
      assert.equal(d.refresh_calls, 1, 'one refresh for the twelve parallel fetches');
      assert.equal(d.api_ok, CALLS);
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh');
      assert.equal(await counter(page, 'replays'), CALLS);
      assert.equal(await attr(page, '[data-testid=server-refreshes]', 'data-value'), '1');
      assert.equal(await rows(page, 'timeline', '[data-kind=refresh]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-status="200"][data-attempt="2"]'), CALLS);
      assert.equal(await rows(page, 'timeline', '[data-waited=true]'), 0);
      assert.match(await page.locator('svg[data-testid=timeline] [data-kind=refresh] .tl-label').textContent(), /^refresh \((after a 401|401)\)$/);
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      await assertNoOverflow(page, `${W} React burst`);
      await page.screenshot({ path: path.join(SHOTS, `react-${width}.png`), fullPage: true });

      await page.click('[data-testid=logout]');
      await page.waitForSelector('[data-testid=login-submit]');
      assert.equal(await text(page, '[data-testid=session-state]'), 'anonymous');
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });

  test(`${W}: React example with its DPoP switch: a proof-bound login, rotated nonces and an expired token: nonce retries, one refresh`, async () => {
    await control('reset', {});
    const page = await newPage(width);
    try {
      await page.goto(`${server.url}/react/`);
      await page.click('[data-testid=dpop-toggle]');
      await page.waitForSelector('.app[data-dpop=true][data-busy=false]');
      const first = await serverDelta(() => clickAndWaitRun(page, '[data-testid=login-submit]', '.app'));
      assert.equal(first.logins, 1);
      assert.equal(first.dpop_jkts, 1);
      assert.equal(first.api_ok, 4);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-scheme=Bearer]'), 0);
      assert.ok(await rows(page, 'timeline', '[data-kind=api][data-scheme=DPoP]') >= 4);

      await page.click('[data-testid=rotate-nonces]');
      await page.waitForSelector('p.hint:has-text("New DPoP nonces")');
      await page.click('[data-testid=expire-now]');
      await page.waitForSelector('p.hint:has-text("expired for the server")');
      await page.fill('[data-testid=burst-n]', String(ROUNDS));
      const d = await serverDelta(() => clickAndWaitRun(page, '[data-testid=burst]', '.app'));
      const rs = d.dpop_nonce_challenges_rs; // timing decides how many (see the dashboard's DPoP test)
      assert.equal(d.refresh_calls, 1, 'one refresh');
      assert.ok(rs >= 1);
      assert.equal(d.dpop_nonce_challenges_as, 1);
      assert.equal(d.dpop_proofs_rejected, rs + 1, 'no proof refused but for the nonce');
      assert.equal(d.api_ok, CALLS);
      assert.equal((await control('stats')).dpop_jkts, 1, 'one key');
      assert.equal(await rows(page, 'timeline', '[data-kind=refresh]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=token][data-challenge=nonce]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=token][data-retry=nonce][data-status="200"]'), 1);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-retry=nonce]'), rs);
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-retry=replay][data-status="200"]'), d.unauthorized_sent);
      assert.equal(await counter(page, 'nonces'), rs + 1);
      assert.equal(await text(page, '[data-testid=counter-refreshes]'), '1 refresh');
      assert.equal(await attr(page, '[data-testid=server-dpop]', 'data-challenges'), String(rs + 1));
      assert.deepEqual(await panelStates(page), ['ok', 'ok', 'ok', 'ok']);
      await assertNoOverflow(page, `${W} React DPoP burst`);
      await page.screenshot({ path: path.join(SHOTS, `react-dpop-${width}.png`), fullPage: true });

      // Off again: a bearer broker, the same user logged in again.
      const n = Number(await attr(page, '.app', 'data-run-count'));
      await page.click('[data-testid=dpop-toggle]');
      await page.waitForFunction((prev) => {
        const el = document.querySelector('.app');
        return el.dataset.dpop === 'false' && Number(el.dataset.runCount) > prev && el.dataset.busy === 'false';
      }, n, { timeout: 30000 });
      assert.equal(await text(page, '[data-testid=session-state]'), 'valid');
      assert.equal(await rows(page, 'timeline', '[data-kind=api][data-scheme=Bearer]'), 4);
      assert.equal(await rows(page, 'timeline', '[data-scheme=DPoP]'), 0);
    } finally {
      await page.close();
    }
    assert.deepEqual(pageErrors, []);
  });
}
