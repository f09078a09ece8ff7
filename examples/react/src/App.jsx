import { useEffect, useState, useSyncExternalStore } from 'react';
import { useSession } from 'token-broker/react';
import Timeline from './Timeline.jsx';
import { dashboard, getJson, page, setDpop, signIn, signOut } from './auth.js';
import { control, countersFor, expireForServer, noun, panelState, plural } from '../../shared/demo.js';
import { countersOf, now } from '../../shared/timeline.js';

/** A store from examples/shared (subscribe + getSnapshot) as React state. */
const useStore = (store) => useSyncExternalStore(store.subscribe, store.getSnapshot);

/** performance.now(), re-read every `ms` while `on`: moves a running picture along. */
function useNow(on, ms = 100) {
  const [t, setT] = useState(now);
  useEffect(() => {
    setT(now());
    if (!on) return undefined;
    const timer = setInterval(() => setT(now()), ms);
    return () => clearInterval(timer);
  }, [on, ms]);
  return t;
}

/** The DPoP switch: a new broker with `dpop: true` (or without), logged in again if it was. */
function DpopSwitch() {
  const { dpop, switching } = useStore(page);
  const { busy } = useStore(dashboard);
  return (
    <label className={`dpop-switch${dpop ? ' on' : ''}`} title="DPoP (RFC 9449): tokens bound to a key this page holds and cannot export">
      <input type="checkbox" role="switch" checked={dpop} disabled={switching || busy} data-testid="dpop-toggle"
             onChange={(e) => setDpop(e.target.checked)} />
      <span>DPoP</span>
    </label>
  );
}

