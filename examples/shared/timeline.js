// The timeline model both example apps draw (Vue + axios in examples/dashboard, React + fetch in
// examples/react). Framework-free and dependency-free: a small store with `subscribe()` and
// `getSnapshot()` (the same object until something changes, so React's useSyncExternalStore and a
// Vue shallowRef can both hold it), plus `layoutTimeline()`, which turns a snapshot into SVG
// geometry that each framework only has to render.
//
// What is recorded: every HTTP request the page's API client puts on the wire (the first attempt
// and the replay of each call, the naive client's refreshes), the "calls" the app made (one per
// panel request, so a replay is drawn as the second attempt of the same call), and the broker's
// refresh, from its `refreshstart`/`refreshend` events.

export const now = () => performance.now();

/** Display only: the refresh generation the reference server writes into its JWTs (`gen`). */
export function tokenGeneration(authorization) {
  const token = String(authorization ?? '').replace(/^Bearer\s+/i, '');
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).gen ?? null;
  } catch {
    return null;
  }
}

/** Why the broker refreshed, in words (the `reason` of its `refreshstart` event). */
export const REFRESH_REASONS = {
  rejected: 'after a 401',
  expiring: 'token had expired',
  proactive: 'before expiry',
  anonymous: 'no token yet',
};
const SHORT_REASONS = { rejected: '401', expiring: 'expired', proactive: 'early', anonymous: 'no token' };
export const refreshReason = (reason) => REFRESH_REASONS[reason] ?? reason ?? '';

/**
 * A new, empty timeline.
 *
 * While an action runs (`start()` … `stop()`: a login, a burst), every request goes into its
 * picture. Requests between actions (the broker's proactive refresh, a logout) go to `background`
 * so the last picture and its counters stay as they were; one still running when the next action
 * starts (a refresh the burst then waits for) moves into the new picture.
 */
export function createTimeline() {
  let t0 = now();
  let end = null;
  let running = false;
  let rows = []; // { id, kind: 'api'|'refresh'|'auth', method, url, start, end, status, error, callId, attempt, replayOf, callStart, gen, reason }
  let calls = []; // { id, url, start, end, ok, error }
  let background = []; // the last 20 rows recorded between actions
  let seq = 0;
  let snapshot = null;
  const listeners = new Set();
  let queued = false;

  function changed() {
    snapshot = null;
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      for (const fn of [...listeners]) fn();
    });
  }

  function getSnapshot() {
    snapshot ??= Object.freeze({
      t0,
      end,
      running,
      rows: rows.map((r) => Object.freeze({ ...r })),
      calls: calls.map((c) => Object.freeze({ ...c })),
      background: background.map((r) => Object.freeze({ ...r })),
    });
    return snapshot;
  }

  function subscribe(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  }

  /** Starts a new picture (each user action gets its own). */
  function start() {
    t0 = now();
    end = null;
    running = true;
    rows = background.filter((r) => r.end === null);
    background = background.filter((r) => r.end !== null);
    calls = [];
    changed();
  }

  /** Ends the picture: later requests go to `background`. */
  function stop() {
    running = false;
    end = now();
    changed();
  }

  function beginCall(url) {
    const call = { id: ++seq, url, start: now(), end: null, ok: null, error: null };
    calls.push(call);
    changed();
    return call.id;
  }

  function endCall(id, ok, error = null) {
    const call = calls.find((c) => c.id === id);
    if (!call) return;
    Object.assign(call, { end: now(), ok, error });
    changed();
  }

  /** A request went on the wire. `callId` links a replay to its first attempt. Returns the row's id. */
  function beginRequest({ kind = 'api', method = 'GET', url, callId = null, gen = null, reason = null }) {
    const earlier = callId == null ? [] : rows.filter((r) => r.callId === callId);
    const call = callId == null ? null : calls.find((c) => c.id === callId);
    const row = {
      id: ++seq,
      kind,
      method: String(method).toUpperCase(),
      url,
      start: now(),
      end: null,
      status: null,
      error: null,
      callId,
      attempt: earlier.length + 1,
      replayOf: earlier.length ? earlier[earlier.length - 1].id : null,
      callStart: call?.start ?? null,
      gen,
      reason,
    };
    const list = running ? rows : background;
    list.push(row);
    if (!running && list.length > 20) list.shift();
    changed();
    return row.id;
  }

  /** Its answer arrived (`status` 0 = no answer: network error, abort). */
  function endRequest(id, { status, error = null }) {
    const row = rows.find((r) => r.id === id) ?? background.find((r) => r.id === id);
    if (!row) return;
    Object.assign(row, { end: now(), status, error });
    changed();
  }

  /**
   * Draws the broker's refreshes from its events: one row from `refreshstart` to `refreshend`.
   * Returns the function that stops listening.
   */
  function attachBroker(broker, url = '/auth/refresh-token') {
    let open = null;
    const offStart = broker.addEventListener('refreshstart', (ev) => {
      open = beginRequest({ kind: 'refresh', method: 'POST', url, reason: ev.reason ?? null });
    });
    const offEnd = broker.addEventListener('refreshend', (ev) => {
      if (open === null) return;
      endRequest(open, { status: ev.ok ? 200 : 400, error: ev.ok ? null : ev.code ?? 'failed' });
      open = null;
    });
    return () => { offStart(); offEnd(); };
  }

  /**
   * A fetch that records what it sends: pass it to `createAuthFetch(broker, { fetch })`. It sits
   * under the broker, so a request that waits for a token is recorded when it is really sent,
   * and a replay as a second request of the same call (`init.demoCallId`).
   */
  function recordingFetch(send = (...args) => globalThis.fetch(...args), kind = 'api') {
    return async function recordedFetch(input, init = {}) {
      const headers = new Headers(init.headers);
      const { demoCallId = null, demoKind = kind, demoReason = null, ...rest } = init;
      const id = beginRequest({
        kind: demoKind,
        reason: demoReason,
        method: rest.method ?? 'GET',
        url: typeof input === 'string' ? input : String(input?.url ?? input),
        callId: demoCallId,
        gen: tokenGeneration(headers.get('Authorization')),
      });
      try {
        const response = await send(input, rest);
        let error = null;
        if (!response.ok) {
          try { const body = await response.clone().json(); error = body.cause ?? body.error ?? null; } catch { /* not JSON */ }
        }
        endRequest(id, { status: response.status, error });
        return response;
      } catch (err) {
        endRequest(id, { status: 0, error: err?.name === 'AbortError' ? 'aborted' : String(err?.message ?? err) });
        throw err;
      }
    };
  }

  return { getSnapshot, subscribe, start, stop, beginCall, endCall, beginRequest, endRequest, attachBroker, recordingFetch };
}

