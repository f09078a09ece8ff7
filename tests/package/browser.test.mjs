// The package from the outside, in Chromium (issue #11, traps 1 and 2 in a page): the installed
// package is served as files by the reference server (--static) and imported by name through the
// import map the package README shows, with no bundler. A .wasm answered by an HTML page or a 404
// must reject createTokenBroker with LOAD_FAILED, leave no uncaught error or unhandled rejection in the page,
// and the next call must succeed once the file is served again.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { launchChromium } from '../browser/harness.mjs';

import { startTokenServer } from '../../scripts/token-server.mjs';
import { makeProject, readmeExamples } from './project.mjs';

const WASM_ROUTE = '**/token_broker_bg.wasm';
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>token-broker from the tarball</title>
IMPORT_MAP
<script>
  window.unhandled = [];
  addEventListener('unhandledrejection', (e) => window.unhandled.push(String(e.reason?.message ?? e.reason)));
  addEventListener('error', (e) => window.unhandled.push(String(e.message)));
</script>
<script type="module">
  import * as tb from 'token-broker';
  import { attachAxios } from 'token-broker/axios';
  import { createAuthFetch } from 'token-broker/fetch';
  window.tb = { ...tb, attachAxios, createAuthFetch };
  window.tbReady = true;
</script>
`;

let p;
let server;
let browser;
let page;
let pageErrors;

before(async () => {
  p = makeProject('browser');
  // The import map is the package README's own (so the README's advice is what is tested).
  const examples = readmeExamples(fs.readFileSync(p.file('node_modules/token-broker/README.md'), 'utf8'));
  assert.ok(examples.has('importmap'), 'the package README has no example marked importmap');
  p.write('index.html', PAGE.replace('IMPORT_MAP', examples.get('importmap').trim()));
  server = await startTokenServer(['--port', '0', '--foreign-port', '0', '--static', p.dir]);
  browser = await launchChromium();
});
after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
  p?.remove();
});

/** A new page (no HTTP cache shared with the last one); `route` fulfils the .wasm request before the import. */
async function open(route) {
  const context = await browser.newContext();
  page = await context.newPage();
  pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  if (route) await page.route(WASM_ROUTE, route);
  await page.goto(`${server.base}/index.html`);
  await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15_000 })
    .catch((e) => { throw new Error(`the page did not load the package: ${e.message}; page errors: ${pageErrors}`); });
}
beforeEach(async () => { await page?.context().close().catch(() => {}); });

/** createTokenBroker in the page: { ok, state } or the error's { name, code, message, isTBE }. */
const create = () => page.evaluate(async () => {
  try {
    const b = await window.tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
    const state = b.state;
    b.dispose();
    return { ok: true, state };
  } catch (e) {
    return { ok: false, name: e?.name, code: e?.code, message: String(e?.message ?? e), isTBE: window.tb.isTokenBrokerError(e) };
  }
});

/** Lets late rejections surface (a task turn and a little more) before checking the page for them. */
async function assertNothingUncaught() {
  await page.evaluate(() => new Promise((r) => setTimeout(r, 100)));
  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  assert.deepEqual(await page.evaluate(() => window.unhandled), [], 'unhandled rejections in the page');
}

describe('loading in Chromium (traps 1, 2)', () => {
  test('the package works from the tarball with no bundler and no init call', async () => {
    await open();
    assert.deepEqual(await create(), { ok: true, state: 'anonymous' });
    await assertNothingUncaught();
  });

  test('a .wasm served as an HTML page: LOAD_FAILED naming the URL and the HTML; no uncaught error; the next call succeeds', async () => {
    await open((route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><html><body><div id="app"></div></body></html>' }));
    const failed = await create();
    assert.equal(failed.ok, false);
    assert.equal(failed.code, 'LOAD_FAILED', failed.message);
    assert.equal(failed.name, 'TokenBrokerError');
    assert.ok(failed.isTBE);
    assert.ok(failed.message.includes(`${server.base}/node_modules/token-broker/token_broker_bg.wasm`), failed.message);
    assert.match(failed.message, /HTML/);
    assert.match(failed.message, /application\/wasm/);
    await assertNothingUncaught();

    await page.unroute(WASM_ROUTE);
    assert.deepEqual(await create(), { ok: true, state: 'anonymous' });
    await assertNothingUncaught();
  });

  test('a .wasm answered 404: LOAD_FAILED naming the URL and the status; the next call succeeds', async () => {
    await open((route) => route.fulfill({ status: 404, contentType: 'text/plain', body: 'Not Found' }));
    const failed = await create();
    assert.equal(failed.code, 'LOAD_FAILED', failed.message);
    assert.ok(failed.message.includes('/node_modules/token-broker/token_broker_bg.wasm'), failed.message);
    assert.match(failed.message, /404/);
    await assertNothingUncaught();

    await page.unroute(WASM_ROUTE);
    assert.deepEqual(await create(), { ok: true, state: 'anonymous' });
    await assertNothingUncaught();
  });

  test('initTokenBroker(url) loads from an explicit URL; an unreachable one is LOAD_FAILED and is retried', async () => {
    await open();
    const bad = await page.evaluate(() => window.tb.initTokenBroker('/nowhere/token_broker_bg.wasm')
      .then(() => ({ ok: true }), (e) => ({ ok: false, code: e.code, message: e.message })));
    assert.equal(bad.code, 'LOAD_FAILED');
    assert.ok(bad.message.includes('/nowhere/token_broker_bg.wasm'), bad.message);
    const good = await page.evaluate(async () => {
      await window.tb.initTokenBroker('/node_modules/token-broker/token_broker_bg.wasm');
      const b = await window.tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
      const state = b.state;
      b.dispose();
      return state;
    });
    assert.equal(good, 'anonymous');
    await assertNothingUncaught();
  });

  test('trap 5 in a page: createAuthFetch given the promise throws a TypeError at once', async () => {
    await open();
    const message = await page.evaluate(async () => {
      const pending = window.tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
      try {
        window.tb.createAuthFetch(pending);
        return 'accepted';
      } catch (e) {
        return `${e.name}: ${e.message}`;
      } finally {
        (await pending).dispose();
      }
    });
    assert.match(message, /^TypeError: createAuthFetch: pass the broker, not the promise/);
    await assertNothingUncaught();
  });
});
