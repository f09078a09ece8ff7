// `npm run soak`: a soak and chaos benchmark of token-broker in headless Chromium against the
// reference token server. A benchmark, not a test: it prints a table and a PASS/FAIL line per
// invariant, writes JSON (bench-results/soak-results.json unless --out), and exits non-zero if any
// invariant FAILs. Every loop is bounded in count or time and the whole run stops by itself.
//
//   node scripts/soak.mjs [--minutes N] [--only waiters|soak|chaos|tabs] [--out FILE] [--seed S]
//
//   --minutes N   length of the soak and chaos phases and of the tabs experiment (default 2);
//                 chaos also runs a grace-0 part of N/2 minutes
//   --only X      one experiment (repeatable: --only soak --only chaos)
//   --seed S      seed of the chaos schedule (default: time based; printed)
//
// Experiments:
//   waiters  one page: 10,000 concurrent getAccessToken() and, separately, 10,000 createAuthFetch
//            calls (with a `fetch` stub: Chromium refuses more than ~1,400 outstanding requests per
//            page, so the stub measures the broker alone), 5 rounds each, half of the callers
//            aborted mid-wait; refreshes per round, settling, JS heap and wasm memory per round
//   soak     20 axios loops over the dashboard endpoints with 2 s tokens at grace 0 for N minutes
//   chaos    the same loops while the server's faults flip every ~1 s (503 + Retry-After, hang,
//            drop after commit, latency spikes), 10% of requests aborted, two logout+login
//            cycles, then one invalid_grant; at grace 5 (N min) and at grace 0 (N/2 min)
//   tabs     5 tabs (crossTab, sessionStorage, one name) with request loops; the tab holding the
//            lock is closed mid-refresh 5 times at grace 5 and twice at grace 0
//
// Environment (as the browser tests): TB_PKG_DIR (default pkg/), TB_CHROMIUM (default
// /usr/bin/chromium), TB_SERVER_CMD (default target/release/token-server when it exists, else
// `cargo run -q --release -p token-server --`).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startTokenServer } from './token-server.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PKG = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');
const SERVER_BIN = path.join(ROOT, 'target/release/token-server');
if (!process.env.TB_SERVER_CMD && fs.existsSync(SERVER_BIN)) process.env.TB_SERVER_CMD = SERVER_BIN;

const EXPERIMENTS = ['waiters', 'soak', 'chaos', 'tabs'];
const DASH = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];

