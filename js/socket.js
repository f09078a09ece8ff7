// token-broker/socket: a WebSocket and a fetch-based event stream that carry the broker's token.
// No policy of its own: a close or event that says "token expired" is reported to the broker
// with tokenRejected(usedToken), so every socket, stream and HTTP request shares one refresh;
// the connection then comes back with the token the broker hands out.
import { TokenBrokerError } from './index.js';
import { abortedError, assertBroker, brokerOrigins, freshToken, originGate, originSet, ownOptions as own } from './origin.js';

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
/** A socket or stream open this long has proven its token, even if it never received anything. */
const PROVEN_AFTER_MS = 5000;
/** The close of a socket whose DPoP proof lacked the server's nonce; the reason is the nonce. */
const NONCE_CLOSE = 4402;
/** Codes after which asking the broker again cannot help: the connection ends. */
const FINAL = new Set(['SESSION_EXPIRED', 'LOGGED_OUT', 'DISPOSED', 'NOT_AUTHENTICATED', 'INVALID_OPTIONS']);
/** An error getting the token that ends the connection (anything but a passing refresh failure). */
const isFinal = (e) => FINAL.has(e?.code) || !(e instanceof TokenBrokerError);

const invalid = (msg) => new TokenBrokerError('INVALID_OPTIONS', msg);

function fn(value, who, name) {
  if (value !== undefined && typeof value !== 'function') throw new TypeError(`${who}: ${name} must be a function`);
  return value;
}

/** `{ retries, baseMs, maxMs }` with defaults. */
function backoffOptions(value, who) {
  const r = own(value, `${who}: reconnect`, ['retries', 'baseMs', 'maxMs']);
  const num = (k, d) => {
    const v = r[k] ?? d;
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw invalid(`${who}: reconnect.${k} must be a number >= 0`);
    return v;
  };
  return { retries: Math.floor(num('retries', 5)), baseMs: num('baseMs', 250), maxMs: num('maxMs', 10000) };
}

/** Exponential backoff with ±20 % jitter (sockets of many tabs must not come back in step). */
const backoffDelay = ({ baseMs, maxMs }, failures) =>
  Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30) * (0.8 + 0.4 * Math.random()));

/**
 * The token to connect with: the fresh one (no call into the module), or, after a server refused
 * `rejected`, the one the broker hands back after the shared refresh.
 */
async function tokenFor(broker, fresh, rejected, signal) {
  const token = rejected === undefined
    ? fresh() ?? await broker.getAccessToken({ signal })
    : await broker.tokenRejected(rejected, { signal });
  if (signal.aborted) throw abortedError(signal);
  return token;
}

/** A listener that throws must not break the connection's bookkeeping. */
function call(f, ...args) {
  if (!f) return;
  try {
    f(...args);
  } catch (e) {
    if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
    else setTimeout(() => { throw e; });
  }
}

const pageBase = () => globalThis.document?.baseURI ?? globalThis.location?.href;

/** ws: → http:, wss: → https: (the allowlist holds http origins); other schemes unchanged. */
const asHttp = (u) => {
  const h = new URL(u.href);
  if (h.protocol === 'ws:') h.protocol = 'http:';
  else if (h.protocol === 'wss:') h.protocol = 'https:';
  return h;
};

