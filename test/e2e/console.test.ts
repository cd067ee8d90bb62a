/**
 * Kernel console capture (issue 14, point 2), end to end under QEMU: one dispatcher in a
 * namespace, one SeaBIOS machine PXE-booting from it. The image's /init points netconsole at
 * the dispatcher; the node's kernel lines are filed under it.
 *
 *   1. The node boots; netconsole's own start line is on record (`console node1 --kernel`), and
 *      the boot log before it (the kernel replays its log to a new console).
 *   2. Latency: lines written to /dev/kmsg on the node, seen on `console --follow`: printed as
 *      RESULT lines (received → delivered by the API stream, and from the start of the exec).
 *   3. `echo c > /proc/sysrq-trigger` through `dispatcherctl exec` panics the node; the panic
 *      is on record after its agent is gone.
 *
 * The image is the one the QEMU e2e tests share (test/lab/pxe-lab.ts, E2E_IMAGE).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildForE2e, PxeLab, type LabMachine } from '../lab/pxe-lab.js';
import type { ConsoleLineView, ConsoleReply } from '../../dispatcher/src/api/console/schemas.js';

const BOOT_TIMEOUT_MS = 240_000;
const LATENCY_SAMPLES = 5;

let rack: PxeLab;
let node1: LabMachine;

async function kernelLines(): Promise<ConsoleLineView[]> {
  return (await rack.json<ConsoleReply>('console', 'node1', '--kernel', '--lines', '2000')).lines;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

beforeAll(async () => {
  buildForE2e();
  rack = await PxeLab.create({ area: 'console', subnet: 68 });
  node1 = await rack.machine({ name: 'node1' });
  await rack.startDispatcher({ cluster: rack.clusterNodes() });
  await node1.powerOn();
}, 600_000);

afterAll(async () => {
  await rack?.cleanup();
});

describe('kernel console capture by netconsole', () => {
  it("files the node's kernel lines under it once /init has loaded netconsole", async () => {
    await node1.waitForConsole(/lc-init: netconsole: kernel messages to 10\.68\.0\.1:6666/, BOOT_TIMEOUT_MS);
    const started = await rack.until('netconsole start line on record', async () =>
      (await kernelLines()).find((l) => /netconsole: network logging started/.test(l.text)),
    );
    expect(started.source).toBe('kernel');
    // netconsole starts with the kernel's whole log replayed: the boot is on record from its first line.
    expect((await kernelLines()).some((l) => /Linux version 6\./.test(l.text))).toBe(true);
    // The command line is on record too, without the boot token it carried.
    const cmdline = (await kernelLines()).find((l) => /Kernel command line:/.test(l.text));
    expect(cmdline?.text).toMatch(/lc\.token=\(hidden\)/);
    expect(cmdline?.text).not.toMatch(/lc\.token=(?!\(hidden\))/);
    await rack.nodeUp('node1');
  });

  it('measures capture latency: a kernel line written on the node, delivered by the console stream', async () => {
    const follow = rack.spawnCtl('--json', 'console', 'node1', '--follow', '--kernel', '--lines', '0');
    const seenAt = new Map<string, { at: number; ts: number }>();
    let parsed = 0;
    const scan = () => {
      const lines = follow.output().split('\n');
      for (; parsed < lines.length - 1; parsed++) {
        const m = /lc-latency-(\d+)/.exec(lines[parsed]!);
        if (m && !seenAt.has(m[1]!)) seenAt.set(m[1]!, { at: Date.now(), ts: (JSON.parse(lines[parsed]!) as ConsoleLineView).ts });
      }
    };
    const timer = setInterval(scan, 1);
    try {
      await sleep(1000); // the stream is open before the first line
      const fromExec: number[] = [];
      const fromReceipt: number[] = [];
      for (let i = 0; i < LATENCY_SAMPLES; i++) {
        const t0 = Date.now();
        await rack.ok('exec', 'node1', '--', 'sh', '-c', `echo lc-latency-${i} > /dev/kmsg`);
        const seen = await rack.until(`lc-latency-${i} on the stream`, async () => seenAt.get(String(i)), 30_000, 5);
        fromExec.push(seen.at - t0);
        fromReceipt.push(seen.at - seen.ts);
      }
      const load = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ');
      console.log(
        `RESULT console capture latency: received → delivered by the API stream median ${median(fromReceipt)} ms (max ${Math.max(...fromReceipt)}); ` +
          `from the start of \`dispatcherctl exec\` writing it median ${median(fromExec)} ms (${LATENCY_SAMPLES} samples, TCG guest, load ${load}, ${new Date().toISOString()})`,
      );
      expect(median(fromReceipt)).toBeLessThan(1000);
    } finally {
      clearInterval(timer);
      await follow.stop('SIGINT');
    }
  });

  it('captures a kernel panic triggered through `dispatcherctl exec`, kept after the node is gone', async () => {
    // The exec never answers: the node dies under it.
    const crash = rack.spawnCtl('exec', 'node1', '--', 'sh', '-c', 'echo c > /proc/sysrq-trigger');
    try {
      const lines = await rack.until(
        'the panic on record',
        async () => {
          const l = await kernelLines();
          return l.some((x) => /Kernel panic - not syncing/.test(x.text)) ? l : undefined;
        },
        120_000,
      );
      const texts = lines.map((l) => l.text).join('\n');
      expect(texts).toMatch(/sysrq: Trigger a crash/);
      expect(texts).toMatch(/Kernel panic - not syncing: sysrq triggered crash/);
      const shown = await rack.ok('console', 'node1', '--kernel', '--lines', '200');
      expect(shown).toMatch(/kernel {2}.*Kernel panic - not syncing/);
    } finally {
      await crash.stop();
    }
  });
});
