// The dashboard of the original question: log in, then four calls in parallel. When the access
// token has expired meanwhile, the broker makes one refresh and every call succeeds.
import { useEffect, useState } from 'react';
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';

const ENDPOINTS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];

async function login() {
  const res = await fetch('/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'demo', password: 'demo' }),
  });
  if (!res.ok) throw new Error(`login failed: ${res.status}`);
  return res.json();
}

export default function App() {
  const [api, setApi] = useState(null);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    let broker;
    (async () => {
      broker = await createTokenBroker({ refresh: { url: '/auth/refresh-token' }, tokens: await login() });
      setApi({ fetch: createAuthFetch(broker), broker });
    })().catch((e) => setError(String(e?.stack ?? e)));
    return () => broker?.dispose();
  }, []);

  async function loadDashboard() {
    const refreshes = [];
    const onRefresh = (ev) => refreshes.push(ev.ok);
    api.broker.addEventListener('refreshend', onRefresh);
    try {
      const answers = await Promise.all(ENDPOINTS.map(async (url) => {
        const res = await api.fetch(url);
        return { url, status: res.status, body: await res.json() };
      }));
      setResult({ app: 'vite-react', ok: answers.filter((a) => a.status === 200).length, answers, refreshes });
    } catch (e) {
      setError(String(e?.stack ?? e));
    } finally {
      api.broker.removeEventListener('refreshend', onRefresh);
    }
  }

  return (
    <main>
      <h1>Dashboard</h1>
      {api && <button id="load" onClick={loadDashboard}>Load dashboard</button>}
      {api && <p id="ready">logged in</p>}
      {result && <pre id="result">{JSON.stringify(result)}</pre>}
      {error && <pre id="error">{error}</pre>}
    </main>
  );
}