function Login({ error }) {
  const [username, setUsername] = useState('demo');
  const [password, setPassword] = useState('demo');
  const [busy, setBusy] = useState(false);
  const [failed, setFailed] = useState('');
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setFailed('');
    try {
      await signIn(username, password);
      await dashboard.run(getJson, { label: 'login' });
    } catch (err) {
      setFailed(err.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card login" onSubmit={submit}>
      <h1>Sign in</h1>
      <p className="muted">The four statistics panels with React, <code>token-broker/fetch</code> and
        <code>token-broker/react</code>. Demo user <code>demo</code> / <code>demo</code>.</p>
      <label>Username <input value={username} onChange={(e) => setUsername(e.target.value)} data-testid="login-username" /></label>
      <label>Password <input type="password" value={password} onChange={(e) => setPassword(e.target.value)} data-testid="login-password" /></label>
      <DpopSwitch />
      <button className="primary" disabled={busy} data-testid="login-submit">Log in</button>
      {(failed || error) && <p className="error">{failed || error}</p>}
    </form>
  );
}

function Dashboard() {
  const session = useSession();
  const state = useStore(dashboard);
  const picture = useStore(dashboard.timeline);
  const t = useNow(state.busy);
  const [rounds, setRounds] = useState(3);
  const [note, setNote] = useState('');
  const { dpop } = useStore(page);
  const counters = countersOf(picture);
  const server = state.last?.server;
  const run = (n, label) => dashboard.run(getJson, { rounds: n, label });
  const expire = async () => {
    const clock = await expireForServer(session.claims?.exp_ms ?? null);
    setNote(`Server clock +${Math.round(clock.offset_ms / 1000)} s: the token is expired for the server, not yet for this page. Now burst.`);
  };
  const rotate = async () => {
    await control.rotateDpopNonces('both');
    setNote('New DPoP nonces at the server: the next proof with an old one gets use_dpop_nonce, and the broker sends that request once more with the new nonce (no refresh).');
  };

  return (
    <>
      <div className="bar">
        <button onClick={expire} disabled={state.busy} data-testid="expire-now">1 · Expire now</button>
        <button className="primary" onClick={() => { setNote(''); run(rounds, 'burst'); }} disabled={state.busy} data-testid="burst">
          2 · Burst ×{rounds}</button>
        <input type="number" min="1" max="20" value={rounds} aria-label="rounds" className="num" data-testid="burst-n"
               onChange={(e) => setRounds(Math.max(1, Math.min(20, Number(e.target.value) || 1)))} />
        <button onClick={() => run(1, 'reload')} disabled={state.busy} data-testid="reload">Reload</button>
        <button onClick={() => { signOut(); dashboard.reset(); }} disabled={state.busy} data-testid="logout">Log out</button>
        <DpopSwitch />
        {dpop && <button onClick={rotate} disabled={state.busy} data-testid="rotate-nonces">Rotate nonces</button>}
      </div>
      <p className="hint">{note || <><b>Expire now</b> moves the server's clock past the token's expiry (this page is not
        told, as after a laptop sleep); <b>Burst</b> then fires the four calls {plural(rounds, 'time')} at once: every call
        gets 401, the broker refreshes once, and each call is replayed with the new token.</>}</p>
      <div className="panels">
        {state.panels.map((p) => {
          const s = panelState(p);
          return (
            <article key={p.path} className={`card panel ${s}`} data-testid="panel" data-path={p.path} data-state={s}>
              <h3>{p.path}</h3>
              <div className="value">{p.value ?? (s === 'loading' ? '…' : '—')}</div>
              {p.total > 0 && <div className="sub">{p.ok}/{p.total} ok{p.gen != null && ` · token gen ${p.gen}`}</div>}
              {p.error && <div className="sub error" title={p.error}>{p.error}</div>}
            </article>
          );
        })}
      </div>
      <section className="card timeline-card">
        <h2>What the page sent <span className="muted">· {state.last ? (state.last.label === 'burst' ? `burst ×${state.last.rounds}` : state.last.label) : 'nothing yet'}</span></h2>
        <div className="tl-counters">
          {countersFor(dpop).map(([k, one, many]) => (
            <div key={k} className={`tl-counter ${k}`} data-testid={`counter-${k}`} data-value={counters[k]}>
              <b>{counters[k]}</b><span>{noun(counters[k], one, many)}</span>
            </div>
          ))}
        </div>
        <Timeline snapshot={picture} now={t} badges />
        {server?.refresh_calls !== undefined && (
          <p className="hint" data-testid="server-refreshes" data-value={server.refresh_calls}>
            The server counted {plural(server.refresh_calls, 'refresh call')} during this action
            {dpop && server.dpop_proofs_accepted !== undefined && (
              <span data-testid="server-dpop" data-proofs={server.dpop_proofs_accepted}
                    data-challenges={(server.dpop_nonce_challenges_rs ?? 0) + (server.dpop_nonce_challenges_as ?? 0)}>
                , {plural(server.dpop_proofs_accepted, 'valid DPoP proof')} and
                {' '}{plural((server.dpop_nonce_challenges_rs ?? 0) + (server.dpop_nonce_challenges_as ?? 0), 'nonce challenge')}
                {' '}(API {server.dpop_nonce_challenges_rs ?? 0}, token endpoint {server.dpop_nonce_challenges_as ?? 0})</span>
            )}.</p>
        )}
      </section>
    </>
  );
}

export default function App() {
  const session = useSession();
  const state = useStore(dashboard);
  const { dpop, switching } = useStore(page);
  const expired = session.status === 'expired';
  return (
    <div className="app" data-busy={state.busy || switching} data-run-count={state.runCount} data-dpop={dpop}>
      <header className="top">
        <div><b>token-broker</b> <span className="muted">· React + fetch example</span></div>
        <span>session <b className={`badge ${session.status}`} data-testid="session-state">{session.status}</b></span>
        <a href="../">Vue + axios dashboard and the comparison →</a>
      </header>
      <main>
        {session.isAuthenticated
          ? <Dashboard />
          : <Login error={expired ? 'Your session expired: the server rejected the refresh token. Please log in again.' : ''} />}
      </main>
    </div>
  );
}
