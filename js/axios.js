// token-broker/axios: attach a TokenBroker to an axios instance. No policy of its own:
// the broker decides when to refresh; this file only adds the header and replays once.
import { TokenBrokerError } from './index.js';
const SENT = Symbol('token-broker.sentToken'); // the token a request went out with
const REPLAY = Symbol('token-broker.replayToken'); // set on the single replay of a request
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

const abortedError = (signal) =>
  new TokenBrokerError('ABORTED', 'The request was aborted while it waited for a token', { cause: signal?.reason });

/** `true` when `replay` lets a request with this method and these headers be sent again. */
function replayAllowed(replay, method, hasIdempotencyKey) {
  if (replay === false) return false;
  if (replay === 'idempotent') return IDEMPOTENT.has(String(method || 'GET').toUpperCase()) || hasIdempotencyKey;
  return true;
}

/**
 * A path such as `/statistics`, resolved against the page (when there is one). Not `//host`,
 * `/\host`, nor anything with a tab or newline, which URL parsing deletes (`/\t/host` is `//host`).
 */
const pageOnly = (u) => typeof u === 'string' && u[0] === '/' && u[1] !== '/' && u[1] !== '\\'
  && !/[\t\n\r]/.test(u) && !!globalThis.location;

function originOf(url, base) {
  try {
    const page = globalThis.location?.href;
    return new URL(url, base ? new URL(base, page) : page).origin;
  } catch {
    return null; // unparsable: treated as not allowed, so no token leaks
  }
}

function headerGet(headers, name) {
  if (!headers) return undefined;
  if (typeof headers.get === 'function') return headers.get(name) ?? undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
}

export function attachAxios(axiosInstance, broker, options = {}) {
  const replay = options.replay ?? 'all';
  const extra = new Set(options.allowedOrigins ?? []);

  let base, baseOrigin; // the instance's baseURL origin, recomputed only when baseURL changes
  const allowed = (config) => {
    // Fast path, the common case: a path on the page's own origin, which is always allowed.
    if (pageOnly(config.url) && (!config.baseURL || pageOnly(config.baseURL))) return true;
    // Where the request goes. An absolute URL ignores baseURL, as in axios (with
    // `allowAbsoluteUrls: false` axios sends it under baseURL, whose origin is allowed anyway).
    const origin = originOf(config.url ?? '', config.baseURL);
    if (origin === null) return false;
    if (axiosInstance.defaults?.baseURL !== base) {
      base = axiosInstance.defaults?.baseURL;
      baseOrigin = base ? originOf(base) : null;
    }
    return origin === baseOrigin || extra.has(origin) || broker.allowsOrigin(origin);
  };

  const onRequest = async (config) => {
    if (config.skipAuth || !allowed(config)) return config;
    const token = config[REPLAY] ?? (await broker.getAccessToken({ signal: config.signal }));
    if (config.signal?.aborted) throw abortedError(config.signal); // the caller gave up meanwhile
    if (typeof config.headers?.set === 'function') config.headers.set('Authorization', `Bearer ${token}`);
    else config.headers = { ...config.headers, Authorization: `Bearer ${token}` };
    config[SENT] = token;
    return config;
  };

  const onResponseError = async (error) => {
    const config = error?.config;
    const response = error?.response;
    if (!config || response?.status !== 401 || !config[SENT] || config[REPLAY] !== undefined) throw error;
    if (config.signal?.aborted) throw error;
    if (!broker.shouldRefreshOn401(headerGet(response.headers, 'www-authenticate') ?? null)) throw error;
    const renewed = broker.tokenRejected(config[SENT], { signal: config.signal });
    if (!replayAllowed(replay, config.method, headerGet(config.headers, 'idempotency-key') != null)) {
      renewed.catch(() => {}); // later calls still get a fresh token; this one is not sent again
      throw error;
    }
    const token = await renewed;
    if (config.signal?.aborted) throw abortedError(config.signal); // no replay after an abort
    return axiosInstance.request({ ...config, [REPLAY]: token, [SENT]: undefined });
  };

  const requestId = axiosInstance.interceptors.request.use(onRequest);
  const responseId = axiosInstance.interceptors.response.use(undefined, onResponseError);
  return function detach() {
    axiosInstance.interceptors.request.eject(requestId);
    axiosInstance.interceptors.response.eject(responseId);
  };
}
