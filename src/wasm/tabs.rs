//! Cross-tab coordination and token storage: a `BroadcastChannel` that hands token sets,
//! logouts and expiries to the other tabs of the origin, an exclusive Web Lock around each
//! refresh, and an optional storage (`sessionStorage`, `localStorage` or a custom adapter).
//! The rules (which generation wins, what a logout overrides) are the core's; this file only
//! moves messages.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::BroadcastChannel;

use super::js::{field, get, now, own, set};
use super::{apply, Inner};
use crate::core::{parse_count, parse_shared, Shared};

/// A tab answers a sibling's hello at most this often: a flood of forged hellos costs it nothing.
const HELLO_ANSWER_INTERVAL_MS: f64 = 100.0;

/// Where token sets persist.
pub(super) struct Store {
    target: JsValue,
    get: &'static str,
    set: &'static str,
    remove: &'static str,
    /// `localStorage`: every tab reads the same data synchronously, so it is re-read inside the lock.
    shared: bool,
    ignore: Closure<dyn FnMut(JsValue)>,
}

impl Store {
    /// `'memory'` (none), `'session'`, `'local'`, or an adapter `{ get(key), set(key, value), remove(key) }`
    /// whose methods may return promises. `Err` names the problem; `Ok(None)` for memory.
    pub(super) fn from_option(v: &JsValue) -> Result<Option<Store>, &'static str> {
        let web = |name: &str, shared| {
            // Reading sessionStorage/localStorage can throw (sandboxed iframes, disabled storage).
            Reflect::get(&js_sys::global(), &JsValue::from_str(name)).ok().filter(JsValue::is_object).map(|target| Store {
                target,
                get: "getItem",
                set: "setItem",
                remove: "removeItem",
                shared,
                ignore: Closure::new(|_| {}),
            })
        };
        match v.as_string().as_deref() {
            None if v.is_undefined() => Ok(None),
            Some("memory") => Ok(None),
            Some("session") => Ok(web("sessionStorage", false)),
            Some("local") => Ok(web("localStorage", true)),
            Some(_) => Err("storage must be 'memory', 'session', 'local' or an adapter { get, set, remove }"),
            None => {
                // An adapter may be a class instance: its methods live on the prototype.
                let ok = v.is_object() && ["get", "set", "remove"].iter().all(|m| get(v, m).is_function());
                if !ok {
                    return Err("storage must be 'memory', 'session', 'local' or an adapter { get, set, remove }");
                }
                Ok(Some(Store {
                    target: v.clone(),
                    get: "get",
                    set: "set",
                    remove: "remove",
                    shared: false,
                    ignore: Closure::new(|_| {}),
                }))
            }
        }
    }

    fn call(&self, method: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
        super::js::call(&self.target, method, args)
    }

    /// Fire-and-forget write; an async adapter's rejection is swallowed (storage is best effort).
    fn write(&self, method: &str, args: &[&JsValue]) {
        if let Ok(v) = self.call(method, args) {
            if let Some(p) = v.dyn_ref::<Promise>() {
                let _ = p.catch(&self.ignore);
            }
        }
    }
}

/// Everything a broker needs to talk to its sibling tabs.
pub(super) struct Tabs {
    key: String,
    channel: Option<BroadcastChannel>,
    on_message: RefCell<Option<Closure<dyn FnMut(JsValue)>>>,
    /// `navigator.locks`, when the page has it (secure contexts only).
    locks: Option<JsValue>,
    pub(super) store: Option<Store>,
    /// `(epoch, generation)` a sibling said it is refreshing: our refresh token is being spent.
    peer_refreshing: Cell<Option<(u64, u64)>>,
    /// Fired when a sibling's token set was adopted (a new tab waiting for its hello answer).
    pub(super) adopted: RefCell<Option<futures_channel::oneshot::Sender<()>>>,
    /// When this tab last answered a hello (monotonic ms).
    hello_answered: Cell<f64>,
}

/// A token set as stored and broadcast: `{ g, e, a, r?, x? }` (see `read_shared`).
fn record(s: &Shared) -> Object {
    let o = Object::new();
    set(&o, "g", &JsValue::from_f64(s.generation as f64));
    set(&o, "e", &JsValue::from_f64(s.epoch as f64));
    set(&o, "a", &JsValue::from_str(&s.access));
    if let Some(r) = &s.refresh {
        set(&o, "r", &JsValue::from_str(r));
    }
    if let Some(x) = s.expires_at_wall_ms {
        set(&o, "x", &JsValue::from_f64(x));
    }
    o
}

