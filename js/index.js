// Entry `token-broker`: loads the WebAssembly module once, on first use (never at import,
// so server-side rendering can import this file without a `window`).
import init, { TokenBroker } from './token_broker.js';

let loading;

/**
 * Loads the module from a custom source (bytes, a `Response`, a `WebAssembly.Module` or a URL).
 * Only needed where the default (`token_broker_bg.wasm` next to this file, found by every
 * bundler through `new URL(..., import.meta.url)`) cannot be fetched, e.g. Node or strict CSP.
 */
export function initTokenBroker(source) {
  loading = init(source === undefined ? undefined : { module_or_path: source });
  loading.catch(() => { loading = undefined; });
  return loading.then(() => undefined);
}

/** Creates a broker; see index.d.ts for the options. */
export async function createTokenBroker(options) {
  if (!loading) initTokenBroker();
  await loading;
  return TokenBroker.create(options);
}

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
