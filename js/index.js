// Entry `token-broker`. In a browser the .wasm is fetched and compiled at import (never
// instantiated, no storage touched), so createTokenBroker only instantiates. In Node and SSR the
// import does nothing; the module is read from disk on first use.
import init, { TokenBroker } from './token_broker.js';

const WASM = new URL('./token_broker_bg.wasm', import.meta.url);

let compiled = typeof document !== 'undefined' && typeof WebAssembly?.compileStreaming === 'function'
  && typeof fetch === 'function' ? WebAssembly.compileStreaming(fetch(WASM)) : undefined;
compiled?.catch(() => { compiled = undefined; }); // the first create falls back to a plain load, and reports

let loading;

// After free() a wasm-bindgen object throws "null pointer passed to rust" on every call. A broker
// instead stays a disposed broker (every call rejects with DISPOSED); its memory is reclaimed
// when it is garbage-collected.
// The glue already pointed `Symbol.dispose` (`using broker = ...`) at the old free: repoint it.
TokenBroker.prototype.free = function free() { this.dispose(); };
if (typeof Symbol.dispose === 'symbol') TokenBroker.prototype[Symbol.dispose] = TokenBroker.prototype.free;

const node = globalThis.process?.getBuiltinModule;

/** A `file:` URL read from disk where the host can (Node: fetch cannot read files). */
function fileBytes(source) {
  const url = source instanceof URL ? source : typeof source === 'string' && source.startsWith('file:') ? new URL(source) : null;
  return url?.protocol === 'file:' && typeof node === 'function' ? node('fs').readFileSync(node('url').fileURLToPath(url)) : source;
}

/** Where the default module comes from, as the host can read it. */
async function defaultSource() {
  if (WASM.protocol === 'file:' && typeof node === 'function') return fileBytes(WASM);
  if (compiled) {
    try { return await compiled; } catch { /* a plain load below gives the real error */ }
  }
  return WASM;
}

function hintFor(message) {
  if (/magic|expected .*wasm|not a wasm|Incorrect response MIME|HTML/i.test(message)) {
    return 'The server sent something that is not WebAssembly in its place (often an HTML page: a dev server '
      + 'or SPA fallback answering an unknown path). Serve the file as application/wasm, exclude '
      + "'token-broker' from Vite's optimizeDeps (Vite 7 dev server), or load it yourself with initTokenBroker(bytes | url).";
  }
  return 'Check that the file is served next to index.js (bundlers copy it when they see '
    + "new URL('token_broker_bg.wasm', import.meta.url)), or load it yourself with initTokenBroker(bytes | url).";
}

function loadFailed(tried, cause) {
  // Node's "fetch failed" keeps the reason (ECONNREFUSED, ENOENT, ...) one level down.
  const inner = cause?.cause;
  const message = String(cause?.message ?? cause) + (inner ? ` (${inner.code ?? inner.message ?? inner})` : '');
  return new TokenBrokerError('LOAD_FAILED',
    `Could not load the token-broker WebAssembly module from ${tried}: ${message}. ${hintFor(message)}`, { cause });
}

const describe = (source) => {
  if (source === undefined) return WASM.href;
  if (typeof source === 'string' || source instanceof URL) return String(source);
  return typeof source?.url === 'string' && source.url ? source.url : 'the source given to initTokenBroker';
};

/**
 * Loads the module from a custom source (bytes, a `Response`, a `WebAssembly.Module` or a URL).
 * Only needed where the default (`token_broker_bg.wasm` next to this file) cannot be read, e.g.
 * under a strict CSP or from a CDN. Rejects with `TokenBrokerError` `LOAD_FAILED`; a later call
 * (or `createTokenBroker`) tries again.
 */
export function initTokenBroker(source) {
  const attempt = (async () => {
    const module_or_path = source === undefined ? await defaultSource() : fileBytes(source);
    await init({ module_or_path });
  })().catch((e) => {
    if (loading === attempt) loading = undefined;
    throw loadFailed(describe(source), e);
  });
  loading = attempt;
  attempt.catch(() => {}); // handled here: every caller gets the rejection through its own await
  return attempt;
}

// DPoP key holders (dpop.js) by broker: the module calls them too, through its `dpop` option.
const holders = new WeakMap();

/** Creates a broker; see index.d.ts for the options. */
export async function createTokenBroker(options) {
  await (loading ?? initTokenBroker());
  const own = (k) => (options !== null && typeof options === 'object' && Object.hasOwn(options, k) ? options[k] : undefined);
  const dpop = own('dpop');
  if (dpop === undefined || dpop === false) return TokenBroker.create(options);
  // Loaded only by the apps that use DPoP: the others never download it.
  const { openDpop } = await import('./dpop.js');
  const holder = await openDpop(dpop, own('name'));
  try {
    const broker = await TokenBroker.create({ ...options, dpop: holder });
    holders.set(broker, holder);
    return broker;
  } catch (e) {
    holder.close();
    throw e;
  }
}

const noDpop = (who) => new TokenBrokerError('INVALID_OPTIONS', `${who}: this broker was created without dpop (createTokenBroker({ dpop: true, ... }))`);

function checkUrl(url, who) {
  if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError(`${who}: url must be a string or a URL (got ${url === null ? 'null' : typeof url})`);
}

Object.defineProperties(TokenBroker.prototype, {
  dpop: { get() { return holders.has(this); }, configurable: true },
  dpopProof: {
    configurable: true,
    writable: true,
    value: async function dpopProof(method, url, options) {
      const holder = holders.get(this);
      if (!holder) throw noDpop('dpopProof');
      if (typeof method !== 'string' || !method) throw new TypeError(`dpopProof: method must be an HTTP method like 'GET' (got ${typeof method})`);
      checkUrl(url, 'dpopProof');
      const token = options != null && Object.hasOwn(options, 'accessToken') ? options.accessToken : undefined;
      if (token !== undefined && typeof token !== 'string') throw new TypeError(`dpopProof: accessToken must be a string (got ${token === null ? 'null' : typeof token})`);
      return token === undefined ? holder.proof(method.toUpperCase(), String(url)) : holder.resourceProof(method.toUpperCase(), String(url), token);
    },
  },
  dpopNonce: {
    configurable: true,
    writable: true,
    value: function dpopNonce(url, headers, options) {
      const holder = holders.get(this);
      if (!holder) throw noDpop('dpopNonce');
      checkUrl(url, 'dpopNonce');
      const tokenEndpoint = options != null && Object.hasOwn(options, 'tokenEndpoint') && options.tokenEndpoint === true;
      holder.note(tokenEndpoint ? 'as' : 'rs', String(url), headers);
    },
  },
});

/**
 * The error every broker failure is. Errors made inside the WebAssembly module are plain
 * `Error`s named `TokenBrokerError`; `instanceof` recognises them by name and code, across
 * realms too. A refresh function may throw one to choose the outcome, e.g.
 * `throw new TokenBrokerError('SESSION_EXPIRED', 'login required')`.
 */
export class TokenBrokerError extends Error {
  constructor(code, message, options) {
    super(message ?? code, options);
    this.name = 'TokenBrokerError';
    this.code = code;
  }

  static [Symbol.hasInstance](value) {
    return isTokenBrokerError(value);
  }
}

/** True for every error the broker produced (or a `TokenBrokerError` made in JS). */
export function isTokenBrokerError(value) {
  return value != null && value.name === 'TokenBrokerError' && typeof value.code === 'string';
}
