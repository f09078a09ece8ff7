// The benchmark page: five ways to give axios a token, each built the way its authors show it,
// plus the measurements that scripts/bench.mjs drives through `window.bench`.
import axios from 'axios';
import createAuthRefreshInterceptor from 'axios-auth-refresh';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';
import { createAuthFetch } from 'token-broker/fetch';

const DASHBOARD = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

async function login() {
  const res = await fetch('/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'demo', password: 'demo' }),
  });
  if (!res.ok) throw new Error(`login: ${res.status}`);
  return res.json();
}

// ---------------------------------------------------------------------------------------------
// The clients. Each `make*` takes the login answer and returns an axios instance.

/** Baseline: axios with the token as a default header; no refresh handling at all. */
function makePlain(tokens) {
  return axios.create({ headers: { Authorization: `Bearer ${tokens.access_token}` } });
}

/**
 * token-broker/axios as its README shows it.
 * - `expired: 'known'`: the broker holds the token and knows when it expires, but its timer has
 *   not fired yet (a tab waking from sleep). It is told the token lives 20 ms, with no leeway;
 *   `run()` then blocks the page past that moment, so the first request finds it expired.
 * - `expired: 'unknown'`: it is told the token is good for an hour, so only the server's 401s
 *   reveal the expiry (the path a revoked token or a lagging client clock takes).
 */
async function makeBroker(tokens, { expired = 'known' } = {}) {
  const known = expired === 'known';
  const broker = await createTokenBroker({
    refresh: { url: '/auth/refresh-token' },
    tokens: { ...tokens, expires_in: known ? 0.02 : 3600 },
    ...(known ? { leewaySeconds: 0 } : {}),
  });
  const api = axios.create();
  attachAxios(api, broker);
  api.broker = broker;
  if (known) api.expiresAt = performance.now() + 25;
  return api;
}

/** axios-auth-refresh 5 with its defaults, wired as its README shows (token in localStorage). */
function makeAxiosAuthRefresh(tokens, options = {}) {
  localStorage.setItem('token', tokens.access_token);
  localStorage.setItem('refreshToken', tokens.refresh_token);
  const api = axios.create();
  api.interceptors.request.use((request) => {
    request.headers.Authorization = `Bearer ${localStorage.getItem('token')}`;
    return request;
  });
  const refreshAuthLogic = (failedRequest) =>
    axios.post('/auth/refresh-token', { refresh_token: localStorage.getItem('refreshToken') })
      .then((tokenRefreshResponse) => {
        localStorage.setItem('token', tokenRefreshResponse.data.access_token);
        localStorage.setItem('refreshToken', tokenRefreshResponse.data.refresh_token);
        failedRequest.response.config.headers.Authorization = `Bearer ${tokenRefreshResponse.data.access_token}`;
        return Promise.resolve();
      });
  createAuthRefreshInterceptor(api, refreshAuthLogic, options);
  return api;
}

/**
 * The accepted answer of the original question, moved from Nuxt's `$axios` helpers to plain
 * axios interceptors; `store` stands in for its Vuex module. Tokens live in sessionStorage, the
 * first 401 sets `isRefreshing` and refreshes, every other 401 polls the flag every 100 ms and
 * replays once it clears. On a failed refresh the answer redirects to the login page: here the
 * request is rejected, and the flag stays set, as the page would be gone.
 */
function makePollingAnswer(tokens) {
  const store = {
    state: { auth: { isRefreshing: false } },
    commit(mutation, value) { if (mutation === 'auth/setRefreshing') this.state.auth.isRefreshing = value; },
  };
  const redirect = () => {}; // stand-in for Nuxt's redirect('/login')
  sessionStorage.setItem('authToken', tokens.access_token);
  sessionStorage.setItem('refreshToken', tokens.refresh_token);
  const $axios = axios.create();
  $axios.interceptors.request.use((config) => {
    const token = sessionStorage.getItem('authToken');
    if (token) config.headers.Authorization = `bearer ${token}`;
    return config;
  });
  $axios.interceptors.response.use((response) => response, async (error) => {
    const originalRequest = error.config;
    if (!error.response || error.response.status !== 401 || originalRequest.url === '/auth/refresh-token') {
      return Promise.reject(error);
    }
    if (!store.state.auth.isRefreshing) {
      store.commit('auth/setRefreshing', true);
      try {
        const { data } = await $axios.post('/auth/refresh-token', {
          refresh_token: sessionStorage.getItem('refreshToken'),
        });
        sessionStorage.setItem('authToken', data.access_token);
        sessionStorage.setItem('refreshToken', data.refresh_token);
        store.commit('auth/setRefreshing', false);
        return $axios(originalRequest);
      } catch (e) {
        redirect('/login');
        return Promise.reject(e);
      }
    }
    return new Promise((resolve, reject) => {
      const interval = setInterval(() => {
        if (!store.state.auth.isRefreshing) {
          clearInterval(interval);
          $axios(originalRequest).then(resolve, reject);
        }
      }, 100);
    });
  });
  return $axios;
}

