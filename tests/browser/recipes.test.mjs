// Recipes (issue 12, "Every transport"): token-broker/fetch plugged into the `fetch` option of
// Apollo Client, urql, graphql-request, ky, ofetch and openapi-fetch, in Chromium against the
// reference server. Each library is bundled with esbuild; token-broker comes from the built
// package through the import map. For each: with the access token already expired at the server,
// a burst of 5 parallel calls → all succeed, exactly 1 refresh, each call rejected once and
// replayed once; and a call to a foreign origin carries no Authorization. docs/recipes.md shows
// the same code. Counts, not timings.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { build } from 'esbuild';
import { ROOT, startSite } from './harness.mjs';

const T = { timeout: 90_000 };
const PKG = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');
const BURST = 5;

// GraphQL servers answer a rejected token with a 200 carrying errors[].extensions.code
// UNAUTHENTICATED: isAuthFailure (given a clone of the Response) turns that into a "401".
const IS_AUTH_FAILURE = `
const isAuthFailure = async (res) => {
  const body = await res.json().catch(() => null);
  return !!body?.errors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED');
};`;

// Each recipe module exports recipe(broker) → { call(i), foreign(origin) }: call(i) is one API
// call through the library resolving with the value 42 the server returns; foreign(origin) sends
// one call through the same client to another origin.
const RECIPES = {
  apollo: { kind: 'graphql', pkg: '@apollo/client', code: `
    import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
    import { createAuthFetch } from 'token-broker/fetch';
    ${IS_AUTH_FAILURE}
    const STATS = gql\`query Stats($i: Int) { statistics(i: $i) { value } }\`;
    export function recipe(broker) {
      const authFetch = createAuthFetch(broker, { isAuthFailure });
      const client = new ApolloClient({
        link: new HttpLink({ uri: '/graphql', fetch: authFetch }),
        cache: new InMemoryCache(),
      });
      return {
        call: async (i) => (await client.query({ query: STATS, variables: { i }, fetchPolicy: 'no-cache' })).data.statistics.value,
        foreign: (origin) => client.query({ query: STATS, variables: { i: -1 }, fetchPolicy: 'no-cache', context: { uri: origin + '/graphql' } }),
      };
    }` },
  urql: { kind: 'graphql', pkg: '@urql/core', code: `
    import { createClient, fetchExchange, gql } from '@urql/core';
    import { createAuthFetch } from 'token-broker/fetch';
    ${IS_AUTH_FAILURE}
    const STATS = gql\`query Stats($i: Int) { statistics(i: $i) { value } }\`;
    export function recipe(broker) {
      const authFetch = createAuthFetch(broker, { isAuthFailure });
      const client = createClient({ url: '/graphql', fetch: authFetch, exchanges: [fetchExchange] });
      const one = async (i, context) => {
        const r = await client.query(STATS, { i }, { requestPolicy: 'network-only', ...context }).toPromise();
        if (r.error) throw r.error;
        return r.data.statistics.value;
      };
      return { call: (i) => one(i), foreign: (origin) => one(-1, { url: origin + '/graphql' }) };
    }` },
  'graphql-request': { kind: 'graphql', pkg: 'graphql-request', code: `
    import { GraphQLClient, gql } from 'graphql-request';
    import { createAuthFetch } from 'token-broker/fetch';
    ${IS_AUTH_FAILURE}
    const STATS = gql\`query Stats($i: Int) { statistics(i: $i) { value } }\`;
    export function recipe(broker) {
      const authFetch = createAuthFetch(broker, { isAuthFailure });
      const client = new GraphQLClient(location.origin + '/graphql', { fetch: authFetch });
      return {
        call: async (i) => (await client.request(STATS, { i })).statistics.value,
        foreign: (origin) => new GraphQLClient(origin + '/graphql', { fetch: authFetch }).request(STATS, { i: -1 }),
      };
    }` },
  ky: { kind: 'rest', pkg: 'ky', code: `
    import ky from 'ky';
    import { createAuthFetch } from 'token-broker/fetch';
    export function recipe(broker) {
      const api = ky.create({ fetch: createAuthFetch(broker) });
      return {
        call: async () => (await api.get('/statistics').json()).value,
        foreign: (origin) => api.get(origin + '/x').json(),
        order: (body) => api.post('/orders', { json: body }).json(),
      };
    }` },
  ofetch: { kind: 'rest', pkg: 'ofetch', code: `
    import { ofetch } from 'ofetch';
    import { createAuthFetch } from 'token-broker/fetch';
    export function recipe(broker) {
      const api = ofetch.create({ baseURL: location.origin }, { fetch: createAuthFetch(broker) });
      return {
        call: async () => (await api('/statistics')).value,
        foreign: (origin) => api(origin + '/x'),
        order: (body) => api('/orders', { method: 'POST', body }),
      };
    }
    // The trap: fetch in the defaults object (the first argument) is ignored by ofetch.
    export function wrong(broker) {
      let calls = 0;
      const authFetch = createAuthFetch(broker);
      const counted = (input, init) => { calls++; return authFetch(input, init); };
      const api = ofetch.create({ baseURL: location.origin, fetch: counted });
      return { api, calls: () => calls };
    }` },
  'openapi-fetch': { kind: 'rest', pkg: 'openapi-fetch', code: `
    import createClient from 'openapi-fetch';
    import { createAuthFetch } from 'token-broker/fetch';
    export function recipe(broker) {
      const client = createClient({ baseUrl: location.origin, fetch: createAuthFetch(broker) });
      const ok = ({ data, error, response }) => {
        if (error !== undefined) throw new Error('HTTP ' + response.status);
        return data;
      };
      return {
        call: async () => ok(await client.GET('/statistics')).value,
        foreign: async (origin) => ok(await client.GET('/x', { baseUrl: origin })),
        order: async (body) => ok(await client.POST('/orders', { body })),
      };
    }` },
};

