// token-broker/react and token-broker/vue with the real frameworks in Chromium, against the
// reference server: the view follows the session through render, expiry, a burst and logout.
// The apps are bundled with esbuild (React and Vue inside, token-broker from the built package).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { ROOT, startSite } from './harness.mjs';

const T = { timeout: 90_000 };
const PKG = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');

// Each app shows `status|isAuthenticated|claims.sub|generation` and exposes window.app.
const APPS = {
  react: `
    import { createElement as h } from 'react';
    import { createRoot } from 'react-dom/client';
    import { TokenBrokerProvider, useSession, useTokenBroker } from 'token-broker/react';
    let renders = 0;
    function Status() {
      const s = useSession();
      const broker = useTokenBroker();
      renders++;
      return h('p', { id: 'status', 'data-broker': String(!!broker) },
        [s.status, s.isAuthenticated, s.claims?.sub ?? '-', s.generation].join('|'));
    }
    window.app = {
      mount(broker) { createRoot(document.getElementById('root')).render(h(TokenBrokerProvider, { broker }, h(Status))); },
      renders: () => renders,
    };`,
  vue: `
    import { createApp, h } from 'vue';
    import { tokenBroker, useSession, useTokenBroker } from 'token-broker/vue';
    let renders = 0;
    const Status = {
      setup() {
        const s = useSession();
        const broker = useTokenBroker();
        return () => { renders++; return h('p', { id: 'status', 'data-broker': String(!!broker) },
          [s.value.status, s.value.isAuthenticated, s.value.claims?.sub ?? '-', s.value.generation].join('|')); };
      },
    };
    window.app = {
      mount(broker) { createApp(Status).use(tokenBroker, broker).mount('#root'); },
      renders: () => renders,
    };`,
};

const PAGE = (name) => `<!doctype html><meta charset="utf-8"><div id="root"></div>
<script type="importmap">{ "imports": {
  "token-broker": "/pkg/index.js", "token-broker/fetch": "/pkg/fetch.js",
  "token-broker/react": "/pkg/react.js", "token-broker/vue": "/pkg/vue.js" } }</script>
<script type="module" src="/${name}.js"></script>
<script type="module">
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';
window.tb = { createTokenBroker, createAuthFetch };
window.ready = true;
</script>`;

let site, dir, server, browser, control;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-frameworks-'));
  fs.cpSync(PKG, path.join(dir, 'pkg'), { recursive: true, dereference: true });
  for (const [name, code] of Object.entries(APPS)) {
    // One bundle holding the app, the framework and the binding (one framework instance);
    // token-broker itself stays external and comes from the built package via the import map.
    await build({
      stdin: { contents: code, resolveDir: ROOT, loader: 'js' },
      bundle: true, format: 'esm', outfile: path.join(dir, `${name}.js`),
      external: ['token-broker', 'token-broker/fetch'],
      alias: { 'token-broker/react': path.join(dir, 'pkg/react.js'), 'token-broker/vue': path.join(dir, 'pkg/vue.js') },
      nodePaths: [path.join(ROOT, 'node_modules')],
      define: { 'process.env.NODE_ENV': '"production"', __VUE_OPTIONS_API__: 'true', __VUE_PROD_DEVTOOLS__: 'false', __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false' },
      logLevel: 'silent',
    });
    fs.writeFileSync(path.join(dir, `${name}.html`), PAGE(name));
  }
  site = await startSite(dir);
  ({ server, browser, control } = site);
});
after(async () => { await site?.close(); });

for (const name of Object.keys(APPS)) {
  test(`${name}: the view follows the session through render, expiry, a burst and logout`, T, async () => {
    await control('reset', { access_ttl: 60 });
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Framework warnings (e.g. "getSnapshot should be cached") are errors here; the 401s the
    // burst meets by design are the network's, not the page's.
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
    try {
      await page.goto(`${server.base}/${name}.html`);
      await page.waitForFunction(() => window.ready && window.app, null, { timeout: 15_000 });
      const text = () => page.locator('#status').textContent();
      const until = (pattern) => page.waitForFunction((p) => new RegExp(p).test(document.getElementById('status')?.textContent ?? ''), pattern.source, { timeout: 15_000 });

      // Render: anonymous, then logged in (claims decoded from the JWT).
      await page.evaluate(async () => {
        window.broker = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
        window.api = tb.createAuthFetch(window.broker);
        app.mount(window.broker);
      });
      await until(/^anonymous\|false\|-\|0$/);
      await page.evaluate(async () => {
        const res = await fetch('/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'demo', password: 'demo' }) });
        window.broker.setTokens(await res.json());
      });
      await until(/^valid\|true\|demo\|1$/);
      const stable = await page.evaluate(() => window.broker.getSession() === window.broker.getSession());
      assert.equal(stable, true, 'one snapshot object between changes');

      // Expiry: the server has expired the token; a burst of 10 calls → one refresh, one re-render to generation 2.
      await control('clock', { advance_ms: 120_000 });
      const before = await control('stats');
      const statuses = await page.evaluate(() => Promise.all(Array.from({ length: 10 }, () => window.api('/statistics').then((r) => r.status))));
      const after = await control('stats');
      assert.deepEqual(statuses, Array(10).fill(200));
      assert.equal(after.refresh_calls - before.refresh_calls, 1);
      await until(/^valid\|true\|demo\|2$/);

      // Logout: the view goes back to anonymous.
      await page.evaluate(() => window.broker.logout());
      await until(/^anonymous\|false\|-\|2$/);
      const renders = await page.evaluate(() => app.renders());
      assert.ok(renders < 20, `no render loop (${renders} renders)`);
      assert.deepEqual(errors, []);
      assert.match(await text(), /^anonymous/);
    } finally {
      await page.close();
    }
  });
}

test('react: server rendering uses the anonymous session and touches no broker state', () => {
  const code = `
    import { createElement as h } from 'react';
    import { renderToString } from 'react-dom/server';
    const { TokenBrokerProvider, useSession } = await import(${JSON.stringify(pathToFileURL(path.join(PKG, 'react.js')).href)});
    const broker = { subscribe() { throw new Error('no subscription on the server'); }, getSession() { throw new Error('no snapshot on the server'); } };
    function S() { const s = useSession(); return h('p', null, s.status + '|' + s.isAuthenticated); }
    console.log(renderToString(h(TokenBrokerProvider, { broker }, h(S))));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /<p>anonymous\|false<\/p>/);
});
