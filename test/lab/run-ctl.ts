/** Runs the built `dispatcherctl` (dist/bin/dispatcherctl.mjs) as a process and collects what it said. */
import { spawn, type ChildProcess } from 'node:child_process';
import { CTL_BIN } from './paths.js';

export interface CtlRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment every run starts from: no token anywhere unless the test gives one. */
export function baseEnv(url: string): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LILCLUSTER_URL: url, LILCLUSTER_DATA_DIR: '/nonexistent-lc-data-dir' };
}

export function runCtl(args: string[], env: Record<string, string>, opts: { timeoutMs?: number; stdin?: string } = {}): Promise<CtlRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CTL_BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`dispatcherctl ${args.join(' ')} did not finish in ${opts.timeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`),
      );
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(opts.stdin ?? '');
  });
}

/** dispatcherctl as the admin of a running dispatcher (its token from the data dir). */
export function ctlAdmin(d: { url: string; dataDir: string }, args: string[], opts: { timeoutMs?: number } = {}): Promise<CtlRun> {
  return runCtl(args, { ...baseEnv(d.url), LILCLUSTER_DATA_DIR: d.dataDir }, { timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** Starts a long-running command (events --follow) and gives the process and its output so far. */
export function startCtl(
  args: string[],
  env: Record<string, string>,
): { child: ChildProcess; out: () => string; err: () => string; done: Promise<CtlRun> } {
  const child = spawn(process.execPath, [CTL_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CtlRun>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, out: () => stdout, err: () => stderr, done };
}

export async function waitUntil<T>(what: string, probe: () => T | undefined | null | false, timeoutMs = 15_000, everyMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
