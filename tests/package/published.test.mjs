// The published package as a user meets it on npm (issue #11, trap 7): what the tarball holds, the
// manifest's fields, licences, changelog, a README written for npm users whose links resolve inside
// the tarball or are absolute, and the packaging linters: `publint --strict` and
// `@arethetypeswrong/cli`. attw runs with one rule ignored by name, `cjs-resolves-to-esm`: the
// package is ESM only on purpose (CommonJS callers use require(esm) on Node ^20.19 || >=22.12, or
// import()), as CHANGELOG.md and the README say. The `./token_broker_bg.wasm` entry is left out of
// attw's check: it is a binary asset for import.meta.resolve / require.resolve, not a typed module.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makeProject, ROOT, run, tarball } from './project.mjs';

const ATTW_IGNORED = ['cjs-resolves-to-esm'];
const ATTW_IGNORED_KINDS = ['CJSResolvesToESM'];
const ASSET_ENTRIES = ['./token_broker_bg.wasm'];

let p;
let tgz;
let installed; // node_modules/token-broker in the clean project
let manifest;
let readme;
before(() => {
  tgz = tarball();
  p = makeProject('published');
  installed = p.file('node_modules/token-broker');
  manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
  readme = fs.readFileSync(path.join(installed, 'README.md'), 'utf8');
});
after(() => p?.remove());

/** The README without fenced code blocks and inline code (links in code are not links). */
const prose = (md) => md.replace(/```[\s\S]*?```/g, '').replace(/``[^`]+``|`[^`\n]+`/g, '');

/** GitHub's heading anchors. */
function anchors(md) {
  const out = new Set();
  const seen = new Map();
  for (const [, text] of md.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6}\s+(.+?)\s*#*$/gm)) {
    const slug = text.toLowerCase().replace(/<[^>]+>/g, '').replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n ? `${slug}-${n}` : slug);
  }
  return out;
}

