// Shared harness of the browser tests: the reference token server (a subprocess), a served test page
// that loads the built package by name (import map), and one headless Chromium per test file.
//
// Environment overrides (for development only; `npm test` uses the defaults):
//   TB_PKG_DIR     folder served as /pkg (default: <repo>/pkg, the built package)
//   TB_SERVER_CMD  command that starts the server (default: cargo run -q --release -p token-server --)
//   TB_CHROMIUM    browser executable (default: /usr/bin/chromium)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startTokenServer } from '../../scripts/token-server.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HERE = path.join(ROOT, 'tests/browser');

/** A temp folder with index.html, pkg/ (copy of the built package) and axios.js. */
function staticDir() {
  const pkg = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');
  for (const f of ['index.js', 'axios.js', 'fetch.js']) {
    if (!fs.existsSync(path.join(pkg, f))) {
      throw new Error(`${path.join(pkg, f)} is missing: build the package first (node scripts/build.mjs)`);
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-browser-'));
  fs.copyFileSync(path.join(HERE, 'page/index.html'), path.join(dir, 'index.html'));
  fs.cpSync(pkg, path.join(dir, 'pkg'), { recursive: true, dereference: true });
  fs.copyFileSync(path.join(ROOT, 'node_modules/axios/dist/esm/axios.min.js'), path.join(dir, 'axios.js'));
  return dir;
}

/**
 * Headless Chromium from apt, with the flags that keep it quiet on this closed network
 * (TB_CHROMIUM overrides the executable). Every browser test file launches it this way.
 */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.TB_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

const startServer = (dir) => startTokenServer(['--port', '0', '--foreign-port', '0', '--test-controls',
  '--static', dir, '--access-ttl', '2']);

/** `control(name, body?)`: the reference server's /__control API (GET without a body, else POST). */
export function controller(base) {
  return async function control(name, body) {
    const res = await fetch(`${base}/__control/${name}`, body === undefined
      ? {}
      : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`control ${name}: ${res.status} ${await res.text()}`);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  };
}

/**
 * The reference server serving `dir` (60 s tokens) and a Chromium, for test files that build
 * their own pages; `close()` stops both and removes `dir`.
 */
export async function startSite(dir) {
  const server = await startTokenServer(['--port', '0', '--foreign-port', '0', '--test-controls', '--static', dir, '--access-ttl', '60']);
  const browser = await launchChromium().catch(async (e) => { await server.stop(); throw e; });
  return {
    server,
    browser,
    control: controller(server.base),
    async close() {
      await browser.close().catch(() => {});
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts server + browser + page. Call in `before()`; `close()` in `after()`.
 * @returns {Promise<Harness>}
 */
export async function startHarness() {
  const dir = staticDir();
  const server = await startServer(dir);
  const browser = await launchChromium();
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));

  const control = controller(server.base);

  const h = {
    base: server.base,
    foreign: server.foreign,
    browser,
    page,
    pageErrors,
    control,
    stats: () => control('stats'),
    /** The server's request log (entries after id `since`, if given). */
    log: (since) => control(since === undefined ? 'log' : `log?since=${since}`),
    /**
     * Resets the server and reloads the page (a new broker per test). `host: 'localhost'` loads the
     * page from another origin than `h.base` (127.0.0.1), so calls to `h.base` are cross-origin.
     */
    async fresh({ host } = {}) {
      await control('reset', {});
      const url = new URL('/index.html', server.base);
      if (host) url.hostname = host;
      await page.goto(url.href);
      await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15000 });
    },
    /** Runs `fn(arg)` in the page. */
    run: (fn, arg) => page.evaluate(fn, arg),
    /** Stats difference (after − before) around `fn`; resolves with { delta, result }. */
    async measure(fn) {
      const before = await control('stats');
      const result = await fn();
      const after = await control('stats');
      const delta = {};
      for (const k of Object.keys(after)) if (typeof after[k] === 'number') delta[k] = after[k] - (before[k] ?? 0);
      return { delta, result };
    },
    async close() {
      await browser.close().catch(() => {});
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return h;
}
