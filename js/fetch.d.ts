/**
 * `token-broker/fetch` — a `fetch` that carries the {@link TokenBroker}'s token.
 *
 * The wrapper has no policy of its own: it asks the broker for a token before each request to an
 * allowed origin, and on a 401 that the broker classifies as "token rejected" it replays the request
 * once (from a clone taken before the first send) with the token the broker hands back.
 *
 * @packageDocumentation
 */
import type { TokenBroker } from './index.js';

/**
 * Which requests may be sent a second time after a 401 that rejected their token.
 *
 * - `'all'` (default): every request — a 401 means the server did not apply it.
 * - `'idempotent'`: GET, HEAD, OPTIONS, PUT, DELETE, and any request with an `Idempotency-Key` header.
 * - `false`: never replay; the caller gets the 401 (the broker still learns the token was rejected).
 *
 * @example
 * ```ts
 * const authFetch = createAuthFetch(broker, { replay: 'idempotent' });
 * ```
 */
export type ReplayPolicy = 'all' | 'idempotent' | false;

/**
 * Options of {@link createAuthFetch}.
 *
 * @example
 * ```ts
 * const options: AuthFetchOptions = { allowedOrigins: ['https://api.example.com'], fetch: myFetch };
 * ```
 */
export interface AuthFetchOptions {
  /**
  The underlying fetch. Default: `globalThis.fetch`, looked up at each call. It receives
  `(input, init)` as `window.fetch` does: the caller's input unchanged and an `init` whose
  `headers` carry `Authorization`; a `Request` input is passed as a `Request`.
  */
  fetch?: typeof fetch;
  /**
   * Extra origins that may receive the token, besides the broker's own `allowedOrigins` and the
   * page's origin.
   */
  allowedOrigins?: string[];
  /** Which requests are replayed after a token-rejecting 401. Default `'all'`. */
  replay?: ReplayPolicy;
  /**
   * Recognises a rejected token inside a non-401 answer (GraphQL servers answer 200 with
   * `errors[].extensions.code === 'UNAUTHENTICATED'`). It gets a clone of the `Response` (the caller
   * can still read the body); `true` counts as a 401 of the sent token: the same single refresh and
   * single replay. Asked only for requests that carried the token.
   *
   * @example
   * ```ts
   * createAuthFetch(broker, {
   *   isAuthFailure: async (res) => (await res.json()).errors?.some((e: any) => e.extensions?.code === 'UNAUTHENTICATED'),
   * });
   * ```
   */
  isAuthFailure?: (response: Response) => boolean | Promise<boolean>;
}

/**
 * A function with `fetch`'s signature and semantics: it resolves with the `Response` (a 401 that is
 * not replayed, or a 401 on the replay, is returned, not thrown).
 *
 * @example
 * ```ts
 * const res: Response = await authFetch('/statistics', { headers: { Accept: 'application/json' } });
 * ```
 */
export type AuthFetch = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/**
 * The parts of a {@link TokenBroker} the wrapper uses (any object with these methods will do).
 *
 * @example
 * ```ts
 * const b: FetchBroker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
 * ```
 */
export type FetchBroker = Pick<TokenBroker, 'getAccessToken' | 'tokenRejected' | 'shouldRefreshOn401' | 'allowsOrigin'>;

/**
 * Wraps `fetch` so that requests to allowed origins carry `Authorization: Bearer …` (waiting for an
 * in-flight refresh instead of sending a stale token) and are replayed once after a token-rejecting
 * 401. Never refreshes on 403 or `insufficient_scope`; requests to other origins pass untouched.
 *
 * A streamed body (`ReadableStream`, `duplex: 'half'`) is never replayed: the caller gets the 401, and
 * the broker is still told so that later calls get a fresh token. The request's `signal` aborts the
 * wait for a token (rejecting with a `TokenBrokerError` whose code is `ABORTED`) and prevents the
 * replay. When the refresh fails, the returned promise rejects with the broker's `TokenBrokerError`.
 *
 * @param broker - The broker from `createTokenBroker`.
 * @param options - The underlying fetch, extra allowed origins and the replay policy.
 * @returns A fetch-compatible function.
 *
 * @example
 * ```ts
 * import { createTokenBroker } from 'token-broker';
 * import { createAuthFetch } from 'token-broker/fetch';
 *
 * const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens });
 * const authFetch = createAuthFetch(broker);
 * const stats = await (await authFetch('/statistics')).json();
 * ```
 */
export function createAuthFetch(broker: FetchBroker, options?: AuthFetchOptions): AuthFetch;
