// `npm run demo` (after scripts/demo.sh ran setup and built pkg/): packs the package, installs the
// tarball into the examples by name as a user would, builds them with Vite (skipped when neither the
// example's sources, examples/shared nor the tarball's content changed), and starts the reference
// token server serving the dashboard at / and the React example at /react/.
//
//   node scripts/demo.mjs [--port N]      PORT=N also works; default 8080, 0 = any free port
//
// tests/browser/demo.test.mjs imports buildDemoSite() and startDemoServer() from here.
import { execFileSync } from 'node:child_process';
import { startTokenServer } from './token-server.mjs';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DASHBOARD = path.join(ROOT, 'examples/dashboard');
export const REACT = path.join(ROOT, 'examples/react');
/** Framework-free code both examples import (timeline model, actions, two-tabs link). */
export const SHARED = path.join(ROOT, 'examples/shared');
const PKG = path.join(ROOT, 'pkg');
const env = { ...process.env, PATH: `${process.env.HOME}/.cargo/bin:${process.env.PATH}` };
const say = (msg) => process.stderr.write(`[demo] ${msg}\n`);
const sha = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** `npm pack ./pkg` into the repository root (git-ignored *.tgz); returns the tarball's path. */
export function packPackage() {
  for (const f of ['package.json', 'index.js', 'axios.js', 'fetch.js', 'token_broker_bg.wasm']) {
    if (!existsSync(path.join(PKG, f))) throw new Error(`pkg/${f} is missing: run node scripts/build.mjs first`);
  }
  const { version } = JSON.parse(readFileSync(path.join(PKG, 'package.json'), 'utf8'));
  const out = execFileSync('npm', ['pack', './pkg', '--pack-destination', ROOT, '--silent'],
    { cwd: ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
  const tarball = path.join(ROOT, out || `token-broker-${version}.tgz`);
  if (!existsSync(tarball)) throw new Error(`npm pack did not write ${tarball}`);
  return tarball;
}

/**
 * `npm install <tarball>` in an example folder, skipped when node_modules already holds this tarball
 * and matches package.json + package-lock.json. (A bare `npm install`/`npm ci` is not enough: npm
 * reuses its cached copy of a `file:` tarball whose lock entry still has the old integrity.)
 */
export function installExample(dir, tarball) {
  const stampFile = path.join(dir, 'node_modules/.token-broker-demo-stamp');
  const stamp = () => [tarball, sha(tarball), sha(path.join(dir, 'package.json')),
    existsSync(path.join(dir, 'package-lock.json')) ? sha(path.join(dir, 'package-lock.json')) : '-'].join('\n');
  if (existsSync(path.join(dir, 'node_modules/.package-lock.json')) && existsSync(stampFile)
      && readFileSync(stampFile, 'utf8') === stamp()) {
    say(`${path.relative(ROOT, dir)}: node_modules up to date`);
    return false;
  }
  const spec = path.relative(dir, tarball);
  say(`${path.relative(ROOT, dir)}: npm install ${spec}`);
  const lockPath = path.join(dir, 'package-lock.json');
  const lockBefore = existsSync(lockPath) ? readFileSync(lockPath, 'utf8') : null;
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', spec],
    { cwd: dir, env, stdio: ['ignore', 2, 2] });
  // The lockfile pins everything but the package built here, whose hash changes with every
  // build: keep the committed lockfile when that hash is all that changed.
  if (lockBefore !== null && sameButOwnPackage(lockBefore, readFileSync(lockPath, 'utf8'))) {
    writeFileSync(lockPath, lockBefore);
  }
  writeFileSync(stampFile, stamp());
  return true;
}

function sameButOwnPackage(a, b) {
  const strip = (text) => {
    const lock = JSON.parse(text);
    const own = lock.packages?.['node_modules/token-broker'];
    if (own) { delete own.integrity; delete own.resolved; }
    return JSON.stringify(lock);
  };
  try { return strip(a) === strip(b); } catch { return false; }
}

/** The tarball's content (the tar inside the gzip), hashed: what the examples are built from. */
export function tarballHash(tarball) {
  return createHash('sha256').update(gunzipSync(readFileSync(tarball))).digest('hex');
}

/** Every file under `dir` that a build reads (no node_modules, dist, dot-files or READMEs), sorted. */
function filesUnder(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    if (name === 'node_modules' || name === 'dist' || name.startsWith('.') || name.endsWith('.md')) continue;
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) out.push(...filesUnder(file));
    else out.push(file);
  }
  return out;
}

/**
 * What a build of `dir` depends on: its own sources (index.html, configs, package.json and lock,
 * src/), examples/shared/, and the content of the package tarball it has installed.
 */
