// Login + one broker per session. The broker POSTs the refresh grant itself ({ url }), so the refresh
// token never passes through React state; every API call goes through `authFetch`.
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';

export async function startSession(username, password, onSessionExpired) {
  const res = await fetch('/auth/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error_description ?? `login failed (${res.status})`);
  const broker = await createTokenBroker({
    refresh: { url: '/auth/refresh-token' },
    tokens: await res.json(), // { access_token, refresh_token, expires_in }
    onSessionExpired,
  });
  const authFetch = createAuthFetch(broker);
  return {
    broker,
    authFetch,
    async logout() {
      await authFetch('/auth/logout', { method: 'POST' }).catch(() => {}); // revokes the token family
      broker.logout();
      broker.dispose();
    },
  };
}

/** GET `path` as JSON through the broker; throws on a non-2xx answer. */
export async function getJson(authFetch, path, signal) {
  const res = await authFetch(path, { signal, headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(`${res.status} ${(await res.json().catch(() => ({}))).error_description ?? ''}`.trim());
  return res.json();
}
