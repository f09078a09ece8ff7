// The package from the outside: Node as a supported host (issue #11, trap 8 and "a test that runs a
// Node script end to end against the reference server"). Scripts run in a clean project that
// installed the packed tarball and axios, as child processes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startTokenServer } from '../../scripts/token-server.mjs';
import { describeRun, lastJson, makeProject, readmeExamples } from './project.mjs';

const LIVENESS_MS = 20_000; // a bound on "exits by itself", never a timing assertion

let p;
let server;
before(async () => {
  p = makeProject('node', { axios: true });
  // Long access tokens: only the server's clock (POST /__control/clock) expires them.
  server = await startTokenServer(['--port', '0', '--foreign-port', '0', '--test-controls', '--access-ttl', '600']);
});
after(async () => {
  await server?.stop();
  p?.remove();
});

function assertClean(r) {
  assert.equal(r.code, 0, describeRun(r));
  assert.equal(r.timedOut, false, describeRun(r));
  assert.doesNotMatch(r.stderr, /unhandled|uncaught/i, describeRun(r));
}

describe('Node as a host', () => {
  test('trap 8: a script whose broker holds tokens and is never disposed exits by itself', async () => {
    // The proactive refresh is due in 90 s; a waiting timer must not keep the process alive.
    p.write('never-disposed.mjs', `
import { createTokenBroker } from 'token-broker';
const broker = await createTokenBroker({
  refresh: { url: 'https://api.example.com/auth/refresh-token' },
  allowedOrigins: ['https://api.example.com'],
  tokens: { access_token: 'a', refresh_token: 'r', expires_in: 120 },
});
console.log(JSON.stringify({ state: broker.state, token: await broker.getAccessToken() }));
`);
    const r = await p.node('never-disposed.mjs', { timeout: LIVENESS_MS });
    assertClean(r);
    assert.deepEqual(lastJson(r), { state: 'valid', token: 'a' });
  });

  test('trap 8: a script with a refresh in flight against a server that never answers still ends after dispose()', async () => {
    p.write('dispose-in-flight.mjs', `
import http from 'node:http';
import { createTokenBroker } from 'token-broker';
const sockets = new Set();
const hang = http.createServer(() => { /* never answers */ });
hang.on('connection', (s) => { sockets.add(s); });
await new Promise((r) => hang.listen(0, '127.0.0.1', r));
const origin = 'http://127.0.0.1:' + hang.address().port;
const broker = await createTokenBroker({
  refresh: { url: origin + '/token' }, allowedOrigins: [origin],
  tokens: { access_token: 'a', refresh_token: 'r', expires_in: 3600 },
});
const waiting = broker.tokenRejected('a').then(() => 'resolved', (e) => e.code);
await new Promise((r) => setTimeout(r, 50));
broker.dispose();
const outcome = await waiting;
hang.close();
for (const s of sockets) s.destroy();
console.log(JSON.stringify({ outcome, state: broker.state }));
`);
    const r = await p.node('dispose-in-flight.mjs', { timeout: LIVENESS_MS });
    assertClean(r);
    assert.equal(lastJson(r).outcome, 'DISPOSED');
  });

  test('end to end against the reference server: axios and fetch share one broker, one refresh per burst', async () => {
    p.write('e2e.mjs', `
import axios from 'axios';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';
import { createAuthFetch } from 'token-broker/fetch';

const BASE = process.env.BASE;
const control = async (name, body) => {
  const res = await fetch(BASE + '/__control/' + name, body === undefined ? {}
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error('control ' + name + ': ' + res.status + ' ' + await res.text());
  return res.json();
};
const refreshes = async (fn) => {
  const before = (await control('stats')).refresh_calls;
  const result = await fn();
  return { result, refreshCalls: (await control('stats')).refresh_calls - before };
};

await control('reset', {});
const login = (await axios.post(BASE + '/auth/login', { username: 'demo', password: 'demo' })).data;
const broker = await createTokenBroker({
  refresh: { url: BASE + '/auth/refresh-token' },
  tokens: login,
  allowedOrigins: [BASE],
});
const refreshEnds = [];
broker.addEventListener('refreshend', (e) => refreshEnds.push(e.ok));
const api = axios.create({ baseURL: BASE });
attachAxios(api, broker);
const authFetch = createAuthFetch(broker);
const PATHS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const viaAxios = (path) => api.get(path).then((r) => ({ status: r.status, sub: r.data.sub, gen: r.data.gen }));
const viaFetch = (path) => authFetch(BASE + path).then(async (r) => ({ status: r.status, sub: (await r.json()).sub }));

// 1. fresh token: no refresh
const warm = await refreshes(() => Promise.all(PATHS.map(viaAxios)));
// 2. the server's clock moves past expiry (the broker still thinks the token is fresh: every call
//    gets a 401) and a mixed burst of 16 goes out through axios and fetch at once
await control('clock', { advance_ms: 601000 });
const mixed = await refreshes(() => Promise.all([...PATHS, ...PATHS].flatMap((p) => [viaAxios(p), viaFetch(p)])));
// 3. again, fetch only
await control('clock', { advance_ms: 601000 });
const fetchOnly = await refreshes(() => Promise.all([...PATHS, ...PATHS].map(viaFetch)));
const stats = await control('stats');
broker.dispose();
console.log(JSON.stringify({ warm, mixed, fetchOnly, refreshEnds, generation: broker.generation, stats }));
`);
    const r = await p.node('e2e.mjs', { timeout: 60_000, env: { BASE: server.base } });
    assertClean(r);
    const { warm, mixed, fetchOnly, refreshEnds, stats } = lastJson(r);
    assert.equal(warm.refreshCalls, 0);
    assert.deepEqual(warm.result.map((a) => a.status), [200, 200, 200, 200]);
    assert.equal(mixed.refreshCalls, 1, `a burst of 16 after expiry made ${mixed.refreshCalls} refreshes`);
    assert.equal(mixed.result.length, 16);
    assert.ok(mixed.result.every((a) => a.status === 200 && a.sub === 'demo'), JSON.stringify(mixed.result));
    assert.equal(fetchOnly.refreshCalls, 1, `a fetch burst after expiry made ${fetchOnly.refreshCalls} refreshes`);
    assert.ok(fetchOnly.result.every((a) => a.status === 200), JSON.stringify(fetchOnly.result));
    assert.deepEqual(refreshEnds, [true, true]);
    assert.equal(stats.reuse_detections, 0);
    assert.ok(stats.unauthorized_sent >= 2, 'the expiry was seen by the server (401s were sent)');
  });

  test("the README's Node example runs as written against the reference server", async () => {
    const examples = readmeExamples(fs.readFileSync(p.file('node_modules/token-broker/README.md'), 'utf8'));
    assert.ok(examples.has('node-axios'), 'the package README has no example marked node-axios');
    const code = examples.get('node-axios');
    assert.ok(code.includes("'https://api.example.com'"), 'the example names its API as https://api.example.com');
    p.write('readme-node.mjs', code.replaceAll('https://api.example.com', server.base));
    const r = await p.node('readme-node.mjs', { timeout: LIVENESS_MS });
    assertClean(r);
    assert.equal(r.stdout.trim(), '[ 200, 200 ]', describeRun(r));
  });
});
