// `npm run build`: the publishable package in pkg/ from wasm-pack's output (--target web),
// js/ and pkg-template/. `npm pack ./pkg` then makes the tarball.
//
// What ships is made small after wasm-pack: the module's import and export names (hashes such as
// `__wbg_new_with_str_and_init_d9f6b5611184e16b`, ~6 KB) are minified by wasm-opt and the JS glue is
// rewritten to match, and every shipped .js is minified with esbuild. The .d.ts files keep the docs.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transformSync } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Built in a staging folder and moved into place at the end: a test or bench that copies pkg/
// while a build runs never sees a module and a glue from two different builds.
const finalPkg = join(root, 'pkg');
// One staging folder per build process: two builds at once (a test and a bench) must not share one.
const staging = `target/pkg-staging-${process.pid}`;
const pkg = join(root, staging);
rmSync(pkg, { recursive: true, force: true });
// The features rustc's wasm32 target emits (a rename pass must not add or drop any).
const WASM_FEATURES = ['--enable-bulk-memory', '--enable-nontrapping-float-to-int', '--enable-reference-types',
  '--enable-multivalue', '--enable-sign-ext', '--enable-mutable-globals'];
const env = { ...process.env, PATH: `${join(root, 'node_modules/.bin')}:${process.env.HOME}/.cargo/bin:${process.env.PATH}` };

execFileSync('wasm-pack', ['build', '--target', 'web', '--release', '--no-pack', '--out-dir', staging, '--out-name', 'token_broker'],
  { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });

minifyNames(join(pkg, 'token_broker_bg.wasm'), join(pkg, 'token_broker.js'));

for (const f of readdirSync(join(root, 'js'))) {
  if (f.endsWith('.js') || f.endsWith('.d.ts')) copyFileSync(join(root, 'js', f), join(pkg, f));
}
for (const f of readdirSync(pkg)) {
  if (f.endsWith('.js')) minifyJs(join(pkg, f));
}
// The package's own README (written for npm users; the repository README is for contributors),
// the two licences and the changelog. pkg-template/package.json lists them in "files".
copyFileSync(join(root, 'pkg-template/README.md'), join(pkg, 'README.md'));
for (const f of ['LICENSE-MIT', 'LICENSE-APACHE', 'CHANGELOG.md']) copyFileSync(join(root, f), join(pkg, f));

const version = /^version\s*=\s*"([^"]+)"/m.exec(readFileSync(join(root, 'Cargo.toml'), 'utf8'))[1];
const manifest = JSON.parse(readFileSync(join(root, 'pkg-template/package.json'), 'utf8'));
manifest.version = version;
writeFileSync(join(pkg, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
for (const f of manifest.files) if (!existsSync(join(pkg, f))) throw new Error(`pkg/${f} is missing`);

rmSync(finalPkg, { recursive: true, force: true });
renameSync(pkg, finalPkg);

const gz = (f) => gzipSync(readFileSync(join(finalPkg, f)), { level: 9 }).length;
const shipped = manifest.files.filter((f) => f.endsWith('.js') || f.endsWith('.wasm'));
const sizes = Object.fromEntries(shipped.map((f) => [f, gz(f)]));
console.log(`built pkg/ (token-broker ${version}); gzip -9 bytes:`, JSON.stringify(sizes),
  'total', Object.values(sizes).reduce((a, b) => a + b, 0));

/**
 * Renames the module's imports and exports to one or two letters (wasm-opt prints the mapping) and
 * applies the same renaming to the wasm-bindgen glue, which is the only code that uses them.
 */
function minifyNames(wasmFile, glueFile) {
  const out = execFileSync('wasm-opt', [wasmFile, ...WASM_FEATURES, '--minify-imports-and-exports-and-modules', '-o', wasmFile],
    { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  const map = JSON.parse(out.slice(out.indexOf('{')));
  let glue = readFileSync(glueFile, 'utf8');
  const modules = new Set(map.imports.map(([module]) => module));
  if (modules.size !== 1) throw new Error(`expected one import module, got ${[...modules]}`);
  const imports = new Map(map.imports.map(([, name, short]) => [name, short]));
  const exports = new Map(map.exports);
  // Imports are the keys of the object the glue hands to WebAssembly.instantiate.
  glue = glue.replace(/^(\s+)(__wbg_\w+|__wbindgen_\w+): function\(/gm, (all, indent, name) => {
    if (!imports.has(name)) return all;
    const short = imports.get(name);
    imports.delete(name);
    return `${indent}${JSON.stringify(short)}: function(`;
  });
  if (imports.size) throw new Error(`imports not found in the glue: ${[...imports.keys()]}`);
  const [module] = modules;
  const moduleKey = `${JSON.stringify(module)}: import0`;
  if (!glue.includes(moduleKey)) throw new Error(`import module ${module} not found in the glue`);
  const strippedModule = 'a'; // what --minify-imports-and-exports-and-modules names the only module
  glue = glue.replace(moduleKey, `${JSON.stringify(strippedModule)}: import0`);
  const moduleNames = WebAssemblyModuleImports(wasmFile);
  if (moduleNames.size !== 1 || !moduleNames.has(strippedModule)) throw new Error(`unexpected import modules ${[...moduleNames]}`);
  glue = glue.replace(/\bwasm\.(\w+)/g, (all, name) => {
    if (!exports.has(name)) throw new Error(`the glue uses wasm.${name}, which the module does not export`);
    return `wasm.${exports.get(name)}`;
  });
  writeFileSync(glueFile, glue);
  // One more -Oz, run until it stops shrinking, without the producers section (~0.5 KB less).
  execFileSync('wasm-opt', [wasmFile, ...WASM_FEATURES, '-Oz', '--converge', '--strip-producers', '-o', wasmFile], { env });
}

function WebAssemblyModuleImports(file) {
  const m = new WebAssembly.Module(readFileSync(file));
  return new Set(WebAssembly.Module.imports(m).map((i) => i.module));
}

/** Minified ES module; `new URL('x.wasm', import.meta.url)` stays as bundlers look for it. */
function minifyJs(file) {
  const { code } = transformSync(readFileSync(file, 'utf8'), {
    minify: true, format: 'esm', target: 'es2020', legalComments: 'none', charset: 'utf8',
  });
  writeFileSync(file, code);
}
