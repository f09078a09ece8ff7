// What the timeline draws: every HTTP request the page sends (API calls, their replays, refresh and
// login calls), recorded by an axios adapter wrapper at the moment it really goes on the wire and
// when its answer arrives, plus the "logical" calls the app made (one per panel request).
import { reactive } from 'vue';
import axios from 'axios';

export const now = () => performance.now();

export const timeline = reactive({
  t0: now(),
  rows: [], // { id, kind: 'api'|'refresh'|'auth', method, url, start, end, status, error, callId, attempt, replayOf, gen, reason }
  calls: [], // { id, url, start, end, ok, error }
  background: [], // rows recorded between actions (last 20)
});

let rowSeq = 0;
let callSeq = 0;

/** Starts a new picture (each user action gets its own timeline). */
export function clearTimeline() {
  timeline.t0 = now();
  timeline.rows = [];
  timeline.calls = [];
}

export function beginCall(url) {
  timeline.calls.push({ id: ++callSeq, url, start: now(), end: null, ok: null, error: null });
  return timeline.calls[timeline.calls.length - 1];
}

export function endCall(call, ok, error = null) {
  call.end = now();
  call.ok = ok;
  call.error = error;
}

/** The refresh generation the server wrote into a JWT (display only: a client must not rely on it). */
export function tokenGeneration(authorization) {
  const token = String(authorization ?? '').replace(/^Bearer\s+/i, '');
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).gen ?? null;
  } catch {
    return null;
  }
}

let running = false;
/**
 * While an action (login, reload, burst) runs, every request goes into its picture. Requests
 * between actions (the broker's proactive refresh, logout) go to `timeline.background` instead,
 * so the last picture and its counters stay as they were; one still running when the next action
 * starts (a proactive refresh the burst then waits for) moves into the new picture.
 */
export function setRunning(on) {
  running = on;
  if (on) {
    const pending = timeline.background.filter((r) => r.end === null);
    timeline.background = timeline.background.filter((r) => r.end !== null);
    timeline.rows.push(...pending);
  }
}

function beginRow(fields) {
  const earlier = fields.callId == null ? [] : timeline.rows.filter((r) => r.callId === fields.callId);
  const call = fields.callId == null ? null : timeline.calls.find((c) => c.id === fields.callId);
  const list = running ? timeline.rows : timeline.background;
  list.push({
    id: ++rowSeq,
    start: now(),
    end: null,
    status: null,
    error: null,
    attempt: earlier.length + 1,
    replayOf: earlier.length ? earlier[earlier.length - 1].id : null,
    callStart: call?.start ?? null,
    reason: null,
    ...fields,
  });
  if (!running && list.length > 20) list.shift();
  return list[list.length - 1];
}

const listeners = new Set();
/** `fn(row, response)` runs when a recorded request ends (the app reads token responses from it). */
export function onRowEnd(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/**
 * An axios adapter that records each request it sends, wrapped around axios' own adapter. It sits
 * *under* the interceptors, so a request that waits for a token is recorded when it is really sent,
 * and a replay is recorded as a second request of the same call (`config.demoCallId`).
 */
export function recordingAdapter(defaultKind) {
  const send = axios.getAdapter(axios.defaults.adapter);
  return async function recordedAdapter(config) {
    const headers = axios.AxiosHeaders.from(config.headers);
    const row = beginRow({
      kind: config.demoKind ?? defaultKind,
      method: String(config.method ?? 'get').toUpperCase(),
      url: config.url,
      callId: config.demoCallId ?? null,
      gen: tokenGeneration(headers.get('Authorization')),
      reason: config.demoReason ?? null,
    });
    let response;
    try {
      response = await send(config);
      row.status = response.status;
      return response;
    } catch (err) {
      response = err.response;
      row.status = err.response?.status ?? 0;
      row.error = err.response?.data?.cause ?? err.response?.data?.error ?? err.code ?? String(err);
      throw err;
    } finally {
      row.end = now();
      for (const fn of listeners) fn(row, response);
    }
  };
}
