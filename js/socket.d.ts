/**
 * `token-broker/socket` — a WebSocket and a server-sent event stream that carry the
 * {@link TokenBroker}'s token and survive its expiry.
 *
 * Both helpers have no refresh policy of their own. When the server says the token expired (a
 * close code, a message, an event, or a 401), they report the token they used with
 * `broker.tokenRejected(token)`. So any number of sockets, streams and HTTP requests that meet
 * the same expired token cause **one** refresh, and each connection comes back with the new
 * token. They stop for good after `close()`, after `broker.logout()`, and when the broker cannot
 * give a token any more (`SESSION_EXPIRED`, `LOGGED_OUT`, `DISPOSED`, `NOT_AUTHENTICATED`).
 *
 * A token goes only to an allowed origin, by the same rule as the fetch adapter: the page's
 * origin, the broker's `allowedOrigins` and the call's own `allowedOrigins`. For that check
 * `ws:` counts as `http:` and `wss:` as `https:`.
 *
 * With a DPoP broker (`createTokenBroker({ dpop: true })`, RFC 9449) every connection carries a
 * fresh proof: the event stream sends `Authorization: DPoP <token>` and a `DPoP` header; a socket
 * must use `auth: 'message'`, whose auth message carries the proof (a browser's handshake can
 * carry no `DPoP` header). A server's nonce challenge is answered by one retry with the new nonce,
 * never by a refresh.
 *
 * @packageDocumentation
 */
import type { TokenBroker } from './index.js';

/**
 * The parts of a {@link TokenBroker} these helpers use. `addEventListener` is optional: without
 * it, a logout is noticed only when the next token is asked for. A DPoP broker (`dpop: true`)
 * also lends `dpopProof`, `dpopNonce` and `authChallenge`.
 */
export type SocketBroker = Pick<TokenBroker, 'getAccessToken' | 'tokenRejected' | 'shouldRefreshOn401' | 'allowsOrigin'>
  & Partial<Pick<TokenBroker, 'addEventListener' | 'removeEventListener' | 'allowedOrigins' | 'fastPath'>>
  & ({ readonly dpop?: false } | Pick<TokenBroker, 'dpop' | 'dpopProof' | 'dpopNonce' | 'authChallenge'>);

/**
 * Where the token goes when a socket connects.
 *
 * - `'query'` (default): the URL parameter `param` (default `access_token`): `wss://api/ws?access_token=…`.
 *   Simple and widely supported, but URLs end up in server and proxy logs.
 * - `'protocol'`: two extra subprotocol entries, `bearer` and then the token:
 *   `Sec-WebSocket-Protocol: bearer, <token>[, your protocols…]`. The server must select one of
 *   the offered entries, for example `bearer`, and must never echo the token. The token must
 *   consist of subprotocol characters (JWTs do; base64 with `+`, `/` or `=` does not).
 * - `'message'`: nothing in the handshake; the first message on the open socket is
 *   `authMessage(token, { dpop })` (default `{"type":"auth","token":"…"}`), sent before `onOpen` runs.
 *
 * With a DPoP broker (`broker.dpop === true`) only `'message'` is possible: a DPoP-bound token is
 * worthless without a proof, and no proof can go with a URL or a subprotocol, so `'query'` and
 * `'protocol'` (and leaving `auth` out) throw `INVALID_OPTIONS` at once. Each socket then gets a
 * fresh proof for `GET` and the socket's URL as `http:` (`ws:`) or `https:` (`wss:`), without the
 * query (`wss://api.example/ws?room=1` → `htu` `https://api.example/ws`), with the token's hash
 * (`ath`) and the server's nonce when one is known. The default message is then
 * `{"type":"auth","token":"…","dpop":"<proof>"}`. A close **4402** means "use this DPoP nonce":
 * its reason is the nonce; it is noted (`broker.dpopNonce`) and the same token goes once more
 * with a new proof, without a refresh (a second 4402 before a socket proved its token is an
 * ordinary failure, retried with backoff).
 */
