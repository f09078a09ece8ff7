// A TypeScript consumer of the package: must type-check with `tsc -p tests/types --noEmit`.
// It is never run; it pins the public types of token-broker, token-broker/axios and token-broker/fetch.
import axios, { type AxiosError } from 'axios';
import { createTokenBroker, isTokenBrokerError, TokenBrokerError, type TokenBroker } from 'token-broker';
import { attachAxios, type AttachAxiosOptions, type ReplayPolicy } from 'token-broker/axios';
import { createAuthFetch, type AuthFetch, type AuthFetchOptions } from 'token-broker/fetch';

export async function main(): Promise<void> {
  const broker: TokenBroker = await createTokenBroker({
    refresh: { url: '/auth/refresh-token', body: 'json' },
    tokens: { access_token: 'a', refresh_token: 'r', expires_in: 60 },
    refreshTimeoutMs: 5000,
    onSessionExpired: (err) => console.warn(err.code),
    allowedOrigins: ['https://api.example.com'],
  });

  // axios: attach, module augmentation (skipAuth), detach.
  const api = axios.create({ baseURL: 'https://api.example.com' });
  const replay: ReplayPolicy = 'idempotent';
  const axiosOptions: AttachAxiosOptions = { replay, allowedOrigins: ['https://cdn.example.com'] };
  const detach: () => void = attachAxios(api, broker, axiosOptions);
  attachAxios(axios, broker, { replay: false });
  await api.post('/auth/login', { username: 'demo' }, { skipAuth: true });
  const { data } = await api.get<{ value: number }>('/statistics', { signal: new AbortController().signal });
  const n: number = data.value;
  detach();

  // fetch: fetch-compatible signature.
  const fetchOptions: AuthFetchOptions = { fetch: globalThis.fetch, replay: 'all' };
  const authFetch: AuthFetch = createAuthFetch(broker, fetchOptions);
  const asFetch: (input: RequestInfo | URL, init?: RequestInit) => Promise<Response> = authFetch;
  const res: Response = await asFetch(new URL('/statistics', location.href), { method: 'GET' });
  createAuthFetch(broker);

  // Errors narrow to TokenBrokerError.
  try {
    await authFetch('/orders', { method: 'POST', body: JSON.stringify({ n }) });
  } catch (e) {
    if (isTokenBrokerError(e)) console.log(e.code satisfies string);
    if (e instanceof TokenBrokerError) console.log(e.code);
    if (axios.isAxiosError(e)) console.log((e as AxiosError).response?.status);
  }
  console.log(res.status);

  // Session state, idle activity, revocation, the GraphQL hook.
  const session = broker.getSession();
  const status: 'anonymous' | 'valid' | 'refreshing' | 'expired' = session.status;
  const sub: unknown = session.claims?.['sub'];
  const expiresAt: number | null = session.expiresAt;
  const unsubscribe: () => void = broker.subscribe((s) => console.log(s.isAuthenticated, s.generation));
  const removeListener: () => void = broker.addEventListener('tokens', (ev) => console.log(ev.generation));
  broker.touch();
  const loggedOut: Promise<void> = broker.logout();
  await loggedOut;
  unsubscribe();
  removeListener();
  console.log(status, sub, expiresAt);
  attachAxios(api, broker, { isAuthFailure: (r) => r.status === 200 && r.data?.errors != null });
  createAuthFetch(broker, { isAuthFailure: async (r) => (await r.json()).errors != null });
  await createTokenBroker({ refresh: { url: '/t' }, revoke: { url: '/r' }, idleTimeoutMs: 60_000, debug: (e) => console.log(e.event, e.waiting) });

  // DPoP: a proof for the login, the nonce of its answer, a refresh function with its own proof.
  const bound = await createTokenBroker({
    dpop: { store: 'indexeddb' },
    refresh: async ({ refreshToken, signal, dpopProof }) => {
      const proof: string = await dpopProof!('POST', '/oauth/token');
      return { access_token: String(refreshToken), token_type: 'DPoP', signal, proof } as never;
    },
  });
  const proof: string = await bound.dpopProof('POST', new URL('https://as.example/token'), { accessToken: 'at' });
  bound.dpopNonce('/oauth/token', new Headers(), { tokenEndpoint: true });
  const challenge: 'refresh' | 'nonce' | 'none' = bound.authChallenge('DPoP error="use_dpop_nonce"');
  const isBound: boolean = bound.dpop;
  bound.setTokens({ accessToken: proof, tokenType: 'DPoP' });
  console.log(challenge, isBound);
  // @ts-expect-error dpop.store is 'indexeddb' | 'memory'
  await createTokenBroker({ refresh: { url: '/t' }, dpop: { store: 'disk' } });

  // Misuse must not type-check.
  // @ts-expect-error replay is 'all' | 'idempotent' | false
  attachAxios(api, broker, { replay: 'sometimes' });
  // @ts-expect-error skipAuth is a boolean
  await api.get('/statistics', { skipAuth: 'yes' });
  // @ts-expect-error the broker is required
  createAuthFetch();
}
