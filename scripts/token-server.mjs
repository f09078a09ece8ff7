// Starts the reference token server (tests/server) as a child process for the browser tests,
// the benchmark and the demo. It runs in its own process group, so the `cargo run` wrapper never
// leaves the server behind, and resolves once the server printed its one JSON ready line.
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * @param {string[]} args  the server's flags, e.g. ['--port', '0', '--test-controls', '--static', dir]
 * @param {{ quiet?: boolean, env?: NodeJS.ProcessEnv }} [options]  quiet: false echoes the server's stderr
 * @returns {Promise<{ base: string, foreign: string, proc: import('node:child_process').ChildProcess, stop: () => Promise<void> }>}
 */
export async function startTokenServer(args, { quiet = true, env = process.env } = {}) {
  // TB_SERVER_CMD overrides the command (development only), e.g. a prebuilt binary.
  const cmd = process.env.TB_SERVER_CMD ?? 'cargo run -q --release -p token-server --';
  const [exe, ...pre] = cmd.split(' ').filter(Boolean);
  const proc = spawn(exe, [...pre, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
    if (!quiet) process.stderr.write(d);
  });
  const killGroup = (sig) => { try { process.kill(-proc.pid, sig); } catch { /* already gone */ } };
  const onExit = () => killGroup('SIGKILL');
  process.once('exit', onExit); // never leave the server behind, even on a crash of the caller
  const lines = readline.createInterface({ input: proc.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve);
    proc.once('exit', (code) => reject(new Error(`token server exited (${code}) before listening:\n${stderr}`)));
  });
  lines.on('line', () => {}); // keep draining stdout
  const info = JSON.parse(first);
  const stop = async () => {
    process.removeListener('exit', onExit);
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    killGroup('SIGTERM');
    const timer = setTimeout(() => killGroup('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };
  return { base: info.listening, foreign: info.foreign, proc, stop };
}
