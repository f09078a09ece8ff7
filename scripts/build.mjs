// `npm run build`: the publishable package in pkg/ from wasm-pack's output (--target web),
// js/ and pkg-template/. `npm pack ./pkg` then makes the tarball.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(root, 'pkg');
const env = { ...process.env, PATH: `${join(root, 'node_modules/.bin')}:${process.env.HOME}/.cargo/bin:${process.env.PATH}` };

execFileSync('wasm-pack', ['build', '--target', 'web', '--release', '--no-pack', '--out-dir', 'pkg', '--out-name', 'token_broker'],
  { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });

for (const f of readdirSync(join(root, 'js'))) {
  if (f.endsWith('.js') || f.endsWith('.d.ts')) copyFileSync(join(root, 'js', f), join(pkg, f));
}
copyFileSync(join(root, 'README.md'), join(pkg, 'README.md'));

const version = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(join(root, 'Cargo.toml'), 'utf8'))[1];
const manifest = JSON.parse(readFileSync(join(root, 'pkg-template/package.json'), 'utf8'));
manifest.version = version;
writeFileSync(join(pkg, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
for (const f of manifest.files) if (!existsSync(join(pkg, f))) throw new Error(`pkg/${f} is missing`);

const gz = (f) => gzipSync(readFileSync(join(pkg, f)), { level: 9 }).length;
const sizes = Object.fromEntries(['token_broker_bg.wasm', 'token_broker.js', 'index.js', 'axios.js', 'fetch.js']
  .filter((f) => existsSync(join(pkg, f))).map((f) => [f, gz(f)]));
console.log(`built pkg/ (token-broker ${version}); gzip -9 bytes:`, JSON.stringify(sizes));
