// The broker, created outside React (a hook cannot run inside a fetch wrapper), and the one fetch
// every API call goes through. The broker POSTs the refresh grant itself ({ url }), so the refresh
// token never passes through React state. main.jsx hands the current broker to
// <TokenBrokerProvider>; components read the session with useSession().
//
// The DPoP switch (`setDpop`) makes a new broker, with `dpop: true` or without, and a new fetch
// wrapper for it: `page` is the store that says which broker is the page's now.
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';
import { createDashboard, createStore, login } from '../../shared/demo.js';

/** The four panels, the burst and the timeline: the same model the Vue dashboard uses (examples/shared). */
export const dashboard = createDashboard();

/** `{ broker, dpop, switching }`: the page's broker now (a new one when the DPoP switch changes). */
export const page = createStore({ broker: null, dpop: false, switching: false });

let authFetch = null;
let stopRecording = () => {};
let lastLogin = null; // demo only: the switch logs the same user in again

async function useBroker(dpop) {
  // With `dpop: true`: a non-extractable ES256 key in IndexedDB, `Authorization: DPoP <token>` and
  // a fresh proof on every request, `use_dpop_nonce` answered by sending once more, and the
  // built-in refresh sends its own proof.
  const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, ...(dpop ? { dpop: true } : {}) });
  stopRecording();
  stopRecording = dashboard.timeline.attachBroker(broker); // draws the broker's refresh from its events
  // The recording fetch sits *under* the broker's wrapper, so the timeline sees each request when it
  // really goes on the wire, with the headers it went out with (a replay or a nonce retry as a later
  // attempt of its call).
  authFetch = createAuthFetch(broker, { fetch: dashboard.timeline.recordingFetch() });
  page.set({ broker, dpop }); // main.jsx disposes the previous broker once React has let go of it
  return broker;
}
await useBroker(false);

/** GET `path` as JSON through the broker; throws with the status on a non-2xx answer. */
export async function getJson(path, callId) {
  const res = await authFetch(path, { headers: { Accept: 'application/json' }, demoCallId: callId });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw Object.assign(new Error(`${res.status} ${body.error_description ?? ''}`.trim()), { status: res.status, body });
  }
  return res.json();
}

export async function signIn(username, password) {
  const { broker } = page.getSnapshot();
  // With DPoP the login carries a proof of the broker's key, so the tokens come back bound to it.
  const tokens = await login(username, password,
    broker.dpop ? { broker, send: dashboard.timeline.recordingFetch(undefined, 'auth') } : {});
  broker.setTokens(tokens); // a new session: the broker takes it from here
  lastLogin = { username, password };
}

export async function signOut() {
  // The access token tells the server which session to revoke; then the broker forgets its tokens
  // (and, with DPoP, deletes its key).
  await authFetch('/auth/logout', { method: 'POST', demoKind: 'auth' }).catch(() => {});
  await page.getSnapshot().broker.logout();
  lastLogin = null;
}

/** The DPoP switch: log out, a new broker with or without DPoP, and the same user logged in again. */
export async function setDpop(on) {
  const { broker, dpop, switching } = page.getSnapshot();
  if (switching || on === dpop) return;
  page.set({ switching: true });
  try {
    const again = broker.getSession().isAuthenticated ? lastLogin : null;
    if (again) await signOut();
    dashboard.reset();
    await useBroker(on);
    if (again) {
      await signIn(again.username, again.password);
      await dashboard.run(getJson, { label: 'login' });
    }
  } finally {
    page.set({ switching: false });
  }
}
