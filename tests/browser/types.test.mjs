// The package's .d.ts files, as a TypeScript consumer sees them (tests/types/consumer.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './harness.mjs';

test('a TypeScript consumer of token-broker, token-broker/axios, token-broker/fetch type-checks', { timeout: 120_000 }, () => {
  for (const f of ['index.d.ts', 'axios.d.ts', 'fetch.d.ts']) {
    assert.ok(fs.existsSync(path.join(ROOT, 'pkg', f)), `pkg/${f} is missing: build the package first`);
  }
  const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
  const r = spawnSync(tsc, ['-p', 'tests/types', '--noEmit'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `tsc failed:\n${r.stdout}${r.stderr}${r.error ?? ''}`);
});
