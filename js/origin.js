// Internal to the adapters (not an entry point): which requests may carry the token, decided the
// way the browser will send them, without parsing a URL on the common paths.
import { TokenBrokerError } from './index.js';

const METHODS = ['getAccessToken', 'tokenRejected', 'shouldRefreshOn401', 'allowsOrigin'];

/** Fails at attach time, not at the first request, when the adapter is given the wrong thing. */
export function assertBroker(broker, who) {
  if (broker != null && typeof broker.then === 'function') {
    throw new TypeError(`${who}: pass the broker, not the promise: \`const broker = await createTokenBroker(...)\``);
  }
  const missing = broker == null ? METHODS : METHODS.filter((m) => typeof broker[m] !== 'function');
  if (missing.length) {
    throw new TypeError(`${who}: expected a TokenBroker from createTokenBroker() (with ${METHODS.join(', ')}); `
      + `got ${broker === null ? 'null' : typeof broker}${broker != null ? ` without ${missing.join(', ')}` : ''}`);
  }
}

/** An option bag: own properties only, known keys only (a polluted Object.prototype adds nothing). */
export function ownOptions(options, who, known) {
  // No prototype: `Object.prototype.allowedOrigins = [...]` planted by another script reads as nothing.
  const out = Object.create(null);
  if (options == null) return out;
  if (typeof options !== 'object') throw invalid(`${who}: options must be an object (got ${typeof options})`);
  for (const k of Object.keys(options)) {
    if (!known.includes(k)) throw invalid(`${who}: unknown option '${k}' (known: ${known.join(', ')})`);
    out[k] = options[k];
  }
  return out;
}

/** An adapter's options, with its function-valued options and `replay` checked. */
export function readOptions(options, who, known) {
  const out = ownOptions(options, who, known);
  const signatures = { fetch: '(input, init) => Promise<Response>', isAuthFailure: '(response) => boolean | Promise<boolean>' };
  for (const [k, signature] of Object.entries(signatures)) {
    if (out[k] !== undefined && typeof out[k] !== 'function') throw new TypeError(`${who}: options.${k} must be a function ${signature}`);
  }
  const r = out.replay;
  if (r !== undefined && r !== 'all' && r !== 'idempotent' && r !== false) {
    throw invalid(`${who}: replay must be 'all', 'idempotent' or false`);
  }
  return out;
}

const invalid = (msg) => new TokenBrokerError('INVALID_OPTIONS', msg);

/** `allowedOrigins` of an adapter: each exactly an origin, as the broker's own option. */
export function originSet(list, who) {
  if (list === undefined) return new Set();
  if (!Array.isArray(list)) throw invalid(`${who}: allowedOrigins must be an array of origins (got ${typeof list})`);
  return new Set(list.map((o) => {
    let origin = null;
    try { origin = new URL(o).origin; } catch { /* reported below */ }
    if (typeof o === 'string' && origin && origin !== 'null' && origin === o.replace(/\/$/, '')) return origin;
    let hint = '';
    try { hint = `; did you mean '${new URL(origin && origin !== 'null' ? o : `https://${o}`).origin}'?`; } catch { /* none */ }
    throw invalid(`${who}: allowedOrigins entries must be origins (scheme://host[:port], no path): got '${o}'${hint}`);
  }));
}

// A path on the base URL's origin: `/x`, but not `//host` or `/\host`, and nothing with a tab or
// newline (URL parsing deletes them, so `/\t/host` is `//host`).
const PATH = /^\/(?![/\\])[^\t\n\r]*$/;
// `scheme://host[:port]` followed by the end, `/`, `?` or `#`, in the only spelling the URL
// parser leaves as it is (lowercase, no userinfo, no escapes): a match is its exact origin.
const PLAIN = /^(https?:\/\/[a-z0-9.-]+(?::\d{1,5})?)(?:[/?#]|$)/;

/** The URL relative URLs resolve against, as the browser will send them. */
export const pageBase = () => globalThis.document?.baseURI ?? globalThis.location?.href;

/** A header of a `Headers`, an `AxiosHeaders` or a plain object (any case), or `undefined`. */
export function headerGet(headers, name) {
  if (headers == null || typeof headers !== 'object') return undefined;
  if (typeof headers.get === 'function') return headers.get(name) ?? undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
}

/**
 * `allowed(url)`: whether a request to `url` (absolute, or relative to `document.baseURI`) may
 * carry the token. `has(origin)` says which origins are allowed. Fail-closed: anything that does
 * not parse is not allowed.
 */
export function originGate(has) {
  let base, baseOk; // document.baseURI (a <base href> may change it) and whether its origin is allowed
  let last; // the last allowed `scheme://host[:port]` that matched PLAIN: most calls go to one API
  return function allowed(url) {
    if (PATH.test(url)) {
      const b = pageBase();
      if (b !== base) {
        base = b;
        baseOk = false;
        try { baseOk = b !== undefined && has(new URL(b).origin); } catch { /* not allowed */ }
      }
      return baseOk;
    }
    if (last !== undefined && url.startsWith(last)) {
      // The same test PLAIN makes, without the regex and the substring: what follows the origin
      // must be the end, `/`, `?` or `#` (NaN is the end).
      const c = url.charCodeAt(last.length);
      if ((c !== c || c === 47 || c === 63 || c === 35) && has(last)) return true;
    }
    const m = PLAIN.exec(url);
    if (m && has(m[1])) {
      last = m[1];
      return true;
    }
    try {
      return has(new URL(url, pageBase()).origin);
    } catch {
      return false;
    }
  };
}

/** The origins a broker allows, as a Set when it can list them (a delegate may only answer). */
export function brokerOrigins(broker) {
  const list = broker.allowedOrigins;
  const set = Array.isArray(list) ? new Set(list) : null;
  return set ? (o) => set.has(o) : (o) => broker.allowsOrigin(o);
}

/**
 * The broker's token without a call into the module while the broker says it is fresh, else
 * `undefined` (then ask `getAccessToken`). The comparison is the only logic here.
 */
export function freshToken(broker) {
  const fast = broker.fastPath;
  if (fast == null || typeof fast !== 'object') return () => undefined;
  const perf = globalThis.performance;
  return () => {
    const t = fast.t;
    if (t === undefined || Date.now() >= fast.w) return undefined;
    const m = perf.now();
    if (m >= fast.m) return undefined;
    fast.a = m; // a request is activity (idleTimeoutMs); the broker reads it when its timer fires
    return t;
  };
}

export const abortedError = (signal) =>
  new TokenBrokerError('ABORTED', 'The request was aborted while it waited for a token', { cause: signal?.reason });

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** `true` when `replay` lets a request with this method be sent again. */
export function replayAllowed(replay, method, hasIdempotencyKey) {
  if (replay === false) return false;
  if (replay === 'idempotent') return IDEMPOTENT.has(String(method || 'GET').toUpperCase()) || hasIdempotencyKey;
  return true;
}
