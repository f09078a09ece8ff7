import type { App, Ref } from 'vue';
import type { TokenBroker, TokenBrokerSession } from './index.js';

/**
The plugin: `app.use(tokenBroker, broker)`. Create the broker once, outside components, and attach
it to axios/fetch there too: composables cannot run inside interceptors.
@example
const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' } });
attachAxios(api, broker);
createApp(App).use(tokenBroker, broker).mount('#app');
*/
export const tokenBroker: { install(app: App, broker: TokenBroker): void };

/** The broker installed with {@link tokenBroker} (throws without it). */
export function useTokenBroker(): TokenBroker;

/**
A readonly ref of the session snapshot (`status`, `isAuthenticated`, `generation`, `expiresAt`,
`claims`), updated when it changes; it unsubscribes when the component's scope ends.
@example
const session = useSession();
// template: <p v-if="session.isAuthenticated">Hello {{ session.claims?.sub }}</p>
*/
export function useSession(): Readonly<Ref<TokenBrokerSession>>;
