import { useCallback, useEffect, useState } from 'react';
import { getJson, startSession } from './auth.js';

const ENDPOINTS = ['/statistics', '/other-statistics', '/event-more-statistics', '/final-statistics'];

function Login({ onLogin, error }) {
  const [username, setUsername] = useState('demo');
  const [password, setPassword] = useState('demo');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    await onLogin(username, password);
    setBusy(false);
  };
  return (
    <form className="card login" onSubmit={submit}>
      <h1>Sign in</h1>
      <p className="muted">React + <code>token-broker/fetch</code>. Demo user <code>demo</code> / <code>demo</code>.</p>
      <label>Username <input value={username} onChange={(e) => setUsername(e.target.value)} data-testid="login-username" /></label>
      <label>Password <input type="password" value={password} onChange={(e) => setPassword(e.target.value)} data-testid="login-password" /></label>
      <button className="primary" disabled={busy} data-testid="login-submit">Log in</button>
      {error && <p className="error">{error}</p>}
    </form>
  );
}

function Dashboard({ session, onLogout }) {
  const [panels, setPanels] = useState({});
  const [round, setRound] = useState(0);
  const [state, setState] = useState(session.broker.state);

  useEffect(() => {
    const controller = new AbortController();
    setPanels(Object.fromEntries(ENDPOINTS.map((p) => [p, { state: 'loading' }])));
    // The four calls in parallel; after an expiry they share one refresh.
    for (const path of ENDPOINTS) {
      getJson(session.authFetch, path, controller.signal).then(
        (data) => setPanels((all) => ({ ...all, [path]: { state: 'ok', data, round } })),
        (err) => controller.signal.aborted || setPanels((all) => ({ ...all, [path]: { state: 'error', error: err.code ?? err.message, round } })),
      );
    }
    return () => controller.abort();
  }, [session, round]);

  useEffect(() => {
    const update = () => setState(session.broker.state);
    const types = ['tokens', 'refreshstart', 'refreshend', 'expired', 'logout'];
    types.forEach((t) => session.broker.addEventListener(t, update));
    return () => types.forEach((t) => session.broker.removeEventListener(t, update));
  }, [session]);

  return (
    <>
      <div className="bar">
        <span>session <b className={`badge ${state}`} data-testid="session-state">{state}</b></span>
        <button onClick={() => setRound((r) => r + 1)} data-testid="reload">Reload</button>
        <button onClick={onLogout} data-testid="logout">Log out</button>
      </div>
      <div className="panels">
        {ENDPOINTS.map((path) => {
          const p = panels[path] ?? { state: 'idle' };
          return (
            <article key={path} className={`card panel ${p.state}`} data-testid="panel" data-path={path}
                     data-state={p.state} data-round={p.round ?? ''}>
              <h3>{path}</h3>
              <div className="value">{p.state === 'ok' ? p.data.value : p.state === 'loading' ? '…' : '—'}</div>
              {p.state === 'ok' && <div className="sub">token gen {p.data.gen}</div>}
              {p.state === 'error' && <div className="sub error">{p.error}</div>}
            </article>
          );
        })}
      </div>
    </>
  );
}

export default function App() {
  const [session, setSession] = useState(null);
  const [error, setError] = useState('');

  const login = useCallback(async (username, password) => {
    try {
      setError('');
      setSession(await startSession(username, password, () => {
        setSession(null);
        setError('Your session expired. Please log in again.');
      }));
    } catch (err) {
      setError(err.message);
    }
  }, []);

  const logout = useCallback(async () => {
    await session?.logout();
    setSession(null);
  }, [session]);

  return (
    <div className="app">
      <header className="top">
        <b>token-broker</b> <span className="muted">· React + fetch example</span>
        <a href="../">Vue + axios dashboard →</a>
      </header>
      <main>{session ? <Dashboard session={session} onLogout={logout} /> : <Login onLogin={login} error={error} />}</main>
    </div>
  );
}
