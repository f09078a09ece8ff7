// Packaging tests: the built package, packed with `npm pack` and installed from the tarball into
// three consumer apps (tests/consumers/: Vite 8 + React with token-broker/fetch, Vite 7 + Vue with
// token-broker/axios, webpack 5 with token-broker/axios). Each app imports the package by name,
// with no wasm plugin and no manual init(). Each is built for production, served by the reference
// server (--static dist/) and run in headless Chromium: the dashboard of the original question
// (log in, access token expires, four parallel calls) must give 4 successes and exactly 1 refresh.
// Plus: importing the package in plain Node (server-side rendering) must not throw.
//
// The apps' third-party dependencies come from their committed package-lock.json (`npm ci`, run
// only when node_modules is missing or older than the lockfile); token-broker itself is always
// reinstalled from a fresh tarball of pkg/ with `npm install --no-save`. TB_VERBOSE=1 logs each
// step; TB_PKG_DIR, TB_SERVER_CMD and TB_CHROMIUM work as in harness.mjs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { launchChromium } from './harness.mjs';
import { startTokenServer } from '../../scripts/token-server.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PKG = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');
const CONSUMERS = path.join(ROOT, 'tests/consumers');
const APPS = [
  { name: 'vite-react', entry: 'token-broker/fetch' },
  { name: 'vite-vue', entry: 'token-broker/axios' },
  { name: 'webpack', entry: 'token-broker/axios' },
];
const ENDPOINTS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const ACCESS_TTL = 600; // long: the broker's proactive refresh (at TTL − 30 s) never fires during a test

/** Runs a command; throws with its output when it fails. */
function run(cmd, args, cwd, timeout = 300_000) {
  const t0 = Date.now();
  if (process.env.TB_VERBOSE) console.error(`[consumers] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, CI: 'true' } });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed (${r.status ?? r.signal ?? r.error}):\n`
      + `${r.stdout?.slice(-3000)}\n${r.stderr?.slice(-3000)}`);
  }
  if (process.env.TB_VERBOSE) console.error(`[consumers]   ${Date.now() - t0} ms`);
  return r.stdout;
}

const npmFlags = ['--no-audit', '--no-fund', '--loglevel=error'];

/** `npm ci` when node_modules is missing or stale, then token-broker from `tarball`. */
function install(dir, tarball) {
  const marker = path.join(dir, 'node_modules/.package-lock.json');
  const lock = path.join(dir, 'package-lock.json');
  if (!fs.existsSync(marker) || fs.statSync(lock).mtimeMs > fs.statSync(marker).mtimeMs) {
    run('npm', ['ci', ...npmFlags], dir);
  }
  fs.rmSync(path.join(dir, 'node_modules/token-broker'), { recursive: true, force: true });
  run('npm', ['install', '--no-save', ...npmFlags, tarball], dir);
}

/** Starts the reference server serving `dir`; resolves with { base, stop }. */
const startServer = (dir) => startTokenServer(['--port', '0', '--foreign-port', '0', '--test-controls',
  '--static', dir, '--access-ttl', String(ACCESS_TTL), '--grace', '0']);

