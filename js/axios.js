// token-broker/axios: attach a TokenBroker to an axios instance. No policy of its own:
// the broker decides when to refresh; this file only adds the header and replays once.
import {
  abortedError, assertBroker, brokerOrigins, freshToken, headerGet, originGate, originSet, readOptions, replayAllowed,
} from './origin.js';

const SENT = Symbol('token-broker.sentToken'); // the token a request went out with
const REPLAY = Symbol('token-broker.replayToken'); // set on the single replay of a request
const NONCED = Symbol('token-broker.nonceRetry'); // set on the single DPoP nonce retry of a request

// axios's own rules (helpers/isAbsoluteURL, combineURLs, buildFullPath): the URL it will send.
const ABSOLUTE = /^([a-z][a-z\d+\-.]*:)?\/\//i;
function fullPath(config) {
  const url = config.url == null ? '' : String(config.url);
  const base = config.baseURL;
  if (base && (!ABSOLUTE.test(url) || config.allowAbsoluteUrls === false)) {
    return url ? `${String(base).replace(/\/?\/$/, '')}/${url.replace(/^\/+/, '')}` : String(base);
  }
  return url;
}

function withToken(config, token, proof) {
  const set = { Authorization: proof === undefined ? `Bearer ${token}` : `DPoP ${token}` };
  if (proof !== undefined) set.DPoP = proof;
  if (typeof config.headers?.set === 'function') config.headers.set(set);
  else config.headers = { ...config.headers, ...set };
  config[SENT] = token;
  return config;
}

export function attachAxios(axiosInstance, broker, options) {
  if (typeof axiosInstance?.interceptors?.request?.use !== 'function') {
    throw new TypeError('attachAxios(instance, broker): instance must be an axios instance (axios or axios.create())');
  }
  assertBroker(broker, 'attachAxios');
  const opts = readOptions(options, 'attachAxios', ['allowedOrigins', 'replay', 'isAuthFailure']);
  const isAuthFailure = opts.isAuthFailure;
  const replay = opts.replay ?? 'all';
  const extra = originSet(opts.allowedOrigins, 'attachAxios');
  const brokerHas = brokerOrigins(broker);
  const fresh = freshToken(broker);
  // DPoP: `Authorization: DPoP <token>` and a fresh proof for every request, replay and retry.
  const dpop = broker.dpop === true;
  const method = (config) => String(config.method || 'get').toUpperCase();
  const authorize = (config, token) => (dpop
    ? broker.dpopProof(method(config), fullPath(config), { accessToken: token }).then((p) => withToken(config, token, p))
    : withToken(config, token));

  // The instance's own baseURL origin is allowed, when the app wrote it out (absolute): a relative
  // baseURL resolves against the page's base URL, which injected HTML may have moved elsewhere.
  let base, baseOrigin;
  const has = (origin) => {
    const b = axiosInstance.defaults?.baseURL;
    if (b !== base) {
      base = b;
      baseOrigin = null;
      try { if (typeof b === 'string' && ABSOLUTE.test(b)) baseOrigin = new URL(b, globalThis.location?.href).origin; } catch { /* none */ }
    }
    return origin === baseOrigin || extra.has(origin) || brokerHas(origin);
  };
  const allowed = originGate(has);

  const onRequest = (config) => {
    if (config.skipAuth || !allowed(fullPath(config))) return config;
    const token = config[REPLAY] ?? fresh();
    if (token !== undefined) {
      if (config.signal?.aborted) throw abortedError(config.signal);
      return authorize(config, token);
    }
    return broker.getAccessToken({ signal: config.signal }).then((t) => {
      if (config.signal?.aborted) throw abortedError(config.signal); // the caller gave up meanwhile
      return authorize(config, t);
    });
  };

  // A 401 that a redirect brought from another origin says nothing about our token.
  const fromAllowedOrigin = (request) => {
    const finalUrl = request?.responseURL || request?.res?.responseUrl;
    return !finalUrl || allowed(finalUrl);
  };

  // Every answer to a DPoP request may carry the server's next nonce (RFC 9449 §8), 200s too.
  const noteNonce = (response) => {
    if (dpop && response?.config?.[SENT]) {
      broker.dpopNonce(response.request?.responseURL || fullPath(response.config), response.headers);
    }
  };

  const onResponseError = async (error) => {
    const config = error?.config;
    const response = error?.response;
    noteNonce(response);
    if (!config || response?.status !== 401 || !config[SENT]) throw error;
    if (config.signal?.aborted) throw error;
    if (!fromAllowedOrigin(error.request)) throw error;
    const www = headerGet(response.headers, 'www-authenticate') ?? null;
    // A delegate broker may lack authChallenge; only a DPoP broker can be asked for a nonce retry.
    const challenge = dpop ? broker.authChallenge(www) : broker.shouldRefreshOn401(www) ? 'refresh' : 'none';
    if (challenge === 'nonce') {
      // The server wants its nonce in the proof: the same request once more, no refresh.
      if (config[NONCED] || !replayAllowed(replay, config.method, headerGet(config.headers, 'idempotency-key') != null)) throw error;
      return axiosInstance.request({ ...config, [NONCED]: true, [SENT]: undefined });
    }
    if (config[REPLAY] !== undefined) throw error;
    if (challenge !== 'refresh') throw error;
    return renewAndReplay(config, error);
  };

  // "Auth failure inside a 200" (GraphQL's UNAUTHENTICATED, a body error code): the app says so.
  const onResponse = async (response) => {
    noteNonce(response);
    if (!isAuthFailure) return response;
    const config = response?.config;
    if (!config?.[SENT] || config[REPLAY] !== undefined || config.signal?.aborted) return response;
    if (!fromAllowedOrigin(response.request) || !(await isAuthFailure(response))) return response;
    return renewAndReplay(config, response, true);
  };

  /** The token of `config` was rejected: one shared refresh, then the single replay. */
  async function renewAndReplay(config, failure, resolved = false) {
    const fail = () => { if (resolved) return failure; throw failure; };
    const renewed = broker.tokenRejected(config[SENT], { signal: config.signal });
    if (!replayAllowed(replay, config.method, headerGet(config.headers, 'idempotency-key') != null)) {
      renewed.catch(() => {}); // later calls still get a fresh token; this one is not sent again
      return fail();
    }
    const token = await renewed;
    if (config.signal?.aborted) throw abortedError(config.signal); // no replay after an abort
    return axiosInstance.request({ ...config, [REPLAY]: token, [SENT]: undefined });
  }

  const requestId = axiosInstance.interceptors.request.use(onRequest);
  const responseId = axiosInstance.interceptors.response.use(isAuthFailure || dpop ? onResponse : undefined, onResponseError);
  return function detach() {
    axiosInstance.interceptors.request.eject(requestId);
    axiosInstance.interceptors.response.eject(responseId);
  };
}
