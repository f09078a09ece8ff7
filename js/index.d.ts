/**
A token set, in the app's spelling or the token endpoint's own (RFC 6749 §5.1).

`expiresIn` (seconds) counts from the moment the broker receives the set, so the client's clock
never matters. Without it, a JWT access token's `exp - iat` is used; otherwise the token is
trusted until a request with it comes back 401. `tokenType` must be `'DPoP'` when the broker
has `dpop` on, and must not be when it has not.
*/
export type TokenSet =
  | { accessToken: string; refreshToken?: string | null; expiresIn?: number | string | null; tokenType?: string }
  | { access_token: string; refresh_token?: string | null; expires_in?: number | string | null; token_type?: string };

/** What a refresh function receives. */
export interface RefreshContext {
  /** The refresh token to present, or `null` (cookie mode, or none was ever given). */
  refreshToken: string | null;
  /** Aborted when the broker gives up on this attempt (timeout, logout, dispose). Pass it to fetch/axios. */
  signal: AbortSignal;
  /**
  With `dpop` on: the DPoP proof for the function's own token request (send it as the `DPoP`
  header), carrying the token endpoint's nonce when one is known. When the endpoint answers 400
  `use_dpop_nonce`, reject with the error as axios makes it (or with `error` and `headers` on it):
  the broker reads the new `DPoP-Nonce` from `err.response.headers` or `err.headers` and calls the
  function once more, without counting a failure.
  @example
  refresh: async ({ refreshToken, signal, dpopProof }) =>
    (await axios.post(TOKEN_URL, form(refreshToken), { signal, headers: { DPoP: await dpopProof('POST', TOKEN_URL) } })).data
  */
  dpopProof?: (method: string, url: string) => Promise<string>;
}

