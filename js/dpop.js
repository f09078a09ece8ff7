// Internal (not an entry point), loaded by createTokenBroker only when `dpop` is on: the DPoP key,
// its proofs and the servers' nonces (RFC 9449). WebCrypto and IndexedDB only; which answers mean
// what (a nonce retry, a refresh, neither) is decided in the WebAssembly module.
import { TokenBrokerError } from './index.js';
import { headerGet, pageBase } from './origin.js';

const enc = new TextEncoder();
const SIGN = { name: 'ECDSA', hash: 'SHA-256' };
const DB = 'token-broker-dpop';
// RFC 9449 §8.1: a nonce is 1*NQCHAR. Anything else (or a huge value) is not one.
const NONCE = /^[\x21\x23-\x5b\x5d-\x7e]{1,512}$/;
const KEY = /^(as|rs) https?:\/\/\S{1,2048}$/;
const MAX_NONCES = 64;

function b64u(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
const b64json = (value) => b64u(enc.encode(JSON.stringify(value)));

/** `url` as the browser sends it: relative URLs resolve against `document.baseURI`. */
const resolve = (url) => new URL(url, pageBase());

const invalid = (message) => new TokenBrokerError('INVALID_OPTIONS', `Invalid options: ${message}`);

const settle = (req) => new Promise((ok, fail) => {
  req.onsuccess = () => ok(req.result);
  req.onerror = () => fail(req.error);
  // An open that another connection blocks would otherwise wait for as long as that tab lives.
  req.onblocked = () => fail(new Error('IndexedDB is blocked by another tab'));
});

/**
 * The key pair of one token family in IndexedDB: CryptoKey objects, never key material (the
 * private key is not extractable). Shared by every tab of the origin.
 */
function keyStore(id) {
  let db;
  const open = () => (db ??= (() => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore('keys');
    return settle(req).then((d) => {
      d.onversionchange = () => { d.close(); db = undefined; };
      return d;
    });
  })().catch((e) => { db = undefined; throw e; }));
  const run = async (mode, body) => {
    const t = (await open()).transaction('keys', mode);
    const out = body(t.objectStore('keys'));
    return new Promise((ok, fail) => {
      t.oncomplete = () => ok(out.value);
      t.onerror = t.onabort = () => fail(t.error);
    });
  };
  return {
    get: () => run('readonly', (s) => {
      const r = s.get(id);
      return { get value() { return r.result; } };
    }),
    // One transaction, first writer wins: two tabs making a key at once both get the stored one.
    putIfAbsent: (pair) => run('readwrite', (s) => {
      const r = s.get(id);
      r.onsuccess = () => { if (!r.result) s.put(pair, id); };
      return { get value() { return r.result || pair; } };
    }),
    delete: () => run('readwrite', (s) => { s.delete(id); return {}; }),
    close: () => { db?.then((d) => d.close(), () => {}); db = undefined; },
  };
}

/**
 * Opens the key holder of token family `name`: `option` is the broker's `dpop` option (`true` or
 * `{ store: 'indexeddb' | 'memory' }`). The WebAssembly module calls `proof`, `observe`,
 * `fromError`, `end` (the session ended here: delete the key), `forget` (another session began:
 * read the key again) and `close`; the broker's `dpopProof`/`dpopNonce` call `proof`/`note`.
 */