/** The naive interceptor: every 401 refreshes with the refresh token it has, then replays once. */
function makeNaive(tokens) {
  const session = { access: tokens.access_token, refresh: tokens.refresh_token };
  const api = axios.create();
  api.interceptors.request.use((config) => {
    config.headers.Authorization = `Bearer ${session.access}`;
    return config;
  });
  api.interceptors.response.use((r) => r, async (error) => {
    const config = error.config;
    if (error.response?.status !== 401 || config._retry) throw error;
    config._retry = true;
    const { data } = await axios.post('/auth/refresh-token', { refresh_token: session.refresh });
    session.access = data.access_token;
    session.refresh = data.refresh_token;
    return api(config);
  });
  return api;
}

const MAKERS = {
  plain: makePlain,
  valid: makePlain, // run with a token the server still accepts
  broker: (t) => makeBroker(t, { expired: 'known' }),
  broker401: (t) => makeBroker(t, { expired: 'unknown' }),
  aar: (t) => makeAxiosAuthRefresh(t),
  polling: makePollingAnswer,
  naive: makeNaive,
};

// ---------------------------------------------------------------------------------------------
// Measurements.

/** Fires `n` parallel dashboard GETs; resolves when all settled or at `deadlineMs`. */
async function burst(api, n, deadlineMs) {
  let ok = 0; let failed = 0; let settled = 0; let last = 0;
  const statuses = {};
  const t0 = performance.now();
  const all = [];
  for (let i = 0; i < n; i++) {
    all.push(api.get(DASHBOARD[i % DASHBOARD.length]).then(
      () => { ok++; },
      (e) => { failed++; const k = e.response?.status ?? e.code ?? e.name; statuses[k] = (statuses[k] ?? 0) + 1; },
    ).finally(() => { settled++; last = performance.now(); }));
  }
  await Promise.race([Promise.all(all), sleep(deadlineMs)]);
  return { n, ok, failed, hung: n - settled, failures: statuses, makespanMs: settled === n ? last - t0 : null };
}

/** Builds the client `kind` from the tokens of `prepare()`, then fires the burst at once. */
async function run(kind, n, deadlineMs) {
  const api = await MAKERS[kind](window.tokens);
  const events = [];
  for (const type of ['refreshstart', 'refreshend']) api.broker?.addEventListener(type, () => events.push([type, performance.now()]));
  if (api.expiresAt) while (performance.now() < api.expiresAt); // no timer may run meanwhile
  const t0 = performance.now();
  const r = await burst(api, n, deadlineMs);
  if (events.length) r.brokerEventsMs = events.map(([type, t]) => [type, Math.round((t - t0) * 10) / 10]);
  return r;
}

/**
 * Round trips on a fresh session: one GET with a valid token, one refresh (medians of 5).
 * The ideal burst is one refresh round trip + the same burst with a valid token (the `valid`
 * client, which scripts/bench.mjs runs interleaved with the others).
 */
async function roundTrips() {
  const t = await login();
  const request = [];
  const api = makePlain(t);
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await api.get('/statistics');
    request.push(performance.now() - t0);
  }
  const refresh = [];
  let rt = t.refresh_token;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const { data } = await axios.post('/auth/refresh-token', { refresh_token: rt });
    refresh.push(performance.now() - t0);
    rt = data.refresh_token;
  }
  return { requestMs: median(request), refreshMs: median(refresh) };
}

// ---------------------------------------------------------------------------------------------
// Per-request cost, paired against fair baselines. No network: axios gets an adapter that
// answers at once, fetch a stub; both sides of a pair use the same one, so only the client-side
// work differs. The baseline is the same client setting the same header without the broker.