/**
The built-in refresh: the broker POSTs an OAuth 2.0 `refresh_token` grant itself, so the
refresh token never passes through app code. With `credentials: 'include'` and no refresh
token, it serves the httpOnly-cookie (backend-for-frontend) pattern.
*/
export interface RefreshEndpoint {
  /**
  The token endpoint, e.g. `'/auth/refresh-token'`. Resolved once, at creation, against the
  page's base URL, and it must be on an allowed origin. The POST never follows a redirect (the
  refresh token is in its body).
  */
  url: string;
  /** `'form'` (default, `application/x-www-form-urlencoded` as OAuth 2.0 says) or `'json'`. */
  body?: 'json' | 'form';
  /** fetch's `credentials`; default `'same-origin'`. `'include'` enables cookie mode. */
  credentials?: RequestCredentials;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

/** Options of {@link createTokenBroker}. Unknown keys and wrong types throw `INVALID_OPTIONS`. */
export interface TokenBrokerOptions {
  /**
  How to get new tokens: a function (for example calling your API with axios or fetch), or a
  {@link RefreshEndpoint}. A function that rejects is classified from the error: HTTP 400/401 or
  OAuth `invalid_grant` (on `err.status`, `err.response.status`, `err.error` or
  `err.response.data.error`) ends the session; no status (network), 5xx and 429 are retried with
  backoff; a thrown {@link TokenBrokerError} keeps its code.
  @example
  refresh: async ({ refreshToken, signal }) =>
    (await axios.post('/auth/refresh-token', { refresh_token: refreshToken }, { signal })).data
  */
  refresh: ((ctx: RefreshContext) => Promise<TokenSet>) | RefreshEndpoint;
  /** Initial tokens (e.g. from login). Without them the broker is `'anonymous'` until {@link TokenBroker.setTokens}. */
  tokens?: TokenSet | null;
  /** Refresh this many seconds before expiry (at most half the token's lifetime). Default `30`. */
  leewaySeconds?: number;
  /** Every waiting call settles within this many ms of the refresh's start (`REFRESH_TIMEOUT`). Default `10000`. */
  refreshTimeoutMs?: number;
  /** Retries after a transient failure (network, 5xx, 429; `Retry-After` honoured). Default `2`, at most `10`. */
  refreshRetries?: number;
  /** Called once when the session ends (the refresh token was rejected): time to show the login. */
  onSessionExpired?: (error: TokenBrokerError) => void;
  /**
  Origins besides the page's own that may receive the `Authorization` header, e.g.
  `['https://api.example.com']`. Each must be exactly an origin (`scheme://host[:port]`, no path).
  Required where there is no page (Node, SSR): without it no request could carry the token.
  */
  allowedOrigins?: string[];
  /**
  Revoke the refresh token at the server when {@link TokenBroker.logout} is called (RFC 7009):
  a form POST of `token=<refresh token>&token_type_hint=refresh_token` (in cookie mode, the
  refresh endpoint's `credentials` carry the cookie). Best effort, bounded by `refreshTimeoutMs`.
  Like `refresh.url`, the URL is resolved at creation and must be on an allowed origin.
  */
  revoke?: { url: string };
  /**
  `true` logs one structured line per decision to `console.debug` (refresh start and why, its end
  and how many waiters it settled, late 401s absorbed, tokens adopted, here or from another tab);
  a function receives each entry instead. Never a token. Off by default.
  */
  debug?: boolean | ((entry: TokenBrokerDebugEntry) => void);
  /**
  Stop refreshing in the background after this many ms without a call or reported activity
  ({@link TokenBroker.touch}); the next call then refreshes on demand. Requests through the
  adapters count as activity. In a cross-tab session the active tab keeps it alive for all:
  tokens it refreshes reach every tab. Off by default (the session is kept alive while the page is open).
  */
  idleTimeoutMs?: number;
  /**
  The token family's name (default `'default'`): brokers of one origin with the same name share
  tokens across tabs, a lock and a storage key (`token-broker:<name>`).
  */
  name?: string;
  /**
  Coordinate with the other tabs of this origin: one refresh per token generation across all of
  them (Web Lock around each refresh, new tokens and logouts broadcast on a `BroadcastChannel`).
  Default: `true` with `storage: 'local'`, else `false`.
  */
  crossTab?: boolean;
  /**
  Where tokens persist: `'memory'` (default: nothing persisted; the refresh token stays out of
  storage that any script can read), `'session'`, `'local'`, or an adapter whose methods may
  return promises. Stored data is validated on read; garbage is removed and reported with a
  `storageerror` event.
  */
  storage?: 'memory' | 'session' | 'local' | TokenStorage;
  /**
  DPoP (RFC 9449): bind the tokens to a key the page holds but cannot export, so a stolen token
  is useless elsewhere. A non-extractable ES256 key pair is made once per session (grant) and
  kept in IndexedDB (`store: 'indexeddb'`, the default: reloads and every tab of a `crossTab`
  session use the same key) or in memory (`store: 'memory'`: this broker only). Every request
  through the adapters then carries `Authorization: DPoP <token>` and a fresh `DPoP` proof; the
  token endpoint's and each API's nonces are taken from every answer, and a `use_dpop_nonce`
  challenge is answered by sending the request once more, never by a refresh. Every token set
  must have `token_type: "DPoP"`: a bearer answer is `INVALID_TOKEN_RESPONSE`, never used
  instead. The key is deleted on `logout()` and when the session expires; a stored session whose
  key is gone ends with `SESSION_EXPIRED`. Needs a secure context (https or localhost).
  Log in with a proof from {@link TokenBroker.dpopProof}, then call {@link TokenBroker.setTokens}.
  */
  dpop?: boolean | { store?: 'indexeddb' | 'memory' };
}

/** One `debug` line. */
export interface TokenBrokerDebugEntry {
  /** What happened, e.g. `'refresh started'`, `'refresh failed'`, `'late 401 absorbed without a refresh'`. */
  event: string;
  /** Why: a refresh's reason (`'expiring'`, `'rejected'`, `'proactive'`, `'anonymous'`) or a failure's code. */
  why?: string;
  generation: number;
  /** Callers waiting for the refresh in flight. */
  waiting: number;
  /** Callers this decision resolved or rejected. */
  settled?: number;
}

/**
The session as a view shows it ({@link TokenBroker.getSession}). Frozen; the same object until
something in it changes.
*/
export interface TokenBrokerSession {
  readonly status: 'anonymous' | 'valid' | 'refreshing' | 'expired';
  /** Tokens held and the session not ended (a refresh may be running). */
  readonly isAuthenticated: boolean;
  readonly generation: number;
  /** When the access token expires (epoch ms), or `null` when unknown. */
  readonly expiresAt: number | null;
  /**
  The access token's JWT payload, decoded but **not verified** (a browser cannot verify it: show
  it, never base an authorization decision on it), or `null` for an opaque token.
  */
  readonly claims: Readonly<Record<string, unknown>> | null;
}

/** A custom storage: values are strings (JSON). Methods may be async. */
export interface TokenStorage {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
  remove(key: string): void | Promise<void>;
}

/** The event a listener receives. */
export interface TokenBrokerEvent {
  type: TokenBrokerEventType;
  /** The token generation after the event (grows with every token set adopted). */
  generation: number;
  /** `refreshstart`: why (`'expiring'`, `'rejected'`, `'proactive'` or `'anonymous'`). */
  reason?: 'expiring' | 'rejected' | 'proactive' | 'anonymous';
  /** `refreshend`: whether it succeeded. */
  ok?: boolean;
  /** `refreshend` on failure: the error code. */
  code?: TokenBrokerErrorCode;
}

/**
`tokens` (a set was adopted), `refreshstart`, `refreshend`, `expired` (session ended),
`stale401` (a late 401 absorbed without a refresh), `logout`, `storageerror` (garbage in storage
was ignored and removed).
*/
export type TokenBrokerEventType =
  | 'tokens' | 'refreshstart' | 'refreshend' | 'expired' | 'stale401' | 'logout' | 'storageerror';

/** The broker: one refresh for any number of parallel requests, shared by every adapter given it. */
export interface TokenBroker {
  /**
  Resolves with a valid access token: at once when the current one is fresh, otherwise after the
  single refresh that every caller shares. `signal` aborts only this caller's wait (`ABORTED`).
  @example
  const token = await broker.getAccessToken({ signal });
  */
  getAccessToken(options?: { signal?: AbortSignal | null }): Promise<string>;
  /**
  Report that a request sent with `token` got 401. Resolves with the token to replay with: for
  a late 401 (an older token) the current one, with no refresh; for the current token, the new
  one after a single shared refresh. A token of an earlier session (before the last `logout()`
  or `setTokens()`) rejects with `LOGGED_OUT`: that request must not be replayed. `signal`
  aborts only this caller's wait (`ABORTED`). A `token` that is not a string rejects with a `TypeError`.
  */
  tokenRejected(token: string, options?: { signal?: AbortSignal | null }): Promise<string>;
  /** Whether a 401 with this `WWW-Authenticate` deserves a refresh (bare or `invalid_token`: yes; `insufficient_scope`: no). */
  shouldRefreshOn401(wwwAuthenticate?: string | null): boolean;
  /**
  What a 401 with this `WWW-Authenticate` asks for: `'refresh'` (as {@link TokenBroker.shouldRefreshOn401}),
  `'nonce'` for DPoP's `use_dpop_nonce` (send the request once more with a new proof and the same
  token; no refresh), or `'none'` (the 401 is the answer: `insufficient_scope`, `invalid_dpop_proof`, ...).
  */
  authChallenge(wwwAuthenticate?: string | null): 'refresh' | 'nonce' | 'none';
  /** `true` when the broker was created with `dpop`: its tokens are DPoP-bound. */
  readonly dpop: boolean;
  /**
  A DPoP proof (RFC 9449 §4) for one request, for transports other than the adapters and for the
  login request that starts a DPoP session: `typ: dpop+jwt`, ES256, the public key, a unique
  `jti`, `htm`, `htu` (the URL without query and fragment, resolved as the browser sends it),
  `iat`, the server's nonce when known, and with `accessToken` its hash (`ath`) for a resource
  request. Never reuse a proof. Rejects with `INVALID_OPTIONS` on a broker without `dpop`.
  @example
  const res = await fetch('/auth/login', { method: 'POST', headers: { DPoP: await broker.dpopProof('POST', '/auth/login') }, body });
  broker.dpopNonce('/auth/login', res.headers, { tokenEndpoint: true });
  broker.setTokens(await res.json());
  */
  dpopProof(method: string, url: string | URL, options?: { accessToken?: string }): Promise<string>;
  /**
  Takes the server's next nonce from an answer's `DPoP-Nonce` header (any status, 200s too), for
  transports other than the adapters. `tokenEndpoint: true` for answers of the authorization
  server (its nonce is kept apart from the APIs'). Throws `INVALID_OPTIONS` on a broker without `dpop`.
  */
  dpopNonce(url: string | URL, headers: Headers | Record<string, string>, options?: { tokenEndpoint?: boolean }): void;
  /** Whether `origin` may receive the token: the page's own origin or one in `allowedOrigins`. */
  allowsOrigin(origin: string): boolean;
  /**
  Adopt tokens from outside (after login). Starts a new session: a running refresh is discarded,
  calls waiting for a token get these, and 401s of requests sent with the earlier session's token
  reject with `LOGGED_OUT`. Throws `INVALID_TOKEN_RESPONSE` naming the bad field, `DISPOSED` after `dispose()`.
  */
  setTokens(tokens: TokenSet): void;
  /**
  Forget the tokens; waiting calls reject with `LOGGED_OUT`; a running refresh can never revive
  the session. With `revoke`, resolves once the server was told (or after `refreshTimeoutMs`);
  never rejects.
  */
  logout(): Promise<void>;
  /** Stop: waiting calls reject with `DISPOSED`, timers stop, later calls reject with `DISPOSED`. Call it when a Node script is done. */
  dispose(): void;
  /** Same as {@link TokenBroker.dispose}; the memory is released when the broker is garbage-collected. */
  free(): void;
  /** The origins that may receive the token: the page's own and `allowedOrigins`. */
  readonly allowedOrigins: string[];
  /**
  For the adapters: the current token `t` and until when it may be used without asking
  (`Date.now() < w && performance.now() < m`). Written by the broker after every change; `t` is
  `undefined` whenever a call must go through {@link TokenBroker.getAccessToken}. Read-only.
  */
  readonly fastPath: { readonly t?: string; readonly w: number; readonly m: number; a?: number };
  /** `'anonymous'` (no tokens), `'valid'`, `'refreshing'`, or `'expired'` (log in again). */
  readonly state: 'anonymous' | 'valid' | 'refreshing' | 'expired';
  /** Grows by one with every token set adopted. */
  readonly generation: number;
  /** Reports user activity (input, navigation) for `idleTimeoutMs`. */
  touch(): void;
  /** The current session snapshot: the same object until something in it changes (safe for `useSyncExternalStore`). */
  getSession(): TokenBrokerSession;
  /** Calls `listener` with the new snapshot whenever the session changes; returns the unsubscribe function. */
  subscribe(listener: (session: TokenBrokerSession) => void): () => void;
  /** Listens to an event; returns a function that removes the listener. */
  addEventListener(type: TokenBrokerEventType, listener: (event: TokenBrokerEvent) => void): () => void;
  removeEventListener(type: TokenBrokerEventType, listener: (event: TokenBrokerEvent) => void): void;
}

/**
Creates a broker, loading the WebAssembly module on first use (no `init()` to call).
@example
import { createTokenBroker } from 'token-broker';
const broker = await createTokenBroker({
  refresh: { url: '/auth/refresh-token' },
  tokens: loginResponse,
  onSessionExpired: () => router.push('/login'),
});
*/
export function createTokenBroker(options: TokenBrokerOptions): Promise<TokenBroker>;

/**
Loads the module from a custom source. Only needed where `token_broker_bg.wasm` next to the
package cannot be fetched (strict CSP, a CDN); Node reads it from disk by itself. Rejects with
`LOAD_FAILED` (the source tried, the cause, and what to do); a later call tries again.
@example
import { readFile } from 'node:fs/promises';
await initTokenBroker(await readFile(new URL(import.meta.resolve('token-broker/token_broker_bg.wasm'))));
*/
export function initTokenBroker(
  source?: BufferSource | Response | WebAssembly.Module | URL | string | Promise<Response>,
): Promise<void>;

/** Every code a {@link TokenBrokerError} can carry (see the README's table). */
export type TokenBrokerErrorCode =
  | 'NOT_AUTHENTICATED'
  | 'SESSION_EXPIRED'
  | 'REFRESH_FAILED'
  | 'REFRESH_TIMEOUT'
  | 'ABORTED'
  | 'INVALID_OPTIONS'
  | 'INVALID_TOKEN_RESPONSE'
  | 'LOGGED_OUT'
  | 'DISPOSED'
  | 'LOAD_FAILED'
  | 'DPOP_FAILED';

/**
The error every broker failure is, with a stable `code` and the original failure as `cause`.
`instanceof` also recognises errors from another realm.
@example
try { await broker.getAccessToken(); }
catch (e) { if (isTokenBrokerError(e) && e.code === 'SESSION_EXPIRED') showLogin(); }
*/
export class TokenBrokerError extends Error {
  constructor(code: TokenBrokerErrorCode, message?: string, options?: { cause?: unknown });
  readonly name: 'TokenBrokerError';
  readonly code: TokenBrokerErrorCode;
}

/** Type guard for {@link TokenBrokerError}. */
export function isTokenBrokerError(value: unknown): value is TokenBrokerError;