/// The channel message carrying a token set: the stored record plus `t: 'tokens'`.
fn tokens_message(s: &Shared) -> Object {
    let o = record(s);
    set(&o, "t", &JsValue::from_str("tokens"));
    o
}

/// Validates a token set from a message or storage; garbage is `None`.
pub(super) fn read_shared(v: &JsValue) -> Option<Shared> {
    if !v.is_object() {
        return None;
    }
    parse_shared(field(own(v, "g")), field(own(v, "e")), field(own(v, "a")), field(own(v, "r")), field(own(v, "x")))
}

/// A generation or epoch from a message: whole, 0..=2^53, else `None` (the message is dropped).
fn count(v: &JsValue, key: &str) -> Option<u64> {
    parse_count(&field(own(v, key)))
}

impl Tabs {
    pub(super) fn new(name: &str, cross_tab: bool, store: Option<Store>) -> Tabs {
        let mut key = String::from("token-broker:");
        key.push_str(name);
        let channel = if cross_tab { BroadcastChannel::new(&key).ok() } else { None };
        let locks = if cross_tab {
            Some(get(&get(&js_sys::global(), "navigator"), "locks")).filter(|l| get(l, "request").is_function())
        } else {
            None
        };
        Tabs {
            key,
            channel,
            on_message: RefCell::new(None),
            locks,
            store,
            peer_refreshing: Cell::new(None),
            adopted: RefCell::new(None),
            hello_answered: Cell::new(f64::NEG_INFINITY),
        }
    }

    pub(super) fn has_locks(&self) -> bool {
        self.locks.is_some()
    }

    pub(super) fn has_channel(&self) -> bool {
        self.channel.is_some()
    }

    pub(super) fn shared_store(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.shared)
    }

    fn post(&self, msg: &JsValue) {
        if let Some(c) = &self.channel {
            let _ = c.post_message(msg);
        }
    }

    /// A token set adopted here: to the siblings and to storage, before any waiter resolves.
    pub(super) fn publish(&self, s: &Shared) {
        if let Some(store) = &self.store {
            if let Ok(json) = js_sys::JSON::stringify(&record(s)) {
                store.write(store.set, &[&JsValue::from_str(&self.key), &json.into()]);
            }
        }
        self.post(&tokens_message(s));
    }

    /// The session ended here (logout or expiry).
    pub(super) fn publish_end(&self, epoch: u64, generation: u64, logout: bool) {
        if let Some(store) = &self.store {
            store.write(store.remove, &[&JsValue::from_str(&self.key)]);
        }
        let o = Object::new();
        set(&o, "t", &JsValue::from_str("end"));
        set(&o, "e", &JsValue::from_f64(epoch as f64));
        set(&o, "g", &JsValue::from_f64(generation as f64));
        set(&o, "l", &JsValue::from_bool(logout));
        self.post(&o);
    }

    /// Asks the siblings for their current token set (a new or duplicated tab).
    pub(super) fn hello(&self) {
        let o = Object::new();
        set(&o, "t", &JsValue::from_str("hello"));
        self.post(&o);
    }

    /// Reads storage. `Ok(None)`: nothing stored; `Err(())`: garbage (removed, to be reported).
    pub(super) async fn load(&self) -> Result<Option<Shared>, ()> {
        let Some(store) = &self.store else { return Ok(None) };
        let mut v = store.call(store.get, &[&JsValue::from_str(&self.key)]).map_err(|_| ())?;
        if let Some(p) = v.dyn_ref::<Promise>() {
            v = JsFuture::from(p.clone()).await.map_err(|_| ())?;
        }
        self.parse_stored(v)
    }

    fn parse_stored(&self, v: JsValue) -> Result<Option<Shared>, ()> {
        if v.is_undefined() || v.is_null() {
            return Ok(None);
        }
        let parsed = v.as_string().and_then(|s| js_sys::JSON::parse(&s).ok()).and_then(|o| read_shared(&o));
        match parsed {
            Some(s) => Ok(Some(s)),
            None => {
                if let Some(store) = &self.store {
                    store.write(store.remove, &[&JsValue::from_str(&self.key)]);
                }
                Err(())
            }
        }
    }

    /// Inside the lock: `localStorage` may hold a generation a sibling wrote a moment ago
    /// (its broadcast may still be on its way).
    pub(super) fn reread_shared_store(&self) -> Option<Shared> {
        let store = self.store.as_ref().filter(|s| s.shared)?;
        let v = store.call(store.get, &[&JsValue::from_str(&self.key)]).ok()?;
        self.parse_stored(v).ok().flatten()
    }

    /// Whether a sibling announced it is spending the refresh token of `(epoch, generation)`.
    pub(super) fn peer_is_refreshing(&self, epoch: u64, generation: u64) -> bool {
        self.peer_refreshing.get() == Some((epoch, generation))
    }

    pub(super) fn clear_peer_refreshing(&self) {
        self.peer_refreshing.set(None);
    }

    pub(super) fn announce_refresh(&self, epoch: u64, generation: u64) {
        let o = Object::new();
        set(&o, "t", &JsValue::from_str("refreshing"));
        set(&o, "e", &JsValue::from_f64(epoch as f64));
        set(&o, "g", &JsValue::from_f64(generation as f64));
        self.post(&o);
    }

    /// `navigator.locks.request(key, { signal }, callback)`, or `None` without Web Locks.
    pub(super) fn request_lock(&self, signal: &web_sys::AbortSignal, callback: &JsValue) -> Option<Promise> {
        let locks = self.locks.as_ref()?;
        let request: Function = get(locks, "request").dyn_into().ok()?;
        let opts = Object::new();
        set(&opts, "mode", &JsValue::from_str("exclusive"));
        set(&opts, "signal", signal);
        request.call3(locks, &JsValue::from_str(&self.key), &opts, callback).ok()?.dyn_into().ok()
    }

    pub(super) fn close(&self) {
        if let Some(c) = &self.channel {
            c.set_onmessage(None);
            c.close();
        }
        drop(self.on_message.borrow_mut().take());
    }
}

