// token-broker/fetch: a fetch() that carries the broker's token. No policy of its own:
// the broker decides when to refresh; this file only adds the header and replays once.
import {
  abortedError, assertBroker, brokerOrigins, freshToken, originGate, originSet, readOptions, replayAllowed,
} from './origin.js';

/** A streamed body cannot be sent twice (cloning would buffer the whole stream). */
function isStreamed(init) {
  return init?.duplex === 'half' || (typeof ReadableStream !== 'undefined' && init?.body instanceof ReadableStream);
}

const isPlainObject = (h) => h != null && typeof h === 'object' && Object.getPrototypeOf(h) === Object.prototype;

/** The caller's headers plus the token (and its DPoP proof), without touching the caller's object. */
function headersWith(headers, token, proof) {
  const value = proof === undefined ? `Bearer ${token}` : `DPoP ${token}`;
  // A plain object without its own Authorization: a copy is cheaper than a Headers object.
  if (proof === undefined && headers === undefined) return { Authorization: value };
  if (proof === undefined && isPlainObject(headers) && !Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
    return { ...headers, Authorization: value };
  }
  const h = new Headers(headers);
  h.set('Authorization', value);
  if (proof !== undefined) h.set('DPoP', proof);
  return h;
}

const methodOf = (init) => String(init?.method ?? 'GET').toUpperCase();

const hasHeader = (headers, name) => (headers instanceof Headers
  ? headers.has(name)
  : Object.keys(headers).some((k) => k.toLowerCase() === name));

export function createAuthFetch(broker, options) {
  assertBroker(broker, 'createAuthFetch');
  const opts = readOptions(options, 'createAuthFetch', ['allowedOrigins', 'replay', 'fetch', 'isAuthFailure']);
  const isAuthFailure = opts.isAuthFailure;
  const replay = opts.replay ?? 'all';
  const extra = originSet(opts.allowedOrigins, 'createAuthFetch');
  const brokerHas = brokerOrigins(broker);
  const allowed = originGate((o) => extra.has(o) || brokerHas(o));
  const fresh = freshToken(broker);
  // DPoP: `Authorization: DPoP <token>` and a fresh proof for every send, replay and retry.
  const dpop = broker.dpop === true;
  /** The caller's headers with `token`, and with DPoP a fresh proof for this send. */
  const authHeaders = async (init, url, token) => headersWith(init?.headers, token,
    dpop ? await broker.dpopProof(methodOf(init), url, { accessToken: token }) : undefined);
  /** Whether this request may be sent again (a nonce retry, the replay after a refresh). */
  const replayable = (init, headers) => !isStreamed(init) && !init?.signal?.aborted
    && replayAllowed(replay, methodOf(init), hasHeader(headers, 'idempotency-key'));

  return async function authFetch(input, init) {
    const send = opts.fetch ?? globalThis.fetch; // resolved per call: late polyfills and test stubs apply
    if (typeof Request !== 'undefined' && input instanceof Request) return viaRequest(send, input, init);
    const url = typeof input === 'string' ? input : String(input?.href ?? input);
    if (!allowed(url)) return send(input, init);

    const signal = init?.signal ?? undefined;
    const token = fresh() ?? (await broker.getAccessToken({ signal }));
    if (signal?.aborted) throw abortedError(signal);
    // The hot path (a fresh bearer token) builds its headers without an await.
    const headers = dpop ? await authHeaders(init, url, token) : headersWith(init?.headers, token);
    let response = await send(input, { ...init, headers });
    if (dpop && nonceAsked(response, url) && replayable(init, headers)) {
      response.body?.cancel().catch(() => {});
      response = await send(input, { ...init, headers: await authHeaders(init, url, token) }); // the one nonce retry
      nonceAsked(response, url);
    }
    const rejected = mayRefresh(response);
    if (rejected === false || !(await rejected)) return response;

    const renewed = broker.tokenRejected(token, { signal });
    if (!replayable(init, headers)) {
      renewed.catch(() => {}); // later calls get a fresh token; the caller gets this 401
      return response;
    }
    response.body?.cancel().catch(() => {}); // this 401 is never returned: free its connection
    const next = await renewed;
    if (signal?.aborted) throw abortedError(signal); // no replay after an abort
    return send(input, { ...init, headers: await authHeaders(init, url, next) }); // the one replay
  };

  /**
   * DPoP: notes the response's nonce (every answer may carry the next one, RFC 9449 §8) and says
   * whether it is a `use_dpop_nonce` challenge: the same request once more, no refresh.
   */
  function nonceAsked(response, url) {
    const from = response.url || url;
    if (response.url && !allowed(response.url)) return false;
    broker.dpopNonce(from, response.headers);
    return response.status === 401 && broker.authChallenge(response.headers.get('WWW-Authenticate')) === 'nonce';
  }

  /**
   * A rejection of our token: from an allowed origin (not one a redirect led to), a 401 worth a
   * refresh, or what `isAuthFailure` recognises (it reads a clone; the caller keeps the body).
   */
  function mayRefresh(response) {
    // Synchronous unless isAuthFailure is consulted: the common 2xx costs no extra await.
    if (response.status !== 401 && isAuthFailure === undefined) return false;
    if (response.url && !allowed(response.url)) return false;
    if (response.status === 401) return broker.shouldRefreshOn401(response.headers.get('WWW-Authenticate'));
    return Promise.resolve(isAuthFailure(response.clone())).then(Boolean);
  }

  // A Request object: its body can only be read once, so a copy is kept for the replay.
  async function viaRequest(send, input, init) {
    const request = new Request(input, init);
    if (!allowed(request.url)) return send(request);
    const token = fresh() ?? (await broker.getAccessToken({ signal: request.signal }));
    if (request.signal.aborted) throw abortedError(request.signal);
    const authorize = async (r, t) => {
      r.headers.set('Authorization', dpop ? `DPoP ${t}` : `Bearer ${t}`);
      if (dpop) r.headers.set('DPoP', await broker.dpopProof(r.method, r.url, { accessToken: t }));
      return r;
    };
    await authorize(request, token);
    // Keep a copy for the replay BEFORE the first send consumes the body.
    let spare = !isStreamed(init) && replayAllowed(replay, request.method, request.headers.has('Idempotency-Key'))
      ? request.clone() : null;
    let response = await send(request);
    if (dpop && nonceAsked(response, request.url) && spare && !request.signal.aborted) {
      response.body?.cancel().catch(() => {});
      const again = spare;
      spare = again.clone();
      response = await send(await authorize(again, token)); // the one nonce retry
      nonceAsked(response, request.url);
    }
    const rejected = mayRefresh(response);
    if (rejected === false || !(await rejected)) return response;
    const renewed = broker.tokenRejected(token, { signal: request.signal });
    if (!spare || request.signal.aborted) {
      renewed.catch(() => {});
      return response;
    }
    response.body?.cancel().catch(() => {});
    const next = await renewed;
    if (request.signal.aborted) throw abortedError(request.signal);
    return send(await authorize(spare, next));
  }
}
