// The two API clients the demo compares, both plain axios instances whose requests are recorded
// for the timeline. They differ only in how they attach the token and react to a 401.
import axios from 'axios';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';
import { answeredWith, sentWith, tokenGeneration } from '../../../shared/timeline.js';
import { createStore, jwtClaims } from '../../../shared/demo.js';

/**
 * The broker of this page, created once, outside any component (README: "create the broker once,
 * outside components, and attach it to axios there too"). The login hands it the tokens with
 * `setTokens`; `app.use(tokenBroker, broker)` in main.js gives components `useSession()`.
 */
export const broker = await createPageBroker();

/**
 * The page's broker, with DPoP (RFC 9449) or without: "Try it yourself" makes a new one when its
 * DPoP switch changes. With `dpop: true` the broker makes a non-extractable ES256 key (kept in
 * IndexedDB), the adapters send `Authorization: DPoP <token>` with a fresh proof per request and
 * answer `use_dpop_nonce` by sending once more, and the built-in refresh sends its own proof.
 */
export function createPageBroker({ dpop = false } = {}) {
  return createTokenBroker({ refresh: { url: '/auth/refresh-token' }, ...(dpop ? { dpop: true } : {}) });
}

/**
 * An axios adapter that records each request for `timeline`, wrapped around axios' own adapter.
 * It sits *under* the interceptors, so a request that waits for a token is recorded when it is
 * really sent, with the headers it really went out with (`Authorization: DPoP` + a `DPoP` proof,
 * or `Bearer`), and a replay or a DPoP nonce retry as a later request of the same call
 * (`config.demoCallId`).
 */
export function recordingAdapter(timeline, defaultKind = 'api') {
  const send = axios.getAdapter(axios.defaults.adapter);
  return async function recordedAdapter(config) {
    const sent = axios.AxiosHeaders.from(config.headers);
    const id = timeline.beginRequest({
      kind: config.demoKind ?? defaultKind,
      method: config.method ?? 'get',
      url: config.url,
      callId: config.demoCallId ?? null,
      reason: config.demoReason ?? null,
      ...sentWith((name) => sent.get(name)),
    });
    try {
      const response = await send(config);
      const got = axios.AxiosHeaders.from(response.headers);
      timeline.endRequest(id, { status: response.status, ...answeredWith(response.status, (n) => got.get(n), null) });
      return response;
    } catch (err) {
      let data = err.response?.data; // raw here: the adapter runs before axios parses JSON
      if (typeof data === 'string') try { data = JSON.parse(data); } catch { data = null; }
      const got = axios.AxiosHeaders.from(err.response?.headers ?? {});
      const status = err.response?.status ?? 0;
      timeline.endRequest(id, { status, error: data?.cause ?? data?.error ?? err.code ?? String(err), ...answeredWith(status, (n) => got.get(n), data) });
      throw err;
    }
  };
}

/** An axios instance for `/`, recorded into `timeline`, with `broker` attached. */
export function brokerAxios(broker, timeline) {
  const api = axios.create({ baseURL: '/', timeout: 15000 });
  api.defaults.adapter = recordingAdapter(timeline);
  const detach = attachAxios(api, broker);
  const get = (path, callId) => api.get(path, { demoCallId: callId }).then((r) => r.data);
  return { api, get, detach };
}

/** A short-lived broker for one run of the comparison: its own login, its own timeline. */
export async function createBrokerSide(tokens, timeline) {
  const b = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens });
  const stopRecording = timeline.attachBroker(b);
  const { api, get, detach } = brokerAxios(b, timeline);
  return {
    get,
    status: () => b.getSession().status,
    async close() {
      await api.post('/auth/logout', null, { demoKind: 'auth' }).catch(() => {}); // revokes the family
      await b.logout();
      stopRecording();
      detach();
      b.dispose();
    },
  };
}

/**
 * The interceptor most apps hand-roll: attach the token, and on every 401 post the refresh token and
 * replay once. Nothing stops N parallel 401s from starting N refreshes with the same refresh token.
 * `getSnapshot()`/`subscribe()` give its session in the broker's shape, so the page shows both alike.
 */
export function createNaiveClient({ tokens: loginTokens, timeline, onEvent = () => {}, onSessionExpired = () => {} }) {
  let tokens = { ...loginTokens };
  const view = (status) => ({
    status,
    isAuthenticated: status === 'valid',
    generation: tokenGeneration(tokens?.access_token),
    expiresAt: tokens ? tokens.receivedAt + Number(tokens.expires_in) * 1000 : null,
    claims: tokens ? jwtClaims(tokens.access_token) : null,
  });
  tokens.receivedAt = Date.now();
  const session = createStore(view('valid'));
  const setStatus = (status) => session.set(view(status));

  const authApi = axios.create();
  authApi.defaults.adapter = recordingAdapter(timeline, 'auth');
  const api = axios.create({ baseURL: '/', timeout: 15000 });
  api.defaults.adapter = recordingAdapter(timeline);

  api.interceptors.request.use((config) => {
    if (tokens) config.headers.Authorization = `Bearer ${tokens.access_token}`;
    return config;
  });

  api.interceptors.response.use(undefined, async (error) => {
    const config = error.config;
    if (error.response?.status !== 401 || config._retry) throw error;
    config._retry = true; // replay once
    let data;
    try {
      ({ data } = await authApi.post('/auth/refresh-token',
        { refresh_token: tokens?.refresh_token }, { demoKind: 'refresh', demoReason: 'rejected' }));
    } catch (refreshError) {
      const cause = refreshError.response?.data?.cause ?? refreshError.message;
      onEvent({ type: 'naive', message: `refresh failed: ${cause}` });
      if (session.getSnapshot().status !== 'expired') {
        setStatus('expired');
        onSessionExpired(refreshError);
      }
      throw refreshError;
    }
    tokens = { ...tokens, ...data, receivedAt: Date.now() };
    setStatus(session.getSnapshot().status); // new expiry and generation (a dead session stays dead)
    onEvent({ type: 'naive', message: 'refresh ok, replaying' });
    return api(config); // the request interceptor puts the new token on
  });

  return {
    api,
    get: (path, callId) => api.get(path, { demoCallId: callId }).then((r) => r.data),
    getSnapshot: session.getSnapshot,
    subscribe: session.subscribe,
    status: () => session.getSnapshot().status,
    async close() {
      await authApi.post('/auth/logout', { refresh_token: tokens?.refresh_token }).catch(() => {});
      tokens = null;
      setStatus('anonymous');
    },
  };
}