const PAGE = `<!doctype html><meta charset="utf-8">
<script type="importmap">{ "imports": {
  "token-broker": "/pkg/index.js", "token-broker/fetch": "/pkg/fetch.js" } }</script>
<script type="module">
import { createTokenBroker } from 'token-broker';
/** Logs in (60 s tokens) and loads one recipe around a fresh broker: window.r, window.broker. */
window.start = async (name) => {
  const res = await fetch('/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'demo', password: 'demo' }) });
  const tokens = await res.json();
  window.broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens });
  window.mod = await import('/recipes/' + name + '.js');
  window.r = window.mod.recipe(window.broker);
  return tokens.access_token;
};
/** Settles a promise into a plain outcome (errors never cross page.evaluate as exceptions). */
window.settle = async (p) => {
  try { return { ok: true, value: await p }; } catch (e) { return { ok: false, name: e?.name, status: e?.status ?? e?.response?.status ?? e?.statusCode, message: String(e?.message ?? e).slice(0, 300) }; }
};
window.ready = true;
</script>`;

let site, dir, server, browser, control;
const versions = {};
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-recipes-'));
  fs.cpSync(PKG, path.join(dir, 'pkg'), { recursive: true, dereference: true });
  fs.mkdirSync(path.join(dir, 'recipes'));
  for (const [name, { code }] of Object.entries(RECIPES)) {
    await build({
      stdin: { contents: code, resolveDir: ROOT, loader: 'js' },
      bundle: true, format: 'esm', outfile: path.join(dir, 'recipes', `${name}.js`),
      external: ['token-broker', 'token-broker/*'],
      nodePaths: [path.join(ROOT, 'node_modules')],
      define: { 'process.env.NODE_ENV': '"production"' },
      logLevel: 'silent',
    });
  }
  fs.writeFileSync(path.join(dir, 'index.html'), PAGE);
  for (const { pkg } of Object.values(RECIPES)) {
    versions[pkg] = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')).version;
  }
  site = await startSite(dir);
  ({ server, browser, control } = site);
});
after(async () => { await site?.close(); });


/** after − before for every numeric counter. */
const diff = (a, b) => Object.fromEntries(Object.keys(b).filter((k) => typeof b[k] === 'number').map((k) => [k, b[k] - (a[k] ?? 0)]));

