import type { ReactNode, ReactElement } from 'react';
import type { TokenBroker, TokenBrokerSession } from './index.js';

/**
Makes `broker` available to {@link useSession} and {@link useTokenBroker}. Create the broker once,
outside components, and attach it to axios/fetch there too: hooks cannot run inside interceptors.
@example
const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
attachAxios(api, broker);
createRoot(el).render(<TokenBrokerProvider broker={broker}><App /></TokenBrokerProvider>);
*/
export function TokenBrokerProvider(props: { broker: TokenBroker; children?: ReactNode }): ReactElement;

/** The broker of the nearest {@link TokenBrokerProvider} (throws outside one). */
export function useTokenBroker(): TokenBroker;

/**
The session snapshot (`status`, `isAuthenticated`, `generation`, `expiresAt`, `claims`), through
`useSyncExternalStore`: the component re-renders when it changes. During server rendering it is
the anonymous session.
@example
const { isAuthenticated, claims } = useSession();
*/
export function useSession(): TokenBrokerSession;