/// Listens to the siblings. Holds the broker weakly: a closed broker is not kept alive.
pub(super) fn listen(inner: &Rc<Inner>) {
    let Some(channel) = &inner.tabs.channel else { return };
    let weak = Rc::downgrade(inner);
    // FnMut(JsValue), the type the storage's `ignore` closure has: one closure glue, not two.
    let cb = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let Some(inner) = weak.upgrade() else { return };
        let data = get(&ev, "data");
        match own(&data, "t").as_string().as_deref() {
            Some("tokens") => {
                // Cheap check first: an old or forged set is dropped before its strings are read.
                let (Some(e), Some(g)) = (count(&data, "e"), count(&data, "g")) else { return };
                let newer = {
                    let c = inner.core.borrow();
                    e > c.epoch() || (e == c.epoch() && g > c.generation())
                };
                if !newer {
                    return;
                }
                let Some(s) = read_shared(&data) else { return };
                let t = now();
                let fx = inner.core.borrow_mut().adopt_shared(s, t);
                if !fx.is_empty() {
                    if let Some(tx) = inner.tabs.adopted.borrow_mut().take() {
                        let _ = tx.send(());
                    }
                    inner.debug_note("from another tab");
                }
                apply(&inner, fx);
            }
            Some("end") => {
                let (Some(e), Some(g)) = (count(&data, "e"), count(&data, "g")) else { return };
                let logout = own(&data, "l").as_bool().unwrap_or(false);
                let fx = inner.core.borrow_mut().end_shared(e, g, logout);
                apply(&inner, fx);
            }
            // Only a tab whose tokens already sit in shared storage answers (with 'memory' the
            // refresh token stays in this tab), and at most once per interval.
            Some("hello") if inner.tabs.store.is_some() => {
                let t = now();
                if t.mono_ms - inner.tabs.hello_answered.get() < HELLO_ANSWER_INTERVAL_MS {
                    return;
                }
                inner.tabs.hello_answered.set(t.mono_ms);
                let current = inner.core.borrow().shared(t);
                if let Some(s) = current {
                    inner.tabs.post(&tokens_message(&s));
                }
            }
            Some("refreshing") => {
                if let (Some(e), Some(g)) = (count(&data, "e"), count(&data, "g")) {
                    inner.tabs.peer_refreshing.set(Some((e, g)));
                }
            }
            _ => {}
        }
    });
    channel.set_onmessage(Some(cb.as_ref().unchecked_ref()));
    *inner.tabs.on_message.borrow_mut() = Some(cb);
}
