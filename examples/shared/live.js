// The WebSocket panel: a socket through token-broker/socket's connectWebSocket() and four HTTP
// calls meet the same expired token, and share one refresh; the socket comes back by itself with
// the new token. Framework-free: the app passes in createTokenBroker, connectWebSocket and its
// HTTP client.
import { createTimeline } from './timeline.js';
import { ENDPOINTS, control, createStore, describeError, expireForServer, login, statsDelta } from './demo.js';

/**
 * @param {{ createTokenBroker: Function, connectWebSocket: Function,
 *           clientFor: (broker, timeline) => (path, callId) => Promise<unknown> }} deps
 */
export function createLiveDemo({ createTokenBroker, connectWebSocket, clientFor }) {
  const timeline = createTimeline();
  const store = createStore({
    phase: 'idle', // idle | connecting | open | reconnecting | closed
    sockets: 0, // sockets opened so far
    ticks: 0, // messages the server pushed
    gen: null, // the token generation the current socket authenticated with (the server's hello)
    lastClose: null, // { code, reason, expired }
    busy: false,
    runCount: 0,
    calls: null, // { ok, failed } of the last burst
    server: null, // the server's counters over the last "expire + burst"
  });
  let broker = null;
  let handle = null;
  let get = null;
  let row = null;
  let stopRecording = () => {};

  async function connect() {
    if (handle) return;
    store.set({ phase: 'connecting', busy: true });
    try {
      broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens: await login('demo', 'demo') });
      stopRecording = timeline.attachBroker(broker);
      get = clientFor(broker, timeline);
      handle = connectWebSocket(broker, '/ws', {
        onOpen() {
          const n = store.getSnapshot().sockets + 1;
          row = timeline.beginRequest({ kind: 'socket', method: 'WS', url: `socket #${n}`, callId: 'socket' });
          store.set({ phase: 'open', sockets: n });
        },
        onMessage(event) {
          let m = null;
          try { m = JSON.parse(event.data); } catch { /* not JSON */ }
          if (m?.type === 'hello') store.set({ gen: m.gen });
          if (m?.type === 'tick') store.set((s) => ({ ticks: s.ticks + 1 }));
        },
        onClose(event, { expired, willReconnect }) {
          if (row !== null) timeline.endRequest(row, { status: event.code, error: event.reason || null });
          row = null;
          store.set({ phase: willReconnect ? 'reconnecting' : 'closed', lastClose: { code: event.code, reason: event.reason, expired } });
        },
      });
      handle.closed.then((end) => {
        if (row !== null) timeline.endRequest(row, { status: end.code ?? 1000, error: end.why });
        row = null;
        store.set({ phase: 'closed' });
      });
    } finally {
      store.set({ busy: false });
    }
  }

  /** The socket opened `n` sockets in all (or 8 s passed). */
  const socketsReach = (n) => new Promise((resolve) => {
    const done = () => store.getSnapshot().sockets >= n && store.getSnapshot().phase === 'open';
    if (done()) { resolve(true); return; }
    const timer = setTimeout(() => { off(); resolve(false); }, 8000);
    const off = store.subscribe(() => { if (done()) { clearTimeout(timer); off(); resolve(true); } });
  });

  /**
   * Expires the token for the server and fires the four calls at once. The server closes the socket
   * (4001 token expired) and answers the calls 401: one refresh for all of them, then the calls are
   * replayed and the socket reconnects with the new token.
   */
  async function expireAndBurst() {
    if (!handle || store.getSnapshot().busy) return;
    store.set({ busy: true, server: null, calls: null });
    const socketsBefore = store.getSnapshot().sockets;
    const before = await control.stats();
    timeline.start(); // the open socket's row moves into the new picture
    try {
      await expireForServer(broker.getSession().claims?.exp_ms ?? null);
      const results = await Promise.all(ENDPOINTS.map(async (path) => {
        const id = timeline.beginCall(path);
        try {
          await get(path, id);
          timeline.endCall(id, true);
          return true;
        } catch (err) {
          timeline.endCall(id, false, describeError(err));
          return false;
        }
      }));
      await socketsReach(socketsBefore + 1);
      await new Promise((r) => setTimeout(r, 300)); // a few ticks on the new socket, for the picture
      store.set({ calls: { ok: results.filter(Boolean).length, failed: results.filter((ok) => !ok).length } });
    } finally {
      timeline.stop();
      const server = statsDelta(before, await control.stats().catch(() => null));
      store.set((s) => ({ busy: false, server, runCount: s.runCount + 1 }));
    }
  }

  async function disconnect() {
    handle?.close();
    handle = null;
    stopRecording();
    await broker?.logout();
    broker?.dispose();
    broker = null;
    store.set({ phase: 'idle', gen: null });
  }

  return { timeline, getSnapshot: store.getSnapshot, subscribe: store.subscribe, connect, expireAndBurst, disconnect };
}