export type WebSocketAuth = 'query' | 'protocol' | 'message';

/**
 * How failed connections are retried: after `1`, `2`, `4`… × `baseMs` (±20 % jitter), at most
 * `maxMs` apart, and at most `retries` times in a row. A connection that proves its token (it
 * receives a message, or stays open 5 s) resets the count.
 *
 * Reconnecting after an expired token is not a retry: it happens at once, after the refresh.
 * Between two connections that proved their token, there is at most one such refresh, so a
 * server that refuses every token cannot make the broker refresh in a loop.
 */
export interface ReconnectOptions {
  /** Attempts in a row before giving up. Default `5`; `0` = never retry after a failure. */
  retries?: number;
  /** The first delay, in ms. Default `250`. */
  baseMs?: number;
  /** The longest delay, in ms. Default `10000`. */
  maxMs?: number;
}

/** What {@link WebSocketHandle.closed} and {@link EventStreamHandle.closed} resolve with. */
export interface ConnectionEnd {
  /**
   * - `'closed'`: the caller called `close()` (or the stream's `signal` aborted).
   * - `'logout'`: `broker.logout()` (in this tab or, with `crossTab`, another one).
   * - `'session'`: the broker could not give a token: `error` is the `TokenBrokerError`
   *   (`SESSION_EXPIRED`, `LOGGED_OUT`, `DISPOSED`, `NOT_AUTHENTICATED`).
   * - `'server'`: the server ended it for good (a WebSocket close with 1000 that does not mean
   *   "expired"; a stream answer such as 404 or 403 that a retry cannot fix).
   * - `'gave-up'`: `retries` attempts in a row failed; `code`/`reason` or `error` tell the last one.
   * - `'error'`: the URL was refused (`INVALID_OPTIONS`: not an allowed origin, or a factory
   *   returned something that is not a URL) or the `WebSocket` constructor threw.
   */
  why: 'closed' | 'logout' | 'session' | 'server' | 'gave-up' | 'error';
  /** The close code: the one given to `close()`, or the server's last close. */
  code?: number;
  reason?: string;
  error?: unknown;
}

/**
 * Options of {@link connectWebSocket}.
 *
 * @example
 * ```ts
 * const options: WebSocketOptions = { auth: 'protocol', protocols: ['chat.v1'], onMessage: (e) => render(e.data) };
 * ```
 */
