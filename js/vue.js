// token-broker/vue: the session as Vue state. State only: the broker is created outside components
// and handed to interceptors directly (composables cannot run inside an interceptor).
import { getCurrentScope, inject, onScopeDispose, readonly, shallowRef } from 'vue';

const KEY = Symbol('token-broker');

/** The plugin: `app.use(tokenBroker, broker)`. */
export const tokenBroker = {
  install(app, broker) {
    if (broker == null || typeof broker.subscribe !== 'function') {
      throw new TypeError('app.use(tokenBroker, broker): pass the broker from `await createTokenBroker(...)`');
    }
    app.provide(KEY, broker);
  },
};

/** The broker installed with the plugin. */
export function useTokenBroker() {
  const broker = inject(KEY, null);
  if (broker == null) throw new Error('useTokenBroker: install the plugin first: app.use(tokenBroker, broker)');
  return broker;
}

/** A readonly ref of the session snapshot, updated when it changes; unsubscribes with its scope. */
export function useSession() {
  const broker = useTokenBroker();
  const session = shallowRef(broker.getSession());
  const off = broker.subscribe((s) => { session.value = s; });
  if (getCurrentScope()) onScopeDispose(off);
  return readonly(session);
}