const STUB_RESPONSE = new Response(null, { status: 200 });
let capture = false; // while true, the transports record the Authorization header they were given
let seenAuth;
const axiosAdapter = (config) => {
  if (capture) seenAuth = config.headers.get('Authorization');
  return Promise.resolve({ data: {}, status: 200, statusText: 'OK', headers: {}, config, request: {} });
};
let lastInit; // kept, so that no engine may drop the baseline's `init` as dead code
const fetchStub = (input, init) => {
  lastInit = init;
  if (capture) seenAuth = init?.headers instanceof Headers ? init.headers.get('Authorization') : init?.headers?.Authorization;
  return Promise.resolve(STUB_RESPONSE);
};

/** The pairs: `base` and `broker` (or `alt`) are `() => Promise`, one request each. */
function perRequestSetups(broker, token, getBroker) {
  const setups = {};
  for (const abs of [false, true]) {
    const make = () => axios.create({ adapter: axiosAdapter, ...(abs ? { baseURL: location.origin } : {}) });
    const base = make();
    base.interceptors.request.use((config) => {
      config.headers.set('Authorization', `Bearer ${token}`);
      return config;
    });
    const brk = make();
    attachAxios(brk, broker);
    setups[abs ? 'axiosAbsolute' : 'axiosRelative'] = {
      base: () => base.get('/statistics'),
      broker: () => brk.get('/statistics'),
    };
  }
  const authFetch = createAuthFetch(broker, { fetch: fetchStub });
  const baseFetch = (input, init) => fetchStub(input, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${token}` } });
  const absolute = `${location.origin}/statistics`;
  setups.fetchRelative = { base: () => baseFetch('/statistics'), broker: () => authFetch('/statistics') };
  setups.fetchAbsolute = { base: () => baseFetch(absolute), broker: () => authFetch(absolute) };
  setups.getAccessToken = { base: () => Promise.resolve(token), broker: () => getBroker.getAccessToken() };
  return setups;
}

/**
 * Context, each against one setup's baseline (`vs`): other ways to give axios a token (valid
 * token), and the fetch baseline written as an `async` function (what any async wrapper costs).
 */
function perRequestOthers(tokens) {
  const out = {};
  for (const kind of ['plain', 'aar', 'polling', 'naive']) {
    const api = MAKERS[kind](tokens);
    api.defaults.adapter = axiosAdapter;
    out[kind] = { vs: 'axiosRelative', fn: () => api.get('/statistics') };
  }
  const token = tokens.access_token;
  const asyncFetch = async (input, init) => {
    const response = await fetchStub(input, { ...init, headers: { ...init?.headers, Authorization: `Bearer ${token}` } });
    return response;
  };
  out.fetchAsync = { vs: 'fetchRelative', fn: () => asyncFetch('/statistics') };
  return out;
}

async function timeLoop(fn, count) {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await fn();
  return ((performance.now() - t0) * 1000) / count;
}

/** Runs `fn` for at least `ms` (growing blocks); returns µs per call of the last block. */
async function warmUp(fn, ms) {
  const end = performance.now() + ms;
  let count = 500; let usPer;
  do {
    usPer = await timeLoop(fn, count);
    if (usPer * count < 20000) count *= 2;
  } while (performance.now() < end);
  return usPer;
}

/**
 * Per-request cost, driven by scripts/bench.mjs in three steps so that it can read the page's
 * main-thread CPU time around each block (the machine is shared: wall time counts the other
 * processes too). `perRequestSetup` builds the pairs, checks the headers, warms up and sizes the
 * blocks; `perRequestBlock(key, count)` runs `count` sequential awaited requests of one side
 * (key '' and count 0: an empty block, the cost of the measurement itself) and returns its wall
 * time in ms; `perRequestEnd` reports whether the fast path held and disposes.
 */
let PR = null;

async function perRequestSetup({ blockMs = 25, warmMs = 150 } = {}) {
  const tokens = window.tokens;
  const token = tokens.access_token;
  // A token the broker holds as good for an hour: the fast path is what is measured.
  const options = { refresh: { url: '/auth/refresh-token' }, tokens: { ...tokens, expires_in: 3600 } };
  const broker = await createTokenBroker(options);
  const getBroker = await createTokenBroker(options); // `getAccessToken` alone, on an unwrapped broker
  const events = [];
  for (const type of ['refreshstart', 'tokens', 'expired']) broker.addEventListener(type, () => events.push(type));
  // Counts the adapters' calls into the module (the slow path); 0 expected with a fresh token.
  const state = { slowCalls: 0 };
  const viaModule = broker.getAccessToken;
  broker.getAccessToken = function getAccessToken(...args) { state.slowCalls++; return viaModule.apply(this, args); };
  const setups = perRequestSetups(broker, token, getBroker);
  const alts = perRequestOthers(tokens);
  const fns = {};
  for (const [name, s] of Object.entries(setups)) { fns[`${name}:base`] = s.base; fns[`${name}:broker`] = s.broker; }
  for (const [k, alt] of Object.entries(alts)) fns[`${k}:alt`] = alt.fn;

  // Each side sends the same header.
  const headerCheck = {};
  capture = true;
  for (const [key, fn] of Object.entries(fns)) {
    if (key.startsWith('getAccessToken')) continue;
    seenAuth = undefined;
    await fn();
    headerCheck[key] = typeof seenAuth === 'string' && seenAuth.toLowerCase() === `bearer ${token}`.toLowerCase();
  }
  capture = false;
  const fastPathBefore = broker.fastPath?.t === token;

  // Warm-up (JIT), then block sizes: a (baseline, other side) pair takes about 2 × blockMs.
  const speed = {};
  for (const [key, fn] of Object.entries(fns)) speed[key] = await warmUp(fn, key.endsWith(':alt') ? warmMs / 2 : warmMs);
  const size = (a, b) => Math.max(200, Math.min(2e6, Math.round((2 * blockMs * 1000) / (a + b))));
  const counts = {};
  for (const name of Object.keys(setups)) counts[name] = size(speed[`${name}:base`], speed[`${name}:broker`]);
  for (const [k, alt] of Object.entries(alts)) counts[k] = size(speed[`${alt.vs}:base`], speed[`${k}:alt`]);
  PR = { broker, getBroker, token, events, state, fns };
  return { setups: Object.keys(setups), others: Object.fromEntries(Object.entries(alts).map(([k, a]) => [k, a.vs])),
    counts, warmUpUs: speed, headerCheck, fastPathBefore };
}

const noop = () => Promise.resolve();
async function perRequestBlock(key, count) {
  const fn = key ? PR.fns[key] : noop;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await fn();
  return performance.now() - t0;
}

function perRequestEnd() {
  const { broker, getBroker, token, events, state } = PR;
  const out = { fastPathAfter: broker.fastPath?.t === token, slowPathCalls: state.slowCalls, brokerEvents: events };
  broker.dispose();
  getBroker.dispose();
  PR = null;
  return out;
}

// ---------------------------------------------------------------------------------------------
// 10,000 waiters: one expired token, `n` getAccessToken() calls, one refresh.

/**
 * A fresh session and a broker whose token expired 1 ms after it was created; `n` calls start
 * before the refresh can answer (one synchronous loop). Times, from `performance.now()`:
 * the answer's arrival (Resource Timing of the refresh), its adoption (the `tokens` event fires
 * synchronously when the set is adopted, before any waiter resolves) and the last settlement.
 */
async function waiters(n = 10000) {
  const tokens = await login();
  const broker = await createTokenBroker({
    refresh: { url: '/auth/refresh-token' },
    tokens: { ...tokens, expires_in: 0.001 },
    leewaySeconds: 0,
  });
  let adoptedAt = null; let refreshEndAt = null; let refreshStarts = 0; let tokenEvents = 0;
  broker.addEventListener('tokens', () => { tokenEvents++; adoptedAt ??= performance.now(); });
  broker.addEventListener('refreshstart', () => { refreshStarts++; });
  broker.addEventListener('refreshend', () => { refreshEndAt ??= performance.now(); });
  const spin = performance.now() + 3;
  while (performance.now() < spin); // past the expiry, and no timer runs meanwhile
  performance.clearResourceTimings();

  let settled = 0; let failed = 0; let first; let mismatched = 0; let lastAt = 0; let firstAt = 0;
  let done;
  const allDone = new Promise((r) => { done = r; });
  const settle = () => { if (++settled === n) { lastAt = performance.now(); done(); } };
  const onToken = (t) => {
    if (first === undefined) { first = t; firstAt = performance.now(); } else if (t !== first) mismatched++;
    settle();
  };
  const onError = () => { failed++; settle(); };
  const t0 = performance.now();
  for (let i = 0; i < n; i++) broker.getAccessToken().then(onToken, onError);
  const issuedAt = performance.now();
  await Promise.race([allDone, sleep(20000)]);
  const answer = performance.getEntriesByType('resource').find((e) => e.name.endsWith('/auth/refresh-token'));
  const r = {
    n, settled, failed, mismatched, refreshStarts, tokenEvents,
    newToken: first !== undefined && first !== tokens.access_token,
    issueMs: issuedAt - t0,
    answeredMs: answer ? answer.responseEnd - t0 : null,
    adoptedMs: adoptedAt == null ? null : adoptedAt - t0,
    refreshEndMs: refreshEndAt == null ? null : refreshEndAt - t0,
    firstSettledMs: firstAt ? firstAt - t0 : null,
    lastSettledMs: lastAt ? lastAt - t0 : null,
    settleAfterAdoptMs: lastAt && adoptedAt != null ? lastAt - adoptedAt : null,
    adoptAfterAnswerMs: answer && adoptedAt != null ? adoptedAt - answer.responseEnd : null,
  };
  broker.dispose();
  return r;
}

/** The floor: `n` plain promises, each with one `.then`, resolved in one loop. */
async function waitersFloor(n = 10000) {
  const resolvers = [];
  let settled = 0; let lastAt = 0; let done;
  const allDone = new Promise((r) => { done = r; });
  const onToken = () => { if (++settled === n) { lastAt = performance.now(); done(); } };
  for (let i = 0; i < n; i++) new Promise((r) => { resolvers.push(r); }).then(onToken);
  const t0 = performance.now();
  for (const r of resolvers) r('token');
  await allDone;
  return lastAt - t0;
}

/** Logs in and stores the tokens for `client()`. */
async function prepare() {
  window.tokens = await login();
  return { expires_in: window.tokens.expires_in };
}

/**
 * DPoP's per-request cost (issue 13): the same sequential requests through `createAuthFetch` and
 * `attachAxios` with a bearer broker and with a DPoP broker (key in IndexedDB, loaded once), both
 * with a fresh token and the stub transports, so the difference is the proof: a `jti`, the claims,
 * and one WebCrypto ECDSA P-256 signature (async, off the main thread in Chromium). Also
 * `dpopProof()` alone. Wall clock (µs per request); medians of `rounds` blocks of `count`.
 */
async function dpopCost({ rounds = 15, count = 200 } = {}) {
  const tokens = window.tokens;
  const bearer = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens: { ...tokens, expires_in: 3600 } });
  const dpop = await createTokenBroker({ name: 'bench-dpop', dpop: true, refresh: { url: '/auth/refresh-token' } });
  dpop.setTokens({ ...tokens, token_type: 'DPoP', expires_in: 3600 });
  const proofs = [];
  const stub = (input, init) => { proofs.push(new Headers(init?.headers).get('DPoP')); return fetchStub(input, init); };
  const axiosFor = (b) => { const api = axios.create({ adapter: axiosAdapter }); attachAxios(api, b); return api; };
  const fns = {
    fetchBearer: ((f) => () => f('/statistics'))(createAuthFetch(bearer, { fetch: fetchStub })),
    fetchDpop: ((f) => () => f('/statistics'))(createAuthFetch(dpop, { fetch: stub })),
    axiosBearer: ((a) => () => a.get('/statistics'))(axiosFor(bearer)),
    axiosDpop: ((a) => () => a.get('/statistics'))(axiosFor(dpop)),
    proofAlone: () => dpop.dpopProof('GET', '/statistics', { accessToken: tokens.access_token }),
  };
  for (const fn of Object.values(fns)) await warmUp(fn, 100);
  const samples = Object.fromEntries(Object.keys(fns).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [k, fn] of Object.entries(fns).sort(() => Math.random() - 0.5)) samples[k].push(await timeLoop(fn, count));
  }
  const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
  const unique = new Set(proofs).size === proofs.length && proofs.every(Boolean);
  const out = { rounds, count, proofsUnique: unique, proofsChecked: proofs.length };
  for (const [k, xs] of Object.entries(samples)) out[k] = med(xs);
  await dpop.logout();
  bearer.dispose();
  dpop.dispose();
  return out;
}

window.bench = { prepare, run, roundTrips, perRequestSetup, perRequestBlock, perRequestEnd, waiters, waitersFloor, dpopCost };
window.benchReady = true;