/** A fresh server state and page with recipe `name` loaded; the page's access token is expired at the server. */
async function open(name) {
  await control('reset', { access_ttl: 60 });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${server.base}/index.html`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 15_000 });
  const token = await page.evaluate((n) => window.start(n), name);
  // The server's clock moves past the 60 s lifetime; the broker still believes the token is good.
  await control('clock', { advance_ms: 120_000 });
  const check = await fetch(`${server.base}/statistics`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(check.status, 401, 'the access token is expired at the server');
  await check.body?.cancel();
  return { page, errors };
}

for (const [name, { kind, pkg }] of Object.entries(RECIPES)) {
  test(`${name}: expired token, burst of ${BURST} → all succeed, 1 refresh, each replayed once; no token to a foreign origin`, T, async (t) => {
    t.diagnostic(`${pkg} ${versions[pkg]}`);
    const { page, errors } = await open(name);
    try {
      const s0 = await control('stats');
      const results = await page.evaluate((n) => Promise.all(Array.from({ length: n }, (_, i) => window.settle(window.r.call(i)))), BURST);
      const d = diff(s0, await control('stats'));
      assert.deepEqual(results, Array(BURST).fill({ ok: true, value: 42 }), JSON.stringify(results));
      assert.equal(d.refresh_calls, 1, 'exactly one refresh');
      assert.equal(d.refresh_ok, 1);
      // Each call met the expired token once and was replayed once: 2 requests per call, no more.
      const rejected = kind === 'graphql' ? d.graphql_unauthenticated : d.unauthorized_sent;
      assert.equal(rejected, BURST, `each call rejected once (${JSON.stringify(d)})`);
      assert.equal(d.api_ok, BURST, 'each call replayed once');
      assert.equal(d.reuse_detections, 0);

      // The token goes only to allowed origins: the foreign listener sees the call, without Authorization.
      const f0 = await control('foreign');
      const out = await page.evaluate((origin) => window.settle(window.r.foreign(origin)), server.foreign);
      const f1 = await control('foreign');
      assert.ok(f1.requests - f0.requests >= 1, `the foreign call was sent (${JSON.stringify(out)})`);
      assert.equal(f1.last_path, kind === 'graphql' ? '/graphql' : '/x', 'the call itself, not only a preflight');
      assert.equal(f1.with_authorization - f0.with_authorization, 0, 'no Authorization to the foreign origin');
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
}

// A POST body survives the replay: ky and openapi-fetch hand the adapter a Request object (one-shot
// body), ofetch a string URL and an init. One call, rejected once, replayed once with the same body.
for (const name of ['ky', 'ofetch', 'openapi-fetch']) {
  test(`${name}: a POST with a JSON body after expiry is replayed once with its body`, T, async () => {
    const { page, errors } = await open(name);
    try {
      const s0 = await control('stats');
      const out = await page.evaluate(() => window.settle(window.r.order({ item: 'book', qty: 2 })));
      const d = diff(s0, await control('stats'));
      assert.equal(out.ok, true, JSON.stringify(out));
      assert.deepEqual(out.value.order, { item: 'book', qty: 2 });
      assert.equal(d.refresh_calls, 1);
      assert.equal(d.unauthorized_sent, 1);
      assert.equal(d.orders, 1, 'recorded once, by the replay');
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
}

test('ofetch trap: fetch in the defaults object (first argument) is ignored → no token is sent', T, async () => {
  const { page } = await open('ofetch');
  try {
    await control('clock', { offset_ms: 0 }); // a valid token: only the missing header can fail the call
    const { id: since } = (await control('log')).at(-1) ?? { id: 0 };
    const out = await page.evaluate(async () => {
      const w = window.mod.wrong(window.broker);
      const res = await window.settle(w.api('/statistics'));
      return { res, calls: w.calls() };
    });
    assert.equal(out.calls, 0, 'ofetch never called the fetch given in the defaults');
    assert.equal(out.res.ok, false);
    assert.equal(out.res.status, 401);
    const entries = (await control(`log?since=${since}`)).filter((e) => e.path === '/statistics');
    assert.equal(entries.length, 1);
    assert.equal(entries[0].authorization_present, false, 'sent without Authorization');
  } finally {
    await page.close();
  }
});

// The recipes as a TypeScript user writes them: authFetch fits every library's `fetch` option
// without a cast, and TypeScript rejects the ofetch trap in an object literal (plain JS does not).
const TS_RECIPES = `
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import { createClient as createUrqlClient, fetchExchange } from '@urql/core';
import { GraphQLClient } from 'graphql-request';
import ky from 'ky';
import { ofetch } from 'ofetch';
import createClient from 'openapi-fetch';
import type { TokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';

declare const broker: TokenBroker;
const authFetch = createAuthFetch(broker, {
  isAuthFailure: async (res) => {
    const body = (await res.json().catch(() => null)) as { errors?: { extensions?: { code?: string } }[] } | null;
    return !!body?.errors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED');
  },
});
export const apollo = new ApolloClient({ link: new HttpLink({ uri: '/graphql', fetch: authFetch }), cache: new InMemoryCache() });
export const urql = createUrqlClient({ url: '/graphql', fetch: authFetch, exchanges: [fetchExchange] });
export const gqlRequest = new GraphQLClient('https://app.example/graphql', { fetch: authFetch });
export const kyApi = ky.create({ fetch: authFetch });
export const ofetchApi = ofetch.create({ baseURL: '/' }, { fetch: authFetch });
export const openapi = createClient({ baseUrl: '/', fetch: authFetch });
// @ts-expect-error ofetch reads fetch from the second argument only
export const wrong = ofetch.create({ baseURL: '/', fetch: authFetch });
`;

test('the recipes type-check in TypeScript; the ofetch defaults trap is a type error', { timeout: 120_000 }, () => {
  const tsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-recipes-ts-'));
  try {
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tsDir, 'node_modules'));
    fs.writeFileSync(path.join(tsDir, 'package.json'), '{ "type": "module" }');
    fs.writeFileSync(path.join(tsDir, 'recipes.ts'), TS_RECIPES);
    fs.writeFileSync(path.join(tsDir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'es2022', module: 'esnext', moduleResolution: 'bundler', lib: ['es2022', 'dom', 'dom.iterable'],
        types: [], strict: true, noEmit: true, skipLibCheck: true,
        paths: { 'token-broker': [path.join(PKG, 'index.d.ts')], 'token-broker/fetch': [path.join(PKG, 'fetch.d.ts')] },
      },
      files: ['recipes.ts'],
    }));
    const r = spawnSync(path.join(ROOT, 'node_modules/.bin/tsc'), ['-p', tsDir], { cwd: tsDir, encoding: 'utf8' });
    assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}${r.error ?? ''}`);
  } finally {
    fs.rmSync(tsDir, { recursive: true, force: true });
  }
});