function usage(msg) {
  if (msg) console.error(`soak: ${msg}`);
  console.error('usage: node scripts/soak.mjs [--minutes N] [--only waiters|soak|chaos|tabs] [--out FILE] [--seed S]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { minutes: 2, only: [], out: path.join(ROOT, 'bench-results/soak-results.json'), seed: Date.now() % 2 ** 31 };
  for (let i = 0; i < argv.length; i++) {
    let [k, v] = argv[i].split(/=(.*)/s);
    const val = () => { if (v === undefined) { v = argv[++i]; } if (v === undefined) usage(`${k} needs a value`); return v; };
    if (k === '--minutes') {
      o.minutes = Number(val());
      if (!Number.isFinite(o.minutes) || o.minutes <= 0 || o.minutes > 60) usage('--minutes must be a number in (0, 60]');
    } else if (k === '--only') {
      const x = val();
      if (!EXPERIMENTS.includes(x)) usage(`--only must be one of ${EXPERIMENTS.join(', ')}`);
      o.only.push(x);
    } else if (k === '--out') o.out = path.resolve(val());
    else if (k === '--seed') o.seed = Number(val()) >>> 0;
    else if (k === '--help' || k === '-h') usage();
    else usage(`unknown argument ${argv[i]}`);
  }
  if (o.only.length === 0) o.only = [...EXPERIMENTS];
  return o;
}

const ARGS = parseArgs(process.argv.slice(2));
const MINUTE = 60_000;
const log = (...a) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Rejects after `ms` unless `promise` settled: every wait on the page or the server is bounded. */
function bounded(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** mulberry32: the chaos schedule is reproducible from --seed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function staticDir() {
  for (const f of ['index.js', 'token_broker.js', 'token_broker_bg.wasm', 'axios.js', 'fetch.js']) {
    if (!fs.existsSync(path.join(PKG, f))) throw new Error(`${path.join(PKG, f)} is missing: run node scripts/build.mjs`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tb-soak-'));
  fs.copyFileSync(path.join(ROOT, 'tests/browser/page/index.html'), path.join(dir, 'index.html'));
  fs.cpSync(PKG, path.join(dir, 'pkg'), { recursive: true, dereference: true });
  fs.copyFileSync(path.join(ROOT, 'node_modules/axios/dist/esm/axios.min.js'), path.join(dir, 'axios.js'));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Bookkeeping: every experiment returns { name, figures, invariants: [{ name, pass, detail }] }.

class Experiment {
  constructor(name) {
    this.name = name;
    this.figures = {};
    this.invariants = [];
    this.notes = [];
  }

  check(name, pass, detail = '') {
    this.invariants.push({ name, pass: Boolean(pass), detail: String(detail) });
    log(`${pass ? 'PASS' : 'FAIL'} ${this.name}: ${name}${detail ? ` (${detail})` : ''}`);
  }
}

const fmt = (x, digits = 0) => (x == null || Number.isNaN(x) ? '—' : Number(x).toFixed(digits));
const mb = (b) => (b == null ? '—' : `${(b / 1048576).toFixed(2)} MB`);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const maxOf = (xs) => (xs.length ? Math.max(...xs) : null);
const addCounts = (into, from) => { for (const [k, v] of Object.entries(from ?? {})) into[k] = (into[k] ?? 0) + v; return into; };
const counts = (o) => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';

// ---------------------------------------------------------------------------------------------
// In-page code (runs in Chromium through page.evaluate; `tb` is the test page's helper object).

/** Instruments a page for the tabs experiment: who holds the broker's Web Lock, refreshes in flight. */
function tabInstrumentation() {
  const w = window;
  w.__tb = { holding: 0, refreshing: 0, locks: 0 };
  const proto = globalThis.LockManager?.prototype;
  if (proto && typeof proto.request === 'function') {
    const request = proto.request;
    proto.request = function patchedRequest(name, ...rest) {
      const cb = rest[rest.length - 1];
      if (typeof cb !== 'function' || !String(name).startsWith('token-broker:')) return request.call(this, name, ...rest);
      rest[rest.length - 1] = (lock) => {
        if (!lock) return cb(lock);
        w.__tb.holding++;
        w.__tb.locks++;
        let r;
        try { r = cb(lock); } catch (e) { w.__tb.holding--; throw e; }
        const done = () => { w.__tb.holding--; };
        Promise.resolve(r).then(done, done);
        return r;
      };
      return request.call(this, name, ...rest);
    };
  }
  const fetch0 = w.fetch;
  w.fetch = function patchedFetch(input, init) {
    const url = typeof input === 'string' ? input : (input?.url ?? String(input));
    const p = fetch0.call(this, input, init);
    if (url.includes('/auth/refresh-token')) {
      w.__tb.refreshing++;
      const done = () => { w.__tb.refreshing--; };
      p.then(done, done);
    }
    return p;
  };
}

/** waiters: one broker, an authFetch with a stub `fetch`, and a handle on the module's memory. */
async function pageWaitersSetup() {
  const W = { sent: new Set() };
  window.W = W;
  W.gcAvailable = typeof gc === 'function';
  W.broker = await tb.createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens: await tb.login(), refreshTimeoutMs: 20000 });
  W.fetch = tb.createAuthFetch(W.broker, {
    fetch: (input, init) => {
      const h = init?.headers;
      W.sent.add(h instanceof Headers ? h.get('authorization') : h?.Authorization);
      return Promise.resolve(new Response('{}'));
    },
  });
  // The glue's init returns the module's exports once loaded: its linear memory is the broker's heap.
  const exports = await (await import('/pkg/token_broker.js')).default();
  W.memory = Object.values(exports).find((v) => v instanceof WebAssembly.Memory) ?? null;
  return {
    gc: W.gcAvailable,
    preciseMemory: typeof performance.memory?.usedJSHeapSize === 'number',
    measureUserAgentSpecificMemory: typeof performance.measureUserAgentSpecificMemory === 'function' && crossOriginIsolated,
    crossOriginIsolated,
    wasmMemory: W.memory !== null,
  };
}

/** After a forced GC: the JS heap, the wasm linear memory, and (if the page may) the UA's breakdown. */
async function pageMemory() {
  for (let i = 0; i < 3; i++) {
    if (typeof gc === 'function') gc();
    await new Promise((r) => setTimeout(r, 30));
  }
  let uaBytes = null;
  if (typeof performance.measureUserAgentSpecificMemory === 'function' && crossOriginIsolated) {
    try { uaBytes = (await performance.measureUserAgentSpecificMemory()).bytes; } catch { /* not available */ }
  }
  return { jsHeap: performance.memory?.usedJSHeapSize ?? null, wasm: window.W?.memory?.buffer.byteLength ?? window.S?.memory?.buffer.byteLength ?? null, uaBytes };
}

/** waiters: one round of `n` concurrent callers; the odd ones are aborted `abortAfterMs` after issuing. */
async function pageWaitersRound({ kind, n, abortAfterMs, timeoutMs }) {
  const W = window.W;
  const b = W.broker;
  W.sent.clear();
  // A fresh session whose access token the broker knows is spent: every caller needs the refresh.
  const r = { kind, n, resolved: 0, aborted: 0, other: {}, settled: 0, starts: 0, tokensAt: null };
  const onTokens = () => { if (r.tokensAt === null) r.tokensAt = performance.now(); };
  const onStart = () => { r.starts++; };
  const login = await tb.login();
  b.addEventListener('refreshstart', onStart);
  b.setTokens({ ...login, expires_in: 0.001 }); // emits 'tokens' at once: the listener below sees only the refresh's
  b.addEventListener('tokens', onTokens);
  await tb.sleep(5);
  let lastResolve = null;
  let lastAbort = null;
  const tokens = new Set();
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  const fin = () => { if (++r.settled === n) done(); };
  let ctrls = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const ctrl = i % 2 === 1 ? new AbortController() : null;
    if (ctrl) ctrls.push(ctrl);
    const opts = ctrl ? { signal: ctrl.signal } : undefined;
    const p = kind === 'getAccessToken' ? b.getAccessToken(opts) : W.fetch('/statistics', opts);
    p.then((v) => {
      r.resolved++;
      lastResolve = performance.now();
      if (kind === 'getAccessToken') tokens.add(v);
      else if (v.status !== 200) r.other[`status ${v.status}`] = (r.other[`status ${v.status}`] ?? 0) + 1;
      fin();
    }, (e) => {
      const code = e?.code ?? e?.name ?? String(e);
      if (code === 'ABORTED') { r.aborted++; lastAbort = performance.now(); } else r.other[code] = (r.other[code] ?? 0) + 1;
      fin();
    });
  }
  r.issueMs = performance.now() - t0;
  await tb.sleep(abortAfterMs);
  r.answeredBeforeAbort = r.tokensAt !== null;
  const abortAt = performance.now();
  for (const c of ctrls) c.abort();
  ctrls = null;
  r.timedOut = await Promise.race([all.then(() => false), tb.sleep(timeoutMs).then(() => true)]);
  b.removeEventListener('tokens', onTokens);
  b.removeEventListener('refreshstart', onStart);
  r.pending = n - r.settled;
  r.abortSettleMs = lastAbort === null ? null : lastAbort - abortAt;
  r.settleAfterAnswerMs = lastResolve === null || r.tokensAt === null ? null : lastResolve - r.tokensAt;
  r.refreshToAnswerMs = r.tokensAt === null ? null : r.tokensAt - t0;
  r.distinctTokens = kind === 'getAccessToken' ? tokens.size : W.sent.size;
  r.tokenIsCurrent = kind === 'getAccessToken'
    ? tokens.size === 1 && [...tokens][0] === (await b.getAccessToken())
    : W.sent.size === 1 && [...W.sent][0] === `Bearer ${await b.getAccessToken()}`;
  W.sent.clear();
  return r;
}

/**
 * soak and chaos: a broker, an axios instance with attachAxios, and a broker delegate that times
 * every call into the broker (a call that waits: a refresh in flight or due).
 */
async function pageLoopsSetup({ refreshTimeoutMs }) {
  const S = {
    stop: false, running: 0, requests: 0, ok: 0, aborted: 0, failures: {}, statuses: {},
    maxRequestMs: 0, maxWaitMs: 0, slowWaits: [], brokerCalls: 0,
    expired: 0, expiredAt: [], relogin: false, relogins: 0,
    loggedOut: false, outSends: 0, outSendsSamples: [], inflightAtLogout: 0,
    unhandled: 0, unhandledSamples: [], events: {}, logouts: 0, logins: 0,
  };
  window.S = S;
  window.addEventListener('unhandledrejection', (ev) => {
    S.unhandled++;
    if (S.unhandledSamples.length < 5) S.unhandledSamples.push(String(ev.reason?.code ?? ev.reason?.message ?? ev.reason));
  });
  S.broker = await tb.createTokenBroker({
    refresh: { url: '/auth/refresh-token' },
    tokens: await tb.login(),
    refreshTimeoutMs,
    onSessionExpired: () => {
      S.expired++;
      S.expiredAt.push(performance.now());
      if (S.relogin) {
        // grace 0: a reuse ends the session; the user logs in again.
        setTimeout(() => { tb.login().then((t) => { S.broker.setTokens(t); S.relogins++; }, () => {}); }, 300);
      }
    },
  });
  const b = S.broker;
  for (const type of ['tokens', 'refreshstart', 'refreshend', 'expired', 'stale401', 'logout']) {
    b.addEventListener(type, (ev) => {
      const k = type === 'refreshend' ? `refreshend:${ev.ok ? 'ok' : ev.code}` : type;
      S.events[k] = (S.events[k] ?? 0) + 1;
    });
  }
  const timed = (call) => (...args) => {
    S.brokerCalls++;
    const t0 = performance.now();
    const p = call(...args);
    const done = () => {
      const ms = performance.now() - t0;
      if (ms > S.maxWaitMs) S.maxWaitMs = ms;
      if (ms > refreshTimeoutMs + 2000 && S.slowWaits.length < 10) S.slowWaits.push(Math.round(ms));
    };
    p.then(done, done);
    return p;
  };
  const delegate = {
    getAccessToken: timed((o) => b.getAccessToken(o)),
    tokenRejected: timed((t, o) => b.tokenRejected(t, o)),
    shouldRefreshOn401: (h) => b.shouldRefreshOn401(h),
    allowsOrigin: (o) => b.allowsOrigin(o),
    get allowedOrigins() { return b.allowedOrigins; },
    get fastPath() { return b.fastPath; },
  };
  S.api = tb.axios.create();
  // Registered before attachAxios, so it runs after the broker's interceptor (axios runs request
  // interceptors last-registered first): it sees the Authorization header the request goes out with.
  S.api.interceptors.request.use((config) => {
    const auth = typeof config.headers?.get === 'function' ? config.headers.get('Authorization') : config.headers?.Authorization;
    if (auth && S.loggedOut) {
      if (config.startedLoggedOut) {
        S.outSends++;
        if (S.outSendsSamples.length < 5) S.outSendsSamples.push(config.url);
      } else S.inflightAtLogout++;
    }
    return config;
  });
  S.detach = tb.attachAxios(S.api, delegate);
  const exports = await (await import('/pkg/token_broker.js')).default();
  S.memory = Object.values(exports).find((v) => v instanceof WebAssembly.Memory) ?? null;
  return { generation: b.generation };
}

/** Starts `loops` request loops; `abortRate` of the requests get an AbortController fired within 300 ms. */
function pageLoopsStart({ loops, paths, abortRate }) {
  const S = window.S;
  S.stop = false;
  const one = async (k) => {
    S.running++;
    try {
      for (let i = k; !S.stop; i++) {
        let ctrl = null;
        if (abortRate > 0 && Math.random() < abortRate) {
          ctrl = new AbortController();
          setTimeout(() => ctrl.abort(), Math.random() * 300);
        }
        const t0 = performance.now();
        let failed = false;
        try {
          const res = await S.api.get(paths[i % paths.length], { signal: ctrl?.signal, startedLoggedOut: S.loggedOut });
          S.ok++;
          S.statuses[res.status] = (S.statuses[res.status] ?? 0) + 1;
        } catch (e) {
          const code = e?.response ? `HTTP ${e.response.status}` : (e?.code ?? e?.name ?? 'unknown');
          if (ctrl?.signal.aborted && (code === 'ERR_CANCELED' || code === 'ABORTED')) S.aborted++;
          else { S.failures[code] = (S.failures[code] ?? 0) + 1; failed = true; }
        }
        const ms = performance.now() - t0;
        if (ms > S.maxRequestMs) S.maxRequestMs = ms;
        S.requests++;
        if (failed) await tb.sleep(50); // a logged-out or expired session fails at once: no spin
      }
    } finally {
      S.running--;
    }
  };
  for (let k = 0; k < loops; k++) one(k);
  return true;
}

/** Stops the loops and waits (bounded) until every request settled. */
async function pageLoopsStop({ capMs }) {
  const S = window.S;
  S.stop = true;
  const t0 = performance.now();
  while (S.running > 0 && performance.now() - t0 < capMs) await tb.sleep(20);
  return { running: S.running, ms: performance.now() - t0 };
}

function pageLoopsSnapshot() {
  const S = window.S;
  const { broker, api, memory, detach, ...plain } = S;
  return JSON.parse(JSON.stringify({ ...plain, state: broker.state, generation: broker.generation }));
}

/** One logout + login cycle (chaos): logged out for `outMs`. */
async function pageLogoutLogin({ outMs }) {
  const S = window.S;
  S.loggedOut = true;
  S.logouts++;
  await S.broker.logout();
  await tb.sleep(outMs);
  const tokens = await tb.login();
  S.broker.setTokens(tokens);
  S.loggedOut = false;
  S.logins++;
  return S.broker.state;
}

/** tabs: the broker of one tab (crossTab, sessionStorage, name 'soak'), an authFetch and its loops. */
async function pageTabSetup({ login, refreshTimeoutMs }) {
  const L = { stop: false, running: 0, requests: 0, ok: 0, failures: {}, maxRequestMs: 0, unhandled: 0, phase: 'g5', expired: 0 };
  window.L = L;
  window.addEventListener('unhandledrejection', () => { L.unhandled++; });
  const tokens = login ? await tb.login() : undefined;
  window.b = await tb.createTokenBroker({
    name: 'soak', crossTab: true, storage: 'session', refresh: { url: '/auth/refresh-token' }, tokens, refreshTimeoutMs,
    onSessionExpired: () => { L.expired++; },
  });
  window.api = tb.createAuthFetch(window.b);
  return { state: window.b.state, generation: window.b.generation };
}

function pageTabLoops({ loops, paths, pauseMs }) {
  const L = window.L;
  const one = async (k) => {
    L.running++;
    try {
      for (let i = k; !L.stop; i++) {
        const t0 = performance.now();
        let code;
        try {
          const r = await window.api(paths[i % paths.length]);
          await r.arrayBuffer();
          code = r.status === 200 ? null : `HTTP ${r.status}`;
        } catch (e) { code = e?.code ?? e?.name ?? 'unknown'; }
        const ms = performance.now() - t0;
        if (ms > L.maxRequestMs) L.maxRequestMs = ms;
        L.requests++;
        if (code === null) L.ok++;
        else L.failures[`${L.phase}:${code}`] = (L.failures[`${L.phase}:${code}`] ?? 0) + 1;
        await tb.sleep(code === null ? pauseMs : 100);
      }
    } finally { L.running--; }
  };
  for (let k = 0; k < loops; k++) one(k);
  return true;
}

function pageTabSnapshot() {
  const L = window.L;
  return { ...JSON.parse(JSON.stringify(L)), state: window.b.state, generation: window.b.generation, tb: { ...window.__tb } };
}

/** tabs: after the lock holder closed, waits for a newer generation, then makes one call. */
async function pageTabRecover({ g0, capMs }) {
  const t0 = performance.now();
  while (window.b.generation <= g0 && performance.now() - t0 < capMs) await tb.sleep(10);
  const adopted = window.b.generation > g0;
  const status = await window.api('/statistics').then((r) => r.status, (e) => e?.code ?? String(e));
  return { ms: performance.now() - t0, adopted, status, generation: window.b.generation, state: window.b.state };
}

/** tabs at grace 0: waits (bounded) until the broker is no longer refreshing. */
async function pageTabSettle({ capMs }) {
  const t0 = performance.now();
  while (window.b.state === 'refreshing' && performance.now() - t0 < capMs) await tb.sleep(20);
  return { state: window.b.state, ms: performance.now() - t0 };
}

// ---------------------------------------------------------------------------------------------
// The environment shared by the experiments: one server, one Chromium.

async function startEnv() {
  const dir = staticDir();
  log('starting the reference server');
  const server = await startTokenServer(['--port', '0', '--foreign-port', '0', '--test-controls', '--static', dir,
    '--access-ttl', '2']);
  const browser = await chromium.launch({
    executablePath: process.env.TB_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--js-flags=--expose-gc', '--enable-precise-memory-info'],
  });
  const pageErrors = [];
  async function control(name, body) {
    const res = await bounded(fetch(`${server.base}/__control/${name}`, body === undefined ? {}
      : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }), 15000, `control ${name}`);
    const text = await res.text();
    if (!res.ok) throw new Error(`control ${name}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
  /** A page of the test app in its own browser context (own storage, own heap). */
  async function openPage({ context, init } = {}) {
    const ctx = context ?? await browser.newContext();
    if (init && !context) await ctx.addInitScript(init);
    const page = await ctx.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${server.base}/index.html`);
    await page.waitForFunction(() => window.tbReady === true, null, { timeout: 15000 });
    return { page, ctx, close: async () => { if (!context) await ctx.close().catch(() => {}); else await page.close().catch(() => {}); } };
  }
  const stop = async () => {
    await bounded(browser.close(), 15000, 'browser.close').catch(() => {});
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { server, browser, control, openPage, pageErrors, stop, stats: () => control('stats') };
}

const delta = (a, b) => Object.fromEntries(Object.keys(b).filter((k) => typeof b[k] === 'number').map((k) => [k, b[k] - (a[k] ?? 0)]));

// ---------------------------------------------------------------------------------------------
// waiters

async function expWaiters(env) {
  const x = new Experiment('waiters');
  const N = 10_000;
  const ROUNDS = 5;
  await env.control('reset', { access_ttl: 60, grace: 0 });
  // The refresh answers 1 s after it arrives, so every caller is queued and half abort mid-wait.
  await env.control('latency', { path: '/auth/refresh-token', ms: 1000 });
  const { page, close } = await env.openPage();
  try {
    const caps = await bounded(page.evaluate(pageWaitersSetup), 30000, 'waiters setup');
    x.figures.capabilities = caps;
    if (!caps.measureUserAgentSpecificMemory) {
      x.notes.push('performance.measureUserAgentSpecificMemory is unavailable (the page is not cross-origin isolated): '
        + 'memory = JS heap (performance.memory after gc()) + the wasm module\'s linear memory (its exported Memory, read through the glue\'s init())');
    }
    const baseline = await page.evaluate(pageMemory);
    x.figures.baseline = baseline;
    for (const kind of ['getAccessToken', 'authFetch']) {
      const rounds = [];
      for (let round = 1; round <= ROUNDS; round++) {
        const before = await env.stats();
        const r = await bounded(page.evaluate(pageWaitersRound, { kind, n: N, abortAfterMs: 150, timeoutMs: 30000 }), 90000, `waiters ${kind} round ${round}`);
        await sleep(50);
        const after = await env.stats();
        const mem = await page.evaluate(pageMemory);
        const row = { round, ...r, refreshCalls: after.refresh_calls - before.refresh_calls, reuse: after.reuse_detections - before.reuse_detections, ...mem };
        rounds.push(row);
        log(`waiters ${kind} round ${round}: refreshes ${row.refreshCalls}, resolved ${r.resolved}, aborted ${r.aborted}, other ${counts(r.other)}, `
          + `pending ${r.pending}, settle after answer ${fmt(r.settleAfterAnswerMs, 1)} ms, issue ${fmt(r.issueMs)} ms, heap ${mb(mem.jsHeap)}, wasm ${mb(mem.wasm)}`);
      }
      x.figures[kind] = rounds;
      const label = kind === 'getAccessToken' ? 'getAccessToken' : 'authFetch (stub fetch)';
      x.check(`${label}: exactly 1 refresh per round`, rounds.every((r) => r.refreshCalls === 1 && r.starts === 1),
        `server ${rounds.map((r) => r.refreshCalls).join(',')}; refreshstart ${rounds.map((r) => r.starts).join(',')}`);
      x.check(`${label}: every caller settled (none pending)`, rounds.every((r) => r.pending === 0 && !r.timedOut),
        `pending ${rounds.map((r) => r.pending).join(',')}`);
      x.check(`${label}: the ${N / 2} kept callers got the new token, the ${N / 2} aborted got ABORTED`,
        rounds.every((r) => r.resolved === N / 2 && r.aborted === N / 2 && Object.keys(r.other).length === 0 && r.distinctTokens === 1 && r.tokenIsCurrent),
        rounds.map((r) => `${r.resolved}/${r.aborted}${Object.keys(r.other).length ? ` + ${counts(r.other)}` : ''}`).join(', '));
      x.check(`${label}: aborts happened mid-wait (before the refresh answered)`, rounds.every((r) => !r.answeredBeforeAbort),
        rounds.map((r) => (r.answeredBeforeAbort ? 'late' : 'ok')).join(','));
      const r2 = rounds[1];
      const r5 = rounds[ROUNDS - 1];
      x.check(`${label}: JS heap flat after round 1 (round 5 ≤ round 2 + 20%)`, r5.jsHeap != null && r5.jsHeap <= r2.jsHeap * 1.2,
        `${rounds.map((r) => mb(r.jsHeap)).join(' → ')}`);
      x.check(`${label}: wasm memory flat after round 1 (round 5 ≤ round 2 + 20%)`, r5.wasm != null && r5.wasm <= r2.wasm * 1.2,
        `${rounds.map((r) => mb(r.wasm)).join(' → ')}`);
    }
    x.check('no page errors', env.pageErrors.length === 0, env.pageErrors.slice(0, 3).join(' | '));
  } finally {
    await close();
    await env.control('latency', { clear: true }).catch(() => {});
  }
  const g = x.figures.getAccessToken ?? [];
  const f = x.figures.authFetch ?? [];
  const settle = (rs) => `${fmt(maxOf(rs.map((r) => r.settleAfterAnswerMs)), 1)} ms`;
  x.summary = [
    `10,000 getAccessToken × 5: refreshes/round ${g.map((r) => r.refreshCalls).join(',')}, last waiter settles ≤ ${settle(g)} after the answer`,
    `10,000 authFetch (stub) × 5: refreshes/round ${f.map((r) => r.refreshCalls).join(',')}, ≤ ${settle(f)}`,
    `JS heap r1→r5 ${[g, f].map((rs) => rs.map((r) => fmt(r.jsHeap / 1048576, 1)).join('/')).join(' ; ')} MB`,
    `wasm ${[g, f].map((rs) => rs.map((r) => fmt(r.wasm / 1048576, 2)).join('/')).join(' ; ')} MB`,
  ];
  return x;
}

// ---------------------------------------------------------------------------------------------
// soak

async function activeFamily(env) {
  const fams = await env.control('families');
  return fams.filter((f) => f.state === 'active').sort((a, b) => b.created_ms - a.created_ms)[0] ?? null;
}

async function expSoak(env, minutes) {
  const x = new Experiment('soak');
  const D = minutes * MINUTE;
  await env.control('reset', { access_ttl: 2, grace: 0 });
  const { page, close } = await env.openPage();
  try {
    await bounded(page.evaluate(pageLoopsSetup, { refreshTimeoutMs: 10000 }), 30000, 'soak setup');
    const heap0 = await page.evaluate(pageMemory);
    const fam0 = await activeFamily(env);
    const s0 = await env.stats();
    const g0 = (await page.evaluate(pageLoopsSnapshot)).generation;
    await page.evaluate(pageLoopsStart, { loops: 20, paths: DASH, abortRate: 0 });
    const t0 = Date.now();
    // The heap once axios and the loops are warm (the start value above is before the first request).
    await sleep(Math.min(10000, D / 3));
    const heapWarm = await page.evaluate(pageMemory);
    while (Date.now() - t0 < D) {
      await sleep(Math.min(15000, D - (Date.now() - t0)));
      const snap = await page.evaluate(pageLoopsSnapshot);
      log(`soak ${((Date.now() - t0) / 1000).toFixed(0)} s: ${snap.requests} requests, ${sum(Object.values(snap.failures))} failures, generation ${snap.generation}`);
    }
    const stopped = await bounded(page.evaluate(pageLoopsStop, { capMs: 15000 }), 30000, 'soak stop');
    // Dispose, so no proactive refresh runs between the reads below.
    const snap = await page.evaluate(pageLoopsSnapshot);
    await page.evaluate(() => window.S.broker.dispose());
    await sleep(300);
    const s1 = await env.stats();
    const fam1 = (await env.control('families')).find((f) => f.id === fam0?.id) ?? null;
    const heap1 = await page.evaluate(pageMemory);
    const d = delta(s0, s1);
    const gens = fam1 && fam0 ? fam1.generation - fam0.generation : null;
    const seconds = (Date.now() - t0) / 1000;
    x.figures = {
      seconds, requests: snap.requests, ok: snap.ok, failures: snap.failures, perSecond: snap.requests / seconds,
      refreshCalls: d.refresh_calls, refreshOk: d.refresh_ok, refreshErrors: d.refresh_errors, generations: gens,
      brokerGenerations: snap.generation - g0, unauthorizedSent: d.unauthorized_sent, reuseDetections: d.reuse_detections,
      graceReplays: d.grace_replays, maxRequestMs: snap.maxRequestMs, maxBrokerWaitMs: snap.maxWaitMs, brokerCalls: snap.brokerCalls,
      events: snap.events, heapStart: heap0, heapWarm, heapEnd: heap1, stopped, unhandled: snap.unhandled,
    };
    x.check('requests made', snap.requests > 0, `${snap.requests}`);
    x.check('failures = 0', sum(Object.values(snap.failures)) === 0, counts(snap.failures));
    x.check('1 refresh per generation (server refresh_calls = rotations of the family)', gens !== null && gens > 0 && d.refresh_calls === gens && d.refresh_ok === gens,
      `${d.refresh_calls} refresh calls, ${d.refresh_ok} ok, ${gens} generations`);
    x.check('reuse detections = 0', d.reuse_detections === 0, `${d.reuse_detections}`);
    x.check('every loop stopped (no request pending)', stopped.running === 0, `${stopped.running} running`);
    x.check('no unhandled rejection, no page error', snap.unhandled === 0 && env.pageErrors.length === 0,
      `${snap.unhandled} unhandled; ${env.pageErrors.slice(0, 3).join(' | ')}`);
    x.summary = [
      `${snap.requests} requests in ${fmt(seconds)} s (${fmt(snap.requests / seconds)}/s), failures ${sum(Object.values(snap.failures))}`,
      `${d.refresh_calls} refreshes / ${gens} generations, 401s ${d.unauthorized_sent}, reuse ${d.reuse_detections}`,
      `max wait: broker ${fmt(snap.maxWaitMs)} ms, request ${fmt(snap.maxRequestMs)} ms`,
      `JS heap ${mb(heap0.jsHeap)} (start) → ${mb(heapWarm.jsHeap)} (${fmt(Math.min(10, D / 3000))} s) → ${mb(heap1.jsHeap)} (end), wasm ${mb(heap0.wasm)} → ${mb(heap1.wasm)}`,
    ];
  } finally {
    await close();
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// chaos

const REFRESH_TIMEOUT_MS = 5000;

/** Reads the server's request log incrementally, keeping the token endpoint's entries. */
class AuthLog {
  constructor(env) { this.env = env; this.since = undefined; this.entries = []; this.lost = false; }
  async poll() {
    const rows = await this.env.control(this.since === undefined ? 'log' : `log?since=${this.since}`);
    if (rows.length && this.since !== undefined && rows[0].id > this.since + 1) this.lost = true;
    for (const e of rows) {
      this.since = Math.max(this.since ?? 0, e.id);
      if (e.path.startsWith('/auth/')) this.entries.push(e);
    }
  }
}

async function chaosRun(env, { minutes, grace, seed }) {
  const name = `chaos (grace ${grace})`;
  const x = new Experiment(name);
  const D = minutes * MINUTE;
  const rand = rng(seed + grace);
  await env.control('reset', { access_ttl: 2, grace });
  const { page, close } = await env.openPage();
  const alog = new AuthLog(env);
  const flips = {};
  try {
    await bounded(page.evaluate(pageLoopsSetup, { refreshTimeoutMs: REFRESH_TIMEOUT_MS }), 30000, 'chaos setup');
    if (grace === 0) await page.evaluate(() => { window.S.relogin = true; });
    await alog.poll();
    const s0 = await env.stats();
    const heap0 = await page.evaluate(pageMemory);
    await page.evaluate(pageLoopsStart, { loops: 20, paths: DASH, abortRate: 0.1 });
    const t0 = Date.now();
    const cycles = [D / 3, (2 * D) / 3];
    let cycleRunning = null;
    let lastLog = t0;
    // Bounded: one flip per ~1 s for D ms.
    for (let flip = 0; Date.now() - t0 < D && flip < 100000; flip++) {
      const elapsed = Date.now() - t0;
      if (cycles.length && elapsed >= cycles[0]) {
        cycles.shift();
        // Logout + login while the loops run (in the page, not awaited here: the faults keep flipping).
        cycleRunning = bounded(page.evaluate(pageLogoutLogin, { outMs: 500 }), 30000, 'logout+login');
        cycleRunning.catch(() => {});
      }
      await env.control('fault', { clear: true });
      await env.control('latency', { clear: true });
      const p = rand();
      let kind;
      if (p < 0.2) kind = 'calm';
      else if (p < 0.4) {
        kind = 'unavailable';
        await env.control('fault', { kind: 'unavailable', count: 1 + Math.floor(rand() * 2), retry_after: 1 });
      } else if (p < 0.55) {
        kind = 'hang';
        await env.control('fault', { kind: 'hang', count: 1, ms: 2000 + Math.floor(rand() * 6000) });
      } else if (p < 0.75) {
        kind = 'drop';
        await env.control('fault', { kind: 'drop', count: 1 });
      } else if (p < 0.9) {
        kind = 'latency';
        await env.control('latency', { path: '*', ms: 200 + Math.floor(rand() * 1300) });
      } else {
        kind = 'refresh-latency';
        await env.control('latency', { path: '/auth/refresh-token', ms: 500 + Math.floor(rand() * 2500) });
      }
      flips[kind] = (flips[kind] ?? 0) + 1;
      await sleep(700 + rand() * 600);
      await alog.poll();
      if (Date.now() - lastLog > 15000) {
        lastLog = Date.now();
        const snap = await page.evaluate(pageLoopsSnapshot);
        log(`${name} ${((Date.now() - t0) / 1000).toFixed(0)} s: ${snap.requests} requests, failures ${counts(snap.failures)}, state ${snap.state}`);
      }
    }
    if (cycleRunning) await cycleRunning.catch((e) => x.notes.push(`logout+login: ${e.message}`));
    // The end: calm, then one invalid_grant for the next refresh.
    await env.control('fault', { clear: true });
    await env.control('latency', { clear: true });
    await page.evaluate(() => { window.S.relogin = false; });
    const settled = await bounded(page.evaluate(async () => {
      // Let the session come back to 'valid' (a relogin or a refresh may still be running); a
      // session that ended just before (grace 0) is logged in again.
      const S = window.S;
      for (let i = 0; i < 300 && S.broker.state !== 'valid'; i++) await tb.sleep(20);
      if (S.broker.state !== 'valid') {
        S.broker.setTokens(await tb.login());
        S.relogins++;
        for (let i = 0; i < 300 && S.broker.state !== 'valid'; i++) await tb.sleep(20);
      }
      return S.broker.state;
    }), 20000, 'chaos calm');
    x.check('the session is valid again once the faults stop', settled === 'valid', settled);
    const beforeFinal = await page.evaluate(pageLoopsSnapshot);
    const expiredBefore = beforeFinal.expired;
    await env.control('fault', { kind: 'invalid_grant', count: 1 });
    const tInvalid = Date.now();
    // 2 s tokens: the next refresh comes within ~2 s; then 2 s more to catch a second callback.
    await bounded(page.evaluate(async (before) => {
      for (let i = 0; i < 400 && window.S.expired === before; i++) await tb.sleep(20);
    }, expiredBefore), 15000, 'waiting for the session to expire');
    await sleep(2000);
    const stopped = await bounded(page.evaluate(pageLoopsStop, { capMs: REFRESH_TIMEOUT_MS + 5000 }), 30000, 'chaos stop');
    await sleep(200);
    const snap = await page.evaluate(pageLoopsSnapshot);
    await page.evaluate(() => window.S.broker.dispose());
    await alog.poll();
    const s1 = await env.stats();
    const heap1 = await page.evaluate(pageMemory);
    const d = delta(s0, s1);
    const seconds = (Date.now() - t0) / 1000;
    const afterFinal = { ...snap.failures };
    for (const [k, v] of Object.entries(beforeFinal.failures)) { afterFinal[k] -= v; if (afterFinal[k] === 0) delete afterFinal[k]; }

    // Reuse forensics from the log: a reuse presents a token whose rotation's answer was dropped.
    const dropped = new Set(alog.entries.filter((e) => /fault:drop/.test(e.outcome ?? '') && String(e.outcome).startsWith('rotated'))
      .map((e) => e.refresh_token_hash_prefix));
    const reuses = alog.entries.filter((e) => /reuse/.test(e.outcome ?? ''));
    const unexplained = reuses.filter((e) => !dropped.has(e.refresh_token_hash_prefix));
    const outcomes = {};
    for (const e of alog.entries) {
      if (e.path !== '/auth/refresh-token') continue;
      const k = e.outcome ?? (e.status === 0 ? 'no answer' : `status ${e.status}`);
      outcomes[k] = (outcomes[k] ?? 0) + 1;
    }

    x.figures = {
      seconds, grace, seed: seed + grace, flips, requests: snap.requests, ok: snap.ok, aborted: snap.aborted, failures: snap.failures,
      failuresDuringChaos: beforeFinal.failures, failuresAfterFinalInvalidGrant: afterFinal,
      maxBrokerWaitMs: snap.maxWaitMs, slowWaits: snap.slowWaits, maxRequestMs: snap.maxRequestMs, refreshCalls: d.refresh_calls,
      refreshOk: d.refresh_ok, refreshErrors: d.refresh_errors, faultsInjected: d.faults_injected, reuseDetections: d.reuse_detections,
      graceReplays: d.grace_replays, unauthorizedSent: d.unauthorized_sent, refreshOutcomes: outcomes, logLost: alog.lost,
      sessionExpired: snap.expired, expiredBeforeFinal: expiredBefore, relogins: snap.relogins, logoutLogin: snap.logins,
      sentWhileLoggedOut: snap.outSends, inflightAtLogout: snap.inflightAtLogout, unhandled: snap.unhandled,
      events: snap.events, heapStart: heap0, heapEnd: heap1, stateBeforeFinal: settled, finalState: snap.state, stopped,
    };
    x.check('requests made', snap.requests > 0, `${snap.requests}`);
    x.check(`no call into the broker waits longer than refreshTimeoutMs + 2 s (${REFRESH_TIMEOUT_MS + 2000} ms)`,
      snap.maxWaitMs <= REFRESH_TIMEOUT_MS + 2000, `max ${fmt(snap.maxWaitMs)} ms${snap.slowWaits.length ? `; slow: ${snap.slowWaits.join(',')}` : ''}`);
    if (grace > 0) x.check('reuse detections = 0', d.reuse_detections === 0, `${d.reuse_detections}`);
    else {
      x.check('every reuse detection follows a dropped (committed) refresh answer', !alog.lost && unexplained.length === 0,
        `${d.reuse_detections} reuse, ${dropped.size} committed drops, ${unexplained.length} unexplained${alog.lost ? ', log entries lost' : ''}`);
    }
    x.check('no request started while logged out was sent with a token', snap.outSends === 0,
      `${snap.outSends}${snap.outSendsSamples.length ? `: ${snap.outSendsSamples.join(', ')}` : ''}; ${snap.logins} logout+login cycles`);
    x.check('exactly one onSessionExpired after the final invalid_grant', snap.expired - expiredBefore === 1,
      `${snap.expired - expiredBefore} (before it: ${expiredBefore}${grace > 0 ? '' : `, relogins ${snap.relogins}`})`);
    if (grace > 0) x.check('no session expiry before the final invalid_grant', expiredBefore === 0, `${expiredBefore}`);
    x.check('the session ends expired', snap.state === 'expired', snap.state);
    x.check('no unhandled rejection, no page error', snap.unhandled === 0 && env.pageErrors.length === 0,
      `${snap.unhandled} unhandled${snap.unhandledSamples.length ? ` (${snap.unhandledSamples.join(', ')})` : ''}; ${env.pageErrors.slice(0, 3).join(' | ')}`);
    x.check('every loop stopped (no request hangs)', stopped.running === 0, `${stopped.running} running after ${fmt(stopped.ms)} ms`);
    x.summary = [
      `${snap.requests} requests in ${fmt(seconds)} s, ${snap.ok} ok, ${snap.aborted} aborted; failed during chaos: ${counts(beforeFinal.failures)}; after the final invalid_grant: ${counts(afterFinal)}`,
      `flips: ${counts(flips)}; ${d.refresh_calls} refresh calls (${counts(outcomes)}), reuse ${d.reuse_detections}`,
      `max wait: broker ${fmt(snap.maxWaitMs)} ms, request ${fmt(snap.maxRequestMs)} ms; onSessionExpired ${expiredBefore} + ${snap.expired - expiredBefore}`,
      `logout+login ${snap.logins}, sent with token while logged out ${snap.outSends}; JS heap ${mb(heap0.jsHeap)} → ${mb(heap1.jsHeap)}`,
    ];
  } finally {
    await env.control('fault', { clear: true }).catch(() => {});
    await env.control('latency', { clear: true }).catch(() => {});
    await close();
  }
  return x;
}

// ---------------------------------------------------------------------------------------------
// tabs

async function expTabs(env, minutes) {
  const x = new Experiment('tabs');
  const D = minutes * MINUTE;
  const TABS = 5;
  const CYCLES = [5, 5, 5, 5, 5, 0, 0]; // the grace of each lock-holder closing
  await env.control('reset', { access_ttl: 2, grace: 5 });
  const context = await env.browser.newContext();
  await context.addInitScript(tabInstrumentation);
  const tabs = [];
  const closed = { requests: 0, ok: 0, failures: {} };
  const open = async (login) => {
    const { page } = await env.openPage({ context });
    const r = await bounded(page.evaluate(pageTabSetup, { login, refreshTimeoutMs: REFRESH_TIMEOUT_MS }), 20000, 'tab setup');
    await page.evaluate(pageTabLoops, { loops: 2, paths: DASH, pauseMs: 40 });
    tabs.push(page);
    return r;
  };
  const snapAll = () => Promise.all(tabs.map((p) => bounded(p.evaluate(pageTabSnapshot), 10000, 'tab snapshot')));
  const setPhase = (phase) => Promise.all(tabs.map((p) => p.evaluate((ph) => { window.L.phase = ph; }, phase)));
  const rounds = [];
  let reuseG5 = 0;
  const cursor = { since: 0, async next() {
    const rows = await env.control(`log?since=${this.since}`);
    for (const e of rows) this.since = Math.max(this.since, e.id);
    return rows;
  } };
  try {
    const first = await open(true);
    for (let i = 1; i < TABS; i++) await open(false);
    const joined = await snapAll();
    x.check('5 tabs share one session', joined.every((s) => s.state === 'valid' && s.generation === joined[0].generation),
      joined.map((s) => `${s.state}/${s.generation}`).join(' '));
    x.figures.first = first;
    const t0 = Date.now();
    for (let c = 0; c < CYCLES.length; c++) {
      // Spread the closings over the run; the loops keep running in between.
      const at = ((c + 1) * D) / (CYCLES.length + 1);
      while (Date.now() - t0 < at) await sleep(Math.min(1000, at - (Date.now() - t0)));
      const grace = CYCLES[c];
      const round = { cycle: c + 1, grace };
      await env.control('config', { grace });
      await setPhase(`g${grace}`);
      const s0 = await env.stats();
      // Find the tab that holds the lock while its refresh is at the server: the refresh is
      // slowed to 1.5 s there (the rotation is committed at arrival); the page says which tab holds
      // the lock with a refresh fetch pending, the server's log that the request arrived (an entry
      // without done_ms). A fetch can also sit in Chromium's connection queue: that is not mid-refresh.
      await cursor.next();
      await env.control('latency', { path: '/auth/refresh-token', ms: 1500 });
      let holder = -1;
      let arrived = null;
      for (let i = 0; i < 200; i++) {
        const [flags, rows] = await Promise.all([
          Promise.all(tabs.map((p) => p.evaluate(() => window.__tb.holding > 0 && window.__tb.refreshing > 0))),
          cursor.next(),
        ]);
        const entry = rows.find((e) => e.path === '/auth/refresh-token' && e.done_ms == null);
        if (entry) arrived = { entry, at: Date.now() };
        holder = flags.indexOf(true);
        if (holder >= 0 && arrived && Date.now() - arrived.at < 1000) break;
        holder = -1;
        if (i === 120) { // ~6 s without a natural refresh: tab 0 is told its token was rejected
          round.forced = true;
          await tabs[0].evaluate(async () => { window.b.tokenRejected(await window.b.getAccessToken()).catch(() => {}); });
        }
        await sleep(50);
      }
      if (holder < 0) {
        round.error = 'no lock holder with its refresh at the server found';
        await env.control('latency', { path: '/auth/refresh-token', ms: 0 });
        rounds.push(round);
        x.check(`closing ${c + 1} (grace ${grace}): found the lock holder mid-refresh`, false, round.error);
        continue;
      }
      round.refreshEntry = arrived.entry.id;
      await sleep(200); // mid-refresh: the request is at the server (committed there), the answer 1.3 s away
      const gens = await Promise.all(tabs.map((p) => p.evaluate(() => window.b.generation)));
      const victim = tabs.splice(holder, 1)[0];
      const g0 = gens.splice(holder, 1)[0];
      const vs = await victim.evaluate(pageTabSnapshot).catch(() => null);
      if (vs) { closed.requests += vs.requests; closed.ok += vs.ok; addCounts(closed.failures, vs.failures); }
      const tClose = Date.now();
      await victim.close();
      await env.control('latency', { path: '/auth/refresh-token', ms: 0 });
      round.holder = holder;
      /** What became of the closed tab's refresh at the server ('rotated': committed, never seen). */
      const closedRefresh = async () => {
        await sleep(Math.max(0, 1700 - (Date.now() - tClose))); // its 1.5 s at the server are over
        const e = (await env.control(`log?since=${round.refreshEntry - 1}`)).find((r) => r.id === round.refreshEntry);
        // A request whose client went away keeps status 0 and no outcome in the log, even when it
        // rotated: the grace replay (grace 5) or the reuse (grace 0) that follows shows the commit.
        round.closedRefresh = e ? (e.status === 0 ? 'arrived, abandoned by the closed tab' : `${e.outcome} (status ${e.status})`) : 'not in the log';
        return e?.outcome ?? '';
      };
      if (grace > 0) {
        const rec = await Promise.all(tabs.map((p) => bounded(p.evaluate(pageTabRecover, { g0, capMs: 5000 }), 20000, 'tab recover')));
        round.recoverMs = Math.max(...rec.map((r) => r.ms));
        round.recoverNodeMs = Date.now() - tClose;
        round.statuses = rec.map((r) => r.status);
        round.adopted = rec.every((r) => r.adopted);
        const s1 = await env.stats();
        round.reuse = s1.reuse_detections - s0.reuse_detections;
        round.refreshCalls = s1.refresh_calls - s0.refresh_calls;
        round.graceReplays = s1.grace_replays - s0.grace_replays;
        reuseG5 += round.reuse;
        await closedRefresh();
        x.check(`closing ${c + 1} (grace 5): no reuse, every other tab's next call succeeds within 2 s`,
          round.reuse === 0 && round.statuses.every((s) => s === 200) && round.adopted && round.recoverMs < 2000,
          `reuse ${round.reuse}, grace replays ${round.graceReplays}, statuses ${round.statuses.join(',')}, new generation everywhere ${round.adopted}, recovery ${fmt(round.recoverMs)} ms`);
      } else {
        // Strict rotation: the closed tab's rotation was committed and never seen. Every tab must
        // end cleanly (expired everywhere, or valid), with nothing stuck refreshing; then a login recovers all.
        await sleep(REFRESH_TIMEOUT_MS); // the next refresh happens within the token's 2 s; the session ends
        const settled = await Promise.all(tabs.map((p) => bounded(p.evaluate(pageTabSettle, { capMs: REFRESH_TIMEOUT_MS + 3000 }), 20000, 'tab settle')));
        round.states = settled.map((s) => s.state);
        const s1 = await env.stats();
        round.reuse = s1.reuse_detections - s0.reuse_detections;
        round.refreshCalls = s1.refresh_calls - s0.refresh_calls;
        await closedRefresh();
        // The closed tab's rotation was committed and never seen: the next refresh presents a spent
        // token and the session ends in every tab (or, had the request not been processed, all carry on).
        const clean = round.states.every((s) => s === 'expired') || round.states.every((s) => s === 'valid');
        x.check(`closing ${c + 1} (grace 0): clean end everywhere, nothing stuck refreshing`, clean,
          `closed tab's refresh: ${round.closedRefresh}; states ${round.states.join(',')}, reuse ${round.reuse}`);
        if (round.states.some((s) => s !== 'valid')) {
          await tabs[0].evaluate(async () => { window.b.setTokens(await tb.login()); });
          const after = await Promise.all(tabs.map((p) => bounded(p.evaluate(async () => {
            for (let i = 0; i < 150 && window.b.state !== 'valid'; i++) await tb.sleep(20);
            const status = await window.api('/statistics').then((r) => r.status, (e) => e?.code ?? String(e));
            return { state: window.b.state, status };
          }), 20000, 'tab relogin')));
          round.afterLogin = after.map((a) => `${a.state}/${a.status}`);
          x.check(`closing ${c + 1} (grace 0): a login in one tab recovers every tab`, after.every((a) => a.state === 'valid' && a.status === 200),
            round.afterLogin.join(','));
        }
      }
      // A new tab takes the closed one's place (it joins the others' session).
      await open(false);
      rounds.push(round);
      log(`tabs closing ${c + 1} (grace ${grace}): ${JSON.stringify(round)}`);
    }
    while (Date.now() - t0 < D) await sleep(Math.min(1000, D - (Date.now() - t0)));
    await Promise.all(tabs.map((p) => p.evaluate(() => { window.L.stop = true; })));
    const stops = await Promise.all(tabs.map((p) => bounded(p.evaluate(async (cap) => {
      const t = performance.now();
      while (window.L.running > 0 && performance.now() - t < cap) await tb.sleep(20);
      return window.L.running;
    }, REFRESH_TIMEOUT_MS * 2 + 5000), 30000, 'tab stop')));
    const snaps = await snapAll();
    const all = { requests: closed.requests + sum(snaps.map((s) => s.requests)), ok: closed.ok + sum(snaps.map((s) => s.ok)), failures: { ...closed.failures } };
    for (const s of snaps) addCounts(all.failures, s.failures);
    const sEnd = await env.stats();
    const g5fail = Object.entries(all.failures).filter(([k]) => k.startsWith('g5:'));
    x.figures = { ...x.figures, seconds: (Date.now() - t0) / 1000, rounds, ...all, reuseAtGrace5: reuseG5, reuseTotal: sEnd.reuse_detections,
      refreshCalls: sEnd.refresh_calls, maxRequestMs: maxOf(snaps.map((s) => s.maxRequestMs)), unhandled: sum(snaps.map((s) => s.unhandled)) };
    x.check('reuse detections at grace 5 = 0', reuseG5 === 0, `${reuseG5}`);
    x.check('no tab hangs: every loop stopped', stops.every((r) => r === 0), stops.join(','));
    x.check('no unhandled rejection, no page error', x.figures.unhandled === 0 && env.pageErrors.length === 0,
      `${x.figures.unhandled}; ${env.pageErrors.slice(0, 3).join(' | ')}`);
    const g5 = rounds.filter((r) => r.grace > 0 && r.recoverMs != null);
    x.summary = [
      `${all.requests} requests in 5 tabs over ${fmt(x.figures.seconds)} s, failed: ${counts(all.failures)}`,
      `grace 5: ${g5.length} lock holders closed mid-refresh, recovery max ${fmt(maxOf(g5.map((r) => r.recoverMs)))} ms, reuse ${reuseG5}${g5fail.length ? '' : ', no failed call'}`,
      `grace 0: ${rounds.filter((r) => r.grace === 0).map((r) => `${[...new Set(r.states ?? [])].join('/')} → login ${r.afterLogin ? 'ok' : '—'}`).join('; ')}`,
      `refresh calls ${sEnd.refresh_calls}, max request ${fmt(x.figures.maxRequestMs)} ms`,
    ];
  } finally {
    await context.close().catch(() => {});
    await env.control('latency', { clear: true }).catch(() => {});
  }
  return x;
}

// ---------------------------------------------------------------------------------------------

function table(results) {
  const out = ['| experiment | key figures | invariants |', '|---|---|---|'];
  for (const r of results) {
    const passed = r.invariants.filter((i) => i.pass).length;
    const failed = r.invariants.filter((i) => !i.pass);
    const inv = failed.length ? `**FAIL ${failed.length}/${r.invariants.length}**: ${failed.map((i) => i.name).join('; ')}`
      : `PASS ${passed}/${r.invariants.length}`;
    out.push(`| ${r.name} | ${(r.summary ?? [r.error ?? '']).join('<br>')} | ${inv} |`);
  }
  return out.join('\n');
}

async function main() {
  const started = Date.now();
  const { minutes, only, seed } = ARGS;
  // A hard stop for the whole run: the experiments' own durations plus generous setup time.
  const budgetMs = (only.includes('waiters') ? 6 * MINUTE : 0) + (only.includes('soak') ? minutes * MINUTE + 2 * MINUTE : 0)
    + (only.includes('chaos') ? 1.5 * minutes * MINUTE + 4 * MINUTE : 0) + (only.includes('tabs') ? minutes * MINUTE + 5 * MINUTE : 0) + MINUTE;
  const watchdog = setTimeout(() => {
    console.error(`[soak] watchdog: the run exceeded ${Math.round(budgetMs / 1000)} s; stopping`);
    process.exit(3);
  }, budgetMs);
  watchdog.unref();
  log(`minutes ${minutes}, experiments ${only.join(', ')}, seed ${seed}, budget ${Math.round(budgetMs / 1000)} s`);
  const env = await startEnv();
  const results = [];
  const run = async (name, fn) => {
    env.pageErrors.length = 0;
    log(`== ${name}`);
    try {
      results.push(await fn());
    } catch (e) {
      const x = new Experiment(name);
      x.error = `error: ${e.message}`;
      x.check('completed', false, e.stack?.split('\n').slice(0, 3).join(' '));
      results.push(x);
    }
  };
  try {
    if (only.includes('waiters')) await run('waiters', () => expWaiters(env));
    if (only.includes('soak')) await run('soak', () => expSoak(env, minutes));
    if (only.includes('chaos')) {
      await run('chaos (grace 5)', () => chaosRun(env, { minutes, grace: 5, seed }));
      await run('chaos (grace 0)', () => chaosRun(env, { minutes: minutes / 2, grace: 0, seed }));
    }
    if (only.includes('tabs')) await run('tabs', () => expTabs(env, minutes));
  } finally {
    await env.stop();
  }
  const failed = results.flatMap((r) => r.invariants.filter((i) => !i.pass).map((i) => `${r.name}: ${i.name} (${i.detail})`));
  const doc = {
    date: new Date().toISOString(), minutes, only, seed, node: process.version, cpus: os.cpus().length, loadavg: os.loadavg(),
    seconds: (Date.now() - started) / 1000, results: results.map((r) => ({ name: r.name, summary: r.summary, figures: r.figures, invariants: r.invariants, notes: r.notes, error: r.error })),
    failed,
  };
  fs.mkdirSync(path.dirname(ARGS.out), { recursive: true });
  fs.writeFileSync(ARGS.out, `${JSON.stringify(doc, null, 2)}\n`);

  const out = [`### token-broker soak (${minutes} min, ${os.cpus().length} CPUs, ${fmt(doc.seconds)} s)`, '', table(results), ''];
  for (const r of results) {
    for (const i of r.invariants) out.push(`${i.pass ? 'PASS' : 'FAIL'}  ${r.name}: ${i.name}${i.detail ? ` — ${i.detail}` : ''}`);
    for (const n of r.notes) out.push(`note  ${r.name}: ${n}`);
  }
  out.push('', `results: ${ARGS.out}`);
  console.log(out.join('\n'));
  clearTimeout(watchdog);
  process.exitCode = failed.length ? 1 : 0;
}

main().catch((e) => { console.error(e); process.exit(1); });
