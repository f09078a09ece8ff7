import { createApp } from 'vue';
import { tokenBroker } from 'token-broker/vue';
import App from './App.vue';
import SecondTab from './components/SecondTab.vue';
import { broker } from './lib/clients.js';
import { twoTabs } from './lib/twoTabs.js';
import '../../shared/timeline.css';
import './style.css';

if (new URLSearchParams(location.search).get('tab') === 'second') {
  // The second tab of the "two tabs" panel: the same app, with the cross-tab broker as its broker.
  // It starts with no tokens and gets the first tab's session from it (crossTab).
  const { broker: shared } = await twoTabs('second');
  createApp(SecondTab).use(tokenBroker, shared).mount('#app');
} else {
  createApp(App).use(tokenBroker, broker).mount('#app');
}
