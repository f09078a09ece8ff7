// token-broker/fetch: a fetch() that carries the broker's token. No policy of its own:
// the broker decides when to refresh; this file only adds the header and replays once.
import { TokenBrokerError } from './index.js';
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

const abortedError = (signal) =>
  new TokenBrokerError('ABORTED', 'The request was aborted while it waited for a token', { cause: signal?.reason });

function replayAllowed(replay, request) {
  if (replay === false) return false;
  if (replay === 'idempotent') return IDEMPOTENT.has(request.method) || request.headers.has('Idempotency-Key');
  return true;
}

/** A streamed body cannot be sent twice (cloning would buffer the whole stream). */
function isStreamed(init) {
  return init?.duplex === 'half' || (typeof ReadableStream !== 'undefined' && init?.body instanceof ReadableStream);
}

export function createAuthFetch(broker, options = {}) {
  const replay = options.replay ?? 'all';
  const extra = new Set(options.allowedOrigins ?? []);

  return async function authFetch(input, init) {
    const send = options.fetch ?? globalThis.fetch; // resolved per call: late polyfills and test stubs apply
    const request = new Request(input, init);
    const origin = new URL(request.url).origin;
    if (!extra.has(origin) && !broker.allowsOrigin(origin)) return send(request);

    const token = await broker.getAccessToken({ signal: request.signal });
    if (request.signal.aborted) throw abortedError(request.signal);
    request.headers.set('Authorization', `Bearer ${token}`);
    // Keep a copy for the replay BEFORE the first send consumes the body.
    const spare = !isStreamed(init) && replayAllowed(replay, request) ? request.clone() : null;

    const response = await send(request);
    if (response.status !== 401 || !broker.shouldRefreshOn401(response.headers.get('WWW-Authenticate'))) {
      return response;
    }
    const renewed = broker.tokenRejected(token, { signal: request.signal });
    if (!spare || request.signal.aborted) {
      renewed.catch(() => {}); // later calls get a fresh token; the caller gets this 401
      return response;
    }
    response.body?.cancel().catch(() => {}); // this 401 is never returned: free its connection
    const fresh = await renewed;
    if (request.signal.aborted) throw abortedError(request.signal); // no replay after an abort
    spare.headers.set('Authorization', `Bearer ${fresh}`);
    return send(spare); // the one replay: a 401 here goes to the caller as a Response
  };
}
