// The two API clients the demo compares. Both are plain axios instances with the recording adapter;
// they differ only in how they attach the token and react to a 401.
import axios from 'axios';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';
import { recordingAdapter } from './timeline.js';

/** Un-intercepted instance for /auth/* (login, refresh, logout): never carries the broker. */
export const authApi = axios.create();
authApi.defaults.adapter = recordingAdapter('auth');

function apiInstance() {
  const api = axios.create({ baseURL: '/', timeout: 15000 });
  api.defaults.adapter = recordingAdapter('api');
  return api;
}

export async function login(username, password) {
  const { data } = await authApi.post('/auth/login', { username, password });
  return data; // { access_token, refresh_token, expires_in, token_type }
}

export const BROKER_EVENTS = ['tokens', 'refreshstart', 'refreshend', 'expired', 'stale401', 'logout'];

/** token-broker: one refresh per token generation, however many requests see a 401. */
export async function createBrokerClient({ tokens, onEvent, onSessionExpired }) {
  let reason = null;
  const broker = await createTokenBroker({
    tokens,
    // Our own refresh function, so the refresh call goes through the recorded `authApi`.
    // (`refresh: { url: '/auth/refresh-token' }` would do the same with fetch.)
    refresh: async ({ refreshToken, signal }) => {
      const { data } = await authApi.post('/auth/refresh-token',
        { grant_type: 'refresh_token', refresh_token: refreshToken },
        { signal, demoKind: 'refresh', demoReason: reason });
      return data;
    },
    onSessionExpired,
  });
  for (const type of BROKER_EVENTS) {
    broker.addEventListener(type, (ev) => {
      if (type === 'refreshstart') reason = ev.reason ?? null;
      onEvent({ ...ev, type });
    });
  }
  const api = apiInstance();
  const detach = attachAxios(api, broker);
  return {
    kind: 'broker',
    api,
    broker,
    get state() { return broker.state; },
    async logout() {
      // The access token identifies the family to revoke; then the broker forgets its tokens.
      await api.post('/auth/logout', null, { demoKind: 'auth' }).catch(() => {});
      broker.logout();
      detach();
      broker.dispose();
    },
  };
}

/**
 * The interceptor most apps hand-roll: attach the token, and on every 401 post the refresh token and
 * replay once. Nothing stops N parallel 401s from starting N refreshes with the same refresh token.
 */
export function createNaiveClient({ tokens: loginTokens, onEvent, onSessionExpired }) {
  const session = { tokens: { ...loginTokens }, state: 'valid' };
  const api = apiInstance();

  api.interceptors.request.use((config) => {
    if (session.tokens) config.headers.Authorization = `Bearer ${session.tokens.access_token}`;
    return config;
  });

  api.interceptors.response.use(undefined, async (error) => {
    const config = error.config;
    if (error.response?.status !== 401 || config._retry) throw error;
    config._retry = true; // replay once
    let data;
    try {
      ({ data } = await authApi.post('/auth/refresh-token',
        { refresh_token: session.tokens?.refresh_token }, { demoKind: 'refresh', demoReason: '401' }));
    } catch (refreshError) {
      const cause = refreshError.response?.data?.cause ?? refreshError.message;
      onEvent({ type: 'naive', message: `refresh failed: ${cause}` });
      if (session.state !== 'expired') {
        session.state = 'expired';
        onSessionExpired(refreshError);
      }
      throw refreshError;
    }
    session.tokens = { ...session.tokens, ...data };
    onEvent({ type: 'naive', message: 'refresh ok, replaying' });
    return api(config); // the request interceptor puts the new token on
  });

  return {
    kind: 'naive',
    api,
    get state() { return session.state; },
    async logout() {
      await authApi.post('/auth/logout', { refresh_token: session.tokens?.refresh_token }).catch(() => {});
      session.tokens = null;
      session.state = 'anonymous';
    },
  };
}