/** The numbers under the picture: what the page saw during the last action. */
export function countersOf(snap) {
  const api = snap.rows.filter((r) => r.kind === 'api');
  return {
    requests: api.length,
    unauthorized: api.filter((r) => r.status === 401).length,
    refreshes: snap.rows.filter((r) => r.kind === 'refresh').length,
    replays: api.filter((r) => r.attempt > 1).length,
    failures: snap.calls.filter((c) => c.ok === false).length,
  };
}

/**
 * Did this first attempt really wait for a token? Only if a refresh was running at some point
 * between the call's start and the moment the request went out, and ended before it went out
 * (the broker holds calls while it refreshes). A call sent at once, with a fresh token, did not
 * wait, however busy the page was.
 */
export function waitedForToken(row, rows) {
  if (row.kind !== 'api' || row.attempt !== 1 || row.callStart == null) return false;
  return rows.some((f) => f.kind === 'refresh' && f.end !== null
    && f.start < row.start && f.end <= row.start && f.end > row.callStart);
}

const shortPath = (url, narrow) => {
  const path = String(url).replace(/^https?:\/\/[^/]+/, '').replace(/^\//, '');
  return narrow ? path.replace(/statistics/g, 'stats') : path;
};

/**
 * SVG geometry for a snapshot: x is time since the action started, one row per request.
 * @param {{ rows: object[], t0: number, end?: number|null }} snap
 * @param {{ width: number, now?: number, rowHeight?: number, labelWidth?: number }} options
 */
export function layoutTimeline(snap, { width, now: at = now(), rowHeight = 15, labelWidth = 178 } = {}) {
  const TOP = 20;
  const w = Math.max(200, Math.floor(width));
  const label = Math.min(labelWidth, Math.round(w * 0.34));
  const narrow = label < 150;
  const until = snap.end ?? at;
  const sorted = [...snap.rows].sort((a, b) => a.start - b.start || a.id - b.id);
  const index = new Map(sorted.map((r, i) => [r.id, i]));
  const last = sorted.reduce((m, r) => Math.max(m, r.end ?? until, r.start), snap.t0);
  const span = Math.max(20, last - snap.t0);
  const plot = w - label - 34;
  const x = (t) => label + (Math.max(0, t - snap.t0) / span) * plot;
  const y = (i) => TOP + i * rowHeight;
  const barH = Math.max(5, rowHeight - 5);
  const height = TOP + Math.max(1, sorted.length) * rowHeight + 8;

  const raw = span / (narrow ? 4 : 6);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const fmt = (ms) => (step >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 ? 1 : 0)} s` : `${Math.round(ms)} ms`);
  const ticks = [];
  for (let t = 0; t <= span + 1e-6; t += step) ticks.push({ t, x: x(snap.t0 + t), label: fmt(t) });

  const colour = (r) => {
    if (r.kind === 'socket') {
      if (r.status === null) return 'var(--tl-socket)'; // open
      return r.status === 4001 || r.status === 4401 ? 'var(--tl-unauth)' : 'var(--tl-pending)';
    }
    if (r.status === null) return 'var(--tl-pending)';
    if (r.status >= 200 && r.status < 300) return r.kind === 'refresh' ? 'hatch' : 'var(--tl-ok)'; // hatch: the component's own pattern
    if (r.status === 401) return 'var(--tl-unauth)';
    return 'var(--tl-fail)';
  };
  const text = (r) => {
    if (r.kind === 'refresh') {
      if (!r.reason) return 'refresh';
      return `refresh (${narrow ? SHORT_REASONS[r.reason] ?? r.reason : refreshReason(r.reason)})`;
    }
    if (r.kind === 'auth') return `${r.url.replace(/^\/auth\//, '')}`;
    if (r.kind === 'socket') return r.url; // "socket #2"
    return r.attempt > 1 ? `↻ ${shortPath(r.url, narrow)}` : shortPath(r.url, narrow);
  };
  const title = (r) => {
    const took = r.end === null ? 'pending' : `${Math.round(r.end - r.start)} ms`;
    const status = r.status === null ? '…' : r.status === 0 ? `no response (${r.error})` : r.status;
    if (r.kind === 'socket') {
      return `${r.url}: ${r.end === null ? 'open' : `closed ${r.status}${r.error ? ` ${r.error}` : ''}`} · ${took}`;
    }
    const parts = [`${r.method} ${r.url} → ${status}`, took];
    if (r.kind === 'api') parts.push(r.attempt > 1 ? 'replay' : 'first attempt');
    if (r.kind === 'refresh' && r.reason) parts.push(refreshReason(r.reason));
    if (r.gen != null) parts.push(`token generation ${r.gen}`);
    if (r.error && r.status) parts.push(r.error);
    return parts.join(' · ');
  };

  const rows = sorted.map((r, i) => {
    const x1 = x(r.start);
    const x2 = x(r.end ?? until);
    const waited = waitedForToken(r, sorted);
    return {
      id: r.id,
      kind: r.kind,
      status: r.status,
      attempt: r.attempt,
      y: y(i),
      stripe: i % 2 === 1,
      label: text(r),
      title: title(r),
      bar: { x: x1, width: Math.max(2, x2 - x1), fill: colour(r) },
      statusText: r.status === null ? '' : String(r.status),
      statusX: x2 + 4,
      wait: waited ? { x1: x(r.callStart), x2: x1 } : null,
    };
  });

  const arrows = sorted.filter((r) => r.replayOf != null && index.has(r.replayOf)).map((r) => {
    const prevIndex = index.get(r.replayOf);
    const prev = sorted[prevIndex];
    const x1 = x(prev.end ?? until), y1 = y(prevIndex) + barH / 2;
    const x2 = x(r.start), y2 = y(index.get(r.id)) + barH / 2;
    const mid = Math.max(x1, x2 - 8);
    return { id: r.id, d: `M${x1},${y1} C${mid},${y1} ${x2 - 14},${y2} ${x2 - 2},${y2}` };
  });

  const legend = LEGEND.filter((l) => (l.key === 'wait' ? rows.some((r) => r.wait)
    : l.key === 'socket' ? sorted.some((r) => r.kind === 'socket') : true));
  return { width: w, height, top: TOP, labelWidth: label, narrow, rowHeight, barH, ticks, rows, arrows, legend, count: sorted.length };
}

/** The legend under a timeline; `layoutTimeline` keeps `wait` and `socket` only where they occur. */
export const LEGEND = [
  { key: 'ok', text: '200' },
  { key: 'unauth', text: '401' },
  { key: 'fail', text: 'error' },
  { key: 'refresh', text: 'refresh' },
  { key: 'arrow', text: 'replay' },
  { key: 'wait', text: 'held until the refresh ended' },
  { key: 'socket', text: 'WebSocket open' },
];
