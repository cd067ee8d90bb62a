/**
 * The real dispatcher as a process (dist/bin/dispatcher.mjs) on a free loopback port, DHCP and
 * TFTP off, a temp data dir; for tests of dispatcherctl with real agents.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DISPATCHER_BIN } from './paths.js';

export interface DispatcherProcess {
  url: string;
  port: number;
  dataDir: string;
  token: string;
  pubKeyFile: string;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export async function startDispatcherProcess(opts: { cluster?: string; args?: string[] } = {}): Promise<DispatcherProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-op-proc-'));
  const port = await freePort();
  const args = ['--dhcp', 'off', '--no-tftp', '--http-port', String(port), '--http-host', '127.0.0.1', '--advertise-address', '127.0.0.1', '--data-dir', dataDir, '--heartbeat', '1', '--log-level', 'warn', ...(opts.args ?? [])];
  if (opts.cluster) {
    writeFileSync(join(dataDir, 'cluster.yaml'), opts.cluster);
    args.push('--cluster', join(dataDir, 'cluster.yaml'));
  }
  const child = spawn(process.execPath, [DISPATCHER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the dispatcher exited: ${out}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > end) throw new Error(`the dispatcher did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url, port, dataDir, child,
    token: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(),
    pubKeyFile: join(dataDir, 'identity.pub'),
    output: () => out,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 5000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    },
  };
}
