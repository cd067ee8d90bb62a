/**
 * The network lab harness (test/lab/netns.ts) that the DHCP, TFTP, e2e tests and the demo
 * build on: what it creates works, and cleanup leaves nothing behind. Needs root.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { createLab, run, sweepStaleNamespaces } from '../../lab/netns.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('network lab', () => {
  it('builds namespaces joined by veths, a bridge and a tap, runs commands in them, and cleans everything up', async () => {
    const lab = await createLab('labtest');
    const a = await lab.namespace('a');
    const b = await lab.namespace('b');
    expect(a.name).toMatch(new RegExp(`^lc-labtest-${process.pid}-\\d+-1-a$`));
    const br = await lab.bridge(a, { address: '10.63.0.1/24' });
    const [va, vb] = await lab.veth({ ns: a }, { ns: b, name: 'uplink0', address: '10.63.0.2/24' });
    await lab.attach(va, br);
    const tap = await lab.tap(a, { bridge: br });
    expect(vb.name).toBe('uplink0');
    expect(tap.name).toMatch(/^tap\d+$/);
    expect(await a.ifindex(br.name)).toBeGreaterThan(0);

    const ping = await b.exec('busybox', ['ping', '-c', '1', '-W', '2', '10.63.0.1']);
    expect(ping.stdout).toMatch(/1 packets received/);
    const master = await a.exec('ip', ['-o', 'link', 'show', 'dev', tap.name]);
    expect(master.stdout).toContain(`master ${br.name}`);
    // Nothing leaked into the root namespace.
    expect(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' })).not.toMatch(/\buplink0\b/);

    const sleeper = b.spawn('sh', ['-c', 'echo ready; exec sleep 600']);
    await sleeper.waitForOutput(/ready/, 5_000);
    expect(alive(sleeper.pid)).toBe(true);
    const failing = await a.exec('sh', ['-c', 'echo oops >&2; exit 3'], { allowFailure: true });
    expect(failing).toMatchObject({ code: 3, stderr: 'oops\n' });
    await expect(a.exec('false', [])).rejects.toThrow(/exit 1/);

    await lab.cleanup();
    expect(alive(sleeper.pid)).toBe(false);
    expect(namespaces()).not.toContain(lab.id);
    await lab.cleanup(); // twice is fine
  });

  it('waitForOutput rejects when the process exits without printing, with its output in the message', async () => {
    const lab = await createLab('labtest');
    try {
      const ns = await lab.namespace('x');
      const p = ns.spawn('sh', ['-c', 'echo bye; exit 0']);
      await expect(p.waitForOutput(/never/, 5_000)).rejects.toThrow(/exited before printing.*\n.*bye/s);
    } finally {
      await lab.cleanup();
    }
  });

  it('cleans up after a test process that exits without calling cleanup, and sweeps what a killed one left', async () => {
    // A child process makes a lab and exits without cleanup: its exit hook deletes the namespace.
    const child = join(ROOT, 'dist/test/lab-orphan.mjs');
    await build({
      stdin: {
        contents:
          "import { createLab } from './netns.js'; const lab = await createLab('labtest'); const ns = await lab.namespace('orphan'); console.log(ns.name); process.exit(0);",
        resolveDir: join(ROOT, 'test/lab'),
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node24',
      outfile: child,
      logLevel: 'warning',
    });
    const orphan = execFileSync(process.execPath, [child], { encoding: 'utf8' }).trim();
    expect(orphan).toMatch(/^lc-labtest-\d+-\d+-1-orphan$/);
    expect(namespaces()).not.toContain(orphan);
    // A process SIGKILLed leaves its namespace; the next sweep removes it (its PID is dead).
    const victim = spawn('sleep', ['60']);
    const stale = `lc-labtest-${victim.pid}-1-1-stale`;
    await run('ip', ['netns', 'add', stale]);
    expect(sweepStaleNamespaces()).not.toContain(stale); // its creator still lives
    victim.kill('SIGKILL');
    await new Promise((r) => victim.once('exit', r));
    expect(sweepStaleNamespaces()).toContain(stale);
    expect(namespaces()).not.toContain(stale);
  });
});
