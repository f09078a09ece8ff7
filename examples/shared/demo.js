// What both example apps do, without a framework: the four dashboard calls, the Burst and
// Expire-now actions, the reference server's test controls, the words the pages show. The Vue
// dashboard (axios) and the React example (fetch) pass in how they GET a path; everything else
// here is the same for both. A store has `subscribe(fn)` and `getSnapshot()` (the same object
// until something changes): React reads it with useSyncExternalStore, Vue with a shallowRef.
import { countersOf, createTimeline } from './timeline.js';

/** The four statistics calls of the dashboard in the original question. */
export const ENDPOINTS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];

/** `plural(1, 'refresh')` → "1 refresh", `plural(2, 'refresh')` → "2 refreshes". */
export function plural(n, word, many) {
  const form = n === 1 ? word : many ?? (/(s|sh|ch|x)$/.test(word) ? `${word}es` : `${word}s`);
  return `${n} ${form}`;
}
/** Only the word: `noun(2, 'replay')` → "replays". */
export const noun = (n, word, many) => plural(n, word, many).replace(/^\S+ /, '');

/** The counters under each timeline: key, singular, plural. */
export const COUNTERS = [
  ['requests', 'request sent', 'requests sent'],
  ['unauthorized', '× 401', '× 401'],
  ['refreshes', 'refresh', 'refreshes'],
  ['replays', 'replay', 'replays'],
  ['nonces', 'nonce retry', 'nonce retries'], // DPoP only: `use_dpop_nonce` answered by sending once more
  ['failures', 'failed call', 'failed calls'],
];
/** The counters a page shows: the nonce retries only with DPoP on. */
export const countersFor = (dpop) => COUNTERS.filter(([k]) => dpop || k !== 'nonces');

/** The reference server's counters worth showing, from `GET /__control/stats`. */
export const SERVER_COUNTERS = [
  ['refresh_calls', 'refresh calls', 'refresh call'],
  ['refresh_ok', 'refreshes accepted', 'refresh accepted'],
  ['unauthorized_sent', '401s sent', '401 sent'],
  ['api_ok', 'API calls answered', 'API call answered'],
  ['reuse_detections', 'reuse detected', 'reuse detected'],
  ['revoked_families', 'families revoked', 'family revoked'],
  ['grace_replays', 'grace replays', 'grace replay'],
];

/** The server's DPoP counters (RFC 9449), shown with the DPoP switch on. */
export const DPOP_SERVER_COUNTERS = [
  ['dpop_proofs_accepted', 'DPoP proofs accepted', 'DPoP proof accepted'],
  ['dpop_nonce_challenges_rs', 'nonce challenges (API)', 'nonce challenge (API)'],
  ['dpop_nonce_challenges_as', 'nonce challenges (token endpoint)', 'nonce challenge (token endpoint)'],
  ['dpop_jkts', 'new DPoP keys', 'new DPoP key'],
];

/** Proofs the server refused for another reason than a stale or missing nonce (should stay 0). */
export const dpopRefused = (s) => (s?.dpop_proofs_rejected ?? 0) - (s?.dpop_nonce_challenges_rs ?? 0) - (s?.dpop_nonce_challenges_as ?? 0);

// ---------- the reference server's test controls (`--test-controls`) ----------
async function call(name, body) {
  const res = await fetch(`/__control/${name}`, body === undefined
    ? { cache: 'no-store' }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`/__control/${name}: ${res.status} ${await res.text()}`);
  return res.json();
}

export const control = {
  stats: () => call('stats'),
  config: () => call('config'),
  setConfig: (fields) => call('config', fields), // { access_ttl, grace, ... }: applies to new tokens
  clock: () => call('clock'),
  advanceClock: (ms) => call('clock', { advance_ms: ms }),
  dpop: () => call('dpop'), // { mode, nonces, ... }
  /** New DPoP nonces now ('as': the token endpoint's, 'rs': the API's, 'both'): the old ones stop at once. */
  rotateDpopNonces: (which = 'both') => call('dpop', { rotate: which }),
};

/** `after − before` of two `/__control/stats` answers (missing → {}). */
export function statsDelta(before, after) {
  if (!before || !after) return {};
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
}

