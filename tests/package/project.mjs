// Shared helper of the package ring (tests/package/*.test.mjs): the published package seen from the
// outside. pkg/ is packed with `npm pack` (once per content: the tarball is cached under the OS temp
// folder by a hash of pkg/), and each test file installs it into a clean temp project of its own, as
// a user would (`npm install <tarball>`, plus axios from the registry when asked). Scripts then run in
// that project as child processes, importing the package by name.
//
// Environment overrides (development only): TB_PKG_DIR (default <repo>/pkg), TB_VERBOSE=1 logs steps.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const PKG = process.env.TB_PKG_DIR ?? path.join(ROOT, 'pkg');
const log = (...a) => { if (process.env.TB_VERBOSE) console.error('[package]', ...a); };

/** Runs a command synchronously; throws with its output when it fails. */
export function run(cmd, args, cwd, { timeout = 300_000, env = process.env } = {}) {
  log(cmd, args.join(' '), `(in ${cwd})`);
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed (${r.status ?? r.signal ?? r.error}):\n`
      + `${r.stdout?.slice(-4000)}\n${r.stderr?.slice(-4000)}`);
  }
  return r.stdout;
}

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir) {
  return fs.readdirSync(dir, { recursive: true }).map(String)
    .filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

let tarballPath;
/**
 * The tarball of pkg/ (`npm pack ./pkg`). Builds pkg/ first when it is missing; an existing pkg/ is
 * used as it is (`npm test` builds it in ring 3).
 */
export function tarball() {
  if (tarballPath) return tarballPath;
  if (!fs.existsSync(path.join(PKG, 'package.json'))) {
    log('pkg/ is missing: node scripts/build.mjs');
    run(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], ROOT, { timeout: 900_000 });
  }
  const hash = createHash('sha256');
  for (const f of filesUnder(PKG)) hash.update(f).update('\0').update(fs.readFileSync(path.join(PKG, f))).update('\0');
  const cache = path.join(os.tmpdir(), 'token-broker-package-ring');
  const final = path.join(cache, `token-broker-${hash.digest('hex').slice(0, 16)}.tgz`);
  if (!fs.existsSync(final)) {
    // Packed aside, then renamed into place: test files running in parallel never see half a tarball.
    fs.mkdirSync(cache, { recursive: true });
    const aside = fs.mkdtempSync(path.join(cache, 'pack-'));
    const [{ filename }] = JSON.parse(run('npm', ['pack', PKG, '--pack-destination', aside, '--json', '--loglevel=error'], ROOT));
    fs.renameSync(path.join(aside, path.basename(filename)), final);
    fs.rmSync(aside, { recursive: true, force: true });
  }
  tarballPath = final;
  return tarballPath;
}

/**
 * A clean temp project (`"type": "module"`) with the tarball installed, and axios when asked.
 * @returns {Project}
 */
export function makeProject(name, { axios = false } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tb-package-${name}-`));
  fs.writeFileSync(path.join(dir, 'package.json'),
    `${JSON.stringify({ name: `consumer-${name}`, version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  const deps = [tarball(), ...(axios ? ['axios@^1.19'] : [])];
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...deps], dir);
  return project(dir);
}

/** A copy of a project (for tests that damage the installed package). */
export function copyProject(p, name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tb-package-${name}-`));
  fs.cpSync(p.dir, dir, { recursive: true, verbatimSymlinks: true });
  return project(dir);
}

/**
 * @typedef {{ code: number | null, signal: string | null, stdout: string, stderr: string, timedOut: boolean }} RunResult
 * @typedef {{
 *   dir: string,
 *   file: (rel: string) => string,
 *   write: (rel: string, text: string) => string,
 *   node: (rel: string, opts?: { timeout?: number, env?: object, args?: string[] }) => Promise<RunResult>,
 *   import: (rel: string) => Promise<any>,
 *   remove: () => void,
 * }} Project
 */
function project(dir) {
  return {
    dir,
    file: (rel) => path.join(dir, rel),
    write(rel, text) {
      const f = path.join(dir, rel);
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, text);
      return f;
    },
    /** Runs `node rel` in the project. `timeout` is a liveness bound: the child is killed after it. */
    node(rel, { timeout = 30_000, env = {}, args = [] } = {}) {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [...args, rel], {
          cwd: dir, env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        child.stdout.on('data', (d) => { stdout += d; });
        child.stderr.on('data', (d) => { stderr += d; });
        const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeout);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr, timedOut });
        });
      });
    },
    /** Imports a module of the project into the test process (it resolves packages from the project). */
    import: (rel) => import(pathToFileURL(path.join(dir, rel)).href),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** The last line of a script's stdout, parsed as JSON (scripts print their findings that way). */
export function lastJson(result) {
  const lines = result.stdout.trim().split('\n');
  try {
    return JSON.parse(lines.at(-1));
  } catch {
    throw new Error(`no JSON result (exit ${result.code}${result.timedOut ? ', timed out' : ''}):\n`
      + `stdout: ${result.stdout.slice(-3000)}\nstderr: ${result.stderr.slice(-3000)}`);
  }
}

/** Describes a run for assertion messages. */
export const describeRun = (r) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ', killed by the liveness bound' : ''}\n`
  + `--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`;

/** The code blocks of a README that follow `<!-- example: NAME ... -->`, by name. */
export function readmeExamples(markdown) {
  const out = new Map();
  const re = /<!--\s*example:\s*([\w-]+)[^>]*-->\s*\n```\w*\n([\s\S]*?)\n```/g;
  for (const m of markdown.matchAll(re)) out.set(m[1], `${m[2]}\n`);
  return out;
}