describe('the published package (trap 7)', () => {
  test('the tarball holds exactly the manifest\'s files, including both licences and the changelog', () => {
    const listed = run('tar', ['-tzf', tgz], ROOT).trim().split('\n').map((f) => f.replace(/^package\//, '')).sort();
    for (const f of ['README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'CHANGELOG.md', 'token_broker_bg.wasm', 'index.d.ts']) {
      assert.ok(listed.includes(f), `${f} is not in the tarball (${listed.join(', ')})`);
    }
    assert.deepEqual(listed, [...new Set([...manifest.files, 'package.json'])].sort());
  });

  test('the manifest has licence, repository, homepage, bugs and engines, and exports types first', () => {
    assert.equal(manifest.license, 'MIT OR Apache-2.0');
    assert.match(manifest.repository?.url ?? '', /^git\+https:\/\/\S+\.git$/);
    assert.match(manifest.homepage ?? '', /^https:\/\//);
    assert.match(manifest.bugs?.url ?? '', /^https:\/\//);
    assert.equal(manifest.engines?.node, '^20.19.0 || >=22.12.0');
    assert.equal(manifest.type, 'module');
    for (const [entry, target] of Object.entries(manifest.exports)) {
      if (typeof target === 'object') assert.equal(Object.keys(target)[0], 'types', `exports["${entry}"] must list types first`);
    }
    assert.equal(manifest.exports['./token_broker_bg.wasm'], './token_broker_bg.wasm');
    // Cargo.toml names the same repository (no more example.invalid).
    const cargo = fs.readFileSync(path.join(ROOT, 'Cargo.toml'), 'utf8');
    const repo = /^repository\s*=\s*"([^"]+)"/m.exec(cargo)?.[1];
    assert.ok(repo && !repo.includes('example.invalid'), `Cargo.toml repository: ${repo}`);
    assert.ok(manifest.repository.url.includes(repo.replace(/^https:\/\//, '')), `${manifest.repository.url} vs Cargo.toml ${repo}`);
  });

  test('the licence files are the MIT and Apache 2.0 texts', () => {
    const mit = fs.readFileSync(path.join(installed, 'LICENSE-MIT'), 'utf8');
    const apache = fs.readFileSync(path.join(installed, 'LICENSE-APACHE'), 'utf8');
    assert.match(mit, /^MIT License/);
    assert.match(mit, /Copyright \(c\) \d{4} the token-broker authors/);
    assert.match(mit, /Permission is hereby granted, free of charge/);
    assert.match(apache, /Apache License\s+Version 2\.0, January 2004/);
    assert.match(apache, /END OF TERMS AND CONDITIONS/);
  });

  test('CHANGELOG.md has an entry for this version', () => {
    const changelog = fs.readFileSync(path.join(installed, 'CHANGELOG.md'), 'utf8');
    const version = manifest.version.replace(/\./g, '\\.');
    assert.match(changelog, new RegExp(`^## \\[?${version}\\]?`, 'm'), `no "## ${manifest.version}" heading`);
  });

  test('the README is written for npm users: no repository-only commands, no missing files', () => {
    assert.match(readme, /^# token-broker\n/);
    assert.match(readme, /npm install token-broker/);
    // Absolute links to the repository are fine; repository paths in the text are not.
    const text = readme.replace(/https?:\/\/[^\s)]+/g, '');
    for (const s of ['npm run demo', 'npm test', 'tests/server', 'security-rules.md', 'docs/', 'cargo ']) {
      assert.ok(!text.includes(s), `the package README mentions ${s}`);
    }
    for (const [, version] of readme.matchAll(/Rust (\d+\.\d+)/g)) {
      const rust = /^rust-version\s*=\s*"([^"]+)"/m.exec(fs.readFileSync(path.join(ROOT, 'Cargo.toml'), 'utf8'))?.[1];
      assert.equal(version, rust, 'the README names another Rust version than Cargo.toml');
    }
    for (const heading of ['## Install', '## Quick start', '### axios', '### fetch', '### Node', '## Options', '## Errors', '## Security notes']) {
      assert.ok(readme.includes(`\n${heading}\n`), `the README has no "${heading}" section`);
    }
    assert.ok(readme.includes(manifest.engines.node), 'the README states the engines range');
    assert.match(readme, /ESM only/);
    assert.match(readme, /ERR_REQUIRE_ESM/);
  });

  test('every link and image in the README is absolute or resolves inside the tarball', () => {
    const text = prose(readme);
    const targets = [
      ...[...text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]),
      ...[...text.matchAll(/^\s*\[[^\]]+\]:\s*(\S+)/gm)].map((m) => m[1]),
      ...[...text.matchAll(/\s(?:href|src)="([^"]+)"/g)].map((m) => m[1]),
    ];
    assert.ok(targets.length > 5, `only ${targets.length} links found`);
    const ids = anchors(readme);
    const bad = [];
    for (const t of targets) {
      if (/^https:\/\/\S+$/.test(t)) continue;
      if (t.startsWith('#')) {
        if (!ids.has(decodeURIComponent(t.slice(1)))) bad.push(`${t} (no such heading)`);
        continue;
      }
      if (/^[a-z][a-z\d+.-]*:/i.test(t) || t.startsWith('//')) {
        bad.push(`${t} (not https)`);
        continue;
      }
      const file = path.join(installed, decodeURIComponent(t.split('#')[0]));
      if (!file.startsWith(installed + path.sep) || !fs.existsSync(file)) bad.push(`${t} (not in the tarball)`);
    }
    assert.deepEqual(bad, []);
  });

  test('the README documents every error code, every option and every adapter option', async () => {
    const codes = [...fs.readFileSync(path.join(ROOT, 'src/core/error.rs'), 'utf8').matchAll(/=> "([A-Z_]+)"/g)].map((m) => m[1]);
    assert.ok(codes.includes('LOAD_FAILED') && codes.length >= 10, `codes read from error.rs: ${codes}`);
    for (const code of codes) assert.match(readme, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${code} is not in the errors table`);

    // The options the package itself knows, from its own "unknown option" messages.
    p.write('known-options.mjs', `
import { createTokenBroker } from 'token-broker';
import { createAuthFetch } from 'token-broker/fetch';
const known = (m) => /\\(known: ([^)]*)\\)/.exec(m)[1].split(', ');
const broker = await createTokenBroker({ refresh: { url: 'https://a.example/t' }, allowedOrigins: ['https://a.example'], x: 1 }).catch((e) => known(e.message));
const b = await createTokenBroker({ refresh: { url: 'https://a.example/t' }, allowedOrigins: ['https://a.example'] });
let fetchOpts;
try { createAuthFetch(b, { x: 1 }); } catch (e) { fetchOpts = known(e.message); }
b.dispose();
console.log(JSON.stringify({ broker, fetchOpts }));
`);
    const r = await p.node('known-options.mjs');
    assert.equal(r.code, 0, r.stderr);
    const { broker, fetchOpts } = JSON.parse(r.stdout.trim().split('\n').at(-1));
    assert.ok(broker.includes('refresh') && fetchOpts.includes('replay'), r.stdout);
    for (const key of broker) assert.match(readme, new RegExp(`^\\| \`${key}\` \\|`, 'm'), `option ${key} is not in the options table`);
    for (const key of fetchOpts) assert.match(readme, new RegExp(`^\\| \`${key}\` \\| (both|fetch) \\|`, 'm'), `adapter option ${key} is not documented`);
  });

  test('publint --strict passes on the tarball', () => {
    const r = spawnSync(path.join(ROOT, 'node_modules/.bin/publint'), ['run', tgz, '--strict'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  });

  test('@arethetypeswrong/cli passes on the tarball, ignoring only cjs-resolves-to-esm (ESM only, documented)', () => {
    const attw = path.join(ROOT, 'node_modules/.bin/attw');
    const checked = spawnSync(attw, [tgz, '--ignore-rules', ...ATTW_IGNORED, '--exclude-entrypoints', ...ASSET_ENTRIES, '--format', 'ascii'],
      { encoding: 'utf8', timeout: 120_000 });
    assert.equal(checked.status, 0, `${checked.stdout}\n${checked.stderr}`);
    // What the ignored rule hides is exactly the ESM-only design, and nothing else.
    const raw = spawnSync(attw, [tgz, '--exclude-entrypoints', ...ASSET_ENTRIES, '--format', 'json'], { encoding: 'utf8', timeout: 120_000 });
    const problems = JSON.parse(raw.stdout).analysis.problems;
    assert.deepEqual(problems.filter((x) => !ATTW_IGNORED_KINDS.includes(x.kind)), []);
    assert.ok(problems.every((x) => x.resolutionKind === 'node16-cjs'), JSON.stringify(problems));
    // And the reason is written where users read it.
    const changelog = fs.readFileSync(path.join(installed, 'CHANGELOG.md'), 'utf8');
    assert.ok(changelog.includes('cjs-resolves-to-esm'), 'CHANGELOG.md does not say why cjs-resolves-to-esm is ignored');
  });
});
