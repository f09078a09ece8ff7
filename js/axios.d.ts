/**
 * `token-broker/axios` — attach a {@link TokenBroker} to an axios instance.
 *
 * The adapter has no policy of its own: it asks the broker for a token before each request to an
 * allowed origin, and on a 401 that the broker classifies as "token rejected" it replays the request
 * once with the token the broker hands back. Requires axios ≥ 1.19 (symbol-keyed config fields must
 * survive `mergeConfig`, which is how a replay is marked).
 *
 * @packageDocumentation
 */
import type { AxiosInstance, AxiosResponse } from 'axios';
import type { TokenBroker } from './index.js';

declare module 'axios' {
  interface AxiosRequestConfig<D = any, P = any> {
    /**
     * `true`: the token-broker adapter leaves this request alone (no `Authorization` header, no
     * refresh, no replay). Use it for public endpoints such as the login call.
     *
     * @example
     * ```ts
     * await api.post('/auth/login', credentials, { skipAuth: true });
     * ```
     */
    skipAuth?: boolean;
  }
}

/**
 * Which requests may be sent a second time after a 401 that rejected their token.
 *
 * - `'all'` (default): every request — a 401 means the server did not apply it.
 * - `'idempotent'`: GET, HEAD, OPTIONS, PUT, DELETE, and any request with an `Idempotency-Key` header.
 * - `false`: never replay; the caller gets the 401 (the broker still learns the token was rejected).
 *
 * @example
 * ```ts
 * attachAxios(api, broker, { replay: 'idempotent' });
 * ```
 */
export type ReplayPolicy = 'all' | 'idempotent' | false;

/**
 * Options of {@link attachAxios}.
 *
 * @example
 * ```ts
 * const options: AttachAxiosOptions = { allowedOrigins: ['https://api.example.com'], replay: 'all' };
 * ```
 */
export interface AttachAxiosOptions {
  /**
   * Extra origins (e.g. `'https://api.example.com'`) that may receive the token, besides the broker's
   * own `allowedOrigins`, the page's origin and the origin of the instance's `baseURL` when it is
   * absolute (a relative `baseURL` resolves against the page's base URL, which injected HTML can move).
   * Each entry must be exactly an origin (`scheme://host[:port]`).
   */
  allowedOrigins?: string[];
  /** Which requests are replayed after a token-rejecting 401. Default `'all'`. */
  replay?: ReplayPolicy;
  /**
   * Recognises a rejected token inside a successful answer (GraphQL servers answer 200 with
   * `errors[].extensions.code === 'UNAUTHENTICATED'`). `true` counts as a 401 of the sent token:
   * the same single refresh and single replay. Asked only for requests that carried the token.
   *
   * @example
   * ```ts
   * attachAxios(api, broker, {
   *   isAuthFailure: (res) => res.data?.errors?.some((e: any) => e.extensions?.code === 'UNAUTHENTICATED'),
   * });
   * ```
   */
  isAuthFailure?: (response: AxiosResponse) => boolean | Promise<boolean>;
}

/**
 * The parts of a {@link TokenBroker} the adapter uses (any object with these methods will do).
 *
 * @example
 * ```ts
 * const b: AxiosBroker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
 * ```
 */
export type AxiosBroker = Pick<TokenBroker, 'getAccessToken' | 'tokenRejected' | 'shouldRefreshOn401' | 'allowsOrigin'>;

/**
 * Adds the broker to an axios instance: a request interceptor that sets `Authorization: Bearer …`
 * (waiting for an in-flight refresh instead of sending a stale token), and a response interceptor that
 * replays a request once after a token-rejecting 401. Never refreshes on 403 or `insufficient_scope`.
 *
 * Requests to origins that are not allowed, and requests with `skipAuth: true`, pass untouched.
 * `config.signal` aborts the wait for a token (rejecting with a `TokenBrokerError` whose code is
 * `ABORTED`) and prevents the replay. When the refresh fails, the caller gets the broker's
 * `TokenBrokerError` (e.g. `SESSION_EXPIRED`). Several instances attached to one broker share one refresh.
 *
 * @param axiosInstance - The axios instance (`axios.create(...)` or the default `axios`).
 * @param broker - The broker from `createTokenBroker`.
 * @param options - Extra allowed origins and the replay policy.
 * @returns `detach()`: removes both interceptors.
 *
 * @example
 * ```ts
 * import axios from 'axios';
 * import { createTokenBroker } from 'token-broker';
 * import { attachAxios } from 'token-broker/axios';
 *
 * const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens });
 * const api = axios.create({ baseURL: '/api' });
 * const detach = attachAxios(api, broker, { replay: 'idempotent' });
 * const { data } = await api.get('/statistics');
 * detach();
 * ```
 */
export function attachAxios(axiosInstance: AxiosInstance, broker: AxiosBroker, options?: AttachAxiosOptions): () => void;