export async function openDpop(option, name) {
  let store;
  if (option === true) store = undefined;
  else if (option !== null && typeof option === 'object' && !Array.isArray(option)) {
    for (const k of Object.keys(option)) {
      if (k !== 'store') throw invalid(`dpop: unknown option '${k}' (known: store)`);
    }
    store = option.store;
    if (store !== undefined && store !== 'indexeddb' && store !== 'memory') {
      throw invalid(`dpop.store must be 'indexeddb' or 'memory' (got ${typeof store === 'string' ? `'${store}'` : typeof store})`);
    }
  } else {
    throw invalid(`dpop must be true or { store: 'indexeddb' | 'memory' } (got ${option === null ? 'null' : typeof option})`);
  }
  const subtle = globalThis.crypto?.subtle;
  if (!subtle || typeof crypto.randomUUID !== 'function') {
    throw invalid('dpop needs WebCrypto, which browsers give only to secure contexts (https, or http://localhost)');
  }
  store ??= globalThis.indexedDB ? 'indexeddb' : undefined;
  if (store === undefined) {
    throw invalid("dpop: there is no IndexedDB here to keep the key in: pass dpop: { store: 'memory' } (the key then lives as long as this broker)");
  }
  const family = typeof name === 'string' && name ? name : 'default';
  const db = store === 'indexeddb' ? keyStore(`token-broker:${family}`) : null;
  let hasKey = false;
  if (db) {
    try {
      hasKey = Boolean(await db.get());
    } catch (e) {
      throw new TokenBrokerError('INVALID_OPTIONS', `Invalid options: dpop: IndexedDB cannot be opened here (private mode, blocked storage): ${e?.message ?? e}; pass dpop: { store: 'memory' } to keep the key in memory`, { cause: e });
    }
  }

  let key; // Promise<{ privateKey, header }>: the signing key and the proof header, made once per key
  let memoryPair;
  const load = async () => {
    let pair = db ? await db.get() : memoryPair;
    if (!pair) {
      const made = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
      pair = { privateKey: made.privateKey, publicKey: made.publicKey };
      if (db) pair = await db.putIfAbsent(pair);
      else memoryPair = pair;
    }
    const { crv, kty, x, y } = await subtle.exportKey('jwk', pair.publicKey);
    return { privateKey: pair.privateKey, header: b64json({ typ: 'dpop+jwt', alg: 'ES256', jwk: { crv, kty, x, y } }) };
  };

  // One nonce per server and role (the token endpoint's and each API's, RFC 9449 §8, §9), shared
  // with the other tabs of the family.
  const nonces = new Map();
  const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(`token-broker-dpop:${family}`) : null;
  const keep = (k, n) => {
    if (nonces.get(k) === n) return false;
    if (nonces.size >= MAX_NONCES && !nonces.has(k)) nonces.clear();
    nonces.set(k, n);
    return true;
  };
  if (channel) {
    channel.onmessage = (e) => {
      const d = e.data;
      if (d !== null && typeof d === 'object' && typeof d.k === 'string' && typeof d.n === 'string'
        && KEY.test(d.k) && NONCE.test(d.n)) keep(d.k, d.n);
    };
  }
  let tokenEndpoint; // the origin of the last token request proof: a refresh function's error has no URL

  function note(role, url, headers) {
    const n = headerGet(headers, 'dpop-nonce');
    if (typeof n !== 'string' || !NONCE.test(n)) return;
    let origin;
    try { origin = resolve(url).origin; } catch { return; }
    const k = `${role} ${origin}`;
    if (KEY.test(k) && keep(k, n)) channel?.postMessage({ k, n });
  }

  let athOf, ath; // the last access token's hash: computed once per token, not per request
  async function proof(method, url, accessToken) {
    try {
      return await sign(method, url, accessToken);
    } catch (e) {
      throw new TokenBrokerError('DPOP_FAILED', `A DPoP proof for ${method} ${String(url).split(/[?#]/)[0]} could not be made: ${e?.message ?? e}`, { cause: e });
    }
  }
  async function sign(method, url, accessToken) {
    const k = await (key ??= load().catch((e) => { key = undefined; throw e; }));
    const u = resolve(url);
    const role = accessToken === undefined ? 'as' : 'rs';
    if (role === 'as') tokenEndpoint = u.origin;
    const claims = { jti: crypto.randomUUID(), htm: method, htu: u.origin + u.pathname, iat: Math.floor(Date.now() / 1000) };
    const nonce = nonces.get(`${role} ${u.origin}`);
    if (nonce !== undefined) claims.nonce = nonce;
    if (accessToken !== undefined) {
      if (athOf !== accessToken) {
        athOf = accessToken;
        ath = subtle.digest('SHA-256', enc.encode(accessToken))
          .then((d) => b64u(new Uint8Array(d)), (e) => { athOf = undefined; throw e; });
      }
      claims.ath = await ath;
    }
    const input = `${k.header}.${b64json(claims)}`;
    return `${input}.${b64u(new Uint8Array(await subtle.sign(SIGN, k.privateKey, enc.encode(input))))}`;
  }

  return {
    hasKey,
    shared: db !== null,
    proof: (method, url) => proof(String(method).toUpperCase(), String(url)),
    resourceProof: proof,
    note,
    observe: (url, headers) => note('as', url, headers),
    fromError: (err) => {
      if (tokenEndpoint !== undefined) note('as', tokenEndpoint, err?.response?.headers ?? err?.headers);
    },
    end: () => {
      key = undefined;
      memoryPair = undefined;
      athOf = ath = undefined;
      db?.delete().catch(() => {});
    },
    forget: () => {
      if (db) key = undefined;
    },
    close: () => {
      channel?.close();
      db?.close();
    },
  };
}
