// The package from the outside, in Node: loading the WebAssembly module (issue #11, traps 1–3).
// Each test writes a script into a clean project that installed the packed tarball and runs it as
// a child process, so an unhandled rejection would show as a non-zero exit, as it would for a user.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { copyProject, describeRun, lastJson, makeProject, readmeExamples } from './project.mjs';

const PRELUDE = `
import { createTokenBroker, initTokenBroker, isTokenBrokerError, TokenBrokerError } from 'token-broker';
const OPTS = {
  refresh: { url: 'https://api.example.com/auth/refresh-token' },
  allowedOrigins: ['https://api.example.com'],
  tokens: { access_token: 'a', refresh_token: 'r', expires_in: 3600 },
};
const err = (e) => ({ name: e?.name, code: e?.code, message: String(e?.message ?? e),
  isTBE: isTokenBrokerError(e), inst: e instanceof TokenBrokerError, error: e instanceof Error });
`;

/** No sign of an unhandled rejection or uncaught error in a child's output. */
function assertNoCrash(r) {
  assert.equal(r.code, 0, describeRun(r));
  assert.doesNotMatch(r.stderr, /unhandled|uncaught|triggerUncaughtException/i, describeRun(r));
}

/** A LOAD_FAILED as the issue asks: a TokenBrokerError naming the source, the cause and a fix. */
function assertLoadFailed(e, { source, cause, hint }) {
  assert.equal(e.code, 'LOAD_FAILED', JSON.stringify(e));
  assert.equal(e.name, 'TokenBrokerError');
  assert.ok(e.isTBE && e.inst && e.error, `not a TokenBrokerError: ${JSON.stringify(e)}`);
  if (source) assert.ok(e.message.includes(source), `the message does not name ${source}: ${e.message}`);
  if (cause) assert.match(e.message, cause);
  assert.match(e.message, hint ?? /initTokenBroker\(/, `no hint in: ${e.message}`);
}

let p;
before(() => { p = makeProject('load'); });
after(() => p?.remove());

describe('loading in Node (traps 1-3)', () => {
  test('createTokenBroker works in a plain Node ESM script with no initTokenBroker call', async () => {
    p.write('plain.mjs', `${PRELUDE}
const b = await createTokenBroker(OPTS);
console.log(JSON.stringify({ state: b.state, token: await b.getAccessToken() }));
b.dispose();
`);
    const r = await p.node('plain.mjs');
    assertNoCrash(r);
    assert.deepEqual(lastJson(r), { state: 'valid', token: 'a' });
  });

  test('trap 1+2: a missing file rejects with LOAD_FAILED naming it; a caught failure never crashes; a later call succeeds', async () => {
    p.write('missing.mjs', `${PRELUDE}
let first;
try { await initTokenBroker(new URL('file:///nonexistent.wasm')); } catch (e) { first = err(e); }
const b = await createTokenBroker(OPTS);           // the default source, tried again
console.log(JSON.stringify({ first, state: b.state }));
b.dispose();
`);
    const r = await p.node('missing.mjs');
    assertNoCrash(r);
    const { first, state } = lastJson(r);
    assertLoadFailed(first, { source: 'file:///nonexistent.wasm' });
    assert.equal(state, 'valid');
  });

  test('trap 2: HTML bytes in place of the .wasm reject with LOAD_FAILED that says so', async () => {
    p.write('html-bytes.mjs', `${PRELUDE}
const html = new TextEncoder().encode('<!doctype html><html><body>Not found</body></html>');
const first = await initTokenBroker(html).then(() => null, err);
const b = await createTokenBroker(OPTS);
console.log(JSON.stringify({ first, state: b.state }));
b.dispose();
`);
    const r = await p.node('html-bytes.mjs');
    assertNoCrash(r);
    const { first, state } = lastJson(r);
    assertLoadFailed(first, { source: 'initTokenBroker', cause: /magic word/, hint: /HTML page/ });
    assert.match(first.message, /not WebAssembly/);
    assert.equal(state, 'valid');
  });

  test('trap 2: a 404 and an HTML page over HTTP reject with LOAD_FAILED naming the URL and the cause', async () => {
    p.write('http.mjs', `${PRELUDE}
import http from 'node:http';
const server = http.createServer((req, res) => {
  if (req.url === '/spa/token_broker_bg.wasm') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><html><body><div id="app"></div></body></html>');
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = 'http://127.0.0.1:' + server.address().port;
const notFound = await initTokenBroker(base + '/missing/token_broker_bg.wasm').then(() => null, err);
const html = await initTokenBroker(new URL(base + '/spa/token_broker_bg.wasm')).then(() => null, err);
server.close();
const b = await createTokenBroker(OPTS);
console.log(JSON.stringify({ base, notFound, html, state: b.state }));
b.dispose();
`);
    const r = await p.node('http.mjs');
    assertNoCrash(r);
    const { base, notFound, html, state } = lastJson(r);
    assertLoadFailed(notFound, { source: `${base}/missing/token_broker_bg.wasm`, cause: /404/ });
    assertLoadFailed(html, { source: `${base}/spa/token_broker_bg.wasm`, cause: /magic word/, hint: /HTML page/ });
    assert.equal(state, 'valid');
  });

  test('trap 1: the installed .wasm replaced by an HTML page: createTokenBroker rejects with LOAD_FAILED, '
    + 'the caller\'s catch is enough, and once the file is fixed the next call succeeds', async () => {
    const broken = copyProject(p, 'broken');
    try {
      const wasm = broken.file('node_modules/token-broker/token_broker_bg.wasm');
      const good = broken.file('good.wasm');
      fs.copyFileSync(wasm, good);
      fs.writeFileSync(wasm, '<!doctype html><html><body>index.html of a SPA</body></html>');
      broken.write('broken.mjs', `${PRELUDE}
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
const wasm = import.meta.resolve('token-broker/token_broker_bg.wasm');
// Two ways a caller handles it: a .catch() on the promise, and try/await.
const first = await createTokenBroker(OPTS).catch(err);
let second;
try { await createTokenBroker(OPTS); } catch (e) { second = err(e); }
fs.copyFileSync(process.env.GOOD_WASM, fileURLToPath(wasm));
const b = await createTokenBroker(OPTS);
console.log(JSON.stringify({ wasm, first, second, state: b.state }));
b.dispose();
`);
      const r = await broken.node('broken.mjs', { env: { GOOD_WASM: good } });
      assertNoCrash(r);
      const { wasm: url, first, second, state } = lastJson(r);
      assert.match(url, /^file:.*token_broker_bg\.wasm$/);
      assertLoadFailed(first, { source: url, cause: /magic word/, hint: /HTML page/ });
      assertLoadFailed(second, { source: url, cause: /magic word/ });
      assert.equal(state, 'valid');
    } finally {
      broken.remove();
    }
  });

  test('trap 1: importing the package with a broken .wasm throws nothing and loads nothing in Node', async () => {
    const broken = copyProject(p, 'broken-import');
    try {
      fs.writeFileSync(broken.file('node_modules/token-broker/token_broker_bg.wasm'), 'garbage');
      broken.write('import-only.mjs', `import * as tb from 'token-broker';
import 'token-broker/axios';
import 'token-broker/fetch';
console.log(JSON.stringify(Object.keys(tb).sort()));
`);
      const r = await broken.node('import-only.mjs');
      assertNoCrash(r);
      assert.deepEqual(lastJson(r), ['TokenBrokerError', 'createTokenBroker', 'initTokenBroker', 'isTokenBrokerError']);
    } finally {
      broken.remove();
    }
  });

  test('trap 3: token-broker/token_broker_bg.wasm resolves with require.resolve and import.meta.resolve', async () => {
    p.write('resolve.cjs', `console.log(JSON.stringify(require.resolve('token-broker/token_broker_bg.wasm')));\n`);
    p.write('resolve.mjs', `console.log(JSON.stringify(import.meta.resolve('token-broker/token_broker_bg.wasm')));\n`);
    const cjs = await p.node('resolve.cjs');
    const esm = await p.node('resolve.mjs');
    assertNoCrash(cjs);
    assertNoCrash(esm);
    const file = lastJson(cjs);
    assert.equal(file, p.file('node_modules/token-broker/token_broker_bg.wasm'));
    assert.equal(new URL(lastJson(esm)).pathname, file);
    assert.deepEqual([...fs.readFileSync(file).subarray(0, 4)], [0x00, 0x61, 0x73, 0x6d]); // \0asm
  });

  test('trap 3: the README\'s initTokenBroker examples (ESM and CommonJS) run as written', async () => {
    const examples = readmeExamples(fs.readFileSync(p.file('node_modules/token-broker/README.md'), 'utf8'));
    for (const [name, file] of [['node-init-esm', 'readme-init.mjs'], ['node-init-cjs', 'readme-init.cjs']]) {
      assert.ok(examples.has(name), `the package README has no example marked ${name}`);
      p.write(file, examples.get(name));
      const r = await p.node(file);
      assertNoCrash(r);
      assert.equal(r.stdout.trim(), 'anonymous', `${name}: ${describeRun(r)}`);
    }
  });

  test('trap 7: require(\'token-broker\') from CommonJS works on Node ^20.19 || >=22.12 (require of ESM)', async () => {
    p.write('require.cjs', `
const tb = require('token-broker');
const { attachAxios } = require('token-broker/axios');
const { createAuthFetch } = require('token-broker/fetch');
tb.createTokenBroker({
  refresh: { url: 'https://api.example.com/auth/refresh-token' },
  allowedOrigins: ['https://api.example.com'],
  tokens: { access_token: 'a', refresh_token: 'r', expires_in: 3600 },
}).then((b) => {
  console.log(JSON.stringify({ state: b.state, attachAxios: typeof attachAxios, createAuthFetch: typeof createAuthFetch }));
  b.dispose();
});
`);
    const r = await p.node('require.cjs');
    const [major, minor] = process.versions.node.split('.').map(Number);
    const requireEsm = (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23;
    if (requireEsm) {
      assertNoCrash(r);
      assert.deepEqual(lastJson(r), { state: 'valid', attachAxios: 'function', createAuthFetch: 'function' });
    } else {
      // The documented behaviour on older Node: ESM only, require() fails; import() is the way.
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /ERR_REQUIRE_ESM/);
    }
  });
});
