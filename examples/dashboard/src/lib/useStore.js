// A framework-free store from examples/shared (subscribe + getSnapshot) as a Vue ref.
import { getCurrentScope, onScopeDispose, shallowRef } from 'vue';

export function useStore(store) {
  const state = shallowRef(store.getSnapshot());
  const off = store.subscribe(() => { state.value = store.getSnapshot(); });
  if (getCurrentScope()) onScopeDispose(off);
  return state;
}
