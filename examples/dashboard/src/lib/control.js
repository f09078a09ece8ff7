// The reference server's test controls (`--test-controls`), used by the demo's buttons.
async function call(name, body) {
  const res = await fetch(`/__control/${name}`, body === undefined
    ? { cache: 'no-store' }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`/__control/${name}: ${res.status} ${await res.text()}`);
  return res.json();
}

export const control = {
  stats: () => call('stats'),
  config: () => call('config'),
  setConfig: (fields) => call('config', fields), // { access_ttl, grace, ... }: applies to new tokens
  clock: () => call('clock'),
  advanceClock: (ms) => call('clock', { advance_ms: ms }),
};
