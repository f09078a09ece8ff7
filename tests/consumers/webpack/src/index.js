// The dashboard of the original question: log in, then four calls in parallel. When the access
// token has expired meanwhile, the broker makes one refresh and every call succeeds.
import axios from 'axios';
import { createTokenBroker } from 'token-broker';
import { attachAxios } from 'token-broker/axios';

const ENDPOINTS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];
const app = document.getElementById('app');

function show(id, text) {
  const pre = document.createElement('pre');
  pre.id = id;
  pre.textContent = text;
  app.append(pre);
}

async function main() {
  const { data: tokens } = await axios.post('/auth/login', { username: 'demo', password: 'demo' });
  const broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens });
  const api = axios.create();
  attachAxios(api, broker);

  const button = document.createElement('button');
  button.id = 'load';
  button.textContent = 'Load dashboard';
  button.addEventListener('click', async () => {
    const refreshes = [];
    const onRefresh = (ev) => refreshes.push(ev.ok);
    broker.addEventListener('refreshend', onRefresh);
    try {
      const answers = await Promise.all(ENDPOINTS.map(async (url) => {
        const res = await api.get(url);
        return { url, status: res.status, body: res.data };
      }));
      show('result', JSON.stringify({ app: 'webpack', ok: answers.filter((a) => a.status === 200).length, answers, refreshes }));
    } catch (e) {
      show('error', String(e?.stack ?? e));
    } finally {
      broker.removeEventListener('refreshend', onRefresh);
    }
  });
  const ready = document.createElement('p');
  ready.id = 'ready';
  ready.textContent = 'logged in';
  app.append(button, ready);
}

main().catch((e) => show('error', String(e?.stack ?? e)));
