/**
 * A real dispatcher process (dist/bin/dispatcher.mjs) for integration tests: loopback only,
 * no DHCP, no TFTP, a temp data dir; its JSON log parsed line by line; the admin API at hand.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import { join } from 'node:path';
import { ROOT, startAgent, waitFor, type AgentProcess } from './harness.js';

export const DISPATCHER_BIN = join(ROOT, 'dist/bin/dispatcher.mjs');

export interface DispatcherProcess {
  child: ChildProcess;
  port: number;
  url: string;
  dataDir: string;
  lines: Record<string, unknown>[];
  /** Calls the JSON API with the admin token. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** Raw text of a GET (CSV, JSON lines). */
  text(path: string): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function startDispatcherProcess(opts: { dataDir?: string; port?: number; heartbeatSeconds?: number; extraArgs?: string[] } = {}): Promise<DispatcherProcess> {
  const dataDir = opts.dataDir ?? tempDir('lc-disp-');
  const args = [
    DISPATCHER_BIN, '--dhcp', 'off', '--no-tftp', '--http-host', '127.0.0.1', '--http-port', String(opts.port ?? 0), '--data-dir', dataDir,
    '--heartbeat', String(opts.heartbeatSeconds ?? 1), ...(opts.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } });
  const lines: Record<string, unknown>[] = [];
  let rest = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (rest + d).split('\n');
    rest = parts.pop()!;
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p) as Record<string, unknown>);
      } catch {
        lines.push({ msg: p });
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const started = await waitFor('dispatcher started', () => lines.find((l) => l.msg === 'dispatcher started') ?? (child.exitCode !== null ? { failed: true } : undefined), 30_000).catch((err: Error) => {
    throw new Error(`${err.message}; stderr: ${stderr.slice(-2000)}`);
  });
  if ((started as { failed?: boolean }).failed) throw new Error(`dispatcher exited: ${stderr.slice(-2000)}`);
  const port = started.httpPort as number;
  const url = `http://127.0.0.1:${port}`;
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  return {
    child, port, url, dataDir, lines,
    async api<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await fetch(`${url}${path}`, {
        method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const json = (await res.json()) as T;
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    },
    async text(path: string): Promise<string> {
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
      return res.text();
    },
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** A real agent enrolled with this dispatcher (enrollment token and identity from its data dir). */
export function agentFor(d: { url: string; dataDir: string }, mac: string, extra: string[] = []): AgentProcess {
  return startAgent([
    '--dispatcher', d.url, '--enroll-token', readFileSync(join(d.dataDir, 'enroll.token'), 'utf8').trim(), '--dispatcher-key', join(d.dataDir, 'identity.pub'),
    '--mac', mac, '--work-dir', join(d.dataDir, `agent-${mac.replaceAll(':', '')}`), ...extra,
  ]);
}

export interface JobView {
  id: number;
  firstTaskId: number;
  state: string;
  counts: { total: number; queued: number; running: number; done: number; failed: number; cancelled: number };
}

export interface ResultLine {
  taskId: number;
  index: number;
  params: Record<string, unknown> | null;
  state: string;
  result: {
    attempt: number;
    node: string | null;
    mac: string | null;
    exitCode: number | null;
    signal: string | null;
    timedOut: boolean;
    error: string | null;
    durationMs: number;
    stdout: string;
    stderr: string;
  } | null;
}

export async function resultsOf(d: DispatcherProcess, job: number): Promise<ResultLine[]> {
  const text = await d.text(`/api/v1/jobs/${job}/results?format=jsonl`);
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ResultLine);
}
