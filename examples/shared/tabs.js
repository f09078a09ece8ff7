// The "two tabs" panel: tabs of the same app that share one session through token-broker's
// `crossTab` (Web Locks + BroadcastChannel). This file is only the demo's remote control between
// the tabs (its own BroadcastChannel, nothing to do with the broker's): "burst now" and "here is
// what I saw". Framework-free.
import { countersOf, createTimeline } from './timeline.js';
import { control, createDashboard, createStore, expireForServer, statsDelta } from './demo.js';

/** The options of the shared session: one name, tokens in sessionStorage, one refresh across tabs. */
export const TWO_TABS_OPTIONS = Object.freeze({ name: 'demo-two-tabs', crossTab: true, storage: 'session' });

/**
 * This tab's broker of the shared session. `refresh: { url: '/auth/refresh-token' }` would do; the
 * demo passes its own refresh function instead, only so the timeline records the refresh request
 * in the tab that really sent it (a tab that waited for the lock and took the other tab's new
 * tokens sends none, and its picture shows none).
 * @param {Function} createTokenBroker  from 'token-broker'
 */
export async function createTabBroker(createTokenBroker, timeline) {
  let reason = null;
  const send = timeline.recordingFetch(undefined, 'refresh');
  const broker = await createTokenBroker({
    ...TWO_TABS_OPTIONS,
    refresh: async ({ refreshToken, signal }) => {
      const res = await send('/auth/refresh-token', {
        method: 'POST',
        signal,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
        demoReason: reason,
      });
      const body = await res.json().catch(() => ({}));
      // The broker reads `status` and `error` to tell a dead session (400 invalid_grant) from a retry.
      if (!res.ok) throw Object.assign(new Error(body.error_description ?? `refresh failed (${res.status})`), { status: res.status, error: body.error });
      return body;
    },
  });
  broker.addEventListener('refreshstart', (ev) => { reason = ev.reason ?? null; });
  return broker;
}

const CHANNEL = 'token-broker-demo:two-tabs';

/**
 * Links this tab to the others. `get(path, callId)` is this tab's client (through its cross-tab
 * broker); `timeline` records it. The store holds `{ tabs: [{ id, role }], run, results }`.
 */
export function createTabLink({ role, get, timeline = createTimeline() }) {
  const id = `${role}-${Math.random().toString(36).slice(2, 7)}`;
  const channel = new BroadcastChannel(CHANNEL);
  const dashboard = createDashboard({ timeline });
  const store = createStore({ tabs: [{ id, role, self: true }], run: null, results: {}, busy: false });
  const post = (msg) => channel.postMessage({ ...msg, from: id, role });

  const addTab = (tab) => store.set((s) => (s.tabs.some((t) => t.id === tab.id) ? {} : { tabs: [...s.tabs, tab] }));
  const record = (runId, from, result) => store.set((s) => (s.run === runId
    ? { results: { ...s.results, [from]: result } } : {}));

  async function burstHere(runId, rounds) {
    store.set((s) => (s.run === runId ? {} : { run: runId, results: {} }));
    const last = await dashboard.run(get, { rounds, label: 'burst' });
    const result = { ...(last?.counters ?? countersOf(timeline.getSnapshot())), role };
    record(runId, id, result);
    post({ type: 'result', run: runId, result });
    return result;
  }

  channel.onmessage = ({ data: m }) => {
    if (!m || m.from === id) return;
    if (m.type === 'hello' || m.type === 'here') addTab({ id: m.from, role: m.role });
    if (m.type === 'hello') post({ type: 'here' });
    if (m.type === 'bye') store.set((s) => ({ tabs: s.tabs.filter((t) => t.id !== m.from) }));
    if (m.type === 'burst') { addTab({ id: m.from, role: m.role }); burstHere(m.run, m.rounds); }
    if (m.type === 'result') record(m.run, m.from, m.result);
    if (m.type === 'summary') store.set((s) => (s.run === m.run ? { server: m.server } : {}));
  };
  post({ type: 'hello' });
  const bye = () => post({ type: 'bye' });
  addEventListener('pagehide', bye);

  /**
   * Expires the shared access token for the server, then fires `rounds` × 4 calls in every tab at
   * once; resolves when every tab answered, with the server's counters over the whole run.
   */
  async function expireAndBurstEverywhere({ rounds = 1, serverExpiresAtMs = null } = {}) {
    const runId = `${id}:${Date.now()}`;
    store.set({ run: runId, results: {}, busy: true, server: null });
    try {
      const before = await control.stats();
      await expireForServer(serverExpiresAtMs);
      const expected = store.getSnapshot().tabs.length;
      post({ type: 'burst', run: runId, rounds });
      await burstHere(runId, rounds);
      await new Promise((resolve) => {
        const done = () => Object.keys(store.getSnapshot().results).length >= expected;
        if (done()) { resolve(); return; }
        const timer = setTimeout(() => { off(); resolve(); }, 15000);
        const off = store.subscribe(() => { if (done()) { clearTimeout(timer); off(); resolve(); } });
      });
      const server = statsDelta(before, await control.stats());
      store.set({ server });
      post({ type: 'summary', run: runId, server });
    } finally {
      store.set({ busy: false });
    }
  }

  return {
    id,
    timeline,
    dashboard,
    getSnapshot: store.getSnapshot,
    subscribe: store.subscribe,
    expireAndBurstEverywhere,
    close() { bye(); removeEventListener('pagehide', bye); channel.close(); },
  };
}
