// token-broker/react: the session as React state. State only: the broker is created outside
// components and handed to interceptors directly (a hook cannot run inside an interceptor).
import { createContext, createElement, useContext, useSyncExternalStore } from 'react';

const BrokerContext = createContext(null);

// What the server renders: nobody is known to be logged in until the browser's broker says so.
const SERVER_SESSION = Object.freeze({ status: 'anonymous', isAuthenticated: false, generation: 0, expiresAt: null, claims: null });

/** Makes `broker` available to `useSession()` and `useTokenBroker()` below it. */
export function TokenBrokerProvider({ broker, children }) {
  return createElement(BrokerContext.Provider, { value: broker }, children);
}

/** The broker given to the nearest `<TokenBrokerProvider>`. */
export function useTokenBroker() {
  const broker = useContext(BrokerContext);
  if (broker == null) throw new Error('useTokenBroker: wrap the app in <TokenBrokerProvider broker={broker}>');
  return broker;
}

/** The session snapshot; the component re-renders when it changes. */
export function useSession() {
  const broker = useTokenBroker();
  return useSyncExternalStore((onChange) => broker.subscribe(onChange), () => broker.getSession(), () => SERVER_SESSION);
}