export interface WebSocketOptions {
  /** Where the token goes. Default `'query'`. */
  auth?: WebSocketAuth;
  /** The URL parameter for `auth: 'query'`. Default `'access_token'`. */
  param?: string;
  /** Your own subprotocols, offered after the token entries of `auth: 'protocol'`. */
  protocols?: string | string[];
  /**
   * The first message for `auth: 'message'`. Default `JSON.stringify({ type: 'auth', token, dpop })`
   * (`dpop` left out without DPoP). `dpop`: the DPoP proof for this socket when the broker has
   * `dpop` on (see {@link WebSocketAuth}), else `undefined`.
   *
   * @example
   * ```ts
   * authMessage: (token, { dpop }) => JSON.stringify({ op: 'login', accessToken: token, proof: dpop })
   * ```
   */
  authMessage?: (token: string, extra: { dpop?: string }) => string | ArrayBufferLike | Blob | ArrayBufferView;
  /** Close codes that mean "token expired or refused". Default `[4001, 4401]`. */
  expiredCodes?: number[];
  /**
   * Recognises a message that means "token expired" (for servers that say so in a message before
   * or instead of closing). `true`: the socket is closed (1000) and reconnects after the refresh;
   * the message does not reach `onMessage`.
   *
   * @example
   * ```ts
   * isExpiredMessage: (e) => typeof e.data === 'string' && JSON.parse(e.data).error === 'token_expired'
   * ```
   */
  isExpiredMessage?: (event: MessageEvent) => boolean;
  /** How failed connections are retried. */
  reconnect?: ReconnectOptions;
  /** Extra origins that may receive the token (`https://…` or `wss://…`), besides the broker's. */
  allowedOrigins?: string[];
  /** Each time a socket opens (after the auth message of `auth: 'message'` was sent). */
  onOpen?: (event: Event) => void;
  /** Every message, except one that `isExpiredMessage` recognised. */
  onMessage?: (event: MessageEvent) => void;
  /**
   * Each time a socket closes by itself (not after `close()` or a logout: those resolve
   * `closed`). `expired`: the close meant "token expired"; `willReconnect`: another socket follows.
   */
  onClose?: (event: CloseEvent, info: { expired: boolean; willReconnect: boolean }) => void;
  /** The WebSocket constructor. Default `globalThis.WebSocket`, looked up at each connection. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/** The connection {@link connectWebSocket} returns: one logical connection across sockets. */
export interface WebSocketHandle {
  /**
   * Sends on the current socket when it is open and returns `true`; returns `false` (nothing
   * sent, nothing queued) while connecting or reconnecting. Use `onOpen` to send what a new
   * socket needs.
   */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  /**
   * Closes for good: the current socket is closed with `code` (default 1000) and `reason`, no
   * socket follows, and every wait and timer is cancelled. `closed` resolves at once.
   */
  close(code?: number, reason?: string): void;
  /** The current socket, or `null` between sockets and after the end. */
  readonly socket: WebSocket | null;
  /** The current socket's `readyState`; `0` (CONNECTING) between sockets, `3` (CLOSED) after the end. */
  readonly readyState: number;
  /** Resolves once, when the connection ends for good. Never rejects. */
  readonly closed: Promise<ConnectionEnd>;
}

/**
 * Opens a WebSocket with the broker's token, and keeps it connected.
 *
 * - The token comes from `broker.getAccessToken()` and goes where `auth` says.
 * - A close with one of `expiredCodes` (or a message that `isExpiredMessage` recognises) reports
 *   the socket's token with `broker.tokenRejected(token)`: every socket, stream and request
 *   that met the same token shares one refresh. The next socket uses the new token.
 * - Any other close except 1000 is retried with backoff (`reconnect`). A 1000 close from the
 *   server ends the connection (`why: 'server'`).
 * - `broker.logout()` closes the socket with 1000 `logged out`, and nothing reconnects.
 * - The URL must be on an allowed origin. A static URL that is not throws a `TokenBrokerError`
 *   `INVALID_OPTIONS` at once, before any token is asked for. A URL from a factory is checked at
 *   each connection, and a refused one ends the connection (`why: 'error'`).
 *
 * A server that refuses the handshake with an HTTP 401 looks like close 1006 to a browser (it
 * cannot read the status). That is retried as a failure and does not refresh: have the server
 * accept the upgrade and close with 4401.
 *
 * @param broker - The broker from `createTokenBroker`.
 * @param urlOrFactory - `ws:`, `wss:`, `http(s):` or a relative URL (resolved against the page),
 *   or a function that returns one for each connection.
 * @returns The handle: `send`, `close`, `socket`, `readyState`, `closed`.
 *
 * @example
 * ```ts
 * import { connectWebSocket } from 'token-broker/socket';
 *
 * const live = connectWebSocket(broker, '/ws', {
 *   auth: 'query',
 *   onOpen: () => live.send(JSON.stringify({ subscribe: 'orders' })),
 *   onMessage: (e) => render(JSON.parse(e.data)),
 * });
 * // later
 * live.close();
 * const { why } = await live.closed;
 * ```
 */
export function connectWebSocket(
  broker: SocketBroker,
  urlOrFactory: string | URL | (() => string | URL),
  options?: WebSocketOptions,
): WebSocketHandle;

/** One server-sent event, as `EventSource` would deliver it. */
export interface StreamEvent {
  /** The `event:` field, or `'message'`. */
  type: string;
  /** The `data:` lines, joined with `\n`. */
  data: string;
  /** The last `id:` the server sent in this or an earlier event, or `''`. */
  lastEventId: string;
}

/**
 * Options of {@link openEventStream}.
 *
 * @example
 * ```ts
 * const options: EventStreamOptions = { onEvent: (e) => console.log(e.type, e.data) };
 * ```
 */
export interface EventStreamOptions {
  /** Every event, except one that `isExpiredEvent` recognised. */
  onEvent?: (event: StreamEvent) => void;
  /** Each time the stream is connected (the `Response`, headers only). */
  onOpen?: (response: Response) => void;
  /**
   * Each failure: a network error, a bad answer, the stream breaking or ending.
   * `willRetry: false` when it ends the stream.
   */
  onError?: (error: unknown, info: { willRetry: boolean }) => void;
  /** Closes the stream for good when aborted (`why: 'closed'`). */
  signal?: AbortSignal;
  /**
   * Recognises an event that means "token expired": the stream is dropped, the token reported
   * with `tokenRejected`, and the stream reopened (with `Last-Event-ID`) after the shared refresh.
   * Default: `event: error` whose JSON `data` has `code` `"token_expired"` or `"invalid_token"`.
   */
  isExpiredEvent?: (event: StreamEvent) => boolean;
  /** Extra request headers (`Authorization`, `DPoP`, `Accept` and `Last-Event-ID` are set by the helper). */
  headers?: HeadersInit;
  /** The underlying fetch. Default `globalThis.fetch`, looked up at each request. */
  fetch?: typeof fetch;
  /** How failed attempts are retried; a server `retry:` field replaces `baseMs`. */
  reconnect?: ReconnectOptions;
  /** Extra origins that may receive the token, besides the broker's. */
  allowedOrigins?: string[];
}

/** The stream {@link openEventStream} returns. */
export interface EventStreamHandle {
  /** Stops for good: the current request is aborted, no reconnect. `closed` resolves at once. */
  close(): void;
  /** `0` connecting or waiting to reconnect, `1` open, `3` closed for good (as `EventSource`'s 0/1/2, but 3). */
  readonly readyState: number;
  /** The last event ID the server sent; sent back as `Last-Event-ID` when the stream reconnects. */
  readonly lastEventId: string;
  /** Resolves once, when the stream ends for good. Never rejects. */
  readonly closed: Promise<ConnectionEnd>;
}

/**
 * Reads a `text/event-stream` with `fetch` and `Authorization: Bearer …` (`EventSource` cannot
 * send headers), with the same behaviour as {@link connectWebSocket}. With a DPoP broker, each
 * request carries `Authorization: DPoP …` and a fresh `DPoP` proof (`GET`, the URL without its
 * query); `DPoP-Nonce` is noted from every answer, and a 401 `use_dpop_nonce` is answered by the
 * same token once more with the new nonce, without a refresh.
 *
 * - a 401 up front that the broker counts as a rejected token (see `shouldRefreshOn401`), or an
 *   event that `isExpiredEvent` recognises mid-stream → `tokenRejected(token)`, one shared
 *   refresh, and the stream again with the new token, resuming with `Last-Event-ID`;
 * - a network error, 5xx, 408, 429 or the stream ending → retried with backoff;
 * - any other error status → the end (`why: 'server'`);
 * - `broker.logout()`, `close()` or `signal` → the end.
 *
 * A URL that is not on an allowed origin throws a `TokenBrokerError` `INVALID_OPTIONS` at once.
 *
 * @example
 * ```ts
 * import { openEventStream } from 'token-broker/socket';
 *
 * const stream = openEventStream(broker, '/events', {
 *   onEvent: (e) => append(JSON.parse(e.data)),
 *   onError: (err, { willRetry }) => { if (!willRetry) showOffline(); },
 * });
 * ```
 */
export function openEventStream(broker: SocketBroker, url: string | URL, options?: EventStreamOptions): EventStreamHandle;