async function control(base, name, body) {
  const res = await fetch(`${base}/__control/${name}`, body === undefined ? {}
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`control ${name}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Fails with the app's own error text when it wrote `#error`. */
async function noError(page, what) {
  const el = await page.$('#error');
  if (el) assert.fail(`${what}: ${await el.textContent()}`);
}

/** Every file under `dir`, relative. */
function filesUnder(dir) {
  return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile());
}

describe('consumer apps built from the packed tarball', () => {
  let tmp;
  let tarball;
  let browser;
  let packedWasm; // the .wasm inside the tarball (pkg/ may be rebuilt while this file runs)
  const wasm = () => packedWasm;

  before(async () => {
    for (const f of ['package.json', 'index.js', 'token_broker.js', 'token_broker_bg.wasm', 'axios.js', 'fetch.js']) {
      if (!fs.existsSync(path.join(PKG, f))) {
        throw new Error(`${path.join(PKG, f)} is missing: build the package first (node scripts/build.mjs)`);
      }
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-consumers-'));
    const [packed] = JSON.parse(run('npm', ['pack', PKG, '--pack-destination', tmp, '--json', '--loglevel=error'], ROOT));
    tarball = path.join(tmp, packed.filename);
    assert.ok(fs.existsSync(tarball), `npm pack wrote no ${tarball}`);
    run('tar', ['-xzf', tarball, '-C', tmp], ROOT);
    packedWasm = fs.readFileSync(path.join(tmp, 'package/token_broker_bg.wasm'));
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const app of APPS) {
    test(`${app.name} (${app.entry}): builds with no plugin, runs the dashboard: 4 calls, 1 refresh`, { timeout: 300_000 }, async () => {
      const dir = path.join(CONSUMERS, app.name);
      const lockBefore = fs.readFileSync(path.join(dir, 'package-lock.json'), 'utf8');
      install(dir, tarball);
      const installed = path.join(dir, 'node_modules/token-broker');
      assert.ok(wasm().equals(fs.readFileSync(path.join(installed, 'token_broker_bg.wasm'))),
        'the installed token-broker is not the one just packed');
      assert.equal(fs.readFileSync(path.join(dir, 'package-lock.json'), 'utf8'), lockBefore, 'the install changed package-lock.json');

      fs.rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
      run('npm', ['run', 'build', '--silent'], dir);
      const dist = path.join(dir, 'dist');
      const files = filesUnder(dist);
      assert.ok(files.includes('index.html'), `no dist/index.html in ${files}`);
      const emitted = files.filter((f) => f.endsWith('.wasm'));
      assert.equal(emitted.length, 1, `expected one .wasm in dist/, got ${emitted}`);
      assert.ok(wasm().equals(fs.readFileSync(path.join(dist, emitted[0]))), 'the emitted .wasm is not the package\'s');
      const bundle = files.filter((f) => f.endsWith('.js')).map((f) => fs.readFileSync(path.join(dist, f), 'utf8')).join('\n');
      assert.ok(bundle.includes(path.basename(emitted[0])), 'no bundle refers to the emitted .wasm by its file name');

      const server = await startServer(dist);
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        const problems = [];
        page.on('pageerror', (e) => problems.push(`pageerror: ${e}`));
        page.on('console', (m) => {
          // Chromium logs every non-2xx answer (the four 401s, the missing favicon): not the app's.
          const network = m.text().startsWith('Failed to load resource');
          if ((m.type() === 'error' || m.type() === 'warning') && !network) problems.push(`${m.type()}: ${m.text()}`);
        });
        const wasmLoads = [];
        page.on('response', (r) => { if (new URL(r.url()).pathname.endsWith('.wasm')) wasmLoads.push({ url: r.url(), status: r.status(), type: r.headers()['content-type'] }); });

        if (process.env.TB_VERBOSE) console.error(`[consumers] ${app.name}: open`, new Date().toISOString());
        await page.goto(`${server.base}/`);
        await page.waitForSelector('#ready, #error', { timeout: 20_000 });
        await noError(page, 'the app failed to start');
        assert.deepEqual(wasmLoads.map((w) => [new URL(w.url).pathname, w.status, w.type]),
          [[`/${emitted[0]}`, 200, 'application/wasm']], 'the .wasm was not loaded once from the bundle output');

        // The access token expires on the server (its clock jumps past the TTL); the broker still
        // holds it as valid, so the four calls go out, come back 401 and share one refresh.
        await control(server.base, 'clock', { advance_ms: ACCESS_TTL * 1000 + 1000 });
        const before = await control(server.base, 'stats');
        if (process.env.TB_VERBOSE) console.error(`[consumers] ${app.name}: click`, new Date().toISOString());
        await page.click('#load');
        await page.waitForSelector('#result, #error', { timeout: 20_000 });
        await noError(page, 'the dashboard failed');
        const result = JSON.parse(await page.textContent('#result'));
        const stats = await control(server.base, 'stats');
        if (process.env.TB_VERBOSE) console.error(JSON.stringify(await control(server.base, 'log'), null, 0));
        const delta = (k) => stats[k] - before[k];

        assert.equal(result.app, app.name);
        assert.equal(result.ok, 4, `answers: ${JSON.stringify(result.answers)}`);
        assert.deepEqual(result.answers.map((a) => [a.url, a.status, a.body?.endpoint]),
          ENDPOINTS.map((u) => [u, 200, u.slice(1)]));
        assert.equal(new Set(result.answers.map((a) => a.body.gen)).size, 1, 'all four answered with one token generation');
        assert.deepEqual(result.refreshes, [true], 'one successful refresh event');
        assert.equal(delta('refresh_calls'), 1, 'exactly one refresh call reached the server');
        assert.equal(delta('unauthorized_sent'), 4, 'each call was rejected once with the expired token');
        assert.equal(delta('api_ok'), 4, 'each call succeeded once on replay');
        assert.equal(delta('reuse_detections'), 0);
        assert.deepEqual(problems, [], 'no page errors or console warnings');
      } finally {
        await context.close().catch(() => {});
        await server.stop();
      }
    });
  }
});

test('SSR: importing every entry in plain Node touches no browser global and does not throw', () => {
  const entries = ['index.js', 'axios.js', 'fetch.js'].map((f) => pathToFileURL(path.join(PKG, f)).href);
  const code = `
    const touched = [];
    for (const name of ['window', 'document', 'localStorage', 'sessionStorage', 'navigator', 'location', 'self']) {
      Object.defineProperty(globalThis, name, { configurable: true, get() { touched.push(name); return undefined; } });
    }
    const [root, ax, fe] = await Promise.all(${JSON.stringify(entries)}.map((u) => import(u)));
    const out = {
      touched,
      root: Object.keys(root).sort(),
      axios: typeof ax.attachAxios,
      fetch: typeof fe.createAuthFetch,
      error: new root.TokenBrokerError('SESSION_EXPIRED', 'x') instanceof root.TokenBrokerError,
    };
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `import failed:\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  // `typeof document` is how the entry tells a page (preload the .wasm) from Node/SSR (stay inert):
  // that one look is expected; anything else read at import is not.
  assert.deepEqual(out.touched.filter((n) => n !== 'document'), [], `browser globals read at import: ${out.touched}`);
  for (const name of ['createTokenBroker', 'TokenBrokerError', 'isTokenBrokerError']) assert.ok(out.root.includes(name), `token-broker exports ${name}`);
  assert.equal(out.axios, 'function');
  assert.equal(out.fetch, 'function');
  assert.equal(out.error, true);
});
