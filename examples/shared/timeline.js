// The timeline model both example apps draw (Vue + axios in examples/dashboard, React + fetch in
// examples/react). Framework-free and dependency-free: a small store with `subscribe()` and
// `getSnapshot()` (the same object until something changes, so React's useSyncExternalStore and a
// Vue shallowRef can both hold it), plus `layoutTimeline()`, which turns a snapshot into SVG
// geometry that each framework only has to render.
//
// What is recorded: every HTTP request the page's API client puts on the wire (the first attempt
// and the replay of each call, the naive client's refreshes), the "calls" the app made (one per
// panel request, so a replay is drawn as the second attempt of the same call), and the broker's
// refresh, from its `refreshstart`/`refreshend` events. With DPoP (RFC 9449) each request also
// says how it was sent (`Authorization: DPoP` + a proof, or `Bearer`), and a `use_dpop_nonce`
// challenge is drawn as such, with the request it made the client send again; the broker's own
// token requests are drawn too (see `attachBroker`).

export const now = () => performance.now();

/** The unverified payload of a JWT (display only), or null. */
function jwtPayload(jwt) {
  try {
    return JSON.parse(atob(String(jwt).split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

/** Display only: the refresh generation the reference server writes into its JWTs (`gen`). */
export function tokenGeneration(authorization) {
  return jwtPayload(String(authorization ?? '').replace(/^(Bearer|DPoP)\s+/i, ''))?.gen ?? null;
}

/**
 * How a request went out, from its headers (`get(name)`): `scheme` 'DPoP' (the token bound to the
 * page's key, with a proof), 'Bearer', or null (no token: a login, the token endpoint); `proof`
 * `{ nonce }` when a `DPoP` proof header went along (`nonce`: it carried a server nonce); `gen`.
 */
export function sentWith(get) {
  const authorization = get('Authorization');
  const scheme = /^DPoP\s/i.test(authorization ?? '') ? 'DPoP' : /^Bearer\s/i.test(authorization ?? '') ? 'Bearer' : null;
  const proof = get('DPoP');
  return {
    scheme: scheme ?? (proof ? 'DPoP' : null),
    proof: proof ? { nonce: jwtPayload(proof)?.nonce !== undefined } : null,
    gen: tokenGeneration(authorization),
  };
}

/**
 * What an answer says about DPoP, from its status, headers (`get(name)`) and JSON body:
 * `challenge` 'nonce' for a `use_dpop_nonce` (the API's 401 `WWW-Authenticate: DPoP
 * error="use_dpop_nonce"`, the token endpoint's 400 `{"error":"use_dpop_nonce"}`), and `nonce`:
 * whether it handed out a nonce (`DPoP-Nonce`).
 */
export function answeredWith(status, get, body) {
  const nonceAsked = (status === 401 && /error="?use_dpop_nonce/i.test(get('WWW-Authenticate') ?? ''))
    || (status === 400 && body?.error === 'use_dpop_nonce');
  return { challenge: nonceAsked ? 'nonce' : null, nonce: Boolean(get('DPoP-Nonce')) };
}

// One wrapper around the page's fetch for every `attachBroker` that wants the broker's own token
// requests (the built-in `refresh: { url }` POSTs with the global fetch). Demo only: an app has no
// reason to do this.
const fetchWatchers = new Set();
function watchGlobalFetch(watcher) {
  if (!globalThis.fetch.demoWatched) {
    const original = globalThis.fetch;
    const watched = async function fetch(input, init) {
      const seen = [...fetchWatchers].map((w) => w(input, init)).filter(Boolean);
      try {
        const response = await original.call(globalThis, input, init);
        for (const s of seen) s.answer(response);
        return response;
      } catch (err) {
        for (const s of seen) s.fail(err);
        throw err;
      }
    };
    watched.demoWatched = true;
    globalThis.fetch = watched;
  }
  fetchWatchers.add(watcher);
  return () => fetchWatchers.delete(watcher);
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
  // { id, kind: 'api'|'refresh'|'token'|'auth'|'socket', method, url, start, end, status, error, callId, attempt,
  //   replayOf, retry: null|'replay'|'nonce', callStart, gen, reason, scheme, proof, challenge, nonce }
  let rows = [];
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

  /**
   * A request went on the wire. `callId` links a replay (or a DPoP nonce retry) to its first
   * attempt; `scheme` and `proof` say how it was sent (see `sentWith`). Returns the row's id.
   */
  function beginRequest({ kind = 'api', method = 'GET', url, callId = null, gen = null, reason = null, scheme = null, proof = null }) {
    const earlier = callId == null ? [] : rows.filter((r) => r.callId === callId);
    const call = callId == null ? null : calls.find((c) => c.id === callId);
    const previous = earlier[earlier.length - 1];
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
      replayOf: previous?.id ?? null,
      // Why it was sent again: the server asked for its DPoP nonce, or the token was renewed.
      retry: previous ? (previous.challenge === 'nonce' ? 'nonce' : 'replay') : null,
      callStart: call?.start ?? null,
      gen,
      reason,
      scheme,
      proof,
      challenge: null,
      nonce: false,
    };
    const list = running ? rows : background;
    list.push(row);
    if (!running && list.length > 20) list.shift();
    changed();
    return row.id;
  }

  /**
   * Its answer arrived (`status` 0 = no answer: network error, abort); `challenge` 'nonce' for a
   * DPoP `use_dpop_nonce`, `nonce` whether it carried a `DPoP-Nonce` (see `answeredWith`).
   */
  function endRequest(id, { status, error = null, challenge = null, nonce = false }) {
    const row = rows.find((r) => r.id === id) ?? background.find((r) => r.id === id);
    if (!row) return;
    Object.assign(row, { end: now(), status, error, challenge, nonce });
    // The request sent again may have gone out before this answer was read to the end.
    for (const later of [...rows, ...background]) if (later.replayOf === id && challenge === 'nonce') later.retry = 'nonce';
    changed();
  }

  /**
   * Draws the broker's refreshes from its events: one row from `refreshstart` to `refreshend`.
   * With a DPoP broker, also the HTTP requests of each refresh at the token endpoint (rows of kind
   * 'token' under it: a 400 `use_dpop_nonce` and the request sent again with the nonce), seen by
   * watching the page's `fetch`, which the built-in refresh (`refresh: { url }`) posts with: only
   * POSTs to `url` that carry a DPoP proof, so the other (bearer) brokers of the page are not
   * drawn here. Returns the function that stops listening.
   */
  function attachBroker(broker, url = '/auth/refresh-token') {
    let open = null;
    let flight = 0; // the HTTP requests of one refresh are the attempts of one "call"
    const offStart = broker.addEventListener('refreshstart', (ev) => {
      open = beginRequest({ kind: 'refresh', method: 'POST', url, reason: ev.reason ?? null });
    });
    const offEnd = broker.addEventListener('refreshend', (ev) => {
      flight += 1;
      if (open === null) return;
      endRequest(open, { status: ev.ok ? 200 : 400, error: ev.ok ? null : ev.code ?? 'failed' });
      open = null;
    });
    const endpoint = new URL(url, globalThis.location?.href).href;
    const offWatch = !broker.dpop ? () => {} : watchGlobalFetch((input, init) => {
      const request = input instanceof Request ? input : null;
      const headers = new Headers(init?.headers ?? request?.headers);
      const method = String(init?.method ?? request?.method ?? 'GET').toUpperCase();
      const target = new URL(request ? request.url : String(input), globalThis.location?.href).href;
      if (method !== 'POST' || target !== endpoint || !headers.has('DPoP')) return null;
      const id = beginRequest({ kind: 'token', method, url, callId: `token-endpoint-${flight}`, ...sentWith((n) => headers.get(n)) });
      return {
        async answer(response) {
          let body = null;
          if (!response.ok) try { body = await response.clone().json(); } catch { /* not JSON */ }
          const get = (n) => response.headers.get(n);
          endRequest(id, { status: response.status, error: body?.error ?? null, ...answeredWith(response.status, get, body) });
        },
        fail(err) { endRequest(id, { status: 0, error: err?.name === 'AbortError' ? 'aborted' : String(err?.message ?? err) }); },
      };
    });
    return () => { offStart(); offEnd(); offWatch(); };
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
        ...sentWith((n) => headers.get(n)),
      });
      try {
        const response = await send(input, rest);
        let body = null;
        if (!response.ok) {
          try { body = await response.clone().json(); } catch { /* not JSON */ }
        }
        const error = body?.cause ?? body?.error ?? null;
        endRequest(id, { status: response.status, error, ...answeredWith(response.status, (n) => response.headers.get(n), body) });
        return response;
      } catch (err) {
        endRequest(id, { status: 0, error: err?.name === 'AbortError' ? 'aborted' : String(err?.message ?? err) });
        throw err;
      }
    };
  }

  return { getSnapshot, subscribe, start, stop, beginCall, endCall, beginRequest, endRequest, attachBroker, recordingFetch };
}

/**
 * The numbers under the picture: what the page saw during the last action. A DPoP nonce challenge
 * is no verdict on the token: it counts as a nonce retry, not as a 401 (as the server counts), and
 * the request it made the client send again is no replay.
 */
export function countersOf(snap) {
  const api = snap.rows.filter((r) => r.kind === 'api');
  return {
    requests: api.length,
    unauthorized: api.filter((r) => r.status === 401 && r.challenge !== 'nonce').length,
    refreshes: snap.rows.filter((r) => r.kind === 'refresh').length,
    replays: api.filter((r) => r.retry === 'replay').length,
    nonces: snap.rows.filter((r) => r.challenge === 'nonce').length,
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

/** The badge of a request sent with a token or a proof: how it was sent. */
const BADGES = { DPoP: { text: 'DPoP', cls: 'dpop' }, Bearer: { text: 'Bearer', cls: 'bearer' } };

/**
 * SVG geometry for a snapshot: x is time since the action started, one row per request.
 * `badges`: a column on the left that says for each request whether it went out as DPoP (token +
 * proof) or Bearer.
 * @param {{ rows: object[], t0: number, end?: number|null }} snap
 * @param {{ width: number, now?: number, rowHeight?: number, labelWidth?: number, badges?: boolean }} options
 */
export function layoutTimeline(snap, { width, now: at = now(), rowHeight = 15, labelWidth = 178, badges = false } = {}) {
  const TOP = 20;
  const w = Math.max(200, Math.floor(width));
  const narrow = Math.min(labelWidth, Math.round(w * 0.34)) < 150;
  const badgeWidth = badges ? (narrow ? 36 : 44) : 0;
  const label = Math.min(labelWidth, Math.round(w * 0.34)) + badgeWidth; // where the labels end and time begins
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
    if (r.challenge === 'nonce') return 'var(--tl-nonce)';
    if (r.status === 401) return 'var(--tl-unauth)';
    return 'var(--tl-fail)';
  };
  const text = (r) => {
    if (r.kind === 'refresh') {
      if (!r.reason) return 'refresh';
      return `refresh (${narrow ? SHORT_REASONS[r.reason] ?? r.reason : refreshReason(r.reason)})`;
    }
    if (r.kind === 'auth') return `${r.url.replace(/^\/auth\//, '')}`;
    if (r.kind === 'token') return `${r.attempt > 1 ? '↻' : '↳'} ${shortPath(r.url).replace(/^auth\//, '')}`;
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
    if (r.kind === 'api' || r.kind === 'token') {
      parts.push(r.retry === 'nonce' ? 'sent again with the server\'s new DPoP nonce' : r.retry === 'replay' ? 'replay' : 'first attempt');
    }
    if (r.kind === 'refresh' && r.reason) parts.push(refreshReason(r.reason));
    if (r.scheme === 'DPoP') parts.push(`sent as DPoP: ${r.kind === 'token' ? 'a proof' : 'token + proof'}${r.proof?.nonce ? ' with the server\'s nonce' : ' without a nonce'}`);
    if (r.scheme === 'Bearer') parts.push('sent as Bearer: the token alone');
    if (r.gen != null) parts.push(`token generation ${r.gen}`);
    if (r.challenge === 'nonce') parts.push(`use_dpop_nonce: the server wants its nonce in the proof${r.nonce ? ' (a new one came with this answer, in DPoP-Nonce)' : ''}`);
    else if (r.error && r.status) parts.push(r.error);
    return parts.join(' · ');
  };

  const rows = sorted.map((r, i) => {
    const x1 = x(r.start);
    const x2 = x(r.end ?? until);
    const waited = waitedForToken(r, sorted);
    const badge = badges && BADGES[r.scheme];
    return {
      id: r.id,
      kind: r.kind,
      status: r.status,
      attempt: r.attempt,
      retry: r.retry ?? null,
      scheme: r.scheme ?? null,
      challenge: r.challenge ?? null,
      badge: badge ? { ...badge, x: 1, width: badgeWidth - 8 } : null,
      y: y(i),
      stripe: i % 2 === 1,
      label: text(r),
      title: title(r),
      bar: { x: x1, width: Math.max(2, x2 - x1), fill: colour(r) },
      statusText: r.status === null ? '' : r.challenge === 'nonce' ? `${r.status} nonce` : String(r.status),
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
    return { id: r.id, nonce: r.retry === 'nonce', d: `M${x1},${y1} C${mid},${y1} ${x2 - 14},${y2} ${x2 - 2},${y2}` };
  });

  const occurs = {
    wait: rows.some((r) => r.wait),
    socket: sorted.some((r) => r.kind === 'socket'),
    nonce: sorted.some((r) => r.challenge === 'nonce'),
    dpop: rows.some((r) => r.badge?.cls === 'dpop'),
    bearer: rows.some((r) => r.badge?.cls === 'bearer'),
  };
  const legend = LEGEND.filter((l) => occurs[l.key] ?? true);
  return { width: w, height, top: TOP, labelWidth: label, narrow, rowHeight, barH, ticks, rows, arrows, legend, count: sorted.length };
}

/** The legend under a timeline; `layoutTimeline` keeps the last ones only where they occur. */
export const LEGEND = [
  { key: 'ok', text: '200' },
  { key: 'unauth', text: '401' },
  { key: 'fail', text: 'error' },
  { key: 'refresh', text: 'refresh' },
  { key: 'arrow', text: 'replay' },
  { key: 'wait', text: 'held until the refresh ended' },
  { key: 'socket', text: 'WebSocket open' },
  { key: 'nonce', text: 'use_dpop_nonce: sent again with the new nonce' },
  { key: 'dpop', text: 'DPoP: token + proof' },
  { key: 'bearer', text: 'Bearer: token alone' },
];