/** The extra allowed origins of an adapter, each given as http(s) or ws(s). */
function extraOrigins(list, who) {
  if (list === undefined) return new Set();
  if (!Array.isArray(list)) return originSet(list, who); // throws the adapters' message
  return originSet(list.map((o) => (typeof o === 'string' ? o.replace(/^ws(s?):\/\//i, 'http$1://') : o)), who);
}

/** The broker's logout, when the broker can tell (a delegate without events cannot). */
function onLogout(broker, f) {
  if (typeof broker.addEventListener !== 'function') return () => {};
  const remove = broker.addEventListener('logout', f);
  return typeof remove === 'function' ? remove : () => broker.removeEventListener?.('logout', f);
}

/**
 * Opens a WebSocket with the broker's token and keeps it open across token expiry (one shared
 * refresh), transient failures (backoff) and nothing else. See socket.d.ts.
 */
export function connectWebSocket(broker, urlOrFactory, options) {
  const who = 'connectWebSocket';
  assertBroker(broker, who);
  const o = own(options, who, ['auth', 'param', 'protocols', 'authMessage', 'expiredCodes', 'isExpiredMessage',
    'reconnect', 'allowedOrigins', 'onOpen', 'onMessage', 'onClose', 'WebSocket']);
  const auth = o.auth ?? 'query';
  if (auth !== 'query' && auth !== 'protocol' && auth !== 'message') {
    throw invalid(`${who}: auth must be 'query', 'protocol' or 'message' (got ${String(auth)})`);
  }
  const dpop = broker.dpop === true;
  if (dpop && auth !== 'message') {
    throw invalid(`${who}: a DPoP-bound token cannot go in a URL or a subprotocol (no proof can go with it): use auth: 'message'`);
  }
  const param = o.param ?? 'access_token';
  if (typeof param !== 'string' || !param) throw invalid(`${who}: param must be a non-empty string`);
  const protocols = o.protocols === undefined ? [] : [].concat(o.protocols);
  if (protocols.some((p) => typeof p !== 'string')) throw invalid(`${who}: protocols must be a string or an array of strings`);
  const expiredCodes = new Set(o.expiredCodes ?? [4001, 4401]);
  if (![...expiredCodes].every(Number.isInteger)) throw invalid(`${who}: expiredCodes must be an array of integers`);
  const authMessage = fn(o.authMessage, who, 'authMessage') ?? ((token, extra) => JSON.stringify({ type: 'auth', token, ...extra }));
  const isExpiredMessage = fn(o.isExpiredMessage, who, 'isExpiredMessage');
  const onOpen = fn(o.onOpen, who, 'onOpen');
  const onMessage = fn(o.onMessage, who, 'onMessage');
  const onClose = fn(o.onClose, who, 'onClose');
  const Ctor = fn(o.WebSocket, who, 'WebSocket');
  const backoff = backoffOptions(o.reconnect, who);
  const extra = extraOrigins(o.allowedOrigins, who);
  const brokerHas = brokerOrigins(broker);
  const allowed = originGate((origin) => extra.has(origin) || brokerHas(origin));
  const fresh = freshToken(broker);

  /** The URL to connect to, as ws(s):, after the origin check; throws if it may not get the token. */
  function target() {
    const raw = typeof urlOrFactory === 'function' ? urlOrFactory() : urlOrFactory;
    if (typeof raw !== 'string' && !(raw instanceof URL)) {
      throw new TypeError(`${who}: the URL must be a string or a URL${typeof urlOrFactory === 'function' ? ' (returned by the factory)' : ''}`);
    }
    let url;
    try {
      url = new URL(String(raw), pageBase());
    } catch {
      throw new TypeError(`${who}: '${raw}' is not a valid URL`);
    }
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new TypeError(`${who}: '${raw}' is not a ws:, wss:, http: or https: URL`);
    if (url.hash) url.hash = '';
    if (!allowed(asHttp(url).href)) {
      throw invalid(`${who}: ${url.origin} is not an allowed origin for the token (the page's origin, the broker's `
        + 'allowedOrigins and this call\'s allowedOrigins are; ws: and wss: count as http: and https:)');
    }
    return url;
  }

  // A static URL is checked now: a refused origin throws before anything is asked or sent.
  if (typeof urlOrFactory !== 'function') target();

  let ws = null; // the current socket
  let ended = false;
  let nonceRetried = false; // since the last socket that proved its token
  let timer;
  let waiting; // AbortController of the current wait for a token
  let failures = 0; // attempts in a row that did not prove their token
  let refreshedSinceProven = false;
  let endResolve;
  const closed = new Promise((r) => { endResolve = r; });
  const removeLogout = onLogout(broker, () => finish({ why: 'logout', code: 1000, reason: 'logged out' }, 1000, 'logged out'));

  function finish(result, code = 1000, reason = '') {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    waiting?.abort();
    removeLogout();
    const s = ws;
    ws = null;
    if (s) {
      detach(s);
      if (s.readyState === CONNECTING || s.readyState === OPEN) {
        try { s.close(code, reason); } catch { s.close(); }
      }
    }
    endResolve(Object.freeze(result));
  }

  /** Asks the broker (`rejected` = the token a server refused) and connects with what it gives. */
  async function connect(rejected) {
    waiting = new AbortController();
    const { signal } = waiting;
    let token;
    try {
      token = await tokenFor(broker, fresh, rejected, signal);
    } catch (e) {
      if (ended) return;
      if (isFinal(e)) {
        finish({ why: 'session', error: e });
        return;
      }
      retry({ why: 'gave-up', error: e }); // REFRESH_FAILED, REFRESH_TIMEOUT: a later attempt may work
      return;
    }
    if (ended) return;
    let url;
    let htu;
    let proof;
    try {
      url = target();
      htu = asHttp(url).href;
      if (dpop) proof = await broker.dpopProof('GET', htu, { accessToken: token });
    } catch (e) {
      finish({ why: 'error', error: e });
      return;
    }
    if (ended) return;
    const list = [...protocols];
    if (auth === 'query') url.searchParams.set(param, token);
    else if (auth === 'protocol') list.unshift('bearer', token);
    const Impl = Ctor ?? globalThis.WebSocket;
    let s;
    try {
      if (typeof Impl !== 'function') throw new TypeError(`${who}: no WebSocket here; pass options.WebSocket`);
      s = list.length ? new Impl(url.href, list) : new Impl(url.href);
    } catch (e) {
      finish({ why: 'error', error: e });
      return;
    }
    ws = s;
    open(s, token, proof, htu);
  }

  function open(s, token, proof, htu) {
    let openedAt = 0;
    let proven = false;
    let expired = false; // an expired message was seen; the close that follows is ours
    const prove = () => {
      if (proven) return;
      proven = true;
      failures = 0;
      refreshedSinceProven = false;
      nonceRetried = false;
    };
    s.onopen = (ev) => {
      openedAt = Date.now();
      if (auth === 'message') {
        try {
          s.send(authMessage(token, { dpop: proof }));
        } catch (e) {
          finish({ why: 'error', error: e });
          return;
        }
      }
      call(onOpen, ev);
    };
    s.onmessage = (ev) => {
      let isExpired = false;
      try { isExpired = Boolean(isExpiredMessage?.(ev)); } catch (e) { call(() => { throw e; }); }
      if (isExpired) {
        expired = true;
        s.close(1000, 'token expired');
        return;
      }
      prove();
      call(onMessage, ev);
    };
    s.onerror = () => {}; // a close event always follows
    s.onclose = (ev) => {
      detach(s);
      if (ws === s) ws = null;
      if (ended) return;
      if (openedAt && Date.now() - openedAt >= PROVEN_AFTER_MS) prove();
      // A browser cannot read a handshake's DPoP-Nonce header, so the server sends it this way.
      const nonce = dpop && ev.code === NONCE_CLOSE;
      if (nonce) broker.dpopNonce(htu, { 'dpop-nonce': ev.reason });
      const isExpired = expired || expiredCodes.has(ev.code);
      // One refresh between two connections that proved their token: a server that refuses
      // every token must not make the broker refresh in a loop.
      const refresh = isExpired && !refreshedSinceProven;
      let next;
      if (nonce && !nonceRetried) next = 'nonce';
      else if (refresh) next = 'refresh';
      else if (ev.code === 1000 && !isExpired) next = 'end';
      else next = failures + 1 > backoff.retries ? 'end' : 'retry'; // a proven socket reset `failures`
      call(onClose, ev, { expired: isExpired, willReconnect: next !== 'end' });
      if (ended) return; // onClose may have called close()
      const info = { code: ev.code, reason: ev.reason };
      if (next === 'nonce') {
        nonceRetried = true; // the same token with a new proof; a refresh would not help
        connect();
      } else if (next === 'refresh') {
        refreshedSinceProven = true;
        connect(token);
      } else if (next === 'end') {
        finish({ why: ev.code === 1000 && !isExpired ? 'server' : 'gave-up', ...info });
      } else {
        retry({ why: 'gave-up', ...info });
      }
    };
  }

  function detach(s) {
    s.onopen = s.onmessage = s.onerror = s.onclose = null;
  }

  /** Another attempt after the backoff delay, or the end when the attempts are used up. */
  function retry(result) {
    failures++;
    if (failures > backoff.retries) {
      finish(result);
      return;
    }
    timer = setTimeout(() => { timer = undefined; connect(); }, backoffDelay(backoff, failures));
  }

  connect();

  return {
    /** Sends on the current socket if it is open; `false` (nothing sent) otherwise. */
    send(data) {
      if (!ws || ws.readyState !== OPEN) return false;
      ws.send(data);
      return true;
    },
    /** Closes for good: no reconnect, every wait and timer cancelled. */
    close(code = 1000, reason = '') {
      finish({ why: 'closed', code, reason }, code, reason);
    },
    get socket() { return ws; },
    get readyState() { return ended ? CLOSED : ws ? ws.readyState : CONNECTING; },
    closed,
  };
}

// ---------- server-sent events over fetch ----------

/** Parses `text/event-stream` (WHATWG HTML §9.2.6) from a byte stream; calls `dispatch` per event. */
function sseParser(dispatch, setRetry) {
  const decoder = new TextDecoder();
  let buffer = '';
  let data = [];
  let type = '';
  let id; // the last event ID buffer; `undefined` until the server sends one
  let first = true;
  let pendingCR = false;
  const line = (l) => {
    if (l === '') {
      if (data.length) dispatch({ type: type || 'message', data: data.join('\n'), lastEventId: id ?? '' }, id);
      data = [];
      type = '';
      return;
    }
    if (l[0] === ':') return;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') type = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) setRetry(Number(value));
  };
  return {
    push(chunk, done) {
      let text = decoder.decode(chunk, { stream: !done });
      if (first && text) {
        if (text[0] === '\uFEFF') text = text.slice(1);
        first = false;
      }
      if (pendingCR && text[0] === '\n') text = text.slice(1);
      pendingCR = false;
      buffer += text;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== '\n' && c !== '\r') continue;
        line(buffer.slice(start, i));
        if (c === '\r') {
          if (i + 1 === buffer.length) pendingCR = true;
          else if (buffer[i + 1] === '\n') i++;
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
    },
    get lastEventId() { return id; },
    set lastEventId(v) { id = v; },
  };
}

/** The default `isExpiredEvent`: `event: error` whose JSON data has `code` `token_expired` or `invalid_token`. */
function defaultIsExpiredEvent(ev) {
  if (ev.type !== 'error') return false;
  try {
    const code = JSON.parse(ev.data)?.code;
    return code === 'token_expired' || code === 'invalid_token';
  } catch {
    return false;
  }
}

/**
 * Reads a server-sent event stream with `fetch` (EventSource cannot send `Authorization`), with
 * the same expiry → one refresh → reconnect behaviour as connectWebSocket. See socket.d.ts.
 */
export function openEventStream(broker, url, options) {
  const who = 'openEventStream';
  assertBroker(broker, who);
  const o = own(options, who, ['fetch', 'headers', 'onOpen', 'onEvent', 'onError', 'signal', 'isExpiredEvent',
    'reconnect', 'allowedOrigins']);
  const send = fn(o.fetch, who, 'fetch');
  const onOpen = fn(o.onOpen, who, 'onOpen');
  const onEvent = fn(o.onEvent, who, 'onEvent');
  const onError = fn(o.onError, who, 'onError');
  const isExpiredEvent = fn(o.isExpiredEvent, who, 'isExpiredEvent') ?? defaultIsExpiredEvent;
  const backoff = backoffOptions(o.reconnect, who);
  const outer = o.signal;
  if (outer != null && typeof outer.aborted !== 'boolean') throw new TypeError(`${who}: signal must be an AbortSignal`);
  const extra = extraOrigins(o.allowedOrigins, who);
  const brokerHas = brokerOrigins(broker);
  const allowed = originGate((origin) => extra.has(origin) || brokerHas(origin));
  const fresh = freshToken(broker);
  if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError(`${who}: url must be a string or a URL`);
  const href = String(url);
  if (!allowed(href)) {
    throw invalid(`${who}: ${href} is not on an allowed origin for the token (the page's origin, the broker's `
      + 'allowedOrigins and this call\'s allowedOrigins are)');
  }

  const dpop = broker.dpop === true;
  let nonceRetried = false; // since the last stream that proved its token
  let ended = false;
  let controller; // aborts the current token wait, fetch and read
  let timer;
  let sleepResolve;
  let retryMs;
  let endResolve;
  let readyState = CONNECTING;
  const closed = new Promise((r) => { endResolve = r; });
  let lastEventId; // the server's last `id:`, sent back as Last-Event-ID
  const removeLogout = onLogout(broker, () => finish({ why: 'logout' }));
  const onAbort = () => finish({ why: 'closed', error: abortedError(outer) });
  outer?.addEventListener('abort', onAbort, { once: true });

  function finish(result) {
    if (ended) return;
    ended = true;
    readyState = CLOSED;
    clearTimeout(timer);
    sleepResolve?.();
    controller?.abort();
    removeLogout();
    outer?.removeEventListener('abort', onAbort);
    endResolve(Object.freeze(result));
  }

  const sleep = (ms) => new Promise((r) => {
    sleepResolve = r;
    timer = setTimeout(r, ms);
  });

  /** A failure that is reported, then retried after backoff or ends the stream. */
  async function failed(error, failures) {
    if (failures > backoff.retries) {
      call(onError, error, { willRetry: false });
      finish({ why: 'gave-up', error });
      return false;
    }
    call(onError, error, { willRetry: true });
    readyState = CONNECTING;
    await sleep(backoffDelay({ baseMs: retryMs ?? backoff.baseMs, maxMs: backoff.maxMs }, failures));
    return !ended;
  }

  (async () => {
    let failures = 0;
    let refreshedSinceProven = false;
    let rejected; // the token a server refused, to report before the next attempt
    while (!ended) {
      controller = new AbortController();
      const { signal } = controller;
      let token;
      try {
        token = await tokenFor(broker, fresh, rejected, signal);
      } catch (e) {
        if (ended) return;
        if (isFinal(e)) {
          call(onError, e, { willRetry: false });
          finish({ why: 'session', error: e });
          return;
        }
        rejected = undefined;
        if (!(await failed(e, ++failures))) return;
        continue;
      }
      rejected = undefined;
      const headers = new Headers(o.headers);
      headers.set('Authorization', `${dpop ? 'DPoP' : 'Bearer'} ${token}`);
      headers.set('Accept', 'text/event-stream');
      if (lastEventId) headers.set('Last-Event-ID', lastEventId);
      let response;
      try {
        if (dpop) headers.set('DPoP', await broker.dpopProof('GET', href, { accessToken: token }));
        response = await (send ?? globalThis.fetch)(href, { headers, signal, cache: 'no-store' });
      } catch (e) {
        if (ended) return;
        if (!(await failed(e, ++failures))) return;
        continue;
      }
      if (ended) {
        response.body?.cancel().catch(() => {});
        return;
      }
      const sameOrigin = !response.url || allowed(response.url);
      if (dpop && sameOrigin) {
        broker.dpopNonce(response.url || href, response.headers);
        // DPoP's use_dpop_nonce: the same token once more with the nonce just noted, no refresh.
        if (response.status === 401 && !nonceRetried
          && broker.authChallenge(response.headers.get('WWW-Authenticate')) === 'nonce') {
          response.body?.cancel().catch(() => {});
          nonceRetried = true;
          continue;
        }
      }
      // A 401 up front is a refused token: one shared refresh, then the stream again. A second
      // one before any stream proved its token is an ordinary failure (no refresh loop).
      if (response.status === 401 && !refreshedSinceProven && sameOrigin
        && broker.shouldRefreshOn401(response.headers.get('WWW-Authenticate'))) {
        response.body?.cancel().catch(() => {});
        refreshedSinceProven = true;
        rejected = token;
        continue;
      }
      const type = response.headers.get('Content-Type') ?? '';
      if (!response.ok || !response.body || !/^text\/event-stream/i.test(type)) {
        response.body?.cancel().catch(() => {});
        const error = Object.assign(new Error(`${who}: ${href} answered ${response.status}${response.ok ? ` with ${type || 'no content type'}` : ''}`),
          { status: response.status, response });
        const transient = response.status >= 500 || response.status === 408 || response.status === 429 || response.status === 401;
        if (!transient) {
          call(onError, error, { willRetry: false });
          finish({ why: 'server', error });
          return;
        }
        if (!(await failed(error, ++failures))) return;
        continue;
      }
      readyState = OPEN;
      const openedAt = Date.now();
      call(onOpen, response);
      let expired = false;
      let proven = false;
      const reader = response.body.getReader();
      const p = sseParser((ev, id) => {
        if (expired || ended) return;
        if (id !== undefined) lastEventId = id;
        let isExpired = false;
        try { isExpired = Boolean(isExpiredEvent(ev)); } catch (e) { call(() => { throw e; }); }
        if (isExpired) {
          expired = true;
          return;
        }
        if (!proven) {
          proven = true;
          failures = 0;
          refreshedSinceProven = false;
          nonceRetried = false;
        }
        call(onEvent, ev);
      }, (ms) => { retryMs = ms; });
      p.lastEventId = lastEventId;
      let readError;
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (ended) break;
          p.push(value ?? new Uint8Array(), done);
          if (done || expired) break;
        }
      } catch (e) {
        readError = e;
      }
      reader.cancel().catch(() => {});
      if (ended) return;
      readyState = CONNECTING;
      if (!proven && Date.now() - openedAt >= PROVEN_AFTER_MS) {
        failures = 0;
        refreshedSinceProven = false;
        nonceRetried = false;
      }
      if (expired && !refreshedSinceProven) {
        refreshedSinceProven = true;
        rejected = token;
        continue;
      }
      // The stream ended or broke: EventSource reconnects, and so does this, with backoff.
      const error = readError ?? new Error(`${who}: ${expired ? 'the token was refused again after a refresh' : 'the stream ended'}`);
      if (!(await failed(error, ++failures))) return;
    }
  })().catch((e) => finish({ why: 'error', error: e })); // a bug here must still settle `closed`

  return {
    /** Stops for good: no reconnect; the current request is aborted. */
    close() { finish({ why: 'closed' }); },
    /** 0 connecting (or waiting to reconnect), 1 open, 3 closed for good. */
    get readyState() { return readyState; },
    /** The last event ID the server sent (sent back as `Last-Event-ID` on reconnect). */
    get lastEventId() { return lastEventId ?? ''; },
    closed,
  };
}
