// The broker, created once outside React (a hook cannot run inside a fetch wrapper), and the one
// fetch every API call goes through. The broker POSTs the refresh grant itself ({ url }), so the
// refresh token never passes through React state. main.jsx hands the broker to
// <TokenBrokerProvider>; components read the session with useSession().
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';
import { createDashboard, login } from '../../shared/demo.js';

/** The four panels, the burst and the timeline: the same model the Vue dashboard uses (examples/shared). */
export const dashboard = createDashboard();

export const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
dashboard.timeline.attachBroker(broker); // draws the broker's refresh from its events

// The recording fetch sits *under* the broker's wrapper, so the timeline sees each request when it
// really goes on the wire (a replay as the second attempt of its call).
export const authFetch = createAuthFetch(broker, { fetch: dashboard.timeline.recordingFetch() });

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
  broker.setTokens(await login(username, password)); // a new session: the broker takes it from here
}

export async function signOut() {
  // The access token tells the server which session to revoke; then the broker forgets its tokens.
  await authFetch('/auth/logout', { method: 'POST', demoKind: 'auth' }).catch(() => {});
  await broker.logout();
}
