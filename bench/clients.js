// The benchmark page: five ways to give axios a token, each built the way its authors show it,
// plus the measurements that scripts/bench.mjs drives through `window.bench`.
import axios from 'axios';
import createAuthRefreshInterceptor from 'axios-auth-refresh';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';

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

/** Diagnostic: the axios adapter around a JS stand-in broker (no WebAssembly). */
function makeBrokerStub(tokens) {
  const token = tokens.access_token;
  const stub = {
    getAccessToken: () => Promise.resolve(token),
    tokenRejected: () => Promise.resolve(token),
    shouldRefreshOn401: () => true,
    allowsOrigin: (o) => o === location.origin,
  };
  const api = axios.create();
  attachAxios(api, stub);
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
  brokerStub: makeBrokerStub,
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

/** Per-request cost without network: an axios adapter that answers at once. */
async function overhead(kinds, { warmup = 2000, rounds = 10, perRound = 2000 } = {}) {
  const adapter = (config) => Promise.resolve({ data: '', status: 200, statusText: 'OK', headers: {}, config, request: {} });
  const apis = {};
  for (const kind of kinds) {
    // The broker gets a token it holds as valid for an hour: no refresh during the measurement.
    const api = await (kind === 'broker' ? MAKERS.broker401 : MAKERS[kind])(window.tokens);
    api.defaults.adapter = adapter;
    apis[kind] = api;
  }
  const run = async (api, count) => {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) await api.get(DASHBOARD[i & 3]);
    return ((performance.now() - t0) * 1000) / count;
  };
  for (const kind of kinds) await run(apis[kind], warmup);
  const samples = Object.fromEntries(kinds.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    const order = [...kinds].sort(() => Math.random() - 0.5);
    for (const kind of order) samples[kind].push(await run(apis[kind], perRound));
  }
  const out = Object.fromEntries(kinds.map((k) => [k, { usPerRequest: median(samples[k]), samples: samples[k], requests: warmup + rounds * perRound }]));
  if (apis.broker) {
    // Diagnostic: the broker alone, `await broker.getAccessToken()` with a valid token.
    const b = apis.broker.broker;
    const get = async (count) => {
      const t0 = performance.now();
      for (let i = 0; i < count; i++) await b.getAccessToken();
      return ((performance.now() - t0) * 1000) / count;
    };
    await get(warmup);
    const g = [];
    for (let r = 0; r < rounds; r++) g.push(await get(perRound));
    out.getAccessToken = { usPerCall: median(g), samples: g };
  }
  return out;
}

/** First `createTokenBroker` call of a fresh page: fetch + compile + instantiate the module. */
async function timeInit() {
  const t0 = performance.now();
  const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
  const ms = performance.now() - t0;
  broker.dispose();
  return ms;
}

/** Logs in and stores the tokens for `client()`. */
async function prepare() {
  window.tokens = await login();
  return { expires_in: window.tokens.expires_in };
}

window.bench = { prepare, run, roundTrips, overhead, timeInit };
window.benchReady = true;