/** Adds the counters of `b` to `a` (per-session totals of per-action deltas). */
export function addStats(a, b) {
  const out = { ...a };
  for (const [k, v] of Object.entries(b ?? {})) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** The unverified payload of a JWT (display only), or null. */
export function jwtClaims(token) {
  try {
    return JSON.parse(atob(String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

/**
 * "Expire now": moves the reference server's clock past the current access token's expiry. The
 * browser is not told, as after a laptop sleep: the next calls get 401.
 * @param {number|null} serverExpiresAtMs the token's `exp_ms` claim (the server's clock), if known
 */
export async function expireForServer(serverExpiresAtMs) {
  const [{ now_ms: serverNow }, config] = await Promise.all([control.clock(), control.config()]);
  const left = serverExpiresAtMs == null ? config.access_ttl * 1000 : serverExpiresAtMs - serverNow;
  return control.advanceClock(Math.max(0, Math.ceil(left)) + 1000);
}

/**
 * POST /auth/login with the page's own fetch (or `send`, e.g. a timeline's recording fetch).
 *
 * With a DPoP broker (`broker.dpop`), the login starts a DPoP session: the request carries a proof
 * (`broker.dpopProof`), the answer's nonce goes to the broker (`broker.dpopNonce(..., {
 * tokenEndpoint: true })`), and a 400 `use_dpop_nonce` (the server wants its nonce in the proof)
 * is answered by sending the login once more with a new proof (`onNonce` is told). The tokens are
 * then of type DPoP, bound to the broker's key: hand them to `broker.setTokens`.
 */
export async function login(username, password, { broker = null, send = (...a) => fetch(...a), onNonce = () => {} } = {}) {
  const url = '/auth/login';
  const post = async (attempt) => {
    const headers = { 'Content-Type': 'application/json' };
    if (broker?.dpop) headers.DPoP = await broker.dpopProof('POST', url);
    const res = await send(url, { method: 'POST', headers, body: JSON.stringify({ username, password }), demoKind: 'auth', demoCallId: 'login' });
    if (broker?.dpop) broker.dpopNonce(url, res.headers, { tokenEndpoint: true });
    const body = await res.json().catch(() => ({}));
    if (broker?.dpop && attempt === 1 && res.status === 400 && body.error === 'use_dpop_nonce') {
      onNonce();
      return post(2);
    }
    if (!res.ok) throw new Error(body.error_description ?? `login failed (${res.status})`);
    return body; // { access_token, refresh_token, expires_in, token_type: 'Bearer' | 'DPoP' }
  };
  return post(1);
}

/** A failed call in a few words: "401 access token expired", "SESSION_EXPIRED", … */
export function describeError(err) {
  const status = err?.status ?? err?.response?.status;
  const data = err?.body ?? err?.response?.data;
  if (status) return `${status} ${data?.error_description ?? data?.error ?? ''}`.trim();
  return err?.code ?? err?.message ?? String(err);
}

/** The broker's events as one line each, for the events list. */
export function eventText(ev) {
  switch (ev.type) {
    case 'tokens': return `new token set adopted (generation ${ev.generation})`;
    case 'refreshstart': return {
      rejected: 'refresh started: a request got 401',
      expiring: 'refresh started: the token had expired',
      proactive: 'refresh started before the token expires',
      anonymous: 'refresh started: no access token yet',
    }[ev.reason] ?? `refresh started (${ev.reason})`;
    case 'refreshend': return ev.ok ? 'refresh ok: waiting calls go on with the new token' : `refresh failed: ${ev.code}`;
    case 'expired': return 'session expired: the server rejected the refresh token';
    case 'stale401': return 'late 401 absorbed: replayed with the current token, no refresh';
    case 'logout': return 'logged out';
    default: return ev.message ?? JSON.stringify(ev);
  }
}
export const BROKER_EVENTS = ['tokens', 'refreshstart', 'refreshend', 'expired', 'stale401', 'logout'];

/** A tiny store: `set(patch)` merges and notifies; snapshots are frozen. */
export function createStore(initial) {
  let state = Object.freeze({ ...initial });
  const listeners = new Set();
  return {
    getSnapshot: () => state,
    subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); },
    set(patch) {
      state = Object.freeze({ ...state, ...(typeof patch === 'function' ? patch(state) : patch) });
      for (const fn of [...listeners]) fn();
    },
  };
}

const idlePanel = (path) => Object.freeze({ path, total: 0, ok: 0, fail: 0, value: null, gen: null, error: null });

/**
 * The dashboard: four panels, a timeline, and the actions. `get(path, callId)` is the app's own
 * client (axios or fetch through token-broker, or the naive interceptor) and resolves with the
 * JSON body; it must pass `callId` to the recorder so a replay is drawn under its call.
 */
export function createDashboard({ timeline = createTimeline() } = {}) {
  const store = createStore({
    busy: false,
    runCount: 0, // grows by one after every action (tests wait on it)
    panels: ENDPOINTS.map(idlePanel),
    last: null, // { label, rounds, counters, server (stats delta), at }
    session: {}, // server counters added up since the last login
  });

  const panel = (path, fn) => store.set((s) => ({ panels: s.panels.map((p) => (p.path === path ? Object.freeze(fn(p)) : p)) }));

  async function callPanel(path, get) {
    const id = timeline.beginCall(path);
    panel(path, (p) => ({ ...p, total: p.total + 1 }));
    try {
      const data = await get(path, id);
      timeline.endCall(id, true);
      panel(path, (p) => ({ ...p, ok: p.ok + 1, value: data?.value ?? null, gen: data?.gen ?? null }));
    } catch (err) {
      const error = describeError(err);
      timeline.endCall(id, false, error);
      panel(path, (p) => ({ ...p, fail: p.fail + 1, error }));
    }
  }

  /**
   * Fires the four calls `rounds` times, all at once, and keeps a summary of the run (the page's
   * counters and the server's, as differences over this run only).
   */
  async function run(get, { rounds = 1, label = 'reload' } = {}) {
    if (store.getSnapshot().busy) return null;
    store.set({ busy: true, panels: ENDPOINTS.map(idlePanel) });
    const before = await control.stats().catch(() => null);
    timeline.start();
    const jobs = [];
    for (let r = 0; r < rounds; r += 1) for (const path of ENDPOINTS) jobs.push(callPanel(path, get));
    await Promise.allSettled(jobs);
    timeline.stop();
    const server = statsDelta(before, await control.stats().catch(() => null));
    const last = Object.freeze({ label, rounds, counters: countersOf(timeline.getSnapshot()), server, at: Date.now() });
    store.set((s) => ({ busy: false, runCount: s.runCount + 1, last, session: addStats(s.session, server) }));
    return last;
  }

  /** Wraps a login (or any step that is not a burst) so its requests form the picture. */
  async function step(label, fn) {
    store.set({ busy: true });
    const before = await control.stats().catch(() => null);
    timeline.start();
    try {
      return await fn();
    } finally {
      timeline.stop();
      const server = statsDelta(before, await control.stats().catch(() => null));
      store.set((s) => ({ busy: false, session: label === 'login' ? server : addStats(s.session, server) }));
    }
  }

  return {
    timeline,
    getSnapshot: store.getSnapshot,
    subscribe: store.subscribe,
    run,
    step,
    panelState,
    reset: () => store.set({ panels: ENDPOINTS.map(idlePanel), last: null, session: {} }),
  };
}

export function panelState(p) {
  if (p.total === 0) return 'idle';
  if (p.ok + p.fail < p.total) return 'loading';
  if (p.fail === 0) return 'ok';
  return p.ok ? 'partial' : 'error';
}

/**
 * "Run the comparison": for each client, a fresh login, the access token expired for the server,
 * then the same burst; each run with its own timeline and the server's counters for that run only.
 * The runs go one after the other, so the server's counters of one never mix with the other's.
 *
 * @param {object[]} sides  `{ key, create(tokens, timeline) → Promise<{ get(path, callId), status(), close() }> }`
 * @param {{ rounds?: number, onUpdate?: (key, result) => void }} options
 */
export async function runComparison(sides, { rounds = 3, onUpdate = () => {} } = {}) {
  const results = {};
  for (const side of sides) {
    const timeline = createTimeline();
    const result = { key: side.key, phase: 'login', timeline, rounds };
    onUpdate(side.key, { ...result });
    const before = await control.stats();
    const tokens = await login('demo', 'demo');
    const client = await side.create(tokens, timeline);
    try {
      result.phase = 'expire';
      onUpdate(side.key, { ...result });
      await expireForServer(jwtClaims(tokens.access_token)?.exp_ms ?? null);
      result.phase = 'burst';
      onUpdate(side.key, { ...result });
      const dashboard = createDashboard({ timeline });
      await dashboard.run(client.get, { rounds, label: 'burst' });
      const last = dashboard.getSnapshot().last;
      result.counters = last.counters;
      result.panels = dashboard.getSnapshot().panels.map(panelState);
      result.status = client.status();
      result.server = statsDelta(before, await control.stats());
      result.phase = 'done';
    } catch (err) {
      result.phase = 'error';
      result.error = err.message;
    } finally {
      await client.close().catch(() => {});
    }
    results[side.key] = result;
    onUpdate(side.key, { ...result });
  }
  return results;
}