export function buildKey(dir, tarball) {
  const h = createHash('sha256');
  for (const file of [...filesUnder(dir), ...filesUnder(SHARED)]) {
    h.update(path.relative(ROOT, file)).update('\0').update(readFileSync(file)).update('\0');
  }
  h.update(`tarball:${tarballHash(tarball)}`);
  return h.digest('hex');
}

/**
 * `npm run build` (vite build) in an example folder, unless dist/ was built from the same sources
 * and the same package (the key is kept in node_modules/, out of the served folder). Returns
 * whether it built.
 */
export function buildExample(dir, tarball) {
  const stampFile = path.join(dir, 'node_modules/.token-broker-demo-build');
  const key = buildKey(dir, tarball);
  if (existsSync(path.join(dir, 'dist/index.html')) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === key) {
    say(`${path.relative(ROOT, dir)}: build up to date (same sources and package)`);
    return false;
  }
  say(`${path.relative(ROOT, dir)}: vite build`);
  rmSync(stampFile, { force: true });
  execFileSync('npm', ['run', 'build', '--silent', '--', '--logLevel', 'warn'],
    { cwd: dir, env, stdio: ['ignore', 2, 2] }); // npm's output to stderr: a test's stdout stays clean
  writeFileSync(stampFile, key);
  return true;
}

/**
 * Pack, install and build both examples (each build skipped when nothing it is made from changed);
 * the React build is copied to the dashboard's dist/react.
 * @returns {{ site: string, built: string[] }} the folder to serve (examples/dashboard/dist), and
 *   the examples that were built this time
 */
export function buildDemoSite() {
  const tarball = packPackage();
  const built = [];
  for (const dir of [DASHBOARD, REACT]) {
    installExample(dir, tarball);
    if (buildExample(dir, tarball)) built.push(path.relative(ROOT, dir));
  }
  const site = path.join(DASHBOARD, 'dist');
  rmSync(path.join(site, 'react'), { recursive: true, force: true });
  cpSync(path.join(REACT, 'dist'), path.join(site, 'react'), { recursive: true });
  return { site, built };
}

/**
 * The demo server's DPoP (RFC 9449) settings: optional, so the dashboard works with its DPoP switch
 * on (DPoP-bound tokens, proofs checked) or off (bearer tokens, as without DPoP); server nonces on,
 * so a DPoP client meets `use_dpop_nonce` at the token endpoint and at the API.
 */
export const DEMO_DPOP_ARGS = ['--dpop', 'optional', '--dpop-nonces', 'on'];

/** Starts the reference server serving the demo site on `port` (see scripts/token-server.mjs). */
export async function startDemoServer({ port = 8080, staticDir, args = [], quiet = false } = {}) {
  const server = await startTokenServer(['--port', String(port), '--test-controls', '--static', staticDir, ...DEMO_DPOP_ARGS, ...args],
    { quiet, env });
  return { ...server, url: server.base };
}

function portFromArgs(argv) {
  let port = process.env.PORT ?? '8080';
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--port') port = argv[++i];
    else if (argv[i].startsWith('--port=')) port = argv[i].slice(7);
    else if (argv[i] === '--help' || argv[i] === '-h') {
      console.log('usage: npm run demo [-- --port N]   (or PORT=N npm run demo; default 8080)');
      process.exit(0);
    } else throw new Error(`unknown argument ${argv[i]} (usage: npm run demo -- --port N)`);
  }
  if (!/^\d+$/.test(String(port)) || Number(port) > 65535) throw new Error(`bad port ${port}`);
  return Number(port);
}

async function main() {
  const port = portFromArgs(process.argv.slice(2));
  const { site } = buildDemoSite();
  say('starting the reference token server (cargo run --release -p token-server)');
  const server = await startDemoServer({ port, staticDir: site, quiet: true });
  let stopping = false;
  const shutdown = async (sig) => {
    if (stopping) return;
    stopping = true;
    say(`${sig}: stopping the server`);
    await server.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGHUP', () => shutdown('SIGHUP'));
  server.proc.once('exit', (code) => {
    if (!stopping) { say(`the token server exited (${code})`); process.exit(1); }
  });
  console.log(`
  token-broker demo is running:

    dashboard (Vue 3 + axios)   ${server.url}/        press "Run the comparison"
    React + fetch example       ${server.url}/react/

  "Try it yourself" has a DPoP switch (RFC 9449; the server runs with --dpop optional, nonces on).

  Press Ctrl-C to stop.
`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`[demo] ${err.message}`);
    process.exit(1);
  });
}
